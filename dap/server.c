/* server.c -- the libwebsockets side of the DAP server.
 *
 * Design: one lws context with one protocol that takes both the WebSocket
 * upgrade at cfg->ws_path (no subprotocol, no extensions) and plain HTTP
 * (/healthz, /metrics). lws joins the daemon's libuv loop (epoll: a turn
 * costs what is ready, not a poll() over every connection). A new session
 * passes the guard (guard.c: unauthenticated connections per address).
 * Incoming fragments are assembled into one message (bounded by
 * cfg->max_message, or cfg->max_message_unauth before authentication; past
 * it the socket is closed with 1009) and kept until the end of the loop turn
 * (the service pass), when a uv_check handle handles every message of the
 * pass in one store transaction (process_ready); the message layer (msg.c)
 * emits response frames into a per-session queue. Once the transaction has
 * committed, the first chunk is written at once and the rest from WRITEABLE
 * callbacks, chunk by chunk, so one huge response never monopolises the
 * loop. A session whose queue grows past a high-water mark stops being read
 * until it drains: a client that never reads cannot make the server buffer
 * without bound.
 *
 * The request path allocates nothing of its own in the steady state:
 * message buffers and frame structs come from bounded spare lists on the
 * server, and pipelined replies are framed into one send buffer the server
 * keeps (write_coalesced). What is left per request is the message layer's
 * own (the reply's buffer).
 *
 * An auth that waits for the RocketRide engine's verdict (msg.c/cmd.c)
 * holds its session: the connection is not read (rx_flow_apply) and its
 * messages after the auth stay queued. dap_server_identified, or the wait
 * timer at the wait's deadline, gives the session its verdict and puts it
 * back on the ready list; a uv_idle handle (kick) keeps the loop from
 * blocking in poll before the end of that pass, where the auth is answered
 * like any request, then the queued messages in order, then reading
 * resumes. The unauthenticated timeout is stopped meanwhile.
 *
 * The daemon (runner/) owns the loop, the timers and the scheduler; it hears
 * of the end of every pass that wrote through env->pass_done, and tells the server of
 * key changes and scheduler events (dap_server_keys_changed,
 * dap_server_event).
 * Thread: everything runs on the loop's thread. */
#include "dap/dap_internal.h"

#include <libwebsockets.h>
#include <math.h>
#include <stddef.h>
#include <sanitizer/asan_interface.h> /* no-ops without AddressSanitizer */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <uv.h>


_Static_assert(DAP_FRAME_HEAD >= LWS_PRE, "frame headroom too small for lws");

#define WRITE_CHUNK (64 * 1024)          /* bytes written per WRITEABLE */
#define COALESCE_FRAME_MAX (16 * 1024)   /* replies shorter than this may share a send */
#define QUEUE_HIGH (4u * 1024 * 1024)    /* stop reading above this */
#define QUEUE_LOW (1u * 1024 * 1024)     /* resume reading below this */
#define SPARE_FRAMES_MAX 4096            /* frame structs kept for reuse */
#define SPARE_MSG_BYTES (1024 * 1024)    /* message buffers kept for reuse */
#define SPARE_MSG_BUF_MAX (64 * 1024)    /* ... each no larger than this */

struct frame {
    struct frame *next;
    struct buf b; /* owned; DAP_FRAME_HEAD headroom; empty while spare */
};

/* A client message: being received (pss.rx), complete and waiting for the
 * end of the service pass (pss.in_head), or spare (dap_server.spare_msgs),
 * its buffer's memory kept for the next message. */
struct inmsg {
    struct inmsg *next;
    struct buf text; /* owned */
    bool binary;
};

/* Per-connection state; lws allocates it zeroed and frees it after CLOSED. */
struct pss {
    struct dap_session ss;
    struct dap_server *srv;    /* borrowed: the server it belongs to */
    struct lws *wsi;           /* valid until LWS_CALLBACK_CLOSED */
    struct pss *prev, *next;   /* in server.sessions */
    struct inmsg *rx;          /* owned: the message being assembled, or
                                  NULL between messages */
    struct frame *q_head, *q_tail;
    size_t q_bytes;            /* memory queued (frame_cost), for flow control */
    size_t sent;               /* bytes of q_head already written */
    bool rx_paused;            /* its queue is over the high-water mark */
    bool rx_off;               /* lws reads it not (rx_flow_apply) */
    bool auth_timer;           /* the unauthenticated timeout is armed */
    bool close_sent;           /* the closing handshake has been started */
    bool close_failed;         /* ... because the server failed (1011), not the
                                  client (1008) */
    struct buf http;           /* HTTP connections: the response body */
    size_t http_sent;
    struct inmsg *in_head, *in_tail; /* owned: messages not handled yet */
    struct pss *ready_next;    /* in server.ready while it has messages */
    bool ready;
    bool in_pass;              /* its messages are being handled (process_ready) */
    struct frame *q_mark;      /* the queue's tail before this pass's replies */
    bool live;                 /* ESTABLISHED seen, not yet CLOSED */
    struct dap_guard_conn unauth; /* counts it in the guard while it is not
                                     authenticated */
    bool refused;              /* over its address's cap: closing at once */
    const char *close_text;    /* static: the reason sent with the Close frame */
};

