/* cmd.c -- the command handlers: session (auth, deauth, ping, probe,
 * rrext_monitor) and the deployment commands (rrext_deploy_*).
 *
 * Design: each handler validates its arguments in the order docs/protocol.md
 * §5 gives (that order decides which message the caller sees), reads from
 * the store or changes deployments and runs through the scheduler (which
 * writes the store and its index together), and writes its body into
 * res->body with wire.c. Pipelines are handled as raw text (util/jraw) so
 * they come back exactly as sent. Handlers never fail silently: every path
 * ends in a body or a dap__fail with a wire code -- except an auth that
 * waits for the RocketRide engine's verdict: it is deferred, and answered by
 * dap__session_answer once the verdict is in (identity.c remembers recent
 * verdicts; server.c holds the session meanwhile).
 * Thread: service thread only. */
#include "dap/dap_internal.h"
#include "util/vault.h"

#include <math.h>
#include <sodium.h>
#include <strings.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "scheduler/scheduler.h"

#define PROJECT_ID_MAX 256
#define DEV_USER "local"
#define PREVIEW_MAX 1000
#define RUNS_MAX 1000
#define IDEM_KEY_MAX 256

/* ---------------------------------------------------------------- helpers */

/* Python truthiness of a JSON value, as the reference server tests args. */
static bool truthy(const json_t *v)
{
    if (!v)
        return false;
    switch (json_typeof(v)) {
    case JSON_NULL:
    case JSON_FALSE: return false;
    case JSON_TRUE: return true;
    case JSON_STRING: return json_string_length(v) > 0;
    case JSON_INTEGER:
    case JSON_REAL: return json_number_value(v) != 0;
    case JSON_OBJECT: return json_object_size(v) > 0;
    case JSON_ARRAY: return json_array_size(v) > 0;
    }
    return false;
}

/* Python truthiness of a raw JSON value ({NULL, 0} when absent), as
 * truthy() of its tree: false for null, false, 0, "", [] and {}. */
static bool raw_truthy(struct jraw_span v)
{
    if (!v.p || v.n == 0)
        return false;
    switch (v.p[0]) {
    case 'n':
    case 'f': return false;
    case 't': return true;
    case '"': return v.n > 2;
    case '[':
    case '{':
        for (size_t i = 1; i + 1 < v.n; i++)
            if (v.p[i] != ' ' && v.p[i] != '\t' && v.p[i] != '\n' && v.p[i] != '\r')
                return true;
        return false;
    default: /* a number: any digit other than 0 before the exponent */
        for (size_t i = 0; i < v.n && v.p[i] != 'e' && v.p[i] != 'E'; i++)
            if (v.p[i] >= '1' && v.p[i] <= '9')
                return true;
        return false;
    }
}

/* The `projectId` argument: required, a string without NUL. Read from the
 * raw arguments, so commands that take nothing else build no tree; *out is
 * borrowed from req until the request is answered. */
static int arg_project_id(struct dap_req *req, struct dap_res *res,
                          const char **out)
{
    struct jraw_span v = {NULL, 0};
    if (req->raw_args.p)
        (void)jraw_member(req->raw_args.p, req->raw_args.n, "projectId", &v, NULL);
    if (!raw_truthy(v))
        return dap__fail(res, DAP_BAD_REQUEST, "projectId is required");
    buf_reset(&req->text);
    if (!jraw_str(&req->text, v))
        return dap__fail(res, DAP_BAD_REQUEST, "projectId must be a string");
    /* A C string would stop at the NUL and name another deployment. */
    const char *id = buf_cstr(&req->text);
    if (strlen(id) != req->text.len)
        return dap__fail(res, DAP_BAD_REQUEST,
                         "projectId must not contain a NUL character");
    *out = id;
    return 0;
}

/* Check a project id taken from a pipeline (name is for messages). */
static int check_project_id(const json_t *v, const char *name,
                            struct dap_res *res)
{
    if (!truthy(v))
        return dap__fail(res, DAP_BAD_REQUEST, "%s is required", name);
    if (!json_is_string(v))
        return dap__fail(res, DAP_BAD_REQUEST, "%s must be a string", name);
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (n > PROJECT_ID_MAX)
        return dap__fail(res, DAP_TOO_LARGE, "%s is longer than %d bytes",
                         name, PROJECT_ID_MAX);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return dap__fail(res, DAP_BAD_REQUEST,
                             "%s must not contain control characters", name);
    }
    return 0;
}

/* The `schedule` argument when present: a string that parses, H drawn from
 * deployment (user, project_id). *cx receives the parsed schedule (caller
 * frees); resolved (NULL or resolved_cap bytes) the text with H resolved. */
static int parse_schedule(struct dap_app *app, const json_t *v,
                          const char *user, const char *project_id,
                          char *resolved, size_t resolved_cap,
                          struct dap_res *res, struct cronx **cx)
{
    if (!json_is_string(v))
        return dap__fail(res, DAP_BAD_REQUEST, "schedule must be a string");
    const char *s = json_string_value(v);
    struct err e = {0};
    if (strlen(s) != json_string_length(v))
        return dap__fail(res, DAP_BAD_REQUEST,
                         "Invalid schedule: contains a NUL character");
    if (sched_parse(app->sched, s, user, project_id, resolved, resolved_cap, cx,
                    &e) != 0)
        return dap__fail(res, DAP_BAD_REQUEST, "Invalid schedule '%s': %s", s,
                         e.msg);
    return 0;
}

/* The raw text of arguments.pipeline, compacted into out. The tree has
 * already been checked to hold an object there. */
static int raw_pipeline(struct dap_app *app, struct dap_req *req,
                        struct dap_res *res, struct buf *out)
{
    struct jraw_span sp;
    if (!req->raw_args.p ||
        !jraw_member(req->raw_args.p, req->raw_args.n, "pipeline", &sp, NULL))
        return dap__fail(res, DAP_INTERNAL, "Internal error: pipeline text lost");
    jraw_compact(out, sp.p, sp.n);
    if (out->len > app->cfg->max_pipeline)
        return dap__fail(res, DAP_TOO_LARGE,
                         "pipeline is too large: %zu bytes, the limit is %zu",
                         out->len, app->cfg->max_pipeline);
    return 0;
}

static const char *owner_key_id(const struct dap_session *ss)
{
    return ss->dev ? SCHED_DEV_KEY_ID : ss->key.id;
}

static int fail_store(struct dap_res *res, int rc, const char *project_id)
{
    if (rc == RR_E_NOTFOUND)
        return dap__fail(res, DAP_NOT_FOUND, "Deployment not found: %s",
                         project_id);
    return dap__fail(res, DAP_INTERNAL, "Internal error: %s", err_str(rc));
}

/* Map a scheduler error to the wire: not found, a conflict with what exists
 * (the project id is taken; paused, errored, running, not running), a
 * limit, or the server's own failure. */
