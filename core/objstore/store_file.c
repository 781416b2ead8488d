/*
 * store_file.c — the file:// backend: an object store in a local directory (the embedded default).
 *
 * Owns: the root directory given at open (created if missing), the files below it, and two open
 * directory descriptors per handle (the root, and <root>/.od-locks).
 *
 * Layout. Key "a/b/c" is the regular file <root>/a/b/c. Directories exist only to hold objects:
 * they are created on PUT and removed again (when empty) on DELETE. Names beginning with ".od-"
 * are reserved for the backend and never appear as keys (PUT of such a key is OD_BADREQ; LIST
 * skips them):
 *   <dir>/.od-tmp-<pid>-<seq>-<rand>   a PUT in progress (or left by a crash; harmless, never listed)
 *   <root>/.od-locks/<xx>              256 lock stripes, xx = two hex digits of a hash of the key
 *
 * Never outside the root. The generic layer rejects "..", ".", absolute and control-byte keys; on
 * top of that every path is resolved from the root descriptor one segment at a time with
 * openat(O_NOFOLLOW|O_DIRECTORY), and the object itself is opened with O_NOFOLLOW, so a symbolic
 * link planted inside the store cannot redirect a read or a write elsewhere (OD_BADREQ).
 *
 * Atomicity. An object file is never modified in place: every PUT writes a temp file in the
 * target's directory, fsyncs it, then publishes it in one step, and fsyncs the directory.
 *   put_always    rename(2) over the target: readers see the old or the new file, never a mix.
 *   put_if_absent link(2) of the temp file to the target; EEXIST means another creator won. link is
 *                 atomic in the kernel, so exactly one of any number of processes succeeds.
 *   put_if_match  under an exclusive flock(2) on the key's lock stripe: hash the current file,
 *                 compare with the caller's ETag, rename. put_always and delete take the same lock,
 *                 so no replace or delete can slip between the comparison and the rename — in this
 *                 process or any other that opens the same directory. (put_if_absent needs no lock:
 *                 it can only succeed while the key is missing, when put_if_match cannot.)
 * flock locks belong to an open file description, so two threads of one process exclude each
 * other as well as two processes do (each op opens the stripe file itself).
 *
 * ETag: the first 32 hex digits of the SHA-256 of the content (identical bytes, identical ETag).
 * Hashing costs ~5 ms per MiB, so it is done at most once per object version: on PUT when the
 * caller asks for meta_out, otherwise on the first read that needs it, and then kept in the
 * file's extended attribute "user.od.etag" together with the size and mtime it belongs to (a
 * mismatch, e.g. after someone edited the file in place, means "hash again"). Without xattr
 * support every such read hashes. list does not open the objects and leaves meta.etag empty.
 *
 * Thread safety: the handle holds only immutable state (root path, two descriptors) and an atomic
 * counter for temp names; every op uses its own descriptors, so any number of threads may share
 * a handle. Separate processes may open the same directory at the same time.
 */
#include "od_objstore_impl.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/sha256.h>
#include <mbedtls/version.h>

#if MBEDTLS_VERSION_MAJOR >= 3
#define SHA256_STARTS mbedtls_sha256_starts
#define SHA256_UPDATE mbedtls_sha256_update
#define SHA256_FINISH mbedtls_sha256_finish
#else
#define SHA256_STARTS mbedtls_sha256_starts_ret
#define SHA256_UPDATE mbedtls_sha256_update_ret
#define SHA256_FINISH mbedtls_sha256_finish_ret
#endif

#define RESERVED_PREFIX "od-" /* after the leading '.' */
#define TMP_PREFIX ".od-tmp-"
#define LOCK_DIR ".od-locks"
#define LOCK_STRIPES 256
#define ETAG_HEX 32
#define ETAG_XATTR "user.od.etag"
#define WALK_RETRIES 16 /* a concurrent delete may remove a directory we are about to use */
#define LIST_PAGE 1000

typedef struct file_store {
    od_store base;
    char *root;   /* absolute path, for messages */
    int rootfd;   /* O_DIRECTORY descriptor of the root */
    int lockfd;   /* O_DIRECTORY descriptor of <root>/.od-locks; -1 when it cannot be made */
    int lock_errno; /* why lockfd is -1 (e.g. EROFS: the store is read-only; reads still work) */
    atomic_uint_fast64_t tmp_seq;
} file_store;

/* Internal code: the directory vanished under us (concurrent delete removed it); walk again. */
enum { RETRY_WALK = -1 };

/* ---------------------------------------------------------------------------------------------
 * Small helpers
 */

static int64_t ts_ms(const struct timespec *ts)
{
    return (int64_t)ts->tv_sec * 1000 + ts->tv_nsec / 1000000;
}

static int is_reserved(const char *seg, size_t len)
{
    return len >= 4 && seg[0] == '.' && memcmp(seg + 1, RESERVED_PREFIX, 3) == 0;
}

