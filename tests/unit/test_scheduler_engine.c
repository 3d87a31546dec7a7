/* test_scheduler_engine.c -- the tick-decision engine (scheduler/engine.c)
 * against a real store on a temporary file, a fake executor that records
 * what it was asked to do, and an injected clock: no process, no sleep. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "scheduler/scheduler.h"
#include "store/store.h"
#include "tests/unit/fixture.h"

#define T0 FIXTURE_T0 /* 2026-01-01T00:00:00Z, a Thursday */
#define MAX_JOBS 4096
#define MAX_EVENTS 16384

struct fx {
    struct fixture *f;  /* the database; f->s is the engine's connection */
    struct store *st;   /* = f->s */
    struct store *st2;  /* a second connection: sees only committed rows */
    struct sched *s;
    char key_id[STORE_KEY_ID_MAX];
    char key[STORE_KEY_TEXT_MAX];
    /* fake executor */
    int64_t jobs[MAX_JOBS];
    char job_trigger[MAX_JOBS][16];
    char job_when[MAX_JOBS][32];
    int njobs;
    unsigned char last_cred[64]; /* the last job's credential ... */
    size_t last_cred_len;
    bool last_cred_none;         /* ... or it had none */
    int64_t cancels[MAX_JOBS];
    int cancel_as[MAX_JOBS];
    int ncancels;
    int refuse;
    int stale_pgid;
    uint64_t stale_start;
    bool adopt;         /* reclaim adopts running runs */
    /* events */
    char *events[MAX_EVENTS];
    int nevents;
};

static int fake_submit(void *ud, const struct sched_job *job)
{
    struct fx *fx = ud;
    if (fx->refuse)
        return RR_E_BUSY;
    assert_true(fx->njobs < MAX_JOBS);
    assert_non_null(strstr(job->pipeline, "project_id"));
    /* exactly once: the ledger row is durable before the run starts */
    struct store_run r;
    assert_int_equal(store_run_get(fx->st2, job->run_id, &r), 0);
    assert_int_equal(r.outcome, STORE_RUN_QUEUED);
    store_run_clear(&r);
    assert_true(job->credential_len <= sizeof fx->last_cred);
    assert_true(!job->credential == !job->credential_len);
    fx->last_cred_none = !job->credential;
    fx->last_cred_len = job->credential_len;
    if (job->credential)
        memcpy(fx->last_cred, job->credential, job->credential_len);
    snprintf(fx->job_trigger[fx->njobs], 16, "%s", job->trigger);
    snprintf(fx->job_when[fx->njobs], 32, "%s", job->scheduled_at);
    fx->jobs[fx->njobs++] = job->run_id;
    return 0;
}

static int fake_cancel(void *ud, int64_t run_id, enum store_outcome as)
{
    struct fx *fx = ud;
    fx->cancels[fx->ncancels] = run_id;
    fx->cancel_as[fx->ncancels++] = (int)as;
    return 0;
}

static bool fake_reclaim(void *ud, const struct sched_job *job,
                         const struct store_run *r)
{
    struct fx *fx = ud;
    assert_int_equal(r->outcome, STORE_RUN_RUNNING);
    assert_non_null(job);
    assert_int_equal(job->run_id, r->id);
    assert_non_null(strstr(job->pipeline, "project_id"));
    fx->stale_pgid = r->pid;
    fx->stale_start = r->pid_start;
    return fx->adopt;
}

/* Events are kept as text in the shape of their wire form ("action",
 * "state", the run's "reason", the error), so tests look for fragments. */
static void on_event(void *ud, const struct sched_event *ev)
{
    static const char *const actions[] = {
        "run_started", "run_finished", "tick_skipped", "tick_missed",
        "state_changed", "removed"};
    struct fx *fx = ud;
    assert_true(fx->nevents < MAX_EVENTS);
    char text[512];
    int n = snprintf(text, sizeof text, "{\"action\":\"%s\",\"projectId\":\"%s\"",
                     actions[ev->kind], ev->project_id);
    if (ev->run && ev->run->reason)
        n += snprintf(text + n, sizeof text - (size_t)n, ",\"reason\":\"%s\"",
                      ev->run->reason);
    if (ev->kind == SCHED_EV_STATE_CHANGED)
        n += snprintf(text + n, sizeof text - (size_t)n,
                      ",\"state\":\"%s\",\"error\":\"%s\"",
                      store_state_name(ev->state), ev->error ? ev->error : "");
    snprintf(text + n, sizeof text - (size_t)n, "}");
    fx->events[fx->nevents++] = strdup(text);
}

static void events_clear(struct fx *fx)
{
    for (int i = 0; i < fx->nevents; i++)
        free(fx->events[i]);
    fx->nevents = 0;
}

static int has_event(struct fx *fx, const char *needle)
{
    int n = 0;
    for (int i = 0; i < fx->nevents; i++)
        if (strstr(fx->events[i], needle))
            n++;
    return n;
}

static void engine_start(struct fx *fx, double now)
{
    struct sched_config cfg;
    sched_config_defaults(&cfg);
    cfg.keep_runs = 1000;
    cfg.emit = on_event;
    cfg.emit_ud = fx;
    struct sched_exec ex = {fake_submit, fake_cancel, fake_reclaim, fx};
    fx->s = sched_new(fx->st, &cfg, &ex);
    assert_int_equal(sched_load(fx->s, now), 0);
}

static int setup(void **state)
{
    struct fx *fx = calloc(1, sizeof *fx);
    fx->f = fixture_new();
    fx->st = fx->f->s;
    fx->st2 = fixture_open(fx->f->path);
    struct store_key k;
    fixture_key(fx->st, "alice", STORE_PERM_ALL, 0, T0, fx->key, &k);
    memcpy(fx->key_id, k.id, sizeof fx->key_id);
    engine_start(fx, T0);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fx *fx = *state;
    events_clear(fx);
    sched_free(fx->s);
    store_close(fx->st2);
    fixture_free(fx->f);
    free(fx);
    return 0;
}

