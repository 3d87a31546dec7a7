/* test_dap_guard.c -- unit tests for admission control (dap/guard.c): the
 * per-address and global buckets of failed authentications, the cap on
 * unauthenticated connections, the bounded table and its eviction order,
 * and the aggregated log lines. Time is injected: every call takes its own
 * "now" in milliseconds. Log lines go to a counting sink. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dap/dap_internal.h"

#define T0 1000000 /* ms; any monotonic start */

struct lines {
    int n;
    char last[4][512]; /* the last four, newest in [(n - 1) % 4] */
};

static void sink(void *ud, enum log_level lvl, const char *line)
{
    (void)lvl;
    struct lines *l = ud;
    snprintf(l->last[l->n % 4], sizeof l->last[0], "%s", line);
    l->n++;
}

static const char *last_line(const struct lines *l)
{
    return l->n ? l->last[(l->n - 1) % 4] : "";
}

static struct dap_guard *guard(struct dap_guard_config *gc, struct lines *l)
{
    gc->log = sink;
    gc->log_ud = l;
    struct dap_guard *g = dap__guard_new(gc);
    assert_non_null(g);
    return g;
}

static struct dap_addr addr(const char *text)
{
    struct dap_addr a;
    assert_int_equal(dap__addr_parse(text, &a), 0);
    return a;
}

/* The i-th of many addresses: 10.x.y.z. */
static struct dap_addr nth(unsigned i)
{
    char text[32];
    snprintf(text, sizeof text, "10.%u.%u.%u", (i >> 16) & 255, (i >> 8) & 255,
             i & 255);
    return addr(text);
}

/* ---------------------------------------------------------------- addresses */

static void test_addresses(void **state)
{
    (void)state;
    char out[DAP_ADDR_TEXT_MAX];
    struct dap_addr a = addr("192.0.2.1"), b = addr("::ffff:192.0.2.1");
    assert_memory_equal(a.b, b.b, 16);
    dap__addr_format(&a, out);
    assert_string_equal(out, "192.0.2.1");
    /* one IPv6 host is one /64 */
    struct dap_addr c = addr("2001:db8:1:2:3:4:5:6"), d = addr("2001:db8:1:2::9");
    assert_memory_equal(c.b, d.b, 16);
    dap__addr_format(&c, out);
    assert_string_equal(out, "2001:db8:1:2::/64");
    struct dap_addr e = addr("2001:db8:1:3::9");
    assert_memory_not_equal(c.b, e.b, 16);
    struct dap_addr bad;
    assert_int_equal(dap__addr_parse("example.com", &bad), RR_E_INVAL);

    struct sockaddr_in sin = {.sin_family = AF_INET};
    inet_pton(AF_INET, "192.0.2.1", &sin.sin_addr);
    struct dap_addr f;
    dap__addr_from_sockaddr(&f, (const struct sockaddr *)&sin);
    assert_memory_equal(f.b, a.b, 16);
    dap__addr_from_sockaddr(&f, NULL);
    dap__addr_format(&f, out);
    assert_string_equal(out, "an unknown address");
}

/* ---------------------------------------------------------------- start-up */

/* A guessable ROCKETRIDE_APIKEY is refused beyond loopback (and only
 * warned about on it); a strong one, or none, is fine anywhere. */
