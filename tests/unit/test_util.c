/* test_util.c -- unit tests for util: the raw JSON scanner and buffers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/jraw.h"
#include "util/util.h"

static int check(const char *s, int depth)
{
    struct err e = {0};
    return jraw_check(s, strlen(s), depth, &e);
}

static void test_jraw_valid(void **state)
{
    (void)state;
    static const char *const ok[] = {
        "{}", "[]", "0", "-0", "-0.0", "1e400", "1E+2", "0.1000",
        "12345678901234567890", "\"\"", "true", "false", "null",
        " { \"a\" : [ 1 , 2 , { } ] } ", "\"\\u00e9\\ud83d\\ude00\"",
        "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", "\"h\xc3\xa9\xf0\x9f\x98\x80\"",
        "[[[[]]]]", "{\"a\":{\"b\":{\"c\":null}}}", "\"\\u0000\"",
        /* surrogate escapes without their pair: valid JSON text */
        "\"\\ud800\"", "\"\\udc00\"", "\"\\ud800\\u0041\"", "\"\\udfff\\ud800\"",
        "{\"\\ud83d\":[\"x\\udbff\"]}", "\"\\ud800\\\\u0041\"",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        if (check(ok[i], 64) != 0)
            fail_msg("rejected valid JSON: %s", ok[i]);
    }
}

static void test_jraw_invalid(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "", " ", "{", "}", "[1,]", "{\"a\":1,}", "{a:1}", "01", "1.", ".5",
        "1e", "+1", "-", "tru", "nul", "\"abc", "\"\\x\"", "\"\\u12\"",
        "\"\t\"",
        "[1 2]", "{\"a\" 1}", "{} {}", "\"\xff\"", "\"\xc0\xaf\"",
        "\"\xed\xa0\x80\"", "\"\xf4\x90\x80\x80\"", "NaN", "Infinity",
        "[1]x", "\"\xe2\x82\"",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (check(bad[i], 64) == 0)
            fail_msg("accepted invalid JSON: %s", bad[i]);
    }
}