/* OD_BADREQ for a key with a segment that names a backend file (".od-*"). */
static int check_key(const char *key, od_err *err)
{
    int rc = od_key_validate(key, err); /* already done by the generic layer; kept as a guard */
    if (rc) return rc;
    const char *seg = key;
    for (const char *p = key;; p++) {
        if (*p == '/' || *p == 0) {
            if ((size_t)(p - seg) > NAME_MAX)
                return od_err_set(err, OD_BADREQ,
                                  "objstore: object key \"%.200s\" has a segment longer than %d bytes, the file "
                                  "system's limit for a name", key, NAME_MAX);
            if (is_reserved(seg, (size_t)(p - seg)))
                return od_err_set(err, OD_BADREQ,
                                  "objstore: object key \"%.200s\" uses a name reserved by the file "
                                  "backend (a segment starting with \".od-\")", key);
            if (!*p) break;
            seg = p + 1;
        }
    }
    return OD_OK;
}

typedef struct etag_hasher {
    mbedtls_sha256_context c;
} etag_hasher;

static void hasher_init(etag_hasher *h)
{
    mbedtls_sha256_init(&h->c);
    SHA256_STARTS(&h->c, 0);
}

static void hasher_update(etag_hasher *h, const void *p, size_t n)
{
    SHA256_UPDATE(&h->c, p, n);
}

static void hasher_final(etag_hasher *h, char etag[OD_ETAG_MAX])
{
    unsigned char d[32];
    SHA256_FINISH(&h->c, d);
    mbedtls_sha256_free(&h->c);
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < ETAG_HEX / 2; i++) {
        etag[2 * i] = hex[d[i] >> 4];
        etag[2 * i + 1] = hex[d[i] & 15];
    }
    etag[ETAG_HEX] = 0;
}

static void etag_of(const void *data, size_t len, char etag[OD_ETAG_MAX])
{
    etag_hasher h;
    hasher_init(&h);
    hasher_update(&h, data, len);
    hasher_final(&h, etag);
}

/* ---------------------------------------------------------------------------------------------
 * Resolving paths below the root without following links
 */

/* Open the directory path[0..len) (segments separated by '/', relative to the root) and return
 * its descriptor in *dfd. With `create`, missing directories are made (and their parents fsynced
 * so the new entries are durable). Errors: OD_NOTFOUND (a segment is missing or is an object,
 * without create), OD_BADREQ (a segment is a symbolic link, or an object is in the way of a
 * create), OD_IO. `key` is only used in messages. */