static void test_dev_key_check(void **state)
{
    (void)state;
    struct dap_config cfg;
    dap_config_defaults(&cfg);
    struct err e = {0};
    static const char *const loopback[] = {"127.0.0.1", "127.1.2.3", "::1",
                                           "localhost", "::ffff:127.0.0.1"};
    static const char *const outside[] = {"0.0.0.0", "::", "192.168.1.10",
                                          "2001:db8::1", "example.com",
                                          "::ffff:10.0.0.1"};
    static const char *const weak[] = {"MYAPIKEY", "short", "fifteen-chars15"};
    for (size_t k = 0; k < sizeof weak / sizeof weak[0]; k++) {
        cfg.dev_key = weak[k];
        for (size_t i = 0; i < sizeof loopback / sizeof loopback[0]; i++) {
            cfg.listen_host = loopback[i];
            assert_int_equal(dap_config_check(&cfg, &e), 0);
        }
        for (size_t i = 0; i < sizeof outside / sizeof outside[0]; i++) {
            cfg.listen_host = outside[i];
            assert_int_equal(dap_config_check(&cfg, &e), RR_E_INVAL);
            assert_non_null(strstr(e.msg, "refusing to start: ROCKETRIDE_APIKEY is "));
            assert_non_null(strstr(e.msg, "openssl rand -hex 32"));
            if (k > 0) /* a key of one's own is a secret, weak or not */
                assert_null(strstr(e.msg, weak[k]));
        }
    }
    cfg.dev_key = "MYAPIKEY";
    cfg.listen_host = "0.0.0.0";
    assert_int_equal(dap_config_check(&cfg, &e), RR_E_INVAL);
    assert_non_null(strstr(e.msg, "MYAPIKEY, the SDKs' well-known default key"));
    cfg.dev_key = "sixteen-chars-16";
    assert_int_equal(dap_config_check(&cfg, &e), 0);
    cfg.dev_key = NULL;
    assert_int_equal(dap_config_check(&cfg, &e), 0);
}

/* ---------------------------------------------------------------- buckets */

/* 30 failures at once, then one per 2 s; a throttled attempt costs nothing
 * and checks nothing; other addresses are not affected. */
static void test_address_bucket(void **state)
{
    (void)state;
    struct dap_guard_config gc;
    dap__guard_config_defaults(&gc);
    struct lines l = {0};
    struct dap_guard *g = guard(&gc, &l);
    struct dap_addr a = addr("192.0.2.1"), b = addr("192.0.2.2");
    int retry = -1;
    for (int i = 0; i < 30; i++) {
        assert_int_equal(dap__guard_auth_check(g, &a, T0, &retry), DAP_GUARD_OK);
        dap__guard_auth_failed(g, &a, T0, "Invalid API key");
    }
    assert_int_equal(dap__guard_auth_check(g, &a, T0, &retry), DAP_GUARD_BY_ADDRESS);
    assert_int_equal(retry, 2);
    assert_int_equal(dap__guard_auth_check(g, &b, T0, &retry), DAP_GUARD_OK);
    /* hammering while throttled does not push the next token back */
    for (int t = 0; t < 1999; t += 100)
        assert_int_equal(dap__guard_auth_check(g, &a, T0 + t, &retry),
                         DAP_GUARD_BY_ADDRESS);
    assert_int_equal(dap__guard_auth_check(g, &a, T0 + 1999, &retry),
                     DAP_GUARD_BY_ADDRESS);
    assert_int_equal(retry, 1);
    assert_int_equal(dap__guard_auth_check(g, &a, T0 + 2000, &retry), DAP_GUARD_OK);
    dap__guard_auth_failed(g, &a, T0 + 2000, "Invalid API key");
    assert_int_equal(dap__guard_auth_check(g, &a, T0 + 2000, &retry),
                     DAP_GUARD_BY_ADDRESS);
    /* 10 s of quiet: five more checks */
    for (int i = 0; i < 5; i++) {
        assert_int_equal(dap__guard_auth_check(g, &a, T0 + 12000, &retry), DAP_GUARD_OK);
        dap__guard_auth_failed(g, &a, T0 + 12000, "Invalid API key");
    }
    assert_int_equal(dap__guard_auth_check(g, &a, T0 + 12000, &retry),
                     DAP_GUARD_BY_ADDRESS);
    /* a success does not refill the bucket */
    dap__guard_auth_ok(g, &a, T0 + 12000);
    assert_int_equal(dap__guard_auth_check(g, &a, T0 + 12000, &retry),
                     DAP_GUARD_BY_ADDRESS);
    const struct dap_guard_stats *st = dap__guard_stats(g);
    assert_int_equal(st->auth_failed, 36);
    assert_int_equal(st->throttled_address, 25);
    assert_int_equal(st->throttled_global, 0);
    dap__guard_free(g);
}

/* The global bucket stops repeated failures from many addresses, but never
 * an address in good standing: one that has not failed, or that
 * authenticated recently; and it refills, so the limit lifts by itself. */
