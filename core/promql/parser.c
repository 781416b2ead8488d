/*
 * parser.c — PromQL parser (recursive descent with precedence climbing), type checker,
 * printer and the AST's lifetime; also label matchers (PCRE2, fully anchored).
 *
 * Owns the AST nodes (malloc'd; od_promql_expr_free releases them). Errors are reported as
 * "L:C: parse error: <what>" with 1-based line and column of the offending token, the format
 * Prometheus uses. Precedence, lowest first: or; and unless; == != <= < >= >; + -; * / % atan2;
 * unary + -; ^ (right-associative, binds tighter than unary minus: -2^2 == -4); postfix
 * [range], [range:step], offset, @.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <ctype.h>
#include <math.h>
#include <pcre2.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "promql_int.h"

/* ---------------- matchers ---------------- */

int od_promql_matcher_init(od_promql_matcher *m, od_promql_match_type type, const char *name,
                           const char *value, od_err *err)
{
    memset(m, 0, sizeof *m);
    m->type = type;
    m->name = strdup(name);
    m->value = strdup(value);
    if (!m->name || !m->value) {
        od_promql_matcher_clear(m);
        return od_err_set(err, OD_NOMEM, "promql: out of memory");
    }
    if (type == OD_PROMQL_MATCH_RE || type == OD_PROMQL_MATCH_NRE) {
        /* Fully anchored, like RE2 in Prometheus: ^(?:re)$ ; DOTALL because RE2's `.` in
         * Prometheus matches newlines too (the regex is compiled with (?s)). */
        size_t n = strlen(value);
        char *pat = malloc(n + 16);
        if (!pat) { od_promql_matcher_clear(m); return od_err_set(err, OD_NOMEM, "promql: out of memory"); }
        snprintf(pat, n + 16, "^(?:%s)$", value);
        int ec;
        PCRE2_SIZE eo;
        pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED,
                                       PCRE2_DOTALL | PCRE2_UTF | PCRE2_DOLLAR_ENDONLY | PCRE2_NO_UTF_CHECK, &ec, &eo, NULL);
        free(pat);
        if (!re) {
            PCRE2_UCHAR buf[256];
            pcre2_get_error_message(ec, buf, sizeof buf);
            od_promql_matcher_clear(m);
            return od_err_set(err, OD_BADREQ, "invalid regular expression \"%s\": %s", value, (char *)buf);
        }
        pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
        m->re = re;
    }
    return OD_OK;
}

void od_promql_matcher_clear(od_promql_matcher *m)
{
    free(m->name);
    free(m->value);
    if (m->re) pcre2_code_free((pcre2_code *)m->re);
    memset(m, 0, sizeof *m);
}

int od_promql_matcher_matches(const od_promql_matcher *m, const char *value)
{
    if (!value) value = "";
    switch (m->type) {
    case OD_PROMQL_MATCH_EQ: return strcmp(value, m->value) == 0;
    case OD_PROMQL_MATCH_NE: return strcmp(value, m->value) != 0;
    default: {
        pcre2_match_data *md = pcre2_match_data_create(4, NULL);
        if (!md) return 0;
        int rc = pcre2_match((pcre2_code *)m->re, (PCRE2_SPTR)value, strlen(value), 0, 0, md, NULL);
        pcre2_match_data_free(md);
        int hit = rc >= 0;
        return m->type == OD_PROMQL_MATCH_RE ? hit : !hit;
    }
    }
}

/* ---------------- AST lifetime ---------------- */

static void strlist_free(pq_strlist *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

static void node_free(pq_node *n)
{
    if (!n) return;
    free(n->str);
    free(n->name);
    for (size_t i = 0; i < n->nmatchers; i++) od_promql_matcher_clear(&n->matchers[i]);
    free(n->matchers);
    node_free(n->a);
    node_free(n->b);
    strlist_free(&n->match_labels);
    strlist_free(&n->include);
    strlist_free(&n->grouping);
    for (size_t i = 0; i < n->nargs; i++) node_free(n->args[i]);
    free(n->args);
    free(n);
}

void od_promql_expr_free(od_promql_expr *e)
{
    if (!e) return;
    node_free(e->root);
    free(e->src);
    free(e);
}

/* ---------------- parser ---------------- */

typedef struct parser {
    pq_lexer lx;
    pq_tok tok;
    const char *src;
    jmp_buf jb;
    od_err *err;
    int errpos;
    char errmsg[400];
    pq_node **all;     /* every node allocated: freed one by one after a parse error */
    size_t nall, capall;
    void *pend[8];     /* strings in flight (not yet owned by a node): freed after an error */
    int npend;
} parser;

static void hold(parser *p, void *s)
{
    if (p->npend < (int)(sizeof p->pend / sizeof p->pend[0])) p->pend[p->npend++] = s;
}

/* Ownership moved on (or the string was freed): forget it. */
static void unhold(parser *p, void *s)
{
    for (int i = 0; i < p->npend; i++)
        if (p->pend[i] == s) {
            p->pend[i] = p->pend[--p->npend];
            return;
        }
}

static void perr(parser *p, int pos, const char *fmt, ...) __attribute__((noreturn, format(printf, 3, 4)));
static void perr(parser *p, int pos, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->errmsg, sizeof p->errmsg, fmt, ap);
    va_end(ap);
    p->errpos = pos;
    longjmp(p->jb, 1);
}

static void next(parser *p)
{
    pq_lex_next(&p->lx, &p->tok);
    if (p->tok.type == T_ERR) perr(p, p->tok.pos, "%s", p->tok.err);
}

