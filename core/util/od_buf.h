/*
 * od_buf.h — a growable byte buffer, the one way core passes owned bytes around.
 *
 * An od_buf owns `data` (malloc'd) of `cap` bytes, of which `len` are valid. A zeroed
 * od_buf ({0}) is a valid empty buffer. Appends grow geometrically; every growth is checked
 * and reports OD_NOMEM. od_buf_free releases and re-zeroes.
 */
#ifndef OD_BUF_H
#define OD_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct od_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
} od_buf;

int od_buf_reserve(od_buf *b, size_t extra);      /* ensure cap >= len + extra; OD_OK/OD_NOMEM */
int od_buf_append(od_buf *b, const void *p, size_t n);
int od_buf_append_u8(od_buf *b, uint8_t v);
int od_buf_append_str(od_buf *b, const char *s);   /* without the NUL */
int od_buf_printf(od_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append a NUL without counting it in len, so data can be used as a C string. */
int od_buf_cstr(od_buf *b);
void od_buf_reset(od_buf *b);                      /* len = 0, keep memory */
void od_buf_free(od_buf *b);
/* Take ownership of the bytes: returns data, zeroes the buffer. */
uint8_t *od_buf_detach(od_buf *b, size_t *len);

#endif
