/* test_store_runs.c -- unit tests for store/runs.c: the run ledger.
 *
 * Design: every test gets a fresh database file in its own temporary
 * directory (fixture_setup) that fixture_teardown closes and removes. Time is
 * passed in explicitly, never read from the clock. What a call wrote is
 * checked through the store and, where "none" must be SQL NULL, with raw
 * SQL on a separate connection.
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
#include "store/store_internal.h"
#include "tests/unit/fixture.h"

#define T0 FIXTURE_T0

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
    assert_opt_str(a->task, b->task);
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

static void test_run_interrupt_running(void **state)
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
    assert_int_equal(store_run_interrupt_running(f->s, T0 + 500, "server restarted", &n), 0);
    assert_int_equal(n, 2);
    int64_t live[] = {running, other};
    for (size_t i = 0; i < 2; i++) {
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
    /* A queued run never started: it is the scheduler's to start or miss. */
    struct store_run g;
    assert_int_equal(store_run_get(f->s, queued, &g), 0);
    assert_int_equal(g.outcome, STORE_RUN_QUEUED);
    assert_null(g.reason);
    store_run_clear(&g);
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
    assert_int_equal(store_run_interrupt_running(f->s, T0 + 600, "again", &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(store_run_interrupt_running(f->s, T0 + 600, "again", NULL), 0);
    assert_int_equal(fixture_sql_int(f->path, "SELECT count(*) FROM runs WHERE reason = 'again'"),
                     0);
}

/* A decided run that never started becomes one missed scheduled time; the
 * ledger's latest scheduled time is what was decided, whatever came of it. */
static void test_run_miss_and_last_scheduled(void **state)
{
    struct fixture *f = *state;
    fixture_add_dep(f->s, "alice", "p");
    double last = -1;
    assert_int_equal(store_run_last_scheduled(f->s, "alice", "p", &last), 0);
    assert_true(last == 0);
    struct store_run r = fixture_run("alice", "p", "schedule", T0 + 60, STORE_RUN_SUCCEEDED);
    fixture_add_run(f->s, &r, 100);
    r = fixture_run("alice", "p", "schedule", T0 + 120, STORE_RUN_QUEUED);
    int64_t queued = fixture_add_run(f->s, &r, 100);
    r = fixture_run("alice", "p", "manual", 0, STORE_RUN_QUEUED);
    int64_t manual = fixture_add_run(f->s, &r, 100);
    assert_int_equal(store_run_last_scheduled(f->s, "alice", "p", &last), 0);
    assert_true(last == T0 + 120); /* manual runs have no scheduled time */

    assert_int_equal(store_run_miss(f->s, queued, T0 + 500, "not started"), 0);
    struct store_run g;
    assert_int_equal(store_run_get(f->s, queued, &g), 0);
    assert_int_equal(g.outcome, STORE_RUN_MISSED);
    assert_string_equal(g.reason, "not started");
    assert_true(g.finished_at == T0 + 500);
    assert_int_equal(g.missed_count, 1);
    assert_true(g.window_start == T0 + 120 && g.window_end == T0 + 120);
    store_run_clear(&g);
    /* the first decision wins; unknown runs are not found */
    assert_int_equal(store_run_miss(f->s, queued, T0 + 600, "again"), RR_E_BUSY);
    assert_int_equal(store_run_miss(f->s, 999999, T0 + 600, "none"), RR_E_NOTFOUND);
    assert_int_equal(store_run_last_scheduled(f->s, "alice", "p", &last), 0);
    assert_true(last == T0 + 120);
    assert_int_equal(store_run_miss(f->s, manual, T0 + 600, "not started"), 0);
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

/* ================================================================ start and finish */

/* What a row looks like after store_run_get, for comparing with what the
 * narrow writes hand back. */
static void assert_run_is_stored(struct fixture *f, const struct store_run *r)
{
    struct store_run g;
    assert_int_equal(store_run_get(f->s, r->id, &g), 0);
    assert_run_equal(&g, r);
    assert_int_equal(g.pid, r->pid);
    assert_true(g.pid_start == r->pid_start);
    store_run_clear(&g);
}

static void test_run_start(void **state)
{
    struct fixture *f = *state;
    fixture_add_dep(f->s, "alice", "p");
    struct store_run q = fixture_run("alice", "p", "schedule", T0 + 60, STORE_RUN_QUEUED);
    q.idempotency_key = (char *)"idem-1";
    q.id = fixture_add_run(f->s, &q, 100);
    struct store_run other = fixture_run("alice", "p", "manual", 0, STORE_RUN_QUEUED);
    other.id = fixture_add_run(f->s, &other, 100);

    /* The row handed back is the row as stored, with only the start changed. */
    struct store_run got;
    assert_int_equal(store_run_start(f->s, q.id, T0 + 61.5, 4242, 123456789012ull, NULL, &got),
                     0);
    struct store_run want = q;
    want.outcome = STORE_RUN_RUNNING;
    want.started_at = T0 + 61.5;
    want.pid = 4242;
    want.pid_start = 123456789012ull;
    assert_run_equal(&got, &want);
    assert_int_equal(got.pid, 4242);
    assert_true(got.pid_start == 123456789012ull);
    assert_null(got.output);
    assert_true(got.finished_at == 0);
    store_run_clear(&got);
    assert_run_is_stored(f, &want);
    assert_run_is_stored(f, &other); /* only that row */

    /* Only a queued run starts: a second start, or one after the end, is
     * refused and changes nothing; *out is left alone. */
    memset(&got, 0x5a, sizeof got);
    struct store_run untouched = got;
    assert_int_equal(store_run_start(f->s, q.id, T0 + 99, 1, 1, NULL, &got), RR_E_BUSY);
    assert_memory_equal(&got, &untouched, sizeof got);
    assert_run_is_stored(f, &want);
    struct store_run done = fixture_run("alice", "p", "manual", 0, STORE_RUN_SUCCEEDED);
    done.exit_code = 0;
    done.id = fixture_add_run(f->s, &done, 100);
    assert_int_equal(store_run_start(f->s, done.id, T0 + 99, 1, 1, NULL, NULL), RR_E_BUSY);
    assert_run_is_stored(f, &done);

    /* No such run; and nothing left open by the refusals. */
    assert_int_equal(store_run_start(f->s, 9999, T0 + 99, 1, 1, NULL, &got), RR_E_NOTFOUND);
    assert_memory_equal(&got, &untouched, sizeof got);
    assert_true(sqlite3_get_autocommit(store__db(f->s)) != 0);

    /* out may be NULL; pid and pid_start 0 are none (SQL NULL). */
    assert_int_equal(store_run_start(f->s, other.id, T0 + 62, 0, 0, NULL, NULL), 0);
    assert_int_equal(fixture_sql_int(f->path, "SELECT count(*) FROM runs WHERE trigger = 'manual' "
                                              "AND outcome = 'running' AND pid IS NULL AND "
                                              "pid_start IS NULL AND started_at IS NOT NULL"),
                     1);
}

static void test_run_finish(void **state)
{
    struct fixture *f = *state;
    fixture_add_dep(f->s, "alice", "p");
    struct store_run r = fixture_run("alice", "p", "schedule", T0 + 60, STORE_RUN_QUEUED);
    r.id = fixture_add_run(f->s, &r, 100);
    assert_int_equal(store_run_start(f->s, r.id, T0 + 61, 4242, 777, NULL, NULL), 0);

    /* A running run ends: the end's columns replace the row's, started_at,
     * pid and pid_start stay. */
    static const char tail[] = "line 1\n\0binary\0\xff tail";
    struct store_run_end end = {
        .outcome = STORE_RUN_FAILED,
        .at = T0 + 90.25,
        .started = true,
        .reason = "exit status 3",
        .exit_code = 3,
        .signal = 0,
        .output = tail,
        .output_len = sizeof tail - 1, /* the inner NULs included */
    };
    struct store_run got;
    assert_int_equal(store_run_finish(f->s, r.id, &end, &got), 0);
    struct store_run want = r;
    want.outcome = STORE_RUN_FAILED;
    want.started_at = T0 + 61; /* kept: the start decides it */
    want.finished_at = T0 + 90.25;
    want.reason = (char *)"exit status 3";
    want.exit_code = 3;
    want.output = (char *)tail;
    want.output_len = sizeof tail - 1;
    want.pid = 4242;
    want.pid_start = 777;
    assert_run_equal(&got, &want);
    assert_int_equal(got.output[got.output_len], '\0'); /* NUL-terminated for convenience */
    assert_int_equal(got.pid, 4242);
    assert_true(got.pid_start == 777);
    store_run_clear(&got);
    assert_run_is_stored(f, &want);
    /* The output is a blob of every byte, as store_run_update writes it. */
    char sql[128];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM runs WHERE typeof(output) = 'blob' AND length(output) = %zu",
             sizeof tail - 1);
    assert_int_equal(fixture_sql_int(f->path, sql), 1);

    /* The first decision wins: a second end is refused, nothing changes, and
     * *out is left alone. */
    struct store_run_end late = {.outcome = STORE_RUN_CANCELLED, .at = T0 + 95,
                                 .reason = "cancelled", .exit_code = -1};
    memset(&got, 0x5a, sizeof got);
    struct store_run untouched = got;
    assert_int_equal(store_run_finish(f->s, r.id, &late, &got), RR_E_BUSY);
    assert_memory_equal(&got, &untouched, sizeof got);
    assert_run_is_stored(f, &want);
    /* So are rows decided final when recorded (skipped, missed). */
    struct store_run skipped = fixture_run("alice", "p", "schedule", T0 + 120, STORE_RUN_SKIPPED);
    skipped.reason = (char *)"overlap";
    skipped.id = fixture_add_run(f->s, &skipped, 100);
    assert_int_equal(store_run_finish(f->s, skipped.id, &late, NULL), RR_E_BUSY);
    assert_run_is_stored(f, &skipped);

    /* No such run. */
    assert_int_equal(store_run_finish(f->s, 9999, &late, &got), RR_E_NOTFOUND);
    assert_memory_equal(&got, &untouched, sizeof got);

    /* Programmer errors, refused before SQL: no end, an outcome not final. */
    struct store_run q = fixture_run("alice", "p", "manual", 0, STORE_RUN_QUEUED);
    q.id = fixture_add_run(f->s, &q, 100);
    assert_int_equal(store_run_finish(f->s, q.id, NULL, NULL), RR_E_INVAL);
    struct store_run_end bad = {.outcome = STORE_RUN_RUNNING, .at = T0, .exit_code = -1};
    assert_int_equal(store_run_finish(f->s, q.id, &bad, NULL), RR_E_INVAL);
    bad.outcome = STORE_RUN_QUEUED;
    assert_int_equal(store_run_finish(f->s, q.id, &bad, NULL), RR_E_INVAL);
    bad.outcome = (enum store_outcome)42;
    assert_int_equal(store_run_finish(f->s, q.id, &bad, NULL), RR_E_INVAL);
    assert_run_is_stored(f, &q);
    assert_true(sqlite3_get_autocommit(store__db(f->s)) != 0);
}

/* started_at after an end: kept when the row has one; else the end's time
 * when something really ran; else none. */
static void test_run_finish_started_at(void **state)
{
    struct fixture *f = *state;
    fixture_add_dep(f->s, "alice", "p");
    struct store_run r = fixture_run("alice", "p", "manual", 0, STORE_RUN_QUEUED);
    int64_t never = fixture_add_run(f->s, &r, 100);
    int64_t quick = fixture_add_run(f->s, &r, 100);
    r.outcome = STORE_RUN_RUNNING;
    r.started_at = T0 + 5;
    int64_t started = fixture_add_run(f->s, &r, 100);

    /* Cancelled before it started (as a held run is): no start time. */
    struct store_run_end end = {.outcome = STORE_RUN_CANCELLED, .at = T0 + 10,
                                .reason = "paused", .exit_code = -1};
    struct store_run got;
    assert_int_equal(store_run_finish(f->s, never, &end, &got), 0);
    assert_true(got.started_at == 0);
    assert_true(got.finished_at == T0 + 10);
    assert_string_equal(got.reason, "paused");
    assert_int_equal(got.exit_code, -1);
    store_run_clear(&got);
    assert_int_equal(fixture_sql_int(f->path, "SELECT count(*) FROM runs WHERE outcome = "
                                              "'cancelled' AND started_at IS NULL AND exit_code "
                                              "IS NULL AND signal IS NULL AND output IS NULL"),
                     1);

    /* Ran, but its start was never recorded (the end came first). */
    end = (struct store_run_end){.outcome = STORE_RUN_SUCCEEDED, .at = T0 + 20,
                                 .started = true, .exit_code = 0};
    assert_int_equal(store_run_finish(f->s, quick, &end, &got), 0);
    assert_true(got.started_at == T0 + 20);
    assert_true(got.finished_at == T0 + 20);
    assert_null(got.reason);
    assert_int_equal(got.exit_code, 0);
    store_run_clear(&got);

    /* Started before: its start time stays, started or not. */
    end = (struct store_run_end){.outcome = STORE_RUN_TIMED_OUT, .at = T0 + 30,
                                 .started = false, .exit_code = -1, .signal = 9};
    assert_int_equal(store_run_finish(f->s, started, &end, &got), 0);
    assert_true(got.started_at == T0 + 5);
    assert_true(got.finished_at == T0 + 30);
    assert_int_equal(got.signal, 9);
    store_run_clear(&got);
}

/* The end replaces what the row had: a reason, an exit code, a signal and an
 * output become none when the end has none. */
static void test_run_finish_replaces(void **state)
{
    struct fixture *f = *state;
    fixture_add_dep(f->s, "alice", "p");
    struct store_run r = fixture_run("alice", "p", "manual", 0, STORE_RUN_RUNNING);
    r.started_at = T0 + 1;
    r.reason = (char *)"old reason";
    r.exit_code = 7;
    r.signal = 15;
    r.output = (char *)"old output";
    r.output_len = 10;
    int64_t a = fixture_add_run(f->s, &r, 100);
    int64_t b = fixture_add_run(f->s, &r, 100);

    struct store_run_end end = {.outcome = STORE_RUN_INTERRUPTED, .at = T0 + 2, .started = true,
                                .exit_code = -1};
    struct store_run got;
    assert_int_equal(store_run_finish(f->s, a, &end, &got), 0);
    assert_null(got.reason);
    assert_int_equal(got.exit_code, -1);
    assert_int_equal(got.signal, 0);
    assert_null(got.output);
    assert_int_equal(got.output_len, 0);
    store_run_clear(&got);

    /* An empty tail is no output, whatever the pointer. */
    end.output = "";
    end.output_len = 0;
    end.reason = "new reason";
    end.exit_code = 0;
    end.signal = 2;
    assert_int_equal(store_run_finish(f->s, b, &end, NULL), 0);
    assert_int_equal(fixture_sql_int(f->path, "SELECT count(*) FROM runs WHERE output IS NULL "
                                              "AND reason = 'new reason' AND exit_code = 0 AND "
                                              "signal = 2 AND outcome = 'interrupted'"),
                     1);
    assert_int_equal(fixture_sql_int(f->path, "SELECT count(*) FROM runs WHERE output IS NULL"), 2);
}

/* Inside a batch the narrow writes join it, as every write call does: seen
 * by nobody else until the commit, and a refusal keeps the batch. */
static void test_run_start_finish_batch(void **state)
{
    struct fixture *f = *state;
    fixture_add_dep(f->s, "alice", "p");
    struct store_run r = fixture_run("alice", "p", "manual", 0, STORE_RUN_QUEUED);
    int64_t a = fixture_add_run(f->s, &r, 100);
    int64_t b = fixture_add_run(f->s, &r, 100);

    assert_int_equal(store_batch_begin(f->s), 0);
    struct store_run got;
    assert_int_equal(store_run_start(f->s, a, T0 + 10, 100, 1000, NULL, &got), 0);
    assert_int_equal(got.outcome, STORE_RUN_RUNNING);
    store_run_clear(&got);
    assert_int_equal(store_run_start(f->s, a, T0 + 11, 100, 1000, NULL, NULL), RR_E_BUSY);
    assert_int_equal(store_run_start(f->s, 9999, T0 + 11, 100, 1000, NULL, NULL), RR_E_NOTFOUND);
    struct store_run_end end = {.outcome = STORE_RUN_SUCCEEDED, .at = T0 + 20, .started = true,
                                .exit_code = 0, .output = "ok\n", .output_len = 3};
    assert_int_equal(store_run_finish(f->s, a, &end, &got), 0);
    assert_true(got.started_at == T0 + 10);
    store_run_clear(&got);
    assert_int_equal(store_run_finish(f->s, a, &end, NULL), RR_E_BUSY);
    end.outcome = STORE_RUN_CANCELLED;
    assert_int_equal(store_run_finish(f->s, b, &end, NULL), 0);
    /* the batch reads its own writes; another connection does not */
    assert_int_equal(store_run_get(f->s, b, &got), 0);
    assert_int_equal(got.outcome, STORE_RUN_CANCELLED);
    store_run_clear(&got);
    assert_int_equal(fixture_sql_int(f->path, "SELECT count(*) FROM runs WHERE outcome = 'queued'"),
                     2);
    assert_int_equal(store_batch_commit(f->s), 0);
    assert_int_equal(fixture_sql_int(f->path, "SELECT count(*) FROM runs WHERE outcome = "
                                              "'succeeded' AND started_at = 1767225610 AND "
                                              "finished_at = 1767225620 AND pid = 100"),
                     1);
    assert_int_equal(fixture_sql_int(f->path, "SELECT count(*) FROM runs WHERE outcome = "
                                              "'cancelled'"),
                     1);
}

/* In a read batch they write as the other write calls do: after
 * store_batch_write, or, with no other writer about, straight away. */
static void test_run_start_finish_read_batch(void **state)
{
    struct fixture *f = *state;
    fixture_add_dep(f->s, "alice", "p");
    struct store_run r = fixture_run("alice", "p", "manual", 0, STORE_RUN_QUEUED);
    int64_t a = fixture_add_run(f->s, &r, 100);
    int64_t b = fixture_add_run(f->s, &r, 100);

    assert_int_equal(store_batch_begin_read(f->s), 0);
    struct store_run got;
    assert_int_equal(store_run_get(f->s, a, &got), 0); /* the read part */
    store_run_clear(&got);
    assert_int_equal(store_batch_write(f->s), 0);
    assert_int_equal(store_run_start(f->s, a, T0 + 10, 100, 1000, NULL, NULL), 0);
    assert_int_equal(fixture_sql_int(f->path, "SELECT count(*) FROM runs WHERE outcome = 'queued'"),
                     2);
    assert_int_equal(store_batch_commit(f->s), 0);
    assert_int_equal(fixture_sql_int(f->path, "SELECT count(*) FROM runs WHERE outcome = "
                                              "'running' AND pid = 100"),
                     1);

    assert_int_equal(store_batch_begin_read(f->s), 0);
    assert_int_equal(store_run_get(f->s, b, &got), 0);
    store_run_clear(&got);
    struct store_run_end end = {.outcome = STORE_RUN_CANCELLED, .at = T0 + 20,
                                .reason = "removed", .exit_code = -1};
    assert_int_equal(store_run_finish(f->s, b, &end, NULL), 0);
    assert_int_equal(store_run_finish(f->s, b, &end, NULL), RR_E_BUSY);
    assert_int_equal(fixture_sql_int(f->path, "SELECT count(*) FROM runs WHERE outcome = "
                                              "'cancelled'"),
                     0);
    assert_int_equal(store_batch_commit(f->s), 0);
    assert_int_equal(fixture_sql_int(f->path, "SELECT count(*) FROM runs WHERE outcome = "
                                              "'cancelled' AND reason = 'removed'"),
                     1);
}

/* ================================================================ tasks */

/* The task every walk hands over for a row, by id. */
struct task_walk {
    int64_t id;
    const char *want; /* NULL: no task */
    int seen;
};

static int task_cb(const struct store_run *r, void *ud)
{
    struct task_walk *w = ud;
    if (r->id != w->id)
        return 0;
    w->seen++;
    assert_opt_str(r->task, w->want);
    return 0;
}

static int task_view_cb(const struct store_dep *d, const struct store_run *last, void *ud)
{
    (void)d;
    return last ? task_cb(last, ud) : 0;
}

/* Every read of a run returns its task: get, find by idempotency key, last,
 * and the walks (list, the records' newest runs, live). */
static void assert_task_everywhere(struct fixture *f, int64_t id, const char *want, bool live)
{
    struct store_run g;
    assert_int_equal(store_run_get(f->s, id, &g), 0);
    assert_opt_str(g.task, want);
    if (g.idempotency_key) {
        struct store_run h;
        assert_int_equal(store_run_find_idem(f->s, g.user, g.project_id, g.idempotency_key, &h),
                         0);
        assert_opt_str(h.task, want);
        store_run_clear(&h);
    }
    store_run_clear(&g);
    assert_int_equal(store_run_last(f->s, "alice", "p", &g), 0);
    assert_int_equal(g.id, id); /* callers make id the newest */
    assert_opt_str(g.task, want);
    store_run_clear(&g);
    struct task_walk w = {.id = id, .want = want};
    assert_int_equal(store_run_list(f->s, "alice", "p", 0, task_cb, &w), 0);
    assert_int_equal(store_dep_list_view(f->s, "alice", task_view_cb, &w), 0);
    assert_int_equal(store_run_list_live(f->s, task_cb, &w), 0);
    assert_int_equal(w.seen, live ? 3 : 2);
}

static void test_run_task(void **state)
{
    struct fixture *f = *state;
    fixture_add_dep(f->s, "alice", "p");
    /* Kept verbatim: spacing, key order, escapes and numbers as written. */
    static const char task1[] =
        "{ \"token\" : \"tk-1\", \"id\":\"t\\u00e9\", \"state\":\"running\", \"n\": 1.50 }";
    static const char task2[] = "{\"token\":\"tk-1\",\"state\":\"completed\",\"exitCode\":0,"
                                "\"exitMessage\":\"done\",\"counters\":{\"docs\":3}}";

    struct store_run r = fixture_run("alice", "p", "manual", 0, STORE_RUN_QUEUED);
    r.idempotency_key = (char *)"idem-1";
    r.id = fixture_add_run(f->s, &r, 100);
    assert_task_everywhere(f, r.id, NULL, true);

    /* Started with a task; a finish without one keeps it. */
    struct store_run got;
    assert_int_equal(store_run_start(f->s, r.id, T0 + 2, 0, 0, task1, &got), 0);
    assert_string_equal(got.task, task1);
    store_run_clear(&got);
    assert_task_everywhere(f, r.id, task1, true);
    struct store_run_end end = {.outcome = STORE_RUN_SUCCEEDED, .at = T0 + 3, .started = true,
                                .exit_code = 0};
    assert_int_equal(store_run_finish(f->s, r.id, &end, &got), 0);
    assert_string_equal(got.task, task1);
    store_run_clear(&got);
    assert_task_everywhere(f, r.id, task1, false);

    /* A finish with a task replaces the one the start gave. */
    struct store_run r2 = fixture_run("alice", "p", "manual", 0, STORE_RUN_QUEUED);
    r2.id = fixture_add_run(f->s, &r2, 100);
    assert_int_equal(store_run_start(f->s, r2.id, T0 + 4, 0, 0, task1, NULL), 0);
    end.task = task2;
    assert_int_equal(store_run_finish(f->s, r2.id, &end, &got), 0);
    assert_string_equal(got.task, task2);
    store_run_clear(&got);
    assert_task_everywhere(f, r2.id, task2, false);

    /* A start without one keeps what the row had; a finish sets one on a
     * run that never had any. */
    struct store_run r3 = fixture_run("alice", "p", "manual", 0, STORE_RUN_QUEUED);
    r3.task = (char *)task1; /* inserted with the row */
    r3.id = fixture_add_run(f->s, &r3, 100);
    assert_task_everywhere(f, r3.id, task1, true);
    assert_int_equal(store_run_start(f->s, r3.id, T0 + 5, 0, 0, NULL, &got), 0);
    assert_string_equal(got.task, task1);
    store_run_clear(&got);
    struct store_run r4 = fixture_run("alice", "p", "manual", 0, STORE_RUN_QUEUED);
    r4.id = fixture_add_run(f->s, &r4, 100);
    end.task = task2;
    assert_int_equal(store_run_finish(f->s, r4.id, &end, NULL), 0);
    assert_task_everywhere(f, r4.id, task2, false);

    /* store_run_update writes it as given: a task, or NULL clearing it. */
    assert_int_equal(store_run_get(f->s, r4.id, &got), 0);
    char *had = got.task;
    got.task = (char *)task1;
    assert_int_equal(store_run_update(f->s, &got), 0);
    assert_task_everywhere(f, r4.id, task1, false);
    got.task = NULL;
    assert_int_equal(store_run_update(f->s, &got), 0);
    assert_task_everywhere(f, r4.id, NULL, false);
    assert_int_equal(fixture_sql_int(f->path, "SELECT count(*) FROM runs WHERE task IS NULL"), 1);
    got.task = had;
    store_run_clear(&got);

    /* A refused finish changes no task. */
    end.task = "{\"late\":true}";
    assert_int_equal(store_run_finish(f->s, r2.id, &end, NULL), RR_E_BUSY);
    assert_int_equal(store_run_get(f->s, r2.id, &got), 0);
    assert_string_equal(got.task, task2);

    /* store_run_copy copies it. */
    struct store_run copy;
    store_run_copy(&copy, &got);
    assert_non_null(copy.task);
    assert_ptr_not_equal(copy.task, got.task);
    assert_string_equal(copy.task, task2);
    store_run_clear(&got);
    assert_string_equal(copy.task, task2); /* its own */
    store_run_clear(&copy);
    assert_null(copy.task);
    struct store_run none = fixture_run("alice", "p", "manual", 0, STORE_RUN_QUEUED);
    store_run_copy(&copy, &none);
    assert_null(copy.task);
    store_run_clear(&copy);
}

#ifdef RRDEPLOY_TEST_HOOKS
/* A batch that does not commit (the test hook fails it as a full disk would)
 * leaves no trace of a start or an end. */
static void test_run_start_finish_rolled_back(void **state)
{
    struct fixture *f = *state;
    fixture_add_dep(f->s, "alice", "p");
    struct store_run r = fixture_run("alice", "p", "manual", 0, STORE_RUN_QUEUED);
    r.id = fixture_add_run(f->s, &r, 100);
    struct store_run other = fixture_run("alice", "p", "manual", 0, STORE_RUN_QUEUED);
    other.id = fixture_add_run(f->s, &other, 100);

    for (int read = 0; read < 2; read++) {
        assert_int_equal(read ? store_batch_begin_read(f->s) : store_batch_begin(f->s), 0);
        assert_int_equal(store_batch_write(f->s), 0);
        assert_int_equal(store_run_start(f->s, r.id, T0 + 10, 100, 1000, NULL, NULL), 0);
        struct store_run_end end = {.outcome = STORE_RUN_FAILED, .at = T0 + 20, .started = true,
                                    .reason = "lost", .exit_code = 1, .output = "x\0y",
                                    .output_len = 3};
        assert_int_equal(store_run_finish(f->s, r.id, &end, NULL), 0);
        assert_int_equal(store_run_finish(f->s, other.id, &end, NULL), 0);
        store_test_fail_commits(f->s, 1);
        assert_int_equal(store_batch_commit(f->s), RR_E_IO);
        assert_true(sqlite3_get_autocommit(store__db(f->s)) != 0);
        assert_run_is_stored(f, &r);
        assert_run_is_stored(f, &other);
        assert_int_equal(fixture_sql_int(f->path, "SELECT count(*) FROM runs WHERE outcome = "
                                                  "'queued' AND started_at IS NULL AND "
                                                  "finished_at IS NULL AND reason IS NULL AND "
                                                  "pid IS NULL AND output IS NULL"),
                         2);
    }
    /* and the rows can still start and end afterwards */
    assert_int_equal(store_run_start(f->s, r.id, T0 + 30, 100, 1000, NULL, NULL), 0);
    struct store_run_end end = {.outcome = STORE_RUN_SUCCEEDED, .at = T0 + 40, .started = true,
                                .exit_code = 0};
    assert_int_equal(store_run_finish(f->s, r.id, &end, NULL), 0);
}
#endif

/* Views: each deployment with its newest run (or none), borrowed. */
struct view_walk {
    char seen[8][40]; /* "project:run id" */
    int n;
    int stop_at;
};

static int view_cb(const struct store_dep *d, const struct store_run *last, void *ud)
{
    struct view_walk *w = ud;
    assert_true(w->n < 8);
    assert_string_equal(d->user, "alice");
    if (last) {
        assert_string_equal(last->project_id, d->project_id);
        assert_null(last->output); /* left out */
    }
    snprintf(w->seen[w->n++], sizeof w->seen[0], "%s:%lld", d->project_id,
             last ? (long long)last->id : 0LL);
    return w->n == w->stop_at ? -99 : 0;
}

static void test_dep_views(void **state)
{
    struct fixture *f = *state;
    /* runs for a (two), none for b, one for d; bob's do not mix in */
    static const char *const ids[] = {"a", "b", "c", "d"};
    for (size_t i = 0; i < 4; i++)
        fixture_add_dep(f->s, "alice", ids[i]);
    fixture_add_dep(f->s, "bob", "a");
    fixture_add_dep(f->s, "bob", "c");
    struct store_run r = fixture_run("alice", "a", "manual", 0, STORE_RUN_SUCCEEDED);
    r.output = (char *)"out";
    r.output_len = 3;
    fixture_add_run(f->s, &r, 100);
    int64_t a2 = fixture_add_run(f->s, &r, 100);
    r = fixture_run("bob", "c", "manual", 0, STORE_RUN_FAILED);
    fixture_add_run(f->s, &r, 100);
    r = fixture_run("alice", "d", "manual", 0, STORE_RUN_FAILED);
    int64_t d1 = fixture_add_run(f->s, &r, 100);

    struct view_walk w = {0};
    assert_int_equal(store_dep_list_view(f->s, "alice", view_cb, &w), 0);
    assert_int_equal(w.n, 4);
    char want[4][40];
    snprintf(want[0], sizeof want[0], "a:%lld", (long long)a2);
    snprintf(want[1], sizeof want[1], "b:0");
    snprintf(want[2], sizeof want[2], "c:0");
    snprintf(want[3], sizeof want[3], "d:%lld", (long long)d1);
    for (int i = 0; i < 4; i++)
        assert_string_equal(w.seen[i], want[i]);

    struct view_walk stop = {.stop_at = 2};
    assert_int_equal(store_dep_list_view(f->s, "alice", view_cb, &stop), -99);
    assert_int_equal(stop.n, 2);

    for (int i = 0; i < 4; i++) {
        struct view_walk one = {0};
        assert_int_equal(store_dep_view(f->s, "alice", ids[i], view_cb, &one), 0);
        assert_int_equal(one.n, 1);
        assert_string_equal(one.seen[0], want[i]);
    }
    struct view_walk none = {0};
    assert_int_equal(store_dep_view(f->s, "alice", "zz", view_cb, &none), RR_E_NOTFOUND);
    assert_int_equal(none.n, 0);
    assert_int_equal(store_dep_list_view(f->s, "carol", view_cb, &none), 0);
    assert_int_equal(none.n, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        FIXTURE_TEST(test_run_round_trip),
        FIXTURE_TEST(test_run_sched_unique),
        FIXTURE_TEST(test_run_idem),
        FIXTURE_TEST(test_run_prune),
        FIXTURE_TEST(test_run_list_last),
        FIXTURE_TEST(test_run_interrupt_running),
        FIXTURE_TEST(test_run_miss_and_last_scheduled),
        FIXTURE_TEST(test_run_pid_and_live),
        FIXTURE_TEST(test_run_cascade),
        FIXTURE_TEST(test_run_missing_dep),
        FIXTURE_TEST(test_outcome_names),
        FIXTURE_TEST(test_run_start),
        FIXTURE_TEST(test_run_finish),
        FIXTURE_TEST(test_run_finish_started_at),
        FIXTURE_TEST(test_run_finish_replaces),
        FIXTURE_TEST(test_run_start_finish_batch),
        FIXTURE_TEST(test_run_start_finish_read_batch),
        FIXTURE_TEST(test_run_task),
        FIXTURE_TEST(test_dep_views),
#ifdef RRDEPLOY_TEST_HOOKS
        FIXTURE_TEST(test_run_start_finish_rolled_back),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
