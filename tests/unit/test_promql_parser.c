/*
 * test_promql_parser.c — the PromQL parser: parse → print round trips, operator precedence and
 * associativity (checked by evaluating scalar expressions), durations, modifiers, and parse
 * errors with their position and message text. Also a few evaluator checks on a tiny in-memory
 * source (selectors, lookback, staleness, limits) and a randomised round-trip of generated
 * expressions (iterations scale with OD_TEST_SCALE).
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* gen() below builds bounded random strings; truncation there is harmless */
#pragma GCC diagnostic ignored "-Wformat-truncation"

#include "promql/od_promql.h"
#include "od_testutil.h"

static char *print_of(const char *q)
{
    od_promql_expr *e = NULL;
    od_err err;
    int rc = od_promql_parse(q, &e, &err);
    if (rc != OD_OK) fail_msg("parse of %s failed: %s", q, err.msg);
    char *s = od_promql_expr_string(e);
    assert_non_null(s);
    od_promql_expr_free(e);
    return s;
}

/* print(parse(q)) == want, and printing is a fixed point. */
static void check_print(const char *q, const char *want)
{
    char *p1 = print_of(q);
    if (strcmp(p1, want) != 0) fail_msg("print(%s) = %s, want %s", q, p1, want);
    char *p2 = print_of(p1);
    assert_string_equal(p1, p2);
    free(p1);
    free(p2);
}

static void test_round_trips(void **state)
{
    (void)state;
    check_print("foo", "foo");
    check_print("foo{a=\"b\", c!=\"d\", e=~\"f.*\", g!~\"h\"}", "foo{a=\"b\", c!=\"d\", e=~\"f.*\", g!~\"h\"}");
    check_print("{__name__=\"foo\"}", "foo");
    check_print("{\"foo.bar\"}", "{\"foo.bar\"}");
    check_print("{\"foo.bar\", \"a.b\"=\"x\"}", "{\"foo.bar\", \"a.b\"=\"x\"}");
    check_print("rate(foo[5m])", "rate(foo[5m])");
    check_print("foo[1h30m]", "foo[1h30m]");
    check_print("foo[90s]", "foo[1m30s]");
    check_print("foo offset -5m", "foo offset -5m");
    check_print("foo @ 100 offset 1m", "foo @ 100.000 offset 1m");
    check_print("foo offset 1m @ start()", "foo @ start() offset 1m");
    check_print("max_over_time(rate(foo[1m])[10m:30s] @ end())", "max_over_time(rate(foo[1m])[10m:30s] @ end())");
    check_print("foo[5m:]", "foo[5m:]");
    check_print("sum by (a, b) (foo)", "sum by (a, b) (foo)");
    check_print("sum(foo) without (a)", "sum without (a) (foo)");
    check_print("topk(3, foo)", "topk(3, foo)");
    check_print("count_values(\"v\", foo)", "count_values(\"v\", foo)");
    check_print("a + on(x) group_left(y) b", "a + on(x) group_left(y) b");
    check_print("a > bool ignoring(x) b", "a > bool ignoring(x) b");
    check_print("a and b or c unless d", "a and b or c unless d");
    check_print("1 + 2 * 3", "1 + 2 * 3");
    check_print("(1 + 2) * 3", "(1 + 2) * 3");
    check_print("-foo", "-foo");
    check_print("0x1f", "31");
    check_print("1e3", "1000");
    check_print("Inf", "+Inf");
    check_print("-inf", "-Inf");
    check_print("NaN", "NaN");
    check_print("\"a\\nb\\\"c\"", "\"a\\nb\\\"c\"");
    check_print("'single'", "\"single\"");
    check_print("`raw\\n`", "\"raw\\\\n\"");
    check_print("foo # a comment\n + bar", "foo + bar");
    check_print("label_replace(up, \"a\", \"$1\", \"b\", \"(.*)\")", "label_replace(up, \"a\", \"$1\", \"b\", \"(.*)\")");
    check_print("5m", "300");
    /* duration expressions */
    check_print("foo[5m * 2]", "foo[10m]");
    check_print("foo[1h - 30m:30s + 30s]", "foo[30m:1m]");
    check_print("foo[(2 + 3) * 60]", "foo[5m]");
    check_print("foo offset (1h + 5m)", "foo offset 1h5m");
    check_print("foo offset -(1m * 2)", "foo offset -2m");
    check_print("foo[2 ^ 3]", "foo[8s]");
}

