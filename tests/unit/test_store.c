/* test_store.c -- unit tests for store/store.c: opening, the schema and its
 * migrations, pragmas, several connections, batches, health and the
 * checkpointer.
 *
 * Design: every test gets a fresh database file in its own temporary
 * directory (fixture_setup) that fixture_teardown closes and removes. Time is
 * passed in explicitly, never read from the clock. Older databases are built
 * with raw SQL from the store's own migration steps.
 *
 * Thread: the test's, plus the checkpoint thread that test_checkpointer
 * starts through the store. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/store.h"
#include "store/store_internal.h"
#include "tests/unit/fixture.h"

#define T0 FIXTURE_T0

static void pragma_text(sqlite3 *db, const char *sql, char *out, size_t n)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    snprintf(out, n, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
}

static void raw_exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg ? msg : "?");
}

/* Close the fixture's store and start its file again as an empty WAL
 * database written with raw SQL (an older release's, say). */
static sqlite3 *raw_fresh(struct fixture *f)
{
    store_close(f->s);
    f->s = NULL;
    unlink(f->path);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    raw_exec(db, "PRAGMA journal_mode = WAL");
    return db;
}

/* ================================================================ open */

static void test_open_migrate_reopen(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(fixture_sql_int(f->path, "PRAGMA user_version"), 4);
    assert_int_equal(fixture_sql_int(f->path,
                                     "SELECT count(*) FROM sqlite_master WHERE type = 'table' "
                                     "AND name IN ('meta','users','api_keys','deployments',"
                                     "'runs')"),
                     5);
    int64_t n = -1;
    assert_int_equal(store_key_count(f->s, &n), 0);
    assert_int_equal(n, 0);
    fixture_reopen(f);
    assert_int_equal(fixture_sql_int(f->path, "PRAGMA user_version"), 4);
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

    /* A user's snapshot moves with the user's rows changed by either
     * connection, and with nothing else of this one's; inside a batch also
     * with the batch's own uncommitted writes, and with their rollback. */
    struct store_snapshot s0, s1, s2;
    assert_int_equal(store_snapshot(f->s, "alice", &s0), 0);
    assert_int_equal(store_snapshot(f->s, "alice", &s1), 0);
    assert_true(store_snapshot_eq(&s0, &s1));
    assert_int_equal(store_dep_set_errored(b, "alice", "q", "why", T0), 0);
    assert_int_equal(store_snapshot(f->s, "alice", &s1), 0);
    assert_false(store_snapshot_eq(&s0, &s1)); /* another connection's commit */
    assert_false(store_snapshot_same_base(&s0, &s1));
    assert_int_equal(store_dep_set_errored(f->s, "alice", "q", "why", T0), 0);
    assert_int_equal(store_snapshot(f->s, "alice", &s2), 0);
    assert_false(store_snapshot_eq(&s1, &s2)); /* this one's, alice's row */
    assert_true(store_snapshot_same_base(&s1, &s2));

    /* other users' rows and keys leave alice's snapshot as it is */
    struct store_snapshot b0, b1;
    assert_int_equal(store_snapshot(f->s, "bob", &b0), 0);
    fixture_add_dep(f->s, "bob", "x");
    char text3[STORE_KEY_TEXT_MAX];
    fixture_key(f->s, "carol", STORE_PERM_ALL, 0, T0, text3, NULL);
    assert_int_equal(store_snapshot(f->s, "alice", &s1), 0);
    assert_true(store_snapshot_eq(&s1, &s2));
    assert_int_equal(store_snapshot(f->s, "bob", &b1), 0);
    assert_false(store_snapshot_eq(&b0, &b1));
    /* runs count for their user, deleted ones too (the cascade) */
    struct store_run r = fixture_run("alice", "q", "manual", 0, STORE_RUN_SUCCEEDED);
    fixture_add_run(f->s, &r, 100);
    assert_int_equal(store_snapshot(f->s, "alice", &s0), 0);
    assert_false(store_snapshot_eq(&s0, &s2));

    assert_false(store_batch_read_only(f->s)); /* no batch */
    assert_int_equal(store_batch_begin_read(f->s), 0);
    assert_true(store_batch_read_only(f->s));
    assert_int_equal(store_snapshot(f->s, "alice", &s1), 0);
    assert_true(store_snapshot_eq(&s0, &s1));
    assert_int_equal(store_batch_write(f->s), 0);
    assert_false(store_batch_read_only(f->s));
    assert_int_equal(store_dep_delete(f->s, "alice", "q"), 0);
    assert_int_equal(store_snapshot(f->s, "alice", &s2), 0);
    assert_false(store_snapshot_eq(&s1, &s2));
#ifdef RRDEPLOY_TEST_HOOKS
    store_test_fail_commits(f->s, 1);
    assert_int_not_equal(store_batch_commit(f->s), 0);
    assert_int_equal(store_snapshot(f->s, "alice", &s0), 0);
    assert_false(store_snapshot_eq(&s2, &s0)); /* rolled back */
    assert_false(store_snapshot_same_base(&s1, &s0));
    assert_int_equal(store_dep_get(f->s, "alice", "q", &g), 0);
    store_dep_clear(&g);
#else
    assert_int_equal(store_batch_commit(f->s), 0);
#endif

    store_close(b);
}

