/* fuzz_dap.c -- libFuzzer target for the DAP message layer (dap/msg.c, cmd.c).
 *
 * Purpose: whatever a client sends, dap__handle_message must answer every
 * request with exactly one well-formed response frame, stay silent for a
 * JSON object whose "type" is present and not "request", and never crash,
 * leak or read out of bounds -- including inside the authenticated command
 * handlers, which reach the store and the scheduler engine.
 *
 * Design: each input gets a fresh app over a fresh in-memory store (":memory:"
 * is cheap, and a fresh one keeps every input reproducible on its own) with
 * three keys (all permissions, monitor only, expired), a development key in
 * the config, a scheduler engine without executor (runs fail at once) and a
 * fixed fake clock. Then:
 *   1. the whole input is one message on a new unauthenticated session;
 *   2. if the input holds no 0xff byte, the same message again on a session
 *      authenticated with the all-permission key (so a plain request file in
 *      the corpus reaches its command handler);
 *      otherwise the input is a control byte followed by up to FUZZ_MAX_MSGS
 *      messages separated by 0xff, sent in order on one session. Control bits:
 *        bit 0 clear   first send an auth with a known key, chosen by
 *        bits 1-2      0 all permissions, 1 monitor only, 2 the dev key,
 *                      3 an expired key (the auth fails and the session ends);
 *        bit 3 set     enable the test clock (rrtest_clock in hook builds).
 *      As the server does, nothing more is read once a reply asked to close.
 * Every emitted frame is checked (check_frame); any violation traps so the
 * fuzzer reports it. Messages per session stay below the unauthenticated
 * burst (20), so the rate limit, which reads the real clock, never answers.
 *
 * Intended difference: jansson refuses object keys holding \u0000, which
 * RFC 8259 allows and jraw_check accepts; such a message gets one
 * "Malformed request: not valid JSON" response even when its type is not
 * "request". That answer is accepted here.
 *
 * Thread: single-threaded. */
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dap/dap_internal.h"
#include "util/jraw.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_SEP 0xff
#define FUZZ_MAX_MSGS 12
#define FUZZ_MAX_FRAMES 4
#define FUZZ_FRAME_DEPTH 512 /* frames nest the request's pipeline deeper */
#define FUZZ_NOW 1767225600.25 /* 2026-01-01T00:00:00.25Z */
#define FUZZ_DEV_KEY "rrdev-fuzz-key"

/* Stop the fuzzer on a broken invariant (a crash it can report). */
#define CHECK(x) ((x) ? (void)0 : __builtin_trap())

/* ---------------------------------------------------------------- fixture */

struct env {
    struct store *st;        /* owned */
    struct sched *sched;     /* owned */
    struct dap_config cfg;
    struct dap_app app;
    struct clock clock;      /* fixed: runs are reproducible */
    char key[4][STORE_KEY_TEXT_MAX]; /* all, monitor, dev key, expired */
};

/* Frames emitted by the current message. */
struct sink {
    char *frame[FUZZ_MAX_FRAMES]; /* owned (free) */
    size_t len[FUZZ_MAX_FRAMES];
    int n;
};

static int trace = -1; /* FUZZ_DAP_TRACE set: print frames and logs */


static void sink_emit(void *ud, struct buf *f)
{
    struct sink *sk = ud;
    CHECK(sk->n < FUZZ_MAX_FRAMES);
    if (trace)
        fprintf(stderr, "< %.*s\n", (int)(f->len > 400 ? 400 : f->len),
                buf_cstr(f));
    sk->frame[sk->n] = buf_take(f, &sk->len[sk->n]);
    sk->n++;
    free(f);
}

static void sink_clear(struct sink *sk)
{
    for (int i = 0; i < sk->n; i++)
        free(sk->frame[i]);
    sk->n = 0;
}

