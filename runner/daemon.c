/* daemon.c -- `rrdeploy serve`: the event loop and everything it drives.
 *
 * Design: one libuv loop on the calling thread (epoll: a turn costs what is
 * ready). In it:
 *   - the DAP server (dap/): lws joins the loop, and every turn ends with a
 *     service pass that handles the turn's requests in one transaction; after
 *     each pass the tick timer is re-armed (deployments may have changed);
 *   - tick: a timer armed SCHED_TICK_LEAD before the scheduler's earliest
 *     deadline (the engine decides that far ahead and holds those runs), or
 *     at the earliest held run, and at least once a minute so that a stepped
 *     wall clock is noticed;
 *   - prune: a timer that, while ticks have left ledgers to prune, prunes
 *     SCHED_PRUNE_CHUNK deployments' ledgers every PRUNE_EVERY_MS, between
 *     ticks (sched_prune stays out of the way of a burst);
 *   - wake: an async handle the executor's threads signal when runs start or
 *     end; its callback records every pending report in one transaction;
 *   - keys: a timer polling the database's data_version, so a key revoked by
 *     `rrdeploy keys` takes effect on live sessions and on the deployments it
 *     owns within a second;
 *   - SIGTERM/SIGINT: stop accepting connections and ticks, let runs finish
 *     for up to cfg->shutdown_grace_s (the grace timer), then record the
 *     rest as interrupted.
 * Start-up: executor, scheduler (stale runs reclaimed, missed ticks
 * recorded), then the listener. docs/architecture.md follows a request and a
 * tick through these pieces.
 * Thread: everything on the calling thread; the executor's threads only call
 * wake (uv_async_send). */
#include "runner/runner.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <math.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "runner/executor.h"
#include "util/vault.h"

#define KEYS_POLL_MS 250
#define TICK_MAX_SLEEP_S 60.0            /* re-read the wall clock at least this often */
#define SCHED_TICK_CHUNK 500             /* decisions per turn of the loop */
#define SCHED_PRUNE_CHUNK 500            /* ledgers pruned per turn of the loop */
#define PRUNE_EVERY_MS 5
#define REPORTS_CHUNK 1000               /* run reports recorded per turn */
#define HEAP_KEEP (64 * 1024 * 1024)     /* free heap kept rather than trimmed */
#define HEAP_PAD (1024 * 1024)           /* extra asked of the kernel per growth */

struct daemon {
    const struct runner_config *cfg; /* borrowed */
    struct store *store;             /* borrowed */
    struct clock clock;
    uv_loop_t loop;
    uv_timer_t tick, keys, grace, prune;
    uv_async_t wake;
    uv_signal_t sig_term, sig_int;
    bool handles_open;
    struct executor *exec;           /* owned */
    bool engine;                     /* exec is the rocketride executor */
    struct vault *vault;             /* owned: seals owners' credentials */
    struct sched *sched;             /* owned */
    struct dap_env env;
    struct dap_server *dap;          /* owned */
    int64_t data_version;
    bool stopping;                   /* stop requested: no new connections or ticks */
};

/* ---------------------------------------------------------------- ticks */

static void on_tick(uv_timer_t *h);
static void on_prune(uv_timer_t *h);

/* Arm the tick timer for when the scheduler next needs it
 * (sched_next_wake: SCHED_TICK_LEAD before the earliest deadline, the
 * deadline itself when a running deployment must wait for it, a held run's
 * second, or now while a large tick is being worked through in chunks) --
 * never more than a minute away, so a stepped wall clock is noticed. With a
 * test clock, time moves only by rrtest_clock: the timer fires only for work
 * already due at the test time. */
