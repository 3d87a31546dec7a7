/* test_dap_identity.c -- unit tests for auth with a RocketRide credential
 * that the engine checks (dap/cmd.c, dap/identity.c), without sockets.
 *
 * A fake identify callback records the credentials and tickets it is asked
 * about; the test gives the verdicts itself, in the three steps the server
 * takes (dap__identified, dap__session_verdict, dap__session_answer). A
 * connection is a session, its messages not handled yet and the frames it
 * was sent; pump() handles them as the server's end of a pass does: an
 * answer owed first, then messages in order until an auth waits. The
 * monotonic clock the cache sees is moved with app.mono_ahead_ms. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <sodium.h>
#include <string.h>

#include "dap/dap_internal.h"
#include "tests/unit/fixture.h"

#define MAX_FRAMES 8
#define MAX_IN 8
#define MAX_CALLS 8
#define FAKE_NOW 1767225600.25
static struct clock clock_fake = {true, FAKE_NOW};

struct conn {
    struct dap_session ss;
    const char *in[MAX_IN]; /* borrowed: messages not handled yet */
    int nin, at;
    char *frames[MAX_FRAMES];
    int nframes;
};

struct fx {
    struct fixture *f;
    struct dap_config cfg;
    struct dap_app app;
    struct sched *sched;
    struct conn c[3];
    char key[STORE_KEY_TEXT_MAX]; /* a local key of alice */
    /* the fake engine */
    int calls;
    char *asked[MAX_CALLS];       /* the credentials it was asked about */
    uint64_t tickets[MAX_CALLS];
    int identify_rc;              /* what identify returns */
    bool instant;                 /* identify gives its verdict at once */
};

static int fake_identify(void *ud, const char *key, uint64_t ticket)
{
    struct fx *fx = ud;
    if (fx->identify_rc < 0)
        return fx->identify_rc;
    assert_true(fx->calls < MAX_CALLS);
    fx->asked[fx->calls] = strdup(key);
    fx->tickets[fx->calls++] = ticket;
    if (fx->instant) { /* as the server would: cache, then sessions */
        static const struct dap_identity dora = {"dora", STORE_PERM_MONITOR};
        (void)dap__identified(&fx->app, ticket, &dora, false, NULL);
        for (int i = 0; i < 3; i++)
            (void)dap__session_verdict(&fx->c[i].ss, ticket, &dora, false, NULL);
    }
    return 0;
}

static void emit(void *ud, struct buf *f)
{
    struct conn *c = ud;
    assert_true(c->nframes < MAX_FRAMES);
    c->frames[c->nframes++] = buf_take(f, NULL);
    free(f);
}

static void frames_clear(struct conn *c)
{
    for (int i = 0; i < c->nframes; i++)
        free(c->frames[i]);
    c->nframes = 0;
}

static int setup(void **state)
{
    struct fx *fx = calloc(1, sizeof *fx);
    fx->f = fixture_new();
    dap_config_defaults(&fx->cfg);
    fx->cfg.dev_key = "a-development-key-1234";
    fx->app.cfg = &fx->cfg;
    fx->app.store = fx->f->s;
    fx->app.clock = &clock_fake;
    struct sched_config sc;
    sched_config_defaults(&sc);
    fx->sched = sched_new(fx->f->s, &sc, NULL);
    fx->app.sched = fx->sched;
    struct dap_guard_config gc;
    dap__guard_config_defaults(&gc);
    fx->app.guard = dap__guard_new(&gc);
    assert_non_null(fx->app.guard);
    struct dap_ids_config ic;
    dap__ids_config_defaults(&ic);
    fx->app.ids = dap__ids_new(&ic);
    assert_non_null(fx->app.ids);
    fx->app.identify = fake_identify;
    fx->app.identify_ud = fx;
    fixture_key(fx->f->s, "alice", STORE_PERM_ALL, 0, FAKE_NOW, fx->key, NULL);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fx *fx = *state;
    for (int i = 0; i < 3; i++) {
        frames_clear(&fx->c[i]);
        dap__session_clear(&fx->c[i].ss);
    }
    for (int i = 0; i < fx->calls; i++)
        free(fx->asked[i]);
    dap__ids_free(fx->app.ids);
    dap__guard_free(fx->app.guard);
    sched_free(fx->sched);
    fixture_free(fx->f);
    free(fx);
    return 0;
}

