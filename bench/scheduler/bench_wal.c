/* bench_wal.c -- the database's WAL under sustained ticks.
 *
 * Purpose: show the WAL stays bounded (target: under 64 MiB) while the
 * scheduler decides tick after tick for many deployments, as a server does
 * with the checkpointer running; and print what a tick costs meanwhile.
 *
 * Design: a temp database with N every-minute deployments (default 10,000)
 * added through sched_add, the store's checkpointer started as the daemon
 * starts it, and an executor that reports every run started and succeeded
 * at once (through executor_record, one transaction per tick, as the daemon
 * records reports). The simulated clock steps minute by minute for T ticks
 * (default 200), as fast as the machine allows -- harder on the checkpointer
 * than one tick a minute. After every tick the -wal file's size is read.
 * Prints the largest and the final WAL, the database size, and the median
 * and worst tick; PASS/MISS against 64 MiB. Not a test.
 *
 * Thread: single-threaded, but for the store's checkpointer thread. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bench/common/bench_util.h"
#include "runner/executor.h"
#include "scheduler/scheduler.h"
#include "store/store.h"

#define T0 1893456000.0 /* 2030-01-01T00:00:00Z */

/* An executor whose runs start and succeed as soon as they are drained. */
struct instant {
    struct executor base;    /* first: the executor interface */
    int64_t *ids;            /* owned: runs submitted, not yet reported */
    size_t n, cap;
};

static int instant_submit(struct executor *x, const struct sched_job *job)
{
    struct instant *in = (struct instant *)x;
    if (in->n == in->cap) {
        in->cap = in->cap ? in->cap * 2 : 1024;
        in->ids = xrealloc(in->ids, in->cap * sizeof *in->ids);
    }
    in->ids[in->n++] = job->run_id;
    return 0;
}

static int instant_cancel(struct executor *x, int64_t id, enum store_outcome as)
{
    (void)x, (void)id, (void)as;
    return RR_E_NOTFOUND;
}

static bool instant_reclaim(struct executor *x, const struct sched_job *job,
                            const struct store_run *r)
{
    (void)x, (void)job, (void)r;
    return false;
}

static int instant_active(struct executor *x)
{
    return (int)((struct instant *)x)->n;
}

static int instant_drain(struct executor *x, int max, executor_report_fn fn,
                         void *ud)
{
    (void)max; /* the bench always records everything */
    struct instant *in = (struct instant *)x;
    double at = T0; /* overridden by executor_record's time */
    for (size_t i = 0; i < in->n; i++) {
        struct sched_report r = {.kind = SCHED_RUN_STARTED, .run_id = in->ids[i],
                                 .at = at};
        fn(ud, &r);
        r.kind = SCHED_RUN_FINISHED;
        r.outcome = STORE_RUN_SUCCEEDED;
        r.exit_code = 0;
        r.started = true;
        r.output = "ok\n";
        r.output_len = 3;
        fn(ud, &r);
    }
    int n = (int)in->n * 2;
    in->n = 0;
    return n;
}

static void instant_free(struct executor *x)
{
    free(((struct instant *)x)->ids);
}

static const struct executor_ops instant_ops = {
    .name = "instant",
    .submit = instant_submit,
    .cancel = instant_cancel,
    .reclaim = instant_reclaim,
    .active = instant_active,
    .drain = instant_drain,
    .free = instant_free,
};

static void die(const char *what, int rc, const struct err *e)
{
    fprintf(stderr, "bench_wal: %s: %s%s%s\n", what, err_str(rc),
            e && e->msg[0] ? ": " : "", e && e->msg[0] ? e->msg : "");
    exit(1);
}

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static long long file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (long long)sb.st_size : 0;
}

static void remove_db(const char *dir, const char *db)
{
    const char *sfx[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        char p[128];
        snprintf(p, sizeof p, "%s%s", db, sfx[i]);
        unlink(p);
    }
    rmdir(dir);
}

