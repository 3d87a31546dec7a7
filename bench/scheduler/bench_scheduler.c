/* bench_scheduler.c -- the tick engine at 100,000 deployments, or (--million)
 * at 1,000,000.
 *
 * Purpose: print, in one run, the numbers the scheduler has targets for:
 * start-up load time (<= 2 s), engine memory per deployment (<= 300 B), and
 * fire lateness on the decision path (p99 <= 100 ms) with 10,000 (100,000)
 * deployments due in the same second, with fresh and with full ledgers; plus
 * real processes through the exec executor and an fsync baseline. Prints
 * numbers and PASS/MISS per target; not a test.
 *
 * Design:
 *  - Setup: a temp database with N deployments (default 100,000), one owner
 *    key, a fixed seeded mix of schedules, inserted in batches of 1,000.
 *    Engine time is simulated from 2030-01-15 02:50:00 UTC (January: no DST in
 *    the zones used). Every burst instant D_g = 03:00 + 5 g minutes is due
 *    for exactly B (default 10,000) deployments: B/10 "* * * * *", B/5
 *    "* /5 * * *" and B - 3B/10 of burst group g, written as "m 3 * * *",
 *    "CRON_TZ=Europe/Berlin m 4 * * *" or "CRON_TZ=America/New_York m 22 * * *"
 *    (the same UTC instant). Every other timed schedule uses a minute that is
 *    not a multiple of 5, so it never lands on a burst instant. Groups: K
 *    lateness runs, one profiled run, one real-process run.
 *  - Load and memory: each load runs in a fresh process (this binary,
 *    re-executed with --load-child), so the heap holds nothing else: heap
 *    growth = mallinfo2 uordblks + hblkhd after sched_load minus before
 *    sched_new; SQLite's share = sqlite3_memory_used() growth (page cache,
 *    schema, statements); engine = heap growth - SQLite's share.
 *  - Lateness: the engine's clock is the real clock plus an offset chosen so
 *    that the burst instant D maps to a whole real second R. The bench asks
 *    sched_next_wake when the tick is due (as the daemon arms its timer),
 *    sleeps with clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME) until then,
 *    calls sched_tick(D + (now - R)), and sched_release at R. The bench's
 *    executor records CLOCK_REALTIME
 *    when each job reaches submit and returns 0; lateness = that - R. Runs are
 *    reported started/finished afterwards, outside the measurement. Between
 *    bursts the simulated clock is stepped through every deadline at once.
 *  - Where the time goes: the bench links with -Wl,--wrap for the store and
 *    cron calls the engine makes (and only times them during the profiled
 *    run), so the product code carries no instrumentation.
 *  - Real processes: the same burst through exec_new("/bin/true",
 *    max_runs 64), wrapped by the bench's executor; on each wake-up the bench
 *    calls executor_record, as the daemon does (all pending reports in one
 *    transaction).
 *
 * Thread: single-threaded, except the executor's supervisor thread (which only
 * calls bench_wake). */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench/common/bench_util.h"
#include "runner/executor.h"
#include "scheduler/scheduler.h"
#include "store/store.h"

#define INSERT_BATCH 1000
#define LOAD_RUNS 5
#define FSYNC_SAMPLES 200
#define UNBATCHED_INSERTS 1000
#define REAL_TIMEOUT_S 900.0

