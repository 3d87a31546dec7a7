/* store.c -- the database itself: opening it, the schema and its migrations,
 * the statement cache, transactions and batches, the checkpointer, health.
 *
 * Purpose: the one place that knows the schema. Everything the daemon and the
 * `rrdeploy keys` CLI persist goes through the functions in store/store.h;
 * those of each table are in keys.c (users and API keys), deps.c
 * (deployments) and runs.c (the run ledger), built on the helpers this file
 * shares through store_internal.h.
 *
 * Design:
 *  - One struct store owns one sqlite3 connection, opened with
 *    journal_mode=WAL, synchronous=FULL, foreign_keys=ON and a 5 s busy
 *    timeout. With WAL + FULL a write call that returned 0 has been fsynced:
 *    `kill -9` cannot lose it.
 *  - The schema is an array of migration steps keyed by PRAGMA user_version;
 *    store_open applies the missing ones and creates the keyed-hash key inside
 *    one BEGIN IMMEDIATE transaction, so two processes opening a fresh file at
 *    the same time cannot both initialise it.
 *  - Every statement is prepared once (SQLITE_PREPARE_PERSISTENT) and cached
 *    in struct store; after each use it is reset and its bindings cleared. If a
 *    callback re-enters a walk whose cached statement is still running, a
 *    throw-away statement is prepared for the inner call instead.
 *  - Every write is its own short transaction: a single autocommit statement,
 *    or BEGIN IMMEDIATE ... COMMIT when it reads before writing (the
 *    deployment limit, key creation, revocation). IMMEDIATE takes the write
 *    lock up front, so WAL never answers SQLITE_BUSY_SNAPSHOT mid-transaction
 *    and the busy timeout applies.
 *  - A batch (store_batch_begin) keeps one transaction open across many
 *    calls: their transactions become savepoints of it, their single
 *    statements run inside it, and it all commits with one fsync.
 *  - All SQL uses bound parameters; the single exception is the integer in
 *    `PRAGMA user_version=N`, which PRAGMA cannot bind and which comes from a
 *    compile-time constant.
 *
 * Thread: a struct store and its statements are used by one thread at a time
 * (connection opened with SQLITE_OPEN_NOMUTEX). Other threads or processes
 * open their own struct store on the same file; SQLite's file locks and WAL
 * keep them consistent. */
#include "store/store.h"
#include "store/store_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BUSY_TIMEOUT_MS 5000
#define META_HASH_KEY "hash_key"

/* ================================================================ schema */

/* Migration i (0-based) moves the schema from user_version i to i + 1. Append
 * new steps; never edit a step that has shipped. */
static const char *const migrations[] = {
    /* 1: meta, users, API keys, deployments. */
    "CREATE TABLE meta("
    "  k TEXT PRIMARY KEY,"
    "  v BLOB NOT NULL);"
    "CREATE TABLE users("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT UNIQUE NOT NULL,"
    "  created_at REAL NOT NULL);"
    "CREATE TABLE api_keys("
    "  id TEXT PRIMARY KEY,"
    "  user_id INTEGER NOT NULL REFERENCES users(id),"
    "  label TEXT,"
    "  perms INTEGER NOT NULL,"
    "  hash BLOB UNIQUE NOT NULL,"
    "  created_at REAL NOT NULL,"
    "  expires_at REAL,"  /* NULL: never */
    "  revoked_at REAL);" /* NULL: not revoked */
    "CREATE INDEX api_keys_user ON api_keys(user_id);"
    "CREATE TABLE deployments("
    "  user TEXT NOT NULL,"
    "  project_id TEXT NOT NULL,"
    "  pipeline TEXT NOT NULL,"
    "  schedule TEXT NOT NULL,"
    "  state TEXT NOT NULL CHECK (state IN ('active', 'paused', 'errored')),"
    "  error TEXT,"
    "  created_by TEXT,"
    "  owner_key_id TEXT,"
    "  created_at REAL NOT NULL,"
    "  updated_at REAL NOT NULL,"
    "  next_run_at REAL," /* NULL: none */
    "  PRIMARY KEY (user, project_id));"
    "CREATE INDEX deployments_owner_key ON deployments(owner_key_id);",

    /* 2: scheduler progress and the run ledger. */
    "ALTER TABLE deployments ADD COLUMN last_fire_at REAL;" /* NULL: none */
    "CREATE TABLE runs("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT," /* never reused, even after pruning */
    "  user TEXT NOT NULL,"
    "  project_id TEXT NOT NULL,"
    "  trigger TEXT NOT NULL CHECK (trigger IN ('schedule', 'manual')),"
    "  scheduled_for REAL," /* NULL: manual */
    "  created_at REAL NOT NULL,"
    "  started_at REAL,"  /* NULL: not started */
    "  finished_at REAL," /* NULL: not finished */
    "  outcome TEXT NOT NULL CHECK (outcome IN ('queued', 'running', 'succeeded', "
    "    'failed', 'timed_out', 'cancelled', 'interrupted', 'skipped', 'missed')),"
    "  reason TEXT,"
    "  exit_code INTEGER," /* NULL: none */
    "  signal INTEGER,"    /* NULL: none */
    "  output BLOB,"       /* output tail, arbitrary bytes; NULL: none */
    "  idempotency_key TEXT,"
    "  missed_count INTEGER NOT NULL DEFAULT 0,"
    "  window_start REAL,"
    "  window_end REAL,"
    "  FOREIGN KEY (user, project_id) REFERENCES deployments(user, project_id) "
    "    ON DELETE CASCADE);"
    /* Lists, newest-by-id lookups, pruning, and the cascade's child lookup. */
    "CREATE INDEX runs_dep ON runs(user, project_id, id);"
    /* A scheduled time is decided at most once per deployment. */
    "CREATE UNIQUE INDEX runs_sched_once ON runs(user, project_id, scheduled_for) "
    "  WHERE trigger = 'schedule';"
    "CREATE UNIQUE INDEX runs_idem ON runs(user, project_id, idempotency_key) "
    "  WHERE idempotency_key IS NOT NULL;"
    /* Live rows only, for store_run_interrupt_running. The IN term must
     * stay textually identical to ST_RUN_INTERRUPT's for the planner to use
     * it. */
    "CREATE INDEX runs_live ON runs(outcome) WHERE outcome IN ('queued', 'running');",
    /* 3: the process group of a running run, so a restart can stop what a
     * crashed server left behind (pid_start tells a reused pid apart). */
    ("ALTER TABLE runs ADD COLUMN pid INTEGER;"
     "ALTER TABLE runs ADD COLUMN pid_start INTEGER;"),
    /* 4: runs on a RocketRide engine, as the deployment's owner. The owner's
     * credential, sealed with the server's secret, which is not in the
     * database (util/vault.h; NULL: none, runs use the server's service
     * credential); and what the engine told about a run's task, a JSON
     * object text (NULL: none, e.g. runs of the exec executor). */
    ("ALTER TABLE deployments ADD COLUMN credential BLOB;"
     "ALTER TABLE runs ADD COLUMN task TEXT;"),
};
#define SCHEMA_VERSION ((int)(sizeof migrations / sizeof migrations[0]))

