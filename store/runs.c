/* runs.c -- the run ledger: one row per tick decision.
 *
 * Purpose: the functions of store/store.h that read or write the runs table:
 * recording a decision, updating a run as it starts and ends, the lookups
 * and walks, pruning, and interrupting what a stopped server left live.
 *
 * Design:
 *  - The run ledger (table runs) holds one row per tick decision. Its
 *    partial UNIQUE indexes make "decided at most once" (a scheduled time, an
 *    idempotency key) a property of the database rather than of a check, and
 *    its rows go with their deployment by ON DELETE CASCADE. Inserting a row
 *    prunes the deployment's older finished rows in the same transaction.
 *  - A run starts and ends through one UPDATE ... RETURNING each, guarded by
 *    its outcome in the WHERE: the first decision wins without a read first,
 *    and the caller gets the row as it now is. Only when nothing matched does
 *    a read tell "no such run" from "not queued" or "already final".
 *  - Output tails are BLOBs: arbitrary bytes, NULs included, read back with
 *    a NUL after them for convenience.
 *  - A run's task is the engine's report as JSON text, kept verbatim: the
 *    caller writes valid JSON and the store neither parses nor checks it.
 *    Starting and finishing keep the row's task unless given a new one.
 *  - Rows are copied out of SQLite before they are handed on (for the caller
 *    to clear with store_run_clear, or lent to a walk's callback), since a
 *    callback may write to the store while the walk runs.
 *
 * Thread: like every store call, on the one thread using the struct store. */
#include "store/store.h"
#include "store/store_internal.h"

#include <stdlib.h>
#include <string.h>

/* ================================================================ run ledger */

/* Indexed by enum store_outcome; the names are the schema's CHECK list. */
static const char *const outcome_names[] = {
    [STORE_RUN_QUEUED] = "queued",
    [STORE_RUN_RUNNING] = "running",
    [STORE_RUN_SUCCEEDED] = "succeeded",
    [STORE_RUN_FAILED] = "failed",
    [STORE_RUN_TIMED_OUT] = "timed_out",
    [STORE_RUN_CANCELLED] = "cancelled",
    [STORE_RUN_INTERRUPTED] = "interrupted",
    [STORE_RUN_SKIPPED] = "skipped",
    [STORE_RUN_MISSED] = "missed",
};
#define OUTCOME_COUNT (sizeof outcome_names / sizeof outcome_names[0])
_Static_assert(OUTCOME_COUNT == STORE_RUN_MISSED + 1, "outcome_names must name every outcome");

const char *store_outcome_name(enum store_outcome o)
{
    return (unsigned)o < OUTCOME_COUNT ? outcome_names[o] : "invalid";
}

int store_outcome_parse(const char *s, enum store_outcome *out)
{
    if (!s)
        return RR_E_INVAL;
    for (size_t i = 0; i < OUTCOME_COUNT; i++) {
        if (strcmp(s, outcome_names[i]) == 0) {
            *out = (enum store_outcome)i;
            return 0;
        }
    }
    return RR_E_INVAL;
}

bool store_outcome_final(enum store_outcome o)
{
    return o != STORE_RUN_QUEUED && o != STORE_RUN_RUNNING;
}

void store_run_clear(struct store_run *r)
{
    if (!r)
        return;
    free(r->user);
    free(r->project_id);
    free(r->trigger);
    free(r->reason);
    free(r->output);
    free(r->idempotency_key);
    free(r->task);
    memset(r, 0, sizeof *r);
}

void store_run_copy(struct store_run *dst, const struct store_run *src)
{
    *dst = *src;
    dst->user = src->user ? xstrdup(src->user) : NULL;
    dst->project_id = src->project_id ? xstrdup(src->project_id) : NULL;
    dst->trigger = src->trigger ? xstrdup(src->trigger) : NULL;
    dst->reason = src->reason ? xstrdup(src->reason) : NULL;
    dst->idempotency_key = src->idempotency_key ? xstrdup(src->idempotency_key) : NULL;
    dst->task = src->task ? xstrdup(src->task) : NULL;
    dst->output = NULL;
    if (src->output) {
        dst->output = xmalloc(src->output_len + 1);
        memcpy(dst->output, src->output, src->output_len);
        dst->output[src->output_len] = '\0';
    }
}

