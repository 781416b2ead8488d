/*
 * od_faulty.h — runtime control of the fault-injecting store wrapper (faulty+<uri>?...), for tests.
 *
 * A store opened as "faulty+<inner uri>?seed=N&error_rate=F&ambiguous_rate=F&latency_ms=N
 * &latency_jitter_ms=N&retries=N&retry_base_ms=N&retry_max_ms=N" forwards every request to the
 * inner store, but first draws from a per-handle PRNG seeded with `seed`:
 *   - with probability error_rate the request fails with OD_TRANSIENT before reaching the inner
 *     store ("injected: transient failure");
 *   - else with probability ambiguous_rate it is executed and then reported as OD_TRANSIENT
 *     ("injected: succeeded but reported failure") — the outcome an S3 client sees when a
 *     response is lost;
 *   - every request sleeps latency_ms plus a uniform 0..latency_jitter_ms.
 * retries/retry_base_ms/retry_max_ms set the generic retry layer of the wrapper's handle
 * (od_store_set_retry): retries=1 makes every injected fault visible to the caller.
 * For a given seed and a given sequence of requests (one thread) the faults are the same on
 * every run. All parameters are optional (default: no faults, no latency). Unknown parameters
 * are OD_BADREQ, except around an s3:// store, whose own query parameters may arrive mixed with
 * ours ("faulty+s3://b/p?region=r&endpoint=..&latency_ms=20"): those are handed back to it.
 */
#ifndef OD_FAULTY_H
#define OD_FAULTY_H

#include <stdint.h>

#include "od_objstore.h"

typedef struct od_faulty_stats {
    uint64_t requests;          /* requests seen by the wrapper (all kinds, each attempt) */
    uint64_t injected_errors;   /* failed before reaching the inner store */
    uint64_t injected_ambiguous;/* executed, then reported as failed */
    uint64_t delayed_ms;        /* total injected latency */
} od_faulty_stats;

/* Change the fault rates and latency of a faulty store at run time (jitter is kept).
 * OD_BADREQ when s is not a faulty store or a rate is outside [0, 1]. */
int od_store_faulty_set(od_store *s, double error_rate, double ambiguous_rate, uint32_t latency_ms);
/* Force the next n requests to fail: ambiguous = 0 fails them before the inner store,
 * 1 executes them and then reports failure. Drawn rates resume afterwards. */
int od_store_faulty_fail_next(od_store *s, int n, int ambiguous);
/* Injected-fault counters; OD_BADREQ when s is not a faulty store. */
int od_store_faulty_get_stats(od_store *s, od_faulty_stats *out);
/* Total faults injected so far (errors + ambiguous); 0 for a store that is not faulty. */
uint64_t od_store_faulty_injected(od_store *s);
/* The wrapped store (owned by the wrapper), or NULL when s is not faulty. */
od_store *od_store_faulty_inner(od_store *s);

#endif
