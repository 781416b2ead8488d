/*
 * store_faulty.c — the faulty+<uri> wrapper: deterministic fault injection around any store.
 *
 * Owns: the inner store handle (opened from the inner URI, closed with the wrapper) and a PRNG.
 * The parameters and the runtime API are described in od_faulty.h.
 *
 * How it works: every op first calls decide(), which under the handle's mutex draws two numbers
 * from a splitmix64 generator seeded with `seed` — one picks the outcome (error / ambiguous /
 * pass), one the latency jitter — so a single-threaded sequence of requests meets the same faults
 * on every run. Then it sleeps the latency (outside the mutex), and either fails, or forwards to
 * the inner store through the public API (which validates and counts on the inner handle, and
 * retries the inner store's own transient failures), reporting OD_TRANSIENT afterwards when the
 * outcome is "ambiguous". The generic layer of the wrapper's own handle counts the attempts and
 * retries them; the lead's retry layer resolves ambiguous conditional writes by reading back.
 *
 * An ambiguous LIST that was stopped by its callback is reported as OD_OK: stopping is the
 * caller's choice, and there is nothing left to resume.
 *
 * caps mirror the inner store. Thread-safe: the PRNG and counters are under one mutex, the
 * inner store is thread-safe itself.
 */
#include "od_faulty.h"
#include "od_objstore_impl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct faulty_store {
    od_store base;
    od_store *inner;
    pthread_mutex_t mu;
    uint64_t rng;
    double error_rate, ambiguous_rate;
    uint32_t latency_ms, jitter_ms;
    int forced, forced_ambiguous; /* od_store_faulty_fail_next */
    od_faulty_stats st;
} faulty_store;

typedef enum { F_PASS = 0, F_ERROR, F_AMBIGUOUS } fault;

static const od_store_ops faulty_ops;

static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static double unit(uint64_t r)
{
    return (double)(r >> 11) * (1.0 / 9007199254740992.0); /* [0, 1) with 53 bits */
}