/* Programmer-supplied fields the schema requires (what the CHECK constraints
 * would otherwise reject with a less useful message). */
static int run_check(const struct store_run *r, bool for_insert, const char *what)
{
    bool ok = r && (unsigned)r->outcome < OUTCOME_COUNT && (r->output || r->output_len == 0);
    if (ok && for_insert)
        ok = r->user && r->project_id && r->trigger &&
             (strcmp(r->trigger, "schedule") == 0 || strcmp(r->trigger, "manual") == 0);
    if (!ok) {
        log_error("store: %s: run lacks user, project_id or a valid trigger, has an invalid "
                  "outcome, or has output_len without output",
                  what);
        return RR_E_INVAL;
    }
    return 0;
}

/* exit_code -1 and signal 0 mean "none" (SQL NULL). */
static int bind_int_opt(sqlite3_stmt *st, int i, int v, int none)
{
    return v == none ? sqlite3_bind_null(st, i) : sqlite3_bind_int(st, i, v);
}

/* A process start time where 0 means "none" (SQL NULL). */
static int bind_pid_start(sqlite3_stmt *st, int i, uint64_t v)
{
    return v ? sqlite3_bind_int64(st, i, (sqlite3_int64)v) : sqlite3_bind_null(st, i);
}

/* An output tail of len bytes, NULL binds SQL NULL. Borrowed until the
 * statement is released. */
static int bind_output(sqlite3_stmt *st, int i, const char *output, size_t len)
{
    if (!output)
        return sqlite3_bind_null(st, i);
    /* A non-NULL pointer with length 0 is an empty blob, not NULL. */
    return sqlite3_bind_blob64(st, i, output, (sqlite3_uint64)len, SQLITE_STATIC);
}

/* Bind ?1..?17 of ST_RUN_INSERT (RUN_COLS order, without id, pid and
 * pid_start). */
static int run_bind(sqlite3_stmt *st, const struct store_run *r)
{
    int rc;
    if ((rc = store__bind_str(st, 1, r->user)) != SQLITE_OK ||
        (rc = store__bind_str(st, 2, r->project_id)) != SQLITE_OK ||
        (rc = store__bind_str(st, 3, r->trigger)) != SQLITE_OK ||
        (rc = store__bind_time_opt(st, 4, r->scheduled_for)) != SQLITE_OK ||
        (rc = sqlite3_bind_double(st, 5, r->created_at)) != SQLITE_OK ||
        (rc = store__bind_time_opt(st, 6, r->started_at)) != SQLITE_OK ||
        (rc = store__bind_time_opt(st, 7, r->finished_at)) != SQLITE_OK ||
        (rc = store__bind_str(st, 8, store_outcome_name(r->outcome))) != SQLITE_OK ||
        (rc = store__bind_str(st, 9, r->reason)) != SQLITE_OK ||
        (rc = bind_int_opt(st, 10, r->exit_code, -1)) != SQLITE_OK ||
        (rc = bind_int_opt(st, 11, r->signal, 0)) != SQLITE_OK ||
        (rc = bind_output(st, 12, r->output, r->output_len)) != SQLITE_OK ||
        (rc = store__bind_str(st, 13, r->idempotency_key)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(st, 14, r->missed_count)) != SQLITE_OK ||
        (rc = store__bind_time_opt(st, 15, r->window_start)) != SQLITE_OK ||
        (rc = store__bind_time_opt(st, 16, r->window_end)) != SQLITE_OK ||
        (rc = store__bind_str(st, 17, r->task)) != SQLITE_OK)
        return rc;
    return SQLITE_OK;
}

