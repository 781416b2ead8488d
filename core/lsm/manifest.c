/*
 * manifest.c — manifest encode/decode, loading the latest version, and the CAS update loop
 * (see manifest.h for the format and the protocol).
 *
 * The latest version is found by listing manifest/ once (names are 20-digit zero-padded, so
 * list order is numeric order) and afterwards by probing version+1, version+2, ... with GET
 * until NOT FOUND: versions are contiguous, so the first missing one ends the chain.
 */
#include "manifest.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "od_coding.h"
#include "od_crc32c.h"

#define MF_MAGIC "ODMF"
#define MF_VERSION 2 /* 2 added the compaction job; version 1 objects are still read */
#define MF_FIXED 80
#define MF_MAX_TRIES 1000

int64_t od_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void od_sst_desc_free(od_sst_desc *d)
{
    free(d->min_key);
    free(d->max_key);
    d->min_key = d->max_key = NULL;
}

static uint8_t *dup_bytes(const uint8_t *p, size_t n, int *fail)
{
    uint8_t *r = malloc(n ? n : 1);
    if (!r) {
        *fail = 1;
        return NULL;
    }
    if (n) memcpy(r, p, n);
    return r;
}

int od_sst_desc_copy(od_sst_desc *dst, const od_sst_desc *src)
{
    int fail = 0;
    *dst = *src;
    dst->min_key = dup_bytes(src->min_key, src->min_klen, &fail);
    dst->max_key = dup_bytes(src->max_key, src->max_klen, &fail);
    if (fail) {
        od_sst_desc_free(dst);
        return OD_NOMEM;
    }
    return OD_OK;
}

void od_cjob_free(od_cjob *j)
{
    free(j->l0_in);
    free(j->runs_in);
    for (size_t i = 0; i < j->nout; i++) od_sst_desc_free(&j->out[i]);
    free(j->out);
    memset(j, 0, sizeof *j);
}

void od_manifest_free(od_manifest *m)
{
    od_cjob_free(&m->job);
    for (size_t i = 0; i < m->nl0; i++) od_sst_desc_free(&m->l0[i]);
    free(m->l0);
    for (size_t r = 0; r < m->nruns; r++) {
        for (size_t i = 0; i < m->runs[r].n; i++) od_sst_desc_free(&m->runs[r].ssts[i]);
        free(m->runs[r].ssts);
    }
    free(m->runs);
    free(m->ckpts);
    memset(m, 0, sizeof *m);
}

static int copy_descs(od_sst_desc **dst, const od_sst_desc *src, size_t n)
{
    *dst = NULL;
    if (!n) return OD_OK;
    od_sst_desc *d = calloc(n, sizeof *d);
    if (!d) return OD_NOMEM;
    for (size_t i = 0; i < n; i++) {
        if (od_sst_desc_copy(&d[i], &src[i])) {
            for (size_t j = 0; j < i; j++) od_sst_desc_free(&d[j]);
            free(d);
            return OD_NOMEM;
        }
    }
    *dst = d;
    return OD_OK;
}

int od_cjob_copy(od_cjob *dst, const od_cjob *src)
{
    *dst = *src;
    dst->l0_in = NULL;
    dst->runs_in = NULL;
    dst->out = NULL;
    dst->nl0_in = dst->nruns_in = dst->nout = 0;
    if (src->nl0_in) {
        if (!(dst->l0_in = malloc(src->nl0_in * sizeof *dst->l0_in))) goto oom;
        memcpy(dst->l0_in, src->l0_in, src->nl0_in * sizeof *dst->l0_in);
        dst->nl0_in = src->nl0_in;
    }
    if (src->nruns_in) {
        if (!(dst->runs_in = malloc(src->nruns_in * sizeof *dst->runs_in))) goto oom;
        memcpy(dst->runs_in, src->runs_in, src->nruns_in * sizeof *dst->runs_in);
        dst->nruns_in = src->nruns_in;
    }
    if (copy_descs(&dst->out, src->out, src->nout)) goto oom;
    dst->nout = src->nout;
    return OD_OK;
oom:
    od_cjob_free(dst);
    return OD_NOMEM;
}

