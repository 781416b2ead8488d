/*
 * sqltest.c — runner for sql-tests/NAME.test files (sqllogictest style; format in
 * sql-tests/README.md) against a real SQLite with the opendata extension loaded.
 *
 *   sqltest --ext build/opendata.so FILE...
 *
 * Each file runs in a fresh temporary directory (${TMPDIR}), removed afterwards. Every record
 * (statement/query) is one check; the runner prints a line per file and ends with
 * "N passed, N failed" (records). Exit status 1 when any record failed.
 *
 * How it works: the file is read whole and split into records at blank lines; each record's
 * first line is the directive. Connections are opened lazily by name on ${TMPDIR}/test.db with
 * the extension loaded through sqlite3_load_extension — exactly what `.load` does in the
 * sqlite3 shell. Query results are formatted per the type string and compared as text.
 */
#include <ftw.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_CONN 8

typedef struct conn {
    char name[64];
    sqlite3 *db;
} conn;

typedef struct runner {
    const char *ext;
    const char *file;
    char tmpdir[256];
    conn conns[MAX_CONN];
    int cur;
    int passed, failed;
} runner;

typedef struct strvec {
    char **v;
    size_t n, cap;
} strvec;

static void die_oom(void)
{
    fprintf(stderr, "sqltest: out of memory\n");
    exit(2);
}

static void sv_push(strvec *s, char *str)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 16;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
        if (!s->v) die_oom();
    }
    s->v[s->n++] = str;
}

