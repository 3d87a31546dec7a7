/* test_store_keys.c -- unit tests for store/keys.c: users, API keys,
 * permissions, and the checks on user names and labels.
 *
 * Design: every test gets a fresh database file in its own temporary
 * directory (fixture_setup) that fixture_teardown closes and removes. Time is
 * passed in explicitly, never read from the clock, so expiry is exact.
 *
 * Thread: single-threaded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store.h"
#include "tests/unit/fixture.h"

#define T0 FIXTURE_T0

static int is_lower_hex(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return 0;
    return 1;
}

static void test_key_create_auth(void **state)
{
    struct fixture *f = *state;
    char text[STORE_KEY_TEXT_MAX];
    struct store_key k, a;
    fixture_key(f->s, "alice", STORE_PERM_ALL, 0, T0, text, &k);

    assert_int_equal(strlen(text), 4 + 64);
    assert_memory_equal(text, "rrk_", 4);
    assert_true(is_lower_hex(text + 4, 64));
    assert_int_equal(strlen(k.id), 2 + 16);
    assert_memory_equal(k.id, "k_", 2);
    assert_true(is_lower_hex(k.id + 2, 16));
    assert_string_equal(k.user, "alice");
    assert_string_equal(k.label, "test key");
    assert_int_equal(k.perms, STORE_PERM_ALL);
    assert_true(k.created_at == T0);
    assert_true(k.expires_at == 0);
    assert_true(k.revoked_at == 0);

    memset(&a, 0, sizeof a);
    assert_int_equal(store_key_auth(f->s, text, T0 + 1e6, &a), 0);
    assert_string_equal(a.id, k.id);
    assert_string_equal(a.user, "alice");
    assert_string_equal(a.label, "test key");
    assert_int_equal(a.perms, STORE_PERM_ALL);
    assert_true(a.created_at == T0);

    /* Wrong keys: one changed hex digit, truncated, extended, garbage. */
    char bad[STORE_KEY_TEXT_MAX];
    memcpy(bad, text, sizeof bad);
    bad[10] = bad[10] == 'a' ? 'b' : 'a';
    memset(&a, 0x5a, sizeof a);
    struct store_key untouched = a;
    assert_int_equal(store_key_auth(f->s, bad, T0, &a), RR_E_NOTFOUND);
    assert_memory_equal(&a, &untouched, sizeof a); /* OUT written only on success */
    memcpy(bad, text, sizeof bad);
    bad[67] = '\0';
    assert_int_equal(store_key_auth(f->s, bad, T0, &a), RR_E_NOTFOUND);
    char longer[STORE_KEY_TEXT_MAX + 1];
    snprintf(longer, sizeof longer, "%sa", text);
    assert_int_equal(store_key_auth(f->s, longer, T0, &a), RR_E_NOTFOUND);
    assert_int_equal(store_key_auth(f->s, "", T0, &a), RR_E_NOTFOUND);
    assert_int_equal(store_key_auth(f->s, NULL, T0, &a), RR_E_NOTFOUND);
    assert_int_equal(store_key_auth(f->s, k.id, T0, &a), RR_E_NOTFOUND); /* the id is no key */

    /* Label NULL and other permissions; user row is shared. */
    char text2[STORE_KEY_TEXT_MAX];
    struct store_key k2;
    assert_int_equal(store_key_create(f->s, "alice", NULL, STORE_PERM_MONITOR, 0, T0 + 1, text2,
                                      NULL),
                     0);
    assert_string_not_equal(text, text2);
    assert_int_equal(store_key_auth(f->s, text2, T0, &k2), 0);
    assert_string_equal(k2.label, "");
    assert_int_equal(k2.perms, STORE_PERM_MONITOR);
    assert_int_equal(fixture_sql_int(f->path, "SELECT count(*) FROM users"), 1);

    struct store_key g;
    assert_int_equal(store_key_get(f->s, k.id, &g), 0);
    assert_string_equal(g.id, k.id);
    assert_int_equal(store_key_get(f->s, "k_ffffffffffffffff", &g), RR_E_NOTFOUND);
}