/* ================================================================ batches */

/* Opening a database that is already set up takes no write lock: `rrdeploy
 * keys` opens it while the server holds a long write transaction (here the
 * same thread holds it, so a lock wait could only end in "busy"). */
static void test_open_while_another_writes(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(store_batch_begin(f->s), 0);
    fixture_add_dep(f->s, "alice", "p");
    struct store *other = fixture_open(f->path);
    int64_t n = -1;
    assert_int_equal(store_key_count(other, &n), 0); /* reads work too */
    store_close(other);
    assert_int_equal(store_batch_commit(f->s), 0);
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

/* ================================================================ health and checkpoints */

/* store_health notices the file gone or replaced under the open connection,
 * and recovers when the original is back. */
static void test_health(void **state)
{
    struct fixture *f = *state;
    struct err e = {0};
    assert_int_equal(store_health(f->s, &e), 0);

    char moved[160];
    snprintf(moved, sizeof moved, "%s.moved", f->path);
    assert_int_equal(rename(f->path, moved), 0);
    assert_int_equal(store_health(f->s, &e), RR_E_IO);
    assert_non_null(strstr(e.msg, f->path));
    FILE *fp = fopen(f->path, "wb"); /* another file at the same path */
    assert_non_null(fp);
    fclose(fp);
    assert_int_equal(store_health(f->s, &e), RR_E_IO);
    assert_non_null(strstr(e.msg, "replaced"));
    assert_int_equal(rename(moved, f->path), 0);
    assert_int_equal(store_health(f->s, NULL), 0);

    struct store *m = fixture_open(":memory:");
    assert_int_equal(store_health(m, &e), 0);
    store_close(m);
}

/* The checkpointer takes automatic checkpoints off the connection's commits
 * and stops with store_close (LeakSanitizer would report its connection
 * left open). In-memory databases have no WAL: nothing to start. */
static void test_checkpointer(void **state)
{
    struct fixture *f = *state;
    sqlite3 *db = store__db(f->s);
    char v[32];
    pragma_text(db, "PRAGMA wal_autocheckpoint", v, sizeof v);
    assert_string_equal(v, "1000");
    struct err e = {0};
    assert_int_equal(store_checkpointer_start(f->s, 0, &e), 0);
    assert_int_equal(store_checkpointer_start(f->s, 0, &e), 0); /* already running */
    pragma_text(db, "PRAGMA wal_autocheckpoint", v, sizeof v);
    assert_string_equal(v, "0");
    fixture_add_dep(f->s, "alice", "p"); /* writes go on */
    fixture_reopen(f);                   /* closing stops it */
    assert_int_equal(fixture_sql_int(f->path, "SELECT count(*) FROM deployments"), 1);

    struct store *m = fixture_open(":memory:");
    assert_int_equal(store_checkpointer_start(m, 0, &e), 0);
    pragma_text(store__db(m), "PRAGMA wal_autocheckpoint", v, sizeof v);
    assert_string_equal(v, "1000");
    store_close(m);
}

static off_t file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? sb.st_size : 0;
}