static int env_open(struct env *ev)
{
    if (trace < 0) {
        trace = getenv("FUZZ_DAP_TRACE") != NULL;
        /* Quiet by default: every failed run logs an error, and the fuzzer
         * would spend its time writing them. One past LOG_ERROR mutes all. */
        log_configure(trace ? LOG_DEBUG : (enum log_level)(LOG_ERROR + 1),
                      LOG_FORMAT_TEXT);
    }
    memset(ev, 0, sizeof *ev);
    if (store_open(":memory:", &ev->st, NULL) != 0)
        return -1;
    dap_config_defaults(&ev->cfg);
    ev->cfg.dev_key = FUZZ_DEV_KEY;
    /* small enough that the limit paths are reachable from a short input */
    ev->cfg.max_pipeline = 4096;
    ev->cfg.max_deployments = 8;
    struct sched_config sc;
    sched_config_defaults(&sc);
    sc.dev_key_present = true;
    ev->sched = sched_new(ev->st, &sc, NULL); /* no executor: runs fail */
    if (!ev->sched)
        return -1;
    struct dap_guard_config gc;
    dap__guard_config_defaults(&gc);
    gc.slots = 64; /* a few addresses at most; cheap to make per input */
    ev->app.guard = dap__guard_new(&gc);
    if (!ev->app.guard)
        return -1;
    ev->app.cfg = &ev->cfg;
    ev->app.store = ev->st;
    ev->app.sched = ev->sched;
    ev->app.started_at = FUZZ_NOW;
    ev->clock = (struct clock){true, FUZZ_NOW};
    ev->app.clock = &ev->clock;
    if (store_key_create(ev->st, "alice", NULL, STORE_PERM_ALL, 0, FUZZ_NOW,
                         ev->key[0], NULL) != 0 ||
        store_key_create(ev->st, "mona", NULL, STORE_PERM_MONITOR, 0, FUZZ_NOW,
                         ev->key[1], NULL) != 0 ||
        store_key_create(ev->st, "eve", NULL, STORE_PERM_ALL, FUZZ_NOW - 1,
                         FUZZ_NOW - 10, ev->key[3], NULL) != 0)
        return -1;
    snprintf(ev->key[2], sizeof ev->key[2], "%s", FUZZ_DEV_KEY);
    return 0;
}

static void env_close(struct env *ev)
{
    dap__guard_free(ev->app.guard);
    sched_free(ev->sched);
    store_close(ev->st);
}

/* ---------------------------------------------------------------- oracle */

static size_t skip_ws(const char *s, size_t n, size_t i)
{
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}

/* Is the raw value sp exactly the JSON text lit? */
static bool raw_is(struct jraw_span sp, const char *lit)
{
    return sp.n == strlen(lit) && memcmp(sp.p, lit, sp.n) == 0;
}

/* -?(0|[1-9][0-9]*), parsed into *out when it fits. */
static bool raw_int(struct jraw_span sp, int64_t *out)
{
    size_t i = sp.n && sp.p[0] == '-' ? 1 : 0;
    if (i >= sp.n || (sp.p[i] == '0' && sp.n > i + 1) || sp.n - i > 18)
        return false;
    int64_t v = 0;
    for (; i < sp.n; i++) {
        if (sp.p[i] < '0' || sp.p[i] > '9')
            return false;
        v = v * 10 + (sp.p[i] - '0');
    }
    *out = sp.p[0] == '-' ? -v : v;
    return true;
}

/* Must the server stay silent? When text is a valid JSON object (within the
 * server's depth limit) with a "type" member that is not the string
 * "request". The member's value is decoded on its own, not from a tree of
 * the whole message, so escapes like "\u0072equest" count as "request". */