static void test_key_revoke_by_id(void **state)
{
    struct fixture *f = *state;
    char text[STORE_KEY_TEXT_MAX];
    struct store_key k, r, a;
    fixture_key(f->s, "bob", STORE_PERM_ALL, 0, T0, text, &k);
    assert_int_equal(store_key_revoke(f->s, k.id, T0 + 10, &r), 0);
    assert_string_equal(r.id, k.id);
    assert_true(r.revoked_at == T0 + 10);

    memset(&a, 0, sizeof a);
    assert_int_equal(store_key_auth(f->s, text, T0 + 11, &a), RR_E_REVOKED);
    assert_string_equal(a.id, k.id); /* filled for REVOKED too */
    assert_string_equal(a.user, "bob");
    assert_true(a.revoked_at == T0 + 10);

    /* Twice: first revoked_at kept, still 0. */
    assert_int_equal(store_key_revoke(f->s, k.id, T0 + 50, &r), 0);
    assert_true(r.revoked_at == T0 + 10);
    assert_int_equal(store_key_revoke(f->s, k.id, T0 + 60, NULL), 0);

    assert_int_equal(store_key_revoke(f->s, "k_0123456789abcdef", T0, &r), RR_E_NOTFOUND);
    assert_int_equal(store_key_revoke(f->s, "", T0, &r), RR_E_NOTFOUND);
    assert_int_equal(store_key_revoke(f->s, NULL, T0, &r), RR_E_NOTFOUND);
}

static void test_key_revoke_by_text(void **state)
{
    struct fixture *f = *state;
    char text[STORE_KEY_TEXT_MAX], other[STORE_KEY_TEXT_MAX];
    struct store_key k, k2, r, a;
    fixture_key(f->s, "carol", STORE_PERM_CONTROL, 0, T0, text, &k);
    fixture_key(f->s, "carol", STORE_PERM_CONTROL, 0, T0, other, &k2);
    assert_int_equal(store_key_revoke(f->s, text, T0 + 5, &r), 0);
    assert_string_equal(r.id, k.id);
    assert_int_equal(store_key_auth(f->s, text, T0 + 6, &a), RR_E_REVOKED);
    assert_int_equal(store_key_auth(f->s, other, T0 + 6, &a), 0); /* only that key */

    char bad[STORE_KEY_TEXT_MAX];
    memcpy(bad, other, sizeof bad);
    bad[20] = bad[20] == '0' ? '1' : '0';
    assert_int_equal(store_key_revoke(f->s, bad, T0, &r), RR_E_NOTFOUND);
    assert_int_equal(store_key_auth(f->s, other, T0 + 6, &a), 0);
}

static void test_key_expiry(void **state)
{
    struct fixture *f = *state;
    char text[STORE_KEY_TEXT_MAX];
    struct store_key k, a;
    fixture_key(f->s, "dave", STORE_PERM_ALL, T0 + 100, T0, text, &k);
    assert_true(k.expires_at == T0 + 100);
    assert_int_equal(store_key_auth(f->s, text, T0 + 99.999, &a), 0);
    memset(&a, 0, sizeof a);
    assert_int_equal(store_key_auth(f->s, text, T0 + 100, &a), RR_E_EXPIRED);
    assert_string_equal(a.id, k.id);
    assert_true(a.expires_at == T0 + 100);
    assert_int_equal(store_key_auth(f->s, text, T0 + 1000, &a), RR_E_EXPIRED);

    /* Revoked wins over expired. */
    assert_int_equal(store_key_revoke(f->s, k.id, T0 + 500, NULL), 0);
    assert_int_equal(store_key_auth(f->s, text, T0 + 1000, &a), RR_E_REVOKED);

    /* An expiry that is not in the future is refused. */
    char t2[STORE_KEY_TEXT_MAX];
    assert_int_equal(store_key_create(f->s, "dave", NULL, STORE_PERM_ALL, T0, T0, t2, NULL),
                     RR_E_INVAL);
    assert_int_equal(store_key_create(f->s, "dave", NULL, STORE_PERM_ALL, -5, T0, t2, NULL),
                     RR_E_INVAL);
}

