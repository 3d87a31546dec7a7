/* upstream.c -- the asynchronous DAP client (dap/upstream.h): many
 * connections to one engine, on a thread of their own.
 *
 * Design: dap_up_start starts a thread that creates one lws client context
 * and loops: deliver the CLOSED callbacks that are due, then lws_service().
 * lws_service() in 4.1 ignores its timeout and sleeps until a socket or an
 * lws_sul timer wants it, so everything that must happen later is a sul (the
 * cfg.tick_ms tick, each connection's connect timeout, the stop grace) or a
 * wake of the loop with lws_cancel_service(): dap_up_wake and dap_up_stop
 * set an atomic flag and cancel the wait, and EVENT_WAIT_CANCELLED reads the
 * flags on the upstream thread.
 *
 * A connection is the wsi's opaque user data. OPENED and MESSAGE are told
 * from the lws callbacks; CLOSED never is: whatever ends a connection (lws's
 * connection error or close, a protocol error, the connect timeout,
 * dap_up_close, the stop) only decides it (conn_end: the why, onto the due
 * list, and a cancel of the wait so the loop comes round), and the loop
 * tells it between two lws_service() calls. So CLOSED never comes from
 * inside dap_up_connect, _request or _close, nor from inside lws, and a
 * CLOSED callback may do anything the API allows. From the moment it is
 * decided, nothing more is told of the connection and nothing more is
 * written but the close frame. Its wsi may outlive it (a close handshake
 * still under way): the struct is freed when both the CLOSED is told and
 * lws has destroyed the wsi (WSI_DESTROY), so no callback ever sees freed
 * memory.
 *
 * Stopping ends every connection ("stopping"), closes the open ones with a
 * close frame, and lets the loop run until the last wsi is gone or a second
 * has passed; then the context is destroyed (which closes what is left) and
 * the thread ends.
 * Thread: the struct dap_up fields above `upstream thread only` are set
 * before dap_up_start returns or are atomic; everything else, and every
 * connection, belongs to the upstream thread, which takes no locks. */
#include "dap/upstream.h"

#include <errno.h>
#include <libwebsockets.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dap/dap_internal.h"

#define STOP_GRACE_US (1000 * LWS_US_PER_MS)  /* close handshakes at stop */
#define CLOSE_WAIT_S 5       /* a closed connection's close handshake */
#define PROBE_WAIT_MS 1000   /* finding why a connect failed (blocks) */
#define LWS_SLACK_S 5        /* lws's own timeouts come after ours */

/* Where a connection is in its life. */
enum cstate {
    UC_CONNECTING, /* waiting for the handshake; requests are queued */
    UC_OPEN,       /* OPENED told: requests go out */
    UC_ENDED,      /* CLOSED decided, waiting on the due list to be told */
    UC_TOLD,       /* CLOSED told: the caller has forgotten the handle */
};

struct dap_up_conn {
    struct dap_up *u;                 /* borrowed: its upstream */
    struct dap_up_conn *prev, *next;  /* in u->conns until freed */
    struct dap_up_conn *due_next;     /* in u->due while UC_ENDED */
    dap_up_fn fn;
    void *ud;                         /* borrowed: the caller's */
    enum cstate state;
    struct lws *wsi;                  /* from connect until WSI_DESTROY */
    bool established;                 /* the wsi finished its handshake */
    bool close_started;               /* lws was told to close the wsi */
    int64_t seq;                      /* last request seq given out */
    struct dap_outq out;              /* requests not yet written */
    struct buf rx;                    /* message being assembled */
    char why[DAP_WHY_MAX];            /* why it ended (or the peer's close) */
    lws_sorted_usec_list_t sul_connect; /* the connect timeout */
};

enum start { START_PENDING, START_OK, START_FAILED };

struct dap_up {
    struct dap_up_config cfg;         /* a copy */
    pthread_t thread;
    struct lws_context *ctx;          /* the thread's; set before start returns */
    pthread_mutex_t mu;               /* guards start; with cv, the thread's */
    pthread_cond_t cv;                /* start and (after a failure) its end */
    enum start start;
    atomic_bool wake;                 /* any thread: call cfg.service */
    atomic_bool stop;                 /* any thread: stop */
    /* upstream thread only */
    bool stopping;                    /* no new connections, no service */
    bool done;                        /* leave the loop */
    int nwsi;                         /* connections whose wsi lives */
    struct dap_up_conn *conns;        /* owned: every connection not freed */
    struct dap_up_conn *due_head, *due_tail; /* ended, CLOSED not yet told */
    lws_sorted_usec_list_t sul_tick;
    lws_sorted_usec_list_t sul_grace;
};

