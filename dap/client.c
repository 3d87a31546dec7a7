/* client.c -- a small blocking DAP client over libwebsockets (dap/client.h),
 * used by the command line (cli/).
 *
 * Design: one lws client context holding one connection. The CLI calls
 * blocking functions (open, request, event, close); each runs lws_service()
 * on the calling thread until what it waits for has arrived, the connection
 * is gone, the deadline has passed or (for interruptible waits) a signal
 * handler called dap_client_interrupt(). lws_service() in 4.1 ignores its
 * timeout, so a self-rearming lws_sul wakes the loop every 100 ms to look at
 * the clock and the interrupt flag. Outgoing requests wait in a FIFO and are
 * written only from CLIENT_WRITEABLE, from LWS_PRE-padded buffers. Incoming
 * fragments are assembled into whole messages (bounded in size), checked to
 * be one JSON value, and queued in arrival order: a response is taken out by
 * its request_seq and events stay queued for dap_client_event(), so an event
 * that arrives while a request is outstanding is not lost (`run --wait`
 * subscribes before starting the run and relies on this). The request
 * queue, the assembling and decoding of messages and the words for a failed
 * or closed connection are shared with the asynchronous client
 * (client_conn.c).
 * Thread: single-threaded, on the caller's thread. Only
 * dap_client_interrupt() may be called from a signal handler. */
#include "dap/client.h"

#include <errno.h>
#include <libwebsockets.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dap/dap_internal.h"

#define TICK_US (100 * LWS_US_PER_MS)     /* loop wake-up for clock/interrupt checks */
#define MAX_MESSAGE (256u * 1024 * 1024)  /* bytes of one server message */
#define CLOSE_WAIT_MS 1000                /* close handshake */
#define PROBE_WAIT_MS 2000                /* finding why a connect failed */

static volatile sig_atomic_t interrupted;

enum cstate { C_CONNECTING, C_OPEN, C_CLOSED };

struct dap_client {
    struct lws_context *ctx;      /* owned */
    struct lws *wsi;              /* valid from ESTABLISHED until CLOSED */
    enum cstate state;
    struct dap_url u;             /* where it connects */
    char why[DAP_WHY_MAX];        /* why the connection failed or ended */
    int64_t deadline_ms;          /* monotonic; 0 = none */
    int64_t seq;                  /* last request seq sent */
    bool authed;
    bool want_close;              /* send a close frame on the next WRITEABLE */
    bool proto_error;             /* the server sent a non-DAP message */
    struct dap_outq out;          /* requests not yet written */
    struct buf rx;                /* message being assembled */
    struct dap_msg *in_head, *in_tail;  /* complete messages, arrival order */
    lws_sorted_usec_list_t sul_tick;
};

/* ---------------------------------------------------------------- URL */

static bool has_prefix_ci(const char *s, size_t n, const char *lit)
{
    return n == strlen(lit) && strncasecmp(s, lit, n) == 0;
}