/* ================================================================ statements */

/* Columns of a key row, in this order, for key_from_row(). */
#define KEY_COLS                                                               \
    "SELECT k.id, u.name, k.label, k.perms, k.created_at, k.expires_at, "      \
    "k.revoked_at, k.hash FROM api_keys k JOIN users u ON u.id = k.user_id "

/* Columns of a deployment row, in this order, for dep_from_row(), and the
 * parameter numbers dep_bind() fills. The credential is not among them: only
 * ST_DEP_PIPELINE reads it (store.h says why). */
#define DEP_COLS                                                               \
    "SELECT user, project_id, pipeline, schedule, state, error, created_by, "  \
    "owner_key_id, created_at, updated_at, next_run_at, last_fire_at FROM deployments "

/* Columns of a run row, in this order, for run_from_row(); ST_RUN_INSERT
 * takes the same columns after id, but for pid and pid_start, as ?1..?17
 * (run_bind()). RUN_COL_LIST alone follows RETURNING. */
#define RUN_COL_LIST                                                           \
    "id, user, project_id, trigger, scheduled_for, created_at, "               \
    "started_at, finished_at, outcome, reason, exit_code, signal, output, "    \
    "idempotency_key, missed_count, window_start, window_end, pid, pid_start, " \
    "task "
#define RUN_COLS "SELECT " RUN_COL_LIST "FROM runs "