static void test_global_bucket(void **state)
{
    (void)state;
    struct dap_guard_config gc;
    dap__guard_config_defaults(&gc);
    gc.slots = 1 << 16; /* no address forgotten: this is about the buckets */
    gc.global_burst = 20;
    gc.global_rate = 2;
    gc.trust_ms = 60000;
    struct lines l = {0};
    struct dap_guard *g = guard(&gc, &l);
    struct dap_addr returning = addr("198.51.100.7");
    dap__guard_auth_ok(g, &returning, T0);
    dap__guard_auth_failed(g, &returning, T0, "Invalid API key"); /* a typo */

    /* a flood: 500 addresses, each failing twice while it may */
    int retry = -1, global = 0;
    for (int round = 0; round < 2; round++)
        for (unsigned i = 0; i < 500; i++) {
            struct dap_addr a = nth(i);
            enum dap_guard_verdict v = dap__guard_auth_check(g, &a, T0 + 1, &retry);
            if (v == DAP_GUARD_OK)
                dap__guard_auth_failed(g, &a, T0 + 1, "Invalid API key");
            else
                global += v == DAP_GUARD_BY_GLOBAL;
        }
    /* every first try was checked, then the bucket ran dry */
    assert_int_equal(global, 500);
    assert_int_equal(dap__guard_stats(g)->auth_failed, 501);
    struct dap_addr flooder = nth(7);
    assert_int_equal(dap__guard_auth_check(g, &flooder, T0 + 1, &retry),
                     DAP_GUARD_BY_GLOBAL);
    assert_int_equal(retry, 1);
    /* in good standing: checked all the same */
    struct dap_addr newcomer = addr("203.0.113.9");
    assert_int_equal(dap__guard_auth_check(g, &newcomer, T0 + 1, &retry), DAP_GUARD_OK);
    assert_int_equal(dap__guard_auth_check(g, &returning, T0 + 1, &retry), DAP_GUARD_OK);
    /* a newcomer that failed is no longer in good standing */
    dap__guard_auth_failed(g, &newcomer, T0 + 1, "Invalid API key");
    assert_int_equal(dap__guard_auth_check(g, &newcomer, T0 + 1, &retry),
                     DAP_GUARD_BY_GLOBAL);
    /* the bucket refills at 2 a second: half a second later one may try */
    assert_int_equal(dap__guard_auth_check(g, &flooder, T0 + 501, &retry), DAP_GUARD_OK);
    /* trust expires */
    int64_t later = T0 + 60001;
    for (unsigned i = 0; i < 200; i++) {
        struct dap_addr a = nth(i);
        if (dap__guard_auth_check(g, &a, later, &retry) == DAP_GUARD_OK)
            dap__guard_auth_failed(g, &a, later, "Invalid API key");
    }
    assert_int_equal(dap__guard_auth_check(g, &returning, later, &retry),
                     DAP_GUARD_BY_GLOBAL);
    /* once the flood stops, everyone is back within burst / rate seconds */
    assert_int_equal(dap__guard_auth_check(g, &flooder, later + 10000, &retry),
                     DAP_GUARD_OK);
    dap__guard_free(g);
}

/* ---------------------------------------------------------------- connections */