static void sv_free(strvec *s)
{
    for (size_t i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
    s->v = NULL;
    s->n = s->cap = 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Replace ${TMPDIR}, ${S3_URI} and ${S3_URI:sub} (sub inserted as a path segment before '?'). */
static char *substitute(runner *r, const char *in)
{
    size_t cap = strlen(in) * 2 + 256, n = 0;
    char *out = malloc(cap);
    if (!out) die_oom();
    const char *s3 = getenv("OD_TEST_S3_URI");
    for (const char *p = in; *p;) {
        char rep[2048];
        const char *rep_s = NULL;
        size_t skip = 0;
        if (strncmp(p, "${TMPDIR}", 9) == 0) {
            rep_s = r->tmpdir;
            skip = 9;
        } else if (strncmp(p, "${S3_URI", 8) == 0) {
            const char *end = strchr(p, '}');
            if (!end) break;
            if (!s3) {
                fprintf(stderr, "%s: ${S3_URI} used but OD_TEST_S3_URI is not set (run under scripts/with-rgw.sh)\n",
                        r->file);
                exit(2);
            }
            if (p[8] == ':') {
                const char *q = strchr(s3, '?');
                size_t base = q ? (size_t)(q - s3) : strlen(s3);
                snprintf(rep, sizeof rep, "%.*s/%.*s%s", (int)base, s3, (int)(end - p - 9), p + 9, q ? q : "");
            } else {
                snprintf(rep, sizeof rep, "%s", s3);
            }
            rep_s = rep;
            skip = (size_t)(end - p) + 1;
        }
        if (rep_s) {
            size_t l = strlen(rep_s);
            if (n + l + 1 >= cap) {
                cap = (n + l + 1) * 2;
                out = realloc(out, cap);
                if (!out) die_oom();
            }
            memcpy(out + n, rep_s, l);
            n += l;
            p += skip;
        } else {
            if (n + 2 >= cap) {
                cap *= 2;
                out = realloc(out, cap);
                if (!out) die_oom();
            }
            out[n++] = *p++;
        }
    }
    out[n] = 0;
    return out;
}

static sqlite3 *get_conn(runner *r)
{
    conn *c = &r->conns[r->cur];
    if (c->db) return c->db;
    char path[512];
    snprintf(path, sizeof path, "%s/test.db", r->tmpdir);
    if (sqlite3_open(path, &c->db) != SQLITE_OK) {
        fprintf(stderr, "%s: cannot open %s: %s\n", r->file, path, sqlite3_errmsg(c->db));
        exit(2);
    }
    sqlite3_busy_timeout(c->db, 5000);
    sqlite3_enable_load_extension(c->db, 1);
    char *err = NULL;
    if (sqlite3_load_extension(c->db, r->ext, NULL, &err) != SQLITE_OK) {
        fprintf(stderr, "%s: cannot load extension %s: %s\n", r->file, r->ext, err ? err : "?");
        exit(2);
    }
    return c->db;
}

static void close_all(runner *r)
{
    for (int i = 0; i < MAX_CONN; i++) {
        if (r->conns[i].db) {
            if (sqlite3_close(r->conns[i].db) != SQLITE_OK) {
                fprintf(stderr, "%s: connection %s did not close cleanly: %s\n", r->file, r->conns[i].name,
                        sqlite3_errmsg(r->conns[i].db));
                sqlite3_close_v2(r->conns[i].db);
            }
        }
        r->conns[i].db = NULL;
        r->conns[i].name[0] = 0;
    }
    snprintf(r->conns[0].name, sizeof r->conns[0].name, "main");
    r->cur = 0;
}

static void select_conn(runner *r, const char *name, int line)
{
    for (int i = 0; i < MAX_CONN; i++)
        if (strcmp(r->conns[i].name, name) == 0) { r->cur = i; return; }
    for (int i = 0; i < MAX_CONN; i++)
        if (!r->conns[i].name[0]) {
            snprintf(r->conns[i].name, sizeof r->conns[i].name, "%s", name);
            r->cur = i;
            return;
        }
    fprintf(stderr, "%s:%d: too many connections (max %d)\n", r->file, line, MAX_CONN);
    exit(2);
}

static void fail(runner *r, int line, const char *sql, const char *fmt, const char *a, const char *b)
{
    r->failed++;
    fprintf(stdout, "  %s:%d: FAILED\n    SQL: %s\n    ", r->file, line, sql);
    fprintf(stdout, fmt, a, b);
    fputc('\n', stdout);
}

static void run_statement(runner *r, int line, const char *sql, int expect_error, const char *errtext)
{
    sqlite3 *db = get_conn(r);
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    if (!expect_error) {
        if (rc != SQLITE_OK) fail(r, line, sql, "expected success, got error: %s%s", err ? err : "?", "");
        else r->passed++;
    } else {
        if (rc == SQLITE_OK) fail(r, line, sql, "expected an error containing \"%s\"%s, but it succeeded", errtext, "");
        else if (!strstr(err ? err : "", errtext))
            fail(r, line, sql, "expected an error containing \"%s\", got: %s", errtext, err ? err : "?");
        else r->passed++;
    }
    sqlite3_free(err);
}

static char *format_value(sqlite3_stmt *st, int col, char type)
{
    char tmp[64];
    if (sqlite3_column_type(st, col) == SQLITE_NULL) return strdup("NULL");
    switch (type) {
    case 'I':
        snprintf(tmp, sizeof tmp, "%lld", (long long)sqlite3_column_int64(st, col));
        return strdup(tmp);
    case 'R':
        snprintf(tmp, sizeof tmp, "%.3f", sqlite3_column_double(st, col));
        return strdup(tmp);
    default: {
        const char *t = (const char *)sqlite3_column_text(st, col);
        if (!t || !*t) return strdup("(empty)");
        return strdup(t);
    }
    }
}

/* Run a query; fills `rows` with one formatted line per row, or returns an error text. */
static char *run_query(runner *r, const char *sql, const char *types, const char *sortmode, strvec *out)
{
    sqlite3 *db = get_conn(r);
    sqlite3_stmt *st = NULL;
    const char *tail = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, &tail) != SQLITE_OK) return strdup(sqlite3_errmsg(db));
    int ncol = sqlite3_column_count(st);
    if (ncol != (int)strlen(types)) {
        char msg[128];
        snprintf(msg, sizeof msg, "query returns %d columns but the type string has %zu", ncol, strlen(types));
        sqlite3_finalize(st);
        return strdup(msg);
    }
    strvec rows = {0}, vals = {0};
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        size_t cap = 256, n = 0;
        char *line = malloc(cap);
        if (!line) die_oom();
        line[0] = 0;
        for (int c = 0; c < ncol; c++) {
            char *v = format_value(st, c, types[c]);
            if (!v) die_oom();
            if (!strcmp(sortmode, "valuesort")) {
                sv_push(&vals, v);
                continue;
            }
            size_t l = strlen(v);
            if (n + l + 2 >= cap) {
                cap = (n + l + 2) * 2;
                line = realloc(line, cap);
                if (!line) die_oom();
            }
            if (c) line[n++] = '|';
            memcpy(line + n, v, l + 1);
            n += l;
            free(v);
        }
        if (!strcmp(sortmode, "valuesort")) free(line);
        else sv_push(&rows, line);
    }
    char *error = NULL;
    if (rc != SQLITE_DONE) error = strdup(sqlite3_errmsg(db));
    sqlite3_finalize(st);
    if (error) {
        sv_free(&rows);
        sv_free(&vals);
        return error;
    }
    if (!strcmp(sortmode, "rowsort")) qsort(rows.v, rows.n, sizeof *rows.v, cmp_str);
    if (!strcmp(sortmode, "valuesort")) {
        qsort(vals.v, vals.n, sizeof *vals.v, cmp_str);
        *out = vals;
        sv_free(&rows);
    } else {
        *out = rows;
    }
    return NULL;
}

