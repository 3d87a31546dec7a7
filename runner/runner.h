/* runner.h -- the daemon that runs deployments (daemon.c).
 *
 * It owns the libuv event loop: the DAP server joins it, the scheduler's
 * tick timer and the executor's wake-ups run in it, and it starts and stops
 * everything (docs/architecture.md). The executors it runs pipelines with are
 * runner/executor.h. */
#ifndef RR_RUNNER_H
#define RR_RUNNER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dap/dap.h"
#include "store/store.h"

struct runner_config {
    struct dap_config dap;     /* the listener and the protocol's limits */
    const char *port_file;     /* write the bound port here once listening */
    const char *default_zone;  /* schedules without CRON_TZ= ("UTC") */
    const char *exec_cmd;      /* --exec: shell command per run, or NULL */
    const char *engine_url;    /* --engine: runs on a RocketRide engine, or NULL */
    const char *engine_key_file; /* --engine-key-file: the service credential */
    const char *secret_file;   /* --secret-file: seals owners' credentials */
    double run_timeout_s;      /* --run-timeout (3600) */
    int max_runs;              /* --max-runs (64) */
    int64_t keep_runs;         /* --keep-runs (100) */
    double starting_deadline_s; /* --starting-deadline (60) */
    double shutdown_grace_s;   /* --shutdown-grace (30) */
    size_t output_max;         /* --output-max: bytes kept per run (64 KiB) */
    const char *const *run_env;  /* --run-env NAME=VALUE, borrowed */
    size_t nrun_env;
    const char *const *pass_env; /* --pass-env NAME, borrowed */
    size_t npass_env;
    bool test_clock;           /* --test-clock: builds with test hooks only */
    double test_clock_start;   /* its initial time; 0 = the real time */
};

/* Fill cfg with the product defaults. */
void runner_config_defaults(struct runner_config *cfg);

/* Run the daemon on the calling thread until SIGTERM or SIGINT: load the
 * deployments, listen, tick, run, and on a stop signal stop accepting, let
 * runs finish for up to cfg->shutdown_grace_s and record the rest as
 * interrupted. st is borrowed for the duration. Returns 0 on a clean stop, a
 * negative RR_E_* code if the daemon could not start. */
int runner_serve(const struct runner_config *cfg, struct store *st);

#endif