static const char *const stmt_sql[ST__COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_BEGIN_READ] = "BEGIN", /* deferred: no lock until the first read */
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_SAVEPOINT] = "SAVEPOINT rr_tx",
    [ST_RELEASE] = "RELEASE rr_tx",
    [ST_ROLLBACK_TO] = "ROLLBACK TO rr_tx",
    [ST_DATA_VERSION] = "PRAGMA data_version",
    [ST_USER_ENSURE] = "INSERT OR IGNORE INTO users(name, created_at) VALUES (?1, ?2)",
    [ST_KEY_INSERT] =
        "INSERT INTO api_keys(id, user_id, label, perms, hash, created_at, expires_at) "
        "SELECT ?1, id, ?2, ?3, ?4, ?5, ?6 FROM users WHERE name = ?7",
    [ST_KEY_BY_HASH] = KEY_COLS "WHERE k.hash = ?1",
    [ST_KEY_BY_ID] = KEY_COLS "WHERE k.id = ?1",
    [ST_KEY_LIST] = KEY_COLS "ORDER BY k.created_at, k.rowid",
    [ST_KEY_REVOKE] = "UPDATE api_keys SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL",
    [ST_KEY_COUNT] = "SELECT count(*) FROM api_keys",
    [ST_USER_KEYS] = "SELECT count(*) FROM api_keys k JOIN users u ON u.id = k.user_id "
                     "WHERE u.name = ?1",
    [ST_DEP_COUNT_USER] = "SELECT count(*) FROM deployments WHERE user = ?1",
    [ST_DEP_COUNT_ALL] = "SELECT count(*) FROM deployments",
    [ST_DEP_EXISTS] = "SELECT 1 FROM deployments WHERE user = ?1 AND project_id = ?2",
    [ST_DEP_INSERT] =
        "INSERT INTO deployments(user, project_id, pipeline, schedule, state, error, "
        "created_by, owner_key_id, created_at, updated_at, next_run_at, last_fire_at, "
        "credential) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    [ST_DEP_GET] = DEP_COLS "WHERE user = ?1 AND project_id = ?2",
    [ST_DEP_UPDATE] =
        "UPDATE deployments SET pipeline = ?3, schedule = ?4, state = ?5, error = ?6, "
        "created_by = ?7, owner_key_id = ?8, created_at = ?9, updated_at = ?10, "
        "next_run_at = ?11, last_fire_at = ?12 WHERE user = ?1 AND project_id = ?2",
    [ST_DEP_DELETE] = "DELETE FROM deployments WHERE user = ?1 AND project_id = ?2",
    [ST_DEP_LIST_USER] = DEP_COLS "WHERE user = ?1 ORDER BY project_id",
    [ST_DEP_LIST_ALL] = DEP_COLS "ORDER BY user, project_id",
    [ST_DEP_LIST_KEY] = DEP_COLS "WHERE owner_key_id = ?1 ORDER BY user, project_id",
    [ST_DEP_PROGRESS] = "UPDATE deployments SET last_fire_at = ?3, next_run_at = ?4 "
                        "WHERE user = ?1 AND project_id = ?2",
    [ST_DEP_SET_ERRORED] =
        "UPDATE deployments SET state = 'errored', error = ?3, next_run_at = NULL, "
        "updated_at = ?4 WHERE user = ?1 AND project_id = ?2",
    /* Every deployment a key owns, in one statement (deployments_owner_key). */
    [ST_DEP_ERROR_BY_KEY] =
        "UPDATE deployments SET state = 'errored', error = ?2, next_run_at = NULL, "
        "updated_at = ?3 WHERE owner_key_id = ?1 AND state != 'errored'",
    /* A NULL pipeline or schedule keeps the row's; the credential changes
     * only with ?8 (set_credential), to ?9 (NULL clears it). */
    [ST_DEP_CHANGE] =
        "UPDATE deployments SET pipeline = coalesce(?3, pipeline), "
        "schedule = coalesce(?4, schedule), state = ?5, updated_at = ?6, next_run_at = ?7, "
        "credential = CASE WHEN ?8 THEN ?9 ELSE credential END "
        "WHERE user = ?1 AND project_id = ?2",
    [ST_RUN_INSERT] =
        "INSERT INTO runs(user, project_id, trigger, scheduled_for, created_at, started_at, "
        "finished_at, outcome, reason, exit_code, signal, output, idempotency_key, "
        "missed_count, window_start, window_end, task) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
    /* Keep the newest ?3 rows by id, and every live (queued or running) row
     * whatever its age: those are still being acted on. The ?3-th newest id
     * is one seek and ?3 steps back along runs_dep; everything older and
     * finished goes (nothing when there are fewer). */
    [ST_RUN_PRUNE] =
        "DELETE FROM runs WHERE user = ?1 AND project_id = ?2 "
        "AND outcome NOT IN ('queued', 'running') "
        "AND id < (SELECT id FROM runs WHERE user = ?1 AND project_id = ?2 "
        "ORDER BY id DESC LIMIT 1 OFFSET ?3 - 1)",
    [ST_RUN_UPDATE] =
        "UPDATE runs SET started_at = ?2, finished_at = ?3, outcome = ?4, reason = ?5, "
        "exit_code = ?6, signal = ?7, output = ?8, pid = ?9, pid_start = ?10, task = ?11 "
        "WHERE id = ?1",
    [ST_RUN_GET] = RUN_COLS "WHERE id = ?1",
    [ST_RUN_FIND_IDEM] =
        RUN_COLS "WHERE user = ?1 AND project_id = ?2 AND idempotency_key = ?3",
    [ST_RUN_LAST] = RUN_COLS "WHERE user = ?1 AND project_id = ?2 ORDER BY id DESC LIMIT 1",
    /* A negative LIMIT means no limit. */
    [ST_RUN_LIST] = RUN_COLS "WHERE user = ?1 AND project_id = ?2 ORDER BY id DESC LIMIT ?3",
    [ST_DEP_PIPELINE] =
        "SELECT pipeline, credential FROM deployments WHERE user = ?1 AND project_id = ?2",
    /* Output left out (NULL): a summary per deployment for list answers. */
    [ST_RUN_LAST_EACH] =
        "SELECT id, user, project_id, trigger, scheduled_for, created_at, started_at, "
        "finished_at, outcome, reason, exit_code, signal, NULL, idempotency_key, "
        "missed_count, window_start, window_end, pid, pid_start, task FROM runs "
        "WHERE id IN (SELECT max(id) FROM runs WHERE user = ?1 GROUP BY project_id) "
        "ORDER BY project_id",
    /* The newest run of one deployment, output left out, as status shows it. */
    [ST_RUN_LAST_VIEW] =
        "SELECT id, user, project_id, trigger, scheduled_for, created_at, started_at, "
        "finished_at, outcome, reason, exit_code, signal, NULL, idempotency_key, "
        "missed_count, window_start, window_end, pid, pid_start, task FROM runs "
        "WHERE user = ?1 AND project_id = ?2 ORDER BY id DESC LIMIT 1",
    [ST_RUN_LIVE] = RUN_COLS "WHERE outcome IN ('queued', 'running') ORDER BY id",
    [ST_RUN_INTERRUPT] =
        "UPDATE runs SET outcome = 'interrupted', reason = ?1, finished_at = ?2 "
        "WHERE outcome IN ('queued', 'running') AND outcome = 'running'",
    /* The outcome in the WHERE makes the first decision win: a run that is
     * no longer queued (or no longer live) matches nothing. */
    /* A NULL task (?5 here, ?9 in ST_RUN_FINISH) keeps the row's. */
    [ST_RUN_START] =
        "UPDATE runs SET outcome = 'running', started_at = ?2, pid = ?3, pid_start = ?4, "
        "task = coalesce(?5, task) "
        "WHERE id = ?1 AND outcome = 'queued' RETURNING " RUN_COL_LIST,
    [ST_RUN_FINISH] =
        "UPDATE runs SET outcome = ?2, "
        "started_at = CASE WHEN started_at IS NULL AND ?3 THEN ?4 ELSE started_at END, "
        "finished_at = ?4, reason = ?5, exit_code = ?6, signal = ?7, output = ?8, "
        "task = coalesce(?9, task) "
        "WHERE id = ?1 AND outcome IN ('queued', 'running') RETURNING " RUN_COL_LIST,
    /* A decided run that never started: one scheduled time not run. */
    [ST_RUN_MISS] =
        "UPDATE runs SET outcome = 'missed', finished_at = ?2, reason = ?3, "
        "missed_count = 1, window_start = scheduled_for, window_end = scheduled_for "
        "WHERE id = ?1 AND outcome = 'queued'",
    /* The latest scheduled time decided (runs_sched_once answers it). */
    [ST_RUN_LAST_SCHEDULED] =
        "SELECT max(scheduled_for) FROM runs "
        "WHERE user = ?1 AND project_id = ?2 AND trigger = 'schedule'",
    /* Start-up reads every row: in rowid order, a sequential read of the
     * table, where ORDER BY user, project_id would walk the primary-key
     * index and look each row up (a random read per deployment); the
     * columns DEP_COLS has, but the ones the scheduler never keeps. */
    [ST_DEP_SCAN] =
        "SELECT user, project_id, '', schedule, state, NULL, NULL, owner_key_id, "
        "created_at, updated_at, next_run_at, last_fire_at FROM deployments",
};

