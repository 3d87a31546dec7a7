/* test_dap_upstream.c -- unit tests for the asynchronous DAP client
 * (dap/upstream.c) against a real WebSocket server in the same process.
 *
 * The server is a tiny lws server of its own (below), on a thread of its
 * own, on a kernel-picked loopback port. It answers each request by its
 * command, so a test says what the server does by what it asks:
 *   echo     a response, body {"n":<request seq>}
 *   hold     no response yet (kept)
 *   release  the held responses, newest first, then its own
 *   emit     an event apaevt_status {"state":"running"}, then a response
 *   flood    50 events "tick" written in one go, then a response
 *   big      an event of BIG_BODY bytes
 *   junk     a text frame that is not JSON
 *   bye      a close frame 1000 "bye"
 * A port where nothing listens and a socket that listens but never answers
 * (the kernel completes the TCP handshake, nobody reads the upgrade request)
 * stand for a refused connection and a hung one.
 *
 * The test thread drives the upstream only through its API: work that must
 * run on the upstream thread is handed to cfg.service (run_on_up: a call
 * under a lock, then dap_up_wake), and every callback is recorded under the
 * same lock, with whether it ran on the upstream thread and whether it came
 * from inside a dap_up_* call. Tests wait for recorded conditions with a
 * generous deadline; no sleeps.
 * Thread: the test thread, the upstream thread, the server thread. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <errno.h>
#include <libwebsockets.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "dap/upstream.h"
#include "util/jraw.h"
#include "util/util.h"

#define DEADLINE_MS 20000 /* for any awaited condition (sanitizer builds) */
#define BIG_BODY 8000
#define FLOOD 50
#define MAXREC 512
#define NSLOT 16

/* ================================================================ the server */

struct tframe {
    struct tframe *next;
    struct buf b;       /* owned; LWS_PRE headroom */
    bool close;         /* not a frame: close with 1000 "bye" */
};

/* Per session; lws allocates it zeroed. */
struct tpss {
    struct tframe *head, *tail;  /* owned: to be written */
    struct tframe *held;         /* owned: held responses, newest first */
    struct buf rx;
    int64_t seq;
};

struct tsrv {
    struct lws_context *ctx;
    pthread_t thread;
    atomic_bool stop;
    int port;
    atomic_int sessions;   /* open now */
    atomic_int closes_1000; /* close frames 1000 received from clients */
};

static struct tframe *tframe_new(void)
{
    struct tframe *f = xcalloc(1, sizeof *f);
    buf_init(&f->b, LWS_PRE);
    return f;
}

static void tframe_free(struct tframe *f)
{
    buf_free(&f->b);
    free(f);
}

static void tpush(struct tpss *p, struct tframe *f)
{
    if (p->tail)
        p->tail->next = f;
    else
        p->head = f;
    p->tail = f;
}

static struct tframe *tresponse(struct tpss *p, int64_t rseq, const char *cmd)
{
    struct tframe *f = tframe_new();
    buf_printf(&f->b, "{\"type\":\"response\",\"seq\":%lld,\"request_seq\":%lld,"
               "\"command\":\"%s\",\"success\":true,\"body\":{\"n\":%lld}}",
               (long long)++p->seq, (long long)rseq, cmd, (long long)rseq);
    return f;
}

static void tevent(struct tpss *p, const char *name, const char *body)
{
    struct tframe *f = tframe_new();
    buf_printf(&f->b, "{\"type\":\"event\",\"seq\":%lld,\"event\":\"%s\",\"body\":%s}",
               (long long)++p->seq, name, body);
    tpush(p, f);
}