/* ================================================================ clocks */

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double real_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Sleep until the wall clock reads `at` (whole seconds). */
static void sleep_until_real(double at)
{
    struct timespec ts = {.tv_sec = (time_t)at, .tv_nsec = 0};
    while (clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

/* ================================================================ helpers */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull; /* fixed seed: same mix every run */

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static unsigned rnd_below(unsigned n)
{
    return (unsigned)(rnd() % n);
}

/* Nearest-rank percentile of v[0..n) (sorts v). */
static double pct(double *v, size_t n, double p)
{
    if (n == 0)
        return NAN;
    qsort(v, n, sizeof *v, bench_cmp_double);
    size_t k = (size_t)ceil(p * (double)n);
    return v[k ? k - 1 : 0];
}

static void die(const char *what, int rc, const struct err *e)
{
    fprintf(stderr, "bench_scheduler: %s: %s%s%s\n", what, err_str(rc),
            e && e->msg[0] ? ": " : "", e && e->msg[0] ? e->msg : "");
    exit(1);
}

static int64_t utc(int y, int mo, int d, int h, int mi)
{
    struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d,
                    .tm_hour = h, .tm_min = mi};
    return (int64_t)timegm(&tm);
}

static const char *verdict(bool ok)
{
    return ok ? "PASS" : "MISS";
}

/* ================================================================ profiling
 *
 * -Wl,--wrap=<fn> sends the engine's calls to __wrap_<fn>; these time the
 * call while `prof_on` is set and pass through otherwise. */

enum prof_id {
    P_KEY_GET, P_DEP_GET, P_RUN_INSERT, P_SET_PROGRESS, P_RUN_GET,
    P_BATCH_BEGIN, P_BATCH_COMMIT, P_CRONX_NEXT, P__COUNT
};
static const char *const prof_name[P__COUNT] = {
    [P_KEY_GET] = "store_key_get (owner check)",
    [P_DEP_GET] = "store_dep_get (row + pipeline)",
    [P_RUN_INSERT] = "store_run_insert (+prune)",
    [P_SET_PROGRESS] = "store_dep_set_progress",
    [P_RUN_GET] = "store_run_get",
    [P_BATCH_BEGIN] = "store_batch_begin",
    [P_BATCH_COMMIT] = "store_batch_commit (fsync)",
    [P_CRONX_NEXT] = "cronx_next",
};
static bool prof_on;
static bool no_batch;   /* store_batch_begin refuses: the engine's unbatched path */
static double prof_sum[P__COUNT];
static uint64_t prof_calls[P__COUNT];
static double prof_commit_start, prof_commit_end;

#define PROF_CALL(id, expr)                                                    \
    do {                                                                       \
        if (!prof_on) {                                                        \
            expr;                                                              \
            break;                                                             \
        }                                                                      \
        double t0_ = mono_now();                                               \
        expr;                                                                  \
        prof_sum[id] += mono_now() - t0_;                                      \
        prof_calls[id]++;                                                      \
    } while (0)

int __real_store_key_get(struct store *s, const char *id, struct store_key *out);
int __wrap_store_key_get(struct store *s, const char *id, struct store_key *out);
int __real_store_dep_get(struct store *s, const char *user, const char *project_id,
                         struct store_dep *out);
int __wrap_store_dep_get(struct store *s, const char *user, const char *project_id,
                         struct store_dep *out);
int __real_store_run_insert(struct store *s, const struct store_run *r, int64_t keep,
                            int64_t *id_out);
int __wrap_store_run_insert(struct store *s, const struct store_run *r, int64_t keep,
                            int64_t *id_out);
int __real_store_dep_set_progress(struct store *s, const char *user,
                                  const char *project_id, double last_fire_at,
                                  double next_run_at);
int __wrap_store_dep_set_progress(struct store *s, const char *user,
                                  const char *project_id, double last_fire_at,
                                  double next_run_at);
int __real_store_run_get(struct store *s, int64_t id, struct store_run *out);
int __wrap_store_run_get(struct store *s, int64_t id, struct store_run *out);
int __real_store_batch_begin(struct store *s);
int __wrap_store_batch_begin(struct store *s);
int __real_store_batch_commit(struct store *s);
int __wrap_store_batch_commit(struct store *s);
int64_t __real_cronx_next(const struct cronx *c, int64_t after);
int64_t __wrap_cronx_next(const struct cronx *c, int64_t after);

int __wrap_store_key_get(struct store *s, const char *id, struct store_key *out)
{
    int rc;
    PROF_CALL(P_KEY_GET, rc = __real_store_key_get(s, id, out));
    return rc;
}

int __wrap_store_dep_get(struct store *s, const char *user, const char *project_id,
                         struct store_dep *out)
{
    int rc;
    PROF_CALL(P_DEP_GET, rc = __real_store_dep_get(s, user, project_id, out));
    return rc;
}

int __wrap_store_run_insert(struct store *s, const struct store_run *r, int64_t keep,
                            int64_t *id_out)
{
    int rc;
    PROF_CALL(P_RUN_INSERT, rc = __real_store_run_insert(s, r, keep, id_out));
    return rc;
}

int __wrap_store_dep_set_progress(struct store *s, const char *user,
                                  const char *project_id, double last_fire_at,
                                  double next_run_at)
{
    int rc;
    PROF_CALL(P_SET_PROGRESS, rc = __real_store_dep_set_progress(
                                  s, user, project_id, last_fire_at, next_run_at));
    return rc;
}

int __wrap_store_run_get(struct store *s, int64_t id, struct store_run *out)
{
    int rc;
    PROF_CALL(P_RUN_GET, rc = __real_store_run_get(s, id, out));
    return rc;
}

int __wrap_store_batch_begin(struct store *s)
{
    int rc;
    if (no_batch)
        return RR_E_BUSY; /* sched_tick then writes each decision on its own */
    PROF_CALL(P_BATCH_BEGIN, rc = __real_store_batch_begin(s));
    return rc;
}

int __wrap_store_batch_commit(struct store *s)
{
    int rc;
    if (prof_on)
        prof_commit_start = real_now();
    PROF_CALL(P_BATCH_COMMIT, rc = __real_store_batch_commit(s));
    if (prof_on)
        prof_commit_end = real_now();
    return rc;
}

int64_t __wrap_cronx_next(const struct cronx *c, int64_t after)
{
    int64_t t;
    PROF_CALL(P_CRONX_NEXT, t = __real_cronx_next(c, after));
    return t;
}

/* ================================================================ executor */

/* The bench's executor, behind the daemon's executor interface: it notes
 * when each job reaches submit (the lateness measure) and then either keeps
 * it, to report it started and succeeded when drained (no-op mode, which
 * keeps the bench short), or hands it to the real `exec` executor it wraps,
 * watching that executor's reports on their way to the scheduler. */
struct bexec {
    struct executor base;    /* first: the executor interface */
    struct executor *inner;  /* owned: the real executor, or NULL (no-op) */
    size_t n, cap;
    int64_t *run_id;         /* owned: jobs submitted since the last reset */
    double *at;              /* owned: CLOCK_REALTIME when submit got each */
    size_t reported;         /* no-op: jobs of run_id[] already reported */
    struct drain *watch;     /* borrowed: counts the inner executor's reports */
};

/* What the real executor reported, as the service thread recorded it. */
struct drain {
    size_t started, finished, failed;
    double first_start, last_start, last_finish; /* the executor's wall clock */
    double record_s;          /* time the scheduler took to record them */
};

static int bexec_submit(struct executor *base, const struct sched_job *job)
{
    struct bexec *x = (struct bexec *)base;
    double at = real_now();
    if (x->n == x->cap) {
        x->cap = x->cap ? x->cap * 2 : 16384;
        x->run_id = xrealloc(x->run_id, x->cap * sizeof *x->run_id);
        x->at = xrealloc(x->at, x->cap * sizeof *x->at);
    }
    x->run_id[x->n] = job->run_id;
    x->at[x->n++] = at;
    return x->inner ? executor_submit(x->inner, job) : 0;
}

static int bexec_cancel(struct executor *base, int64_t run_id,
                        enum store_outcome as)
{
    struct bexec *x = (struct bexec *)base;
    return x->inner ? executor_cancel(x->inner, run_id, as) : RR_E_NOTFOUND;
}

static bool bexec_reclaim(struct executor *base, const struct sched_job *job,
                          const struct store_run *r)
{
    (void)base;
    (void)job;
    (void)r;
    return false;
}

static int bexec_active(struct executor *base)
{
    struct bexec *x = (struct bexec *)base;
    return x->inner ? executor_active(x->inner) : (int)(x->n - x->reported);
}

struct watched {
    struct bexec *x;
    executor_report_fn fn;
    void *ud;
};

static void watch_report(void *ud, const struct sched_report *r)
{
    struct watched *w = ud;
    struct drain *d = w->x->watch;
    if (r->kind == SCHED_RUN_STARTED) {
        if (d->started++ == 0)
            d->first_start = r->at;
        if (r->at > d->last_start)
            d->last_start = r->at;
    } else {
        d->finished++;
        if (r->outcome != STORE_RUN_SUCCEEDED)
            d->failed++;
        if (r->at > d->last_finish)
            d->last_finish = r->at;
    }
    double t0 = mono_now();
    w->fn(w->ud, r);
    d->record_s += mono_now() - t0;
}

static int bexec_drain(struct executor *base, int max, executor_report_fn fn,
                       void *ud)
{
    struct bexec *x = (struct bexec *)base;
    if (x->inner) {
        struct watched w = {x, fn, ud};
        return executor_drain(x->inner, max, watch_report, &w);
    }
    double at = real_now();
    int n = 0;
    for (; x->reported < x->n && (max <= 0 || n + 2 <= max); x->reported++, n += 2) {
        struct sched_report r = {.kind = SCHED_RUN_STARTED,
                                 .run_id = x->run_id[x->reported], .at = at};
        fn(ud, &r);
        r.kind = SCHED_RUN_FINISHED;
        r.outcome = STORE_RUN_SUCCEEDED;
        r.exit_code = 0;
        r.started = true;
        fn(ud, &r);
    }
    return n;
}

static void bexec_free(struct executor *base)
{
    struct bexec *x = (struct bexec *)base;
    executor_free(x->inner);
    free(x->run_id);
    free(x->at);
}

static const struct executor_ops bexec_ops = {
    .name = "bench",
    .submit = bexec_submit,
    .cancel = bexec_cancel,
    .reclaim = bexec_reclaim,
    .active = bexec_active,
    .drain = bexec_drain,
    .free = bexec_free,
};

/* Report every job submitted so far as the daemon does (executor_record: one
 * transaction), outside any measurement, and start counting afresh. */
static void bexec_complete(struct bexec *x, struct sched *s, struct store *st)
{
    executor_record(&x->base, s, st, 0, 0);
    x->n = x->reported = 0;
}

/* ================================================================ setup */

struct mix {
    size_t n;            /* deployments */
    size_t burst;        /* due per burst instant */
    size_t runs;         /* lateness runs K */
    size_t real;         /* due at the real-process burst */
    size_t e1, e5;       /* "* * * * *", "* /5 * * * *" */
    size_t group;        /* daily members of each lateness/profile group */
    size_t real_group;   /* daily members of the real-process group */
    size_t groups;       /* runs + 4: lateness, profiled, unbatched, full
                          * ledger, real processes */
    size_t hourly, daily, weekly, monthly, manual, paused;
};

static bool mix_plan(struct mix *m)
{
    m->e1 = m->burst / 10;
    m->e5 = m->burst / 5;
    if (m->real < m->e1 + m->e5 || m->burst < m->e1 + m->e5 || m->runs < 1 ||
        m->runs + 3 > 11)
        return false;
    m->group = m->burst - m->e1 - m->e5;
    m->real_group = m->real - m->e1 - m->e5;
    m->groups = m->runs + 4;
    size_t used = m->e1 + m->e5 + (m->runs + 3) * m->group + m->real_group;
    if (used > m->n)
        return false;
    size_t rest = m->n - used;
    m->hourly = rest * 30 / 100;
    m->daily = rest * 30 / 100;
    m->weekly = rest * 10 / 100;
    m->monthly = rest * 10 / 100;
    m->manual = rest * 8 / 100;
    m->paused = rest - m->hourly - m->daily - m->weekly - m->monthly - m->manual;
    return true;
}

/* A minute that is never a burst minute (not a multiple of 5). */
static unsigned odd_minute(void)
{
    unsigned m = 1 + rnd_below(59);
    return m % 5 ? m : m + 1;
}

static const char *zone_prefix(unsigned k)
{
    static const char *const z[] = {"", "CRON_TZ=America/New_York ",
                                    "CRON_TZ=Europe/Berlin ", "TZ=Europe/Berlin "};
    return z[k % 4];
}

/* The schedule of the deployment with category index i; *paused set for the
 * paused ones. */
static void make_schedule(const struct mix *m, size_t i, char *out, size_t outsz,
                          bool *paused)
{
    *paused = false;
    if (i < m->e1) {
        snprintf(out, outsz, "* * * * *");
        return;
    }
    i -= m->e1;
    if (i < m->e5) {
        snprintf(out, outsz, "*/5 * * * *");
        return;
    }
    i -= m->e5;
    size_t grouped = (m->runs + 3) * m->group + m->real_group;
    if (i < grouped) {
        size_t g = i / m->group; /* the real group is the last one */
        unsigned minute = (unsigned)(5 * g);
        /* 03:mm UTC on 2030-01-15, written three ways */
        switch (i % 4) {
        case 0:
        case 1: snprintf(out, outsz, "%u 3 * * *", minute); break;
        case 2: snprintf(out, outsz, "CRON_TZ=Europe/Berlin %u 4 * * *", minute); break;
        default:
            snprintf(out, outsz, "CRON_TZ=America/New_York %u 22 * * *", minute);
            break;
        }
        return;
    }
    i -= grouped;
    if (i < m->hourly) {
        snprintf(out, outsz, "%u * * * *", odd_minute());
        return;
    }
    i -= m->hourly;
    if (i < m->daily) {
        if (i % 50 == 0)
            snprintf(out, outsz, "%s@daily", zone_prefix(rnd_below(3)));
        else
            snprintf(out, outsz, "%s%u %u * * *", zone_prefix(rnd_below(4)),
                     odd_minute(), rnd_below(24));
        return;
    }
    i -= m->daily;
    if (i < m->weekly) {
        if (i % 50 == 0)
            snprintf(out, outsz, "%s@weekly", zone_prefix(rnd_below(3)));
        else
            snprintf(out, outsz, "%s%u %u * * %s", zone_prefix(rnd_below(4)),
                     odd_minute(), rnd_below(24),
                     (const char *[]){"MON", "1-5", "SUN", "3", "FRI", "6,0"}[rnd_below(6)]);
        return;
    }
    i -= m->weekly;
    if (i < m->monthly) {
        if (i % 50 == 0)
            snprintf(out, outsz, "%s@monthly", zone_prefix(rnd_below(3)));
        else
            snprintf(out, outsz, "%s%u %u %u * *", zone_prefix(rnd_below(4)),
                     odd_minute(), rnd_below(24), 1 + rnd_below(28));
        return;
    }
    i -= m->monthly;
    if (i < m->manual) {
        snprintf(out, outsz, "manual");
        return;
    }
    *paused = true;
    snprintf(out, outsz, "%s", i % 2 ? "* * * * *" : "*/5 * * * *");
}

struct setup {
    char dir[64], db[96];
    struct store *st;
    char owner[STORE_KEY_ID_MAX];
    char manual_pid[16];      /* a manual deployment, for the baselines */
    int64_t t_setup;          /* simulated "now" of the setup */
    int64_t d0;               /* first burst instant */
    uint32_t *perm;           /* owned: category index -> project number */
    double seconds;
};

static void setup_db(struct setup *su, const struct mix *m)
{
    struct err e = {0};
    int rc = store_open(su->db, &su->st, &e);
    if (rc)
        die("store_open", rc, &e);
    char key_text[STORE_KEY_TEXT_MAX];
    struct store_key key;
    rc = store_key_create(su->st, "bench", "bench owner", STORE_PERM_ALL, 0,
                          (double)su->t_setup, key_text, &key);
    if (rc)
        die("store_key_create", rc, NULL);
    snprintf(su->owner, sizeof su->owner, "%s", key.id);

    /* Project ids are a seeded permutation, so the categories interleave in
     * the (user, project_id) order the engine loads them in. */
    uint32_t *perm = xmalloc(m->n * sizeof *perm);
    for (size_t i = 0; i < m->n; i++)
        perm[i] = (uint32_t)i;
    for (size_t i = m->n - 1; i > 0; i--) {
        size_t j = (size_t)(rnd() % (i + 1));
        uint32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    double t0 = mono_now();
    su->manual_pid[0] = '\0';
    for (size_t i = 0; i < m->n; i++) {
        if (i % INSERT_BATCH == 0 && (rc = store_batch_begin(su->st)) != 0)
            die("store_batch_begin", rc, NULL);
        char sched[128], pid[16], pipeline[128];
        bool paused;
        make_schedule(m, i, sched, sizeof sched, &paused);
        snprintf(pid, sizeof pid, "p%06u", perm[i]);
        snprintf(pipeline, sizeof pipeline,
                 "{\"project_id\":\"%s\",\"components\":[{\"id\":\"deploy\"}]}", pid);
        struct cronx *cx;
        if ((rc = cronx_parse(sched, "UTC", &cx, &e)) != 0)
            die(sched, rc, &e);
        enum store_state state = paused ? STORE_PAUSED : STORE_ACTIVE;
        int64_t next = sched_next_fire(cx, state, 0, (double)su->t_setup);
        if (cronx_is_manual(cx) && !su->manual_pid[0])
            snprintf(su->manual_pid, sizeof su->manual_pid, "%s", pid);
        cronx_free(cx);
        struct store_dep d = {
            .user = "bench", .project_id = pid, .pipeline = pipeline,
            .schedule = sched, .state = state, .created_by = "bench",
            .owner_key_id = su->owner, .created_at = (double)su->t_setup,
            .updated_at = (double)su->t_setup,
            .next_run_at = next == CRONX_NEVER ? 0 : (double)next,
        };
        if ((rc = store_dep_insert(su->st, &d, 0)) != 0)
            die("store_dep_insert", rc, NULL);
        if ((i + 1) % INSERT_BATCH == 0 || i + 1 == m->n) {
            if ((rc = store_batch_commit(su->st)) != 0)
                die("store_batch_commit", rc, NULL);
        }
    }
    su->seconds = mono_now() - t0;
    su->perm = perm;
}

/* Give every daily member of burst group g a full ledger: `keep` finished
 * scheduled rows on the days before `due` (the steady state of a deployment
 * that has run for keep days; every later insert then prunes one row). */
static double prefill_ledgers(const struct setup *su, const struct mix *m, size_t g,
                              int64_t due, int64_t keep, size_t *rows)
{
    size_t first = m->e1 + m->e5 + g * m->group;
    double t0 = mono_now();
    int rc;
    *rows = 0;
    for (size_t i = first; i < first + m->group; i++) {
        if ((i - first) % 100 == 0 && (rc = store_batch_begin(su->st)) != 0)
            die("store_batch_begin", rc, NULL);
        char pid[16];
        snprintf(pid, sizeof pid, "p%06u", su->perm[i]);
        for (int64_t j = keep; j >= 1; j--) {
            double at = (double)(due - j * 86400);
            struct store_run r = {.user = "bench", .project_id = pid,
                                  .trigger = "schedule", .scheduled_for = at,
                                  .created_at = at, .started_at = at + 0.01,
                                  .finished_at = at + 1,
                                  .outcome = STORE_RUN_SUCCEEDED, .exit_code = 0};
            int64_t id;
            if ((rc = store_run_insert(su->st, &r, 0, &id)) != 0)
                die("prefill store_run_insert", rc, NULL);
            (*rows)++;
        }
        if (((i - first) % 100 == 99 || i + 1 == first + m->group) &&
            (rc = store_batch_commit(su->st)) != 0)
            die("store_batch_commit", rc, NULL);
    }
    return mono_now() - t0;
}

/* ================================================================ load child */

struct load_result {
    double seconds;
    long long heap, sqlite, rss;   /* bytes grown */
    size_t ndeps, scheduled;
};

static long long heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    return (long long)(mi.uordblks + mi.hblkhd);
}

static long long rss_bytes(void)
{
    long long size = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return 0;
    if (fscanf(f, "%lld %lld", &size, &resident) != 2)
        resident = 0;
    fclose(f);
    return resident * sysconf(_SC_PAGESIZE);
}

/* --load-child DB NOW: open, then time and measure sched_new + sched_load. */
static int load_child(const char *db, double now)
{
    log_configure(LOG_WARN, LOG_FORMAT_TEXT);
    struct store *st;
    struct err e = {0};
    int rc = store_open(db, &st, &e);
    if (rc)
        die("store_open", rc, &e);
    struct sched_config cfg;
    sched_config_defaults(&cfg);
    struct sched_exec ex = {0};
    long long h0 = heap_in_use(), q0 = (long long)sqlite3_memory_used(),
              r0 = rss_bytes();
    double t0 = mono_now();
    struct sched *s = sched_new(st, &cfg, &ex);
    if ((rc = sched_load(s, now)) != 0)
        die("sched_load", rc, NULL);
    double t1 = mono_now();
    long long h1 = heap_in_use(), q1 = (long long)sqlite3_memory_used(),
              r1 = rss_bytes();
    size_t scheduled;
    size_t n = sched_count(s, &scheduled);
    printf("%.9f %lld %lld %lld %zu %zu\n", t1 - t0, h1 - h0, q1 - q0, r1 - r0, n,
           scheduled);
    fflush(stdout);
    sched_free(s);
    store_close(st);
    return 0;
}

static void run_load_child(const char *self, const char *db, double now,
                           struct load_result *out)
{
    int fd[2];
    if (pipe(fd) != 0)
        die("pipe", RR_E_IO, NULL);
    char nowbuf[32];
    snprintf(nowbuf, sizeof nowbuf, "%.3f", now);
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        die("fork", RR_E_IO, NULL);
    if (pid == 0) {
        close(fd[0]);
        dup2(fd[1], STDOUT_FILENO);
        close(fd[1]);
        execl(self, self, "--load-child", db, nowbuf, (char *)NULL);
        _exit(127);
    }
    close(fd[1]);
    char line[256] = "";
    FILE *f = fdopen(fd[0], "r");
    if (!f || !fgets(line, sizeof line, f))
        line[0] = '\0';
    if (f)
        fclose(f);
    int status;
    waitpid(pid, &status, 0);
    if (sscanf(line, "%lf %lld %lld %lld %zu %zu", &out->seconds, &out->heap,
               &out->sqlite, &out->rss, &out->ndeps, &out->scheduled) != 6)
        die("load child gave no result", RR_E_INTERNAL, NULL);
}

/* ================================================================ bursts */

struct burst {
    double r;                /* the real second the due instant mapped to */
    int fired;
    double wake_ms;          /* tick start - R */
    double tick_ms;          /* sched_tick duration */
    double p50, p99, max;    /* lateness at the executor, ms */
    double first_ms;         /* first job at the executor - R */
    double dps;              /* decisions per second */
};

/* Step the simulated clock through every deadline before `until`, completing
 * the runs at once (no-op executor) and pruning the ledgers the ticks grew,
 * all outside any measurement. */
static void advance_to(struct sched *s, struct store *st, struct bexec *x,
                       int64_t until)
{
    int64_t t;
    while ((t = sched_next_deadline(s)) != CRONX_NEVER && t < until) {
        sched_tick(s, (double)t, 0, 0);
        bexec_complete(x, s, st);
        sched_prune(s, (double)t, 0); /* as the daemon does between ticks */
    }
}

/* Sleep until the wall clock reads `at` (any fraction). */
static void sleep_until_real_f(double at)
{
    double sec = floor(at);
    struct timespec ts = {.tv_sec = (time_t)sec,
                          .tv_nsec = (long)((at - sec) * 1e9)};
    while (clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

/* Tick at burst instant D on the real clock; fill *b from the executor's
 * arrival times. Leaves the jobs in x. */
static void burst_at(struct sched *s, struct bexec *x, int64_t due, struct burst *b)
{
    x->n = 0;
    /* As the server does: tick when sched_next_wake says (SCHED_TICK_LEAD
     * ahead, or earlier for a burst that needs it) and start the runs at the
     * due second. Nothing else is due in the minute before a burst. */
    double lead = (double)due -
                  sched_next_wake(s, (double)due - 59, SCHED_TICK_LEAD);
    double r = ceil(real_now()) + ceil(lead) + 1.0; /* the real second D maps to */
    sleep_until_real_f(r - lead);
    double w = real_now();
    int fired = sched_tick(s, (double)due + (w - r), SCHED_TICK_LEAD, 0);
    double end = real_now();
    sleep_until_real(r);
    sched_release(s, (double)due + (real_now() - r));
    b->r = r;
    b->fired = fired;
    b->wake_ms = (w - r) * 1e3;
    b->tick_ms = (end - w) * 1e3;
    b->dps = fired / (end - w);
    double *late = xmalloc((x->n ? x->n : 1) * sizeof *late);
    for (size_t i = 0; i < x->n; i++)
        late[i] = (x->at[i] - r) * 1e3;
    b->first_ms = x->n ? late[0] : NAN;
    b->p50 = pct(late, x->n, 0.50);
    b->p99 = pct(late, x->n, 0.99);
    b->max = x->n ? late[x->n - 1] : NAN;
    free(late);
}

static void print_row(const char *label, int64_t due, const struct burst *b)
{
    char when[32];
    time_t tt = (time_t)due;
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", gmtime(&tt));
    printf("   %-5s %-20s %7d %9.2f %9.1f %9.1f %9.1f %9.1f %9.1f %11.0f\n", label,
           when, b->fired, b->wake_ms, b->tick_ms, b->first_ms, b->p50, b->p99,
           b->max, b->dps);
}

static void prof_reset(void)
{
    memset(prof_sum, 0, sizeof prof_sum);
    memset(prof_calls, 0, sizeof prof_calls);
}

/* ================================================================ real runs */

/* ================================================================ main */

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_scheduler [--million] [-n deployments] [-b due-per-burst]\n"
            "                       [-k runs] [-r real-process-burst] [-d dir] [--keep]\n"
            "defaults: -n 100000 -b 10000 -k 5 -r 10000 -d $TMPDIR\n"
            "--million: -n 1000000 -b 100000 -k 3 -r 30000 (options after it "
            "still apply)\n");
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "--load-child") == 0)
        return load_child(argv[2], strtod(argv[3], NULL));

    struct mix m = {.n = 100000, .burst = 10000, .runs = 5, .real = 10000};
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    bool keep = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--keep") == 0)
            keep = true;
        else if (strcmp(argv[i], "--million") == 0)
            m = (struct mix){.n = 1000000, .burst = 100000, .runs = 3, .real = 30000};
        else if (i + 1 < argc && strcmp(argv[i], "-n") == 0)
            m.n = strtoul(argv[++i], NULL, 10);
        else if (i + 1 < argc && strcmp(argv[i], "-b") == 0)
            m.burst = strtoul(argv[++i], NULL, 10);
        else if (i + 1 < argc && strcmp(argv[i], "-k") == 0)
            m.runs = strtoul(argv[++i], NULL, 10);
        else if (i + 1 < argc && strcmp(argv[i], "-r") == 0)
            m.real = strtoul(argv[++i], NULL, 10);
        else if (i + 1 < argc && strcmp(argv[i], "-d") == 0)
            base = argv[++i];
        else
            usage();
    }
    if (!mix_plan(&m)) {
        fprintf(stderr, "bench_scheduler: -n too small for -b/-r/-k (or -k > 8)\n");
        return 2;
    }
    log_configure(LOG_WARN, LOG_FORMAT_TEXT);
    char self[512];
    ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
    if (sl <= 0)
        die("readlink /proc/self/exe", RR_E_IO, NULL);
    self[sl] = '\0';

    struct setup su = {0};
    snprintf(su.dir, sizeof su.dir, "%s/bench_sched.XXXXXX", base);
    if (!mkdtemp(su.dir))
        die("mkdtemp", RR_E_IO, NULL);
    snprintf(su.db, sizeof su.db, "%s/bench.db", su.dir);
    su.d0 = utc(2030, 1, 15, 3, 0);
    su.t_setup = su.d0 - 600;

    /* ---- machine */
    char cpu[128];
    bench_cpu_model(cpu, sizeof cpu);
    char date[32];
    time_t tnow = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", gmtime(&tnow));
    printf("bench_scheduler  %s  nproc=%ld  cpu=%s  sqlite=%s\n", date,
           sysconf(_SC_NPROCESSORS_ONLN), cpu, sqlite3_libversion());

    /* ---- 1. setup */
    setup_db(&su, &m);
    printf("\n1. setup: %zu deployments (1 user, 1 key), inserted in batches of %d "
           "in %.2f s (%.0f/s); db %s\n",
           m.n, INSERT_BATCH, su.seconds, (double)m.n / su.seconds, su.db);
    printf("   mix: %zu '* * * * *', %zu '*/5 * * * *', %zu daily burst members "
           "(%zu groups of %zu + %zu; UTC/Berlin/New_York), %zu hourly, %zu daily, "
           "%zu weekly, %zu monthly (1/4 each UTC, New_York, Berlin x2; some "
           "presets), %zu manual, %zu paused\n",
           m.e1, m.e5, (m.runs + 3) * m.group + m.real_group, m.runs + 3, m.group,
           m.real_group, m.hourly, m.daily, m.weekly, m.monthly, m.manual, m.paused);

    /* ---- 2/3. load and memory, each in a fresh process */
    struct load_result lr[LOAD_RUNS];
    double ls[LOAD_RUNS], heap_pd[LOAD_RUNS], sql_pd[LOAD_RUNS], eng_pd[LOAD_RUNS],
        rss_pd[LOAD_RUNS];
    double load_now = (double)su.t_setup + 0.5;
    for (int i = 0; i < LOAD_RUNS; i++) {
        run_load_child(self, su.db, load_now, &lr[i]);
        double n = (double)lr[i].ndeps;
        ls[i] = lr[i].seconds;
        heap_pd[i] = (double)lr[i].heap / n;
        sql_pd[i] = (double)lr[i].sqlite / n;
        eng_pd[i] = (double)(lr[i].heap - lr[i].sqlite) / n;
        rss_pd[i] = (double)lr[i].rss / n;
    }
    printf("\n2. start-up load: sched_new + sched_load(now) over the database, %d "
           "fresh processes (database in the OS page cache; nothing due, so no "
           "writes)\n   loaded %zu, scheduled %zu; seconds:",
           LOAD_RUNS, lr[0].ndeps, lr[0].scheduled);
    for (int i = 0; i < LOAD_RUNS; i++)
        printf(" %.3f", ls[i]);
    printf("\n");
    printf("\n3. memory per deployment, heap growth from before sched_new to after "
           "sched_load, in the same fresh processes:\n"
           "   heap = mallinfo2 uordblks+hblkhd (malloc'd bytes incl. chunk "
           "headers); sqlite = sqlite3_memory_used() growth (page cache, "
           "statements);\n   engine = heap - sqlite (index, heap array, struct "
           "sched_dep, names, parsed schedules, zone cache); rss = resident set "
           "growth\n");
    printf("   per deployment (median of %d): heap %.0f B, sqlite %.0f B, "
           "engine %.0f B, rss %.0f B\n",
           LOAD_RUNS, bench_median(heap_pd, LOAD_RUNS),
           bench_median(sql_pd, LOAD_RUNS), bench_median(eng_pd, LOAD_RUNS),
           bench_median(rss_pd, LOAD_RUNS));

    /* ---- 4. lateness */
    struct bexec x = {.base.ops = &bexec_ops};
    struct sched_config cfg;
    sched_config_defaults(&cfg);
    struct sched_exec ex = executor_sched_exec(&x.base);
    struct sched *s = sched_new(su.st, &cfg, &ex);
    int rc = sched_load(s, load_now);
    if (rc)
        die("sched_load", rc, NULL);

    struct burst b[8];
    printf("\n4. fire lateness, decision path: %zu deployments due at once, no-op "
           "executor; clock = real clock + offset; as the server does, the tick "
           "runs when sched_next_wake says (SCHED_TICK_LEAD, %.1f s, before the due "
           "second, earlier for a burst that needs it, at most %.0f s) and the runs "
           "are released at it (real sleeps)\n   lateness = CLOCK_REALTIME when the "
           "job reached the executor - the due second\n",
           m.burst, SCHED_TICK_LEAD, SCHED_TICK_LEAD_MAX);
    printf("   %-5s %-20s %7s %9s %9s %9s %9s %9s %9s %11s\n", "run", "due (UTC)",
           "fired", "wake ms", "tick ms", "first ms", "p50 ms", "p99 ms", "max ms",
           "decisions/s");
    double v_p50[16], v_p99[16], v_max[16], v_tick[16], v_dps[16], v_wake[16],
        v_done[16];
    size_t K = m.runs;
    for (size_t k = 0; k < K; k++) {
        int64_t due = su.d0 + (int64_t)k * 300;
        advance_to(s, su.st, &x, due);
        burst_at(s, &x, due, &b[k]);
        char label[24];
        snprintf(label, sizeof label, "%zu", k + 1);
        print_row(label, due, &b[k]);
        v_p50[k] = b[k].p50;
        v_p99[k] = b[k].p99;
        v_max[k] = b[k].max;
        v_tick[k] = b[k].tick_ms;
        v_dps[k] = b[k].dps;
        v_wake[k] = b[k].wake_ms;
        double t0 = mono_now();
        bexec_complete(&x, s, su.st);
        v_done[k] = (mono_now() - t0) * 1e3;
    }
    printf("   %-5s %-20s %7s %9.2f %9.1f %9s %9.1f %9.1f %9.1f %11.0f\n",
           "med", "(runs 1..K)", "", bench_median(v_wake, K),
           bench_median(v_tick, K), "", bench_median(v_p50, K),
           bench_median(v_p99, K), bench_median(v_max, K),
           bench_median(v_dps, K));

    /* prof: the same, with the --wrap timers on */
    int64_t due_prof = su.d0 + (int64_t)K * 300;
    struct burst pb;
    advance_to(s, su.st, &x, due_prof);
    prof_reset();
    prof_on = true;
    burst_at(s, &x, due_prof, &pb);
    prof_on = false;
    print_row("prof", due_prof, &pb);
    bexec_complete(&x, s, su.st);
    double prof_fresh[P__COUNT];
    uint64_t calls_fresh[P__COUNT];
    memcpy(prof_fresh, prof_sum, sizeof prof_sum);
    memcpy(calls_fresh, prof_calls, sizeof prof_calls);
    double commit_fresh[2] = {prof_commit_start, prof_commit_end};

    /* unb: batching off -- the wrapper makes store_batch_begin refuse, so
     * every decision's writes commit on their own (runs still start only
     * after the loop) */
    int64_t due_unb = su.d0 + (int64_t)(K + 1) * 300;
    struct burst ub;
    advance_to(s, su.st, &x, due_unb);
    no_batch = true;
    burst_at(s, &x, due_unb, &ub);
    no_batch = false;
    print_row("unb", due_unb, &ub);
    bexec_complete(&x, s, su.st);

    /* full: the daily members due at this instant already hold keep_runs
     * ledger rows each (steady state), timers on */
    int64_t due_full = su.d0 + (int64_t)(K + 2) * 300;
    size_t prefilled;
    double prefill_s = prefill_ledgers(&su, &m, K + 2, due_full, cfg.keep_runs,
                                       &prefilled);
    struct burst fb;
    advance_to(s, su.st, &x, due_full);
    prof_reset();
    prof_on = true;
    burst_at(s, &x, due_full, &fb);
    prof_on = false;
    print_row("full", due_full, &fb);
    bexec_complete(&x, s, su.st);
    printf("   runs 1..K, prof: fresh ledgers (each due deployment has at most a "
           "few dozen rows); unb: batching disabled; full: %zu of the %zu due "
           "have %lld rows each (%zu rows prefilled in %.1f s)\n",
           m.group, m.burst, (long long)cfg.keep_runs, prefilled, prefill_s);
    printf(
        "   unbatched is %.1fx slower than batched (tick %.0f ms vs %.0f ms)\n",
        ub.tick_ms / bench_median(v_tick, K), ub.tick_ms,
        bench_median(v_tick, K));
    printf("   reporting the %zu runs started+finished afterwards in one batch "
           "(outside the measurement): median %.0f ms\n",
           m.burst, bench_median(v_done, K));

    printf("\n   where the time goes (-Wl,--wrap timers around the engine's "
           "store/cron calls; us/call: prof run | full run)\n");
    printf("   %-32s %8s %10s %9s %7s | %10s %9s %7s\n", "call", "calls",
           "total ms", "us/call", "share", "total ms", "us/call", "share");
    double acc_p = 0, acc_f = 0, tp = pb.tick_ms / 1e3, tf = fb.tick_ms / 1e3;
    for (int i = 0; i < P__COUNT; i++) {
        if (!calls_fresh[i] && !prof_calls[i])
            continue;
        acc_p += prof_fresh[i];
        acc_f += prof_sum[i];
        printf("   %-32s %8llu %10.1f %9.2f %6.1f%% | %10.1f %9.2f %6.1f%%\n",
               prof_name[i], (unsigned long long)calls_fresh[i], prof_fresh[i] * 1e3,
               calls_fresh[i] ? prof_fresh[i] * 1e6 / (double)calls_fresh[i] : 0,
               100.0 * prof_fresh[i] / tp, prof_sum[i] * 1e3,
               prof_calls[i] ? prof_sum[i] * 1e6 / (double)prof_calls[i] : 0,
               100.0 * prof_sum[i] / tf);
    }
    printf("   %-32s %8s %10.1f %9s %6.1f%% | %10.1f %9s %6.1f%%\n",
           "rest (heap, engine, submits)", "", (tp - acc_p) * 1e3, "",
           100.0 * (tp - acc_p) / tp, (tf - acc_f) * 1e3, "",
           100.0 * (tf - acc_f) / tf);
    printf("   prof timeline after the due second: decisions until +%.1f ms, "
           "commit until +%.1f ms, jobs at the executor +%.1f..+%.1f ms\n",
           (commit_fresh[0] - pb.r) * 1e3, (commit_fresh[1] - pb.r) * 1e3,
           pb.first_ms, pb.max);
    printf("   full timeline after the due second: decisions until +%.1f ms, "
           "commit until +%.1f ms, jobs at the executor +%.1f..+%.1f ms\n",
           (prof_commit_start - fb.r) * 1e3, (prof_commit_end - fb.r) * 1e3,
           fb.first_ms, fb.max);

    /* ---- 5. real processes */
    int64_t due_real = su.d0 + (int64_t)(K + 3) * 300;
    advance_to(s, su.st, &x, due_real);
    struct exec_config ecfg;
    exec_config_defaults(&ecfg);
    ecfg.cmd = "/bin/true";
    ecfg.max_runs = 64;
    ecfg.wake = bench_wake;
    struct err e = {0};
    x.inner = exec_new(&ecfg, &e);
    if (!x.inner)
        die("exec_new", e.code, &e);
    struct drain dr = {0};
    x.watch = &dr;
    struct burst rb;
    prof_reset();
    prof_on = true;
    burst_at(s, &x, due_real, &rb);
    prof_on = false;
    double r_real = rb.r;
    double deadline = mono_now() + REAL_TIMEOUT_S;
    while (dr.finished < (size_t)rb.fired && mono_now() < deadline) {
        bench_wait_wake(1000);
        executor_record(&x.base, s, su.st, 0, 0); /* as the daemon's wake-up */
    }
    double recorded = real_now();
    executor_free(x.inner);
    x.inner = NULL;
    x.watch = NULL;
    x.n = x.reported = 0;
    double span = dr.last_start - dr.first_start;
    printf("\n5. real processes: %d due at once through the exec executor "
           "(\"/bin/true\", max_runs 64); reports recorded as the daemon does "
           "(executor_record: one transaction per wake-up)\n",
           rb.fired);
    printf("   tick %.1f ms (decisions + commit + %d submits); processes: "
           "first started +%.1f ms, last started +%.2f s, all finished +%.2f s "
           "(%zu not succeeded)\n",
           rb.tick_ms, rb.fired, (dr.first_start - r_real) * 1e3,
           dr.last_start - r_real, dr.last_finish - r_real, dr.failed);
    printf("   of the tick: store_run_insert %.0f ms, store_dep_get %.0f ms, "
           "commit %.0f ms, submit of all jobs %.1f ms\n",
           prof_sum[P_RUN_INSERT] * 1e3, prof_sum[P_DEP_GET] * 1e3,
           prof_sum[P_BATCH_COMMIT] * 1e3, (rb.max - rb.first_ms));
    printf("   start rate %.0f runs/s over the burst; all %zu outcomes in the "
           "ledger at +%.2f s; recording took %.2f s of the service thread "
           "(%.0f us/event)\n",
           span > 0 ? (double)(dr.started - 1) / span : NAN, dr.finished,
           recorded - r_real, dr.record_s,
           dr.record_s * 1e6 / (double)(dr.started + dr.finished));

    /* ---- 6. baselines */
    double fs[FSYNC_SAMPLES];
    for (int i = 0; i < FSYNC_SAMPLES; i++) {
        double t0 = mono_now();
        /* a changing value: an UPDATE that changes nothing writes no frame */
        if ((rc = store_dep_set_progress(su.st, "bench", su.manual_pid, 0,
                                         (double)(i + 1))) != 0)
            die("store_dep_set_progress", rc, NULL);
        fs[i] = (mono_now() - t0) * 1e3;
    }
    double fsync_ms = pct(fs, FSYNC_SAMPLES, 0.5);
    struct store_run r = {.user = "bench", .project_id = su.manual_pid,
                          .trigger = "manual", .outcome = STORE_RUN_SUCCEEDED,
                          .exit_code = 0};
    /* per-insert cost: own transaction; in one batch with prune (keep 100);
     * in one batch without prune (keep 0) */
    double per[3];
    for (int mode = 0; mode < 3; mode++) {
        if (mode > 0 && (rc = store_batch_begin(su.st)) != 0)
            die("store_batch_begin", rc, NULL);
        double t0 = mono_now();
        for (int i = 0; i < UNBATCHED_INSERTS; i++) {
            int64_t id;
            r.created_at = r.finished_at = (double)due_real + i;
            if ((rc = store_run_insert(su.st, &r, mode == 2 ? 0 : cfg.keep_runs,
                                       &id)) != 0)
                die("store_run_insert", rc, NULL);
        }
        if (mode > 0 && (rc = store_batch_commit(su.st)) != 0)
            die("store_batch_commit", rc, NULL);
        per[mode] = (mono_now() - t0) / UNBATCHED_INSERTS * 1e6;
    }
    printf("\n6. baselines: one tiny committed transaction (store_dep_set_progress, "
           "WAL, synchronous=FULL): median %.3f ms over %d\n",
           fsync_ms, FSYNC_SAMPLES);
    printf("   store_run_insert, %d rows on one deployment: %.1f us each as its own "
           "transaction; %.1f us inside one batch (keep 100: prunes); %.1f us "
           "inside one batch with keep 0 (no prune)\n",
           UNBATCHED_INSERTS, per[0], per[1], per[2]);

    /* ---- summary */
    double load_med = bench_median(ls, LOAD_RUNS),
           eng = bench_median(eng_pd, LOAD_RUNS), p99 = bench_median(v_p99, K);
    printf("\nsummary                                      result      target    \n");
    printf("start-up load, %zu deployments (median)  %8.3f s   <= 2 s       %s\n",
           m.n, load_med, verdict(load_med <= 2.0));
    printf("engine memory per deployment (median)      %8.0f B   <= 300 B     %s\n",
           eng, verdict(eng <= 300));
    printf("  incl. SQLite growth, per deployment      %8.0f B   (context)\n",
           bench_median(heap_pd, LOAD_RUNS));
    printf("fire lateness p99, %zu due (median of %zu) %8.1f ms  <= 100 ms    %s\n",
           m.burst, K, p99, verdict(p99 <= 100.0));
    printf("fire lateness max (median of %zu)            %8.1f ms  <= 1000 ms  "
           " %s\n",
           K, bench_median(v_max, K),
           verdict(bench_median(v_max, K) <= 1000.0));
    printf("  same, unbatched decision path: p99       %8.1f ms  (context)\n", ub.p99);
    printf("fire lateness p99, full ledgers (%lld each) %8.1f ms  <= 100 ms    %s\n",
           (long long)cfg.keep_runs, fb.p99, verdict(fb.p99 <= 100.0));
    printf("decisions per second (median)              %8.0f     (context)\n",
           bench_median(v_dps, K));
    printf("real runs started per second (/bin/true)   %8.0f     (context)\n",
           span > 0 ? (double)(dr.started - 1) / span : NAN);

    sched_free(s);
    store_close(su.st);
    executor_free(&x.base); /* x lives on the stack: frees what it holds */
    free(su.perm);
    if (!keep) {
        const char *sfx[] = {"", "-wal", "-shm"};
        for (int i = 0; i < 3; i++) {
            char p[128];
            snprintf(p, sizeof p, "%s%s", su.db, sfx[i]);
            unlink(p);
        }
        rmdir(su.dir);
    }
    return 0;
}