int od_manifest_copy(od_manifest *dst, const od_manifest *src)
{
    *dst = *src;
    dst->l0 = NULL;
    dst->runs = NULL;
    dst->ckpts = NULL;
    dst->nl0 = dst->nruns = dst->nckpt = 0;
    dst->has_job = 0;
    memset(&dst->job, 0, sizeof dst->job);
    if (copy_descs(&dst->l0, src->l0, src->nl0)) goto oom;
    dst->nl0 = src->nl0;
    if (src->nruns) {
        dst->runs = calloc(src->nruns, sizeof(od_run));
        if (!dst->runs) goto oom;
        for (size_t r = 0; r < src->nruns; r++) {
            dst->runs[r].id = src->runs[r].id;
            if (copy_descs(&dst->runs[r].ssts, src->runs[r].ssts, src->runs[r].n)) goto oom;
            dst->runs[r].n = src->runs[r].n;
            dst->nruns = r + 1;
        }
        dst->nruns = src->nruns;
    }
    if (src->nckpt) {
        dst->ckpts = malloc(src->nckpt * sizeof(od_ckpt));
        if (!dst->ckpts) goto oom;
        memcpy(dst->ckpts, src->ckpts, src->nckpt * sizeof(od_ckpt));
        dst->nckpt = src->nckpt;
    }
    if (src->has_job) {
        if (od_cjob_copy(&dst->job, &src->job)) goto oom;
        dst->has_job = 1;
    }
    return OD_OK;
oom:
    od_manifest_free(dst);
    return OD_NOMEM;
}

static int put_desc(od_buf *b, const od_sst_desc *d)
{
    int rc = od_buf_put_lenbytes(b, d->id, strlen(d->id));
    rc |= od_buf_put_varint(b, d->size);
    rc |= od_buf_put_varint(b, d->entries);
    rc |= od_buf_put_varint(b, d->min_seq);
    rc |= od_buf_put_varint(b, d->max_seq);
    rc |= od_buf_put_lenbytes(b, d->min_key, d->min_klen);
    rc |= od_buf_put_lenbytes(b, d->max_key, d->max_klen);
    return rc ? OD_NOMEM : OD_OK;
}

int od_manifest_encode(const od_manifest *m, od_buf *out)
{
    od_buf_reset(out);
    if (od_buf_reserve(out, MF_FIXED)) return OD_NOMEM;
    uint8_t *p = out->data;
    memcpy(p, MF_MAGIC, 4);
    p[4] = MF_VERSION;
    p[5] = p[6] = p[7] = 0;
    od_put_u64(p + 8, m->version);
    od_put_u64(p + 16, m->writer_epoch);
    od_put_u64(p + 24, m->compactor_epoch);
    od_put_u64(p + 32, m->committer_id);
    od_put_u64(p + 40, (uint64_t)m->commit_time_ms);
    od_put_u64(p + 48, m->wal_replay_from);
    od_put_u64(p + 56, m->last_l0_seq);
    od_put_u64(p + 64, m->next_ckpt_id);
    od_put_u64(p + 72, m->next_run_id);
    out->len = MF_FIXED;
    int rc = od_buf_put_varint(out, m->nl0);
    for (size_t i = 0; !rc && i < m->nl0; i++) rc = put_desc(out, &m->l0[i]);
    rc |= od_buf_put_varint(out, m->nruns);
    for (size_t r = 0; !rc && r < m->nruns; r++) {
        rc |= od_buf_put_varint(out, m->runs[r].id);
        rc |= od_buf_put_varint(out, m->runs[r].n);
        for (size_t i = 0; !rc && i < m->runs[r].n; i++) rc = put_desc(out, &m->runs[r].ssts[i]);
    }
    rc |= od_buf_put_varint(out, m->nckpt);
    for (size_t i = 0; !rc && i < m->nckpt; i++) {
        rc |= od_buf_put_varint(out, m->ckpts[i].id);
        rc |= od_buf_put_varint(out, m->ckpts[i].manifest_version);
        rc |= od_buf_put_u64(out, (uint64_t)m->ckpts[i].expire_ms);
    }
    rc |= od_buf_put_varint(out, m->has_job ? 1 : 0);
    if (!rc && m->has_job) {
        const od_cjob *j = &m->job;
        rc |= od_buf_put_varint(out, j->id);
        rc |= od_buf_put_varint(out, j->compactor_epoch);
        rc |= od_buf_put_varint(out, j->writer_epoch);
        rc |= od_buf_put_u64(out, j->owner_id);
        rc |= od_buf_put_u64(out, (uint64_t)j->started_ms);
        rc |= od_buf_put_varint(out, j->flags);
        rc |= od_buf_put_varint(out, j->nl0_in);
        for (size_t i = 0; !rc && i < j->nl0_in; i++) rc = od_buf_put_lenbytes(out, j->l0_in[i], strlen(j->l0_in[i]));
        rc |= od_buf_put_varint(out, j->nruns_in);
        for (size_t i = 0; !rc && i < j->nruns_in; i++) rc = od_buf_put_varint(out, j->runs_in[i]);
        rc |= od_buf_put_varint(out, j->nout);
        for (size_t i = 0; !rc && i < j->nout; i++) rc = put_desc(out, &j->out[i]);
        rc |= od_buf_put_lenbytes(out, j->pending, strlen(j->pending));
    }
    if (rc) return OD_NOMEM;
    return od_buf_put_u32(out, od_crc32c_mask(od_crc32c(out->data, out->len)));
}