/* Copy the current row (RUN_COLS) into *r, owned: free with store_run_clear.
 * The output gets a NUL after its output_len bytes for convenience. */
/* Fill r with the current row, its strings borrowed from the statement
 * (valid until its next step or reset) and its output left out (NULL). */
static int run_view(sqlite3_stmt *st, struct store_run *r /* OUT */)
{
    const char *user = (const char *)sqlite3_column_text(st, 1);
    const char *project_id = (const char *)sqlite3_column_text(st, 2);
    const char *trigger = (const char *)sqlite3_column_text(st, 3);
    const char *outcome = (const char *)sqlite3_column_text(st, 8);
    enum store_outcome o;
    if (!user || !project_id || !trigger || store_outcome_parse(outcome, &o) != 0) {
        log_error("store: run row is malformed (or out of memory reading it)");
        return RR_E_IO;
    }
    struct store_run x = {0};
    x.id = sqlite3_column_int64(st, 0);
    x.scheduled_for = store__col_time(st, 4);
    x.created_at = sqlite3_column_double(st, 5);
    x.started_at = store__col_time(st, 6);
    x.finished_at = store__col_time(st, 7);
    x.outcome = o;
    x.exit_code = sqlite3_column_type(st, 10) == SQLITE_NULL ? -1 : sqlite3_column_int(st, 10);
    x.signal = sqlite3_column_type(st, 11) == SQLITE_NULL ? 0 : sqlite3_column_int(st, 11);
    x.missed_count = sqlite3_column_int64(st, 14);
    x.window_start = store__col_time(st, 15);
    x.window_end = store__col_time(st, 16);
    x.pid = sqlite3_column_int(st, 17);
    x.pid_start = (uint64_t)sqlite3_column_int64(st, 18);
    /* Reading other columns leaves these pointers valid (only a step, a reset
     * or a type conversion of the same column moves them). */
    x.user = (char *)user;
    x.project_id = (char *)project_id;
    x.trigger = (char *)trigger;
    x.reason = (char *)sqlite3_column_text(st, 9);
    x.idempotency_key = (char *)sqlite3_column_text(st, 13);
    x.task = (char *)sqlite3_column_text(st, 19);
    *r = x;
    return 0;
}

/* Fill r with an owned copy of the current row, output included. */
static int run_from_row(sqlite3_stmt *st, struct store_run *r /* OUT */)
{
    struct store_run x;
    int rc = run_view(st, &x);
    if (rc)
        return rc;
    if (sqlite3_column_type(st, 12) != SQLITE_NULL) {
        /* blob before bytes (SQLite's rule); an empty blob's pointer is NULL. */
        const void *b = sqlite3_column_blob(st, 12);
        int n = sqlite3_column_bytes(st, 12);
        if (n < 0 || (n > 0 && !b)) {
            log_error("store: out of memory reading a run's output");
            return RR_E_NOMEM;
        }
        x.output = xmalloc((size_t)n + 1);
        if (n > 0)
            memcpy(x.output, b, (size_t)n);
        x.output[n] = '\0';
        x.output_len = (size_t)n;
    }
    x.user = xstrdup(x.user);
    x.project_id = xstrdup(x.project_id);
    x.trigger = xstrdup(x.trigger);
    x.reason = store__dup_opt(x.reason);
    x.idempotency_key = store__dup_opt(x.idempotency_key);
    x.task = store__dup_opt(x.task);
    *r = x;
    return 0;
}

/* Step a bound single-row lookup: 0 and *out (owned), RR_E_NOTFOUND, or an
 * error. */
static int run_one(struct store *s, sqlite3_stmt *st, struct store_run *out /* OUT */,
                   const char *what)
{
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        return RR_E_NOTFOUND;
    if (rc != SQLITE_ROW)
        return store__db_fail(s, NULL, rc, what);
    return run_from_row(st, out);
}

/* Inside the caller's transaction: drop the deployment's finished rows that
 * are not among its newest `keep`. */