/* ---------------------------------------------------------------- connections */

static void conn_free(struct dap_up_conn *c)
{
    struct dap_up *u = c->u;
    lws_sul_cancel(&c->sul_connect);
    dap__outq_clear(&c->out);
    buf_free(&c->rx);
    if (c->prev)
        c->prev->next = c->next;
    else
        u->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c);
}

/* Free c once nothing refers to it any more: not the caller (CLOSED told)
 * and not lws (the wsi destroyed). */
static void conn_release(struct dap_up_conn *c)
{
    if (c->state == UC_TOLD && !c->wsi)
        conn_free(c);
}

/* Decide that c is over, for why (c->why itself is fine): its CLOSED goes on
 * the due list, to be told from the loop. Nothing more is told of it before
 * that, and nothing more is written. Idempotent: the first why stays. */
static void conn_end(struct dap_up_conn *c, const char *why)
{
    struct dap_up *u = c->u;
    if (c->state >= UC_ENDED)
        return;
    c->state = UC_ENDED;
    if (why != c->why)
        snprintf(c->why, sizeof c->why, "%s", why);
    lws_sul_cancel(&c->sul_connect);
    dap__outq_clear(&c->out);
    buf_free(&c->rx);
    if (u->due_tail)
        u->due_tail->due_next = c;
    else
        u->due_head = c;
    u->due_tail = c;
    /* lws may be about to sleep in poll() (suls run before it): come round */
    lws_cancel_service(u->ctx);
}

/* End c from our side and have its wsi go: a close frame when it is
 * established (from its next WRITEABLE), else the attempt is dropped. */
static void conn_close(struct dap_up_conn *c, const char *why)
{
    conn_end(c, why);
    if (!c->wsi)
        return;
    if (c->established) {
        lws_callback_on_writable(c->wsi);
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_SEND, CLOSE_WAIT_S);
    } else {
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_AWAITING_CONNECT_RESPONSE,
                        LWS_TO_KILL_ASYNC);
    }
}

/* Tell every CLOSED that is due. A callback may end more connections (its
 * own close is a no-op by now, another's or a new one's is not): they are
 * told in the same pass. */
static void deliver_due(struct dap_up *u)
{
    while (u->due_head) {
        struct dap_up_conn *c = u->due_head;
        u->due_head = c->due_next;
        if (!u->due_head)
            u->due_tail = NULL;
        c->due_next = NULL;
        c->state = UC_TOLD;
        c->fn(c->ud, c, DAP_UP_CLOSED, NULL, c->why);
        conn_release(c);
    }
}

static void connect_timed_out(lws_sorted_usec_list_t *sul)
{
    struct dap_up_conn *c = lws_container_of(sul, struct dap_up_conn, sul_connect);
    if (c->state == UC_CONNECTING)
        conn_close(c, "timed out connecting");
}

/* ---------------------------------------------------------------- service */

static void service(struct dap_up *u)
{
    if (!u->stopping && u->cfg.service)
        u->cfg.service(u->cfg.ud);
}

static void tick(lws_sorted_usec_list_t *sul)
{
    struct dap_up *u = lws_container_of(sul, struct dap_up, sul_tick);
    lws_sul_schedule(u->ctx, 0, &u->sul_tick, tick,
                     (lws_usec_t)u->cfg.tick_ms * LWS_US_PER_MS);
    service(u);
}

static void grace_over(lws_sorted_usec_list_t *sul)
{
    struct dap_up *u = lws_container_of(sul, struct dap_up, sul_grace);
    u->done = true;
    lws_cancel_service(u->ctx); /* suls run before poll(): do not sleep */
}

/* Stop: every connection ends "stopping"; the loop ends once their wsis are
 * gone or the grace has passed. */