static void sleep_ms(uint32_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Decide the fate of one request and sleep its latency. */
static fault decide(faulty_store *f)
{
    pthread_mutex_lock(&f->mu);
    double u = unit(splitmix(&f->rng));
    uint64_t j = splitmix(&f->rng);
    fault out = F_PASS;
    if (f->forced > 0) {
        f->forced--;
        out = f->forced_ambiguous ? F_AMBIGUOUS : F_ERROR;
    } else if (u < f->error_rate) {
        out = F_ERROR;
    } else if (u < f->error_rate + f->ambiguous_rate) {
        out = F_AMBIGUOUS;
    }
    uint32_t delay = f->latency_ms + (f->jitter_ms ? (uint32_t)(j % ((uint64_t)f->jitter_ms + 1)) : 0);
    f->st.requests++;
    if (out == F_ERROR) f->st.injected_errors++;
    if (out == F_AMBIGUOUS) f->st.injected_ambiguous++;
    f->st.delayed_ms += delay;
    pthread_mutex_unlock(&f->mu);
    if (delay) sleep_ms(delay);
    return out;
}

static int injected_error(od_err *err, const char *op, const char *key)
{
    return od_err_set(err, OD_TRANSIENT, "objstore: injected: transient failure of %s \"%.200s\"", op, key);
}

static int injected_ambiguous(od_err *err, const char *op, const char *key)
{
    return od_err_set(err, OD_TRANSIENT, "objstore: injected: %s \"%.200s\" succeeded but reported failure", op, key);
}

static int f_get(od_store *s, const char *key, od_buf *out, od_obj_meta *meta, od_err *err)
{
    faulty_store *f = (faulty_store *)s;
    fault d = decide(f);
    if (d == F_ERROR) return injected_error(err, "GET", key);
    int rc = od_store_get(f->inner, key, out, meta, err);
    if (d == F_AMBIGUOUS) return injected_ambiguous(err, "GET", key);
    return rc;
}

static int f_get_range(od_store *s, const char *key, uint64_t off, uint64_t len, od_buf *out, od_err *err)
{
    faulty_store *f = (faulty_store *)s;
    fault d = decide(f);
    if (d == F_ERROR) return injected_error(err, "ranged GET", key);
    int rc = od_store_get_range(f->inner, key, off, len, out, err);
    if (d == F_AMBIGUOUS) return injected_ambiguous(err, "ranged GET", key);
    return rc;
}

static int f_head(od_store *s, const char *key, od_obj_meta *meta, od_err *err)
{
    faulty_store *f = (faulty_store *)s;
    fault d = decide(f);
    if (d == F_ERROR) return injected_error(err, "HEAD", key);
    int rc = od_store_head(f->inner, key, meta, err);
    if (d == F_AMBIGUOUS) return injected_ambiguous(err, "HEAD", key);
    return rc;
}

static int f_put(od_store *s, const char *key, const void *data, size_t len, od_put_mode mode, const char *etag,
                 od_obj_meta *meta_out, od_err *err)
{
    faulty_store *f = (faulty_store *)s;
    fault d = decide(f);
    if (d == F_ERROR) return injected_error(err, "PUT", key);
    int rc = od_store_put(f->inner, key, data, len, mode, etag, meta_out, err);
    if (d == F_AMBIGUOUS) return injected_ambiguous(err, "PUT", key);
    return rc;
}

static int f_del(od_store *s, const char *key, od_err *err)
{
    faulty_store *f = (faulty_store *)s;
    fault d = decide(f);
    if (d == F_ERROR) return injected_error(err, "DELETE", key);
    int rc = od_store_delete(f->inner, key, err);
    if (d == F_AMBIGUOUS) return injected_ambiguous(err, "DELETE", key);
    return rc;
}

typedef struct list_fwd {
    od_store *outer;
    od_list_cb cb;
    void *ctx;
    uint64_t n;
    int stopped;
} list_fwd;

/* Forwards keys to the caller and counts the pages on the wrapper's handle. */
static int fwd_cb(void *vctx, const char *key, const od_obj_meta *meta)
{
    list_fwd *w = vctx;
    if (w->n++ % 1000 == 0) od_store_count_list_page(w->outer);
    if (w->cb(w->ctx, key, meta)) w->stopped = 1;
    return w->stopped;
}

static int f_list(od_store *s, const char *prefix, const char *start_after, od_list_cb cb, void *ctx, od_err *err)
{
    faulty_store *f = (faulty_store *)s;
    fault d = decide(f);
    list_fwd w = {.outer = s, .cb = cb, .ctx = ctx};
    if (d == F_ERROR) {
        od_store_count_list_page(s);
        return injected_error(err, "LIST", prefix);
    }
    int rc = od_store_list(f->inner, prefix, start_after, fwd_cb, &w, err);
    if (w.n == 0) od_store_count_list_page(s);
    if (d == F_AMBIGUOUS && rc == OD_OK && !w.stopped) return injected_ambiguous(err, "LIST", prefix);
    return rc;
}

static void f_close(od_store *s)
{
    faulty_store *f = (faulty_store *)s;
    od_store_close(f->inner);
    pthread_mutex_destroy(&f->mu);
    od_store_destroy_base(s);
    free(f);
}

static const od_store_ops faulty_ops = {
    .get = f_get, .get_range = f_get_range, .head = f_head, .put = f_put,
    .del = f_del, .list = f_list, .close = f_close,
};

/* ---------------------------------------------------------------------------------------------
 * Parameters
 */

typedef struct fparams {
    uint64_t seed;
    double error_rate, ambiguous_rate;
    long latency_ms, jitter_ms;
    long retries, retry_base_ms, retry_max_ms;
} fparams;

static int parse_double(const char *name, const char *v, double *out, od_err *err)
{
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (!*v || *end || errno || !(d >= 0.0 && d <= 1.0))
        return od_err_set(err, OD_BADREQ, "objstore: faulty parameter %s=\"%.100s\" must be a number in [0, 1]",
                          name, v);
    *out = d;
    return OD_OK;
}

static int parse_long(const char *name, const char *v, long lo, long hi, long *out, od_err *err)
{
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (!*v || *end || errno || n < lo || n > hi)
        return od_err_set(err, OD_BADREQ, "objstore: faulty parameter %s=\"%.100s\" must be an integer in [%ld, %ld]",
                          name, v, lo, hi);
    *out = n;
    return OD_OK;
}

/* Parse the fault parameters. With `rest` (an s3:// inner store, whose own query string the
 * URI dispatcher may have handed over together with ours), unknown name=value pairs are appended
 * to rest for the inner store to judge; otherwise they are OD_BADREQ. */
static int parse_params(const char *params, fparams *p, od_buf *rest, od_err *err)
{
    *p = (fparams){.retries = -1, .retry_base_ms = -1, .retry_max_ms = -1};
    char *copy = strdup(params ? params : "");
    if (!copy) return od_err_set(err, OD_NOMEM, "objstore: out of memory");
    int rc = OD_OK;
    char *save = NULL;
    for (char *tok = strtok_r(copy, "&", &save); tok && rc == OD_OK; tok = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq) {
            rc = od_err_set(err, OD_BADREQ, "objstore: faulty parameter \"%.100s\" has no value (expected name=value)",
                            tok);
            break;
        }
        *eq = 0;
        const char *v = eq + 1;
        long l;
        if (strcmp(tok, "seed") == 0) {
            char *end;
            errno = 0;
            unsigned long long sd = strtoull(v, &end, 10);
            if (!*v || *end || errno || *v == '-')
                rc = od_err_set(err, OD_BADREQ, "objstore: faulty parameter seed=\"%.100s\" must be an unsigned integer", v);
            p->seed = sd;
        } else if (strcmp(tok, "error_rate") == 0) {
            rc = parse_double(tok, v, &p->error_rate, err);
        } else if (strcmp(tok, "ambiguous_rate") == 0) {
            rc = parse_double(tok, v, &p->ambiguous_rate, err);
        } else if (strcmp(tok, "latency_ms") == 0) {
            rc = parse_long(tok, v, 0, 60000, &p->latency_ms, err);
        } else if (strcmp(tok, "latency_jitter_ms") == 0) {
            rc = parse_long(tok, v, 0, 60000, &p->jitter_ms, err);
        } else if (strcmp(tok, "retries") == 0) {
            rc = parse_long(tok, v, 1, 1000, &l, err);
            p->retries = l;
        } else if (strcmp(tok, "retry_base_ms") == 0) {
            rc = parse_long(tok, v, 0, 60000, &l, err);
            p->retry_base_ms = l;
        } else if (strcmp(tok, "retry_max_ms") == 0) {
            rc = parse_long(tok, v, 0, 600000, &l, err);
            p->retry_max_ms = l;
        } else if (rest) {
            *eq = '=';
            if ((rest->len && od_buf_append_u8(rest, '&')) || od_buf_append_str(rest, tok))
                rc = od_err_set(err, OD_NOMEM, "objstore: out of memory");
        } else {
            rc = od_err_set(err, OD_BADREQ,
                            "objstore: unknown faulty parameter \"%.100s\" (expected seed, error_rate, ambiguous_rate, "
                            "latency_ms, latency_jitter_ms, retries, retry_base_ms, retry_max_ms)", tok);
        }
    }
    if (rc == OD_OK && p->error_rate + p->ambiguous_rate > 1.0)
        rc = od_err_set(err, OD_BADREQ, "objstore: faulty error_rate + ambiguous_rate must not exceed 1");
    free(copy);
    return rc;
}

