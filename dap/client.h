/* client.h -- the DAP client library: the public API of dap/ for talking to a
 * running server, beside dap.h (the server). The command line (cli/) uses it;
 * the implementation, over libwebsockets, is dap/client.c.
 *
 * A blocking request/response API over one connection: every wait is bounded
 * by the client's deadline (event waits optionally not), never by luck.
 * Single-threaded: one client belongs to the thread that opened it. */
#ifndef RR_DAP_CLIENT_H
#define RR_DAP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/jraw.h"
#include "util/util.h"

/* A server address, normalised as the RocketRide SDKs do. */
struct dap_url {
    bool tls;            /* wss */
    char host[256];      /* without IPv6 brackets */
    int port;
    char path[64];       /* always DAP_DEFAULT_PATH */
    char text[384];      /* "ws://host:port/task/service", for messages */
};

/* Parse and normalise s: no scheme means http://, no port means 5565 (unless
 * the host is under rocketride.ai), https/wss give wss and anything else ws,
 * the path becomes /task/service, query and fragment are dropped. Returns 0,
 * or RR_E_INVAL with the reason in e. */
int dap_url_parse(const char *s, struct dap_url *out /* OUT */, struct err *e);

/* One message from the server. */
struct dap_msg {
    struct dap_msg *next;    /* inbox link, internal to client.c */
    char *text;              /* owned (free()): the whole frame, NUL-terminated */
    size_t len;
    bool is_event;
    char *event;             /* owned (free()): events' name, else NULL */
    int64_t request_seq;     /* responses only */
    bool success;            /* responses: success is true */
    struct jraw_span body;   /* borrowed from text; p is NULL without a body */
    char *message;           /* owned (free()), NULL when absent */
    char *code;              /* owned (free()), NULL when absent */
};

/* Free m and what it owns; NULL does nothing. */
void dap_msg_free(struct dap_msg *m);

struct dap_client;

/* Errors of the calls below, beside 0: -EIO (could not connect, or the
 * connection was lost), -ETIMEDOUT (the deadline passed), -EINTR
 * (dap_client_interrupt() was called during an interruptible wait), -EPROTO
 * (the server sent something that is not a DAP message). e->msg always says
 * what happened in one line. */

/* Connect to u and complete the WebSocket handshake within timeout_s, which
 * also becomes the deadline of later calls (see dap_client_set_deadline).
 * On success *out is owned by the caller: free it with dap_client_close(). */
int dap_client_open(const struct dap_url *u, double timeout_s,
                    struct dap_client **out /* OUT */, struct err *e) MUST_CHECK;

/* Bound the following waits to timeout_s from now (<= 0: no bound). */
void dap_client_set_deadline(struct dap_client *c, double timeout_s);

/* Send {"type":"request","seq":N,"command":command,"arguments":args} (args:
 * the text of a JSON object, or NULL to send {}) and wait for the response
 * with request_seq N. Events that arrive meanwhile are kept for
 * dap_client_event(). On 0, *out is the response, owned by the caller
 * (dap_msg_free); whether it succeeded is (*out)->success. A successful
 * `auth` marks the connection authenticated, `deauth` clears it. The request
 * text is wiped from memory once written (it may hold a key). */
int dap_client_request(struct dap_client *c, const char *command,
                       const char *args, struct dap_msg **out /* OUT */,
                       struct err *e) MUST_CHECK;

/* Wait for the next event (oldest first). With bounded, the deadline applies;
 * without it the wait ends only with an event, a lost connection or an
 * interrupt. On 0, *out is owned by the caller. */
int dap_client_event(struct dap_client *c, bool bounded,
                     struct dap_msg **out /* OUT */, struct err *e) MUST_CHECK;

/* Say goodbye and free: `deauth` (if authenticated, and only while the
 * deadline has not passed), then close with 1000, waiting at most a second
 * for the close handshake. NULL does nothing. */
void dap_client_close(struct dap_client *c);

/* Make the current and next interruptible waits return -EINTR. Async-signal
 * safe: this is what a SIGINT handler calls. */
void dap_client_interrupt(void);

#endif