static void begin_stop(struct dap_up *u)
{
    u->stopping = true;
    lws_sul_cancel(&u->sul_tick);
    for (struct dap_up_conn *c = u->conns; c; c = c->next)
        if (c->state < UC_ENDED)
            conn_close(c, "stopping");
    if (u->nwsi == 0)
        u->done = true;
    else
        lws_sul_schedule(u->ctx, 0, &u->sul_grace, grace_over, STOP_GRACE_US);
}

/* ---------------------------------------------------------------- lws */

/* The wsi of c is gone: c may be freed now. */
static void wsi_destroyed(struct dap_up_conn *c, struct lws *wsi)
{
    struct dap_up *u = c->u;
    if (c->wsi != wsi)
        return; /* destroyed inside lws_client_connect_via_info(): see there */
    lws_set_opaque_user_data(wsi, NULL);
    c->wsi = NULL;
    u->nwsi--;
    conn_end(c, c->why[0] ? c->why : "the connection was lost");
    if (u->stopping && u->nwsi == 0)
        u->done = true;
    conn_release(c);
}

/* Have lws close c's wsi with a close frame of status: return what this
 * gives from the callback. Once only: lws then sends the frame and waits
 * for the answer, and may still call WRITEABLE meanwhile, where another -1
 * would cut the connection without it. */
static int close_wsi(struct dap_up_conn *c, struct lws *wsi,
                     enum lws_close_status status)
{
    if (c->close_started)
        return 0;
    c->close_started = true;
    lws_close_reason(wsi, status, NULL, 0);
    return -1;
}

static int on_established(struct dap_up_conn *c, struct lws *wsi)
{
    lws_sul_cancel(&c->sul_connect);
    c->established = true;
    if (c->state != UC_CONNECTING) {
        lws_callback_on_writable(wsi); /* ended meanwhile: the close frame */
        return 0;
    }
    c->state = UC_OPEN;
    if (c->out.head)
        lws_callback_on_writable(wsi);
    c->fn(c->ud, c, DAP_UP_OPENED, NULL, NULL);
    return 0;
}

static int on_receive(struct dap_up_conn *c, struct lws *wsi, const void *in,
                      size_t len)
{
    if (c->state != UC_OPEN)
        return 0; /* closed by us: nothing more is told */
    char *text;
    size_t n;
    int r = dap__rx_add(&c->rx, wsi, in, len, c->u->cfg.max_message, &text, &n,
                        c->why);
    if (r < 0) {
        conn_end(c, c->why);
        return close_wsi(c, wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE);
    }
    if (r == 0)
        return 0;
    struct dap_msg *m;
    if (dap__msg_parse(text, n, &m, c->why) != 0) {
        conn_end(c, c->why);
        return close_wsi(c, wsi, LWS_CLOSE_STATUS_INVALID_PAYLOAD);
    }
    if (m) {
        c->fn(c->ud, c, DAP_UP_MESSAGE, m, NULL);
        dap_msg_free(m);
    }
    return 0;
}

static int on_writeable(struct dap_up_conn *c, struct lws *wsi)
{
    if (c->state != UC_OPEN)
        return close_wsi(c, wsi, LWS_CLOSE_STATUS_NORMAL);
    if (dap__outq_write(&c->out, wsi, c->why) != 0) {
        conn_end(c, c->why);
        c->close_started = true;
        return -1; /* the socket is broken: no close frame */
    }
    return 0;
}