int od_store_open_faulty(const char *inner_uri, const char *params, od_store **out, od_err *err)
{
    *out = NULL;
    if (!inner_uri || !*inner_uri)
        return od_err_set(err, OD_BADREQ, "objstore: faulty+ needs an inner store URI (faulty+mem://name?...)");
    fparams p;
    /* An s3:// URI has a query string of its own: "faulty+s3://b/p?region=..&seed=1" reaches us
     * as inner "s3://b/p" and params "region=..&seed=1"; give the inner store back its part. */
    int is_s3 = strncmp(inner_uri, "s3://", 5) == 0;
    od_buf inner = {0};
    int rc = parse_params(params, &p, is_s3 ? &inner : NULL, err);
    if (rc == OD_OK && inner.len) {
        od_buf tail = inner;
        inner = (od_buf){0};
        if (od_buf_append_str(&inner, inner_uri) || od_buf_append_u8(&inner, strchr(inner_uri, '?') ? '&' : '?') ||
            od_buf_append(&inner, tail.data, tail.len) || od_buf_cstr(&inner))
            rc = od_err_set(err, OD_NOMEM, "objstore: out of memory");
        od_buf_free(&tail);
    }
    if (rc) {
        od_buf_free(&inner);
        return rc;
    }
    faulty_store *f = calloc(1, sizeof *f);
    if (!f) {
        od_buf_free(&inner);
        return od_err_set(err, OD_NOMEM, "objstore: out of memory");
    }
    rc = od_store_open(inner.len ? (const char *)inner.data : inner_uri, &f->inner, err);
    od_buf_free(&inner);
    if (rc) {
        free(f);
        od_err_prefix(err, "objstore: faulty+ inner store");
        return rc;
    }
    pthread_mutex_init(&f->mu, NULL);
    f->rng = p.seed;
    f->error_rate = p.error_rate;
    f->ambiguous_rate = p.ambiguous_rate;
    f->latency_ms = (uint32_t)p.latency_ms;
    f->jitter_ms = (uint32_t)p.jitter_ms;
    char desc[256];
    snprintf(desc, sizeof desc, "faulty+%.240s", od_store_describe(f->inner));
    od_store_init_base(&f->base, &faulty_ops, desc);
    od_store_get_caps(f->inner, &f->base.caps);
    od_store_set_retry(&f->base, (int)p.retries, (int)p.retry_base_ms, (int)p.retry_max_ms);
    *out = &f->base;
    return OD_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Runtime API (od_faulty.h)
 */

static faulty_store *as_faulty(od_store *s)
{
    return s && s->ops == &faulty_ops ? (faulty_store *)s : NULL;
}

int od_store_faulty_set(od_store *s, double error_rate, double ambiguous_rate, uint32_t latency_ms)
{
    faulty_store *f = as_faulty(s);
    if (!f) return OD_BADREQ;
    if (!(error_rate >= 0 && error_rate <= 1 && ambiguous_rate >= 0 && ambiguous_rate <= 1 &&
          error_rate + ambiguous_rate <= 1))
        return OD_BADREQ;
    pthread_mutex_lock(&f->mu);
    f->error_rate = error_rate;
    f->ambiguous_rate = ambiguous_rate;
    f->latency_ms = latency_ms;
    pthread_mutex_unlock(&f->mu);
    return OD_OK;
}

int od_store_faulty_fail_next(od_store *s, int n, int ambiguous)
{
    faulty_store *f = as_faulty(s);
    if (!f || n < 0) return OD_BADREQ;
    pthread_mutex_lock(&f->mu);
    f->forced = n;
    f->forced_ambiguous = ambiguous != 0;
    pthread_mutex_unlock(&f->mu);
    return OD_OK;
}

int od_store_faulty_get_stats(od_store *s, od_faulty_stats *out)
{
    faulty_store *f = as_faulty(s);
    if (!f) return OD_BADREQ;
    pthread_mutex_lock(&f->mu);
    *out = f->st;
    pthread_mutex_unlock(&f->mu);
    return OD_OK;
}

uint64_t od_store_faulty_injected(od_store *s)
{
    od_faulty_stats st;
    if (od_store_faulty_get_stats(s, &st) != OD_OK) return 0;
    return st.injected_errors + st.injected_ambiguous;
}

od_store *od_store_faulty_inner(od_store *s)
{
    faulty_store *f = as_faulty(s);
    return f ? f->inner : NULL;
}