static void checkpointer_stop(struct checkpointer *c);

/* ================================================================ errors */

/* Map a SQLite result code to an RR_E_* code, recording what failed and
 * SQLite's message in e, or logging it when the caller passed no e. */
static int map_rc(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return RR_E_BUSY;
    case SQLITE_NOMEM:
        return RR_E_NOMEM;
    case SQLITE_CONSTRAINT:
        return (rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE)
                   ? RR_E_EXISTS
                   : RR_E_IO;
    default:
        return RR_E_IO;
    }
}

int store__db_fail(struct store *s, struct err *e, int rc, const char *what)
{
    int code = map_rc(rc);
    const char *msg = s && s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc);
    if (e)
        err_set(e, code, "database: %s: %s", what, msg);
    else
        log_error("store: %s: %s (sqlite %d)", what, msg, rc);
    return code;
}

/* ================================================================ statement helpers */

/* The cached statement for id, or, when that one is still stepping (a walk's
 * callback calling back into the store), a fresh one the caller releases. */
int store__stmt_acquire(struct store *s, enum stmt_id id, sqlite3_stmt **out /* OUT */,
                        struct err *e)
{
    sqlite3_stmt *st = s->st[id];
    if (st && !sqlite3_stmt_busy(st)) {
        *out = st;
        return 0;
    }
    int rc = sqlite3_prepare_v3(s->db, stmt_sql[id], -1, 0, &st, NULL);
    if (rc != SQLITE_OK)
        return store__db_fail(s, e, rc, "prepare");
    *out = st;
    return 0;
}

/* Reset and unbind a cached statement, or finalize a throw-away one. */
void store__stmt_release(struct store *s, enum stmt_id id, sqlite3_stmt *st)
{
    if (!st)
        return;
    if (st != s->st[id]) {
        sqlite3_finalize(st);
        return;
    }
    /* reset returns the last step's error again; that was already handled. */
    (void)sqlite3_reset(st);
    (void)sqlite3_clear_bindings(st);
}

/* Bind a C string (NULL binds SQL NULL). The text must stay valid until the
 * statement is released. */
int store__bind_str(sqlite3_stmt *st, int i, const char *v)
{
    if (!v)
        return sqlite3_bind_null(st, i);
    return sqlite3_bind_text64(st, i, v, strlen(v), SQLITE_STATIC, SQLITE_UTF8);
}

/* Bind a time where 0 means "none" (SQL NULL). */
int store__bind_time_opt(sqlite3_stmt *st, int i, double t)
{
    return t == 0 ? sqlite3_bind_null(st, i) : sqlite3_bind_double(st, i, t);
}

/* Step a statement that returns no row. */
int store__step_done(struct store *s, sqlite3_stmt *st, struct err *e, const char *what)
{
    int rc = sqlite3_step(st);
    return rc == SQLITE_DONE ? 0 : store__db_fail(s, e, rc, what);
}

/* Run one of the cached parameterless statements (BEGIN, COMMIT, ...). */
static int exec_cached(struct store *s, enum stmt_id id, struct err *e, const char *what)
{
    sqlite3_stmt *st = NULL;
    int rc = store__stmt_acquire(s, id, &st, e);
    if (rc)
        return rc;
    rc = store__step_done(s, st, e, what);
    store__stmt_release(s, id, st);
    return rc;
}

/* Inside a batch (store_batch_begin) a call's transaction is a savepoint of
 * the batch's, so its effects commit, or not, with the batch. */
int store__tx_begin(struct store *s, struct err *e)
{
    return exec_cached(s, s->batch ? ST_SAVEPOINT : ST_BEGIN, e,
                       "begin transaction");
}

void store__tx_rollback(struct store *s)
{
    s->rollbacks++; /* even one SQLite did itself: store_snapshot must move */
    s->snap_known = false;
    /* Some errors (SQLITE_FULL, SQLITE_IOERR) already rolled back. */
    if (sqlite3_get_autocommit(s->db))
        return;
    if (s->batch) {
        if (exec_cached(s, ST_ROLLBACK_TO, NULL, "rollback to savepoint") != 0 ||
            exec_cached(s, ST_RELEASE, NULL, "release savepoint") != 0)
            log_error("store: savepoint rollback failed");
        return;
    }
    if (exec_cached(s, ST_ROLLBACK, NULL, "rollback") != 0)
        log_error("store: rollback failed; the transaction is left to the connection");
}

int store__tx_commit(struct store *s, struct err *e)
{
    int rc = exec_cached(s, s->batch ? ST_RELEASE : ST_COMMIT, e, "commit");
    if (rc)
        store__tx_rollback(s);
    return rc;
}

int store_batch_begin(struct store *s)
{
    if (s->batch)
        return RR_E_BUSY;
    int rc = exec_cached(s, ST_BEGIN, NULL, "begin batch");
    if (rc == 0)
        s->batch = true;
    s->snap_known = false;
    return rc;
}

int store_batch_begin_read(struct store *s)
{
    if (s->batch)
        return RR_E_BUSY;
    int rc = exec_cached(s, ST_BEGIN_READ, NULL, "begin batch");
    if (rc == 0)
        s->batch = s->batch_read = true;
    s->snap_known = false;
    return rc;
}

