/* server.c -- the libwebsockets side of the DAP server.
 *
 * Design: one lws context with one protocol that takes both the WebSocket
 * upgrade at cfg->ws_path (no subprotocol, no extensions) and plain HTTP
 * (answered 404 for now). Incoming fragments are assembled into one message
 * (bounded by cfg->max_message; past it the socket is closed with 1009) and
 * handed to the message layer (msg.c), which emits response frames into a
 * per-session queue. Frames are written only from WRITEABLE callbacks, in
 * chunks, so one huge response never monopolises the loop. A session whose
 * queue grows past a high-water mark stops being read until it drains: a
 * client that never reads cannot make the server buffer without bound.
 * A periodic timer polls the database's data_version so a key revoked by the
 * `rrdeploy keys` CLI takes effect on live sessions within a second.
 * Thread: everything runs on the service thread that calls dap_serve(). */
#include "dap/dap_internal.h"

#include <libwebsockets.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(DAP_FRAME_HEAD >= LWS_PRE, "frame headroom too small for lws");

#define WRITE_CHUNK (64 * 1024)          /* bytes written per WRITEABLE */
#define QUEUE_HIGH (4u * 1024 * 1024)    /* stop reading above this */
#define QUEUE_LOW (1u * 1024 * 1024)     /* resume reading below this */
#define REVOKE_POLL_US (250 * LWS_US_PER_MS)

struct frame {
    struct frame *next;
    struct buf b; /* owned; DAP_FRAME_HEAD headroom */
};

/* Per-connection state; lws allocates it zeroed and frees it after CLOSED. */
struct pss {
    struct dap_session ss;
    struct lws *wsi;           /* valid until LWS_CALLBACK_CLOSED */
    struct pss *prev, *next;   /* in server.sessions */
    struct buf rx;             /* message being assembled */
    bool rx_binary;
    struct frame *q_head, *q_tail;
    size_t q_bytes;            /* bytes queued, for flow control */
    size_t sent;               /* bytes of q_head already written */
    bool rx_paused;
    bool auth_timer;           /* the unauthenticated timeout is armed */
    bool live;                 /* ESTABLISHED seen, not yet CLOSED */
};

struct server {
    struct dap_app app;
    struct lws_context *ctx;
    struct pss *sessions;      /* live WebSocket sessions */
    lws_sorted_usec_list_t sul_revoke;
    int64_t data_version;
};

static struct server srv;
static volatile sig_atomic_t stop_requested;

static double clock_real(void)
{
    return time_now_real();
}

/* ---------------------------------------------------------------- queue */

static void enqueue(void *ud, struct buf *frame)
{
    struct pss *p = ud;
    struct frame *f = xmalloc(sizeof *f);
    f->next = NULL;
    f->b = *frame; /* take the buffer's memory */
    free(frame);
    if (p->q_tail)
        p->q_tail->next = f;
    else
        p->q_head = f;
    p->q_tail = f;
    p->q_bytes += f->b.len;
    if (!p->rx_paused && p->q_bytes > QUEUE_HIGH) {
        lws_rx_flow_control(p->wsi, 0);
        p->rx_paused = true;
    }
    lws_callback_on_writable(p->wsi);
}

static void queue_free(struct pss *p)
{
    struct frame *f = p->q_head;
    while (f) {
        struct frame *next = f->next;
        buf_free(&f->b);
        free(f);
        f = next;
    }
    p->q_head = p->q_tail = NULL;
    p->q_bytes = 0;
}

