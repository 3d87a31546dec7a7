/* dap.h -- the RocketRide DAP-over-WebSocket server.
 *
 * A libwebsockets server speaking RocketRide's DAP envelope at cfg->ws_path
 * (docs/protocol.md), with the rrdeploy command set on top of the store and
 * the scheduler, plus GET /healthz and /metrics on the same port. It does not
 * own an event loop: the daemon that runs it (runner/) hands it a libuv loop,
 * which lws joins, and learns through struct dap_env's callbacks when a
 * service pass has ended. The DAP client library the command line uses is
 * dap/client.h.
 * Thread: every call on the loop's thread. */
#ifndef RR_DAP_H
#define RR_DAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "scheduler/scheduler.h"
#include "store/store.h"
#include "util/util.h"

#define DAP_DEFAULT_PORT 5565
#define DAP_DEFAULT_PATH "/task/service"

struct dap_config {
    const char *listen_host;   /* "127.0.0.1" */
    int port;                  /* 5565; 0 picks a free port */
    const char *ws_path;       /* "/task/service" */
    const char *dev_key;       /* ROCKETRIDE_APIKEY at start, or NULL */
    int auth_timeout_s;        /* close unauthenticated sockets after this */
    int max_unauth_per_address; /* unauthenticated connections one client
                                   address may hold (10); 0 = no cap */
    size_t max_message;        /* bytes of one WebSocket message */
    size_t max_message_unauth; /* ... before authentication (an auth is tiny) */
    size_t max_pipeline;       /* bytes of one pipeline */
    int max_depth;             /* JSON nesting */
    int64_t max_deployments;   /* per user */
    size_t reply_cache;        /* bytes of read replies kept while the store
                                  is unchanged (64 MiB); 0 = none */
    const char *tls_cert;      /* --tls-cert/--tls-key: serve wss:// and https:// */
    const char *tls_key;
};

/* Fill cfg with the product defaults. */
void dap_config_defaults(struct dap_config *cfg);

/* Check cfg before starting. A guessable development key (the SDKs' default
 * MYAPIKEY, or shorter than 16 characters) is refused when listening on an
 * address other than loopback (RR_E_INVAL, why and what to do in e), and
 * warned about otherwise. */
int dap_config_check(const struct dap_config *cfg, struct err *e) MUST_CHECK;

/* What the engine says a RocketRide credential is. */
struct dap_identity {
    char user[STORE_USER_MAX + 1];  /* the engine's userId */
    unsigned perms;                 /* STORE_PERM_* it grants on its default team */
};


/* What the server borrows from the daemon that runs it, for its whole life. */
struct uv_loop_s; /* libuv's uv_loop_t */
struct dap_engine_state;
struct vault;
struct dap_env {
    struct uv_loop_s *loop;    /* lws joins it */
    struct store *store;       /* the service thread's connection */
    struct sched *sched;       /* deployments, runs, tick decisions */
    struct clock *clock;       /* the wall clock (a test clock may move it) */
    /* After every service pass that wrote (deployments may have changed:
     * re-arm the tick timer); a pass of reads changes nothing. */
    void (*pass_done)(void *ud);
    /* Runs queued or running, for /healthz and /metrics. */
    int (*runs_in_progress)(void *ud);
    const char *executor;      /* how runs run ("exec", "rocketride"), a label */
    /* With an engine (NULL without): its state, for /healthz and /metrics. */
    void (*engine_state)(void *ud, struct dap_engine_state *out);
    /* With an engine (NULL without): check a RocketRide credential with it.
     * key is borrowed for the call. The verdict comes back later, on the
     * loop thread, through dap_server_identified(srv, ticket, ...). 0, or a
     * negative code when the engine cannot be asked now (then no verdict
     * comes for ticket). */
    int (*identify)(void *ud, const char *key, uint64_t ticket);
    /* With an engine: seals the credential `add` and `update` keep with a
     * deployment (its owner's, for the runs). NULL without an engine. */
    const struct vault *vault;
    /* With an engine: deployments added with local keys run with the
     * server's service credential; without one, their add is refused. */
    bool service_credential;
    void *ud;
};

struct dap_server;

/* Listen and serve on env->loop. cfg and env are borrowed for the server's
 * life. Returns 0 and *out, or a negative RR_E_* code (logged) when it
 * cannot listen. */
int dap_server_start(const struct dap_config *cfg, const struct dap_env *env,
                     struct dap_server **out /* OUT */) MUST_CHECK;

/* The port it listens on (the kernel's pick when cfg->port was 0). */
int dap_server_port(const struct dap_server *srv);

/* Shutdown has begun: take no new connections and start no new runs. */
void dap_server_stop_accepting(struct dap_server *srv);

/* The key table changed (revocation, expiry): live sessions re-check their
 * key; a session that lost it fails its next request. */
void dap_server_keys_changed(struct dap_server *srv);

/* The verdict on ticket: id (borrowed) when the engine accepted the
 * credential; otherwise id is NULL and why says why -- the engine's own
 * refusal text when refused is true, else why the engine could not be
 * asked (unreachable, timed out). A ticket nobody waits for any more is
 * ignored (an acceptance or refusal is still remembered for the next auth
 * with that credential while the check is known). why is borrowed for the
 * call; NULL is fine. Any callback on the loop may call it, identify
 * itself included. */
void dap_server_identified(struct dap_server *srv, uint64_t ticket,
                           const struct dap_identity *id, bool refused,
                           const char *why);

/* Send an event to every session watching that deployment or holding a
 * monitor for it (the scheduler's cfg.emit). ev is borrowed for the call. */
void dap_server_event(struct dap_server *srv, const struct sched_event *ev);

/* Stop in two steps, as lws needs with a loop it does not own: close starts
 * closing every socket and handle (they finish while the loop runs); free,
 * after the loop has run them, releases the rest. NULL is fine for both. */
void dap_server_close(struct dap_server *srv);
void dap_server_free(struct dap_server *srv);

/* What /healthz and /metrics say of the RocketRide engine runs go to
 * (serve --engine); the executor fills it. */
enum dap_engine_request { DAP_ENGINE_REQ_AUTH, DAP_ENGINE_REQ_MONITOR, DAP_ENGINE_REQ_STATUS,
                          DAP_ENGINE_REQ_EXECUTE, DAP_ENGINE_REQ_TERMINATE,
                          DAP_ENGINE_NREQUESTS };
extern const char *const dap_engine_request_names[DAP_ENGINE_NREQUESTS];
struct dap_engine_state {
    const char *url;            /* normalised; borrowed */
    bool reachable;             /* the last connection attempt succeeded */
    double since;               /* wall clock of the last change; 0 = never tried */
    char why[160];              /* why not reachable */
    uint64_t connects;          /* connections that opened */
    uint64_t connect_failures;  /* ... that could not */
    uint64_t requests[DAP_ENGINE_NREQUESTS];
    uint64_t owner_refusals;    /* owners' credentials refused at a run */
};

#endif
