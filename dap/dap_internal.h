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
/* ... and in front of a response body, for the envelope written there once
 * the command has run (dap__response_frame), so the body is not copied. */
#define DAP_ENVELOPE_ROOM 192

/* Request counters for /metrics. Commands are counted by their slot in the
 * command table; anything else shares the last slot, so a client cannot grow
 * the label set. Outcomes: "ok" then the wire error codes. */
#define DAP_CMD_SLOTS 32
#define DAP_OUTCOMES 8
#define DAP_LATENCY_BOUNDS {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1}
#define DAP_LATENCY_NBUCKETS 12
/* Auths with an engine credential, by how they were answered. */
enum dap_engine_auth {
    DAP_ENGINE_ACCEPTED,     /* the engine accepted it (a check waited for) */
    DAP_ENGINE_REFUSED,      /* the engine refused it */
    DAP_ENGINE_UNAVAILABLE,  /* the engine could not be asked, or no answer
                                within the wait */
    DAP_ENGINE_CACHED,       /* answered from a recent verdict */
    DAP_ENGINE_AUTH_RESULTS
};
extern const char *const dap__engine_auth_names[DAP_ENGINE_AUTH_RESULTS];
struct dap_metrics {
    uint64_t requests[DAP_CMD_SLOTS][DAP_OUTCOMES];
    uint64_t latency_bucket[DAP_LATENCY_NBUCKETS + 1]; /* not cumulative */
    double latency_sum;
    uint64_t connections_total;
    uint64_t messages_too_large;
    uint64_t engine_auth[DAP_ENGINE_AUTH_RESULTS]; /* by enum dap_engine_auth */
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
    /* With an engine: env->identify and env->ud (identify NULL without) */
    int (*identify)(void *ud, const char *key, uint64_t ticket);
    void *identify_ud;
    struct dap_ids *ids;           /* owned by whoever made the app: the
                                      engine's recent verdicts */
    int64_t mono_ahead_ms;         /* tests: added to the monotonic clock */
    struct dap_server *server;     /* the server it belongs to; NULL when
                                      the message layer runs alone (tests) */
    /* With an engine (env->vault, NULL without): seals owners' keys. */
    const struct vault *vault;
    bool service_credential;       /* env->service_credential */
    struct dap_replies *replies;   /* owned by whoever made the app; NULL:
                                      every read reply is rendered afresh */
};

/* replies.c: bodies of read replies (status, list), kept while the store
 * is unchanged (see store_snapshot). */
enum dap_reply_kind { DAP_REPLY_STATUS = 1, DAP_REPLY_LIST };
struct dap_replies;
/* At most max_bytes of keys and bodies. */
struct dap_replies *dap__replies_new(size_t max_bytes);
void dap__replies_free(struct dap_replies *r);
/* Append the body kept for (kind, user, project_id) at snapshot snap to out
 * and return true; false when there is none. project_id may be NULL. */
bool dap__replies_get(struct dap_replies *r, const struct store_snapshot *snap,
                      enum dap_reply_kind kind, const char *user,
                      const char *project_id, struct buf *out);
/* Keep a copy of body, rendered from reads made at snapshot snap (taken
 * before them). */
void dap__replies_put(struct dap_replies *r, const struct store_snapshot *snap,
                      enum dap_reply_kind kind, const char *user,
                      const char *project_id, const char *body, size_t body_len);
/* Lookups answered and not, since start (0 for NULL). */
void dap__replies_counts(const struct dap_replies *r, uint64_t *hits,
                         uint64_t *misses /* OUT */);

/* The wall clock, float Unix seconds. */
static inline double dap__now(const struct dap_app *app)
{
    return clock_now(app->clock);
}

/* The monotonic clock in ms, as the engine's verdicts are timed (tests move
 * it with app->mono_ahead_ms). */
static inline int64_t dap__mono_ms(const struct dap_app *app)
{
    return time_now_mono_ms() + app->mono_ahead_ms;
}

/* identity.c: the engine's recent verdicts on credentials, and the checks
 * under way (a cache keyed by a keyed hash of the credential, which itself
 * is never kept). */
struct dap_ids;
#define DAP_IDS_HASH_BYTES 16
#define DAP_REFUSAL_MAX 128 /* bytes of an engine's refusal text kept */
struct dap_ids_config {
    size_t slots;          /* entries, at most 65536; the memory is fixed */
    int64_t accept_ms;     /* an accepted credential is trusted this long */
    int64_t refuse_ms;     /* a refused one is refused this long unasked */
    int64_t wait_ms;       /* a check is waited for this long at most */
};
/* 4096 entries (about 700 KB), 30 s, 5 s, 15 s. */
void dap__ids_config_defaults(struct dap_ids_config *c);
/* c is copied. NULL if libsodium cannot start. Free with dap__ids_free. */
struct dap_ids *dap__ids_new(const struct dap_ids_config *c);
void dap__ids_free(struct dap_ids *ids);
/* The keyed hash of a credential (len bytes, borrowed for the call). */
void dap__ids_hash(const struct dap_ids *ids, const char *cred, size_t len,
                   unsigned char out[DAP_IDS_HASH_BYTES] /* OUT */);
