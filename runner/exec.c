/* exec.c -- the `exec` executor: pipelines as child processes (docs/runs.md).
 *
 * Purpose: run `/bin/sh -c CMD` once per job, off the service thread, with
 * the pipeline JSON on stdin, a clean environment (the operator's allow-list
 * and the run's RR_* variables, never the server's secrets), stdout+stderr captured
 * (the last output_max bytes kept), a timeout, cancellation, and a hard cap
 * on concurrent runs; report that runs started and finished back to the
 * service thread (executor_drain).
 *
 * Design (redis bio.c-like, one worker): a single supervisor thread owns
 * every child. It sleeps in epoll_wait on
 *   - an eventfd the service thread writes after submit/cancel/free,
 *   - per run: a pidfd (readable when the leader exits), the non-blocking
 *     write end of the stdin pipe (fed as the child consumes it) and the
 *     non-blocking read end of the stdout+stderr pipe (into a ring tail),
 * with the timeout of epoll_wait computed from the earliest deadline (run
 * timeout, TERM->KILL grace, shutdown bound) on the monotonic clock. No
 * sleeps, no busy loops, no SIGCHLD handler.
 *
 * A run's environment is not inherited: exec_new builds the part every run
 * shares once (env_base: the allow-list from the server's environment, HOME
 * from the password database, the operator's pass_env and run_env), and
 * each spawn adds the run's RR_* variables and its mark (env_build).
 *
 * Each child is spawned with posix_spawn into its own process group
 * (POSIX_SPAWN_SETPGROUP, pgid = its pid), an empty signal mask and default
 * dispositions for every signal (the server ignores SIGPIPE), and every fd
 * above 2 closed (all our fds are O_CLOEXEC too), so runs inherit neither
 * each other's pipes nor the server's sockets. Signals go to the whole group
 * (kill(-pgid)). When the pidfd says the leader exited, the leader is still
 * an unreaped zombie and so still pins its pgid: we SIGKILL the group (so no
 * part of a run outlives it, like systemd's control-group semantics), then
 * reap the leader, drain what output is left, and report FINISHED. Processes
 * that left the group (setsid) are found by the run's mark in their
 * environment (kill_escaped).
 *
 * If pidfd_open is unavailable (ENOSYS; or RRDEPLOY_RUNNER_NO_PIDFD=1, for
 * tests) or fails for one child (EMFILE), that child is polled instead:
 * waitid(WEXITED|WNOHANG|WNOWAIT) every POLL_MS, which still leaves the
 * zombie in place for the group kill.
 *
 * Thread: the executor's submit/cancel/active/drain run on the service thread and
 * only take x->mu for a few pointer operations. Everything in struct task
 * below the "supervisor only" line, the epoll fd and the scratch buffer
 * belong to the supervisor thread. The pending FIFO, the running list links,
 * cancel requests, the event queue, nactive and stopping are guarded by
 * x->mu; the supervisor is the only writer of the running list, so it may
 * read it without the lock. The supervisor blocks every signal (the mask is
 * set before pthread_create), so process-directed signals go to the main
 * thread and a write to a closed stdin pipe gives EPIPE, not a SIGPIPE. */
#include "runner/executor.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

extern char **environ;

/* ============================================================ limits */

#define SH_PATH "/bin/sh"
#define POLL_MS 50        /* exit polling when a run has no pidfd */
#define FREE_REAP_MS 1000 /* free: wait for exits after KILL */
#define READ_CHUNK 65536  /* one read(2) of output */
#define READS_PER_WAKE 4  /* fairness: chunks per run per wake */
#define DRAIN_READS 64    /* final drain after exit, bounded */
#define MAX_EVENTS 64
#define DEADLINE_MAX_MS (100LL * 365 * 86400 * 1000) /* "never" */
#define ENVIRON_MAX (4 * 1024 * 1024) /* /proc/PID/environ read for the sweep */
#define INSTANCE_BYTES 8             /* random bytes naming an executor */
#define RUN_MARK "RRDEPLOY_RUN="

/* ============================================================ types */

enum watch_kind { W_IN, W_OUT, W_PID };

/* epoll_event.data.ptr of a run's fd; NULL is the eventfd. */
struct watch {
    struct task *t; /* borrowed: the task embedding this watch */
    enum watch_kind kind;
};

struct task {
    struct job *job; /* owned; run_id is immutable */
    /* Guarded by exec.mu: */
    struct task *next;             /* pending FIFO or running list */
    int cancel_set;                /* a cancel asked ... */
    enum store_outcome cancel_as;  /* ... for this outcome */
    int cancel_seen;               /* the supervisor has taken it */
    /* Supervisor only: */
    pid_t pid;                /* leader = pgid; 0 before spawn */
    int pidfd, in_fd, out_fd; /* -1 when closed */
    size_t in_off;            /* pipeline bytes written */
    struct watch w_in, w_out, w_pid;
    struct out_tail out;
    int64_t term_at; /* mono ms: timeout; 0 = none */
    int64_t kill_at; /* mono ms: SIGKILL; 0 = none */
    int forced;      /* outcome decided by timeout/cancel */
    enum store_outcome forced_as;
    int cancel_pending; /* cancel taken, not yet acted on */
    int exited;      /* leader exit noticed, not reaped */
};

/* A run handed to the executor: everything copied from the sched_job. */
struct job {
    int64_t run_id;
    char *pipeline;           /* JSON text written to stdin */
    size_t pipeline_len;
    char *project_id;         /* RR_PROJECT_ID */
    char *user;               /* RR_USER_ID */
    char *trigger;            /* RR_TRIGGER: "schedule" | "manual" */
    char *scheduled_at;       /* RR_SCHEDULED_AT: ISO-8601 UTC */
};

/* A report waiting for executor_drain; ev.reason and ev.output point at the
 * owned copies. */
struct ev_node {
    struct sched_report ev;
    char *reason;             /* owned, or NULL */
    char *output;             /* owned, never NULL once finished */
    struct ev_node *next;
};

struct exec {
    struct executor base;     /* first: the executor interface */
    struct exec_config cfg;   /* cmd owned (copied) */
    int64_t timeout_ms;       /* 0 = none */
    int64_t grace_ms;
    int use_pidfd;
    int epfd, evfd;
    pthread_t thread;
    /* Random per executor: with the run id it marks a run's processes
     * (RRDEPLOY_RUN=<instance>:<id>), so the sweep for processes that left
     * a run's group never touches another server's runs of the same id. */
    char instance[2 * INSTANCE_BYTES + 1];
    /* What every run's environment starts from (see the top): owned,
     * NULL-terminated "NAME=VALUE" strings, read-only once the supervisor
     * runs, wiped when freed (an operator may pass credentials). */
    char **env_base;
    size_t nenv_base;