/* One whole request: queue what its command asks for. */
static void tserve(struct tpss *p, const char *text, size_t len)
{
    static const char *const keys[] = {"seq", "command"};
    struct jraw_span v[2];
    char cmd[32] = "";
    ASSERT(jraw_check(text, len, 64, NULL) == 0); /* (not on the test thread) */
    ASSERT(jraw_members(text, len, keys, 2, v));
    long long rseq = v[0].p ? strtoll(v[0].p, NULL, 10) : 0;
    if (v[1].p && v[1].n >= 2 && v[1].n - 2 < sizeof cmd)
        memcpy(cmd, v[1].p + 1, v[1].n - 2);

    if (strcmp(cmd, "hold") == 0) {
        struct tframe *f = tresponse(p, rseq, cmd);
        f->next = p->held;
        p->held = f;
        return;
    }
    if (strcmp(cmd, "release") == 0) {
        while (p->held) {
            struct tframe *f = p->held;
            p->held = f->next;
            f->next = NULL;
            tpush(p, f);
        }
    } else if (strcmp(cmd, "emit") == 0) {
        tevent(p, "apaevt_status", "{\"state\":\"running\"}");
    } else if (strcmp(cmd, "flood") == 0) {
        for (int i = 0; i < FLOOD; i++)
            tevent(p, "tick", "{}");
    } else if (strcmp(cmd, "big") == 0) {
        struct buf body;
        buf_init(&body, 0);
        buf_puts(&body, "{\"pad\":\"");
        for (int i = 0; i < BIG_BODY; i++)
            buf_putc(&body, 'x');
        buf_puts(&body, "\"}");
        tevent(p, "big", buf_cstr(&body));
        buf_free(&body);
        return;
    } else if (strcmp(cmd, "junk") == 0) {
        struct tframe *f = tframe_new();
        buf_puts(&f->b, "this is not json");
        tpush(p, f);
        return;
    } else if (strcmp(cmd, "bye") == 0) {
        struct tframe *f = tframe_new();
        f->close = true;
        tpush(p, f);
        return;
    }
    tpush(p, tresponse(p, rseq, cmd));
}

/* Write everything queued in one go (so a client reads many frames in one
 * turn), or close. */
static int twrite(struct tpss *p, struct lws *wsi)
{
    while (p->head && !lws_send_pipe_choked(wsi)) {
        struct tframe *f = p->head;
        p->head = f->next;
        if (!p->head)
            p->tail = NULL;
        if (f->close) {
            tframe_free(f);
            lws_close_reason(wsi, LWS_CLOSE_STATUS_NORMAL,
                             (unsigned char *)"bye", 3);
            return -1;
        }
        int n = lws_write(wsi, (unsigned char *)buf_data(&f->b), f->b.len,
                          LWS_WRITE_TEXT);
        size_t len = f->b.len;
        tframe_free(f);
        if (n < (int)len)
            return -1;
    }
    if (p->head)
        lws_callback_on_writable(wsi);
    return 0;
}

static void tpss_clear(struct tpss *p)
{
    while (p->head) {
        struct tframe *f = p->head;
        p->head = f->next;
        tframe_free(f);
    }
    while (p->held) {
        struct tframe *f = p->held;
        p->held = f->next;
        tframe_free(f);
    }
    buf_free(&p->rx);
}