static void test_perms_parse_format(void **state)
{
    (void)state;
    unsigned p = 99;
    struct err e = {0};
    assert_int_equal(store_perms_parse("task.control,task.monitor", &p, &e), 0);
    assert_int_equal(p, STORE_PERM_ALL);
    assert_int_equal(store_perms_parse("  task.monitor  ", &p, &e), 0);
    assert_int_equal(p, STORE_PERM_MONITOR);
    assert_int_equal(store_perms_parse(" task.control ,\torg.admin\n", &p, &e), 0);
    assert_int_equal(p, STORE_PERM_CONTROL | STORE_PERM_ORG_ADMIN);
    assert_int_equal(store_perms_parse("", &p, &e), 0);
    assert_int_equal(p, 0);
    assert_int_equal(store_perms_parse("task.monitor,task.monitor", &p, &e), 0);
    assert_int_equal(p, STORE_PERM_MONITOR);

    p = 77;
    assert_int_equal(store_perms_parse("task.control,bogus", &p, &e), RR_E_INVAL);
    assert_int_equal(p, 77); /* untouched on failure */
    assert_int_equal(e.code, RR_E_INVAL);
    assert_string_equal(e.msg, "unknown permission 'bogus'");
    assert_int_equal(store_perms_parse(" Task.Control ", &p, &e), RR_E_INVAL);
    assert_string_equal(e.msg, "unknown permission 'Task.Control'");
    assert_int_equal(store_perms_parse("task.control task.monitor", &p, &e), RR_E_INVAL);
    assert_string_equal(e.msg, "unknown permission 'task.control task.monitor'");
    assert_int_equal(store_perms_parse("task", &p, NULL), RR_E_INVAL);

    char out[64];
    store_perms_format(STORE_PERM_ALL, out, sizeof out);
    assert_string_equal(out, "task.control,task.monitor");
    store_perms_format(STORE_PERM_ALL | STORE_PERM_ORG_ADMIN, out, sizeof out);
    assert_string_equal(out, "task.control,task.monitor,org.admin");
    store_perms_format(STORE_PERM_MONITOR, out, sizeof out);
    assert_string_equal(out, "task.monitor");
    store_perms_format(0, out, sizeof out);
    assert_string_equal(out, "");
    store_perms_format(STORE_PERM_ALL, out, 16); /* too small: whole names only */
    assert_string_equal(out, "task.control");

    /* Round trip. */
    for (unsigned bits = 0; bits < 8; bits++) {
        store_perms_format(bits, out, sizeof out);
        assert_int_equal(store_perms_parse(out, &p, &e), 0);
        assert_int_equal(p, bits);
    }
}

struct key_walk {
    int n;
    char ids[8][STORE_KEY_ID_MAX];
    int stop_at;
};

static int key_cb(const struct store_key *k, void *ud)
{
    struct key_walk *w = ud;
    snprintf(w->ids[w->n], sizeof w->ids[w->n], "%s", k->id);
    w->n++;
    return w->n == w->stop_at ? 42 : 0;
}

static void test_key_list_count(void **state)
{
    struct fixture *f = *state;
    char text[STORE_KEY_TEXT_MAX];
    struct store_key k[4];
    /* Created out of time order: the list is ordered by created_at. */
    fixture_key(f->s, "u1", STORE_PERM_ALL, 0, T0 + 30, text, &k[0]);
    fixture_key(f->s, "u2", STORE_PERM_ALL, 0, T0 + 10, text, &k[1]);
    fixture_key(f->s, "u1", STORE_PERM_ALL, 0, T0 + 20, text, &k[2]);
    fixture_key(f->s, "u3", STORE_PERM_ALL, 0, T0 + 40, text, &k[3]);
    int64_t n = 0;
    assert_int_equal(store_key_count(f->s, &n), 0);
    assert_int_equal(n, 4);

    struct key_walk w = {0};
    assert_int_equal(store_key_list(f->s, key_cb, &w), 0);
    assert_int_equal(w.n, 4);
    assert_string_equal(w.ids[0], k[1].id);
    assert_string_equal(w.ids[1], k[2].id);
    assert_string_equal(w.ids[2], k[0].id);
    assert_string_equal(w.ids[3], k[3].id);

    memset(&w, 0, sizeof w);
    w.stop_at = 2;
    assert_int_equal(store_key_list(f->s, key_cb, &w), 42);
    assert_int_equal(w.n, 2);
    /* The statement was reset after an early stop: a new walk starts over. */
    memset(&w, 0, sizeof w);
    assert_int_equal(store_key_list(f->s, key_cb, &w), 0);
    assert_int_equal(w.n, 4);
}

static void test_hash_key_persists(void **state)
{
    struct fixture *f = *state;
    char text[STORE_KEY_TEXT_MAX];
    struct store_key k, a;
    fixture_key(f->s, "erin", STORE_PERM_ALL, 0, T0, text, &k);
    fixture_reopen(f);
    assert_int_equal(store_key_auth(f->s, text, T0, &a), 0);
    assert_string_equal(a.id, k.id);
    int64_t n = 0;
    assert_int_equal(store_key_count(f->s, &n), 0);
    assert_int_equal(n, 1);
}

/* Does the file at path contain needle? (missing file: no) */
static int file_contains(const char *path, const char *needle)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return 0;
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    size_t r;
    while ((r = fread(buf + len, 1, cap - len, fp)) > 0) {
        len += r;
        if (len == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
    }
    fclose(fp);
    size_t nl = strlen(needle);
    int found = 0;
    for (size_t i = 0; !found && i + nl <= len; i++)
        found = memcmp(buf + i, needle, nl) == 0;
    free(buf);
    return found;
}