static int run_prune(struct store *s, const char *user, const char *project_id, int64_t keep)
{
    sqlite3_stmt *st = NULL;
    int rc = store__stmt_acquire(s, ST_RUN_PRUNE, &st, NULL);
    if (rc)
        return rc;
    if ((rc = store__bind_str(st, 1, user)) != SQLITE_OK ||
        (rc = store__bind_str(st, 2, project_id)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(st, 3, keep)) != SQLITE_OK)
        rc = store__db_fail(s, NULL, rc, "bind");
    else
        rc = store__step_done(s, st, NULL, "prune runs");
    store__stmt_release(s, ST_RUN_PRUNE, st);
    return rc;
}

int store_run_prune(struct store *s, const char *user, const char *project_id, int64_t keep)
{
    if (keep <= 0 || !user || !project_id)
        return 0;
    return run_prune(s, user, project_id, keep);
}

int store_run_insert(struct store *s, const struct store_run *r, int64_t keep, int64_t *id_out)
{
    int rc = run_check(r, true, "insert run");
    if (rc)
        return rc;
    if ((rc = store__tx_begin(s, NULL)) != 0)
        return rc;
    int64_t id = 0;
    sqlite3_stmt *st = NULL;
    if ((rc = store__stmt_acquire(s, ST_RUN_INSERT, &st, NULL)) != 0)
        goto rollback;
    if ((rc = run_bind(st, r)) != SQLITE_OK) {
        rc = store__db_fail(s, NULL, rc, "bind");
    } else {
        /* The indexes decide, not a check-then-insert: runs_sched_once and
         * runs_idem answer UNIQUE, the missing parent FOREIGNKEY. */
        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE) {
            id = sqlite3_last_insert_rowid(s->db);
            rc = 0;
        } else if (rc == SQLITE_CONSTRAINT_UNIQUE) {
            rc = RR_E_EXISTS;
        } else if (rc == SQLITE_CONSTRAINT_FOREIGNKEY) {
            rc = RR_E_NOTFOUND;
        } else {
            rc = store__db_fail(s, NULL, rc, "insert run");
        }
    }
    store__stmt_release(s, ST_RUN_INSERT, st);
    if (rc)
        goto rollback;
    /* Pruning an old scheduled row also drops its runs_sched_once entry, so
     * the index alone no longer stops that time being decided again. That is
     * acceptable: deployments.last_fire_at guards it too (the scheduler never
     * decides a time <= last_fire_at), and the row just inserted is the
     * newest, never pruned while keep >= 1, so the index still covers the
     * moment between this commit and the scheduler's store_dep_set_progress. */
    if (keep > 0 && (rc = run_prune(s, r->user, r->project_id, keep)) != 0)
        goto rollback;
    if ((rc = store__tx_commit(s, NULL)) != 0)
        return rc;
    if (id_out)
        *id_out = id;
    return 0;
rollback:
    store__tx_rollback(s);
    return rc;
}

int store_run_update(struct store *s, const struct store_run *r)
{
    int rc = run_check(r, false, "update run");
    if (rc)
        return rc;
    sqlite3_stmt *st = NULL;
    if ((rc = store__stmt_acquire(s, ST_RUN_UPDATE, &st, NULL)) != 0)
        return rc;
    if ((rc = sqlite3_bind_int64(st, 1, r->id)) != SQLITE_OK ||
        (rc = store__bind_time_opt(st, 2, r->started_at)) != SQLITE_OK ||
        (rc = store__bind_time_opt(st, 3, r->finished_at)) != SQLITE_OK ||
        (rc = store__bind_str(st, 4, store_outcome_name(r->outcome))) != SQLITE_OK ||
        (rc = store__bind_str(st, 5, r->reason)) != SQLITE_OK ||
        (rc = bind_int_opt(st, 6, r->exit_code, -1)) != SQLITE_OK ||
        (rc = bind_int_opt(st, 7, r->signal, 0)) != SQLITE_OK ||
        (rc = bind_output(st, 8, r->output, r->output_len)) != SQLITE_OK ||
        (rc = bind_int_opt(st, 9, r->pid, 0)) != SQLITE_OK ||
        (rc = bind_pid_start(st, 10, r->pid_start)) != SQLITE_OK ||
        (rc = store__bind_str(st, 11, r->task)) != SQLITE_OK)
        rc = store__db_fail(s, NULL, rc, "bind");
    else if ((rc = store__step_done(s, st, NULL, "update run")) == 0 && sqlite3_changes(s->db) == 0)
        rc = RR_E_NOTFOUND;
    store__stmt_release(s, ST_RUN_UPDATE, st);
    return rc;
}