/* Lone surrogate escapes: decoded as U+FFFD, tamed for jansson, pairs kept. */
static void test_jraw_lone_surrogates(void **state)
{
    (void)state;
    static const struct {
        const char *json, *decoded, *tamed;
    } cases[] = {
        {"\"\\ud800\"", "\xef\xbf\xbd", "\"\\ufffd\""},
        {"\"a\\udc00b\"", "a\xef\xbf\xbd" "b", "\"a\\ufffdb\""},
        {"\"\\ud83d\\ude00\"", "\xf0\x9f\x98\x80", "\"\\ud83d\\ude00\""},
        {"\"\\ud83d\\u0041\"", "\xef\xbf\xbd" "A", "\"\\ufffd\\u0041\""},
        {"\"\\udfff\\ud800\"", "\xef\xbf\xbd\xef\xbf\xbd", "\"\\ufffd\\ufffd\""},
        {"\"\\ud800\\\\u0041\"", "\xef\xbf\xbd\\u0041", "\"\\ufffd\\\\u0041\""},
        {"\"\\\\ud800\"", "\\ud800", "\"\\\\ud800\""},
        {"\"\\ud800\\ud800\\udc00\"", "\xef\xbf\xbd\xf0\x90\x80\x80",
         "\"\\ufffd\\ud800\\udc00\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *j = cases[i].json;
        assert_int_equal(check(j, 8), 0);
        struct buf b;
        buf_init(&b, 0);
        assert_true(jraw_str(&b, (struct jraw_span){j, strlen(j)}));
        assert_string_equal(buf_cstr(&b), cases[i].decoded);
        buf_free(&b);
        buf_init(&b, 0);
        jraw_tame_surrogates(&b, j, strlen(j));
        assert_string_equal(buf_cstr(&b), cases[i].tamed);
        buf_free(&b);
        /* the text is kept as it is */
        buf_init(&b, 0);
        jraw_compact(&b, j, strlen(j));
        assert_string_equal(buf_cstr(&b), j);
        buf_free(&b);
    }
    /* a key spelled with a lone surrogate matches U+FFFD */
    const char *o = "{\"k\\ud800\":1}";
    struct jraw_span sp;
    assert_true(jraw_member(o, strlen(o), "k\xef\xbf\xbd", &sp, NULL));
}

static void test_jraw_depth(void **state)
{
    (void)state;
    char deep[200];
    for (int d = 1; d <= 66; d++) {
        memset(deep, 0, sizeof deep);
        for (int i = 0; i < d; i++)
            deep[i] = '[';
        for (int i = 0; i < d; i++)
            deep[d + i] = ']';
        struct err e = {0};
        int rc = jraw_check(deep, strlen(deep), 64, &e);
        if (d <= 64)
            assert_int_equal(rc, 0);
        else {
            assert_int_equal(rc, RR_E_INVAL);
            assert_non_null(strstr(e.msg, "nesting deeper than 64"));
        }
    }
    /* A million open brackets: bounded, no stack overflow. */
    size_t n = 1000000;
    char *huge = malloc(n);
    memset(huge, '[', n);
    assert_int_equal(jraw_check(huge, n, 64, NULL), RR_E_INVAL);
    free(huge);
}

static void test_jraw_error_message(void **state)
{
    (void)state;
    struct err e = {0};
    assert_int_equal(jraw_check("{\"a\":]", 6, 64, &e), RR_E_INVAL);
    assert_non_null(strstr(e.msg, "offset 5"));
    assert_int_equal(jraw_check("[1,2", 4, 64, &e), RR_E_INVAL);
    assert_non_null(strstr(e.msg, "end of input"));
}

static void test_jraw_compact(void **state)
{
    (void)state;
    const char *in = " {\n \"a b\" : [ 1 , 2.50 , \"x \\\" y\" ] ,\t\"c\":1e400 } ";
    struct buf b;
    buf_init(&b, 0);
    jraw_compact(&b, in, strlen(in));
    assert_string_equal(buf_cstr(&b), "{\"a b\":[1,2.50,\"x \\\" y\"],\"c\":1e400}");
    buf_free(&b);
}

static void test_jraw_member(void **state)
{
    (void)state;
    const char *s = "{ \"x\" : {\"pipeline\":1}, \"pipeline\" : {\"k\": [1, {}]} , "
                    "\"\\u0070ipe\\u006cine2\": \"v\", \"seq\": 7 }";
    struct jraw_span sp, key;
    assert_true(jraw_member(s, strlen(s), "pipeline", &sp, &key));
    assert_int_equal(sp.n, strlen("{\"k\": [1, {}]}"));
    assert_memory_equal(sp.p, "{\"k\": [1, {}]}", sp.n);
    assert_memory_equal(key.p, "\"pipeline\"", key.n);
    assert_true(jraw_member(s, strlen(s), "pipeline2", &sp, NULL));
    assert_memory_equal(sp.p, "\"v\"", sp.n);
    assert_true(jraw_member(s, strlen(s), "seq", &sp, NULL));
    assert_memory_equal(sp.p, "7", sp.n);
    assert_false(jraw_member(s, strlen(s), "k", &sp, NULL));
    assert_false(jraw_member("[1]", 3, "k", &sp, NULL));

    /* Duplicate keys: the last one wins, as in common parsers. */
    const char *d = "{\"a\":1,\"a\":22}";
    assert_true(jraw_member(d, strlen(d), "a", &sp, NULL));
    assert_memory_equal(sp.p, "22", sp.n);

    /* Astral key via surrogate escapes. */
    const char *u = "{\"\\ud83d\\ude00\":true}";
    assert_true(jraw_member(u, strlen(u), "\xf0\x9f\x98\x80", &sp, NULL));
    assert_memory_equal(sp.p, "true", sp.n);
}

static void test_jraw_member_garbage(void **state)
{
    (void)state;
    /* Lookup is also used best-effort on invalid input: it must stay in bounds. */
    static const char *const junk[] = {
        "{\"seq\":", "{\"seq", "{\"", "{", "{\"a\":[", "{\"\\u12", "{\"\\",
        "{\"a\":\"\\u", "{\"a\":1,\"seq\":12",
    };
    struct jraw_span sp;
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
        size_t n = strlen(junk[i]);
        char *copy = malloc(n); /* exact size so ASan sees any overrun */
        memcpy(copy, junk[i], n);
        (void)jraw_member(copy, n, "seq", &sp, NULL);
        free(copy);
    }
}