static void test_key_text_not_in_db(void **state)
{
    struct fixture *f = *state;
    char texts[5][STORE_KEY_TEXT_MAX];
    struct store_key k;
    for (int i = 0; i < 5; i++)
        fixture_key(f->s, "frank", STORE_PERM_ALL, 0, T0 + i, texts[i], &k);
    char wal[160];
    snprintf(wal, sizeof wal, "%s-wal", f->path);
    for (int pass = 0; pass < 2; pass++) {
        /* The scan itself works: the user name is there. */
        assert_true(file_contains(f->path, "frank") || file_contains(wal, "frank"));
        for (int i = 0; i < 5; i++) {
            assert_false(file_contains(f->path, texts[i] + 4));
            assert_false(file_contains(wal, texts[i] + 4));
            char half[40]; /* no recognisable part of it either */
            snprintf(half, sizeof half, "%.16s", texts[i] + 4);
            assert_false(file_contains(f->path, half));
            assert_false(file_contains(wal, half));
        }
        fixture_reopen(f); /* close checkpoints the WAL into the main file */
    }
}

static void test_invalid_user_label(void **state)
{
    struct fixture *f = *state;
    char text[STORE_KEY_TEXT_MAX];
    struct err e = {0};
    char u65[66], l129[130], u64[65], l128[129];
    memset(u65, 'a', 65);
    u65[65] = '\0';
    memset(u64, 'b', 64);
    u64[64] = '\0';
    memset(l129, 'x', 129);
    l129[129] = '\0';
    memset(l128, 'y', 128);
    l128[128] = '\0';

    static const char *const bad_users[] = {"", "a b", "al/ice", "zo\xc3\xab", "tab\t", "a'b"};
    for (size_t i = 0; i < sizeof bad_users / sizeof bad_users[0]; i++) {
        assert_int_equal(store_user_validate(bad_users[i], &e), RR_E_INVAL);
        assert_true(strlen(e.msg) > 0);
        assert_int_equal(store_key_create(f->s, bad_users[i], NULL, STORE_PERM_ALL, 0, T0, text,
                                          NULL),
                         RR_E_INVAL);
    }
    assert_int_equal(store_user_validate(NULL, &e), RR_E_INVAL);
    assert_int_equal(store_user_validate("", &e), RR_E_INVAL);
    assert_string_equal(e.msg, "user name is empty");
    assert_int_equal(store_user_validate(u65, &e), RR_E_INVAL);
    assert_string_equal(e.msg, "user name is longer than 64 bytes");
    assert_int_equal(store_user_validate("a b", &e), RR_E_INVAL);
    assert_non_null(strstr(e.msg, "letters, digits"));
    assert_int_equal(store_user_validate("Ops.Team_1@example-corp", &e), 0);
    assert_int_equal(store_user_validate(u64, &e), 0);

    assert_int_equal(store_label_validate(NULL, &e), 0);
    assert_int_equal(store_label_validate("", &e), 0);
    assert_int_equal(store_label_validate("ci key \xe2\x9c\x93 (prod)", &e), 0);
    assert_int_equal(store_label_validate(l128, &e), 0);
    assert_int_equal(store_label_validate(l129, &e), RR_E_INVAL);
    assert_string_equal(e.msg, "label is longer than 128 bytes");
    assert_int_equal(store_label_validate("a\nb", &e), RR_E_INVAL);
    assert_non_null(strstr(e.msg, "control character"));
    assert_int_equal(store_label_validate("a\x7f", &e), RR_E_INVAL);

    assert_int_equal(store_key_create(f->s, "ok", l129, STORE_PERM_ALL, 0, T0, text, NULL),
                     RR_E_INVAL);
    assert_int_equal(store_key_create(f->s, "ok", "a\x1b[31m", STORE_PERM_ALL, 0, T0, text, NULL),
                     RR_E_INVAL);
    assert_int_equal(store_key_create(f->s, "ok", NULL, 0x80, 0, T0, text, NULL), RR_E_INVAL);
    assert_int_equal(store_key_create(f->s, u64, l128, STORE_PERM_ALL, 0, T0, text, NULL), 0);

    /* Nothing half-written by the failures. */
    int64_t n = 0;
    assert_int_equal(store_key_count(f->s, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(fixture_sql_int(f->path, "SELECT count(*) FROM users"), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        FIXTURE_TEST(test_key_create_auth),
        FIXTURE_TEST(test_key_revoke_by_id),
        FIXTURE_TEST(test_key_revoke_by_text),
        FIXTURE_TEST(test_key_expiry),
        FIXTURE_TEST(test_perms_parse_format),
        FIXTURE_TEST(test_key_list_count),
        FIXTURE_TEST(test_hash_key_persists),
        FIXTURE_TEST(test_key_text_not_in_db),
        FIXTURE_TEST(test_invalid_user_label),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