int store_batch_write(struct store *s)
{
    if (!s->batch || !s->batch_read)
        return 0;
    s->batch_read = false;
    s->snap_known = false; /* the write transaction reads a newer snapshot */
    /* Nothing written yet: ending the read transaction costs no sync, and
     * starting the write one with the lock (IMMEDIATE) means its first write
     * cannot fail on a snapshot another connection has moved past. */
    int rc = exec_cached(s, ST_COMMIT, NULL, "end read batch");
    if (rc == 0)
        rc = exec_cached(s, ST_BEGIN, NULL, "begin batch");
    return rc; /* on failure store_batch_commit reports the batch lost */
}

bool store_batch_read_only(const struct store *s)
{
    return s->batch && s->batch_read;
}

int store_batch_commit(struct store *s)
{
    if (!s->batch)
        return RR_E_INVAL;
    s->batch = s->batch_read = false;
    s->snap_known = false;
    if (sqlite3_get_autocommit(s->db)) {
        s->rollbacks++;
        log_error("store: the batch was rolled back by an earlier error");
        return RR_E_IO;
    }
#ifdef RRDEPLOY_TEST_HOOKS
    if (s->fail_commits > 0) {
        s->fail_commits--;
        store__tx_rollback(s);
        log_error("store: commit batch: failed on purpose (test hook)");
        return RR_E_IO;
    }
#endif
    int rc = exec_cached(s, ST_COMMIT, NULL, "commit batch");
    if (rc)
        store__tx_rollback(s);
    return rc;
}

#ifdef RRDEPLOY_TEST_HOOKS
void store_test_fail_commits(struct store *s, int n)
{
    s->fail_commits = n;
}
#endif

/* Run a query returning one integer in its first column. */
int store__query_int64(struct store *s, enum stmt_id id, const char *bind1,
                       int64_t *out /* OUT */, struct err *e, const char *what)
{
    sqlite3_stmt *st = NULL;
    int rc = store__stmt_acquire(s, id, &st, e);
    if (rc)
        return rc;
    if (bind1 && (rc = store__bind_str(st, 1, bind1)) != SQLITE_OK) {
        rc = store__db_fail(s, e, rc, what);
        goto out;
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *out = sqlite3_column_int64(st, 0);
        rc = 0;
    } else {
        rc = store__db_fail(s, e, rc, what);
    }
out:
    store__stmt_release(s, id, st);
    return rc;
}

/* Bounded copy of a column's text into a fixed field ("" for NULL). */
void store__copy_col(char *dst, size_t n, sqlite3_stmt *st, int col)
{
    const char *v = (const char *)sqlite3_column_text(st, col);
    if (!v)
        v = "";
    snprintf(dst, n, "%s", v);
}

/* A time column where NULL means 0. */
double store__col_time(sqlite3_stmt *st, int col)
{
    return sqlite3_column_type(st, col) == SQLITE_NULL ? 0 : sqlite3_column_double(st, col);
}

/* A copy of an optional string: free(); NULL for NULL. */
char *store__dup_opt(const char *s)
{
    return s ? xstrdup(s) : NULL;
}

/* ================================================================ open / close */

static int exec_sql(struct store *s, const char *sql, struct err *e, const char *what)
{
    char *msg = NULL;
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        int code = map_rc(rc);
        if (e)
            err_set(e, code, "database: %s: %s", what, msg ? msg : sqlite3_errstr(rc));
        else
            log_error("store: %s: %s (sqlite %d)", what, msg ? msg : sqlite3_errstr(rc), rc);
        sqlite3_free(msg);
        return code;
    }
    return 0;
}

/* Run a one-off statement returning a single row; col 0 goes to *iv (integer)
 * or, when tv is not NULL, is copied as text into tv. */
static int pragma_query(struct store *s, const char *sql, int64_t *iv, char *tv, size_t tvsz,
                        struct err *e)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        return store__db_fail(s, e, rc, sql);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        if (iv)
            *iv = sqlite3_column_int64(st, 0);
        if (tv)
            store__copy_col(tv, tvsz, st, 0);
        rc = 0;
    } else {
        rc = store__db_fail(s, e, rc, sql);
    }
    sqlite3_finalize(st);
    return rc;
}

/* Read the keyed-hash key from meta: 0, RR_E_NOTFOUND when there is none
 * yet, or an error. */
static int hash_key_read(struct store *s, struct err *e)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, "SELECT v FROM meta WHERE k = ?1", -1, &st, NULL);
    if (rc != SQLITE_OK)
        return store__db_fail(s, e, rc, "prepare meta lookup");
    if ((rc = sqlite3_bind_text(st, 1, META_HASH_KEY, -1, SQLITE_STATIC)) != SQLITE_OK) {
        rc = store__db_fail(s, e, rc, "bind");
    } else if ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (sqlite3_column_bytes(st, 0) != HASH_KEY_BYTES) {
            rc = err_set(e, RR_E_IO, "database: meta '%s' has %d bytes, expected %d",
                         META_HASH_KEY, sqlite3_column_bytes(st, 0), HASH_KEY_BYTES);
        } else {
            memcpy(s->hkey, sqlite3_column_blob(st, 0), HASH_KEY_BYTES);
            rc = 0;
        }
    } else if (rc == SQLITE_DONE) {
        rc = RR_E_NOTFOUND;
    } else {
        rc = store__db_fail(s, e, rc, "read hash key");
    }
    sqlite3_finalize(st);
    return rc;
}

/* Load the keyed-hash key from meta, creating it on first open. Runs inside
 * the open transaction. */