static void test_jraw_members_and_strings(void **state)
{
    (void)state;
    const char *s = "{\"seq\":1,\"t\\u0079pe\":\"req\\u0075est\",\"command\":"
                    "\"a\\\"b\\\\c\\n\\ud83d\\ude00\\u0000z\",\"seq\":[2],\"x\":{\"seq\":3}}";
    static const char *const keys[] = {"seq", "type", "command", "absent"};
    struct jraw_span v[4];
    assert_true(jraw_members(s, strlen(s), keys, 4, v));
    assert_int_equal(v[0].n, 3); /* the last "seq" */
    assert_memory_equal(v[0].p, "[2]", 3);
    assert_true(jraw_str_eq(v[1], "request"));
    assert_false(jraw_str_eq(v[1], "reques"));
    assert_false(jraw_str_eq(v[1], "requests"));
    assert_false(jraw_str_eq(v[0], "[2]")); /* not a string */
    assert_null(v[3].p);

    struct buf b;
    buf_init(&b, 0);
    assert_true(jraw_str(&b, v[2]));
    assert_int_equal(b.len, 12);
    assert_memory_equal(buf_data(&b), "a\"b\\c\n\xf0\x9f\x98\x80\0z", 12);
    buf_reset(&b);
    assert_false(jraw_str(&b, v[0]));
    assert_int_equal(b.len, 0);
    struct jraw_span empty = {"\"\"", 2};
    assert_true(jraw_str(&b, empty));
    assert_int_equal(b.len, 0);
    assert_true(jraw_str_eq(empty, ""));
    buf_free(&b);

    assert_false(jraw_members("[1]", 3, keys, 4, v));
    assert_null(v[0].p);
    assert_true(jraw_members(" {} ", 4, keys, 4, v));
    assert_null(v[0].p);
}

static void test_buf_i64(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 0);
    buf_i64(&b, 0);
    buf_putc(&b, ' ');
    buf_i64(&b, -42);
    buf_putc(&b, ' ');
    buf_i64(&b, INT64_MAX);
    buf_putc(&b, ' ');
    buf_i64(&b, INT64_MIN);
    assert_string_equal(buf_cstr(&b),
                        "0 -42 9223372036854775807 -9223372036854775808");
    buf_free(&b);
}

static void test_buf_json(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 16);
    buf_json_str(&b, "a\"b\\c\n\x01\x7f\xc3\xa9", 10);
    assert_string_equal(buf_cstr(&b), "\"a\\\"b\\\\c\\n\\u0001\x7f\xc3\xa9\"");
    buf_reset(&b);
    buf_json_cstr(&b, NULL);
    buf_putc(&b, ' ');
    buf_json_time(&b, 1763797397.5123449);
    assert_string_equal(buf_cstr(&b), "null 1763797397.512345");
    buf_reset(&b);
    for (int i = 0; i < 1000; i++)
        buf_printf(&b, "%04d", i);
    assert_int_equal(b.len, 4000);
    assert_memory_equal(buf_data(&b) + 3996, "0999", 4);
    size_t n;
    char *s = buf_take(&b, &n);
    assert_int_equal(n, 4000);
    free(s);
    /* one call longer than the formatting fast path: formatted again in place */
    char big[1001];
    memset(big, 'x', 1000);
    big[1000] = '\0';
    buf_puts(&b, "ab");
    buf_printf(&b, "<%s|%d>", big, 42);
    assert_int_equal(b.len, 2 + 1005);
    assert_memory_equal(buf_data(&b), "ab<xx", 5);
    assert_memory_equal(buf_data(&b) + 2 + 1001, "|42>", 4);
    buf_free(&b);
}

static void test_buf_json_bytes(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 0);
    const char in[] = "ok\xc3\xa9\xff\x00z\xed\xa0\x80\xe2\x82";
    buf_json_bytes(&b, in, sizeof in - 1);
    assert_string_equal(buf_cstr(&b), "\"ok\xc3\xa9\xef\xbf\xbd\\u0000z"
                                      "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
                                      "\xef\xbf\xbd\xef\xbf\xbd\"");
    assert_int_equal(jraw_check(buf_data(&b), b.len, 4, NULL), 0);
    buf_free(&b);
}