static void arm_tick(struct daemon *d)
{
    if (d->stopping)
        return;
    if (!uv_is_active((uv_handle_t *)&d->prune) && sched_prune_waiting(d->sched) > 0)
        uv_timer_start(&d->prune, on_prune, PRUNE_EVERY_MS, PRUNE_EVERY_MS);
    double now = clock_now(&d->clock);
    double at = sched_next_wake(d->sched, now, SCHED_TICK_LEAD);
    if (at == 0 || (d->clock.fixed && at > now)) {
        uv_timer_stop(&d->tick);
        return;
    }
    double delay = d->clock.fixed ? 0 : at - time_now_real();
    if (delay > TICK_MAX_SLEEP_S)
        delay = TICK_MAX_SLEEP_S;
    /* +1 ms: the timer runs on the monotonic clock; never wake just before.
     * Work due now still waits 1 ms: a 0 ms timer started from its own
     * callback would run again in the same turn, before any I/O, and a
     * chunked catch-up would starve every client. */
    uint64_t ms = delay <= 0 ? 1 : (uint64_t)ceil(delay * 1e3) + 1;
    uv_update_time(&d->loop);
    uv_timer_start(&d->tick, on_tick, ms, 0);
}

/* Ledgers ticks left to prune, a chunk a turn, between ticks. When a tick
 * is near, the timer stops; the next arm_tick starts it again. */
static void on_prune(uv_timer_t *h)
{
    struct daemon *d = h->data;
    size_t before = sched_prune_waiting(d->sched);
    size_t after = d->stopping ? 0
                               : sched_prune(d->sched, clock_now(&d->clock),
                                             SCHED_PRUNE_CHUNK);
    if (after == 0 || after == before)
        uv_timer_stop(&d->prune);
}

/* At most SCHED_TICK_CHUNK decisions a turn: a clock stepped days ahead, or
 * a burst far larger than usual, is worked through in short turns, with
 * requests served in between. */
static void on_tick(uv_timer_t *h)
{
    struct daemon *d = h->data;
    if (!d->stopping) {
        sched_release(d->sched, clock_now(&d->clock));
        sched_tick(d->sched, clock_now(&d->clock), SCHED_TICK_LEAD, SCHED_TICK_CHUNK);
    }
    arm_tick(d);
}

/* ---------------------------------------------------------------- runs */

/* Record what the executor reported, at most max reports (0: all); with a
 * test clock, at the test time. Returns how many. */
static int record_reports(struct daemon *d, int max)
{
    return executor_record(d->exec, d->sched, d->store,
                           d->clock.fixed ? d->clock.at : 0, max);
}

/* The executor's threads call this (any thread). */
static void wake_loop(void *ud)
{
    struct daemon *d = ud;
    uv_async_send(&d->wake);
}

/* rocketride_drain_identities: a verdict goes to the session waiting. */
static void on_verdict(void *ud, uint64_t ticket, const struct dap_identity *id,
                       bool refused, const char *why)
{
    struct daemon *d = ud;
    if (d->dap)
        dap_server_identified(d->dap, ticket, id, refused, why);
}

/* dap_env.identify */
static int identify(void *ud, const char *key, uint64_t ticket)
{
    struct daemon *d = ud;
    return rocketride_identify(d->exec, key, ticket);
}

/* At most REPORTS_CHUNK reports a turn, like ticks: ten thousand runs
 * ending at once are recorded in short turns, requests served between. */
static void on_wake(uv_async_t *h)
{
    struct daemon *d = h->data;
    if (d->engine)
        rocketride_drain_identities(d->exec, on_verdict, d);
    if (record_reports(d, REPORTS_CHUNK) == REPORTS_CHUNK)
        uv_async_send(&d->wake); /* the rest in the next turn */
    if (d->stopping && executor_active(d->exec) == 0)
        uv_stop(&d->loop);
    arm_tick(d);
}

/* sched cfg.emit: events go to the watching sessions. */
static void on_event(void *ud, const struct sched_event *ev)
{
    struct daemon *d = ud;
    if (d->dap)
        dap_server_event(d->dap, ev);
}

/* dap_env callbacks */
static void on_pass_done(void *ud)
{
    arm_tick(ud);
}

static int runs_in_progress(void *ud)
{
    struct daemon *d = ud;
    return executor_active(d->exec);
}

static void engine_state(void *ud, struct dap_engine_state *out)
{
    struct daemon *d = ud;
    rocketride_state(d->exec, out);
}

/* ---------------------------------------------------------------- keys */

/* Another connection (the `rrdeploy keys` CLI) committed: if keys changed,
 * sessions and deployments re-check theirs. */
