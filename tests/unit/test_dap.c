/* test_dap.c -- unit tests for the DAP message layer (dap/msg.c, dap/cmd.c,
 * dap/wire.c) without sockets: messages go in as text, frames come out as
 * text. A real store on a temporary file backs the commands; the clock is
 * injected. The clients' decoding of what a server sends (client_conn.c)
 * is here too. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dap/dap_internal.h"
#include "tests/unit/fixture.h"
#include "util/jraw.h"

#define MAX_FRAMES 8

struct fx {
    struct fixture *f;
    struct store *st;                  /* = f->s */
    struct dap_config cfg;
    struct dap_app app;
    struct sched *sched;
    struct dap_session ss;
    char key[STORE_KEY_TEXT_MAX];      /* task.control + task.monitor */
    char monitor[STORE_KEY_TEXT_MAX];  /* task.monitor only */
    char *frames[MAX_FRAMES];
    int nframes;
};

#define FAKE_NOW 1767225600.25 /* 2026-01-01T00:00:00.25Z */
static struct clock clock_fake = {true, FAKE_NOW};

static void emit(void *ud, struct buf *f)
{
    struct fx *fx = ud;
    assert_true(fx->nframes < MAX_FRAMES);
    fx->frames[fx->nframes++] = buf_take(f, NULL);
    free(f);
}

static void frames_clear(struct fx *fx)
{
    for (int i = 0; i < fx->nframes; i++)
        free(fx->frames[i]);
    fx->nframes = 0;
}

static int setup(void **state)
{
    struct fx *fx = calloc(1, sizeof *fx);
    fx->f = fixture_new();
    fx->st = fx->f->s;
    dap_config_defaults(&fx->cfg);
    fx->app.cfg = &fx->cfg;
    fx->app.store = fx->st;
    fx->app.clock = &clock_fake;
    struct sched_config sc;
    sched_config_defaults(&sc);
    fx->sched = sched_new(fx->st, &sc, NULL); /* no executor: runs fail */
    fx->app.sched = fx->sched;
    struct dap_guard_config gc;
    dap__guard_config_defaults(&gc);
    fx->app.guard = dap__guard_new(&gc);
    assert_non_null(fx->app.guard);
    fx->app.replies = dap__replies_new(fx->cfg.reply_cache); /* as served */
    fixture_key(fx->st, "alice", STORE_PERM_ALL, 0, FAKE_NOW, fx->key, NULL);
    fixture_key(fx->st, "mona", STORE_PERM_MONITOR, 0, FAKE_NOW, fx->monitor, NULL);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fx *fx = *state;
    frames_clear(fx);
    dap__session_clear(&fx->ss);
    dap__guard_free(fx->app.guard);
    dap__replies_free(fx->app.replies);
    sched_free(fx->sched);
    fixture_free(fx->f);
    free(fx);
    return 0;
}

/* Send text; return the single response frame parsed (caller decrefs). */
static json_t *ask(struct fx *fx, const char *text)
{
    frames_clear(fx);
    dap__handle_message(&fx->app, &fx->ss, text, strlen(text), emit, fx);
    assert_int_equal(fx->nframes, 1);
    assert_null(strchr(fx->frames[0], '\n'));
    json_error_t je;
    json_t *r = json_loads(fx->frames[0], JSON_ALLOW_NUL, &je);
    if (!r)
        fail_msg("unparsable frame %s: %s", fx->frames[0], je.text);
    return r;
}

static const char *str(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : "";
}

static void expect_error(struct fx *fx, const char *text, const char *code,
                         const char *msg_prefix)
{
    json_t *r = ask(fx, text);
    assert_true(json_is_false(json_object_get(r, "success")));
    assert_string_equal(str(r, "code"), code);
    if (strncmp(str(r, "message"), msg_prefix, strlen(msg_prefix)) != 0)
        fail_msg("message '%s' does not start with '%s'", str(r, "message"),
                 msg_prefix);
    json_decref(r);
}

static void auth(struct fx *fx, const char *key)
{
    char req[256];
    snprintf(req, sizeof req,
             "{\"type\":\"request\",\"seq\":1,\"command\":\"auth\","
             "\"arguments\":{\"auth\":\"%s\"}}",
             key);
    json_t *r = ask(fx, req);
    assert_true(json_is_true(json_object_get(r, "success")));
    json_decref(r);
    assert_true(fx->ss.authed);
}

/* A new connection's state (auth attempts are capped per connection). */
static void session_reset(struct fx *fx)
{
    dap__session_clear(&fx->ss);
    memset(&fx->ss, 0, sizeof fx->ss);
}

/* ---------------------------------------------------------------- envelope */

static void test_malformed(void **state)
{
    struct fx *fx = *state;
    json_t *r = ask(fx, "{\"seq\":");
    assert_int_equal(json_integer_value(json_object_get(r, "request_seq")), 0);
    assert_string_equal(str(r, "code"), "bad_request");
    assert_non_null(strstr(str(r, "message"), "Malformed request: "));
    json_decref(r);
    assert_false(fx->ss.closing);

    expect_error(fx, "[1,2]", "bad_request",
                 "Malformed request: expected a JSON object");
    expect_error(fx, "", "bad_request", "Malformed request: ");
    expect_error(fx, "{\"type\":\"request\",\"seq\":1.5,\"command\":\"x\"}",
                 "bad_request", "Malformed request: seq must be an integer");
    expect_error(fx, "{\"type\":\"request\",\"seq\":1,\"command\":7}",
                 "bad_request", "Malformed request: command must be a string");
    expect_error(fx,
                 "{\"type\":\"request\",\"seq\":1,\"command\":\"auth\","
                 "\"arguments\":[1]}",
                 "bad_request", "arguments must be an object");
}

/* The envelope is read from the text, not a tree: escapes decode, the last
 * duplicate wins, integral numbers count as integers, as a JSON parser would
 * have it. */
static void test_envelope_decoding(void **state)
{
    struct fx *fx = *state;
    json_t *r = ask(fx, "{\"type\":\"req\\u0075est\",\"seq\":1.0,\"command\":"
                         "\"rrext\\u005fpublic_probe\"}");
    assert_true(json_is_true(json_object_get(r, "success")));
    assert_int_equal(json_integer_value(json_object_get(r, "request_seq")), 1);
    assert_string_equal(str(r, "command"), "rrext_public_probe");
    json_decref(r);

    r = ask(fx, "{\"seq\":1e2,\"seq\":7,\"command\":\"rrext_public_probe\"}");
    assert_int_equal(json_integer_value(json_object_get(r, "request_seq")), 7);
    json_decref(r);
    r = ask(fx, "{\"seq\":1e2,\"command\":\"rrext_public_probe\"}");
    assert_int_equal(json_integer_value(json_object_get(r, "request_seq")), 100);
    json_decref(r);
    r = ask(fx, "{\"seq\":-0,\"command\":\"rrext_public_probe\"}");
    assert_true(json_is_true(json_object_get(r, "success")));
    json_decref(r);

    expect_error(fx, "{\"seq\":1e400,\"command\":\"rrext_public_probe\"}",
                 "bad_request", "Malformed request: seq must be an integer");
    expect_error(fx, "{\"seq\":9007199254740994,\"command\":\"rrext_public_probe\"}",
                 "bad_request", "Malformed request: seq must be an integer");
    expect_error(fx, "{\"seq\":\"1\",\"command\":\"rrext_public_probe\"}",
                 "bad_request", "Malformed request: seq must be an integer");
    expect_error(fx, "{\"command\":\"rrext_public_probe\"}", "bad_request",
                 "Malformed request: seq must be an integer");
    expect_error(fx, "{\"seq\":3,\"command\":\"rrext_public_probe\\u0000x\"}",
                 "bad_request", "Invalid command: rrext_public_probe");

    /* jansson refuses \u0000 in keys: inside arguments that is a malformed
     * request, still answered with its seq; elsewhere it is never parsed. */
    r = ask(fx, "{\"seq\":5,\"command\":\"rrext_public_probe\","
                 "\"arguments\":{\"a\\u0000\":1}}");
    assert_int_equal(json_integer_value(json_object_get(r, "request_seq")), 5);
    assert_string_equal(str(r, "message"), "Malformed request: not valid JSON");
    json_decref(r);
    r = ask(fx, "{\"seq\":6,\"command\":\"rrext_public_probe\",\"\\u0000\":1,"
                 "\"arguments\":null}");
    assert_true(json_is_true(json_object_get(r, "success")));
    json_decref(r);

    /* a type other than "request" (or not a string) gets no reply */
    static const char *const quiet[] = {
        "{\"type\":\"event\",\"\\u0000\":1}",
        "{\"type\":5,\"seq\":1,\"command\":\"rrext_public_probe\"}",
        "{\"type\":\"Request\",\"seq\":1,\"command\":\"rrext_public_probe\"}",
    };
    for (size_t i = 0; i < sizeof quiet / sizeof quiet[0]; i++) {
        frames_clear(fx);
        dap__handle_message(&fx->app, &fx->ss, quiet[i], strlen(quiet[i]), emit, fx);
        assert_int_equal(fx->nframes, 0);
    }
}