/* After a write guarded by the run's outcome matched nothing: RR_E_NOTFOUND
 * when there is no run id, else RR_E_BUSY (its outcome forbade the change).
 * Only this failure path reads. */
static int run_missing_or_busy(struct store *s, int64_t id)
{
    struct store_run r;
    int rc = store_run_get(s, id, &r);
    if (rc)
        return rc; /* RR_E_NOTFOUND, or the error reading it */
    store_run_clear(&r);
    return RR_E_BUSY;
}

/* Step a bound UPDATE ... RETURNING of at most one run to its end, which is
 * when an autocommit write commits. 0 and *out (when not NULL; owned) when
 * it changed the row, RR_E_NOTFOUND when it matched none, or an error. A
 * database still locked after the busy timeout is RR_E_IO here: for these
 * callers RR_E_BUSY means the row's outcome forbade the change. */
static int run_returning(struct store *s, sqlite3_stmt *st, struct store_run *out /* OUT */,
                         const char *what)
{
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        return RR_E_NOTFOUND;
    struct store_run r = {0};
    int copy_rc = 0;
    if (rc == SQLITE_ROW) {
        copy_rc = out ? run_from_row(st, &r) : 0;
        rc = sqlite3_step(st);
    }
    if (rc != SQLITE_DONE) {
        store_run_clear(&r);
        rc = store__db_fail(s, NULL, rc, what);
        return rc == RR_E_BUSY ? RR_E_IO : rc;
    }
    if (copy_rc)
        return copy_rc; /* changed, but the row could not be read back */
    if (out)
        *out = r;
    return 0;
}

int store_run_start(struct store *s, int64_t id, double at, int pid, uint64_t pid_start,
                    const char *task, struct store_run *out)
{
    sqlite3_stmt *st = NULL;
    int rc = store__stmt_acquire(s, ST_RUN_START, &st, NULL);
    if (rc)
        return rc;
    if ((rc = sqlite3_bind_int64(st, 1, id)) != SQLITE_OK ||
        (rc = store__bind_time_opt(st, 2, at)) != SQLITE_OK ||
        (rc = bind_int_opt(st, 3, pid, 0)) != SQLITE_OK ||
        (rc = bind_pid_start(st, 4, pid_start)) != SQLITE_OK ||
        (rc = store__bind_str(st, 5, task)) != SQLITE_OK)
        rc = store__db_fail(s, NULL, rc, "bind");
    else
        rc = run_returning(s, st, out, "start run");
    store__stmt_release(s, ST_RUN_START, st);
    return rc == RR_E_NOTFOUND ? run_missing_or_busy(s, id) : rc;
}