static int open_dir(file_store *fs, const char *key, const char *path, size_t len, int create, int *dfd,
                    od_err *err)
{
    int restarts = 0;
restart:;
    int cur = fcntl(fs->rootfd, F_DUPFD_CLOEXEC, 0);
    if (cur < 0)
        return od_err_set(err, OD_IO, "objstore: file://%s: dup of the root descriptor failed: %s", fs->root,
                          strerror(errno));
    size_t i = 0;
    char seg[1025];
    while (i < len) {
        size_t j = i;
        while (j < len && path[j] != '/') j++;
        size_t n = j - i;
        if (n == 0 || n >= sizeof seg) {
            close(cur);
            return od_err_set(err, OD_BADREQ, "objstore: bad path segment in \"%.200s\"", key);
        }
        memcpy(seg, path + i, n);
        seg[n] = 0;
        int next = -1;
        for (int attempt = 0;; attempt++) {
            next = openat(cur, seg, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (next >= 0) break;
            int e = errno;
            if (e == ENOENT && create && attempt < WALK_RETRIES) {
                if (mkdirat(cur, seg, 0755) == 0) {
                    if (fsync(cur) != 0) {
                        e = errno;
                        close(cur);
                        return od_err_set(err, OD_IO, "objstore: file://%s: fsync of a directory for \"%.200s\" failed: %s",
                                          fs->root, key, strerror(e));
                    }
                } else if (errno == ENOENT && restarts < WALK_RETRIES) {
                    /* The directory we are in was removed by a concurrent delete that emptied
                     * it: start again from the root. */
                    close(cur);
                    restarts++;
                    goto restart;
                } else if (errno == ENOENT) {
                    close(cur);
                    return od_err_set(err, OD_TRANSIENT, "objstore: file://%s: the directory of \"%.200s\" keeps "
                                      "disappearing (concurrent deletes)", fs->root, key);
                } else if (errno != EEXIST) {
                    e = errno;
                    close(cur);
                    return od_err_set(err, OD_IO, "objstore: file://%s: cannot create directory \"%.*s\" for \"%.200s\": %s",
                                      fs->root, (int)j, path, key, strerror(e));
                }
                continue; /* open what we (or a racing writer) just made */
            }
            struct stat st;
            int have = fstatat(cur, seg, &st, AT_SYMLINK_NOFOLLOW) == 0;
            close(cur);
            if (have && S_ISLNK(st.st_mode))
                return od_err_set(err, OD_BADREQ,
                                  "objstore: file://%s: \"%.*s\" is a symbolic link; the file backend never "
                                  "follows links (key \"%.200s\")", fs->root, (int)j, path, key);
            if (e == ENOENT && create)
                return od_err_set(err, OD_TRANSIENT, "objstore: file://%s: the directory of \"%.200s\" keeps "
                                  "disappearing (concurrent deletes)", fs->root, key);
            if (e == ENOENT || (e == ENOTDIR && have && !create))
                return od_err_set(err, OD_NOTFOUND, "objstore: \"%.200s\" not found", key);
            if (e == ENOTDIR)
                return od_err_set(err, OD_BADREQ,
                                  "objstore: file://%s: cannot store \"%.200s\": \"%.*s\" is an object, and the "
                                  "file backend cannot hold both a key and keys below it", fs->root, key, (int)j,
                                  path);
            return od_err_set(err, OD_IO, "objstore: file://%s: cannot open directory \"%.*s\" for \"%.200s\": %s",
                              fs->root, (int)j, path, key, strerror(e));
        }
        close(cur);
        cur = next;
        i = j + 1;
    }
    *dfd = cur;
    return OD_OK;
}

/* Open the directory holding `key`; *leaf is the key's last segment. */
static int open_parent(file_store *fs, const char *key, int create, int *dfd, const char **leaf, od_err *err)
{
    const char *slash = strrchr(key, '/');
    *leaf = slash ? slash + 1 : key;
    return open_dir(fs, key, key, slash ? (size_t)(slash - key) : 0, create, dfd, err);
}

/* Open the object file read-only; OD_NOTFOUND when it is missing (or is a directory). */
static int open_object(file_store *fs, const char *key, int *fd, struct stat *st, od_err *err)
{
    int dfd;
    const char *leaf;
    int rc = open_parent(fs, key, 0, &dfd, &leaf, err);
    if (rc) return rc;
    int f = openat(dfd, leaf, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    int e = errno;
    close(dfd);
    if (f < 0) {
        if (e == ENOENT) return od_err_set(err, OD_NOTFOUND, "objstore: \"%.200s\" not found", key);
        if (e == ELOOP)
            return od_err_set(err, OD_BADREQ,
                              "objstore: file://%s: \"%.200s\" is a symbolic link; the file backend never follows links",
                              fs->root, key);
        return od_err_set(err, OD_IO, "objstore: file://%s: cannot open \"%.200s\": %s", fs->root, key, strerror(e));
    }
    if (fstat(f, st) != 0) {
        e = errno;
        close(f);
        return od_err_set(err, OD_IO, "objstore: file://%s: fstat of \"%.200s\" failed: %s", fs->root, key, strerror(e));
    }
    if (S_ISDIR(st->st_mode)) {
        close(f);
        return od_err_set(err, OD_NOTFOUND, "objstore: \"%.200s\" not found", key);
    }
    if (!S_ISREG(st->st_mode)) {
        close(f);
        return od_err_set(err, OD_BADREQ, "objstore: file://%s: \"%.200s\" is not a regular file", fs->root, key);
    }
    *fd = f;
    return OD_OK;
}

/* Read [off, off+len) or up to EOF into out. */
static int read_into(file_store *fs, const char *key, int fd, uint64_t off, uint64_t len, od_buf *out, od_err *err)
{
    if (len > SIZE_MAX / 2)
        return od_err_set(err, OD_NOMEM, "objstore: \"%.200s\" is too large to read into memory", key);
    if (od_buf_reserve(out, (size_t)len) != OD_OK)
        return od_err_set(err, OD_NOMEM, "objstore: out of memory reading \"%.200s\"", key);
    uint64_t done = 0;
    while (done < len) {
        ssize_t r = pread(fd, out->data + out->len, (size_t)(len - done), (off_t)(off + done));
        if (r < 0) {
            if (errno == EINTR) continue;
            return od_err_set(err, OD_IO, "objstore: file://%s: read of \"%.200s\" failed: %s", fs->root, key,
                              strerror(errno));
        }
        if (r == 0) break; /* files are never modified in place, so this is the object's end */
        out->len += (size_t)r;
        done += (uint64_t)r;
    }
    return OD_OK;
}

/* The ETag cache: extended attribute ETAG_XATTR on the object file holds
 * "od1 <etag> <size> <mtime sec>.<mtime nsec, 9 digits>". It is valid only while size and mtime
 * still match the file (an in-place edit by someone else invalidates it); otherwise the ETag is
 * computed by hashing. File systems without user xattrs simply always hash. */
static void xattr_format(const struct stat *st, const char *etag, char *out, size_t n)
{
    snprintf(out, n, "od1 %s %llu %lld.%09ld", etag, (unsigned long long)st->st_size, (long long)st->st_mtim.tv_sec,
             st->st_mtim.tv_nsec);
}

static void cache_etag(int fd, const char *etag)
{
    struct stat st;
    char v[128];
    if (fstat(fd, &st) != 0) return;
    xattr_format(&st, etag, v, sizeof v);
    (void)fsetxattr(fd, ETAG_XATTR, v, strlen(v), 0); /* best effort: ENOTSUP, EPERM, EROFS are fine */
}

static int cached_etag(int fd, const struct stat *st, char etag[OD_ETAG_MAX])
{
    char got[128], want[128];
    ssize_t n = fgetxattr(fd, ETAG_XATTR, got, sizeof got - 1);
    if (n <= 4 + ETAG_HEX) return 0;
    got[n] = 0;
    memcpy(etag, got + 4, ETAG_HEX);
    etag[ETAG_HEX] = 0;
    for (int i = 0; i < ETAG_HEX; i++)
        if (!((etag[i] >= '0' && etag[i] <= '9') || (etag[i] >= 'a' && etag[i] <= 'f'))) return 0;
    xattr_format(st, etag, want, sizeof want);
    return strcmp(got, want) == 0;
}

/* ETag of the open file: from the cache, else by streaming it through SHA-256 (and then caching). */
static int etag_of_fd(file_store *fs, const char *key, int fd, char etag[OD_ETAG_MAX], od_err *err)
{
    struct stat st;
    if (fstat(fd, &st) == 0 && cached_etag(fd, &st, etag)) return OD_OK;
    etag_hasher h;
    hasher_init(&h);
    unsigned char buf[65536];
    off_t off = 0;
    for (;;) {
        ssize_t r = pread(fd, buf, sizeof buf, off);
        if (r < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            mbedtls_sha256_free(&h.c);
            return od_err_set(err, OD_IO, "objstore: file://%s: read of \"%.200s\" failed: %s", fs->root, key,
                              strerror(e));
        }
        if (r == 0) break;
        hasher_update(&h, buf, (size_t)r);
        off += r;
    }
    hasher_final(&h, etag);
    cache_etag(fd, etag);
    return OD_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Locks: 256 stripes, flock(2) on <root>/.od-locks/<xx>
 */

static int lock_key(file_store *fs, const char *key, int *lfd, od_err *err)
{
    uint64_t h = 14695981039346656037ULL; /* FNV-1a 64 (docs/formats.md) */
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) h = (h ^ *p) * 1099511628211ULL;
    char name[8];
    snprintf(name, sizeof name, "%02x", (unsigned)(h % LOCK_STRIPES));
    if (fs->lockfd < 0)
        return od_err_set(err, OD_IO, "objstore: file://%s: cannot write \"%.200s\": the lock directory %s could not "
                          "be created at open: %s", fs->root, key, LOCK_DIR, strerror(fs->lock_errno));
    int fd = openat(fs->lockfd, name, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0)
        return od_err_set(err, OD_IO, "objstore: file://%s: cannot open lock file %s/%s for \"%.200s\": %s", fs->root,
                          LOCK_DIR, name, key, strerror(errno));
    while (flock(fd, LOCK_EX) != 0) {
        if (errno == EINTR) continue;
        int e = errno;
        close(fd);
        return od_err_set(err, OD_IO, "objstore: file://%s: flock of %s/%s for \"%.200s\" failed: %s", fs->root,
                          LOCK_DIR, name, key, strerror(e));
    }
    *lfd = fd;
    return OD_OK;
}

static void unlock_key(int lfd)
{
    close(lfd); /* releases the flock */
}

/* ---------------------------------------------------------------------------------------------
 * Operations
 */

static int file_get(od_store *s, const char *key, od_buf *out, od_obj_meta *meta, od_err *err)
{
    file_store *fs = (file_store *)s;
    int rc = check_key(key, err);
    if (rc) return rc;
    int fd;
    struct stat st;
    rc = open_object(fs, key, &fd, &st, err);
    if (rc) return rc;
    rc = read_into(fs, key, fd, 0, (uint64_t)st.st_size, out, err);
    if (rc == OD_OK && meta) {
        meta->size = out->len;
        meta->mtime_ms = ts_ms(&st.st_mtim);
        if (!(out->len == (uint64_t)st.st_size && cached_etag(fd, &st, meta->etag))) {
            etag_of(out->data, out->len, meta->etag);
            if (out->len == (uint64_t)st.st_size) cache_etag(fd, meta->etag);
        }
    }
    close(fd);
    return rc;
}

static int file_get_range(od_store *s, const char *key, uint64_t off, uint64_t len, od_buf *out, od_err *err)
{
    file_store *fs = (file_store *)s;
    int rc = check_key(key, err);
    if (rc) return rc;
    int fd;
    struct stat st;
    rc = open_object(fs, key, &fd, &st, err);
    if (rc) return rc;
    uint64_t size = (uint64_t)st.st_size;
    if (off >= size) {
        close(fd);
        return od_err_set(err, OD_BADREQ, "objstore: range offset %llu beyond the end of \"%.200s\" (%llu bytes)",
                          (unsigned long long)off, key, (unsigned long long)size);
    }
    uint64_t n = size - off;
    if (len < n) n = len;
    rc = read_into(fs, key, fd, off, n, out, err);
    close(fd);
    return rc;
}

static int file_head(od_store *s, const char *key, od_obj_meta *meta, od_err *err)
{
    file_store *fs = (file_store *)s;
    int rc = check_key(key, err);
    if (rc) return rc;
    int fd;
    struct stat st;
    rc = open_object(fs, key, &fd, &st, err);
    if (rc) return rc;
    if (meta) {
        meta->size = (uint64_t)st.st_size;
        meta->mtime_ms = ts_ms(&st.st_mtim);
        rc = etag_of_fd(fs, key, fd, meta->etag, err);
    }
    close(fd);
    return rc;
}

/* Create, fill and fsync a temp file in dfd; its name goes to tmp. RETRY_WALK when the directory
 * was removed by a concurrent delete. */
static int write_temp(file_store *fs, int dfd, const char *key, const void *data, size_t len, const char *etag,
                      char *tmp, size_t tmpsz, od_err *err)
{
    int fd = -1;
    for (int attempt = 0; fd < 0; attempt++) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t seq = atomic_fetch_add(&fs->tmp_seq, 1);
        uint64_t noise = ((uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ULL) ^ (uint64_t)(uintptr_t)fs ^ (uint64_t)ts.tv_sec;
        snprintf(tmp, tmpsz, TMP_PREFIX "%ld-%llu-%08llx", (long)getpid(), (unsigned long long)seq,
                 (unsigned long long)(noise & 0xffffffffULL));
        fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd >= 0) break;
        if (errno == ENOENT) return RETRY_WALK;
        if (errno == EEXIST && attempt < 8) continue;
        return od_err_set(err, OD_IO, "objstore: file://%s: cannot create a temp file for \"%.200s\": %s", fs->root,
                          key, strerror(errno));
    }
    const uint8_t *p = data;
    size_t left = len;
    const char *what = "write";
    int e = 0;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR) continue;
            e = errno;
            break;
        }
        p += w;
        left -= (size_t)w;
    }
    if (!e && etag) cache_etag(fd, etag);
    if (!e && fsync(fd) != 0) { e = errno; what = "fsync"; }
    if (close(fd) != 0 && !e) { e = errno; what = "close"; }
    if (e) {
        unlinkat(dfd, tmp, 0);
        return od_err_set(err, OD_IO, "objstore: file://%s: %s of the temp file for \"%.200s\" failed: %s", fs->root,
                          what, key, strerror(e));
    }
    return OD_OK;
}