/* A wake from dap_up_wake or dap_up_stop (or conn_end: then neither flag). */
static void on_wait_cancelled(struct dap_up *u)
{
    if (atomic_exchange(&u->stop, false) && !u->stopping)
        begin_stop(u);
    if (atomic_exchange(&u->wake, false))
        service(u);
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason,
                    void *user, void *in, size_t len)
{
    struct dap_up_conn *c;

    switch (reason) {
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED: {
        struct dap_up *u = lws_context_user(lws_get_context(wsi));
        if (u && u->ctx)
            on_wait_cancelled(u);
        return 0;
    }
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        c = lws_get_opaque_user_data(wsi);
        if (c && c->state < UC_ENDED) {
            char why[DAP_WHY_MAX];
            dap__connect_failed_why(&c->u->cfg.url, in,
                                    time_now_mono_ms() + PROBE_WAIT_MS, why);
            conn_end(c, why);
        }
        return 0;
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        c = lws_get_opaque_user_data(wsi);
        return c ? on_established(c, wsi) : -1;
    case LWS_CALLBACK_CLIENT_RECEIVE:
        c = lws_get_opaque_user_data(wsi);
        return c ? on_receive(c, wsi, in, len) : -1;
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        c = lws_get_opaque_user_data(wsi);
        return c ? on_writeable(c, wsi) : -1;
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        c = lws_get_opaque_user_data(wsi);
        if (c && c->state < UC_ENDED)
            dap__close_why(in, len, c->why);
        return 0;
    case LWS_CALLBACK_CLIENT_CLOSED:
        c = lws_get_opaque_user_data(wsi);
        if (c)
            conn_end(c, c->why[0] ? c->why : "the server closed the connection");
        return 0;
    case LWS_CALLBACK_WSI_DESTROY:
        c = lws_get_opaque_user_data(wsi);
        if (c)
            wsi_destroyed(c, wsi);
        return 0;
    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

static const struct lws_protocols protocols[] = {
    {"rrdeploy-upstream", callback, 0, 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* ---------------------------------------------------------------- thread */

static struct lws_context *context_new(struct dap_up *u)
{
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = protocols;
    info.user = u;
    info.options = u->cfg.url.tls ? LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT : 0;
    /* our connect timeout, not lws's, ends a slow connection attempt */
    unsigned int lws_timeout = (unsigned int)ceil(u->cfg.connect_timeout_s) + LWS_SLACK_S;
    info.timeout_secs = lws_timeout;
    info.connect_timeout_secs = lws_timeout;
    return lws_create_context(&info);
}

static void started(struct dap_up *u, struct lws_context *ctx)
{
    pthread_mutex_lock(&u->mu);
    u->ctx = ctx;
    u->start = ctx ? START_OK : START_FAILED;
    pthread_cond_signal(&u->cv);
    pthread_mutex_unlock(&u->mu);
}

static void *up_main(void *arg)
{
    struct dap_up *u = arg;
    struct lws_context *ctx = context_new(u);
    started(u, ctx);
    if (!ctx)
        return NULL;
    if (u->cfg.tick_ms > 0)
        lws_sul_schedule(ctx, 0, &u->sul_tick, tick,
                         (lws_usec_t)u->cfg.tick_ms * LWS_US_PER_MS);
    service(u);
    bool failed = false;
    for (;;) {
        deliver_due(u);
        if (u->done)
            break;
        if (lws_service(ctx, 0) < 0) {
            log_error("upstream %s: the event loop failed", u->cfg.url.text);
            for (struct dap_up_conn *c = u->conns; c; c = c->next)
                conn_end(c, "the event loop failed");
            u->stopping = u->done = failed = true;
        }
    }
    if (failed) {
        /* keep the context for dap_up_wake and dap_up_stop to find */
        pthread_mutex_lock(&u->mu);
        while (!atomic_load(&u->stop))
            pthread_cond_wait(&u->cv, &u->mu);
        pthread_mutex_unlock(&u->mu);
    }
    lws_sul_cancel(&u->sul_tick);
    lws_sul_cancel(&u->sul_grace);
    lws_context_destroy(ctx); /* closes what is left: WSI_DESTROY frees */
    while (u->conns)
        conn_free(u->conns);
    return NULL;
}

/* ---------------------------------------------------------------- API */

void dap_up_config_defaults(struct dap_up_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->connect_timeout_s = 10;
    cfg->max_message = 64u * 1024 * 1024;
}

struct dap_up *dap_up_start(const struct dap_up_config *cfg, struct err *e)
{
    if (!cfg->url.host[0] || cfg->url.port <= 0) {
        err_set(e, RR_E_INVAL, "upstream: no engine address");
        return NULL;
    }
    if (!(cfg->connect_timeout_s > 0 && cfg->connect_timeout_s <= 86400) ||
        cfg->max_message == 0 || cfg->tick_ms < 0) {
        err_set(e, RR_E_INVAL, "upstream %s: a bad timeout, message size or tick",
                cfg->url.text);
        return NULL;
    }
    struct dap_up *u = xcalloc(1, sizeof *u);
    u->cfg = *cfg;
    pthread_mutex_init(&u->mu, NULL);
    pthread_cond_init(&u->cv, NULL);
    atomic_init(&u->wake, false);
    atomic_init(&u->stop, false);

    /* The thread starts with every signal blocked, so process-directed
     * signals go to the main thread (and a write to a dead TLS peer gives
     * EPIPE, not SIGPIPE). */
    sigset_t all, old;
    sigfillset(&all);
    int rc = pthread_sigmask(SIG_SETMASK, &all, &old);
    if (rc == 0) {
        rc = pthread_create(&u->thread, NULL, up_main, u);
        int rc2 = pthread_sigmask(SIG_SETMASK, &old, NULL);
        ASSERT(rc2 == 0);
    }
    if (rc) {
        err_set(e, RR_E_IO, "upstream %s: cannot start a thread: %s",
                cfg->url.text, strerror(rc));
        goto fail;
    }
    pthread_mutex_lock(&u->mu);
    while (u->start == START_PENDING)
        pthread_cond_wait(&u->cv, &u->mu);
    enum start st = u->start;
    pthread_mutex_unlock(&u->mu);
    if (st == START_OK)
        return u;
    pthread_join(u->thread, NULL);
    err_set(e, RR_E_IO, "upstream %s: cannot create a WebSocket client context",
            cfg->url.text);
fail:
    pthread_cond_destroy(&u->cv);
    pthread_mutex_destroy(&u->mu);
    free(u);
    return NULL;
}

void dap_up_wake(struct dap_up *u)
{
    atomic_store(&u->wake, true);
    lws_cancel_service(u->ctx);
}

void dap_up_stop(struct dap_up *u)
{
    if (!u)
        return;
    ASSERT(!pthread_equal(pthread_self(), u->thread));
    pthread_mutex_lock(&u->mu);
    atomic_store(&u->stop, true);
    pthread_cond_signal(&u->cv);
    pthread_mutex_unlock(&u->mu);
    lws_cancel_service(u->ctx);
    pthread_join(u->thread, NULL);
    pthread_cond_destroy(&u->cv);
    pthread_mutex_destroy(&u->mu);
    free(u);
}

struct dap_up_conn *dap_up_connect(struct dap_up *u, dap_up_fn fn, void *ud)
{
    struct dap_up_conn *c = xcalloc(1, sizeof *c);
    c->u = u;
    c->fn = fn;
    c->ud = ud;
    buf_init(&c->rx, 0);
    c->next = u->conns;
    if (u->conns)
        u->conns->prev = c;
    u->conns = c;
    if (u->stopping) {
        conn_end(c, "stopping");
        return c;
    }
    struct lws_client_connect_info ci;
    dap__connect_info(&ci, u->ctx, &u->cfg.url, protocols[0].name);
    ci.opaque_user_data = c;
    /* lws reports no error from inside this call: a failure here is NULL
     * (the wsi may have been destroyed already, which wsi_destroyed
     * ignores since c->wsi is not set yet) */
    struct lws *wsi = lws_client_connect_via_info(&ci);
    if (!wsi) {
        char why[DAP_WHY_MAX];
        dap__connect_failed_why(&u->cfg.url, NULL,
                                time_now_mono_ms() + PROBE_WAIT_MS, why);
        conn_end(c, why);
        return c;
    }
    c->wsi = wsi;
    u->nwsi++;
    lws_sul_schedule(u->ctx, 0, &c->sul_connect, connect_timed_out,
                     (lws_usec_t)(u->cfg.connect_timeout_s * LWS_US_PER_SEC));
    return c;
}

int64_t dap_up_request(struct dap_up_conn *c, const char *command,
                       const char *args, size_t args_len)
{
    if (c->state >= UC_ENDED)
        return 0;
    int64_t seq = ++c->seq;
    dap__outq_request(&c->out, seq, command, args, args_len);
    if (c->state == UC_OPEN)
        lws_callback_on_writable(c->wsi);
    return seq;
}

void dap_up_close(struct dap_up_conn *c)
{
    if (c->state < UC_ENDED)
        conn_close(c, "closed by us");
}

void dap_up_set_ud(struct dap_up_conn *c, void *ud)
{
    c->ud = ud;
}