/* Handle what c has, as the server's end of a pass does. */
static void pump(struct fx *fx, struct conn *c)
{
    for (;;) {
        if (dap__session_answer(&fx->app, &c->ss, emit, c))
            continue;
        if (c->at == c->nin || dap__session_wait(&c->ss, NULL) != DAP_WAIT_NONE)
            break;
        const char *m = c->in[c->at++];
        if (!c->ss.closing)
            dap__handle_message(&fx->app, &c->ss, m, strlen(m), emit, c);
    }
}

/* c receives text (borrowed until pumped), and is pumped. */
static void deliver(struct fx *fx, struct conn *c, const char *text)
{
    assert_true(c->nin < MAX_IN);
    c->in[c->nin++] = text;
    pump(fx, c);
}

/* The verdict on ticket, as dap_server_identified gives it: to the cache,
 * to every connection waiting for it, and each of those pumped. Returns how
 * many connections waited for it. */
static int verdict(struct fx *fx, uint64_t ticket, const struct dap_identity *id,
                   bool refused, const char *why)
{
    (void)dap__identified(&fx->app, ticket, id, refused, why);
    int n = 0;
    for (int i = 0; i < 3; i++)
        if (dap__session_verdict(&fx->c[i].ss, ticket, id, refused, why)) {
            n++;
            pump(fx, &fx->c[i]);
        }
    return n;
}

static json_t *frame(const struct conn *c, int i)
{
    assert_true(i < c->nframes);
    json_error_t je;
    json_t *r = json_loads(c->frames[i], 0, &je);
    if (!r)
        fail_msg("unparsable frame %s: %s", c->frames[i], je.text);
    return r;
}

static const char *str(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : "";
}

/* An auth request with seq and credential cred (a static buffer per slot,
 * so a few can be pending at once). */
static const char *auth_req(int slot, int seq, const char *cred)
{
    static char buf[4][512];
    snprintf(buf[slot], sizeof buf[slot],
             "{\"type\":\"request\",\"seq\":%d,\"command\":\"auth\","
             "\"arguments\":{\"auth\":\"%s\"}}", seq, cred);
    return buf[slot];
}

#define PING(seq) "{\"type\":\"request\",\"seq\":" #seq ",\"command\":\"rrext_ping\"}"

static const struct dap_identity bob = {"bob", STORE_PERM_ALL};

/* ---------------------------------------------------------------- the cache */

