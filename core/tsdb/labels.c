/*
 * labels.c — label sets of the TSDB (see od_tsdb.h): building, sorting, validation, the
 * canonical length-prefixed encoding and its 64-bit fingerprint, text/JSON formatting.
 *
 * Owns: the od_labels helpers and od_strlist_free. Each od_label holds two malloc'd strings;
 * the array grows geometrically.
 *
 * Canonical encoding (also the stored form, docs/formats.md):
 *   varint count, then per label in name order: varint len, name bytes, varint len, value bytes.
 * Every field is length-prefixed, so {ab="c"} and {a="bc"} encode (and hash) differently.
 * The fingerprint is a 64-bit hash of that encoding; the index treats it as a hint only and
 * always compares the full encoding (a collision just means two entries under one hash).
 */
#include "od_tsdb.h"

#include <stdlib.h>
#include <string.h>

#include "../util/od_coding.h"

int od_labels_addn(od_labels *ls, const char *name, size_t nlen, const char *value, size_t vlen)
{
    if (ls->n == ls->cap) {
        size_t nc = ls->cap ? ls->cap * 2 : 8;
        od_label *nv = realloc(ls->v, nc * sizeof *nv);
        if (!nv) return OD_NOMEM;
        ls->v = nv;
        ls->cap = nc;
    }
    char *n = malloc(nlen + 1);
    char *v = malloc(vlen + 1);
    if (!n || !v) {
        free(n);
        free(v);
        return OD_NOMEM;
    }
    memcpy(n, name, nlen);
    n[nlen] = 0;
    memcpy(v, value, vlen);
    v[vlen] = 0;
    ls->v[ls->n].name = n;
    ls->v[ls->n].value = v;
    ls->n++;
    return OD_OK;
}

int od_labels_add(od_labels *ls, const char *name, const char *value)
{
    return od_labels_addn(ls, name, strlen(name), value, strlen(value));
}

static int label_cmp(const void *a, const void *b)
{
    return strcmp(((const od_label *)a)->name, ((const od_label *)b)->name);
}

int od_labels_sort(od_labels *ls, od_err *err)
{
    size_t w = 0;
    for (size_t i = 0; i < ls->n; i++) {
        if (ls->v[i].value[0] == 0) {
            free(ls->v[i].name);
            free(ls->v[i].value);
            continue;
        }
        ls->v[w++] = ls->v[i];
    }
    ls->n = w;
    if (ls->n > 1) qsort(ls->v, ls->n, sizeof *ls->v, label_cmp);
    for (size_t i = 1; i < ls->n; i++)
        if (strcmp(ls->v[i - 1].name, ls->v[i].name) == 0)
            return od_err_set(err, OD_BADREQ, "tsdb: duplicate label name \"%s\"", ls->v[i].name);
    return OD_OK;
}

int od_label_name_valid(const char *s, size_t len)
{
    if (len == 0 || len > OD_TSDB_MAX_NAME_LEN) return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (i > 0 && c >= '0' && c <= '9');
        if (!ok) return 0;
    }
    return 1;
}

static int metric_name_valid(const char *s, size_t len)
{
    if (len == 0 || len > OD_TSDB_MAX_VALUE_LEN) return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
                 (i > 0 && c >= '0' && c <= '9');
        if (!ok) return 0;
    }
    return 1;
}

int od_label_value_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s, *e = p + len;
    if (len > OD_TSDB_MAX_VALUE_LEN) return 0;
    while (p < e) {
        unsigned c = *p;
        if (c == 0) return 0;
        if (c < 0x80) { p++; continue; }
        size_t n;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf) { n = 1; cp = c & 0x1f; }
        else if (c >= 0xe0 && c <= 0xef) { n = 2; cp = c & 0x0f; }
        else if (c >= 0xf0 && c <= 0xf4) { n = 3; cp = c & 0x07; }
        else return 0;
        if ((size_t)(e - p) < n + 1) return 0;
        for (size_t i = 1; i <= n; i++) {
            if ((p[i] & 0xc0) != 0x80) return 0;
            cp = (cp << 6) | (p[i] & 0x3f);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        p += n + 1;
    }
    return 1;
}