static void add_all(struct sched *s, struct store *st, long n)
{
    struct err e = {0};
    int rc = store_batch_begin(st);
    if (rc)
        die("batch", rc, NULL);
    for (long i = 0; i < n; i++) {
        char pid[32], pipe[64];
        snprintf(pid, sizeof pid, "w%06ld", i);
        snprintf(pipe, sizeof pipe, "{\"project_id\":\"%s\"}", pid);
        struct store_dep d = {.user = "bench", .project_id = pid, .pipeline = pipe,
                              .schedule = "* * * * *", .created_by = "bench",
                              .owner_key_id = (char *)SCHED_DEV_KEY_ID};
        struct cronx *cx;
        if ((rc = sched_parse(s, d.schedule, d.user, d.project_id, NULL, 0, &cx, &e)) != 0)
            die("parse", rc, &e);
        if ((rc = sched_add(s, &d, cx, 0, T0, &e)) != 0)
            die("add", rc, &e);
    }
    if ((rc = store_batch_commit(st)) != 0)
        die("commit", rc, NULL);
}

int main(int argc, char **argv)
{
    long n = 10000, ticks = 200;
    int opt;
    while ((opt = getopt(argc, argv, "n:t:")) != -1) {
        if (opt == 'n')
            n = strtol(optarg, NULL, 10);
        else if (opt == 't')
            ticks = strtol(optarg, NULL, 10);
        else {
            fprintf(stderr, "usage: bench_wal [-n deployments] [-t ticks]\n");
            return 2;
        }
    }
    log_configure(LOG_WARN, LOG_FORMAT_TEXT);
    char dir[] = "/tmp/rr-bench-wal-XXXXXX";
    if (!mkdtemp(dir))
        die("mkdtemp", RR_E_IO, NULL);
    char db[96], wal[104];
    snprintf(db, sizeof db, "%s/bench.db", dir);
    snprintf(wal, sizeof wal, "%s-wal", db);
    struct store *st;
    struct err e = {0};
    int rc = store_open(db, &st, &e);
    if (rc)
        die("open", rc, &e);
    if ((rc = store_checkpointer_start(st, 0, &e)) != 0)
        die("checkpointer", rc, &e);
    struct instant in = {.base.ops = &instant_ops};
    struct sched_config sc;
    sched_config_defaults(&sc);
    sc.dev_key_present = true;
    struct sched_exec ex = executor_sched_exec(&in.base);
    struct sched *s = sched_new(st, &sc, &ex);
    if ((rc = sched_load(s, T0)) != 0)
        die("load", rc, NULL);
    add_all(s, st, n);

    char cpu[128];
    bench_cpu_model(cpu, sizeof cpu);
    printf("bench_wal: %ld every-minute deployments, %ld ticks back to back, "
           "checkpointer running (%s)\n", n, ticks, cpu);
    double *tick_ms = xmalloc((size_t)ticks * sizeof *tick_ms);
    long long most = 0;
    for (long k = 0; k < ticks; k++) {
        double now = T0 + 60.0 * (double)(k + 1);
        double t0 = mono_now();
        int fired = sched_tick(s, now, 0, 0);
        executor_record(&in.base, s, st, now + 1, 0);
        tick_ms[k] = (mono_now() - t0) * 1e3;
        if (fired != n)
            fprintf(stderr, "bench_wal: tick %ld decided %d of %ld\n", k, fired, n);
        long long w = file_size(wal);
        if (w > most)
            most = w;
    }
    double med = bench_median(tick_ms, (size_t)ticks), worst = 0;
    for (long k = 0; k < ticks; k++)
        worst = tick_ms[k] > worst ? tick_ms[k] : worst;
    long long final = file_size(wal);
    printf("  tick (decide %ld + record %ld reports): median %.1f ms, worst %.1f ms\n",
           n, 2 * n, med, worst);
    printf("  WAL: largest after a tick %.1f MiB, at the end %.1f MiB; database "
           "%.1f MiB\n", most / 1048576.0, final / 1048576.0,
           file_size(db) / 1048576.0);
    printf("WAL under 64 MiB                            %s\n",
           most < STORE_WAL_LIMIT ? "PASS" : "MISS");

    free(tick_ms);
    sched_free(s);
    executor_free(&in.base);
    store_close(st);
    remove_db(dir, db);
    return 0;
}