enum dap_ids_found {
    DAP_IDS_NONE,      /* nothing known: ask the engine */
    DAP_IDS_PENDING,   /* a check is under way: wait for its ticket */
    DAP_IDS_ACCEPTED,  /* out->id */
    DAP_IDS_REFUSED,   /* out->why */
};
struct dap_ids_hit {
    uint64_t ticket;        /* PENDING */
    int64_t deadline_ms;    /* PENDING: waited for until then */
    struct dap_identity id; /* ACCEPTED */
    char why[DAP_REFUSAL_MAX];  /* REFUSED: the engine's text */
};
/* What is known about the credential hashed to h at now_ms; *out is written
 * for all but NONE. Entries past their time are dropped on the way. */
enum dap_ids_found dap__ids_find(struct dap_ids *ids,
                                 const unsigned char h[DAP_IDS_HASH_BYTES],
                                 int64_t now_ms,
                                 struct dap_ids_hit *out /* OUT */);
/* A check of h begins: its ticket (never 0) and *deadline_ms; 0 when every
 * entry is a check under way (too many at once). */
uint64_t dap__ids_begin(struct dap_ids *ids,
                        const unsigned char h[DAP_IDS_HASH_BYTES],
                        int64_t now_ms, int64_t *deadline_ms /* OUT */);
/* The check of ticket will not be answered (the engine could not be asked):
 * forget it. */
void dap__ids_cancel(struct dap_ids *ids, uint64_t ticket);
/* The verdict on ticket (see dap_server_identified): an acceptance is kept
 * accept_ms, a refusal refuse_ms, "could not ask" not at all. false when no
 * check waits for ticket (then nothing changes). */
bool dap__ids_settle(struct dap_ids *ids, uint64_t ticket,
                     const struct dap_identity *id, bool refused,
                     const char *why, int64_t now_ms);
/* Entries in the table (tests). */
size_t dap__ids_count(const struct dap_ids *ids);
/* A credential kept in memory of its own (sodium_malloc: guarded, never
 * swapped where the system allows; past 2048 of them at once, ordinary
 * memory, locked if allowed), n bytes (no NUL among them) and a NUL. Aborts
 * when out of memory, like xmalloc. Free with dap__secret_free, which
 * wipes it. */
char *dap__secret_dup(const char *s, size_t n);
void dap__secret_free(char *s);
/* Copy text from a peer into dst (size bytes, NUL included) so that it can
 * be shown: invalid UTF-8 becomes '?', control characters ' ', and a cut
 * never splits a character. src NULL gives "". */
void dap__copy_text(char *dst, size_t size, const char *src);

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

/* An rrext_monitor subscription (a key and its event types). */
struct dap_monitor {
    char *project;         /* owned: "<projectId>\0<source>\0" in one
                              allocation; NULL for token "*" (all) */
    unsigned types;        /* RocketRide event type bits, never 0 */
    bool has_source;       /* a source was given (it is part of the key) */
};
#define DAP_MONITORS_MAX 16 /* subscriptions per connection */

/* An auth waiting for the engine's verdict (cmd.c). */
struct dap_auth_wait;

/* Per-connection protocol state. */
struct dap_session {
    struct dap_addr peer;  /* the client's address (the server sets it) */
    bool authed;
    bool revoked;          /* key revoked/expired since auth: next request fails */
    bool closing;          /* a reply asked to close the socket after it */
    int auth_attempts;
    bool dev;              /* authenticated with the ROCKETRIDE_APIKEY key */
    bool engine;           /* authenticated by the RocketRide engine: key.id
                              is SCHED_ENGINE_KEY_ID, key.user its userId */
    struct store_key key;  /* the authenticated key (user, perms, id) */
    char *cred;            /* owned (sodium_malloc, wiped when freed): the
                              engine credential of an engine session; NULL
                              otherwise. Never logged. */
    struct dap_auth_wait *wait; /* owned: an auth waiting for the engine;
                                   the session handles nothing else meanwhile */
    int64_t seq;           /* last server seq sent on this connection */
    double unauth_tokens;  /* rate limit of messages before authentication */
    int64_t unauth_at_ms;  /* last refill; 0 = fresh session */
    bool watching;         /* rrext_deploy_watch: send apaevt_deploy events */
    char *watch_project;   /* owned; NULL = all of the user's deployments */
    struct dap_monitor *monitors; /* owned: nmonitors rrext_monitor keys */
    uint8_t nmonitors;
};

/* Free what a session owns (not the session itself): its watch, monitors,
 * credential and any auth waiting. */
void dap__session_clear(struct dap_session *ss);

/* Drop the session's watch and monitors (its event subscriptions). */
void dap__session_unwatch(struct dap_session *ss);