static void test_connection_cap(void **state)
{
    (void)state;
    struct dap_guard_config gc;
    dap__guard_config_defaults(&gc);
    gc.max_unauth = 3;
    struct lines l = {0};
    struct dap_guard *g = guard(&gc, &l);
    struct dap_addr a = addr("192.0.2.1"), b = addr("192.0.2.2");
    struct dap_guard_conn c[5] = {{0}};
    for (int i = 0; i < 3; i++)
        assert_int_equal(dap__guard_conn_open(g, &a, false, T0, &c[i]), 0);
    assert_int_equal(dap__guard_conn_open(g, &a, false, T0, &c[3]), RR_E_LIMIT);
    assert_int_equal(c[3].gen, 0); /* untouched: nothing to close */
    assert_int_equal(dap__guard_conn_open(g, &b, false, T0, &c[4]), 0);
    dap__guard_conn_close(g, &c[1]);
    dap__guard_conn_close(g, &c[1]); /* idempotent */
    assert_int_equal(dap__guard_conn_open(g, &a, false, T0, &c[1]), 0);
    assert_int_equal(dap__guard_conn_open(g, &a, false, T0, &c[3]), RR_E_LIMIT);
    /* a session that deauthenticates is counted again, over the cap too */
    assert_int_equal(dap__guard_conn_open(g, &a, true, T0, &c[3]), 0);
    dap__guard_conn_close(g, &c[3]);
    dap__guard_conn_close(g, &c[0]);
    assert_int_equal(dap__guard_conn_open(g, &a, false, T0, &c[0]), 0);
    assert_int_equal(dap__guard_stats(g)->refused, 2);
    /* no cap */
    gc.max_unauth = 0;
    struct dap_guard *open = guard(&gc, &l);
    for (int i = 0; i < 1000; i++) {
        struct dap_guard_conn x;
        assert_int_equal(dap__guard_conn_open(open, &a, false, T0, &x), 0);
    }
    dap__guard_free(open);
    dap__guard_free(g);
}

/* ---------------------------------------------------------------- table */

/* However many addresses come, the table holds at most `slots`, and it
 * forgets the least useful first: an address that only connected before
 * one with fresh failures, that before a trusted one, that before one with
 * connections open. */
static void test_table_is_bounded(void **state)
{
    (void)state;
    struct dap_guard_config gc;
    dap__guard_config_defaults(&gc);
    gc.slots = 16;
    gc.fail_burst = 3;
    struct lines l = {0};
    struct dap_guard *g = guard(&gc, &l);
    struct dap_addr trusted = addr("198.51.100.7");
    int retry;
    dap__guard_auth_ok(g, &trusted, T0);
    for (int i = 0; i < 3; i++)
        dap__guard_auth_failed(g, &trusted, T0, "Invalid API key");
    assert_int_equal(dap__guard_auth_check(g, &trusted, T0, &retry),
                     DAP_GUARD_BY_ADDRESS);
    for (unsigned i = 0; i < 100000; i++) {
        struct dap_addr a = nth(i);
        dap__guard_auth_failed(g, &a, T0 + 1 + i / 100, "Invalid API key");
    }
    const struct dap_guard_stats *st = dap__guard_stats(g);
    assert_true(st->tracked <= 16);
    assert_true(st->evicted >= 100000 - 16);
    /* the trusted address kept its throttle through the flood */
    assert_int_equal(dap__guard_auth_check(g, &trusted, T0 + 1001, &retry),
                     DAP_GUARD_BY_ADDRESS);
    dap__guard_free(g);

    /* One set of 8. When every entry holds a connection, the oldest must
     * give way, and its connection later closes harmlessly. */
    gc.slots = 8;
    gc.max_unauth = 1;
    g = guard(&gc, &l);
    struct dap_guard_conn c[9], x;
    for (unsigned i = 0; i < 8; i++) {
        struct dap_addr a = nth(i);
        assert_int_equal(dap__guard_conn_open(g, &a, false, T0 + i, &c[i]), 0);
    }
    struct dap_addr ninth = nth(8);
    assert_int_equal(dap__guard_conn_open(g, &ninth, false, T0 + 10, &c[8]), 0);
    dap__guard_conn_close(g, &c[0]); /* nth(0) was forgotten: ignored */
    assert_int_equal(dap__guard_conn_open(g, &ninth, false, T0 + 10, &x), RR_E_LIMIT);
    /* Addresses that only connect and leave take the cheapest slot, never
     * one that counts a connection. */
    dap__guard_conn_close(g, &c[8]);
    for (unsigned i = 100; i < 200; i++) {
        struct dap_addr a = nth(i);
        assert_int_equal(dap__guard_conn_open(g, &a, false, T0 + 20, &x), 0);
        dap__guard_conn_close(g, &x);
    }
    for (unsigned i = 1; i < 8; i++) {
        struct dap_addr a = nth(i);
        assert_int_equal(dap__guard_conn_open(g, &a, false, T0 + 30, &x), RR_E_LIMIT);
    }
    assert_true(dap__guard_stats(g)->tracked <= 8);
    dap__guard_free(g);
}

