/* test_executor.c -- the `exec` executor (runner/exec.c, docs/runs.md).
 *
 * Purpose: pin what the daemon relies on: outcomes (exit code, signal,
 * timeout, cancel), the run's environment (exactly the allow-list, the
 * operator's additions and the RR_* variables; never the server's secrets),
 * stdin/output plumbing and the
 * output tail bound, the max_runs cap with FIFO starts, and that nothing of
 * a run survives it: no process of its group, no zombie, no leaked fd.
 *
 * Design:
 *   - real children of /bin/sh; each test builds its own executor whose wake
 *     callback bumps a counter under a mutex+condvar, so the test waits for
 *     events with a deadline (no sleeps used for timing);
 *   - scripts that must report a pid (their own $$, a background grandchild
 *     $!) write "LEADER CHILD" lines into a FIFO the test reads with poll()
 *     and a deadline, which also proves the script is running;
 *   - this process is a child subreaper (as init would be), so grandchildren
 *     orphaned when their leader dies are reparented here and can be reaped;
 *     "gone" means the pidfd became readable, the zombie was reaped here and
 *     then kill(pid, 0) fails with ESRCH. (PID 1 in some containers never
 *     reaps, so without this a dead orphan would look alive to kill(0).)
 * Thread: tests are serial; the executor's supervisor thread calls wake_cb. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "runner/executor.h"

extern char **environ;

#define WAIT_MS 20000 /* generous: sanitizers make the shell slow to start */

/* ------------------------------------------------------------ recorder */

struct rec {
    enum sched_report_kind kind;
    int64_t run_id;
    double at;
    enum store_outcome outcome;
    int exit_code, signal, started;
    char *reason; /* owned copy or NULL */
    char *output; /* owned copy, NUL-terminated */
    size_t output_len;
    int64_t mono_ms; /* when this test saw it */
};

struct ctx {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned wakes; /* guarded by mu */
    struct executor *r;
    struct rec *recs;
    size_t nrecs, caprecs;
    char dir[64];   /* temp dir */
    char fifo[128]; /* dir/fifo */
    int fifo_fd;
    char line_buf[4096];
    size_t line_len;
};

