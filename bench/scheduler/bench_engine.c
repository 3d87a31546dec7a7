/* bench_engine.c -- a burst of engine runs: N deployments due in the same
 * second, run as tasks on a stand-in RocketRide engine.
 *
 * Purpose: how fast rrdeploy starts runs on an engine when many fall due at
 * once (runs started per second), and how late their `execute` requests
 * reach the engine (from the due instant to the moment the engine receives
 * each one), next to what the engine takes from a client that does nothing
 * else. Prints numbers; not a test.
 *
 * Design:
 *  - The engine is tests/integration/standin.py, started as a program for
 *    each phase (a fresh one every time) on a kernel-picked port, with one
 *    key per owner and quick task timings (no periodic status, no output),
 *    so that the numbers are about the client, not the fake tasks. It
 *    stamps every `execute` it receives with time.time(); after SIGTERM its
 *    report gives those stamps (executeTimes), which the bench reads.
 *  - rrdeploy phase: a temp store with N "* * * * *" deployments of U
 *    owners, each with its owner's engine credential sealed with a vault in
 *    the temp dir for its (user, project_id); a sched with the rocketride
 *    executor (max_runs -m, default N), wrapped by the bench to note when
 *    each job reaches it and what it reports. As in bench_scheduler, the
 *    engine's clock is the real clock plus an offset that maps the due
 *    minute to a whole real second R: sched_tick(SCHED_TICK_LEAD) at R - 1,
 *    sched_release at R, then executor_record (all pending reports in one
 *    transaction) whenever the executor's wake callback says reports are
 *    waiting, until every run has finished. Every run must succeed.
 *  - Baseline phase: the stand-in's own capacity through the same client
 *    library (dap/upstream.h), without scheduler, store or executor: at R
 *    one connection per task is opened, and each does what the executor
 *    does with it -- auth, rrext_monitor and rrext_get_task_status, then
 *    `execute`, then waits for the task's terminal status and closes.
 *  - Lateness = the stand-in's receipt time - R, both by this host's clock.
 *    Runs started per second, two ways: N / (last receipt - R), the rate
 *    over the whole burst; and (N - 1) / (last receipt - first receipt),
 *    which leaves out the time before the first execute (with every
 *    connection opened at once, the engine authenticates nearly all of them
 *    before it sees the first execute, so the executes come bunched).
 *  - Rounds alternate the order of the two phases; medians are printed,
 *    and the ratios of rrdeploy to the baseline.
 *
 * Thread: the main thread runs the scheduler and the store; the rocketride
 * executor and the baseline client each have their upstream thread (the
 * baseline's callbacks run there), which hand back through a mutex and
 * condition variable. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libwebsockets.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench/common/bench_util.h"
#include "dap/upstream.h"
#include "runner/executor.h"
#include "scheduler/scheduler.h"
#include "store/store.h"
#include "util/vault.h"

#ifndef BENCH_PYTHON
#define BENCH_PYTHON "/usr/bin/python3"
#endif
#ifndef BENCH_STANDIN
#define BENCH_STANDIN "tests/integration/standin.py"
#endif

#define SOURCE_ID "source_1"
#define INSERT_BATCH 1000
#define PHASE_TIMEOUT_S 300.0   /* a phase that has not ended by then fails */
#define STANDIN_START_S 30.0    /* the stand-in writes its port within */
#define STANDIN_STOP_S 60.0     /* and exits after SIGTERM within */
#define MAX_ROUNDS 16
#define FAILS_SHOWN 5

/* ================================================================ helpers */

