/*
 * s3_util.c — pure helpers of the s3:// backend: SigV4 URI encoding and query
 * canonicalisation, SHA-256 hex (mbedTLS), percent-decoding of URI parameters, a minimal
 * reader for the XML documents S3 returns, and date / ETag normalisation.
 *
 * Owns nothing: every function works on its arguments only (declared in s3_internal.h).
 *
 * Why hand-rolled XML: S3 answers ListObjectsV2 and errors with small, flat, machine-written
 * documents (no CDATA, no namespaces prefixes on the elements we read, no attributes we need).
 * Finding <Tag>...</Tag> and decoding the five named entities plus numeric references is all
 * that is required, and keys must be decoded byte-exactly (a key "a&b" arrives as "a&amp;b").
 */
#include "s3_internal.h"

#include <mbedtls/sha256.h>
#include <mbedtls/version.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char HEX[] = "0123456789ABCDEF";

static int unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == '~';
}

int od_s3_uri_encode(od_buf *out, const char *s, size_t n, int keep_slash)
{
    if (od_buf_reserve(out, n * 3 + 1)) return OD_NOMEM;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (unreserved(c) || (keep_slash && c == '/')) {
            out->data[out->len++] = c;
        } else {
            out->data[out->len++] = '%';
            out->data[out->len++] = (uint8_t)HEX[c >> 4];
            out->data[out->len++] = (uint8_t)HEX[c & 15];
        }
    }
    return OD_OK;
}

typedef struct enc_pair {
    char *name;
    char *value;
} enc_pair;

static int pair_cmp(const void *a, const void *b)
{
    const enc_pair *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->value, y->value);
}

static char *encode_dup(const char *s)
{
    od_buf b = {0};
    if (od_s3_uri_encode(&b, s, strlen(s), 0) || od_buf_cstr(&b)) {
        od_buf_free(&b);
        return NULL;
    }
    return (char *)b.data;
}

int od_s3_canonical_query(const od_s3_param *params, size_t n, od_buf *out)
{
    od_buf_reset(out);
    if (n == 0) return od_buf_cstr(out);
    enc_pair *pairs = calloc(n, sizeof *pairs);
    if (!pairs) return OD_NOMEM;
    int rc = OD_OK;
    for (size_t i = 0; i < n && rc == OD_OK; i++) {
        pairs[i].name = encode_dup(params[i].name);
        pairs[i].value = encode_dup(params[i].value ? params[i].value : "");
        if (!pairs[i].name || !pairs[i].value) rc = OD_NOMEM;
    }
    if (rc == OD_OK) {
        qsort(pairs, n, sizeof *pairs, pair_cmp);
        for (size_t i = 0; i < n && rc == OD_OK; i++)
            rc = od_buf_printf(out, "%s%s=%s", i ? "&" : "", pairs[i].name, pairs[i].value);
        if (rc == OD_OK) rc = od_buf_cstr(out);
    }
    for (size_t i = 0; i < n; i++) {
        free(pairs[i].name);
        free(pairs[i].value);
    }
    free(pairs);
    return rc;
}

void od_s3_sha256_hex(const void *data, size_t len, char hex[65])
{
    unsigned char d[32];
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
    mbedtls_sha256((const unsigned char *)data, len, d, 0);
#else
    mbedtls_sha256_ret((const unsigned char *)data, len, d, 0);
#endif
    static const char lx[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        hex[2 * i] = lx[d[i] >> 4];
        hex[2 * i + 1] = lx[d[i] & 15];
    }
    hex[64] = 0;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

char *od_s3_pct_decode(const char *s, size_t n)
{
    char *r = malloc(n + 1);
    if (!r) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            if (n - i < 3) { /* fewer than two characters follow the % */
                free(r);
                return NULL;
            }
            int hi = hexval((unsigned char)s[i + 1]), lo = hexval((unsigned char)s[i + 2]);
            if (hi < 0 || lo < 0) {
                free(r);
                return NULL;
            }
            r[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            r[o++] = s[i];
        }
    }
    r[o] = 0;
    return r;
}

const char *od_s3_xml_find(const char *p, const char *end, const char *tag, const char **content_end)
{
    size_t tl = strlen(tag);
    while (p < end) {
        const char *lt = memchr(p, '<', (size_t)(end - p));
        if (!lt) return NULL;
        const char *q = lt + 1;
        if ((size_t)(end - q) > tl && memcmp(q, tag, tl) == 0 && (q[tl] == '>' || q[tl] == ' ' || q[tl] == '/')) {
            const char *gt = memchr(q + tl, '>', (size_t)(end - (q + tl)));
            if (!gt) return NULL;
            if (gt[-1] == '/') { /* <Tag/>: empty element */
                if (content_end) *content_end = gt + 1;
                return gt + 1;
            }
            const char *c = gt + 1;
            /* closing tag */
            for (const char *r = c; r < end;) {
                const char *l2 = memchr(r, '<', (size_t)(end - r));
                if (!l2) return NULL;
                if ((size_t)(end - l2) >= tl + 3 && l2[1] == '/' && memcmp(l2 + 2, tag, tl) == 0 &&
                    l2[2 + tl] == '>') {
                    if (content_end) *content_end = l2;
                    return c;
                }
                r = l2 + 1;
            }
            return NULL;
        }
        p = lt + 1;
    }
    return NULL;
}