static void test_deep_nesting_keeps_seq(void **state)
{
    struct fx *fx = *state;
    struct buf b;
    buf_init(&b, 0);
    buf_puts(&b, "{\"type\":\"request\",\"seq\":42,\"command\":\"rrext_ping\","
                 "\"arguments\":{\"x\":");
    for (int i = 0; i < 100; i++)
        buf_putc(&b, '[');
    for (int i = 0; i < 100; i++)
        buf_putc(&b, ']');
    buf_puts(&b, "}}");
    json_t *r = ask(fx, buf_cstr(&b));
    assert_int_equal(json_integer_value(json_object_get(r, "request_seq")), 42);
    assert_string_equal(str(r, "message"),
                        "Malformed request: nesting deeper than 64 levels");
    json_decref(r);
    buf_free(&b);

    /* broken text: only a seq that is wholly a number is salvaged */
    static const struct {
        const char *text;
        int64_t seq;
    } broken[] = {
        {"{\"seq\":1e2,\"x\":[}", 100},
        {"{\"seq\":7,\"x\":", 7},
        {"{\"seq\":0x1A,\"x\":1}", 0},
        {"{\"seq\":12x}", 0},
        {"{\"seq\":-inf}", 0},
        {"{\"seq\":1.5,", 0},
    };
    for (size_t i = 0; i < sizeof broken / sizeof broken[0]; i++) {
        r = ask(fx, broken[i].text);
        assert_int_equal(json_integer_value(json_object_get(r, "request_seq")),
                         broken[i].seq);
        json_decref(r);
    }
}

static void test_unauthenticated_flood_is_cut_off(void **state)
{
    struct fx *fx = *state;
    int i;
    for (i = 0; i < 100 && !fx->ss.closing; i++) {
        json_t *r = ask(fx, "{\"seq\":");
        json_decref(r);
    }
    /* a burst of 20 is answered normally; the next closes the connection */
    assert_int_equal(i, 21);
    assert_non_null(strstr(fx->frames[0], "Too many requests before authentication"));
}

static void test_non_request_ignored(void **state)
{
    struct fx *fx = *state;
    const char *ev = "{\"type\":\"event\",\"seq\":3,\"event\":\"x\"}";
    dap__handle_message(&fx->app, &fx->ss, ev, strlen(ev), emit, fx);
    assert_int_equal(fx->nframes, 0);
}

static void test_gate_and_unknown(void **state)
{
    struct fx *fx = *state;
    expect_error(fx, "{\"type\":\"request\",\"seq\":2,\"command\":\"rrext_public_nope\"}",
                 "bad_request", "Invalid command: rrext_public_nope");
    assert_false(fx->ss.closing);
    json_t *r = ask(fx, "{\"type\":\"request\",\"seq\":3,\"command\":\"rrext_public_probe\"}");
    assert_true(json_is_true(json_object_get(r, "success")));
    json_decref(r);
    expect_error(fx, "{\"type\":\"request\",\"seq\":4,\"command\":\"rrext_deploy_list\"}",
                 "unauthorized", "Not authenticated");
    assert_true(fx->ss.closing);
}

/* Before authentication only the envelope is read. jansson refuses \u0000
 * in object keys, so arguments holding one show whether they were parsed:
 * a command the gate refuses is answered Not authenticated (never
 * "not valid JSON"), an unknown public one Invalid command; once
 * authenticated, the same arguments are parsed and refused. */
static void test_gate_before_arguments(void **state)
{
    struct fx *fx = *state;
    expect_error(fx, "{\"seq\":1,\"command\":\"rrext_public_nope\","
                     "\"arguments\":{\"a\\u0000\":1}}",
                 "bad_request", "Invalid command: rrext_public_nope");
    assert_false(fx->ss.closing);
    /* the shape of arguments is part of the envelope */
    expect_error(fx, "{\"seq\":2,\"command\":\"rrext_deploy_list\","
                     "\"arguments\":[1]}",
                 "bad_request", "arguments must be an object");
    assert_false(fx->ss.closing);
    static const char *const refused[] = {"rrext_deploy_list", "rrext_deploy_add",
                                          "rrext_ping", "deauth", "rrext_bogus"};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        session_reset(fx);
        char req[200];
        snprintf(req, sizeof req,
                 "{\"seq\":3,\"command\":\"%s\",\"arguments\":{\"a\\u0000\":1}}",
                 refused[i]);
        json_t *r = ask(fx, req);
        assert_string_equal(str(r, "message"), "Not authenticated");
        assert_string_equal(str(r, "command"), refused[i]);
        assert_int_equal(json_integer_value(json_object_get(r, "request_seq")), 3);
        json_decref(r);
        assert_true(fx->ss.closing);
    }
    session_reset(fx);
    auth(fx, fx->key);
    expect_error(fx, "{\"seq\":4,\"command\":\"rrext_deploy_preview\","
                     "\"arguments\":{\"a\\u0000\":1}}",
                 "bad_request", "Malformed request: not valid JSON");
    assert_false(fx->ss.closing);
    /* list reads its arguments from the text and builds no tree: a key
     * jansson cannot hold is no reason to refuse it */
    json_t *r = ask(fx, "{\"seq\":5,\"command\":\"rrext_deploy_list\","
                        "\"arguments\":{\"a\\u0000\":1}}");
    assert_true(json_is_true(json_object_get(r, "success")));
    json_decref(r);
}

static void test_auth_and_connect_result(void **state)
{
    struct fx *fx = *state;
    char req[256];
    snprintf(req, sizeof req,
             "{\"type\": \"request\", \"seq\": 1, \"command\": \"auth\", "
             "\"arguments\": {\"auth\": \"Bearer %s\", \"clientName\": \"Python SDK\"}}",
             fx->key);
    json_t *r = ask(fx, req);
    json_t *body = json_object_get(r, "body");
    assert_string_equal(str(body, "userId"), "alice");
    assert_string_equal(str(body, "userToken"), "");
    assert_string_equal(str(body, "defaultTeam"), "default");
    json_t *team = json_array_get(json_object_get(json_array_get(
                       json_object_get(body, "organizations"), 0), "teams"), 0);
    assert_int_equal(json_array_size(json_object_get(team, "permissions")), 2);
    json_decref(r);

    /* Server seq counts up per connection. */
    r = ask(fx, "{\"type\":\"request\",\"seq\":2,\"command\":\"rrext_ping\"}");
    assert_int_equal(json_integer_value(json_object_get(r, "seq")), 2);
    assert_true(json_is_true(json_object_get(json_object_get(r, "body"), "pong")));
    json_decref(r);
    expect_error(fx, "{\"type\":\"request\",\"seq\":3,\"command\":\"bogus\"}",
                 "bad_request", "Invalid command: bogus");
}

