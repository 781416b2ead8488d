/*
 * promql_int.h — the one internal header of core/promql: the AST, the function table, the
 * evaluator's value types and the helpers shared by parser.c, eval.c, functions.c and
 * aggregations.c. Nothing here is public API.
 *
 * Memory: the AST is malloc'd node by node (freed by od_promql_expr_free). The evaluator
 * allocates everything of one query from an arena (pq_arena) that is dropped at the end, and
 * reports errors by longjmp to the query's entry point (pq_fail), so evaluation code reads
 * straight through; sources are never longjmp'd across (their callbacks return codes).
 */
#ifndef OD_PROMQL_INT_H
#define OD_PROMQL_INT_H

#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>

#include "od_promql.h"
#include "../util/od_buf.h"

/* ---- AST ---- */
typedef enum pq_node_kind {
    PQ_NUM = 1,
    PQ_STR,
    PQ_VSEL,   /* vector selector */
    PQ_MSEL,   /* matrix selector: a vector selector with a range */
    PQ_SUBQ,   /* subquery expr[range:step] */
    PQ_PAREN,
    PQ_UNARY,
    PQ_BINARY,
    PQ_CALL,
    PQ_AGG
} pq_node_kind;

typedef enum pq_op {
    PQ_OP_NONE = 0,
    PQ_OP_ADD, PQ_OP_SUB, PQ_OP_MUL, PQ_OP_DIV, PQ_OP_MOD, PQ_OP_POW, PQ_OP_ATAN2,
    PQ_OP_EQ, PQ_OP_NE, PQ_OP_GT, PQ_OP_LT, PQ_OP_GE, PQ_OP_LE,
    PQ_OP_AND, PQ_OP_OR, PQ_OP_UNLESS
} pq_op;

typedef enum pq_agg_op {
    PQ_AGG_SUM = 1, PQ_AGG_AVG, PQ_AGG_MIN, PQ_AGG_MAX, PQ_AGG_COUNT, PQ_AGG_GROUP,
    PQ_AGG_STDDEV, PQ_AGG_STDVAR, PQ_AGG_TOPK, PQ_AGG_BOTTOMK, PQ_AGG_QUANTILE,
    PQ_AGG_COUNT_VALUES, PQ_AGG_LIMITK, PQ_AGG_LIMIT_RATIO
} pq_agg_op;

typedef enum pq_card { PQ_CARD_ONE_TO_ONE = 0, PQ_CARD_MANY_TO_ONE, PQ_CARD_ONE_TO_MANY, PQ_CARD_MANY_TO_MANY } pq_card;

typedef struct pq_strlist {
    char **v;
    size_t n;
} pq_strlist;

struct pq_func;

typedef struct pq_node pq_node;
struct pq_node {
    pq_node_kind kind;
    int pos;                  /* byte offset in the query */
    /* PQ_NUM */
    double num;
    /* PQ_STR */
    char *str;
    /* PQ_VSEL / PQ_MSEL */
    char *name;               /* metric name if given outside braces (for printing) */
    od_promql_matcher *matchers;
    size_t nmatchers;
    /* PQ_MSEL / PQ_SUBQ */
    int64_t range_ms;
    int64_t step_ms;          /* PQ_SUBQ: 0 = default */
    /* modifiers of VSEL/MSEL/SUBQ */
    int64_t offset_ms;
    int has_at;               /* 0 none, 1 timestamp, 2 start(), 3 end() */
    int64_t at_ms;
    /* PQ_PAREN / PQ_UNARY / PQ_SUBQ / PQ_AGG: child; PQ_BINARY lhs */
    pq_node *a;
    pq_node *b;               /* PQ_BINARY rhs; PQ_AGG parameter */
    /* PQ_UNARY / PQ_BINARY */
    pq_op op;
    int return_bool;
    int has_matching;         /* on/ignoring given */
    int on;
    pq_strlist match_labels;
    pq_card card;
    pq_strlist include;       /* group_left/right labels */
    /* PQ_CALL */
    const struct pq_func *func;
    pq_node **args;
    size_t nargs;
    /* PQ_AGG */
    pq_agg_op agg;
    int without;
    int has_grouping;         /* by/without given */
    pq_strlist grouping;
};

