/*
 * objstore.c — the generic object-store layer: URI dispatch, key validation, counters.
 *
 * od_store_open picks a backend by scheme. Every public call validates the key, forwards
 * to the backend's op, and counts the request, its payload bytes and its failure in the
 * handle's stats. Outcomes that are answers rather than failures (not found, already
 * exists, precondition failed) are not counted as errors.
 */
#include "od_objstore_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void od_store_init_base(od_store *s, const od_store_ops *ops, const char *desc)
{
    s->ops = ops;
    memset(&s->stats, 0, sizeof s->stats);
    pthread_mutex_init(&s->stats_mu, NULL);
    snprintf(s->desc, sizeof s->desc, "%s", desc);
    s->caps.conditional_writes = 1;
    s->caps.single_writer_only = 0;
    s->retry_max_attempts = 6;
    s->retry_base_delay_ms = 25;
    s->retry_max_delay_ms = 2000;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    s->jitter_state = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)getpid() ^ (uint64_t)(uintptr_t)s;
    if (!s->jitter_state) s->jitter_state = 0x9e3779b97f4a7c15ull;
}

void od_store_set_retry(od_store *s, int max_attempts, int base_delay_ms, int max_delay_ms)
{
    pthread_mutex_lock(&s->stats_mu);
    if (max_attempts >= 1) s->retry_max_attempts = max_attempts;
    if (base_delay_ms >= 0) s->retry_base_delay_ms = base_delay_ms;
    if (max_delay_ms >= 0) s->retry_max_delay_ms = max_delay_ms;
    pthread_mutex_unlock(&s->stats_mu);
}

/* Decide whether attempt `attempt` (1-based) may be followed by another, and if so sleep the
 * backoff: full jitter, uniform in [0, min(max, base * 2^(attempt-1))]. */
static int backoff(od_store *s, int attempt)
{
    pthread_mutex_lock(&s->stats_mu);
    int max_attempts = s->retry_max_attempts;
    uint64_t cap = (uint64_t)s->retry_base_delay_ms << (attempt - 1 < 20 ? attempt - 1 : 20);
    if (cap > (uint64_t)s->retry_max_delay_ms) cap = (uint64_t)s->retry_max_delay_ms;
    uint64_t x = s->jitter_state; /* xorshift64 */
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    s->jitter_state = x;
    if (attempt < max_attempts) s->stats.retries++;
    pthread_mutex_unlock(&s->stats_mu);
    if (attempt >= max_attempts) return 0;
    uint64_t delay_us = cap ? (x % (cap * 1000 + 1)) : 0;
    if (delay_us) usleep((useconds_t)delay_us);
    return 1;
}

static int retryable(int rc)
{
    return rc == OD_TRANSIENT || rc == OD_TIMEOUT;
}

static int gave_up(od_err *err, int attempts, const char *op, const char *key)
{
    if (attempts > 1) od_err_prefix(err, "objstore: %s \"%.200s\" failed after %d attempts", op, key, attempts);
    return err ? err->code : OD_TRANSIENT;
}

void od_store_destroy_base(od_store *s)
{
    pthread_mutex_destroy(&s->stats_mu);
}

static int starts_with(const char *s, const char *p)
{
    return strncmp(s, p, strlen(p)) == 0;
}

int od_store_open(const char *uri, od_store **out, od_err *err)
{
    *out = NULL;
    if (!uri || !*uri) return od_err_set(err, OD_BADREQ, "objstore: empty store URI");
    if (starts_with(uri, "faulty+")) {
        const char *inner = uri + 7;
        const char *q = strrchr(inner, '?');
        /* The fault parameters are the last query string; the inner URI keeps its own. */
        char *inner_copy = strdup(inner);
        if (!inner_copy) return od_err_set(err, OD_NOMEM, "objstore: out of memory");
        const char *params = "";
        if (q) {
            inner_copy[q - inner] = 0;
            params = q + 1;
        }
        int rc = od_store_open_faulty(inner_copy, params, out, err);
        free(inner_copy);
        return rc;
    }
    if (starts_with(uri, "mem://")) return od_store_open_mem(uri + 6, out, err);
    if (starts_with(uri, "s3://")) return od_store_open_s3(uri + 5, out, err);
    if (starts_with(uri, "file://")) {
        const char *path = uri + 7;
        if (path[0] != '/')
            return od_err_set(err, OD_BADREQ,
                              "objstore: file URI \"%s\" must be absolute (file:///abs/path); "
                              "use a plain path for a relative directory", uri);
        return od_store_open_file(path, out, err);
    }
    if (strstr(uri, "://"))
        return od_err_set(err, OD_BADREQ,
                          "objstore: unknown scheme in store URI \"%.200s\" (expected file://, s3://, "
                          "mem:// or faulty+...)", uri);
    return od_store_open_file(uri, out, err);
}

