/* test_store.c -- unit tests for store/: schema, keys, deployments, runs.
 *
 * Design: every test gets a fresh database file in its own temporary
 * directory (fixture_setup) that fixture_teardown closes and removes. Time is
 * passed in explicitly, never read from the clock. Races between connections
 * are provoked with forked children, each opening its own connection, as
 * separate processes (the daemon and the `rrdeploy keys` CLI) do.
 *
 * Thread: single-threaded; children are forked before they open anything. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "store/store.h"
#include "store/store_internal.h"
#include "fixture.h"

#define T0 FIXTURE_T0

static void raw_exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg ? msg : "?");
}

static void pragma_text(sqlite3 *db, const char *sql, char *out, size_t n)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    snprintf(out, n, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
}

/* ================================================================ schema */

static void test_open_migrate_reopen(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(fixture_sql_int(f->path, "PRAGMA user_version"), 3);
    assert_int_equal(fixture_sql_int(f->path,
                                     "SELECT count(*) FROM sqlite_master WHERE type = 'table' "
                                     "AND name IN ('meta','users','api_keys','deployments',"
                                     "'runs')"),
                     5);
    int64_t n = -1;
    assert_int_equal(store_key_count(f->s, &n), 0);
    assert_int_equal(n, 0);
    fixture_reopen(f);
    assert_int_equal(fixture_sql_int(f->path, "PRAGMA user_version"), 3);
    assert_int_equal(fixture_sql_int(f->path, "SELECT count(*) FROM meta"), 1);
    store_close(NULL);
}

static void test_newer_schema_refused(void **state)
{
    struct fixture *f = *state;
    store_close(f->s);
    f->s = NULL;
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    struct err e = {0};
    struct store *s = NULL;
    assert_int_equal(store_open(f->path, &s, &e), RR_E_IO);
    assert_null(s);
    assert_non_null(strstr(e.msg, "99"));
}

static void test_open_bad_path(void **state)
{
    struct err e = {0};
    struct store *s = NULL;
    assert_int_equal(store_open("/nonexistent-dir-rrdeploy/x.db", &s, &e), RR_E_IO);
    assert_null(s);
    assert_non_null(strstr(e.msg, "/nonexistent-dir-rrdeploy/x.db"));

    /* A file that is not a database. */
    struct fixture *f = *state;
    store_close(f->s);
    f->s = NULL;
    FILE *fp = fopen(f->path, "wb");
    assert_non_null(fp);
    for (int i = 0; i < 512; i++)
        fputs("not a database ", fp);
    fclose(fp);
    assert_int_equal(store_open(f->path, &s, &e), RR_E_IO);
    assert_null(s);
    assert_non_null(strstr(e.msg, "not a database"));

    /* In-memory databases work (no WAL there), e.g. for other modules' tests. */
    assert_int_equal(store_open(":memory:", &s, &e), 0);
    char text[STORE_KEY_TEXT_MAX];
    struct store_key k;
    assert_int_equal(store_key_create(s, "m", NULL, STORE_PERM_ALL, 0, T0, text, NULL), 0);
    assert_int_equal(store_key_auth(s, text, T0, &k), 0);
    store_close(s);
}

static void test_pragmas(void **state)
{
    struct fixture *f = *state;
    sqlite3 *db = store__db(f->s);
    char v[32];
    pragma_text(db, "PRAGMA journal_mode", v, sizeof v);
    assert_string_equal(v, "wal");
    pragma_text(db, "PRAGMA synchronous", v, sizeof v);
    assert_string_equal(v, "2");
    pragma_text(db, "PRAGMA foreign_keys", v, sizeof v);
    assert_string_equal(v, "1");
    pragma_text(db, "PRAGMA busy_timeout", v, sizeof v);
    assert_string_equal(v, "5000");
    /* WAL is a property of the file: a fresh connection sees it too. */
    sqlite3 *raw = NULL;
    assert_int_equal(sqlite3_open(f->path, &raw), SQLITE_OK);
    pragma_text(raw, "PRAGMA journal_mode", v, sizeof v);
    assert_string_equal(v, "wal");
    assert_int_equal(sqlite3_close(raw), SQLITE_OK);
    /* Owner-only file mode: it holds key hashes and the hash key. */
    struct stat sb;
    assert_int_equal(stat(f->path, &sb), 0);
    assert_int_equal(sb.st_mode & 077, 0);
}

/* ================================================================ keys */

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

/* ================================================================ deployments */

static void assert_dep_equal(const struct store_dep *a, const struct store_dep *b)
{
    assert_string_equal(a->user, b->user);
    assert_string_equal(a->project_id, b->project_id);
    assert_string_equal(a->pipeline, b->pipeline);
    assert_string_equal(a->schedule, b->schedule);
    assert_int_equal(a->state, b->state);
    if (a->error || b->error) {
        assert_non_null(a->error);
        assert_non_null(b->error);
        assert_string_equal(a->error, b->error);
    }
    if (a->created_by || b->created_by)
        assert_string_equal(a->created_by, b->created_by);
    if (a->owner_key_id || b->owner_key_id)
        assert_string_equal(a->owner_key_id, b->owner_key_id);
    assert_true(a->created_at == b->created_at);
    assert_true(a->updated_at == b->updated_at);
    assert_true(a->next_run_at == b->next_run_at);
    assert_true(a->last_fire_at == b->last_fire_at);
}

static void test_dep_insert_get(void **state)
{
    struct fixture *f = *state;
    struct store_dep d =
        fixture_dep("alice", "proj-1", "{\"project_id\":\"proj-1\",\"b\":1,\"a\":2}");
    d.created_at = T0 + 0.125;
    d.updated_at = T0 + 0.5;
    assert_int_equal(store_dep_insert(f->s, &d, 10000), 0);

    struct store_dep g = {0};
    assert_int_equal(store_dep_get(f->s, "alice", "proj-1", &g), 0);
    assert_dep_equal(&g, &d);
    assert_null(g.error);
    store_dep_clear(&g);
    assert_null(g.user);
    store_dep_clear(NULL);

    /* next_run_at 0 <-> NULL; error and optional strings NULL <-> NULL. */
    struct store_dep m = fixture_dep("alice", "manual-one", "{}");
    m.schedule = (char *)"manual";
    m.next_run_at = 0;
    m.created_by = NULL;
    m.owner_key_id = NULL;
    assert_int_equal(store_dep_insert(f->s, &m, 0), 0);
    assert_int_equal(fixture_sql_int(f->path,
                                     "SELECT count(*) FROM deployments WHERE project_id = "
                                     "'manual-one' AND next_run_at IS NULL AND error IS NULL "
                                     "AND created_by IS NULL"),
                     1);
    assert_int_equal(store_dep_get(f->s, "alice", "manual-one", &g), 0);
    assert_true(g.next_run_at == 0);
    assert_null(g.created_by);
    assert_null(g.owner_key_id);
    store_dep_clear(&g);

    /* Not found: unknown id, unknown user; out untouched. */
    memset(&g, 0, sizeof g);
    assert_int_equal(store_dep_get(f->s, "alice", "nope", &g), RR_E_NOTFOUND);
    assert_null(g.user);
    assert_int_equal(store_dep_get(f->s, "nobody", "proj-1", &g), RR_E_NOTFOUND);

    /* Missing required fields are refused. */
    struct store_dep bad = fixture_dep("alice", "x", NULL);
    assert_int_equal(store_dep_insert(f->s, &bad, 0), RR_E_INVAL);
    bad = fixture_dep("alice", "x", "{}");
    bad.state = (enum store_state)7;
    assert_int_equal(store_dep_insert(f->s, &bad, 0), RR_E_INVAL);
}

static void test_dep_duplicate(void **state)
{
    struct fixture *f = *state;
    struct store_dep d = fixture_dep("alice", "p", "{\"v\":1}");
    assert_int_equal(store_dep_insert(f->s, &d, 100), 0);
    struct store_dep d2 = fixture_dep("alice", "p", "{\"v\":2}");
    assert_int_equal(store_dep_insert(f->s, &d2, 100), RR_E_EXISTS);
    assert_int_equal(store_dep_insert(f->s, &d2, 0), RR_E_EXISTS);
    struct store_dep g;
    assert_int_equal(store_dep_get(f->s, "alice", "p", &g), 0);
    assert_string_equal(g.pipeline, "{\"v\":1}"); /* the first one stays */
    store_dep_clear(&g);
    /* Same project id for another user is a different deployment. */
    struct store_dep o = fixture_dep("bob", "p", "{\"v\":3}");
    assert_int_equal(store_dep_insert(f->s, &o, 100), 0);
    /* The store is still usable: no transaction left open. */
    assert_true(sqlite3_get_autocommit(store__db(f->s)) != 0);
}