struct od_promql_expr {
    pq_node *root;
    char *src;                /* the query text (for annotation positions) */
};

/* ---- function table (functions.c) ---- */
struct pq_ev;
struct pq_val;

typedef struct pq_func {
    const char *name;
    od_promql_value_type args[5]; /* argument types */
    int nargs;                    /* declared */
    int min_args;                 /* min when optional trailing args */
    int variadic;                 /* -1: up to nargs; >0: unlimited extra of last type */
    od_promql_value_type ret;
    int id;
} pq_func;

const pq_func *pq_func_lookup(const char *name);
int pq_agg_lookup(const char *name);
const char *pq_agg_name(pq_agg_op op);
const char *pq_op_name(pq_op op);

/* lexer.c helpers shared with the parser */
int pq_parse_duration(const char *s, size_t n, int64_t *ms);
void pq_format_duration(int64_t ms, char *out, size_t cap);

/* ---- evaluator values ---- */
typedef struct pq_labels {
    od_promql_label *v;
    int n;
} pq_labels;

/* An instant vector over all steps: per series one value per step with a presence flag. */
typedef struct pq_series {
    pq_labels lbl;
    int drop_name;
    double *v;
    uint8_t *ok;
} pq_series;

/* A range vector: raw points per series, to be windowed per step. */
typedef struct pq_rseries {
    pq_labels lbl;
    int drop_name;
    int64_t *t;
    double *v;
    size_t n;
} pq_rseries;

typedef struct pq_val {
    od_promql_value_type type;
    double *scalar;      /* SCALAR: nsteps values */
    const char *str;     /* STRING */
    pq_series *s;        /* VECTOR */
    size_t ns;
    /* MATRIX (range vector): raw points and the windows that apply per step */
    pq_rseries *rs;
    size_t nrs;
    int64_t range_ms;
    int64_t *ref;        /* per step: window is (ref - range, ref] */
} pq_val;

typedef struct pq_arena_blk {
    struct pq_arena_blk *next;
    size_t used, cap;
    /* data follows */
} pq_arena_blk;

typedef struct pq_ev {
    const od_promql_source *src;
    od_promql_opts opts;
    int64_t start, end, step; /* current evaluation steps */
    size_t nsteps;
    int64_t qstart, qend;     /* the query's, for @ start()/end() */
    pq_arena_blk *arena;
    jmp_buf *jb;
    od_err *err;
    uint64_t samples;
    int64_t deadline_ns;
    unsigned tick;
    int is_range_query;
    const char *qsrc;         /* query text, for "(line:col)" in annotations */
    char **warn;
    size_t nwarn, capwarn;
    od_code try_code;         /* why the last *_try call failed */
    void **res;               /* pcre2 codes to free */
    size_t nres, capres;
} pq_ev;