int od_labels_validate(const od_labels *ls, od_err *err)
{
    const char *metric = od_labels_get(ls, "__name__");
    od_buf b = {0};
    int rc = OD_OK;
    if (od_labels_format(ls, &b) || od_buf_cstr(&b)) {
        od_buf_free(&b);
        return od_err_set(err, OD_NOMEM, "out of memory");
    }
    const char *ser = (const char *)b.data;
    if (ls->n == 0) {
        rc = od_err_set(err, OD_BADREQ, "tsdb: series has no labels");
    } else if (ls->n > OD_TSDB_MAX_LABELS) {
        rc = od_err_set(err, OD_BADREQ, "tsdb: series %.200s has %zu labels (limit %d)", ser, ls->n,
                        OD_TSDB_MAX_LABELS);
    } else if (!metric) {
        rc = od_err_set(err, OD_BADREQ, "tsdb: series %.200s has no metric name (__name__)", ser);
    } else if (!metric_name_valid(metric, strlen(metric))) {
        rc = od_err_set(err, OD_BADREQ, "tsdb: series %.200s: invalid metric name \"%.100s\"", ser, metric);
    } else {
        for (size_t i = 0; i < ls->n; i++) {
            const od_label *l = &ls->v[i];
            if (!od_label_name_valid(l->name, strlen(l->name))) {
                rc = od_err_set(err, OD_BADREQ, "tsdb: series %.200s: invalid label name \"%.100s\"", ser, l->name);
                break;
            }
            if (!od_label_value_valid(l->value, strlen(l->value))) {
                rc = od_err_set(err, OD_BADREQ, "tsdb: series %.200s: label \"%s\" has a value that is not valid UTF-8",
                                ser, l->name);
                break;
            }
            if (i > 0 && strcmp(ls->v[i - 1].name, l->name) >= 0) {
                rc = od_err_set(err, OD_BADREQ, "tsdb: series %.200s: labels not sorted or duplicate name \"%s\"", ser,
                                l->name);
                break;
            }
        }
    }
    od_buf_free(&b);
    return rc;
}

const char *od_labels_get(const od_labels *ls, const char *name)
{
    for (size_t i = 0; i < ls->n; i++)
        if (strcmp(ls->v[i].name, name) == 0) return ls->v[i].value;
    return NULL;
}

int od_labels_copy(od_labels *dst, const od_labels *src)
{
    for (size_t i = 0; i < src->n; i++)
        if (od_labels_add(dst, src->v[i].name, src->v[i].value)) return OD_NOMEM;
    return OD_OK;
}

int od_labels_cmp(const od_labels *a, const od_labels *b)
{
    size_t n = a->n < b->n ? a->n : b->n;
    for (size_t i = 0; i < n; i++) {
        int c = strcmp(a->v[i].name, b->v[i].name);
        if (c) return c;
        c = strcmp(a->v[i].value, b->v[i].value);
        if (c) return c;
    }
    return a->n < b->n ? -1 : a->n > b->n ? 1 : 0;
}

void od_labels_reset(od_labels *ls)
{
    for (size_t i = 0; i < ls->n; i++) {
        free(ls->v[i].name);
        free(ls->v[i].value);
    }
    ls->n = 0;
}

void od_labels_free(od_labels *ls)
{
    od_labels_reset(ls);
    free(ls->v);
    memset(ls, 0, sizeof *ls);
}

static int append_escaped(od_buf *out, const char *s)
{
    for (; *s; s++) {
        int rc;
        switch (*s) {
        case '"': rc = od_buf_append(out, "\\\"", 2); break;
        case '\\': rc = od_buf_append(out, "\\\\", 2); break;
        case '\n': rc = od_buf_append(out, "\\n", 2); break;
        default: rc = od_buf_append_u8(out, (uint8_t)*s);
        }
        if (rc) return rc;
    }
    return OD_OK;
}

int od_labels_format(const od_labels *ls, od_buf *out)
{
    const char *metric = od_labels_get(ls, "__name__");
    if (metric && od_buf_append_str(out, metric)) return OD_NOMEM;
    if (od_buf_append_u8(out, '{')) return OD_NOMEM;
    int first = 1;
    for (size_t i = 0; i < ls->n; i++) {
        if (strcmp(ls->v[i].name, "__name__") == 0) continue;
        if (!first && od_buf_append_u8(out, ',')) return OD_NOMEM;
        first = 0;
        if (od_buf_append_str(out, ls->v[i].name) || od_buf_append(out, "=\"", 2) ||
            append_escaped(out, ls->v[i].value) || od_buf_append_u8(out, '"'))
            return OD_NOMEM;
    }
    return od_buf_append_u8(out, '}');
}

static int append_json_string(od_buf *out, const char *s)
{
    if (od_buf_append_u8(out, '"')) return OD_NOMEM;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        int rc;
        if (*p == '"') rc = od_buf_append(out, "\\\"", 2);
        else if (*p == '\\') rc = od_buf_append(out, "\\\\", 2);
        else if (*p < 0x20) rc = od_buf_printf(out, "\\u%04x", *p);
        else rc = od_buf_append_u8(out, *p);
        if (rc) return OD_NOMEM;
    }
    return od_buf_append_u8(out, '"');
}