static void test_auth_failures(void **state)
{
    struct fx *fx = *state;
    expect_error(fx, "{\"type\":\"request\",\"seq\":1,\"command\":\"auth\"}",
                 "unauthorized", "No authorization provided");
    assert_true(fx->ss.closing);
    fx->ss.closing = false;
    expect_error(fx,
                 "{\"type\":\"request\",\"seq\":1,\"command\":\"auth\","
                 "\"arguments\":{\"auth\":\"rrk_nope\"}}",
                 "unauthorized", "Invalid API key");
    for (int i = 0; i < 3; i++)
        auth(fx, fx->key);
    expect_error(fx,
                 "{\"type\":\"request\",\"seq\":1,\"command\":\"auth\","
                 "\"arguments\":{\"auth\":\"x\"}}",
                 "unauthorized", "Too many authentication attempts");
}

/* After 30 failed auths from one address the next auth is refused without
 * its credential being looked at, even a valid one, with when to retry;
 * another address is not affected. */
static void test_auth_throttled(void **state)
{
    struct fx *fx = *state;
    const char *wrong = "{\"type\":\"request\",\"seq\":1,\"command\":\"auth\","
                        "\"arguments\":{\"auth\":\"rrk_nope\"}}";
    for (int i = 0; i < 30; i++) {
        session_reset(fx);
        expect_error(fx, wrong, "unauthorized", "Invalid API key");
    }
    char req[256];
    snprintf(req, sizeof req,
             "{\"type\":\"request\",\"seq\":2,\"command\":\"auth\","
             "\"arguments\":{\"auth\":\"%s\"}}",
             fx->key);
    session_reset(fx);
    json_t *r = ask(fx, req);
    assert_string_equal(str(r, "code"), "unauthorized");
    /* a token every 2 s: 2 s at most, 1 if the failures took over a second */
    const char *m = str(r, "message");
    const char *want = "Too many failed authentication attempts from this "
                       "address: retry in ";
    assert_int_equal(strncmp(m, want, strlen(want)), 0);
    assert_true(strcmp(m + strlen(want), "2 s") == 0 ||
                strcmp(m + strlen(want), "1 s") == 0);
    assert_int_equal(json_integer_value(json_object_get(r, "request_seq")), 2);
    json_decref(r);
    assert_false(fx->ss.authed);
    assert_true(fx->ss.closing);
    const struct dap_guard_stats *st = dap__guard_stats(fx->app.guard);
    assert_int_equal(st->auth_failed, 30);
    assert_int_equal(st->throttled_address, 1);
    session_reset(fx);
    assert_int_equal(dap__addr_parse("192.0.2.77", &fx->ss.peer), 0);
    auth(fx, fx->key);
}

static void test_revoked_session(void **state)
{
    struct fx *fx = *state;
    auth(fx, fx->key);
    assert_false(dap__session_recheck(&fx->app, &fx->ss));
    assert_int_equal(store_key_revoke(fx->st, fx->key, FAKE_NOW, NULL), 0);
    assert_true(dap__session_recheck(&fx->app, &fx->ss));
    expect_error(fx, "{\"type\":\"request\",\"seq\":5,\"command\":\"rrext_ping\"}",
                 "unauthorized", "Not authenticated");
    assert_true(fx->ss.closing);
}

/* ---------------------------------------------------------------- deploy */

static void test_pipeline_verbatim(void **state)
{
    struct fx *fx = *state;
    auth(fx, fx->key);
    const char *pipe = "{\"z\": 1, \"project_id\": \"p\\u00e9\", \"n\": "
                       "[12345678901234567890, 1e400, -0.0, 0.1000, 1E+2], "
                       "\"s\": \"\\ud83d\\ude00 \\\" \\/\", \"a\": {}}";
    char req[512];
    snprintf(req, sizeof req,
             "{\"type\":\"request\",\"seq\":9,\"command\":\"rrext_deploy_add\","
             "\"arguments\":{\"pipeline\": %s, \"schedule\": \"*/15 * * * *\"}}",
             pipe);
    /* The frame holds numbers no double can, so read it with the raw scanner. */
    frames_clear(fx);
    dap__handle_message(&fx->app, &fx->ss, req, strlen(req), emit, fx);
    assert_int_equal(fx->nframes, 1);
    const char *frame = fx->frames[0];
    struct jraw_span b, p, v;
    assert_int_equal(jraw_check(frame, strlen(frame), 64, NULL), 0);
    assert_true(jraw_member(frame, strlen(frame), "success", &v, NULL));
    assert_memory_equal(v.p, "true", 4);
    assert_true(jraw_member(frame, strlen(frame), "body", &b, NULL));
    assert_true(jraw_member(b.p, b.n, "state", &v, NULL));
    assert_memory_equal(v.p, "\"active\"", v.n);
    assert_true(jraw_member(b.p, b.n, "created_by", &v, NULL));
    assert_memory_equal(v.p, "\"alice\"", v.n);
    /* 00:00:00.25 -> the next quarter hour */
    assert_true(jraw_member(b.p, b.n, "next_run_at", &v, NULL));
    assert_memory_equal(v.p, "1767226500.000000", v.n);
    assert_true(jraw_member(b.p, b.n, "pipeline", &p, NULL));
    struct buf want;
    buf_init(&want, 0);
    jraw_compact(&want, pipe, strlen(pipe));
    assert_int_equal(p.n, want.len);
    assert_memory_equal(p.p, buf_data(&want), p.n);
    buf_free(&want);

    expect_error(fx, req, "conflict", "Deployment already exists: p\xc3\xa9");
}

/* A run's task goes out as the engine's JSON, not as a string: key order
 * and number spelling as stored, white space stripped (one-line frames). A
 * run without one has no "task"; a task that is not JSON is left out. */
static void test_run_task_on_the_wire(void **state)
{
    (void)state;
    static const char task[] = "{\"token\":\"tk-1\",\"id\":\"t\\u00e9\",\"state\":"
                               "\"completed\",\"exitCode\":0,\"n\":12345678901234567890,"
                               "\"x\":1e400,\"counters\":{\"docs\":3}}";
    struct store_run r = fixture_run("alice", "p", "manual", 0, STORE_RUN_SUCCEEDED);
    r.id = 7;
    r.exit_code = 0;
    struct buf b;
    buf_init(&b, 0);
    dap__write_run(&b, &r, true);
    assert_null(strstr(buf_cstr(&b), "task"));
    assert_int_equal(jraw_check(buf_cstr(&b), b.len, 64, NULL), 0);

    for (int with_output = 0; with_output < 2; with_output++) {
        r.task = (char *)task;
        buf_reset(&b);
        dap__write_run(&b, &r, with_output);
        const char *t = buf_cstr(&b);
        assert_int_equal(jraw_check(t, b.len, 64, NULL), 0);
        struct jraw_span v;
        assert_true(jraw_member(t, b.len, "task", &v, NULL));
        assert_int_equal(v.n, strlen(task));
        assert_memory_equal(v.p, task, v.n);
        char tail[sizeof task + 16]; /* the last field */
        snprintf(tail, sizeof tail, ",\"task\":%s}", task);
        assert_true(b.len > strlen(tail));
        assert_string_equal(t + b.len - strlen(tail), tail);
    }
    buf_reset(&b);

    /* White space, a newline among it, is stripped; the rest is kept. */
    r.task = (char *)"{ \"token\" :\n \"tk-1\",\r\n\t\"n\": 1.50 }";
    dap__write_run(&b, &r, true);
    assert_null(strchr(buf_cstr(&b), '\n'));
    assert_non_null(strstr(buf_cstr(&b), ",\"task\":{\"token\":\"tk-1\",\"n\":1.50}}"));
    buf_reset(&b);

    /* Not JSON: left out, the run object still valid. */
    r.task = (char *)"{\"token\":";
    dap__write_run(&b, &r, true);
    assert_null(strstr(buf_cstr(&b), "task"));
    assert_int_equal(jraw_check(buf_cstr(&b), b.len, 64, NULL), 0);
    buf_free(&b);
}