/* An SST id: 1..OD_SST_ID_MAX-1 bytes of [0-9a-z_-], copied NUL-terminated to out. */
static int id_ok(const uint8_t *id, size_t n, char *out)
{
    if (n == 0 || n >= OD_SST_ID_MAX) return -1;
    for (size_t i = 0; i < n; i++)
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'z') || id[i] == '-' || id[i] == '_'))
            return -1;
    memcpy(out, id, n);
    out[n] = 0;
    return 0;
}

static int get_id(od_rd *r, char *out)
{
    size_t n;
    const uint8_t *id = od_rd_lenbytes(r, &n);
    return r->ok ? id_ok(id, n, out) : -1;
}

static int get_desc(od_rd *r, od_sst_desc *d)
{
    if (get_id(r, d->id)) return -1;
    d->size = od_rd_varint(r);
    d->entries = od_rd_varint(r);
    d->min_seq = od_rd_varint(r);
    d->max_seq = od_rd_varint(r);
    const uint8_t *mk = od_rd_lenbytes(r, &d->min_klen);
    const uint8_t *xk = od_rd_lenbytes(r, &d->max_klen);
    if (!r->ok || d->min_seq > d->max_seq) return -1;
    int fail = 0;
    d->min_key = dup_bytes(mk, d->min_klen, &fail);
    d->max_key = dup_bytes(xk, d->max_klen, &fail);
    return fail ? -2 : 0;
}

/* Sanity bound on counts so corrupt input cannot make us allocate absurd arrays. */
static int count_ok(od_rd *r, uint64_t n)
{
    return r->ok && n <= od_rd_left(r);
}

