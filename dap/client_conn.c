/* client_conn.c -- what the two DAP clients share about one connection: the
 * blocking client of the command line (client.c) and the asynchronous one of
 * the engine executor (upstream.c) do each of these things one way.
 *
 * Design: a request is built straight into an LWS_PRE-padded buffer and waits
 * in a FIFO until the connection is writeable; once written, its text is
 * wiped (an auth carries a key). Incoming fragments are assembled into one
 * message, bounded in size, checked to be one JSON object and decoded into a
 * struct dap_msg: the envelope is read with util/jraw in one walk, so the
 * body keeps its exact text. Failures are told in one line of words: the
 * close frame's code and reason, lws's text for a failed connect, or -- when
 * lws only says "Unable to connect" -- what one plain TCP connect to the
 * same address finds.
 * Thread: no state of its own; each call on the thread that owns the
 * connection it is given. */
#include "dap/dap_internal.h"

#include <errno.h>
#include <libwebsockets.h>
#include <netdb.h>
#include <poll.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_DEPTH 512   /* JSON nesting we accept from the server */

/* ---------------------------------------------------------------- messages */

void dap_msg_free(struct dap_msg *m)
{
    if (!m)
        return;
    free(m->text);
    free(m->event);
    free(m->message);
    free(m->code);
    free(m);
}

/* The decoded value of v if it is a JSON string, else NULL. Owned (free()). */
static char *span_string(struct jraw_span v)
{
    if (!v.p)
        return NULL;
    struct buf b;
    buf_init(&b, 0);
    if (!jraw_str(&b, v)) {
        buf_free(&b);
        return NULL;
    }
    return buf_take(&b, NULL);
}

static bool span_is(struct jraw_span v, const char *raw)
{
    return v.p && v.n == strlen(raw) && memcmp(v.p, raw, v.n) == 0;
}

/* v is a JSON integer: its value in *out. */
static bool span_int(struct jraw_span v, int64_t *out)
{
    char num[32];
    if (!v.p || v.n == 0 || v.n >= sizeof num)
        return false;
    memcpy(num, v.p, v.n);
    num[v.n] = '\0';
    char *end;
    errno = 0;
    long long n = strtoll(num, &end, 10);
    if (errno || *end)
        return false;
    *out = n;
    return true;
}

enum { F_TYPE, F_REQUEST_SEQ, F_SUCCESS, F_MESSAGE, F_CODE, F_EVENT, F_BODY, NF };
static const char *const msg_keys[NF] = {"type", "request_seq", "success",
                                         "message", "code", "event", "body"};

int dap__msg_parse(char *text, size_t len, struct dap_msg **out,
                   char why[DAP_WHY_MAX])
{
    struct err e = {0};
    struct jraw_span f[NF];
    *out = NULL;
    if (jraw_check(text, len, MAX_DEPTH, &e) != 0 ||
        !jraw_members(text, len, msg_keys, NF, f)) {
        free(text);
        snprintf(why, DAP_WHY_MAX, "the server sent invalid JSON%s%.180s",
                 e.msg[0] ? ": " : "", e.msg[0] ? e.msg : " (not an object)");
        return -EPROTO;
    }
    struct dap_msg *m = xcalloc(1, sizeof *m);
    m->text = text;
    m->len = len;
    if (span_is(f[F_TYPE], "\"event\"")) {
        m->is_event = true;
        m->event = span_string(f[F_EVENT]);
    } else if (span_is(f[F_TYPE], "\"response\"") &&
               span_int(f[F_REQUEST_SEQ], &m->request_seq)) {
        /* as in the SDKs, a response without `success` succeeded */
        m->success = !span_is(f[F_SUCCESS], "false");
        m->message = span_string(f[F_MESSAGE]);
        m->code = span_string(f[F_CODE]);
    } else {
        dap_msg_free(m); /* neither: dropped, as the SDKs do */
        return 0;
    }
    if (f[F_BODY].p)
        m->body = f[F_BODY];
    *out = m;
    return 0;
}

/* ---------------------------------------------------------------- incoming */

int dap__rx_add(struct buf *rx, struct lws *wsi, const void *in, size_t len,
                size_t max, char **text, size_t *n, char why[DAP_WHY_MAX])
{
    if (lws_is_first_fragment(wsi))
        buf_reset(rx);
    if (rx->len + len > max) {
        snprintf(why, DAP_WHY_MAX, "the server sent a message over %zu bytes",
                 max);
        buf_free(rx);
        return -1;
    }
    buf_append(rx, in, len);
    if (!lws_is_final_fragment(wsi) || lws_remaining_packet_payload(wsi))
        return 0;
    *text = buf_take(rx, n);
    return 1;
}

void dap__close_why(const void *in, size_t len, char why[DAP_WHY_MAX])
{
    if (len < 2) {
        snprintf(why, DAP_WHY_MAX, "the server closed the connection");
        return;
    }
    const unsigned char *p = in;
    unsigned code = (unsigned)p[0] << 8 | p[1];
    int rn = (int)(len - 2 > 120 ? 120 : len - 2);
    snprintf(why, DAP_WHY_MAX, "the server closed the connection (%u%s%.*s)",
             code, rn ? ": " : "", rn, (const char *)in + 2);
}

/* ---------------------------------------------------------------- outgoing */

struct dap_out {
    struct dap_out *next;
    struct buf b;   /* owned; DAP_FRAME_HEAD (>= LWS_PRE) headroom */
};