    pthread_mutex_t mu;
    /* Guarded by mu: */
    struct task *pend_head, *pend_tail; /* submitted, not started (FIFO) */
    struct task *running; /* started; written by supervisor only */
    int nrunning;         /* length of running */
    int cancel_pending;   /* some task got cancel_set */
    int stopping;         /* the executor is being freed */
    int nactive;          /* submitted and not FINISHED */
    struct ev_node *ev_head, *ev_tail;

    /* Supervisor only: */
    char *scratch; /* READ_CHUNK bytes, owned */
    int pushed;    /* events pushed this iteration */
    int stop_seen;
    int64_t stop_deadline; /* mono ms, after stop_seen */
};

/* ============================================================ helpers */

static char *xasprintf(const char *fmt, ...) RR_PRINTF(1, 2);
static char *xasprintf(const char *fmt, ...)
{
    struct buf b;
    buf_init(&b, 0);
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&b, fmt, ap);
    va_end(ap);
    return buf_take(&b, NULL);
}

static int64_t secs_to_ms(double s)
{
    if (!(s > 0))
        return 0;
    double ms = s * 1000.0 + 0.5;
    if (ms >= (double)DEADLINE_MAX_MS)
        return DEADLINE_MAX_MS;
    return ms < 1 ? 1 : (int64_t)ms;
}

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        /* Linux always releases the fd, even on EINTR; an error here is a
         * bug (EBADF) worth a log line, not a retry. */
        if (close(*fd) != 0)
            log_warn("exec: close(%d): %s", *fd, strerror(errno));
        *fd = -1;
    }
}

static int set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -errno;
    return 0;
}

/* Move fd above 2 so the child's dup2 onto 0..2 cannot clobber it (only
 * matters if the server runs with a standard fd closed). */
static int fd_above_std(int *fd)
{
    if (*fd > 2)
        return 0;
    int nfd = fcntl(*fd, F_DUPFD_CLOEXEC, 3);
    if (nfd < 0)
        return -errno;
    close_fd(fd);
    *fd = nfd;
    return 0;
}

static int pidfd_open_(pid_t pid)
{
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    (void)pid;
    errno = ENOSYS;
    return -1;
#endif
}

static int pidfd_kill_(int pidfd, int sig)
{
#ifdef SYS_pidfd_send_signal
    return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
#else
    (void)pidfd;
    (void)sig;
    errno = ENOSYS;
    return -1;
#endif
}

/* ============================================================ jobs */

static void job_free(struct job *job)
{
    if (!job)
        return;
    free(job->pipeline);
    free(job->project_id);
    free(job->user);
    free(job->trigger);
    free(job->scheduled_at);
    free(job);
}

void exec_config_defaults(struct exec_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->cmd = NULL;
    cfg->max_runs = 64;
    cfg->timeout_s = 3600;
    cfg->kill_grace_s = 10;
    cfg->output_max = EXEC_OUTPUT_DEFAULT;
    cfg->wake = NULL;
    cfg->wake_ud = NULL;
}

static void task_free(struct task *t)
{
    if (!t)
        return;
    close_fd(&t->pidfd);
    close_fd(&t->in_fd);
    close_fd(&t->out_fd);
    out_tail_free(&t->out);
    job_free(t->job);
    free(t);
}

static void event_free(struct ev_node *n)
{
    free(n->reason);
    free(n->output);
    free(n);
}

/* ============================================================ events */

/* Queue an event (taken). Caller holds x->mu. */
static void push_event_locked(struct exec *x, struct ev_node *n)
{
    n->next = NULL;
    if (x->ev_tail)
        x->ev_tail->next = n;
    else
        x->ev_head = n;
    x->ev_tail = n;
    x->pushed = 1;
}

int exec_proc_start(int pid, uint64_t *out)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return RR_E_NOTFOUND;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return RR_E_NOTFOUND;
    buf[n] = '\0';
    /* "pid (comm) state ..." -- comm may hold spaces and parentheses, so
     * fields are counted from the last ')'. starttime is field 22. */
    char *p = strrchr(buf, ')');
    if (!p)
        return RR_E_NOTFOUND;
    int field = 2;
    for (p++; *p && field < 22; p++)
        if (*p == ' ')
            field++;
    char *end;
    unsigned long long v = strtoull(p, &end, 10);
    if (end == p)
        return RR_E_NOTFOUND;
    *out = v;
    return 0;
}

int exec_kill_stale(int pgid, uint64_t leader_start)
{
    if (pgid <= 1)
        return 0;
    uint64_t now_start;
    if (exec_proc_start(pgid, &now_start) == 0 && now_start != leader_start)
        return 0; /* the pid was reused: not ours */
    if (kill(-pgid, SIGKILL) == 0) {
        log_warn("exec: killed process group %d left running by a previous "
                 "server", pgid);
        return 1;
    }
    return 0;
}

static void emit_started(struct exec *x, struct task *t)
{
    struct ev_node *n = xcalloc(1, sizeof *n);
    n->ev.kind = SCHED_RUN_STARTED;
    n->ev.run_id = t->job->run_id;
    n->ev.at = time_now_real();
    n->ev.exit_code = -1;
    n->ev.started = true;
    n->ev.pgid = (int)t->pid;
    if (exec_proc_start((int)t->pid, &n->ev.leader_start) != 0)
        n->ev.leader_start = 0;
    pthread_mutex_lock(&x->mu);
    push_event_locked(x, n);
    pthread_mutex_unlock(&x->mu);
}

/* Report FINISHED and free the task. `reason` is taken. `in_running`: t is
 * on the running list (it is unlinked under the same lock as the push, so a
 * cancel that returned 0 always sees its outcome applied unless the
 * run had already been forced by a timeout or an earlier cancel). */
static void finish(struct exec *x, struct task *t, enum store_outcome oc,
                   int exit_code, int sig, char *reason, int started,
                   int in_running)
{
    struct ev_node *n = xcalloc(1, sizeof *n);
    n->ev.kind = SCHED_RUN_FINISHED;
    n->ev.run_id = t->job->run_id;
    n->ev.at = time_now_real();
    n->ev.exit_code = exit_code;
    n->ev.signal = sig;
    n->ev.started = started != 0;
    n->output = out_tail_take(&t->out, &n->ev.output_len);
    n->ev.output = n->output;

    close_fd(&t->pidfd);
    close_fd(&t->in_fd);
    close_fd(&t->out_fd);

    pthread_mutex_lock(&x->mu);
    if (in_running) {
        struct task **pp = &x->running;
        while (*pp && *pp != t)
            pp = &(*pp)->next;
        ASSERT(*pp == t);
        *pp = t->next;
        x->nrunning--;
    }
    if (t->forced) {
        oc = t->forced_as;
    } else if (t->cancel_set) {
        oc = t->cancel_as;
        free(reason);
        reason = NULL;
    }
    n->ev.outcome = oc;
    n->reason = reason;
    n->ev.reason = reason;
    x->nactive--;
    push_event_locked(x, n);
    pthread_mutex_unlock(&x->mu);

    log_debug("exec: run %lld finished (outcome %d, exit %d, signal %d)",
              (long long)t->job->run_id, (int)oc, exit_code, sig);
    task_free(t);
}