/* Add a deployment as the server does (sched_add). */
static void add(struct fx *fx, const char *pid, const char *schedule, double now)
{
    struct cronx *cx;
    struct err e = {0};
    assert_int_equal(sched_parse(fx->s, schedule, "alice", pid, NULL, 0, &cx, &e), 0);
    char pipe[128];
    snprintf(pipe, sizeof pipe, "{\"project_id\":\"%s\"}", pid);
    struct store_dep d = {0};
    d.user = "alice";
    d.project_id = (char *)pid;
    d.pipeline = pipe;
    d.schedule = (char *)schedule;
    d.created_by = "alice";
    d.owner_key_id = fx->key_id;
    int64_t next = sched_next_fire(cx, STORE_ACTIVE, 0, now);
    assert_int_equal(sched_add(fx->s, &d, cx, 0, now, &e), 0); /* takes cx */
    assert_true(d.next_run_at == (next == CRONX_NEVER ? 0 : (double)next));
}

/* Pause or resume as the server does (sched_update). */
static void set_state(struct fx *fx, const char *pid, enum store_state st,
                      double now)
{
    struct sched_change ch = {.set_state = true, .state = st};
    struct err e = {0};
    assert_int_equal(sched_update(fx->s, "alice", pid, &ch, now, &e), 0);
}

static void remove_dep(struct fx *fx, const char *pid, double now)
{
    struct err e = {0};
    assert_int_equal(sched_remove(fx->s, "alice", pid, now, &e), 0);
}

static void started(struct fx *fx, int64_t run_id, double at, int pgid,
                    uint64_t leader_start)
{
    struct sched_report r = {.kind = SCHED_RUN_STARTED, .run_id = run_id,
                             .at = at, .pgid = pgid,
                             .leader_start = leader_start};
    sched_run_report(fx->s, &r);
}

/* The run ended; the engine refused its owner's credential. */
static void refused(struct fx *fx, int64_t run_id, double at, const char *why)
{
    struct sched_report r = {.kind = SCHED_RUN_FINISHED, .run_id = run_id,
                             .at = at, .outcome = STORE_RUN_FAILED,
                             .exit_code = -1, .reason = why,
                             .owner_refused = why};
    sched_run_report(fx->s, &r);
}

static void finish(struct fx *fx, int64_t run_id, enum store_outcome o, double at)
{
    started(fx, run_id, at, 0, 0);
    struct sched_report r = {.kind = SCHED_RUN_FINISHED, .run_id = run_id,
                             .at = at, .outcome = o,
                             .exit_code = o == STORE_RUN_SUCCEEDED ? 0 : 1,
                             .output = "out\n", .output_len = 4, .started = true};
    sched_run_report(fx->s, &r);
}

struct count_ctx {
    int n[STORE_RUN_MISSED + 1];
    int64_t missed_count;
};

static int count_run(const struct store_run *r, void *ud)
{
    struct count_ctx *c = ud;
    c->n[r->outcome]++;
    if (r->outcome == STORE_RUN_MISSED)
        c->missed_count += r->missed_count;
    return 0;
}

static struct count_ctx ledger(struct fx *fx, const char *pid)
{
    struct count_ctx c = {{0}, 0};
    assert_int_equal(store_run_list(fx->st, "alice", pid, 0, count_run, &c), 0);
    return c;
}

/* ---------------------------------------------------------------- tests */

static void test_fires_in_order(void **state)
{
    struct fx *fx = *state;
    add(fx, "hourly", "0 * * * *", T0 + 1);
    add(fx, "minutely", "* * * * *", T0 + 1);
    add(fx, "manual", "manual", T0 + 1);
    assert_true(sched_next_deadline(fx->s) == (int64_t)T0 + 60);
    assert_int_equal(sched_tick(fx->s, T0 + 59.9, 0, 0), 0);
    assert_int_equal(sched_tick(fx->s, T0 + 60.01, 0, 0), 1);
    assert_int_equal(fx->njobs, 1);
    assert_string_equal(fx->job_trigger[0], "schedule");
    assert_string_equal(fx->job_when[0], "2026-01-01T00:01:00Z");
    finish(fx, fx->jobs[0], STORE_RUN_SUCCEEDED, T0 + 61);
    /* 00:59 .. 01:00: minutely fires 59 more times, hourly once */
    for (int m = 2; m <= 60; m++) {
        fx->njobs = 0;
        sched_tick(fx->s, T0 + 60.0 * m + 0.01, 0, 0);
        for (int i = 0; i < fx->njobs; i++)
            finish(fx, fx->jobs[i], STORE_RUN_SUCCEEDED, T0 + 60.0 * m + 1);
        events_clear(fx);
    }
    assert_int_equal(ledger(fx, "minutely").n[STORE_RUN_SUCCEEDED], 60);
    assert_int_equal(ledger(fx, "hourly").n[STORE_RUN_SUCCEEDED], 1);
    assert_int_equal(ledger(fx, "manual").n[STORE_RUN_SUCCEEDED], 0);
    struct store_dep d;
    assert_int_equal(store_dep_get(fx->st, "alice", "minutely", &d), 0);
    assert_true(d.last_fire_at == T0 + 3600);
    assert_true(d.next_run_at == T0 + 3660);
    store_dep_clear(&d);
}

static void test_overlap_skips(void **state)
{
    struct fx *fx = *state;
    add(fx, "p", "* * * * *", T0);
    sched_tick(fx->s, T0 + 60, 0, 0);
    assert_int_equal(fx->njobs, 1);
    started(fx, fx->jobs[0], T0 + 60.1, 0, 0);
    sched_tick(fx->s, T0 + 120, 0, 0);
    sched_tick(fx->s, T0 + 180, 0, 0);
    assert_int_equal(fx->njobs, 1); /* still running: no second process */
    struct count_ctx c = ledger(fx, "p");
    assert_int_equal(c.n[STORE_RUN_SKIPPED], 2);
    assert_int_equal(c.n[STORE_RUN_RUNNING], 1);
    assert_int_equal(has_event(fx, "\"action\":\"tick_skipped\""), 2);
    assert_int_equal(has_event(fx, "\"reason\":\"overlap\""), 2);
    finish(fx, fx->jobs[0], STORE_RUN_SUCCEEDED, T0 + 200);
    sched_tick(fx->s, T0 + 240, 0, 0);
    assert_int_equal(fx->njobs, 2);
}