int dap_url_parse(const char *s, struct dap_url *out, struct err *e)
{
    struct dap_url u;
    memset(&u, 0, sizeof u);
    const char *rest = strstr(s, "://");
    const char *scheme = "http";
    size_t scheme_n = 4;
    if (rest) {
        scheme = s;
        scheme_n = (size_t)(rest - s);
        rest += 3;
    } else {
        rest = s;
    }
    u.tls = has_prefix_ci(scheme, scheme_n, "https") ||
            has_prefix_ci(scheme, scheme_n, "wss");

    /* authority: up to the path, query or fragment; drop user info */
    size_t an = strcspn(rest, "/?#");
    const char *auth = rest;
    for (size_t i = an; i > 0; i--) {
        if (auth[i - 1] == '@') {
            auth += i;
            an -= i;
            break;
        }
    }
    const char *host = auth, *port = NULL;
    size_t hn = an, pn = 0;
    if (an > 0 && auth[0] == '[') {
        const char *close = memchr(auth, ']', an);
        if (!close)
            return err_set(e, RR_E_INVAL, "invalid URL '%s': unclosed '['", s);
        host = auth + 1;
        hn = (size_t)(close - host);
        const char *after = close + 1;
        size_t left = an - (size_t)(after - auth);
        if (left > 0) {
            if (*after != ':')
                return err_set(e, RR_E_INVAL, "invalid URL '%s'", s);
            port = after + 1;
            pn = left - 1;
        }
    } else {
        const char *colon = memchr(auth, ':', an);
        if (colon && !memchr(colon + 1, ':', an - (size_t)(colon - auth) - 1)) {
            hn = (size_t)(colon - auth);
            port = colon + 1;
            pn = an - hn - 1;
        }
    }
    if (hn == 0)
        return err_set(e, RR_E_INVAL, "invalid URL '%s': no host", s);
    if (hn >= sizeof u.host)
        return err_set(e, RR_E_INVAL, "invalid URL '%s': host too long", s);
    memcpy(u.host, host, hn);
    u.host[hn] = '\0';

    if (port && pn > 0) {
        long v = 0;
        for (size_t i = 0; i < pn; i++) {
            if (port[i] < '0' || port[i] > '9' || v > 65535)
                return err_set(e, RR_E_INVAL, "invalid URL '%s': bad port", s);
            v = v * 10 + (port[i] - '0');
        }
        if (v < 1 || v > 65535)
            return err_set(e, RR_E_INVAL, "invalid URL '%s': bad port", s);
        u.port = (int)v;
    } else if (strstr(u.host, "rocketride.ai")) {
        u.port = u.tls ? 443 : 80;
    } else {
        u.port = DAP_DEFAULT_PORT;
    }
    snprintf(u.path, sizeof u.path, "%s", DAP_DEFAULT_PATH);
    bool v6 = strchr(u.host, ':') != NULL;
    int n = snprintf(u.text, sizeof u.text, "%s://%s%s%s:%d%s",
                     u.tls ? "wss" : "ws", v6 ? "[" : "", u.host, v6 ? "]" : "",
                     u.port, u.path);
    if (n < 0 || (size_t)n >= sizeof u.text)
        return err_set(e, RR_E_INVAL, "invalid URL '%s': too long", s);
    *out = u;
    return 0;
}

/* ---------------------------------------------------------------- messages */

/* Decode one complete frame (taken: text, a heap string of len bytes) into
 * the inbox; text that is not JSON marks a protocol error. */
static void inbox_add(struct dap_client *c, char *text, size_t len)
{
    struct dap_msg *m;
    if (dap__msg_parse(text, len, &m, c->why) != 0) {
        c->proto_error = true;
        return;
    }
    if (!m)
        return;
    if (c->in_tail)
        c->in_tail->next = m;
    else
        c->in_head = m;
    c->in_tail = m;
}

/* Take the first inbox message matching (is_event, request_seq), or NULL. */
static struct dap_msg *inbox_take(struct dap_client *c, bool is_event,
                                  int64_t request_seq)
{
    struct dap_msg *prev = NULL;
    for (struct dap_msg *m = c->in_head; m; prev = m, m = m->next) {
        if (m->is_event != is_event || (!is_event && m->request_seq != request_seq))
            continue;
        if (prev)
            prev->next = m->next;
        else
            c->in_head = m->next;
        if (c->in_tail == m)
            c->in_tail = prev;
        m->next = NULL;
        return m;
    }
    return NULL;
}

/* ---------------------------------------------------------------- lws */

static void tick(lws_sorted_usec_list_t *sul)
{
    struct dap_client *c = lws_container_of(sul, struct dap_client, sul_tick);
    lws_sul_schedule(c->ctx, 0, &c->sul_tick, tick, TICK_US);
}

/* Write the head of the queue as one text frame, or the close frame. */
static int write_next(struct dap_client *c, struct lws *wsi)
{
    if (c->want_close) {
        /* once: lws then sends the close frame and waits for the answer,
         * and may call here again meanwhile, where -1 would cut the
         * connection without it */
        c->want_close = false;
        lws_close_reason(wsi, LWS_CLOSE_STATUS_NORMAL, NULL, 0);
        return -1;
    }
    return dap__outq_write(&c->out, wsi, c->why);
}