static void unexpected(parser *p, const char *ctx, const char *expected) __attribute__((noreturn));
static void unexpected(parser *p, const char *ctx, const char *expected)
{
    char b[160];
    const char *d = pq_tok_desc(&p->tok, p->src, b, sizeof b);
    if (expected)
        perr(p, p->tok.pos, "unexpected %s in %s, expected %s", d, ctx, expected);
    perr(p, p->tok.pos, "unexpected %s in %s", d, ctx);
}

static void *xcalloc(parser *p, size_t n)
{
    void *v = calloc(1, n);
    if (!v) perr(p, p->tok.pos, "out of memory");
    return v;
}

static char *xstrndup(parser *p, const char *s, size_t n)
{
    char *v = strndup(s, n);
    if (!v) perr(p, p->tok.pos, "out of memory");
    return v;
}

static pq_node *new_node(parser *p, pq_node_kind k, int pos)
{
    if (p->nall == p->capall) {
        size_t c = p->capall ? p->capall * 2 : 32;
        pq_node **v = realloc(p->all, c * sizeof *v);
        if (!v) perr(p, p->tok.pos, "out of memory");
        p->all = v;
        p->capall = c;
    }
    pq_node *n = xcalloc(p, sizeof *n);
    p->all[p->nall++] = n;
    n->kind = k;
    n->pos = pos;
    return n;
}

static int tok_is_ident(parser *p, const char *kw)
{
    return p->tok.type == T_IDENT && (size_t)p->tok.len == strlen(kw) &&
           strncasecmp(p->src + p->tok.pos, kw, (size_t)p->tok.len) == 0;
}

static char *tok_text(parser *p)
{
    return xstrndup(p, p->src + p->tok.pos, (size_t)p->tok.len);
}

static void expect(parser *p, pq_tok_type t, const char *ctx, const char *what)
{
    if (p->tok.type != t) unexpected(p, ctx, what);
    next(p);
}

static od_promql_value_type node_type(const pq_node *n);

static const char *type_name(od_promql_value_type t)
{
    switch (t) {
    case OD_PROMQL_SCALAR: return "scalar";
    case OD_PROMQL_VECTOR: return "instant vector";
    case OD_PROMQL_MATRIX: return "range vector";
    case OD_PROMQL_STRING: return "string";
    }
    return "?";
}

static od_promql_value_type node_type(const pq_node *n)
{
    switch (n->kind) {
    case PQ_NUM: return OD_PROMQL_SCALAR;
    case PQ_STR: return OD_PROMQL_STRING;
    case PQ_VSEL: return OD_PROMQL_VECTOR;
    case PQ_MSEL: case PQ_SUBQ: return OD_PROMQL_MATRIX;
    case PQ_PAREN: case PQ_UNARY: return node_type(n->a);
    case PQ_BINARY:
        return (node_type(n->a) == OD_PROMQL_SCALAR && node_type(n->b) == OD_PROMQL_SCALAR) ? OD_PROMQL_SCALAR : OD_PROMQL_VECTOR;
    case PQ_CALL: return n->func->ret;
    case PQ_AGG: return OD_PROMQL_VECTOR;
    }
    return OD_PROMQL_VECTOR;
}

od_promql_value_type od_promql_expr_type(const od_promql_expr *e) { return node_type(e->root); }

static pq_node *parse_expr(parser *p, int minprec);

/* Duration expressions (Prometheus 3): numbers are seconds, durations are converted to
 * seconds; + - * / % ^ (right-associative) and parentheses. Inside [...] the expression may be
 * bare ([5m * 2], [1h:30s + 30s]); after `offset` arithmetic needs parentheses
 * (offset (1h + 5m)), since `foo offset 1h + bar` is a binary expression. */
static double dur_expr(parser *p, const char *ctx, int minprec);

static double dur_primary(parser *p, const char *ctx)
{
    double v;
    if (p->tok.type == T_SUB || p->tok.type == T_ADD) {
        int neg = p->tok.type == T_SUB;
        next(p);
        v = dur_primary(p, ctx);
        return neg ? -v : v;
    }
    if (p->tok.type == T_LPAREN) {
        next(p);
        v = dur_expr(p, ctx, 0);
        expect(p, T_RPAREN, ctx, "\")\"");
        return v;
    }
    if (p->tok.type == T_DUR) v = (double)p->tok.dur_ms / 1000.0;
    else if (p->tok.type == T_NUM) v = p->tok.num;
    else unexpected(p, ctx, "duration");
    next(p);
    return v;
}

static double dur_expr(parser *p, const char *ctx, int minprec)
{
    double l = dur_primary(p, ctx);
    for (;;) {
        int prec;
        pq_tok_type t = p->tok.type;
        if (t == T_ADD || t == T_SUB) prec = 1;
        else if (t == T_MUL || t == T_DIV || t == T_MOD) prec = 2;
        else if (t == T_POW) prec = 3;
        else break;
        if (prec < minprec) break;
        int pos = p->tok.pos;
        next(p);
        double r = dur_expr(p, ctx, t == T_POW ? prec : prec + 1);
        switch (t) {
        case T_ADD: l += r; break;
        case T_SUB: l -= r; break;
        case T_MUL: l *= r; break;
        case T_DIV:
            if (r == 0) perr(p, pos, "division by zero in duration expression");
            l /= r;
            break;
        case T_MOD:
            if (r == 0) perr(p, pos, "modulo by zero in duration expression");
            l = fmod(l, r);
            break;
        default: l = pow(l, r); break;
        }
    }
    return l;
}

