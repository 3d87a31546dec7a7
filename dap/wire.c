/* wire.c -- every JSON text rrdeploy sends: the response and event frames,
 * and the values inside them (deployment records, runs, events, the
 * ConnectResult, /healthz).
 *
 * Design: values are written straight into a struct buf with the buf_json_*
 * helpers -- no jansson tree is built for output, and pipelines, kept as
 * compact text, are copied in byte for byte. Every frame is one line (no raw
 * LF: the TypeScript SDK splits frames at the first newline). Field names
 * follow the reference server where it has them (created_by, created_at,
 * updated_at) and the published deploy docs' aliases beside them (userId,
 * createdAt, updatedAt); docs/protocol.md lists every field. A run's task --
 * what a RocketRide engine reported, kept by the store as the executor wrote
 * it -- goes in as JSON, not as a string, with its white space stripped so
 * the frame stays one line. Credentials are never written.
 * Thread: service thread only (no state). */
#include "dap/dap_internal.h"

#include <string.h>

#include "util/jraw.h"

/* Nesting accepted in a run's task: far more than an engine's report has,
 * and well inside what clients accept for the whole frame. */
#define TASK_MAX_DEPTH 32

/* ---------------------------------------------------------------- values */

/* ,"name":<time>, or ,"name":null when t is 0. */
static void time_field(struct buf *b, const char *name, double t)
{
    buf_puts(b, ",\"");
    buf_puts(b, name);
    buf_puts(b, "\":");
    if (t != 0)
        buf_json_time(b, t);
    else
        buf_puts(b, "null");
}

/* ,"task":<the run's task>. The store checks nothing of it, so text that is
 * not JSON (a bug, or a damaged row) is left out rather than allowed to
 * break the frame. */
static void task_field(struct buf *b, const struct store_run *r)
{
    size_t n = strlen(r->task);
    struct err e = {0};
    if (jraw_check(r->task, n, TASK_MAX_DEPTH, &e) != 0) {
        log_warn("run %lld: its task is not JSON (%s); left out", (long long)r->id, e.msg);
        return;
    }
    buf_puts(b, ",\"task\":");
    jraw_compact(b, r->task, n);
}

void dap__write_run(struct buf *b, const struct store_run *r, bool with_output)
{
    buf_puts(b, "{\"id\":");
    buf_i64(b, r->id);
    buf_puts(b, ",\"projectId\":");
    buf_json_cstr(b, r->project_id);
    buf_puts(b, ",\"userId\":");
    buf_json_cstr(b, r->user);
    buf_puts(b, ",\"trigger\":");
    buf_json_cstr(b, r->trigger);
    buf_puts(b, ",\"outcome\":");
    buf_json_cstr(b, store_outcome_name(r->outcome));
    buf_puts(b, ",\"reason\":");
    buf_json_cstr(b, r->reason);
    time_field(b, "scheduled_for", r->scheduled_for);
    time_field(b, "created_at", r->created_at);
    time_field(b, "started_at", r->started_at);
    time_field(b, "finished_at", r->finished_at);
    buf_puts(b, ",\"exit_code\":");
    if (r->exit_code >= 0)
        buf_i64(b, r->exit_code);
    else
        buf_puts(b, "null");
    buf_puts(b, ",\"signal\":");
    if (r->signal)
        buf_i64(b, r->signal);
    else
        buf_puts(b, "null");
    if (with_output) {
        buf_puts(b, ",\"output_tail\":");
        if (r->output)
            buf_json_bytes(b, r->output, r->output_len);
        else
            buf_puts(b, "null");
    }
    buf_puts(b, ",\"idempotency_key\":");
    buf_json_cstr(b, r->idempotency_key);
    if (r->outcome == STORE_RUN_MISSED) {
        buf_puts(b, ",\"missed_count\":");
        buf_i64(b, r->missed_count);
        time_field(b, "window_start", r->window_start);
        time_field(b, "window_end", r->window_end);
    }
    if (r->task)
        task_field(b, r);
    buf_putc(b, '}');
}

/* Literal text: its length is known at compile time. */
#define PUT_LIT(b, lit) buf_append((b), (lit), sizeof(lit) - 1)

/* Append again the n bytes written at offset at. */
static void repeat(struct buf *b, size_t at, size_t n)
{
    buf_reserve(b, n); /* may move the data: take the pointer after */
    buf_append(b, buf_data(b) + at, n);
}