void od_store_close(od_store *s)
{
    if (s) s->ops->close(s);
}

void od_uri_redact(const char *uri, char *out, size_t n)
{
    static const char *const secret[] = {"secret_key=", "session_token="};
    if (!n) return;
    size_t w = 0;
    const char *p = uri ? uri : "";
    const char *q = strchr(p, '?');
    while (*p && w + 1 < n) {
        out[w++] = *p;
        int at_param = q && p >= q && (*p == '?' || *p == '&');
        p++;
        if (!at_param) continue;
        for (size_t i = 0; i < sizeof secret / sizeof *secret; i++) {
            size_t l = strlen(secret[i]);
            if (strncmp(p, secret[i], l) != 0) continue;
            for (size_t k = 0; k < l && w + 1 < n; k++) out[w++] = p[k];
            for (const char *r = "***"; *r && w + 1 < n; r++) out[w++] = *r;
            p += l;
            while (*p && *p != '&') p++;
            break;
        }
    }
    out[w] = 0;
}

int od_key_validate(const char *key, od_err *err)
{
    if (!key || !*key) return od_err_set(err, OD_BADREQ, "objstore: empty object key");
    size_t n = strlen(key);
    if (n > 1024) return od_err_set(err, OD_BADREQ, "objstore: object key longer than 1024 bytes");
    if (key[0] == '/')
        return od_err_set(err, OD_BADREQ, "objstore: object key \"%.200s\" is absolute", key);
    const char *seg = key;
    for (const char *p = key;; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '/' || c == 0) {
            size_t len = (size_t)(p - seg);
            if (len == 0)
                return od_err_set(err, OD_BADREQ, "objstore: object key \"%.200s\" has an empty segment", key);
            if ((len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.'))
                return od_err_set(err, OD_BADREQ,
                                  "objstore: object key \"%.200s\" escapes the store root ('.' or '..' segment)",
                                  key);
            if (c == 0) break;
            seg = p + 1;
        } else if (c < 0x20 || c == 0x7f || c == '\\') {
            return od_err_set(err, OD_BADREQ,
                              "objstore: object key \"%.200s\" contains a control character or backslash", key);
        }
    }
    return OD_OK;
}

static int is_answer(int rc)
{
    return rc == OD_OK || rc == OD_NOTFOUND || rc == OD_EXISTS || rc == OD_PRECONDITION;
}

static void count(od_store *s, od_req_kind k, int rc, uint64_t in, uint64_t out)
{
    pthread_mutex_lock(&s->stats_mu);
    s->stats.requests[k]++;
    if (!is_answer(rc)) s->stats.errors[k]++;
    s->stats.bytes_in += in;
    s->stats.bytes_out += out;
    pthread_mutex_unlock(&s->stats_mu);
}

void od_store_count_retry(od_store *s)
{
    pthread_mutex_lock(&s->stats_mu);
    s->stats.retries++;
    pthread_mutex_unlock(&s->stats_mu);
}

void od_store_count_list_page(od_store *s)
{
    pthread_mutex_lock(&s->stats_mu);
    s->stats.requests[OD_REQ_LIST]++;
    pthread_mutex_unlock(&s->stats_mu);
}

int od_store_get(od_store *s, const char *key, od_buf *out, od_obj_meta *meta, od_err *err)
{
    int rc = od_key_validate(key, err);
    if (rc) return rc;
    for (int attempt = 1;; attempt++) {
        od_buf_reset(out);
        rc = s->ops->get(s, key, out, meta, err);
        count(s, OD_REQ_GET, rc, rc == OD_OK ? out->len : 0, 0);
        if (!retryable(rc)) return rc;
        if (!backoff(s, attempt)) return gave_up(err, attempt, "GET", key);
    }
}

int od_store_get_range(od_store *s, const char *key, uint64_t off, uint64_t len, od_buf *out, od_err *err)
{
    int rc = od_key_validate(key, err);
    if (rc) return rc;
    od_buf_reset(out);
    if (len == 0) return OD_OK;
    for (int attempt = 1;; attempt++) {
        od_buf_reset(out);
        rc = s->ops->get_range(s, key, off, len, out, err);
        count(s, OD_REQ_GET_RANGE, rc, rc == OD_OK ? out->len : 0, 0);
        if (!retryable(rc)) return rc;
        if (!backoff(s, attempt)) return gave_up(err, attempt, "ranged GET", key);
    }
}

int od_store_head(od_store *s, const char *key, od_obj_meta *meta, od_err *err)
{
    int rc = od_key_validate(key, err);
    if (rc) return rc;
    for (int attempt = 1;; attempt++) {
        rc = s->ops->head(s, key, meta, err);
        count(s, OD_REQ_HEAD, rc, 0, 0);
        if (!retryable(rc)) return rc;
        if (!backoff(s, attempt)) return gave_up(err, attempt, "HEAD", key);
    }
}

/* After a retried conditional PUT lost (exists / precondition failed), was the object
 * written by an earlier attempt of this very call? Yes iff it holds exactly our bytes. */
static int landed_earlier(od_store *s, const char *key, const void *data, size_t len, od_obj_meta *meta_out)
{
    od_buf cur = {0};
    od_obj_meta meta;
    od_err e;
    int rc = od_store_get(s, key, &cur, &meta, &e);
    int same = rc == OD_OK && cur.len == len && (len == 0 || memcmp(cur.data, data, len) == 0);
    od_buf_free(&cur);
    if (same && meta_out) *meta_out = meta;
    return same;
}

int od_store_put(od_store *s, const char *key, const void *data, size_t len, od_put_mode mode,
                 const char *etag, od_obj_meta *meta_out, od_err *err)
{
    int rc = od_key_validate(key, err);
    if (rc) return rc;
    if (mode == OD_PUT_IF_MATCH && (!etag || !*etag))
        return od_err_set(err, OD_BADREQ, "objstore: conditional replace of \"%.200s\" without an ETag", key);
    if (mode > OD_PUT_IF_MATCH) return od_err_set(err, OD_BADREQ, "objstore: unknown put mode %d", (int)mode);
    for (int attempt = 1;; attempt++) {
        rc = s->ops->put(s, key, data, len, mode, etag, meta_out, err);
        count(s, OD_REQ_PUT, rc, 0, rc == OD_OK ? len : 0);
        if (attempt > 1 && ((mode == OD_PUT_IF_ABSENT && rc == OD_EXISTS) ||
                            (mode == OD_PUT_IF_MATCH && rc == OD_PRECONDITION))) {
            if (landed_earlier(s, key, data, len, meta_out)) {
                od_err_clear(err);
                return OD_OK;
            }
            return rc;
        }
        if (!retryable(rc)) return rc;
        if (!backoff(s, attempt)) return gave_up(err, attempt, "PUT", key);
    }
}

int od_store_delete(od_store *s, const char *key, od_err *err)
{
    int rc = od_key_validate(key, err);
    if (rc) return rc;
    for (int attempt = 1;; attempt++) {
        rc = s->ops->del(s, key, err);
        count(s, OD_REQ_DELETE, rc, 0, 0);
        if (!retryable(rc)) return rc;
        if (!backoff(s, attempt)) return gave_up(err, attempt, "DELETE", key);
    }
}

typedef struct list_track {
    od_list_cb cb;
    void *ctx;
    char *last;
    int stopped;
    int nomem;
} list_track;

static int track_cb(void *vctx, const char *key, const od_obj_meta *meta)
{
    list_track *t = vctx;
    char *k = strdup(key);
    if (!k) {
        t->nomem = 1;
        return 1;
    }
    free(t->last);
    t->last = k;
    if (t->cb(t->ctx, key, meta)) t->stopped = 1;
    return t->stopped;
}

int od_store_list(od_store *s, const char *prefix, const char *start_after, od_list_cb cb, void *ctx,
                  od_err *err)
{
    if (!prefix) prefix = "";
    if (strchr(prefix, '\\') || strstr(prefix, ".."))
        return od_err_set(err, OD_BADREQ, "objstore: list prefix \"%.200s\" is not a valid key prefix", prefix);
    /* A LIST that fails part-way is resumed after the last key delivered, so the callback
     * sees every key exactly once, in order. */
    list_track t = {cb, ctx, NULL, 0, 0};
    int rc;
    for (int attempt = 1;; attempt++) {
        rc = s->ops->list(s, prefix, t.last ? t.last : start_after, track_cb, &t, err);
        if (!retryable(rc) || t.stopped) break;
        if (!backoff(s, attempt)) {
            gave_up(err, attempt, "LIST", prefix);
            break;
        }
    }
    free(t.last);
    if (t.nomem) rc = od_err_set(err, OD_NOMEM, "objstore: out of memory listing");
    if (!is_answer(rc)) {
        pthread_mutex_lock(&s->stats_mu);
        s->stats.errors[OD_REQ_LIST]++;
        pthread_mutex_unlock(&s->stats_mu);
    }
    return rc;
}

void od_store_get_stats(od_store *s, od_store_stats *out)
{
    pthread_mutex_lock(&s->stats_mu);
    *out = s->stats;
    pthread_mutex_unlock(&s->stats_mu);
}

void od_store_get_caps(od_store *s, od_store_caps *out)
{
    *out = s->caps;
}

const char *od_store_describe(od_store *s)
{
    return s->desc;
}