static bool expect_silence(const struct env *ev, const char *text, size_t len)
{
    if (jraw_check(text, len, ev->cfg.max_depth, NULL) != 0)
        return false;
    size_t i = skip_ws(text, len, 0);
    if (i >= len || text[i] != '{')
        return false;
    struct jraw_span t;
    if (!jraw_member(text, len, "type", &t, NULL))
        return false;
    if (t.n == 0 || t.p[0] != '"')
        return true; /* present, not a string */
    json_t *v = json_loadb(t.p, t.n, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    CHECK(json_is_string(v)); /* a string jraw accepted */
    bool req = json_string_length(v) == 7 &&
               memcmp(json_string_value(v), "request", 7) == 0;
    json_decref(v);
    return !req;
}

/* One response frame: compact JSON object on one line with type "response",
 * the next server seq, an integer request_seq, a string command, and either
 * success:true (no code) or success:false with a string message and a code
 * from the fixed set. */
static void check_frame(const char *f, size_t n, int64_t want_seq)
{
    static const char *const codes[] = {
        "\"" DAP_BAD_REQUEST "\"", "\"" DAP_UNAUTHORIZED "\"",
        "\"" DAP_FORBIDDEN "\"",   "\"" DAP_NOT_FOUND "\"",
        "\"" DAP_CONFLICT "\"",    "\"" DAP_TOO_LARGE "\"",
        "\"" DAP_INTERNAL "\"",
    };
    CHECK(n > 0 && strlen(f) == n); /* no NUL inside either */
    CHECK(memchr(f, '\n', n) == NULL);
    CHECK(jraw_check(f, n, FUZZ_FRAME_DEPTH, NULL) == 0);
    CHECK(f[0] == '{');
    struct jraw_span v;
    int64_t iv;
    CHECK(jraw_member(f, n, "type", &v, NULL) && raw_is(v, "\"response\""));
    CHECK(jraw_member(f, n, "seq", &v, NULL) && raw_int(v, &iv) && iv == want_seq);
    CHECK(jraw_member(f, n, "request_seq", &v, NULL) && raw_int(v, &iv));
    CHECK(jraw_member(f, n, "command", &v, NULL) && v.n >= 2 && v.p[0] == '"');
    CHECK(jraw_member(f, n, "success", &v, NULL));
    if (raw_is(v, "true")) {
        CHECK(!jraw_member(f, n, "code", &v, NULL));
        CHECK(!jraw_member(f, n, "message", &v, NULL));
        return;
    }
    CHECK(raw_is(v, "false"));
    CHECK(jraw_member(f, n, "message", &v, NULL) && v.n >= 2 && v.p[0] == '"');
    CHECK(jraw_member(f, n, "code", &v, NULL));
    bool known = false;
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        known = known || raw_is(v, codes[i]);
    CHECK(known);
    CHECK(!jraw_member(f, n, "body", &v, NULL));
}

/* Send one message on ss and check what comes back. Returns the number of
 * response frames (0 or 1). */
static int send_msg(struct env *ev, struct dap_session *ss, const char *text,
                    size_t len)
{
    struct sink sk = {0};
    bool silent = expect_silence(ev, text, len);
    int64_t seq0 = ss->seq;
    dap__handle_message(&ev->app, ss, text, len, sink_emit, &sk);
    if (silent && sk.n == 1) {
        /* the jansson difference described at the top */
        struct jraw_span m;
        CHECK(jraw_member(sk.frame[0], sk.len[0], "message", &m, NULL) &&
              raw_is(m, "\"Malformed request: not valid JSON\""));
    } else {
        CHECK(sk.n == (silent ? 0 : 1));
    }
    for (int i = 0; i < sk.n; i++)
        check_frame(sk.frame[i], sk.len[i], seq0 + 1 + i);
    CHECK(ss->seq == seq0 + sk.n);
    int n = sk.n;
    sink_clear(&sk);
    return n;
}

/* Authenticate ss with key slot k (see the top comment). */
static void auth(struct env *ev, struct dap_session *ss, int k)
{
    char req[256];
    int w = snprintf(req, sizeof req,
                     "{\"type\":\"request\",\"seq\":1,\"command\":\"auth\","
                     "\"arguments\":{\"auth\":\"%s%s\",\"clientName\":\"fuzz\"}}",
                     k == 2 ? "Bearer " : "", ev->key[k]);
    CHECK(w > 0 && (size_t)w < sizeof req);
    CHECK(send_msg(ev, ss, req, (size_t)w) == 1);
    CHECK(ss->authed == (k != 3)); /* the expired key must be refused */
}

/* ---------------------------------------------------------------- entry */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct env ev;
    if (env_open(&ev) != 0) {
        env_close(&ev);
        abort(); /* the fixture itself is broken: not a finding */
    }
    const char *text = (const char *)data;

    /* 1. the raw bytes as one message, before authentication */
    struct dap_session ss = {0};
    send_msg(&ev, &ss, text, size);
    dap__session_clear(&ss);

    const uint8_t *sep = size ? memchr(data, FUZZ_SEP, size) : NULL;
    memset(&ss, 0, sizeof ss);
    if (!sep) {
        /* 2a. the same message with full permissions */
        auth(&ev, &ss, 0);
        send_msg(&ev, &ss, text, size);
    } else {
        /* 2b. a control byte, then messages separated by 0xff */
        uint8_t ctl = data[0];
        ev.app.test_hooks = (ctl & 8) != 0;
        if ((ctl & 1) == 0)
            auth(&ev, &ss, (ctl >> 1) & 3);
        size_t at = 1;
        for (int m = 0; m < FUZZ_MAX_MSGS && at <= size && !ss.closing; m++) {
            const uint8_t *end = memchr(data + at, FUZZ_SEP, size - at);
            size_t len = end ? (size_t)(end - (data + at)) : size - at;
            send_msg(&ev, &ss, text + at, len);
            at += len + 1;
        }
    }
    dap__session_clear(&ss);
    env_close(&ev);
    return 0;
}