static double eval_scalar(const char *q)
{
    od_promql_mem *m;
    od_err err;
    assert_int_equal(od_promql_mem_new(&m, &err), OD_OK);
    od_promql_source src = od_promql_mem_source(m);
    od_promql_result *r = NULL;
    int rc = od_promql_query_instant(&src, q, 0, NULL, &r, &err);
    if (rc) fail_msg("%s: %s", q, err.msg);
    assert_int_equal(r->type, OD_PROMQL_SCALAR);
    double v = r->scalar;
    od_promql_result_free(r);
    od_promql_mem_free(m);
    return v;
}

static void test_precedence(void **state)
{
    (void)state;
    assert_true(eval_scalar("1 + 2 * 3") == 7);
    assert_true(eval_scalar("(1 + 2) * 3") == 9);
    assert_true(eval_scalar("2 ^ 3 ^ 2") == 512);          /* right associative */
    assert_true(eval_scalar("(2 ^ 3) ^ 2") == 64);
    assert_true(eval_scalar("-2 ^ 2") == -4);              /* ^ binds tighter than unary minus */
    assert_true(eval_scalar("2 ^ -1") == 0.5);
    assert_true(eval_scalar("-2^---1*3") == -1.5);
    assert_true(eval_scalar("2/-2^---1*3+2") == -10);
    assert_true(eval_scalar("10 - 2 - 3") == 5);           /* left associative */
    assert_true(eval_scalar("100 / 10 / 5") == 2);
    assert_true(eval_scalar("7 % 4 * 2") == 6);
    assert_true(eval_scalar("1 + 2 > bool 2") == 1);       /* comparison below arithmetic */
    assert_true(eval_scalar("1 > bool 2 + 1") == 0);
    assert_true(eval_scalar("5m + 1") == 301);
    assert_true(eval_scalar("0x10 + .5") == 16.5);
    assert_true(isnan(eval_scalar("0 / 0")));
    assert_true(isinf(eval_scalar("1 / 0")));
    assert_true(eval_scalar("time()") == 0);
}

static void check_error(const char *q, const char *want)
{
    od_promql_expr *e = NULL;
    od_err err;
    int rc = od_promql_parse(q, &e, &err);
    if (rc == OD_OK) {
        od_promql_expr_free(e);
        fail_msg("expected %s to fail", q);
    }
    assert_int_equal(rc, OD_BADREQ);
    assert_null(e);
    if (strcmp(err.msg, want) != 0) fail_msg("error of %s: got \"%s\", want \"%s\"", q, err.msg, want);
}