static int put_utf8(od_buf *out, unsigned long cp)
{
    uint8_t b[4];
    size_t n;
    if (cp < 0x80) { b[0] = (uint8_t)cp; n = 1; }
    else if (cp < 0x800) { b[0] = (uint8_t)(0xC0 | (cp >> 6)); b[1] = (uint8_t)(0x80 | (cp & 63)); n = 2; }
    else if (cp < 0x10000) {
        b[0] = (uint8_t)(0xE0 | (cp >> 12)); b[1] = (uint8_t)(0x80 | ((cp >> 6) & 63));
        b[2] = (uint8_t)(0x80 | (cp & 63)); n = 3;
    } else if (cp < 0x110000) {
        b[0] = (uint8_t)(0xF0 | (cp >> 18)); b[1] = (uint8_t)(0x80 | ((cp >> 12) & 63));
        b[2] = (uint8_t)(0x80 | ((cp >> 6) & 63)); b[3] = (uint8_t)(0x80 | (cp & 63)); n = 4;
    } else return OD_CORRUPT;
    return od_buf_append(out, b, n);
}

int od_s3_xml_unescape(od_buf *out, const char *p, const char *end)
{
    static const struct { const char *name; char c; } ents[] = {
        {"amp;", '&'}, {"lt;", '<'}, {"gt;", '>'}, {"quot;", '"'}, {"apos;", '\''},
    };
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        if (!amp) return od_buf_append(out, p, (size_t)(end - p));
        if (od_buf_append(out, p, (size_t)(amp - p))) return OD_NOMEM;
        const char *semi = memchr(amp, ';', (size_t)(end - amp));
        if (!semi || semi - amp > 12) return OD_CORRUPT;
        const char *e = amp + 1;
        size_t el = (size_t)(semi + 1 - e);
        int done = 0;
        for (size_t i = 0; i < sizeof ents / sizeof ents[0]; i++) {
            if (strlen(ents[i].name) == el && memcmp(e, ents[i].name, el) == 0) {
                if (od_buf_append_u8(out, (uint8_t)ents[i].c)) return OD_NOMEM;
                done = 1;
                break;
            }
        }
        if (!done) {
            if (*e != '#') return OD_CORRUPT;
            int hex = e[1] == 'x' || e[1] == 'X';
            const char *d = e + 1 + hex;
            if (d >= semi) return OD_CORRUPT;
            unsigned long cp = 0;
            for (; d < semi; d++) {
                int v = hex ? hexval((unsigned char)*d) : (*d >= '0' && *d <= '9' ? *d - '0' : -1);
                if (v < 0 || cp > 0x10FFFF) return OD_CORRUPT;
                cp = cp * (hex ? 16 : 10) + (unsigned long)v;
            }
            int rc = put_utf8(out, cp);
            if (rc) return rc;
        }
        p = semi + 1;
    }
    return OD_OK;
}

static int digits(const char *p, int n, int *v)
{
    *v = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return -1;
        *v = *v * 10 + (p[i] - '0');
    }
    return 0;
}

int64_t od_s3_parse_iso8601_ms(const char *p, size_t n)
{
    /* YYYY-MM-DDTHH:MM:SS[.fff]Z */
    if (n < 20 || p[4] != '-' || p[7] != '-' || p[10] != 'T' || p[13] != ':' || p[16] != ':') return -1;
    int Y, M, D, h, m, s;
    if (digits(p, 4, &Y) || digits(p + 5, 2, &M) || digits(p + 8, 2, &D) || digits(p + 11, 2, &h) ||
        digits(p + 14, 2, &m) || digits(p + 17, 2, &s))
        return -1;
    int ms = 0;
    size_t i = 19;
    if (i < n && p[i] == '.') {
        int scale = 100;
        for (i++; i < n && p[i] >= '0' && p[i] <= '9'; i++) {
            ms += (p[i] - '0') * scale;
            scale /= 10;
        }
    }
    if (i >= n || p[i] != 'Z') return -1;
    struct tm tm = {0};
    tm.tm_year = Y - 1900;
    tm.tm_mon = M - 1;
    tm.tm_mday = D;
    tm.tm_hour = h;
    tm.tm_min = m;
    tm.tm_sec = s;
    time_t t = timegm(&tm);
    if (t == (time_t)-1) return -1;
    return (int64_t)t * 1000 + ms;
}

void od_s3_etag_strip(const char *p, size_t n, char out[OD_ETAG_MAX])
{
    while (n && (*p == ' ' || *p == '\t')) { p++; n--; }
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t' || p[n - 1] == '\r' || p[n - 1] == '\n')) n--;
    if (n >= 2 && p[0] == 'W' && p[1] == '/') { p += 2; n -= 2; }
    if (n >= 2 && p[0] == '"' && p[n - 1] == '"') { p++; n -= 2; }
    if (n >= OD_ETAG_MAX) n = OD_ETAG_MAX - 1;
    memcpy(out, p, n);
    out[n] = 0;
}