/* ============================================================ environment */

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Set by the server in every run (env_build): the operator can neither set
 * nor pass them. */
static const char *const reserved_names[] = {
    "RR_PROJECT_ID", "RR_USER_ID",      "RR_RUN_ID",
    "RR_TRIGGER",    "RR_SCHEDULED_AT", "RRDEPLOY_RUN",
};

/* Secrets of the server. The development key authenticates as user `local`
 * with both permissions: a run that saw it could act for every client of
 * the server. */
static const char *const secret_names[] = {"ROCKETRIDE_APIKEY"};

static bool name_in(const char *name, size_t n, const char *const *list,
                    size_t count)
{
    for (size_t i = 0; i < count; i++)
        if (strlen(list[i]) == n && memcmp(list[i], name, n) == 0)
            return true;
    return false;
}

/* [A-Za-z_][A-Za-z0-9_]*: what a shell can name, and so what a run reads. */
static bool name_valid(const char *s, size_t n)
{
    if (n == 0 || (s[0] >= '0' && s[0] <= '9'))
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
              (c >= '0' && c <= '9') || c == '_'))
            return false;
    }
    return true;
}

int exec_env_check(const char *entry, bool with_value, struct err *e)
{
    if (!entry)
        return err_set(e, RR_E_INVAL, "no variable");
    size_t n = strcspn(entry, "=");
    int len = n > 128 ? 128 : (int)n; /* what a message shows of a name */
    if (with_value && !entry[n])
        return err_set(e, RR_E_INVAL, "expected NAME=VALUE, found no '='");
    if (!with_value && entry[n])
        return err_set(e, RR_E_INVAL, "expected a NAME, without '=' or a "
                                      "value");
    if (!name_valid(entry, n))
        return err_set(e, RR_E_INVAL,
                       "'%.*s' is not a variable name (letters, digits and "
                       "'_', not starting with a digit)",
                       len, entry);
    if (name_in(entry, n, reserved_names, COUNT(reserved_names)))
        return err_set(e, RR_E_INVAL, "%.*s is set by the server in every run",
                       len, entry);
    if (name_in(entry, n, secret_names, COUNT(secret_names)))
        return err_set(e, RR_E_INVAL,
                       "%.*s is the server's API key: a secret, never given "
                       "to a run",
                       len, entry);
    return 0;
}

/* A growing NULL-terminated array of owned "NAME=VALUE" strings. */
struct envlist {
    char **v;
    size_t n, cap;
};

/* Values may be credentials the operator passes: wipe before freeing. */
static void wipe_free(char *s)
{
    if (s) {
        sodium_memzero(s, strlen(s));
        free(s);
    }
}

/* "name=value", allocated to size (no intermediate copies of the value). */
static char *env_entry(const char *name, const char *value)
{
    size_t n = strlen(name), v = strlen(value);
    char *s = xmalloc(n + v + 2);
    memcpy(s, name, n);
    s[n] = '=';
    memcpy(s + n + 1, value, v + 1);
    return s;
}

/* Add entry (taken); it replaces an entry of the same name. */
static void env_put(struct envlist *l, char *entry)
{
    size_t n = strcspn(entry, "=") + 1; /* the name and its '=' */
    for (size_t i = 0; i < l->n; i++)
        if (strncmp(l->v[i], entry, n) == 0) {
            wipe_free(l->v[i]);
            l->v[i] = entry;
            return;
        }
    if (l->n + 2 > l->cap) {
        l->cap = l->cap ? 2 * l->cap : 16;
        l->v = xrealloc(l->v, l->cap * sizeof *l->v);
    }
    l->v[l->n++] = entry;
    l->v[l->n] = NULL;
}

/* Copy name from the server's environment into l, if it is set there. */
static bool env_pass(struct envlist *l, const char *name)
{
    const char *v = getenv(name);
    if (v)
        env_put(l, env_entry(name, v));
    return v != NULL;
}

/* The home directory of the effective user in the password database, as
 * systemd sets HOME for a unit's user; NULL when it has no entry. Owned. */
static char *home_of_euid(void)
{
    for (size_t len = 1024;; len *= 2) {
        char *mem = xmalloc(len);
        struct passwd pw, *found = NULL;
        int rc = getpwuid_r(geteuid(), &pw, mem, len, &found);
        if (rc == ERANGE && len < 1024 * 1024) {
            free(mem);
            continue;
        }
        char *home = rc == 0 && found && found->pw_dir && *found->pw_dir
                         ? xstrdup(found->pw_dir)
                         : NULL;
        free(mem);
        return home;
    }
}

/* Log the names (never the values) a run gets from the operator's choices. */
static void env_log(const struct envlist *l)
{
    struct buf b;
    buf_init(&b, 0);
    for (size_t i = 0; i < l->n; i++)
        buf_printf(&b, "%s%.*s", i ? " " : "",
                   (int)strcspn(l->v[i], "="), l->v[i]);
    log_info("exec: runs get the environment %s, and the run's RR_* "
             "variables and RRDEPLOY_RUN",
             buf_cstr(&b));
    buf_free(&b);
}

/* The environment every run of cfg starts from (see the top); *n entries.
 * cfg's entries have passed exec_env_check. Thread: before the supervisor
 * starts (it reads the process environment). */
static char **env_base_build(const struct exec_config *cfg, size_t *n)
{
    struct envlist l = {0};
    const char *path = getenv("PATH");
    env_put(&l, env_entry("PATH", path && *path ? path : EXEC_DEFAULT_PATH));
    env_pass(&l, "LANG");
    for (char **e = environ; e && *e; e++) {
        size_t k = strcspn(*e, "=");
        if (k > 3 && strncmp(*e, "LC_", 3) == 0 && (*e)[k] == '=' &&
            name_valid(*e, k))
            env_put(&l, xstrdup(*e));
    }
    env_pass(&l, "TZ");
    char *home = home_of_euid();
    if (home)
        env_put(&l, env_entry("HOME", home));
    else
        log_warn("exec: user id %u has no entry in the password database: "
                 "runs get no HOME",
                 (unsigned)geteuid());
    free(home);
    for (size_t i = 0; i < cfg->npass_env; i++)
        if (!env_pass(&l, cfg->pass_env[i]))
            log_warn("exec: %s, to be passed to runs, is not set in the "
                     "server's environment",
                     cfg->pass_env[i]);
    for (size_t i = 0; i < cfg->nrun_env; i++)
        env_put(&l, xstrdup(cfg->run_env[i]));
    env_log(&l);
    *n = l.n;
    return l.v;
}