void dap__write_record(struct buf *b, const struct store_dep *d,
                       const struct store_run *last)
{
    /* list writes thousands of these: no strlen of literals, and each time
     * formatted once though two names carry it */
    PUT_LIT(b, "{\"pipeline\":");
    buf_puts(b, d->pipeline);
    PUT_LIT(b, ",\"schedule\":");
    buf_json_cstr(b, d->schedule);
    PUT_LIT(b, ",\"state\":");
    buf_json_cstr(b, store_state_name(d->state));
    PUT_LIT(b, ",\"created_by\":");
    buf_json_cstr(b, d->created_by);
    PUT_LIT(b, ",\"created_at\":");
    size_t created = b->len;
    buf_json_time(b, d->created_at);
    size_t created_n = b->len - created;
    PUT_LIT(b, ",\"updated_at\":");
    size_t updated = b->len;
    buf_json_time(b, d->updated_at);
    size_t updated_n = b->len - updated;
    PUT_LIT(b, ",\"userId\":");
    buf_json_cstr(b, d->user);
    PUT_LIT(b, ",\"createdAt\":");
    repeat(b, created, created_n);
    PUT_LIT(b, ",\"updatedAt\":");
    repeat(b, updated, updated_n);
    time_field(b, "next_run_at", d->next_run_at > 0 ? d->next_run_at : 0);
    PUT_LIT(b, ",\"last_run\":");
    if (last)
        dap__write_run(b, last, false);
    else
        PUT_LIT(b, "null");
    PUT_LIT(b, ",\"error\":");
    buf_json_cstr(b, d->error);
    PUT_LIT(b, ",\"owner_key_id\":");
    buf_json_cstr(b, d->owner_key_id);
    buf_putc(b, '}');
}

static const char *const event_actions[] = {
    [SCHED_EV_RUN_STARTED] = "run_started",
    [SCHED_EV_RUN_FINISHED] = "run_finished",
    [SCHED_EV_TICK_SKIPPED] = "tick_skipped",
    [SCHED_EV_TICK_MISSED] = "tick_missed",
    [SCHED_EV_STATE_CHANGED] = "state_changed",
    [SCHED_EV_REMOVED] = "removed",
};

void dap__write_event(struct buf *b, const struct sched_event *ev)
{
    buf_puts(b, "{\"action\":");
    buf_json_cstr(b, event_actions[ev->kind]);
    buf_puts(b, ",\"projectId\":");
    buf_json_cstr(b, ev->project_id);
    buf_puts(b, ",\"at\":");
    buf_json_time(b, ev->at);
    if (ev->run) {
        buf_puts(b, ",\"run\":");
        dap__write_run(b, ev->run, true);
    }
    if (ev->kind == SCHED_EV_STATE_CHANGED) {
        buf_puts(b, ",\"state\":");
        buf_json_cstr(b, store_state_name(ev->state));
        buf_puts(b, ",\"error\":");
        buf_json_cstr(b, ev->error);
    }
    buf_putc(b, '}');
}

static void write_perm_list(struct buf *b, unsigned perms)
{
    bool first = true;
    buf_putc(b, '[');
    if (perms & STORE_PERM_CONTROL) {
        buf_puts(b, "\"task.control\"");
        first = false;
    }
    if (perms & STORE_PERM_MONITOR)
        buf_puts(b, first ? "\"task.monitor\"" : ",\"task.monitor\"");
    buf_putc(b, ']');
}

/* rrdeploy's identity model in the SDKs' ConnectResult: one organization,
 * one team `default` carrying the key's permissions. userToken is empty so a
 * reconnecting client re-sends its original key. */
void dap__write_connect_result(struct buf *b, const struct store_key *k)
{
    buf_puts(b, "{\"userToken\":\"\",\"userId\":");
    buf_json_cstr(b, k->user);
    buf_puts(b, ",\"displayName\":");
    buf_json_cstr(b, k->user);
    buf_puts(b, ",\"givenName\":\"\",\"familyName\":\"\",\"preferredUsername\":");
    buf_json_cstr(b, k->user);
    buf_puts(b, ",\"email\":\"\",\"emailVerified\":false,\"phoneNumber\":\"\","
                "\"phoneNumberVerified\":false,\"locale\":\"\","
                "\"defaultTeam\":\"default\",\"organizations\":[{\"id\":"
                "\"rrdeploy\",\"name\":\"rrdeploy\",\"permissions\":");
    buf_puts(b, (k->perms & STORE_PERM_ORG_ADMIN) ? "[\"org.admin\"]" : "[]");
    buf_puts(b, ",\"teams\":[{\"id\":\"default\",\"name\":\"Default\","
                "\"permissions\":");
    write_perm_list(b, k->perms);
    buf_puts(b, "}]}],\"apps\":[],\"capabilities\":[\"rrdeploy\"]}");
}