static void on_keys_poll(uv_timer_t *h)
{
    struct daemon *d = h->data;
    int64_t v;
    if (store_data_version(d->store, &v) != 0 || v == d->data_version)
        return;
    d->data_version = v;
    dap_server_keys_changed(d->dap);
    if (sched_keys_changed(d->sched, clock_now(&d->clock)) < 0)
        d->data_version = -1; /* not recorded: try again at the next poll */
}

/* ---------------------------------------------------------------- stopping */

static void on_grace(uv_timer_t *h)
{
    struct daemon *d = h->data;
    log_warn("shutdown grace of %.0f s is over with %d run(s) still going",
             d->cfg->shutdown_grace_s, executor_active(d->exec));
    uv_stop(&d->loop);
}

static void begin_shutdown(struct daemon *d)
{
    d->stopping = true;
    dap_server_stop_accepting(d->dap);
    uv_timer_stop(&d->tick);
    uv_timer_stop(&d->prune);
    int active = executor_active(d->exec);
    if (active == 0 || d->exec->ops->detaches) {
        uv_stop(&d->loop);
        return;
    }
    log_info("stopping: no new connections or ticks; waiting up to %.0f s for "
             "%d run(s)", d->cfg->shutdown_grace_s, active);
    uv_timer_start(&d->grace, on_grace,
                   (uint64_t)(d->cfg->shutdown_grace_s * 1e3), 0);
}

static void on_signal(uv_signal_t *h, int sig)
{
    (void)sig;
    struct daemon *d = h->data;
    if (!d->stopping)
        begin_shutdown(d);
}

/* Runs that outlived the grace: their rows say interrupted, then their
 * processes are stopped. Runs decided but not started (held for their
 * second, or queued behind --max-runs) stay queued: the next start starts
 * them if they are not too late (sched_load). */
static void finish_shutdown(struct daemon *d)
{
    record_reports(d, 0);
    int64_t n = 0;
    if (d->exec->ops->detaches) { /* their tasks go on: the next start follows them */
        int active = executor_active(d->exec);
        if (active)
            log_info("%d run(s) go on on the engine; the next start follows them",
                     active);
    } else if (store_run_interrupt_running(d->store, clock_now(&d->clock),
                                    "server shut down before the run finished",
                                    &n) == 0 &&
        n > 0)
        log_warn("%lld run(s) recorded as interrupted", (long long)n);
    executor_free(d->exec);
    d->exec = NULL;
}

/* ---------------------------------------------------------------- start-up */

void runner_config_defaults(struct runner_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    dap_config_defaults(&cfg->dap);
    cfg->default_zone = "UTC";
    cfg->run_timeout_s = 3600;
    cfg->max_runs = 64;
    cfg->keep_runs = 100;
    cfg->starting_deadline_s = 60;
    cfg->shutdown_grace_s = 30;
    cfg->output_max = EXEC_OUTPUT_DEFAULT;
}

/* The service credential of --engine-key-file, in guarded memory
 * (sodium_free), trailing white space removed. Like every secret file, it
 * must not be readable by group or others. NULL with the reason logged. */
static char *read_key_file(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        log_error("--engine-key-file %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    if (!S_ISREG(st.st_mode) || (st.st_mode & 077) || st.st_size > 4096) {
        log_error("--engine-key-file %s: %s", path,
                  !S_ISREG(st.st_mode) ? "not a regular file"
                  : st.st_size > 4096   ? "larger than a key can be"
                                        : "readable by others: run chmod 600 on it");
        close(fd);
        return NULL;
    }
    char *key = sodium_malloc((size_t)st.st_size + 1);
    ssize_t n = read(fd, key, (size_t)st.st_size);
    close(fd);
    if (n < 0)
        n = 0;
    while (n > 0 && (key[n - 1] == '\n' || key[n - 1] == '\r' ||
                     key[n - 1] == ' ' || key[n - 1] == '\t'))
        n--;
    key[n] = '\0';
    if (n == 0) {
        log_error("--engine-key-file %s: empty", path);
        sodium_free(key);
        return NULL;
    }
    return key;
}

