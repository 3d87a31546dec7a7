/* dap_internal.h -- what the dap sources share: the request/response layer that knows
 * nothing about sockets, so it can be unit tested without a server; and, at
 * the end, what the two clients share (client_conn.c). */
#ifndef RR_DAP_INTERNAL_H
#define RR_DAP_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>

#include "dap/client.h"
#include "dap/dap.h"
#include "scheduler/scheduler.h"
#include "store/store.h"
#include "util/jraw.h"
#include "util/util.h"

/* Headroom reserved in front of every outgoing frame (LWS_PRE for lws; the
 * message layer does not include lws, so the server checks it is enough). */
#define DAP_FRAME_HEAD 32

/* Request counters for /metrics. Commands are counted by their slot in the
 * command table; anything else shares the last slot, so a client cannot grow
 * the label set. Outcomes: "ok" then the wire error codes. */
#define DAP_CMD_SLOTS 32
#define DAP_OUTCOMES 8
#define DAP_LATENCY_BOUNDS {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1}
#define DAP_LATENCY_NBUCKETS 12
struct dap_metrics {
    uint64_t requests[DAP_CMD_SLOTS][DAP_OUTCOMES];
    uint64_t latency_bucket[DAP_LATENCY_NBUCKETS + 1]; /* not cumulative */
    double latency_sum;
    uint64_t connections_total;
    uint64_t messages_too_large;
};
extern const char *const dap__outcome_names[DAP_OUTCOMES];

/* Server-wide state seen by command handlers. Owned by the server. */
struct dap_app {
    const struct dap_config *cfg;  /* borrowed */
    struct store *store;           /* borrowed */
    struct sched *sched;           /* borrowed: deployments, runs, ticks */
    struct clock *clock;           /* borrowed: the wall clock */
    bool test_hooks;               /* rrtest_* requests are served (test
                                      builds with a test clock, which
                                      rrtest_clock moves) */
    double started_at;
    bool stopping;                 /* shutdown began: no new runs */
    struct dap_metrics metrics;
    struct dap_guard *guard;       /* owned by whoever made the app (the
                                      server): admission control */
};

/* The wall clock, float Unix seconds. */
static inline double dap__now(const struct dap_app *app)
{
    return clock_now(app->clock);
}

/* guard.c: admission control before authentication (per-address and global
 * limits, aggregated logs). */
struct dap_guard;
struct sockaddr;

/* A client's address as the guard counts it: IPv4 as an IPv4-mapped IPv6
 * address; IPv6 cut to its /64 (one host commonly holds a whole /64). All
 * zero: unknown. */
struct dap_addr {
    unsigned char b[16];
};
#define DAP_ADDR_TEXT_MAX 64
/* sa is borrowed for the call, and may be NULL (unknown). */
void dap__addr_from_sockaddr(struct dap_addr *out /* OUT */,
                             const struct sockaddr *sa);
/* "192.0.2.1", "2001:db8::1": 0, or RR_E_INVAL. */
int dap__addr_parse(const char *text, struct dap_addr *out /* OUT */);
/* "192.0.2.1", "2001:db8:1:2::/64" or "an unknown address". */
void dap__addr_format(const struct dap_addr *a, char out[DAP_ADDR_TEXT_MAX]);

/* What the guard counts per address and logs in its summaries. */
enum dap_guard_event {
    DAP_GUARD_FAILED,     /* an auth failed */
    DAP_GUARD_THROTTLED,  /* an auth refused without checking the key */
    DAP_GUARD_REFUSED,    /* a connection over the per-address cap */
    DAP_GUARD_TOO_LARGE,  /* a message over the limit before auth */
    DAP_GUARD_RATE,       /* too many messages before auth */
    DAP_GUARD_NEVENTS
};