static void test_cache_verdicts_and_times(void **state)
{
    (void)state;
    struct dap_ids_config ic;
    dap__ids_config_defaults(&ic);
    struct dap_ids *ids = dap__ids_new(&ic);
    unsigned char a[DAP_IDS_HASH_BYTES], b[DAP_IDS_HASH_BYTES], c[DAP_IDS_HASH_BYTES];
    dap__ids_hash(ids, "cred-a", 6, a);
    dap__ids_hash(ids, "cred-b", 6, b);
    dap__ids_hash(ids, "cred-c", 6, c);
    assert_memory_not_equal(a, b, sizeof a);
    struct dap_ids_hit hit;
    int64_t t = 1000000, deadline = 0;
    assert_int_equal(dap__ids_find(ids, a, t, &hit), DAP_IDS_NONE);

    /* a check under way is shared until its verdict */
    uint64_t ta = dap__ids_begin(ids, a, t, &deadline);
    assert_true(ta != 0);
    assert_true(deadline == t + 15000);
    assert_int_equal(dap__ids_find(ids, a, t + 100, &hit), DAP_IDS_PENDING);
    assert_true(hit.ticket == ta);
    assert_true(hit.deadline_ms == deadline);
    assert_true(dap__ids_settle(ids, ta, &bob, false, NULL, t + 200));
    assert_false(dap__ids_settle(ids, ta, &bob, false, NULL, t + 200)); /* once */
    assert_int_equal(dap__ids_find(ids, a, t + 200 + 29999, &hit), DAP_IDS_ACCEPTED);
    assert_string_equal(hit.id.user, "bob");
    assert_int_equal(hit.id.perms, STORE_PERM_ALL);
    assert_int_equal(dap__ids_find(ids, a, t + 200 + 30000, &hit), DAP_IDS_NONE);
    assert_int_equal(dap__ids_count(ids), 0); /* dropped on the way */

    /* a refusal is kept 5 s, with its text */
    uint64_t tb = dap__ids_begin(ids, b, t, &deadline);
    assert_true(tb != ta && tb != 0);
    assert_true(dap__ids_settle(ids, tb, NULL, true, "Invalid API key", t));
    assert_int_equal(dap__ids_find(ids, b, t + 4999, &hit), DAP_IDS_REFUSED);
    assert_string_equal(hit.why, "Invalid API key");
    assert_int_equal(dap__ids_find(ids, b, t + 5000, &hit), DAP_IDS_NONE);

    /* "could not ask" is never kept; nor a cancelled check */
    uint64_t tc = dap__ids_begin(ids, c, t, &deadline);
    assert_true(dap__ids_settle(ids, tc, NULL, false, "connection refused", t));
    assert_int_equal(dap__ids_find(ids, c, t, &hit), DAP_IDS_NONE);
    tc = dap__ids_begin(ids, c, t, &deadline);
    dap__ids_cancel(ids, tc);
    assert_int_equal(dap__ids_find(ids, c, t, &hit), DAP_IDS_NONE);
    assert_false(dap__ids_settle(ids, tc, &bob, false, NULL, t));
    assert_false(dap__ids_settle(ids, 0, &bob, false, NULL, t));
    assert_false(dap__ids_settle(ids, 12345678, &bob, false, NULL, t));

    /* a check past its deadline is forgotten: the next auth asks again */
    tc = dap__ids_begin(ids, c, t, &deadline);
    assert_int_equal(dap__ids_find(ids, c, t + 15000, &hit), DAP_IDS_NONE);
    assert_false(dap__ids_settle(ids, tc, &bob, false, NULL, t + 15001));
    dap__ids_free(ids);
}

/* The table is bounded: the oldest verdict goes first; checks under way
 * stay, and when all are, no new check starts. */
static void test_cache_bounded(void **state)
{
    (void)state;
    struct dap_ids_config ic;
    dap__ids_config_defaults(&ic);
    ic.slots = 4;
    struct dap_ids *ids = dap__ids_new(&ic);
    unsigned char h[6][DAP_IDS_HASH_BYTES];
    for (int i = 0; i < 6; i++) {
        char cred[8];
        snprintf(cred, sizeof cred, "c%d", i);
        dap__ids_hash(ids, cred, strlen(cred), h[i]);
    }
    int64_t t = 5000, deadline;
    struct dap_ids_hit hit;
    uint64_t tk[6];
    tk[0] = dap__ids_begin(ids, h[0], t, &deadline); /* stays pending */
    for (int i = 1; i < 4; i++) {
        tk[i] = dap__ids_begin(ids, h[i], t + i, &deadline);
        assert_true(dap__ids_settle(ids, tk[i], &bob, false, NULL, t + i));
    }
    assert_int_equal(dap__ids_count(ids), 4);
    /* full: c4 takes the oldest verdict (c1), never the pending c0 */
    tk[4] = dap__ids_begin(ids, h[4], t + 10, &deadline);
    assert_true(tk[4] != 0);
    assert_int_equal(dap__ids_find(ids, h[1], t + 10, &hit), DAP_IDS_NONE);
    assert_int_equal(dap__ids_find(ids, h[0], t + 10, &hit), DAP_IDS_PENDING);
    assert_int_equal(dap__ids_find(ids, h[2], t + 10, &hit), DAP_IDS_ACCEPTED);
    /* the table has c0 c2 c3 c4; make all of them checks under way */
    int64_t d2, d3;
    dap__ids_cancel(ids, tk[0]);
    tk[0] = dap__ids_begin(ids, h[0], t + 11, &deadline);
    tk[2] = dap__ids_begin(ids, h[2], t + 11, &d2);
    tk[3] = dap__ids_begin(ids, h[3], t + 11, &d3);
    assert_int_equal(dap__ids_count(ids), 4);
    assert_true(dap__ids_begin(ids, h[5], t + 12, &deadline) == 0);
    /* once one is past its deadline, its slot can be taken */
    assert_true(dap__ids_begin(ids, h[5], t + 10 + 15000, &deadline) != 0);
    dap__ids_free(ids);
}

