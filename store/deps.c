/* deps.c -- deployments: one row per (user, project_id).
 *
 * Purpose: the functions of store/store.h that read or write the deployments
 * table: insert (with the per-user limit), get, update, delete, count, the
 * walks, and the scheduler's progress columns.
 *
 * Design:
 *  - Inserting counts the user's deployments and inserts in one transaction
 *    (BEGIN IMMEDIATE, or a savepoint inside a batch), so two connections at
 *    the limit cannot both get in. The primary key, not a check, decides a
 *    duplicate.
 *  - Every other write is one autocommit statement keyed by (user,
 *    project_id), RR_E_NOTFOUND when it touched no row. The narrow ones
 *    (progress, errored, change) name the columns they set and leave the
 *    rest to the row, so a caller need not read it first. Deleting a deployment
 *    deletes its run ledger rows too (ON DELETE CASCADE in the schema).
 *  - store_dep_get hands back owned copies; the walks hand the callback
 *    pointers into the current row, valid until it returns.
 *  - The sealed credential is written by insert and change and read only by
 *    store_dep_pipeline, together with the pipeline, for a run: the other
 *    reads never select it, so it is not copied into every listing.
 *
 * Thread: like every store call, on the one thread using the struct store. */
#include "store/store.h"
#include "store/store_internal.h"

#include <stdlib.h>
#include <string.h>

/* ================================================================ deployments */

const char *store_state_name(enum store_state st)
{
    switch (st) {
    case STORE_ACTIVE: return "active";
    case STORE_PAUSED: return "paused";
    case STORE_ERRORED: return "errored";
    }
    return "invalid";
}

int store_state_parse(const char *s, enum store_state *out)
{
    if (!s)
        return RR_E_INVAL;
    if (strcmp(s, "active") == 0)
        *out = STORE_ACTIVE;
    else if (strcmp(s, "paused") == 0)
        *out = STORE_PAUSED;
    else if (strcmp(s, "errored") == 0)
        *out = STORE_ERRORED;
    else
        return RR_E_INVAL;
    return 0;
}

void store_dep_clear(struct store_dep *d)
{
    if (!d)
        return;
    free(d->user);
    free(d->project_id);
    free(d->pipeline);
    free(d->schedule);
    free(d->error);
    free(d->created_by);
    free(d->owner_key_id);
    free(d->credential);
    memset(d, 0, sizeof *d);
}

/* Programmer-supplied fields the schema requires. */
static int dep_check(const struct store_dep *d, const char *what)
{
    if (!d || !d->user || !d->project_id || !d->pipeline || !d->schedule ||
        (unsigned)d->state > STORE_ERRORED) {
        log_error("store: %s: deployment lacks user, project_id, pipeline or schedule, "
                  "or has an invalid state",
                  what);
        return RR_E_INVAL;
    }
    return 0;
}

/* Bind ?1..?12 in DEP_COLS order. */
static int dep_bind(sqlite3_stmt *st, const struct store_dep *d)
{
    int rc;
    if ((rc = store__bind_str(st, 1, d->user)) != SQLITE_OK ||
        (rc = store__bind_str(st, 2, d->project_id)) != SQLITE_OK ||
        (rc = store__bind_str(st, 3, d->pipeline)) != SQLITE_OK ||
        (rc = store__bind_str(st, 4, d->schedule)) != SQLITE_OK ||
        (rc = store__bind_str(st, 5, store_state_name(d->state))) != SQLITE_OK ||
        (rc = store__bind_str(st, 6, d->error)) != SQLITE_OK ||
        (rc = store__bind_str(st, 7, d->created_by)) != SQLITE_OK ||
        (rc = store__bind_str(st, 8, d->owner_key_id)) != SQLITE_OK ||
        (rc = sqlite3_bind_double(st, 9, d->created_at)) != SQLITE_OK ||
        (rc = sqlite3_bind_double(st, 10, d->updated_at)) != SQLITE_OK ||
        (rc = store__bind_time_opt(st, 11, d->next_run_at)) != SQLITE_OK ||
        (rc = store__bind_time_opt(st, 12, d->last_fire_at)) != SQLITE_OK)
        return rc;
    return SQLITE_OK;
}