static double real_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_until_real(double at)
{
    struct timespec ts = {.tv_sec = (time_t)at,
                          .tv_nsec = (long)((at - floor(at)) * 1e9)};
    while (clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

static void die(const char *fmt, ...) RR_PRINTF(1, 2);
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("bench_engine: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

/* Nearest-rank percentile of the sorted v[0..n). */
static double pct_sorted(const double *v, size_t n, double p)
{
    if (n == 0)
        return NAN;
    size_t k = (size_t)ceil(p * (double)n);
    return v[k ? k - 1 : 0];
}

/* CPU seconds (user + system) the process has used so far. */
static double proc_cpu_s(pid_t pid)
{
    char path[64], line[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return NAN;
    size_t n = fread(line, 1, sizeof line - 1, f);
    fclose(f);
    line[n] = '\0';
    const char *p = strrchr(line, ')'); /* after comm, which may hold spaces */
    unsigned long long ut, st;
    /* fields 3..13 skipped, 14 utime, 15 stime */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
                     &ut, &st) != 2)
        return NAN;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* CPU seconds of the calling thread. */
static double thread_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

/* ================================================================ options */

struct opts {
    size_t n;              /* deployments due at once */
    int users;             /* owners, one engine key each */
    int rounds;
    int max_runs;          /* rocketride max_runs; 0 = n */
    double init_ms, ready_ms, run_ms; /* stand-in task timings */
    const char *python, *standin, *base;
    bool keep;
};

static void user_name(int u, char out[16])
{
    snprintf(out, 16, "u%02d", u);
}

static void user_key(int u, char out[32])
{
    snprintf(out, 32, "bench-engine-key-%02d", u);
}

static void project_id(size_t i, char out[24])
{
    snprintf(out, 24, "p%05zu", i);
}

/* The pipeline of deployment pid: one filesys source (the stand-in's
 * batch scenario: it runs for run_ms and ends cleanly). */
static void pipeline_text(const char *pid, char *out, size_t n)
{
    snprintf(out, n,
             "{\"project_id\":\"%s\",\"source\":\"" SOURCE_ID "\","
             "\"components\":[{\"id\":\"" SOURCE_ID "\",\"provider\":\"filesys\","
             "\"config\":{\"mode\":\"Source\",\"type\":\"filesys\"}}]}",
             pid);
}

/* ================================================================ the stand-in */

struct standin {
    pid_t pid;
    double cpu0;           /* its CPU time once listening (start-up) */
    char url[128];
    char port_file[256], report[256], log[256];
};

static void show_log(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f))
        fprintf(stderr, "  stand-in: %s", line);
    fclose(f);
}

static void standin_start(struct standin *sd, const struct opts *o, const char *dir,
                          const char *tag)
{
    snprintf(sd->port_file, sizeof sd->port_file, "%s/%s.port", dir, tag);
    snprintf(sd->report, sizeof sd->report, "%s/%s.report.json", dir, tag);
    snprintf(sd->log, sizeof sd->log, "%s/%s.standin.log", dir, tag);
    unlink(sd->port_file);
    unlink(sd->report);
    char init[32], ready[32], run[32];
    snprintf(init, sizeof init, "%g", o->init_ms);
    snprintf(ready, sizeof ready, "%g", o->ready_ms);
    snprintf(run, sizeof run, "%g", o->run_ms);
    char keys[64][64];
    const char *argv[64 * 2 + 40];
    int a = 0;
    argv[a++] = o->python;
    argv[a++] = o->standin;
    argv[a++] = "--port";
    argv[a++] = "0";
    argv[a++] = "--port-file";
    argv[a++] = sd->port_file;
    argv[a++] = "--report";
    argv[a++] = sd->report;
    argv[a++] = "--init-ms";
    argv[a++] = init;
    argv[a++] = "--ready-ms";
    argv[a++] = ready;
    argv[a++] = "--run-ms";
    argv[a++] = run;
    argv[a++] = "--tick-ms"; /* no periodic status */
    argv[a++] = "0";
    argv[a++] = "--output-ms"; /* no console output */
    argv[a++] = "0";
    argv[a++] = "--keep-ms"; /* nothing forgotten during a phase */
    argv[a++] = "600000";
    for (int u = 0; u < o->users; u++) {
        char name[16], key[32];
        user_name(u, name);
        user_key(u, key);
        snprintf(keys[u], sizeof keys[u], "%s=%s", key, name);
        argv[a++] = "--key";
        argv[a++] = keys[u];
    }
    argv[a] = NULL;

    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        die("fork: %s", strerror(errno));
    if (pid == 0) {
        int fd = open(sd->log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int nul = open("/dev/null", O_RDONLY);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
        }
        if (nul >= 0)
            dup2(nul, STDIN_FILENO);
        execv(o->python, (char *const *)argv);
        fprintf(stderr, "exec %s: %s\n", o->python, strerror(errno));
        _exit(127);
    }
    sd->pid = pid;
    double deadline = real_now() + STANDIN_START_S;
    for (;;) {
        char buf[32] = "";
        FILE *f = fopen(sd->port_file, "r");
        if (f) {
            size_t n = fread(buf, 1, sizeof buf - 1, f);
            fclose(f);
            buf[n] = '\0';
            if (n > 0 && buf[n - 1] == '\n') {
                snprintf(sd->url, sizeof sd->url, "ws://127.0.0.1:%d/task/service",
                         atoi(buf));
                sd->cpu0 = proc_cpu_s(pid);
                return;
            }
        }
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            show_log(sd->log);
            die("the stand-in (%s %s) exited before listening", o->python,
                o->standin);
        }
        if (real_now() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            show_log(sd->log);
            die("the stand-in did not listen within %.0f s", STANDIN_START_S);
        }
        sleep_ms(10);
    }
}

/* What the stand-in saw of one phase. */
struct engine_view {
    size_t executes;
    double *exec_at;       /* owned: receipt times, sorted */
    size_t tasks, completed; /* tasks registered; of them ended COMPLETED */
    double cpu_s;          /* the stand-in's CPU time since it listened */
};

/* SIGTERM, wait for the exit, read the report. */
static void standin_stop(struct standin *sd, struct engine_view *out)
{
    out->cpu_s = proc_cpu_s(sd->pid) - sd->cpu0;
    kill(sd->pid, SIGTERM);
    double deadline = real_now() + STANDIN_STOP_S;
    int status = 0;
    while (waitpid(sd->pid, &status, WNOHANG) != sd->pid) {
        if (real_now() > deadline) {
            kill(sd->pid, SIGKILL);
            waitpid(sd->pid, &status, 0);
            show_log(sd->log);
            die("the stand-in did not stop within %.0f s of SIGTERM", STANDIN_STOP_S);
        }
        sleep_ms(10);
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        show_log(sd->log);
        die("the stand-in ended badly (status 0x%x)", status);
    }
    json_error_t je;
    json_t *rep = json_load_file(sd->report, 0, &je);
    json_t *times = json_object_get(rep, "executeTimes");
    if (!json_is_array(times))
        die("the stand-in's report %s has no executeTimes (%s)", sd->report, je.text);
    out->executes = json_array_size(times);
    out->exec_at = xmalloc((out->executes ? out->executes : 1) * sizeof *out->exec_at);
    for (size_t i = 0; i < out->executes; i++)
        out->exec_at[i] = json_number_value(json_array_get(times, i));
    qsort(out->exec_at, out->executes, sizeof *out->exec_at, bench_cmp_double);
    json_t *tasks = json_object_get(rep, "tasks"), *t;
    size_t i;
    out->tasks = json_array_size(tasks);
    out->completed = 0;
    json_array_foreach(tasks, i, t)
        if (json_integer_value(json_object_get(t, "state")) == 5)
            out->completed++;
    json_decref(rep);
}