static void test_copy_text(void **state)
{
    (void)state;
    char out[8];
    dap__copy_text(out, sizeof out, "ab\ncd");
    assert_string_equal(out, "ab cd");
    dap__copy_text(out, sizeof out, "a\xff" "b");
    assert_string_equal(out, "a?b");
    dap__copy_text(out, sizeof out, "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"); /* 4 x é */
    assert_string_equal(out, "\xc3\xa9\xc3\xa9\xc3\xa9"); /* 6 bytes: no half */
    dap__copy_text(out, sizeof out, "\xed\xa0\x80"); /* a surrogate */
    assert_string_equal(out, "???");
    dap__copy_text(out, sizeof out, NULL);
    assert_string_equal(out, "");
}

/* Secrets: kept, and freed; past the guarded ones (2048 at once, so that
 * the process does not run out of mappings) ordinary memory takes over. */
static void test_secrets(void **state)
{
    (void)state;
    assert_true(sodium_init() >= 0);
    enum { N = 3000 };
    char **s = calloc(N, sizeof *s);
    for (int i = 0; i < N; i++) {
        char text[32];
        int n = snprintf(text, sizeof text, "secret-%d", i);
        s[i] = dap__secret_dup(text, (size_t)n);
        assert_string_equal(s[i], text);
    }
    for (int i = 0; i < N; i++)
        dap__secret_free(s[i]);
    free(s);
    dap__secret_free(NULL);
}

/* ---------------------------------------------------------------- auth */

/* rrk_ keys and the development key stay local; everything else goes to
 * the engine, without its Bearer prefix; without an engine, as before. */
static void test_which_credentials_go_to_the_engine(void **state)
{
    struct fx *fx = *state;
    struct conn *c = &fx->c[0];
    deliver(fx, c, auth_req(0, 1, fx->key));
    assert_int_equal(c->nframes, 1);
    assert_true(c->ss.authed);
    assert_false(c->ss.engine);
    assert_null(dap__session_credential(&c->ss));
    deliver(fx, c, auth_req(1, 2, "a-development-key-1234"));
    assert_int_equal(c->nframes, 2);
    assert_true(c->ss.dev);
    deliver(fx, c, auth_req(2, 3, "rrk_unknown"));
    json_t *r = frame(c, 2);
    assert_string_equal(str(r, "message"), "Invalid API key");
    json_decref(r);
    assert_int_equal(fx->calls, 0);

    struct conn *d = &fx->c[1];
    deliver(fx, d, auth_req(0, 1, "Bearer rr-api-key-123"));
    assert_int_equal(d->nframes, 0);
    assert_int_equal(fx->calls, 1);
    assert_string_equal(fx->asked[0], "rr-api-key-123");
    assert_int_equal(dap__session_wait(&d->ss, NULL), DAP_WAIT_PENDING);

    /* without an engine: an invalid key, at once */
    fx->app.identify = NULL;
    struct conn *e = &fx->c[2];
    deliver(fx, e, auth_req(3, 1, "rr-api-key-123"));
    r = frame(e, 0);
    assert_string_equal(str(r, "message"), "Invalid API key");
    json_decref(r);
    assert_int_equal(fx->calls, 1);
}

/* The answer comes with the verdict, with the auth's seq, and the messages
 * the client sent behind it are handled after it, in order. */