/* A sealed credential (or none: NULL, or length 0) as ?i. Borrowed until the
 * statement is released. */
static int bind_credential(sqlite3_stmt *st, int i, const unsigned char *c, size_t n)
{
    if (!c || n == 0)
        return sqlite3_bind_null(st, i);
    return sqlite3_bind_blob64(st, i, c, (sqlite3_uint64)n, SQLITE_STATIC);
}

int store__dep_from_row(sqlite3_stmt *st, struct store_dep *d /* OUT */)
{
    memset(d, 0, sizeof *d);
    d->user = (char *)sqlite3_column_text(st, 0);
    d->project_id = (char *)sqlite3_column_text(st, 1);
    d->pipeline = (char *)sqlite3_column_text(st, 2);
    d->schedule = (char *)sqlite3_column_text(st, 3);
    const char *state = (const char *)sqlite3_column_text(st, 4);
    d->error = (char *)sqlite3_column_text(st, 5);
    d->created_by = (char *)sqlite3_column_text(st, 6);
    d->owner_key_id = (char *)sqlite3_column_text(st, 7);
    d->created_at = sqlite3_column_double(st, 8);
    d->updated_at = sqlite3_column_double(st, 9);
    d->next_run_at = store__col_time(st, 10);
    d->last_fire_at = store__col_time(st, 11);
    if (!d->user || !d->project_id || !d->pipeline || !d->schedule ||
        store_state_parse(state, &d->state) != 0) {
        log_error("store: deployment row is malformed (or out of memory reading it)");
        return RR_E_IO;
    }
    return 0;
}


/* Is (user, project_id) present? 1, 0, or a negative error. */
static int dep_exists(struct store *s, const char *user, const char *project_id)
{
    sqlite3_stmt *st = NULL;
    int rc = store__stmt_acquire(s, ST_DEP_EXISTS, &st, NULL);
    if (rc)
        return rc;
    if ((rc = store__bind_str(st, 1, user)) != SQLITE_OK ||
        (rc = store__bind_str(st, 2, project_id)) != SQLITE_OK) {
        rc = store__db_fail(s, NULL, rc, "bind");
    } else {
        rc = sqlite3_step(st);
        rc = rc == SQLITE_ROW    ? 1
             : rc == SQLITE_DONE ? 0
                                 : store__db_fail(s, NULL, rc, "look up deployment");
    }
    store__stmt_release(s, ST_DEP_EXISTS, st);
    return rc;
}

int store_dep_insert(struct store *s, const struct store_dep *d, int64_t max_per_user)
{
    int rc = dep_check(d, "insert deployment");
    if (rc)
        return rc;
    if ((rc = store__tx_begin(s, NULL)) != 0)
        return rc;
    if (max_per_user > 0) {
        int64_t n = 0;
        if ((rc = store__query_int64(s, ST_DEP_COUNT_USER, d->user, &n, NULL,
                                     "count deployments")) != 0)
            goto rollback;
        if (n >= max_per_user) {
            /* At the limit, a duplicate is still reported as a duplicate: it
             * is the more precise answer. Same transaction, so no race. */
            rc = dep_exists(s, d->user, d->project_id);
            rc = rc == 1 ? RR_E_EXISTS : rc < 0 ? rc : RR_E_LIMIT;
            goto rollback;
        }
    }
    sqlite3_stmt *st = NULL;
    if ((rc = store__stmt_acquire(s, ST_DEP_INSERT, &st, NULL)) != 0)
        goto rollback;
    if ((rc = dep_bind(st, d)) != SQLITE_OK ||
        (rc = bind_credential(st, 13, d->credential, d->credential_len)) != SQLITE_OK) {
        rc = store__db_fail(s, NULL, rc, "bind");
    } else {
        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
            rc = 0;
        else if (rc == SQLITE_CONSTRAINT_PRIMARYKEY)
            rc = RR_E_EXISTS; /* the primary key decides; no check-then-insert */
        else
            rc = store__db_fail(s, NULL, rc, "insert deployment");
    }
    store__stmt_release(s, ST_DEP_INSERT, st);
    if (rc)
        goto rollback;
    return store__tx_commit(s, NULL);
rollback:
    store__tx_rollback(s);
    return rc;
}