static int64_t parse_dur(parser *p, const char *ctx, int in_brackets)
{
    int pos = p->tok.pos;
    double v;
    if (in_brackets || p->tok.type == T_LPAREN) v = dur_expr(p, ctx, in_brackets ? 0 : 4);
    else {
        int neg = 0;
        if (p->tok.type == T_SUB || p->tok.type == T_ADD) {
            neg = p->tok.type == T_SUB;
            next(p);
        }
        if (p->tok.type == T_LPAREN) v = dur_primary(p, ctx);
        else {
            if (p->tok.type == T_DUR) v = (double)p->tok.dur_ms / 1000.0;
            else if (p->tok.type == T_NUM) v = p->tok.num;
            else unexpected(p, ctx, "duration");
            next(p);
        }
        if (neg) v = -v;
    }
    if (!isfinite(v) || fabs(v) > 9.2e12) perr(p, pos, "duration out of range");
    return (int64_t)llround(v * 1000.0);
}

static char *parse_label_name(parser *p, const char *ctx)
{
    if (p->tok.type == T_IDENT) {
        if (memchr(p->src + p->tok.pos, ':', (size_t)p->tok.len) && p->lx.brace == 0)
            unexpected(p, ctx, "label");
        char *s = tok_text(p);
        hold(p, s);
        next(p);
        unhold(p, s);
        return s;
    }
    if (p->tok.type == T_STR) {
        char *s = p->tok.str;
        p->tok.str = NULL;
        hold(p, s);
        next(p);
        unhold(p, s);
        return s;
    }
    unexpected(p, ctx, "label");
}

static void strlist_push(parser *p, pq_strlist *l, char *s)
{
    char **v = realloc(l->v, (l->n + 1) * sizeof *v);
    if (!v) { free(s); perr(p, p->tok.pos, "out of memory"); }
    l->v = v;
    l->v[l->n++] = s;
}

static void parse_label_list(parser *p, pq_strlist *l, const char *ctx)
{
    expect(p, T_LPAREN, ctx, "\"(\"");
    while (p->tok.type != T_RPAREN) {
        char *s = parse_label_name(p, "grouping opts");
        strlist_push(p, l, s);
        if (p->tok.type == T_COMMA) next(p);
        else if (p->tok.type != T_RPAREN) unexpected(p, "grouping opts", "\",\" or \")\"");
    }
    next(p);
}

static void add_matcher(parser *p, pq_node *n, od_promql_match_type t, const char *name, const char *val, int pos)
{
    od_promql_matcher *m = realloc(n->matchers, (n->nmatchers + 1) * sizeof *m);
    if (!m) perr(p, pos, "out of memory");
    n->matchers = m;
    od_err e;
    if (od_promql_matcher_init(&n->matchers[n->nmatchers], t, name, val, &e) != OD_OK)
        perr(p, pos, "%s", e.msg);
    n->nmatchers++;
}

/* Parses "{ ... }" into n (the current token is '{'). */
static void parse_matchers(parser *p, pq_node *n)
{
    next(p);
    while (p->tok.type != T_RBRACE) {
        int pos = p->tok.pos;
        if (p->tok.type == T_STR) {
            char *s = p->tok.str;
            p->tok.str = NULL;
            hold(p, s);
            next(p);
            if (p->tok.type == T_COMMA || p->tok.type == T_RBRACE) {
                /* a quoted metric name */
                for (size_t i = 0; i < n->nmatchers; i++)
                    if (strcmp(n->matchers[i].name, "__name__") == 0) perr(p, pos, "metric name must not be set twice: %s", n->matchers[i].value);
                add_matcher(p, n, OD_PROMQL_MATCH_EQ, "__name__", s, pos);
                unhold(p, s);
                free(s);
                if (p->tok.type == T_COMMA) next(p);
                continue;
            }
            /* a quoted label name */
            od_promql_match_type mt;
            switch (p->tok.type) {
            case T_ASSIGN: mt = OD_PROMQL_MATCH_EQ; break;
            case T_NEQ: mt = OD_PROMQL_MATCH_NE; break;
            case T_RE: mt = OD_PROMQL_MATCH_RE; break;
            case T_NRE: mt = OD_PROMQL_MATCH_NRE; break;
            default: unexpected(p, "label matching", "label matching operator");
            }
            next(p);
            if (p->tok.type != T_STR) unexpected(p, "label matching", "string");
            char *v = p->tok.str;
            p->tok.str = NULL;
            hold(p, v);
            next(p);
            add_matcher(p, n, mt, s, v, pos);
            unhold(p, s);
            unhold(p, v);
            free(s);
            free(v);
        } else if (p->tok.type == T_IDENT) {
            char *name = tok_text(p);
            hold(p, name);
            next(p);
            od_promql_match_type mt;
            switch (p->tok.type) {
            case T_ASSIGN: mt = OD_PROMQL_MATCH_EQ; break;
            case T_NEQ: mt = OD_PROMQL_MATCH_NE; break;
            case T_RE: mt = OD_PROMQL_MATCH_RE; break;
            case T_NRE: mt = OD_PROMQL_MATCH_NRE; break;
            case T_EQLC: perr(p, p->tok.pos, "unexpected \"==\" in label matching, expected label matching operator"); break;
            default: unexpected(p, "label matching", "label matching operator");
            }
            next(p);
            if (p->tok.type != T_STR) unexpected(p, "label matching", "string");
            char *v = p->tok.str;
            p->tok.str = NULL;
            hold(p, v);
            next(p);
            add_matcher(p, n, mt, name, v, pos);
            unhold(p, name);
            unhold(p, v);
            free(name);
            free(v);
        } else {
            unexpected(p, "label matching", "label matching");
        }
        if (p->tok.type == T_COMMA) next(p);
        else if (p->tok.type != T_RBRACE) unexpected(p, "label matching", "\",\" or \"}\"");
    }
    next(p);
}