static void test_pause_resume(void **state)
{
    struct fx *fx = *state;
    add(fx, "p", "*/5 * * * *", T0);
    set_state(fx, "p", STORE_PAUSED, T0 + 10);
    assert_true(sched_next_deadline(fx->s) == CRONX_NEVER);
    assert_int_equal(sched_tick(fx->s, T0 + 3600, 0, 0), 0);
    assert_int_equal(fx->njobs, 0);
    assert_int_equal(has_event(fx, "\"state\":\"paused\""), 1);
    set_state(fx, "p", STORE_ACTIVE, T0 + 3601);
    assert_true(sched_next_deadline(fx->s) == (int64_t)T0 + 3900);
    sched_tick(fx->s, T0 + 3900, 0, 0);
    assert_int_equal(fx->njobs, 1);
    /* paused and errored deployments refuse manual runs */
    finish(fx, fx->jobs[0], STORE_RUN_SUCCEEDED, T0 + 3901);
    set_state(fx, "p", STORE_PAUSED, T0 + 3902);
    struct store_run r;
    struct err e = {0};
    assert_int_equal(sched_run_now(fx->s, "alice", "p", NULL, T0 + 3903, &r, &e),
                     RR_E_BUSY);
    assert_string_equal(e.msg, "Deployment 'p' is paused");
}

static void test_clock_steps(void **state)
{
    struct fx *fx = *state;
    add(fx, "p", "* * * * *", T0);
    sched_tick(fx->s, T0 + 60, 0, 0);
    finish(fx, fx->jobs[0], STORE_RUN_SUCCEEDED, T0 + 60.5);
    /* Step back an hour: nothing fires until the clock passes 00:01 again. */
    for (double t = T0 - 3600; t <= T0 + 60; t += 30)
        sched_tick(fx->s, t, 0, 0);
    assert_int_equal(fx->njobs, 1);
    sched_tick(fx->s, T0 + 120, 0, 0);
    assert_int_equal(fx->njobs, 2);
    finish(fx, fx->jobs[1], STORE_RUN_SUCCEEDED, T0 + 121);
    /* Step forward 10 minutes: one run, one missed row for the 9 before. */
    sched_tick(fx->s, T0 + 720.5, 0, 0);
    assert_int_equal(fx->njobs, 3);
    assert_string_equal(fx->job_when[2], "2026-01-01T00:12:00Z");
    struct count_ctx c = ledger(fx, "p");
    assert_int_equal(c.n[STORE_RUN_MISSED], 1);
    assert_int_equal(c.missed_count, 9);
    assert_int_equal(c.n[STORE_RUN_SUCCEEDED], 2);
}

static void test_first_tick_after_add_catches_up_once(void **state)
{
    struct fx *fx = *state;
    /* Added at 00:00:30; the loop stalls until 00:05:10. */
    add(fx, "p", "* * * * *", T0 + 30);
    sched_tick(fx->s, T0 + 310, 0, 0);
    assert_int_equal(fx->njobs, 1);
    assert_string_equal(fx->job_when[0], "2026-01-01T00:05:00Z");
    struct count_ctx c = ledger(fx, "p");
    assert_int_equal(c.missed_count, 4);
}

static void test_restart_missed_and_interrupted(void **state)
{
    struct fx *fx = *state;
    add(fx, "p", "* * * * *", T0);
    add(fx, "q", "0 0 * * *", T0);
    sched_tick(fx->s, T0 + 60, 0, 0);
    started(fx, fx->jobs[0], T0 + 60.2, 4242, 77);
    /* The server dies (no finish); it comes back at 00:10:30. */
    sched_free(fx->s);
    fx->njobs = 0;
    engine_start(fx, T0 + 630);
    /* the run's process group is stopped before it is recorded interrupted */
    assert_int_equal(fx->stale_pgid, 4242);
    assert_true(fx->stale_start == 77);
    struct count_ctx c = ledger(fx, "p");
    assert_int_equal(c.n[STORE_RUN_INTERRUPTED], 1);
    assert_int_equal(c.n[STORE_RUN_MISSED], 1);
    assert_int_equal(c.missed_count, 9); /* 00:02 .. 00:10 */
    assert_int_equal(fx->njobs, 0);      /* not run late */
    assert_int_equal(ledger(fx, "q").n[STORE_RUN_MISSED], 0);
    /* The 00:01 tick never fires again; 00:11 does. */
    sched_tick(fx->s, T0 + 660, 0, 0);
    assert_int_equal(fx->njobs, 1);
    assert_string_equal(fx->job_when[0], "2026-01-01T00:11:00Z");
    /* A second restart at the same moment records nothing new. */
    sched_free(fx->s);
    engine_start(fx, T0 + 660.5);
    assert_int_equal(ledger(fx, "p").n[STORE_RUN_MISSED], 1);
}

static void test_revoked_owner_errors(void **state)
{
    struct fx *fx = *state;
    add(fx, "p", "* * * * *", T0);
    add(fx, "q", "@hourly", T0);
    assert_int_equal(store_key_revoke(fx->st, fx->key_id, T0 + 1, NULL), 0);
    sched_tick(fx->s, T0 + 60, 0, 0);
    assert_int_equal(fx->njobs, 0);
    struct store_dep d;
    assert_int_equal(store_dep_get(fx->st, "alice", "p", &d), 0);
    assert_int_equal(d.state, STORE_ERRORED);
    assert_non_null(strstr(d.error, "was revoked"));
    store_dep_clear(&d);
    assert_int_equal(has_event(fx, "\"state\":\"errored\""), 1);
    /* keys_changed errors the rest at once, and nothing fires ever again */
    assert_int_equal(sched_keys_changed(fx->s, T0 + 61), 1);
    for (int h = 1; h < 48; h++)
        sched_tick(fx->s, T0 + 3600.0 * h, 0, 0);
    assert_int_equal(fx->njobs, 0);
    assert_true(sched_next_deadline(fx->s) == CRONX_NEVER);
    struct store_run r;
    struct err e = {0};
    assert_int_equal(sched_run_now(fx->s, "alice", "q", NULL, T0, &r, &e), RR_E_BUSY);
    assert_non_null(strstr(e.msg, "is errored: owner key"));
}

/* Revoking a key errors every deployment it owns in one sweep (one write per
 * key, one transaction); other owners' deployments are untouched. */