static int fail_sched(struct dap_res *res, int rc, const struct err *e)
{
    if (rc == RR_E_NOTFOUND)
        return dap__fail(res, DAP_NOT_FOUND, "%s", e->msg);
    if (rc == RR_E_BUSY || rc == RR_E_EXISTS)
        return dap__fail(res, DAP_CONFLICT, "%s", e->msg);
    if (rc == RR_E_LIMIT)
        return dap__fail(res, DAP_TOO_LARGE, "%s", e->msg);
    return dap__fail(res, DAP_INTERNAL, "%s", e->msg);
}

/* ---------------------------------------------------------------- session */

/* The session ends: a failed auth is answered, then the socket closes. A
 * failure is counted against the client's address unless it was not the
 * client's fault (counted false: the server or the engine failed). */
static int auth_fail(struct dap_app *app, struct dap_session *ss,
                     struct dap_res *res, const char *msg, bool counted)
{
    ss->authed = false;
    dap__session_clear(ss); /* no more events, whatever follows */
    res->close = true;
    if (counted)
        dap__guard_auth_failed(app->guard, &ss->peer, time_now_mono_ms(), msg);
    return dap__fail(res, DAP_UNAUTHORIZED, "%s", msg);
}

#define AUTH_DB_FAILED "Authentication failed"
#define ENGINE_CRED_MAX 8192 /* bytes of a credential the engine is asked about */

/* The credential of an auth request, without a leading "Bearer ", in *cred
 * (borrowed from req) and *len; or why there is none. */
static const char *credential_text(struct dap_req *req, const char **cred,
                                   size_t *len)
{
    json_t *v = json_object_get(req->args, "auth");
    if (v && !json_is_string(v) && !json_is_null(v))
        return "auth must be a string";
    *cred = json_is_string(v) ? json_string_value(v) : "";
    *len = json_is_string(v) ? json_string_length(v) : 0;
    if (*len >= 7 && strncmp(*cred, "Bearer ", 7) == 0)
        *cred += 7, *len -= 7;
    if (*len == 0)
        return "No authorization provided";
    return NULL;
}

static bool is_dev_key(const struct dap_app *app, const char *cred, size_t len)
{
    const char *dk = app->cfg->dev_key;
    return dk && strlen(dk) == len && sodium_memcmp(dk, cred, len) == 0;
}

/* Does the engine decide about this credential? Only with an engine; never
 * for an rrdeploy key (rrk_) or the development key. */
static bool engine_bound(const struct dap_app *app, const char *cred,
                         size_t len)
{
    return app->identify && !(len >= 4 && memcmp(cred, "rrk_", 4) == 0) &&
           !is_dev_key(app, cred, len);
}

/* The key a local credential stands for in *k (*dev: the ROCKETRIDE_APIKEY
 * key), or NULL; otherwise why it stands for none (AUTH_DB_FAILED: the
 * server's fault, not the client's). The credential is never logged. */
static const char *credential_key(struct dap_app *app, const char *cred,
                                  size_t len, struct store_key *k, bool *dev)
{
    *dev = is_dev_key(app, cred, len);
    if (*dev) {
        memset(k, 0, sizeof *k);
        snprintf(k->id, sizeof k->id, "%s", SCHED_DEV_KEY_ID);
        snprintf(k->user, sizeof k->user, "%s", DEV_USER);
        snprintf(k->label, sizeof k->label, "ROCKETRIDE_APIKEY");
        k->perms = STORE_PERM_ALL;
        return NULL;
    }
    if (strlen(cred) != len)
        return "Invalid API key";
    int rc = store_key_auth(app->store, cred, dap__now(app), k);
    if (rc == RR_E_NOTFOUND)
        return "Invalid API key";
    if (rc == RR_E_REVOKED)
        return "API key revoked";
    if (rc == RR_E_EXPIRED)
        return "API key expired";
    if (rc != 0) {
        log_error("auth: cannot read keys from the database: %s", err_str(rc));
        return AUTH_DB_FAILED;
    }
    return NULL;
}

/* The auth succeeded with key k: the session takes it (and secret, the
 * engine credential, or NULL for a local key: taken). */
static int auth_ok(struct dap_app *app, struct dap_session *ss,
                   struct dap_res *res, const struct store_key *k, bool dev,
                   char *secret)
{
    dap__guard_auth_ok(app->guard, &ss->peer, time_now_mono_ms());
    /* A re-auth keeps the connection's watch and monitors only for the same
     * user with task.monitor: events are the user's, and watching needs the
     * right. */
    if ((ss->watching || ss->nmonitors) &&
        (strcmp(ss->key.user, k->user) != 0 || !(k->perms & STORE_PERM_MONITOR)))
        dap__session_unwatch(ss);
    dap__secret_free(ss->cred);
    ss->cred = secret;
    ss->key = *k;
    ss->dev = dev;
    ss->engine = secret != NULL;
    ss->authed = true;
    ss->revoked = false;
    log_info("auth ok: user=%s key=%s", k->user, k->id);
    dap__write_connect_result(&res->body, k);
    return 0;
}

/* The engine accepted a credential as id: the session becomes that user,
 * keeping secret (taken), unless the user id is not one rrdeploy can use. */
static int engine_ok(struct dap_app *app, struct dap_session *ss,
                     struct dap_res *res, const struct dap_identity *id,
                     char *secret)
{
    struct store_key k;
    memset(&k, 0, sizeof k);
    memcpy(k.user, id->user, sizeof k.user);
    k.user[sizeof k.user - 1] = '\0';
    struct err e = {0};
    if (memchr(id->user, '\0', sizeof id->user) == NULL ||
        store_user_validate(k.user, &e) != 0) {
        dap__secret_free(secret);
        log_warn("auth: the RocketRide engine gave a user id rrdeploy cannot "
                 "use: %s", e.msg[0] ? e.msg : "too long");
        char msg[sizeof e.msg + 64];
        snprintf(msg, sizeof msg,
                 "The RocketRide engine's user id cannot be used by rrdeploy: %s",
                 e.msg[0] ? e.msg : "too long");
        return auth_fail(app, ss, res, msg, false);
    }
    /* A name that has local keys here is that local user's: a RocketRide
     * account that happens to bear it must not reach their deployments. */
    int64_t local = 0;
    if (store_user_key_count(app->store, k.user, &local) != 0) {
        dap__secret_free(secret);
        return auth_fail(app, ss, res, AUTH_DB_FAILED, false);
    }
    if (local > 0) {
        dap__secret_free(secret);
        log_warn("auth: the RocketRide engine's user %s is also a local user "
                 "of this server: refused", k.user);
        char msg[STORE_USER_MAX + 160];
        snprintf(msg, sizeof msg, "The RocketRide user '%s' is also a local user "
                 "of this rrdeploy server (it has rrk_ keys): sign in with one "
                 "of those keys", k.user);
        return auth_fail(app, ss, res, msg, false);
    }
    snprintf(k.id, sizeof k.id, "%s", SCHED_ENGINE_KEY_ID);
    /* the team's task rights; org.admin is rrdeploy's own (its keys) */
    k.perms = id->perms & STORE_PERM_ALL;
    k.created_at = dap__now(app);
    return auth_ok(app, ss, res, &k, false, secret);
}