int od_manifest_decode(const uint8_t *data, size_t len, const char *name, od_manifest *m, od_err *err)
{
    memset(m, 0, sizeof *m);
    if (len < MF_FIXED + 4)
        return od_err_set(err, OD_CORRUPT, "manifest: object %s is truncated (%zu bytes)", name, len);
    uint32_t want = od_crc32c_unmask(od_get_u32(data + len - 4));
    uint32_t got = od_crc32c(data, len - 4);
    if (want != got)
        return od_err_set(err, OD_CORRUPT, "manifest: object %s fails its CRC32C (stored %08x, computed %08x)", name,
                          want, got);
    if (memcmp(data, MF_MAGIC, 4) != 0 || data[4] < 1 || data[4] > MF_VERSION || data[5] || data[6] || data[7])
        return od_err_set(err, OD_CORRUPT, "manifest: object %s has a bad magic or unknown format version", name);
    m->version = od_get_u64(data + 8);
    m->writer_epoch = od_get_u64(data + 16);
    m->compactor_epoch = od_get_u64(data + 24);
    m->committer_id = od_get_u64(data + 32);
    m->commit_time_ms = (int64_t)od_get_u64(data + 40);
    m->wal_replay_from = od_get_u64(data + 48);
    m->last_l0_seq = od_get_u64(data + 56);
    m->next_ckpt_id = od_get_u64(data + 64);
    m->next_run_id = od_get_u64(data + 72);
    od_rd r = od_rd_make(data + MF_FIXED, len - MF_FIXED - 4);
    int bad = 0;
    uint64_t n = od_rd_varint(&r);
    if (!count_ok(&r, n)) goto corrupt;
    if (n) {
        m->l0 = calloc(n, sizeof(od_sst_desc));
        if (!m->l0) goto oom;
    }
    for (uint64_t i = 0; i < n; i++) {
        bad = get_desc(&r, &m->l0[i]);
        m->nl0 = i + 1;
        if (bad) goto fail;
    }
    n = od_rd_varint(&r);
    if (!count_ok(&r, n)) goto corrupt;
    if (n) {
        m->runs = calloc(n, sizeof(od_run));
        if (!m->runs) goto oom;
    }
    for (uint64_t ri = 0; ri < n; ri++) {
        od_run *run = &m->runs[ri];
        m->nruns = ri + 1;
        run->id = od_rd_varint(&r);
        uint64_t k = od_rd_varint(&r);
        if (!count_ok(&r, k) || k == 0) goto corrupt;
        run->ssts = calloc(k, sizeof(od_sst_desc));
        if (!run->ssts) goto oom;
        for (uint64_t i = 0; i < k; i++) {
            bad = get_desc(&r, &run->ssts[i]);
            run->n = i + 1;
            if (bad) goto fail;
        }
    }
    n = od_rd_varint(&r);
    if (!count_ok(&r, n)) goto corrupt;
    if (n) {
        m->ckpts = calloc(n, sizeof(od_ckpt));
        if (!m->ckpts) goto oom;
    }
    for (uint64_t i = 0; i < n; i++) {
        m->ckpts[i].id = od_rd_varint(&r);
        m->ckpts[i].manifest_version = od_rd_varint(&r);
        m->ckpts[i].expire_ms = (int64_t)od_rd_u64(&r);
        m->nckpt = i + 1;
    }
    if (data[4] >= 2) {
        n = od_rd_varint(&r);
        if (!r.ok || n > 1) goto corrupt;
        if (n == 1) {
            od_cjob *j = &m->job;
            m->has_job = 1;
            j->id = od_rd_varint(&r);
            j->compactor_epoch = od_rd_varint(&r);
            j->writer_epoch = od_rd_varint(&r);
            j->owner_id = od_rd_u64(&r);
            j->started_ms = (int64_t)od_rd_u64(&r);
            j->flags = od_rd_varint(&r);
            if (j->flags & ~(uint64_t)OD_CJOB_BOTTOM) goto corrupt;
            uint64_t k = od_rd_varint(&r);
            if (!count_ok(&r, k)) goto corrupt;
            if (k && !(j->l0_in = calloc(k, sizeof *j->l0_in))) goto oom;
            for (uint64_t i = 0; i < k; i++) {
                if (get_id(&r, j->l0_in[i])) goto corrupt;
                j->nl0_in = i + 1;
            }
            k = od_rd_varint(&r);
            if (!count_ok(&r, k)) goto corrupt;
            if (k && !(j->runs_in = calloc(k, sizeof *j->runs_in))) goto oom;
            for (uint64_t i = 0; i < k; i++) j->runs_in[i] = od_rd_varint(&r);
            j->nruns_in = k;
            k = od_rd_varint(&r);
            if (!count_ok(&r, k)) goto corrupt;
            if (k && !(j->out = calloc(k, sizeof *j->out))) goto oom;
            for (uint64_t i = 0; i < k; i++) {
                bad = get_desc(&r, &j->out[i]);
                j->nout = i + 1;
                if (bad) goto fail;
            }
            size_t pl;
            const uint8_t *pid = od_rd_lenbytes(&r, &pl);
            if (!r.ok || (pl && id_ok(pid, pl, j->pending))) goto corrupt;
        }
    }
    if (!r.ok || od_rd_left(&r) != 0) goto corrupt;
    return OD_OK;
fail:
    if (bad == -2) goto oom;
corrupt:
    od_manifest_free(m);
    return od_err_set(err, OD_CORRUPT, "manifest: object %s is malformed", name);
oom:
    od_manifest_free(m);
    return od_err_set(err, OD_NOMEM, "manifest: out of memory decoding %s", name);
}