static void test_deferred_answer_then_held_messages(void **state)
{
    struct fx *fx = *state;
    struct conn *c = &fx->c[0];
    deliver(fx, c, auth_req(0, 7, "rr-api-key-123"));
    deliver(fx, c, PING(8));
    deliver(fx, c, "{\"type\":\"request\",\"seq\":9,\"command\":\"rrext_deploy_list\"}");
    assert_int_equal(c->nframes, 0);
    assert_int_equal(c->at, 1); /* the two behind it wait */
    assert_false(c->ss.authed);

    int64_t deadline = 0;
    assert_int_equal(dap__session_wait(&c->ss, &deadline), DAP_WAIT_PENDING);
    assert_true(deadline > dap__mono_ms(&fx->app));
    assert_int_equal(verdict(fx, fx->tickets[0], &bob, false, NULL), 1);
    assert_int_equal(c->nframes, 3);
    json_t *r = frame(c, 0);
    assert_int_equal(json_integer_value(json_object_get(r, "request_seq")), 7);
    assert_int_equal(json_integer_value(json_object_get(r, "seq")), 1);
    assert_string_equal(str(r, "command"), "auth");
    assert_true(json_is_true(json_object_get(r, "success")));
    json_t *body = json_object_get(r, "body");
    assert_string_equal(str(body, "userId"), "bob");
    assert_string_equal(str(body, "userToken"), "");
    json_t *team = json_array_get(json_object_get(json_array_get(
                       json_object_get(body, "organizations"), 0), "teams"), 0);
    assert_int_equal(json_array_size(json_object_get(team, "permissions")), 2);
    json_decref(r);
    r = frame(c, 1);
    assert_int_equal(json_integer_value(json_object_get(r, "request_seq")), 8);
    assert_int_equal(json_integer_value(json_object_get(r, "seq")), 2);
    json_decref(r);
    r = frame(c, 2);
    assert_int_equal(json_integer_value(json_object_get(r, "request_seq")), 9);
    assert_true(json_is_true(json_object_get(r, "success")));
    json_decref(r);

    assert_true(c->ss.authed);
    assert_true(c->ss.engine);
    assert_false(c->ss.dev);
    assert_string_equal(c->ss.key.user, "bob");
    assert_string_equal(c->ss.key.id, SCHED_ENGINE_KEY_ID);
    assert_string_equal(c->ss.key.label, "");
    assert_int_equal(c->ss.key.perms, STORE_PERM_ALL);
    assert_int_equal(dap__session_wait(&c->ss, NULL), DAP_WAIT_NONE);
    /* the engine does not revoke open sessions: no key row to re-check */
    assert_false(dap__session_recheck(&fx->app, &c->ss));
    assert_false(c->ss.revoked);
    const struct dap_metrics *m = &fx->app.metrics;
    assert_int_equal(m->engine_auth[DAP_ENGINE_ACCEPTED], 1);
    assert_int_equal(m->requests[dap__cmd_slot(dap__cmd_find("auth"))][0], 1);
}

/* A verdict given from inside identify (before it returns) is answered as
 * well, and the messages behind follow. */
static void test_verdict_inside_identify(void **state)
{
    struct fx *fx = *state;
    fx->instant = true;
    struct conn *c = &fx->c[0];
    c->in[c->nin++] = auth_req(0, 1, "rr-instant");
    c->in[c->nin++] = PING(2);
    pump(fx, c);
    assert_int_equal(fx->calls, 1);
    assert_int_equal(c->nframes, 2);
    json_t *r = frame(c, 0);
    assert_int_equal(json_integer_value(json_object_get(r, "request_seq")), 1);
    assert_string_equal(str(json_object_get(r, "body"), "userId"), "dora");
    json_decref(r);
    r = frame(c, 1);
    assert_int_equal(json_integer_value(json_object_get(r, "request_seq")), 2);
    json_decref(r);
    assert_int_equal(c->ss.key.perms, STORE_PERM_MONITOR);
}

/* The engine's refusal text goes to the client, the connection closes, the
 * messages behind are dropped, and the guard counts a failure. */