/* The engine's refusal as the client sees it (the SDKs expect its text). */
static const char *refusal_text(const char *why)
{
    return why && why[0] ? why : "Invalid authorization provided";
}

static int engine_unavailable(struct dap_app *app, struct dap_session *ss,
                              struct dap_res *res, const char *why)
{
    char msg[DAP_REFUSAL_MAX + 96];
    snprintf(msg, sizeof msg,
             "Authentication unavailable: the RocketRide engine cannot be "
             "reached (%s)", why && why[0] ? why : "no reason given");
    return auth_fail(app, ss, res, msg, false);
}

/* ---------------------------------------------------------------- engine auth */

enum verdict { V_NONE, V_ACCEPTED, V_REFUSED, V_UNREACHABLE, V_LATE };

struct dap_auth_wait {
    uint64_t ticket;        /* the check it waits for */
    int64_t seq;            /* the auth request's seq */
    int64_t deadline_ms;    /* monotonic: then V_LATE */
    char *cred;             /* owned (dap__secret_dup) */
    enum verdict verdict;
    struct dap_identity id; /* V_ACCEPTED */
    char why[DAP_REFUSAL_MAX];  /* V_REFUSED, V_UNREACHABLE */
};

void dap__auth_wait_free(struct dap_auth_wait *w)
{
    if (!w)
        return;
    dap__secret_free(w->cred);
    free(w);
}

/* The session waits for ticket with its auth request's seq. */
static void wait_start(struct dap_session *ss, int64_t seq, uint64_t ticket,
                       int64_t deadline_ms, const char *cred, size_t len)
{
    ASSERT(!ss->wait);
    struct dap_auth_wait *w = xcalloc(1, sizeof *w);
    w->ticket = ticket;
    w->seq = seq;
    w->deadline_ms = deadline_ms;
    w->cred = dap__secret_dup(cred, len);
    ss->wait = w;
}

/* An auth with a credential the engine decides about: a recent verdict
 * answers at once; otherwise the session waits for a check -- one already
 * under way for the same credential, or a new one -- and res is deferred. */
static int engine_auth(struct dap_app *app, struct dap_session *ss,
                       struct dap_req *req, struct dap_res *res,
                       const char *cred, size_t len)
{
    if (strlen(cred) != len || len > ENGINE_CRED_MAX)
        return auth_fail(app, ss, res, "Invalid API key", true);
    int64_t now = dap__mono_ms(app);
    unsigned char h[DAP_IDS_HASH_BYTES];
    dap__ids_hash(app->ids, cred, len, h);
    struct dap_ids_hit hit;
    uint64_t *counts = app->metrics.engine_auth;
    switch (dap__ids_find(app->ids, h, now, &hit)) {
    case DAP_IDS_ACCEPTED:
        counts[DAP_ENGINE_CACHED]++;
        return engine_ok(app, ss, res, &hit.id, dap__secret_dup(cred, len));
    case DAP_IDS_REFUSED:
        counts[DAP_ENGINE_CACHED]++;
        return auth_fail(app, ss, res, refusal_text(hit.why), true);
    case DAP_IDS_PENDING: /* the same credential is being checked: share it */
        wait_start(ss, req->seq, hit.ticket, hit.deadline_ms, cred, len);
        break;
    case DAP_IDS_NONE: {
        int64_t deadline;
        uint64_t ticket = dap__ids_begin(app->ids, h, now, &deadline);
        if (!ticket) {
            counts[DAP_ENGINE_UNAVAILABLE]++;
            return engine_unavailable(app, ss, res,
                                      "too many credentials being checked");
        }
        /* waiting before the call: a verdict given at once finds it */
        wait_start(ss, req->seq, ticket, deadline, cred, len);
        int rc = app->identify(app->identify_ud, ss->wait->cred, ticket);
        if (rc < 0) {
            dap__ids_cancel(app->ids, ticket);
            dap__auth_wait_free(ss->wait);
            ss->wait = NULL;
            counts[DAP_ENGINE_UNAVAILABLE]++;
            return engine_unavailable(app, ss, res, err_str(rc));
        }
        break;
    }
    }
    res->deferred = true;
    return 0;
}

bool dap__identified(struct dap_app *app, uint64_t ticket,
                     const struct dap_identity *id, bool refused,
                     const char *why)
{
    return app->ids &&
           dap__ids_settle(app->ids, ticket, id, refused, why, dap__mono_ms(app));
}

bool dap__session_verdict(struct dap_session *ss, uint64_t ticket,
                          const struct dap_identity *id, bool refused,
                          const char *why)
{
    struct dap_auth_wait *w = ss->wait;
    if (!w || w->verdict != V_NONE || w->ticket != ticket)
        return false;
    if (id) {
        w->verdict = V_ACCEPTED;
        w->id = *id;
    } else {
        w->verdict = refused ? V_REFUSED : V_UNREACHABLE;
        dap__copy_text(w->why, sizeof w->why, why);
    }
    return true;
}

bool dap__session_late(struct dap_session *ss, int64_t now_ms)
{
    struct dap_auth_wait *w = ss->wait;
    if (!w || w->verdict != V_NONE || now_ms < w->deadline_ms)
        return false;
    w->verdict = V_LATE;
    return true;
}

enum dap_wait dap__session_wait(const struct dap_session *ss,
                                int64_t *deadline_ms)
{
    if (!ss->wait)
        return DAP_WAIT_NONE;
    if (ss->wait->verdict != V_NONE)
        return DAP_WAIT_DECIDED;
    if (deadline_ms)
        *deadline_ms = ss->wait->deadline_ms;
    return DAP_WAIT_PENDING;
}

bool dap__session_answer(struct dap_app *app, struct dap_session *ss,
                         dap_emit_fn emit, void *ud)
{
    struct dap_auth_wait *w = ss->wait;
    if (!w || w->verdict == V_NONE)
        return false;
    if (ss->closing) { /* its socket is closing: nobody to answer */
        dap__auth_wait_free(w);
        ss->wait = NULL;
        return false;
    }
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ss->wait = NULL;
    struct dap_res res = {.code = NULL};
    buf_init(&res.body, 0);
    buf_init(&res.msg, 0);
    uint64_t *counts = app->metrics.engine_auth;
    switch (w->verdict) {
    case V_ACCEPTED:
        counts[DAP_ENGINE_ACCEPTED]++;
        engine_ok(app, ss, &res, &w->id, w->cred);
        w->cred = NULL; /* taken */
        break;
    case V_REFUSED:
        counts[DAP_ENGINE_REFUSED]++;
        auth_fail(app, ss, &res, refusal_text(w->why), true);
        break;
    case V_UNREACHABLE:
        counts[DAP_ENGINE_UNAVAILABLE]++;
        engine_unavailable(app, ss, &res, w->why);
        break;
    default:
        counts[DAP_ENGINE_UNAVAILABLE]++;
        auth_fail(app, ss, &res,
                  "Authentication unavailable: the RocketRide engine did not "
                  "answer in time", false);
        break;
    }
    emit(ud, dap__response_frame(ss, w->seq, "auth", 4, &res));
    dap__count_request(&app->metrics, dap__cmd_find("auth"), res.code,
                       (int64_t)t0.tv_sec * 1000000000 + t0.tv_nsec);
    if (res.close)
        ss->closing = true;
    dap__auth_wait_free(w);
    buf_free(&res.body);
    buf_free(&res.msg);
    return true;
}

