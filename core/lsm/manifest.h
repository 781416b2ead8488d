/*
 * manifest.h — the manifest: the list of every live collection and the WAL position,
 * versioned in the store as manifest/<20-digit version>.manifest. Internal to core/lsm.
 *
 * A manifest version is never modified: a change is a new version created with
 * put_if_absent at version+1. When that create finds the object already there, somebody
 * else committed first: re-read the latest version, re-apply the change (or fail with
 * OD_FENCED when a newer epoch took over) and try again (od_manifest_update).
 *
 * Byte format (little-endian, byte-exact description in docs/formats.md):
 *    0 magic "ODMF" | 4 format version u8 (2; 1 is still read) | 5 reserved 3 bytes (0)
 *    8 version u64 | 16 writer_epoch u64 | 24 compactor_epoch u64 | 32 committer_id u64
 *   40 commit_time_ms i64 | 48 wal_replay_from u64 | 56 last_l0_seq u64
 *   64 next_ckpt_id u64 | 72 next_run_id u64
 *   80 varint nl0, nl0 × sst | varint nruns, nruns × (varint run_id, varint n, n × sst)
 *      | varint nckpt, nckpt × (varint id, varint manifest_version, expire_ms i64)
 *      | (version 2 only) varint njobs (0 or 1), njobs × job
 *   end-4: masked CRC32C of every byte before it.
 *   job = varint id | varint compactor_epoch | varint writer_epoch | owner_id u64
 *         | started_ms i64 | varint flags | varint nl0_in, nl0_in × lenbytes sst id
 *         | varint nruns_in, nruns_in × varint run_id | varint nout, nout × sst
 *         | lenbytes pending_id (the output being written now; empty = none)
 *   sst = lenbytes id | varint size | varint entries | varint min_seq | varint max_seq
 *         | lenbytes min_key | lenbytes max_key
 */
#ifndef OD_MANIFEST_H
#define OD_MANIFEST_H

#include <stddef.h>
#include <stdint.h>

#include "od_buf.h"
#include "od_err.h"
#include "od_objstore.h"

#define OD_SST_ID_MAX 40

typedef struct od_sst_desc {
    char id[OD_SST_ID_MAX]; /* object key is "sst/<id>.sst" */
    uint64_t size, entries, min_seq, max_seq;
    uint8_t *min_key, *max_key; /* malloc'd */
    size_t min_klen, max_klen;
} od_sst_desc;

typedef struct od_run {
    uint64_t id;
    size_t n;
    od_sst_desc *ssts; /* ascending, non-overlapping key ranges */
} od_run;

typedef struct od_ckpt {
    uint64_t id, manifest_version;
    int64_t expire_ms;
} od_ckpt;

/* A compaction in progress (format version 2). Committed before the compaction writes its
 * first output and extended by one commit per completed output (ascending, disjoint key
 * ranges), so GC keeps the outputs (they are referenced) and a compactor that dies can be
 * resumed from the last recorded output's max key instead of starting over. Removed by the
 * commit that installs the output run (or that abandons the job). */
#define OD_CJOB_BOTTOM 1u /* the output is the bottom run: dead versions are dropped */
typedef struct od_cjob {
    uint64_t id;
    uint64_t compactor_epoch; /* of the handle running it */
    uint64_t writer_epoch;    /* of the writer handle running it; 0 = a compactor process */
    uint64_t owner_id;        /* committer id of the handle running it */
    int64_t started_ms;
    uint64_t flags;
    size_t nl0_in;
    char (*l0_in)[OD_SST_ID_MAX]; /* input L0 collections */
    size_t nruns_in;
    uint64_t *runs_in; /* input sorted runs (the newest ones), by run id, newest first */
    size_t nout;
    od_sst_desc *out; /* completed outputs, ascending key ranges */
    char pending[OD_SST_ID_MAX]; /* id of the output being written ("" = none): named in the
                                    manifest before its PUT, so GC never races it */
} od_cjob;