/* The rocketride executor: the vault that opens owners' credentials, the
 * service credential, the engine. */
static int start_engine(struct daemon *d)
{
    const struct runner_config *cfg = d->cfg;
    struct err e = {0};
    if (vault_open(cfg->secret_file, &d->vault, &e) != 0) {
        log_error("cannot open the secret that seals credentials: %s", e.msg);
        return RR_E_IO;
    }
    char *service = NULL;
    if (cfg->engine_key_file && !(service = read_key_file(cfg->engine_key_file)))
        return RR_E_INVAL;
    struct rocketride_config rc;
    rocketride_config_defaults(&rc);
    rc.url = cfg->engine_url;
    rc.vault = d->vault;
    rc.service_key = service;
    rc.max_runs = cfg->max_runs;
    rc.timeout_s = cfg->run_timeout_s;
    rc.output_max = cfg->output_max;
    rc.wake = wake_loop;
    rc.wake_ud = d;
    d->exec = rocketride_new(&rc, &e);
    if (service)
        sodium_free(service);
    if (!d->exec) {
        log_error("cannot start the engine executor: %s", e.msg);
        return RR_E_INVAL;
    }
    d->engine = true;
    if (!cfg->engine_key_file)
        log_info("no --engine-key-file: only clients signed in with a RocketRide "
                 "key can add deployments");
    return 0;
}

static int start_exec(struct daemon *d)
{
    const struct runner_config *cfg = d->cfg;
    struct exec_config ec;
    exec_config_defaults(&ec);
    ec.cmd = cfg->exec_cmd;
    ec.max_runs = cfg->max_runs;
    ec.timeout_s = cfg->run_timeout_s;
    ec.output_max = cfg->output_max;
    ec.run_env = cfg->run_env;
    ec.nrun_env = cfg->nrun_env;
    ec.pass_env = cfg->pass_env;
    ec.npass_env = cfg->npass_env;
    ec.wake = wake_loop;
    ec.wake_ud = d;
    struct err e = {0};
    d->exec = exec_new(&ec, &e);
    if (!d->exec) {
        log_error("cannot start the executor: %s", e.msg);
        return RR_E_INTERNAL;
    }
    if (!cfg->exec_cmd)
        log_warn("no --exec or --engine: runs will fail with 'no executor configured'");
    return 0;
}

/* The executor and the scheduler; stale runs reclaimed, missed ticks
 * recorded. */
static int start_runs(struct daemon *d)
{
    const struct runner_config *cfg = d->cfg;
    int rc = cfg->engine_url ? start_engine(d) : start_exec(d);
    if (rc)
        return rc;
    struct sched_config sc;
    sched_config_defaults(&sc);
    sc.default_zone = cfg->default_zone;
    sc.keep_runs = cfg->keep_runs;
    sc.starting_deadline_s = cfg->starting_deadline_s;
    sc.dev_key_present = cfg->dap.dev_key != NULL;
    sc.emit = on_event;
    sc.emit_ud = d;
    struct sched_exec ex = executor_sched_exec(d->exec);
    d->sched = sched_new(d->store, &sc, &ex);
    if (sched_load(d->sched, clock_now(&d->clock)) != 0) {
        log_error("cannot load deployments from the database");
        return RR_E_IO;
    }
    return 0;
}

static int write_port_file(const char *path, int port)
{
    FILE *f = fopen(path, "w");
    bool ok = f && fprintf(f, "%d\n", port) > 0;
    if (f && fclose(f) != 0)
        ok = false;
    if (!ok) {
        log_error("cannot write port file %s", path);
        return RR_E_IO;
    }
    return 0;
}