static void check_query(runner *r, int line, const char *sql, const char *types, const char *sortmode,
                        strvec *expected)
{
    strvec got = {0};
    char *error = run_query(r, sql, types, sortmode, &got);
    if (error) {
        fail(r, line, sql, "query failed: %s%s", error, "");
        free(error);
        return;
    }
    if (!strcmp(sortmode, "rowsort") || !strcmp(sortmode, "valuesort"))
        qsort(expected->v, expected->n, sizeof *expected->v, cmp_str);
    int ok = got.n == expected->n;
    for (size_t i = 0; ok && i < got.n; i++) ok = strcmp(got.v[i], expected->v[i]) == 0;
    if (ok) {
        r->passed++;
    } else {
        r->failed++;
        printf("  %s:%d: FAILED\n    SQL: %s\n    expected (%zu):\n", r->file, line, sql, expected->n);
        for (size_t i = 0; i < expected->n; i++) printf("      %s\n", expected->v[i]);
        printf("    got (%zu):\n", got.n);
        for (size_t i = 0; i < got.n; i++) printf("      %s\n", got.v[i]);
    }
    sv_free(&got);
}

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (!buf) die_oom();
    size_t got = fread(buf, 1, (size_t)n, f);
    buf[got] = 0;
    fclose(f);
    return buf;
}

/* Splits text into lines (in place). */
static strvec split_lines(char *text)
{
    strvec lines = {0};
    char *p = text;
    while (*p) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = 0;
        size_t l = strlen(p);
        if (l && p[l - 1] == '\r') p[l - 1] = 0;
        char *copy = strdup(p);
        if (!copy) die_oom();
        sv_push(&lines, copy);
        if (!nl) break;
        p = nl + 1;
    }
    return lines;
}

static int is_blank(const char *s)
{
    while (*s == ' ' || *s == '\t') s++;
    return *s == 0;
}