struct dap_guard_config {
    size_t slots;            /* addresses remembered, a multiple of 8; the
                                table's memory is fixed by it */
    int max_unauth;          /* unauthenticated connections per address;
                                0 = no cap */
    double fail_burst;       /* failed auths an address may make at once ... */
    double fail_rate;        /* ... then per second */
    double global_burst;     /* failed auths of all addresses not in good */
    double global_rate;      /* standing together: at once, then per second */
    int64_t trust_ms;        /* a successful auth puts its address in good
                                standing for this long */
    int64_t log_interval_ms; /* a summary at most this often */
    int log_firsts;          /* lines for an address's first event, per
                                interval */
    int log_top;             /* per-address summary lines per interval, <= 16 */
    /* Where lines go; NULL: log_msg. line is borrowed for the call. */
    void (*log)(void *ud, enum log_level lvl, const char *line);
    void *log_ud;            /* borrowed: passed to log as ud */
};
/* The server's settings: 4096 addresses (about 400 KB), 10 connections, 30
 * failures then one per 2 s per address, 100 then 10 per second together,
 * trust for 24 h, summaries every 10 s. */
void dap__guard_config_defaults(struct dap_guard_config *gc);
/* gc is copied. NULL if libsodium cannot start. Free with dap__guard_free. */
struct dap_guard *dap__guard_new(const struct dap_guard_config *gc);
void dap__guard_free(struct dap_guard *g);

/* Which table entry counts an unauthenticated connection (gen 0: none). */
struct dap_guard_conn {
    uint32_t slot;
    uint64_t gen;
};
/* Count a new unauthenticated connection from a into *out, or refuse it
 * (RR_E_LIMIT, *out untouched) when a already has max_unauth open; force
 * counts it regardless (a session that became unauthenticated again). */
int dap__guard_conn_open(struct dap_guard *g, const struct dap_addr *a,
                         bool force, int64_t now_ms,
                         struct dap_guard_conn *out /* OUT */);
/* The connection authenticated or closed. Idempotent. */
void dap__guard_conn_close(struct dap_guard *g, struct dap_guard_conn *c);

enum dap_guard_verdict {
    DAP_GUARD_OK,          /* check the credential */
    DAP_GUARD_BY_ADDRESS,  /* refuse it unchecked: this address's limit */
    DAP_GUARD_BY_GLOBAL,   /* ... the limit of all addresses together */
};
/* May a credential from a be checked now? If not, *retry_s says in how many
 * seconds (at least 1) one may. */
enum dap_guard_verdict dap__guard_auth_check(struct dap_guard *g,
                                             const struct dap_addr *a,
                                             int64_t now_ms,
                                             int *retry_s /* OUT */);
/* An auth from a failed; reason (borrowed, never the credential) goes to the
 * log. A success puts a in good standing. */
void dap__guard_auth_failed(struct dap_guard *g, const struct dap_addr *a,
                            int64_t now_ms, const char *reason);
void dap__guard_auth_ok(struct dap_guard *g, const struct dap_addr *a,
                        int64_t now_ms);
/* Count another event (DAP_GUARD_TOO_LARGE, DAP_GUARD_RATE) of a into the
 * log summaries; detail is its line if it opens a burst. */
void dap__guard_note(struct dap_guard *g, const struct dap_addr *a,
                     enum dap_guard_event ev, int64_t now_ms,
                     const char *detail);
/* Write the summary when the log interval has passed (or force). Returns the
 * ms until the next one is due, or -1 when nothing is pending. */
int64_t dap__guard_flush(struct dap_guard *g, int64_t now_ms, bool force);

struct dap_guard_stats {
    uint64_t auth_failed;        /* failed auths (checked, or no credential) */
    uint64_t throttled_address;  /* auths refused unchecked: address limit */
    uint64_t throttled_global;   /* ... global limit */
    uint64_t refused;            /* connections over the per-address cap */
    uint64_t evicted;            /* entries dropped to make room */
    size_t tracked;              /* addresses in the table */
};
const struct dap_guard_stats *dap__guard_stats(const struct dap_guard *g);

/* Frames leave the message layer through this sink, which takes ownership of
 * frame (a buf with DAP_FRAME_HEAD headroom holding one JSON text). */
typedef void (*dap_emit_fn)(void *ud, struct buf *frame);

