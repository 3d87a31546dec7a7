/* dap.h -- the RocketRide DAP-over-WebSocket server.
 *
 * dap_serve() runs the service loop on the calling thread until SIGINT or
 * SIGTERM: a libwebsockets server speaking RocketRide's DAP envelope at
 * cfg->ws_path, with the rrdeploy command set on top of the store.
 * The client side of the protocol is dap/client.h. */
#ifndef RR_DAP_H
#define RR_DAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

#define DAP_DEFAULT_PORT 5565
#define DAP_DEFAULT_PATH "/task/service"

struct dap_config {
    const char *listen_host;   /* "127.0.0.1" */
    int port;                  /* 5565; 0 picks a free port */
    const char *ws_path;       /* "/task/service" */
    const char *default_zone;  /* schedules without CRON_TZ=; "UTC" */
    const char *dev_key;       /* ROCKETRIDE_APIKEY at start, or NULL */
    const char *port_file;     /* write the bound port here once listening */
    int auth_timeout_s;        /* close unauthenticated sockets after this */
    size_t max_message;        /* bytes of one WebSocket message */
    size_t max_pipeline;       /* bytes of one pipeline */
    int max_depth;             /* JSON nesting */
    int64_t max_deployments;   /* per user */
    /* runs */
    const char *exec_cmd;      /* --exec: shell command per run, or NULL */
    double run_timeout_s;      /* --run-timeout (3600) */
    int max_runs;              /* --max-runs (64) */
    int64_t keep_runs;         /* --keep-runs (100) */
    double shutdown_grace_s;   /* --shutdown-grace (30) */
    const char *tls_cert;      /* --tls-cert/--tls-key: serve wss:// and https:// */
    const char *tls_key;
    bool test_clock;           /* --test-clock: builds with test hooks only */
    double test_clock_start;   /* its initial time; 0 = the real time */
};

/* Fill cfg with the product defaults. */
void dap_config_defaults(struct dap_config *cfg);

/* Serve until a stop signal. st is borrowed for the duration. Returns 0 on a
 * clean stop, a negative RR_E_* code if the server could not start. */
int dap_serve(const struct dap_config *cfg, struct store *st);

#endif
