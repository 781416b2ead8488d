/*
 * od_err.c — error codes and messages (see od_err.h).
 */
#include "od_err.h"

#include <stdio.h>
#include <string.h>

static const char *const code_names[OD_CODE_COUNT] = {
    [OD_OK] = "ok",
    [OD_NOTFOUND] = "not found",
    [OD_EXISTS] = "already exists",
    [OD_PRECONDITION] = "precondition failed",
    [OD_TRANSIENT] = "transient error",
    [OD_PERMANENT] = "permanent error",
    [OD_BADREQ] = "bad request",
    [OD_AUTH] = "authentication failed",
    [OD_CORRUPT] = "corrupt data",
    [OD_FENCED] = "fenced",
    [OD_NOMEM] = "out of memory",
    [OD_IO] = "I/O error",
    [OD_BUSY] = "busy",
    [OD_CONFLICT] = "conflict",
    [OD_TIMEOUT] = "timeout",
    [OD_CLOSED] = "closed",
    [OD_UNSUPPORTED] = "unsupported",
    [OD_LIMIT] = "limit exceeded",
};

const char *od_code_name(od_code code)
{
    if ((unsigned)code >= OD_CODE_COUNT) return "unknown error";
    return code_names[code];
}

int od_err_vset(od_err *e, od_code code, const char *fmt, va_list ap)
{
    if (!e) return code;
    e->code = code;
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    return code;
}

int od_err_set(od_err *e, od_code code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    od_err_vset(e, code, fmt, ap);
    va_end(ap);
    return code;
}

void od_err_prefix(od_err *e, const char *fmt, ...)
{
    if (!e) return;
    char pre[256], old[sizeof e->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    memcpy(old, e->msg, sizeof old);
    size_t n = strlen(pre);
    if (n > sizeof e->msg - 3) n = sizeof e->msg - 3;
    memcpy(e->msg, pre, n);
    memcpy(e->msg + n, ": ", 2);
    size_t rest = sizeof e->msg - n - 2;
    size_t olen = strnlen(old, rest - 1);
    memcpy(e->msg + n + 2, old, olen);
    e->msg[n + 2 + olen] = 0;
}

void od_err_clear(od_err *e)
{
    if (!e) return;
    e->code = OD_OK;
    e->msg[0] = 0;
}

int od_err_copy(od_err *dst, const od_err *src)
{
    if (!src) return OD_OK;
    if (dst && dst != src) *dst = *src;
    return src->code;
}
