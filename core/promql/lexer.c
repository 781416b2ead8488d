/*
 * lexer.c — the PromQL tokenizer and duration helpers.
 *
 * Owns nothing but the decoded string of the current token. Works on demand: the parser pulls
 * one token at a time (pq_lex_next). Numbers: decimal with optional exponent, `2.`, `.5`, hex
 * `0x1f`; Inf/NaN arrive as identifiers and the parser turns them into numbers. A number
 * immediately followed by a unit (ms s m h d w y, possibly several: 1h30m) is a duration.
 * Strings: "..." and '...' with Go escapes, `...` raw. `#` starts a comment to end of line.
 * Identifiers may contain ':' (recording rule names) except inside [...] where ':' separates
 * a subquery's range and step.
 */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "promql_int.h"

void pq_lex_init(pq_lexer *lx, const char *s)
{
    memset(lx, 0, sizeof *lx);
    lx->s = s;
    lx->len = strlen(s);
}

void pq_tok_clear(pq_tok *t)
{
    free(t->str);
    t->str = NULL;
}

static int unit_ms(const char *s, size_t n, size_t *ulen, int64_t *mult)
{
    if (n >= 2 && s[0] == 'm' && s[1] == 's') { *ulen = 2; *mult = 1; return 1; }
    switch (n ? s[0] : 0) {
    case 's': *mult = 1000; break;
    case 'm': *mult = 60000; break;
    case 'h': *mult = 3600000; break;
    case 'd': *mult = 86400000; break;
    case 'w': *mult = 604800000; break;
    case 'y': *mult = 31536000000LL; break;
    default: return 0;
    }
    *ulen = 1;
    return 1;
}

/* Parse a whole duration string like "1h30m" (no sign). Returns 0 on success. */
int pq_parse_duration(const char *s, size_t n, int64_t *ms)
{
    size_t i = 0;
    int64_t total = 0;
    int64_t last_mult = INT64_MAX;
    if (n == 0) return -1;
    while (i < n) {
        if (!isdigit((unsigned char)s[i])) return -1;
        int64_t v = 0;
        while (i < n && isdigit((unsigned char)s[i])) {
            if (v > INT64_MAX / 10) return -1;
            v = v * 10 + (s[i] - '0');
            i++;
        }
        size_t ul;
        int64_t mult;
        if (!unit_ms(s + i, n - i, &ul, &mult)) return -1;
        if (mult >= last_mult) return -1; /* units must decrease: 1h30m, not 30m1h */
        last_mult = mult;
        if (v > INT64_MAX / mult) return -1;
        total += v * mult;
        i += ul;
    }
    *ms = total;
    return 0;
}

void pq_format_duration(int64_t ms, char *out, size_t cap)
{
    static const struct { const char *u; int64_t m; } units[] = {
        {"y", 31536000000LL}, {"w", 604800000}, {"d", 86400000}, {"h", 3600000},
        {"m", 60000}, {"s", 1000}, {"ms", 1}};
    size_t o = 0;
    if (ms == 0) { snprintf(out, cap, "0s"); return; }
    if (ms < 0) { o += (size_t)snprintf(out + o, cap - o, "-"); ms = -ms; }
    for (size_t i = 0; i < sizeof units / sizeof units[0] && o < cap; i++) {
        if (ms >= units[i].m) {
            o += (size_t)snprintf(out + o, cap - o, "%lld%s", (long long)(ms / units[i].m), units[i].u);
            ms %= units[i].m;
        }
    }
}

static int is_ident_start(int c) { return isalpha(c) || c == '_'; }
static int is_ident_char(int c) { return isalnum(c) || c == '_' || c == ':'; }

static void set_err(pq_tok *t, const char *msg)
{
    t->type = T_ERR;
    snprintf(t->err, sizeof t->err, "%s", msg);
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static size_t put_utf8(char *o, unsigned long cp)
{
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F)); return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F)); return 4;
}