struct dap_server {
    struct dap_app app;
    const struct dap_env *env; /* borrowed */
    uv_check_t pass_end;       /* runs after each turn's I/O: process_ready */
    bool pass_end_open;
    uv_timer_t guard_timer;    /* the guard's next log summary */
    bool guard_timer_open;
    uv_idle_t kick;            /* active while sessions were made ready
                                  outside I/O: the loop then does not block
                                  before the end of its pass */
    bool kick_open;
    uv_timer_t wait_timer;     /* the earliest deadline of an auth waiting
                                  for the engine */
    bool wait_timer_open;
    int64_t wait_due_ms;       /* when it is due (monotonic); 0: not armed */
    struct lws_context *ctx;
    struct pss *sessions;      /* live WebSocket sessions */
    struct pss *ready;         /* sessions with messages waiting */
    /* Reused from one request to the next, so that the request path does
     * not call malloc: message buffers, frame structs (both bounded), and
     * the buffer coalesced replies are framed into. */
    struct inmsg *spare_msgs;
    size_t spare_msg_bytes;    /* what they hold (msg_cost) */
    struct frame *spare_frames;
    size_t nspare_frames;
    struct buf send;           /* write_coalesced's; LWS_PRE headroom */
    int port;                  /* the port it listens on */
#ifdef RRDEPLOY_TEST_HOOKS
    struct test_check {        /* rrtest_engine: the checks it was asked */
        uint64_t ticket;
        char *key;             /* owned */
    } test_checks[64];
    size_t ntest_checks;
    uint64_t test_asked;       /* checks asked since start */
    bool test_engine_down;     /* identify fails */
#endif
};

/* ---------------------------------------------------------------- spares
 *
 * Every request takes a message buffer and every reply a frame struct; a
 * busy server would otherwise malloc and free them by the thousand per
 * second. Spares are kept on the server (the loop's thread only), LIFO so
 * the next request gets memory still in cache, and bounded: what is over
 * the bound, and any message buffer grown past SPARE_MSG_BUF_MAX by a big
 * request, is freed, so a burst leaves no lasting memory behind. */

/* Under AddressSanitizer a spare is poisoned but for its link, so a use of
 * a frame or message after it was handed back is still reported, as a use
 * after free would be without the spare lists. */
static void frame_poison(struct frame *f, bool spare)
{
    if (spare)
        ASAN_POISON_MEMORY_REGION(&f->b, sizeof f->b);
    else
        ASAN_UNPOISON_MEMORY_REGION(&f->b, sizeof f->b);
}

static void msg_poison(struct inmsg *m, bool spare)
{
    if (spare) {
        if (m->text.mem)
            ASAN_POISON_MEMORY_REGION(m->text.mem, m->text.head + m->text.cap);
        ASAN_POISON_MEMORY_REGION(&m->text, sizeof *m - offsetof(struct inmsg, text));
    } else {
        ASAN_UNPOISON_MEMORY_REGION(&m->text, sizeof *m - offsetof(struct inmsg, text));
        if (m->text.mem)
            ASAN_UNPOISON_MEMORY_REGION(m->text.mem, m->text.head + m->text.cap);
    }
}

static struct frame *frame_get(struct dap_server *srv)
{
    struct frame *f = srv->spare_frames;
    if (!f)
        return xmalloc(sizeof *f);
    srv->spare_frames = f->next;
    srv->nspare_frames--;
    frame_poison(f, false);
    return f;
}

/* f's reply is done with (sent or dropped): its memory is freed, the struct
 * kept for another reply. */
static void frame_put(struct dap_server *srv, struct frame *f)
{
    buf_free(&f->b);
    if (srv->nspare_frames >= SPARE_FRAMES_MAX) {
        free(f);
        return;
    }
    f->next = srv->spare_frames;
    srv->spare_frames = f;
    srv->nspare_frames++;
    frame_poison(f, true);
}

/* What a spare message holds on to, for the bound. */
static size_t msg_cost(const struct inmsg *m)
{
    return sizeof *m + m->text.cap;
}

/* An empty message to receive into, with a spare's buffer if any. */
static struct inmsg *msg_get(struct dap_server *srv)
{
    struct inmsg *m = srv->spare_msgs;
    if (m) {
        msg_poison(m, false);
        srv->spare_msgs = m->next;
        srv->spare_msg_bytes -= msg_cost(m);
        buf_reset(&m->text);
    } else {
        m = xmalloc(sizeof *m);
        buf_init(&m->text, 0);
    }
    m->next = NULL;
    m->binary = false;
    return m;
}

/* m is handled (or its session gone): keep it and its buffer for the next
 * message, unless that would hold on to more than the bound. */
static void msg_put(struct dap_server *srv, struct inmsg *m)
{
    if (m->text.cap > SPARE_MSG_BUF_MAX ||
        srv->spare_msg_bytes + msg_cost(m) > SPARE_MSG_BYTES) {
        buf_free(&m->text);
        free(m);
        return;
    }
    srv->spare_msg_bytes += msg_cost(m);
    m->next = srv->spare_msgs;
    srv->spare_msgs = m;
    msg_poison(m, true);
}

static void spares_free(struct dap_server *srv)
{
    while (srv->spare_frames) {
        struct frame *f = srv->spare_frames;
        srv->spare_frames = f->next;
        frame_poison(f, false);
        free(f);
    }
    srv->nspare_frames = 0;
    while (srv->spare_msgs) {
        struct inmsg *m = srv->spare_msgs;
        msg_poison(m, false);
        srv->spare_msgs = m->next;
        buf_free(&m->text);
        free(m);
    }
    srv->spare_msg_bytes = 0;
    buf_free(&srv->send);
}

/* ---------------------------------------------------------------- queue */

/* What a queued frame costs in memory: its bytes and the allocations around
 * them, so a flood of tiny replies is throttled as early as a few big ones.
 * A spare frame struct (frame_put) counts for no session: spares are
 * bounded by the server. */
static size_t frame_cost(const struct frame *f)
{
    return f->b.len + sizeof *f + DAP_FRAME_HEAD + 64;
}

/* Read the connection or not: not while its queue is over the high-water
 * mark, nor while its auth waits for the engine (its next messages must be
 * handled after the auth's answer). */
static void rx_flow_apply(struct pss *p)
{
    bool off = p->rx_paused || dap__session_wait(&p->ss, NULL) != DAP_WAIT_NONE;
    if (off != p->rx_off) {
        lws_rx_flow_control(p->wsi, off ? 0 : 1);
        p->rx_off = off;
    }
}

/* Put p on the list of sessions whose messages the end of the service
 * pass handles. */