static void test_revoked_key_sweep(void **state)
{
    struct fx *fx = *state;
    enum { N = 300 };
    for (int i = 0; i < N; i++) {
        char pid[16];
        snprintf(pid, sizeof pid, "d%03d", i);
        add(fx, pid, i % 2 ? "* * * * *" : "manual", T0);
    }
    char bob_key[STORE_KEY_TEXT_MAX];
    struct store_key bk;
    fixture_key(fx->st, "bob", STORE_PERM_ALL, 0, T0, bob_key, &bk);
    char alice_id[STORE_KEY_ID_MAX];
    memcpy(alice_id, fx->key_id, sizeof alice_id);
    memcpy(fx->key_id, bk.id, sizeof fx->key_id); /* add() as bob's key now */
    add(fx, "bobs", "* * * * *", T0);
    events_clear(fx);
    assert_int_equal(store_key_revoke(fx->st, alice_id, T0 + 1, NULL), 0);
    assert_int_equal(sched_keys_changed(fx->s, T0 + 2), N);
    assert_int_equal(has_event(fx, "\"state\":\"errored\""), N);
    assert_int_equal(fixture_sql_int(fx->f->path, "SELECT count(*) FROM deployments "
                                     "WHERE state = 'errored' AND error LIKE "
                                     "'%was revoked' AND next_run_at IS NULL"), N);
    uint64_t n[3];
    sched_count_states(fx->s, n);
    assert_int_equal(n[STORE_ERRORED], N);
    assert_int_equal(n[STORE_ACTIVE], 1);
    assert_true(sched_next_deadline(fx->s) == (int64_t)T0 + 60); /* only bob's */
    /* nothing left to do the second time */
    assert_int_equal(sched_keys_changed(fx->s, T0 + 3), 0);
}

static void test_monitor_only_owner_errors(void **state)
{
    struct fx *fx = *state;
    char key[STORE_KEY_TEXT_MAX];
    struct store_key k;
    assert_int_equal(store_key_create(fx->st, "alice", NULL, STORE_PERM_MONITOR, 0,
                                      T0, key, &k), 0);
    memcpy(fx->key_id, k.id, sizeof fx->key_id);
    add(fx, "p", "* * * * *", T0);
    sched_tick(fx->s, T0 + 60, 0, 0);
    assert_int_equal(fx->njobs, 0);
    assert_int_equal(has_event(fx, "lacks task.control"), 1);
}

static void test_manual_runs(void **state)
{
    struct fx *fx = *state;
    add(fx, "m", "manual", T0);
    struct store_run r1, r2;
    struct err e = {0};
    assert_int_equal(sched_run_now(fx->s, "alice", "m", "k1", T0 + 5, &r1, &e), 0);
    assert_int_equal(r1.outcome, STORE_RUN_QUEUED);
    assert_string_equal(r1.trigger, "manual");
    assert_int_equal(fx->njobs, 1);
    assert_string_equal(fx->job_when[0], "2026-01-01T00:00:05Z");
    /* a retry with the same key returns the same run, starts nothing */
    assert_int_equal(sched_run_now(fx->s, "alice", "m", "k1", T0 + 6, &r2, &e), 0);
    assert_true(r1.id == r2.id);
    assert_int_equal(fx->njobs, 1);
    store_run_clear(&r2);
    /* another run while one is going is refused */
    assert_int_equal(sched_run_now(fx->s, "alice", "m", NULL, T0 + 7, &r2, &e),
                     RR_E_BUSY);
    assert_string_equal(e.msg, "Deployment 'm' is already running");
    /* cancel goes to the executor as cancelled */
    assert_int_equal(sched_cancel(fx->s, "alice", "m", &e), 0);
    assert_int_equal(fx->ncancels, 1);
    assert_int_equal(fx->cancel_as[0], STORE_RUN_CANCELLED);
    finish(fx, r1.id, STORE_RUN_CANCELLED, T0 + 8);
    assert_int_equal(sched_cancel(fx->s, "alice", "m", &e), RR_E_BUSY);
    assert_string_equal(e.msg, "Deployment 'm' is not running");
    struct store_run got;
    assert_int_equal(store_run_get(fx->st, r1.id, &got), 0);
    assert_int_equal(got.outcome, STORE_RUN_CANCELLED);
    assert_int_equal((int)got.output_len, 4);
    store_run_clear(&got);
    store_run_clear(&r1);
    assert_int_equal(sched_run_now(fx->s, "alice", "nope", NULL, T0, &r1, &e),
                     RR_E_NOTFOUND);
    assert_int_equal(has_event(fx, "\"action\":\"run_started\""), 1);
    assert_int_equal(has_event(fx, "\"action\":\"run_finished\""), 1);
}

static void test_executor_refusal_recorded(void **state)
{
    struct fx *fx = *state;
    add(fx, "p", "* * * * *", T0);
    fx->refuse = 1;
    sched_tick(fx->s, T0 + 60, 0, 0);
    struct count_ctx c = ledger(fx, "p");
    assert_int_equal(c.n[STORE_RUN_FAILED], 1);
    fx->refuse = 0;
    sched_tick(fx->s, T0 + 120, 0, 0); /* not stuck as "running" */
    assert_int_equal(fx->njobs, 1);
}

static void test_remove_interrupts(void **state)
{
    struct fx *fx = *state;
    add(fx, "p", "* * * * *", T0);
    sched_tick(fx->s, T0 + 60, 0, 0);
    remove_dep(fx, "p", T0);
    assert_int_equal(fx->ncancels, 1);
    assert_int_equal(fx->cancel_as[0], STORE_RUN_INTERRUPTED);
    assert_true(sched_next_deadline(fx->s) == CRONX_NEVER);
    finish(fx, fx->jobs[0], STORE_RUN_INTERRUPTED, T0 + 61); /* late: ignored */
    assert_int_equal(has_event(fx, "\"action\":\"removed\""), 1);
}

#ifdef RRDEPLOY_TEST_HOOKS
/* A batch that fails to commit: the adds, updates and removals the engine
 * was told about are undone by reading those deployments back. */