static void lex_string(pq_lexer *lx, pq_tok *t)
{
    char q = lx->s[lx->p++];
    char *o = malloc(lx->len - lx->p + 1);
    size_t on = 0;
    if (!o) { set_err(t, "out of memory"); return; }
    for (;;) {
        if (lx->p >= lx->len) { free(o); set_err(t, "unterminated quoted string"); return; }
        char c = lx->s[lx->p++];
        if (c == q) break;
        if (q != '`' && c == '\n') { free(o); set_err(t, "unterminated quoted string"); return; }
        if (c != '\\' || q == '`') { o[on++] = c; continue; }
        if (lx->p >= lx->len) { free(o); set_err(t, "unterminated quoted string"); return; }
        c = lx->s[lx->p++];
        switch (c) {
        case 'a': o[on++] = '\a'; break;
        case 'b': o[on++] = '\b'; break;
        case 'f': o[on++] = '\f'; break;
        case 'n': o[on++] = '\n'; break;
        case 'r': o[on++] = '\r'; break;
        case 't': o[on++] = '\t'; break;
        case 'v': o[on++] = '\v'; break;
        case '\\': o[on++] = '\\'; break;
        case '"': case '\'': o[on++] = c; break;
        case 'x': case 'u': case 'U': {
            int nd = c == 'x' ? 2 : c == 'u' ? 4 : 8;
            unsigned long cp = 0;
            for (int i = 0; i < nd; i++) {
                int h = lx->p < lx->len ? hexval(lx->s[lx->p]) : -1;
                if (h < 0) { free(o); set_err(t, "invalid escape sequence in string"); return; }
                cp = cp * 16 + (unsigned)h;
                lx->p++;
            }
            if (c == 'x') o[on++] = (char)cp;
            else {
                if (cp > 0x10FFFF || (cp >= 0xD800 && cp < 0xE000)) { free(o); set_err(t, "escape sequence is an invalid Unicode code point"); return; }
                on += put_utf8(o + on, cp);
            }
            break;
        }
        default:
            if (c >= '0' && c <= '7') {
                unsigned v = (unsigned)(c - '0');
                for (int i = 0; i < 2; i++) {
                    if (lx->p >= lx->len || lx->s[lx->p] < '0' || lx->s[lx->p] > '7') { free(o); set_err(t, "invalid escape sequence in string"); return; }
                    v = v * 8 + (unsigned)(lx->s[lx->p++] - '0');
                }
                if (v > 255) { free(o); set_err(t, "octal escape value > 255"); return; }
                o[on++] = (char)v;
                break;
            }
            free(o);
            set_err(t, "unknown escape sequence in string");
            return;
        }
    }
    o[on] = 0;
    t->type = T_STR;
    t->str = o;
}

static void lex_number(pq_lexer *lx, pq_tok *t)
{
    const char *s = lx->s;
    size_t st = lx->p, p = lx->p;
    if (s[p] == '0' && (s[p + 1] == 'x' || s[p + 1] == 'X') && hexval(s[p + 2]) >= 0) {
        p += 2;
        double v = 0;
        while (hexval(s[p]) >= 0) v = v * 16 + hexval(s[p++]);
        if (is_ident_char((unsigned char)s[p])) { lx->p = p; set_err(t, "bad number or duration syntax"); return; }
        lx->p = p;
        t->type = T_NUM;
        t->num = v;
        return;
    }
    /* duration? digits followed by a unit letter */
    size_t q = p;
    while (isdigit((unsigned char)s[q])) q++;
    if (q > p) {
        size_t ul;
        int64_t mult;
        if (unit_ms(s + q, lx->len - q, &ul, &mult)) {
            size_t e = q;
            /* consume the whole run of digit+unit groups */
            while (isdigit((unsigned char)s[e]) || isalpha((unsigned char)s[e])) e++;
            int64_t ms;
            lx->p = e;
            if (pq_parse_duration(s + st, e - st, &ms) != 0) { set_err(t, "bad number or duration syntax"); return; }
            t->type = T_DUR;
            t->dur_ms = ms;
            return;
        }
    }
    while (isdigit((unsigned char)s[p])) p++;
    if (s[p] == '.') { p++; while (isdigit((unsigned char)s[p])) p++; }
    if ((s[p] == 'e' || s[p] == 'E') && (isdigit((unsigned char)s[p + 1]) ||
        ((s[p + 1] == '+' || s[p + 1] == '-') && isdigit((unsigned char)s[p + 2])))) {
        p += 2;
        while (isdigit((unsigned char)s[p])) p++;
    }
    if ((is_ident_char((unsigned char)s[p]) && !(s[p] == ':' && lx->bracket)) || s[p] == '.') {
        while ((is_ident_char((unsigned char)s[p]) && !(s[p] == ':' && lx->bracket)) || s[p] == '.') p++;
        lx->p = p;
        set_err(t, "bad number or duration syntax");
        return;
    }
    char tmp[128];
    size_t n = p - st;
    if (n >= sizeof tmp) n = sizeof tmp - 1;
    memcpy(tmp, s + st, n);
    tmp[n] = 0;
    lx->p = p;
    t->type = T_NUM;
    t->num = strtod(tmp, NULL);
}