static int tcallback(struct lws *wsi, enum lws_callback_reasons reason,
                     void *user, void *in, size_t len)
{
    struct tpss *p = user;
    struct tsrv *s = lws_context_user(lws_get_context(wsi));
    switch (reason) {
    case LWS_CALLBACK_ESTABLISHED:
        buf_init(&p->rx, 0);
        atomic_fetch_add(&s->sessions, 1);
        return 0;
    case LWS_CALLBACK_RECEIVE:
        if (lws_is_first_fragment(wsi))
            buf_reset(&p->rx);
        buf_append(&p->rx, in, len);
        if (lws_is_final_fragment(wsi) && !lws_remaining_packet_payload(wsi)) {
            tserve(p, buf_data(&p->rx), p->rx.len);
            lws_callback_on_writable(wsi);
        }
        return 0;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return twrite(p, wsi);
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        if (len >= 2 && ((const unsigned char *)in)[0] == 0x03 &&
            ((const unsigned char *)in)[1] == 0xe8)
            atomic_fetch_add(&s->closes_1000, 1);
        return 0;
    case LWS_CALLBACK_CLOSED:
        tpss_clear(p);
        atomic_fetch_sub(&s->sessions, 1);
        return 0;
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        return 0;
    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

static const struct lws_protocols tprotocols[] = {
    {"test-engine", tcallback, sizeof(struct tpss), 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static void *tsrv_main(void *arg)
{
    struct tsrv *s = arg;
    while (!atomic_load(&s->stop))
        if (lws_service(s->ctx, 0) < 0)
            break;
    return NULL;
}

static void tsrv_start(struct tsrv *s)
{
    memset(s, 0, sizeof *s);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = 0;
    info.iface = "127.0.0.1";
    info.protocols = tprotocols;
    info.user = s;
    info.options = LWS_SERVER_OPTION_DISABLE_IPV6;
    s->ctx = lws_create_context(&info);
    assert_non_null(s->ctx);
    s->port = lws_get_vhost_listen_port(lws_get_vhost_by_name(s->ctx, "default"));
    assert_true(s->port > 0);
    assert_int_equal(pthread_create(&s->thread, NULL, tsrv_main, s), 0);
}

static void tsrv_stop(struct tsrv *s)
{
    atomic_store(&s->stop, true);
    lws_cancel_service(s->ctx);
    pthread_join(s->thread, NULL);
    lws_context_destroy(s->ctx);
}

/* ================================================================ the harness */

struct rec {
    int conn;                /* the slot given as ud */
    enum dap_up_event ev;
    bool is_event;
    int64_t request_seq;
    char name[32];           /* an event's name */
    char body[48];           /* the start of the body */
    char why[160];
    bool on_thread;          /* on the upstream thread */
    bool inside_api;         /* from inside a dap_up_* call */
};

struct h;
struct slot {
    struct h *h;
    int i;
};
typedef void (*up_fn)(struct h *h);

/* A check on the upstream thread, where cmocka cannot fail the test: the
 * teardown does. */
#define UP_CHECK(h, x)                                                   \
    do {                                                                 \
        if (!(x)) {                                                      \
            fprintf(stderr, "%s:%d: failed: %s\n", __FILE__, __LINE__, #x); \
            atomic_fetch_add(&(h)->up_failures, 1);                      \
        }                                                                \
    } while (0)

struct h {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* under mu */
    struct rec recs[MAXREC];
    int nrecs;
    int services;            /* cfg.service calls */
    int services_off_thread; /* ... not on the upstream thread */
    up_fn up_call;
    bool up_done;
    atomic_int up_failures;  /* UP_CHECKs that failed */
    /* the upstream thread's */
    pthread_t up_thread;
    bool have_thread;
    bool in_api;
    struct dap_up_conn *conns[NSLOT];
    int close_on_event;      /* slot to close at its first event, or -1 */
    int reconnect_slot;      /* at a CLOSED "stopping", connect this slot */
    int64_t after_close_seq; /* what dap_up_request gave after the close */
    /* the test thread's */
    struct slot slots[NSLOT];
    struct dap_up *u;
    struct tsrv srv;
    struct dap_up_config cfg;
    int listen_fd;           /* the socket that never answers, or -1 */
};

static int64_t mono_ms(void)
{
    return time_now_mono_ms();
}

static void h_lock(struct h *h)
{
    pthread_mutex_lock(&h->mu);
}

static void h_unlock(struct h *h)
{
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

/* Wait (mu held) until the cv is signalled or the deadline passes. */
static bool h_wait(struct h *h, int64_t until)
{
    int64_t left = until - mono_ms();
    if (left <= 0)
        return false;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += left / 1000;
    ts.tv_nsec += (left % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(&h->cv, &h->mu, &ts);
    return true;
}

static bool on_up_thread(struct h *h)
{
    return h->have_thread && pthread_equal(pthread_self(), h->up_thread);
}

/* ---------------------------------------------------------------- callbacks */

static void record(struct h *h, int conn, enum dap_up_event ev,
                   const struct dap_msg *m, const char *why)
{
    h_lock(h);
    UP_CHECK(h, h->nrecs < MAXREC);
    if (h->nrecs == MAXREC) {
        h_unlock(h);
        return;
    }
    struct rec *r = &h->recs[h->nrecs++];
    memset(r, 0, sizeof *r);
    r->conn = conn;
    r->ev = ev;
    r->on_thread = on_up_thread(h);
    r->inside_api = h->in_api;
    if (m) {
        r->is_event = m->is_event;
        r->request_seq = m->request_seq;
        snprintf(r->name, sizeof r->name, "%s", m->event ? m->event : "");
        if (m->body.p)
            snprintf(r->body, sizeof r->body, "%.*s",
                     (int)(m->body.n < 47 ? m->body.n : 47), m->body.p);
    }
    if (why)
        snprintf(r->why, sizeof r->why, "%s", why);
    h_unlock(h);
}

static void conn_cb(void *ud, struct dap_up_conn *c, enum dap_up_event ev,
                    const struct dap_msg *m, const char *why);

/* dap_up_* calls made by the tests, marked so a callback from inside one
 * is seen. */
static void up_connect(struct h *h, int i)
{
    h->in_api = true;
    h->conns[i] = dap_up_connect(h->u, conn_cb, &h->slots[i]);
    h->in_api = false;
    UP_CHECK(h, h->conns[i] != NULL);
}

static int64_t up_request(struct h *h, int i, const char *command)
{
    h->in_api = true;
    int64_t seq = dap_up_request(h->conns[i], command, NULL, 0);
    h->in_api = false;
    return seq;
}

static void up_close(struct h *h, int i)
{
    h->in_api = true;
    dap_up_close(h->conns[i]);
    h->in_api = false;
}

static void conn_cb(void *ud, struct dap_up_conn *c, enum dap_up_event ev,
                    const struct dap_msg *m, const char *why)
{
    struct slot *s = ud;
    struct h *h = s->h;
    record(h, s->i, ev, m, why);
    if (ev == DAP_UP_MESSAGE && m->is_event && s->i == h->close_on_event) {
        h->close_on_event = -1;
        up_close(h, s->i);
        up_close(h, s->i); /* twice is fine */
        h->after_close_seq = up_request(h, s->i, "echo");
    }
    if (ev == DAP_UP_CLOSED) {
        if (h->conns[s->i] == c)
            h->conns[s->i] = NULL;
        if (strcmp(why, "stopping") == 0 && h->reconnect_slot >= 0) {
            int i = h->reconnect_slot;
            h->reconnect_slot = -1;
            up_connect(h, i);
        }
    }
}

/* The first service call (at start) says which thread is the upstream's. */
static void note_thread(struct h *h)
{
    h_lock(h);
    if (!h->have_thread) {
        h->up_thread = pthread_self();
        h->have_thread = true;
    }
    h->services++;
    if (!pthread_equal(pthread_self(), h->up_thread))
        h->services_off_thread++;
    h_unlock(h);
}

static void service_cb(void *ud)
{
    struct h *h = ud;
    note_thread(h);
    h_lock(h);
    up_fn fn = h->up_call;
    h->up_call = NULL;
    h_unlock(h);
    if (!fn)
        return;
    fn(h);
    h_lock(h);
    h->up_done = true;
    h_unlock(h);
}

/* Run fn on the upstream thread and wait for it to have run. */
static void run_on_up(struct h *h, up_fn fn)
{
    h_lock(h);
    h->up_call = fn;
    h->up_done = false;
    h_unlock(h);
    dap_up_wake(h->u);
    int64_t until = mono_ms() + DEADLINE_MS;
    h_lock(h);
    while (!h->up_done && h_wait(h, until))
        ;
    bool done = h->up_done;
    h_unlock(h);
    assert_true(done);
}

/* ---------------------------------------------------------------- waiting */

static int count_locked(struct h *h, int conn, enum dap_up_event ev)
{
    int n = 0;
    for (int i = 0; i < h->nrecs; i++)
        if (h->recs[i].conn == conn && h->recs[i].ev == ev)
            n++;
    return n;
}

static int count(struct h *h, int conn, enum dap_up_event ev)
{
    h_lock(h);
    int n = count_locked(h, conn, ev);
    h_unlock(h);
    return n;
}

/* Wait until slot conn has at least n callbacks ev. */
static bool wait_for(struct h *h, int conn, enum dap_up_event ev, int n)
{
    int64_t until = mono_ms() + DEADLINE_MS;
    h_lock(h);
    while (count_locked(h, conn, ev) < n && h_wait(h, until))
        ;
    bool ok = count_locked(h, conn, ev) >= n;
    h_unlock(h);
    return ok;
}

/* The (k+1)th record of slot conn with ev (a copy). */
static struct rec nth(struct h *h, int conn, enum dap_up_event ev, int k)
{
    struct rec out;
    memset(&out, 0, sizeof out);
    h_lock(h);
    for (int i = 0; i < h->nrecs; i++)
        if (h->recs[i].conn == conn && h->recs[i].ev == ev && k-- == 0) {
            out = h->recs[i];
            break;
        }
    h_unlock(h);
    return out;
}

/* Wait until the server's counter *v reaches want (it has no lock to wait
 * on: look every millisecond). */
static bool wait_atomic(atomic_int *v, int want)
{
    int64_t until = mono_ms() + DEADLINE_MS;
    while (atomic_load(v) < want && mono_ms() < until) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return atomic_load(v) >= want;
}

/* Every callback so far came on the upstream thread, none from inside a
 * dap_up_* call. */
static void assert_all_well_placed(struct h *h)
{
    h_lock(h);
    for (int i = 0; i < h->nrecs; i++) {
        assert_true(h->recs[i].on_thread);
        assert_false(h->recs[i].inside_api);
    }
    h_unlock(h);
}

/* ---------------------------------------------------------------- set-up */

static int setup(void **state)
{
    struct h *h = calloc(1, sizeof *h);
    pthread_mutex_init(&h->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&h->cv, &ca);
    pthread_condattr_destroy(&ca);
    for (int i = 0; i < NSLOT; i++)
        h->slots[i] = (struct slot){h, i};
    h->close_on_event = -1;
    h->reconnect_slot = -1;
    h->listen_fd = -1;
    tsrv_start(&h->srv);
    dap_up_config_defaults(&h->cfg);
    h->cfg.service = service_cb;
    h->cfg.ud = h;
    *state = h;
    return 0;
}

static int teardown(void **state)
{
    struct h *h = *state;
    dap_up_stop(h->u);
    tsrv_stop(&h->srv);
    assert_int_equal(atomic_load(&h->up_failures), 0);
    if (h->listen_fd >= 0)
        close(h->listen_fd);
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
    free(h);
    return 0;
}

/* Point cfg at 127.0.0.1:port. */
static void set_port(struct h *h, int port)
{
    char url[64];
    struct err e = {0};
    snprintf(url, sizeof url, "ws://127.0.0.1:%d", port);
    assert_int_equal(dap_url_parse(url, &h->cfg.url, &e), 0);
}

static void start_up(struct h *h)
{
    struct err e = {0};
    h->u = dap_up_start(&h->cfg, &e);
    if (!h->u)
        fail_msg("dap_up_start: %s", e.msg);
}

/* A loopback socket bound to a fresh port: listening (nobody ever accepts
 * or answers), or closed again (the port refuses). */
static int fresh_port(struct h *h, bool listening)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    socklen_t sl = sizeof sa;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    if (listening) {
        assert_int_equal(listen(fd, 16), 0);
        h->listen_fd = fd;
    } else {
        close(fd);
    }
    return ntohs(sa.sin_port);
}

/* ================================================================ tests */

/* Requests queued before OPENED go out once it opens; responses that come
 * out of order are matched by request_seq; an event comes with its name. */
static void on_up_four_requests(struct h *h)
{
    up_connect(h, 0);
    UP_CHECK(h, up_request(h, 0, "hold") == 1);
    UP_CHECK(h, up_request(h, 0, "hold") == 2);
    UP_CHECK(h, up_request(h, 0, "emit") == 3);
    UP_CHECK(h, up_request(h, 0, "release") == 4);
}

static void test_requests_out_of_order_and_events(void **state)
{
    struct h *h = *state;
    set_port(h, h->srv.port);
    start_up(h);
    run_on_up(h, on_up_four_requests);
    assert_true(wait_for(h, 0, DAP_UP_MESSAGE, 5));

    /* OPENED first, then the event and the responses as the server sent
     * them: 3 (after its event), then the held 2 and 1, then 4 */
    h_lock(h);
    assert_int_equal(h->recs[0].ev, DAP_UP_OPENED);
    h_unlock(h);
    struct rec ev = nth(h, 0, DAP_UP_MESSAGE, 0);
    assert_true(ev.is_event);
    assert_string_equal(ev.name, "apaevt_status");
    assert_string_equal(ev.body, "{\"state\":\"running\"}");
    const int64_t order[] = {3, 2, 1, 4};
    for (int k = 0; k < 4; k++) {
        struct rec r = nth(h, 0, DAP_UP_MESSAGE, k + 1);
        assert_false(r.is_event);
        assert_string_equal(r.name, "");
        assert_int_equal(r.request_seq, order[k]);
        char body[32];
        snprintf(body, sizeof body, "{\"n\":%lld}", (long long)order[k]);
        assert_string_equal(r.body, body); /* the server's answer to it */
    }
    assert_int_equal(count(h, 0, DAP_UP_CLOSED), 0);
    assert_all_well_placed(h);
}

/* Nothing listens: one CLOSED with the reason, from the loop, not from
 * inside dap_up_connect. */
static void on_up_connect(struct h *h)
{
    up_connect(h, 0);
}

static void test_connection_refused(void **state)
{
    struct h *h = *state;
    set_port(h, fresh_port(h, false));
    start_up(h);
    run_on_up(h, on_up_connect);
    assert_true(wait_for(h, 0, DAP_UP_CLOSED, 1));
    struct rec r = nth(h, 0, DAP_UP_CLOSED, 0);
    assert_non_null(strstr(r.why, "refused"));
    assert_int_equal(count(h, 0, DAP_UP_OPENED), 0);
    assert_all_well_placed(h);
    dap_up_stop(h->u);
    h->u = NULL;
    assert_int_equal(count(h, 0, DAP_UP_CLOSED), 1); /* exactly one */
}

/* A server that takes the TCP connection and never answers the upgrade:
 * CLOSED "timed out connecting", not before the timeout, and not long
 * after. */
static void test_connect_timeout(void **state)
{
    struct h *h = *state;
    set_port(h, fresh_port(h, true));
    h->cfg.connect_timeout_s = 0.5;
    start_up(h);
    int64_t t0 = mono_ms();
    run_on_up(h, on_up_connect);
    assert_true(wait_for(h, 0, DAP_UP_CLOSED, 1));
    int64_t took = mono_ms() - t0;
    struct rec r = nth(h, 0, DAP_UP_CLOSED, 0);
    assert_string_equal(r.why, "timed out connecting");
    assert_true(took >= 500);
    assert_true(took < 5000); /* lws's own timeouts come 5 s later */
    assert_int_equal(count(h, 0, DAP_UP_OPENED), 0);
    assert_all_well_placed(h);
}

/* The server closes: CLOSED with its code and reason; a new user pointer
 * is the one told. */
static void on_up_bye(struct h *h)
{
    up_connect(h, 0);
    dap_up_set_ud(h->conns[0], &h->slots[9]);
    h->conns[9] = h->conns[0];
    up_request(h, 0, "bye");
}

static void test_server_closes(void **state)
{
    struct h *h = *state;
    set_port(h, h->srv.port);
    start_up(h);
    run_on_up(h, on_up_bye);
    assert_true(wait_for(h, 9, DAP_UP_CLOSED, 1));
    struct rec r = nth(h, 9, DAP_UP_CLOSED, 0);
    assert_string_equal(r.why, "the server closed the connection (1000: bye)");
    assert_int_equal(count(h, 9, DAP_UP_OPENED), 1);
    assert_int_equal(count(h, 0, DAP_UP_CLOSED), 0);
    assert_all_well_placed(h);
}

/* dap_up_close at the first of many events already on their way: CLOSED
 * "closed by us" and no MESSAGE after it; requests after the close give 0.
 * A connection closed while still connecting: CLOSED without OPENED. */
static void on_up_flood_and_close(struct h *h)
{
    h->close_on_event = 0;
    h->after_close_seq = -1;
    up_connect(h, 0);
    up_request(h, 0, "flood");
    up_connect(h, 1);
    up_request(h, 1, "echo");
    up_close(h, 1);
    UP_CHECK(h, up_request(h, 1, "echo") == 0);
}

static void test_close_by_us(void **state)
{
    struct h *h = *state;
    set_port(h, h->srv.port);
    start_up(h);
    run_on_up(h, on_up_flood_and_close);
    assert_true(wait_for(h, 0, DAP_UP_CLOSED, 1));
    assert_true(wait_for(h, 1, DAP_UP_CLOSED, 1));
    assert_string_equal(nth(h, 0, DAP_UP_CLOSED, 0).why, "closed by us");
    assert_string_equal(nth(h, 1, DAP_UP_CLOSED, 0).why, "closed by us");
    assert_int_equal(count(h, 0, DAP_UP_MESSAGE), 1); /* the first event */
    assert_int_equal(count(h, 1, DAP_UP_OPENED), 0);
    assert_int_equal(count(h, 1, DAP_UP_MESSAGE), 0);
    h_lock(h);
    int64_t after = h->after_close_seq;
    h_unlock(h);
    assert_int_equal(after, 0);
    /* the server is told with a close frame 1000 */
    assert_true(wait_atomic(&h->srv.closes_1000, 1));
    /* nothing more comes for it */
    dap_up_stop(h->u);
    h->u = NULL;
    assert_int_equal(count(h, 0, DAP_UP_MESSAGE), 1);
    assert_int_equal(count(h, 0, DAP_UP_CLOSED), 1);
    assert_int_equal(count(h, 1, DAP_UP_CLOSED), 1);
    assert_all_well_placed(h);
}

/* Stop with open connections, one with a request outstanding: each gets
 * CLOSED "stopping" on the upstream thread, so does one opened from such a
 * callback, the server gets close frames, and nothing leaks. */
static void on_up_three(struct h *h)
{
    h->reconnect_slot = 5;
    for (int i = 0; i < 3; i++)
        up_connect(h, i);
    up_request(h, 2, "hold");
}

static void test_stop_with_live_connections(void **state)
{
    struct h *h = *state;
    set_port(h, h->srv.port);
    start_up(h);
    run_on_up(h, on_up_three);
    for (int i = 0; i < 3; i++)
        assert_true(wait_for(h, i, DAP_UP_OPENED, 1));
    dap_up_stop(h->u);
    h->u = NULL;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(count(h, i, DAP_UP_CLOSED), 1);
        assert_string_equal(nth(h, i, DAP_UP_CLOSED, 0).why, "stopping");
    }
    assert_int_equal(count(h, 5, DAP_UP_CLOSED), 1);
    assert_string_equal(nth(h, 5, DAP_UP_CLOSED, 0).why, "stopping");
    assert_int_equal(count(h, 5, DAP_UP_OPENED), 0);
    assert_all_well_placed(h);
    assert_true(wait_atomic(&h->srv.closes_1000, 3));
}

/* cfg.service: once at start, then after dap_up_wake, on the upstream
 * thread. */
static void test_wake(void **state)
{
    struct h *h = *state;
    set_port(h, h->srv.port);
    start_up(h);
    int64_t until = mono_ms() + DEADLINE_MS;
    h_lock(h);
    while (h->services < 1 && h_wait(h, until))
        ;
    int before = h->services;
    h_unlock(h);
    assert_int_equal(before, 1);
    for (int k = 1; k <= 3; k++) {
        dap_up_wake(h->u);
        until = mono_ms() + DEADLINE_MS;
        h_lock(h);
        while (h->services < before + k && h_wait(h, until))
            ;
        int n = h->services;
        h_unlock(h);
        assert_int_equal(n, before + k); /* each wake waited for: one call */
    }
    h_lock(h);
    bool have = h->have_thread, off = h->services_off_thread;
    bool other = !pthread_equal(h->up_thread, pthread_self());
    h_unlock(h);
    assert_true(have);
    assert_int_equal(off, 0);
    assert_true(other);
}

static void test_ticks(void **state)
{
    struct h *h = *state;
    set_port(h, h->srv.port);
    h->cfg.service = service_cb;
    h->cfg.tick_ms = 10;
    start_up(h);
    int64_t until = mono_ms() + DEADLINE_MS;
    h_lock(h);
    while (h->services < 6 && h_wait(h, until))
        ;
    int n = h->services, off = h->services_off_thread;
    h_unlock(h);
    assert_true(n >= 6);
    assert_int_equal(off, 0);
}

/* A message over max_message, and a frame that is not JSON: CLOSED, and
 * neither is told as a MESSAGE. */
static void on_up_big_and_junk(struct h *h)
{
    up_connect(h, 0);
    up_request(h, 0, "echo");
    up_request(h, 0, "big");
    up_connect(h, 1);
    up_request(h, 1, "junk");
}

static void test_bad_messages(void **state)
{
    struct h *h = *state;
    set_port(h, h->srv.port);
    h->cfg.max_message = 4096;
    start_up(h);
    run_on_up(h, on_up_big_and_junk);
    assert_true(wait_for(h, 0, DAP_UP_CLOSED, 1));
    assert_true(wait_for(h, 1, DAP_UP_CLOSED, 1));
    assert_string_equal(nth(h, 0, DAP_UP_CLOSED, 0).why,
                        "the server sent a message over 4096 bytes");
    assert_int_equal(count(h, 0, DAP_UP_MESSAGE), 1); /* the echo only */
    assert_false(nth(h, 0, DAP_UP_MESSAGE, 0).is_event);
    assert_non_null(strstr(nth(h, 1, DAP_UP_CLOSED, 0).why,
                           "the server sent invalid JSON"));
    assert_int_equal(count(h, 1, DAP_UP_MESSAGE), 0);
    assert_all_well_placed(h);
}

/* A config without an address, or with no timeout, is refused. */
static void test_bad_config(void **state)
{
    struct h *h = *state;
    struct err e = {0};
    assert_null(dap_up_start(&h->cfg, &e));
    assert_int_equal(e.code, RR_E_INVAL);
    set_port(h, h->srv.port);
    h->cfg.connect_timeout_s = 0;
    assert_null(dap_up_start(&h->cfg, &e));
    assert_int_equal(e.code, RR_E_INVAL);
    dap_up_stop(NULL);
}

int main(void)
{
    lws_set_log_level(LLL_ERR, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_requests_out_of_order_and_events,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_closes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_by_us, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_with_live_connections, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_wake, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ticks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_messages, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_config, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