/* Until when a probe may look for why the connection failed. */
static int64_t probe_until(const struct dap_client *c)
{
    int64_t until = time_now_mono_ms() + PROBE_WAIT_MS;
    return c->deadline_ms && c->deadline_ms < until ? c->deadline_ms : until;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason,
                    void *user, void *in, size_t len)
{
    struct dap_client *c = lws_context_user(lws_get_context(wsi));
    if (!c)
        return lws_callback_http_dummy(wsi, reason, user, in, len);

    switch (reason) {
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        c->state = C_CLOSED;
        c->wsi = NULL;
        if (!c->why[0])
            dap__connect_failed_why(&c->u, in, probe_until(c), c->why);
        return 0;

    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        c->state = C_OPEN;
        c->wsi = wsi;
        if (c->out.head || c->want_close)
            lws_callback_on_writable(wsi);
        return 0;

    case LWS_CALLBACK_CLIENT_RECEIVE: {
        char *text;
        size_t n;
        int r = dap__rx_add(&c->rx, wsi, in, len, MAX_MESSAGE, &text, &n, c->why);
        if (r < 0) {
            c->proto_error = true;
            return -1;
        }
        if (r > 0)
            inbox_add(c, text, n);
        return 0;
    }

    case LWS_CALLBACK_CLIENT_WRITEABLE:
        return write_next(c, wsi);

    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        if (!c->why[0])
            dap__close_why(in, len, c->why);
        return 0;

    case LWS_CALLBACK_CLIENT_CLOSED:
        c->state = C_CLOSED;
        c->wsi = NULL;
        if (!c->why[0])
            snprintf(c->why, sizeof c->why, "the server closed the connection");
        return 0;

    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

static const struct lws_protocols protocols[] = {
    {"rrdeploy-cli", callback, 0, 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* ---------------------------------------------------------------- waiting */

enum want { W_OPEN, W_RESPONSE, W_EVENT, W_CLOSED };

static bool ready(struct dap_client *c, enum want w, int64_t seq)
{
    switch (w) {
    case W_OPEN: return c->state == C_OPEN;
    case W_CLOSED: return c->state == C_CLOSED;
    case W_RESPONSE:
        for (struct dap_msg *m = c->in_head; m; m = m->next)
            if (!m->is_event && m->request_seq == seq)
                return true;
        return false;
    case W_EVENT:
        for (struct dap_msg *m = c->in_head; m; m = m->next)
            if (m->is_event)
                return true;
        return false;
    }
    return false;
}

/* Service the loop until w is ready. */
static int pump(struct dap_client *c, enum want w, int64_t seq,
                int64_t deadline_ms, bool interruptible, struct err *e)
{
    for (;;) {
        if (ready(c, w, seq))
            return 0;
        if (c->proto_error)
            return err_set(e, -EPROTO, "%s: %s", c->u.text, c->why);
        if (c->state == C_CLOSED) {
            if (w == W_OPEN)
                err_set(e, -EIO, "cannot connect to %s: %s", c->u.text, c->why);
            else
                err_set(e, -EIO, "%s: %s", c->u.text, c->why);
            return -EIO;
        }
        if (interruptible && interrupted)
            return err_set(e, -EINTR, "interrupted");
        if (deadline_ms && time_now_mono_ms() >= deadline_ms) {
            err_set(e, -ETIMEDOUT, "%s %s: timed out",
                    w == W_OPEN ? "cannot connect to" : "no answer from", c->u.text);
            return -ETIMEDOUT;
        }
        if (lws_service(c->ctx, 0) < 0) {
            err_set(e, -EIO, "%s: the event loop failed", c->u.text);
            return -EIO;
        }
    }
}

/* ---------------------------------------------------------------- API */

void dap_client_interrupt(void)
{
    interrupted = 1;
}

void dap_client_set_deadline(struct dap_client *c, double timeout_s)
{
    c->deadline_ms = timeout_s > 0 ? time_now_mono_ms() + (int64_t)(timeout_s * 1000)
                                   : 0;
}

static void client_free(struct dap_client *c)
{
    if (c->ctx) {
        lws_sul_cancel(&c->sul_tick);
        lws_context_destroy(c->ctx);
    }
    dap__outq_clear(&c->out);
    while (c->in_head) {
        struct dap_msg *m = c->in_head;
        c->in_head = m->next;
        dap_msg_free(m);
    }
    buf_free(&c->rx);
    free(c);
}

int dap_client_open(const struct dap_url *u, double timeout_s,
                    struct dap_client **out, struct err *e)
{
    struct dap_client *c = xcalloc(1, sizeof *c);
    buf_init(&c->rx, 0);
    c->u = *u;
    dap_client_set_deadline(c, timeout_s);

    lws_set_log_level(0, NULL);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = protocols;
    info.user = c;
    info.options = u->tls ? LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT : 0;
    /* let our deadline, not lws's own, end a slow connection attempt */
    unsigned int lws_timeout = timeout_s > 0 ? (unsigned int)timeout_s + 5 : 0;
    info.timeout_secs = lws_timeout;
    info.connect_timeout_secs = lws_timeout;
    info.fd_limit_per_thread = 1 + 1 + 1;
    c->ctx = lws_create_context(&info);
    if (!c->ctx) {
        client_free(c);
        return err_set(e, -EIO, "cannot create a WebSocket client context");
    }
    lws_sul_schedule(c->ctx, 0, &c->sul_tick, tick, TICK_US);

    struct lws_client_connect_info ci;
    dap__connect_info(&ci, c->ctx, &c->u, protocols[0].name);
    if (!lws_client_connect_via_info(&ci) && c->state != C_CLOSED) {
        c->state = C_CLOSED;
        dap__connect_failed_why(&c->u, NULL, probe_until(c), c->why);
    }
    int rc = pump(c, W_OPEN, 0, c->deadline_ms, false, e);
    if (rc) {
        client_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

int dap_client_request(struct dap_client *c, const char *command,
                       const char *args, struct dap_msg **out, struct err *e)
{
    if (c->state != C_OPEN)
        return err_set(e, -EIO, "%s: %s", c->u.text,
                       c->why[0] ? c->why : "not connected");
    int64_t seq = ++c->seq;
    dap__outq_request(&c->out, seq, command, args, args ? strlen(args) : 0);
    lws_callback_on_writable(c->wsi);

    int rc = pump(c, W_RESPONSE, seq, c->deadline_ms, false, e);
    if (rc)
        return rc;
    struct dap_msg *m = inbox_take(c, false, seq);
    ASSERT(m);
    if (strcmp(command, "auth") == 0)
        c->authed = m->success;
    else if (strcmp(command, "deauth") == 0 && m->success)
        c->authed = false;
    *out = m;
    return 0;
}

int dap_client_event(struct dap_client *c, bool bounded,
                     struct dap_msg **out, struct err *e)
{
    int rc = pump(c, W_EVENT, 0, bounded ? c->deadline_ms : 0, true, e);
    if (rc)
        return rc;
    *out = inbox_take(c, true, 0);
    ASSERT(*out);
    return 0;
}

void dap_client_close(struct dap_client *c)
{
    if (!c)
        return;
    struct err e = {0};
    bool live = c->deadline_ms == 0 || time_now_mono_ms() < c->deadline_ms;
    if (c->state == C_OPEN && c->authed && live && !c->proto_error) {
        struct dap_msg *m = NULL;
        if (dap_client_request(c, "deauth", NULL, &m, &e) == 0)
            dap_msg_free(m);
    }
    if (c->state == C_OPEN && c->wsi) {
        c->want_close = true;
        lws_callback_on_writable(c->wsi);
        (void)pump(c, W_CLOSED, 0, time_now_mono_ms() + CLOSE_WAIT_MS, false, &e);
    }
    client_free(c);
}