void od_cjob_free(od_cjob *j); /* frees contents, zeroes */
int od_cjob_copy(od_cjob *dst, const od_cjob *src); /* dst is overwritten (not freed) */

typedef struct od_manifest {
    uint64_t version;
    uint64_t writer_epoch, compactor_epoch;
    uint64_t committer_id;
    int64_t commit_time_ms;
    uint64_t wal_replay_from; /* first WAL id that may hold seqs > last_l0_seq */
    uint64_t last_l0_seq;     /* every seq ≤ this is in a collection */
    uint64_t next_ckpt_id, next_run_id;
    size_t nl0;
    od_sst_desc *l0; /* newest first */
    size_t nruns;
    od_run *runs; /* newest first */
    size_t nckpt;
    od_ckpt *ckpts;
    int has_job;
    od_cjob job; /* valid when has_job */
} od_manifest;

void od_manifest_free(od_manifest *m); /* frees contents, zeroes */
int od_manifest_copy(od_manifest *dst, const od_manifest *src); /* dst is overwritten (not freed) */
int od_sst_desc_copy(od_sst_desc *dst, const od_sst_desc *src);
void od_sst_desc_free(od_sst_desc *d);

int od_manifest_encode(const od_manifest *m, od_buf *out);
int od_manifest_decode(const uint8_t *data, size_t len, const char *name, od_manifest *m, od_err *err);

/* Object keys. */
void od_manifest_key(char *buf, size_t n, uint64_t version);
void od_wal_key(char *buf, size_t n, uint64_t id);
void od_sst_key(char *buf, size_t n, const char *id);
/* Flush pin of an L0 output: "pin/<20-digit writer epoch>-<sst id>.pin" (docs/formats.md). A
 * writer creates it before the collection's PUT and deletes it after the manifest commit, so
 * GC in any process keeps the collection in between (gc.c). od_pin_parse: 1 when `key` is a
 * pin key (epoch and the id, NUL-terminated, filled in), else 0. */
void od_pin_key(char *buf, size_t n, uint64_t epoch, const char *id);
int od_pin_parse(const char *key, uint64_t *epoch, char id[OD_SST_ID_MAX]);

/* Load the latest version. `known` (may be 0) is a version known to exist: probing goes
 * forward from it; with 0 the manifest/ prefix is listed. OD_NOTFOUND when there is none. */
int od_manifest_load_latest(od_store *s, uint64_t known, od_manifest *m, od_err *err);
int od_manifest_load(od_store *s, uint64_t version, od_manifest *m, od_err *err);

/* Try to create version m->version. OD_EXISTS when somebody else has it. */
int od_manifest_put(od_store *s, const od_manifest *m, od_err *err);

/* Change function for od_manifest_update: edit `m` in place (it is a copy of the latest);
 * return OD_OK to commit, or an error (OD_FENCED, OD_CONFLICT, ...) to give up. */
typedef int (*od_manifest_edit_fn)(void *ctx, od_manifest *m, od_err *err);

/* CAS loop: *cur is the latest known manifest (updated to the committed or re-read one).
 * Gives up after `max_tries` collisions with OD_CONFLICT. Every commit also drops the
 * checkpoints that have expired (see od_manifest_prune_ckpts). */
int od_manifest_update(od_store *s, od_manifest *cur, uint64_t committer_id, od_manifest_edit_fn edit, void *ctx,
                       od_err *err);

/* Remove the checkpoints whose expiry time is ≤ now_ms; returns how many were removed. */
size_t od_manifest_prune_ckpts(od_manifest *m, int64_t now_ms);

int64_t od_now_ms(void);
/* After a conditional create answered "exists": 1 when the object holds exactly our bytes
 * (our own earlier attempt landed), 0 when it is somebody else's (or unreadable). */
int od_landed(od_store *s, const char *key, const void *data, size_t len);

#endif