static void test_refusal(void **state)
{
    struct fx *fx = *state;
    struct conn *c = &fx->c[0];
    deliver(fx, c, auth_req(0, 3, "rr-wrong"));
    deliver(fx, c, PING(4));
    assert_int_equal(verdict(fx, fx->tickets[0], NULL, true, "Invalid API key"), 1);
    assert_int_equal(c->nframes, 1);
    json_t *r = frame(c, 0);
    assert_int_equal(json_integer_value(json_object_get(r, "request_seq")), 3);
    assert_string_equal(str(r, "code"), "unauthorized");
    assert_string_equal(str(r, "message"), "Invalid API key");
    json_decref(r);
    assert_true(c->ss.closing);
    assert_false(c->ss.authed);
    assert_int_equal(c->at, 2); /* read, never answered */
    assert_int_equal(dap__guard_stats(fx->app.guard)->auth_failed, 1);
    assert_int_equal(fx->app.metrics.engine_auth[DAP_ENGINE_REFUSED], 1);
}

static void expect_unavailable(struct fx *fx, struct conn *c, const char *msg)
{
    assert_int_equal(c->nframes, 1);
    json_t *r = frame(c, 0);
    assert_string_equal(str(r, "code"), "unauthorized");
    assert_string_equal(str(r, "message"), msg);
    json_decref(r);
    assert_true(c->ss.closing);
    assert_null(c->ss.wait);
    assert_int_equal(dap__guard_stats(fx->app.guard)->auth_failed, 0);
}

/* An engine that cannot be asked fails the auth without counting against
 * the address: when the call fails, when the upstream says so, and when no
 * verdict comes within the wait. Nothing of it is cached. */
static void test_unavailable_is_not_counted(void **state)
{
    struct fx *fx = *state;
    fx->identify_rc = RR_E_IO;
    deliver(fx, &fx->c[0], auth_req(0, 1, "rr-key"));
    expect_unavailable(fx, &fx->c[0],
                       "Authentication unavailable: the RocketRide engine "
                       "cannot be reached (I/O error)");
    fx->identify_rc = 0;

    deliver(fx, &fx->c[1], auth_req(1, 1, "rr-key"));
    assert_int_equal(fx->calls, 1); /* asked again: nothing was cached */
    assert_int_equal(verdict(fx, fx->tickets[0], NULL, false, "connection refused"), 1);
    expect_unavailable(fx, &fx->c[1],
                       "Authentication unavailable: the RocketRide engine "
                       "cannot be reached (connection refused)");

    struct conn *c = &fx->c[2];
    deliver(fx, c, auth_req(2, 1, "rr-key"));
    assert_int_equal(fx->calls, 2);
    int64_t deadline;
    assert_int_equal(dap__session_wait(&c->ss, &deadline), DAP_WAIT_PENDING);
    assert_false(dap__session_late(&c->ss, deadline - 1));
    assert_true(dap__session_late(&c->ss, deadline));
    assert_int_equal(dap__session_wait(&c->ss, NULL), DAP_WAIT_DECIDED);
    pump(fx, c);
    expect_unavailable(fx, c, "Authentication unavailable: the RocketRide "
                              "engine did not answer in time");
    /* the late verdict itself, when it comes, is nobody's: ignored by the
     * sessions (the cache may still take it) */
    assert_int_equal(verdict(fx, fx->tickets[1], &bob, false, NULL), 0);
    assert_int_equal(fx->app.metrics.engine_auth[DAP_ENGINE_UNAVAILABLE], 3);
}

/* A verdict is reused for 30 s (accepted) or 5 s (refused) without asking
 * the engine; after that it asks again. */