static void env_base_free(char **env)
{
    for (size_t i = 0; env && env[i]; i++)
        wipe_free(env[i]);
    free(env);
}

/* The environment entry that marks the processes of run run_id. */
static char *run_mark(const struct exec *x, int64_t run_id)
{
    return xasprintf(RUN_MARK "%s:%lld", x->instance, (long long)run_id);
}

/* The run's environment: the executor's base (borrowed), then the job's
 * RR_* variables and the run's mark. Returns a NULL-terminated array;
 * entries from *first_own on are owned (free them and the array with
 * env_free). */
static char **env_build(const struct exec *x, const struct job *job,
                        size_t *first_own)
{
    char **env = xmalloc((x->nenv_base + 7) * sizeof *env);
    memcpy(env, x->env_base, x->nenv_base * sizeof *env);
    size_t k = x->nenv_base;
    *first_own = k;
    env[k++] =
        xasprintf("RR_PROJECT_ID=%s", job->project_id ? job->project_id : "");
    env[k++] = xasprintf("RR_USER_ID=%s", job->user ? job->user : "");
    env[k++] = xasprintf("RR_RUN_ID=%lld", (long long)job->run_id);
    env[k++] = xasprintf("RR_TRIGGER=%s", job->trigger ? job->trigger : "");
    env[k++] = xasprintf("RR_SCHEDULED_AT=%s",
                         job->scheduled_at ? job->scheduled_at : "");
    env[k++] = run_mark(x, job->run_id);
    env[k] = NULL;
    return env;
}

static void env_free(char **env, size_t first_own)
{
    for (size_t i = first_own; env[i]; i++)
        free(env[i]);
    free(env);
}

/* ============================================================ spawning */

static int epoll_add(struct exec *x, int fd, uint32_t events, struct watch *w)
{
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = events;
    ev.data.ptr = w;
    if (epoll_ctl(x->epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
        return -errno;
    return 0;
}

static void epoll_del(struct exec *x, int fd)
{
    if (fd >= 0 && epoll_ctl(x->epfd, EPOLL_CTL_DEL, fd, NULL) != 0)
        log_warn("exec: epoll_ctl(DEL, %d): %s", fd, strerror(errno));
}

/* posix_spawn `/bin/sh -c CMD` for t. On success t->pid, the parent's pipe
 * ends and (if possible) the pidfd are set and 0 is returned; on failure
 * returns a positive errno value with nothing left behind, and *what names
 * the step. */
static int spawn_child(struct exec *x, struct task *t, const char **what)
{
    int in[2] = {-1, -1}, out[2] = {-1, -1};
    int rc;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    int fa_ok = 0, attr_ok = 0;
    char **env = NULL;
    size_t env_own = 0;

    *what = "pipe";
    if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) {
        rc = errno;
        goto fail;
    }
    if ((rc = -fd_above_std(&in[0])) || (rc = -fd_above_std(&in[1])) ||
        (rc = -fd_above_std(&out[0])) || (rc = -fd_above_std(&out[1])))
        goto fail;
    *what = "fcntl";
    if ((rc = -set_nonblock(in[1])) || (rc = -set_nonblock(out[0])))
        goto fail;

    *what = "posix_spawn setup";
    if ((rc = posix_spawn_file_actions_init(&fa)))
        goto fail;
    fa_ok = 1;
    if ((rc = posix_spawn_file_actions_adddup2(&fa, in[0], 0)) ||
        (rc = posix_spawn_file_actions_adddup2(&fa, out[1], 1)) ||
        (rc = posix_spawn_file_actions_adddup2(&fa, out[1], 2)))
        goto fail;
#if defined(__GLIBC__) &&                                                      \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    /* Belt and braces: even fds another module forgot to mark O_CLOEXEC. */
    if ((rc = posix_spawn_file_actions_addclosefrom_np(&fa, 3)))
        goto fail;
#endif
    if ((rc = posix_spawnattr_init(&attr)))
        goto fail;
    attr_ok = 1;
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    if ((rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP |
                                                  POSIX_SPAWN_SETSIGMASK |
                                                  POSIX_SPAWN_SETSIGDEF)) ||
        (rc = posix_spawnattr_setpgroup(&attr, 0)) ||
        (rc = posix_spawnattr_setsigmask(&attr, &none)) ||
        (rc = posix_spawnattr_setsigdefault(&attr, &all)))
        goto fail;

    env = env_build(x, t->job, &env_own);
    char *argv[] = {(char *)"sh", (char *)"-c", (char *)x->cfg.cmd, NULL};
    *what = "posix_spawn";
    pid_t pid;
    rc = posix_spawn(&pid, SH_PATH, &fa, &attr, argv, env);
    if (rc)
        goto fail;

    env_free(env, env_own);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    close_fd(&in[0]);
    close_fd(&out[1]);
    t->pid = pid;
    t->in_fd = in[1];
    t->out_fd = out[0];
    t->pidfd = x->use_pidfd ? pidfd_open_(pid) : -1;
    if (x->use_pidfd && t->pidfd < 0)
        log_warn("exec: pidfd_open(%d): %s; polling run %lld for exit",
                 (int)pid, strerror(errno), (long long)t->job->run_id);
    return 0;

fail:
    if (env)
        env_free(env, env_own);
    if (fa_ok)
        posix_spawn_file_actions_destroy(&fa);
    if (attr_ok)
        posix_spawnattr_destroy(&attr);
    close_fd(&in[0]);
    close_fd(&in[1]);
    close_fd(&out[0]);
    close_fd(&out[1]);
    return rc > 0 ? rc : EINVAL;
}

static void signal_group(struct task *t, int sig)
{
    if (t->pid > 0 && kill(-t->pid, sig) != 0 && errno != ESRCH)
        log_warn("exec: kill(-%d, %d): %s", (int)t->pid, sig,
                 strerror(errno));
}

/* Start TERM -> KILL escalation with outcome `as` (first decision wins). */
static void force_stop(struct exec *x, struct task *t, enum store_outcome as,
                       int64_t now)
{
    if (t->forced)
        return;
    t->forced = 1;
    t->forced_as = as;
    t->term_at = 0;
    t->kill_at = now + x->grace_ms;
    signal_group(t, SIGTERM);
}