/* ================================================================ results */

struct result {
    /* at the stand-in, from R (ms) */
    size_t executes;
    double first, p50, p99, max;
    double rate;              /* executes per second, first to last */
    double rate_r;            /* executes per second, R to the last */
    size_t tasks, completed;  /* the stand-in's count of tasks and clean ends */
    double engine_cpu_s;      /* the stand-in's CPU over the phase */
    double client_cpu_s;      /* this process's CPU over the burst */
    double main_cpu_s;        /* of it, the main (service) thread's */
    /* client side */
    size_t ok, failed;        /* runs (tasks) that ended well / not */
    double done_s;            /* every run ended (and, for rrdeploy,
                               * recorded), seconds after R */
    double sent_p50, sent_p99; /* execute handed to the connection, ms */
    /* rrdeploy only */
    double tick_ms;           /* sched_tick at R - lead */
    double submit_max;        /* last job at the executor, ms after R */
    double record_ms;         /* time in executor_record, total */
    double records;           /* executor_record calls that recorded */
    double ended_s;           /* the executor's last FINISHED report, s after R */
};

static void view_to_result(const struct engine_view *v, double r, struct result *out)
{
    out->executes = v->executes;
    double *late = xmalloc((v->executes ? v->executes : 1) * sizeof *late);
    for (size_t i = 0; i < v->executes; i++)
        late[i] = (v->exec_at[i] - r) * 1e3;
    out->first = v->executes ? late[0] : NAN;
    out->p50 = pct_sorted(late, v->executes, 0.50);
    out->p99 = pct_sorted(late, v->executes, 0.99);
    out->max = v->executes ? late[v->executes - 1] : NAN;
    double span = v->executes > 1 ? v->exec_at[v->executes - 1] - v->exec_at[0] : 0;
    out->rate = span > 0 ? (double)(v->executes - 1) / span : NAN;
    out->rate_r = v->executes ? (double)v->executes / (v->exec_at[v->executes - 1] - r)
                              : NAN;
    out->tasks = v->tasks;
    out->completed = v->completed;
    free(late);
}

/* ================================================================ rrdeploy */

/* One job as the bench saw it. */
struct seen {
    int64_t run_id;
    double submit_at;      /* reached the executor (real clock) */
    double sent_at;        /* its STARTED report: execute handed on */
    bool finished;
};

/* The rocketride executor, wrapped: notes when each job reaches it and
 * watches its reports on their way to the scheduler. */
struct wexec {
    struct executor base;   /* first: the executor interface */
    struct executor *inner; /* owned */
    struct seen *jobs;      /* owned, in submit order; sorted by run_id by
                             * wexec_index */
    size_t n, cap;
    size_t started, finished, failed;
    double last_end;        /* latest FINISHED report (executor's clock) */
    char fails[FAILS_SHOWN][256]; /* the first failures' outcome and reason */
};

static int wexec_submit(struct executor *base, const struct sched_job *job)
{
    struct wexec *w = (struct wexec *)base;
    double at = real_now();
    if (w->n == w->cap) {
        w->cap = w->cap ? w->cap * 2 : 1024;
        w->jobs = xrealloc(w->jobs, w->cap * sizeof *w->jobs);
    }
    w->jobs[w->n++] = (struct seen){.run_id = job->run_id, .submit_at = at};
    return executor_submit(w->inner, job);
}

static int wexec_cancel(struct executor *base, int64_t run_id, enum store_outcome as)
{
    return executor_cancel(((struct wexec *)base)->inner, run_id, as);
}

static bool wexec_reclaim(struct executor *base, const struct sched_job *job,
                          const struct store_run *r)
{
    return executor_reclaim(((struct wexec *)base)->inner, job, r);
}

static int wexec_active(struct executor *base)
{
    return executor_active(((struct wexec *)base)->inner);
}

static int cmp_seen(const void *a, const void *b)
{
    int64_t x = ((const struct seen *)a)->run_id, y = ((const struct seen *)b)->run_id;
    return x < y ? -1 : x > y;
}

static void wexec_index(struct wexec *w)
{
    qsort(w->jobs, w->n, sizeof *w->jobs, cmp_seen);
}

struct watched {
    struct wexec *w;
    executor_report_fn fn;
    void *ud;
};

static void watch_report(void *ud, const struct sched_report *r)
{
    struct watched *wt = ud;
    struct wexec *w = wt->w;
    struct seen key = {.run_id = r->run_id};
    struct seen *j = bsearch(&key, w->jobs, w->n, sizeof *w->jobs, cmp_seen);
    if (!j)
        die("a report of run %lld, which was never submitted", (long long)r->run_id);
    if (r->kind == SCHED_RUN_STARTED) {
        j->sent_at = r->at;
        w->started++;
    } else if (!j->finished) {
        j->finished = true;
        w->finished++;
        if (r->at > w->last_end)
            w->last_end = r->at;
        if (r->outcome != STORE_RUN_SUCCEEDED && w->failed++ < FAILS_SHOWN)
            snprintf(w->fails[w->failed - 1], sizeof w->fails[0], "run %lld %s: %s",
                     (long long)r->run_id, store_outcome_name(r->outcome),
                     r->reason ? r->reason : "(no reason)");
    }
    wt->fn(wt->ud, r);
}