static void check_selector(parser *p, pq_node *n)
{
    int nonempty = 0;
    int names = 0;
    for (size_t i = 0; i < n->nmatchers; i++) {
        if (!od_promql_matcher_matches(&n->matchers[i], "")) nonempty = 1;
        if (strcmp(n->matchers[i].name, "__name__") == 0 && n->matchers[i].type == OD_PROMQL_MATCH_EQ) names++;
    }
    if (n->name && names > 1) perr(p, n->pos, "metric name must not be set twice: \"%s\" or \"%s\"", n->name, n->matchers[1].value);
    if (!nonempty) perr(p, n->pos, "vector selector must contain at least one non-empty matcher");
}

static pq_node *parse_selector(parser *p, char *name, int pos)
{
    pq_node *n = new_node(p, PQ_VSEL, pos);
    if (name) {
        n->name = name;
        unhold(p, name);
        add_matcher(p, n, OD_PROMQL_MATCH_EQ, "__name__", name, pos);
    }
    if (p->tok.type == T_LBRACE) {
        /* link before parsing so that errors free it */
        parse_matchers(p, n);
    }
    return n;
}

static const pq_func *lookup_func(const char *name) { return pq_func_lookup(name); }

static void check_call(parser *p, pq_node *n)
{
    const pq_func *f = n->func;
    size_t na = n->nargs;
    int ok;
    if (f->variadic == 0) ok = (int)na == f->nargs;
    else if (f->variadic < 0) ok = (int)na >= f->min_args && (int)na <= f->nargs;
    else ok = (int)na >= f->min_args;
    if (!ok) {
        if (f->variadic == 0)
            perr(p, n->pos, "expected %d argument(s) in call to \"%s\", got %zu", f->nargs, f->name, na);
        if (f->variadic < 0 || (int)na < f->min_args)
            perr(p, n->pos, "expected at least %d argument(s) in call to \"%s\", got %zu", f->min_args, f->name, na);
        perr(p, n->pos, "expected at most %d argument(s) in call to \"%s\", got %zu", f->nargs, f->name, na);
    }
    for (size_t i = 0; i < na; i++) {
        od_promql_value_type want = f->args[(int)i < f->nargs ? (int)i : f->nargs - 1];
        od_promql_value_type got = node_type(n->args[i]);
        if (want != got)
            perr(p, n->args[i]->pos, "expected type %s in call to function \"%s\", got %s", type_name(want), f->name, type_name(got));
    }
}

static pq_node *parse_call(parser *p, const pq_func *f, int pos)
{
    pq_node *n = new_node(p, PQ_CALL, pos);
    n->func = f;
    next(p); /* '(' */
    while (p->tok.type != T_RPAREN) {
        pq_node *a = parse_expr(p, 0);
        pq_node **v = realloc(n->args, (n->nargs + 1) * sizeof *v);
        if (!v) perr(p, pos, "out of memory");
        n->args = v;
        n->args[n->nargs++] = a;
        if (p->tok.type == T_COMMA) next(p);
        else if (p->tok.type != T_RPAREN) unexpected(p, "argument list", "\",\" or \")\"");
    }
    next(p);
    check_call(p, n);
    return n;
}

static pq_node *parse_agg(parser *p, int op, int pos)
{
    pq_node *n = new_node(p, PQ_AGG, pos);
    n->agg = (pq_agg_op)op;
    if (tok_is_ident(p, "by") || tok_is_ident(p, "without")) {
        n->without = tok_is_ident(p, "without");
        n->has_grouping = 1;
        next(p);
        parse_label_list(p, &n->grouping, "grouping opts");
    }
    if (p->tok.type != T_LPAREN) unexpected(p, "aggregation", "\"(\"");
    next(p);
    int has_param = op == PQ_AGG_TOPK || op == PQ_AGG_BOTTOMK || op == PQ_AGG_QUANTILE ||
                    op == PQ_AGG_COUNT_VALUES || op == PQ_AGG_LIMITK || op == PQ_AGG_LIMIT_RATIO;
    if (p->tok.type == T_RPAREN) perr(p, p->tok.pos, "no arguments for aggregate expression provided");
    pq_node *first = parse_expr(p, 0);
    if (has_param) {
        n->b = first;
        if (p->tok.type != T_COMMA) perr(p, p->tok.pos, "wrong number of arguments for aggregate expression provided, expected 2, got 1");
        next(p);
        n->a = parse_expr(p, 0);
    } else {
        n->a = first;
    }
    if (p->tok.type == T_COMMA) {
        next(p);
        if (p->tok.type != T_RPAREN) perr(p, p->tok.pos, "wrong number of arguments for aggregate expression provided, expected %d, got %d", has_param ? 2 : 1, has_param ? 3 : 2);
    }
    expect(p, T_RPAREN, "aggregation", "\")\"");
    if (tok_is_ident(p, "by") || tok_is_ident(p, "without")) {
        if (n->has_grouping) perr(p, p->tok.pos, "aggregation must only contain one grouping clause");
        n->without = tok_is_ident(p, "without");
        n->has_grouping = 1;
        next(p);
        parse_label_list(p, &n->grouping, "grouping opts");
        if (tok_is_ident(p, "by") || tok_is_ident(p, "without"))
            perr(p, p->tok.pos, "aggregation must only contain one grouping clause");
    }
    if (node_type(n->a) != OD_PROMQL_VECTOR)
        perr(p, n->a->pos, "expected type instant vector in aggregation expression, got %s", type_name(node_type(n->a)));
    if (n->b) {
        od_promql_value_type want = op == PQ_AGG_COUNT_VALUES ? OD_PROMQL_STRING : OD_PROMQL_SCALAR;
        if (node_type(n->b) != want)
            perr(p, n->b->pos, "expected type %s in aggregation parameter, got %s", type_name(want), type_name(node_type(n->b)));
    }
    return n;
}