static void test_cache_hits(void **state)
{
    struct fx *fx = *state;
    deliver(fx, &fx->c[0], auth_req(0, 1, "rr-good"));
    assert_int_equal(verdict(fx, fx->tickets[0], &bob, false, NULL), 1);
    assert_true(fx->c[0].ss.authed);

    fx->app.mono_ahead_ms += 29000;
    deliver(fx, &fx->c[1], auth_req(1, 5, "rr-good"));
    assert_int_equal(fx->calls, 1);
    assert_int_equal(fx->c[1].nframes, 1); /* answered at once */
    json_t *r = frame(&fx->c[1], 0);
    assert_int_equal(json_integer_value(json_object_get(r, "request_seq")), 5);
    assert_string_equal(str(json_object_get(r, "body"), "userId"), "bob");
    json_decref(r);
    assert_string_equal(dap__session_credential(&fx->c[1].ss), "rr-good");
    assert_int_equal(fx->app.metrics.engine_auth[DAP_ENGINE_CACHED], 1);

    fx->app.mono_ahead_ms += 1000; /* 30 s after the verdict */
    dap__session_clear(&fx->c[1].ss);
    memset(&fx->c[1].ss, 0, sizeof fx->c[1].ss);
    deliver(fx, &fx->c[1], auth_req(1, 6, "rr-good"));
    assert_int_equal(fx->calls, 2);
    assert_int_equal(dap__session_wait(&fx->c[1].ss, NULL), DAP_WAIT_PENDING);

    /* a refusal: 5 s */
    deliver(fx, &fx->c[2], auth_req(2, 1, "rr-bad"));
    assert_int_equal(verdict(fx, fx->tickets[2], NULL, true, "Authentication failed"), 1);
    frames_clear(&fx->c[2]);
    dap__session_clear(&fx->c[2].ss);
    memset(&fx->c[2].ss, 0, sizeof fx->c[2].ss);
    fx->c[2].nin = fx->c[2].at = 0;
    fx->app.mono_ahead_ms += 4000;
    deliver(fx, &fx->c[2], auth_req(2, 2, "rr-bad"));
    assert_int_equal(fx->calls, 3);
    r = frame(&fx->c[2], 0);
    assert_string_equal(str(r, "message"), "Authentication failed");
    json_decref(r);
    assert_int_equal(dap__guard_stats(fx->app.guard)->auth_failed, 2);
    frames_clear(&fx->c[2]);
    memset(&fx->c[2].ss, 0, sizeof fx->c[2].ss);
    fx->c[2].nin = fx->c[2].at = 0;
    fx->app.mono_ahead_ms += 1000; /* 5 s after the refusal */
    deliver(fx, &fx->c[2], auth_req(2, 3, "rr-bad"));
    assert_int_equal(fx->calls, 4);
    assert_int_equal(fx->c[2].nframes, 0);
}

/* Auths of one credential while it is being checked share the check. */
static void test_coalescing(void **state)
{
    struct fx *fx = *state;
    deliver(fx, &fx->c[0], auth_req(0, 1, "rr-shared"));
    deliver(fx, &fx->c[1], auth_req(1, 2, "rr-shared"));
    deliver(fx, &fx->c[2], auth_req(2, 3, "rr-other"));
    assert_int_equal(fx->calls, 2);
    assert_int_equal(dap__session_wait(&fx->c[1].ss, NULL), DAP_WAIT_PENDING);
    assert_int_equal(verdict(fx, fx->tickets[0], &bob, false, NULL), 2);
    for (int i = 0; i < 2; i++) {
        assert_true(fx->c[i].ss.authed);
        json_t *r = frame(&fx->c[i], 0);
        assert_int_equal(json_integer_value(json_object_get(r, "request_seq")), i + 1);
        json_decref(r);
    }
    assert_int_equal(dap__session_wait(&fx->c[2].ss, NULL), DAP_WAIT_PENDING);
    assert_int_equal(fx->app.metrics.engine_auth[DAP_ENGINE_ACCEPTED], 2);

    /* a connection that closes while waiting drops its ticket */
    dap__session_clear(&fx->c[2].ss);
    assert_int_equal(verdict(fx, fx->tickets[1], &bob, false, NULL), 0);
}

/* The session keeps the credential until deauth, a re-auth or its end. */
static void test_session_credential(void **state)
{
    struct fx *fx = *state;
    struct conn *c = &fx->c[0];
    deliver(fx, c, auth_req(0, 1, "rr-first"));
    assert_null(dap__session_credential(&c->ss)); /* not before the verdict */
    verdict(fx, fx->tickets[0], &bob, false, NULL);
    assert_string_equal(dap__session_credential(&c->ss), "rr-first");

    deliver(fx, c, auth_req(1, 2, "rr-second"));
    verdict(fx, fx->tickets[1], &bob, false, NULL);
    assert_string_equal(dap__session_credential(&c->ss), "rr-second");

    deliver(fx, c, "{\"type\":\"request\",\"seq\":3,\"command\":\"deauth\"}");
    assert_null(dap__session_credential(&c->ss));
    assert_null(c->ss.cred);
    assert_false(c->ss.engine);

    deliver(fx, c, auth_req(2, 4, "rr-second")); /* cached */
    assert_string_equal(dap__session_credential(&c->ss), "rr-second");
    deliver(fx, c, auth_req(3, 5, fx->key)); /* a local key: none */
    assert_true(c->ss.authed);
    assert_null(dap__session_credential(&c->ss));
    assert_null(c->ss.cred);
    assert_string_equal(c->ss.key.user, "alice");
}

