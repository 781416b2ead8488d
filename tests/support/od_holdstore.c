/*
 * od_holdstore.c — a test store wrapper that can hold one PUT in flight (see od_holdstore.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "od_holdstore.h"

static int h_get(od_store *s, const char *key, od_buf *out, od_obj_meta *meta, od_err *err)
{
    return od_store_get(((od_hold_store *)s)->inner, key, out, meta, err);
}
static int h_get_range(od_store *s, const char *key, uint64_t off, uint64_t len, od_buf *out, od_err *err)
{
    return od_store_get_range(((od_hold_store *)s)->inner, key, off, len, out, err);
}
static int h_head(od_store *s, const char *key, od_obj_meta *meta, od_err *err)
{
    return od_store_head(((od_hold_store *)s)->inner, key, meta, err);
}
static int h_put(od_store *s, const char *key, const void *data, size_t len, od_put_mode mode, const char *etag,
                 od_obj_meta *meta_out, od_err *err)
{
    od_hold_store *h = (od_hold_store *)s;
    size_t hl = strlen(h->hold_key);
    if (mode == h->hold_mode && (h->hold_prefix ? strncmp(key, h->hold_key, hl) == 0 : strcmp(key, h->hold_key) == 0)) {
        pthread_mutex_lock(&h->mu);
        if (h->armed) {
            h->armed = 0;
            h->blocked = 1;
            snprintf(h->held_key, sizeof h->held_key, "%s", key);
            pthread_cond_broadcast(&h->cv);
            while (!h->released) pthread_cond_wait(&h->cv, &h->mu);
        }
        pthread_mutex_unlock(&h->mu);
    }
    return od_store_put(h->inner, key, data, len, mode, etag, meta_out, err);
}
static int h_del(od_store *s, const char *key, od_err *err)
{
    return od_store_delete(((od_hold_store *)s)->inner, key, err);
}
static int h_list(od_store *s, const char *prefix, const char *start_after, od_list_cb cb, void *ctx, od_err *err)
{
    return od_store_list(((od_hold_store *)s)->inner, prefix, start_after, cb, ctx, err);
}
static void h_close(od_store *s)
{
    od_hold_store *h = (od_hold_store *)s;
    od_store_close(h->inner);
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->cv);
    od_store_destroy_base(s);
    free(h);
}
static const od_store_ops hold_ops = {h_get, h_get_range, h_head, h_put, h_del, h_list, h_close};

od_hold_store *od_hold_open(const char *uri, od_put_mode mode, const char *key, int prefix)
{
    od_hold_store *h = calloc(1, sizeof *h);
    assert_non_null(h);
    od_err err;
    assert_int_equal(od_store_open(uri, &h->inner, &err), OD_OK);
    od_store_init_base(&h->base, &hold_ops, "hold");
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    h->hold_mode = mode;
    snprintf(h->hold_key, sizeof h->hold_key, "%s", key);
    h->hold_prefix = prefix;
    return h;
}