static pq_node *parse_primary(parser *p)
{
    int pos = p->tok.pos;
    switch (p->tok.type) {
    case T_NUM: {
        pq_node *n = new_node(p, PQ_NUM, pos);
        n->num = p->tok.num;
        next(p);
        return n;
    }
    case T_DUR: {
        pq_node *n = new_node(p, PQ_NUM, pos);
        n->num = (double)p->tok.dur_ms / 1000.0;
        next(p);
        return n;
    }
    case T_STR: {
        pq_node *n = new_node(p, PQ_STR, pos);
        n->str = p->tok.str;
        p->tok.str = NULL;
        next(p);
        return n;
    }
    case T_LPAREN: {
        next(p);
        pq_node *n = new_node(p, PQ_PAREN, pos);
        n->a = parse_expr(p, 0);
        expect(p, T_RPAREN, "paren expression", "\")\"");
        return n;
    }
    case T_LBRACE: {
        pq_node *n = parse_selector(p, NULL, pos);
        check_selector(p, n);
        return n;
    }
    case T_IDENT: {
        if (tok_is_ident(p, "inf") || tok_is_ident(p, "nan")) {
            pq_node *n = new_node(p, PQ_NUM, pos);
            n->num = tok_is_ident(p, "inf") ? INFINITY : NAN;
            next(p);
            return n;
        }
        char *name = tok_text(p);
        hold(p, name);
        int agg = pq_agg_lookup(name);
        next(p);
        if (agg && (p->tok.type == T_LPAREN || tok_is_ident(p, "by") || tok_is_ident(p, "without"))) {
            unhold(p, name);
            free(name);
            return parse_agg(p, agg, pos);
        }
        if (p->tok.type == T_LPAREN) {
            const pq_func *f = lookup_func(name);
            if (!f) perr(p, pos, "unknown function with name \"%.150s\"", name);
            unhold(p, name);
            free(name);
            return parse_call(p, f, pos);
        }
        pq_node *n = parse_selector(p, name, pos);
        check_selector(p, n);
        return n;
    }
    default:
        if (p->tok.type == T_RBRACK || p->tok.type == T_RPAREN || p->tok.type == T_RBRACE || p->tok.type == T_COMMA || p->tok.type == T_EOF)
            unexpected(p, "expression", NULL);
        unexpected(p, "expression", NULL);
    }
}

/* Postfix: [range], [range:step], offset, @ */
static pq_node *parse_postfix(parser *p, pq_node *n)
{
    for (;;) {
        if (p->tok.type == T_LBRACK) {
            int pos = p->tok.pos;
            next(p);
            int64_t range = parse_dur(p, "range", 1);
            if (p->tok.type == T_COLON) {
                next(p);
                int64_t step = 0;
                if (p->tok.type != T_RBRACK) step = parse_dur(p, "subquery", 1);
                expect(p, T_RBRACK, "subquery selector", "\"]\"");
                if (node_type(n) != OD_PROMQL_VECTOR)
                    perr(p, pos, "subquery is only allowed on instant vector, got %s instead", type_name(node_type(n)));
                if (range <= 0) perr(p, pos, "duration must be greater than 0");
                pq_node *s = new_node(p, PQ_SUBQ, n->pos);
                s->a = n;
                s->range_ms = range;
                s->step_ms = step;
                n = s;
            } else {
                expect(p, T_RBRACK, "matrix selector", "\"]\"");
                if (n->kind != PQ_VSEL)
                    perr(p, pos, "ranges only allowed for vector selectors");
                if (n->offset_ms || n->has_at)
                    perr(p, pos, "no offset or @ modifiers allowed before range");
                if (range <= 0) perr(p, pos, "duration must be greater than 0");
                n->kind = PQ_MSEL;
                n->range_ms = range;
            }
        } else if (tok_is_ident(p, "offset")) {
            int pos = p->tok.pos;
            next(p);
            pq_node *t = n;
            if (t->kind == PQ_PAREN) t = NULL;
            if (!t || (t->kind != PQ_VSEL && t->kind != PQ_MSEL && t->kind != PQ_SUBQ))
                perr(p, pos, "offset modifier must be preceded by an instant vector selector or range vector selector or a subquery");
            if (t->offset_ms) perr(p, pos, "offset may not be set multiple times");
            t->offset_ms = parse_dur(p, "offset", 0);
            if (t->offset_ms == 0) t->offset_ms = 0;
        } else if (p->tok.type == T_AT) {
            int pos = p->tok.pos;
            next(p);
            if (n->kind != PQ_VSEL && n->kind != PQ_MSEL && n->kind != PQ_SUBQ)
                perr(p, pos, "@ modifier must be preceded by an instant vector selector or range vector selector or a subquery");
            if (n->has_at) perr(p, pos, "@ <timestamp> may not be set multiple times");
            if (tok_is_ident(p, "start") || tok_is_ident(p, "end")) {
                n->has_at = tok_is_ident(p, "start") ? 2 : 3;
                next(p);
                expect(p, T_LPAREN, "@ modifier", "\"(\"");
                expect(p, T_RPAREN, "@ modifier", "\")\"");
            } else {
                int neg = 0;
                if (p->tok.type == T_SUB || p->tok.type == T_ADD) { neg = p->tok.type == T_SUB; next(p); }
                double v;
                if (p->tok.type == T_NUM) v = p->tok.num;
                else if (p->tok.type == T_DUR) v = (double)p->tok.dur_ms / 1000.0;
                else unexpected(p, "@", "timestamp");
                if (neg) v = -v;
                if (!isfinite(v) || fabs(v) > 9.2e15) perr(p, pos, "timestamp out of bounds for @ modifier: %g", v);
                next(p);
                n->has_at = 1;
                n->at_ms = (int64_t)llround(v * 1000.0);
            }
        } else {
            break;
        }
    }
    return n;
}