static int wexec_drain(struct executor *base, int max, executor_report_fn fn, void *ud)
{
    struct wexec *w = (struct wexec *)base;
    struct watched wt = {w, fn, ud};
    return executor_drain(w->inner, max, watch_report, &wt);
}

static void wexec_free(struct executor *base)
{
    struct wexec *w = (struct wexec *)base;
    executor_free(w->inner);
    w->inner = NULL;
    free(w->jobs);
    w->jobs = NULL;
}

static const struct executor_ops wexec_ops = {
    .name = "bench-rocketride",
    .detaches = true,
    .submit = wexec_submit,
    .cancel = wexec_cancel,
    .reclaim = wexec_reclaim,
    .active = wexec_active,
    .drain = wexec_drain,
    .free = wexec_free,
};

/* A fresh store in dir with n deployments due at `due` (engine time), each
 * with its owner's engine credential sealed by v. */
static struct store *make_store(const struct opts *o, const char *dir,
                                const struct vault *v, int64_t due)
{
    char db[300];
    snprintf(db, sizeof db, "%s/bench.db", dir);
    struct store *st;
    struct err e = {0};
    int rc = store_open(db, &st, &e);
    if (rc)
        die("store_open %s: %s %s", db, err_str(rc), e.msg);
    struct cronx *cx;
    if ((rc = cronx_parse("* * * * *", "UTC", &cx, &e)) != 0)
        die("cronx_parse: %s", e.msg);
    double t_setup = (double)due - 30;
    int64_t next = sched_next_fire(cx, STORE_ACTIVE, 0, t_setup);
    cronx_free(cx);
    if (next != due)
        die("the due instant is not a minute");
    for (size_t i = 0; i < o->n; i++) {
        if (i % INSERT_BATCH == 0 && (rc = store_batch_begin(st)) != 0)
            die("store_batch_begin: %s", err_str(rc));
        char user[16], key[32], pid[24], pipeline[512];
        user_name((int)(i % (size_t)o->users), user);
        user_key((int)(i % (size_t)o->users), key);
        project_id(i, pid);
        pipeline_text(pid, pipeline, sizeof pipeline);
        unsigned char *sealed;
        size_t nsealed;
        if ((rc = vault_seal(v, user, pid, key, strlen(key), &sealed, &nsealed)) != 0)
            die("vault_seal: %s", err_str(rc));
        /* added by the owner with their RocketRide key: the engine checks it
         * at every run */
        struct store_dep d = {
            .user = user, .project_id = pid, .pipeline = pipeline,
            .schedule = "* * * * *", .state = STORE_ACTIVE, .created_by = user,
            .owner_key_id = SCHED_ENGINE_KEY_ID, .created_at = t_setup,
            .updated_at = t_setup, .next_run_at = (double)next,
            .credential = sealed, .credential_len = nsealed,
        };
        if ((rc = store_dep_insert(st, &d, 0)) != 0)
            die("store_dep_insert: %s", err_str(rc));
        free(sealed);
        if (((i + 1) % INSERT_BATCH == 0 || i + 1 == o->n) &&
            (rc = store_batch_commit(st)) != 0)
            die("store_batch_commit: %s", err_str(rc));
    }
    return st;
}

static void remove_store(const char *dir)
{
    const char *sfx[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        char p[300];
        snprintf(p, sizeof p, "%s/bench.db%s", dir, sfx[i]);
        unlink(p);
    }
}

static void phase_rrdeploy(const struct opts *o, const char *dir, int round,
                           struct result *res)
{
    memset(res, 0, sizeof *res);
    char vpath[300];
    snprintf(vpath, sizeof vpath, "%s/secret", dir);
    struct vault *v;
    struct err e = {0};
    if (vault_open(vpath, &v, &e) != 0)
        die("vault_open: %s", e.msg);
    /* Engine time: the due minute D maps to the real second R. */
    const int64_t D = 1893456000; /* 2030-01-01T00:00:00Z */
    struct store *st = make_store(o, dir, v, D);

    char tag[32];
    snprintf(tag, sizeof tag, "r%d-rrdeploy", round);
    struct standin sd;
    standin_start(&sd, o, dir, tag);

    struct rocketride_config rc;
    rocketride_config_defaults(&rc);
    rc.url = sd.url;
    rc.vault = v;
    rc.max_runs = o->max_runs > 0 ? o->max_runs : (int)o->n;
    rc.wake = bench_wake;
    struct wexec w = {.base.ops = &wexec_ops};
    w.inner = rocketride_new(&rc, &e);
    if (!w.inner)
        die("rocketride_new: %s", e.msg);

    struct sched_config cfg;
    sched_config_defaults(&cfg);
    struct sched_exec ex = executor_sched_exec(&w.base);
    struct sched *s = sched_new(st, &cfg, &ex);

    double r = ceil(real_now()) + 2.0;
    double offset = (double)D - r;
    int irc = sched_load(s, real_now() + offset);
    if (irc)
        die("sched_load: %s", err_str(irc));