static void test_errors(void **state)
{
    (void)state;
    check_error("", "1:1: parse error: no expression found in input");
    check_error("sum(foo", "1:8: parse error: unexpected end of input in aggregation, expected \")\"");
    check_error("foo{a=\"b\"", "1:10: parse error: unexpected end of input in label matching, expected \",\" or \"}\"");
    check_error("foo{a==\"b\"}", "1:6: parse error: unexpected \"==\" in label matching, expected label matching operator");
    check_error("{}", "1:1: parse error: vector selector must contain at least one non-empty matcher");
    check_error("{a=\"\"}", "1:1: parse error: vector selector must contain at least one non-empty matcher");
    check_error("rate(foo)", "1:6: parse error: expected type range vector in call to function \"rate\", got instant vector");
    check_error("nosuchfn(foo)", "1:1: parse error: unknown function with name \"nosuchfn\"");
    check_error("abs(foo, bar)", "1:1: parse error: expected 1 argument(s) in call to \"abs\", got 2");
    check_error("1 > 2", "1:3: parse error: comparisons between scalars must use BOOL modifier");
    check_error("foo + bool bar", "1:5: parse error: bool modifier can only be used on comparison operators");
    check_error("1 and foo", "1:3: parse error: set operator \"and\" not allowed in binary scalar expression");
    check_error("foo and on(a) group_left bar", "1:5: parse error: no grouping allowed for \"and\" operation");
    check_error("(foo)[5m]", "1:6: parse error: ranges only allowed for vector selectors");
    check_error("foo[5m][5m]", "1:8: parse error: ranges only allowed for vector selectors");
    check_error("1 offset 5m", "1:3: parse error: offset modifier must be preceded by an instant vector selector or range vector selector or a subquery");
    check_error("foo offset 1m offset 2m", "1:15: parse error: offset may not be set multiple times");
    check_error("foo @ 1 @ 2", "1:9: parse error: @ <timestamp> may not be set multiple times");
    check_error("foo[5x]", "1:5: parse error: bad number or duration syntax");
    check_error("foo\n  + )", "2:5: parse error: unexpected \")\" in expression");
    check_error("\"abc", "1:1: parse error: unterminated quoted string");
    check_error("foo{a=~\"(\"}", "1:5: parse error: invalid regular expression \"(\": missing closing parenthesis");
    check_error("-\"a\"", "1:1: parse error: unary expression only allowed on expressions of type scalar or instant vector, got string");
    check_error("foo bar", "1:5: parse error: unexpected identifier \"bar\"");
    check_error("sum(foo) by (a) by (b)", "1:17: parse error: aggregation must only contain one grouping clause");
    check_error("foo[5m / 0]", "1:8: parse error: division by zero in duration expression");
    check_error("foo[5m - 5m]", "1:4: parse error: duration must be greater than 0");
    check_error("foo[5m][1m:]", "1:8: parse error: subquery is only allowed on instant vector, got range vector instead");
}

/* ---- evaluator smoke checks on the in-memory source ---- */

static void add(od_promql_mem *m, const char *name, const char *job, int64_t t, double v)
{
    od_promql_label l[2] = {{"__name__", name}, {"job", job}};
    od_err err;
    assert_int_equal(od_promql_mem_add(m, l, 2, t, v, &err), OD_OK);
}

static void test_eval_basics(void **state)
{
    (void)state;
    od_promql_mem *m;
    od_err err;
    assert_int_equal(od_promql_mem_new(&m, &err), OD_OK);
    for (int i = 0; i <= 10; i++) {
        add(m, "c_total", "a", i * 60000, i * 60.0);
        add(m, "c_total", "b", i * 60000, i * 120.0);
    }
    add(m, "g", "a", 0, 1);
    add(m, "g", "a", 60000, od_promql_stale_nan());
    od_promql_source src = od_promql_mem_source(m);
    od_promql_result *r;

    assert_int_equal(od_promql_query_instant(&src, "sum(rate(c_total[5m]))", 600000, NULL, &r, &err), OD_OK);
    assert_int_equal(r->type, OD_PROMQL_VECTOR);
    assert_int_equal(r->nseries, 1);
    assert_true(fabs(r->series[0].points[0].v - 3.0) < 1e-9);
    assert_int_equal(r->series[0].nlabels, 0);
    od_promql_result_free(r);

    /* lookback: a sample is visible for 5 minutes; a stale marker ends it at once */
    assert_int_equal(od_promql_query_instant(&src, "g", 30000, NULL, &r, &err), OD_OK);
    assert_int_equal(r->nseries, 1);
    od_promql_result_free(r);
    assert_int_equal(od_promql_query_instant(&src, "g", 61000, NULL, &r, &err), OD_OK);
    assert_int_equal(r->nseries, 0);
    od_promql_result_free(r);
    od_promql_opts o = {0};
    o.lookback_ms = 10000;
    assert_int_equal(od_promql_query_instant(&src, "c_total", 615000, &o, &r, &err), OD_OK);
    assert_int_equal(r->nseries, 0); /* newest sample at 600000 is 15 s old > 10 s */
    od_promql_result_free(r);

    /* range query: sorted by labels, name kept for selectors */
    assert_int_equal(od_promql_query_range(&src, "c_total", 0, 120000, 60000, NULL, &r, &err), OD_OK);
    assert_int_equal(r->type, OD_PROMQL_MATRIX);
    assert_int_equal(r->nseries, 2);
    assert_string_equal(r->series[0].labels[1].value, "a");
    assert_int_equal(r->series[0].npoints, 3);
    assert_true(r->series[1].points[2].v == 240);
    od_promql_result_free(r);

    /* vector matching error */
    assert_int_not_equal(od_promql_query_instant(&src, "c_total + on() c_total", 60000, NULL, &r, &err), OD_OK);
    assert_non_null(strstr(err.msg, "many-to-many matching not allowed"));

    /* limits */
    o = (od_promql_opts){0};
    o.max_samples = 5;
    assert_int_equal(od_promql_query_instant(&src, "sum_over_time(c_total[10m])", 600000, &o, &r, &err), OD_LIMIT);
    assert_string_equal(err.msg, "query processing would load too many samples into memory in query execution");
    o = (od_promql_opts){0};
    o.max_series = 1;
    assert_int_equal(od_promql_query_instant(&src, "c_total", 600000, &o, &r, &err), OD_LIMIT);
    assert_non_null(strstr(err.msg, "max series"));

    o = (od_promql_opts){0};
    o.timeout_ms = 1;
    assert_int_equal(od_promql_query_range(&src, "count_over_time(c_total[10m:1ms])", 0, 600000, 1000, &o, &r, &err), OD_TIMEOUT);
    assert_string_equal(err.msg, "query timed out in query execution");
    /* the same query finishes without a timeout, and counts the subquery points */
    assert_int_equal(od_promql_query_instant(&src, "count_over_time(c_total{job=\"a\"}[1m:1s])", 600000, NULL, &r, &err), OD_OK);
    assert_int_equal(r->nseries, 1);
    assert_true(r->series[0].points[0].v == 60);
    od_promql_result_free(r);

    /* range query argument checks */
    assert_int_equal(od_promql_query_range(&src, "c_total[5m]", 0, 60000, 1000, NULL, &r, &err), OD_BADREQ);
    assert_int_equal(od_promql_query_range(&src, "c_total", 0, 60000, 0, NULL, &r, &err), OD_BADREQ);
    od_promql_mem_free(m);
}