static int hash_key_load(struct store *s, struct err *e)
{
    int rc = hash_key_read(s, e);
    if (rc != RR_E_NOTFOUND)
        return rc;
    sqlite3_stmt *st = NULL;
    randombytes_buf(s->hkey, sizeof s->hkey);
    rc = sqlite3_prepare_v2(s->db, "INSERT INTO meta(k, v) VALUES (?1, ?2)", -1, &st, NULL);
    if (rc != SQLITE_OK) {
        rc = store__db_fail(s, e, rc, "prepare meta insert");
        goto out;
    }
    if ((rc = sqlite3_bind_text(st, 1, META_HASH_KEY, -1, SQLITE_STATIC)) != SQLITE_OK ||
        (rc = sqlite3_bind_blob(st, 2, s->hkey, sizeof s->hkey, SQLITE_STATIC)) != SQLITE_OK) {
        rc = store__db_fail(s, e, rc, "bind");
        goto out;
    }
    rc = store__step_done(s, st, e, "store hash key");
out:
    sqlite3_finalize(st);
    return rc;
}

/* A database this build has already set up needs no write lock to open:
 * read its version and hash key in a read transaction, which in WAL mode
 * never waits for a writer -- so `rrdeploy keys` opens the file at once even
 * while the server is in a long transaction. 0 when that was all; 1 when
 * the database needs setting up. */
static int open_ready(struct store *s, struct err *e)
{
    int64_t ver = 0;
    int rc = exec_sql(s, "BEGIN", e, "begin read");
    if (rc)
        return rc;
    if ((rc = pragma_query(s, "PRAGMA user_version", &ver, NULL, 0, e)) == 0)
        rc = ver == SCHEMA_VERSION ? hash_key_read(s, e) : RR_E_NOTFOUND;
    (void)exec_sql(s, "COMMIT", NULL, "end read");
    return rc == RR_E_NOTFOUND ? 1 : rc;
}

/* Bring the schema to SCHEMA_VERSION and load the hash key, atomically. */
static int migrate(struct store *s, struct err *e)
{
    int rc = open_ready(s, e);
    if (rc <= 0)
        return rc;
    rc = exec_sql(s, "BEGIN IMMEDIATE", e, "begin migration");
    if (rc)
        return rc;
    int64_t ver = 0;
    if ((rc = pragma_query(s, "PRAGMA user_version", &ver, NULL, 0, e)) != 0)
        goto fail;
    if (ver < 0 || ver > SCHEMA_VERSION) {
        rc = err_set(e, RR_E_IO,
                     "database schema version %lld is not one this build knows (1..%d); "
                     "was it written by a newer rrdeploy?",
                     (long long)ver, SCHEMA_VERSION);
        goto fail;
    }
    for (int64_t v = ver; v < SCHEMA_VERSION; v++) {
        char what[64];
        snprintf(what, sizeof what, "migration %lld", (long long)(v + 1));
        if ((rc = exec_sql(s, migrations[v], e, what)) != 0)
            goto fail;
    }
    if (ver != SCHEMA_VERSION) {
        /* PRAGMA takes no bound parameters; the number is our own constant. */
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA user_version = %d", SCHEMA_VERSION);
        if ((rc = exec_sql(s, sql, e, "set user_version")) != 0)
            goto fail;
        log_info("store: database schema migrated from version %lld to %d", (long long)ver,
                 SCHEMA_VERSION);
    }
    if ((rc = hash_key_load(s, e)) != 0)
        goto fail;
    return exec_sql(s, "COMMIT", e, "commit migration");
fail:
    if (!sqlite3_get_autocommit(s->db))
        (void)exec_sql(s, "ROLLBACK", NULL, "rollback migration");
    return rc;
}

/* Create the file with mode 0600 before SQLite does (it would use 0644): it
 * holds key hashes and the hash key. SQLite gives -wal/-shm the same mode. */
static int precreate(const char *path, struct err *e)
{
    if (strcmp(path, ":memory:") == 0 || path[0] == '\0')
        return 0;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return err_set(e, RR_E_IO, "cannot open database '%s': %s", path, strerror(errno));
    close(fd);
    return 0;
}

static void on_preupdate(void *ud, sqlite3 *db, int op, const char *zdb, const char *table,
                         sqlite3_int64 k1, sqlite3_int64 k2);
static int user_column(struct store *s, const char *table);

int store_open(const char *path, struct store **out, struct err *e)
{
    if (!path || !out)
        return err_set(e, RR_E_INVAL, "store_open: no path");
    if (sodium_init() < 0)
        return err_set(e, RR_E_INTERNAL, "libsodium failed to initialise");
    int rc = precreate(path, e);
    if (rc)
        return rc;

    struct store *s = xcalloc(1, sizeof *s);
    rc = sqlite3_open_v2(path, &s->db,
                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        err_set(e, rc == SQLITE_NOMEM ? RR_E_NOMEM : RR_E_IO, "cannot open database '%s': %s",
                path, s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        rc = rc == SQLITE_NOMEM ? RR_E_NOMEM : RR_E_IO;
        goto fail;
    }
    if ((rc = sqlite3_extended_result_codes(s->db, 1)) != SQLITE_OK ||
        (rc = sqlite3_busy_timeout(s->db, BUSY_TIMEOUT_MS)) != SQLITE_OK) {
        rc = store__db_fail(s, e, rc, "configure connection");
        goto fail;
    }
    if ((rc = exec_sql(s, "PRAGMA foreign_keys = ON", e, "enable foreign keys")) != 0 ||
        (rc = exec_sql(s, "PRAGMA cache_size = -32768", e, "set cache size")) != 0 ||
        (rc = exec_sql(s, "PRAGMA synchronous = FULL", e, "set synchronous")) != 0)
        goto fail;
    char mode[16];
    if ((rc = pragma_query(s, "PRAGMA journal_mode = WAL", NULL, mode, sizeof mode, e)) != 0)
        goto fail;
    if (strcmp(mode, "wal") != 0 && strcmp(mode, "memory") != 0) {
        rc = err_set(e, RR_E_IO, "database '%s': cannot enable WAL (journal_mode is '%s')", path,
                     mode);
        goto fail;
    }
    if ((rc = migrate(s, e)) != 0)
        goto fail;
    struct stat sb;
    if (stat(path, &sb) == 0) {
        s->dev = sb.st_dev;
        s->ino = sb.st_ino;
    }
    s->path = xstrdup(path);
    s->dep_user_col = user_column(s, "deployments");
    s->run_user_col = user_column(s, "runs");
    sqlite3_preupdate_hook(s->db, on_preupdate, s);
    for (int i = 0; i < ST__COUNT; i++) {
        int prc = sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
                                     &s->st[i], NULL);
        if (prc != SQLITE_OK) {
            rc = store__db_fail(s, e, prc, "prepare");
            goto fail;
        }
    }
    *out = s;
    return 0;
fail:
    store_close(s);
    return rc;
}

