/* test_cli.c -- unit tests for cli/: the shared option parsers and the text
 * formatting of format.c (times, durations, cleaned strings, JSON text,
 * tables). The commands themselves run end to end in
 * tests/integration/test_cli.py and test_ops.py.
 * Thread: main thread; TZ is set to UTC so local times are fixed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli_internal.h"
#include "util/util.h"

#define T_2026 1767258000.0 /* 2026-01-01T09:00:00Z */

static int set_utc(void **state)
{
    (void)state;
    setenv("TZ", "UTC", 1);
    tzset();
    return 0;
}

static void test_parse_long(void **state)
{
    (void)state;
    long v = -1;
    assert_int_equal(cli__parse_long("42", 1, 100, &v), 0);
    assert_int_equal(v, 42);
    assert_int_equal(cli__parse_long("-7", -10, 0, &v), 0);
    assert_int_equal(v, -7);
    static const char *const bad[] = {"", "4x", "4 ", "0x10", "101", "0",
                                      "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        v = 5;
        if (cli__parse_long(bad[i], 1, 100, &v) != RR_E_INVAL)
            fail_msg("accepted '%s'", bad[i]);
        assert_int_equal(v, 5); /* untouched on failure */
    }
    assert_int_equal(cli__parse_long_opt("--n", "9", 1, 10, "1-10", &v), 0);
    assert_int_equal(v, 9);
    assert_int_equal(cli__parse_long_opt("--n", "11", 1, 10, "1-10", &v),
                     RR_E_INVAL);
}

static void test_parse_duration(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        double want;
    } ok[] = {{"45", 45},        {"45s", 45},        {"0.5s", 0.5},
              {"90m", 5400},     {"12h", 43200},     {"30d", 2592000},
              {"2w", 1209600}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        double v = 0;
        if (cli__parse_duration(ok[i].s, &v) != 0 || v != ok[i].want)
            fail_msg("'%s' gave %g, want %g", ok[i].s, v, ok[i].want);
    }
    static const char *const bad[] = {"", "0", "-1h", "5y", "h", "1hh", "1 h"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        double v = 7;
        if (cli__parse_duration(bad[i], &v) != RR_E_INVAL || v != 7)
            fail_msg("accepted '%s'", bad[i]);
    }
    double v = 0;
    assert_int_equal(cli__parse_duration_opt("--d", "1m", "a duration", &v), 0);
    assert_true(v == 60);
    assert_int_equal(cli__parse_duration_opt("--d", "1y", "a duration", &v),
                     RR_E_INVAL);
}

static void test_fmt_times(void **state)
{
    (void)state;
    char out[64];
    cli__fmt_utc(T_2026 + 0.9, out, sizeof out);
    assert_string_equal(out, "2026-01-01T09:00:00Z");
    cli__fmt_time(T_2026, false, out, sizeof out);
    assert_string_equal(out, "2026-01-01 09:00:00");
    cli__fmt_time(T_2026, true, out, sizeof out);
    assert_string_equal(out, "2026-01-01 09:00:00 +0000");
    cli__fmt_utc(T_2026, out, 4); /* too small: "-", not a cut time */
    assert_string_equal(out, "-");
}

static void test_fmt_rel(void **state)
{
    (void)state;
    static const struct {
        double d;
        const char *want;
    } cases[] = {{0.5, "now"},       {-0.5, "now"},      {30, "in 30s"},
                 {240, "in 4m"},     {-300, "5m ago"},   {7200, "in 2h"},
                 {-3 * 86400.0, "3d ago"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[32];
        cli__fmt_rel(T_2026 + cases[i].d, T_2026, out, sizeof out);
        assert_string_equal(out, cases[i].want);
    }
}

static void test_fmt_dur(void **state)
{
    (void)state;
    static const struct {
        double s;
        const char *want;
    } cases[] = {{1.5, "1.5s"},     {42, "42s"},        {185, "3m05s"},
                 {7800, "2h10m"},   {100800, "1d04h"},  {-3, "0.0s"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[32];
        cli__fmt_dur(cases[i].s, out, sizeof out);
        assert_string_equal(out, cases[i].want);
    }
    char out[32];
    cli__fmt_dur(NAN, out, sizeof out);
    assert_string_equal(out, "0.0s");
}

static void test_clean(void **state)
{
    (void)state;
    char *s = cli__clean("a\033[31mb\r\n\x7f\xc3\xa9");
    assert_string_equal(s, "a [31mb   \xc3\xa9");
    free(s);
    s = cli__clean(NULL);
    assert_string_equal(s, "");
    free(s);
}

static void test_pretty_json(void **state)
{
    (void)state;
    const char *in = "{\"a\":[1, {}],\"s\":\"x,{y}\\\":[\",\"e\":[ ]}";
    struct buf b;
    buf_init(&b, 0);
    cli__pretty_json(&b, in, strlen(in), 2);
    assert_string_equal(buf_cstr(&b), "  {\n"
                                      "    \"a\": [\n"
                                      "      1,\n"
                                      "      {}\n"
                                      "    ],\n"
                                      "    \"s\": \"x,{y}\\\":[\",\n"
                                      "    \"e\": []\n"
                                      "  }");
    buf_free(&b);
}

/* Run the table functions with stdout in a temporary file; returns what
 * they printed (free()). */
static char *print_table(const struct cli_table *t)
{
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    FILE *f = tmpfile();
    assert_true(saved >= 0 && f != NULL);
    assert_true(dup2(fileno(f), STDOUT_FILENO) >= 0);
    cli__table_print(t);
    fflush(stdout);
    assert_true(dup2(saved, STDOUT_FILENO) >= 0);
    close(saved);
    long n = ftell(f);
    assert_true(n >= 0);
    char *out = xcalloc(1, (size_t)n + 1);
    rewind(f);
    assert_int_equal(fread(out, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    return out;
}

static void test_table(void **state)
{
    (void)state;
    struct cli_table t;
    cli__table_init(&t, 3);
    cli__table_row(&t, "ID", "NAME", "STATE");
    cli__table_row(&t, "1", "caf\xc3\xa9", NULL);
    cli__table_row(&t, "22", "a\nb", "active");
    cli__table_color(&t, 2, CLI_COLOR_GREEN);
    char *out = print_table(&t);
    /* widths count code points; NULL shows "-"; control characters go */
    assert_string_equal(out, "ID  NAME  STATE\n"
                             "1   caf\xc3\xa9  -\n"
                             "22  a b   " CLI_COLOR_GREEN "active"
                             CLI_COLOR_RESET "\n");
    free(out);
    cli__table_free(&t);
    cli__table_free(&t); /* freeing twice is harmless */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_long),
        cmocka_unit_test(test_parse_duration),
        cmocka_unit_test_setup(test_fmt_times, set_utc),
        cmocka_unit_test(test_fmt_rel),
        cmocka_unit_test(test_fmt_dur),
        cmocka_unit_test(test_clean),
        cmocka_unit_test(test_pretty_json),
        cmocka_unit_test(test_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
