/*
 * od_holdstore.h — a test store wrapper that can hold one PUT in flight.
 *
 * od_hold_open(uri, mode, key, prefix) wraps the store at `uri`. Once armed (h->armed = 1
 * under h->mu), the next PUT with the given mode whose key equals `key` (or starts with it
 * when prefix=1) blocks: it records the key in held_key, sets blocked, broadcasts cv, and
 * waits until a test sets released. Every other request passes straight to h->inner.
 * Used to stage stalled writers and interleaved opens in the storage-engine tests.
 */
#ifndef OD_HOLDSTORE_H
#define OD_HOLDSTORE_H

#include <pthread.h>

#include "od_objstore_impl.h"

typedef struct od_hold_store {
    od_store base;
    od_store *inner;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int armed, blocked, released;
    char held_key[128];
    od_put_mode hold_mode;
    char hold_key[128];
    int hold_prefix;
} od_hold_store;

od_hold_store *od_hold_open(const char *uri, od_put_mode mode, const char *key, int prefix);

#endif
