/* msg.c -- the DAP envelope: decode a client message, gate it, dispatch it
 * and answer it.
 *
 * Design: a message is first checked by the raw scanner (util/jraw), which
 * bounds nesting and validates UTF-8. The envelope (type, seq, command) is
 * read from the text itself; only the arguments object is parsed with
 * jansson, for typed access, and only once the authentication gate has let
 * the command through (a refused command's arguments are never parsed).
 * Values that must survive byte for byte (the pipeline) are taken from the
 * raw text, never from the tree. Every request
 * gets exactly one response frame (written by wire.c); malformed input gets
 * success:false with request_seq 0 when the seq is unknown. An auth that
 * waits for the engine gets its frame later (res.deferred; cmd.c answers).
 * The sessions' own state (their subscriptions, credential) is freed here.
 * Thread: service thread only. */
#include "dap/dap_internal.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *const dap__outcome_names[DAP_OUTCOMES] = {
    "ok",           DAP_BAD_REQUEST, DAP_UNAUTHORIZED, DAP_FORBIDDEN,
    DAP_NOT_FOUND,  DAP_CONFLICT,    DAP_TOO_LARGE,    DAP_INTERNAL,
};

static size_t outcome_index(const char *code)
{
    for (size_t i = 1; code && i < DAP_OUTCOMES; i++)
        if (strcmp(code, dap__outcome_names[i]) == 0)
            return i;
    return 0;
}