/* Per-connection protocol state. */
struct dap_session {
    struct dap_addr peer;  /* the client's address (the server sets it) */
    bool authed;
    bool revoked;          /* key revoked/expired since auth: next request fails */
    bool closing;          /* a reply asked to close the socket after it */
    int auth_attempts;
    bool dev;              /* authenticated with the ROCKETRIDE_APIKEY key */
    struct store_key key;  /* the authenticated key (user, perms, id) */
    int64_t seq;           /* last server seq sent on this connection */
    double unauth_tokens;  /* rate limit of messages before authentication */
    int64_t unauth_at_ms;  /* last refill; 0 = fresh session */
    bool watching;         /* rrext_deploy_watch: send apaevt_deploy events */
    char *watch_project;   /* owned; NULL = all of the user's deployments */
};

/* Free what a session owns (not the session itself). */
void dap__session_clear(struct dap_session *ss);

/* Should an event about (user, project_id) go to this session at time now
 * (wall clock)? Only while it watches, is authenticated as that user with a
 * key that is neither revoked nor expired and still has task.monitor. */
bool dap__session_wants(const struct dap_session *ss, const char *user,
                        const char *project_id, double now);


/* A decoded request. */
struct dap_req {
    json_t *args;           /* owned: the arguments (an empty object if absent) */
    const char *command;    /* borrowed: the decoded command name */
    int64_t seq;
    struct jraw_span raw_args; /* raw text of "arguments" (p NULL if absent) */
};

/* What a handler produces. */
struct dap_res {
    struct buf body;        /* JSON body text; empty = omit "body" */
    const char *code;       /* NULL = success, else the machine error code */
    struct buf msg;         /* error message */
    bool close;             /* close the connection after sending */
};

/* wire.c: every JSON text that goes on the wire. */
/* A run object; without its output tail when with_output is false (the
 * last_run summary inside records). */
void dap__write_run(struct buf *b, const struct store_run *r, bool with_output);
/* A deployment record with its last run (NULL: none). */
void dap__write_record(struct buf *b, const struct store_dep *d,
                       const struct store_run *last);
/* The body of an apaevt_deploy event. */
void dap__write_event(struct buf *b, const struct sched_event *ev);
/* The auth reply's body for key k. */
void dap__write_connect_result(struct buf *b, const struct store_key *k);
/* GET /healthz. */
struct dap_health {
    const char *db_error;          /* NULL when the database is fine */
    double uptime_s;
    uint64_t deployments;
    int runs_in_progress;
    bool stopping;
};
void dap__write_health(struct buf *b, const struct dap_health *h);
/* A response frame for request_seq/command with res's outcome, and an
 * apaevt_deploy event frame around body: each a new buf (DAP_FRAME_HEAD
 * headroom) owned by the caller, stamped with the session's next seq. */
struct buf *dap__response_frame(struct dap_session *ss, int64_t request_seq,
                                const char *command, size_t command_len,
                                struct dap_res *res);
struct buf *dap__event_frame(struct dap_session *ss, const char *body,
                             size_t body_len);

/* Error codes on the wire. */
#define DAP_BAD_REQUEST "bad_request"
#define DAP_UNAUTHORIZED "unauthorized"
#define DAP_FORBIDDEN "forbidden"
#define DAP_NOT_FOUND "not_found"
#define DAP_CONFLICT "conflict"
#define DAP_TOO_LARGE "too_large"
#define DAP_INTERNAL "internal"

/* Set an error on res; returns -1 so handlers can `return dap__fail(...)`. */
int dap__fail(struct dap_res *res, const char *code, const char *fmt, ...)
    RR_PRINTF(3, 4);


/* Handle one complete client message: decode, authorize, dispatch, and emit
 * zero or more frames. Never fails: every request gets a response. */
void dap__handle_message(struct dap_app *app, struct dap_session *ss,
                         const char *text, size_t len, dap_emit_fn emit,
                         void *ud);

/* Re-check an authenticated session's key against the store (revocation,
 * expiry). Marks ss->revoked; returns true if the session lost its key. */
bool dap__session_recheck(struct dap_app *app, struct dap_session *ss);

/* cmd.c: the command table. Handler returns 0 (body in res->body) or -1. */
typedef int (*dap_cmd_fn)(struct dap_app *app, struct dap_session *ss,
                          struct dap_req *req, struct dap_res *res);
