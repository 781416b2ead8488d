/*
 * matcher.c — label matchers (=, !=, =~, !~) and the PromQL series-selector parser.
 *
 * Owns: od_matcher (name, value, and for regex ops a compiled PCRE2 pattern plus its match
 * data) and od_selector_parse.
 *
 * How it works: Prometheus regexes are RE2 syntax and fully anchored, with `.` matching a
 * newline. PCRE2 accepts that syntax (a superset), so a regex `re` is compiled as
 * "^(?:re)$" with PCRE2_UTF | PCRE2_DOTALL | PCRE2_DOLLAR_ENDONLY (so `$` does not match
 * before a trailing newline). An absent label matches as the empty string, so `a=""` selects
 * series without `a` and `a!=""` series with it, as in Prometheus.
 *
 * The selector grammar (a subset of PromQL, enough for the vtab's `selector` column):
 *   selector := metric [ '{' [ matcher (',' matcher)* [','] ] '}' ] | '{' ... '}'
 *   matcher  := labelname ('=' | '!=' | '=~' | '!~') string
 *   string   := "..." | '...' (Go escapes: \" \' \\ \n \t \r \xHH \uHHHH) | `raw`
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "od_tsdb.h"

#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

const char *od_match_op_str(od_match_op op)
{
    switch (op) {
    case OD_MATCH_EQ: return "=";
    case OD_MATCH_NE: return "!=";
    case OD_MATCH_RE: return "=~";
    case OD_MATCH_NRE: return "!~";
    }
    return "?";
}

int od_matcher_init(od_matcher *m, od_match_op op, const char *name, const char *value, od_err *err)
{
    memset(m, 0, sizeof *m);
    m->op = op;
    m->name = strdup(name);
    m->value = strdup(value);
    if (!m->name || !m->value) {
        od_matcher_clear(m);
        return od_err_set(err, OD_NOMEM, "out of memory");
    }
    if (op == OD_MATCH_RE || op == OD_MATCH_NRE) {
        size_t vl = strlen(value);
        char *pat = malloc(vl + 8);
        if (!pat) {
            od_matcher_clear(m);
            return od_err_set(err, OD_NOMEM, "out of memory");
        }
        memcpy(pat, "^(?:", 4);
        memcpy(pat + 4, value, vl);
        memcpy(pat + 4 + vl, ")$", 3);
        int ec;
        PCRE2_SIZE eo;
        pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED,
                                       PCRE2_UTF | PCRE2_DOTALL | PCRE2_DOLLAR_ENDONLY, &ec, &eo, NULL);
        free(pat);
        if (!re) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(ec, msg, sizeof msg);
            od_err_set(err, OD_BADREQ, "tsdb: invalid regular expression \"%.200s\" for label \"%.100s\": %s", value,
                       name, (const char *)msg);
            od_matcher_clear(m);
            return OD_BADREQ;
        }
        (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* optional speed-up; fine if absent */
        m->re = re;
        m->md = pcre2_match_data_create_from_pattern(re, NULL);
        if (!m->md) {
            od_matcher_clear(m);
            return od_err_set(err, OD_NOMEM, "out of memory");
        }
    } else if (op != OD_MATCH_EQ && op != OD_MATCH_NE) {
        od_matcher_clear(m);
        return od_err_set(err, OD_BADREQ, "tsdb: unknown matcher operator %d", (int)op);
    }
    return OD_OK;
}

void od_matcher_clear(od_matcher *m)
{
    free(m->name);
    free(m->value);
    if (m->md) pcre2_match_data_free(m->md);
    if (m->re) pcre2_code_free(m->re);
    memset(m, 0, sizeof *m);
}

int od_matcher_matches(const od_matcher *m, const char *value, size_t len)
{
    switch (m->op) {
    case OD_MATCH_EQ: return strlen(m->value) == len && memcmp(m->value, value, len) == 0;
    case OD_MATCH_NE: return !(strlen(m->value) == len && memcmp(m->value, value, len) == 0);
    case OD_MATCH_RE:
    case OD_MATCH_NRE: {
        int rc = pcre2_match(m->re, (PCRE2_SPTR)value, len, 0, 0, m->md, NULL);
        int hit = rc >= 0;
        return m->op == OD_MATCH_RE ? hit : !hit;
    }
    }
    return 0;
}