/* ---------------------------------------------------------------- logs */

/* 10,000 attempts from one address over 25 s: the first failure is logged
 * with its reason, then one line for the address and one global line per
 * 10 s; a quiet address's next failure is logged again at once. */
static void test_log_lines_are_bounded(void **state)
{
    (void)state;
    struct dap_guard_config gc;
    dap__guard_config_defaults(&gc);
    struct lines l = {0};
    struct dap_guard *g = guard(&gc, &l);
    struct dap_addr a = addr("192.0.2.1");
    int retry, checked = 0;
    for (int i = 0; i < 10000; i++) {
        int64_t now = T0 + i * 25 / 10; /* 2.5 ms apart */
        if (dap__guard_auth_check(g, &a, now, &retry) == DAP_GUARD_OK) {
            dap__guard_auth_failed(g, &a, now, "Invalid API key");
            checked++;
        }
        dap__guard_flush(g, now, false);
        if (i == 0)
            assert_string_equal(last_line(&l),
                                "auth failed: Invalid API key (from 192.0.2.1; "
                                "more are summarised every 10 s)");
    }
    assert_int_equal(checked, 30 + 12); /* the burst, then one per 2 s */
    assert_int_equal(l.n, 1 + 2 + 2);   /* first line, two summaries of two lines */
    assert_non_null(strstr(l.last[1], "from 192.0.2.1 in the last 10 s: "));
    assert_non_null(strstr(l.last[2], "before authentication, in the last 10 s: "));
    assert_non_null(strstr(l.last[2], "auths throttled"));
    /* what is left is written at the next flush, or when forced */
    assert_true(dap__guard_flush(g, T0 + 25000, false) > 0);
    assert_int_equal(dap__guard_flush(g, T0 + 25000, true), -1);
    assert_int_equal(l.n, 7);
    assert_int_equal(dap__guard_flush(g, T0 + 25000, true), -1); /* nothing left */
    assert_int_equal(l.n, 7);
    /* quiet for an interval: the next failure has its own line again */
    dap__guard_auth_failed(g, &a, T0 + 40000, "API key revoked");
    assert_int_equal(l.n, 8);
    assert_non_null(strstr(last_line(&l), "auth failed: API key revoked"));
    assert_int_equal(dap__guard_flush(g, T0 + 50000, false), -1); /* logged */
    assert_int_equal(l.n, 8);
    dap__guard_free(g);
}

/* Failures from 5,000 addresses in one interval: at most log_firsts own
 * lines, then log_top address lines and one global line. */
static void test_log_lines_many_addresses(void **state)
{
    (void)state;
    struct dap_guard_config gc;
    dap__guard_config_defaults(&gc);
    struct lines l = {0};
    struct dap_guard *g = guard(&gc, &l);
    for (unsigned i = 0; i < 5000; i++) {
        struct dap_addr a = nth(i);
        struct dap_guard_conn c;
        if (dap__guard_conn_open(g, &a, false, T0, &c) == 0)
            dap__guard_conn_close(g, &c);
        dap__guard_auth_failed(g, &a, T0 + 1, "Invalid API key");
        dap__guard_auth_failed(g, &a, T0 + 2, "Invalid API key");
    }
    assert_int_equal(l.n, gc.log_firsts);
    assert_true(dap__guard_flush(g, T0 + 10000, false) > 0); /* not yet */
    assert_int_equal(dap__guard_flush(g, T0 + 20000, false), -1);
    assert_int_equal(l.n, gc.log_firsts + gc.log_top + 1);
    assert_non_null(strstr(last_line(&l), "10000 failed auths"));
    dap__guard_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_addresses),
        cmocka_unit_test(test_dev_key_check),
        cmocka_unit_test(test_address_bucket),
        cmocka_unit_test(test_global_bucket),
        cmocka_unit_test(test_connection_cap),
        cmocka_unit_test(test_table_is_bounded),
        cmocka_unit_test(test_log_lines_are_bounded),
        cmocka_unit_test(test_log_lines_many_addresses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