static void test_failed_batch_resyncs(void **state)
{
    struct fx *fx = *state;
    add(fx, "kept", "* * * * *", T0);
    add(fx, "gone", "*/5 * * * *", T0);
    uint64_t n[3];

    /* a batch that commits: its events go out at sched_defer_end */
    events_clear(fx);
    assert_int_equal(store_batch_begin(fx->st), 0);
    sched_defer_begin(fx->s);
    set_state(fx, "kept", STORE_PAUSED, T0);
    assert_int_equal(fx->nevents, 0);
    assert_int_equal(store_batch_commit(fx->st), 0);
    sched_defer_end(fx->s, T0, true);
    assert_int_equal(has_event(fx, "\"state\":\"paused\""), 1);
    set_state(fx, "kept", STORE_ACTIVE, T0);
    events_clear(fx);

    assert_int_equal(store_batch_begin(fx->st), 0);
    sched_defer_begin(fx->s);
    add(fx, "ghost", "* * * * *", T0);                /* rolled back below */
    set_state(fx, "kept", STORE_PAUSED, T0);
    remove_dep(fx, "gone", T0);
    sched_count_states(fx->s, n);
    assert_int_equal(n[STORE_ACTIVE], 1);
    assert_int_equal(n[STORE_PAUSED], 1);
    store_test_fail_commits(fx->st, 1);
    assert_int_equal(store_batch_commit(fx->st), RR_E_IO);
    sched_defer_end(fx->s, T0, false);
    assert_int_equal(fx->nevents, 0); /* watchers never hear of it */

    size_t scheduled = 0;
    assert_int_equal(sched_count(fx->s, &scheduled), 2); /* kept, gone */
    sched_count_states(fx->s, n);
    assert_int_equal(n[STORE_ACTIVE], 2);
    assert_int_equal(n[STORE_PAUSED], 0);
    /* at 00:05 both fire; the ghost, which the store never kept, does not */
    assert_int_equal(sched_tick(fx->s, T0 + 300, 0, 0), 2);
    assert_int_equal(fx->njobs, 2);
    assert_int_equal(ledger(fx, "kept").n[STORE_RUN_QUEUED], 1);
    assert_int_equal(ledger(fx, "gone").n[STORE_RUN_QUEUED], 1);
    assert_int_equal(ledger(fx, "ghost").n[STORE_RUN_QUEUED], 0);
}

/* A tick whose commit fails: its decisions were rolled back, so watchers
 * hear nothing of them; the events of a tick that commits go out after it. */
static void test_failed_tick_sends_nothing(void **state)
{
    struct fx *fx = *state;
    add(fx, "p", "* * * * *", T0);
    sched_tick(fx->s, T0 + 60, 0, 0);
    assert_int_equal(fx->njobs, 1);
    started(fx, fx->jobs[0], T0 + 60.1, 0, 0);
    events_clear(fx);
    store_test_fail_commits(fx->st, 1);
    sched_tick(fx->s, T0 + 120, 0, 0); /* an overlap skip, rolled back */
    assert_int_equal(fx->nevents, 0);
    assert_int_equal(ledger(fx, "p").n[STORE_RUN_SKIPPED], 0);
    sched_tick(fx->s, T0 + 180, 0, 0);
    assert_int_equal(has_event(fx, "\"action\":\"tick_skipped\""), 1);
    assert_int_equal(ledger(fx, "p").n[STORE_RUN_SKIPPED], 1);
}
#endif

/* The last job was handed the credential c (n bytes), or none (c NULL). */
static void assert_job_credential(struct fx *fx, const void *c, size_t n)
{
    if (!c) {
        assert_true(fx->last_cred_none);
        return;
    }
    assert_false(fx->last_cred_none);
    assert_int_equal(fx->last_cred_len, n);
    assert_memory_equal(fx->last_cred, c, n);
}

/* A deployment's sealed credential goes with each of its runs to the
 * executor, on every path a run starts by: a manual run, a tick, a run
 * decided ahead, one resumed after a restart; as added, updated or
 * cleared. */
static void test_credential_reaches_the_job(void **state)
{
    struct fx *fx = *state;
    static const unsigned char a[] = {'s', 0, 'A', 0xff}, b[] = "sealed B";
    struct cronx *cx;
    struct err e = {0};
    assert_int_equal(sched_parse(fx->s, "* * * * *", "u", "p", NULL, 0, &cx, &e), 0);
    struct store_dep d = {0};
    d.user = "alice";
    d.project_id = "c";
    d.pipeline = "{\"project_id\":\"c\"}";
    d.schedule = "* * * * *";
    d.created_by = "alice";
    d.owner_key_id = fx->key_id;
    d.credential = (unsigned char *)a;
    d.credential_len = sizeof a;
    assert_int_equal(sched_add(fx->s, &d, cx, 0, T0, &e), 0);
    add(fx, "none", "manual", T0);

    struct store_run r;
    assert_int_equal(sched_run_now(fx->s, "alice", "c", NULL, T0 + 5, &r, &e), 0);
    assert_job_credential(fx, a, sizeof a);
    finish(fx, r.id, STORE_RUN_SUCCEEDED, T0 + 6);
    store_run_clear(&r);
    assert_int_equal(sched_run_now(fx->s, "alice", "none", NULL, T0 + 7, &r, &e), 0);
    assert_job_credential(fx, NULL, 0);
    store_run_clear(&r);

    /* Replaced: the next tick's run carries the new one. */
    struct sched_change ch = {.set_credential = true, .credential = b,
                              .credential_len = sizeof b};
    assert_int_equal(sched_update(fx->s, "alice", "c", &ch, T0 + 10, &e), 0);
    fx->njobs = 0;
    assert_int_equal(sched_tick(fx->s, T0 + 60, 0, 0), 1);
    assert_int_equal(fx->njobs, 1);
    assert_job_credential(fx, b, sizeof b);
    finish(fx, fx->jobs[0], STORE_RUN_SUCCEEDED, T0 + 61);

    /* Decided ahead, the server restarts, the run resumes: still there. */
    fx->njobs = 0;
    assert_int_equal(sched_tick(fx->s, T0 + 119.5, 1.0, 0), 1);
    assert_int_equal(fx->njobs, 0);
    sched_free(fx->s);
    engine_start(fx, T0 + 119.6);
    assert_int_equal(sched_release(fx->s, T0 + 120), 1);
    assert_int_equal(fx->njobs, 1);
    assert_job_credential(fx, b, sizeof b);
    finish(fx, fx->jobs[0], STORE_RUN_SUCCEEDED, T0 + 121);

    /* Cleared: runs have none again; a change without set_credential
     * leaves it as it is. */
    ch = (struct sched_change){.set_credential = true};
    assert_int_equal(sched_update(fx->s, "alice", "c", &ch, T0 + 130, &e), 0);
    ch = (struct sched_change){.set_state = true, .state = STORE_ACTIVE};
    assert_int_equal(sched_update(fx->s, "alice", "c", &ch, T0 + 131, &e), 0);
    assert_int_equal(sched_run_now(fx->s, "alice", "c", NULL, T0 + 132, &r, &e), 0);
    assert_job_credential(fx, NULL, 0);
    store_run_clear(&r);
}