void store_close(struct store *s)
{
    if (!s)
        return;
    if (s->ckpt)
        sqlite3_wal_hook(s->db, NULL, NULL);
    checkpointer_stop(s->ckpt);
    for (int i = 0; i < ST__COUNT; i++)
        sqlite3_finalize(s->st[i]);
    if (s->db && sqlite3_close(s->db) != SQLITE_OK) {
        log_error("store: close: %s", sqlite3_errmsg(s->db));
        (void)sqlite3_close_v2(s->db); /* closes once the stragglers finish */
    }
    sodium_memzero(s->hkey, sizeof s->hkey);
    free(s->path);
    free(s);
}

sqlite3 *store__db(struct store *s)
{
    return s->db;
}

const char *store__migration_sql(int version)
{
    return version >= 1 && version <= SCHEMA_VERSION ? migrations[version - 1] : NULL;
}

/* ================================================================ checkpoints
 *
 * With automatic checkpoints, every thousandth commit or so copies the WAL
 * back into the database and fsyncs it, inside that commit: a tick deciding
 * 10,000 runs would pay for it. The server instead runs one thread with its
 * own connection that makes a PASSIVE checkpoint (never blocking writers)
 * about once a second. */

#define CHECKPOINT_INTERVAL_MS 1000

struct checkpointer {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;          /* guarded by mu */
    bool urgent;        /* guarded by mu: the WAL passed a quarter of the limit */
    /* Held by whoever checkpoints (the thread, or a commit that passed the
     * limit): SQLite refuses a second checkpoint while one runs. */
    pthread_mutex_t ckpt_mu;
    sqlite3 *db;        /* owned by the thread */
    int64_t wal_limit;  /* bytes; see store_checkpointer_start */
    int64_t frame_bytes; /* bytes of one WAL frame (a page and its header) */
};

static int64_t wal_bytes(const struct checkpointer *c, int frames)
{
    return (int64_t)frames * c->frame_bytes;
}

/* The server's connection committed and its WAL holds `frames` frames. Past
 * a quarter of the limit the checkpointer is woken at once; past the limit --
 * the checkpointer has fallen behind a burst of writes -- this commit
 * checkpoints and truncates the WAL itself before returning (SQLite calls
 * this after the write lock is released, so it may), which bounds the file
 * whatever the write rate. */
static int wal_hook(void *ud, sqlite3 *db, const char *name, int frames)
{
    (void)name;
    struct checkpointer *c = ud;
    int64_t bytes = wal_bytes(c, frames);
    if (bytes > c->wal_limit) {
        pthread_mutex_lock(&c->ckpt_mu);
        int rc = sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_TRUNCATE,
                                           NULL, NULL);
        pthread_mutex_unlock(&c->ckpt_mu);
        if (rc != SQLITE_OK)
            log_warn("store: the WAL is over %lld bytes and could not be "
                     "truncated: %s", (long long)c->wal_limit, sqlite3_errmsg(db));
    } else if (bytes > c->wal_limit / 4) {
        pthread_mutex_lock(&c->mu);
        c->urgent = true;
        pthread_cond_signal(&c->cv);
        pthread_mutex_unlock(&c->mu);
    }
    return SQLITE_OK;
}