int store_run_finish(struct store *s, int64_t id, const struct store_run_end *end,
                     struct store_run *out)
{
    if (!end || (unsigned)end->outcome >= OUTCOME_COUNT || !store_outcome_final(end->outcome)) {
        log_error("store: finish run: no end, or an outcome that is not final");
        return RR_E_INVAL;
    }
    sqlite3_stmt *st = NULL;
    int rc = store__stmt_acquire(s, ST_RUN_FINISH, &st, NULL);
    if (rc)
        return rc;
    /* An empty tail is no output (NULL), as the scheduler always stored it. */
    const char *output = end->output_len ? end->output : NULL;
    if ((rc = sqlite3_bind_int64(st, 1, id)) != SQLITE_OK ||
        (rc = store__bind_str(st, 2, store_outcome_name(end->outcome))) != SQLITE_OK ||
        (rc = sqlite3_bind_int(st, 3, end->started)) != SQLITE_OK ||
        (rc = store__bind_time_opt(st, 4, end->at)) != SQLITE_OK ||
        (rc = store__bind_str(st, 5, end->reason)) != SQLITE_OK ||
        (rc = bind_int_opt(st, 6, end->exit_code, -1)) != SQLITE_OK ||
        (rc = bind_int_opt(st, 7, end->signal, 0)) != SQLITE_OK ||
        (rc = bind_output(st, 8, output, end->output_len)) != SQLITE_OK ||
        (rc = store__bind_str(st, 9, end->task)) != SQLITE_OK)
        rc = store__db_fail(s, NULL, rc, "bind");
    else
        rc = run_returning(s, st, out, "finish run");
    store__stmt_release(s, ST_RUN_FINISH, st);
    return rc == RR_E_NOTFOUND ? run_missing_or_busy(s, id) : rc;
}

int store_run_get(struct store *s, int64_t id, struct store_run *out)
{
    sqlite3_stmt *st = NULL;
    int rc = store__stmt_acquire(s, ST_RUN_GET, &st, NULL);
    if (rc)
        return rc;
    if ((rc = sqlite3_bind_int64(st, 1, id)) != SQLITE_OK)
        rc = store__db_fail(s, NULL, rc, "bind");
    else
        rc = run_one(s, st, out, "get run");
    store__stmt_release(s, ST_RUN_GET, st);
    return rc;
}

int store_run_find_idem(struct store *s, const char *user, const char *project_id,
                        const char *key, struct store_run *out)
{
    if (!user || !project_id || !key)
        return RR_E_NOTFOUND;
    sqlite3_stmt *st = NULL;
    int rc = store__stmt_acquire(s, ST_RUN_FIND_IDEM, &st, NULL);
    if (rc)
        return rc;
    if ((rc = store__bind_str(st, 1, user)) != SQLITE_OK ||
        (rc = store__bind_str(st, 2, project_id)) != SQLITE_OK ||
        (rc = store__bind_str(st, 3, key)) != SQLITE_OK)
        rc = store__db_fail(s, NULL, rc, "bind");
    else
        rc = run_one(s, st, out, "find run by idempotency key");
    store__stmt_release(s, ST_RUN_FIND_IDEM, st);
    return rc;
}

int store_run_last(struct store *s, const char *user, const char *project_id,
                   struct store_run *out)
{
    if (!user || !project_id)
        return RR_E_NOTFOUND;
    sqlite3_stmt *st = NULL;
    int rc = store__stmt_acquire(s, ST_RUN_LAST, &st, NULL);
    if (rc)
        return rc;
    if ((rc = store__bind_str(st, 1, user)) != SQLITE_OK ||
        (rc = store__bind_str(st, 2, project_id)) != SQLITE_OK)
        rc = store__db_fail(s, NULL, rc, "bind");
    else
        rc = run_one(s, st, out, "get newest run");
    store__stmt_release(s, ST_RUN_LAST, st);
    return rc;
}

/* Step a bound run query, handing each row to cb as an owned copy (not
 * pointers into the row: the callback may write, and the output needs its
 * NUL anyway). */
static int run_walk(struct store *s, sqlite3_stmt *st, store_run_cb cb, void *ud)
{
    for (;;) {
        int src = sqlite3_step(st);
        if (src == SQLITE_DONE)
            return 0;
        if (src != SQLITE_ROW)
            return store__db_fail(s, NULL, src, "list runs");
        struct store_run r;
        int rc = run_from_row(st, &r);
        if (rc)
            return rc;
        rc = cb(&r, ud);
        store_run_clear(&r);
        if (rc)
            return rc;
    }
}