_Static_assert(DAP_FRAME_HEAD >= LWS_PRE, "frame headroom too small for lws");

static void out_free(struct dap_out *o)
{
    if (o->b.mem)
        sodium_memzero(o->b.mem, o->b.head + o->b.cap);
    buf_free(&o->b);
    free(o);
}

void dap__outq_request(struct dap_outq *q, int64_t seq, const char *command,
                       const char *args, size_t args_len)
{
    struct dap_out *o = xcalloc(1, sizeof *o);
    buf_init(&o->b, DAP_FRAME_HEAD);
    /* room for it all up front: a reallocation would leave a copy of the
     * text (perhaps a key) behind, unwiped */
    buf_reserve(&o->b, 96 + strlen(command) * 6 + (args ? args_len : 2));
    buf_puts(&o->b, "{\"type\":\"request\",\"seq\":");
    buf_i64(&o->b, seq);
    buf_puts(&o->b, ",\"command\":");
    buf_json_cstr(&o->b, command);
    buf_puts(&o->b, ",\"arguments\":");
    if (args)
        buf_append(&o->b, args, args_len);
    else
        buf_puts(&o->b, "{}");
    buf_putc(&o->b, '}');
    if (q->tail)
        q->tail->next = o;
    else
        q->head = o;
    q->tail = o;
}

int dap__outq_write(struct dap_outq *q, struct lws *wsi, char why[DAP_WHY_MAX])
{
    struct dap_out *o = q->head;
    if (!o)
        return 0;
    int n = lws_write(wsi, (unsigned char *)buf_data(&o->b), o->b.len,
                      LWS_WRITE_TEXT);
    if (n < 0 || (size_t)n < o->b.len) {
        snprintf(why, DAP_WHY_MAX, "cannot write to the connection");
        return -1;
    }
    q->head = o->next;
    if (!q->head)
        q->tail = NULL;
    out_free(o);
    if (q->head)
        lws_callback_on_writable(wsi);
    return 0;
}

void dap__outq_clear(struct dap_outq *q)
{
    while (q->head) {
        struct dap_out *o = q->head;
        q->head = o->next;
        out_free(o);
    }
    q->tail = NULL;
}

/* ---------------------------------------------------------------- connecting */

void dap__connect_info(struct lws_client_connect_info *ci,
                       struct lws_context *ctx, const struct dap_url *u,
                       const char *local_protocol)
{
    /* as the SDKs do: ping every 15 s, give up after 60 s without a pong */
    static const lws_retry_bo_t keepalive = {
        .secs_since_valid_ping = 15,
        .secs_since_valid_hangup = 60,
    };
    memset(ci, 0, sizeof *ci);
    ci->context = ctx;
    ci->address = u->host;
    ci->port = u->port;
    ci->path = u->path;
    ci->host = u->host;
    /* the system's CA store (lws loads it), verification on */
    ci->ssl_connection = u->tls ? LCCSCF_USE_SSL : 0;
    ci->protocol = NULL;   /* no Sec-WebSocket-Protocol, as the SDKs */
    ci->local_protocol_name = local_protocol;
    ci->retry_and_idle_policy = &keepalive;
}

/* One plain TCP connect to u, waiting until until_ms at most: the errno it
 * ends with (0 when it connects). */
static int probe(const struct dap_url *u, int64_t until_ms, char why[DAP_WHY_MAX])
{
    char port[16];
    snprintf(port, sizeof port, "%d", u->port);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    int g = getaddrinfo(u->host, port, &hints, &res);
    if (g != 0) {
        snprintf(why, DAP_WHY_MAX, "cannot resolve host '%.100s': %s", u->host,
                 gai_strerror(g));
        return -1;
    }
    int err = 0;
    int fd = socket(res->ai_family, res->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    res->ai_protocol);
    if (fd < 0) {
        err = errno;
    } else if (connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
        err = errno;
        if (err == EINPROGRESS) {
            struct pollfd pfd = {fd, POLLOUT, 0};
            int64_t left = until_ms - time_now_mono_ms();
            int n = poll(&pfd, 1, left > 0 ? (int)left : 0);
            socklen_t sl = sizeof err;
            if (n <= 0)
                err = ETIMEDOUT;
            else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl) != 0)
                err = errno;
        }
    }
    if (fd >= 0)
        close(fd);
    freeaddrinfo(res);
    return err;
}

void dap__connect_failed_why(const struct dap_url *u, const char *in,
                             int64_t until_ms, char why[DAP_WHY_MAX])
{
    snprintf(why, DAP_WHY_MAX, "%s%s",
             in && strncmp(in, "HS:", 3) == 0 ? "WebSocket handshake failed: " : "",
             in && *in ? in : "connection failed");
    /* lws 4.1 says "Unable to connect" for every failed TCP connect (or
     * fails lws_client_connect_via_info() with no reason at all): find the
     * real reason and say it in words. If the probe connects, the problem
     * was past TCP and lws's own text stays. */
    if (strcmp(why, "Unable to connect") != 0 &&
        strcmp(why, "connection failed") != 0)
        return;
    int err = probe(u, until_ms, why);
    if (err == ECONNREFUSED || err == EHOSTUNREACH || err == ENETUNREACH ||
        err == ETIMEDOUT || err == EADDRNOTAVAIL) {
        snprintf(why, DAP_WHY_MAX, "%s", strerror(err));
        if (why[0] >= 'A' && why[0] <= 'Z')
            why[0] = (char)(why[0] + ('a' - 'A'));
    }
}
