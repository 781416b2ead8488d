/*
 * od_buf.c — growable byte buffer (see od_buf.h).
 */
#include "od_buf.h"
#include "od_err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int od_buf_reserve(od_buf *b, size_t extra)
{
    if (extra > SIZE_MAX - b->len) return OD_NOMEM;
    size_t need = b->len + extra;
    if (need <= b->cap) return OD_OK;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) { cap = need; break; }
        cap *= 2;
    }
    uint8_t *p = realloc(b->data, cap);
    if (!p) return OD_NOMEM;
    b->data = p;
    b->cap = cap;
    return OD_OK;
}

int od_buf_append(od_buf *b, const void *p, size_t n)
{
    if (n == 0) return OD_OK;
    int rc = od_buf_reserve(b, n);
    if (rc) return rc;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return OD_OK;
}

int od_buf_append_u8(od_buf *b, uint8_t v)
{
    return od_buf_append(b, &v, 1);
}

int od_buf_append_str(od_buf *b, const char *s)
{
    return od_buf_append(b, s, strlen(s));
}

int od_buf_printf(od_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return OD_BADREQ;
    int rc = od_buf_reserve(b, (size_t)n + 1);
    if (rc) return rc;
    va_start(ap, fmt);
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return OD_OK;
}

int od_buf_cstr(od_buf *b)
{
    int rc = od_buf_reserve(b, 1);
    if (rc) return rc;
    b->data[b->len] = 0;
    return OD_OK;
}

void od_buf_reset(od_buf *b)
{
    b->len = 0;
}

void od_buf_free(od_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

uint8_t *od_buf_detach(od_buf *b, size_t *len)
{
    uint8_t *p = b->data;
    if (len) *len = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}