static void wake_cb(void *ud)
{
    struct ctx *c = ud;
    pthread_mutex_lock(&c->mu);
    c->wakes++;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void drain_cb(void *ud, const struct sched_report *ev)
{
    struct ctx *c = ud;
    if (c->nrecs == c->caprecs) {
        c->caprecs = c->caprecs ? c->caprecs * 2 : 16;
        c->recs = realloc(c->recs, c->caprecs * sizeof *c->recs);
        assert_non_null(c->recs);
    }
    struct rec *r = &c->recs[c->nrecs++];
    memset(r, 0, sizeof *r);
    r->kind = ev->kind;
    r->run_id = ev->run_id;
    r->at = ev->at;
    r->outcome = ev->outcome;
    r->exit_code = ev->exit_code;
    r->signal = ev->signal;
    r->started = ev->started;
    r->reason = ev->reason ? strdup(ev->reason) : NULL;
    r->output = malloc(ev->output_len + 1);
    assert_non_null(r->output);
    if (ev->output_len)
        memcpy(r->output, ev->output, ev->output_len);
    r->output[ev->output_len] = '\0';
    r->output_len = ev->output_len;
    r->mono_ms = time_now_mono_ms();
}

static const struct rec *find_rec(struct ctx *c, enum sched_report_kind k,
                                  int64_t run_id)
{
    for (size_t i = 0; i < c->nrecs; i++)
        if (c->recs[i].kind == k && c->recs[i].run_id == run_id)
            return &c->recs[i];
    return NULL;
}

static size_t count_kind(struct ctx *c, enum sched_report_kind k)
{
    size_t n = 0;
    for (size_t i = 0; i < c->nrecs; i++)
        n += c->recs[i].kind == k;
    return n;
}

/* Wait (bounded) until pred(c, arg) holds, draining events as they come. */
typedef int (*pred_fn)(struct ctx *c, int64_t arg);

static int wait_until(struct ctx *c, pred_fn pred, int64_t arg, int ms)
{
    int64_t deadline = time_now_mono_ms() + ms;
    for (;;) {
        pthread_mutex_lock(&c->mu);
        unsigned seen = c->wakes;
        pthread_mutex_unlock(&c->mu);
        executor_drain(c->r, 0, drain_cb, c);
        if (pred(c, arg))
            return 1;
        int64_t now = time_now_mono_ms();
        if (now >= deadline)
            return 0;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t left = deadline - now;
        ts.tv_sec += left / 1000;
        ts.tv_nsec += (long)(left % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&c->mu);
        while (c->wakes == seen)
            if (pthread_cond_timedwait(&c->cv, &c->mu, &ts) == ETIMEDOUT)
                break;
        pthread_mutex_unlock(&c->mu);
    }
}

static int p_finished(struct ctx *c, int64_t id)
{
    return find_rec(c, SCHED_RUN_FINISHED, id) != NULL;
}
static int p_started(struct ctx *c, int64_t id)
{
    return find_rec(c, SCHED_RUN_STARTED, id) != NULL;
}
static int p_nfinished(struct ctx *c, int64_t n)
{
    return count_kind(c, SCHED_RUN_FINISHED) >= (size_t)n;
}

static const struct rec *wait_finished(struct ctx *c, int64_t id)
{
    assert_true(wait_until(c, p_finished, id, WAIT_MS));
    return find_rec(c, SCHED_RUN_FINISHED, id);
}

/* ------------------------------------------------------------ processes */

static int pidfd_open_(pid_t pid)
{
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

/* Wait (bounded) until pid has died, reap it if it is ours (we are a
 * subreaper), and report whether it is gone for good. */
static int wait_gone(pid_t pid, int ms)
{
    int fd = pidfd_open_(pid);
    if (fd < 0 && errno == ENOSYS) {
        /* No pidfd_open (valgrind 3.19 does not know the syscall): poll
         * with a short pause, bounded by the deadline. Only a way to wait,
         * never what the test measures. */
        int64_t deadline = time_now_mono_ms() + ms;
        for (;;) {
            int st;
            (void)waitpid(pid, &st, WNOHANG);
            if (kill(pid, 0) == -1 && errno == ESRCH)
                return 1;
            if (time_now_mono_ms() >= deadline)
                return 0;
            struct timespec pause = {0, 5 * 1000 * 1000};
            nanosleep(&pause, NULL);
        }
    }
    if (fd < 0)
        return errno == ESRCH;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int n;
    do {
        n = poll(&p, 1, ms);
    } while (n < 0 && errno == EINTR);
    close(fd);
    if (n != 1)
        return 0;
    int st;
    (void)waitpid(pid, &st, WNOHANG);
    return kill(pid, 0) == -1 && errno == ESRCH;
}

/* Read one "LEADER CHILD" line from the FIFO (bounded wait). */
static int fifo_line(struct ctx *c, pid_t *leader, pid_t *child, int ms)
{
    int64_t deadline = time_now_mono_ms() + ms;
    for (;;) {
        char *nl = memchr(c->line_buf, '\n', c->line_len);
        if (nl) {
            *nl = '\0';
            long a = 0, b = 0;
            int ok = sscanf(c->line_buf, "%ld %ld", &a, &b) == 2;
            size_t used = (size_t)(nl - c->line_buf) + 1;
            memmove(c->line_buf, nl + 1, c->line_len - used);
            c->line_len -= used;
            *leader = (pid_t)a;
            *child = (pid_t)b;
            return ok;
        }
        int64_t left = deadline - time_now_mono_ms();
        if (left <= 0)
            return 0;
        struct pollfd p = {.fd = c->fifo_fd, .events = POLLIN};
        int n = poll(&p, 1, (int)left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return 0;
        ssize_t got = read(c->fifo_fd, c->line_buf + c->line_len,
                           sizeof c->line_buf - 1 - c->line_len);
        if (got > 0)
            c->line_len += (size_t)got;
        else if (got < 0 && errno != EAGAIN && errno != EINTR)
            return 0;
        /* got == 0: writer closed between lines; poll again (a FIFO with
         * no writer left reports POLLHUP, so avoid spinning on it). */
        if (got == 0) {
            int fd = open(c->fifo, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
            if (fd < 0)
                return 0;
            close(c->fifo_fd);
            c->fifo_fd = fd;
        }
    }
}

/* ------------------------------------------------------------ fixtures */

static int setup(void **state)
{
    struct ctx *c = calloc(1, sizeof *c);
    if (!c)
        return -1;
    pthread_mutex_init(&c->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    snprintf(c->dir, sizeof c->dir, "/tmp/rr_exec_test.XXXXXX");
    if (!mkdtemp(c->dir))
        return -1;
    snprintf(c->fifo, sizeof c->fifo, "%s/fifo", c->dir);
    if (mkfifo(c->fifo, 0600) != 0)
        return -1;
    /* Reader first (non-blocking), so a writer's open never waits long. */
    c->fifo_fd = open(c->fifo, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (c->fifo_fd < 0)
        return -1;
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    struct ctx *c = *state;
    executor_free(c->r);
    for (size_t i = 0; i < c->nrecs; i++) {
        free(c->recs[i].reason);
        free(c->recs[i].output);
    }
    free(c->recs);
    close(c->fifo_fd);
    unlink(c->fifo);
    rmdir(c->dir);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    /* Reap any orphan left by a failed test, so later tests start clean. */
    int st;
    while (waitpid(-1, &st, WNOHANG) > 0) {
    }
    free(c);
    return 0;
}

/* The same tests with exit polling instead of pidfds (the fallback for
 * kernels without pidfd_open). */
static int setup_poll(void **state)
{
    if (setenv("RRDEPLOY_RUNNER_NO_PIDFD", "1", 1) != 0)
        return -1;
    return setup(state);
}

static int teardown_poll(void **state)
{
    int rc = teardown(state); /* frees the executor first */
    unsetenv("RRDEPLOY_RUNNER_NO_PIDFD");
    return rc;
}

static void start(struct ctx *c, const char *cmd,
                  void (*tweak)(struct exec_config *))
{
    struct exec_config cfg;
    exec_config_defaults(&cfg);
    cfg.cmd = cmd;
    cfg.wake = wake_cb;
    cfg.wake_ud = c;
    if (tweak)
        tweak(&cfg);
    struct err e = {0};
    c->r = exec_new(&cfg, &e);
    if (!c->r)
        fail_msg("exec_new: %s", e.msg);
}

static struct sched_job mkjob(int64_t id, const void *pipeline, size_t len)
{
    return (struct sched_job){
        .run_id = id,
        .user = "user-1",
        .project_id = "proj-1",
        .trigger = "schedule",
        .scheduled_at = "2024-05-01T12:00:00Z",
        .pipeline = pipeline,
        .pipeline_len = len,
    };
}

static void submit(struct ctx *c, int64_t id, const void *pipeline, size_t len)
{
    struct sched_job j = mkjob(id, pipeline, len);
    assert_int_equal(executor_submit(c->r, &j), 0);
}

/* pre + FIFO path + post, in a static buffer valid until the next call
 * (exec_new copies cmd). */
static const char *with_fifo(struct ctx *c, const char *pre, const char *post)
{
    static char out[1024];
    int n = snprintf(out, sizeof out, "%s%s%s", pre, c->fifo, post);
    assert_true(n > 0 && (size_t)n < sizeof out);
    return out;
}

/* Short, but long enough for a loaded machine to get the shell to its first
 * command (the `trap`, the FIFO write) before the TERM. */
static void t_short(struct exec_config *cfg)
{
    cfg->timeout_s = 0.5;
    cfg->kill_grace_s = 0.3;
}

/* ------------------------------------------------------------ tests */

static void test_success_cat(void **state)
{
    struct ctx *c = *state;
    start(c, "cat", NULL);
    const char *pl = "{\"pipeline\":{\"components\":[]}}";
    double t0 = time_now_real();
    submit(c, 1, pl, strlen(pl));
    const struct rec *f = wait_finished(c, 1);
    const struct rec *s = find_rec(c, SCHED_RUN_STARTED, 1);
    assert_non_null(s);
    assert_true(s < f); /* STARTED was handed out first */
    assert_true(s->at >= t0 - 1 && s->at <= f->at);
    assert_int_equal(f->outcome, STORE_RUN_SUCCEEDED);
    assert_int_equal(f->exit_code, 0);
    assert_int_equal(f->signal, 0);
    assert_int_equal(f->started, 1);
    assert_null(f->reason);
    assert_int_equal(f->output_len, strlen(pl));
    assert_memory_equal(f->output, pl, strlen(pl));
    assert_int_equal(executor_active(c->r), 0);
}

static void test_empty_pipeline(void **state)
{
    struct ctx *c = *state;
    start(c, "cat; echo done", NULL);
    submit(c, 1, "", 0);
    const struct rec *f = wait_finished(c, 1);
    assert_int_equal(f->outcome, STORE_RUN_SUCCEEDED);
    assert_string_equal(f->output, "done\n");
}

static void test_stderr_interleaved(void **state)
{
    struct ctx *c = *state;
    start(c, "echo one; echo two >&2; echo three", NULL);
    submit(c, 1, "x", 1);
    const struct rec *f = wait_finished(c, 1);
    assert_int_equal(f->outcome, STORE_RUN_SUCCEEDED);
    assert_string_equal(f->output, "one\ntwo\nthree\n");
}

static void test_environment(void **state)
{
    struct ctx *c = *state;
    /* Values already in the server's environment are replaced, not doubled. */
    assert_int_equal(setenv("RR_TRIGGER", "bogus", 1), 0);
    assert_int_equal(setenv("RR_RUN_ID", "999", 1), 0);
    start(c,
          "env | grep -E '^RR_(PROJECT_ID|USER_ID|RUN_ID|TRIGGER|"
          "SCHEDULED_AT)=' | LC_ALL=C sort",
          NULL);
    submit(c, 42, "{}", 2);
    const struct rec *f = wait_finished(c, 42);
    unsetenv("RR_TRIGGER");
    unsetenv("RR_RUN_ID");
    assert_int_equal(f->outcome, STORE_RUN_SUCCEEDED);
    assert_string_equal(f->output, "RR_PROJECT_ID=proj-1\n"
                                   "RR_RUN_ID=42\n"
                                   "RR_SCHEDULED_AT=2024-05-01T12:00:00Z\n"
                                   "RR_TRIGGER=schedule\n"
                                   "RR_USER_ID=user-1\n");
}

/* ------------------------------------------------------------ environment */

/* The test process's environment, saved so that a test can replace it
 * wholesale (clearenv) and put it back. */
static char **env_save(void)
{
    size_t n = 0;
    for (char **e = environ; *e; e++)
        n++;
    char **saved = calloc(n + 1, sizeof *saved);
    assert_non_null(saved);
    for (size_t i = 0; i < n; i++)
        assert_non_null(saved[i] = strdup(environ[i]));
    return saved;
}

static void env_restore(char **saved)
{
    assert_int_equal(clearenv(), 0);
    for (char **e = saved; *e; e++) {
        char *eq = strchr(*e, '=');
        if (eq) {
            *eq = '\0';
            assert_int_equal(setenv(*e, eq + 1, 1), 0);
        }
        free(*e);
    }
    free(saved);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The lines of want[] sorted bytewise (as LC_ALL=C sort), each with '\n',
 * in a static buffer. */
static const char *sorted_lines(const char **want, size_t n)
{
    static char out[8192];
    qsort(want, n, sizeof *want, cmp_str);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int w = snprintf(out + k, sizeof out - k, "%s\n", want[i]);
        assert_true(w > 0 && (size_t)w < sizeof out - k);
        k += (size_t)w;
    }
    return out;
}

/* Exactly what the shell was given by execve (its /proc environ; `env`
 * would add what the shell exports itself, such as PWD), sorted, with the
 * random part of the run's mark replaced by X after checking its form. */
#define SHOW_ENV                                                               \
    "cat >/dev/null; tr '\\0' '\\n' </proc/$$/environ | "                      \
    "sed 's/^RRDEPLOY_RUN=[0-9a-f]\\{16\\}:/RRDEPLOY_RUN=X:/' | LC_ALL=C sort"

/* The password database's home of this user, as "HOME=...", or NULL. */
static char *home_entry(void)
{
    struct passwd *pw = getpwuid(geteuid());
    if (!pw || !pw->pw_dir || !*pw->pw_dir)
        return NULL;
    char *s = malloc(strlen(pw->pw_dir) + 6);
    assert_non_null(s);
    sprintf(s, "HOME=%s", pw->pw_dir);
    return s;
}

static const char *const env_set[] = {"GREETING=hello world", "LANG=C",
                                      "EMPTY="};
static const char *const env_pass[] = {"PASS_ME", "NOT_SET_ANYWHERE"};

static void t_env(struct exec_config *cfg)
{
    cfg->run_env = env_set;
    cfg->nrun_env = sizeof env_set / sizeof env_set[0];
    cfg->pass_env = env_pass;
    cfg->npass_env = sizeof env_pass / sizeof env_pass[0];
}

/* A server with secrets, a stray HOME and a busy environment: a run sees
 * the allow-list (PATH, LANG, LC_*, TZ), HOME from the password database,
 * what --pass-env and --run-env name (run_env replacing LANG), its RR_*
 * and its mark; nothing else. */
static void test_environment_is_clean(void **state)
{
    struct ctx *c = *state;
    char *path = strdup(getenv("PATH") ? getenv("PATH") : "/usr/bin:/bin");
    assert_non_null(path);
    char **saved = env_save();
    assert_int_equal(clearenv(), 0);
    const char *server_env[][2] = {
        {"PATH", path},          {"ROCKETRIDE_APIKEY", "dev-s3cret"},
        {"SECRET_TOKEN", "t0k"}, {"HOME", "/not/from/the/environment"},
        {"LANG", "C.UTF-8"},     {"LC_TIME", "en_GB.UTF-8"},
        {"LC_ALL", "C.UTF-8"},   {"TZ", "Europe/Berlin"},
        {"PASS_ME", "passed"},   {"RR_TRIGGER", "bogus"},
        {"RRDEPLOY_RUN", "x:1"}, {"USER", "someone"},
        {"LCX", "not-locale"},
    };
    for (size_t i = 0; i < sizeof server_env / sizeof server_env[0]; i++)
        assert_int_equal(setenv(server_env[i][0], server_env[i][1], 1), 0);
    start(c, SHOW_ENV, t_env);
    env_restore(saved); /* runs use what exec_new saw */
    submit(c, 42, "{}", 2);
    const struct rec *f = wait_finished(c, 42);
    assert_int_equal(f->outcome, STORE_RUN_SUCCEEDED);

    char path_entry[4096];
    snprintf(path_entry, sizeof path_entry, "PATH=%s", path);
    char *home = home_entry();
    const char *want[] = {
        path_entry, "LANG=C", "LC_ALL=C.UTF-8", "LC_TIME=en_GB.UTF-8",
        "TZ=Europe/Berlin", "PASS_ME=passed", "GREETING=hello world",
        "EMPTY=", "RR_PROJECT_ID=proj-1", "RR_USER_ID=user-1",
        "RR_RUN_ID=42", "RR_TRIGGER=schedule",
        "RR_SCHEDULED_AT=2024-05-01T12:00:00Z", "RRDEPLOY_RUN=X:42",
        home, /* last: may be NULL */
    };
    size_t n = sizeof want / sizeof want[0] - (home == NULL);
    assert_string_equal(f->output, sorted_lines(want, n));
    assert_null(strstr(f->output, "s3cret"));
    free(home);
    free(path);
}

/* PATH unset (or empty) in the server: runs get a sane default, as
 * systemd gives units; and nothing else of an otherwise empty
 * environment. */
static void test_environment_default_path(void **state)
{
    struct ctx *c = *state;
    char **saved = env_save();
    assert_int_equal(clearenv(), 0);
    assert_int_equal(setenv("PATH", "", 1), 0);
    start(c, SHOW_ENV, NULL);
    env_restore(saved);
    submit(c, 7, "{}", 2);
    const struct rec *f = wait_finished(c, 7);
    assert_int_equal(f->outcome, STORE_RUN_SUCCEEDED);
    char *home = home_entry();
    const char *want[] = {
        "PATH=" EXEC_DEFAULT_PATH, "RR_PROJECT_ID=proj-1",
        "RR_USER_ID=user-1", "RR_RUN_ID=7", "RR_TRIGGER=schedule",
        "RR_SCHEDULED_AT=2024-05-01T12:00:00Z", "RRDEPLOY_RUN=X:7", home,
    };
    size_t n = sizeof want / sizeof want[0] - (home == NULL);
    assert_string_equal(f->output, sorted_lines(want, n));
    free(home);
}

/* One operator entry: refused (RR_E_INVAL) with a message naming the
 * variable and never the value. */
static void refused(const char *entry, bool with_value, const char *why)
{
    struct err e = {0};
    assert_int_equal(exec_env_check(entry, with_value, &e), RR_E_INVAL);
    if (!strstr(e.msg, why))
        fail_msg("%s: '%s' does not say '%s'", entry, e.msg, why);
    const char *eq = strchr(entry, '=');
    if (eq && eq[1])
        assert_null(strstr(e.msg, eq + 1));
}

static void test_environment_config_check(void **state)
{
    (void)state;
    static const char *const reserved[] = {
        "RR_PROJECT_ID", "RR_USER_ID",      "RR_RUN_ID",
        "RR_TRIGGER",    "RR_SCHEDULED_AT", "RRDEPLOY_RUN"};
    char buf[64];
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++) {
        refused(reserved[i], false, "set by the server in every run");
        snprintf(buf, sizeof buf, "%s=x", reserved[i]);
        refused(buf, true, "set by the server in every run");
    }
    refused("ROCKETRIDE_APIKEY", false, "ROCKETRIDE_APIKEY is the server's");
    refused("ROCKETRIDE_APIKEY=hunter2", true, "a secret");
    refused("1ABC=x", true, "'1ABC' is not a variable name");
    refused("A-B=x", true, "not a variable name");
    refused("=x", true, "not a variable name");
    refused("", false, "not a variable name");
    refused("A B", false, "not a variable name");
    refused("NAME", true, "expected NAME=VALUE");
    refused("NAME=hunter2", false, "expected a NAME");
    struct err e = {0};
    assert_int_equal(exec_env_check("_x1=a=b", true, &e), 0);
    assert_int_equal(exec_env_check("lower_case=", true, &e), 0);
    assert_int_equal(exec_env_check("RR_OTHER", false, &e), 0);
    assert_int_equal(exec_env_check("LANG", false, &e), 0);

    /* exec_new runs the same check, and bounds the output kept. */
    struct exec_config cfg;
    const char *bad_set[] = {"OK=1", "RR_RUN_ID=x"};
    const char *bad_pass[] = {"ROCKETRIDE_APIKEY"};
    exec_config_defaults(&cfg);
    cfg.cmd = "true";
    cfg.run_env = bad_set;
    cfg.nrun_env = 2;
    assert_null(exec_new(&cfg, &e));
    assert_int_equal(e.code, RR_E_INVAL);
    assert_non_null(strstr(e.msg, "RR_RUN_ID"));
    exec_config_defaults(&cfg);
    cfg.pass_env = bad_pass;
    cfg.npass_env = 1;
    assert_null(exec_new(&cfg, &e)); /* also with no command */
    assert_non_null(strstr(e.msg, "ROCKETRIDE_APIKEY"));
    exec_config_defaults(&cfg);
    cfg.output_max = EXEC_OUTPUT_LIMIT + 1;
    assert_null(exec_new(&cfg, &e));
    cfg.output_max = EXEC_OUTPUT_LIMIT;
    struct executor *r = exec_new(&cfg, &e);
    assert_non_null(r);
    executor_free(r);
}

static void test_exit_code(void **state)
{
    struct ctx *c = *state;
    start(c, "echo failing; exit 7", NULL);
    submit(c, 1, "{}", 2);
    const struct rec *f = wait_finished(c, 1);
    assert_int_equal(f->outcome, STORE_RUN_FAILED);
    assert_int_equal(f->exit_code, 7);
    assert_int_equal(f->signal, 0);
    assert_int_equal(f->started, 1);
    assert_string_equal(f->output, "failing\n");
}

static void test_killed_by_signal(void **state)
{
    struct ctx *c = *state;
    start(c, "kill -9 $$", NULL);
    submit(c, 1, "{}", 2);
    const struct rec *f = wait_finished(c, 1);
    assert_int_equal(f->outcome, STORE_RUN_FAILED);
    assert_int_equal(f->exit_code, -1);
    assert_int_equal(f->signal, SIGKILL);
}

/* The bytes of `seq 1 n`. */
static char *seq_text(int n, size_t *len)
{
    size_t cap = (size_t)n * 8 + 1, k = 0;
    char *s = malloc(cap);
    assert_non_null(s);
    for (int i = 1; i <= n; i++)
        k += (size_t)snprintf(s + k, cap - k, "%d\n", i);
    *len = k;
    return s;
}

static void check_tail(struct ctx *c, size_t keep)
{
    size_t len;
    char *all = seq_text(200000, &len);
    assert_true(len > 1024 * 1024);
    submit(c, 1, "{}", 2);
    const struct rec *f = wait_finished(c, 1);
    assert_int_equal(f->outcome, STORE_RUN_SUCCEEDED);
    assert_int_equal(f->output_len, keep);
    assert_memory_equal(f->output, all + len - keep, keep);
    free(all);
}

static void test_output_tail_64k(void **state)
{
    struct ctx *c = *state;
    start(c, "seq 1 200000", NULL); /* 1.23 MiB */
    check_tail(c, 64 * 1024);
}

static void t_small_tail(struct exec_config *cfg)
{
    cfg->output_max = 1000;
}

static void test_output_tail_small(void **state)
{
    struct ctx *c = *state;
    start(c, "seq 1 200000", t_small_tail);
    check_tail(c, 1000);
}

static void t_no_tail(struct exec_config *cfg)
{
    cfg->output_max = 0;
}

static void test_output_none_kept(void **state)
{
    struct ctx *c = *state;
    start(c, "seq 1 200000", t_no_tail);
    submit(c, 1, "{}", 2);
    const struct rec *f = wait_finished(c, 1);
    assert_int_equal(f->outcome, STORE_RUN_SUCCEEDED);
    assert_int_equal(f->output_len, 0);
}

static void test_large_stdin_wc(void **state)
{
    struct ctx *c = *state;
    start(c, "wc -c", NULL);
    size_t n = 2 * 1024 * 1024;
    char *pl = malloc(n);
    assert_non_null(pl);
    memset(pl, 'x', n);
    submit(c, 1, pl, n);
    free(pl);
    const struct rec *f = wait_finished(c, 1);
    assert_int_equal(f->outcome, STORE_RUN_SUCCEEDED);
    assert_int_equal(strtol(f->output, NULL, 10), (long)n);
}

static void t_big_tail(struct exec_config *cfg)
{
    cfg->output_max = 4 * 1024 * 1024;
}

/* 2 MiB of arbitrary bytes (NULs included) in, the same 2 MiB out. */
static void test_large_roundtrip_cat(void **state)
{
    struct ctx *c = *state;
    start(c, "cat", t_big_tail);
    size_t n = 2 * 1024 * 1024;
    unsigned char *pl = malloc(n);
    assert_non_null(pl);
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        pl[i] = (unsigned char)x;
    }
    submit(c, 1, pl, n);
    const struct rec *f = wait_finished(c, 1);
    assert_int_equal(f->outcome, STORE_RUN_SUCCEEDED);
    assert_int_equal(f->output_len, n);
    assert_memory_equal(f->output, pl, n);
    free(pl);
}

static void test_child_never_reads_stdin(void **state)
{
    struct ctx *c = *state;
    start(c, "sleep 0; exit 0", NULL);
    size_t n = 1024 * 1024;
    char *pl = malloc(n);
    assert_non_null(pl);
    memset(pl, '{', n);
    submit(c, 1, pl, n);
    submit(c, 2, pl, n);
    free(pl);
    assert_true(wait_until(c, p_nfinished, 2, WAIT_MS));
    for (int64_t id = 1; id <= 2; id++) {
        const struct rec *f = find_rec(c, SCHED_RUN_FINISHED, id);
        assert_int_equal(f->outcome, STORE_RUN_SUCCEEDED);
        assert_int_equal(f->exit_code, 0);
    }
}

static void test_timeout_kills_group(void **state)
{
    struct ctx *c = *state;
    /* The grandchild ignores TERM, so only the group SIGKILL that follows
     * the leader's death can remove it. */
    start(c,
          with_fifo(c, "(trap '' TERM; exec sleep 1000) & echo $$ $! > ",
                    "; wait"),
          t_short);
    submit(c, 1, "{}", 2);
    pid_t leader, child;
    assert_true(fifo_line(c, &leader, &child, WAIT_MS));
    const struct rec *f = wait_finished(c, 1);
    assert_int_equal(f->outcome, STORE_RUN_TIMED_OUT);
    assert_int_equal(f->started, 1);
    assert_int_equal(f->signal, SIGTERM); /* the shell died of the TERM */
    assert_non_null(f->reason);
    assert_non_null(strstr(f->reason, "timed out"));
    assert_true(kill(leader, 0) == -1 && errno == ESRCH); /* reaped */
    assert_true(wait_gone(child, WAIT_MS));
}

static void test_timeout_term_ignored(void **state)
{
    struct ctx *c = *state;
    start(c, with_fifo(c, "trap '' TERM; sleep 1000 & echo $$ $! > ", "; wait"),
          t_short);
    int64_t t0 = time_now_mono_ms();
    submit(c, 1, "{}", 2);
    pid_t leader, child;
    assert_true(fifo_line(c, &leader, &child, WAIT_MS));
    const struct rec *f = wait_finished(c, 1);
    assert_int_equal(f->outcome, STORE_RUN_TIMED_OUT);
    assert_int_equal(f->signal, SIGKILL); /* TERM ignored, KILL after grace */
    /* timeout 0.5 s + grace 0.3 s (a lower bound only: never flaky). */
    assert_true(f->mono_ms - t0 >= 790);
    assert_true(kill(leader, 0) == -1 && errno == ESRCH);
    assert_true(wait_gone(child, WAIT_MS));
}

/* Run 1 leaves a TERM-ignoring process in a session of its own (setsid),
 * out of the group kill, and times out: stopping the run must kill that
 * process too, found by the run's mark in its environment. */
static void escaped_process_dies_on_timeout(struct ctx *c)
{
    start(c,
          with_fifo(c, "setsid sh -c 'trap \"\" TERM; exec sleep 1000' "
                       "</dev/null >/dev/null 2>&1 & echo $$ $! > ",
                    "; wait"),
          t_short);
    submit(c, 1, "{}", 2);
    pid_t leader, escaped;
    assert_true(fifo_line(c, &leader, &escaped, WAIT_MS));
    const struct rec *f = wait_finished(c, 1);
    assert_int_equal(f->outcome, STORE_RUN_TIMED_OUT);
    assert_true(wait_gone(escaped, WAIT_MS));
}

static void test_timeout_kills_escaped(void **state)
{
    escaped_process_dies_on_timeout(*state);
}

/* The sweep is per server: another executor's run with the same id (another
 * server on the machine, another database) is left alone. */
static void test_escaped_sweep_spares_other_executors(void **state)
{
    struct ctx *c = *state;
    struct exec_config cfg;
    exec_config_defaults(&cfg);
    cfg.cmd = with_fifo(c, "echo $$ $$ > ", "; exec sleep 1000");
    struct err e = {0};
    struct executor *other = exec_new(&cfg, &e);
    assert_non_null(other);
    struct sched_job j = mkjob(1, "{}", 2);
    assert_int_equal(executor_submit(other, &j), 0);
    pid_t theirs, same;
    assert_true(fifo_line(c, &theirs, &same, WAIT_MS));

    escaped_process_dies_on_timeout(c);
    assert_int_equal(kill(theirs, 0), 0); /* run 1 of the other executor lives */
    executor_free(other);
    assert_true(wait_gone(theirs, WAIT_MS));
}

/* A run that ends by itself while a process it left behind in another
 * session still holds its output: that process is killed too. */
static void test_exit_kills_escaped_holding_output(void **state)
{
    struct ctx *c = *state;
    /* The escaped shell reports its pid only once in its new session (its
     * stdout goes to `read`, its stderr is the run's output), and the run
     * exits only after that. */
    start(c,
          with_fifo(c, "{ setsid sh -c 'echo $$; exec sleep 1000' </dev/null & } | "
                       "{ read p; echo $$ $p > ",
                    "; }; exit 0"),
          NULL);
    submit(c, 1, "{}", 2);
    pid_t leader, escaped;
    assert_true(fifo_line(c, &leader, &escaped, WAIT_MS));
    const struct rec *f = wait_finished(c, 1);
    assert_int_equal(f->outcome, STORE_RUN_SUCCEEDED);
    assert_true(wait_gone(escaped, WAIT_MS));
}

static void t_long(struct exec_config *cfg)
{
    cfg->kill_grace_s = 0.2;
}

static void test_cancel_running(void **state)
{
    struct ctx *c = *state;
    start(c, with_fifo(c, "sleep 1000 & echo $$ $! > ", "; wait"), t_long);
    submit(c, 7, "{}", 2);
    pid_t leader, child;
    assert_true(fifo_line(c, &leader, &child, WAIT_MS));
    assert_int_equal(executor_active(c->r), 1);
    assert_int_equal(executor_cancel(c->r, 7, STORE_RUN_CANCELLED), 0);
    /* A second request does not change the outcome (the first wins); it may
     * find the run already finished. */
    int rc = executor_cancel(c->r, 7, STORE_RUN_INTERRUPTED);
    assert_true(rc == 0 || rc == RR_E_NOTFOUND);
    const struct rec *f = wait_finished(c, 7);
    assert_int_equal(f->outcome, STORE_RUN_CANCELLED);
    assert_int_equal(f->started, 1);
    assert_true(p_started(c, 7));
    assert_true(kill(leader, 0) == -1 && errno == ESRCH);
    assert_true(wait_gone(child, WAIT_MS));
    assert_int_equal(executor_cancel(c->r, 7, STORE_RUN_CANCELLED), RR_E_NOTFOUND);
    assert_int_equal(executor_cancel(c->r, 12345, STORE_RUN_CANCELLED),
                     RR_E_NOTFOUND);
    assert_int_equal(executor_cancel(c->r, 7, STORE_RUN_SUCCEEDED), RR_E_INVAL);
    assert_int_equal(executor_active(c->r), 0);
}

static void t_one(struct exec_config *cfg)
{
    cfg->max_runs = 1;
    cfg->kill_grace_s = 0.2;
}

static void test_cancel_queued(void **state)
{
    struct ctx *c = *state;
    start(c, with_fifo(c, "sleep 1000 & echo $$ $! > ", "; wait"), t_one);
    submit(c, 1, "{}", 2);
    submit(c, 2, "{}", 2);
    pid_t leader, child;
    assert_true(fifo_line(c, &leader, &child, WAIT_MS));
    assert_int_equal(executor_active(c->r), 2);
    assert_int_equal(executor_cancel(c->r, 2, STORE_RUN_CANCELLED), 0);
    const struct rec *f = wait_finished(c, 2);
    assert_int_equal(f->outcome, STORE_RUN_CANCELLED);
    assert_int_equal(f->started, 0);
    assert_int_equal(f->exit_code, -1);
    assert_null(find_rec(c, SCHED_RUN_STARTED, 2));
    assert_null(find_rec(c, SCHED_RUN_FINISHED, 1)); /* still running */
    assert_int_equal(executor_active(c->r), 1);

    assert_int_equal(executor_cancel(c->r, 1, STORE_RUN_INTERRUPTED), 0);
    f = wait_finished(c, 1);
    assert_int_equal(f->outcome, STORE_RUN_INTERRUPTED);
    assert_int_equal(f->started, 1);
    assert_true(wait_gone(child, WAIT_MS));
    assert_null(find_rec(c, SCHED_RUN_STARTED, 2)); /* never started */
    assert_int_equal(executor_active(c->r), 0);
}

static void t_two(struct exec_config *cfg)
{
    cfg->max_runs = 2;
}

static void test_max_runs_fifo(void **state)
{
    struct ctx *c = *state;
    start(c, "sleep 0.1", t_two);
    for (int64_t id = 1; id <= 5; id++)
        submit(c, id, "{}", 2);
    assert_true(wait_until(c, p_nfinished, 5, WAIT_MS));
    int running = 0, maxr = 0;
    int64_t next_start = 1;
    for (size_t i = 0; i < c->nrecs; i++) {
        const struct rec *e = &c->recs[i];
        if (e->kind == SCHED_RUN_STARTED) {
            assert_int_equal(e->run_id, next_start); /* FIFO */
            next_start++;
            running++;
        } else {
            assert_int_equal(e->outcome, STORE_RUN_SUCCEEDED);
            running--;
        }
        if (running > maxr)
            maxr = running;
    }
    assert_int_equal(next_start, 6);
    assert_int_equal(maxr, 2);
    assert_int_equal(c->recs[0].kind, SCHED_RUN_STARTED);
    assert_int_equal(c->recs[1].kind, SCHED_RUN_STARTED);
    assert_int_equal(c->nrecs, 10);
    assert_int_equal(executor_active(c->r), 0);
}

static void test_no_executor(void **state)
{
    struct ctx *c = *state;
    start(c, NULL, NULL);
    submit(c, 1, "{}", 2);
    submit(c, 2, "{}", 2);
    assert_true(wait_until(c, p_nfinished, 2, WAIT_MS));
    for (int64_t id = 1; id <= 2; id++) {
        const struct rec *f = find_rec(c, SCHED_RUN_FINISHED, id);
        assert_int_equal(f->outcome, STORE_RUN_FAILED);
        assert_string_equal(f->reason, "no executor configured");
        assert_int_equal(f->started, 0);
        assert_int_equal(f->exit_code, -1);
        assert_int_equal(f->signal, 0);
    }
    assert_int_equal(count_kind(c, SCHED_RUN_STARTED), 0);
    assert_int_equal(executor_active(c->r), 0);
}

static void t_free(struct exec_config *cfg)
{
    cfg->max_runs = 3;
    cfg->kill_grace_s = 0.2;
}

static void test_free_with_running(void **state)
{
    struct ctx *c = *state;
    /* Job 2's whole group ignores TERM, so only the KILL ends it. */
    start(c,
          with_fifo(c,
                    "[ \"$RR_RUN_ID\" = 2 ] && trap '' TERM; "
                    "sleep 1000 & echo $$ $! > ",
                    "; wait"),
          t_free);
    for (int64_t id = 1; id <= 5; id++) /* 3 running, 2 queued */
        submit(c, id, "{}", 2);
    pid_t leaders[3], children[3];
    for (int i = 0; i < 3; i++)
        assert_true(fifo_line(c, &leaders[i], &children[i], WAIT_MS));
    int64_t t0 = time_now_mono_ms();
    executor_free(c->r);
    c->r = NULL;
    int64_t took = time_now_mono_ms() - t0;
    assert_true(took < 5000);
    for (int i = 0; i < 3; i++) {
        /* Leaders were our children: reaped by the executor, no zombie. */
        assert_true(kill(leaders[i], 0) == -1 && errno == ESRCH);
        assert_true(wait_gone(children[i], WAIT_MS));
    }
    int st;
    errno = 0;
    assert_int_equal(waitpid(-1, &st, WNOHANG), -1);
    assert_int_equal(errno, ECHILD); /* no child, dead or alive, remains */
}

static void test_no_fd_leak(void **state)
{
    struct ctx *c = *state;
    /* An fd the server forgot to mark close-on-exec must not reach runs. */
    int leaky = open("/dev/null", O_RDONLY);
    assert_true(leaky >= 0);
    start(c, "ls /proc/self/fd | LC_ALL=C sort -n | tr '\\n' ' '; sleep 0.2",
          t_two);
    submit(c, 1, "{}", 2);
    submit(c, 2, "{}", 2);
    assert_true(wait_until(c, p_nfinished, 2, WAIT_MS));
    close(leaky);
    for (int64_t id = 1; id <= 2; id++) {
        const struct rec *f = find_rec(c, SCHED_RUN_FINISHED, id);
        assert_int_equal(f->outcome, STORE_RUN_SUCCEEDED);
        /* 0..2 plus ls's own directory fd */
        assert_string_equal(f->output, "0 1 2 3 ");
    }
}

/* The server ignores SIGPIPE and the supervisor thread blocks every signal;
 * a run must still start with default dispositions and an empty mask. */
static void test_child_signal_state(void **state)
{
    struct ctx *c = *state;
    struct sigaction ign, old;
    memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    assert_int_equal(sigaction(SIGPIPE, &ign, &old), 0);
    /* `cat` in a pipeline: dash resets the mask for some simple commands,
     * so read the status of a process that shows what it inherited. */
    start(c, "cat /proc/self/status | grep -E '^Sig(Ign|Blk):'", NULL);
    submit(c, 1, "{}", 2);
    const struct rec *f = wait_finished(c, 1);
    assert_int_equal(sigaction(SIGPIPE, &old, NULL), 0);
    assert_int_equal(f->outcome, STORE_RUN_SUCCEEDED);
    unsigned long long blk = 1, igns = 1;
    assert_int_equal(
        sscanf(f->output, "SigBlk:\t%llx\nSigIgn:\t%llx", &blk, &igns), 2);
    assert_true(blk == 0);
    /* Signals 1..31 at their defaults. libc's posix_spawn (glibc and musl
     * alike) deliberately leaves its internal signals 32 and 33 ignored in
     * the child; SIGRTMIN is 34 for glibc programs, so nothing sees them. */
    assert_true((igns & 0x7fffffffULL) == 0);
}

static void test_api_edges(void **state)
{
    (void)state;
    struct exec_config cfg;
    exec_config_defaults(&cfg);
    assert_int_equal(cfg.max_runs, 64);
    assert_true(cfg.timeout_s == 3600);
    assert_true(cfg.kill_grace_s == 10);
    assert_int_equal(cfg.output_max, 64 * 1024);
    assert_null(cfg.cmd);

    cfg.max_runs = 0;
    struct err e = {0};
    assert_null(exec_new(&cfg, &e));
    assert_int_equal(e.code, RR_E_INVAL);

    executor_free(NULL);

    /* Reports left undrained are discarded by the executor's free (LSan
     * checks). */
    exec_config_defaults(&cfg);
    cfg.cmd = "echo hi";
    struct executor *r = exec_new(&cfg, &e);
    assert_non_null(r);
    assert_int_equal(executor_submit(r, NULL), RR_E_INVAL);
    struct sched_job nul = mkjob(1, NULL, 2); /* length without text */
    assert_int_equal(executor_submit(r, &nul), RR_E_INVAL);
    struct sched_job j = mkjob(1, "{}", 2);
    assert_int_equal(executor_submit(r, &j), 0);
    executor_free(r);
}

/* Exit polling instead of pidfds: same bodies, own names in the report. */
#define POLL_VARIANT(f)                                                        \
    static void f##_polled(void **state)                                       \
    {                                                                          \
        f(state);                                                              \
    }
POLL_VARIANT(test_success_cat)
POLL_VARIANT(test_exit_code)
POLL_VARIANT(test_killed_by_signal)
POLL_VARIANT(test_timeout_kills_group)
POLL_VARIANT(test_timeout_term_ignored)
POLL_VARIANT(test_timeout_kills_escaped)
POLL_VARIANT(test_cancel_running)
POLL_VARIANT(test_max_runs_fifo)
POLL_VARIANT(test_free_with_running)
#undef POLL_VARIANT

int main(void)
{
    /* Adopt orphaned grandchildren, as init would (see the top). */
    if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) {
        perror("prctl(PR_SET_CHILD_SUBREAPER)");
        return 1;
    }
    log_configure(LOG_WARN, LOG_FORMAT_TEXT);
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        T(test_success_cat),
        T(test_empty_pipeline),
        T(test_stderr_interleaved),
        T(test_environment),
        T(test_environment_is_clean),
        T(test_environment_default_path),
        T(test_environment_config_check),
        T(test_exit_code),
        T(test_killed_by_signal),
        T(test_output_tail_64k),
        T(test_output_tail_small),
        T(test_output_none_kept),
        T(test_large_stdin_wc),
        T(test_large_roundtrip_cat),
        T(test_child_never_reads_stdin),
        T(test_timeout_kills_group),
        T(test_timeout_term_ignored),
        T(test_timeout_kills_escaped),
        T(test_exit_kills_escaped_holding_output),
        T(test_escaped_sweep_spares_other_executors),
        T(test_cancel_running),
        T(test_cancel_queued),
        T(test_max_runs_fifo),
        T(test_no_executor),
        T(test_free_with_running),
        T(test_no_fd_leak),
        T(test_child_signal_state),
        T(test_api_edges),
#define P(f)                                                                   \
    cmocka_unit_test_setup_teardown(f##_polled, setup_poll, teardown_poll)
        P(test_success_cat),
        P(test_exit_code),
        P(test_killed_by_signal),
        P(test_timeout_kills_group),
        P(test_timeout_term_ignored),
        P(test_timeout_kills_escaped),
        P(test_cancel_running),
        P(test_max_runs_fifo),
        P(test_free_with_running),
#undef P
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