/* Deciding ahead: rows committed before the due second, runs started at it. */
static void test_decides_ahead(void **state)
{
    struct fx *fx = *state;
    add(fx, "a", "* * * * *", T0);
    add(fx, "b", "* * * * *", T0);
    add(fx, "c", "* * * * *", T0);
    sched_tick(fx->s, T0 + 60, 0, 0);            /* 00:01: a, b, c run */
    assert_int_equal(fx->njobs, 3);
    finish(fx, fx->jobs[0], STORE_RUN_SUCCEEDED, T0 + 61); /* a done */
    finish(fx, fx->jobs[1], STORE_RUN_SUCCEEDED, T0 + 61); /* b done */
    /* 0.6 s before 00:02 with a 1 s lead: a and b are decided, c (still
     * running) is left for its time. Nothing starts yet. */
    fx->njobs = 0;
    assert_int_equal(sched_tick(fx->s, T0 + 119.4, 1.0, 0), 2);
    assert_int_equal(fx->njobs, 0);
    assert_true(sched_next_release(fx->s) == T0 + 120);
    assert_true(sched_next_deadline(fx->s) == (int64_t)T0 + 120); /* c */
    struct count_ctx ca = ledger(fx, "a");
    assert_int_equal(ca.n[STORE_RUN_QUEUED], 1); /* committed ahead */
    /* b is paused in the meantime: its decided run does not start */
    set_state(fx, "b", STORE_PAUSED, T0 + 119.5);
    assert_int_equal(sched_release(fx->s, T0 + 119.9), 0);
    assert_int_equal(sched_release(fx->s, T0 + 120.0), 1);
    assert_int_equal(fx->njobs, 1);
    assert_string_equal(fx->job_when[0], "2026-01-01T00:02:00Z");
    struct count_ctx cb = ledger(fx, "b");
    assert_int_equal(cb.n[STORE_RUN_CANCELLED], 1);
    assert_true(sched_next_release(fx->s) == 0);
    /* c's tick at its time: still running, so skipped */
    sched_tick(fx->s, T0 + 120, 1.0, 0);
    assert_int_equal(ledger(fx, "c").n[STORE_RUN_SKIPPED], 1);
    /* a removed while a run is held: nothing starts, nothing dangles */
    finish(fx, fx->jobs[0], STORE_RUN_SUCCEEDED, T0 + 121);
    fx->njobs = 0;
    assert_int_equal(sched_tick(fx->s, T0 + 179.5, 1.0, 0), 1);
    remove_dep(fx, "a", T0);
    assert_int_equal(sched_release(fx->s, T0 + 180), 0);
    assert_int_equal(fx->njobs, 0);
}

/* A burst too large for the lead is decided as far ahead as it needs (here:
 * 100 deployments at an assumed 20 ms each, 0.25 + 1.5 * 2 s = 3.25 s), its
 * runs held until their second; and never more than SCHED_TICK_LEAD_MAX
 * ahead. */
static void test_burst_decided_further_ahead(void **state)
{
    struct fx *fx = *state;
    sched_free(fx->s);
    struct sched_config cfg;
    sched_config_defaults(&cfg);
    cfg.decision_cost_s = 0.02;
    struct sched_exec ex = {fake_submit, fake_cancel, fake_reclaim, fx};
    fx->s = sched_new(fx->st, &cfg, &ex);
    assert_int_equal(sched_load(fx->s, T0), 0);
    char pid[16];
    for (int i = 0; i < 100; i++) {
        snprintf(pid, sizeof pid, "b%03d", i);
        add(fx, pid, "* * * * *", T0);
    }
    add(fx, "lone", "30 * * * *", T0);
    /* 00:01: 100 due; a 1 s lead is not enough */
    assert_true(sched_next_wake(fx->s, T0 + 10, 1.0) == T0 + 60 - 3.25);
    assert_int_equal(sched_tick(fx->s, T0 + 50, 1.0, 0), 0);
    assert_int_equal(sched_tick(fx->s, T0 + 56.75, 1.0, 0), 100);
    assert_int_equal(fx->njobs, 0);
    assert_int_equal(ledger(fx, "b000").n[STORE_RUN_QUEUED], 1);
    /* decided: nothing more until the runs' second */
    assert_true(sched_next_wake(fx->s, T0 + 56.8, 1.0) == T0 + 60);
    assert_int_equal(sched_tick(fx->s, T0 + 57, 1.0, 0), 0);
    assert_int_equal(sched_release(fx->s, T0 + 59.99), 0);
    assert_int_equal(sched_release(fx->s, T0 + 60), 100);
    assert_int_equal(fx->njobs, 100);
    for (int i = 0; i < fx->njobs; i++)
        finish(fx, fx->jobs[i], STORE_RUN_SUCCEEDED, T0 + 61);
    fx->njobs = 0;
    /* 00:02: the same 100 again */
    assert_true(sched_next_wake(fx->s, T0 + 61, 1.0) == T0 + 120 - 3.25);
    /* a cost so high that the lead is bounded */
    sched_free(fx->s);
    cfg.decision_cost_s = 10;
    fx->s = sched_new(fx->st, &cfg, &ex);
    assert_int_equal(sched_load(fx->s, T0 + 61), 0);
    assert_true(sched_next_wake(fx->s, T0 + 61, 1.0) ==
                T0 + 120 - SCHED_TICK_LEAD_MAX);
    assert_true(sched_next_wake(fx->s, T0 + 100, 1.0) == T0 + 100);
    assert_int_equal(sched_tick(fx->s, T0 + 100, 1.0, 0), 100);
    assert_int_equal(sched_release(fx->s, T0 + 120), 100);
}

/* Ticks leave pruning for later: the ledger grows past keep_runs until
 * sched_prune, which keeps the newest rows, and waits while a tick is due
 * within the lead. */