    sleep_until_real(r - SCHED_TICK_LEAD);
    double t0 = real_now();
    int fired = sched_tick(s, real_now() + offset, SCHED_TICK_LEAD, 0);
    res->tick_ms = (real_now() - t0) * 1e3;
    if (fired != (int)o->n)
        die("%d of %zu deployments were decided", fired, o->n);
    sleep_until_real(r);
    double cpu0 = self_cpu_s(), tcpu0 = thread_cpu_s();
    int released = sched_release(s, real_now() + offset);
    if (released != (int)o->n || w.n != o->n)
        die("%d runs released, %zu reached the executor, of %zu", released, w.n, o->n);
    res->submit_max = 0;
    for (size_t i = 0; i < w.n; i++)
        if ((w.jobs[i].submit_at - r) * 1e3 > res->submit_max)
            res->submit_max = (w.jobs[i].submit_at - r) * 1e3;
    wexec_index(&w);

    /* As the daemon's wake-up: every report waiting, in one transaction
     * (stamped with the engine's clock, as the daemon does with a test
     * clock; the bench has the reports' own times from the wrapper). */
    double deadline = real_now() + PHASE_TIMEOUT_S;
    while (w.finished < o->n) {
        if (real_now() > deadline)
            die("rrdeploy: %zu of %zu runs finished after %.0f s", w.finished, o->n,
                PHASE_TIMEOUT_S);
        bench_wait_wake(100);
        double a = real_now();
        if (executor_record(&w.base, s, st, real_now() + offset, 0) > 0)
            res->records++;
        res->record_ms += (real_now() - a) * 1e3;
    }
    res->done_s = real_now() - r;
    res->ended_s = w.last_end - r;
    res->client_cpu_s = self_cpu_s() - cpu0;
    res->main_cpu_s = thread_cpu_s() - tcpu0;

    double *sent = xmalloc(o->n * sizeof *sent);
    for (size_t i = 0; i < o->n; i++)
        sent[i] = (w.jobs[i].sent_at - r) * 1e3;
    qsort(sent, o->n, sizeof *sent, bench_cmp_double);
    res->sent_p50 = pct_sorted(sent, o->n, 0.50);
    res->sent_p99 = pct_sorted(sent, o->n, 0.99);
    free(sent);
    res->ok = w.finished - w.failed;
    res->failed = w.failed;
    size_t started = w.started;
    char fails[FAILS_SHOWN][256];
    memcpy(fails, w.fails, sizeof fails);

    executor_free(&w.base); /* w is on the stack: frees what it holds */
    sched_free(s);
    store_close(st);
    vault_free(v);
    struct engine_view ev;
    standin_stop(&sd, &ev);
    res->engine_cpu_s = ev.cpu_s;
    view_to_result(&ev, r, res);
    free(ev.exec_at);
    if (!o->keep) {
        remove_store(dir);
        unlink(vpath);
    }

    if (res->failed || started != o->n || res->executes != o->n ||
        res->completed != o->n) {
        fprintf(stderr, "bench_engine: rrdeploy round %d: %zu runs started, %zu "
                "succeeded, %zu did not; the stand-in received %zu executes and "
                "saw %zu of %zu tasks complete\n", round, started, res->ok,
                res->failed, res->executes, res->completed, res->tasks);
        for (size_t i = 0; i < res->failed && i < FAILS_SHOWN; i++)
            fprintf(stderr, "  %s\n", fails[i]);
        die("every run must succeed");
    }
}

/* ================================================================ baseline */

/* One task of the baseline: its connection and where it is. */
struct bconn {
    struct bl *b;
    size_t i;
    struct dap_up_conn *conn;   /* upstream thread; NULL once ended */
    int64_t seq_auth, seq_status, seq_exec;
    double sent_at;             /* execute queued on the connection */
    bool exec_ok, terminal, clean, done;
};

struct bl {
    const struct opts *o;
    struct dap_up *up;          /* set before go */
    atomic_bool go;             /* start the burst */
    bool started;               /* upstream thread */
    struct bconn *c;            /* owned, n of them */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t done, ok;            /* under mu */
    char fail[FAILS_SHOWN][256];
};