int store_dep_get(struct store *s, const char *user, const char *project_id,
                  struct store_dep *out)
{
    if (!user || !project_id)
        return RR_E_NOTFOUND;
    sqlite3_stmt *st = NULL;
    int rc = store__stmt_acquire(s, ST_DEP_GET, &st, NULL);
    if (rc)
        return rc;
    if ((rc = store__bind_str(st, 1, user)) != SQLITE_OK ||
        (rc = store__bind_str(st, 2, project_id)) != SQLITE_OK) {
        rc = store__db_fail(s, NULL, rc, "bind");
        goto out;
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        rc = RR_E_NOTFOUND;
    } else if (rc != SQLITE_ROW) {
        rc = store__db_fail(s, NULL, rc, "get deployment");
    } else {
        struct store_dep b;
        if ((rc = store__dep_from_row(st, &b)) == 0) {
            struct store_dep d = b;
            d.user = xstrdup(b.user);
            d.project_id = xstrdup(b.project_id);
            d.pipeline = xstrdup(b.pipeline);
            d.schedule = xstrdup(b.schedule);
            d.error = store__dup_opt(b.error);
            d.created_by = store__dup_opt(b.created_by);
            d.owner_key_id = store__dup_opt(b.owner_key_id);
            *out = d;
        }
    }
out:
    store__stmt_release(s, ST_DEP_GET, st);
    return rc;
}

/* A one-row write keyed by (user, project_id), in two halves around the
 * caller's own bindings. dep_write_begin gives the statement id with the key
 * bound as ?1 and ?2 (RR_E_NOTFOUND for a NULL key part); dep_write_end takes
 * what binding the rest returned (a SQLite code), steps the statement and
 * releases it: RR_E_NOTFOUND when it touched no row. */
static int dep_write_begin(struct store *s, enum stmt_id id, const char *user,
                           const char *project_id, sqlite3_stmt **out /* OUT */)
{
    if (!user || !project_id)
        return RR_E_NOTFOUND;
    sqlite3_stmt *st = NULL;
    int rc = store__stmt_acquire(s, id, &st, NULL);
    if (rc)
        return rc;
    if ((rc = store__bind_str(st, 1, user)) != SQLITE_OK ||
        (rc = store__bind_str(st, 2, project_id)) != SQLITE_OK) {
        rc = store__db_fail(s, NULL, rc, "bind");
        store__stmt_release(s, id, st);
        return rc;
    }
    *out = st;
    return 0;
}

static int dep_write_end(struct store *s, enum stmt_id id, sqlite3_stmt *st, int bound,
                         const char *what)
{
    int rc;
    if (bound != SQLITE_OK)
        rc = store__db_fail(s, NULL, bound, "bind");
    else if ((rc = store__step_done(s, st, NULL, what)) == 0 && sqlite3_changes(s->db) == 0)
        rc = RR_E_NOTFOUND;
    store__stmt_release(s, id, st);
    return rc;
}

int store_dep_update(struct store *s, const struct store_dep *d)
{
    int rc = dep_check(d, "update deployment");
    if (rc)
        return rc;
    sqlite3_stmt *st = NULL;
    if ((rc = store__stmt_acquire(s, ST_DEP_UPDATE, &st, NULL)) != 0)
        return rc;
    return dep_write_end(s, ST_DEP_UPDATE, st, dep_bind(st, d), "update deployment");
}