/* Pop the oldest pending job into the running list and spawn it. */
static void start_one(struct exec *x, int64_t now)
{
    pthread_mutex_lock(&x->mu);
    struct task *t = x->pend_head;
    if (!t) {
        pthread_mutex_unlock(&x->mu);
        return;
    }
    x->pend_head = t->next;
    if (!x->pend_head)
        x->pend_tail = NULL;
    int have_exec = x->cfg.cmd != NULL;
    if (have_exec) {
        t->next = x->running;
        x->running = t;
        x->nrunning++;
    } else {
        t->next = NULL;
    }
    pthread_mutex_unlock(&x->mu);

    if (!have_exec) {
        finish(x, t, STORE_RUN_FAILED, -1, 0, xstrdup("no executor configured"), 0,
               0);
        return;
    }

    const char *what = "";
    int rc = spawn_child(x, t, &what);
    if (rc) {
        log_error("exec: run %lld: %s: %s", (long long)t->job->run_id, what,
                  strerror(rc));
        finish(x, t, STORE_RUN_FAILED, -1, 0,
               xasprintf("spawn failed: %s: %s", what, strerror(rc)), 0, 1);
        return;
    }
    log_debug("exec: run %lld started, pid %d", (long long)t->job->run_id,
              (int)t->pid);
    emit_started(x, t);
    if (x->timeout_ms > 0)
        t->term_at = now + x->timeout_ms;

    int err = 0;
    if (t->job->pipeline_len == 0) {
        close_fd(&t->in_fd); /* the child sees EOF at once */
    } else {
        err = epoll_add(x, t->in_fd, EPOLLOUT, &t->w_in);
    }
    if (!err)
        err = epoll_add(x, t->out_fd, EPOLLIN, &t->w_out);
    if (!err && t->pidfd >= 0)
        err = epoll_add(x, t->pidfd, EPOLLIN, &t->w_pid);
    if (err) {
        /* Cannot supervise it: stop it now; the exit path still runs
         * (polled, since the pidfd may not be registered). */
        log_error("exec: run %lld: epoll_ctl: %s", (long long)t->job->run_id,
                  strerror(-err));
        epoll_del(x, t->in_fd);
        close_fd(&t->in_fd);
        close_fd(&t->pidfd);
        if (!t->forced) {
            t->forced = 1;
            t->forced_as = STORE_RUN_FAILED;
        }
        signal_group(t, SIGKILL);
    }
}

/* ============================================================ run I/O */

static void feed_stdin(struct exec *x, struct task *t)
{
    const struct job *j = t->job;
    while (t->in_fd >= 0 && t->in_off < j->pipeline_len) {
        ssize_t n = write(t->in_fd, j->pipeline + t->in_off,
                          j->pipeline_len - t->in_off);
        if (n > 0) {
            t->in_off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n < 0 && errno == EPIPE) {
            /* The child closed stdin without reading it all: its choice.
             * Clear the SIGPIPE the kernel queued on this thread (blocked
             * here, so it is only pending). */
            sigset_t s;
            sigemptyset(&s);
            sigaddset(&s, SIGPIPE);
            struct timespec zero = {0, 0};
            while (sigtimedwait(&s, NULL, &zero) == SIGPIPE) {
            }
        } else {
            log_warn("exec: run %lld: write stdin: %s", (long long)j->run_id,
                     strerror(errno));
        }
        break;
    }
    /* Done or failed: close so the child sees EOF, and drop the pipeline
     * (up to 1 MiB) rather than hold it for the whole run. */
    epoll_del(x, t->in_fd);
    close_fd(&t->in_fd);
    free(t->job->pipeline);
    t->job->pipeline = NULL;
    t->job->pipeline_len = 0;
}

/* Read up to max_reads chunks of output into the tail. Closes out_fd at
 * EOF (every writer gone) or on error. */