static pq_node *parse_unary(parser *p)
{
    if (p->tok.type == T_SUB || p->tok.type == T_ADD) {
        int pos = p->tok.pos;
        int neg = p->tok.type == T_SUB;
        next(p);
        pq_node *e = parse_expr(p, 6); /* binds looser than ^ */
        od_promql_value_type t = node_type(e);
        if (t != OD_PROMQL_SCALAR && t != OD_PROMQL_VECTOR)
            perr(p, pos, "unary expression only allowed on expressions of type scalar or instant vector, got %s", type_name(t));
        if (e->kind == PQ_NUM) { /* fold like Prometheus does for literals */
            if (neg) e->num = -e->num;
            e->pos = pos;
            return e;
        }
        pq_node *n = new_node(p, PQ_UNARY, pos);
        n->op = neg ? PQ_OP_SUB : PQ_OP_ADD;
        n->a = e;
        return n;
    }
    return parse_postfix(p, parse_primary(p));
}

static pq_op binop(parser *p, int *prec)
{
    switch (p->tok.type) {
    case T_ADD: *prec = 4; return PQ_OP_ADD;
    case T_SUB: *prec = 4; return PQ_OP_SUB;
    case T_MUL: *prec = 5; return PQ_OP_MUL;
    case T_DIV: *prec = 5; return PQ_OP_DIV;
    case T_MOD: *prec = 5; return PQ_OP_MOD;
    case T_POW: *prec = 7; return PQ_OP_POW;
    case T_EQLC: *prec = 3; return PQ_OP_EQ;
    case T_NEQ: *prec = 3; return PQ_OP_NE;
    case T_GT: *prec = 3; return PQ_OP_GT;
    case T_LT: *prec = 3; return PQ_OP_LT;
    case T_GE: *prec = 3; return PQ_OP_GE;
    case T_LE: *prec = 3; return PQ_OP_LE;
    case T_IDENT:
        if (tok_is_ident(p, "and")) { *prec = 2; return PQ_OP_AND; }
        if (tok_is_ident(p, "unless")) { *prec = 2; return PQ_OP_UNLESS; }
        if (tok_is_ident(p, "or")) { *prec = 1; return PQ_OP_OR; }
        if (tok_is_ident(p, "atan2")) { *prec = 5; return PQ_OP_ATAN2; }
        return PQ_OP_NONE;
    default: return PQ_OP_NONE;
    }
}

static int is_cmp(pq_op op) { return op >= PQ_OP_EQ && op <= PQ_OP_LE; }
static int is_set(pq_op op) { return op >= PQ_OP_AND; }

static void check_binary(parser *p, pq_node *n, int oppos)
{
    od_promql_value_type lt = node_type(n->a), rt = node_type(n->b);
    if ((lt != OD_PROMQL_SCALAR && lt != OD_PROMQL_VECTOR) || (rt != OD_PROMQL_SCALAR && rt != OD_PROMQL_VECTOR))
        perr(p, lt != OD_PROMQL_SCALAR && lt != OD_PROMQL_VECTOR ? n->a->pos : n->b->pos,
             "binary expression must contain only scalar and instant vector types");
    if (n->return_bool && !is_cmp(n->op))
        perr(p, oppos, "bool modifier can only be used on comparison operators");
    if (is_cmp(n->op) && lt == OD_PROMQL_SCALAR && rt == OD_PROMQL_SCALAR && !n->return_bool)
        perr(p, oppos, "comparisons between scalars must use BOOL modifier");
    if (is_set(n->op)) {
        if (lt == OD_PROMQL_SCALAR || rt == OD_PROMQL_SCALAR)
            perr(p, oppos, "set operator \"%s\" not allowed in binary scalar expression", pq_op_name(n->op));
        if (n->card == PQ_CARD_MANY_TO_ONE || n->card == PQ_CARD_ONE_TO_MANY)
            perr(p, oppos, "no grouping allowed for \"%s\" operation", pq_op_name(n->op));
        n->card = PQ_CARD_MANY_TO_MANY;
    }
    if ((lt != OD_PROMQL_VECTOR || rt != OD_PROMQL_VECTOR) && n->has_matching) {
        if (n->match_labels.n > 0 || n->on || n->include.n > 0 || n->card != PQ_CARD_ONE_TO_ONE)
            perr(p, oppos, "vector matching only allowed between instant vectors");
    }
    for (size_t i = 0; i < n->include.n && n->on; i++)
        for (size_t j = 0; j < n->match_labels.n; j++)
            if (strcmp(n->include.v[i], n->match_labels.v[j]) == 0)
                perr(p, oppos, "label \"%s\" must not occur in ON and GROUP clause at once", n->include.v[i]);
}