int store_dep_delete(struct store *s, const char *user, const char *project_id)
{
    sqlite3_stmt *st = NULL;
    int rc = dep_write_begin(s, ST_DEP_DELETE, user, project_id, &st);
    return rc ? rc : dep_write_end(s, ST_DEP_DELETE, st, SQLITE_OK, "delete deployment");
}

int store_dep_count(struct store *s, const char *user, int64_t *out)
{
    return user ? store__query_int64(s, ST_DEP_COUNT_USER, user, out, NULL, "count deployments")
                : store__query_int64(s, ST_DEP_COUNT_ALL, NULL, out, NULL, "count deployments");
}

/* Walk the rows of statement id (bound to arg when not NULL). */
static int dep_walk(struct store *s, enum stmt_id id, const char *arg, store_dep_cb cb, void *ud)
{
    sqlite3_stmt *st = NULL;
    int rc = store__stmt_acquire(s, id, &st, NULL);
    if (rc)
        return rc;
    if (arg && (rc = store__bind_str(st, 1, arg)) != SQLITE_OK) {
        rc = store__db_fail(s, NULL, rc, "bind");
        goto out;
    }
    for (;;) {
        int src = sqlite3_step(st);
        if (src == SQLITE_DONE) {
            rc = 0;
            break;
        }
        if (src != SQLITE_ROW) {
            rc = store__db_fail(s, NULL, src, "list deployments");
            break;
        }
        struct store_dep d;
        if ((rc = store__dep_from_row(st, &d)) != 0 || (rc = cb(&d, ud)) != 0)
            break;
    }
out:
    store__stmt_release(s, id, st);
    return rc;
}

int store_dep_list(struct store *s, const char *user, store_dep_cb cb, void *ud)
{
    return user ? dep_walk(s, ST_DEP_LIST_USER, user, cb, ud)
                : dep_walk(s, ST_DEP_LIST_ALL, NULL, cb, ud);
}

int store_dep_scan(struct store *s, store_dep_cb cb, void *ud)
{
    return dep_walk(s, ST_DEP_SCAN, NULL, cb, ud);
}

int store_dep_list_by_key(struct store *s, const char *key_id, store_dep_cb cb, void *ud)
{
    if (!key_id)
        return 0;
    return dep_walk(s, ST_DEP_LIST_KEY, key_id, cb, ud);
}

/* Copy the credential column (col) of the current row: 0 and *out (malloc'd,
 * NULL when the row has none), or RR_E_NOMEM. */
static int credential_from_row(sqlite3_stmt *st, int col, unsigned char **out /* OUT */,
                               size_t *n /* OUT */)
{
    /* blob before bytes (SQLite's rule); an empty blob's pointer is NULL. */
    const void *b = sqlite3_column_blob(st, col);
    int len = sqlite3_column_bytes(st, col);
    if (len < 0 || (len > 0 && !b)) {
        log_error("store: out of memory reading a deployment's credential");
        return RR_E_NOMEM;
    }
    *out = NULL;
    *n = 0;
    if (len > 0) {
        *out = xmalloc((size_t)len);
        memcpy(*out, b, (size_t)len);
        *n = (size_t)len;
    }
    return 0;
}

int store_dep_pipeline(struct store *s, const char *user, const char *project_id,
                       char **pipeline, unsigned char **credential, size_t *credential_len)
{
    sqlite3_stmt *st = NULL;
    int rc = store__stmt_acquire(s, ST_DEP_PIPELINE, &st, NULL);
    if (rc)
        return rc;
    if ((rc = store__bind_str(st, 1, user)) != SQLITE_OK ||
        (rc = store__bind_str(st, 2, project_id)) != SQLITE_OK) {
        rc = store__db_fail(s, NULL, rc, "bind");
        goto out;
    }
    int src = sqlite3_step(st);
    if (src == SQLITE_DONE) {
        rc = RR_E_NOTFOUND;
        goto out;
    }
    if (src != SQLITE_ROW) {
        rc = store__db_fail(s, NULL, src, "get pipeline");
        goto out;
    }
    unsigned char *cred = NULL;
    size_t cred_len = 0;
    if (credential && (rc = credential_from_row(st, 1, &cred, &cred_len)) != 0)
        goto out;
    const char *text = (const char *)sqlite3_column_text(st, 0);
    if (!text) {
        free(cred);
        rc = RR_E_IO;
        goto out;
    }
    *pipeline = xstrndup(text, (size_t)sqlite3_column_bytes(st, 0));
    if (credential) {
        *credential = cred;
        *credential_len = cred_len;
    }
out:
    store__stmt_release(s, ST_DEP_PIPELINE, st);
    return rc;
}