static void bl_end(struct bconn *c, bool ok, const char *why)
{
    struct bl *b = c->b;
    if (c->done)
        return;
    c->done = true;
    if (c->conn) {
        dap_up_set_ud(c->conn, NULL);
        dap_up_close(c->conn);
        c->conn = NULL;
    }
    pthread_mutex_lock(&b->mu);
    size_t failed = b->done - b->ok;
    b->done++;
    if (ok)
        b->ok++;
    else if (failed < FAILS_SHOWN)
        snprintf(b->fail[failed], sizeof b->fail[0], "task %zu: %s", c->i, why);
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

static void bl_send(struct bconn *c, const char *command, const char *args, int64_t *seq)
{
    int64_t s = dap_up_request(c->conn, command, args, strlen(args));
    if (seq)
        *seq = s;
}

/* A terminal status event: state 5 or 6. */
static int status_state(const struct dap_msg *m, bool *clean)
{
    json_t *st = json_loadb(m->body.p, m->body.n, 0, NULL);
    int state = (int)json_integer_value(json_object_get(st, "state"));
    const char *msg = json_string_value(json_object_get(st, "exitMessage"));
    *clean = state == 5 && (!msg || !*msg) &&
             json_array_size(json_object_get(st, "errors")) == 0;
    json_decref(st);
    return state;
}

static void bl_on_conn(void *ud, struct dap_up_conn *conn, enum dap_up_event ev,
                       const struct dap_msg *m, const char *why)
{
    (void)conn;
    struct bconn *c = ud;
    if (!c)
        return;
    if (ev == DAP_UP_CLOSED) {
        c->conn = NULL;
        bl_end(c, false, why);
        return;
    }
    if (ev != DAP_UP_MESSAGE)
        return;
    char user[16], pid[24], args[1024];
    user_name((int)(c->i % (size_t)c->b->o->users), user);
    project_id(c->i, pid);
    if (m->is_event) {
        if (!m->event || strcmp(m->event, "apaevt_status_update") != 0 || !m->body.p)
            return;
        bool clean;
        int state = status_state(m, &clean);
        if (state != 5 && state != 6)
            return; /* a fresh engine: the only end is this run's */
        c->terminal = true;
        c->clean = clean;
        if (c->exec_ok)
            bl_end(c, clean, "the task did not end cleanly");
        return;
    }
    if (m->request_seq == c->seq_auth) {
        if (!m->success) {
            bl_end(c, false, m->message ? m->message : "auth refused");
            return;
        }
        char token[36];
        rocketride_task_token(user, pid, SOURCE_ID, token);
        snprintf(args, sizeof args,
                 "{\"projectId\":\"%s\",\"source\":\"" SOURCE_ID "\","
                 "\"types\":[\"summary\",\"task\",\"output\",\"detail\"]}", pid);
        bl_send(c, "rrext_monitor", args, NULL);
        snprintf(args, sizeof args, "{\"token\":\"%s\"}", token);
        bl_send(c, "rrext_get_task_status", args, &c->seq_status);
    } else if (m->request_seq == c->seq_status) {
        char pipeline[512];
        pipeline_text(pid, pipeline, sizeof pipeline);
        snprintf(args, sizeof args,
                 "{\"pipeline\":%s,\"args\":[],\"ttl\":0,\"name\":\"%s\"}", pipeline, pid);
        c->sent_at = real_now();
        bl_send(c, "execute", args, &c->seq_exec);
    } else if (m->request_seq == c->seq_exec) {
        if (!m->success) {
            bl_end(c, false, m->message ? m->message : "execute failed");
            return;
        }
        c->exec_ok = true;
        if (c->terminal)
            bl_end(c, c->clean, "the task did not end cleanly");
    }
}

/* On the upstream thread: at the go, every connection at once. */
static void bl_service(void *ud)
{
    struct bl *b = ud;
    if (b->started || !atomic_load(&b->go))
        return;
    b->started = true;
    for (size_t i = 0; i < b->o->n; i++) {
        struct bconn *c = &b->c[i];
        char key[32], args[128];
        user_key((int)(i % (size_t)b->o->users), key);
        snprintf(args, sizeof args,
                 "{\"auth\":\"%s\",\"clientName\":\"bench\",\"clientVersion\":\"0\"}", key);
        c->conn = dap_up_connect(b->up, bl_on_conn, c);
        bl_send(c, "auth", args, &c->seq_auth);
    }
}

static void phase_baseline(const struct opts *o, const char *dir, int round,
                           struct result *res)
{
    memset(res, 0, sizeof *res);
    char tag[32];
    snprintf(tag, sizeof tag, "r%d-baseline", round);
    struct standin sd;
    standin_start(&sd, o, dir, tag);

    struct bl b = {.o = o};
    pthread_mutex_init(&b.mu, NULL);
    pthread_cond_init(&b.cv, NULL);
    atomic_init(&b.go, false);
    b.c = xcalloc(o->n, sizeof *b.c);
    for (size_t i = 0; i < o->n; i++) {
        b.c[i].b = &b;
        b.c[i].i = i;
    }
    struct dap_up_config uc;
    dap_up_config_defaults(&uc);
    struct err e = {0};
    if (dap_url_parse(sd.url, &uc.url, &e) != 0)
        die("dap_url_parse %s: %s", sd.url, e.msg);
    uc.service = bl_service;
    uc.ud = &b;
    b.up = dap_up_start(&uc, &e);
    if (!b.up)
        die("dap_up_start: %s", e.msg);

    double r = ceil(real_now()) + 2.0;
    sleep_until_real(r);
    double cpu0 = self_cpu_s();
    atomic_store(&b.go, true);
    dap_up_wake(b.up);
    double deadline = real_now() + PHASE_TIMEOUT_S;
    pthread_mutex_lock(&b.mu);
    while (b.done < o->n && real_now() < deadline) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100 * 1000000;
        ts.tv_sec += ts.tv_nsec / 1000000000;
        ts.tv_nsec %= 1000000000;
        pthread_cond_timedwait(&b.cv, &b.mu, &ts);
    }
    size_t done = b.done;
    res->ok = b.ok;
    pthread_mutex_unlock(&b.mu);
    res->done_s = real_now() - r;
    res->client_cpu_s = self_cpu_s() - cpu0;
    dap_up_stop(b.up); /* the thread is gone: b.c is ours again */
    res->failed = o->n - res->ok;
    double *sent = xmalloc(o->n * sizeof *sent);
    size_t ns = 0;
    for (size_t i = 0; i < o->n; i++)
        if (b.c[i].sent_at > 0)
            sent[ns++] = (b.c[i].sent_at - r) * 1e3;
    qsort(sent, ns, sizeof *sent, bench_cmp_double);
    res->sent_p50 = pct_sorted(sent, ns, 0.50);
    res->sent_p99 = pct_sorted(sent, ns, 0.99);
    free(sent);
    free(b.c);
    pthread_cond_destroy(&b.cv);
    pthread_mutex_destroy(&b.mu);

    struct engine_view ev;
    standin_stop(&sd, &ev);
    res->engine_cpu_s = ev.cpu_s;
    view_to_result(&ev, r, res);
    free(ev.exec_at);
    if (done < o->n || res->failed || res->executes != o->n) {
        fprintf(stderr, "bench_engine: baseline round %d: %zu of %zu tasks ended, "
                "%zu well; the stand-in received %zu executes\n", round, done, o->n,
                res->ok, res->executes);
        for (size_t i = 0; i < res->failed && i < FAILS_SHOWN; i++)
            fprintf(stderr, "  %s\n", b.fail[i]);
        die("every task must succeed");
    }
}

