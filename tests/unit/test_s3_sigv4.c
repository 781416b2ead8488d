/*
 * test_s3_sigv4.c — the s3:// backend's signing path against AWS's published S3 SigV4 examples,
 * plus the pure helpers of s3_util.c (query canonicalisation, URI encoding, XML, dates).
 *
 * How: a capture HTTP server on 127.0.0.1 (a thread that accepts one connection, records the
 * request head, and answers) receives exactly what our request-building code plus libcurl
 * send. The store is opened virtual-hosted on http://s3.amazonaws.com with the example's
 * credentials; a test hook pins x-amz-date to the example's time and redirects the
 * connection (CURLOPT_CONNECT_TO) to the capture server, so the Host header stays
 * examplebucket.s3.amazonaws.com. The Authorization header must carry AWS's published
 * signature, from the S3 API reference "Signature Calculations for the Authorization Header:
 * Transferring Payload in a Single Chunk":
 *   GET Object   GET /test.txt, Range: bytes=0-9 -> f0e8bdb8...c6036bdb41
 *   GET Bucket   GET /?max-keys=2&prefix=J     -> 34b48302...11ef69dc6f7 (query given unsorted)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "od_objstore.h"
#include "s3_internal.h"

#define EX_ACCESS "AKIAIOSFODNN7EXAMPLE"
#define EX_SECRET "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
#define EX_DATE "20130524T000000Z"
#define EMPTY_SHA "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

/* ------------------------------------------------------------------ capture server */

enum { MAX_REPLIES = 8 };

typedef struct capture {
    int lfd;
    int port;
    const char *replies[MAX_REPLIES]; /* full HTTP responses, one per connection, in order */
    int nreplies;
    char req[8192];                   /* the first request, head and body, as received */
    size_t req_len;
    char lines[MAX_REPLIES][160];     /* request line of every request */
    int nreq;
    pthread_t th;
} capture;

/* Read one request (head, then Content-Length bytes of body) from fd into buf. */
static size_t read_request(int fd, char *buf, size_t cap)
{
    size_t len = 0, want = 0;
    buf[0] = 0;
    for (;;) {
        ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
        if (n <= 0) break;
        len += (size_t)n;
        buf[len] = 0;
        char *end = strstr(buf, "\r\n\r\n");
        if (end) {
            if (!want) {
                const char *cl = strcasestr(buf, "\r\nContent-Length:");
                size_t body = cl && cl < end ? (size_t)strtoul(cl + 17, NULL, 10) : 0;
                want = (size_t)(end + 4 - buf) + body;
                if (strcasestr(buf, "\r\nExpect: 100-continue") && body) {
                    const char *cont = "HTTP/1.1 100 Continue\r\n\r\n";
                    (void)!send(fd, cont, strlen(cont), MSG_NOSIGNAL);
                }
            }
            if (len >= want || len >= cap - 1) break;
        }
    }
    return len;
}

/* Serve the scripted replies, one connection each (every reply says Connection: close). */
static void *capture_main(void *p)
{
    capture *c = p;
    static char other[8192];
    for (int i = 0; i < c->nreplies; i++) {
        int fd = accept(c->lfd, NULL, NULL);
        if (fd < 0) return NULL;
        char *buf = i == 0 ? c->req : other;
        size_t len = read_request(fd, buf, sizeof c->req);
        if (i == 0) c->req_len = len;
        const char *eol = strstr(buf, "\r\n");
        snprintf(c->lines[i], sizeof c->lines[i], "%.*s", eol ? (int)(eol - buf) : 0, buf);
        c->nreq = i + 1;
        (void)!send(fd, c->replies[i], strlen(c->replies[i]), MSG_NOSIGNAL);
        shutdown(fd, SHUT_WR);
        char sink[256];
        while (recv(fd, sink, sizeof sink, 0) > 0) {
        }
        close(fd);
    }
    return NULL;
}

