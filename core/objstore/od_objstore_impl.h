/*
 * od_objstore_impl.h — what a backend implements. Internal to core/objstore.
 *
 * A backend allocates a struct whose first member is `od_store` and fills `ops`.
 * The generic layer (objstore.c) validates keys, counts requests/bytes/errors in `stats`
 * (under `stats_mu`), and then calls the op. Backends only count `retries` themselves
 * (through od_store_count_retry). Ops must be thread-safe.
 */
#ifndef OD_OBJSTORE_IMPL_H
#define OD_OBJSTORE_IMPL_H

#include <pthread.h>

#include "od_objstore.h"

typedef struct od_store_ops {
    int (*get)(od_store *s, const char *key, od_buf *out, od_obj_meta *meta, od_err *err);
    int (*get_range)(od_store *s, const char *key, uint64_t off, uint64_t len, od_buf *out, od_err *err);
    int (*head)(od_store *s, const char *key, od_obj_meta *meta, od_err *err);
    int (*put)(od_store *s, const char *key, const void *data, size_t len, od_put_mode mode,
               const char *etag, od_obj_meta *meta_out, od_err *err);
    int (*del)(od_store *s, const char *key, od_err *err);
    /* Backends page internally; they call cb for each key in ascending order and count
     * each page via od_store_count_list_page. */
    int (*list)(od_store *s, const char *prefix, const char *start_after, od_list_cb cb, void *ctx,
                od_err *err);
    void (*close)(od_store *s);
} od_store_ops;

struct od_store {
    const od_store_ops *ops;
    od_store_caps caps;
    char desc[256];
    pthread_mutex_t stats_mu;
    od_store_stats stats;
    /* Retry policy of the generic layer (see objstore.c); guarded by stats_mu. */
    int retry_max_attempts;
    int retry_base_delay_ms;
    int retry_max_delay_ms;
    uint64_t jitter_state;
};

/* Initialise the common part (call from backend open). */
void od_store_init_base(od_store *s, const od_store_ops *ops, const char *desc);
void od_store_destroy_base(od_store *s);
void od_store_count_retry(od_store *s);
void od_store_count_list_page(od_store *s);

/* Backend constructors (uri is the part after the scheme, e.g. "name" for mem://name). */
int od_store_open_file(const char *path, od_store **out, od_err *err);
int od_store_open_mem(const char *name, od_store **out, od_err *err);
int od_store_open_s3(const char *rest, od_store **out, od_err *err);
int od_store_open_faulty(const char *inner_uri, const char *params, od_store **out, od_err *err);

#endif