/* auth: the per-connection attempt cap, then the guard (an address, or all
 * addresses together, with too many failures is refused before its
 * credential is even looked at), then the credential: a local key, the
 * development key, or -- with an engine -- a RocketRide credential the
 * engine decides about. */
static int cmd_auth(struct dap_app *app, struct dap_session *ss,
                    struct dap_req *req, struct dap_res *res)
{
    if (++ss->auth_attempts > 5)
        return auth_fail(app, ss, res, "Too many authentication attempts",
                         true);
    int retry = 0;
    enum dap_guard_verdict verdict = dap__guard_auth_check(
        app->guard, &ss->peer, time_now_mono_ms(), &retry);
    if (verdict != DAP_GUARD_OK) {
        ss->authed = false;
        dap__session_clear(ss);
        res->close = true;
        return dap__fail(
            res, DAP_UNAUTHORIZED,
            "Too many failed authentication attempts %s: retry in %d s",
            verdict == DAP_GUARD_BY_ADDRESS ? "from this address"
                                            : "on this server",
            retry);
    }
    const char *cred;
    size_t len;
    const char *why = credential_text(req, &cred, &len);
    if (why)
        return auth_fail(app, ss, res, why, true);
    if (engine_bound(app, cred, len))
        return engine_auth(app, ss, req, res, cred, len);
    struct store_key k;
    bool dev = false;
    why = credential_key(app, cred, len, &k, &dev);
    if (why)
        return auth_fail(app, ss, res, why, strcmp(why, AUTH_DB_FAILED) != 0);
    return auth_ok(app, ss, res, &k, dev, NULL);
}

static int cmd_deauth(struct dap_app *app, struct dap_session *ss,
                      struct dap_req *req, struct dap_res *res)
{
    dap__session_clear(ss); /* the credential too */
    ss->authed = false;
    ss->dev = false;
    ss->engine = false;
    memset(&ss->key, 0, sizeof ss->key);
    buf_puts(&res->body, "{}");
    return 0;
}

static int cmd_ping(struct dap_app *app, struct dap_session *ss,
                    struct dap_req *req, struct dap_res *res)
{
    buf_puts(&res->body, "{\"pong\":true}");
    return 0;
}

static int cmd_probe(struct dap_app *app, struct dap_session *ss,
                     struct dap_req *req, struct dap_res *res)
{
    buf_puts(&res->body, "{\"version\":\"" RRDEPLOY_VERSION
                         "\",\"capabilities\":[\"rrdeploy\"],"
                         "\"platform\":\"linux\",\"apps\":[]}");
    return 0;
}

/* rrext_monitor: RocketRide's subscription command, which the SDKs send
 * again after a reconnect. Here its keys subscribe to the caller's
 * apaevt_deploy events: {token:"*"} to all of them, {projectId[, source]}
 * to one project's. A task token names an engine task, not a deployment:
 * accepted, with no deployment events. The types (RocketRide's event type
 * bits) replace those of the key; none removes it. Any type delivers the
 * deployment events. */

static const struct {
    const char *name;
    unsigned bits;
} event_types[] = {
    {"none", 0},    {"debugger", 1}, {"detail", 2}, {"summary", 4},
    {"output", 8},  {"flow", 16},    {"task", 32},  {"sse", 64},
    {"dashboard", 128}, {"all", 255},
};
#define EVENT_TYPES_ALL 255u

/* A type name's bits; unknown names count for none (as in RocketRide, so
 * that a newer client's names do not fail). */
static unsigned event_type_bits(const char *name)
{
    for (size_t i = 0; i < sizeof event_types / sizeof event_types[0]; i++)
        if (strcasecmp(name, event_types[i].name) == 0)
            return event_types[i].bits;
    return 0;
}

/* The `types` argument: a list of names, a number, a string of digits or
 * one name; missing or null is none. */
static int parse_types(const json_t *v, unsigned *out, struct dap_res *res)
{
    static const char *const bad = "types must be a list of event type "
                                   "names, a number or a string of digits";
    *out = 0;
    if (!v || json_is_null(v))
        return 0;
    if (json_is_array(v)) {
        size_t i;
        const json_t *e;
        json_array_foreach(v, i, e) {
            if (!json_is_string(e))
                return dap__fail(res, DAP_BAD_REQUEST, "%s", bad);
            *out |= event_type_bits(json_string_value(e));
        }
        return 0;
    }
    double d;
    if (json_is_number(v)) {
        d = json_number_value(v);
    } else if (json_is_string(v)) {
        const char *t = json_string_value(v);
        size_t n = json_string_length(v);
        if (n == 0 || strspn(t, "0123456789") != n) {
            *out = event_type_bits(t);
            return 0;
        }
        d = n > 10 ? -1 : strtod(t, NULL);
    } else {
        return dap__fail(res, DAP_BAD_REQUEST, "%s", bad);
    }
    if (!(d >= 0 && d <= 2147483647.0) || d != floor(d))
        return dap__fail(res, DAP_BAD_REQUEST, "%s", bad);
    *out = (unsigned)d & EVENT_TYPES_ALL;
    return 0;
}

/* A key's optional source: like a project id, but not required. */
static int arg_source(const json_t *v, struct dap_res *res, const char **out)
{
    *out = NULL;
    if (!truthy(v))
        return 0;
    if (check_project_id(v, "source", res))
        return -1;
    *out = json_string_value(v);
    return 0;
}

static bool monitor_is(const struct dap_monitor *m, const char *project,
                       const char *source)
{
    if (!m->project || !project)
        return !m->project && !project;
    if (strcmp(m->project, project) != 0 || m->has_source != (source != NULL))
        return false;
    return !source || strcmp(m->project + strlen(m->project) + 1, source) == 0;
}

/* Set the key (project NULL: all; source NULL: none) to types, replacing
 * what it had; types 0 removes it. */