void pq_lex_next(pq_lexer *lx, pq_tok *t)
{
    pq_tok_clear(t);
    memset(t, 0, sizeof *t);
    const char *s = lx->s;
    for (;;) {
        while (lx->p < lx->len && isspace((unsigned char)s[lx->p])) lx->p++;
        if (lx->p < lx->len && s[lx->p] == '#') {
            while (lx->p < lx->len && s[lx->p] != '\n') lx->p++;
            continue;
        }
        break;
    }
    t->pos = (int)lx->p;
    if (lx->p >= lx->len) { t->type = T_EOF; return; }
    int c = (unsigned char)s[lx->p];
    int c1 = lx->p + 1 < lx->len ? (unsigned char)s[lx->p + 1] : 0;
    if (isdigit(c) || (c == '.' && isdigit(c1))) {
        lex_number(lx, t);
    } else if (is_ident_start(c) || (c == ':' && !lx->bracket)) {
        while (lx->p < lx->len && is_ident_char((unsigned char)s[lx->p])) {
            if (s[lx->p] == ':' && lx->bracket) break;
            lx->p++;
        }
        t->type = T_IDENT;
    } else if (c == '"' || c == '\'' || c == '`') {
        lex_string(lx, t);
    } else {
        lx->p++;
        switch (c) {
        case '{': t->type = T_LBRACE; lx->brace++; break;
        case '}': t->type = T_RBRACE; lx->brace--; break;
        case '(': t->type = T_LPAREN; break;
        case ')': t->type = T_RPAREN; break;
        case '[': t->type = T_LBRACK; lx->bracket++; break;
        case ']': t->type = T_RBRACK; lx->bracket--; break;
        case ',': t->type = T_COMMA; break;
        case ':': t->type = T_COLON; break;
        case '@': t->type = T_AT; break;
        case '+': t->type = T_ADD; break;
        case '-': t->type = T_SUB; break;
        case '*': t->type = T_MUL; break;
        case '/': t->type = T_DIV; break;
        case '%': t->type = T_MOD; break;
        case '^': t->type = T_POW; break;
        case '=':
            if (c1 == '=') { lx->p++; t->type = T_EQLC; }
            else if (c1 == '~') { lx->p++; t->type = T_RE; }
            else t->type = T_ASSIGN;
            break;
        case '!':
            if (c1 == '=') { lx->p++; t->type = T_NEQ; }
            else if (c1 == '~') { lx->p++; t->type = T_NRE; }
            else set_err(t, "unexpected character after '!'");
            break;
        case '>':
            if (c1 == '=') { lx->p++; t->type = T_GE; } else t->type = T_GT;
            break;
        case '<':
            if (c1 == '=') { lx->p++; t->type = T_LE; } else t->type = T_LT;
            break;
        default: {
            char m[64];
            if (c >= 0x20 && c < 0x7f) snprintf(m, sizeof m, "unexpected character: '%c'", c);
            else snprintf(m, sizeof m, "unexpected character: 0x%02x", c);
            set_err(t, m);
        }
        }
    }
    t->len = (int)(lx->p - (size_t)t->pos);
}

const char *pq_tok_desc(const pq_tok *t, const char *src, char *buf, size_t cap)
{
    switch (t->type) {
    case T_EOF: return "end of input";
    case T_NUM: snprintf(buf, cap, "number \"%.*s\"", t->len, src + t->pos); return buf;
    case T_DUR: snprintf(buf, cap, "duration \"%.*s\"", t->len, src + t->pos); return buf;
    case T_STR: snprintf(buf, cap, "string %.*s", t->len, src + t->pos); return buf;
    case T_IDENT: snprintf(buf, cap, "identifier \"%.*s\"", t->len, src + t->pos); return buf;
    case T_LBRACE: return "\"{\"";
    case T_RBRACE: return "\"}\"";
    case T_LPAREN: return "\"(\"";
    case T_RPAREN: return "\")\"";
    case T_LBRACK: return "\"[\"";
    case T_RBRACK: return "\"]\"";
    case T_COMMA: return "\",\"";
    case T_COLON: return "\":\"";
    case T_AT: return "\"@\"";
    case T_ASSIGN: return "\"=\"";
    default: snprintf(buf, cap, "\"%.*s\"", t->len, src + t->pos); return buf;
    }
}