void *pq_alloc(pq_ev *ev, size_t n);           /* zeroed, never NULL (longjmps on OOM) */
char *pq_strdup(pq_ev *ev, const char *s);
void pq_fail(pq_ev *ev, od_code code, const char *fmt, ...) __attribute__((noreturn, format(printf, 3, 4)));
/* Add an annotation; `pos` is the byte offset of the expression it is about (-1: none). */
void pq_warn(pq_ev *ev, int pos, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void pq_pos_linecol(const char *s, int pos, int *line, int *col);
void pq_check(pq_ev *ev);                      /* timeout / limits */
void pq_count_samples(pq_ev *ev, uint64_t n);
int64_t pq_step_t(const pq_ev *ev, size_t i);

/* labels helpers (eval.c) */
const char *pq_lbl_get(const pq_labels *l, const char *name);
pq_labels pq_lbl_copy(pq_ev *ev, const pq_labels *l);
pq_labels pq_lbl_without(pq_ev *ev, const pq_labels *l, const char *const *names, size_t n, int drop_name);
pq_labels pq_lbl_only(pq_ev *ev, const pq_labels *l, const char *const *names, size_t n);
pq_labels pq_lbl_set(pq_ev *ev, const pq_labels *l, const char *name, const char *value);
int pq_lbl_cmp(const pq_labels *a, const pq_labels *b);
char *pq_lbl_string(pq_ev *ev, const pq_labels *l);  /* {a="b", ...} as Prometheus prints it */
pq_labels pq_lbl_dropname(pq_ev *ev, const pq_labels *l);

/* hash map from byte keys to indexes (eval.c) */
typedef struct pq_map {
    size_t cap, n;
    uint64_t *h;
    const char **k;
    size_t *klen;
    size_t *val;
} pq_map;
void pq_map_init(pq_ev *ev, pq_map *m, size_t hint);
/* Find key; when absent insert it with value `ins` and return `ins`; else return the value. */
size_t pq_map_get_or_put(pq_ev *ev, pq_map *m, const char *k, size_t klen, size_t ins);
size_t pq_map_find(const pq_map *m, const char *k, size_t klen); /* (size_t)-1 if absent */
/* A signature key of the labels (all except the listed names, or only the listed ones). */
char *pq_sig(pq_ev *ev, const pq_labels *l, const char *const *names, size_t n, int on, size_t *len);
/* pq_sig, followed (when l has a __name__) by a 0x01 byte and the name: series that differ only
 * in their name get different keys. */
char *pq_sig_named(pq_ev *ev, const pq_labels *l, const char *const *names, size_t n, int on, size_t *len);

pq_val pq_eval(pq_ev *ev, const pq_node *n);
pq_val pq_eval_call(pq_ev *ev, const pq_node *n);
pq_val pq_eval_agg(pq_ev *ev, const pq_node *n);
pq_series *pq_vec_new(pq_ev *ev, pq_val *out, size_t cap);
/* Non-longjmp variants for code running inside a source callback: NULL with ev->try_code. */
pq_series *pq_vec_new_try(pq_ev *ev, pq_val *out, size_t cap);
void *pq_alloc_try(pq_ev *ev, size_t n);
void pq_vec_sort(pq_val *v);   /* series by labels */
int64_t *pq_make_refs(pq_ev *ev, const pq_node *n, int64_t *minr, int64_t *maxr);
/* Stream a selector's series to fn (labels copied to the arena; points only lent, stale
 * markers removed unless keep_stale). fn runs inside the source: it must not longjmp. */
typedef int (*pq_consume_fn)(void *cctx, const pq_labels *lbl, const int64_t *t, const double *v, size_t n, od_err *err);
void pq_fetch_consume(pq_ev *ev, const pq_node *sel, int64_t mint, int64_t maxt, int keep_stale, pq_consume_fn fn, void *cctx);

/* ---- lexer (lexer.c) ---- */
typedef enum pq_tok_type {
    T_EOF = 0, T_ERR, T_IDENT, T_NUM, T_DUR, T_STR,
    T_LBRACE, T_RBRACE, T_LPAREN, T_RPAREN, T_LBRACK, T_RBRACK, T_COMMA, T_COLON,
    T_ASSIGN, T_EQLC, T_NEQ, T_RE, T_NRE,
    T_ADD, T_SUB, T_MUL, T_DIV, T_MOD, T_POW, T_GT, T_LT, T_GE, T_LE, T_AT
} pq_tok_type;

typedef struct pq_tok {
    pq_tok_type type;
    int pos, len;
    double num;       /* T_NUM */
    int64_t dur_ms;   /* T_DUR */
    char *str;        /* T_STR: decoded, malloc'd (owned by the lexer until taken) */
    char err[160];    /* T_ERR */
} pq_tok;

typedef struct pq_lexer {
    const char *s;
    size_t len, p;
    int bracket;      /* inside [...]: ':' is a separator, durations expected */
    int brace;        /* inside {...} */
} pq_lexer;

void pq_lex_init(pq_lexer *lx, const char *s);
void pq_lex_next(pq_lexer *lx, pq_tok *t);   /* frees t->str of the previous token */
void pq_tok_clear(pq_tok *t);
const char *pq_tok_desc(const pq_tok *t, const char *src, char *buf, size_t cap);

#endif