static int monitor_set(struct dap_session *ss, const char *project,
                       const char *source, unsigned types, struct dap_res *res)
{
    uint8_t i = 0;
    while (i < ss->nmonitors && !monitor_is(&ss->monitors[i], project, source))
        i++;
    if (i < ss->nmonitors) {
        if (types) {
            ss->monitors[i].types = types;
        } else {
            free(ss->monitors[i].project);
            memmove(&ss->monitors[i], &ss->monitors[i + 1],
                    (size_t)(ss->nmonitors - i - 1) * sizeof ss->monitors[0]);
            if (--ss->nmonitors == 0) {
                free(ss->monitors);
                ss->monitors = NULL;
            }
        }
        return 0;
    }
    if (!types)
        return 0; /* removing what is not there */
    if (ss->nmonitors >= DAP_MONITORS_MAX)
        return dap__fail(res, DAP_TOO_LARGE,
                         "Too many monitors on this connection: at most %d",
                         DAP_MONITORS_MAX);
    ss->monitors = xrealloc(ss->monitors,
                            (size_t)(ss->nmonitors + 1) * sizeof ss->monitors[0]);
    struct dap_monitor *m = &ss->monitors[ss->nmonitors++];
    m->types = types;
    m->has_source = source != NULL;
    m->project = NULL;
    if (project) {
        size_t lp = strlen(project), ls = source ? strlen(source) : 0;
        m->project = xmalloc(lp + ls + 2);
        memcpy(m->project, project, lp + 1);
        memcpy(m->project + lp + 1, source ? source : "", ls + 1);
    }
    return 0;
}

static int cmd_monitor(struct dap_app *app, struct dap_session *ss,
                       struct dap_req *req, struct dap_res *res)
{
    json_t *jtok = json_object_get(req->args, "token");
    json_t *jpid = json_object_get(req->args, "projectId");
    json_t *jsrc = json_object_get(req->args, "source");
    bool by_token = truthy(jtok), by_project = truthy(jpid) || truthy(jsrc);
    if (by_token && by_project)
        return dap__fail(res, DAP_BAD_REQUEST, "You must specifiy either "
                         "token or project_id/source, not both");
    if (!by_token && !truthy(jpid))
        return dap__fail(res, DAP_BAD_REQUEST,
                         "You must specifiy either token or project_id/source");
    if (by_token && !json_is_string(jtok))
        return dap__fail(res, DAP_BAD_REQUEST, "token must be a string");
    const char *project = NULL, *source = NULL;
    if (!by_token && (check_project_id(jpid, "projectId", res) ||
                      arg_source(jsrc, res, &source)))
        return -1;
    if (!by_token)
        project = json_string_value(jpid);
    unsigned types;
    if (parse_types(json_object_get(req->args, "types"), &types, res))
        return -1;
    if (by_token && strcmp(json_string_value(jtok), "*") != 0)
        return 0; /* an engine task's token: no deployment events */
    return monitor_set(ss, project, source, types, res);
}

/* ---------------------------------------------------------------- deploy */

/* With an engine, what a deployment's runs authenticate with: the caller's
 * RocketRide key, sealed for this deployment (*out, free()); or, for a
 * caller signed in with a local key, nothing (*out NULL: the runs use the
 * service credential) -- refused when the server has none, rather than
 * accepted to fail at every run. Without an engine: nothing. */
static int owner_credential(struct dap_app *app, const struct dap_session *ss,
                            const char *project_id, struct dap_res *res,
                            unsigned char **out, size_t *outn)
{
    *out = NULL;
    *outn = 0;
    if (!app->vault)
        return 0;
    const char *key = dap__session_credential(ss);
    if (key) {
        if (vault_seal(app->vault, ss->key.user, project_id, key, strlen(key),
                       out, outn) != 0)
            return dap__fail(res, DAP_INTERNAL,
                             "Internal error: the credential could not be sealed");
        return 0;
    }
    if (!app->service_credential)
        return dap__fail(res, DAP_FORBIDDEN,
                         "This server runs pipelines on a RocketRide engine as "
                         "their owner: sign in with your RocketRide API key to "
                         "add deployments (deployments of local keys need a "
                         "service credential, --engine-key-file, which this "
                         "server has not)");
    return 0;
}

static int cmd_add(struct dap_app *app, struct dap_session *ss,
                   struct dap_req *req, struct dap_res *res)
{
    json_t *pipe = json_object_get(req->args, "pipeline");
    if (!truthy(pipe))
        return dap__fail(res, DAP_BAD_REQUEST, "pipeline is required");
    if (!json_is_object(pipe))
        return dap__fail(res, DAP_BAD_REQUEST, "pipeline must be an object");
    json_t *pid = json_object_get(pipe, "project_id");
    if (check_project_id(pid, "pipeline.project_id", res))
        return -1;
    const char *project_id = json_string_value(pid);

    struct cronx *cx = NULL;
    json_t *jsched = json_object_get(req->args, "schedule");
    json_t *manual = NULL;
    if (!jsched)
        jsched = manual = json_string("manual");
    int rc = parse_schedule(app, jsched, ss->key.user, project_id, NULL, 0,
                            res, &cx);
    if (rc)
        goto out;

    struct buf text;
    buf_init(&text, 0);
    if ((rc = raw_pipeline(app, req, res, &text)) != 0) {
        buf_free(&text);
        goto out;
    }
    struct store_dep d = {0};
    d.user = ss->key.user;
    d.project_id = (char *)project_id;
    d.pipeline = (char *)buf_cstr(&text);
    d.schedule = (char *)json_string_value(jsched);
    d.created_by = ss->key.user;
    d.owner_key_id = (char *)owner_key_id(ss);
    if ((rc = owner_credential(app, ss, project_id, res, &d.credential,
                               &d.credential_len)) != 0) {
        buf_free(&text);
        goto out;
    }
    struct err e = {0};
    rc = sched_add(app->sched, &d, cx, app->cfg->max_deployments, dap__now(app), &e);
    free(d.credential);
    cx = NULL; /* taken */
    if (rc)
        rc = fail_sched(res, rc, &e);
    else
        dap__write_record(&res->body, &d, NULL);
    buf_free(&text);
out:
    cronx_free(cx);
    json_decref(manual);
    return rc;
}

static int cmd_remove(struct dap_app *app, struct dap_session *ss,
                      struct dap_req *req, struct dap_res *res)
{
    const char *project_id = NULL;
    if (arg_project_id(req, res, &project_id))
        return -1;
    struct err e = {0};
    int rc = sched_remove(app->sched, ss->key.user, project_id, dap__now(app), &e);
    if (rc)
        return fail_sched(res, rc, &e);
    buf_puts(&res->body, "{}");
    return 0;
}

/* status and list: records written straight from the store's rows. */
struct records {
    struct buf *b;
    size_t n;      /* records written */
};

static int write_record(const struct store_dep *d, const struct store_run *last, void *ud)
{
    struct records *w = ud;
    if (w->n++)
        buf_putc(w->b, ',');
    dap__write_record(w->b, d, last);
    return 0;
}

/* The snapshot a read reply is rendered at, when replies are kept (false:
 * render it, keep nothing). */
static bool reply_snapshot(struct dap_app *app, const char *user,
                           struct store_snapshot *snap)
{
    return app->replies && store_snapshot(app->store, user, snap) == 0;
}