/* Read the current ETag of dfd/leaf (caller holds the key's lock). */
static int current_etag(file_store *fs, const char *key, int dfd, const char *leaf, char etag[OD_ETAG_MAX],
                        od_err *err)
{
    int fd = openat(dfd, leaf, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return od_err_set(err, OD_NOTFOUND, "objstore: conditional replace of missing \"%.200s\"", key);
        return od_err_set(err, OD_IO, "objstore: file://%s: cannot open \"%.200s\": %s", fs->root, key, strerror(errno));
    }
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        close(fd);
        return od_err_set(err, OD_NOTFOUND, "objstore: conditional replace of missing \"%.200s\"", key);
    }
    int rc = etag_of_fd(fs, key, fd, etag, err);
    close(fd);
    return rc;
}

/* Fast path for conditional PUTs that are going to lose: answer before writing and fsyncing a
 * temp file. Only a shortcut; the decision that counts is made again at publish time. */
static int precheck(file_store *fs, const char *key, od_put_mode mode, const char *etag, od_err *err)
{
    int dfd;
    const char *leaf;
    if (open_parent(fs, key, 0, &dfd, &leaf, NULL) != OD_OK) {
        /* missing directory: the key is missing (other errors are reported by the real path) */
        return OD_OK;
    }
    int rc = OD_OK;
    struct stat st;
    if (mode == OD_PUT_IF_ABSENT) {
        if (fstatat(dfd, leaf, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
            rc = od_err_set(err, OD_EXISTS, "objstore: \"%.200s\" already exists", key);
    } else if (mode == OD_PUT_IF_MATCH) {
        char cur[OD_ETAG_MAX];
        od_err e2 = {0};
        int r = current_etag(fs, key, dfd, leaf, cur, &e2);
        if (r == OD_NOTFOUND) rc = od_err_copy(err, &e2);
        else if (r == OD_OK && strcmp(cur, etag) != 0)
            rc = od_err_set(err, OD_PRECONDITION, "objstore: \"%.200s\" changed (ETag mismatch)", key);
    }
    close(dfd);
    return rc;
}

static int file_put(od_store *s, const char *key, const void *data, size_t len, od_put_mode mode, const char *etag,
                    od_obj_meta *meta_out, od_err *err)
{
    file_store *fs = (file_store *)s;
    int rc = check_key(key, err);
    if (rc) return rc;
    if (mode != OD_PUT_ALWAYS) {
        rc = precheck(fs, key, mode, etag, err);
        if (rc) return rc;
    }
    int dfd = -1;
    const char *leaf = NULL;
    char tmp[96];
    /* The ETag costs a pass of SHA-256 over the bytes: computed here only when the caller wants
     * it back, otherwise on the first read that asks (and cached then). */
    char etag_new[OD_ETAG_MAX] = "";
    if (meta_out) etag_of(data, len, etag_new);
    for (int attempt = 0;; attempt++) {
        rc = open_parent(fs, key, 1, &dfd, &leaf, err);
        if (rc) return rc;
        rc = write_temp(fs, dfd, key, data, len, meta_out ? etag_new : NULL, tmp, sizeof tmp, err);
        if (rc == OD_OK) break;
        close(dfd);
        if (rc != RETRY_WALK) return rc;
        if (attempt >= WALK_RETRIES)
            return od_err_set(err, OD_TRANSIENT, "objstore: file://%s: the directory of \"%.200s\" keeps "
                              "disappearing (concurrent deletes)", fs->root, key);
    }

    if (mode == OD_PUT_IF_ABSENT) {
        int linked = linkat(dfd, tmp, dfd, leaf, 0) == 0;
        int e = errno;
        /* An empty directory in the way (a delete whose clean-up was interrupted): remove it. */
        if (!linked && e == EEXIST && unlinkat(dfd, leaf, AT_REMOVEDIR) == 0) {
            linked = linkat(dfd, tmp, dfd, leaf, 0) == 0;
            e = errno;
        }
        if (!linked) {
            struct stat st;
            if (e == EEXIST && fstatat(dfd, leaf, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode))
                rc = od_err_set(err, OD_BADREQ,
                                "objstore: file://%s: cannot store \"%.200s\": it is a directory of other keys, and "
                                "the file backend cannot hold both a key and keys below it", fs->root, key);
            else if (e == EEXIST)
                rc = od_err_set(err, OD_EXISTS, "objstore: \"%.200s\" already exists", key);
            else
                rc = od_err_set(err, OD_IO, "objstore: file://%s: link of \"%.200s\" failed: %s", fs->root, key,
                                strerror(e));
        }
        unlinkat(dfd, tmp, 0); /* on success the object keeps the other name */
    } else {
        int lfd;
        rc = lock_key(fs, key, &lfd, err);
        if (rc == OD_OK) {
            if (mode == OD_PUT_IF_MATCH) {
                char cur[OD_ETAG_MAX];
                rc = current_etag(fs, key, dfd, leaf, cur, err);
                if (rc == OD_OK && strcmp(cur, etag) != 0)
                    rc = od_err_set(err, OD_PRECONDITION, "objstore: \"%.200s\" changed (ETag mismatch)", key);
            }
            int renamed = rc == OD_OK && renameat(dfd, tmp, dfd, leaf) == 0;
            int e = errno;
            if (rc == OD_OK && !renamed && e == EISDIR && unlinkat(dfd, leaf, AT_REMOVEDIR) == 0) {
                renamed = renameat(dfd, tmp, dfd, leaf) == 0; /* it was an empty directory */
                e = errno;
            }
            if (rc == OD_OK && !renamed) {
                if (e == EISDIR || e == ENOTEMPTY || e == EEXIST)
                    rc = od_err_set(err, OD_BADREQ,
                                    "objstore: file://%s: cannot store \"%.200s\": it is a directory of other keys, "
                                    "and the file backend cannot hold both a key and keys below it", fs->root, key);
                else
                    rc = od_err_set(err, OD_IO, "objstore: file://%s: rename onto \"%.200s\" failed: %s", fs->root,
                                    key, strerror(e));
            }
            unlock_key(lfd);
        }
        if (rc) unlinkat(dfd, tmp, 0);
    }
    if (rc == OD_OK && fsync(dfd) != 0)
        rc = od_err_set(err, OD_IO, "objstore: file://%s: fsync of the directory of \"%.200s\" failed: %s", fs->root,
                        key, strerror(errno));
    if (rc == OD_OK && meta_out) {
        meta_out->size = len;
        memcpy(meta_out->etag, etag_new, sizeof etag_new);
        struct stat st;
        meta_out->mtime_ms = fstatat(dfd, leaf, &st, AT_SYMLINK_NOFOLLOW) == 0 ? ts_ms(&st.st_mtim) : 0;
    }
    close(dfd);
    return rc;
}

/* After a delete, remove the key's directories that became empty, deepest first. Best effort:
 * stops at the first directory that is not empty (or that a writer is using). */
static void prune_dirs(file_store *fs, const char *key)
{
    size_t end = strlen(key);
    for (;;) {
        while (end > 0 && key[end - 1] != '/') end--;
        if (end == 0) return;
        end--; /* key[0..end) is the directory to remove */
        const char *slash = NULL;
        for (size_t i = 0; i < end; i++)
            if (key[i] == '/') slash = key + i;
        size_t plen = slash ? (size_t)(slash - key) : 0;
        int pfd;
        if (open_dir(fs, key, key, plen, 0, &pfd, NULL) != OD_OK) return;
        char name[1025];
        size_t nlen = end - (slash ? plen + 1 : 0);
        if (nlen >= sizeof name) { close(pfd); return; }
        memcpy(name, key + end - nlen, nlen);
        name[nlen] = 0;
        int ok = unlinkat(pfd, name, AT_REMOVEDIR) == 0;
        close(pfd);
        if (!ok) return;
    }
}

static int file_del(od_store *s, const char *key, od_err *err)
{
    file_store *fs = (file_store *)s;
    int rc = check_key(key, err);
    if (rc) return rc;
    int dfd;
    const char *leaf;
    rc = open_parent(fs, key, 0, &dfd, &leaf, err);
    if (rc == OD_NOTFOUND) return OD_OK;
    if (rc) return rc;
    int lfd;
    rc = lock_key(fs, key, &lfd, err);
    if (rc) {
        close(dfd);
        return rc;
    }
    int removed = 0;
    if (unlinkat(dfd, leaf, 0) == 0) removed = 1;
    else if (errno != ENOENT && errno != EISDIR)
        rc = od_err_set(err, OD_IO, "objstore: file://%s: delete of \"%.200s\" failed: %s", fs->root, key,
                        strerror(errno));
    unlock_key(lfd);
    if (removed && fsync(dfd) != 0)
        rc = od_err_set(err, OD_IO, "objstore: file://%s: fsync of the directory of \"%.200s\" failed: %s", fs->root,
                        key, strerror(errno));
    close(dfd);
    if (removed && rc == OD_OK) prune_dirs(fs, key);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * List: a depth-first walk that visits directory entries in the byte order of the full keys
 */

typedef struct list_ent {
    char *sortname; /* the entry's name, with '/' appended for a directory */
    int is_dir;
} list_ent;

typedef struct list_ctx {
    file_store *fs;
    const char *prefix;
    const char *start_after;
    od_list_cb cb;
    void *cbctx;
    od_buf path;      /* the full key of the current directory, ending in '/' (or empty at the root) */
    uint64_t emitted;
    int stop;
} list_ctx;

static int cmp_ent(const void *a, const void *b)
{
    return strcmp(((const list_ent *)a)->sortname, ((const list_ent *)b)->sortname);
}

static void free_ents(list_ent *ents, size_t n)
{
    for (size_t i = 0; i < n; i++) free(ents[i].sortname);
    free(ents);
}

/* Walk the directory dfd (consumed), whose key prefix is lc->path. Only entries whose names start
 * with `partial` are considered (the last, incomplete segment of the list prefix; "" below it). */
static int list_dir(list_ctx *lc, int dfd, const char *partial, od_err *err)
{
    file_store *fs = lc->fs;
    DIR *d = fdopendir(dfd);
    if (!d) {
        int e = errno;
        close(dfd);
        return od_err_set(err, OD_IO, "objstore: file://%s: cannot read directory \"%.200s\": %s", fs->root,
                          lc->path.len ? (const char *)lc->path.data : ".", strerror(e));
    }
    size_t plen = strlen(partial);
    list_ent *ents = NULL;
    size_t n = 0, cap = 0;
    int rc = OD_OK;
    struct dirent *de;
    while ((errno = 0, de = readdir(d)) != NULL) {
        const char *nm = de->d_name;
        if (nm[0] == '.' && (nm[1] == 0 || (nm[1] == '.' && nm[2] == 0))) continue;
        size_t nl = strlen(nm);
        if (is_reserved(nm, nl)) continue;
        if (strncmp(nm, partial, plen) != 0) continue;
        int is_dir;
        if (de->d_type == DT_DIR) is_dir = 1;
        else if (de->d_type == DT_REG) is_dir = 0;
        else if (de->d_type == DT_UNKNOWN) {
            struct stat st;
            if (fstatat(dirfd(d), nm, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
            if (S_ISDIR(st.st_mode)) is_dir = 1;
            else if (S_ISREG(st.st_mode)) is_dir = 0;
            else continue;
        } else continue; /* links, sockets, ...: never objects */
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 64;
            list_ent *ne = realloc(ents, nc * sizeof *ne);
            if (!ne) { rc = OD_NOMEM; break; }
            ents = ne;
            cap = nc;
        }
        char *sn = malloc(nl + 2);
        if (!sn) { rc = OD_NOMEM; break; }
        memcpy(sn, nm, nl);
        if (is_dir) sn[nl++] = '/';
        sn[nl] = 0;
        ents[n].sortname = sn;
        ents[n].is_dir = is_dir;
        n++;
    }
    if (rc == OD_OK && de == NULL && errno != 0)
        rc = od_err_set(err, OD_IO, "objstore: file://%s: readdir failed: %s", fs->root, strerror(errno));
    else if (rc == OD_NOMEM)
        od_err_set(err, OD_NOMEM, "objstore: out of memory listing file://%s", fs->root);
    if (rc == OD_OK && n > 1) qsort(ents, n, sizeof *ents, cmp_ent);

    size_t base = lc->path.len;
    for (size_t i = 0; rc == OD_OK && !lc->stop && i < n; i++) {
        lc->path.len = base;
        if (od_buf_append_str(&lc->path, ents[i].sortname) || od_buf_cstr(&lc->path)) {
            rc = od_err_set(err, OD_NOMEM, "objstore: out of memory listing file://%s", fs->root);
            break;
        }
        const char *full = (const char *)lc->path.data;
        const char *name = ents[i].sortname;
        if (ents[i].is_dir) {
            /* Every key below starts with `full`; if full < start_after and start_after does not
             * start with it, the whole subtree sorts before start_after. */
            if (lc->start_after && strcmp(full, lc->start_after) < 0 &&
                strncmp(lc->start_after, full, lc->path.len) != 0)
                continue;
            char dn[1025];
            size_t dl = strlen(name) - 1;
            if (dl >= sizeof dn) continue;
            memcpy(dn, name, dl);
            dn[dl] = 0;
            int sub = openat(dirfd(d), dn, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub < 0) {
                if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP) continue; /* raced a delete */
                rc = od_err_set(err, OD_IO, "objstore: file://%s: cannot open directory \"%.200s\": %s", fs->root,
                                full, strerror(errno));
                break;
            }
            rc = list_dir(lc, sub, "", err);
        } else {
            if (lc->start_after && strcmp(full, lc->start_after) <= 0) continue;
            struct stat st;
            if (fstatat(dirfd(d), name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) continue;
            od_obj_meta m = {.size = (uint64_t)st.st_size, .mtime_ms = ts_ms(&st.st_mtim)};
            if (lc->emitted % LIST_PAGE == 0) od_store_count_list_page(&fs->base);
            lc->emitted++;
            if (lc->cb(lc->cbctx, full, &m)) lc->stop = 1;
        }
    }
    lc->path.len = base;
    free_ents(ents, n);
    closedir(d);
    return rc;
}

static int file_list(od_store *s, const char *prefix, const char *start_after, od_list_cb cb, void *ctx,
                     od_err *err)
{
    file_store *fs = (file_store *)s;
    list_ctx lc = {.fs = fs, .prefix = prefix, .start_after = start_after, .cb = cb, .cbctx = ctx};
    const char *slash = strrchr(prefix, '/');
    size_t dlen = slash ? (size_t)(slash - prefix) : 0;
    const char *partial = slash ? slash + 1 : prefix;
    int rc = OD_OK;
    int dfd = -1;
    int reachable = 1;
    if (slash && dlen == 0) {
        reachable = 0; /* "/..." matches no key */
    } else if (dlen > 0) {
        /* The directory part must itself be a valid key without reserved names, or nothing matches. */
        char *dir = strndup(prefix, dlen);
        if (!dir) return od_err_set(err, OD_NOMEM, "objstore: out of memory listing file://%s", fs->root);
        if (check_key(dir, NULL) != OD_OK) reachable = 0;
        else {
            rc = open_dir(fs, dir, dir, dlen, 0, &dfd, err);
            if (rc == OD_NOTFOUND) { rc = OD_OK; reachable = 0; }
        }
        free(dir);
        if (rc) return rc;
        if (od_buf_append(&lc.path, prefix, dlen + 1) || od_buf_cstr(&lc.path)) {
            close(dfd);
            return od_err_set(err, OD_NOMEM, "objstore: out of memory listing file://%s", fs->root);
        }
    } else {
        dfd = fcntl(fs->rootfd, F_DUPFD_CLOEXEC, 0);
        if (dfd < 0)
            return od_err_set(err, OD_IO, "objstore: file://%s: dup of the root descriptor failed: %s", fs->root,
                              strerror(errno));
    }
    if (reachable) rc = list_dir(&lc, dfd, partial, err);
    if (lc.emitted == 0) od_store_count_list_page(s);
    od_buf_free(&lc.path);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Open / close
 */

static void file_close(od_store *s)
{
    file_store *fs = (file_store *)s;
    if (fs->lockfd >= 0) close(fs->lockfd);
    close(fs->rootfd);
    free(fs->root);
    od_store_destroy_base(s);
    free(fs);
}

static const od_store_ops file_ops = {
    .get = file_get, .get_range = file_get_range, .head = file_head, .put = file_put,
    .del = file_del, .list = file_list, .close = file_close,
};

/* mkdir -p, following links in the user's own path (the root may legitimately live behind one). */
static int make_root(const char *path, od_err *err)
{
    char *p = strdup(path);
    if (!p) return od_err_set(err, OD_NOMEM, "objstore: out of memory");
    size_t n = strlen(p);
    for (size_t i = 1; i <= n; i++) {
        if (p[i] != '/' && p[i] != 0) continue;
        if (p[i - 1] == '/') continue;
        char c = p[i];
        p[i] = 0;
        if (mkdir(p, 0755) != 0 && errno != EEXIST) {
            int e = errno;
            int rc = od_err_set(err, OD_IO, "objstore: cannot create store directory \"%.200s\" (at \"%.200s\"): %s",
                                path, p, strerror(e));
            free(p);
            return rc;
        }
        p[i] = c;
    }
    free(p);
    return OD_OK;
}

int od_store_open_file(const char *path, od_store **out, od_err *err)
{
    *out = NULL;
    if (!path || !*path) return od_err_set(err, OD_BADREQ, "objstore: empty file store path");
    if (strlen(path) > PATH_MAX - 64)
        return od_err_set(err, OD_BADREQ, "objstore: file store path \"%.200s...\" is too long", path);
    int rc = make_root(path, err);
    if (rc) return rc;
    int rootfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0) {
        int e = errno;
        return od_err_set(err, e == ENOTDIR ? OD_BADREQ : OD_IO,
                          "objstore: cannot open store directory \"%.200s\": %s", path, strerror(e));
    }
    char *root = realpath(path, NULL);
    if (!root) {
        int e = errno;
        close(rootfd);
        return od_err_set(err, OD_IO, "objstore: cannot resolve store directory \"%.200s\": %s", path, strerror(e));
    }
    /* A store we may not write to (read-only mount or permissions) still opens for reading; the
     * first write that needs a lock reports why. */
    int lock_errno = 0;
    if (mkdirat(rootfd, LOCK_DIR, 0755) != 0 && errno != EEXIST) lock_errno = errno;
    int lockfd = openat(rootfd, LOCK_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (lockfd < 0 && lock_errno == 0 && errno != ENOENT) lock_errno = errno;
    if (lockfd < 0 && lock_errno == 0) {
        int e = errno;
        rc = od_err_set(err, OD_IO, "objstore: cannot open lock directory \"%.200s/%s\": %s", root, LOCK_DIR,
                        strerror(e));
        close(rootfd);
        free(root);
        return rc;
    }
    file_store *fs = calloc(1, sizeof *fs);
    if (!fs) {
        close(lockfd);
        close(rootfd);
        free(root);
        return od_err_set(err, OD_NOMEM, "objstore: out of memory");
    }
    fs->root = root;
    fs->rootfd = rootfd;
    fs->lockfd = lockfd;
    fs->lock_errno = lock_errno;
    atomic_init(&fs->tmp_seq, 0);
    char desc[256];
    snprintf(desc, sizeof desc, "file://%.240s", root);
    od_store_init_base(&fs->base, &file_ops, desc);
    *out = &fs->base;
    return OD_OK;
}