/* rrext_deploy_runs answers with the task of a run that has one. */
static void test_runs_carry_the_task(void **state)
{
    struct fx *fx = *state;
    auth(fx, fx->key);
    json_decref(ask(fx, "{\"type\":\"request\",\"seq\":1,\"command\":"
                        "\"rrext_deploy_add\",\"arguments\":{\"pipeline\":"
                        "{\"project_id\":\"p\"},\"schedule\":\"manual\"}}"));
    struct store_run r = fixture_run("alice", "p", "manual", 0, STORE_RUN_SUCCEEDED);
    r.task = (char *)"{\"token\":\"tk-9\",\"state\":\"completed\"}";
    fixture_add_run(fx->st, &r, 100);
    r.task = NULL;
    fixture_add_run(fx->st, &r, 100);
    json_t *res = ask(fx, "{\"type\":\"request\",\"seq\":2,\"command\":"
                          "\"rrext_deploy_runs\",\"arguments\":{\"projectId\":\"p\"}}");
    json_t *runs = json_object_get(json_object_get(res, "body"), "runs");
    assert_int_equal(json_array_size(runs), 2);
    assert_null(json_object_get(json_array_get(runs, 0), "task")); /* newest first */
    json_t *task = json_object_get(json_array_get(runs, 1), "task");
    assert_true(json_is_object(task));
    assert_string_equal(str(task, "token"), "tk-9");
    assert_string_equal(str(task, "state"), "completed");
    json_decref(res);
}

