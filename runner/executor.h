/* executor.h -- the executors: the ways of running a deployment's pipeline.
 *
 * Each executor (one file each) runs pipelines off the service thread,
 * behind one small interface: submit a job, cancel a run, and reports of
 * runs that started or finished, which the daemon collects on its service
 * thread (executor_record) and hands to the scheduler. `exec` (exec.c) runs a
 * shell command per run as a child process. No event loop and no sockets
 * here: executors are unit-tested on their own.
 * Thread: every call on the service thread unless said otherwise. */
#ifndef RR_RUNNER_EXECUTOR_H
#define RR_RUNNER_EXECUTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "scheduler/scheduler.h"
#include "store/store.h"
#include "util/util.h"

struct executor;

/* Called by executor_drain, on the service thread, once per report; r and
 * its strings are borrowed for the call. */
typedef void (*executor_report_fn)(void *ud, const struct sched_report *r);

/* What every executor implements. */
struct executor_ops {
    const char *name;
    /* Take a run (the job is borrowed: copy what is needed). 0, or a
     * negative code and the run never starts. */
    int (*submit)(struct executor *x, const struct sched_job *job);
    /* Stop a queued or running run; it finishes as `as` (cancelled or
     * interrupted) unless it had already been stopped. 0 or RR_E_NOTFOUND
     * (it has finished); RR_E_INVAL for another `as`. */
    int (*cancel)(struct executor *x, int64_t run_id, enum store_outcome as);
    /* At start-up: a run a previous server left queued or running; stop
     * whatever of it is still going. */
    void (*reclaim)(struct executor *x, const struct store_run *r);
    /* Runs taken and not yet reported finished. */
    int (*active)(struct executor *x);
    /* Hand the pending reports to fn, oldest first, at most max of them
     * (max <= 0: all); returns how many. */
    int (*drain)(struct executor *x, int max, executor_report_fn fn, void *ud);
    /* Stop everything (runs finish as interrupted, their reports dropped)
     * and free. */
    void (*free)(struct executor *x);
};

/* The head of every executor's own struct. */
struct executor {
    const struct executor_ops *ops;
};

int executor_submit(struct executor *x, const struct sched_job *job) MUST_CHECK;
int executor_cancel(struct executor *x, int64_t run_id, enum store_outcome as);
void executor_reclaim(struct executor *x, const struct store_run *r);
int executor_active(struct executor *x);
int executor_drain(struct executor *x, int max, executor_report_fn fn, void *ud);
void executor_free(struct executor *x); /* NULL is fine */

/* The executor as the scheduler sees it (struct sched_exec for sched_new). */
struct sched_exec executor_sched_exec(struct executor *x);

/* Record the pending reports of x in s, at most max of them (max <= 0:
 * all), in one store transaction: after a burst of thousands of runs, one
 * fsync instead of two per run. `at`, when not 0, replaces the reports' own
 * times (a test clock). Returns how many were recorded; max of them means
 * more may be waiting. */
int executor_record(struct executor *x, struct sched *s, struct store *st,
                    double at, int max);

/* ---------------------------------------------------------------- exec */

/* The `exec` executor (docs/runs.md): each run is `/bin/sh -c CMD` in its
 * own process group, with the pipeline JSON on stdin, a clean environment
 * (below), and stdout+stderr captured (the last output_max bytes kept). A supervisor
 * thread owns every child: it spawns, feeds stdin, reads output, enforces
 * the timeout (SIGTERM to the group, SIGKILL after kill_grace_s) and reaps.
 * At most max_runs run at once; further jobs wait in FIFO order and are
 * never dropped. With no cmd every run fails with "no executor configured". */
struct exec_config {
    const char *cmd;          /* shell command; NULL = no executor configured */
    int max_runs;             /* concurrent runs (default 64) */
    double timeout_s;         /* per run (default 3600); <= 0 = none */
    double kill_grace_s;      /* SIGTERM -> SIGKILL delay (default 10) */
    size_t output_max;        /* bytes of output kept (default 64 KiB), at
                               * most EXEC_OUTPUT_LIMIT */
    /* A run's environment is built the way systemd builds a unit's, not
     * inherited: from the server's environment only PATH (EXEC_DEFAULT_PATH
     * when unset or empty), LANG, every LC_* and TZ; HOME of the effective
     * user from the password database; then the names in pass_env that the
     * server's environment has, then run_env; then the run's own RR_* and
     * its mark RRDEPLOY_RUN. A later entry replaces an earlier one of the
     * same name. Entries must pass exec_env_check. Both arrays and their
     * strings are borrowed for exec_new, which copies what it keeps. */
    const char *const *run_env;  /* "NAME=VALUE", set in every run */
    size_t nrun_env;
    const char *const *pass_env; /* "NAME", copied from the server's
                                  * environment when set there */
    size_t npass_env;
    /* Called from the supervisor thread when reports are waiting: it must be
     * safe from any thread, and lead to executor_drain on the service
     * thread. */
    void (*wake)(void *ud);
    void *wake_ud;
};
void exec_config_defaults(struct exec_config *cfg);

#define EXEC_OUTPUT_DEFAULT (64 * 1024)      /* output_max by default */
#define EXEC_OUTPUT_LIMIT (16 * 1024 * 1024) /* the most output_max may be */
#define EXEC_DEFAULT_PATH "/usr/local/bin:/usr/bin:/bin"

/* Check one operator entry for runs' environment: "NAME=VALUE" (with_value,
 * for run_env) or "NAME" (for pass_env). NAME must be
 * [A-Za-z_][A-Za-z0-9_]*, not one the server sets in every run (RR_PROJECT_ID,
 * RR_USER_ID, RR_RUN_ID, RR_TRIGGER, RR_SCHEDULED_AT, RRDEPLOY_RUN) and not
 * a secret of the server (ROCKETRIDE_APIKEY, its development API key). 0, or
 * RR_E_INVAL with the reason in e, which names the variable but never
 * shows a value. */
int exec_env_check(const char *entry, bool with_value, struct err *e);

/* Start the supervisor. NULL if it cannot (the reason in e): RR_E_INVAL for
 * max_runs < 1, an empty cmd, output_max over EXEC_OUTPUT_LIMIT or an entry
 * exec_env_check refuses. cfg is borrowed for the call (cmd and the
 * environment are copied). The executor's free blocks at most
 * kill_grace_s + 1 s. */
struct executor *exec_new(const struct exec_config *cfg, struct err *e);

/* The start time of process pid (clock ticks since boot, /proc/PID/stat
 * field 22): with the pid it names one process for the life of the system.
 * 0 and *out, or RR_E_NOTFOUND. */
int exec_proc_start(int pid, uint64_t *out);

/* After a crash: SIGKILL the process group `pgid` a previous server left
 * running, if it is still that run's group -- its leader alive with the same
 * start time, or the leader gone and only its orphans left (a group id cannot
 * be reused while any member lives). Returns 1 if a group was signalled, 0 if
 * nothing of it was left, or it is someone else's now. */
int exec_kill_stale(int pgid, uint64_t leader_start);

#endif