static void test_dep_limit(void **state)
{
    struct fixture *f = *state;
    char id[16];
    for (int i = 0; i < 3; i++) {
        snprintf(id, sizeof id, "p%d", i);
        struct store_dep d = fixture_dep("alice", id, "{}");
        assert_int_equal(store_dep_insert(f->s, &d, 3), 0);
    }
    struct store_dep d = fixture_dep("alice", "p3", "{}");
    assert_int_equal(store_dep_insert(f->s, &d, 3), RR_E_LIMIT);
    assert_int_equal(store_dep_get(f->s, "alice", "p3", &(struct store_dep){0}), RR_E_NOTFOUND);
    /* At the limit a duplicate is still a duplicate. */
    struct store_dep dup = fixture_dep("alice", "p1", "{}");
    assert_int_equal(store_dep_insert(f->s, &dup, 3), RR_E_EXISTS);
    /* Other users are counted separately. */
    struct store_dep o = fixture_dep("bob", "p3", "{}");
    assert_int_equal(store_dep_insert(f->s, &o, 3), 0);
    int64_t n = 0;
    assert_int_equal(store_dep_count(f->s, "alice", &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(store_dep_count(f->s, "bob", &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(store_dep_count(f->s, NULL, &n), 0);
    assert_int_equal(n, 4);
    assert_int_equal(store_dep_count(f->s, "nobody", &n), 0);
    assert_int_equal(n, 0);
    /* Room again after a delete. */
    assert_int_equal(store_dep_delete(f->s, "alice", "p0"), 0);
    assert_int_equal(store_dep_insert(f->s, &d, 3), 0);
    assert_int_equal(store_dep_insert(f->s, &dup, 1), RR_E_EXISTS);
    struct store_dep x = fixture_dep("alice", "p9", "{}");
    assert_int_equal(store_dep_insert(f->s, &x, 1), RR_E_LIMIT);
}

static void test_dep_update_delete(void **state)
{
    struct fixture *f = *state;
    struct store_dep d = fixture_dep("alice", "p", "{\"v\":1}");
    assert_int_equal(store_dep_insert(f->s, &d, 0), 0);

    struct store_dep u = d;
    u.pipeline = (char *)"{\"v\":2}";
    u.schedule = (char *)"0 3 * * *";
    u.state = STORE_ERRORED;
    u.error = (char *)"owner key k_1 was revoked";
    u.owner_key_id = (char *)"k_1111111111111111";
    u.updated_at = T0 + 99;
    u.next_run_at = 0;
    assert_int_equal(store_dep_update(f->s, &u), 0);
    struct store_dep g;
    assert_int_equal(store_dep_get(f->s, "alice", "p", &g), 0);
    assert_dep_equal(&g, &u);
    store_dep_clear(&g);

    u.state = STORE_PAUSED;
    u.error = NULL;
    assert_int_equal(store_dep_update(f->s, &u), 0);
    assert_int_equal(store_dep_get(f->s, "alice", "p", &g), 0);
    assert_int_equal(g.state, STORE_PAUSED);
    assert_null(g.error);
    store_dep_clear(&g);

    struct store_dep missing = fixture_dep("alice", "q", "{}");
    assert_int_equal(store_dep_update(f->s, &missing), RR_E_NOTFOUND);
    missing = fixture_dep("bob", "p", "{}"); /* another user's id */
    assert_int_equal(store_dep_update(f->s, &missing), RR_E_NOTFOUND);
    assert_int_equal(store_dep_delete(f->s, "bob", "p"), RR_E_NOTFOUND);
    assert_int_equal(store_dep_delete(f->s, "alice", "q"), RR_E_NOTFOUND);

    assert_int_equal(store_dep_delete(f->s, "alice", "p"), 0);
    assert_int_equal(store_dep_delete(f->s, "alice", "p"), RR_E_NOTFOUND);
    assert_int_equal(store_dep_get(f->s, "alice", "p", &g), RR_E_NOTFOUND);
}

struct dep_walk {
    int n;
    char got[16][64];
    int stop_at;
    struct store *s; /* for re-entrant calls */
    int nested;
};

static int dep_cb(const struct store_dep *d, void *ud)
{
    struct dep_walk *w = ud;
    assert_true(w->n < 16);
    snprintf(w->got[w->n], sizeof w->got[w->n], "%s/%s", d->user, d->project_id);
    w->n++;
    return w->n == w->stop_at ? -99 : 0;
}

static void test_dep_list_order_isolation(void **state)
{
    struct fixture *f = *state;
    /* BINARY collation: bytes compare, so "C" < "a" < "aa" < "b" < "é". */
    static const char *const ids[] = {"b", "a", "\xc3\xa9", "C", "aa"};
    for (size_t i = 0; i < 5; i++) {
        struct store_dep d = fixture_dep("alice", ids[i], "{}");
        assert_int_equal(store_dep_insert(f->s, &d, 0), 0);
    }
    struct store_dep o = fixture_dep("bob", "a", "{}");
    assert_int_equal(store_dep_insert(f->s, &o, 0), 0);
    o = fixture_dep("Adam", "z", "{}");
    assert_int_equal(store_dep_insert(f->s, &o, 0), 0);

    struct dep_walk w = {0};
    assert_int_equal(store_dep_list(f->s, "alice", dep_cb, &w), 0);
    assert_int_equal(w.n, 5);
    assert_string_equal(w.got[0], "alice/C");
    assert_string_equal(w.got[1], "alice/a");
    assert_string_equal(w.got[2], "alice/aa");
    assert_string_equal(w.got[3], "alice/b");
    assert_string_equal(w.got[4], "alice/\xc3\xa9");

    memset(&w, 0, sizeof w);
    assert_int_equal(store_dep_list(f->s, "bob", dep_cb, &w), 0);
    assert_int_equal(w.n, 1);
    assert_string_equal(w.got[0], "bob/a");

    memset(&w, 0, sizeof w);
    assert_int_equal(store_dep_list(f->s, "nobody", dep_cb, &w), 0);
    assert_int_equal(w.n, 0);

    memset(&w, 0, sizeof w);
    assert_int_equal(store_dep_list(f->s, NULL, dep_cb, &w), 0);
    assert_int_equal(w.n, 7);
    assert_string_equal(w.got[0], "Adam/z");
    assert_string_equal(w.got[1], "alice/C");
    assert_string_equal(w.got[6], "bob/a");

    memset(&w, 0, sizeof w);
    w.stop_at = 2;
    assert_int_equal(store_dep_list(f->s, NULL, dep_cb, &w), -99);
    assert_int_equal(w.n, 2);

    /* bob's "a" and alice's "a" are separate rows. */
    assert_int_equal(store_dep_delete(f->s, "bob", "a"), 0);
    struct store_dep g;
    assert_int_equal(store_dep_get(f->s, "alice", "a", &g), 0);
    store_dep_clear(&g);
}

static int nested_cb(const struct store_dep *d, void *ud)
{
    struct dep_walk *w = ud;
    struct dep_walk inner = {0};
    /* Re-enter the same walk and other calls while the outer one runs. */
    assert_int_equal(store_dep_list(w->s, d->user, dep_cb, &inner), 0);
    assert_int_equal(inner.n, 2);
    struct store_dep g;
    assert_int_equal(store_dep_get(w->s, d->user, d->project_id, &g), 0);
    assert_string_equal(g.project_id, d->project_id);
    store_dep_clear(&g);
    struct store_dep u = *d;
    u.updated_at = T0 + 1000;
    assert_int_equal(store_dep_update(w->s, &u), 0);
    /* A write transaction that fails and rolls back under the running walk. */
    struct store_dep dup = *d;
    assert_int_equal(store_dep_insert(w->s, &dup, 0), RR_E_EXISTS);
    assert_int_equal(store_dep_insert(w->s, &dup, 1), RR_E_EXISTS);
    w->n++;
    return 0;
}

static void test_dep_list_reentrant(void **state)
{
    struct fixture *f = *state;
    struct store_dep d = fixture_dep("alice", "one", "{}");
    assert_int_equal(store_dep_insert(f->s, &d, 0), 0);
    d = fixture_dep("alice", "two", "{}");
    assert_int_equal(store_dep_insert(f->s, &d, 0), 0);
    struct dep_walk w = {.s = f->s};
    assert_int_equal(store_dep_list(f->s, "alice", nested_cb, &w), 0);
    assert_int_equal(w.n, 2);
    struct store_dep g;
    assert_int_equal(store_dep_get(f->s, "alice", "two", &g), 0);
    assert_true(g.updated_at == T0 + 1000);
    store_dep_clear(&g);
}

static void test_dep_unicode_big(void **state)
{
    struct fixture *f = *state;
    const char *pid = "\xe9\xa1\xb9\xe7\x9b\xae-\xf0\x9f\x9a\x80"; /* 项目-🚀 */
    const char *pipe_small =
        "{\"z\":1,\"a\":\"caf\xc3\xa9 \xf0\x9f\x98\x80\",\"m\":[3,2,1],\"e\":\"\\u0000\\n\"}";
    struct store_dep d = fixture_dep("alice", pid, pipe_small);
    d.schedule = (char *)"30 2 * * 1-5";
    assert_int_equal(store_dep_insert(f->s, &d, 0), 0);
    struct store_dep g;
    assert_int_equal(store_dep_get(f->s, "alice", pid, &g), 0);
    assert_string_equal(g.project_id, pid);
    assert_string_equal(g.pipeline, pipe_small);
    store_dep_clear(&g);

    /* 1 MiB pipeline, non-repeating content, round-trips byte for byte. */
    size_t n = 1u << 20;
    char *big = malloc(n + 1);
    assert_non_null(big);
    memcpy(big, "{\"k\":\"", 6);
    for (size_t i = 6; i < n - 2; i++)
        big[i] = (char)('a' + (i * 7919u) % 26);
    memcpy(big + n - 2, "\"}", 2);
    big[n] = '\0';
    struct store_dep b = fixture_dep("alice", "big", big);
    assert_int_equal(store_dep_insert(f->s, &b, 0), 0);
    fixture_reopen(f);
    assert_int_equal(store_dep_get(f->s, "alice", "big", &g), 0);
    assert_int_equal(strlen(g.pipeline), n);
    assert_memory_equal(g.pipeline, big, n);
    store_dep_clear(&g);
    free(big);
}

static int key_dep_cb(const struct store_dep *d, void *ud)
{
    return dep_cb(d, ud);
}

static void test_dep_list_by_key(void **state)
{
    struct fixture *f = *state;
    struct store_dep d = fixture_dep("alice", "a1", "{}");
    d.owner_key_id = (char *)"k_aaaaaaaaaaaaaaaa";
    assert_int_equal(store_dep_insert(f->s, &d, 0), 0);
    d = fixture_dep("alice", "a2", "{}");
    d.owner_key_id = (char *)"k_bbbbbbbbbbbbbbbb";
    assert_int_equal(store_dep_insert(f->s, &d, 0), 0);
    d = fixture_dep("alice", "a0", "{}");
    d.owner_key_id = (char *)"k_aaaaaaaaaaaaaaaa";
    assert_int_equal(store_dep_insert(f->s, &d, 0), 0);
    struct dep_walk w = {0};
    assert_int_equal(store_dep_list_by_key(f->s, "k_aaaaaaaaaaaaaaaa", key_dep_cb, &w), 0);
    assert_int_equal(w.n, 2);
    assert_string_equal(w.got[0], "alice/a0");
    assert_string_equal(w.got[1], "alice/a1");
    memset(&w, 0, sizeof w);
    assert_int_equal(store_dep_list_by_key(f->s, "k_cccccccccccccccc", key_dep_cb, &w), 0);
    assert_int_equal(w.n, 0);
}

static void test_state_names(void **state)
{
    (void)state;
    enum store_state st;
    static const char *const names[] = {"active", "paused", "errored"};
    for (int i = 0; i < 3; i++) {
        assert_string_equal(store_state_name((enum store_state)i), names[i]);
        assert_int_equal(store_state_parse(names[i], &st), 0);
        assert_int_equal(st, i);
    }
    assert_int_equal(store_state_parse("Active", &st), RR_E_INVAL);
    assert_int_equal(store_state_parse("", &st), RR_E_INVAL);
    assert_int_equal(store_state_parse(NULL, &st), RR_E_INVAL);
}

/* ================================================================ several connections */

static void test_two_connections(void **state)
{
    struct fixture *f = *state;
    struct store *b = NULL;
    struct err e = {0};
    assert_int_equal(store_open(f->path, &b, &e), 0);

    /* Same (user, project) from the second connection: EXISTS. */
    struct store_dep d = fixture_dep("alice", "p", "{}");
    assert_int_equal(store_dep_insert(f->s, &d, 0), 0);
    assert_int_equal(store_dep_insert(b, &d, 0), RR_E_EXISTS);
    struct store_dep g;
    assert_int_equal(store_dep_get(b, "alice", "p", &g), 0);
    store_dep_clear(&g);

    /* A key made on A, revoked on B (the CLI), is seen as revoked on A, and A's
     * data_version moves when B commits, but not for A's own writes. */
    char text[STORE_KEY_TEXT_MAX];
    struct store_key k, a;
    fixture_key(f->s, "alice", STORE_PERM_ALL, 0, T0, text, &k);
    int64_t v0 = 0, v1 = 0, v2 = 0, v3 = 0;
    assert_int_equal(store_data_version(f->s, &v0), 0);
    assert_int_equal(store_data_version(f->s, &v1), 0);
    assert_true(v0 == v1);
    assert_int_equal(store_key_auth(f->s, text, T0, &a), 0);

    assert_int_equal(store_key_revoke(b, k.id, T0 + 1, NULL), 0);
    assert_int_equal(store_data_version(f->s, &v2), 0);
    assert_true(v2 != v1);
    assert_int_equal(store_key_auth(f->s, text, T0 + 2, &a), RR_E_REVOKED);

    struct store_dep d2 = fixture_dep("alice", "q", "{}");
    assert_int_equal(store_dep_insert(f->s, &d2, 0), 0); /* A's own write */
    assert_int_equal(store_data_version(f->s, &v3), 0);
    assert_true(v3 == v2);

    /* Keys created on B authenticate on A (same hash key). */
    char text2[STORE_KEY_TEXT_MAX];
    fixture_key(b, "bob", STORE_PERM_MONITOR, 0, T0, text2, NULL);
    assert_int_equal(store_key_auth(f->s, text2, T0, &a), 0);
    assert_string_equal(a.user, "bob");

    store_close(b);
}

/* Fork n children that each open their own connection and insert; return how
 * many got 0, RR_E_EXISTS and RR_E_LIMIT. The parent's connection is closed
 * across the fork: a SQLite connection must never be carried into a child. */
static void race(struct fixture *f, int n, int same_id, int64_t max, int *ok, int *exists,
                 int *limit)
{
    const char *path = f->path;
    store_close(f->s);
    f->s = NULL;
    pid_t pids[16];
    int go[2];
    assert_true(n <= 16);
    assert_int_equal(pipe(go), 0);
    for (int i = 0; i < n; i++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(go[1]);
            struct store *s = NULL;
            if (store_open(path, &s, NULL) != 0)
                _exit(100);
            char buf;
            if (read(go[0], &buf, 1) < 0) /* wait until everyone is ready */
                _exit(101);
            char id[16];
            snprintf(id, sizeof id, "p%d", same_id ? 0 : i);
            struct store_dep d = fixture_dep("racer", id, "{}");
            int rc = store_dep_insert(s, &d, max);
            store_close(s);
            _exit(rc == 0 ? 0 : rc == RR_E_EXISTS ? 1 : rc == RR_E_LIMIT ? 2 : 3);
        }
        pids[i] = pid;
    }
    close(go[0]);
    close(go[1]); /* EOF releases every child at once */
    *ok = *exists = *limit = 0;
    for (int i = 0; i < n; i++) {
        int st = 0;
        assert_int_equal(waitpid(pids[i], &st, 0), pids[i]);
        assert_true(WIFEXITED(st));
        switch (WEXITSTATUS(st)) {
        case 0: (*ok)++; break;
        case 1: (*exists)++; break;
        case 2: (*limit)++; break;
        default: fail_msg("child exit %d", WEXITSTATUS(st));
        }
    }
    fixture_reopen(f);
}

static void test_racing_inserts(void **state)
{
    struct fixture *f = *state;
    int ok, exists, limit;
    race(f, 8, 1, 0, &ok, &exists, &limit);
    assert_int_equal(ok, 1);
    assert_int_equal(exists, 7);
    assert_int_equal(limit, 0);

    assert_int_equal(store_dep_delete(f->s, "racer", "p0"), 0);
    race(f, 8, 0, 3, &ok, &exists, &limit);
    assert_int_equal(ok, 3);
    assert_int_equal(limit, 5);
    int64_t n = 0;
    assert_int_equal(store_dep_count(f->s, "racer", &n), 0);
    assert_int_equal(n, 3);
}

/* ================================================================ scheduler progress */

static void test_dep_progress(void **state)
{
    struct fixture *f = *state;
    struct store_dep d = fixture_dep("alice", "p", "{}");
    d.last_fire_at = T0 + 60;
    assert_int_equal(store_dep_insert(f->s, &d, 0), 0);
    struct store_dep g;
    assert_int_equal(store_dep_get(f->s, "alice", "p", &g), 0);
    assert_dep_equal(&g, &d);
    store_dep_clear(&g);

    /* The walk reads it too. */
    struct store_dep x = fixture_dep("alice", "q", "{}"); /* last_fire_at 0 */
    assert_int_equal(store_dep_insert(f->s, &x, 0), 0);
    assert_int_equal(fixture_sql_int(f->path,
                                     "SELECT count(*) FROM deployments WHERE project_id = 'q' "
                                     "AND last_fire_at IS NULL"),
                     1);

    /* update overwrites it, 0 <-> NULL. */
    struct store_dep u = d;
    u.last_fire_at = 0;
    assert_int_equal(store_dep_update(f->s, &u), 0);
    assert_int_equal(fixture_sql_int(f->path,
                                     "SELECT count(*) FROM deployments WHERE project_id = 'p' "
                                     "AND last_fire_at IS NULL"),
                     1);
    u.last_fire_at = T0 + 90.5;
    assert_int_equal(store_dep_update(f->s, &u), 0);
    assert_int_equal(store_dep_get(f->s, "alice", "p", &g), 0);
    assert_true(g.last_fire_at == T0 + 90.5);
    store_dep_clear(&g);

    /* set_progress touches those two columns only. */
    assert_int_equal(store_dep_set_progress(f->s, "alice", "p", T0 + 120, T0 + 180), 0);
    assert_int_equal(store_dep_get(f->s, "alice", "p", &g), 0);
    struct store_dep want = u;
    want.last_fire_at = T0 + 120;
    want.next_run_at = T0 + 180;
    assert_dep_equal(&g, &want);
    store_dep_clear(&g);
    assert_int_equal(store_dep_set_progress(f->s, "alice", "p", T0 + 180, 0), 0);
    assert_int_equal(fixture_sql_int(f->path,
                                     "SELECT count(*) FROM deployments WHERE project_id = 'p' "
                                     "AND next_run_at IS NULL AND last_fire_at IS NOT NULL"),
                     1);
    /* The other row is untouched. */
    assert_int_equal(store_dep_get(f->s, "alice", "q", &g), 0);
    assert_dep_equal(&g, &x);
    store_dep_clear(&g);

    assert_int_equal(store_dep_set_progress(f->s, "alice", "nope", T0, T0), RR_E_NOTFOUND);
    assert_int_equal(store_dep_set_progress(f->s, "bob", "p", T0, T0), RR_E_NOTFOUND);
    assert_int_equal(store_dep_set_progress(f->s, NULL, "p", T0, T0), RR_E_NOTFOUND);
}

/* ================================================================ run ledger */

static void assert_opt_str(const char *a, const char *b)
{
    if (a || b) {
        assert_non_null(a);
        assert_non_null(b);
        assert_string_equal(a, b);
    }
}

static void assert_run_equal(const struct store_run *a, const struct store_run *b)
{
    assert_int_equal(a->id, b->id);
    assert_string_equal(a->user, b->user);
    assert_string_equal(a->project_id, b->project_id);
    assert_string_equal(a->trigger, b->trigger);
    assert_true(a->scheduled_for == b->scheduled_for);
    assert_true(a->created_at == b->created_at);
    assert_true(a->started_at == b->started_at);
    assert_true(a->finished_at == b->finished_at);
    assert_int_equal(a->outcome, b->outcome);
    assert_opt_str(a->reason, b->reason);
    assert_int_equal(a->exit_code, b->exit_code);
    assert_int_equal(a->signal, b->signal);
    assert_int_equal(a->output_len, b->output_len);
    if (a->output || b->output) {
        assert_non_null(a->output);
        assert_non_null(b->output);
        assert_memory_equal(a->output, b->output, a->output_len);
    }
    assert_opt_str(a->idempotency_key, b->idempotency_key);
    assert_int_equal(a->missed_count, b->missed_count);
    assert_true(a->window_start == b->window_start);
    assert_true(a->window_end == b->window_end);
}

static void test_run_round_trip(void **state)
{
    struct fixture *f = *state;
    fixture_add_dep(f->s, "alice", "p");

    /* Every field set. */
    static const char out1[] = "line 1\n\0binary\0\xff\xfe tail";
    struct store_run r = fixture_run("alice", "p", "schedule", T0 + 60, STORE_RUN_RUNNING);
    r.created_at = T0 + 60.25;
    r.started_at = T0 + 60.5;
    r.finished_at = T0 + 61.75;
    r.reason = (char *)"some reason";
    r.exit_code = 3;
    r.signal = 9;
    r.output = (char *)out1;
    r.output_len = sizeof out1 - 1; /* includes the inner NULs */
    r.idempotency_key = (char *)"idem-1";
    r.missed_count = 7;
    r.window_start = T0 - 3600;
    r.window_end = T0 - 60;
    r.id = fixture_add_run(f->s, &r, 100);

    struct store_run g;
    assert_int_equal(store_run_get(f->s, r.id, &g), 0);
    assert_run_equal(&g, &r);
    assert_int_equal(g.output[g.output_len], '\0'); /* NUL-terminated for convenience */
    store_run_clear(&g);
    assert_null(g.user);
    store_run_clear(NULL);

    /* Update: the mutable columns, including a 64 KiB output with NULs. */
    size_t n = 64u * 1024;
    char *big = malloc(n);
    assert_non_null(big);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)((i * 7919u) % 251); /* every 251st byte is 0 */
    struct store_run u = r;
    u.started_at = T0 + 70;
    u.finished_at = T0 + 80;
    u.outcome = STORE_RUN_FAILED;
    u.reason = NULL;
    u.exit_code = 0;
    u.signal = 15;
    u.output = big;
    u.output_len = n;
    /* Immutable columns passed differently are ignored. */
    u.trigger = (char *)"manual";
    u.scheduled_for = T0 + 999;
    u.missed_count = 1;
    assert_int_equal(store_run_update(f->s, &u), 0);
    assert_int_equal(store_run_get(f->s, r.id, &g), 0);
    struct store_run want = r;
    want.started_at = u.started_at;
    want.finished_at = u.finished_at;
    want.outcome = u.outcome;
    want.reason = NULL;
    want.exit_code = 0;
    want.signal = 15;
    want.output = big;
    want.output_len = n;
    assert_run_equal(&g, &want);
    assert_null(g.reason);
    assert_int_equal(g.output[n], '\0');
    store_run_clear(&g);
    fixture_reopen(f); /* durable, and read back through fresh statements */
    assert_int_equal(store_run_get(f->s, r.id, &g), 0);
    assert_run_equal(&g, &want);
    store_run_clear(&g);
    free(big);

    /* The "none" values are SQL NULL and read back as none. */
    struct store_run m = fixture_run("alice", "p", "manual", 0, STORE_RUN_QUEUED);
    m.id = fixture_add_run(f->s, &m, 100);
    assert_int_equal(fixture_sql_int(f->path,
                                     "SELECT count(*) FROM runs WHERE trigger = 'manual' AND "
                                     "scheduled_for IS NULL AND started_at IS NULL AND "
                                     "finished_at IS NULL AND reason IS NULL AND exit_code IS "
                                     "NULL AND signal IS NULL AND output IS NULL AND "
                                     "idempotency_key IS NULL AND missed_count = 0 AND "
                                     "window_start IS NULL AND window_end IS NULL"),
                     1);
    assert_int_equal(store_run_get(f->s, m.id, &g), 0);
    assert_run_equal(&g, &m);
    assert_int_equal(g.exit_code, -1);
    assert_int_equal(g.signal, 0);
    assert_null(g.output);
    assert_int_equal(g.output_len, 0);
    store_run_clear(&g);

    /* An empty, non-NULL output is an empty blob, not NULL. */
    m.outcome = STORE_RUN_SUCCEEDED;
    m.exit_code = 0;
    m.output = (char *)"";
    m.output_len = 0;
    assert_int_equal(store_run_update(f->s, &m), 0);
    assert_int_equal(fixture_sql_int(f->path,
                                     "SELECT count(*) FROM runs WHERE output IS NOT NULL AND "
                                     "length(output) = 0 AND exit_code = 0"),
                     1);
    assert_int_equal(store_run_get(f->s, m.id, &g), 0);
    assert_non_null(g.output);
    assert_int_equal(g.output_len, 0);
    assert_string_equal(g.output, "");
    store_run_clear(&g);

    /* Not found; out untouched. */
    memset(&g, 0, sizeof g);
    assert_int_equal(store_run_get(f->s, 9999, &g), RR_E_NOTFOUND);
    assert_null(g.user);
    struct store_run gone = m;
    gone.id = 9999;
    assert_int_equal(store_run_update(f->s, &gone), RR_E_NOTFOUND);

    /* Programmer errors are refused before SQL. */
    int64_t id = 0;
    struct store_run bad = fixture_run("alice", "p", "cron", 0, STORE_RUN_QUEUED);
    assert_int_equal(store_run_insert(f->s, &bad, 0, &id), RR_E_INVAL);
    bad = fixture_run("alice", "p", NULL, 0, STORE_RUN_QUEUED);
    assert_int_equal(store_run_insert(f->s, &bad, 0, &id), RR_E_INVAL);
    bad = fixture_run("alice", NULL, "manual", 0, STORE_RUN_QUEUED);
    assert_int_equal(store_run_insert(f->s, &bad, 0, &id), RR_E_INVAL);
    bad = fixture_run("alice", "p", "manual", 0, (enum store_outcome)42);
    assert_int_equal(store_run_insert(f->s, &bad, 0, &id), RR_E_INVAL);
    bad = fixture_run("alice", "p", "manual", 0, STORE_RUN_QUEUED);
    bad.output_len = 5; /* and output NULL */
    assert_int_equal(store_run_insert(f->s, &bad, 0, &id), RR_E_INVAL);
    bad.id = m.id;
    assert_int_equal(store_run_update(f->s, &bad), RR_E_INVAL);
    assert_int_equal(id, 0);
    assert_int_equal(fixture_sql_int(f->path, "SELECT count(*) FROM runs"), 2);
}

static void test_run_sched_unique(void **state)
{
    struct fixture *f = *state;
    fixture_add_dep(f->s, "alice", "p");
    fixture_add_dep(f->s, "alice", "q");
    struct store_run r = fixture_run("alice", "p", "schedule", T0 + 60, STORE_RUN_QUEUED);
    int64_t first = fixture_add_run(f->s, &r, 100);

    /* The same scheduled time again: whatever the outcome, refused. */
    int64_t id = -1;
    struct store_run again = fixture_run("alice", "p", "schedule", T0 + 60, STORE_RUN_SKIPPED);
    again.reason = (char *)"overlap";
    assert_int_equal(store_run_insert(f->s, &again, 100, &id), RR_E_EXISTS);
    assert_int_equal(id, -1);
    assert_true(sqlite3_get_autocommit(store__db(f->s)) != 0); /* rolled back */
    struct store_run g;
    assert_int_equal(store_run_last(f->s, "alice", "p", &g), 0);
    assert_int_equal(g.id, first);
    assert_int_equal(g.outcome, STORE_RUN_QUEUED);
    store_run_clear(&g);

    /* Another time, another deployment, or manual rows: fine. */
    r.scheduled_for = T0 + 120;
    fixture_add_run(f->s, &r, 100);
    struct store_run q = fixture_run("alice", "q", "schedule", T0 + 60, STORE_RUN_QUEUED);
    fixture_add_run(f->s, &q, 100);
    struct store_run m = fixture_run("alice", "p", "manual", 0, STORE_RUN_QUEUED);
    fixture_add_run(f->s, &m, 100);
    fixture_add_run(f->s, &m, 100); /* scheduled_for 0 (NULL) twice */
    m.scheduled_for = T0 + 60; /* manual rows are not in the index */
    fixture_add_run(f->s, &m, 100);
    fixture_add_run(f->s, &m, 100);
    assert_int_equal(fixture_sql_int(f->path, "SELECT count(*) FROM runs"), 7);

    /* Still refused once the first row has finished. */
    struct store_run done = fixture_run("alice", "p", "schedule", T0 + 60, STORE_RUN_SUCCEEDED);
    done.id = first;
    done.exit_code = 0;
    assert_int_equal(store_run_update(f->s, &done), 0);
    assert_int_equal(store_run_insert(f->s, &again, 100, &id), RR_E_EXISTS);
    fixture_reopen(f);
    assert_int_equal(store_run_insert(f->s, &again, 100, &id), RR_E_EXISTS);
}

static void test_run_idem(void **state)
{
    struct fixture *f = *state;
    fixture_add_dep(f->s, "alice", "p");
    fixture_add_dep(f->s, "bob", "p");
    struct store_run r = fixture_run("alice", "p", "manual", 0, STORE_RUN_QUEUED);
    r.idempotency_key = (char *)"req-42";
    r.id = fixture_add_run(f->s, &r, 100);

    int64_t id = -1;
    struct store_run dup = fixture_run("alice", "p", "manual", 0, STORE_RUN_QUEUED);
    dup.idempotency_key = (char *)"req-42";
    assert_int_equal(store_run_insert(f->s, &dup, 100, &id), RR_E_EXISTS);
    assert_int_equal(id, -1);

    /* The same key on another deployment, another key, or none: fine. */
    struct store_run b = fixture_run("bob", "p", "manual", 0, STORE_RUN_QUEUED);
    b.idempotency_key = (char *)"req-42";
    b.id = fixture_add_run(f->s, &b, 100);
    dup.idempotency_key = (char *)"req-43";
    fixture_add_run(f->s, &dup, 100);
    dup.idempotency_key = NULL;
    fixture_add_run(f->s, &dup, 100);
    fixture_add_run(f->s, &dup, 100);

    struct store_run g;
    assert_int_equal(store_run_find_idem(f->s, "alice", "p", "req-42", &g), 0);
    assert_run_equal(&g, &r);
    store_run_clear(&g);
    assert_int_equal(store_run_find_idem(f->s, "bob", "p", "req-42", &g), 0);
    assert_int_equal(g.id, b.id);
    assert_string_equal(g.user, "bob");
    store_run_clear(&g);
    memset(&g, 0, sizeof g);
    assert_int_equal(store_run_find_idem(f->s, "alice", "p", "req-44", &g), RR_E_NOTFOUND);
    assert_int_equal(store_run_find_idem(f->s, "alice", "q", "req-42", &g), RR_E_NOTFOUND);
    assert_int_equal(store_run_find_idem(f->s, "alice", "p", NULL, &g), RR_E_NOTFOUND);
    assert_null(g.user);
}

struct run_walk {
    int n;
    int64_t ids[32];
    int stop_at;
    struct store *s; /* for re-entrant calls */
};

static int run_cb(const struct store_run *r, void *ud)
{
    struct run_walk *w = ud;
    assert_true(w->n < 32);
    if (r->output)
        assert_int_equal(r->output[r->output_len], '\0');
    w->ids[w->n++] = r->id;
    return w->n == w->stop_at ? -99 : 0;
}

/* The deployment's ids, newest first. */
static int list_ids(struct fixture *f, const char *user, const char *pid, int64_t limit,
                    int64_t *ids, int max)
{
    struct run_walk w = {0};
    assert_int_equal(store_run_list(f->s, user, pid, limit, run_cb, &w), 0);
    assert_true(w.n <= max);
    memcpy(ids, w.ids, (size_t)w.n * sizeof ids[0]);
    return w.n;
}

static void test_run_prune(void **state)
{
    struct fixture *f = *state;
    fixture_add_dep(f->s, "alice", "p");
    fixture_add_dep(f->s, "alice", "q");
    int64_t id[9] = {0};
    struct store_run r = fixture_run("alice", "p", "schedule", 0, STORE_RUN_RUNNING);
    r.scheduled_for = T0 + 60;
    id[1] = fixture_add_run(f->s, &r, 3);
    r.scheduled_for = T0 + 120;
    r.outcome = STORE_RUN_QUEUED;
    id[2] = fixture_add_run(f->s, &r, 3);
    /* The other deployment's rows are never touched by p's pruning. */
    struct store_run o = fixture_run("alice", "q", "manual", 0, STORE_RUN_SUCCEEDED);
    for (int i = 0; i < 5; i++)
        fixture_add_run(f->s, &o, 0);
    for (int i = 3; i <= 7; i++) {
        struct store_run d = fixture_run("alice", "p", "manual", 0, STORE_RUN_SUCCEEDED);
        if (i == 5)
            d.outcome = STORE_RUN_SKIPPED;
        id[i] = fixture_add_run(f->s, &d, 3);
    }
    /* The newest 3, plus the older live ones. */
    int64_t got[16];
    int n = list_ids(f, "alice", "p", 0, got, 16);
    assert_int_equal(n, 5);
    assert_int_equal(got[0], id[7]);
    assert_int_equal(got[1], id[6]);
    assert_int_equal(got[2], id[5]);
    assert_int_equal(got[3], id[2]);
    assert_int_equal(got[4], id[1]);
    assert_int_equal(fixture_sql_int(f->path, "SELECT count(*) FROM runs WHERE project_id = 'q'"),
                     5);

    /* Once finished, the old live row goes at the next insert. */
    struct store_run fin = fixture_run("alice", "p", "schedule", T0 + 60, STORE_RUN_INTERRUPTED);
    fin.id = id[1];
    assert_int_equal(store_run_update(f->s, &fin), 0);
    struct store_run d = fixture_run("alice", "p", "manual", 0, STORE_RUN_FAILED);
    id[8] = fixture_add_run(f->s, &d, 3);
    n = list_ids(f, "alice", "p", 0, got, 16);
    assert_int_equal(n, 4);
    assert_int_equal(got[0], id[8]);
    assert_int_equal(got[1], id[7]);
    assert_int_equal(got[2], id[6]);
    assert_int_equal(got[3], id[2]);
    assert_int_equal(store_run_get(f->s, id[1], &d), RR_E_NOTFOUND);

    /* keep <= 0: nothing pruned. */
    fixture_add_run(f->s, &d, 0);
    fixture_add_run(f->s, &d, -1);
    assert_int_equal(list_ids(f, "alice", "p", 0, got, 16), 6);
    /* keep 1: just the new row and the live one. */
    int64_t last = fixture_add_run(f->s, &d, 1);
    n = list_ids(f, "alice", "p", 0, got, 16);
    assert_int_equal(n, 2);
    assert_int_equal(got[0], last);
    assert_int_equal(got[1], id[2]);
    /* Ids are never reused after pruning (AUTOINCREMENT). */
    assert_true(fixture_add_run(f->s, &d, 1) > last);
    assert_int_equal(fixture_sql_int(f->path, "SELECT count(*) FROM runs WHERE project_id = 'q'"),
                     5);
}

static int reentrant_run_cb(const struct store_run *r, void *ud)
{
    struct run_walk *w = ud;
    /* Re-enter the same walk, a lookup, an update and an insert that prunes,
     * while the outer walk is running. */
    struct run_walk inner = {0};
    assert_int_equal(store_run_list(w->s, r->user, r->project_id, 2, run_cb, &inner), 0);
    assert_int_equal(inner.n, 2);
    struct store_run g;
    assert_int_equal(store_run_get(w->s, r->id, &g), 0);
    assert_int_equal(g.id, r->id);
    store_run_clear(&g);
    struct store_run u = *r;
    u.reason = (char *)"seen";
    assert_int_equal(store_run_update(w->s, &u), 0);
    struct store_run m = fixture_run(r->user, r->project_id, "manual", 0, STORE_RUN_SUCCEEDED);
    int64_t id = 0;
    assert_int_equal(store_run_insert(w->s, &m, 100, &id), 0);
    assert_true(w->n < 32);
    w->ids[w->n++] = r->id;
    return 0;
}

static void test_run_list_last(void **state)
{
    struct fixture *f = *state;
    fixture_add_dep(f->s, "alice", "p");
    fixture_add_dep(f->s, "alice", "q");
    fixture_add_dep(f->s, "bob", "p");

    struct store_run g;
    memset(&g, 0, sizeof g);
    assert_int_equal(store_run_last(f->s, "alice", "p", &g), RR_E_NOTFOUND);
    assert_null(g.user);
    int64_t got[32];
    assert_int_equal(list_ids(f, "alice", "p", 0, got, 32), 0);

    int64_t id[5];
    for (int i = 0; i < 5; i++) {
        struct store_run r =
            fixture_run("alice", "p", "schedule", T0 + 60.0 * (i + 1), STORE_RUN_SUCCEEDED);
        r.output = (char *)"ok\n";
        r.output_len = 3;
        id[i] = fixture_add_run(f->s, &r, 100);
        /* Interleave other deployments' rows. */
        struct store_run o =
            fixture_run(i % 2 ? "alice" : "bob", i % 2 ? "q" : "p", "manual", 0, STORE_RUN_QUEUED);
        fixture_add_run(f->s, &o, 100);
    }
    int n = list_ids(f, "alice", "p", 0, got, 32);
    assert_int_equal(n, 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(got[i], id[4 - i]);
    n = list_ids(f, "alice", "p", 2, got, 32);
    assert_int_equal(n, 2);
    assert_int_equal(got[0], id[4]);
    assert_int_equal(got[1], id[3]);
    assert_int_equal(list_ids(f, "alice", "p", -5, got, 32), 5);
    assert_int_equal(list_ids(f, "alice", "p", 100, got, 32), 5);
    assert_int_equal(list_ids(f, "alice", "q", 0, got, 32), 2);
    assert_int_equal(list_ids(f, "bob", "p", 0, got, 32), 3);
    assert_int_equal(list_ids(f, "bob", "q", 0, got, 32), 0);
    assert_int_equal(store_run_list(f->s, NULL, "p", 0, run_cb, &(struct run_walk){0}), 0);

    /* A callback's non-zero return stops the walk and is returned. */
    struct run_walk w = {.stop_at = 2};
    assert_int_equal(store_run_list(f->s, "alice", "p", 0, run_cb, &w), -99);
    assert_int_equal(w.n, 2);

    assert_int_equal(store_run_last(f->s, "alice", "p", &g), 0);
    assert_int_equal(g.id, id[4]);
    assert_true(g.scheduled_for == T0 + 300);
    assert_int_equal(g.output_len, 3);
    assert_string_equal(g.output, "ok\n");
    store_run_clear(&g);

    /* Re-entrant: the walk sees the rows it started with, and the callback's
     * writes land. */
    struct run_walk rw = {.s = f->s};
    assert_int_equal(store_run_list(f->s, "alice", "p", 3, reentrant_run_cb, &rw), 0);
    assert_int_equal(rw.n, 3);
    assert_int_equal(rw.ids[0], id[4]);
    assert_int_equal(fixture_sql_int(f->path, "SELECT count(*) FROM runs WHERE reason = 'seen'"),
                     3);
    assert_int_equal(list_ids(f, "alice", "p", 0, got, 32), 8);
    assert_true(sqlite3_get_autocommit(store__db(f->s)) != 0);
}

static void test_run_interrupt_all(void **state)
{
    struct fixture *f = *state;
    fixture_add_dep(f->s, "alice", "p");
    fixture_add_dep(f->s, "bob", "q");
    struct store_run r = fixture_run("alice", "p", "schedule", T0 + 60, STORE_RUN_RUNNING);
    r.started_at = T0 + 60.5;
    int64_t running = fixture_add_run(f->s, &r, 100);
    r = fixture_run("alice", "p", "manual", 0, STORE_RUN_QUEUED);
    int64_t queued = fixture_add_run(f->s, &r, 100);
    r = fixture_run("bob", "q", "manual", 0, STORE_RUN_RUNNING);
    int64_t other = fixture_add_run(f->s, &r, 100);
    r = fixture_run("alice", "p", "schedule", T0 + 120, STORE_RUN_SUCCEEDED);
    r.finished_at = T0 + 130;
    r.exit_code = 0;
    int64_t done = fixture_add_run(f->s, &r, 100);
    r = fixture_run("alice", "p", "schedule", T0 + 180, STORE_RUN_SKIPPED);
    r.reason = (char *)"overlap";
    int64_t skipped = fixture_add_run(f->s, &r, 100);

    int64_t n = -1;
    assert_int_equal(store_run_interrupt_all(f->s, T0 + 500, "server restarted", &n), 0);
    assert_int_equal(n, 3);
    int64_t live[] = {running, queued, other};
    for (size_t i = 0; i < 3; i++) {
        struct store_run g;
        assert_int_equal(store_run_get(f->s, live[i], &g), 0);
        assert_int_equal(g.outcome, STORE_RUN_INTERRUPTED);
        assert_string_equal(g.reason, "server restarted");
        assert_true(g.finished_at == T0 + 500);
        assert_true(store_outcome_final(g.outcome));
        if (live[i] == running)
            assert_true(g.started_at == T0 + 60.5); /* kept */
        store_run_clear(&g);
    }
    struct store_run g;
    assert_int_equal(store_run_get(f->s, done, &g), 0);
    assert_int_equal(g.outcome, STORE_RUN_SUCCEEDED);
    assert_null(g.reason);
    assert_true(g.finished_at == T0 + 130);
    store_run_clear(&g);
    assert_int_equal(store_run_get(f->s, skipped, &g), 0);
    assert_int_equal(g.outcome, STORE_RUN_SKIPPED);
    assert_string_equal(g.reason, "overlap");
    assert_true(g.finished_at == 0);
    store_run_clear(&g);

    /* Nothing left to interrupt; count may be NULL. */
    assert_int_equal(store_run_interrupt_all(f->s, T0 + 600, "again", &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(store_run_interrupt_all(f->s, T0 + 600, "again", NULL), 0);
    assert_int_equal(fixture_sql_int(f->path, "SELECT count(*) FROM runs WHERE reason = 'again'"),
                     0);
}

struct live_walk {
    int n;
    int64_t ids[8];
};

static int collect_live(const struct store_run *r, void *ud)
{
    struct live_walk *w = ud;
    w->ids[w->n++] = r->id;
    return 0;
}

static void test_run_pid_and_live(void **state)
{
    struct fixture *f = *state;
    fixture_add_dep(f->s, "alice", "p");
    struct store_run r = fixture_run("alice", "p", "manual", 0, STORE_RUN_QUEUED);
    int64_t a = fixture_add_run(f->s, &r, 100);
    int64_t b = fixture_add_run(f->s, &r, 100);
    r.outcome = STORE_RUN_SUCCEEDED;
    fixture_add_run(f->s, &r, 100);
    struct store_run g;
    assert_int_equal(store_run_get(f->s, a, &g), 0);
    assert_int_equal(g.pid, 0);
    g.outcome = STORE_RUN_RUNNING;
    g.pid = 4242;
    g.pid_start = 123456789012ull;
    assert_int_equal(store_run_update(f->s, &g), 0);
    store_run_clear(&g);
    assert_int_equal(store_run_get(f->s, a, &g), 0);
    assert_int_equal(g.pid, 4242);
    assert_true(g.pid_start == 123456789012ull);
    store_run_clear(&g);
    struct live_walk w = {0};
    assert_int_equal(store_run_list_live(f->s, collect_live, &w), 0);
    assert_int_equal(w.n, 2);
    assert_true(w.ids[0] == a && w.ids[1] == b);
}

static void test_batch(void **state)
{
    struct fixture *f = *state;
    fixture_add_dep(f->s, "alice", "p");
    assert_int_equal(store_batch_commit(f->s), RR_E_INVAL);
    assert_int_equal(store_batch_begin(f->s), 0);
    assert_int_equal(store_batch_begin(f->s), RR_E_BUSY);
    struct store_run r = fixture_run("alice", "p", "schedule", T0 + 60, STORE_RUN_QUEUED);
    int64_t a = fixture_add_run(f->s, &r, 100);
    /* a failing call inside the batch undoes only itself */
    int64_t dup;
    assert_int_equal(store_run_insert(f->s, &r, 100, &dup), RR_E_EXISTS);
    r.scheduled_for = T0 + 120;
    int64_t b = fixture_add_run(f->s, &r, 100);
    assert_int_equal(store_dep_set_progress(f->s, "alice", "p", T0 + 120, T0 + 180), 0);
    /* not visible to another connection before the commit */
    assert_int_equal(fixture_sql_int(f->path, "SELECT count(*) FROM runs"), 0);
    assert_int_equal(store_batch_commit(f->s), 0);
    assert_int_equal(fixture_sql_int(f->path, "SELECT count(*) FROM runs"), 2);
    struct store_run g;
    assert_int_equal(store_run_get(f->s, a, &g), 0);
    store_run_clear(&g);
    assert_int_equal(store_run_get(f->s, b, &g), 0);
    store_run_clear(&g);
    /* and writes outside a batch are their own transactions again */
    r.scheduled_for = T0 + 180;
    fixture_add_run(f->s, &r, 100);
    assert_int_equal(fixture_sql_int(f->path, "SELECT count(*) FROM runs"), 3);
}

/* A read batch holds no write lock until store_batch_write, and then writes
 * even though another connection committed after the batch's first read
 * (a deferred transaction would fail that upgrade with SQLITE_BUSY). */
static void test_batch_read_then_write(void **state)
{
    struct fixture *f = *state;
    fixture_add_dep(f->s, "alice", "p");
    assert_int_equal(store_batch_write(f->s), 0); /* outside a batch: nothing */
    assert_int_equal(store_batch_begin_read(f->s), 0);
    assert_int_equal(store_batch_begin_read(f->s), RR_E_BUSY);
    assert_int_equal(store_batch_begin(f->s), RR_E_BUSY);
    struct store_dep d;
    assert_int_equal(store_dep_get(f->s, "alice", "p", &d), 0); /* the snapshot */
    store_dep_clear(&d);

    sqlite3 *other = NULL;
    assert_int_equal(sqlite3_open_v2(f->path, &other, SQLITE_OPEN_READWRITE, NULL),
                     SQLITE_OK);
    raw_exec(other, "INSERT INTO users(name, created_at) VALUES ('zed', 0)");

    assert_int_equal(store_batch_write(f->s), 0);
    assert_int_equal(store_batch_write(f->s), 0); /* already writing: nothing */
    struct store_run r = fixture_run("alice", "p", "schedule", T0 + 60, STORE_RUN_QUEUED);
    fixture_add_run(f->s, &r, 100);
    /* the write lock is held: another writer waits out its busy timeout */
    sqlite3_busy_timeout(other, 0);
    char *msg = NULL;
    assert_int_equal(sqlite3_exec(other, "INSERT INTO users(name, created_at) "
                                         "VALUES ('amy', 0)", NULL, NULL, &msg),
                     SQLITE_BUSY);
    sqlite3_free(msg);
    assert_int_equal(store_batch_commit(f->s), 0);
    assert_int_equal(fixture_sql_int(f->path, "SELECT count(*) FROM runs"), 1);
    assert_int_equal(fixture_sql_int(f->path, "SELECT count(*) FROM users WHERE name = 'zed'"), 1);
    assert_int_equal(sqlite3_close(other), SQLITE_OK);

    /* A read batch that never writes commits nothing and takes no write lock. */
    assert_int_equal(store_batch_begin_read(f->s), 0);
    assert_int_equal(store_dep_get(f->s, "alice", "p", &d), 0);
    store_dep_clear(&d);
    assert_int_equal(sqlite3_open_v2(f->path, &other, SQLITE_OPEN_READWRITE, NULL),
                     SQLITE_OK);
    sqlite3_busy_timeout(other, 0);
    raw_exec(other, "INSERT INTO users(name, created_at) VALUES ('bob', 0)");
    assert_int_equal(sqlite3_close(other), SQLITE_OK);
    assert_int_equal(store_batch_commit(f->s), 0);
}

static void test_run_cascade(void **state)
{
    struct fixture *f = *state;
    fixture_add_dep(f->s, "alice", "p");
    fixture_add_dep(f->s, "alice", "q");
    struct store_run r = fixture_run("alice", "p", "schedule", T0 + 60, STORE_RUN_RUNNING);
    int64_t a = fixture_add_run(f->s, &r, 100);
    r.scheduled_for = T0 + 120;
    fixture_add_run(f->s, &r, 100);
    struct store_run o = fixture_run("alice", "q", "manual", 0, STORE_RUN_SUCCEEDED);
    int64_t b = fixture_add_run(f->s, &o, 100);

    assert_int_equal(store_dep_delete(f->s, "alice", "p"), 0);
    assert_int_equal(fixture_sql_int(f->path, "SELECT count(*) FROM runs WHERE project_id = 'p'"),
                     0);
    struct store_run g;
    assert_int_equal(store_run_get(f->s, a, &g), RR_E_NOTFOUND);
    assert_int_equal(store_run_get(f->s, b, &g), 0); /* the other deployment's stays */
    store_run_clear(&g);

    /* Re-adding the same id starts with an empty ledger; the old scheduled
     * times are free again. */
    fixture_add_dep(f->s, "alice", "p");
    assert_int_equal(store_run_last(f->s, "alice", "p", &g), RR_E_NOTFOUND);
    r.scheduled_for = T0 + 60;
    assert_true(fixture_add_run(f->s, &r, 100) > b);
}

static void test_run_missing_dep(void **state)
{
    struct fixture *f = *state;
    fixture_add_dep(f->s, "alice", "p");
    int64_t id = -1;
    struct store_run r = fixture_run("alice", "nope", "manual", 0, STORE_RUN_QUEUED);
    assert_int_equal(store_run_insert(f->s, &r, 100, &id), RR_E_NOTFOUND);
    r = fixture_run("bob", "p", "schedule", T0 + 60, STORE_RUN_QUEUED); /* another user's id */
    assert_int_equal(store_run_insert(f->s, &r, 100, &id), RR_E_NOTFOUND);
    assert_int_equal(id, -1);
    assert_int_equal(fixture_sql_int(f->path, "SELECT count(*) FROM runs"), 0);
    assert_true(sqlite3_get_autocommit(store__db(f->s)) != 0);
    r = fixture_run("alice", "p", "schedule", T0 + 60, STORE_RUN_QUEUED);
    assert_int_equal(store_run_insert(f->s, &r, 100, &id), 0);
}

static void test_outcome_names(void **state)
{
    (void)state;
    static const char *const names[] = {"queued",      "running", "succeeded",
                                        "failed",      "timed_out", "cancelled",
                                        "interrupted", "skipped", "missed"};
    enum store_outcome o;
    for (int i = 0; i < 9; i++) {
        assert_string_equal(store_outcome_name((enum store_outcome)i), names[i]);
        assert_int_equal(store_outcome_parse(names[i], &o), 0);
        assert_int_equal(o, i);
        assert_int_equal(store_outcome_final((enum store_outcome)i), i >= 2);
    }
    assert_string_equal(store_outcome_name((enum store_outcome)9), "invalid");
    assert_int_equal(store_outcome_parse("Queued", &o), RR_E_INVAL);
    assert_int_equal(store_outcome_parse("", &o), RR_E_INVAL);
    assert_int_equal(store_outcome_parse("invalid", &o), RR_E_INVAL);
    assert_int_equal(store_outcome_parse(NULL, &o), RR_E_INVAL);
}

/* ================================================================ migration 1 -> 2 */

/* The schema as text, for comparing two databases. */
static char *schema_text(const char *path)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT group_concat(x, '\n') FROM (SELECT type || ' ' "
                                        "|| name || ' ' || coalesce(sql, '') AS x FROM "
                                        "sqlite_master ORDER BY name)",
                                        -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    char *t = strdup((const char *)sqlite3_column_text(st, 0));
    assert_non_null(t);
    sqlite3_finalize(st);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    return t;
}

static void test_migrate_v1_to_v2(void **state)
{
    struct fixture *f = *state;
    assert_null(store__migration_sql(0));
    assert_null(store__migration_sql(4));
    assert_non_null(store__migration_sql(3));

    /* A database as release 1 left it: its migration, its hash key, a key and
     * a deployment, written with raw SQL. */
    store_close(f->s);
    f->s = NULL;
    unlink(f->path);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    raw_exec(db, "PRAGMA journal_mode = WAL");
    raw_exec(db, store__migration_sql(1));
    raw_exec(db, "PRAGMA user_version = 1");
    unsigned char hk[32], h[crypto_generichash_BYTES];
    for (size_t i = 0; i < sizeof hk; i++)
        hk[i] = (unsigned char)(i * 3 + 1);
    const char *text = "rrk_00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    assert_int_equal(crypto_generichash(h, sizeof h, (const unsigned char *)text, strlen(text),
                                        hk, sizeof hk),
                     0);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "INSERT INTO meta(k, v) VALUES ('hash_key', ?1)", -1,
                                        &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_bind_blob(st, 1, hk, sizeof hk, SQLITE_STATIC), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    raw_exec(db, "INSERT INTO users(name, created_at) VALUES ('alice', 1767225600)");
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "INSERT INTO api_keys(id, user_id, label, perms, hash, "
                                        "created_at) VALUES ('k_0123456789abcdef', 1, 'old', 3, "
                                        "?1, 1767225600)",
                                        -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_bind_blob(st, 1, h, sizeof h, SQLITE_STATIC), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    raw_exec(db, "INSERT INTO deployments(user, project_id, pipeline, schedule, state, error, "
                 "created_by, owner_key_id, created_at, updated_at, next_run_at) VALUES "
                 "('alice', 'p', '{\"a\":1}', '0 3 * * *', 'paused', NULL, 'alice', "
                 "'k_0123456789abcdef', 1767225600, 1767225601, 1767236400)");
    assert_int_equal(sqlite3_close(db), SQLITE_OK);

    fixture_reopen(f); /* migrates */
    assert_int_equal(fixture_sql_int(f->path, "PRAGMA user_version"), 3);

    /* The key still authenticates (hash key kept), the deployment is intact. */
    struct store_key k;
    assert_int_equal(store_key_auth(f->s, text, T0 + 10, &k), 0);
    assert_string_equal(k.id, "k_0123456789abcdef");
    assert_string_equal(k.user, "alice");
    assert_string_equal(k.label, "old");
    assert_int_equal(k.perms, STORE_PERM_ALL);
    struct store_dep g;
    assert_int_equal(store_dep_get(f->s, "alice", "p", &g), 0);
    assert_string_equal(g.pipeline, "{\"a\":1}");
    assert_string_equal(g.schedule, "0 3 * * *");
    assert_int_equal(g.state, STORE_PAUSED);
    assert_string_equal(g.owner_key_id, "k_0123456789abcdef");
    assert_true(g.created_at == T0);
    assert_true(g.updated_at == T0 + 1);
    assert_true(g.next_run_at == T0 + 10800);
    assert_true(g.last_fire_at == 0);
    store_dep_clear(&g);

    /* The new parts work on the migrated file. */
    assert_int_equal(store_dep_set_progress(f->s, "alice", "p", T0 + 10800, T0 + 97200), 0);
    struct store_run r = fixture_run("alice", "p", "schedule", T0 + 10800, STORE_RUN_QUEUED);
    int64_t id = fixture_add_run(f->s, &r, 100);
    assert_int_equal(store_run_insert(f->s, &r, 100, &id), RR_E_EXISTS);
    assert_int_equal(store_dep_delete(f->s, "alice", "p"), 0);
    assert_int_equal(fixture_sql_int(f->path, "SELECT count(*) FROM runs"), 0);

    /* Same schema as a database created fresh by this build. */
    char fresh[160];
    snprintf(fresh, sizeof fresh, "%s/fresh.db", f->dir);
    struct store *s2 = NULL;
    assert_int_equal(store_open(fresh, &s2, NULL), 0);
    store_close(s2);
    char *a = schema_text(f->path);
    char *b = schema_text(fresh);
    assert_string_equal(a, b);
    free(a);
    free(b);
    static const char *const sfx[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < 3; i++) {
        char p[200];
        snprintf(p, sizeof p, "%s%s", fresh, sfx[i]);
        unlink(p);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        FIXTURE_TEST(test_open_migrate_reopen),
        FIXTURE_TEST(test_newer_schema_refused),
        FIXTURE_TEST(test_open_bad_path),
        FIXTURE_TEST(test_pragmas),
        FIXTURE_TEST(test_key_create_auth),
        FIXTURE_TEST(test_key_revoke_by_id),
        FIXTURE_TEST(test_key_revoke_by_text),
        FIXTURE_TEST(test_key_expiry),
        FIXTURE_TEST(test_perms_parse_format),
        FIXTURE_TEST(test_key_list_count),
        FIXTURE_TEST(test_hash_key_persists),
        FIXTURE_TEST(test_key_text_not_in_db),
        FIXTURE_TEST(test_invalid_user_label),
        FIXTURE_TEST(test_dep_insert_get),
        FIXTURE_TEST(test_dep_duplicate),
        FIXTURE_TEST(test_dep_limit),
        FIXTURE_TEST(test_dep_update_delete),
        FIXTURE_TEST(test_dep_list_order_isolation),
        FIXTURE_TEST(test_dep_list_reentrant),
        FIXTURE_TEST(test_dep_unicode_big),
        FIXTURE_TEST(test_dep_list_by_key),
        FIXTURE_TEST(test_state_names),
        FIXTURE_TEST(test_two_connections),
        FIXTURE_TEST(test_racing_inserts),
        FIXTURE_TEST(test_dep_progress),
        FIXTURE_TEST(test_run_round_trip),
        FIXTURE_TEST(test_run_sched_unique),
        FIXTURE_TEST(test_run_idem),
        FIXTURE_TEST(test_run_prune),
        FIXTURE_TEST(test_run_list_last),
        FIXTURE_TEST(test_run_interrupt_all),
        FIXTURE_TEST(test_run_cascade),
        FIXTURE_TEST(test_batch),
        FIXTURE_TEST(test_batch_read_then_write),
        FIXTURE_TEST(test_run_pid_and_live),
        FIXTURE_TEST(test_run_missing_dep),
        FIXTURE_TEST(test_outcome_names),
        FIXTURE_TEST(test_migrate_v1_to_v2),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