static void capture_start_script(capture *c, const char *const *replies, int n)
{
    memset(c, 0, sizeof *c);
    assert_true(n >= 1 && n <= MAX_REPLIES);
    for (int i = 0; i < n; i++) c->replies[i] = replies[i];
    c->nreplies = n;
    c->lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(c->lfd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(c->lfd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t l = sizeof a;
    assert_int_equal(getsockname(c->lfd, (struct sockaddr *)&a, &l), 0);
    c->port = ntohs(a.sin_port);
    assert_int_equal(listen(c->lfd, 4), 0);
    assert_int_equal(pthread_create(&c->th, NULL, capture_main, c), 0);
}

static void capture_start(capture *c, const char *reply)
{
    capture_start_script(c, &reply, 1);
}

static void capture_join(capture *c)
{
    pthread_join(c->th, NULL);
    close(c->lfd);
}

/* Value of header `name` in the captured request (first occurrence), into out. */
static int header_value(const capture *c, const char *name, char *out, size_t cap)
{
    char pat[96];
    snprintf(pat, sizeof pat, "\r\n%s:", name);
    const char *h = strcasestr(c->req, pat);
    if (!h) return 0;
    h += strlen(pat);
    while (*h == ' ') h++;
    const char *e = strstr(h, "\r\n");
    size_t n = e ? (size_t)(e - h) : strlen(h);
    if (n >= cap) n = cap - 1;
    memcpy(out, h, n);
    out[n] = 0;
    return 1;
}

/* The example store: virtual-hosted on s3.amazonaws.com, redirected to the capture server. */
static od_store *example_store_retries(const capture *c, int retries)
{
    od_store *s = NULL;
    od_err e = {0};
    char uri[512];
    snprintf(uri, sizeof uri,
             "s3://examplebucket?region=us-east-1&endpoint=http://s3.amazonaws.com&path_style=0"
             "&probe=0&retries=%d&access_key=" EX_ACCESS "&secret_key=" EX_SECRET, retries);
    int rc = od_store_open(uri, &s, &e);
    if (rc) fail_msg("open: %s", e.msg);
    char connect_to[128];
    snprintf(connect_to, sizeof connect_to, "examplebucket.s3.amazonaws.com:80:127.0.0.1:%d", c->port);
    od_s3_test_hooks h = {.amz_date = EX_DATE, .connect_to = connect_to};
    assert_int_equal(od_s3_test_set_hooks(s, &h, &e), OD_OK);
    return s;
}

static od_store *example_store(const capture *c)
{
    return example_store_retries(c, 0);
}

static void test_get_object_example(void **state)
{
    (void)state;
    capture c;
    capture_start(&c, "HTTP/1.1 206 Partial Content\r\nContent-Length: 10\r\nContent-Range: bytes 0-9/100\r\n"
                      "ETag: \"abc\"\r\nConnection: close\r\n\r\n0123456789");
    od_store *s = example_store(&c);
    od_buf b = {0};
    od_err e = {0};
    int rc = od_store_get_range(s, "test.txt", 0, 10, &b, &e);
    capture_join(&c);
    if (rc) fail_msg("get_range: %s", e.msg);
    assert_int_equal(b.len, 10);
    assert_memory_equal(b.data, "0123456789", 10);
    assert_true(strncmp(c.req, "GET /test.txt HTTP/1.1\r\n", 24) == 0);
    char v[512];
    assert_true(header_value(&c, "Host", v, sizeof v));
    assert_string_equal(v, "examplebucket.s3.amazonaws.com");
    assert_true(header_value(&c, "Range", v, sizeof v));
    assert_string_equal(v, "bytes=0-9");
    assert_true(header_value(&c, "x-amz-content-sha256", v, sizeof v));
    assert_string_equal(v, EMPTY_SHA);
    assert_true(header_value(&c, "Authorization", v, sizeof v));
    /* curl writes ", " between the parts; AWS's example writes ","; both are valid */
    assert_string_equal(v, "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
                           "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
                           "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
    /* the secret itself never goes on the wire */
    assert_null(strstr(c.req, EX_SECRET));
    od_buf_free(&b);
    od_store_close(s);
}

static void test_get_bucket_example(void **state)
{
    (void)state;
    capture c;
    capture_start(&c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    od_store *s = example_store(&c);
    od_err e = {0};
    long status = 0;
    /* deliberately unsorted: the signature only matches when we sort before curl signs */
    od_s3_param params[] = {{"prefix", "J"}, {"max-keys", "2"}};
    int rc = od_s3_test_bucket_get(s, params, 2, &status, NULL, &e);
    capture_join(&c);
    if (rc) fail_msg("bucket get: %s", e.msg);
    assert_int_equal(status, 200);
    assert_true(strncmp(c.req, "GET /?max-keys=2&prefix=J HTTP/1.1\r\n", 36) == 0);
    char v[512];
    assert_true(header_value(&c, "Authorization", v, sizeof v));
    assert_string_equal(v, "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
                           "SignedHeaders=host;x-amz-content-sha256;x-amz-date, "
                           "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
    od_store_close(s);
}

/* The shape of a conditional PUT: payload hash of the body, If-None-Match signed and sent. */
static void test_put_shape(void **state)
{
    (void)state;
    capture c;
    capture_start(&c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nETag: \"0123abcd\"\r\nConnection: close\r\n\r\n");
    od_store *s = example_store(&c);
    od_err e = {0};
    od_obj_meta m = {0};
    static const char body[] = "Welcome to Amazon S3.";
    int rc = od_store_put(s, "dir/test$file.text", body, sizeof body - 1, OD_PUT_IF_ABSENT, NULL, &m, &e);
    capture_join(&c);
    if (rc) fail_msg("put: %s", e.msg);
    assert_string_equal(m.etag, "0123abcd"); /* quotes stripped */
    assert_true(strncmp(c.req, "PUT /dir/test%24file.text HTTP/1.1\r\n", 36) == 0);
    char v[512], sha[65];
    od_s3_sha256_hex(body, sizeof body - 1, sha);
    assert_true(header_value(&c, "x-amz-content-sha256", v, sizeof v));
    assert_string_equal(v, sha);
    assert_string_equal(sha, "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
    assert_true(header_value(&c, "If-None-Match", v, sizeof v));
    assert_string_equal(v, "*");
    assert_true(header_value(&c, "Content-Length", v, sizeof v));
    assert_string_equal(v, "21");
    assert_true(header_value(&c, "Authorization", v, sizeof v));
    assert_non_null(strstr(v, "SignedHeaders=host;if-none-match;x-amz-content-sha256;x-amz-date,"));
    assert_non_null(strstr(c.req, "\r\n\r\nWelcome to Amazon S3."));
    od_store_close(s);
}

/* A session token is sent as x-amz-security-token and signed; it never shows in describe. */
static void test_session_token_shape(void **state)
{
    (void)state;
    capture c;
    capture_start(&c, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    od_store *s = NULL;
    od_err e = {0};
    int rc = od_store_open("s3://examplebucket/p?region=us-east-1&endpoint=http://s3.amazonaws.com&path_style=0"
                           "&probe=0&retries=0&access_key=" EX_ACCESS "&secret_key=" EX_SECRET
                           "&session_token=TOKEN%2Fwith%2Bchars",
                           &s, &e);
    if (rc) fail_msg("open: %s", e.msg);
    char connect_to[128];
    snprintf(connect_to, sizeof connect_to, "examplebucket.s3.amazonaws.com:80:127.0.0.1:%d", c.port);
    od_s3_test_hooks h = {.connect_to = connect_to};
    assert_int_equal(od_s3_test_set_hooks(s, &h, &e), OD_OK);
    assert_null(strstr(od_store_describe(s), "TOKEN"));
    assert_null(strstr(od_store_describe(s), EX_SECRET));
    assert_int_equal(od_store_head(s, "k", NULL, &e), OD_NOTFOUND);
    capture_join(&c);
    assert_true(strncmp(c.req, "HEAD /p/k HTTP/1.1\r\n", 20) == 0);
    char v[512];
    assert_true(header_value(&c, "x-amz-security-token", v, sizeof v));
    assert_string_equal(v, "TOKEN/with+chars");
    assert_true(header_value(&c, "Authorization", v, sizeof v));
    assert_non_null(strstr(v, "SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token,"));
    assert_null(strstr(e.msg, "TOKEN"));
    od_store_close(s);
}

/* ------------------------------------------------------------------ answers → od codes */

#define ERRXML(status, code) \
    "HTTP/1.1 " status "\r\nContent-Type: application/xml\r\nConnection: close\r\nContent-Length: " \
    "%zu\r\n\r\n<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>" code "</Code>" \
    "<Message>the &lt;message&gt;</Message></Error>"

typedef enum { OP_GET, OP_RANGE, OP_HEAD, OP_PUT, OP_PUT_ABSENT, OP_PUT_MATCH, OP_DELETE, OP_LIST } map_op;

/* Replies may contain one %zu for their body length (filled in here). */
static void fmt_reply(char *out, size_t cap, const char *tmpl)
{
    const char *body = strstr(tmpl, "\r\n\r\n");
    size_t blen = body ? strlen(body + 4) : 0;
    snprintf(out, cap, tmpl, blen);
}

static int no_cb(void *ctx, const char *k, const od_obj_meta *m)
{
    (void)ctx;
    (void)k;
    (void)m;
    return 0;
}

static int run_map(const char *const *tmpl, int n, map_op op, int retries, od_buf *got, od_err *e, capture *c)
{
    char replies[MAX_REPLIES][1024];
    const char *rp[MAX_REPLIES];
    for (int i = 0; i < n; i++) {
        fmt_reply(replies[i], sizeof replies[i], tmpl[i]);
        rp[i] = replies[i];
    }
    capture_start_script(c, rp, n);
    od_store *s = example_store_retries(c, retries);
    int rc = OD_OK;
    static const char body[] = "0123456789";
    switch (op) {
    case OP_GET: rc = od_store_get(s, "k", got, NULL, e); break;
    case OP_RANGE: rc = od_store_get_range(s, "k", 2, 3, got, e); break;
    case OP_HEAD: rc = od_store_head(s, "k", NULL, e); break;
    case OP_PUT: rc = od_store_put(s, "k", body, 10, OD_PUT_ALWAYS, NULL, NULL, e); break;
    case OP_PUT_ABSENT: rc = od_store_put(s, "k", body, 10, OD_PUT_IF_ABSENT, NULL, NULL, e); break;
    case OP_PUT_MATCH: rc = od_store_put(s, "k", body, 10, OD_PUT_IF_MATCH, "e1", NULL, e); break;
    case OP_DELETE: rc = od_store_delete(s, "k", e); break;
    case OP_LIST: rc = od_store_list(s, "", NULL, no_cb, NULL, e); break;
    }
    od_store_close(s);
    capture_join(c);
    assert_int_equal(c->nreq, n); /* every scripted answer was asked for, no more (accept blocks) */
    return rc;
}

static void expect_map(const char *tmpl, map_op op, int code, const char *in_msg)
{
    capture c;
    od_buf b = {0};
    od_err e = {0};
    int rc = run_map(&tmpl, 1, op, 0, &b, &e, &c);
    if (rc != code) fail_msg("answer %.40s: got %s (%s), expected %s", tmpl, od_code_name(rc), e.msg, od_code_name(code));
    if (in_msg && !strstr(e.msg, in_msg)) fail_msg("message \"%s\" lacks \"%s\"", e.msg, in_msg);
    od_buf_free(&b);
}

static void test_status_mapping(void **state)
{
    (void)state;
    expect_map(ERRXML("404 Not Found", "NoSuchKey"), OP_GET, OD_NOTFOUND, "NoSuchKey: the <message>");
    expect_map(ERRXML("404 Not Found", "NoSuchBucket"), OP_GET, OD_PERMANENT, "bucket does not exist");
    expect_map(ERRXML("403 Forbidden", "SignatureDoesNotMatch"), OP_GET, OD_AUTH, "SignatureDoesNotMatch");
    expect_map(ERRXML("403 Forbidden", "InvalidAccessKeyId"), OP_PUT, OD_AUTH, "InvalidAccessKeyId");
    expect_map(ERRXML("403 Forbidden", "RequestTimeTooSkewed"), OP_GET, OD_AUTH, "clock");
    expect_map(ERRXML("400 Bad Request", "XAmzContentSHA256Mismatch"), OP_PUT, OD_CORRUPT, "payload hash");
    expect_map(ERRXML("400 Bad Request", "InvalidArgument"), OP_PUT, OD_BADREQ, "InvalidArgument");
    expect_map(ERRXML("400 Bad Request", "RequestTimeout"), OP_PUT, OD_TRANSIENT, "RequestTimeout");
    expect_map(ERRXML("503 Slow Down", "SlowDown"), OP_GET, OD_TRANSIENT, "SlowDown");
    expect_map(ERRXML("429 Too Many Requests", "TooManyRequests"), OP_GET, OD_TRANSIENT, "429");
    expect_map(ERRXML("500 Internal Server Error", "InternalError"), OP_PUT_ABSENT, OD_TRANSIENT, "lost race");
    expect_map(ERRXML("412 Precondition Failed", "PreconditionFailed"), OP_PUT_ABSENT, OD_EXISTS, "412");
    expect_map(ERRXML("409 Conflict", "ConditionalRequestConflict"), OP_PUT_ABSENT, OD_TRANSIENT, "409");
    expect_map(ERRXML("301 Moved Permanently", "PermanentRedirect"), OP_GET, OD_PERMANENT, "region");
    expect_map(ERRXML("416 Requested Range Not Satisfiable", "InvalidRange"), OP_RANGE, OD_BADREQ, "beyond");
    expect_map(ERRXML("404 Not Found", "NoSuchKey"), OP_DELETE, OD_OK, NULL); /* delete of a missing key */
    expect_map("HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", OP_HEAD, OD_NOTFOUND,
               "404");
    expect_map("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %zu\r\n\r\n"
               "<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>",
               OP_LIST, OD_CORRUPT, "NextContinuationToken");
}

static void test_answer_quirks(void **state)
{
    (void)state;
    capture c;
    od_buf b = {0};
    od_err e = {0};
    /* a store that ignores Range: the window is cut out of the whole object */
    const char *full = "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %zu\r\n\r\nabcdefghij";
    assert_int_equal(run_map(&full, 1, OP_RANGE, 0, &b, &e, &c), OD_OK);
    assert_int_equal(b.len, 3);
    assert_memory_equal(b.data, "cde", 3);
    assert_non_null(strstr(c.req, "\r\nRange: bytes=2-4\r\n"));

    /* If-Match answered 412 on a missing key (radosgw): a HEAD says 404 -> not found */
    const char *missing[] = {ERRXML("412 Precondition Failed", "PreconditionFailed"),
                             "HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"};
    assert_int_equal(run_map(missing, 2, OP_PUT_MATCH, 0, &b, &e, &c), OD_NOTFOUND);
    assert_string_equal(c.lines[1], "HEAD /k HTTP/1.1");
    assert_non_null(strstr(c.req, "\r\nIf-Match: e1\r\n")); /* sent unquoted */

    /* 412 and the ETag changed: precondition failed, naming both */
    const char *changed[] = {ERRXML("412 Precondition Failed", "PreconditionFailed"),
                             "HTTP/1.1 200 OK\r\nETag: \"e2\"\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"};
    assert_int_equal(run_map(changed, 2, OP_PUT_MATCH, 0, &b, &e, &c), OD_PRECONDITION);
    assert_non_null(strstr(e.msg, "e2"));

    /* 412 although the ETag is ours: the store wants the other quoting; retried once, quoted */
    const char *quoting[] = {ERRXML("412 Precondition Failed", "PreconditionFailed"),
                             "HTTP/1.1 200 OK\r\nETag: \"e1\"\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                             "HTTP/1.1 200 OK\r\nETag: \"e3\"\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"};
    assert_int_equal(run_map(quoting, 3, OP_PUT_MATCH, 0, &b, &e, &c), OD_OK);
    assert_string_equal(c.lines[0], "PUT /k HTTP/1.1");
    assert_string_equal(c.lines[1], "HEAD /k HTTP/1.1");
    assert_string_equal(c.lines[2], "PUT /k HTTP/1.1");

    /* 500 on a conditional create, then (retry) 412: the generic layer reads the object back and
     * finds our bytes, so the first attempt had landed -> success, never assumed */
    const char *landed[] = {ERRXML("500 Internal Server Error", "InternalError"),
                            ERRXML("412 Precondition Failed", "PreconditionFailed"),
                            "HTTP/1.1 200 OK\r\nETag: \"e1\"\r\nConnection: close\r\nContent-Length: %zu\r\n\r\n"
                            "0123456789"};
    int rc = run_map(landed, 3, OP_PUT_ABSENT, 1, &b, &e, &c);
    if (rc) fail_msg("landed create: %s", e.msg);
    assert_string_equal(c.lines[2], "GET /k HTTP/1.1");
    /* the same, but the object holds someone else's bytes: we lost */
    const char *lost[] = {ERRXML("500 Internal Server Error", "InternalError"),
                          ERRXML("412 Precondition Failed", "PreconditionFailed"),
                          "HTTP/1.1 200 OK\r\nETag: \"e9\"\r\nConnection: close\r\nContent-Length: %zu\r\n\r\n"
                          "not ours!!"};
    assert_int_equal(run_map(lost, 3, OP_PUT_ABSENT, 1, &b, &e, &c), OD_EXISTS);
    od_buf_free(&b);
}

/* The open-time probe against scripted stores: what it concludes, and how many requests. */
static int probe_with(const char *const *tmpl, int n, int *caps_cas, od_err *e)
{
    char replies[MAX_REPLIES][1024];
    const char *rp[MAX_REPLIES];
    for (int i = 0; i < n; i++) {
        fmt_reply(replies[i], sizeof replies[i], tmpl[i]);
        rp[i] = replies[i];
    }
    capture c;
    capture_start_script(&c, rp, n);
    char uri[256];
    snprintf(uri, sizeof uri, "s3://b/p?endpoint=http://127.0.0.1:%d&access_key=a&secret_key=s", c.port);
    od_store *s = NULL;
    int rc = od_store_open(uri, &s, e);
    if (rc == OD_OK) {
        od_store_caps caps;
        od_store_get_caps(s, &caps);
        *caps_cas = caps.conditional_writes;
        od_store_close(s);
    }
    capture_join(&c);
    assert_int_equal(c.nreq, n);
    assert_non_null(strstr(c.req, "PUT /b/p/.od-probe-"));
    assert_non_null(strstr(c.req, "\r\nIf-None-Match: *\r\n"));
    return rc;
}

#define R200 "HTTP/1.1 200 OK\r\nETag: \"e\"\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
#define R204 "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"
#define R412 ERRXML("412 Precondition Failed", "PreconditionFailed")

static void test_probe_outcomes(void **state)
{
    (void)state;
    od_err e = {0};
    int cas = -1;
    const char *honours[] = {R200, R412, R412, R204}; /* create, create again, wrong If-Match, delete */
    assert_int_equal(probe_with(honours, 4, &cas, &e), OD_OK);
    assert_int_equal(cas, 1);
    cas = -1;
    const char *ignores[] = {R200, R200, R204}; /* s3rver: the second create overwrites */
    assert_int_equal(probe_with(ignores, 3, &cas, &e), OD_OK);
    assert_int_equal(cas, 0);
    cas = -1;
    const char *half[] = {R200, R412, R200, R204}; /* If-None-Match honoured, If-Match ignored */
    assert_int_equal(probe_with(half, 4, &cas, &e), OD_OK);
    assert_int_equal(cas, 0);
    const char *denied[] = {ERRXML("403 Forbidden", "SignatureDoesNotMatch"),
                            ERRXML("403 Forbidden", "SignatureDoesNotMatch")}; /* PUT, cleanup DELETE */
    assert_int_equal(probe_with(denied, 2, &cas, &e), OD_AUTH);
    assert_non_null(strstr(e.msg, "probe"));
    assert_non_null(strstr(e.msg, "SignatureDoesNotMatch"));
}

/* ------------------------------------------------------------------ pure helpers */

static void check_query(const od_s3_param *p, size_t n, const char *want)
{
    od_buf b = {0};
    assert_int_equal(od_s3_canonical_query(p, n, &b), OD_OK);
    assert_string_equal((const char *)b.data, want);
    od_buf_free(&b);
}

static void test_canonical_query(void **state)
{
    (void)state;
    check_query(NULL, 0, "");
    check_query((od_s3_param[]){{"prefix", "J"}, {"max-keys", "2"}}, 2, "max-keys=2&prefix=J");
    /* what a ListObjectsV2 continuation page sends: sorted by name, values encoded */
    check_query((od_s3_param[]){{"list-type", "2"},
                                {"max-keys", "3"},
                                {"prefix", "run 1/a+b"},
                                {"continuation-token", "1ZsP/w+=="}},
                4, "continuation-token=1ZsP%2Fw%2B%3D%3D&list-type=2&max-keys=3&prefix=run%201%2Fa%2Bb");
    check_query((od_s3_param[]){{"start-after", "k/\xc3\xa9~x"}, {"prefix", ""}}, 2,
                "prefix=&start-after=k%2F%C3%A9~x");
    /* same name twice: ordered by value */
    check_query((od_s3_param[]){{"a", "z"}, {"a", "b"}, {"A", "c"}}, 3, "A=c&a=b&a=z");
}

static void test_uri_encode(void **state)
{
    (void)state;
    od_buf b = {0};
    const char *in = "a-b_c.d~e !'()*/+=&?#%\xc3\xa9";
    assert_int_equal(od_s3_uri_encode(&b, in, strlen(in), 0), OD_OK);
    assert_int_equal(od_buf_cstr(&b), OD_OK);
    assert_string_equal((char *)b.data, "a-b_c.d~e%20%21%27%28%29%2A%2F%2B%3D%26%3F%23%25%C3%A9");
    od_buf_reset(&b);
    assert_int_equal(od_s3_uri_encode(&b, "dir/sub dir/f", 13, 1), OD_OK);
    assert_int_equal(od_buf_cstr(&b), OD_OK);
    assert_string_equal((char *)b.data, "dir/sub%20dir/f");
    od_buf_free(&b);
}

static void test_xml_and_dates(void **state)
{
    (void)state;
    const char *doc = "<?xml version=\"1.0\"?><ListBucketResult><KeyCount>1</KeyCount><Contents>"
                      "<Key>a&amp;b&lt;c&gt;&quot;d&apos;&#233;&#x41;</Key><Size>12</Size>"
                      "<ETag>&quot;e1&quot;</ETag><LastModified>2026-11-25T12:00:01.250Z</LastModified>"
                      "</Contents><Empty/></ListBucketResult>";
    const char *end = doc + strlen(doc), *ce;
    const char *k = od_s3_xml_find(doc, end, "Key", &ce); /* not KeyCount */
    assert_non_null(k);
    od_buf b = {0};
    assert_int_equal(od_s3_xml_unescape(&b, k, ce), OD_OK);
    assert_int_equal(od_buf_cstr(&b), OD_OK);
    assert_string_equal((char *)b.data, "a&b<c>\"d'\xc3\xa9" "A");
    const char *em = od_s3_xml_find(doc, end, "Empty", &ce);
    assert_non_null(em);
    assert_true(em == ce);
    assert_null(od_s3_xml_find(doc, end, "Missing", &ce));
    od_buf_reset(&b);
    assert_int_equal(od_s3_xml_unescape(&b, "a&bogus;", (const char *)"a&bogus;" + 8), OD_CORRUPT);
    od_buf_free(&b);

    assert_int_equal(od_s3_parse_iso8601_ms("2026-11-25T12:00:01.250Z", 24), 1795608001250LL);
    assert_int_equal(od_s3_parse_iso8601_ms("1970-01-01T00:00:00Z", 20), 0);
    assert_int_equal(od_s3_parse_iso8601_ms("2026-11-25 12:00:01Z", 20), -1);

    char et[OD_ETAG_MAX];
    od_s3_etag_strip("\"abc\"", 5, et);
    assert_string_equal(et, "abc");
    od_s3_etag_strip(" W/\"abc-2\" ", 11, et);
    assert_string_equal(et, "abc-2");
    od_s3_etag_strip("plain", 5, et);
    assert_string_equal(et, "plain");

    char *d = od_s3_pct_decode("a%2Fb+c%3d", 10);
    assert_non_null(d);
    assert_string_equal(d, "a/b+c=");
    free(d);
    assert_null(od_s3_pct_decode("bad%2", 5));
    assert_null(od_s3_pct_decode("bad%zz", 6));

    char hex[65];
    od_s3_sha256_hex("", 0, hex);
    assert_string_equal(hex, EMPTY_SHA);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_object_example),
        cmocka_unit_test(test_get_bucket_example),
        cmocka_unit_test(test_put_shape),
        cmocka_unit_test(test_session_token_shape),
        cmocka_unit_test(test_status_mapping),
        cmocka_unit_test(test_answer_quirks),
        cmocka_unit_test(test_probe_outcomes),
        cmocka_unit_test(test_canonical_query),
        cmocka_unit_test(test_uri_encode),
        cmocka_unit_test(test_xml_and_dates),
    };
    return cmocka_run_group_tests_name("s3_sigv4", tests, NULL, NULL);
}