/* Random expressions from a small grammar: print(parse(x)) must be a fixed point and parse. */
static unsigned rnd_state = 12345;
static unsigned rnd(void)
{
    rnd_state = rnd_state * 1103515245u + 12345u;
    return (rnd_state >> 16) & 0x7fff;
}

static void gen(char *b, size_t cap, int depth)
{
    static const char *leaves[] = {"foo", "bar{a=\"x\"}", "1", "2.5", "baz{b=~\"y.*\"}", "time()"};
    static const char *ops[] = {"+", "-", "*", "/", "%", "^", "atan2"};
    int k = depth > 3 ? 0 : (int)(rnd() % 6);
    char x[2048], y[2048];
    switch (k) {
    case 0: snprintf(b, cap, "%s", leaves[rnd() % 6]); break;
    case 1: gen(x, sizeof x, depth + 1); gen(y, sizeof y, depth + 1); snprintf(b, cap, "%s %s %s", x, ops[rnd() % 7], y); break;
    case 2: gen(x, sizeof x, depth + 1); snprintf(b, cap, "(%s)", x); break;
    case 3: gen(x, sizeof x, depth + 1); snprintf(b, cap, "-%s", x); break;
    case 4: snprintf(b, cap, "sum by (a) (rate(foo[%um]))", rnd() % 9 + 1); break;
    default: gen(x, sizeof x, depth + 1); snprintf(b, cap, "abs(%s)", x); break;
    }
}

static void test_random_round_trips(void **state)
{
    (void)state;
    int n = (int)(400 * od_test_scale());
    for (int i = 0; i < n; i++) {
        char q[4096];
        gen(q, sizeof q, 0);
        od_promql_expr *e;
        od_err err;
        int rc = od_promql_parse(q, &e, &err);
        if (rc) continue; /* e.g. time() % "string"-free grammar can still hit scalar comparisons */
        char *p1 = od_promql_expr_string(e);
        od_promql_expr_free(e);
        assert_non_null(p1);
        char *p2 = print_of(p1);
        if (strcmp(p1, p2) != 0) fail_msg("not a fixed point: %s -> %s", p1, p2);
        free(p1);
        free(p2);
    }
}