/* A userId rrdeploy cannot use as a user name is refused, clearly, and not
 * counted against the client. Permissions beyond the team's are dropped. */
static void test_engine_user_checked(void **state)
{
    struct fx *fx = *state;
    struct conn *c = &fx->c[0];
    deliver(fx, c, auth_req(0, 1, "rr-odd"));
    struct dap_identity odd = {"no spaces allowed", STORE_PERM_ALL};
    verdict(fx, fx->tickets[0], &odd, false, NULL);
    json_t *r = frame(c, 0);
    const char *want = "The RocketRide engine's user id cannot be used by rrdeploy: ";
    assert_int_equal(strncmp(str(r, "message"), want, strlen(want)), 0);
    json_decref(r);
    assert_false(c->ss.authed);
    assert_true(c->ss.closing);
    assert_int_equal(dap__guard_stats(fx->app.guard)->auth_failed, 0);

    struct conn *d = &fx->c[1];
    deliver(fx, d, auth_req(1, 1, "rr-admin"));
    struct dap_identity admin = {"carol", STORE_PERM_MONITOR | STORE_PERM_ORG_ADMIN};
    verdict(fx, fx->tickets[1], &admin, false, NULL);
    assert_true(d->ss.authed);
    assert_int_equal(d->ss.key.perms, STORE_PERM_MONITOR);
}

/* The guard still comes first: a throttled address is refused without the
 * engine being asked. */
static void test_guard_before_engine(void **state)
{
    struct fx *fx = *state;
    for (int i = 0; i < 30; i++)
        dap__guard_auth_failed(fx->app.guard, &fx->c[0].ss.peer,
                               time_now_mono_ms(), "test");
    deliver(fx, &fx->c[0], auth_req(0, 1, "rr-key"));
    json_t *r = frame(&fx->c[0], 0);
    const char *want = "Too many failed authentication attempts from this address";
    assert_int_equal(strncmp(str(r, "message"), want, strlen(want)), 0);
    json_decref(r);
    assert_int_equal(fx->calls, 0);
}

/* The counters in /metrics. */
static void test_metrics(void **state)
{
    struct fx *fx = *state;
    deliver(fx, &fx->c[0], auth_req(0, 1, "rr-key"));
    verdict(fx, fx->tickets[0], &bob, false, NULL);
    deliver(fx, &fx->c[1], auth_req(1, 1, "rr-key"));
    struct buf b;
    buf_init(&b, 0);
    struct dap_gauges g = {0};
    dap__metrics_render(&b, &fx->app, &g);
    const char *text = buf_cstr(&b);
    assert_non_null(strstr(text, "rrdeploy_engine_auth_total{result=\"accepted\"} 1\n"));
    assert_non_null(strstr(text, "rrdeploy_engine_auth_total{result=\"cached\"} 1\n"));
    assert_non_null(strstr(text, "rrdeploy_engine_auth_total{result=\"refused\"} 0\n"));
    assert_non_null(strstr(text, "rrdeploy_engine_auth_total{result=\"unavailable\"} 0\n"));
    buf_free(&b);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cache_verdicts_and_times),
        cmocka_unit_test(test_cache_bounded),
        cmocka_unit_test(test_copy_text),
        cmocka_unit_test(test_secrets),
        T(test_which_credentials_go_to_the_engine),
        T(test_deferred_answer_then_held_messages),
        T(test_verdict_inside_identify),
        T(test_refusal),
        T(test_unavailable_is_not_counted),
        T(test_cache_hits),
        T(test_coalescing),
        T(test_session_credential),
        T(test_engine_user_checked),
        T(test_guard_before_engine),
        T(test_metrics),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