int store_dep_set_progress(struct store *s, const char *user, const char *project_id,
                           double last_fire_at, double next_run_at)
{
    sqlite3_stmt *st = NULL;
    int rc = dep_write_begin(s, ST_DEP_PROGRESS, user, project_id, &st);
    if (rc)
        return rc;
    if ((rc = store__bind_time_opt(st, 3, last_fire_at)) == SQLITE_OK)
        rc = store__bind_time_opt(st, 4, next_run_at);
    return dep_write_end(s, ST_DEP_PROGRESS, st, rc, "record scheduler progress");
}

int store_dep_set_errored(struct store *s, const char *user, const char *project_id,
                          const char *why, double now)
{
    sqlite3_stmt *st = NULL;
    int rc = dep_write_begin(s, ST_DEP_SET_ERRORED, user, project_id, &st);
    if (rc)
        return rc;
    if ((rc = store__bind_str(st, 3, why)) == SQLITE_OK)
        rc = sqlite3_bind_double(st, 4, now);
    return dep_write_end(s, ST_DEP_SET_ERRORED, st, rc, "mark deployment errored");
}

int store_dep_error_by_key(struct store *s, const char *key_id, const char *why,
                           double now, int64_t *count)
{
    sqlite3_stmt *st = NULL;
    int rc = store__stmt_acquire(s, ST_DEP_ERROR_BY_KEY, &st, NULL);
    if (rc)
        return rc;
    int64_t n = 0;
    if ((rc = store__bind_str(st, 1, key_id)) != SQLITE_OK ||
        (rc = store__bind_str(st, 2, why)) != SQLITE_OK ||
        (rc = sqlite3_bind_double(st, 3, now)) != SQLITE_OK)
        rc = store__db_fail(s, NULL, rc, "bind");
    else if ((rc = store__step_done(s, st, NULL, "mark a key's deployments errored")) == 0)
        n = sqlite3_changes(s->db);
    store__stmt_release(s, ST_DEP_ERROR_BY_KEY, st);
    if (rc == 0 && count)
        *count = n;
    return rc;
}

int store_dep_change(struct store *s, const char *user, const char *project_id,
                     const struct store_dep_change *c)
{
    if (!c || (unsigned)c->state > STORE_ERRORED) {
        log_error("store: change deployment: no change, or an invalid state");
        return RR_E_INVAL;
    }
    sqlite3_stmt *st = NULL;
    int rc = dep_write_begin(s, ST_DEP_CHANGE, user, project_id, &st);
    if (rc)
        return rc;
    if ((rc = store__bind_str(st, 3, c->pipeline)) == SQLITE_OK &&
        (rc = store__bind_str(st, 4, c->schedule)) == SQLITE_OK &&
        (rc = store__bind_str(st, 5, store_state_name(c->state))) == SQLITE_OK &&
        (rc = sqlite3_bind_double(st, 6, c->updated_at)) == SQLITE_OK &&
        (rc = store__bind_time_opt(st, 7, c->next_run_at)) == SQLITE_OK &&
        (rc = sqlite3_bind_int(st, 8, c->set_credential)) == SQLITE_OK)
        rc = bind_credential(st, 9, c->credential, c->credential_len);
    return dep_write_end(s, ST_DEP_CHANGE, st, rc, "change deployment");
}