/* The listener, the timers and the signals. */
static int start_serving(struct daemon *d)
{
    d->env = (struct dap_env){
        .loop = &d->loop,
        .store = d->store,
        .sched = d->sched,
        .clock = &d->clock,
        .pass_done = on_pass_done,
        .runs_in_progress = runs_in_progress,
        .executor = d->exec->ops->name,
        .engine_state = d->engine ? engine_state : NULL,
        .identify = d->engine ? identify : NULL,
        .vault = d->vault,
        .service_credential = d->cfg->engine_key_file != NULL,
        .ud = d,
    };
    int rc = dap_server_start(&d->cfg->dap, &d->env, &d->dap);
    if (rc)
        return rc;
    if (d->cfg->port_file &&
        (rc = write_port_file(d->cfg->port_file, dap_server_port(d->dap))) != 0)
        return rc;
    signal(SIGPIPE, SIG_IGN);
    uv_signal_start(&d->sig_term, on_signal, SIGTERM);
    uv_signal_start(&d->sig_int, on_signal, SIGINT);
    uv_timer_start(&d->keys, on_keys_poll, KEYS_POLL_MS, KEYS_POLL_MS);
    arm_tick(d);
    return 0;
}

static void handles_init(struct daemon *d)
{
    uv_timer_init(&d->loop, &d->tick);
    uv_timer_init(&d->loop, &d->keys);
    uv_timer_init(&d->loop, &d->grace);
    uv_timer_init(&d->loop, &d->prune);
    uv_async_init(&d->loop, &d->wake, on_wake);
    uv_signal_init(&d->loop, &d->sig_term);
    uv_signal_init(&d->loop, &d->sig_int);
    uv_handle_t *all[] = {(uv_handle_t *)&d->tick, (uv_handle_t *)&d->keys,
                          (uv_handle_t *)&d->grace, (uv_handle_t *)&d->prune,
                          (uv_handle_t *)&d->wake,
                          (uv_handle_t *)&d->sig_term, (uv_handle_t *)&d->sig_int};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        all[i]->data = d;
    d->handles_open = true;
}

static void handles_close(struct daemon *d)
{
    if (!d->handles_open)
        return;
    uv_close((uv_handle_t *)&d->tick, NULL);
    uv_close((uv_handle_t *)&d->keys, NULL);
    uv_close((uv_handle_t *)&d->grace, NULL);
    uv_close((uv_handle_t *)&d->prune, NULL);
    uv_close((uv_handle_t *)&d->wake, NULL);
    uv_close((uv_handle_t *)&d->sig_term, NULL);
    uv_close((uv_handle_t *)&d->sig_int, NULL);
    d->handles_open = false;
}

int runner_serve(const struct runner_config *cfg, struct store *st)
{
    struct daemon d = {.cfg = cfg, .store = st};
    /* glibc gives the heap's top back to the kernel once 128 KiB of it is
     * free, and a busy service pass allocates and frees about that much:
     * every pass paid two brk() calls and faulted in fresh pages. Keep it. */
    mallopt(M_TRIM_THRESHOLD, HEAP_KEEP);
    mallopt(M_TOP_PAD, HEAP_PAD);
    if (cfg->test_clock) {
        d.clock.fixed = true;
        d.clock.at = cfg->test_clock_start ? cfg->test_clock_start : time_now_real();
        log_warn("test clock in use: time moves only by rrtest_clock");
    }
    if (store_data_version(st, &d.data_version) != 0)
        return RR_E_IO;
    struct err ce = {0};
    if (store_checkpointer_start(st, 0, &ce) != 0)
        log_warn("%s; checkpoints stay inside commits", ce.msg);
    if (uv_loop_init(&d.loop) != 0) {
        log_error("cannot create the event loop");
        return RR_E_IO;
    }
    handles_init(&d);

    int rc = start_runs(&d);
    if (rc == 0)
        rc = start_serving(&d);
    if (rc == 0) {
        uv_run(&d.loop, UV_RUN_DEFAULT); /* until uv_stop */
        log_info("stopping");
        finish_shutdown(&d);
    }

    /* The executor's threads are gone before the async handle they signal
     * closes. Then the loop runs until every handle, lws's too, is closed. */
    executor_free(d.exec);
    d.exec = NULL;
    dap_server_close(d.dap);
    handles_close(&d);
    uv_run(&d.loop, UV_RUN_DEFAULT);
    dap_server_free(d.dap);
    if (uv_loop_close(&d.loop) != 0)
        log_warn("the event loop still had open handles at exit");
    sched_free(d.sched);
    vault_free(d.vault);
    return rc;
}