static pq_node *parse_expr(parser *p, int minprec)
{
    pq_node *lhs = parse_unary(p);
    for (;;) {
        int prec;
        pq_op op = binop(p, &prec);
        if (op == PQ_OP_NONE || prec < minprec) break;
        int oppos = p->tok.pos;
        pq_node *n = new_node(p, PQ_BINARY, lhs->pos);
        n->op = op;
        n->a = lhs;
        lhs = n;
        next(p);
        if (tok_is_ident(p, "bool")) { n->return_bool = 1; next(p); }
        if (tok_is_ident(p, "on") || tok_is_ident(p, "ignoring")) {
            n->has_matching = 1;
            n->on = tok_is_ident(p, "on");
            next(p);
            parse_label_list(p, &n->match_labels, "grouping opts");
            if (tok_is_ident(p, "group_left") || tok_is_ident(p, "group_right")) {
                n->card = tok_is_ident(p, "group_left") ? PQ_CARD_MANY_TO_ONE : PQ_CARD_ONE_TO_MANY;
                next(p);
                if (p->tok.type == T_LPAREN) parse_label_list(p, &n->include, "grouping opts");
            }
        } else if (tok_is_ident(p, "group_left") || tok_is_ident(p, "group_right")) {
            perr(p, p->tok.pos, "unexpected <group_left/group_right> without on/ignoring");
        }
        n->b = parse_expr(p, op == PQ_OP_POW ? prec : prec + 1);
        check_binary(p, n, oppos);
    }
    return lhs;
}

void pq_pos_linecol(const char *s, int pos, int *line, int *col)
{
    int l = 1, c = 1;
    for (int i = 0; i < pos && s[i]; i++) {
        if (s[i] == '\n') { l++; c = 1; }
        else c++;
    }
    *line = l;
    *col = c;
}

static void node_free_shallow(pq_node *n)
{
    n->a = n->b = NULL;
    for (size_t i = 0; i < n->nargs; i++) n->args[i] = NULL;
    n->nargs = 0;
    node_free(n);
}

int od_promql_parse(const char *query, od_promql_expr **out, od_err *err)
{
    parser *p = calloc(1, sizeof *p);
    od_promql_expr *volatile e = calloc(1, sizeof *e);
    *out = NULL;
    if (!p || !e) {
        free(p);
        free(e);
        return od_err_set(err, OD_NOMEM, "promql: out of memory");
    }
    p->src = query;
    pq_lex_init(&p->lx, query);
    volatile int rc = OD_OK;
    if (setjmp(p->jb) == 0) {
        next(p);
        if (p->tok.type == T_EOF) perr(p, 0, "no expression found in input");
        pq_node *root = parse_expr(p, 0);
        if (p->tok.type != T_EOF) {
            char b[160];
            perr(p, p->tok.pos, "unexpected %s", pq_tok_desc(&p->tok, p->src, b, sizeof b));
        }
        e->root = root;
        e->src = strdup(query);
        if (!e->src) perr(p, 0, "out of memory");
    } else {
        int line, col;
        pq_pos_linecol(query, p->errpos, &line, &col);
        od_err_set(err, OD_BADREQ, "%d:%d: parse error: %s", line, col, p->errmsg);
        rc = OD_BADREQ;
        for (size_t i = 0; i < p->nall; i++) node_free_shallow(p->all[i]);
        for (int i = 0; i < p->npend; i++) free(p->pend[i]);
        free(e);
        e = NULL;
    }
    pq_tok_clear(&p->tok);
    free(p->all);
    free(p);
    *out = e;
    return rc;
}

/* ---------------- printer ---------------- */

typedef struct sb {
    char *s;
    size_t n, cap;
    int oom;
} sb;

static void sb_add(sb *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap * 2 : 64;
        while (c < b->n + n + 1) c *= 2;
        char *v = realloc(b->s, c);
        if (!v) { b->oom = 1; return; }
        b->s = v;
        b->cap = c;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}
static void sb_str(sb *b, const char *s) { sb_add(b, s, strlen(s)); }
static void sb_fmt(sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_fmt(sb *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) sb_add(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void sb_quote(sb *b, const char *s)
{
    sb_str(b, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') { char e[2] = {'\\', (char)c}; sb_add(b, e, 2); }
        else if (c == '\n') sb_str(b, "\\n");
        else if (c == '\t') sb_str(b, "\\t");
        else if (c == '\r') sb_str(b, "\\r");
        else if (c < 0x20) sb_fmt(b, "\\x%02x", c);
        else sb_add(b, (const char *)&c, 1);
    }
    sb_str(b, "\"");
}

static int is_plain_label(const char *s)
{
    if (!*s || !(isalpha((unsigned char)*s) || *s == '_')) return 0;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '_')) return 0;
    return 1;
}

static int is_plain_metric(const char *s)
{
    if (!*s || !(isalpha((unsigned char)*s) || *s == '_' || *s == ':')) return 0;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '_' || *s == ':')) return 0;
    return 1;
}

static void print_label(sb *b, const char *s)
{
    if (is_plain_label(s)) sb_str(b, s);
    else sb_quote(b, s);
}

static void print_list(sb *b, const pq_strlist *l)
{
    sb_str(b, "(");
    for (size_t i = 0; i < l->n; i++) {
        if (i) sb_str(b, ", ");
        print_label(b, l->v[i]);
    }
    sb_str(b, ")");
}

static void print_num(sb *b, double v)
{
    if (isnan(v)) sb_str(b, "NaN");
    else if (isinf(v)) sb_str(b, v > 0 ? "+Inf" : "-Inf");
    else sb_fmt(b, "%.17g", v);
}

static void print_mods(sb *b, const pq_node *n)
{
    char d[64];
    if (n->has_at == 1) {
        sb_str(b, " @ ");
        sb_fmt(b, "%lld.%03lld", (long long)(n->at_ms / 1000), (long long)llabs(n->at_ms % 1000));
    } else if (n->has_at == 2) sb_str(b, " @ start()");
    else if (n->has_at == 3) sb_str(b, " @ end()");
    if (n->offset_ms) {
        pq_format_duration(n->offset_ms, d, sizeof d);
        sb_fmt(b, " offset %s", d);
    }
}