/* ================================================================ main */

static void print_head(void)
{
    printf("   %-6s %-9s %8s %9s %9s %9s %9s %8s %8s %8s %8s %8s %8s\n", "round",
           "client", "executes", "first ms", "p50 ms", "p99 ms", "max ms",
           "N/max", "1st-last", "sent p50", "sent p99", "all end", "eng cpu");
}

static void print_row(const char *round, const char *who, const struct result *r)
{
    printf("   %-6s %-9s %8zu %9.1f %9.1f %9.1f %9.1f %8.0f %8.0f %8.1f %8.1f %7.2fs "
           "%7.2fs\n",
           round, who, r->executes, r->first, r->p50, r->p99, r->max, r->rate_r,
           r->rate, r->sent_p50, r->sent_p99, r->done_s, r->engine_cpu_s);
}

/* Median over k rounds of the double at offset `off` of struct result. */
static double med_of(const struct result *v, int k, size_t off)
{
    double x[MAX_ROUNDS];
    for (int i = 0; i < k; i++)
        memcpy(&x[i], (const char *)&v[i] + off, sizeof x[i]);
    return bench_median(x, (size_t)k);
}

static void median_result(const struct result *v, int k, struct result *out)
{
    static const size_t fields[] = {
        offsetof(struct result, first), offsetof(struct result, p50),
        offsetof(struct result, p99), offsetof(struct result, max),
        offsetof(struct result, rate), offsetof(struct result, rate_r),
        offsetof(struct result, sent_p50),
        offsetof(struct result, sent_p99), offsetof(struct result, done_s),
        offsetof(struct result, engine_cpu_s), offsetof(struct result, client_cpu_s),
        offsetof(struct result, main_cpu_s),
        offsetof(struct result, tick_ms), offsetof(struct result, submit_max),
        offsetof(struct result, record_ms), offsetof(struct result, records),
        offsetof(struct result, ended_s)};
    memset(out, 0, sizeof *out);
    out->executes = v[0].executes;
    for (size_t f = 0; f < sizeof fields / sizeof *fields; f++) {
        double m = med_of(v, k, fields[f]);
        memcpy((char *)out + fields[f], &m, sizeof m);
    }
}

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_engine [-n deployments] [-u owners] [-r rounds] [-m max-runs]\n"
            "                    [--init-ms MS] [--ready-ms MS] [--run-ms MS]\n"
            "                    [--python PATH] [--standin PATH] [-d dir] [--keep]\n"
            "defaults: -n 1000 -u 10 -r 5 -m N --init-ms 5 --ready-ms 30 --run-ms 100\n"
            "          --python " BENCH_PYTHON "\n"
            "          --standin " BENCH_STANDIN "\n");
    exit(2);
}