static int cmd_status(struct dap_app *app, struct dap_session *ss,
                      struct dap_req *req, struct dap_res *res)
{
    const char *project_id = NULL;
    if (arg_project_id(req, res, &project_id))
        return -1;
    struct store_snapshot snap;
    bool keep = reply_snapshot(app, ss->key.user, &snap);
    if (keep && dap__replies_get(app->replies, &snap, DAP_REPLY_STATUS,
                                 ss->key.user, project_id, &res->body))
        return 0;
    size_t at = res->body.len;
    struct records w = {&res->body, 0};
    int rc = store_dep_view(app->store, ss->key.user, project_id, write_record, &w);
    if (rc) {
        buf_reset(&res->body);
        return fail_store(res, rc, project_id);
    }
    if (keep)
        dap__replies_put(app->replies, &snap, DAP_REPLY_STATUS, ss->key.user,
                         project_id, buf_data(&res->body) + at, res->body.len - at);
    return 0;
}

static int cmd_list(struct dap_app *app, struct dap_session *ss,
                    struct dap_req *req, struct dap_res *res)
{
    struct store_snapshot snap;
    bool keep = reply_snapshot(app, ss->key.user, &snap);
    if (keep && dap__replies_get(app->replies, &snap, DAP_REPLY_LIST, ss->key.user,
                                 NULL, &res->body))
        return 0;
    buf_puts(&res->body, "{\"deployments\":[");
    struct records w = {&res->body, 0};
    int rc = store_dep_list_view(app->store, ss->key.user, write_record, &w);
    if (rc) {
        buf_reset(&res->body);
        return fail_store(res, rc, "");
    }
    buf_puts(&res->body, "]}");
    if (keep)
        dap__replies_put(app->replies, &snap, DAP_REPLY_LIST, ss->key.user, NULL,
                         buf_data(&res->body), res->body.len);
    return 0;
}

/* Replace (or add) pipeline.project_id in compact pipeline text, as the
 * reference server does on update; an equal value is kept byte for byte. */
static void force_project_id(struct buf *out, const char *text, size_t n,
                             const json_t *pipe, const char *project_id)
{
    const json_t *cur = json_object_get(pipe, "project_id");
    struct jraw_span v;
    if (json_is_string(cur) && strcmp(json_string_value(cur), project_id) == 0 &&
        strlen(project_id) == json_string_length(cur)) {
        buf_append(out, text, n);
    } else if (jraw_member(text, n, "project_id", &v, NULL)) {
        size_t at = (size_t)(v.p - text);
        buf_append(out, text, at);
        buf_json_cstr(out, project_id);
        buf_append(out, v.p + v.n, n - at - v.n);
    } else {
        buf_append(out, text, n - 1); /* all but the closing '}' */
        if (json_object_size(pipe) > 0)
            buf_putc(out, ',');
        buf_puts(out, "\"project_id\":");
        buf_json_cstr(out, project_id);
        buf_putc(out, '}');
    }
}

static int cmd_update(struct dap_app *app, struct dap_session *ss,
                      struct dap_req *req, struct dap_res *res)
{
    const char *project_id = NULL;
    if (arg_project_id(req, res, &project_id))
        return -1;
    enum store_state current;
    if (sched_lookup(app->sched, ss->key.user, project_id, &current) != 0)
        return dap__fail(res, DAP_NOT_FOUND, "Deployment not found: %s",
                         project_id);

    struct sched_change ch = {0};
    struct buf text, forced;
    buf_init(&text, 0);
    buf_init(&forced, 0);
    json_t *pipe = json_object_get(req->args, "pipeline");
    json_t *jsched = json_object_get(req->args, "schedule");
    json_t *jstate = json_object_get(req->args, "state");

    int rc = -1;
    if (pipe) {
        if (!json_is_object(pipe)) {
            dap__fail(res, DAP_BAD_REQUEST, "pipeline must be an object");
            goto out;
        }
        if (raw_pipeline(app, req, res, &text))
            goto out;
        force_project_id(&forced, buf_data(&text), text.len, pipe, project_id);
        ch.pipeline = buf_cstr(&forced);
    }
    if (jsched) {
        if (parse_schedule(app, jsched, ss->key.user, project_id, NULL, 0,
                           res, &ch.cx))
            goto out;
        ch.schedule = json_string_value(jsched);
    }
    if (jstate) {
        if (!json_is_string(jstate) ||
            store_state_parse(json_string_value(jstate), &ch.state) != 0 ||
            ch.state == STORE_ERRORED) {
            dap__fail(res, DAP_BAD_REQUEST, "state must be 'active' or 'paused'");
            goto out;
        }
        ch.set_state = true;
    }
    struct err e = {0};
    /* A RocketRide key that updates a deployment becomes the one its runs
     * use. */
    unsigned char *cred = NULL;
    if (dap__session_credential(ss) &&
        owner_credential(app, ss, project_id, res, &cred, &ch.credential_len) != 0) {
        rc = -1;
        goto out;
    }
    ch.set_credential = cred != NULL;
    ch.credential = cred;
    rc = sched_update(app->sched, ss->key.user, project_id, &ch, dap__now(app), &e);
    free(cred);
    if (rc)
        fail_sched(res, rc, &e);
    else
        buf_puts(&res->body, "{}");
out:
    cronx_free(ch.cx); /* NULL once sched_update took it */
    buf_free(&text);
    buf_free(&forced);
    return rc;
}

static int cmd_preview(struct dap_app *app, struct dap_session *ss,
                       struct dap_req *req, struct dap_res *res)
{
    json_t *jsched = json_object_get(req->args, "schedule");
    if (!jsched || json_is_null(jsched))
        return dap__fail(res, DAP_BAD_REQUEST, "schedule is required");
    int64_t count = 5;
    json_t *jcount = json_object_get(req->args, "count");
    if (jcount && !json_is_null(jcount)) {
        double c = json_is_number(jcount) ? json_number_value(jcount) : -1;
        if (c != floor(c) || c < 1 || c > PREVIEW_MAX)
            return dap__fail(res, DAP_BAD_REQUEST,
                             "count must be an integer from 1 to %d",
                             PREVIEW_MAX);
        count = (int64_t)c;
    }
    double from = dap__now(app);
    json_t *jfrom = json_object_get(req->args, "from");
    if (jfrom && !json_is_null(jfrom)) {
        /* 0001-01-01 .. 9999-12-31: beyond that no calendar answer makes sense */
        if (!json_is_number(jfrom) || !isfinite(json_number_value(jfrom)) ||
            json_number_value(jfrom) < -62135596800.0 ||
            json_number_value(jfrom) > 253402300799.0)
            return dap__fail(res, DAP_BAD_REQUEST,
                             "from must be a number of Unix seconds");
        from = json_number_value(jfrom);
    }
    /* H is drawn from the deployment it would belong to: the caller's user
     * and projectId ("" when not given, said in the answer). */
    const char *project_id = "";
    json_t *jpid = json_object_get(req->args, "projectId");
    if (jpid && !json_is_null(jpid)) {
        if (check_project_id(jpid, "projectId", res))
            return -1;
        project_id = json_string_value(jpid);
    }
    struct cronx *cx = NULL;
    char *resolved = xmalloc(CRONX_RESOLVED_MAX);
    if (parse_schedule(app, jsched, ss->key.user, project_id, resolved,
                       CRONX_RESOLVED_MAX, res, &cx)) {
        free(resolved);
        return -1;
    }