static void mark_ready(struct pss *p)
{
    if (p->ready)
        return;
    p->ready = true;
    p->ready_next = p->srv->ready;
    p->srv->ready = p;
}

static void enqueue(void *ud, struct buf *frame)
{
    struct pss *p = ud;
    struct frame *f = frame_get(p->srv);
    f->next = NULL;
    f->b = *frame; /* take the buffer's memory; the struct is the caller's
                      allocation, ours to free */
    free(frame);
    if (p->q_tail)
        p->q_tail->next = f;
    else
        p->q_head = f;
    p->q_tail = f;
    p->q_bytes += frame_cost(f);
    if (!p->rx_paused && p->q_bytes > QUEUE_HIGH) {
        p->rx_paused = true;
        rx_flow_apply(p);
    }
    if (!p->in_pass) /* otherwise the end of the pass sends it (send_now) */
        lws_callback_on_writable(p->wsi);
}

static void queue_free(struct pss *p)
{
    struct frame *f = p->q_head;
    while (f) {
        struct frame *next = f->next;
        frame_put(p->srv, f);
        f = next;
    }
    p->q_head = p->q_tail = NULL;
    p->q_bytes = 0;
}

/* The queue head is fully written: drop it. */
static void pop_frame(struct pss *p)
{
    struct frame *f = p->q_head;
    p->q_head = f->next;
    if (!p->q_head)
        p->q_tail = NULL;
    p->q_bytes -= frame_cost(f);
    p->sent = 0;
    frame_put(p->srv, f);
}

/* Several small replies queued (pipelined requests): frame them ourselves,
 * back to back in one buffer, and hand it to lws as raw bytes -- one send
 * instead of one per reply. Server frames are unmasked, so a frame is a 2 or
 * 4 byte header and the payload. The buffer is the server's, kept from one
 * send to the next (it never grows past twice WRITE_CHUNK): lws
 * copies whatever the kernel does not take at once, so it is free again as
 * soon as lws_write returns. */
static int write_coalesced(struct pss *p)
{
    struct buf *out = &p->srv->send;
    buf_reset(out);
    for (struct frame *f = p->q_head; f && f->b.len < COALESCE_FRAME_MAX &&
                                      out->len + f->b.len + 4 <= WRITE_CHUNK;
         f = p->q_head) {
        unsigned char hdr[4] = {0x81}; /* FIN, text */
        size_t hlen = 2;
        if (f->b.len < 126) {
            hdr[1] = (unsigned char)f->b.len;
        } else {
            hdr[1] = 126;
            hdr[2] = (unsigned char)(f->b.len >> 8);
            hdr[3] = (unsigned char)(f->b.len & 0xff);
            hlen = 4;
        }
        buf_append(out, hdr, hlen);
        buf_append(out, buf_data(&f->b), f->b.len);
        pop_frame(p);
    }
    int rc = lws_write(p->wsi, (unsigned char *)buf_data(out), out->len, LWS_WRITE_RAW);
    return rc < 0 ? -1 : 0;
}

/* Write the next chunk of the queue head. Returns -1 to close. */
static int write_some(struct pss *p)
{
    struct frame *f = p->q_head;
    if (!f) {
        if (p->ss.closing && !p->close_sent) {
            /* Not `return -1` here: from WRITEABLE, lws takes that for a
             * failed write and drops the socket at once, and a client with
             * requests still in flight then gets a reset that discards the
             * reply it was sent. Closing from the wsi timer callback instead
             * sends a Close frame and waits for the client's, reading (and
             * ignoring) whatever arrives meanwhile. */
            const char *why = p->close_text;
            lws_close_reason(p->wsi,
                             p->close_failed ? LWS_CLOSE_STATUS_UNEXPECTED_CONDITION
                                             : LWS_CLOSE_STATUS_POLICY_VIOLATION,
                             (unsigned char *)why, why ? strlen(why) : 0);
            lws_set_timer_usecs(p->wsi, 1);
            p->close_sent = true;
        }
        return 0;
    }
    if (p->sent == 0 && f->next && f->b.len < COALESCE_FRAME_MAX) {
        if (write_coalesced(p) < 0)
            return -1;
    } else {
        size_t left = f->b.len - p->sent;
        size_t chunk = left > WRITE_CHUNK ? WRITE_CHUNK : left;
        int flags = lws_write_ws_flags(LWS_WRITE_TEXT, p->sent == 0, chunk == left);
        /* lws may use the LWS_PRE bytes before the chunk: headroom for the
         * first chunk, already-sent bytes for the later ones. */
        unsigned char *at = (unsigned char *)buf_data(&f->b) + p->sent;
        if (lws_write(p->wsi, at, chunk, (enum lws_write_protocol)flags) < 0)
            return -1;
        p->sent += chunk;
        if (p->sent == f->b.len)
            pop_frame(p);
    }
    if (p->rx_paused && p->q_bytes < QUEUE_LOW) {
        p->rx_paused = false;
        rx_flow_apply(p);
        if (p->in_head) /* messages left waiting: the next pass */
            mark_ready(p);
    }
    if (p->q_head || (p->ss.closing && !p->close_sent))
        lws_callback_on_writable(p->wsi);
    return 0;
}

/* The replies of a pass, once committed: written at once rather than after
 * another poll() for POLLOUT, which the socket almost always has. lws allows
 * a write outside WRITEABLE as long as the previous one left nothing
 * buffered (lws_partial_buffered); what the kernel does not take, lws keeps
 * and sends when the socket drains, and the rest of the queue goes on from
 * WRITEABLE as usual. Nothing may touch p after this: a failed write marks
 * the connection to be closed. */