struct dap_cmd {
    const char *name;
    dap_cmd_fn fn;
    bool public_;      /* allowed before auth */
    unsigned perm;     /* STORE_PERM_* needed, 0 = any authenticated */
    bool writes;       /* may write to the store (see store_batch_write) */
};
const struct dap_cmd *dap__cmd_find(const char *name);
/* The command table, for metrics: entry i (NULL past the end). */
const struct dap_cmd *dap__cmd_at(size_t i);
size_t dap__cmd_slot(const struct dap_cmd *c); /* DAP_CMD_SLOTS - 1 for NULL */

/* metrics.c: the Prometheus text exposition (format 0.0.4). */
struct dap_gauges {
    uint64_t connections;       /* open WebSocket sessions */
    uint64_t unauthenticated;   /* ... counted as not authenticated */
    uint64_t runs_in_progress;  /* queued or running in the runner */
    uint64_t deployments[3];    /* by enum store_state */
};
void dap__metrics_render(struct buf *b, const struct dap_app *app,
                         const struct dap_gauges *g);

/* ---------------------------------------------------------------------------
 * client_conn.c: what the blocking client (client.c) and the asynchronous one
 * (upstream.c) share about one connection to a server. Every call on the
 * thread that owns the connection. */
struct lws;
struct lws_context;
struct lws_client_connect_info;

#define DAP_WHY_MAX 256  /* bytes of a one-line reason, NUL included */

/* Decode one complete message from the server (text: taken, a heap string of
 * len bytes). 0 and *out, owned by the caller (dap_msg_free), or NULL for a
 * message that is neither a response nor an event (dropped, as the SDKs
 * do); -EPROTO and why when text is not a JSON object. */
int dap__msg_parse(char *text, size_t len, struct dap_msg **out /* OUT */,
                   char why[DAP_WHY_MAX]);

/* Add one received fragment (in, len bytes, borrowed) of wsi's message to rx.
 * 0: more is to come; 1: *text (owned, free()) is the whole message of *n
 * bytes; -1: the message grew past max bytes (why says so, rx is emptied). */
int dap__rx_add(struct buf *rx, struct lws *wsi, const void *in, size_t len,
                size_t max, char **text /* OUT */, size_t *n /* OUT */,
                char why[DAP_WHY_MAX]);

/* why for a close frame from the server (in: its payload, code and reason):
 * "the server closed the connection (1000: bye)". */
void dap__close_why(const void *in, size_t len, char why[DAP_WHY_MAX]);

/* Requests waiting to be written, oldest first. Zeroed is empty. */
struct dap_out;
struct dap_outq {
    struct dap_out *head, *tail;  /* owned */
};
/* Queue {"type":"request","seq":seq,"command":command,"arguments":args}
 * (args: args_len bytes of a JSON object's text, copied; NULL sends {}). */
void dap__outq_request(struct dap_outq *q, int64_t seq, const char *command,
                       const char *args, size_t args_len);
/* From wsi's WRITEABLE: write the oldest as one text frame, wipe its text and
 * ask for WRITEABLE again while more wait. 0, or -1 and why (close wsi). */
int dap__outq_write(struct dap_outq *q, struct lws *wsi, char why[DAP_WHY_MAX]);
/* Wipe and free every request still waiting. */
void dap__outq_clear(struct dap_outq *q);

/* Fill *ci to connect to u on ctx with our local protocol (no subprotocol,
 * TLS verified against the system's CA store for wss, the SDKs' keepalive).
 * ci keeps pointers into u: u must outlive the connect call. */
void dap__connect_info(struct lws_client_connect_info *ci /* OUT */,
                       struct lws_context *ctx, const struct dap_url *u,
                       const char *local_protocol);

/* why a connection attempt to u failed, from lws's text in (NULL: none).
 * When lws gives no useful reason, one plain TCP connect to u, bounded by
 * until_ms (monotonic), finds it: "connection refused", "cannot resolve
 * host 'x': ...". Blocks for that probe. */
void dap__connect_failed_why(const struct dap_url *u, const char *in,
                             int64_t until_ms, char why[DAP_WHY_MAX]);

#endif