static void test_buf_json_time(void **state)
{
    (void)state;
    static const struct {
        double t;
        const char *want;
    } cases[] = {
        {0, "0.000000"},
        {1767225600.25, "1767225600.250000"},
        {1763797397.5123449, "1763797397.512345"},
        {0.0000004, "0.000000"},
        {0.0000006, "0.000001"},
        {59.9999996, "60.000000"},
        {-1.5, "-1.500000"},
        {253402300799.999999, "253402300800.000000"},
    };
    struct buf b;
    buf_init(&b, 0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        buf_reset(&b);
        buf_json_time(&b, cases[i].t);
        assert_string_equal(buf_cstr(&b), cases[i].want);
    }
    /* agrees with printf's rounding on ordinary timestamps */
    for (int i = 0; i < 100000; i++) {
        double t = 1.7e9 + i * 0.3579 + i * 1e-7;
        char want[64];
        snprintf(want, sizeof want, "%.6f", t);
        buf_reset(&b);
        buf_json_time(&b, t);
        assert_string_equal(buf_cstr(&b), want);
    }
    buf_free(&b);
}

static void test_err_set(void **state)
{
    (void)state;
    struct err e;
    assert_int_equal(err_set(&e, RR_E_NOTFOUND, "x %d", 5), RR_E_NOTFOUND);
    assert_string_equal(e.msg, "x 5");
    assert_int_equal(err_set(NULL, RR_E_INVAL, "ignored"), RR_E_INVAL);
    assert_string_equal(err_str(RR_E_EXISTS), "already exists");
}

/* jraw_tame: numbers a double cannot hold read as 0 (strings untouched),
 * lone surrogate escapes as U+FFFD. */
static void test_jraw_tame(void **state)
{
    (void)state;
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"{\"n\":1e400,\"s\":\"1e400\",\"m\":-2.5}",
         "{\"n\":0,\"s\":\"1e400\",\"m\":-2.5}"},
        {"[-1e999,\"\\\"1e999\"]", "[0,\"\\\"1e999\"]"},
        {"\"open \\", "\"open \\"}, /* ends inside a string: copied as is */
        {"[1e400,\"\\ud800\"]", "[0,\"\\ufffd\"]"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct buf b;
        buf_init(&b, 0);
        jraw_tame(&b, cases[i].in, strlen(cases[i].in));
        assert_string_equal(buf_cstr(&b), cases[i].want);
        buf_free(&b);
    }
}

/* jraw_load: jansson's tree, tamed only when jansson refuses the text. */
static void test_jraw_load(void **state)
{
    (void)state;
    const size_t flags = JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL;
    const char *plain = "{\"n\":1.5,\"s\":\"a\\u0000b\"}";
    json_t *v = jraw_load(plain, strlen(plain), flags, NULL);
    assert_non_null(v);
    assert_true(json_real_value(json_object_get(v, "n")) == 1.5);
    assert_int_equal(json_string_length(json_object_get(v, "s")), 3);
    json_decref(v);
    const char *wild = "[1e400,\"\\ud800x\"]";
    v = jraw_load(wild, strlen(wild), flags, NULL);
    assert_non_null(v);
    assert_true(json_real_value(json_array_get(v, 0)) == 0);
    assert_string_equal(json_string_value(json_array_get(v, 1)), "\xef\xbf\xbdx");
    json_decref(v);
    json_error_t err;
    assert_null(jraw_load("{\"a\":", 5, flags, &err));
    assert_true(err.text[0] != '\0');
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jraw_valid),
        cmocka_unit_test(test_jraw_tame),
        cmocka_unit_test(test_jraw_load),
        cmocka_unit_test(test_jraw_invalid),
        cmocka_unit_test(test_jraw_lone_surrogates),
        cmocka_unit_test(test_jraw_depth),
        cmocka_unit_test(test_jraw_error_message),
        cmocka_unit_test(test_jraw_compact),
        cmocka_unit_test(test_jraw_member),
        cmocka_unit_test(test_jraw_member_garbage),
        cmocka_unit_test(test_jraw_members_and_strings),
        cmocka_unit_test(test_buf_i64),
        cmocka_unit_test(test_buf_json),
        cmocka_unit_test(test_buf_json_bytes),
        cmocka_unit_test(test_buf_json_time),
        cmocka_unit_test(test_err_set),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