static void send_now(struct pss *p)
{
    if (!p->q_head && !(p->ss.closing && !p->close_sent))
        return;
    if (p->sent || lws_partial_buffered(p->wsi)) {
        lws_callback_on_writable(p->wsi); /* a write is under way */
        return;
    }
    if (write_some(p) < 0)
        lws_set_timeout(p->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

/* ---------------------------------------------------------------- sessions */

/* An unauthenticated session has cfg->auth_timeout_s to authenticate; one
 * whose auth waits for the engine is bounded by that wait instead. */
static void auth_timer_update(struct pss *p)
{
    bool due = !p->ss.authed && dap__session_wait(&p->ss, NULL) == DAP_WAIT_NONE;
    if (!due && p->auth_timer) {
        lws_set_timeout(p->wsi, NO_PENDING_TIMEOUT, 0);
        p->auth_timer = false;
    } else if (due && !p->auth_timer) {
        lws_set_timeout(p->wsi, PENDING_TIMEOUT_USER_OK,
                        p->srv->app.cfg->auth_timeout_s);
        p->auth_timer = true;
    }
}

/* Keep the guard's count of the address's unauthenticated connections
 * right: a session counts while it is not authenticated (again after a
 * deauth, even over the cap: it is open already). */
static void unauth_count_update(struct pss *p)
{
    struct dap_guard *g = p->srv->app.guard;
    bool unauth = !p->ss.authed && !p->refused;
    if (unauth && !p->unauth.gen)
        (void)dap__guard_conn_open(g, &p->ss.peer, true, time_now_mono_ms(),
                                   &p->unauth);
    else if (!unauth && p->unauth.gen)
        dap__guard_conn_close(g, &p->unauth);
}

/* A whole message arrived: keep it for the end of this service pass. */
static void on_message(struct pss *p)
{
    struct inmsg *m = p->rx;
    p->rx = NULL; /* the next message takes another (msg_get) */
    if (p->in_tail)
        p->in_tail->next = m;
    else
        p->in_head = m;
    p->in_tail = m;
    mark_ready(p);
}

static void inbox_free(struct pss *p)
{
    while (p->in_head) {
        struct inmsg *m = p->in_head;
        p->in_head = m->next;
        msg_put(p->srv, m);
    }
    p->in_tail = NULL;
    if (p->ready) { /* unlink from the ready list */
        struct pss **pp = &p->srv->ready;
        while (*pp != p)
            pp = &(*pp)->ready_next;
        *pp = p->ready_next;
        p->ready = false;
    }
}

static void handle(struct pss *p, struct inmsg *m)
{
    const char *text = buf_data(&m->text);
    size_t len = m->text.len;
    if (m->binary) { /* JSON header, '\n', then raw data we do not use */
        const char *nl = memchr(text, '\n', len);
        if (nl)
            len = (size_t)(nl - text);
    }
    if (!p->ss.closing)
        dap__handle_message(&p->srv->app, &p->ss, text, len, enqueue, p);
}

/* Drop the replies queued after p->q_mark (their writes were not kept) and
 * close the connection. */
static void drop_since_mark(struct pss *p)
{
    struct frame *f = p->q_mark ? p->q_mark->next : p->q_head;
    if (p->q_mark)
        p->q_mark->next = NULL;
    else
        p->q_head = NULL;
    p->q_tail = p->q_mark;
    while (f) {
        struct frame *next = f->next;
        p->q_bytes -= frame_cost(f);
        frame_put(p->srv, f);
        f = next;
    }
    p->ss.closing = true;
    p->close_failed = true;
    lws_callback_on_writable(p->wsi);
}

static void on_guard_timer(uv_timer_t *t);

/* The guard logs its summaries at most once an interval: when one is due
 * later, the timer wakes the loop for it. */
static void guard_tick(struct dap_server *srv)
{
    int64_t wait = dap__guard_flush(srv->app.guard, time_now_mono_ms(), false);
    if (wait >= 0 && srv->guard_timer_open &&
        !uv_is_active((uv_handle_t *)&srv->guard_timer))
        uv_timer_start(&srv->guard_timer, on_guard_timer, (uint64_t)wait, 0);
}

static void on_guard_timer(uv_timer_t *t)
{
    guard_tick(t->data);
}

static void on_kick(uv_idle_t *h)
{
    (void)h; /* only keeps the loop from blocking until process_ready */
}

/* p has something to handle though no I/O brought it (a verdict, a timer):
 * put it on the ready list and see that this loop turn reaches the end of
 * its pass (process_ready) without waiting for I/O. */
static void kick(struct dap_server *srv, struct pss *p)
{
    mark_ready(p);
    if (srv->kick_open)
        uv_idle_start(&srv->kick, on_kick);
}

static void on_wait_timer(uv_timer_t *t);

/* Wake up at deadline_ms (monotonic) at the latest, when an auth waiting
 * for the engine may be due. */
static void wait_timer_arm(struct dap_server *srv, int64_t deadline_ms)
{
    if (!srv->wait_timer_open ||
        (srv->wait_due_ms && srv->wait_due_ms <= deadline_ms))
        return;
    int64_t now = dap__mono_ms(&srv->app);
    srv->wait_due_ms = deadline_ms;
    uv_timer_start(&srv->wait_timer, on_wait_timer,
                   deadline_ms > now ? (uint64_t)(deadline_ms - now) : 0, 0);
}

/* Auths that waited for the engine past their deadline get "no answer in
 * time"; the timer is armed again for the next deadline. */
static void on_wait_timer(uv_timer_t *t)
{
    struct dap_server *srv = t->data;
    srv->wait_due_ms = 0;
    int64_t now = dap__mono_ms(&srv->app), next = 0, deadline;
    for (struct pss *p = srv->sessions; p; p = p->next) {
        if (dap__session_late(&p->ss, now))
            kick(srv, p);
        else if (dap__session_wait(&p->ss, &deadline) == DAP_WAIT_PENDING &&
                 (!next || deadline < next))
            next = deadline;
    }
    if (next)
        wait_timer_arm(srv, next);
}

/* After each service pass: every message that arrived in it, handled in one
 * store transaction (group commit: many clients' adds share one fsync, reads
 * share one read transaction). The transaction takes the write lock only at
 * the pass's first writing command (store_batch_write), so a pass of reads
 * costs no write lock. Replies are sent only after the commit (send_now);
 * runs decided meanwhile start after it. If the commit fails, the replies of
 * this pass are dropped, their connections closed (1011) and the scheduler
 * told to read back what the pass changed: nothing acknowledged is lost, and
 * nothing unacknowledged stays. */
static void process_ready(struct dap_server *srv)
{
    if (srv->kick_open)
        uv_idle_stop(&srv->kick);
    struct pss *list = srv->ready;
    if (!list)
        return;
    srv->ready = NULL;
    bool batch = store_batch_begin_read(srv->app.store) == 0;
    sched_defer_begin(srv->app.sched);
    for (struct pss *p = list; p; p = p->ready_next) {
        /* p->ready stays set during the pass: a verdict that arrives
         * meanwhile (identify answering at once) must not put p on another
         * list while this one is walked. */
        p->in_pass = true;
        p->q_mark = p->q_tail;
        /* A client that does not read its replies gets no more handled
         * than fit under the queue's high-water mark; the rest waits until
         * the queue drains (write_some puts the session back). An auth
         * waiting for the engine holds the messages behind it until its
         * answer (dap_server_identified puts the session back). */
        for (;;) {
            if (dap__session_answer(&srv->app, &p->ss, enqueue, p))
                continue;
            if (!p->in_head || p->rx_paused ||
                dap__session_wait(&p->ss, NULL) != DAP_WAIT_NONE)
                break;
            struct inmsg *m = p->in_head;
            p->in_head = m->next;
            handle(p, m);
            msg_put(srv, m);
        }
        if (!p->in_head)
            p->in_tail = NULL;
    }
    /* Only a command that writes changes deployments or their runs, and it
     * made the batch a write batch (dispatch calls store_batch_write). */
    bool wrote = !batch || !store_batch_read_only(srv->app.store);
    bool ok = !batch || store_batch_commit(srv->app.store) == 0;
    sched_defer_end(srv->app.sched, dap__now(&srv->app), ok);
    for (struct pss *p = list, *next; p; p = next) {
        next = p->ready_next;
        p->ready_next = NULL;
        p->ready = false;
        p->in_pass = false;
        auth_timer_update(p);
        unauth_count_update(p);
        rx_flow_apply(p);
        int64_t deadline;
        enum dap_wait w = dap__session_wait(&p->ss, &deadline);
        if (w == DAP_WAIT_PENDING)
            wait_timer_arm(srv, deadline);
        else if (w == DAP_WAIT_DECIDED) /* its verdict came during the pass */
            kick(srv, p);
        if (ok)
            send_now(p);
        else
            drop_since_mark(p);
    }
    if (!ok)
        log_error("could not commit the requests of this pass; their "
                  "connections are closed unanswered");
    guard_tick(srv);
    if (wrote) /* deployments may have changed: the daemon re-arms its tick */
        srv->env->pass_done(srv->env->ud);
}

/* ---------------------------------------------------------------- daemon calls */

void dap_server_keys_changed(struct dap_server *srv)
{
    for (struct pss *p = srv->sessions; p; p = p->next)
        dap__session_recheck(&srv->app, &p->ss);
}

void dap_server_identified(struct dap_server *srv, uint64_t ticket,
                           const struct dap_identity *id, bool refused,
                           const char *why)
{
    (void)dap__identified(&srv->app, ticket, id, refused, why);
    for (struct pss *p = srv->sessions; p; p = p->next)
        if (dap__session_verdict(&p->ss, ticket, id, refused, why))
            kick(srv, p);
}

void dap_server_event(struct dap_server *srv, const struct sched_event *ev)
{
    struct buf body;
    bool written = false;
    double now = dap__now(&srv->app);
    for (struct pss *p = srv->sessions; p; p = p->next) {
        if (!dap__session_wants(&p->ss, ev->user, ev->project_id, now))
            continue;
        if (!written) { /* once, for every watcher */
            buf_init(&body, 0);
            dap__write_event(&body, ev);
            written = true;
        }
        enqueue(p, dap__event_frame(&p->ss, buf_data(&body), body.len));
    }
    if (written)
        buf_free(&body);
}

void dap_server_stop_accepting(struct dap_server *srv)
{
    srv->app.stopping = true;
}

#ifdef RRDEPLOY_TEST_HOOKS
/* ---------------------------------------------------------------- test engine */

/* rrtest_engine: a stand-in for the RocketRide engine's credential checks,
 * for the integration tests of auth with an engine (test builds with a test
 * clock only). It records what it is asked and answers when told. */
static int test_identify(void *ud, const char *key, uint64_t ticket)
{
    struct dap_server *srv = ud;
    size_t cap = sizeof srv->test_checks / sizeof srv->test_checks[0];
    if (srv->test_engine_down || srv->ntest_checks == cap)
        return RR_E_IO;
    srv->test_checks[srv->ntest_checks].ticket = ticket;
    srv->test_checks[srv->ntest_checks++].key = xstrdup(key);
    srv->test_asked++;
    return 0;
}

static void test_checks_free(struct dap_server *srv)
{
    for (size_t i = 0; i < srv->ntest_checks; i++)
        free(srv->test_checks[i].key);
    srv->ntest_checks = 0;
}

int dap__test_engine(struct dap_server *srv, const json_t *args,
                     struct buf *body, struct err *e)
{
    struct dap_app *app = &srv->app;
    const json_t *jen = json_object_get(args, "enable");
    if (json_is_true(jen)) { /* a fresh engine and cache */
        const json_t *jw = json_object_get(args, "wait_ms");
        struct dap_ids_config ic;
        dap__ids_config_defaults(&ic);
        if (json_is_number(jw))
            ic.wait_ms = (int64_t)json_number_value(jw);
        dap__ids_free(app->ids);
        app->ids = dap__ids_new(&ic);
        test_checks_free(srv);
        srv->test_engine_down = false;
        app->identify = test_identify;
        app->identify_ud = srv;
    } else if (json_is_false(jen)) {
        app->identify = NULL;
    }
    const json_t *jdown = json_object_get(args, "down");
    if (json_is_boolean(jdown))
        srv->test_engine_down = json_is_true(jdown);
    const json_t *jans = json_object_get(args, "answer");
    if (jans) {
        if (!json_is_string(jans) || !app->ids)
            return err_set(e, RR_E_INVAL, "answer must name a credential asked");
        struct dap_identity id = {{0}, 0};
        const json_t *juser = json_object_get(args, "user");
        const json_t *jref = json_object_get(args, "refuse");
        const json_t *junr = json_object_get(args, "unreachable");
        if (json_is_string(juser)) {
            snprintf(id.user, sizeof id.user, "%s", json_string_value(juser));
            id.perms = (unsigned)json_number_value(json_object_get(args, "perms"));
        }
        /* answer every check of that credential, oldest first */
        size_t i = 0;
        while (i < srv->ntest_checks) {
            struct test_check c = srv->test_checks[i];
            if (strcmp(c.key, json_string_value(jans)) != 0) {
                i++;
                continue;
            }
            memmove(&srv->test_checks[i], &srv->test_checks[i + 1],
                    (srv->ntest_checks - i - 1) * sizeof c);
            srv->ntest_checks--;
            dap_server_identified(srv, c.ticket, json_is_string(juser) ? &id : NULL,
                                  json_is_string(jref),
                                  json_is_string(jref) ? json_string_value(jref)
                                  : json_string_value(junr));
            free(c.key);
        }
    }
    int waiting = 0; /* sessions whose auth waits for a verdict */
    for (struct pss *p = srv->sessions; p; p = p->next)
        waiting += dap__session_wait(&p->ss, NULL) == DAP_WAIT_PENDING;
    buf_printf(body, "{\"asked\":%llu,\"waiting\":%d,\"pending\":[",
               (unsigned long long)srv->test_asked, waiting);
    for (size_t i = 0; i < srv->ntest_checks; i++) {
        if (i)
            buf_putc(body, ',');
        buf_json_cstr(body, srv->test_checks[i].key);
    }
    buf_puts(body, "]}");
    return 0;
}
#endif

/* ---------------------------------------------------------------- HTTP */

static void health_body(struct dap_server *srv, struct buf *b, int *status)
{
    struct err e = {0};
    int rc = store_health(srv->app.store, &e);
    *status = rc == 0 ? HTTP_STATUS_OK : HTTP_STATUS_SERVICE_UNAVAILABLE;
    if (rc)
        log_error("health check: %s", e.msg);
    uint64_t deps[3];
    sched_count_states(srv->app.sched, deps);
    struct dap_engine_state eng;
    if (srv->env->engine_state)
        srv->env->engine_state(srv->env->ud, &eng);
    struct dap_health h = {
        .engine = srv->env->engine_state ? &eng : NULL,
        .db_error = rc ? e.msg : NULL,
        .uptime_s = time_now_real() - srv->app.started_at,
        .deployments = deps[0] + deps[1] + deps[2],
        .runs_in_progress = srv->env->runs_in_progress(srv->env->ud),
        .stopping = srv->app.stopping,
    };
    dap__write_health(b, &h);
}

static void metrics_body(struct dap_server *srv, struct buf *b)
{
    struct dap_gauges g = {.executor = srv->env->executor};
    struct dap_engine_state eng;
    if (srv->env->engine_state) {
        srv->env->engine_state(srv->env->ud, &eng);
        g.engine = &eng;
    }
    for (struct pss *p = srv->sessions; p; p = p->next) {
        g.connections++;
        g.unauthenticated += p->unauth.gen != 0;
    }
    g.runs_in_progress = (uint64_t)srv->env->runs_in_progress(srv->env->ud);
    sched_count_states(srv->app.sched, g.deployments);
    dap__metrics_render(b, &srv->app, &g);
}

/* Start an HTTP response; the body is written from HTTP_WRITEABLE. */
static int http_respond(struct lws *wsi, struct pss *p, unsigned status,
                        const char *ctype)
{
    unsigned char hdr[LWS_PRE + 512];
    unsigned char *start = hdr + LWS_PRE, *ptr = start, *end = hdr + sizeof hdr - 1;
    if (lws_add_http_common_headers(wsi, status, ctype, p->http.len, &ptr, end) ||
        lws_finalize_write_http_header(wsi, start, &ptr, end))
        return -1;
    p->http_sent = 0;
    lws_callback_on_writable(wsi);
    return 0;
}

static int on_http(struct dap_server *srv, struct lws *wsi, struct pss *p,
                   const char *uri)
{
    buf_init(&p->http, LWS_PRE);
    if (lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) <= 0) {
        buf_puts(&p->http, "only GET is supported\n");
        return http_respond(wsi, p, HTTP_STATUS_METHOD_NOT_ALLOWED, "text/plain");
    }
    if (strcmp(uri, "/healthz") == 0) {
        int status;
        health_body(srv, &p->http, &status);
        return http_respond(wsi, p, (unsigned)status, "application/json");
    }
    if (strcmp(uri, "/metrics") == 0) {
        metrics_body(srv, &p->http);
        return http_respond(wsi, p, HTTP_STATUS_OK,
                            "text/plain; version=0.0.4; charset=utf-8");
    }
    buf_puts(&p->http, "not found\n");
    return http_respond(wsi, p, HTTP_STATUS_NOT_FOUND, "text/plain");
}

static int http_write(struct lws *wsi, struct pss *p)
{
    size_t left = p->http.len - p->http_sent;
    size_t chunk = left > WRITE_CHUNK ? WRITE_CHUNK : left;
    if (chunk) {
        unsigned char *at = (unsigned char *)buf_data(&p->http) + p->http_sent;
        if (lws_write(wsi, at, chunk, chunk == left ? LWS_WRITE_HTTP_FINAL
                                                    : LWS_WRITE_HTTP) < 0)
            return -1;
        p->http_sent += chunk;
    }
    if (p->http_sent < p->http.len) {
        lws_callback_on_writable(wsi);
        return 0;
    }
    buf_free(&p->http);
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* ---------------------------------------------------------------- callback */

/* Would len more bytes (and the rest of their frame, which the frame header
 * announced) take the message being received past the session's limit?
 * Then close 1009 now, before buffering any of it. Before authentication the
 * limit is small, unless an earlier message (its auth, say) still waits to
 * be handled in this pass: a client may authenticate and send a big request
 * right behind, and the request is judged once the auth is. */
static bool rx_over_limit(struct pss *p, struct lws *wsi, size_t len)
{
    struct dap_server *srv = p->srv;
    const struct dap_config *cfg = srv->app.cfg;
    bool unauth = !p->ss.authed && !p->in_head &&
                  dap__session_wait(&p->ss, NULL) == DAP_WAIT_NONE;
    size_t limit = unauth ? cfg->max_message_unauth : cfg->max_message;
    size_t incoming = len + lws_remaining_packet_payload(wsi);
    if (p->rx->text.len + incoming <= limit)
        return false;
    lws_close_reason(wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE,
                     (unsigned char *)"message too large", 17);
    srv->app.metrics.messages_too_large++;
    if (unauth) {
        char what[128];
        snprintf(what, sizeof what, "unauthenticated connection closed: "
                 "message over %zu bytes", limit);
        dap__guard_note(srv->app.guard, &p->ss.peer, DAP_GUARD_TOO_LARGE,
                        time_now_mono_ms(), what);
        guard_tick(srv);
    } else {
        log_warn("closing a connection: message over %zu bytes", limit);
    }
    return true;
}

/* A new session counts against its address's unauthenticated connections;
 * over the cap it is closed at once: 1008 with the reason in the Close
 * frame (the upgrade has happened, so the client can read why). */
static void admit(struct pss *p)
{
    struct dap_server *srv = p->srv;
    if (dap__guard_conn_open(srv->app.guard, &p->ss.peer, false,
                             time_now_mono_ms(), &p->unauth) == 0)
        return;
    p->refused = true;
    p->ss.closing = true;
    p->close_text = "too many unauthenticated connections from this address";
    lws_callback_on_writable(p->wsi);
    guard_tick(srv);
}

/* The address of the client on the other end of wsi. */
static void peer_address(struct lws *wsi, struct dap_addr *out)
{
    struct sockaddr_storage sa;
    socklen_t n = sizeof sa;
    int fd = lws_get_socket_fd(wsi);
    if (fd < 0 || getpeername(fd, (struct sockaddr *)&sa, &n) != 0)
        dap__addr_from_sockaddr(out, NULL);
    else
        dap__addr_from_sockaddr(out, (struct sockaddr *)&sa);
}

/* A WebSocket session begins: its state, its place in the list, the auth
 * timer and the guard's say. */
static void session_open(struct dap_server *srv, struct lws *wsi, struct pss *p)
{
    memset(p, 0, sizeof *p);
    p->srv = srv;
    p->wsi = wsi;
    p->live = true;
    peer_address(wsi, &p->ss.peer);
    srv->app.metrics.connections_total++;
    p->next = srv->sessions;
    if (srv->sessions)
        srv->sessions->prev = p;
    srv->sessions = p;
    auth_timer_update(p);
    admit(p);
}

/* The session is over: free what it owns; p->wsi is gone after this. */
static void session_close(struct dap_server *srv, struct pss *p)
{
    if (p->prev)
        p->prev->next = p->next;
    else
        srv->sessions = p->next;
    if (p->next)
        p->next->prev = p->prev;
    inbox_free(p);
    queue_free(p);
    if (p->rx) {
        msg_put(srv, p->rx);
        p->rx = NULL;
    }
    dap__session_clear(&p->ss);
    dap__guard_conn_close(srv->app.guard, &p->unauth);
    p->live = false;
    p->wsi = NULL;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason,
                    void *user, void *in, size_t len)
{
    struct pss *p = user;
    struct lws_context *ctx = lws_get_context(wsi);
    struct dap_server *srv = ctx ? lws_context_user(ctx) : NULL;

    switch (reason) {
    case LWS_CALLBACK_FILTER_NETWORK_CONNECTION:
        return srv->app.stopping ? 1 : 0; /* shutting down: take no new sockets */

    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION: {
        char uri[256];
        if (lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI) < 0 ||
            strcmp(uri, srv->app.cfg->ws_path) != 0)
            return 1; /* refuse the upgrade */
        return 0;
    }
    case LWS_CALLBACK_ESTABLISHED:
        session_open(srv, wsi, p);
        break;

    case LWS_CALLBACK_RECEIVE:
        if (p->ss.closing)
            break; /* its last reply is on its way: read, never kept */
        if (!p->rx || lws_is_first_fragment(wsi)) {
            if (!p->rx)
                p->rx = msg_get(srv);
            buf_reset(&p->rx->text);
            p->rx->binary = lws_frame_is_binary(wsi);
        }
        if (rx_over_limit(p, wsi, len))
            return -1;
        buf_append(&p->rx->text, in, len);
        if (lws_is_final_fragment(wsi) && !lws_remaining_packet_payload(wsi))
            on_message(p);
        break;

    case LWS_CALLBACK_SERVER_WRITEABLE:
        return write_some(p);

    case LWS_CALLBACK_TIMER:
        return p->close_sent ? -1 : 0; /* the polite close, see write_some() */

    case LWS_CALLBACK_CLOSED:
        if (p->live)
            session_close(srv, p);
        break;

    case LWS_CALLBACK_HTTP:
        return on_http(srv, wsi, p, in);

    case LWS_CALLBACK_HTTP_WRITEABLE:
        return http_write(wsi, p);

    case LWS_CALLBACK_CLOSED_HTTP:
        if (p)
            buf_free(&p->http);
        break;

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

static void on_pass_end(uv_check_t *h)
{
    process_ready(h->data);
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
    cfg->auth_timeout_s = 30;
    cfg->max_unauth_per_address = 10;
    cfg->max_message = 16u * 1024 * 1024;
    cfg->max_message_unauth = 64u * 1024;
    cfg->max_pipeline = 1024u * 1024;
    cfg->max_depth = 64;
    cfg->max_deployments = 10000;
    cfg->reply_cache = 64u * 1024 * 1024;
}

int dap_server_start(const struct dap_config *cfg, const struct dap_env *env,
                     struct dap_server **out)
{
    struct dap_server *srv = xcalloc(1, sizeof *srv);
    srv->env = env;
    srv->app.server = srv;
    srv->app.cfg = cfg;
    srv->app.store = env->store;
    srv->app.sched = env->sched;
    srv->app.clock = env->clock;
    srv->app.test_hooks = env->clock->fixed; /* only a test clock allows them */
    srv->app.vault = env->vault;
    srv->app.service_credential = env->service_credential;
    srv->app.started_at = time_now_real();
    buf_init(&srv->send, LWS_PRE);
    struct dap_guard_config gc;
    dap__guard_config_defaults(&gc);
    gc.max_unauth = cfg->max_unauth_per_address;
    srv->app.guard = dap__guard_new(&gc);
    if (env->identify) {
        struct dap_ids_config ic;
        dap__ids_config_defaults(&ic);
        srv->app.ids = dap__ids_new(&ic);
        srv->app.identify = env->identify;
        srv->app.identify_ud = env->ud;
    }
    if (!srv->app.guard || (env->identify && !srv->app.ids)) {
        log_error("cannot start libsodium");
        dap__guard_free(srv->app.guard);
        free(srv);
        return RR_E_INTERNAL;
    }
    if (cfg->reply_cache)
        srv->app.replies = dap__replies_new(cfg->reply_cache);
    lws_set_log_level(LLL_ERR | LLL_WARN, lws_log_emit);

    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = cfg->port; /* 0: the kernel picks; read back below */
    info.iface = cfg->listen_host;
    info.protocols = protocols;
    info.user = srv;
    /* lws joins the daemon's libuv loop. */
    void *foreign_loops[] = {env->loop};
    info.foreign_loops = foreign_loops;
    info.pcontext = &srv->ctx;
    info.options = LWS_SERVER_OPTION_LIBUV;
    if (!strchr(cfg->listen_host, ':'))
        info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
    static const lws_retry_bo_t keepalive = {
        .secs_since_valid_ping = 30,
        .secs_since_valid_hangup = 90,
    };
    info.retry_and_idle_policy = &keepalive;
    if (cfg->tls_cert) {
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        info.ssl_cert_filepath = cfg->tls_cert;
        info.ssl_private_key_filepath = cfg->tls_key;
    }

    srv->ctx = lws_create_context(&info);
    if (!srv->ctx) {
        log_error("cannot listen on %s:%d", cfg->listen_host, cfg->port);
        dap_server_free(srv);
        return RR_E_IO;
    }
    struct lws_vhost *vh = lws_get_vhost_by_name(srv->ctx, "default");
    int port = vh ? lws_get_vhost_listen_port(vh) : cfg->port;
    log_info("listening on %s://%s:%d%s", cfg->tls_cert ? "wss" : "ws",
             cfg->listen_host, port, cfg->ws_path);
    uv_check_init(env->loop, &srv->pass_end);
    srv->pass_end.data = srv;
    uv_check_start(&srv->pass_end, on_pass_end);
    srv->pass_end_open = true;
    uv_timer_init(env->loop, &srv->guard_timer);
    srv->guard_timer.data = srv;
    srv->guard_timer_open = true;
    uv_idle_init(env->loop, &srv->kick);
    srv->kick_open = true;
    uv_timer_init(env->loop, &srv->wait_timer);
    srv->wait_timer.data = srv;
    srv->wait_timer_open = true;
    srv->port = port;
    *out = srv;
    return 0;
}

int dap_server_port(const struct dap_server *srv)
{
    return srv->port;
}

void dap_server_close(struct dap_server *srv)
{
    if (!srv)
        return;
    if (srv->pass_end_open) {
        uv_close((uv_handle_t *)&srv->pass_end, NULL);
        srv->pass_end_open = false;
    }
    if (srv->guard_timer_open) {
        uv_close((uv_handle_t *)&srv->guard_timer, NULL);
        srv->guard_timer_open = false;
    }
    if (srv->kick_open) {
        uv_close((uv_handle_t *)&srv->kick, NULL);
        srv->kick_open = false;
    }
    if (srv->wait_timer_open) {
        uv_close((uv_handle_t *)&srv->wait_timer, NULL);
        srv->wait_timer_open = false;
    }
    /* what the guard has not summarised yet */
    dap__guard_flush(srv->app.guard, time_now_mono_ms(), true);
    /* With a loop lws does not own, destruction finishes in the close
     * callbacks of its handles (run by the loop); dap_server_free's call
     * frees what is left. info.pcontext clears srv->ctx once it is gone. */
    if (srv->ctx)
        lws_context_destroy(srv->ctx);
}

void dap_server_free(struct dap_server *srv)
{
    if (!srv)
        return;
    if (srv->ctx)
        lws_context_destroy(srv->ctx);
    dap__guard_free(srv->app.guard);
    dap__ids_free(srv->app.ids);
    dap__replies_free(srv->app.replies);
#ifdef RRDEPLOY_TEST_HOOKS
    test_checks_free(srv);
#endif
    spares_free(srv); /* last: closing the sessions above returns theirs */
    free(srv);
}
