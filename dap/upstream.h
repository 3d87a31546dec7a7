/* upstream.h -- an asynchronous DAP client: many connections to one
 * RocketRide server (an "engine"), all on one thread of their own.
 *
 * The engine executor (runner/rocketride.c) drives every run and every
 * identity check over these connections; it never sees libwebsockets. The
 * blocking client the command line uses is dap/client.h; both share the URL
 * rules and struct dap_msg.
 *
 * Design: dap_up_start creates one lws client context and a thread that
 * services it. Everything that touches connections happens on that thread,
 * from the callbacks below: cfg.service (called at start, after every
 * dap_up_wake from any thread, and every cfg.tick_ms), and each connection's
 * own callback (opened, a message, closed). Requests are queued per
 * connection and written from CLIENT_WRITEABLE from LWS_PRE-padded buffers;
 * the request text is wiped from memory once written (it may hold a key).
 * Incoming fragments are assembled (bounded by cfg.max_message), checked to
 * be one JSON value and parsed into a struct dap_msg (envelope read with
 * util/jraw; body kept as raw text). Host names are resolved on the
 * upstream thread, blocking it (lws 4.1 here has no asynchronous DNS): give
 * the engine's address, or a name the local resolver answers at once. When
 * lws says no more than "Unable to connect", one plain TCP connect (at most
 * a second, also blocking) finds the reason to tell.
 * Thread: dap_up_start, dap_up_wake and dap_up_stop from any thread (stop
 * not from the upstream thread); everything else on the upstream thread
 * only, i.e. from inside a callback. */
#ifndef RR_DAP_UPSTREAM_H
#define RR_DAP_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dap/client.h"
#include "util/util.h"

struct dap_up;
struct dap_up_conn;

enum dap_up_event {
    DAP_UP_OPENED,   /* the WebSocket handshake is done: requests may go */
    DAP_UP_MESSAGE,  /* msg is a response or an event (borrowed for the call) */
    DAP_UP_CLOSED,   /* the connection is gone or never came up; why says
                        why in one line ("connection refused", "the server
                        closed the connection (1000: bye)", "timed out
                        connecting", "closed by us", "stopping"). Exactly
                        one per connection, from the thread's loop, never
                        from inside a call to this API. The handle is freed
                        right after the call. */
};

/* A connection's callback, on the upstream thread. msg only with
 * DAP_UP_MESSAGE, why only with DAP_UP_CLOSED (NULL otherwise). */
typedef void (*dap_up_fn)(void *ud, struct dap_up_conn *c, enum dap_up_event ev,
                          const struct dap_msg *msg, const char *why);

struct dap_up_config {
    struct dap_url url;         /* where the engine listens (dap_url_parse) */
    double connect_timeout_s;   /* TCP + TLS + WebSocket handshake (10) */
    size_t max_message;         /* bytes of one incoming message (64 MiB) */
    /* On the upstream thread: once at start, after each dap_up_wake, and
     * every tick_ms (0: no ticks); not once stopping. The call at start may
     * come before dap_up_start has returned to its caller: a service that
     * needs the struct dap_up must wait for it (e.g. under the lock the
     * caller holds around dap_up_start). NULL: none. */
    void (*service)(void *ud);
    int tick_ms;
    void *ud;
};
void dap_up_config_defaults(struct dap_up_config *cfg);

/* Start the thread and its context. cfg is copied. NULL and e on failure
 * (RR_E_INVAL: a bad cfg; RR_E_IO: no thread or no lws context). */
struct dap_up *dap_up_start(const struct dap_up_config *cfg, struct err *e);

/* Any thread: have cfg.service called soon on the upstream thread. Several
 * wakes before it runs may be merged into one call. */
void dap_up_wake(struct dap_up *u);

/* Not on the upstream thread: close every connection (each gets its
 * DAP_UP_CLOSED, why "stopping"; a connection opened from those callbacks
 * is CLOSED "stopping" at once), end the thread, free. Open connections get
 * a close frame, and up to a second for the close handshakes. NULL is
 * fine. */
void dap_up_stop(struct dap_up *u);

/* Upstream thread: open a connection; fn(ud, ...) hears of it. Never NULL:
 * a connection that cannot even be attempted is reported CLOSED from the
 * next turn of the thread's loop, never from inside this call. */
struct dap_up_conn *dap_up_connect(struct dap_up *u, dap_up_fn fn, void *ud);

/* Upstream thread: queue {"type":"request","seq":N,"command":command,
 * "arguments":args} (args: the text of a JSON object, args_len bytes; NULL
 * sends {}) and return N (1, 2, ... per connection); its response comes as a
 * DAP_UP_MESSAGE with request_seq N. Requests queued before OPENED go out
 * once it opens. 0 when the connection is closing (nothing is sent). */
int64_t dap_up_request(struct dap_up_conn *c, const char *command,
                       const char *args, size_t args_len);

/* Upstream thread: close the connection (a close frame with 1000 when open;
 * requests not yet written are dropped). Its DAP_UP_CLOSED follows, from a
 * later turn, with why "closed by us"; no DAP_UP_MESSAGE comes any more.
 * Closing twice, or closing a connection whose CLOSED is due, is fine. */
void dap_up_close(struct dap_up_conn *c);

/* The connection's user pointer (the ud given to dap_up_connect) can be
 * changed: */
void dap_up_set_ud(struct dap_up_conn *c, void *ud);

#endif
