/* runner.h -- runs pipelines as child processes, off the service thread.
 *
 * The `exec` executor (PRODUCT §5): each run is `/bin/sh -c CMD` in its own
 * process group, with the pipeline JSON on stdin, the RR_* environment, and
 * stdout+stderr captured (the last output_max bytes kept). One supervisor
 * thread owns every child: it spawns, feeds stdin, reads output, enforces the
 * timeout (SIGTERM to the group, SIGKILL after kill_grace_s) and reaps. At most
 * max_runs run at once; further jobs wait in FIFO order inside the runner and
 * are never dropped.
 *
 * Threads: runner_submit, runner_cancel and runner_drain are called from the
 * service thread only. The supervisor reports progress (started, finished)
 * through a locked queue and calls cfg->wake(cfg->wake_ud) -- which must be
 * safe from any thread (lws_cancel_service) -- after pushing; runner_drain
 * then hands the events to the caller on the service thread. */
#ifndef RR_RUNNER_H
#define RR_RUNNER_H

#include <stddef.h>
#include <stdint.h>

#include "util/util.h"

struct runner;

struct runner_config {
    const char *exec_cmd;     /* shell command; NULL = no executor configured */
    int max_runs;             /* concurrent runs (default 64) */
    double timeout_s;         /* per run (default 3600); <= 0 = none */
    double kill_grace_s;      /* SIGTERM -> SIGKILL delay (default 10) */
    size_t output_max;        /* bytes of output kept (default 64 KiB) */
    void (*wake)(void *ud);   /* called from the supervisor thread */
    void *wake_ud;
};

/* A job: everything is owned by the job and taken by runner_submit. */
struct runner_job {
    int64_t run_id;
    char *pipeline;           /* JSON text written to stdin */
    size_t pipeline_len;
    char *project_id;         /* RR_PROJECT_ID */
    char *user;               /* RR_USER_ID */
    char *trigger;            /* RR_TRIGGER: "schedule" | "manual" */
    char *scheduled_at;       /* RR_SCHEDULED_AT: ISO-8601 UTC */
};

enum runner_outcome {
    RUNNER_SUCCEEDED = 0,
    RUNNER_FAILED,            /* non-zero exit, killed by a signal, or no executor */
    RUNNER_TIMED_OUT,
    RUNNER_CANCELLED,         /* runner_cancel(..., RUNNER_CANCELLED) */
    RUNNER_INTERRUPTED,       /* runner_cancel(..., RUNNER_INTERRUPTED), shutdown */
};

enum runner_event_kind { RUNNER_EV_STARTED, RUNNER_EV_FINISHED };

struct runner_event {
    enum runner_event_kind kind;
    int64_t run_id;
    double at;                /* wall clock, float Unix seconds */
    /* FINISHED only: */
    enum runner_outcome outcome;
    int exit_code;            /* -1 when none */
    int signal;               /* 0 when none */
    char *reason;             /* owned by the event; NULL or e.g. "no executor configured" */
                              /* (also "spawn failed: ...", "timed out after N s") */
    char *output;             /* owned; the output tail, may contain any bytes;
                               * never NULL, NUL-terminated at output_len */
    size_t output_len;
    int started;              /* 0 if the job never started a process */
    /* STARTED only: the run's process group (= its leader's pid) and the
     * leader's start time, to recognise the group after a crash. */
    int pid;
    uint64_t pid_start;
};

void runner_config_defaults(struct runner_config *cfg);

/* The start time of process pid (clock ticks since boot, /proc/PID/stat field
 * 22): with the pid it names one process for the life of the system. 0 and
 * *out, or RR_E_NOTFOUND. */
int runner_proc_start(int pid, uint64_t *out);

/* After a crash: SIGKILL the process group `pgid` a previous server left
 * running, if it is still that run's group -- its leader alive with the same
 * start time, or the leader gone and only its orphans left (a group id cannot
 * be reused while any member lives). Returns 1 if a group was signalled, 0 if
 * nothing of it was left, or it is someone else's now. */
int runner_kill_stale(int pgid, uint64_t leader_start);

/* Start the supervisor. NULL if it cannot (the reason in e): RR_E_INVAL for
 * max_runs < 1 or an empty exec_cmd. cfg is borrowed for the call (exec_cmd
 * is copied). */
struct runner *runner_new(const struct runner_config *cfg, struct err *e);

/* Queue a job (taken, even on failure). RR_E_INVAL for a NULL job, or a
 * NULL pipeline with pipeline_len > 0; NULL strings give empty RR_* values. */
int runner_submit(struct runner *r, struct runner_job *job);

/* Stop a queued or running job: a queued job finishes at once with `as`; a
 * running one gets SIGTERM to its group, SIGKILL after kill_grace_s, and
 * finishes with `as` (RUNNER_CANCELLED or RUNNER_INTERRUPTED). RR_E_NOTFOUND
 * if the run is not known (already finished); RR_E_INVAL for any other `as`.
 * When it returns 0 the FINISHED outcome is `as`, unless the run had already
 * timed out or been cancelled (the first decision wins). */
int runner_cancel(struct runner *r, int64_t run_id, enum runner_outcome as);

/* Number of jobs queued or running (drops when FINISHED is queued). */
int runner_active(struct runner *r);

/* Hand every pending event to cb on the calling (service) thread; the event
 * and its strings are freed after cb returns. Returns the number handled. */
typedef void (*runner_event_cb)(const struct runner_event *ev, void *ud);
int runner_drain(struct runner *r, runner_event_cb cb, void *ud);

/* Stop everything: queued jobs and running processes are finished as
 * RUNNER_INTERRUPTED (process groups get TERM, then KILL after kill_grace_s),
 * the supervisor is joined, and remaining events are discarded. NULL is fine.
 * Blocks at most kill_grace_s + 1 s; a process still not gone after its
 * SIGKILL (uninterruptible sleep) is logged and abandoned. */
void runner_free(struct runner *r);

/* Free a job's strings and the job itself (for callers that built one and
 * could not submit it). NULL is fine. */
void runner_job_free(struct runner_job *job);

#endif