static void read_output(struct exec *x, struct task *t, int max_reads)
{
    for (int i = 0; i < max_reads && t->out_fd >= 0; i++) {
        ssize_t n = read(t->out_fd, x->scratch, READ_CHUNK);
        if (n > 0) {
            out_tail_push(&t->out, x->scratch, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n < 0)
            log_warn("exec: run %lld: read output: %s",
                     (long long)t->job->run_id, strerror(errno));
        epoll_del(x, t->out_fd);
        close_fd(&t->out_fd);
    }
}

/* Has the leader of a run without pidfd exited? Leaves it unreaped. */
static int poll_exited(struct task *t)
{
    siginfo_t si;
    memset(&si, 0, sizeof si);
    if (waitid(P_PID, (id_t)t->pid, &si, WEXITED | WNOHANG | WNOWAIT) != 0)
        return errno == ECHILD; /* somebody else reaped it */
    return si.si_pid == t->pid;
}

/* ============================================================ escaped processes */

/* Does the environment block env[0..n) (NUL-separated) hold the entry want? */
static int env_has(const char *env, size_t n, const char *want, size_t wn)
{
    for (size_t i = 0; i < n;) {
        size_t len = strnlen(env + i, n - i);
        if (len == wn && memcmp(env + i, want, wn) == 0)
            return 1;
        i += len + 1;
    }
    return 0;
}

/* Is entry want in the environment process pid started with? */
static int proc_env_has(pid_t pid, struct buf *b, const char *want, size_t wn)
{
    char path[32];
    snprintf(path, sizeof path, "/proc/%d/environ", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0; /* gone, or not ours to read */
    buf_reset(b);
    for (;;) {
        buf_reserve(b, READ_CHUNK);
        ssize_t n = read(fd, buf_data(b) + b->len, READ_CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        b->len += (size_t)n;
        if (b->len >= ENVIRON_MAX)
            break;
    }
    close(fd);
    return env_has(buf_data(b), b->len, want, wn);
}

/* A run's processes that left its process group (setsid(), or a group of
 * their own) escape the group kill, but they still carry its mark
 * (RRDEPLOY_RUN): find them in /proc and SIGKILL them, as systemd stops a
 * unit's whole control group. The pidfd is opened before the check, so a
 * pid recycled meanwhile is never hit. A process that exec'd without the
 * mark is not found. Returns how many were killed. */
static int kill_escaped(const struct exec *x, int64_t run_id)
{
    DIR *d = opendir("/proc");
    if (!d)
        return 0;
    char *want = run_mark(x, run_id);
    size_t wn = strlen(want);
    struct buf env;
    buf_init(&env, 0);
    pid_t self = getpid();
    int killed = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        char *end;
        long v = strtol(de->d_name, &end, 10);
        if (*end || v <= 1 || v == self)
            continue;
        pid_t pid = (pid_t)v;
        int pfd = x->use_pidfd ? pidfd_open_(pid) : -1;
        if (x->use_pidfd && pfd < 0)
            continue; /* already gone */
        if (proc_env_has(pid, &env, want, wn)) {
            int rc = pfd >= 0 ? pidfd_kill_(pfd, SIGKILL) : kill(pid, SIGKILL);
            if (rc == 0)
                killed++;
        }
        if (pfd >= 0)
            close(pfd);
    }
    closedir(d);
    buf_free(&env);
    free(want);
    if (killed)
        log_warn("exec: run %lld: killed %d process(es) that had left its "
                 "process group", (long long)run_id, killed);
    return killed;
}

/* The leader exited (a zombie pinning the pgid): kill what is left of the
 * group, reap, drain output, report. Processes that left the group are
 * looked for when the run was stopped (timeout, cancel, shutdown), or when
 * something still holds its output pipe after the group is gone. */
static void reap_and_finish(struct exec *x, struct task *t)
{
    signal_group(t, SIGKILL);
    int status = 0;
    pid_t w;
    do {
        w = waitpid(t->pid, &status, 0);
    } while (w < 0 && errno == EINTR);

    epoll_del(x, t->in_fd);
    close_fd(&t->in_fd);
    epoll_del(x, t->pidfd);
    if (t->out_fd >= 0) {
        read_output(x, t, DRAIN_READS);
        epoll_del(x, t->out_fd);
    }
    if (t->forced || t->out_fd >= 0)
        kill_escaped(x, t->job->run_id);

    enum store_outcome oc = STORE_RUN_FAILED;
    int code = -1, sig = 0;
    char *reason = NULL;
    if (w < 0) {
        reason = xasprintf("exit status lost: %s", strerror(errno));
    } else if (WIFEXITED(status)) {
        code = WEXITSTATUS(status);
        oc = code == 0 ? STORE_RUN_SUCCEEDED : STORE_RUN_FAILED;
    } else if (WIFSIGNALED(status)) {
        sig = WTERMSIG(status);
    }
    if (t->forced && t->forced_as == STORE_RUN_TIMED_OUT)
        reason = (free(reason), xasprintf("timed out after %g s",
                                          (double)x->timeout_ms / 1000.0));
    else if (t->forced && t->forced_as == STORE_RUN_FAILED && !reason)
        reason = xstrdup("could not supervise the process");
    t->pid = 0;
    finish(x, t, oc, code, sig, reason, 1, 1);
}

/* ============================================================ supervisor */

/* Take new work and cancel requests from the service thread. */
static void intake(struct exec *x, int64_t now)
{
    struct task *cancelled = NULL, **ctail = &cancelled;

    pthread_mutex_lock(&x->mu);
    int stop = x->stopping;
    if (x->cancel_pending) {
        x->cancel_pending = 0;
        /* Queued jobs finish at once. */
        struct task **pp = &x->pend_head, *last = NULL;
        while (*pp) {
            struct task *t = *pp;
            if (t->cancel_set && !t->cancel_seen) {
                t->cancel_seen = 1;
                *pp = t->next;
                t->next = NULL;
                *ctail = t;
                ctail = &t->next;
            } else {
                last = t;
                pp = &t->next;
            }
        }
        x->pend_tail = last;
        for (struct task *t = x->running; t; t = t->next)
            if (t->cancel_set && !t->cancel_seen) {
                t->cancel_seen = 1;
                t->cancel_pending = 1;
            }
    }
    pthread_mutex_unlock(&x->mu);

    while (cancelled) {
        struct task *t = cancelled;
        cancelled = t->next;
        finish(x, t, STORE_RUN_CANCELLED /* replaced by cancel_as */, -1, 0, NULL,
               0, 0);
    }
    for (struct task *t = x->running; t; t = t->next)
        if (t->cancel_pending) {
            t->cancel_pending = 0;
            /* cancel_as is only written before cancel_seen is set. */
            pthread_mutex_lock(&x->mu);
            enum store_outcome as = t->cancel_as;
            pthread_mutex_unlock(&x->mu);
            if (t->pid > 0)
                force_stop(x, t, as, now);
        }

    if (stop && !x->stop_seen) {
        x->stop_seen = 1;
        /* Queued jobs: INTERRUPTED now. */
        for (;;) {
            pthread_mutex_lock(&x->mu);
            struct task *t = x->pend_head;
            if (t) {
                x->pend_head = t->next;
                if (!x->pend_head)
                    x->pend_tail = NULL;
            }
            pthread_mutex_unlock(&x->mu);
            if (!t)
                break;
            t->next = NULL;
            finish(x, t, STORE_RUN_INTERRUPTED, -1, 0, NULL, 0, 0);
        }
        for (struct task *t = x->running; t; t = t->next)
            force_stop(x, t, STORE_RUN_INTERRUPTED, now);
        x->stop_deadline = now + x->grace_ms + FREE_REAP_MS;
    }
}

/* Timeouts and TERM->KILL escalation. */
static void check_deadlines(struct exec *x, int64_t now)
{
    for (struct task *t = x->running; t; t = t->next) {
        if (t->exited)
            continue;
        if (t->term_at && now >= t->term_at) {
            log_info("exec: run %lld timed out; SIGTERM to group %d",
                     (long long)t->job->run_id, (int)t->pid);
            force_stop(x, t, STORE_RUN_TIMED_OUT, now);
            t->term_at = 0;
        }
        if (t->kill_at && now >= t->kill_at) {
            log_info("exec: run %lld still running after %lld ms; SIGKILL "
                     "to group %d",
                     (long long)t->job->run_id, (long long)x->grace_ms,
                     (int)t->pid);
            signal_group(t, SIGKILL);
            t->kill_at = 0;
        }
    }
}

/* epoll_wait timeout (ms, -1 = none) from the earliest deadline. */
static int next_timeout(struct exec *x, int64_t now)
{
    int64_t dl = INT64_MAX;
    for (struct task *t = x->running; t; t = t->next) {
        if (t->term_at && t->term_at < dl)
            dl = t->term_at;
        if (t->kill_at && t->kill_at < dl)
            dl = t->kill_at;
        if (t->pidfd < 0 && now + POLL_MS < dl)
            dl = now + POLL_MS;
    }
    if (x->stop_seen && x->stop_deadline < dl)
        dl = x->stop_deadline;
    if (dl == INT64_MAX)
        return -1;
    if (dl <= now)
        return 0;
    return dl - now > INT_MAX ? INT_MAX : (int)(dl - now);
}

/* The executor's free gave up waiting: stop supervising what is left. */
static void abandon_all(struct exec *x)
{
    while (x->running) {
        struct task *t = x->running;
        log_error("exec: run %lld (pid %d) did not exit after SIGKILL; "
                  "abandoning it",
                  (long long)t->job->run_id, (int)t->pid);
        signal_group(t, SIGKILL);
        int status;
        if (waitpid(t->pid, &status, WNOHANG) != t->pid)
            log_warn("exec: pid %d left unreaped", (int)t->pid);
        epoll_del(x, t->in_fd);
        epoll_del(x, t->out_fd);
        epoll_del(x, t->pidfd);
        t->pid = 0;
        finish(x, t, STORE_RUN_INTERRUPTED, -1, 0, NULL, 1, 1);
    }
}

static void wake_service(struct exec *x)
{
    if (x->pushed) {
        x->pushed = 0;
        if (x->cfg.wake)
            x->cfg.wake(x->cfg.wake_ud);
    }
}

static void *supervisor_main(void *arg)
{
    struct exec *x = arg;
    struct epoll_event evs[MAX_EVENTS];

    for (;;) {
        int64_t now = time_now_mono_ms();
        int timeout = next_timeout(x, now);
        int n = epoll_wait(x->epfd, evs, MAX_EVENTS, timeout);
        if (n < 0) {
            if (errno != EINTR) {
                /* Only EBADF/EFAULT/EINVAL: a bug. */
                log_error("exec: epoll_wait: %s", strerror(errno));
                ASSERT(0 && "epoll_wait failed");
            }
            n = 0;
        }
        now = time_now_mono_ms();

        for (int i = 0; i < n; i++) {
            struct watch *w = evs[i].data.ptr;
            if (!w) {
                uint64_t v;
                if (read(x->evfd, &v, sizeof v) < 0 && errno != EAGAIN)
                    log_warn("exec: read eventfd: %s", strerror(errno));
                continue;
            }
            struct task *t = w->t;
            switch (w->kind) {
            case W_IN: feed_stdin(x, t); break;
            case W_OUT: read_output(x, t, READS_PER_WAKE); break;
            case W_PID: t->exited = 1; break;
            }
        }

        /* Finish runs whose leader exited (polled ones too). Tasks are
         * freed only here, after the batch, so no event points at freed
         * memory. */
        struct task *t = x->running;
        while (t) {
            struct task *nx = t->next;
            if (!t->exited && t->pidfd < 0 && t->pid > 0 && poll_exited(t))
                t->exited = 1;
            if (t->exited)
                reap_and_finish(x, t);
            t = nx;
        }

        /* Look at the shared state on every iteration (one lock): a kick
         * may coalesce several submits and cancels. */
        intake(x, now);
        check_deadlines(x, now);

        if (!x->stop_seen) {
            for (;;) {
                pthread_mutex_lock(&x->mu);
                int more =
                    x->pend_head != NULL &&
                    (x->cfg.cmd == NULL || x->nrunning < x->cfg.max_runs);
                pthread_mutex_unlock(&x->mu);
                if (!more)
                    break;
                start_one(x, now);
            }
        }

        if (x->stop_seen) {
            if (!x->running)
                break;
            if (time_now_mono_ms() >= x->stop_deadline) {
                abandon_all(x);
                break;
            }
        }
        wake_service(x);
    }
    wake_service(x);
    return NULL;
}

/* ============================================================ public API */

static void kick(struct exec *x)
{
    uint64_t one = 1;
    ssize_t n;
    do {
        n = write(x->evfd, &one, sizeof one);
    } while (n < 0 && errno == EINTR);
    /* EAGAIN: the counter is saturated, so the supervisor is woken anyway. */
    if (n < 0 && errno != EAGAIN)
        log_error("exec: write eventfd: %s", strerror(errno));
}

/* A random name for this executor, which marks its runs' processes (see
 * kill_escaped). */
static void name_instance(struct exec *x)
{
    unsigned char rnd[INSTANCE_BYTES];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
        /* Never in practice (8 bytes, blocking only before the pool is
         * ready); the pid and clock still tell servers apart. */
        uint64_t v = (uint64_t)getpid() << 32 ^ (uint64_t)time_now_mono_ms();
        memcpy(rnd, &v, sizeof rnd);
    }
    for (size_t i = 0; i < sizeof rnd; i++)
        snprintf(x->instance + 2 * i, 3, "%02x", rnd[i]);
}

/* Can children be watched with pidfds? RRDEPLOY_RUNNER_NO_PIDFD=1 forces
 * the polling fallback (tests). */
static int pidfd_usable(void)
{
    const char *nopidfd = getenv("RRDEPLOY_RUNNER_NO_PIDFD");
    if (nopidfd && strcmp(nopidfd, "1") == 0) {
        log_info("exec: pidfd disabled by RRDEPLOY_RUNNER_NO_PIDFD; polling "
                 "children every %d ms",
                 POLL_MS);
        return 0;
    }
    int fd = pidfd_open_(getpid());
    if (fd < 0) {
        log_warn("exec: pidfd_open unavailable (%s); polling children "
                 "every %d ms",
                 strerror(errno), POLL_MS);
        return 0;
    }
    close_fd(&fd);
    return 1;
}

/* What exec_new refuses (see executor.h). */
static int config_check(const struct exec_config *cfg, struct err *e)
{
    if (!cfg)
        return err_set(e, RR_E_INVAL, "exec: no configuration");
    if (cfg->max_runs < 1)
        return err_set(e, RR_E_INVAL,
                       "exec: max_runs must be at least 1 (got %d)",
                       cfg->max_runs);
    if (cfg->cmd && !*cfg->cmd)
        return err_set(e, RR_E_INVAL, "exec: empty exec command");
    if (cfg->output_max > EXEC_OUTPUT_LIMIT)
        return err_set(e, RR_E_INVAL, "exec: output_max %zu is over %d bytes",
                       cfg->output_max, EXEC_OUTPUT_LIMIT);
    struct err why = {0};
    for (size_t i = 0; i < cfg->nrun_env; i++)
        if (exec_env_check(cfg->run_env[i], true, &why))
            return err_set(e, RR_E_INVAL, "exec: run_env: %s", why.msg);
    for (size_t i = 0; i < cfg->npass_env; i++)
        if (exec_env_check(cfg->pass_env[i], false, &why))
            return err_set(e, RR_E_INVAL, "exec: pass_env: %s", why.msg);
    return 0;
}

static const struct executor_ops exec_ops;

struct executor *exec_new(const struct exec_config *cfg, struct err *e)
{
    if (config_check(cfg, e))
        return NULL;

    struct exec *x = xcalloc(1, sizeof *x);
    x->base.ops = &exec_ops;
    x->cfg = *cfg;
    x->cfg.cmd = cfg->cmd ? xstrdup(cfg->cmd) : NULL;
    x->timeout_ms = secs_to_ms(cfg->timeout_s);
    x->grace_ms = secs_to_ms(cfg->kill_grace_s);
    x->epfd = x->evfd = -1;
    x->scratch = xmalloc(READ_CHUNK);
    name_instance(x);
    x->use_pidfd = pidfd_usable();
    if (x->cfg.cmd)
        x->env_base = env_base_build(cfg, &x->nenv_base);
    /* Borrowed for this call only. */
    x->cfg.run_env = x->cfg.pass_env = NULL;
    x->cfg.nrun_env = x->cfg.npass_env = 0;

    int rc = pthread_mutex_init(&x->mu, NULL);
    if (rc) {
        err_set(e, RR_E_INTERNAL, "exec: pthread_mutex_init: %s",
                strerror(rc));
        goto fail_nomutex;
    }
    x->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (x->epfd < 0) {
        err_set(e, RR_E_IO, "exec: epoll_create1: %s", strerror(errno));
        goto fail;
    }
    x->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (x->evfd < 0) {
        err_set(e, RR_E_IO, "exec: eventfd: %s", strerror(errno));
        goto fail;
    }
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN;
    ev.data.ptr = NULL;
    if (epoll_ctl(x->epfd, EPOLL_CTL_ADD, x->evfd, &ev) != 0) {
        err_set(e, RR_E_IO, "exec: epoll_ctl: %s", strerror(errno));
        goto fail;
    }

    /* The supervisor starts with every signal blocked (see the top). */
    sigset_t all, old;
    sigfillset(&all);
    rc = pthread_sigmask(SIG_SETMASK, &all, &old);
    if (rc) {
        err_set(e, RR_E_INTERNAL, "exec: pthread_sigmask: %s", strerror(rc));
        goto fail;
    }
    rc = pthread_create(&x->thread, NULL, supervisor_main, x);
    int rc2 = pthread_sigmask(SIG_SETMASK, &old, NULL);
    ASSERT(rc2 == 0);
    if (rc) {
        err_set(e, RR_E_INTERNAL, "exec: pthread_create: %s", strerror(rc));
        goto fail;
    }
    return &x->base;

fail:
    pthread_mutex_destroy(&x->mu);
fail_nomutex:
    close_fd(&x->evfd);
    close_fd(&x->epfd);
    env_base_free(x->env_base);
    free(x->scratch);
    free((char *)x->cfg.cmd);
    free(x);
    return NULL;
}

static struct exec *exec_of(struct executor *base)
{
    return (struct exec *)base; /* base is the first member */
}

static struct job *job_copy(const struct sched_job *sj)
{
    struct job *j = xcalloc(1, sizeof *j);
    j->run_id = sj->run_id;
    j->pipeline = xmalloc(sj->pipeline_len + 1);
    if (sj->pipeline_len)
        memcpy(j->pipeline, sj->pipeline, sj->pipeline_len);
    j->pipeline[sj->pipeline_len] = '\0';
    j->pipeline_len = sj->pipeline_len;
    j->project_id = xstrdup(sj->project_id ? sj->project_id : "");
    j->user = xstrdup(sj->user ? sj->user : "");
    j->trigger = xstrdup(sj->trigger ? sj->trigger : "");
    j->scheduled_at = xstrdup(sj->scheduled_at ? sj->scheduled_at : "");
    return j;
}

static int exec_submit(struct executor *base, const struct sched_job *sj)
{
    struct exec *x = exec_of(base);
    if (!sj || (sj->pipeline_len && !sj->pipeline))
        return RR_E_INVAL;
    struct task *t = xcalloc(1, sizeof *t);
    t->job = job_copy(sj);
    t->pidfd = t->in_fd = t->out_fd = -1;
    t->out.max = x->cfg.output_max;
    t->w_in = (struct watch){t, W_IN};
    t->w_out = (struct watch){t, W_OUT};
    t->w_pid = (struct watch){t, W_PID};

    pthread_mutex_lock(&x->mu);
    if (x->stopping) {
        pthread_mutex_unlock(&x->mu);
        task_free(t);
        return RR_E_BUSY;
    }
    if (x->pend_tail)
        x->pend_tail->next = t;
    else
        x->pend_head = t;
    x->pend_tail = t;
    x->nactive++;
    pthread_mutex_unlock(&x->mu);
    kick(x);
    return 0;
}

static int exec_cancel(struct executor *base, int64_t run_id,
                       enum store_outcome as)
{
    struct exec *x = exec_of(base);
    if (as != STORE_RUN_CANCELLED && as != STORE_RUN_INTERRUPTED)
        return RR_E_INVAL;
    int found = 0;
    pthread_mutex_lock(&x->mu);
    for (int pass = 0; pass < 2 && !found; pass++) {
        for (struct task *t = pass ? x->running : x->pend_head; t;
             t = t->next) {
            if (t->job->run_id != run_id)
                continue;
            found = 1;
            if (!t->cancel_set) {
                t->cancel_set = 1;
                t->cancel_as = as;
                x->cancel_pending = 1;
            }
            break;
        }
    }
    pthread_mutex_unlock(&x->mu);
    if (!found)
        return RR_E_NOTFOUND;
    kick(x);
    return 0;
}

/* A run of a previous server: only a running one can have left processes,
 * and a process is never adopted, only stopped. */
static bool exec_reclaim(struct executor *base, const struct sched_job *job,
                         const struct store_run *r)
{
    (void)base;
    (void)job;
    if (r->outcome == STORE_RUN_RUNNING && r->pid > 0)
        exec_kill_stale(r->pid, r->pid_start);
    return false;
}

static int exec_active(struct executor *base)
{
    struct exec *x = exec_of(base);
    pthread_mutex_lock(&x->mu);
    int n = x->nactive;
    pthread_mutex_unlock(&x->mu);
    return n;
}

static int exec_drain(struct executor *base, int max, executor_report_fn fn,
                      void *ud)
{
    struct exec *x = exec_of(base);
    pthread_mutex_lock(&x->mu);
    struct ev_node *n = x->ev_head, *last = NULL;
    int count = 0;
    for (struct ev_node *e = n; e && (max <= 0 || count < max); e = e->next) {
        last = e;
        count++;
    }
    if (last) { /* detach the first count nodes */
        x->ev_head = last->next;
        if (!x->ev_head)
            x->ev_tail = NULL;
        last->next = NULL;
    }
    pthread_mutex_unlock(&x->mu);

    while (n && count) {
        struct ev_node *nx = n->next;
        if (fn)
            fn(ud, &n->ev);
        event_free(n);
        n = nx;
    }
    return count;
}

/* Stop everything: queued jobs and running processes are finished as
 * interrupted (process groups get TERM, then KILL after kill_grace_s), the
 * supervisor is joined, and remaining reports are discarded. Blocks at most
 * kill_grace_s + 1 s; a process still not gone after its SIGKILL
 * (uninterruptible sleep) is logged and abandoned. */
static void exec_free(struct executor *base)
{
    struct exec *x = exec_of(base);
    pthread_mutex_lock(&x->mu);
    x->stopping = 1;
    pthread_mutex_unlock(&x->mu);
    kick(x);
    int rc = pthread_join(x->thread, NULL);
    ASSERT(rc == 0);

    /* The supervisor finished every task before returning. */
    ASSERT(x->pend_head == NULL && x->running == NULL);
    struct ev_node *n = x->ev_head;
    while (n) {
        struct ev_node *nx = n->next;
        event_free(n);
        n = nx;
    }
    close_fd(&x->evfd);
    close_fd(&x->epfd);
    pthread_mutex_destroy(&x->mu);
    env_base_free(x->env_base);
    free(x->scratch);
    free((char *)x->cfg.cmd);
    free(x);
}

static const struct executor_ops exec_ops = {
    .name = "exec",
    .submit = exec_submit,
    .cancel = exec_cancel,
    .reclaim = exec_reclaim,
    .active = exec_active,
    .drain = exec_drain,
    .free = exec_free,
};
