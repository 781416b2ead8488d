/*
 * od_s3test.h — checks of the s3:// backend shared by the s3rver and radosgw test binaries.
 *
 * The binaries run under scripts/with-s3rver.sh or scripts/with-rgw.sh, which export
 * OD_TEST_S3_URI (a fresh s3:// URI with endpoint, credentials and a unique prefix). Each check
 * derives its own sub-prefix from it (od_s3test_uri), so checks never see each other's objects.
 * The checks use cmocka assertions and are meant to be called from cmocka test functions.
 */
#ifndef OD_S3TEST_H
#define OD_S3TEST_H

#include "od_objstore.h"

/* OD_TEST_S3_URI, or a failed cmocka assertion naming the wrapper script to use. */
const char *od_s3test_base_uri(void);
/* A new URI (malloc'd): the base URI with "/<sub>" appended to its prefix and "&<extra>"
 * appended to its parameters (extra may be NULL). */
char *od_s3test_uri(const char *sub, const char *extra);
/* OD_TEST_SCALE (default 1). od_s3test_n(n) = max(1, n * scale). */
double od_s3test_scale(void);
int od_s3test_n(int n);
/* Open or fail the test with the error message. */
od_store *od_s3test_open(const char *uri);

/* Shared checks (each opens its own stores under `sub`). */
void od_s3test_roundtrip(const char *sub);         /* odd keys, ETags, HEAD, DELETE, 0-byte, 3 MiB */
void od_s3test_ranges(const char *sub);            /* ranged GETs: inside, clipped, past the end */
void od_s3test_list_pages(const char *sub);        /* ListObjectsV2 over several pages, start_after, stop */
void od_s3test_threads(const char *sub);           /* one handle from several threads */
void od_s3test_conn_reuse(const char *sub);        /* sequential requests reuse the connection */
void od_s3test_bad_uris(void);                     /* URI errors, secrets never in messages */
void od_s3test_unreachable(void);                  /* closed port: OD_TRANSIENT quickly, bounded retries */

#endif