static void test_prune_between_ticks(void **state)
{
    struct fx *fx = *state;
    sched_free(fx->s);
    struct sched_config cfg;
    sched_config_defaults(&cfg);
    cfg.keep_runs = 2;
    struct sched_exec ex = {fake_submit, fake_cancel, fake_reclaim, fx};
    fx->s = sched_new(fx->st, &cfg, &ex);
    assert_int_equal(sched_load(fx->s, T0), 0);
    add(fx, "p", "* * * * *", T0);
    add(fx, "q", "0 * * * *", T0);
    for (int m = 1; m <= 5; m++) {
        assert_int_equal(sched_tick(fx->s, T0 + 60.0 * m, 0, 0), 1);
        finish(fx, fx->jobs[--fx->njobs], STORE_RUN_SUCCEEDED, T0 + 60.0 * m + 1);
    }
    struct count_ctx c = ledger(fx, "p");
    assert_int_equal(c.n[STORE_RUN_SUCCEEDED], 5);
    /* 00:05:59.5: the next tick is due within the lead */
    assert_int_equal(sched_prune(fx->s, T0 + 359.5, 0), 1);
    assert_int_equal(ledger(fx, "p").n[STORE_RUN_SUCCEEDED], 5);
    assert_int_equal(sched_prune(fx->s, T0 + 310, 0), 0);
    assert_int_equal(ledger(fx, "p").n[STORE_RUN_SUCCEEDED], 2);
    assert_int_equal(sched_prune(fx->s, T0 + 310, 0), 0);
    /* a deployment removed while queued leaves nothing behind */
    assert_int_equal(sched_tick(fx->s, T0 + 360, 0, 0), 1);
    finish(fx, fx->jobs[--fx->njobs], STORE_RUN_SUCCEEDED, T0 + 361);
    remove_dep(fx, "p", T0 + 362);
    assert_int_equal(sched_prune(fx->s, T0 + 370, 0), 0);
}

/* A run decided ahead and never started survives a crash: after a restart
 * before its second it is held again and starts on time, as one row. */
static void test_restart_holds_decided_run(void **state)
{
    struct fx *fx = *state;
    add(fx, "p", "* * * * *", T0);
    assert_int_equal(sched_tick(fx->s, T0 + 59.5, 1.0, 0), 1);
    assert_int_equal(fx->njobs, 0); /* held for 00:01 */
    sched_free(fx->s);              /* the server dies */
    engine_start(fx, T0 + 59.6);
    assert_int_equal(fx->njobs, 0);
    assert_true(sched_next_release(fx->s) == T0 + 60);
    assert_true(sched_next_deadline(fx->s) == (int64_t)T0 + 120);
    assert_int_equal(sched_release(fx->s, T0 + 60), 1);
    assert_int_equal(fx->njobs, 1);
    assert_string_equal(fx->job_when[0], "2026-01-01T00:01:00Z");
    finish(fx, fx->jobs[0], STORE_RUN_SUCCEEDED, T0 + 61);
    struct count_ctx c = ledger(fx, "p");
    assert_int_equal(c.n[STORE_RUN_SUCCEEDED], 1);
    assert_int_equal(c.n[STORE_RUN_INTERRUPTED] + c.n[STORE_RUN_MISSED], 0);
    /* restarted a few seconds after its time, it starts at once */
    fx->njobs = 0;
    assert_int_equal(sched_tick(fx->s, T0 + 119.5, 1.0, 0), 1);
    sched_free(fx->s);
    engine_start(fx, T0 + 125);
    assert_int_equal(fx->njobs, 1);
    assert_string_equal(fx->job_when[0], "2026-01-01T00:02:00Z");
}

/* Past the starting deadline the decided run is recorded missed, once, and
 * the tick that fell due meanwhile is a missed row of its own. */
static void test_restart_misses_decided_run_past_deadline(void **state)
{
    struct fx *fx = *state;
    add(fx, "p", "* * * * *", T0);
    assert_int_equal(sched_tick(fx->s, T0 + 59.5, 1.0, 0), 1);
    sched_free(fx->s);
    engine_start(fx, T0 + 130); /* 70 s late, the deadline is 60 s */
    assert_int_equal(fx->njobs, 0);
    assert_true(sched_next_release(fx->s) == 0);
    struct count_ctx c = ledger(fx, "p");
    assert_int_equal(c.n[STORE_RUN_MISSED], 2);
    assert_int_equal(c.missed_count, 2); /* 00:01 and 00:02, once each */
    assert_int_equal(c.n[STORE_RUN_INTERRUPTED], 0);
    assert_true(sched_next_deadline(fx->s) == (int64_t)T0 + 180);
}

/* The server dies between a tick's ledger rows and its progress columns:
 * after a restart, the missed window starts after what the ledger decided. */
static void test_crash_between_tick_commits_counts_once(void **state)
{
    struct fx *fx = *state;
    add(fx, "p", "* * * * *", T0);
    sched_tick(fx->s, T0 + 60, 0, 0);
    assert_int_equal(fx->njobs, 1);
    finish(fx, fx->jobs[0], STORE_RUN_SUCCEEDED, T0 + 61);
    /* as if the progress commit had been lost */
    assert_int_equal(store_dep_set_progress(fx->st, "alice", "p", 0, T0 + 60), 0);
    sched_free(fx->s);
    fx->njobs = 0;
    engine_start(fx, T0 + 200); /* 00:03:20 */
    struct count_ctx c = ledger(fx, "p");
    assert_int_equal(c.n[STORE_RUN_SUCCEEDED], 1);
    assert_int_equal(c.n[STORE_RUN_MISSED], 1);
    assert_int_equal(c.missed_count, 2); /* 00:02 and 00:03, not 00:01 */
    assert_int_equal(fx->njobs, 0);
}

/* The heap against a sorted model: random inserts, moves and removals. */
static void test_heap_order(void **state)
{
    struct fx *fx = *state;
    enum { N = 1000 };
    static const char *const sched_pool[] = {
        "*/30 * * * *", "*/7 * * * *", "0 * * * *", "15 3 * * *", "0 0 1 * *",
        "30 2 * * 1-5", "@daily", "@weekly", "5,10 */2 * * *", "0 12 29 2 *",
    };
    char pid[32];
    srand(7);
    for (int i = 0; i < N; i++) {
        snprintf(pid, sizeof pid, "d%04d", i);
        add(fx, pid, sched_pool[rand() % 10], T0);
    }
    for (int i = 0; i < N / 4; i++) {
        snprintf(pid, sizeof pid, "d%04d", rand() % N);
        struct store_dep probe;
        if (store_dep_get(fx->st, "alice", pid, &probe) != 0)
            continue; /* removed earlier */
        store_dep_clear(&probe);
        if (rand() % 2) {
            set_state(fx, pid, STORE_PAUSED, T0);
        } else {
            remove_dep(fx, pid, T0);
        }
        events_clear(fx);
    }
    size_t scheduled;
    size_t total = sched_count(fx->s, &scheduled);
    assert_true(total <= N && scheduled <= total);
    /* Pop everything due in the next six hours in order. */
    int64_t prev = INT64_MIN;
    double now = T0;
    int fired = 0;
    while (now < T0 + 6 * 3600) {
        int64_t due = sched_next_deadline(fx->s);
        assert_true(due != CRONX_NEVER && due >= prev);
        prev = due;
        now = (double)due;
        events_clear(fx);
        fired += sched_tick(fx->s, now, 0, 0);
        while (fx->njobs) {
            int64_t id = fx->jobs[--fx->njobs];
            finish(fx, id, STORE_RUN_SUCCEEDED, now);
        }
        events_clear(fx);
    }
    assert_true(fired > 500);
}