/* The WAL stays within its limit plus one transaction however fast the
 * writes come (the commit that passes the limit truncates it), and shrinks
 * to nothing once the writes stop. */
static void test_wal_bounded(void **state)
{
    struct fixture *f = *state;
    enum { LIMIT = 1024 * 1024, BATCHES = 150, ROWS = 50, OUT = 4096 };
    struct err e = {0};
    assert_int_equal(store_checkpointer_start(f->s, LIMIT, &e), 0);
    char wal[160];
    snprintf(wal, sizeof wal, "%s-wal", f->path);
    fixture_add_dep(f->s, "alice", "p");
    static char output[OUT];
    memset(output, 'x', sizeof output);
    off_t most = 0;
    for (int b = 0; b < BATCHES; b++) {
        assert_int_equal(store_batch_begin(f->s), 0);
        for (int i = 0; i < ROWS; i++) {
            struct store_run r = fixture_run("alice", "p", "manual", 0, STORE_RUN_SUCCEEDED);
            r.output = output;
            r.output_len = sizeof output;
            fixture_add_run(f->s, &r, 200);
        }
        assert_int_equal(store_batch_commit(f->s), 0);
        off_t now = file_size(wal);
        if (now > most)
            most = now;
    }
    print_message("largest WAL after a commit: %lld bytes (limit %d)\n",
                  (long long)most, LIMIT);
    /* about 30 MB written: one batch is about ROWS x OUT of WAL, more with
     * its index pages and the rows the prune deletes */
    assert_true(most <= LIMIT + 2 * ROWS * OUT + 64 * 1024);
    /* idle: the checkpointer truncates it (bounded wait for that) */
    int64_t deadline = time_now_mono_ms() + 10000;
    while (file_size(wal) > 0 && time_now_mono_ms() < deadline) {
        struct timespec pause = {0, 20 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    assert_int_equal(file_size(wal), 0);
    assert_int_equal(fixture_sql_int(f->path, "SELECT count(*) FROM runs"), 200);
}

/* ================================================================ migrations */

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

/* The schema of f's database is the one a fresh database of this build
 * gets. */
static void assert_same_schema_as_fresh(struct fixture *f)
{
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

static void test_migrate_v1_to_v2(void **state)
{
    struct fixture *f = *state;
    assert_null(store__migration_sql(0));
    assert_null(store__migration_sql(5));
    assert_non_null(store__migration_sql(4));

    /* A database as release 1 left it: its migration, its hash key, a key and
     * a deployment, written with raw SQL. */
    sqlite3 *db = raw_fresh(f);
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
    assert_int_equal(fixture_sql_int(f->path, "PRAGMA user_version"), 4);

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

    assert_same_schema_as_fresh(f);
}

/* A database as release 3 left it -- a deployment with a run that had
 * output and a process group -- is brought to 4 without losing anything: no
 * credential, no task, and both can be set afterwards. */
static void test_migrate_v3_to_v4(void **state)
{
    struct fixture *f = *state;
    sqlite3 *db = raw_fresh(f);
    for (int v = 1; v <= 3; v++)
        raw_exec(db, store__migration_sql(v));
    raw_exec(db, "PRAGMA user_version = 3");
    raw_exec(db, "INSERT INTO deployments(user, project_id, pipeline, schedule, state, error, "
                 "created_by, owner_key_id, created_at, updated_at, next_run_at, last_fire_at) "
                 "VALUES ('alice', 'p', '{\"a\":1}', '*/5 * * * *', 'active', NULL, 'alice', "
                 "'k_0123456789abcdef', 1767225600, 1767225601, 1767225900, 1767225600)");
    raw_exec(db, "INSERT INTO runs(user, project_id, trigger, scheduled_for, created_at, "
                 "started_at, finished_at, outcome, reason, exit_code, signal, output, "
                 "idempotency_key, missed_count, pid, pid_start) VALUES ('alice', 'p', "
                 "'schedule', 1767225600, 1767225600.5, 1767225601, 1767225602, 'succeeded', "
                 "NULL, 0, NULL, X'6F6B0A', NULL, 0, 4242, 987654321)");
    raw_exec(db, "INSERT INTO runs(user, project_id, trigger, created_at, outcome) VALUES "
                 "('alice', 'p', 'manual', 1767225700, 'queued')");
    assert_int_equal(sqlite3_close(db), SQLITE_OK);

    fixture_reopen(f); /* migrates */
    assert_int_equal(fixture_sql_int(f->path, "PRAGMA user_version"), 4);
    struct store_dep g;
    assert_int_equal(store_dep_get(f->s, "alice", "p", &g), 0);
    assert_string_equal(g.pipeline, "{\"a\":1}");
    assert_string_equal(g.schedule, "*/5 * * * *");
    assert_int_equal(g.state, STORE_ACTIVE);
    assert_string_equal(g.owner_key_id, "k_0123456789abcdef");
    assert_true(g.updated_at == T0 + 1);
    assert_true(g.next_run_at == T0 + 300);
    assert_true(g.last_fire_at == T0);
    store_dep_clear(&g);
    char *pipeline = NULL;
    unsigned char *cred = (unsigned char *)"unset";
    size_t cred_len = 9;
    assert_int_equal(store_dep_pipeline(f->s, "alice", "p", &pipeline, &cred, &cred_len), 0);
    assert_string_equal(pipeline, "{\"a\":1}");
    assert_null(cred);
    assert_int_equal(cred_len, 0);
    free(pipeline);
    struct store_run r;
    assert_int_equal(store_run_get(f->s, 1, &r), 0);
    assert_int_equal(r.outcome, STORE_RUN_SUCCEEDED);
    assert_true(r.started_at == T0 + 1 && r.finished_at == T0 + 2);
    assert_int_equal(r.exit_code, 0);
    assert_int_equal(r.output_len, 3);
    assert_memory_equal(r.output, "ok\n", 3);
    assert_int_equal(r.pid, 4242);
    assert_true(r.pid_start == 987654321);
    assert_null(r.task);
    store_run_clear(&r);

    /* The new columns work on the migrated file. */
    static const unsigned char sealed[] = {1, 0, 2, 0, 3};
    struct store_dep_change ch = {.state = STORE_ACTIVE, .updated_at = T0 + 10,
                                  .next_run_at = T0 + 300, .set_credential = true,
                                  .credential = sealed, .credential_len = sizeof sealed};
    assert_int_equal(store_dep_change(f->s, "alice", "p", &ch), 0);
    assert_int_equal(store_dep_pipeline(f->s, "alice", "p", &pipeline, &cred, &cred_len), 0);
    assert_int_equal(cred_len, sizeof sealed);
    assert_memory_equal(cred, sealed, sizeof sealed);
    free(pipeline);
    free(cred);
    assert_int_equal(store_run_start(f->s, 2, T0 + 100, 0, 0, "{\"token\":\"t\"}", &r), 0);
    assert_string_equal(r.task, "{\"token\":\"t\"}");
    store_run_clear(&r);
    assert_same_schema_as_fresh(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        FIXTURE_TEST(test_open_migrate_reopen),
        FIXTURE_TEST(test_newer_schema_refused),
        FIXTURE_TEST(test_open_bad_path),
        FIXTURE_TEST(test_pragmas),
        FIXTURE_TEST(test_two_connections),
        FIXTURE_TEST(test_open_while_another_writes),
        FIXTURE_TEST(test_batch),
        FIXTURE_TEST(test_batch_read_then_write),
        FIXTURE_TEST(test_health),
        FIXTURE_TEST(test_checkpointer),
        FIXTURE_TEST(test_wal_bounded),
        FIXTURE_TEST(test_migrate_v1_to_v2),
        FIXTURE_TEST(test_migrate_v3_to_v4),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