    int64_t *at = xcalloc((size_t)count, sizeof *at);
    struct cronx_preview pv;
    cronx_preview(cx, (int64_t)floor(from), (int)count, at, &pv);
    struct buf *b = &res->body;
    buf_puts(b, "{\"schedule\":");
    buf_json_cstr(b, json_string_value(jsched));
    buf_puts(b, ",\"resolved\":");
    buf_json_cstr(b, resolved);
    struct cronx *plain = NULL;
    struct err pe = {0};
    if (cronx_parse(json_string_value(jsched), "UTC", &plain, &pe) != 0) {
        /* only H makes a seeded parse succeed where a plain one fails: say
         * what H was drawn from */
        buf_puts(b, ",\"hashedFrom\":{\"user\":");
        buf_json_cstr(b, ss->key.user);
        buf_puts(b, ",\"projectId\":");
        buf_json_cstr(b, project_id);
        buf_putc(b, '}');
    }
    cronx_free(plain);
    buf_puts(b, ",\"timezone\":");
    buf_json_cstr(b, cronx_zone_name(cx));
    buf_puts(b, ",\"next\":[");
    for (int i = 0; i < pv.count; i++) {
        char local[CRONX_LOCAL_MAX];
        cronx_format_local(cx, at[i], local);
        buf_printf(b, "%s{\"at\":%lld.0,\"local\":", i ? "," : "",
                   (long long)at[i]);
        buf_json_cstr(b, local);
        buf_putc(b, '}');
    }
    buf_puts(b, "],\"warnings\":[");
    for (int i = 0; i < pv.nwarnings; i++) {
        if (i)
            buf_putc(b, ',');
        buf_json_cstr(b, pv.warnings[i]);
    }
    buf_puts(b, "]}");
    free(at);
    free(resolved);
    cronx_free(cx);
    return 0;
}

/* ---------------------------------------------------------------- runs */

static int cmd_run(struct dap_app *app, struct dap_session *ss,
                   struct dap_req *req, struct dap_res *res)
{
    const char *project_id = NULL;
    if (arg_project_id(req, res, &project_id))
        return -1;
    const char *idem = NULL;
    json_t *jidem = json_object_get(req->args, "idempotencyKey");
    if (jidem && !json_is_null(jidem)) {
        if (!json_is_string(jidem) || json_string_length(jidem) == 0)
            return dap__fail(res, DAP_BAD_REQUEST,
                             "idempotencyKey must be a non-empty string");
        if (json_string_length(jidem) > IDEM_KEY_MAX ||
            strlen(json_string_value(jidem)) != json_string_length(jidem))
            return dap__fail(res, DAP_BAD_REQUEST,
                             "idempotencyKey must be at most %d bytes without NUL",
                             IDEM_KEY_MAX);
        idem = json_string_value(jidem);
    }
    if (app->stopping)
        return dap__fail(res, DAP_CONFLICT,
                         "Server is shutting down: no new runs are started");
    struct store_run run;
    struct err e = {0};
    int rc = sched_run_now(app->sched, ss->key.user, project_id, idem, dap__now(app),
                           &run, &e);
    if (rc)
        return fail_sched(res, rc, &e);
    dap__write_run(&res->body, &run, true);
    store_run_clear(&run);
    return 0;
}

static int cmd_cancel(struct dap_app *app, struct dap_session *ss,
                      struct dap_req *req, struct dap_res *res)
{
    const char *project_id = NULL;
    if (arg_project_id(req, res, &project_id))
        return -1;
    struct err e = {0};
    int rc = sched_cancel(app->sched, ss->key.user, project_id, &e);
    if (rc)
        return fail_sched(res, rc, &e);
    buf_puts(&res->body, "{}");
    return 0;
}

struct runs_ctx {
    struct buf *b;
    bool first;
};

static int runs_one(const struct store_run *r, void *ud)
{
    struct runs_ctx *rc = ud;
    if (!rc->first)
        buf_putc(rc->b, ',');
    rc->first = false;
    dap__write_run(rc->b, r, true);
    return 0;
}

static int cmd_runs(struct dap_app *app, struct dap_session *ss,
                    struct dap_req *req, struct dap_res *res)
{
    const char *project_id = NULL;
    if (arg_project_id(req, res, &project_id))
        return -1;
    int64_t limit = 100;
    json_t *jl = json_object_get(req->args, "limit");
    if (jl && !json_is_null(jl)) {
        double v = json_is_number(jl) ? json_number_value(jl) : -1;
        if (v != floor(v) || v < 1 || v > RUNS_MAX)
            return dap__fail(res, DAP_BAD_REQUEST,
                             "limit must be an integer from 1 to %d", RUNS_MAX);
        limit = (int64_t)v;
    }
    struct store_dep d;
    int rc = store_dep_get(app->store, ss->key.user, project_id, &d);
    if (rc)
        return fail_store(res, rc, project_id);
    store_dep_clear(&d);
    struct runs_ctx rctx = {&res->body, true};
    buf_puts(&res->body, "{\"runs\":[");
    rc = store_run_list(app->store, ss->key.user, project_id, limit, runs_one, &rctx);
    if (rc) {
        buf_reset(&res->body);
        return fail_store(res, rc, project_id);
    }
    buf_puts(&res->body, "]}");
    return 0;
}

static int cmd_watch(struct dap_app *app, struct dap_session *ss,
                     struct dap_req *req, struct dap_res *res)
{
    json_t *jen = json_object_get(req->args, "enable");
    if (jen && !json_is_null(jen) && !json_is_boolean(jen))
        return dap__fail(res, DAP_BAD_REQUEST, "enable must be a boolean");
    bool enable = !jen || json_is_null(jen) || json_is_true(jen);
    json_t *jp = json_object_get(req->args, "projectId");
    const char *project_id = NULL;
    if (jp && !json_is_null(jp)) {
        if (check_project_id(jp, "projectId", res))
            return -1;
        project_id = json_string_value(jp);
    }
    free(ss->watch_project); /* the watch is replaced; monitors stay */
    ss->watch_project = NULL;
    ss->watching = false;
    if (enable) {
        ss->watching = true;
        ss->watch_project = project_id ? xstrdup(project_id) : NULL;
    }
    buf_printf(&res->body, "{\"watching\":%s,\"projectId\":",
               enable ? "true" : "false");
    buf_json_cstr(&res->body, enable ? project_id : NULL);
    buf_putc(&res->body, '}');
    return 0;
}

