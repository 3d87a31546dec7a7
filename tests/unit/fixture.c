/* fixture.c -- the unit tests' shared fixture: a temporary directory with a
 * database, stores opened on it, keys and rows.
 *
 * Design: failures are cmocka assertions, so a broken fixture fails the test
 * that used it, with the reason. The directory is removed with everything in
 * it (a test may leave other files there, a second database say), but not
 * recursively: tests make files, not trees.
 *
 * Thread: the test's thread. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/unit/fixture.h"

struct store *fixture_open(const char *path)
{
    struct err e = {0};
    struct store *s = NULL;
    int rc = store_open(path, &s, &e);
    if (rc)
        fail_msg("store_open %s: %d %s", path, rc, e.msg);
    return s;
}

struct fixture *fixture_new(void)
{
    struct fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/rr-test.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/test.db", f->dir);
    f->s = fixture_open(f->path);
    return f;
}

void fixture_free(struct fixture *f)
{
    if (!f)
        return;
    store_close(f->s);
    DIR *d = opendir(f->dir);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                continue;
            char p[sizeof f->dir + 256 + 2];
            snprintf(p, sizeof p, "%s/%s", f->dir, de->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(f->dir);
    free(f);
}

int fixture_setup(void **state)
{
    *state = fixture_new();
    return 0;
}

int fixture_teardown(void **state)
{
    fixture_free(*state);
    return 0;
}

void fixture_reopen(struct fixture *f)
{
    store_close(f->s); /* NULL is fine */
    f->s = NULL;
    f->s = fixture_open(f->path);
}

void fixture_key(struct store *s, const char *user, unsigned perms, double expires_at,
                 double now, char text[STORE_KEY_TEXT_MAX], struct store_key *out)
{
    int rc = store_key_create(s, user, "test key", perms, expires_at, now, text, out);
    assert_int_equal(rc, 0);
}

int64_t fixture_sql_int(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    return v;
}

struct store_dep fixture_dep(const char *user, const char *project_id, const char *pipeline)
{
    struct store_dep d = {
        .user = (char *)user,
        .project_id = (char *)project_id,
        .pipeline = (char *)pipeline,
        .schedule = (char *)"*/5 * * * *",
        .state = STORE_ACTIVE,
        .created_by = (char *)user,
        .owner_key_id = (char *)"k_0000000000000000",
        .created_at = FIXTURE_T0,
        .updated_at = FIXTURE_T0,
        .next_run_at = FIXTURE_T0 + 300,
    };
    return d;
}

void fixture_add_dep(struct store *s, const char *user, const char *project_id)
{
    struct store_dep d = fixture_dep(user, project_id, "{}");
    assert_int_equal(store_dep_insert(s, &d, 0), 0);
}

struct store_run fixture_run(const char *user, const char *project_id, const char *trigger,
                             double scheduled_for, enum store_outcome outcome)
{
    struct store_run r = {
        .user = (char *)user,
        .project_id = (char *)project_id,
        .trigger = (char *)trigger,
        .scheduled_for = scheduled_for,
        .created_at = FIXTURE_T0 + 1,
        .outcome = outcome,
        .exit_code = -1,
    };
    return r;
}

int64_t fixture_add_run(struct store *s, const struct store_run *r, int64_t keep)
{
    int64_t id = 0;
    assert_int_equal(store_run_insert(s, r, keep, &id), 0);
    assert_true(id > 0);
    return id;
}
