/* store_internal.h -- what the store's files share, and what its tests see.
 *
 * store.c owns the connection, the schema, the statement cache and the
 * transactions; keys.c, deps.c and runs.c each own one table's functions and
 * build them on the helpers declared here.
 *
 * Not for other modules: nothing outside store/ and the store's own tests
 * (tests/unit/test_store*.c) may include this header. */
#ifndef RR_STORE_INTERNAL_H
#define RR_STORE_INTERNAL_H

/* sqlite3.h declares the pre-update hook only when told the library has it
 * (CMakeLists.txt checks it does). */
#define SQLITE_ENABLE_PREUPDATE_HOOK 1
#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "store/store.h"

#define HASH_KEY_BYTES 32 /* keyed-hash key kept in meta */

/* ---------------------------------------------------------------- statements
 *
 * One id per cached statement; their SQL is stmt_sql in store.c, next to the
 * schema it must agree with. */
enum stmt_id {
    ST_BEGIN,
    ST_BEGIN_READ,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_SAVEPOINT,
    ST_RELEASE,
    ST_ROLLBACK_TO,
    ST_DATA_VERSION,
    ST_USER_ENSURE,
    ST_KEY_INSERT,
    ST_KEY_BY_HASH,
    ST_KEY_BY_ID,
    ST_KEY_LIST,
    ST_KEY_REVOKE,
    ST_KEY_COUNT,
    ST_USER_KEYS,
    ST_DEP_COUNT_USER,
    ST_DEP_COUNT_ALL,
    ST_DEP_EXISTS,
    ST_DEP_INSERT,
    ST_DEP_GET,
    ST_DEP_UPDATE,
    ST_DEP_DELETE,
    ST_DEP_LIST_USER,
    ST_DEP_LIST_ALL,
    ST_DEP_LIST_KEY,
    ST_DEP_PROGRESS,
    ST_DEP_SET_ERRORED,
    ST_DEP_CHANGE,
    ST_RUN_INSERT,
    ST_RUN_PRUNE,
    ST_RUN_UPDATE,
    ST_RUN_GET,
    ST_RUN_FIND_IDEM,
    ST_RUN_LAST,
    ST_RUN_LIST,
    ST_RUN_LIVE,
    ST_RUN_LAST_EACH,
    ST_RUN_LAST_VIEW,
    ST_DEP_PIPELINE,
    ST_RUN_INTERRUPT,
    ST_RUN_START,
    ST_RUN_FINISH,
    ST_RUN_MISS,
    ST_DEP_ERROR_BY_KEY,
    ST_RUN_LAST_SCHEDULED,
    ST_DEP_SCAN,
    ST__COUNT
};

struct checkpointer; /* store.c */

#define STORE_USER_SLOTS 1024

struct store {
    sqlite3 *db;                        /* owned; sqlite3_close_v2 */
    sqlite3_stmt *st[ST__COUNT];        /* owned; sqlite3_finalize */
    unsigned char hkey[HASH_KEY_BYTES]; /* keyed-hash key; wiped on close */
    bool batch;                         /* inside store_batch_begin/commit */
    bool batch_read;                    /* ... begun by store_batch_begin_read and
                                           not yet made a write batch */
    bool snap_known;                    /* snap_other holds this batch's snapshot */
    int64_t snap_other;                 /* its data_version (others' commits) */
    uint64_t rollbacks;                 /* rollbacks by this connection */
    /* Rows of deployments and runs this connection changed, counted by the
     * pre-update hook: per user, in STORE_USER_SLOTS slots by a hash of the
     * name (users sharing a slot only see each other's changes as theirs),
     * and those no user could be read for. */
    uint64_t user_changes[STORE_USER_SLOTS];
    uint64_t any_changes;
    int dep_user_col, run_user_col;     /* the user column of each table */
#ifdef RRDEPLOY_TEST_HOOKS
    int fail_commits;                   /* batch commits still to fail */
#endif
    char *path;                         /* owned; the file as opened */
    struct checkpointer *ckpt;          /* owned; NULL unless started */
    dev_t dev;                          /* its identity, for store_health */
    ino_t ino;
};

/* ---------------------------------------------------------------- helpers
 *
 * Defined in store.c, and called on the thread using the store. */

/* Map a SQLite result code to an RR_E_* code and return it, recording what
 * failed and SQLite's message in e, or logging it when e is NULL. */
int store__db_fail(struct store *s, struct err *e, int rc, const char *what);

/* The cached statement for id, or, when that one is still stepping (a walk's
 * callback calling back into the store), a fresh one. Either way the caller
 * hands it back with store__stmt_release. */
int store__stmt_acquire(struct store *s, enum stmt_id id, sqlite3_stmt **out /* OUT */,
                        struct err *e);
/* Reset and unbind a cached statement, or finalize a throw-away one. NULL is
 * fine. */
void store__stmt_release(struct store *s, enum stmt_id id, sqlite3_stmt *st);

/* Bind a C string (NULL binds SQL NULL), borrowed until the statement is
 * released; a time where 0 means "none" (SQL NULL). SQLite result codes. */
int store__bind_str(sqlite3_stmt *st, int i, const char *v);
int store__bind_time_opt(sqlite3_stmt *st, int i, double t);

/* Fill d with pointers borrowed from the current row of a statement
 * selecting DEP_COLS (valid until its next step or reset); RR_E_IO for a
 * malformed row. Defined in deps.c. */
int store__dep_from_row(sqlite3_stmt *st, struct store_dep *d /* OUT */);

/* Step a statement that returns no row: 0 or a mapped error. */
int store__step_done(struct store *s, sqlite3_stmt *st, struct err *e, const char *what);

/* Run a cached query returning one integer in its first column, with bind1
 * (when not NULL) as ?1. */
int store__query_int64(struct store *s, enum stmt_id id, const char *bind1,
                       int64_t *out /* OUT */, struct err *e, const char *what);

/* Column readers: a bounded copy of a column's text into a fixed field ("" for
 * NULL); a time column where NULL means 0. */
void store__copy_col(char *dst, size_t n, sqlite3_stmt *st, int col);
double store__col_time(sqlite3_stmt *st, int col);

/* A copy of an optional string: free(); NULL for NULL. */
char *store__dup_opt(const char *s);

/* A write call's own transaction: BEGIN IMMEDIATE ... COMMIT, or inside a
 * batch (store_batch_begin) a savepoint of the batch's, so its effects commit,
 * or not, with the batch. store__tx_commit rolls back when it fails. */
int store__tx_begin(struct store *s, struct err *e);
int store__tx_commit(struct store *s, struct err *e);
void store__tx_rollback(struct store *s);

/* ---------------------------------------------------------------- for tests */

/* The connection behind s, borrowed for as long as s is open. For tests and
 * diagnostics only (reading pragmas); never step statements on it while a
 * store call is running, and never pass it to another thread. */
sqlite3 *store__db(struct store *s);

/* The SQL of the migration step that brings the schema to `version` (1-based),
 * exactly as store_open runs it; NULL when there is no such step. Lets tests
 * build a database as an older release left it. Static storage. */
const char *store__migration_sql(int version);

#endif