static void print_node(sb *b, const pq_node *n)
{
    char d[64];
    switch (n->kind) {
    case PQ_NUM: print_num(b, n->num); break;
    case PQ_STR: sb_quote(b, n->str); break;
    case PQ_VSEL:
    case PQ_MSEL: {
        const char *metric = NULL;
        size_t skip = (size_t)-1;
        for (size_t i = 0; i < n->nmatchers; i++)
            if (n->matchers[i].type == OD_PROMQL_MATCH_EQ && strcmp(n->matchers[i].name, "__name__") == 0) {
                metric = n->matchers[i].value;
                skip = i;
                break;
            }
        int quoted_name = metric && !is_plain_metric(metric);
        if (metric && !quoted_name) sb_str(b, metric);
        if (n->nmatchers > (metric ? 1u : 0u) || !metric || quoted_name) {
            sb_str(b, "{");
            int first = 1;
            if (quoted_name) { sb_quote(b, metric); first = 0; }
            for (size_t i = 0; i < n->nmatchers; i++) {
                if (i == skip) continue;
                if (!first) sb_str(b, ", ");
                first = 0;
                print_label(b, n->matchers[i].name);
                static const char *ops[] = {"=", "!=", "=~", "!~"};
                sb_str(b, ops[n->matchers[i].type]);
                sb_quote(b, n->matchers[i].value);
            }
            sb_str(b, "}");
        }
        if (n->kind == PQ_MSEL) {
            pq_format_duration(n->range_ms, d, sizeof d);
            sb_fmt(b, "[%s]", d);
        }
        print_mods(b, n);
        break;
    }
    case PQ_SUBQ:
        print_node(b, n->a);
        pq_format_duration(n->range_ms, d, sizeof d);
        sb_fmt(b, "[%s:", d);
        if (n->step_ms) {
            pq_format_duration(n->step_ms, d, sizeof d);
            sb_str(b, d);
        }
        sb_str(b, "]");
        print_mods(b, n);
        break;
    case PQ_PAREN:
        sb_str(b, "(");
        print_node(b, n->a);
        sb_str(b, ")");
        break;
    case PQ_UNARY:
        sb_str(b, n->op == PQ_OP_SUB ? "-" : "+");
        print_node(b, n->a);
        break;
    case PQ_BINARY:
        print_node(b, n->a);
        sb_fmt(b, " %s ", pq_op_name(n->op));
        if (n->return_bool) sb_str(b, "bool ");
        if (n->has_matching) {
            sb_str(b, n->on ? "on" : "ignoring");
            print_list(b, &n->match_labels);
            sb_str(b, " ");
            if (n->card == PQ_CARD_MANY_TO_ONE || n->card == PQ_CARD_ONE_TO_MANY) {
                sb_str(b, n->card == PQ_CARD_MANY_TO_ONE ? "group_left" : "group_right");
                if (n->include.n) print_list(b, &n->include);
                sb_str(b, " ");
            }
        }
        print_node(b, n->b);
        break;
    case PQ_CALL:
        sb_fmt(b, "%s(", n->func->name);
        for (size_t i = 0; i < n->nargs; i++) {
            if (i) sb_str(b, ", ");
            print_node(b, n->args[i]);
        }
        sb_str(b, ")");
        break;
    case PQ_AGG:
        sb_str(b, pq_agg_name(n->agg));
        if (n->has_grouping) {
            sb_str(b, n->without ? " without " : " by ");
            print_list(b, &n->grouping);
            sb_str(b, " ");
        }
        sb_str(b, "(");
        if (n->b) { print_node(b, n->b); sb_str(b, ", "); }
        print_node(b, n->a);
        sb_str(b, ")");
        break;
    }
}

char *od_promql_expr_string(const od_promql_expr *e)
{
    sb b = {0};
    print_node(&b, e->root);
    if (b.oom) { free(b.s); return NULL; }
    if (!b.s) return strdup("");
    return b.s;
}

const char *pq_op_name(pq_op op)
{
    static const char *names[] = {"", "+", "-", "*", "/", "%", "^", "atan2", "==", "!=", ">", "<", ">=", "<=", "and", "or", "unless"};
    return names[op];
}

/* ---------------- @ rewriting for the conformance runner ---------------- */

static int unsafe_for_at(const pq_node *n)
{
    if (!n) return 0;
    if (n->kind == PQ_CALL) {
        static const char *u[] = {"days_in_month", "day_of_month", "day_of_week", "day_of_year", "hour", "minute",
                                  "month", "year", "predict_linear", "time", "timestamp", NULL};
        for (int i = 0; u[i]; i++)
            if (strcmp(n->func->name, u[i]) == 0) return 1;
    }
    if (unsafe_for_at(n->a) || unsafe_for_at(n->b)) return 1;
    for (size_t i = 0; i < n->nargs; i++)
        if (unsafe_for_at(n->args[i])) return 1;
    return 0;
}

static int set_at(pq_node *n, int64_t t)
{
    if (!n) return 0;
    int changed = 0;
    if (n->kind == PQ_VSEL || n->kind == PQ_MSEL || n->kind == PQ_SUBQ) {
        if (!n->has_at) {
            n->has_at = 1;
            n->at_ms = t;
            changed = 1;
        }
        if (n->kind == PQ_SUBQ) return changed; /* the inside of a subquery with @ stays as is */
    }
    changed |= set_at(n->a, t);
    changed |= set_at(n->b, t);
    for (size_t i = 0; i < n->nargs; i++) changed |= set_at(n->args[i], t);
    return changed;
}

int od_promql_expr_set_at(od_promql_expr *e, int64_t t)
{
    if (unsafe_for_at(e->root)) return 0;
    return set_at(e->root, t);
}