/* Write the next chunk of the queue head. Returns -1 to close. */
static int write_some(struct pss *p)
{
    struct frame *f = p->q_head;
    if (!f) {
        if (p->ss.closing) {
            lws_close_reason(p->wsi, LWS_CLOSE_STATUS_POLICY_VIOLATION, NULL, 0);
            return -1;
        }
        return 0;
    }
    size_t left = f->b.len - p->sent;
    size_t chunk = left > WRITE_CHUNK ? WRITE_CHUNK : left;
    int flags = lws_write_ws_flags(LWS_WRITE_TEXT, p->sent == 0, chunk == left);
    /* lws may use the LWS_PRE bytes before the chunk: headroom for the first
     * chunk, already-sent bytes for the later ones. */
    unsigned char *at = (unsigned char *)buf_data(&f->b) + p->sent;
    if (lws_write(p->wsi, at, chunk, (enum lws_write_protocol)flags) < 0)
        return -1;
    p->sent += chunk;
    if (p->sent == f->b.len) {
        p->q_head = f->next;
        if (!p->q_head)
            p->q_tail = NULL;
        p->q_bytes -= f->b.len;
        p->sent = 0;
        buf_free(&f->b);
        free(f);
    }
    if (p->rx_paused && p->q_bytes < QUEUE_LOW) {
        lws_rx_flow_control(p->wsi, 1);
        p->rx_paused = false;
    }
    if (p->q_head || p->ss.closing)
        lws_callback_on_writable(p->wsi);
    return 0;
}

/* ---------------------------------------------------------------- sessions */

static void auth_timer_update(struct pss *p)
{
    if (p->ss.authed && p->auth_timer) {
        lws_set_timeout(p->wsi, NO_PENDING_TIMEOUT, 0);
        p->auth_timer = false;
    } else if (!p->ss.authed && !p->auth_timer) {
        lws_set_timeout(p->wsi, PENDING_TIMEOUT_USER_OK,
                        srv.app.cfg->auth_timeout_s);
        p->auth_timer = true;
    }
}

static void on_message(struct pss *p)
{
    const char *text = buf_data(&p->rx);
    size_t len = p->rx.len;
    if (p->rx_binary) { /* JSON header, '\n', then raw data we do not use */
        const char *nl = memchr(text, '\n', len);
        if (nl)
            len = (size_t)(nl - text);
    }
    if (!p->ss.closing)
        dap__handle_message(&srv.app, &p->ss, text, len, enqueue, p);
    if (p->rx.cap > WRITE_CHUNK)
        buf_free(&p->rx); /* do not keep a 16 MiB buffer per idle client */
    else
        buf_reset(&p->rx);
    auth_timer_update(p);
}

static void revoke_poll(lws_sorted_usec_list_t *sul)
{
    int64_t v;
    if (store_data_version(srv.app.store, &v) == 0 && v != srv.data_version) {
        srv.data_version = v;
        for (struct pss *p = srv.sessions; p; p = p->next)
            dap__session_recheck(&srv.app, &p->ss);
    }
    lws_sul_schedule(srv.ctx, 0, &srv.sul_revoke, revoke_poll, REVOKE_POLL_US);
}

/* ---------------------------------------------------------------- callback */

static int http_not_found(struct lws *wsi)
{
    if (lws_return_http_status(wsi, HTTP_STATUS_NOT_FOUND, NULL))
        return -1;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason,
                    void *user, void *in, size_t len)
{
    struct pss *p = user;

    switch (reason) {
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION: {
        char uri[256];
        if (lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI) < 0 ||
            strcmp(uri, srv.app.cfg->ws_path) != 0)
            return 1; /* refuse the upgrade */
        return 0;
    }
    case LWS_CALLBACK_ESTABLISHED:
        memset(p, 0, sizeof *p);
        p->wsi = wsi;
        p->live = true;
        buf_init(&p->rx, 0);
        p->next = srv.sessions;
        if (srv.sessions)
            srv.sessions->prev = p;
        srv.sessions = p;
        auth_timer_update(p);
        break;

    case LWS_CALLBACK_RECEIVE:
        if (lws_is_first_fragment(wsi)) {
            buf_reset(&p->rx);
            p->rx_binary = lws_frame_is_binary(wsi);
        }
        if (p->rx.len + len > srv.app.cfg->max_message) {
            lws_close_reason(wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE,
                             (unsigned char *)"message too large", 17);
            log_warn("closing a connection: message over %zu bytes",
                     srv.app.cfg->max_message);
            return -1;
        }
        buf_append(&p->rx, in, len);
        if (lws_is_final_fragment(wsi) && !lws_remaining_packet_payload(wsi))
            on_message(p);
        break;

    case LWS_CALLBACK_SERVER_WRITEABLE:
        return write_some(p);

    case LWS_CALLBACK_CLOSED:
        if (!p->live)
            break;
        if (p->prev)
            p->prev->next = p->next;
        else
            srv.sessions = p->next;
        if (p->next)
            p->next->prev = p->prev;
        queue_free(p);
        buf_free(&p->rx);
        p->live = false;
        p->wsi = NULL;
        break;

    case LWS_CALLBACK_HTTP:
        return http_not_found(wsi);

    default:
        break;
    }
    return 0;
}