void dap__write_health(struct buf *b, const struct dap_health *h)
{
    buf_puts(b, "{\"status\":");
    buf_json_cstr(b, h->db_error ? "unavailable" : "ok");
    buf_puts(b, ",\"version\":\"" RRDEPLOY_VERSION "\",\"uptime_seconds\":");
    buf_printf(b, "%.3f", h->uptime_s);
    buf_puts(b, ",\"database\":");
    if (h->db_error) {
        struct buf msg;
        buf_init(&msg, 0);
        buf_printf(&msg, "error: %s", h->db_error);
        buf_json_str(b, buf_data(&msg), msg.len);
        buf_free(&msg);
    } else {
        buf_puts(b, "\"ok\"");
    }
    buf_puts(b, ",\"deployments\":");
    buf_i64(b, (int64_t)h->deployments);
    buf_puts(b, ",\"runs_in_progress\":");
    buf_i64(b, h->runs_in_progress);
    buf_puts(b, ",\"stopping\":");
    buf_puts(b, h->stopping ? "true" : "false");
    if (h->engine) {
        const struct dap_engine_state *en = h->engine;
        buf_puts(b, ",\"engine\":{\"url\":");
        buf_json_cstr(b, en->url);
        buf_puts(b, ",\"reachable\":");
        buf_puts(b, en->reachable ? "true" : "false");
        buf_puts(b, ",\"since\":");
        if (en->since > 0)
            buf_json_time(b, en->since);
        else
            buf_puts(b, "null");
        if (!en->reachable && en->why[0]) {
            buf_puts(b, ",\"why\":");
            buf_json_cstr(b, en->why);
        }
        buf_putc(b, '}');
    }
    buf_puts(b, "}\n");
}

/* ---------------------------------------------------------------- frames */

/* A new frame with room for `payload` more bytes than the envelope. */
static struct buf *frame_new(size_t payload)
{
    struct buf *f = xmalloc(sizeof *f);
    buf_init(f, DAP_FRAME_HEAD);
    buf_reserve(f, payload + 128);
    return f;
}

static char *put_lit(char *p, const char *lit)
{
    size_t n = strlen(lit);
    memcpy(p, lit, n);
    return p + n;
}

/* A success whose body was written with DAP_ENVELOPE_ROOM in front of it
 * (dap__handle_message does) and whose command name needs no escaping:
 * the envelope goes into that room and the body becomes the frame, with no
 * copy. NULL when it does not apply. */
static struct buf *frame_around_body(struct dap_session *ss, int64_t request_seq,
                                     const char *command, size_t command_len,
                                     struct dap_res *res)
{
    if (res->code || command_len > 64)
        return NULL;
    for (size_t i = 0; i < command_len; i++) {
        char c = command[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-'))
            return NULL;
    }
    char env[DAP_ENVELOPE_ROOM], *p = env;
    p = put_lit(p, "{\"type\":\"response\",\"seq\":");
    p += fmt_i64(p, ss->seq + 1);
    p = put_lit(p, ",\"request_seq\":");
    p += fmt_i64(p, request_seq);
    p = put_lit(p, ",\"command\":\"");
    memcpy(p, command, command_len);
    p += command_len;
    p = put_lit(p, res->body.len ? "\",\"success\":true,\"body\":" : "\",\"success\":true");
    size_t n = (size_t)(p - env);
    if (res->body.head < DAP_FRAME_HEAD + n)
        return NULL;
    ss->seq++;
    buf_prepend(&res->body, env, n);
    buf_putc(&res->body, '}');
    struct buf *f = xmalloc(sizeof *f);
    *f = res->body;
    buf_init(&res->body, 0);
    return f;
}

struct buf *dap__response_frame(struct dap_session *ss, int64_t request_seq,
                                const char *command, size_t command_len,
                                struct dap_res *res)
{
    struct buf *fast = frame_around_body(ss, request_seq, command, command_len, res);
    if (fast)
        return fast;
    struct buf *f = frame_new(res->body.len + res->msg.len + command_len);
    buf_puts(f, "{\"type\":\"response\",\"seq\":");
    buf_i64(f, ++ss->seq);
    buf_puts(f, ",\"request_seq\":");
    buf_i64(f, request_seq);
    buf_puts(f, ",\"command\":");
    buf_json_str(f, command, command_len);
    if (!res->code) {
        buf_puts(f, ",\"success\":true");
        if (res->body.len) {
            buf_puts(f, ",\"body\":");
            buf_append(f, buf_data(&res->body), res->body.len);
        }
    } else {
        buf_puts(f, ",\"success\":false,\"message\":");
        buf_json_str(f, buf_data(&res->msg), res->msg.len);
        buf_puts(f, ",\"code\":");
        buf_json_cstr(f, res->code);
    }
    buf_putc(f, '}');
    return f;
}

struct buf *dap__event_frame(struct dap_session *ss, const char *body,
                             size_t body_len)
{
    struct buf *f = frame_new(body_len);
    buf_puts(f, "{\"type\":\"event\",\"seq\":");
    buf_i64(f, ++ss->seq);
    buf_puts(f, ",\"event\":\"apaevt_deploy\",\"body\":");
    buf_append(f, body, body_len);
    buf_putc(f, '}');
    return f;
}