#ifdef RRDEPLOY_TEST_HOOKS
/* Test builds only, and only with --test-clock: move the wall clock the
 * scheduler sees ({"set": t} or {"advance": seconds}) and decide every tick
 * due at the new time before answering -- and, with {"lead": seconds}, the
 * ticks due that much later, as the daemon's timer does a second ahead
 * (their runs are held until their time). With {"wait": false} it only
 * moves the clock and answers: the daemon's timer then works through what
 * is due, a chunk a turn, as after a real clock step. */
static int cmd_test_clock(struct dap_app *app, struct dap_session *ss,
                          struct dap_req *req, struct dap_res *res)
{
    if (!app->test_hooks)
        return dap__fail(res, DAP_BAD_REQUEST, "Invalid command: rrtest_clock");
    json_t *jset = json_object_get(req->args, "set");
    json_t *jadv = json_object_get(req->args, "advance");
    double t = app->clock->at;
    if (jset && json_is_number(jset))
        t = json_number_value(jset);
    else if (jadv && json_is_number(jadv))
        t += json_number_value(jadv);
    else if (jset || jadv)
        return dap__fail(res, DAP_BAD_REQUEST, "set/advance must be numbers");
    if (!(t >= 0 && t <= 253402300799.0)) /* 1970 .. 9999, and not NaN */
        return dap__fail(res, DAP_BAD_REQUEST,
                         "the test clock must stay within 1970-9999");
    json_t *jlead = json_object_get(req->args, "lead");
    double lead = jlead && json_is_number(jlead) ? json_number_value(jlead) : 0;
    if (!(lead >= 0 && lead <= 60))
        return dap__fail(res, DAP_BAD_REQUEST, "lead must be 0-60 seconds");
    json_t *jwait = json_object_get(req->args, "wait");
    app->clock->at = t;
    int fired = 0;
    if (!app->stopping && !json_is_false(jwait)) {
        sched_release(app->sched, dap__now(app));
        fired = sched_tick(app->sched, dap__now(app), lead, 0);
    }
    buf_printf(&res->body, "{\"now\":%.6f,\"fired\":%d}", app->clock->at, fired);
    return 0;
}

/* Make the commit of this request's service pass fail, as a full or broken
 * disk would: what the server then owes its clients is tested over the wire. */
static int cmd_test_fail_commit(struct dap_app *app, struct dap_session *ss,
                                struct dap_req *req, struct dap_res *res)
{
    (void)ss;
    (void)req;
    if (!app->test_hooks)
        return dap__fail(res, DAP_BAD_REQUEST, "Invalid command: rrtest_fail_commit");
    store_test_fail_commits(app->store, 1);
    buf_puts(&res->body, "{}");
    return 0;
}

/* Stand in for the RocketRide engine's credential checks (see server.c):
 * {"enable": true[, "wait_ms": n]} makes credentials go to it, with a fresh
 * cache; {"down": true} makes it unreachable; {"answer": "<credential>",
 * "user": "u", "perms": 3 | "refuse": "text" | "unreachable": "text"}
 * gives the verdict on every check of that credential. The body lists the
 * credentials waiting and how many were asked. */
static int cmd_test_engine(struct dap_app *app, struct dap_session *ss,
                           struct dap_req *req, struct dap_res *res)
{
    (void)ss;
    if (!app->test_hooks || !app->server)
        return dap__fail(res, DAP_BAD_REQUEST, "Invalid command: rrtest_engine");
    struct err e = {0};
    if (dap__test_engine(app->server, req->args, &res->body, &e) != 0)
        return dap__fail(res, DAP_BAD_REQUEST, "%s", e.msg);
    return 0;
}
#endif

/* ---------------------------------------------------------------- table */

static const struct dap_cmd commands[] = {
    /* name                    handler        public  permission       writes  raw */
    {"auth",                   cmd_auth,      true,   0,                  false, false},
    {"deauth",                 cmd_deauth,    false,  0,                  false, true},
    {"rrext_ping",             cmd_ping,      false,  0,                  false, true},
    {"rrext_public_probe",     cmd_probe,     true,   0,                  false, false},
    {"rrext_monitor",          cmd_monitor,   false,  0,                  false, false},
    {"rrext_deploy_add",       cmd_add,       false,  STORE_PERM_CONTROL, true,  false},
    {"rrext_deploy_remove",    cmd_remove,    false,  STORE_PERM_CONTROL, true,  true},
    {"rrext_deploy_update",    cmd_update,    false,  STORE_PERM_CONTROL, true,  false},
    {"rrext_deploy_list",      cmd_list,      false,  STORE_PERM_MONITOR, false, true},
    {"rrext_deploy_status",    cmd_status,    false,  STORE_PERM_MONITOR, false, true},
    {"rrext_deploy_preview",   cmd_preview,   false,  STORE_PERM_MONITOR, false, false},
    {"rrext_deploy_run",       cmd_run,       false,  STORE_PERM_CONTROL, true,  false},
    {"rrext_deploy_cancel",    cmd_cancel,    false,  STORE_PERM_CONTROL, true,  true},
    {"rrext_deploy_runs",      cmd_runs,      false,  STORE_PERM_MONITOR, false, false},
    {"rrext_deploy_watch",     cmd_watch,     false,  STORE_PERM_MONITOR, false, false},
#ifdef RRDEPLOY_TEST_HOOKS
    {"rrtest_clock",           cmd_test_clock, false, 0,                  true,  false},
    {"rrtest_fail_commit",     cmd_test_fail_commit, false, 0,            true,  false},
    {"rrtest_engine",          cmd_test_engine, false, 0,                 false, false},
#endif
};

_Static_assert(sizeof commands / sizeof commands[0] < DAP_CMD_SLOTS,
               "raise DAP_CMD_SLOTS");

const struct dap_cmd *dap__cmd_at(size_t i)
{
    return i < sizeof commands / sizeof commands[0] ? &commands[i] : NULL;
}

size_t dap__cmd_slot(const struct dap_cmd *c)
{
    return c ? (size_t)(c - commands) : DAP_CMD_SLOTS - 1;
}

const struct dap_cmd *dap__cmd_find(const char *name)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

/* Sessions of the development key and of the engine have no key row to
 * lose (the engine does not revoke open sessions either; its verdicts are
 * trusted for new auths only as long as the cache keeps them). */
bool dap__session_recheck(struct dap_app *app, struct dap_session *ss)
{
    if (!ss->authed || ss->dev || ss->engine || ss->revoked)
        return false;
    struct store_key k;
    int rc = store_key_get(app->store, ss->key.id, &k);
    if (rc == RR_E_NOTFOUND || (rc == 0 && k.revoked_at != 0) ||
        (rc == 0 && k.expires_at != 0 && dap__now(app) >= k.expires_at)) {
        ss->revoked = true;
        log_info("session of user=%s lost key %s", ss->key.user, ss->key.id);
        return true;
    }
    return false;
}