/* Token soup: the parser must accept or reject every input cleanly (ASan checks the rest);
 * accepted inputs must print to a fixed point and evaluate (or fail with a message) on a small
 * data set, instant and range. */
static void test_fuzz_parse_eval(void **state)
{
    (void)state;
    static const char *frag[] = {"foo", "bar_total", "{", "}", "(", ")", "[", "]", "5m", "1h30m", ":", "\"a\"", "=~",
                                 "!=", "=", "==", "by", "without", "sum", "rate(", "topk(", "offset", "@", "-", "+", "^",
                                 "*", "/", "%", "and", "or", "unless", "on", "ignoring", "group_left", ",", "1", "0.5",
                                 "NaN", "#c\n", "'x'", " ", "job", "le", "bool", ">", "<=", "histogram_quantile(",
                                 "label_replace(", "absent(", "start()", "end()", "count_values(", "quantile(",
                                 "scalar(", "vector(", "time()", "sort_desc(", "_over_time(", "max_over_time("};
    od_promql_mem *m;
    od_err err;
    assert_int_equal(od_promql_mem_new(&m, &err), OD_OK);
    for (int i = 0; i <= 20; i++) {
        add(m, "foo", i % 2 ? "a" : "b", i * 30000, i % 7 == 3 ? od_promql_stale_nan() : i * 1.5);
        add(m, "bar_total", "a", i * 30000, i * 10.0);
    }
    od_promql_label hl[3] = {{"__name__", "foo"}, {"job", "h"}, {"le", "+Inf"}};
    assert_int_equal(od_promql_mem_add(m, hl, 3, 0, 4, &err), OD_OK);
    od_promql_source src = od_promql_mem_source(m);
    od_promql_opts o = {0};
    o.max_samples = 200000;
    o.timeout_ms = 2000;
    int n = (int)(3000 * od_test_scale()), parsed = 0, evaluated = 0;
    size_t nf = sizeof frag / sizeof frag[0];
    for (int it = 0; it < n; it++) {
        char q[512];
        size_t len = 0;
        int k = 1 + (int)(rnd() % 12);
        q[0] = 0;
        for (int j = 0; j < k; j++) {
            const char *f = frag[rnd() % nf];
            size_t fl = strlen(f);
            if (len + fl + 1 >= sizeof q) break;
            memcpy(q + len, f, fl);
            len += fl;
            q[len] = 0;
        }
        od_promql_expr *e = NULL;
        if (od_promql_parse(q, &e, &err) != OD_OK) {
            assert_null(e);
            assert_non_null(strstr(err.msg, "parse error"));
            continue;
        }
        parsed++;
        char *p1 = od_promql_expr_string(e);
        assert_non_null(p1);
        char *p2 = print_of(p1);
        if (strcmp(p1, p2) != 0) fail_msg("not a fixed point: %s -> %s -> %s", q, p1, p2);
        free(p1);
        free(p2);
        od_promql_result *r = NULL;
        if (od_promql_eval_instant(&src, e, 300000, &o, &r, &err) == OD_OK) {
            evaluated++;
            od_promql_result_free(r);
        } else {
            assert_null(r);
            assert_true(err.msg[0] != 0);
        }
        od_promql_value_type t = od_promql_expr_type(e);
        if (t == OD_PROMQL_SCALAR || t == OD_PROMQL_VECTOR) {
            r = NULL;
            if (od_promql_eval_range(&src, e, 0, 600000, 45000, &o, &r, &err) == OD_OK) od_promql_result_free(r);
            else assert_null(r);
        }
        od_promql_expr_free(e);
    }
    printf("fuzz: %d inputs, %d parsed, %d evaluated\n", n, parsed, evaluated);
    /* the soup must reach the evaluator, or this test checks nothing */
    assert_true(parsed > n / 50);
    assert_true(evaluated > 0);
    od_promql_mem_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trips),
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_eval_basics),
        cmocka_unit_test(test_random_round_trips),
        cmocka_unit_test(test_fuzz_parse_eval),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