/* The credential an engine session authenticated with (borrowed until the
 * session's next auth, deauth or end), or NULL for other sessions. */
const char *dap__session_credential(const struct dap_session *ss);

/* Should an event about (user, project_id) go to this session at time now
 * (wall clock)? Only while it watches or holds a monitor for it, is
 * authenticated as that user with a key that is neither revoked nor expired
 * and still has task.monitor. */
bool dap__session_wants(const struct dap_session *ss, const char *user,
                        const char *project_id, double now);

/* Engine verdicts, in three steps (the server does them in turn; a unit test
 * can do the same):
 *   dap__identified: the verdict on ticket (as dap_server_identified) goes
 *     into the cache; false when the cache knew no such check.
 *   dap__session_verdict: ...and to each session waiting for it; true when
 *     ss was (ss must then be handled: dap__session_answer).
 *   dap__session_answer: a session whose verdict is in gets the answer to its
 *     auth, emitted like any response, and may go on with its messages.
 * dap__session_late gives a session waiting past its deadline (monotonic
 * ms) the verdict "no answer in time"; true when it did. */
bool dap__identified(struct dap_app *app, uint64_t ticket,
                     const struct dap_identity *id, bool refused,
                     const char *why);
bool dap__session_verdict(struct dap_session *ss, uint64_t ticket,
                          const struct dap_identity *id, bool refused,
                          const char *why);
bool dap__session_late(struct dap_session *ss, int64_t now_ms);
/* true when it answered (it emitted one frame); a closing session's verdict
 * is dropped unanswered. */
bool dap__session_answer(struct dap_app *app, struct dap_session *ss,
                         dap_emit_fn emit, void *ud);
/* Free an auth's wait (its credential wiped). NULL is fine. */
void dap__auth_wait_free(struct dap_auth_wait *w);
/* Where the session's auth with the engine is: none; waiting for the
 * verdict, until *deadline_ms (monotonic; written then); or its verdict is
 * in and dap__session_answer owes the answer. While there is one, the
 * session handles no other message. */
enum dap_wait { DAP_WAIT_NONE, DAP_WAIT_PENDING, DAP_WAIT_DECIDED };
enum dap_wait dap__session_wait(const struct dap_session *ss,
                                int64_t *deadline_ms /* OUT, may be NULL */);


/* A decoded request. */
struct dap_req {
    json_t *args;           /* owned: the arguments (an empty object if
                               absent); NULL for commands marked raw */
    const char *command;    /* borrowed: the decoded command name */
    int64_t seq;
    struct jraw_span raw_args; /* raw text of "arguments" (p NULL if absent) */
    struct buf text;        /* owned: an argument decoded from raw_args */
};

/* What a handler produces. */
struct dap_res {
    struct buf body;        /* JSON body text; empty = omit "body" */
    const char *code;       /* NULL = success, else the machine error code */
    struct buf msg;         /* error message */
    bool close;             /* close the connection after sending */
    bool deferred;          /* no answer now: the session waits for the
                               engine (dap__session_answer answers) */
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
    const struct dap_engine_state *engine; /* NULL without an engine */
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

struct dap_cmd;
/* Count an answered request (command dc, NULL: other; code NULL: ok) and
 * its latency from started_ns (CLOCK_MONOTONIC) in the metrics. */
void dap__count_request(struct dap_metrics *m, const struct dap_cmd *dc,
                        const char *code, int64_t started_ns);

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

#ifdef RRDEPLOY_TEST_HOOKS
/* server.c, test builds: rrtest_engine, a stand-in for the engine's
 * credential checks. 0, or RR_E_INVAL with e. */
int dap__test_engine(struct dap_server *srv, const json_t *args,
                     struct buf *body, struct err *e);
#endif

/* cmd.c: the command table. Handler returns 0 (body in res->body) or -1. */
typedef int (*dap_cmd_fn)(struct dap_app *app, struct dap_session *ss,
                          struct dap_req *req, struct dap_res *res);
struct dap_cmd {
    const char *name;
    dap_cmd_fn fn;
    bool public_;      /* allowed before auth */
    unsigned perm;     /* STORE_PERM_* needed, 0 = any authenticated */
    bool writes;       /* may write to the store (see store_batch_write) */
    bool raw;          /* reads only req->raw_args: no tree is parsed
                          (req->args stays NULL) */
};
const struct dap_cmd *dap__cmd_find(const char *name);
/* The command table, for metrics: entry i (NULL past the end). */
const struct dap_cmd *dap__cmd_at(size_t i);
size_t dap__cmd_slot(const struct dap_cmd *c); /* DAP_CMD_SLOTS - 1 for NULL */

/* metrics.c: the Prometheus text exposition (format 0.0.4). */
struct dap_gauges {
    const char *executor;       /* label of the runs counters */
    const struct dap_engine_state *engine; /* NULL without an engine */
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