int store_run_list(struct store *s, const char *user, const char *project_id, int64_t limit,
                   store_run_cb cb, void *ud)
{
    if (!user || !project_id)
        return 0;
    sqlite3_stmt *st = NULL;
    int rc = store__stmt_acquire(s, ST_RUN_LIST, &st, NULL);
    if (rc)
        return rc;
    if ((rc = store__bind_str(st, 1, user)) != SQLITE_OK ||
        (rc = store__bind_str(st, 2, project_id)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(st, 3, limit > 0 ? limit : -1)) != SQLITE_OK)
        rc = store__db_fail(s, NULL, rc, "bind");
    else
        rc = run_walk(s, st, cb, ud);
    store__stmt_release(s, ST_RUN_LIST, st);
    return rc;
}

/* ================================================================ records
 *
 * A deployment with its newest run, as status and list show them: both
 * rows borrowed from their statements while the callback runs, nothing
 * copied. list steps the deployments and the newest runs (both ordered by
 * project_id) side by side. */

int store_dep_view(struct store *s, const char *user, const char *project_id,
                   store_view_cb cb, void *ud)
{
    if (!user || !project_id)
        return RR_E_NOTFOUND;
    sqlite3_stmt *dst = NULL, *rst = NULL;
    int rc = store__stmt_acquire(s, ST_DEP_GET, &dst, NULL);
    if (rc == 0)
        rc = store__stmt_acquire(s, ST_RUN_LAST_VIEW, &rst, NULL);
    if (rc)
        goto out;
    if ((rc = store__bind_str(dst, 1, user)) != SQLITE_OK ||
        (rc = store__bind_str(dst, 2, project_id)) != SQLITE_OK ||
        (rc = store__bind_str(rst, 1, user)) != SQLITE_OK ||
        (rc = store__bind_str(rst, 2, project_id)) != SQLITE_OK) {
        rc = store__db_fail(s, NULL, rc, "bind");
        goto out;
    }
    rc = sqlite3_step(dst);
    if (rc != SQLITE_ROW) {
        rc = rc == SQLITE_DONE ? RR_E_NOTFOUND : store__db_fail(s, NULL, rc, "get deployment");
        goto out;
    }
    struct store_dep d;
    struct store_run r;
    if ((rc = store__dep_from_row(dst, &d)) != 0)
        goto out;
    int src = sqlite3_step(rst);
    if (src != SQLITE_ROW && src != SQLITE_DONE) {
        rc = store__db_fail(s, NULL, src, "get newest run");
        goto out;
    }
    if (src == SQLITE_ROW && (rc = run_view(rst, &r)) != 0)
        goto out;
    rc = cb(&d, src == SQLITE_ROW ? &r : NULL, ud);
out:
    store__stmt_release(s, ST_RUN_LAST_VIEW, rst);
    store__stmt_release(s, ST_DEP_GET, dst);
    return rc;
}

int store_dep_list_view(struct store *s, const char *user, store_view_cb cb, void *ud)
{
    if (!user)
        return 0;
    sqlite3_stmt *dst = NULL, *rst = NULL;
    int rc = store__stmt_acquire(s, ST_DEP_LIST_USER, &dst, NULL);
    if (rc == 0)
        rc = store__stmt_acquire(s, ST_RUN_LAST_EACH, &rst, NULL);
    if (rc)
        goto out;
    if ((rc = store__bind_str(dst, 1, user)) != SQLITE_OK ||
        (rc = store__bind_str(rst, 1, user)) != SQLITE_OK) {
        rc = store__db_fail(s, NULL, rc, "bind");
        goto out;
    }
    struct store_run r;
    int src = SQLITE_ROW; /* the run statement's last step */
    bool have_run = false;
    for (;;) {
        int dsrc = sqlite3_step(dst);
        if (dsrc == SQLITE_DONE)
            break;
        if (dsrc != SQLITE_ROW) {
            rc = store__db_fail(s, NULL, dsrc, "list deployments");
            goto out;
        }
        struct store_dep d;
        if ((rc = store__dep_from_row(dst, &d)) != 0)
            goto out;
        /* Runs of deployments gone meanwhile (none: one snapshot) or
         * ordered before this one are passed over. */
        while (src == SQLITE_ROW && (!have_run || strcmp(r.project_id, d.project_id) < 0)) {
            src = sqlite3_step(rst);
            if (src == SQLITE_ROW) {
                if ((rc = run_view(rst, &r)) != 0)
                    goto out;
                have_run = true;
            } else if (src != SQLITE_DONE) {
                rc = store__db_fail(s, NULL, src, "list newest runs");
                goto out;
            } else {
                have_run = false;
            }
        }
        bool match = have_run && strcmp(r.project_id, d.project_id) == 0;
        if ((rc = cb(&d, match ? &r : NULL, ud)) != 0)
            goto out;
    }
    rc = 0;
out:
    store__stmt_release(s, ST_RUN_LAST_EACH, rst);
    store__stmt_release(s, ST_DEP_LIST_USER, dst);
    return rc;
}