int main(int argc, char **argv)
{
    struct opts o = {.n = 1000, .users = 10, .rounds = 5, .max_runs = 0,
                     .init_ms = 5, .ready_ms = 30, .run_ms = 100,
                     .python = BENCH_PYTHON, .standin = BENCH_STANDIN,
                     .base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp"};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has = i + 1 < argc;
        if (strcmp(a, "--keep") == 0)
            o.keep = true;
        else if (has && strcmp(a, "-n") == 0)
            o.n = strtoul(argv[++i], NULL, 10);
        else if (has && strcmp(a, "-u") == 0)
            o.users = atoi(argv[++i]);
        else if (has && strcmp(a, "-r") == 0)
            o.rounds = atoi(argv[++i]);
        else if (has && strcmp(a, "-m") == 0)
            o.max_runs = atoi(argv[++i]);
        else if (has && strcmp(a, "--init-ms") == 0)
            o.init_ms = strtod(argv[++i], NULL);
        else if (has && strcmp(a, "--ready-ms") == 0)
            o.ready_ms = strtod(argv[++i], NULL);
        else if (has && strcmp(a, "--run-ms") == 0)
            o.run_ms = strtod(argv[++i], NULL);
        else if (has && strcmp(a, "--python") == 0)
            o.python = argv[++i];
        else if (has && strcmp(a, "--standin") == 0)
            o.standin = argv[++i];
        else if (has && strcmp(a, "-d") == 0)
            o.base = argv[++i];
        else
            usage();
    }
    if (o.n < 2 || o.n > 100000 || o.users < 1 || o.users > 64 || o.rounds < 1 ||
        o.rounds > MAX_ROUNDS || o.max_runs < 0)
        usage();
    if (access(o.standin, R_OK) != 0)
        die("no stand-in at %s (--standin)", o.standin);
    /* one descriptor per connection, on both sides of the loopback */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < o.n + 256) {
        rl.rlim_cur = rl.rlim_max < o.n + 256 ? rl.rlim_max : o.n + 256;
        setrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur < o.n + 256)
            die("the open-file limit (%llu) is too small for %zu connections",
                (unsigned long long)rl.rlim_cur, o.n);
    }
    log_configure(LOG_WARN, LOG_FORMAT_TEXT);
    lws_set_log_level(LLL_ERR | LLL_WARN, NULL); /* not its start-up notices */
    signal(SIGPIPE, SIG_IGN);

    char dir[256];
    snprintf(dir, sizeof dir, "%s/bench_engine.XXXXXX", o.base);
    if (!mkdtemp(dir))
        die("mkdtemp %s: %s", dir, strerror(errno));

    char cpu[128], date[32];
    bench_cpu_model(cpu, sizeof cpu);
    time_t tnow = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", gmtime(&tnow));
    int max_runs = o.max_runs > 0 ? o.max_runs : (int)o.n;
    printf("bench_engine  %s  nproc=%ld  cpu=%s\n", date,
           sysconf(_SC_NPROCESSORS_ONLN), cpu);
    printf("%zu deployments ('* * * * *', %d owners, one engine key each, credentials "
           "sealed) due in the same second;\nthe stand-in engine (%s) per phase, fresh: "
           "filesys batch tasks, init %g ms, ready %g ms, run %g ms, no periodic "
           "status, no output\n",
           o.n, o.users, o.standin, o.init_ms, o.ready_ms, o.run_ms);
    printf("rrdeploy: sched_tick(SCHED_TICK_LEAD) 1 s before the due second R, "
           "sched_release at R, rocketride executor (max_runs %d), executor_record "
           "per wake-up\nbaseline: the same client library (dap/upstream.h) opens %zu "
           "connections at R, each auth, rrext_monitor + rrext_get_task_status, "
           "execute, waits for the end\n",
           max_runs, o.n);
    printf("lateness = the stand-in's receipt of each execute - R (ms); runs started "
           "per second: N/max = N / (last receipt - R), 1st-last = (N-1) / (last "
           "receipt - first);\nsent = execute handed to the connection (client clock, "
           "ms after R); all end = every run ended (rrdeploy: and recorded), s after "
           "R;\neng cpu = the stand-in's CPU time from listening to its stop\n\n");
    print_head();

    struct result base[MAX_ROUNDS], rr[MAX_ROUNDS];
    for (int k = 0; k < o.rounds; k++) {
        char label[16];
        snprintf(label, sizeof label, "%d", k + 1);
        /* alternate which goes first */
        if (k % 2 == 0) {
            phase_baseline(&o, dir, k + 1, &base[k]);
            print_row(label, "baseline", &base[k]);
            phase_rrdeploy(&o, dir, k + 1, &rr[k]);
            print_row(label, "rrdeploy", &rr[k]);
        } else {
            phase_rrdeploy(&o, dir, k + 1, &rr[k]);
            print_row(label, "rrdeploy", &rr[k]);
            phase_baseline(&o, dir, k + 1, &base[k]);
            print_row(label, "baseline", &base[k]);
        }
        printf("   %-6s %-9s tick %.1f ms before R; jobs at the executor by +%.1f ms; "
               "last run ended +%.2f s; %.0f recordings, %.1f ms in all; client CPU "
               "%.2f s, %.2f s of it on the service thread (baseline %.2f s)\n",
               "", "", rr[k].tick_ms, rr[k].submit_max, rr[k].ended_s, rr[k].records,
               rr[k].record_ms, rr[k].client_cpu_s, rr[k].main_cpu_s,
               base[k].client_cpu_s);
        fflush(stdout);
    }
    struct result mb, mr;
    median_result(base, o.rounds, &mb);
    median_result(rr, o.rounds, &mr);
    print_row("med", "baseline", &mb);
    print_row("med", "rrdeploy", &mr);

    printf("\nsummary (medians of %d rounds)          rrdeploy   baseline   ratio\n",
           o.rounds);
    printf("runs started per second, N/max        %9.0f  %9.0f   %5.2f\n", mr.rate_r,
           mb.rate_r, mr.rate_r / mb.rate_r);
    printf("runs started per second, 1st-last     %9.0f  %9.0f   %5.2f\n", mr.rate,
           mb.rate, mr.rate / mb.rate);
    printf("execute lateness p50, ms              %9.1f  %9.1f   %5.2f\n", mr.p50,
           mb.p50, mr.p50 / mb.p50);
    printf("execute lateness p99, ms              %9.1f  %9.1f   %5.2f\n", mr.p99,
           mb.p99, mr.p99 / mb.p99);
    printf("execute lateness max, ms              %9.1f  %9.1f   %5.2f\n", mr.max,
           mb.max, mr.max / mb.max);
    printf("every run ended, s after R            %9.2f  %9.2f   %5.2f\n", mr.done_s,
           mb.done_s, mr.done_s / mb.done_s);
    printf("client CPU over the burst, s          %9.2f  %9.2f   %5.2f\n",
           mr.client_cpu_s, mb.client_cpu_s, mr.client_cpu_s / mb.client_cpu_s);
    printf("stand-in CPU, s                       %9.2f  %9.2f   %5.2f\n",
           mr.engine_cpu_s, mb.engine_cpu_s, mr.engine_cpu_s / mb.engine_cpu_s);

    if (!o.keep) {
        char p[300];
        const char *files[] = {"port", "report.json", "standin.log"};
        for (int k = 0; k < o.rounds; k++)
            for (int w = 0; w < 2; w++)
                for (int f = 0; f < 3; f++) {
                    snprintf(p, sizeof p, "%s/r%d-%s.%s", dir, k + 1,
                             w ? "rrdeploy" : "baseline", files[f]);
                    unlink(p);
                }
        rmdir(dir);
    } else {
        printf("\nkept: %s\n", dir);
    }
    return 0;
}
