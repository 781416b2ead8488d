/*
 * od_err.h — the one error idiom of OpenData core.
 *
 * Every fallible function returns an od_code (OD_OK == 0) and, when given a non-NULL
 * `od_err *`, fills it with the same code plus a human-readable message that names what
 * was wrong ("objstore: key \"a/../b\" escapes the store root"). Callers that only need
 * the code may pass NULL. Messages never contain credentials.
 */
#ifndef OD_ERR_H
#define OD_ERR_H

#include <stdarg.h>

typedef enum od_code {
    OD_OK = 0,
    OD_NOTFOUND,     /* object / key / series does not exist */
    OD_EXISTS,       /* conditional create lost: the object already exists */
    OD_PRECONDITION, /* conditional replace lost: the ETag no longer matches */
    OD_TRANSIENT,    /* retryable failure (5xx, 429/503 SlowDown, timeout, connection) */
    OD_PERMANENT,    /* non-retryable failure of the backend */
    OD_BADREQ,       /* caller error: bad key, bad URI, bad argument, bad input data */
    OD_AUTH,         /* credentials refused */
    OD_CORRUPT,      /* bytes failed a checksum or a structural check */
    OD_FENCED,       /* a newer writer/compactor epoch took over this store */
    OD_NOMEM,        /* allocation failed */
    OD_IO,           /* local I/O error (errno in the message) */
    OD_BUSY,         /* resource held by someone else (e.g. a live writer lease) */
    OD_CONFLICT,     /* optimistic concurrency check failed (e.g. expected_seq) */
    OD_TIMEOUT,      /* an operation-level deadline passed */
    OD_CLOSED,       /* handle is closed / shutting down */
    OD_UNSUPPORTED,  /* feature not offered by this backend / format version */
    OD_LIMIT,        /* a configured limit was exceeded */
    OD_CODE_COUNT
} od_code;

typedef struct od_err {
    od_code code;
    char msg[512];
} od_err;

/* Set code and printf-style message; returns `code` so callers can `return od_err_set(...)`. */
int od_err_set(od_err *e, od_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int od_err_vset(od_err *e, od_code code, const char *fmt, va_list ap);
/* Prefix an existing message: "ctx: <old message>". Keeps the code; e may be NULL. Returns nothing on
 * purpose: with a NULL e there is no code to return, so callers return their own rc. */
void od_err_prefix(od_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void od_err_clear(od_err *e);
/* Static name of a code: "not found", "already exists", ... */
const char *od_code_name(od_code code);
/* Copy src into dst (both may be NULL). Returns src->code. */
int od_err_copy(od_err *dst, const od_err *src);

#endif