void od_manifest_key(char *buf, size_t n, uint64_t version)
{
    snprintf(buf, n, "manifest/%020" PRIu64 ".manifest", version);
}

void od_wal_key(char *buf, size_t n, uint64_t id)
{
    snprintf(buf, n, "wal/%020" PRIu64 ".wal", id);
}

void od_sst_key(char *buf, size_t n, const char *id)
{
    snprintf(buf, n, "sst/%s.sst", id);
}

void od_pin_key(char *buf, size_t n, uint64_t epoch, const char *id)
{
    snprintf(buf, n, "pin/%020" PRIu64 "-%s.pin", epoch, id);
}

int od_pin_parse(const char *key, uint64_t *epoch, char id[OD_SST_ID_MAX])
{
    size_t kl = strlen(key);
    /* "pin/" + 20 digits + "-" + id (1..OD_SST_ID_MAX-1) + ".pin" */
    if (kl < 4 + 20 + 1 + 1 + 4 || strncmp(key, "pin/", 4) != 0 || key[24] != '-' || strcmp(key + kl - 4, ".pin") != 0)
        return 0;
    uint64_t e = 0;
    for (size_t i = 4; i < 24; i++) {
        if (key[i] < '0' || key[i] > '9') return 0;
        e = e * 10 + (uint64_t)(key[i] - '0');
    }
    size_t il = kl - 25 - 4;
    if (il >= OD_SST_ID_MAX) return 0;
    memcpy(id, key + 25, il);
    id[il] = 0;
    *epoch = e;
    return 1;
}

int od_manifest_load(od_store *s, uint64_t version, od_manifest *m, od_err *err)
{
    char key[64];
    od_manifest_key(key, sizeof key, version);
    od_buf b = {0};
    int rc = od_store_get(s, key, &b, NULL, err);
    if (rc == OD_OK) {
        rc = od_manifest_decode(b.data, b.len, key, m, err);
        if (rc == OD_OK && m->version != version) {
            unsigned long long held = (unsigned long long)m->version;
            od_manifest_free(m);
            rc = od_err_set(err, OD_CORRUPT, "manifest: object %s holds version %llu", key, held);
        }
    }
    od_buf_free(&b);
    return rc;
}

struct last_ctx {
    uint64_t last;
};

static int list_last_cb(void *ctx, const char *key, const od_obj_meta *meta)
{
    struct last_ctx *c = ctx;
    unsigned long long v;
    char tail[16];
    if (sscanf(key, "manifest/%20llu%15s", &v, tail) == 2 && strcmp(tail, ".manifest") == 0 && v > c->last)
        c->last = v;
    return 0;
}

int od_manifest_load_latest(od_store *s, uint64_t known, od_manifest *m, od_err *err)
{
    uint64_t v = known;
    if (v == 0) {
        struct last_ctx c = {0};
        int rc = od_store_list(s, "manifest/", NULL, list_last_cb, &c, err);
        if (rc) return rc;
        if (c.last == 0) return od_err_set(err, OD_NOTFOUND, "manifest: no manifest in %s", od_store_describe(s));
        v = c.last;
    }
    /* Probe forward: versions are contiguous. */
    for (;;) {
        char key[64];
        od_obj_meta meta;
        od_manifest_key(key, sizeof key, v + 1);
        int rc = od_store_head(s, key, &meta, err);
        if (rc == OD_NOTFOUND) break;
        if (rc) return rc;
        v++;
    }
    int rc = od_manifest_load(s, v, m, err);
    if (rc == OD_NOTFOUND && known) return od_manifest_load_latest(s, 0, m, err); /* GC'd meanwhile */
    return rc;
}