int od_labels_format_json(const od_labels *ls, od_buf *out)
{
    if (od_buf_append_u8(out, '{')) return OD_NOMEM;
    int first = 1;
    for (size_t i = 0; i < ls->n; i++) {
        if (strcmp(ls->v[i].name, "__name__") == 0) continue;
        if (!first && od_buf_append_u8(out, ',')) return OD_NOMEM;
        first = 0;
        if (append_json_string(out, ls->v[i].name) || od_buf_append_u8(out, ':') ||
            append_json_string(out, ls->v[i].value))
            return OD_NOMEM;
    }
    return od_buf_append_u8(out, '}');
}

int od_labels_encode(const od_labels *ls, od_buf *out)
{
    if (od_buf_put_varint(out, ls->n)) return OD_NOMEM;
    for (size_t i = 0; i < ls->n; i++)
        if (od_buf_put_lenbytes(out, ls->v[i].name, strlen(ls->v[i].name)) ||
            od_buf_put_lenbytes(out, ls->v[i].value, strlen(ls->v[i].value)))
            return OD_NOMEM;
    return OD_OK;
}

int od_labels_decode(const uint8_t *p, size_t n, od_labels *out, od_err *err)
{
    od_rd r = od_rd_make(p, n);
    uint64_t cnt = od_rd_varint(&r);
    if (!r.ok || cnt > OD_TSDB_MAX_LABELS) return od_err_set(err, OD_CORRUPT, "tsdb: corrupt label set (count)");
    for (uint64_t i = 0; i < cnt; i++) {
        size_t nl, vl;
        const uint8_t *np = od_rd_lenbytes(&r, &nl);
        const uint8_t *vp = od_rd_lenbytes(&r, &vl);
        if (!r.ok) return od_err_set(err, OD_CORRUPT, "tsdb: corrupt label set (truncated)");
        if (od_labels_addn(out, (const char *)np, nl, (const char *)vp, vl))
            return od_err_set(err, OD_NOMEM, "out of memory");
    }
    if (od_rd_left(&r) != 0) return od_err_set(err, OD_CORRUPT, "tsdb: corrupt label set (trailing bytes)");
    return OD_OK;
}

/* A streaming 64-bit hash: 8-byte words mixed into a state by the murmur3 fmix64
 * avalanche, the total length folded in at the end. Not cryptographic; collisions are
 * handled by the index. Streaming lets od_labels_hash hash the canonical encoding without
 * materialising it (so it cannot fail). */
static inline uint64_t fmix64(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return k;
}

typedef struct hstate {
    uint64_t h, total;
    uint8_t tail[8];
    size_t tn;
} hstate;

static void h_word(hstate *s, uint64_t w)
{
    s->h = (s->h ^ fmix64(w)) * 0x87c37b91114253d5ULL;
    s->h = (s->h << 31) | (s->h >> 33);
}

static void h_update(hstate *s, const void *data, size_t n)
{
    const uint8_t *p = data;
    s->total += n;
    while (n > 0) {
        if (s->tn == 0 && n >= 8) {
            uint64_t w = od_get_u64(p);
            h_word(s, w);
            p += 8;
            n -= 8;
            continue;
        }
        s->tail[s->tn++] = *p++;
        n--;
        if (s->tn == 8) {
            h_word(s, od_get_u64(s->tail));
            s->tn = 0;
        }
    }
}

static uint64_t h_final(hstate *s)
{
    uint64_t w = 0;
    for (size_t i = 0; i < s->tn; i++) w |= (uint64_t)s->tail[i] << (8 * i);
    s->h ^= fmix64(w ^ 0x5bd1e995ULL ^ ((uint64_t)s->tn << 56));
    return fmix64(s->h ^ (s->total * 0x100000001b3ULL));
}

uint64_t od_tsdb_hash_bytes(const void *data, size_t n)
{
    hstate s = {0x9e3779b97f4a7c15ULL, 0, {0}, 0};
    h_update(&s, data, n);
    return h_final(&s);
}

static void h_lenbytes(hstate *s, const char *p, size_t n)
{
    uint8_t t[10];
    h_update(s, t, od_varint_put(t, n));
    h_update(s, p, n);
}

/* Equals od_tsdb_hash_bytes(od_labels_encode(ls)). */
uint64_t od_labels_hash(const od_labels *ls)
{
    hstate s = {0x9e3779b97f4a7c15ULL, 0, {0}, 0};
    uint8_t t[10];
    h_update(&s, t, od_varint_put(t, ls->n));
    for (size_t i = 0; i < ls->n; i++) {
        h_lenbytes(&s, ls->v[i].name, strlen(ls->v[i].name));
        h_lenbytes(&s, ls->v[i].value, strlen(ls->v[i].value));
    }
    return h_final(&s);
}

void od_strlist_free(od_strlist *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}