static int run_file(runner *r, const char *path)
{
    memset(r->conns, 0, sizeof r->conns);
    r->file = path;
    r->passed = r->failed = 0;
    snprintf(r->tmpdir, sizeof r->tmpdir, "%s/sqltest-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(r->tmpdir)) {
        perror("mkdtemp");
        return -1;
    }
    close_all(r);
    char *text = read_file(path);
    if (!text) {
        fprintf(stderr, "sqltest: cannot read %s\n", path);
        return -1;
    }
    strvec lines = split_lines(text);
    free(text);
    size_t i = 0;
    int halted = 0;
    while (i < lines.n && !halted) {
        if (is_blank(lines.v[i]) || lines.v[i][0] == '#') { i++; continue; }
        int line_no = (int)i + 1;
        char *head = lines.v[i++];
        /* Gather the SQL up to a blank line or "----". */
        size_t cap = 1024, n = 0;
        char *sql = malloc(cap);
        if (!sql) die_oom();
        sql[0] = 0;
        while (i < lines.n && !is_blank(lines.v[i]) && strcmp(lines.v[i], "----") != 0) {
            size_t l = strlen(lines.v[i]);
            if (n + l + 2 >= cap) {
                cap = (n + l + 2) * 2;
                sql = realloc(sql, cap);
                if (!sql) die_oom();
            }
            if (n) sql[n++] = '\n';
            memcpy(sql + n, lines.v[i], l + 1);
            n += l;
            i++;
        }
        char *xsql = substitute(r, sql);
        free(sql);
        if (!strcmp(head, "statement ok")) {
            run_statement(r, line_no, xsql, 0, NULL);
        } else if (!strncmp(head, "statement error", 15) || !strncmp(head, "query error", 11)) {
            const char *t = head + (head[0] == 's' ? 15 : 11);
            while (*t == ' ') t++;
            char *xt = substitute(r, t);
            run_statement(r, line_no, xsql, 1, xt);
            free(xt);
        } else if (!strncmp(head, "query ", 6)) {
            char types[64] = "", sortmode[32] = "nosort";
            if (sscanf(head + 6, "%63s %31s", types, sortmode) < 1 ||
                (strcmp(sortmode, "nosort") && strcmp(sortmode, "rowsort") && strcmp(sortmode, "valuesort"))) {
                fail(r, line_no, xsql, "bad query header: %s%s", head, "");
            } else {
                strvec expected = {0};
                if (i < lines.n && !strcmp(lines.v[i], "----")) {
                    i++;
                    while (i < lines.n && !is_blank(lines.v[i])) {
                        char *e = substitute(r, lines.v[i++]);
                        sv_push(&expected, e);
                    }
                }
                check_query(r, line_no, xsql, types, sortmode, &expected);
                sv_free(&expected);
            }
        } else if (!strncmp(head, "connection ", 11)) {
            select_conn(r, head + 11, line_no);
        } else if (!strcmp(head, "reopen")) {
            close_all(r);
        } else if (!strcmp(head, "halt")) {
            halted = 1;
        } else {
            fail(r, line_no, head, "unknown directive%s%s", "", "");
        }
        free(xsql);
    }
    sv_free(&lines);
    close_all(r);
    nftw(r->tmpdir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    printf("%s: %d passed, %d failed\n", path, r->passed, r->failed);
    return r->failed;
}

int main(int argc, char **argv)
{
    runner r;
    memset(&r, 0, sizeof r);
    int first = 1;
    if (argc >= 3 && !strcmp(argv[1], "--ext")) {
        r.ext = argv[2];
        first = 3;
    }
    if (!r.ext || first >= argc) {
        fprintf(stderr, "usage: sqltest --ext PATH/opendata.so FILE.test...\n");
        return 2;
    }
    int total_pass = 0, total_fail = 0, bad = 0;
    for (int a = first; a < argc; a++) {
        int rc = run_file(&r, argv[a]);
        if (rc < 0) bad = 1;
        total_pass += r.passed;
        total_fail += r.failed;
    }
    printf("%d passed, %d failed\n", total_pass, total_fail);
    return (total_fail || bad) ? 1 : 0;
}