int od_manifest_put(od_store *s, const od_manifest *m, od_err *err)
{
    char key[64];
    od_manifest_key(key, sizeof key, m->version);
    od_buf b = {0};
    int rc = od_manifest_encode(m, &b);
    if (rc) {
        od_buf_free(&b);
        return od_err_set(err, rc, "manifest: out of memory encoding version %llu", (unsigned long long)m->version);
    }
    rc = od_store_put_if_absent(s, key, b.data, b.len, err);
    if (rc == OD_EXISTS && od_landed(s, key, b.data, b.len)) rc = OD_OK;
    od_buf_free(&b);
    if (rc == OD_OK && err) od_err_clear(err);
    return rc;
}

int od_landed(od_store *s, const char *key, const void *data, size_t len)
{
    /* Our bytes are unique to us (epoch, random id): equal bytes mean our own earlier attempt
     * landed although its answer was lost. A few tries, since the check itself can fail. */
    od_buf cur = {0};
    int same = 0;
    for (int i = 0; i < 5 && !same; i++) {
        int rc = od_store_get(s, key, &cur, NULL, NULL);
        if (rc == OD_OK) {
            same = cur.len == len && (len == 0 || memcmp(cur.data, data, len) == 0);
            break;
        }
        if (rc == OD_NOTFOUND) break;
    }
    od_buf_free(&cur);
    return same;
}

size_t od_manifest_prune_ckpts(od_manifest *m, int64_t now_ms)
{
    size_t j = 0;
    for (size_t i = 0; i < m->nckpt; i++)
        if (m->ckpts[i].expire_ms == 0 || m->ckpts[i].expire_ms > now_ms) m->ckpts[j++] = m->ckpts[i];
    size_t removed = m->nckpt - j;
    m->nckpt = j;
    return removed;
}

int od_manifest_update(od_store *s, od_manifest *cur, uint64_t committer_id, od_manifest_edit_fn edit, void *ctx,
                       od_err *err)
{
    for (int tries = 0; tries < MF_MAX_TRIES; tries++) {
        /* GC deletes old non-latest versions, so when *cur is stale the slot cur->version+1
         * may be free again although newer versions exist: creating it would commit on top
         * of an old state, invisible to everyone (a rollback). Make sure nothing newer than
         * *cur exists before creating its successor (one LIST from *cur on). */
        char after[64];
        od_manifest_key(after, sizeof after, cur->version);
        struct last_ctx lc = {0};
        int rc = od_store_list(s, "manifest/", after, list_last_cb, &lc, err);
        if (rc) return rc;
        if (lc.last > cur->version) {
            od_manifest fresh;
            if ((rc = od_manifest_load_latest(s, 0, &fresh, err))) return rc;
            od_manifest_free(cur);
            *cur = fresh;
        }
        od_manifest next;
        if (od_manifest_copy(&next, cur)) return od_err_set(err, OD_NOMEM, "manifest: out of memory");
        rc = edit(ctx, &next, err);
        if (rc) {
            od_manifest_free(&next);
            return rc;
        }
        od_manifest_prune_ckpts(&next, od_now_ms());
        next.version = cur->version + 1;
        next.committer_id = committer_id;
        next.commit_time_ms = od_now_ms();
        rc = od_manifest_put(s, &next, err);
        if (rc == OD_OK) {
            od_manifest_free(cur);
            *cur = next;
            return OD_OK;
        }
        od_manifest_free(&next);
        if (rc != OD_EXISTS) return rc;
        od_manifest fresh;
        rc = od_manifest_load_latest(s, cur->version, &fresh, err);
        if (rc) return rc;
        od_manifest_free(cur);
        *cur = fresh;
    }
    return od_err_set(err, OD_CONFLICT, "manifest: gave up after %d conflicting commits", MF_MAX_TRIES);
}