/* A run on an engine outlives the server: after a restart the executor
 * adopts it, the row stays running, no new run of it starts while it goes
 * on, and its end is recorded as any other; the task record of its start is
 * kept. */
static void test_restart_adopts_running_run(void **state)
{
    struct fx *fx = *state;
    add(fx, "p", "* * * * *", T0);
    sched_tick(fx->s, T0 + 60, 0, 0);
    struct sched_report st = {.kind = SCHED_RUN_STARTED, .run_id = fx->jobs[0],
                              .at = T0 + 60.2, .task = "{\"token\":\"tk_1\"}"};
    sched_run_report(fx->s, &st);
    int64_t id = fx->jobs[0];
    sched_free(fx->s);
    fx->njobs = 0;
    fx->adopt = true;
    engine_start(fx, T0 + 90);
    struct store_run r;
    assert_int_equal(store_run_get(fx->st, id, &r), 0);
    assert_int_equal(r.outcome, STORE_RUN_RUNNING);
    assert_string_equal(r.task, "{\"token\":\"tk_1\"}");
    store_run_clear(&r);
    /* still running at 00:02: that tick is skipped, not run */
    sched_tick(fx->s, T0 + 120, 0, 0);
    assert_int_equal(fx->njobs, 0);
    assert_int_equal(ledger(fx, "p").n[STORE_RUN_SKIPPED], 1);
    finish(fx, id, STORE_RUN_SUCCEEDED, T0 + 130);
    assert_int_equal(ledger(fx, "p").n[STORE_RUN_SUCCEEDED], 1);
    sched_tick(fx->s, T0 + 180, 0, 0);
    assert_int_equal(fx->njobs, 1);
}

/* The engine refused the owner's credential at a run: the run fails, the
 * deployment is errored with the engine's words and never fires again. */
static void test_engine_refusal_errors_the_deployment(void **state)
{
    struct fx *fx = *state;
    add(fx, "p", "* * * * *", T0);
    sched_tick(fx->s, T0 + 60, 0, 0);
    assert_int_equal(fx->njobs, 1);
    refused(fx, fx->jobs[0], T0 + 61, "the engine refused the owner's credential: API key revoked");
    enum store_state stt;
    assert_int_equal(sched_lookup(fx->s, "alice", "p", &stt), 0);
    assert_int_equal(stt, STORE_ERRORED);
    assert_int_equal(has_event(fx, "\"state\":\"errored\""), 1);
    assert_int_equal(has_event(fx, "API key revoked"), 2); /* the run and the state */
    struct store_dep d;
    assert_int_equal(store_dep_get(fx->st, "alice", "p", &d), 0);
    assert_non_null(strstr(d.error, "API key revoked"));
    store_dep_clear(&d);
    for (double t = T0 + 120; t <= T0 + 600; t += 60)
        sched_tick(fx->s, t, 0, 0);
    assert_int_equal(fx->njobs, 1);
}

/* Parsed schedules are shared between deployments with the same text, but
 * not those with H: each draws its values from its own identity, and keeps
 * them through a restart (which loads from the shared table). */
static void test_hashed_schedules_are_not_shared(void **state)
{
    struct fx *fx = *state;
    static const char *const pids[] = {"h1", "h2", "h3", "h4", "h5", "h6"};
    int64_t want[6];
    for (int i = 0; i < 6; i++) {
        struct cronx *cx;
        struct err e = {0};
        assert_int_equal(sched_parse(fx->s, "H * * * *", "alice", pids[i], NULL, 0,
                                     &cx, &e), 0);
        want[i] = sched_next_fire(cx, STORE_ACTIVE, 0, T0);
        cronx_free(cx);
        add(fx, pids[i], "H * * * *", T0);
    }
    bool differ = false;
    for (int i = 1; i < 6; i++)
        differ |= want[i] != want[0];
    assert_true(differ); /* six ids, one minute each: not all the same */
    sched_free(fx->s);
    engine_start(fx, T0);
    for (int i = 0; i < 6; i++) {
        struct store_dep d;
        assert_int_equal(store_dep_get(fx->st, "alice", pids[i], &d), 0);
        assert_true(d.next_run_at == (double)want[i]);
        store_dep_clear(&d);
    }
    int64_t first = want[0];
    for (int i = 1; i < 6; i++)
        first = want[i] < first ? want[i] : first;
    sched_tick(fx->s, (double)first, 0, 0);
    int due = 0;
    for (int i = 0; i < 6; i++)
        due += want[i] == first;
    assert_int_equal(fx->njobs, due); /* only those H put at that minute */
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_fires_in_order),
        T(test_overlap_skips),
        T(test_pause_resume),
        T(test_clock_steps),
        T(test_first_tick_after_add_catches_up_once),
        T(test_restart_missed_and_interrupted),
        T(test_revoked_owner_errors),
        T(test_revoked_key_sweep),
        T(test_monitor_only_owner_errors),
        T(test_manual_runs),
        T(test_executor_refusal_recorded),
        T(test_remove_interrupts),
#ifdef RRDEPLOY_TEST_HOOKS
        T(test_failed_batch_resyncs),
        T(test_failed_tick_sends_nothing),
#endif
        T(test_decides_ahead),
        T(test_burst_decided_further_ahead),
        T(test_prune_between_ticks),
        T(test_restart_holds_decided_run),
        T(test_restart_misses_decided_run_past_deadline),
        T(test_crash_between_tick_commits_counts_once),
        T(test_heap_order),
        T(test_credential_reaches_the_job),
        T(test_restart_adopts_running_run),
        T(test_engine_refusal_errors_the_deployment),
        T(test_hashed_schedules_are_not_shared),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