static int64_t data_version(sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    if (sqlite3_prepare_v2(db, "PRAGMA data_version", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* Once a second, or when woken: a passive checkpoint, which copies what it
 * can without blocking anyone. When nothing was committed since the last
 * round (the server is idle) and the WAL is not empty, a truncating one,
 * which then has nothing to wait for and leaves a zero-byte WAL file. */
static void *checkpoint_main(void *arg)
{
    struct checkpointer *c = arg;
    int64_t seen = data_version(c->db);
    pthread_mutex_lock(&c->mu);
    while (!c->stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += CHECKPOINT_INTERVAL_MS / 1000;
        while (!c->stop && !c->urgent &&
               pthread_cond_timedwait(&c->cv, &c->mu, &until) == 0) {
        }
        if (c->stop)
            break;
        c->urgent = false;
        pthread_mutex_unlock(&c->mu);
        int log = 0, done = 0;
        pthread_mutex_lock(&c->ckpt_mu);
        int rc = sqlite3_wal_checkpoint_v2(c->db, NULL, SQLITE_CHECKPOINT_PASSIVE,
                                           &log, &done);
        int64_t now = data_version(c->db);
        if (rc == SQLITE_OK && log > 0 && now == seen)
            rc = sqlite3_wal_checkpoint_v2(c->db, NULL, SQLITE_CHECKPOINT_TRUNCATE,
                                           NULL, NULL);
        pthread_mutex_unlock(&c->ckpt_mu);
        seen = now;
        if (rc != SQLITE_OK && rc != SQLITE_BUSY && rc != SQLITE_LOCKED)
            log_warn("store: checkpoint: %s", sqlite3_errmsg(c->db));
        pthread_mutex_lock(&c->mu);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

int store_checkpointer_start(struct store *s, int64_t wal_limit, struct err *e)
{
    if (s->ckpt || !s->path || strcmp(s->path, ":memory:") == 0)
        return 0;
    int64_t page = 0;
    if (pragma_query(s, "PRAGMA page_size", &page, NULL, 0, e) != 0)
        return RR_E_IO;
    struct checkpointer *c = xcalloc(1, sizeof *c);
    c->wal_limit = wal_limit > 0 ? wal_limit : STORE_WAL_LIMIT;
    c->frame_bytes = page + 24;
    int rc = sqlite3_open_v2(s->path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                             NULL);
    if (rc != SQLITE_OK || sqlite3_busy_timeout(c->db, BUSY_TIMEOUT_MS) != SQLITE_OK ||
        sqlite3_exec(c->db, "PRAGMA synchronous = FULL", NULL, NULL, NULL) != SQLITE_OK) {
        err_set(e, RR_E_IO, "checkpoint connection: %s",
                c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
        sqlite3_close(c->db);
        free(c);
        return RR_E_IO;
    }
    pthread_mutex_init(&c->mu, NULL);
    pthread_mutex_init(&c->ckpt_mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    if (pthread_create(&c->thread, NULL, checkpoint_main, c) != 0) {
        sqlite3_close(c->db);
        pthread_cond_destroy(&c->cv);
        pthread_mutex_destroy(&c->ckpt_mu);
        pthread_mutex_destroy(&c->mu);
        free(c);
        return err_set(e, RR_E_INTERNAL, "cannot start the checkpoint thread");
    }
    /* After a reset, a WAL file bigger than this is cut back to it. */
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA journal_size_limit = %lld",
             (long long)(c->wal_limit / 4));
    if (exec_sql(s, sql, NULL, "set journal_size_limit") != 0)
        log_warn("store: the WAL file will not shrink after a reset");
    sqlite3_wal_autocheckpoint(s->db, 0);
    sqlite3_wal_hook(s->db, wal_hook, c);
    s->ckpt = c;
    return 0;
}

static void checkpointer_stop(struct checkpointer *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    c->stop = true;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->thread, NULL);
    sqlite3_close(c->db);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->ckpt_mu);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

int store_health(struct store *s, struct err *e)
{
    struct stat sb;
    if (s->path && strcmp(s->path, ":memory:") != 0) {
        if (stat(s->path, &sb) != 0)
            return err_set(e, RR_E_IO, "database file %s: %s", s->path,
                           strerror(errno));
        if (sb.st_dev != s->dev || sb.st_ino != s->ino)
            return err_set(e, RR_E_IO,
                           "database file %s was replaced while the server ran",
                           s->path);
    }
    int64_t n;
    int rc = store__query_int64(s, ST_KEY_COUNT, NULL, &n, e, "health check read");
    if (rc)
        return rc;
    return 0;
}

int store_data_version(struct store *s, int64_t *out)
{
    return store__query_int64(s, ST_DATA_VERSION, NULL, out, NULL, "read data_version");
}

/* FNV-1a of a user's name, for its change slot. */
static size_t user_slot(const unsigned char *name, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ name[i]) * 0x100000001b3ull;
    return (size_t)(h % STORE_USER_SLOTS);
}

/* The pre-update hook: before each row this connection inserts, updates or
 * deletes -- directly, by a trigger or by a foreign key's cascade -- count
 * the change for the user the row belongs to (old and new row: a user
 * column is never updated, but if it were, both would count). */
static void on_preupdate(void *ud, sqlite3 *db, int op, const char *zdb, const char *table,
                         sqlite3_int64 k1, sqlite3_int64 k2)
{
    (void)k1;
    (void)k2;
    struct store *s = ud;
    int col;
    if (strcmp(zdb, "main") != 0)
        return;
    if (strcmp(table, "deployments") == 0)
        col = s->dep_user_col;
    else if (strcmp(table, "runs") == 0)
        col = s->run_user_col;
    else
        return; /* keys, users, meta: no reply shows them */
    if (col < 0) {
        s->any_changes++;
        return;
    }
    for (int side = 0; side < 2; side++) {
        if ((side == 0 && op == SQLITE_INSERT) || (side == 1 && op == SQLITE_DELETE))
            continue;
        sqlite3_value *v = NULL;
        int rc = side == 0 ? sqlite3_preupdate_old(db, col, &v)
                           : sqlite3_preupdate_new(db, col, &v);
        const unsigned char *name = rc == SQLITE_OK && v ? sqlite3_value_text(v) : NULL;
        if (!name)
            s->any_changes++;
        else
            s->user_changes[user_slot(name, (size_t)sqlite3_value_bytes(v))]++;
    }
}

/* The index of table's column `user`, or -1. */
static int user_column(struct store *s, const char *table)
{
    sqlite3_stmt *st = NULL;
    int col = -1;
    if (sqlite3_prepare_v2(s->db, "SELECT cid FROM pragma_table_info(?1) WHERE name = 'user'",
                           -1, &st, NULL) == SQLITE_OK &&
        sqlite3_bind_text(st, 1, table, -1, SQLITE_STATIC) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        col = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return col;
}

int store_snapshot(struct store *s, const char *user, struct store_snapshot *out)
{
    /* Within a transaction the snapshot of other connections' commits is
     * fixed once its read begins (the pragma begins it), so a batch asks
     * once; this connection's own writes count at once (on_preupdate). */
    if (!(s->batch && s->snap_known)) {
        int rc = store_data_version(s, &s->snap_other);
        if (rc)
            return rc;
        s->snap_known = s->batch;
    }
    out->other = s->snap_other;
    out->rollbacks = s->rollbacks;
    out->any = s->any_changes;
    out->user = user ? s->user_changes[user_slot((const unsigned char *)user, strlen(user))]
                     : s->any_changes;
    return 0;
}

bool store_snapshot_same_base(const struct store_snapshot *a,
                              const struct store_snapshot *b)
{
    return a->other == b->other && a->rollbacks == b->rollbacks && a->any == b->any;
}

bool store_snapshot_eq(const struct store_snapshot *a, const struct store_snapshot *b)
{
    return store_snapshot_same_base(a, b) && a->user == b->user;
}
