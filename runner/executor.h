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
#include <pthread.h>
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
    /* Runs outlive the server (they run elsewhere): at shutdown they are
     * left running, not waited for, and the next start adopts them. */
    bool detaches;
    /* Take a run (the job is borrowed: copy what is needed). 0, or a
     * negative code and the run never starts. */
    int (*submit)(struct executor *x, const struct sched_job *job);
    /* Stop a queued or running run; it finishes as `as` (cancelled or
     * interrupted) unless it had already been stopped. 0 or RR_E_NOTFOUND
     * (it has finished); RR_E_INVAL for another `as`. */
    int (*cancel)(struct executor *x, int64_t run_id, enum store_outcome as);
    /* At start-up, a run a previous server left running, and the job it
     * was (its deployment's pipeline and credential now): true when the
     * executor adopts it -- it still runs and will be reported as usual;
     * false when whatever is left of it was stopped (the run is then
     * recorded interrupted). */
    bool (*reclaim)(struct executor *x, const struct sched_job *job,
                    const struct store_run *r);
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
bool executor_reclaim(struct executor *x, const struct sched_job *job,
                      const struct store_run *r);
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

/* ---------------------------------------------------------------- kit
 * What executors share: an output tail, and the queue their threads hand
 * reports to the service thread through. */

/* The last `max` bytes of a stream: memory grows with the output up to max,
 * then the buffer wraps. Zero-initialise, set max. */
struct out_tail {
    char *mem;    /* owned; NULL until the first byte */
    size_t cap;   /* allocated bytes, <= max */
    size_t max;   /* bytes kept */
    size_t start; /* index of the oldest byte */
    size_t len;   /* bytes held */
};
void out_tail_push(struct out_tail *t, const char *p, size_t n);
/* The tail as one NUL-terminated heap string (free()), its length in *len;
 * t is emptied. */
char *out_tail_take(struct out_tail *t, size_t *len);
void out_tail_free(struct out_tail *t);

/* Reports waiting for the service thread, oldest first. Any thread may push;
 * the service thread drains. */
struct report_node;
struct report_queue {
    pthread_mutex_t mu;
    struct report_node *head, *tail;
};
void report_queue_init(struct report_queue *q);
void report_queue_destroy(struct report_queue *q); /* drops what is left */
/* Queue a copy of r (its strings copied). */
void report_queue_push(struct report_queue *q, const struct sched_report *r);
/* executor_ops.drain over the queue. */
int report_queue_drain(struct report_queue *q, int max, executor_report_fn fn,
                       void *ud);

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

/* ---------------------------------------------------------------- rocketride */

/* The `rocketride` executor (docs/engine.md): each run is a task on a
 * RocketRide engine, run as the deployment's owner. A run opens its own
 * connection, authenticates with the owner's credential (sealed with the
 * deployment, opened with the vault only for this), subscribes to the
 * task's events, checks the task is not already running (tokens are
 * deterministic: user, project and source), sends `execute` with ttl 0 and
 * follows the task by events, with status polling as a backstop, to its
 * end. Cancel and the run timeout send `terminate`. Runs outlive rrdeploy:
 * at shutdown they are left running on the engine, and a restart re-attaches
 * them by their task token (reclaim). The same executor checks clients'
 * RocketRide credentials with the engine (rocketride_identify).
 * Everything network happens on one thread of its own (dap/upstream.h). */
struct vault;
struct dap_identity;
struct dap_engine_state;

struct rocketride_config {
    const char *url;           /* --engine: ws(s)://, http(s)://, host:port */
    const struct vault *vault; /* opens owners' credentials; borrowed */
    const char *service_key;   /* credential of deployments added with local
                                * keys; NULL = none. Copied, wiped on free. */
    int max_runs;              /* runs followed at once (64); more wait */
    double timeout_s;          /* per run (3600); <= 0 = none. For resident
                                * sources (webhook, chat, dropper, telegram)
                                * the run's window: stopped, and succeeded,
                                * when it ends */
    double start_timeout_s;    /* `execute` answered within (600) */
    double stop_timeout_s;     /* `terminate` answered within (30) */
    double poll_s;             /* status polled while following (5) */
    double connect_timeout_s;  /* connect + auth (10) */
    int connect_attempts;      /* tries before a run fails unreachable (3) */
    double lost_s;             /* a followed task whose engine stays out of
                                * reach this long is interrupted (60) */
    size_t output_max;         /* bytes of output kept (64 KiB) */
    /* Any thread, when reports or verdicts are waiting: leads to
     * executor_drain and rocketride_drain_identities on the service
     * thread. */
    void (*wake)(void *ud);
    void *wake_ud;
};
void rocketride_config_defaults(struct rocketride_config *cfg);

/* Start it. NULL and e: RR_E_INVAL for a URL dap_url_parse refuses or a
 * bad setting. cfg is borrowed for the call. */
struct executor *rocketride_new(const struct rocketride_config *cfg, struct err *e);

/* Check a RocketRide credential with the engine; the verdict comes back
 * through rocketride_drain_identities under the same ticket. key is copied
 * (wiped once used). 0, or RR_E_BUSY while stopping. */
int rocketride_identify(struct executor *x, const char *key, uint64_t ticket);

/* fn(ud, ticket, id, refused, why) per verdict waiting (arguments borrowed
 * for the call): id when the engine accepted the credential, else why --
 * the engine's refusal (refused) or why it could not be asked. Returns how
 * many. */
typedef void (*rocketride_verdict_fn)(void *ud, uint64_t ticket,
                                      const struct dap_identity *id,
                                      bool refused, const char *why);
int rocketride_drain_identities(struct executor *x, rocketride_verdict_fn fn,
                                void *ud);

/* What the engine executor knows of the engine (its url borrowed from x). */
void rocketride_state(struct executor *x, struct dap_engine_state *out /* OUT */);

/* The task token the engine derives for (user, project_id, source): "tk_"
 * and the first 32 hex digits of the SHA-256 of Python's json.dumps of
 * {"project_id","source","userId"} with sorted keys. out: 36 bytes. */
void rocketride_task_token(const char *user, const char *project_id,
                           const char *source, char out[36]);

#endif