static void test_update_forces_project_id(void **state)
{
    struct fx *fx = *state;
    auth(fx, fx->key);
    json_t *r = ask(fx, "{\"type\":\"request\",\"seq\":2,\"command\":"
                         "\"rrext_deploy_add\",\"arguments\":{\"pipeline\":"
                         "{\"project_id\":\"p1\"}}}");
    assert_true(json_is_null(json_object_get(json_object_get(r, "body"),
                                             "next_run_at")));
    json_decref(r);

    static const struct {
        const char *sent, *stored;
    } cases[] = {
        {"{\"b\":1,\"project_id\":\"other\",\"c\":2}",
         "{\"b\":1,\"project_id\":\"p1\",\"c\":2}"},
        {"{\"b\":1}", "{\"b\":1,\"project_id\":\"p1\"}"},
        {"{}", "{\"project_id\":\"p1\"}"},
        {"{\"project_id\": \"p1\", \"x\": 1.50}", "{\"project_id\":\"p1\",\"x\":1.50}"},
        {"{\"project_id\":7}", "{\"project_id\":\"p1\"}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char req[256];
        snprintf(req, sizeof req,
                 "{\"type\":\"request\",\"seq\":3,\"command\":\"rrext_deploy_update\","
                 "\"arguments\":{\"projectId\":\"p1\",\"pipeline\":%s}}",
                 cases[i].sent);
        r = ask(fx, req);
        assert_true(json_is_true(json_object_get(r, "success")));
        json_decref(r);
        struct store_dep d;
        assert_int_equal(store_dep_get(fx->st, "alice", "p1", &d), 0);
        assert_string_equal(d.pipeline, cases[i].stored);
        store_dep_clear(&d);
    }
}

static void test_update_rules(void **state)
{
    struct fx *fx = *state;
    auth(fx, fx->key);
    json_decref(ask(fx, "{\"type\":\"request\",\"seq\":2,\"command\":"
                         "\"rrext_deploy_add\",\"arguments\":{\"pipeline\":"
                         "{\"project_id\":\"p1\"},\"schedule\":\"@hourly\"}}"));
    expect_error(fx, "{\"type\":\"request\",\"seq\":3,\"command\":\"rrext_deploy_update\","
                     "\"arguments\":{\"projectId\":\"p1\",\"schedule\":\"61 * * * *\"}}",
                 "bad_request", "Invalid schedule '61 * * * *': ");
    expect_error(fx, "{\"type\":\"request\",\"seq\":3,\"command\":\"rrext_deploy_update\","
                     "\"arguments\":{\"projectId\":\"p1\",\"state\":\"errored\"}}",
                 "bad_request", "state must be 'active' or 'paused'");
    expect_error(fx, "{\"type\":\"request\",\"seq\":3,\"command\":\"rrext_deploy_update\","
                     "\"arguments\":{\"projectId\":\"nope\"}}",
                 "not_found", "Deployment not found: nope");
    json_decref(ask(fx, "{\"type\":\"request\",\"seq\":4,\"command\":\"rrext_deploy_update\","
                         "\"arguments\":{\"projectId\":\"p1\",\"state\":\"paused\"}}"));
    struct store_dep d;
    assert_int_equal(store_dep_get(fx->st, "alice", "p1", &d), 0);
    assert_int_equal(d.state, STORE_PAUSED);
    assert_true(d.next_run_at == 0);
    store_dep_clear(&d);

    /* An errored deployment cannot be brought back by update: its owner's
     * key is revoked (the session keeps going until it is re-checked). */
    assert_int_equal(store_key_revoke(fx->st, fx->key, FAKE_NOW, NULL), 0);
    assert_int_equal(sched_keys_changed(fx->sched, FAKE_NOW), 1);
    expect_error(fx, "{\"type\":\"request\",\"seq\":5,\"command\":\"rrext_deploy_update\","
                     "\"arguments\":{\"projectId\":\"p1\",\"state\":\"active\"}}",
                 "conflict", "Deployment 'p1' is errored (owner key k_");
}

static void test_argument_errors(void **state)
{
    struct fx *fx = *state;
    auth(fx, fx->key);
    static const struct {
        const char *args, *code, *msg;
    } cases[] = {
        {"{}", "bad_request", "pipeline is required"},
        {"{\"pipeline\":{}}", "bad_request", "pipeline is required"},
        {"{\"pipeline\":\"x\"}", "bad_request", "pipeline must be an object"},
        {"{\"pipeline\":[1]}", "bad_request", "pipeline must be an object"},
        {"{\"pipeline\":{\"a\":1}}", "bad_request", "pipeline.project_id is required"},
        {"{\"pipeline\":{\"project_id\":5}}", "bad_request",
         "pipeline.project_id must be a string"},
        {"{\"pipeline\":{\"project_id\":\"a\\u0001\"}}", "bad_request",
         "pipeline.project_id must not contain control characters"},
        {"{\"pipeline\":{\"project_id\":\"p\"},\"schedule\":5}", "bad_request",
         "schedule must be a string"},
        {"{\"pipeline\":{\"project_id\":\"p\"},\"schedule\":null}", "bad_request",
         "schedule must be a string"},
        {"{\"pipeline\":{\"project_id\":\"p\"},\"schedule\":\"not-a-cron\"}",
         "bad_request", "Invalid schedule 'not-a-cron': "},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char req[256];
        snprintf(req, sizeof req,
                 "{\"type\":\"request\",\"seq\":3,\"command\":\"rrext_deploy_add\","
                 "\"arguments\":%s}",
                 cases[i].args);
        expect_error(fx, req, cases[i].code, cases[i].msg);
    }
    expect_error(fx, "{\"type\":\"request\",\"seq\":3,\"command\":\"rrext_deploy_status\","
                     "\"arguments\":{\"projectId\":5}}",
                 "bad_request", "projectId must be a string");
    expect_error(fx, "{\"type\":\"request\",\"seq\":3,\"command\":\"rrext_deploy_remove\"}",
                 "bad_request", "projectId is required");
    /* projectId is read from the text: Python's truthiness, as before */
    static const char *const falsy[] = {"null", "false", "0", "-0.0", "0e5", "\"\"",
                                        "[]", "[ ]", "{}", "{ \n}"};
    for (size_t i = 0; i < sizeof falsy / sizeof falsy[0]; i++) {
        char req[256];
        snprintf(req, sizeof req,
                 "{\"type\":\"request\",\"seq\":3,\"command\":\"rrext_deploy_status\","
                 "\"arguments\":{\"projectId\":%s}}", falsy[i]);
        expect_error(fx, req, "bad_request", "projectId is required");
    }
    static const char *const not_strings[] = {"true", "0.5", "-3", "[0]", "{\"a\":1}"};
    for (size_t i = 0; i < sizeof not_strings / sizeof not_strings[0]; i++) {
        char req[256];
        snprintf(req, sizeof req,
                 "{\"type\":\"request\",\"seq\":3,\"command\":\"rrext_deploy_status\","
                 "\"arguments\":{\"projectId\":%s}}", not_strings[i]);
        expect_error(fx, req, "bad_request", "projectId must be a string");
    }
    /* the last of duplicate keys counts, as jansson has it; escapes decode */
    expect_error(fx, "{\"type\":\"request\",\"seq\":3,\"command\":\"rrext_deploy_status\","
                     "\"arguments\":{\"projectId\":\"x\",\"projectId\":\"\\u0071\"}}",
                 "not_found", "Deployment not found: q");
    /* "p\0x" must not name "p" */
    json_decref(ask(fx, "{\"type\":\"request\",\"seq\":4,\"command\":"
                         "\"rrext_deploy_add\",\"arguments\":{\"pipeline\":"
                         "{\"project_id\":\"p\"}}}"));
    expect_error(fx, "{\"type\":\"request\",\"seq\":5,\"command\":\"rrext_deploy_status\","
                     "\"arguments\":{\"projectId\":\"p\\u0000x\"}}",
                 "bad_request", "projectId must not contain a NUL character");
}

/* The body of a status or list answer to text, as a string (owned). */
static char *body_of(struct fx *fx, const char *text)
{
    json_t *r = ask(fx, text);
    assert_true(json_is_true(json_object_get(r, "success")));
    char *b = json_dumps(json_object_get(r, "body"), JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(r);
    return b;
}

#define STATUS_P "{\"type\":\"request\",\"seq\":9,\"command\":" \
                 "\"rrext_deploy_status\",\"arguments\":{\"projectId\":\"p\"}}"
#define LIST "{\"type\":\"request\",\"seq\":9,\"command\":\"rrext_deploy_list\"}"

/* Kept replies are answered only while the store is unchanged: after a
 * write through the message layer, a write by another connection (the CLI,
 * another process), a run recorded by the scheduler, and a rolled-back
 * batch, status and list show what the store holds. */
static void test_kept_replies_follow_the_store(void **state)
{
    struct fx *fx = *state;
    auth(fx, fx->key);
    json_decref(ask(fx, "{\"type\":\"request\",\"seq\":1,\"command\":"
                        "\"rrext_deploy_add\",\"arguments\":{\"pipeline\":"
                        "{\"project_id\":\"p\"},\"schedule\":\"manual\"}}"));
    char *s1 = body_of(fx, STATUS_P), *l1 = body_of(fx, LIST);
    uint64_t hits0, misses0, hits, misses;
    dap__replies_counts(fx->app.replies, &hits0, &misses0);
    char *s2 = body_of(fx, STATUS_P), *l2 = body_of(fx, LIST);
    dap__replies_counts(fx->app.replies, &hits, &misses);
    assert_int_equal(hits, hits0 + 2); /* both kept, the same text */
    assert_string_equal(s1, s2);
    assert_string_equal(l1, l2);
    assert_non_null(strstr(s1, "\"state\":\"active\""));

    /* a write through the message layer */
    json_decref(ask(fx, "{\"type\":\"request\",\"seq\":2,\"command\":"
                        "\"rrext_deploy_update\",\"arguments\":{\"projectId\":\"p\","
                        "\"state\":\"paused\"}}"));
    char *s3 = body_of(fx, STATUS_P), *l3 = body_of(fx, LIST);
    assert_non_null(strstr(s3, "\"state\":\"paused\""));
    assert_non_null(strstr(l3, "\"state\":\"paused\""));

    /* another connection commits */
    struct store *other;
    assert_int_equal(store_open(fx->f->path, &other, NULL), 0);
    assert_int_equal(store_dep_set_errored(other, "alice", "p", "from elsewhere",
                                           FAKE_NOW), 0);
    store_close(other);
    char *s4 = body_of(fx, STATUS_P), *l4 = body_of(fx, LIST);
    assert_non_null(strstr(s4, "from elsewhere"));
    assert_non_null(strstr(l4, "from elsewhere"));

    /* another user's writes leave alice's kept replies answering */
    uint64_t h1, m1;
    dap__replies_counts(fx->app.replies, &h1, &m1);
    fixture_add_dep(fx->st, "bob", "b");
    struct store_run rb = fixture_run("bob", "b", "manual", 0, STORE_RUN_SUCCEEDED);
    fixture_add_run(fx->st, &rb, 100);
    char *s4b = body_of(fx, STATUS_P);
    dap__replies_counts(fx->app.replies, &hits, &misses);
    assert_int_equal(hits, h1 + 1);
    assert_string_equal(s4b, s4);
    free(s4b);

    /* a run recorded on this connection */
    struct store_run r = fixture_run("alice", "p", "manual", 0, STORE_RUN_SUCCEEDED);
    fixture_add_run(fx->st, &r, 100);
    char *s5 = body_of(fx, STATUS_P), *l5 = body_of(fx, LIST);
    assert_null(strstr(s4, "\"outcome\":\"succeeded\""));
    assert_non_null(strstr(s5, "\"outcome\":\"succeeded\""));
    assert_non_null(strstr(l5, "\"outcome\":\"succeeded\""));

#ifdef RRDEPLOY_TEST_HOOKS
    /* inside a batch: a write, a read that sees it, then the batch rolled
     * back -- the kept read must not outlive the write */
    assert_int_equal(store_batch_begin_read(fx->st), 0);
    json_decref(ask(fx, "{\"type\":\"request\",\"seq\":3,\"command\":"
                        "\"rrext_deploy_remove\",\"arguments\":{\"projectId\":\"p\"}}"));
    json_t *gone = ask(fx, STATUS_P);
    assert_string_equal(str(gone, "code"), "not_found");
    json_decref(gone);
    char *l6 = body_of(fx, LIST);
    assert_string_equal(l6, "{\"deployments\":[]}");
    store_test_fail_commits(fx->st, 1);
    assert_int_not_equal(store_batch_commit(fx->st), 0);
    char *s7 = body_of(fx, STATUS_P), *l7 = body_of(fx, LIST);
    assert_string_equal(s7, s5);
    assert_string_equal(l7, l5);
    free(s7);
    free(l6);
    free(l7);
#endif
    char *all[] = {s1, s2, s3, s4, s5, l1, l2, l3, l4, l5};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        free(all[i]);
}

/* The table itself: keys apart, bodies byte for byte, another snapshot
 * empties it, and its bounds (bytes, entries, one body's size) hold. */
static void test_replies_table(void **state)
{
    (void)state;
    struct dap_replies *r = dap__replies_new(64 * 1024);
    /* {other, rollbacks, any, user} */
    struct store_snapshot s1 = {1, 0, 10, 5}, s2 = {1, 0, 11, 5};
    struct buf out;
    buf_init(&out, 0);
    assert_false(dap__replies_get(r, &s1, DAP_REPLY_STATUS, "u", "p", &out));
    dap__replies_put(r, &s1, DAP_REPLY_STATUS, "u", "p", "{\"a\":1}", 7);
    dap__replies_put(r, &s1, DAP_REPLY_LIST, "u", NULL, "[\0x]", 4); /* any bytes */
    assert_true(dap__replies_get(r, &s1, DAP_REPLY_STATUS, "u", "p", &out));
    assert_int_equal(out.len, 7);
    assert_memory_equal(buf_data(&out), "{\"a\":1}", 7);
    buf_reset(&out);
    assert_true(dap__replies_get(r, &s1, DAP_REPLY_LIST, "u", NULL, &out));
    assert_int_equal(out.len, 4);
    assert_memory_equal(buf_data(&out), "[\0x]", 4);
    buf_reset(&out);
    /* (user, project) is not (user + project): "u","p" is not "up","" */
    assert_false(dap__replies_get(r, &s1, DAP_REPLY_STATUS, "up", "", &out));
    assert_false(dap__replies_get(r, &s1, DAP_REPLY_LIST, "u", "p", &out));
    assert_false(dap__replies_get(r, &s1, DAP_REPLY_STATUS, "v", "p", &out));
    /* the user's own change: that user's entries are stale, the others'
     * still answer */
    struct store_snapshot s1u = s1;
    s1u.user = 6;
    dap__replies_put(r, &s1, DAP_REPLY_STATUS, "w", "p", "{}", 2);
    assert_false(dap__replies_get(r, &s1u, DAP_REPLY_STATUS, "u", "p", &out));
    assert_true(dap__replies_get(r, &s1, DAP_REPLY_STATUS, "w", "p", &out));
    buf_reset(&out);
    dap__replies_put(r, &s1u, DAP_REPLY_STATUS, "u", "p", "{\"a\":2}", 7);
    assert_true(dap__replies_get(r, &s1u, DAP_REPLY_STATUS, "u", "p", &out));
    assert_memory_equal(buf_data(&out), "{\"a\":2}", 7);
    buf_reset(&out);
    /* another base (a commit elsewhere, a rollback): all gone, even back at
     * the first */
    assert_false(dap__replies_get(r, &s2, DAP_REPLY_STATUS, "w", "p", &out));
    assert_false(dap__replies_get(r, &s1, DAP_REPLY_STATUS, "w", "p", &out));

    /* a body over a quarter of the bytes is not kept */
    char big[16 * 1024 + 1];
    memset(big, 'x', sizeof big);
    dap__replies_put(r, &s1, DAP_REPLY_LIST, "u", NULL, big, sizeof big);
    assert_false(dap__replies_get(r, &s1, DAP_REPLY_LIST, "u", NULL, &out));
    /* the bytes bound: five bodies of 15 KiB do not fit in 64 KiB with their
     * keys; the fifth empties the table and stays */
    char id[32];
    for (int i = 0; i < 5; i++) {
        snprintf(id, sizeof id, "p%d", i);
        dap__replies_put(r, &s1, DAP_REPLY_STATUS, "u", id, big, 15 * 1024);
    }
    assert_false(dap__replies_get(r, &s1, DAP_REPLY_STATUS, "u", "p0", &out));
    assert_true(dap__replies_get(r, &s1, DAP_REPLY_STATUS, "u", "p4", &out));
    buf_reset(&out);
    /* the entries bound: half the slots (2,048) */
    for (int i = 0; i < 2048; i++) {
        snprintf(id, sizeof id, "q%d", i);
        dap__replies_put(r, &s2, DAP_REPLY_STATUS, "u", id, "{}", 2);
    }
    assert_true(dap__replies_get(r, &s2, DAP_REPLY_STATUS, "u", "q0", &out));
    assert_true(dap__replies_get(r, &s2, DAP_REPLY_STATUS, "u", "q2047", &out));
    dap__replies_put(r, &s2, DAP_REPLY_STATUS, "u", "one-more", "{}", 2);
    assert_false(dap__replies_get(r, &s2, DAP_REPLY_STATUS, "u", "q0", &out));
    assert_true(dap__replies_get(r, &s2, DAP_REPLY_STATUS, "u", "one-more", &out));
    uint64_t hits, misses;
    dap__replies_counts(r, &hits, &misses);
    assert_int_equal(hits, 8);
    assert_int_equal(misses, 10);
    buf_free(&out);
    dap__replies_free(r);
    dap__replies_free(NULL);
}

static void test_limits(void **state)
{
    struct fx *fx = *state;
    auth(fx, fx->key);
    fx->cfg.max_pipeline = 64;
    fx->cfg.max_deployments = 2;
    expect_error(fx, "{\"type\":\"request\",\"seq\":3,\"command\":\"rrext_deploy_add\","
                     "\"arguments\":{\"pipeline\":{\"project_id\":\"p\",\"pad\":"
                     "\"0123456789012345678901234567890123456789012345678901234567890\"}}}",
                 "too_large", "pipeline is too large");
    for (int i = 0; i < 2; i++) {
        char req[200];
        snprintf(req, sizeof req,
                 "{\"type\":\"request\",\"seq\":3,\"command\":\"rrext_deploy_add\","
                 "\"arguments\":{\"pipeline\":{\"project_id\":\"p%d\"}}}", i);
        json_decref(ask(fx, req));
    }
    expect_error(fx, "{\"type\":\"request\",\"seq\":3,\"command\":\"rrext_deploy_add\","
                     "\"arguments\":{\"pipeline\":{\"project_id\":\"p9\"}}}",
                 "too_large", "Deployment limit reached");
    char longid[400];
    memset(longid, 'x', 257);
    longid[257] = '\0';
    char req[600];
    snprintf(req, sizeof req,
             "{\"type\":\"request\",\"seq\":3,\"command\":\"rrext_deploy_add\","
             "\"arguments\":{\"pipeline\":{\"project_id\":\"%s\"}}}", longid);
    expect_error(fx, req, "too_large", "pipeline.project_id is longer than 256 bytes");
}

static void test_monitor_key(void **state)
{
    struct fx *fx = *state;
    auth(fx, fx->monitor);
    expect_error(fx, "{\"type\":\"request\",\"seq\":3,\"command\":\"rrext_deploy_add\","
                     "\"arguments\":{\"pipeline\":{\"project_id\":\"p\"}}}",
                 "forbidden", "Permission 'task.control' denied");
    json_t *r = ask(fx, "{\"type\":\"request\",\"seq\":4,\"command\":\"rrext_deploy_list\"}");
    char *dump = json_dumps(json_object_get(r, "body"), JSON_COMPACT);
    assert_non_null(dump);
    assert_string_equal(dump, "{\"deployments\":[]}");
    free(dump);
    json_decref(r);
}

static void watch_all(struct fx *fx)
{
    json_t *r = ask(fx, "{\"type\":\"request\",\"seq\":2,\"command\":"
                         "\"rrext_deploy_watch\"}");
    assert_true(json_is_true(json_object_get(r, "success")));
    json_decref(r);
    assert_true(dap__session_wants(&fx->ss, "alice", "p", FAKE_NOW));
}

/* A watch follows the session's current key: a re-auth without
 * task.monitor or as another user ends it, a failed re-auth too; the same
 * user with task.monitor keeps it. Expiry and permission are checked at
 * every delivery. */
static void test_watch_follows_the_key(void **state)
{
    struct fx *fx = *state;
    char control[STORE_KEY_TEXT_MAX], other[STORE_KEY_TEXT_MAX];
    char expiring[STORE_KEY_TEXT_MAX];
    fixture_key(fx->st, "alice", STORE_PERM_CONTROL, 0, FAKE_NOW, control, NULL);
    fixture_key(fx->st, "alice", STORE_PERM_ALL, 0, FAKE_NOW, other, NULL);
    fixture_key(fx->st, "alice", STORE_PERM_ALL, FAKE_NOW + 60, FAKE_NOW,
                expiring, NULL);

    auth(fx, fx->key);
    watch_all(fx);
    assert_false(dap__session_wants(&fx->ss, "mona", "p", FAKE_NOW));
    auth(fx, control); /* same user, no task.monitor: the reply is as usual */
    assert_false(fx->ss.watching);
    assert_false(dap__session_wants(&fx->ss, "alice", "p", FAKE_NOW));

    session_reset(fx);
    auth(fx, fx->key);
    watch_all(fx);
    auth(fx, fx->monitor); /* another user */
    assert_false(fx->ss.watching);
    assert_false(dap__session_wants(&fx->ss, "alice", "p", FAKE_NOW));
    assert_false(dap__session_wants(&fx->ss, "mona", "p", FAKE_NOW));

    session_reset(fx);
    auth(fx, fx->key);
    watch_all(fx);
    auth(fx, other); /* same user, task.monitor: kept */
    assert_true(dap__session_wants(&fx->ss, "alice", "p", FAKE_NOW));
    expect_error(fx, "{\"type\":\"request\",\"seq\":3,\"command\":\"auth\","
                     "\"arguments\":{\"auth\":\"rrk_nope\"}}",
                 "unauthorized", "Invalid API key");
    assert_false(fx->ss.watching);

    session_reset(fx);
    auth(fx, expiring);
    watch_all(fx);
    assert_false(dap__session_wants(&fx->ss, "alice", "p", FAKE_NOW + 60));
    /* the permission itself, should the session's key lose it */
    fx->ss.key.perms = STORE_PERM_CONTROL;
    assert_false(dap__session_wants(&fx->ss, "alice", "p", FAKE_NOW));
}

/* ---------------------------------------------------------------- rrext_monitor */

/* Send rrext_monitor with args; expect success and no body. */
static void monitor(struct fx *fx, const char *args)
{
    char req[512];
    snprintf(req, sizeof req,
             "{\"type\":\"request\",\"seq\":6,\"command\":\"rrext_monitor\","
             "\"arguments\":%s}", args);
    json_t *r = ask(fx, req);
    if (!json_is_true(json_object_get(r, "success")))
        fail_msg("rrext_monitor %s: %s", args, str(r, "message"));
    assert_null(json_object_get(r, "body"));
    json_decref(r);
}

static void monitor_error(struct fx *fx, const char *args, const char *code,
                          const char *msg)
{
    char req[512];
    snprintf(req, sizeof req,
             "{\"type\":\"request\",\"seq\":6,\"command\":\"rrext_monitor\","
             "\"arguments\":%s}", args);
    expect_error(fx, req, code, msg);
    assert_false(fx->ss.closing);
}

static void test_monitor_errors(void **state)
{
    struct fx *fx = *state;
    auth(fx, fx->key);
    const char *neither = "You must specifiy either token or project_id/source";
    const char *both = "You must specifiy either token or project_id/source, not both";
    monitor_error(fx, "{}", "bad_request", neither);
    monitor_error(fx, "{\"types\":[\"all\"]}", "bad_request", neither);
    monitor_error(fx, "{\"token\":\"\",\"projectId\":\"\"}", "bad_request", neither);
    monitor_error(fx, "{\"source\":\"s\"}", "bad_request", neither);
    monitor_error(fx, "{\"token\":\"*\",\"projectId\":\"p\"}", "bad_request", both);
    monitor_error(fx, "{\"token\":\"tk_1\",\"source\":\"s\"}", "bad_request", both);
    monitor_error(fx, "{\"token\":5}", "bad_request", "token must be a string");
    monitor_error(fx, "{\"projectId\":5}", "bad_request", "projectId must be a string");
    monitor_error(fx, "{\"projectId\":\"p\",\"source\":7}", "bad_request",
                  "source must be a string");
    const char *types = "types must be a list of event type names, a number "
                        "or a string of digits";
    monitor_error(fx, "{\"token\":\"*\",\"types\":true}", "bad_request", types);
    monitor_error(fx, "{\"token\":\"*\",\"types\":[1]}", "bad_request", types);
    monitor_error(fx, "{\"token\":\"*\",\"types\":-1}", "bad_request", types);
    monitor_error(fx, "{\"token\":\"*\",\"types\":1.5}", "bad_request", types);
    assert_int_equal(fx->ss.nmonitors, 0);
}

/* Keys, the types that replace theirs, and removal by none. */
static void test_monitor_keys(void **state)
{
    struct fx *fx = *state;
    auth(fx, fx->key);
    monitor(fx, "{\"token\":\"*\",\"types\":[\"summary\",\"TASK\"]}");
    assert_int_equal(fx->ss.nmonitors, 1);
    assert_int_equal(fx->ss.monitors[0].types, 4 | 32);
    assert_true(dap__session_wants(&fx->ss, "alice", "any", FAKE_NOW));
    assert_false(dap__session_wants(&fx->ss, "mona", "any", FAKE_NOW));
    monitor(fx, "{\"token\":\"*\",\"types\":16}"); /* replaces, no merge */
    assert_int_equal(fx->ss.nmonitors, 1);
    assert_int_equal(fx->ss.monitors[0].types, 16);
    monitor(fx, "{\"token\":\"*\",\"types\":\"none\"}");
    assert_int_equal(fx->ss.nmonitors, 0);
    assert_false(dap__session_wants(&fx->ss, "alice", "any", FAKE_NOW));

    monitor(fx, "{\"projectId\":\"p1\",\"types\":\"4\"}");
    monitor(fx, "{\"projectId\":\"p1\",\"source\":\"webhook_1\",\"types\":[\"all\"]}");
    assert_int_equal(fx->ss.nmonitors, 2);
    assert_int_equal(fx->ss.monitors[1].types, 255);
    assert_true(dap__session_wants(&fx->ss, "alice", "p1", FAKE_NOW));
    assert_false(dap__session_wants(&fx->ss, "alice", "p2", FAKE_NOW));
    monitor(fx, "{\"projectId\":\"p1\",\"types\":0}");
    assert_int_equal(fx->ss.nmonitors, 1);
    assert_true(dap__session_wants(&fx->ss, "alice", "p1", FAKE_NOW));
    monitor(fx, "{\"projectId\":\"p1\",\"source\":\"webhook_1\",\"types\":[]}");
    assert_int_equal(fx->ss.nmonitors, 0);
    assert_false(dap__session_wants(&fx->ss, "alice", "p1", FAKE_NOW));
    monitor(fx, "{\"projectId\":\"p1\",\"types\":[]}"); /* not there: fine */
    monitor(fx, "{\"projectId\":\"p1\",\"types\":[\"nonsense\"]}"); /* = none */
    assert_int_equal(fx->ss.nmonitors, 0);

    /* a task token: accepted, no deployment events */
    monitor(fx, "{\"token\":\"tk_0123\",\"types\":[\"all\"]}");
    assert_int_equal(fx->ss.nmonitors, 0);
    assert_false(dap__session_wants(&fx->ss, "alice", "p1", FAKE_NOW));

    /* at most DAP_MONITORS_MAX keys */
    for (int i = 0; i < DAP_MONITORS_MAX; i++) {
        char args[64];
        snprintf(args, sizeof args, "{\"projectId\":\"p%d\",\"types\":4}", i);
        monitor(fx, args);
    }
    monitor_error(fx, "{\"projectId\":\"one-more\",\"types\":4}", "too_large",
                  "Too many monitors on this connection: at most 16");
    monitor(fx, "{\"projectId\":\"p3\",\"types\":8}"); /* a key it has */
    monitor(fx, "{\"projectId\":\"p3\",\"types\":0}");
    assert_int_equal(fx->ss.nmonitors, DAP_MONITORS_MAX - 1);
    assert_false(dap__session_wants(&fx->ss, "alice", "p3", FAKE_NOW));
    assert_true(dap__session_wants(&fx->ss, "alice", "p15", FAKE_NOW));
}

/* Monitors deliver the user's apaevt_deploy events beside the watch, with
 * the watch's rules: task.monitor at delivery, the same user after a
 * re-auth; deauth ends them. */
static void test_monitor_delivery(void **state)
{
    struct fx *fx = *state;
    auth(fx, fx->key);
    monitor(fx, "{\"projectId\":\"p2\",\"types\":[\"task\"]}");
    json_decref(ask(fx, "{\"type\":\"request\",\"seq\":7,\"command\":"
                         "\"rrext_deploy_watch\",\"arguments\":{\"projectId\":\"p1\"}}"));
    assert_true(dap__session_wants(&fx->ss, "alice", "p1", FAKE_NOW));
    assert_true(dap__session_wants(&fx->ss, "alice", "p2", FAKE_NOW));
    assert_false(dap__session_wants(&fx->ss, "alice", "p3", FAKE_NOW));
    /* the watch is replaced on its own; the monitor stays */
    json_decref(ask(fx, "{\"type\":\"request\",\"seq\":8,\"command\":"
                         "\"rrext_deploy_watch\",\"arguments\":{\"enable\":false}}"));
    assert_false(dap__session_wants(&fx->ss, "alice", "p1", FAKE_NOW));
    assert_true(dap__session_wants(&fx->ss, "alice", "p2", FAKE_NOW));

    /* the frame a delivery sends */
    struct store_run run = fixture_run("alice", "p2", "manual", FAKE_NOW,
                                       STORE_RUN_SUCCEEDED);
    run.id = 1;
    struct sched_event ev = {.kind = SCHED_EV_RUN_FINISHED, .user = "alice",
                             .project_id = "p2", .at = FAKE_NOW, .run = &run};
    struct buf body;
    buf_init(&body, 0);
    dap__write_event(&body, &ev);
    int64_t seq = fx->ss.seq;
    struct buf *f = dap__event_frame(&fx->ss, buf_data(&body), body.len);
    json_t *e = json_loads(buf_cstr(f), 0, NULL);
    assert_non_null(e);
    assert_string_equal(str(e, "event"), "apaevt_deploy");
    assert_int_equal(json_integer_value(json_object_get(e, "seq")), seq + 1);
    assert_string_equal(str(json_object_get(e, "body"), "action"), "run_finished");
    assert_string_equal(str(json_object_get(e, "body"), "projectId"), "p2");
    json_decref(e);
    buf_free(f);
    free(f);
    buf_free(&body);

    /* a re-auth of the same user with task.monitor keeps it; of another
     * user ends it */
    char other[STORE_KEY_TEXT_MAX];
    fixture_key(fx->st, "alice", STORE_PERM_ALL, 0, FAKE_NOW, other, NULL);
    auth(fx, other);
    assert_true(dap__session_wants(&fx->ss, "alice", "p2", FAKE_NOW));
    auth(fx, fx->monitor);
    assert_int_equal(fx->ss.nmonitors, 0);
    assert_false(dap__session_wants(&fx->ss, "mona", "p2", FAKE_NOW));

    /* without task.monitor: accepted, but nothing is delivered */
    char control[STORE_KEY_TEXT_MAX];
    fixture_key(fx->st, "carl", STORE_PERM_CONTROL, 0, FAKE_NOW, control, NULL);
    session_reset(fx);
    auth(fx, control);
    monitor(fx, "{\"token\":\"*\",\"types\":\"255\"}");
    assert_false(dap__session_wants(&fx->ss, "carl", "p2", FAKE_NOW));

    session_reset(fx);
    auth(fx, fx->key);
    monitor(fx, "{\"token\":\"*\",\"types\":[\"all\"]}");
    json_decref(ask(fx, "{\"type\":\"request\",\"seq\":9,\"command\":\"deauth\"}"));
    assert_int_equal(fx->ss.nmonitors, 0);
    assert_false(dap__session_wants(&fx->ss, "alice", "p2", FAKE_NOW));
}

static void test_preview(void **state)
{
    struct fx *fx = *state;
    auth(fx, fx->key);
    json_t *r = ask(fx, "{\"type\":\"request\",\"seq\":3,\"command\":\"rrext_deploy_preview\","
                         "\"arguments\":{\"schedule\":\"0 0 1 1 *\",\"count\":2,"
                         "\"from\":1767225600.0}}");
    json_t *body = json_object_get(r, "body");
    assert_string_equal(str(body, "timezone"), "UTC");
    json_t *next = json_object_get(body, "next");
    assert_int_equal(json_array_size(next), 2);
    assert_string_equal(str(json_array_get(next, 0), "local"),
                        "2027-01-01T00:00:00+00:00");
    json_decref(r);
    expect_error(fx, "{\"type\":\"request\",\"seq\":3,\"command\":\"rrext_deploy_preview\","
                     "\"arguments\":{\"schedule\":\"* * *\"}}",
                 "bad_request", "Invalid schedule '* * *': ");
    expect_error(fx, "{\"type\":\"request\",\"seq\":3,\"command\":\"rrext_deploy_preview\","
                     "\"arguments\":{\"schedule\":\"@daily\",\"count\":1001}}",
                 "bad_request", "count must be an integer from 1 to 1000");
}

/* What the clients make of a server's messages: responses matched by
 * request_seq with their outcome, events with their name, the body as its
 * exact text; anything else dropped, and text that is not a JSON object
 * refused. */
static struct dap_msg *parse(const char *text, int want_rc)
{
    struct dap_msg *m = NULL;
    char why[DAP_WHY_MAX] = "";
    assert_int_equal(dap__msg_parse(xstrdup(text), strlen(text), &m, why), want_rc);
    if (want_rc != 0) {
        assert_null(m);
        assert_non_null(strstr(why, "the server sent invalid JSON"));
    }
    return m;
}

static void test_client_decoding(void **state)
{
    (void)state;
    struct dap_msg *m = parse("{\"type\":\"response\",\"seq\":9,\"request_seq\":12,"
                              "\"command\":\"x\",\"success\":false,\"message\":"
                              "\"no \\\"such\\\" thing\",\"code\":\"not_found\","
                              "\"body\":{\"n\": 1.50}}", 0);
    assert_non_null(m);
    assert_false(m->is_event);
    assert_null(m->event);
    assert_int_equal(m->request_seq, 12);
    assert_false(m->success);
    assert_string_equal(m->message, "no \"such\" thing");
    assert_string_equal(m->code, "not_found");
    assert_int_equal(m->body.n, strlen("{\"n\": 1.50}"));
    assert_memory_equal(m->body.p, "{\"n\": 1.50}", m->body.n);
    dap_msg_free(m);

    m = parse("{\"type\":\"response\",\"request_seq\":1}", 0);
    assert_true(m->success); /* no `success`: succeeded, as in the SDKs */
    assert_null(m->body.p);
    assert_null(m->message);
    dap_msg_free(m);

    m = parse("{\"type\":\"event\",\"seq\":3,\"event\":\"apaevt_status\","
              "\"body\":[1,2]}", 0);
    assert_true(m->is_event);
    assert_string_equal(m->event, "apaevt_status");
    assert_memory_equal(m->body.p, "[1,2]", 5);
    dap_msg_free(m);

    assert_null(parse("{\"type\":\"response\"}", 0));           /* no request_seq */
    assert_null(parse("{\"type\":\"request\",\"seq\":1}", 0));  /* not for a client */
    assert_null(parse("{}", 0));
    parse("[1]", -EPROTO);
    parse("{\"type\":", -EPROTO);
    parse("this is not json", -EPROTO);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_malformed),
        T(test_envelope_decoding),
        T(test_deep_nesting_keeps_seq),
        T(test_non_request_ignored),
        T(test_unauthenticated_flood_is_cut_off),
        T(test_gate_and_unknown),
        T(test_gate_before_arguments),
        T(test_kept_replies_follow_the_store),
        T(test_replies_table),
        T(test_auth_and_connect_result),
        T(test_auth_failures),
        T(test_auth_throttled),
        T(test_revoked_session),
        T(test_pipeline_verbatim),
        T(test_run_task_on_the_wire),
        T(test_runs_carry_the_task),
        T(test_update_forces_project_id),
        T(test_update_rules),
        T(test_argument_errors),
        T(test_limits),
        T(test_monitor_key),
        T(test_watch_follows_the_key),
        T(test_monitor_errors),
        T(test_monitor_keys),
        T(test_monitor_delivery),
        T(test_preview),
        cmocka_unit_test(test_client_decoding),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