int store_run_list_live(struct store *s, store_run_cb cb, void *ud)
{
    sqlite3_stmt *st = NULL;
    int rc = store__stmt_acquire(s, ST_RUN_LIVE, &st, NULL);
    if (rc)
        return rc;
    rc = run_walk(s, st, cb, ud);
    store__stmt_release(s, ST_RUN_LIVE, st);
    return rc;
}

int store_run_interrupt_running(struct store *s, double now, const char *reason,
                                int64_t *count)
{
    sqlite3_stmt *st = NULL;
    int rc = store__stmt_acquire(s, ST_RUN_INTERRUPT, &st, NULL);
    if (rc)
        return rc;
    int64_t n = 0;
    if ((rc = store__bind_str(st, 1, reason)) != SQLITE_OK ||
        (rc = store__bind_time_opt(st, 2, now)) != SQLITE_OK)
        rc = store__db_fail(s, NULL, rc, "bind");
    else if ((rc = store__step_done(s, st, NULL, "interrupt running runs")) == 0)
        n = sqlite3_changes(s->db);
    store__stmt_release(s, ST_RUN_INTERRUPT, st);
    if (rc == 0 && count)
        *count = n;
    return rc;
}

int store_run_miss(struct store *s, int64_t id, double at, const char *reason)
{
    sqlite3_stmt *st = NULL;
    int rc = store__stmt_acquire(s, ST_RUN_MISS, &st, NULL);
    if (rc)
        return rc;
    if ((rc = sqlite3_bind_int64(st, 1, id)) != SQLITE_OK ||
        (rc = store__bind_time_opt(st, 2, at)) != SQLITE_OK ||
        (rc = store__bind_str(st, 3, reason)) != SQLITE_OK)
        rc = store__db_fail(s, NULL, rc, "bind");
    else if ((rc = store__step_done(s, st, NULL, "record a missed run")) == 0 &&
             sqlite3_changes(s->db) == 0)
        rc = RR_E_NOTFOUND;
    store__stmt_release(s, ST_RUN_MISS, st);
    return rc == RR_E_NOTFOUND ? run_missing_or_busy(s, id) : rc;
}

int store_run_last_scheduled(struct store *s, const char *user,
                             const char *project_id, double *out)
{
    sqlite3_stmt *st = NULL;
    int rc = store__stmt_acquire(s, ST_RUN_LAST_SCHEDULED, &st, NULL);
    if (rc)
        return rc;
    if ((rc = store__bind_str(st, 1, user)) != SQLITE_OK ||
        (rc = store__bind_str(st, 2, project_id)) != SQLITE_OK) {
        rc = store__db_fail(s, NULL, rc, "bind");
    } else if ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        *out = sqlite3_column_type(st, 0) == SQLITE_NULL ? 0 : sqlite3_column_double(st, 0);
        rc = 0;
    } else {
        rc = store__db_fail(s, NULL, rc, "read the latest scheduled run");
    }
    store__stmt_release(s, ST_RUN_LAST_SCHEDULED, st);
    return rc;
}