static const struct lws_protocols protocols[] = {
    {"rrdeploy-dap", callback, sizeof(struct pss), 64 * 1024, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* ---------------------------------------------------------------- lifecycle */

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
    if (srv.ctx)
        lws_cancel_service(srv.ctx);
}

static void lws_log_emit(int level, const char *line)
{
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    log_msg(level == LLL_ERR ? LOG_ERROR : LOG_WARN, "lws: %.*s", (int)n, line);
}

void dap_config_defaults(struct dap_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->listen_host = "127.0.0.1";
    cfg->port = DAP_DEFAULT_PORT;
    cfg->ws_path = DAP_DEFAULT_PATH;
    cfg->default_zone = "UTC";
    cfg->auth_timeout_s = 30;
    cfg->max_message = 16u * 1024 * 1024;
    cfg->max_pipeline = 1024u * 1024;
    cfg->max_depth = 64;
    cfg->max_deployments = 10000;
}

int dap_serve(const struct dap_config *cfg, struct store *st)
{
    memset(&srv, 0, sizeof srv);
    srv.app.cfg = cfg;
    srv.app.store = st;
    srv.app.now = clock_real;
    srv.app.started_at = time_now_real();
    if (store_data_version(st, &srv.data_version) != 0)
        return RR_E_IO;

    lws_set_log_level(LLL_ERR | LLL_WARN, lws_log_emit);

    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = cfg->port; /* 0: the kernel picks; read back below */
    info.iface = cfg->listen_host;
    info.protocols = protocols;
    info.options = LWS_SERVER_OPTION_DISABLE_IPV6;
    if (strchr(cfg->listen_host, ':'))
        info.options = 0;
    static const lws_retry_bo_t keepalive = {
        .secs_since_valid_ping = 30,
        .secs_since_valid_hangup = 90,
    };
    info.retry_and_idle_policy = &keepalive;

    srv.ctx = lws_create_context(&info);
    if (!srv.ctx) {
        log_error("cannot listen on %s:%d", cfg->listen_host, cfg->port);
        return RR_E_IO;
    }
    struct lws_vhost *vh = lws_get_vhost_by_name(srv.ctx, "default");
    int port = vh ? lws_get_vhost_listen_port(vh) : cfg->port;
    log_info("listening on ws://%s:%d%s", cfg->listen_host, port, cfg->ws_path);
    if (cfg->port_file) {
        FILE *f = fopen(cfg->port_file, "w");
        if (!f || fprintf(f, "%d\n", port) < 0 || fclose(f) != 0) {
            log_error("cannot write port file %s", cfg->port_file);
            lws_context_destroy(srv.ctx);
            return RR_E_IO;
        }
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    lws_sul_schedule(srv.ctx, 0, &srv.sul_revoke, revoke_poll, REVOKE_POLL_US);
    while (!stop_requested)
        if (lws_service(srv.ctx, 0) < 0)
            break;

    log_info("stopping");
    lws_sul_cancel(&srv.sul_revoke);
    lws_context_destroy(srv.ctx);
    srv.ctx = NULL;
    return 0;
}
