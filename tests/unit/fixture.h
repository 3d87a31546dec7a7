/* fixture.h -- what unit tests share: a temporary directory with a database
 * in it, a store opened on it, keys, rows, and removing it all.
 *
 * Every function here fails the running cmocka test (it never returns an
 * error), so call them from tests and their setup and teardown only. Times
 * are passed in; FIXTURE_T0 is a fixed "now" to start from.
 *
 * Thread: the test's thread. */
#ifndef RR_TESTS_FIXTURE_H
#define RR_TESTS_FIXTURE_H

#include <stdint.h>

#include "store/store.h"

#define FIXTURE_T0 1767225600.0 /* 2026-01-01T00:00:00Z, a Thursday */

struct fixture {
    char dir[64];    /* a fresh directory under /tmp; fixture_free removes it */
    char path[128];  /* dir + "/test.db", the database file */
    struct store *s; /* owned: the store open on path, or NULL while closed */
};

/* A fresh directory and a store opened on path in it. Free with
 * fixture_free. */
struct fixture *fixture_new(void);
/* Close f->s, remove every file in f->dir and the directory itself, free f.
 * NULL is fine. */
void fixture_free(struct fixture *f);

/* For cmocka_unit_test_setup_teardown: *state becomes a fixture_new(), and
 * is freed again. */
int fixture_setup(void **state);
int fixture_teardown(void **state);
/* A test with its own fixture: an entry of a CMUnitTest array. */
#define FIXTURE_TEST(fn) cmocka_unit_test_setup_teardown(fn, fixture_setup, fixture_teardown)

/* Close f->s (when open) and open f->path again, as a restart would. */
void fixture_reopen(struct fixture *f);

/* Open a store on path (another connection, say). Close with store_close. */
struct store *fixture_open(const char *path);

/* Create a key for user, labelled "test key". text and *out (may be NULL)
 * as store_key_create fills them. */
void fixture_key(struct store *s, const char *user, unsigned perms, double expires_at,
                 double now, char text[STORE_KEY_TEXT_MAX] /* OUT */,
                 struct store_key *out /* OUT, may be NULL */);

/* One integer: the first column of the first row of sql, run on a separate
 * connection to path (so it sees only what was committed). */
int64_t fixture_sql_int(const char *path, const char *sql);

/* An active deployment of user that runs every five minutes, created and
 * updated at FIXTURE_T0, next run 300 s later, added by key
 * k_0000000000000000. Its strings are borrowed from the arguments (and
 * static storage) for as long as the caller uses the row. */
struct store_dep fixture_dep(const char *user, const char *project_id, const char *pipeline);
/* Insert fixture_dep(user, project_id, "{}"). */
void fixture_add_dep(struct store *s, const char *user, const char *project_id);

/* A run of that deployment with that trigger ("schedule" or "manual"),
 * scheduled_for and outcome, decided at FIXTURE_T0 + 1, with no exit code.
 * Strings borrowed as in fixture_dep. */
struct store_run fixture_run(const char *user, const char *project_id, const char *trigger,
                             double scheduled_for, enum store_outcome outcome);
/* Insert r (store_run_insert with keep) and return its id. */
int64_t fixture_add_run(struct store *s, const struct store_run *r, int64_t keep);

#endif
