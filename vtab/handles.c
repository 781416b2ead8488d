/*
 * handles.c — the process-wide registry of open engine handles (see od_vtab.h).
 *
 * A short linked list under a mutex: the number of distinct stores a process opens is small,
 * and lookups happen at CREATE/CONNECT time, never per row. Opening happens under the lock so
 * two connections racing to open the same store cannot both become writers.
 */
#include "od_vtab.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry {
    char *kind;
    char *uri;
    void *handle;
    od_vtab_close_fn close;
    int refs;
    struct entry *next;
} entry;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static entry *head;

int od_vtab_handle_acquire(const char *kind, const char *uri, od_vtab_open_fn open, void *ctx,
                           od_vtab_close_fn close, void **handle, od_err *err)
{
    pthread_mutex_lock(&mu);
    for (entry *e = head; e; e = e->next) {
        if (strcmp(e->kind, kind) == 0 && strcmp(e->uri, uri) == 0) {
            e->refs++;
            *handle = e->handle;
            pthread_mutex_unlock(&mu);
            return OD_OK;
        }
    }
    entry *e = calloc(1, sizeof *e);
    if (e) {
        e->kind = strdup(kind);
        e->uri = strdup(uri);
    }
    if (!e || !e->kind || !e->uri) {
        if (e) { free(e->kind); free(e->uri); free(e); }
        pthread_mutex_unlock(&mu);
        return od_err_set(err, OD_NOMEM, "out of memory");
    }
    int rc = open(uri, ctx, &e->handle, err);
    if (rc) {
        free(e->kind);
        free(e->uri);
        free(e);
        pthread_mutex_unlock(&mu);
        return rc;
    }
    e->close = close;
    e->refs = 1;
    e->next = head;
    head = e;
    *handle = e->handle;
    pthread_mutex_unlock(&mu);
    return OD_OK;
}

void od_vtab_handle_release(void *handle)
{
    if (!handle) return;
    pthread_mutex_lock(&mu);
    for (entry **pp = &head; *pp; pp = &(*pp)->next) {
        entry *e = *pp;
        if (e->handle != handle) continue;
        if (--e->refs == 0) {
            *pp = e->next;
            e->close(e->handle);
            free(e->kind);
            free(e->uri);
            free(e);
        }
        break;
    }
    pthread_mutex_unlock(&mu);
}

void *od_vtab_handle_find(const char *kind, const char *uri)
{
    void *h = NULL;
    pthread_mutex_lock(&mu);
    for (entry *e = head; e; e = e->next)
        if (strcmp(e->kind, kind) == 0 && strcmp(e->uri, uri) == 0) { h = e->handle; break; }
    pthread_mutex_unlock(&mu);
    return h;
}

void *od_vtab_handle_find_ref(const char *kind, const char *uri)
{
    void *h = NULL;
    pthread_mutex_lock(&mu);
    for (entry *e = head; e; e = e->next)
        if (strcmp(e->kind, kind) == 0 && strcmp(e->uri, uri) == 0) {
            e->refs++;
            h = e->handle;
            break;
        }
    pthread_mutex_unlock(&mu);
    return h;
}