void dap__count_request(struct dap_metrics *m, const struct dap_cmd *dc,
                        const char *code, int64_t started_ns)
{
    static const double bounds[] = DAP_LATENCY_BOUNDS;
    m->requests[dap__cmd_slot(dc)][outcome_index(code)]++;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double secs = (double)((int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec - started_ns) / 1e9;
    size_t i = 0;
    while (i < DAP_LATENCY_NBUCKETS && secs > bounds[i])
        i++;
    m->latency_bucket[i]++;
    m->latency_sum += secs;
}

int dap__fail(struct dap_res *res, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    buf_reset(&res->msg);
    buf_vprintf(&res->msg, fmt, ap);
    va_end(ap);
    res->code = code;
    return -1;
}

/* ---------------------------------------------------------------- sessions */

void dap__session_unwatch(struct dap_session *ss)
{
    free(ss->watch_project);
    ss->watch_project = NULL;
    ss->watching = false;
    for (uint8_t i = 0; i < ss->nmonitors; i++)
        free(ss->monitors[i].project);
    free(ss->monitors);
    ss->monitors = NULL;
    ss->nmonitors = 0;
}

void dap__session_clear(struct dap_session *ss)
{
    dap__session_unwatch(ss);
    dap__secret_free(ss->cred);
    ss->cred = NULL;
    dap__auth_wait_free(ss->wait);
    ss->wait = NULL;
}

const char *dap__session_credential(const struct dap_session *ss)
{
    return ss->engine ? ss->cred : NULL;
}

bool dap__session_wants(const struct dap_session *ss, const char *user,
                        const char *project_id, double now)
{
    /* Permission and expiry are checked at every delivery, not only when
     * the watch began: the session's key may have changed since. */
    bool expired = !ss->dev && ss->key.expires_at != 0 &&
                   now >= ss->key.expires_at;
    if (!(ss->watching || ss->nmonitors) || !ss->authed || ss->revoked ||
        ss->closing || expired || !(ss->key.perms & STORE_PERM_MONITOR) ||
        strcmp(ss->key.user, user) != 0)
        return false;
    if (ss->watching &&
        (!ss->watch_project || strcmp(ss->watch_project, project_id) == 0))
        return true;
    for (uint8_t i = 0; i < ss->nmonitors; i++) {
        const char *p = ss->monitors[i].project;
        if (!p || strcmp(p, project_id) == 0)
            return true;
    }
    return false;
}

/* ---------------------------------------------------------------- decoding */

/* Is v a JSON number (raw text) holding an integer a double represents
 * exactly? 1.0 and 1e2 count, as they do for the SDKs' JSON parsers. */
static bool raw_int(struct jraw_span v, int64_t *out)
{
    if (v.n == 0 || !(v.p[0] == '-' || (v.p[0] >= '0' && v.p[0] <= '9')))
        return false;
    char small[64];
    char *tok = v.n < sizeof small ? small : xmalloc(v.n + 1);
    memcpy(tok, v.p, v.n);
    tok[v.n] = '\0';
    char *end;
    double d = strtod(tok, &end);
    /* all of it a number (always so in valid JSON; salvage_seq also reads
     * broken text, where "12x" or "0x1A" must not count) */
    bool whole = end == tok + v.n && strspn(tok, "-+.eE0123456789") == v.n;
    if (tok != small)
        free(tok);
    if (!whole || !isfinite(d) || d != floor(d) || fabs(d) > 9007199254740992.0)
        return false;
    *out = (int64_t)d;
    return true;
}

/* The seq of a message that failed validation, when a top-level "seq" member
 * holding an integer can still be found (too deep nesting elsewhere, say),
 * so that the client's pending call is answered; 0 otherwise. */
static int64_t salvage_seq(const char *text, size_t len)
{
    struct jraw_span sp;
    int64_t v;
    return jraw_member(text, len, "seq", &sp, NULL) && raw_int(sp, &v) ? v : 0;
}

/* Before authentication a connection may send a burst of UNAUTH_BURST
 * messages, then UNAUTH_RATE per second: enough for any client's auth (and
 * a probe or a retry), not enough to keep the server busy parsing junk. */
#define UNAUTH_BURST 20.0
#define UNAUTH_RATE 5.0

static bool unauth_allowed(struct dap_session *ss)
{
    int64_t now = time_now_mono_ms();
    if (ss->unauth_at_ms == 0) {
        ss->unauth_tokens = UNAUTH_BURST;
    } else {
        ss->unauth_tokens += (double)(now - ss->unauth_at_ms) / 1000.0 * UNAUTH_RATE;
        if (ss->unauth_tokens > UNAUTH_BURST)
            ss->unauth_tokens = UNAUTH_BURST;
    }
    ss->unauth_at_ms = now;
    if (ss->unauth_tokens < 1.0)
        return false;
    ss->unauth_tokens -= 1.0;
    return true;
}

static bool is_public(const char *cmd)
{
    return strncmp(cmd, "rrext_public_", 13) == 0;
}

/* ---------------------------------------------------------------- steps */

/* A message goes through four steps, each a function below: the envelope
 * (type, seq, command, the shape of arguments) read from the text; the
 * authentication gate; the arguments parsed; the command run. Before
 * authentication only the envelope is ever read: the arguments of a command
 * the gate refuses are never parsed, and those of auth and the public
 * commands are small (the server caps messages before authentication). */

/* What a step decided. */
enum step {
    STEP_GO,      /* on to the next step */
    STEP_ANSWER,  /* res holds the answer: send it */
    STEP_SILENT,  /* no answer at all (not a request) */
};

/* A message's envelope, read from its text. */
struct envelope {
    int64_t seq;               /* request_seq of the answer (0 = unknown) */
    const char *cmd;           /* the decoded command, "" when absent */
    size_t cmd_len;            /* its bytes (it may hold a NUL) */
    struct buf cmd_text;       /* owned: cmd's storage, when not inline */
    char cmd_inline[48];       /* cmd's storage when short and unescaped */
    struct jraw_span args;     /* raw "arguments"; p NULL if absent or null */
    const struct dap_cmd *dc;  /* the command; NULL if unknown */
};

enum { ENV_TYPE, ENV_SEQ, ENV_COMMAND, ENV_ARGS, ENV_FIELDS };
static const char *const envelope_keys[ENV_FIELDS] = {"type", "seq", "command",
                                                      "arguments"};

static void session_expire_check(struct dap_app *app, struct dap_session *ss)
{
    if (ss->authed && !ss->dev && ss->key.expires_at != 0 &&
        dap__now(app) >= ss->key.expires_at)
        ss->revoked = true;
}

/* Step 0, before authentication only: the message rate. */
static enum step admit(struct dap_app *app, struct dap_session *ss,
                       const char *text, size_t len, struct envelope *env,
                       struct dap_res *res)
{
    if (ss->authed || unauth_allowed(ss))
        return STEP_GO;
    env->seq = salvage_seq(text, len);
    dap__fail(res, DAP_UNAUTHORIZED, "Too many requests before authentication");
    res->close = true;
    dap__guard_note(app->guard, &ss->peer, DAP_GUARD_RATE, time_now_mono_ms(),
                    "unauthenticated connection closed: too many requests");
    return STEP_ANSWER;
}

/* Step 1: the envelope, straight from the text (no tree is built). */
static enum step decode_envelope(struct dap_app *app, const char *text,
                                 size_t len, struct envelope *env,
                                 struct dap_res *res)
{
    struct err e = {0};
    if (jraw_check(text, len, app->cfg->max_depth, &e) != 0) {
        env->seq = salvage_seq(text, len);
        dap__fail(res, DAP_BAD_REQUEST, "Malformed request: %s", e.msg);
        return STEP_ANSWER;
    }
    struct jraw_span f[ENV_FIELDS];
    if (!jraw_members(text, len, envelope_keys, ENV_FIELDS, f)) {
        dap__fail(res, DAP_BAD_REQUEST,
                  "Malformed request: expected a JSON object");
        return STEP_ANSWER;
    }
    if (f[ENV_TYPE].p && !jraw_str_eq(f[ENV_TYPE], "request"))
        return STEP_SILENT; /* events and responses from a client */
    if (!raw_int(f[ENV_SEQ], &env->seq)) {
        dap__fail(res, DAP_BAD_REQUEST,
                  "Malformed request: seq must be an integer");
        return STEP_ANSWER;
    }
    struct jraw_span c = f[ENV_COMMAND];
    if (c.p && c.n >= 2 && c.n - 2 < sizeof env->cmd_inline && c.p[0] == '"' &&
        !memchr(c.p + 1, '\\', c.n - 2)) {
        /* the usual command name: no escape to decode, no allocation */
        memcpy(env->cmd_inline, c.p + 1, c.n - 2);
        env->cmd_inline[c.n - 2] = '\0';
        env->cmd = env->cmd_inline;
        env->cmd_len = c.n - 2;
    } else if (c.p) {
        if (!jraw_str(&env->cmd_text, c)) {
            dap__fail(res, DAP_BAD_REQUEST,
                      "Malformed request: command must be a string");
            return STEP_ANSWER;
        }
        env->cmd = buf_cstr(&env->cmd_text);
        env->cmd_len = env->cmd_text.len;
    }
    struct jraw_span args = f[ENV_ARGS];
    if (args.p && args.n == 4 && memcmp(args.p, "null", 4) == 0)
        args.p = NULL;
    if (args.p && args.p[0] != '{') {
        dap__fail(res, DAP_BAD_REQUEST, "arguments must be an object");
        return STEP_ANSWER;
    }
    env->args = args;
    env->dc = strlen(env->cmd) == env->cmd_len ? dap__cmd_find(env->cmd) : NULL;
    return STEP_GO;
}

/* Step 2: the authentication gate. Before authentication (or once the key
 * was revoked or expired) only public commands pass: auth,
 * rrext_public_probe, and any other rrext_public_* name (to be answered
 * Invalid command). Anything else ends the session. */
static enum step gate(struct dap_app *app, struct dap_session *ss,
                      const struct envelope *env, struct dap_res *res)
{
    session_expire_check(app, ss);
    if (ss->authed && !ss->revoked)
        return STEP_GO;
    if (env->dc ? env->dc->public_ : is_public(env->cmd))
        return STEP_GO;
    if (ss->revoked)
        ss->authed = false;
    dap__fail(res, DAP_UNAUTHORIZED, "Not authenticated");
    res->close = true;
    return STEP_ANSWER;
}

/* Step 3: the arguments, parsed with jansson for typed access. An unknown
 * command's are not parsed before authentication: it is refused anyway. */
static enum step parse_args(const struct dap_session *ss,
                            const struct envelope *env, struct dap_req *req,
                            struct dap_res *res)
{
    req->command = env->cmd;
    req->seq = env->seq;
    req->raw_args = env->args;
    if (env->dc && env->dc->raw)
        return STEP_GO;
    if (!env->args.p || (!env->dc && !ss->authed)) {
        req->args = json_object();
        return STEP_GO;
    }
    /* jansson refuses 1e400 and "\ud800" though both are valid JSON: the
     * tree is only used for typed arguments, never to echo values, so
     * jraw_load reads them as 0 and U+FFFD */
    req->args = jraw_load(env->args.p, env->args.n,
                          JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL, NULL);
    if (!req->args) {
        dap__fail(res, DAP_BAD_REQUEST, "Malformed request: not valid JSON");
        return STEP_ANSWER;
    }
    return STEP_GO;
}

/* Step 4: the command: known, permitted, the store writable, its handler. */
static void dispatch(struct dap_app *app, struct dap_session *ss,
                     const struct envelope *env, struct dap_req *req,
                     struct dap_res *res)
{
    const struct dap_cmd *dc = env->dc;
    if (!dc) {
        dap__fail(res, DAP_BAD_REQUEST, "Invalid command: %s", env->cmd);
        return;
    }
    if (dc->perm && !(ss->key.perms & dc->perm)) {
        dap__fail(res, DAP_FORBIDDEN, "Permission '%s' denied",
                  dc->perm == STORE_PERM_CONTROL   ? "task.control"
                  : dc->perm == STORE_PERM_MONITOR ? "task.monitor"
                                                   : "org.admin");
        return;
    }
    if (dc->writes && store_batch_write(app->store) != 0) {
        dap__fail(res, DAP_INTERNAL,
                  "Internal error: the store is not writable");
        return;
    }
    dc->fn(app, ss, req, res);
}

/* ---------------------------------------------------------------- a message */

void dap__handle_message(struct dap_app *app, struct dap_session *ss,
                         const char *text, size_t len, dap_emit_fn emit,
                         void *ud)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct dap_res res = {.code = NULL, .close = false};
    /* The body is written after room for its envelope, and becomes the
     * frame (dap__response_frame). */
    buf_init(&res.body, DAP_FRAME_HEAD + DAP_ENVELOPE_ROOM);
    buf_reserve(&res.body, 1024); /* a status record without growing */
    buf_init(&res.msg, 0);
    struct envelope env = {.cmd = ""};
    buf_init(&env.cmd_text, 0);
    struct dap_req req = {0};
    buf_init(&req.text, 0);

    enum step st = admit(app, ss, text, len, &env, &res);
    if (st == STEP_GO)
        st = decode_envelope(app, text, len, &env, &res);
    if (st == STEP_GO)
        st = gate(app, ss, &env, &res);
    if (st == STEP_GO)
        st = parse_args(ss, &env, &req, &res);
    if (st == STEP_GO)
        dispatch(app, ss, &env, &req, &res);

    if (st != STEP_SILENT && !res.deferred) {
        emit(ud, dap__response_frame(ss, env.seq, env.cmd, env.cmd_len, &res));
        /* answers given before the command was known count as "other" */
        dap__count_request(&app->metrics, env.dc, res.code,
                           (int64_t)t0.tv_sec * 1000000000 + t0.tv_nsec);
        if (res.close)
            ss->closing = true;
    }
    json_decref(req.args);
    buf_free(&req.text);
    buf_free(&env.cmd_text);
    buf_free(&res.body);
    buf_free(&res.msg);
}