int od_matchers_match(const od_matcher *ms, size_t n, const od_labels *ls)
{
    for (size_t i = 0; i < n; i++) {
        const char *v = od_labels_get(ls, ms[i].name);
        if (!v) v = "";
        if (!od_matcher_matches(&ms[i], v, strlen(v))) return 0;
    }
    return 1;
}

void od_matchers_free(od_matcher *ms, size_t n)
{
    if (!ms) return;
    for (size_t i = 0; i < n; i++) od_matcher_clear(&ms[i]);
    free(ms);
}

/* ---------------------------------------------------------------- parser */

typedef struct parser {
    const char *s, *p;
    od_err *err;
} parser;

static void skip_ws(parser *ps)
{
    while (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r') ps->p++;
}

static int perr(parser *ps, const char *what)
{
    return od_err_set(ps->err, OD_BADREQ, "tsdb: bad selector at position %d: %s (in \"%.200s\")",
                      (int)(ps->p - ps->s) + 1, what, ps->s);
}

static int is_ident_start(char c, int colon)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon && c == ':');
}

static int is_ident(char c, int colon) { return is_ident_start(c, colon) || (c >= '0' && c <= '9'); }

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int put_utf8(od_buf *b, uint32_t cp)
{
    uint8_t t[4];
    size_t n;
    if (cp < 0x80) { t[0] = (uint8_t)cp; n = 1; }
    else if (cp < 0x800) { t[0] = (uint8_t)(0xc0 | (cp >> 6)); t[1] = (uint8_t)(0x80 | (cp & 0x3f)); n = 2; }
    else if (cp < 0x10000) {
        t[0] = (uint8_t)(0xe0 | (cp >> 12));
        t[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
        t[2] = (uint8_t)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        t[0] = (uint8_t)(0xf0 | (cp >> 18));
        t[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
        t[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
        t[3] = (uint8_t)(0x80 | (cp & 0x3f));
        n = 4;
    }
    return od_buf_append(b, t, n);
}

/* Parse a quoted string into b (NUL-terminated). */
static int parse_string(parser *ps, od_buf *b)
{
    char q = *ps->p;
    if (q != '"' && q != '\'' && q != '`') return perr(ps, "expected a quoted string");
    ps->p++;
    for (;;) {
        char c = *ps->p;
        if (c == 0) return perr(ps, "unterminated string");
        ps->p++;
        if (c == q) break;
        if (c == '\\' && q != '`') {
            char e = *ps->p++;
            int rc;
            switch (e) {
            case 'n': rc = od_buf_append_u8(b, '\n'); break;
            case 't': rc = od_buf_append_u8(b, '\t'); break;
            case 'r': rc = od_buf_append_u8(b, '\r'); break;
            case 'a': rc = od_buf_append_u8(b, '\a'); break;
            case 'b': rc = od_buf_append_u8(b, '\b'); break;
            case 'f': rc = od_buf_append_u8(b, '\f'); break;
            case 'v': rc = od_buf_append_u8(b, '\v'); break;
            case '\\': case '"': case '\'': rc = od_buf_append_u8(b, (uint8_t)e); break;
            case 'x': {
                int h1 = hexval(ps->p[0]), h2 = h1 >= 0 ? hexval(ps->p[1]) : -1;
                if (h1 < 0 || h2 < 0) return perr(ps, "bad \\x escape");
                ps->p += 2;
                rc = od_buf_append_u8(b, (uint8_t)(h1 * 16 + h2));
                break;
            }
            case 'u': case 'U': {
                int nd = e == 'u' ? 4 : 8;
                uint32_t cp = 0;
                for (int i = 0; i < nd; i++) {
                    int h = hexval(ps->p[i]);
                    if (h < 0) return perr(ps, "bad unicode escape");
                    cp = cp * 16 + (uint32_t)h;
                }
                if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return perr(ps, "bad unicode escape");
                ps->p += nd;
                rc = put_utf8(b, cp);
                break;
            }
            default:
                ps->p--;
                return perr(ps, "unknown escape sequence");
            }
            if (rc) return od_err_set(ps->err, OD_NOMEM, "out of memory");
        } else if (od_buf_append_u8(b, (uint8_t)c)) {
            return od_err_set(ps->err, OD_NOMEM, "out of memory");
        }
    }
    if (od_buf_cstr(b)) return od_err_set(ps->err, OD_NOMEM, "out of memory");
    return OD_OK;
}

static int push_matcher(od_matcher **ms, size_t *n, size_t *cap, od_match_op op, const char *name,
                        const char *value, od_err *err)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 4;
        od_matcher *nm = realloc(*ms, nc * sizeof *nm);
        if (!nm) return od_err_set(err, OD_NOMEM, "out of memory");
        *ms = nm;
        *cap = nc;
    }
    int rc = od_matcher_init(&(*ms)[*n], op, name, value, err);
    if (rc) return rc;
    (*n)++;
    return OD_OK;
}

int od_selector_parse(const char *sel, od_matcher **out, size_t *nout, od_err *err)
{
    parser ps = {sel, sel, err};
    od_matcher *ms = NULL;
    size_t n = 0, cap = 0;
    od_buf name = {0}, val = {0};
    int rc = OD_OK;
    *out = NULL;
    *nout = 0;
    skip_ws(&ps);
    if (is_ident_start(*ps.p, 1)) {
        const char *st = ps.p;
        while (is_ident(*ps.p, 1)) ps.p++;
        if (od_buf_append(&name, st, (size_t)(ps.p - st)) || od_buf_cstr(&name)) {
            rc = od_err_set(err, OD_NOMEM, "out of memory");
            goto done;
        }
        if ((rc = push_matcher(&ms, &n, &cap, OD_MATCH_EQ, "__name__", (char *)name.data, err))) goto done;
        skip_ws(&ps);
    }
    if (*ps.p == '{') {
        ps.p++;
        for (;;) {
            skip_ws(&ps);
            if (*ps.p == '}') { ps.p++; break; }
            if (!is_ident_start(*ps.p, 0)) { rc = perr(&ps, "expected a label name"); goto done; }
            const char *st = ps.p;
            while (is_ident(*ps.p, 0)) ps.p++;
            od_buf_reset(&name);
            if (od_buf_append(&name, st, (size_t)(ps.p - st)) || od_buf_cstr(&name)) {
                rc = od_err_set(err, OD_NOMEM, "out of memory");
                goto done;
            }
            skip_ws(&ps);
            od_match_op op;
            if (ps.p[0] == '=' && ps.p[1] == '~') { op = OD_MATCH_RE; ps.p += 2; }
            else if (ps.p[0] == '!' && ps.p[1] == '~') { op = OD_MATCH_NRE; ps.p += 2; }
            else if (ps.p[0] == '!' && ps.p[1] == '=') { op = OD_MATCH_NE; ps.p += 2; }
            else if (ps.p[0] == '=') { op = OD_MATCH_EQ; ps.p += 1; }
            else { rc = perr(&ps, "expected one of =, !=, =~, !~"); goto done; }
            skip_ws(&ps);
            od_buf_reset(&val);
            if ((rc = parse_string(&ps, &val))) goto done;
            if ((rc = push_matcher(&ms, &n, &cap, op, (char *)name.data, (char *)val.data, err))) goto done;
            skip_ws(&ps);
            if (*ps.p == ',') { ps.p++; continue; }
            if (*ps.p == '}') { ps.p++; break; }
            rc = perr(&ps, "expected ',' or '}'");
            goto done;
        }
    } else if (n == 0) {
        rc = perr(&ps, "expected a metric name or '{'");
        goto done;
    }
    skip_ws(&ps);
    if (*ps.p) { rc = perr(&ps, "unexpected trailing characters"); goto done; }
    /* Prometheus: a selector must contain a matcher that does not match the empty string. */
    {
        int nonempty = 0;
        for (size_t i = 0; i < n; i++)
            if (!od_matcher_matches(&ms[i], "", 0)) nonempty = 1;
        if (!nonempty) {
            rc = od_err_set(err, OD_BADREQ,
                            "tsdb: selector \"%.200s\" must contain at least one matcher that does not match the "
                            "empty string",
                            sel);
            goto done;
        }
    }
done:
    od_buf_free(&name);
    od_buf_free(&val);
    if (rc) {
        od_matchers_free(ms, n);
        return rc;
    }
    *out = ms;
    *nout = n;
    return OD_OK;
}
