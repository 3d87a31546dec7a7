/* rocketride.c -- the `rocketride` executor: runs as tasks on a RocketRide
 * engine, as the deployment's owner (docs/engine.md).
 *
 * Purpose: run a deployment's pipeline where RocketRide runs pipelines,
 * with the owner's own credential, one task per run, never two at once; tell
 * the scheduler how each run ended in rrdeploy's outcomes; and check
 * clients' RocketRide credentials with the same engine.
 *
 * Design: every connection lives on the upstream thread (dap/upstream.h);
 * this file is the callbacks that run there. The service thread talks to it
 * through an inbox (submit, cancel, reclaim, identify) under x->mu and a
 * dap_up_wake; what comes back (run reports, identity verdicts) goes through
 * queues the service thread drains after cfg.wake.
 *
 * A run is a small state machine over its own connection (a fresh
 * authentication per run: the engine checks a credential only when it is
 * presented, so a revoked key must be presented again to be noticed):
 *
 *   WAITING --connect--> AUTH --auth ok--> LOOKING --not running--> STARTING
 *      ^                                     | running: skipped       |
 *      |  retry (bounded)                    v                        v
 *      +------ lost before execute       (done)  <--terminal--   FOLLOWING
 *                                                                 |  ^
 *                                               cancel / timeout  v  | lost:
 *                                                           STOPPING | reconnect,
 *                                                                    | poll
 *
 * LOOKING sends rrext_monitor (project and source, before the task exists,
 * so no event of this run is missed) and rrext_get_task_status by the token
 * the engine will derive. STARTING reports the run started (with the token,
 * so that a restart can find the task) and sends execute. FOLLOWING takes
 * status updates, begin/end and output events; a poll every cfg.poll_s is
 * the backstop for lost events. Only a terminal status of this run counts:
 * one seen after this run's `begin`, or with a startTime not before the
 * execute (the subscription's catch-up may be the previous run's end).
 *
 * Outcomes follow what the engine reliably says (its exit codes are not:
 * a successful batch may end as state 6 with exit code 1): errors or an exit
 * message mean failed; a terminal state otherwise means succeeded; a stop
 * rrdeploy asked for is cancelled, timed_out or interrupted whatever the
 * state; a task the engine forgot before ending is interrupted.
 *
 * Thread: the executor ops run on the service thread and only touch the
 * inbox, the queues and counters under x->mu. Runs, identity checks and the
 * connection pointers belong to the upstream thread. */
#include "runner/executor.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "dap/dap.h"
#include "dap/upstream.h"
#include "util/jraw.h"
#include "util/vault.h"

#define TICK_MS 100              /* deadlines are checked this often */
#define SKEW_S 5.0               /* clock skew allowed between us and the engine */
#define RETRY_FIRST_MS 1000      /* first reconnect delay; doubles */
#define RETRY_MAX_MS 10000
#define IDENTIFY_TIMEOUT_MS 10000
#define PROBE_EVERY_MS 10000     /* reachability probe when otherwise idle */
#define ERRORS_KEPT 5            /* engine error lines kept in the task record */


/* Sources that never end by themselves: a scheduled run of them is a window
 * (docs/engine.md). */
static const char *const resident_providers[] = {"webhook", "chat", "dropper",
                                                 "telegram"};

/* ================================================================ types */

enum phase {
    PH_WAITING,   /* not connected: queued, or waiting to retry */
    PH_AUTH,      /* connection asked for, auth sent once open */
    PH_LOOKING,   /* monitor and status sent, before execute */
    PH_STARTING,  /* execute sent, not answered */
    PH_FOLLOWING, /* the task runs */
    PH_STOPPING,  /* terminate sent */
};

/* Why rrdeploy stopped a task: decides the outcome. */
enum stop { STOP_NONE, STOP_CANCEL, STOP_TIMEOUT, STOP_WINDOW, STOP_INTERRUPT,
            STOP_NOSTART };

struct run {
    struct run *next;
    struct rr *x;
    /* from the job (owned) */
    int64_t run_id;
    char *user, *project_id, *pipeline;
    unsigned char *cred;         /* sealed owner credential; NULL: service */
    size_t cred_len;
    /* the task */
    char *source;                /* NULL until known */
    char *provider;
    char token[36];              /* "" until the engine's userId is known */
    char task_id[64];            /* "<8 hex>.<source>" */
    char *engine_user;
    bool resident;
    bool reattach;               /* adopted after a restart */
    /* the connection */
    struct dap_up_conn *conn;
    bool opened;                 /* the connection came up */
    enum phase phase;
    int64_t seq_auth, seq_status, seq_exec, seq_term, seq_poll;
    bool exec_sent;              /* execute went out: a task may exist */
    bool exec_answered;
    bool begin_seen;
    bool reached_running;        /* a status of this run said RUNNING */
    bool polling;                /* a status poll is out */
    double t0;                   /* wall clock when execute went out */
    char *final;                 /* this run's terminal status (JSON) */
    char *exec_error;            /* execute's failure, kept for the fast-end race */
    struct out_tail out;
    /* time, monotonic ms (0 = none) */
    int64_t deadline;            /* of the phase */
    int64_t run_deadline;        /* cfg.timeout_s after the start */
    int64_t next_poll;
    int64_t retry_at;
    int64_t lost_since;
    int attempts;                /* connection attempts before execute */
    enum stop stop;
    enum store_outcome stop_as;  /* for STOP_CANCEL / STOP_INTERRUPT */
};

struct ident {
    struct ident *next;
    struct rr *x;
    uint64_t ticket;
    char *key;                   /* sodium_malloc'd, wiped */
    struct dap_up_conn *conn;
    int64_t seq;
    int64_t deadline;
};

/* Something the service thread asked for. */
enum order_kind { ORD_SUBMIT, ORD_RECLAIM, ORD_CANCEL, ORD_IDENTIFY };
struct order {
    struct order *next;
    enum order_kind kind;
    struct run *run;             /* SUBMIT, RECLAIM */
    int64_t run_id;              /* CANCEL */
    enum store_outcome as;
    struct ident *ident;         /* IDENTIFY */
};

struct verdict {
    struct verdict *next;
    uint64_t ticket;
    bool ok, refused;
    struct dap_identity id;
    char *why;
};

struct rr {
    struct executor base;        /* first: the executor interface */
    struct rocketride_config cfg;
    char *service_key;           /* sodium_malloc'd; NULL: none */
    struct dap_up *up;
    struct report_queue reports;

    pthread_mutex_t mu;
    /* Guarded by mu: */
    struct order *inbox, *inbox_tail;
    struct verdict *verdicts, *verdicts_tail;
    int nactive;                 /* submitted or adopted, not yet reported done */
    bool stopping;
    struct dap_engine_state stats;

    /* Upstream thread only: */
    struct run *runs;            /* live and waiting */
    int nconnected;              /* runs holding a connection */
    struct ident *idents;
    struct dap_up_conn *probe;
    int64_t last_contact;        /* monotonic ms of the last connection that opened */
};

static void on_run_conn(void *ud, struct dap_up_conn *c, enum dap_up_event ev,
                        const struct dap_msg *m, const char *why);
static void finish(struct rr *x, struct run *r, enum store_outcome oc,
                   const char *reason, const char *owner_refused);
static void send_terminate(struct rr *x, struct run *r);

/* ================================================================ helpers */

static int64_t ms_after(double s)
{
    return time_now_mono_ms() + (int64_t)(s * 1000.0);
}

static bool is_resident(const char *provider)
{
    for (size_t i = 0; provider && i < sizeof resident_providers / sizeof *resident_providers; i++)
        if (strcmp(provider, resident_providers[i]) == 0)
            return true;
    return false;
}

static bool is_stopping(struct rr *x)
{
    pthread_mutex_lock(&x->mu);
    bool stopping = x->stopping;
    pthread_mutex_unlock(&x->mu);
    return stopping;
}

static void count_request(struct rr *x, enum dap_engine_request k)
{
    pthread_mutex_lock(&x->mu);
    x->stats.requests[k]++;
    pthread_mutex_unlock(&x->mu);
}

/* The engine answered a connection, or could not be reached. */
static void note_contact(struct rr *x, bool ok, const char *why)
{
    if (ok)
        x->last_contact = time_now_mono_ms();
    pthread_mutex_lock(&x->mu);
    if (ok)
        x->stats.connects++;
    else
        x->stats.connect_failures++;
    if (x->stats.reachable != ok || x->stats.since == 0) {
        x->stats.reachable = ok;
        x->stats.since = time_now_real();
        if (!ok)
            log_warn("rocketride engine %s unreachable: %s", x->cfg.url, why);
        else
            log_info("rocketride engine %s reachable", x->cfg.url);
    }
    snprintf(x->stats.why, sizeof x->stats.why, "%s", ok ? "" : why);
    pthread_mutex_unlock(&x->mu);
}

/* ---------------------------------------------------------------- tokens */

/* s as Python's json.dumps writes a str (ensure_ascii): all but printable ASCII as
 * \uXXXX in lower-case hex, astral characters as surrogate pairs. s is
 * valid UTF-8 (the store only keeps valid JSON text). */
static void py_json_str(struct buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    buf_putc(b, '"');
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        uint32_t c = *p;
        int extra = c < 0x80 ? 0 : c < 0xE0 ? 1 : c < 0xF0 ? 2 : 3;
        if (extra)
            c &= 0x3Fu >> extra;
        p++;
        for (int i = 0; i < extra && (*p & 0xC0) == 0x80; i++)
            c = (c << 6) | (*p++ & 0x3Fu);
        const char *esc = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\n' ? "\\n"
                        : c == '\r' ? "\\r" : c == '\t' ? "\\t" : c == '\b' ? "\\b"
                        : c == '\f' ? "\\f" : NULL;
        if (esc) {
            buf_puts(b, esc);
        } else if (c >= 0x20 && c < 0x7f) {
            buf_putc(b, (char)c);
        } else {
            uint32_t units[2] = {c, 0};
            int n = 1;
            if (c > 0xFFFF) {
                c -= 0x10000;
                units[0] = 0xD800 | (c >> 10);
                units[1] = 0xDC00 | (c & 0x3FF);
                n = 2;
            }
            for (int i = 0; i < n; i++) {
                char u[7] = {'\\', 'u', hex[units[i] >> 12 & 15], hex[units[i] >> 8 & 15],
                             hex[units[i] >> 4 & 15], hex[units[i] & 15], 0};
                buf_puts(b, u);
            }
        }
    }
    buf_putc(b, '"');
}

void rocketride_task_token(const char *user, const char *project_id,
                           const char *source, char out[36])
{
    struct buf b;
    buf_init(&b, 0);
    buf_puts(&b, "{\"project_id\": ");
    py_json_str(&b, project_id);
    buf_puts(&b, ", \"source\": ");
    py_json_str(&b, source);
    buf_puts(&b, ", \"userId\": ");
    py_json_str(&b, user);
    buf_putc(&b, '}');
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, (const unsigned char *)buf_data(&b), b.len);
    buf_free(&b);
    memcpy(out, "tk_", 3);
    sodium_bin2hex(out + 3, 33, h, 16);
}

/* ---------------------------------------------------------------- JSON */

/* A tree of the valid JSON text p[0..n), for reading values. Text may hold
 * what jansson refuses (lone surrogate escapes, 1e400), which pipelines and
 * engine texts keep: jraw_load reads it tamed. NULL when it is not JSON. */
static json_t *load_json(const char *p, size_t n)
{
    return jraw_load(p, n, JSON_DECODE_ANY, NULL);
}

/* ---------------------------------------------------------------- pipelines */

/* The source component the engine will run, as it picks it: the pipeline's
 * "source", else the only component whose config.mode is "Source"; and
 * that component's provider. false when the pipeline does not say (the
 * engine will refuse it, with its own words). */
static bool pipeline_source(const char *pipeline, char **source, char **provider)
{
    json_t *root = load_json(pipeline, strlen(pipeline));
    const char *src = json_string_value(json_object_get(root, "source"));
    json_t *comps = json_object_get(root, "components");
    json_t *found = NULL;
    size_t i, nsrc = 0;
    json_t *c;
    json_array_foreach(comps, i, c) {
        const char *id = json_string_value(json_object_get(c, "id"));
        const char *mode = json_string_value(
            json_object_get(json_object_get(c, "config"), "mode"));
        if (src ? (id && strcmp(id, src) == 0)
                : (mode && strcmp(mode, "Source") == 0)) {
            found = c;
            nsrc++;
        }
    }
    bool ok = found && (src || nsrc == 1);
    if (ok) {
        *source = xstrdup(src ? src : json_string_value(json_object_get(found, "id")));
        const char *p = json_string_value(json_object_get(found, "provider"));
        *provider = p ? xstrdup(p) : NULL;
    }
    json_decref(root);
    return ok;
}

/* ================================================================ runs */

static void run_free(struct run *r)
{
    free(r->user);
    free(r->project_id);
    free(r->pipeline);
    free(r->cred);
    free(r->source);
    free(r->provider);
    free(r->engine_user);
    free(r->final);
    free(r->exec_error);
    out_tail_free(&r->out);
    free(r);
}

static struct run *run_new(const struct rr *x, const struct sched_job *job)
{
    struct run *r = xcalloc(1, sizeof *r);
    r->x = (struct rr *)x;
    r->run_id = job->run_id;
    r->user = xstrdup(job->user);
    r->project_id = xstrdup(job->project_id);
    r->pipeline = xmalloc(job->pipeline_len + 1);
    memcpy(r->pipeline, job->pipeline, job->pipeline_len);
    r->pipeline[job->pipeline_len] = '\0';
    if (job->credential && job->credential_len) {
        r->cred = xmalloc(job->credential_len);
        memcpy(r->cred, job->credential, job->credential_len);
        r->cred_len = job->credential_len;
    }
    r->out.max = x->cfg.output_max;
    return r;
}

/* The credential this run authenticates with, in guarded memory
 * (vault_text_free), or NULL and why. */
static char *run_credential(struct rr *x, struct run *r, const char **why)
{
    char *key = NULL;
    if (r->cred) {
        if (!x->cfg.vault ||
            vault_unseal(x->cfg.vault, r->user, r->project_id, r->cred,
                         r->cred_len, &key) != 0) {
            *why = "the deployment's credential cannot be opened with this "
                   "server's secret (was the secret file replaced?)";
            return NULL;
        }
        return key;
    }
    if (!x->service_key) {
        *why = "the deployment has no RocketRide credential and the server "
               "has no service credential (--engine-key-file)";
        return NULL;
    }
    size_t n = strlen(x->service_key);
    key = sodium_malloc(n + 1);
    memcpy(key, x->service_key, n + 1);
    return key;
}

static int64_t run_request(struct rr *x, struct run *r, enum dap_engine_request k,
                           const char *command, const char *args, size_t n)
{
    count_request(x, k);
    return dap_up_request(r->conn, command, args, n);
}

/* A request whose arguments are the run's task token. */
static int64_t token_request(struct rr *x, struct run *r, enum dap_engine_request k,
                             const char *command)
{
    struct buf args;
    buf_init(&args, 0);
    buf_puts(&args, "{\"token\":");
    buf_json_cstr(&args, r->token);
    buf_putc(&args, '}');
    int64_t seq = run_request(x, r, k, command, buf_data(&args), args.len);
    buf_free(&args);
    return seq;
}

/* `auth` with key on c; the request text, which holds the key, is wiped. */
static int64_t auth_request(struct rr *x, struct dap_up_conn *c, const char *key)
{
    struct buf args;
    buf_init(&args, 0);
    buf_puts(&args, "{\"auth\":");
    buf_json_cstr(&args, key);
    buf_puts(&args, ",\"clientName\":\"rrdeploy\",\"clientVersion\":\""
                    RRDEPLOY_VERSION "\"}");
    count_request(x, DAP_ENGINE_REQ_AUTH);
    int64_t seq = dap_up_request(c, "auth", buf_data(&args), args.len);
    sodium_memzero(buf_data(&args), args.len);
    buf_free(&args);
    return seq;
}

/* ---------------------------------------------------------------- the task record */

static void put_number(struct buf *b, const char *key, json_t *v)
{
    buf_putc(b, ',');
    buf_json_cstr(b, key);
    buf_putc(b, ':');
    if (json_is_integer(v))
        buf_i64(b, (int64_t)json_integer_value(v));
    else if (json_is_real(v) && isfinite(json_real_value(v)))
        buf_printf(b, "%.17g", json_real_value(v));
    else
        buf_puts(b, "null");
}

/* What the ledger keeps of the task: identity, and from the final status the
 * state, texts, times and counters. */
static char *task_record(const struct run *r)
{
    struct buf b;
    buf_init(&b, 0);
    buf_puts(&b, "{\"token\":");
    buf_json_cstr(&b, r->token[0] ? r->token : NULL);
    buf_puts(&b, ",\"id\":");
    buf_json_cstr(&b, r->task_id[0] ? r->task_id : NULL);
    buf_puts(&b, ",\"source\":");
    buf_json_cstr(&b, r->source);
    buf_puts(&b, ",\"provider\":");
    buf_json_cstr(&b, r->provider);
    buf_puts(&b, ",\"engineUser\":");
    buf_json_cstr(&b, r->engine_user);
    if (r->t0 > 0) { /* by this host's clock: a restart finds its deadline */
        buf_puts(&b, ",\"executeAt\":");
        buf_json_time(&b, r->t0);
    }
    json_t *st = r->final ? load_json(r->final, strlen(r->final)) : NULL;
    if (st) {
        static const char *const nums[] = {"state", "exitCode", "startTime", "endTime"};
        for (size_t i = 0; i < sizeof nums / sizeof *nums; i++)
            put_number(&b, nums[i], json_object_get(st, nums[i]));
        static const char *const texts[] = {"status", "exitMessage"};
        for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
            buf_printf(&b, ",\"%s\":", texts[i]);
            buf_json_cstr(&b, json_string_value(json_object_get(st, texts[i])));
        }
        buf_puts(&b, ",\"errors\":[");
        json_t *errs = json_object_get(st, "errors");
        size_t n = json_array_size(errs), from = n > ERRORS_KEPT ? n - ERRORS_KEPT : 0;
        for (size_t i = from; i < n; i++) {
            if (i > from)
                buf_putc(&b, ',');
            buf_json_cstr(&b, json_string_value(json_array_get(errs, i)));
        }
        buf_puts(&b, "],\"counters\":{");
        static const char *const counters[] = {
            "totalCount", "completedCount", "failedCount", "totalSize",
            "completedSize", "failedSize", "wordsCount", "wordsSize"};
        struct buf c;
        buf_init(&c, 0);
        for (size_t i = 0; i < sizeof counters / sizeof *counters; i++)
            put_number(&c, counters[i], json_object_get(st, counters[i]));
        buf_append(&b, buf_data(&c) + 1, c.len - 1); /* without the first ',' */
        buf_free(&c);
        buf_putc(&b, '}');
        json_decref(st);
    }
    buf_putc(&b, '}');
    return buf_take(&b, NULL);
}

/* ---------------------------------------------------------------- outcomes */

/* How a terminal status of a task rrdeploy did not stop reads. */
static enum store_outcome classify(const char *status_json, char *why, size_t whysz)
{
    json_t *st = load_json(status_json, strlen(status_json));
    json_t *errs = json_object_get(st, "errors");
    const char *msg = json_string_value(json_object_get(st, "exitMessage"));
    int state = (int)json_integer_value(json_object_get(st, "state"));
    int code = (int)json_integer_value(json_object_get(st, "exitCode"));
    json_int_t failed = json_integer_value(json_object_get(st, "failedCount"));
    enum store_outcome oc = STORE_RUN_SUCCEEDED;
    why[0] = '\0';
    if (msg && *msg) {
        oc = STORE_RUN_FAILED;
        snprintf(why, whysz, "%s", msg);
    } else if (json_array_size(errs) > 0) {
        /* "<code>*<message>*<location>": the message is what a person reads */
        const char *e = json_string_value(json_array_get(errs, json_array_size(errs) - 1));
        const char *m = e ? strchr(e, '*') : NULL;
        size_t len = m ? strcspn(m + 1, "*") : 0;
        oc = STORE_RUN_FAILED;
        snprintf(why, whysz, "%.*s", (int)(m ? len : strlen(e ? e : "")),
                 m ? m + 1 : e ? e : "");
    } else if (state == 5 && code != 0) {
        oc = STORE_RUN_FAILED;
        snprintf(why, whysz, "the task completed with exit code %d", code);
    } else if (failed > 0) {
        snprintf(why, whysz, "%lld object(s) failed in the pipeline",
                 (long long)failed);
    }
    json_decref(st);
    return oc;
}

static void finish_stopped(struct rr *x, struct run *r, const char *note)
{
    char why[512];
    switch (r->stop) {
    case STOP_CANCEL:
        finish(x, r, STORE_RUN_CANCELLED, note, NULL);
        return;
    case STOP_TIMEOUT:
        snprintf(why, sizeof why, "stopped after the run timeout of %.0f s%s%s",
                 x->cfg.timeout_s, note ? "; " : "", note ? note : "");
        finish(x, r, STORE_RUN_TIMED_OUT, why, NULL);
        return;
    case STOP_WINDOW:
        snprintf(why, sizeof why, "resident source (%s) stopped at the end of "
                 "its run window of %.0f s%s%s", r->provider ? r->provider : "?",
                 x->cfg.timeout_s, note ? "; " : "", note ? note : "");
        finish(x, r, STORE_RUN_SUCCEEDED, why, NULL);
        return;
    case STOP_INTERRUPT:
        finish(x, r, STORE_RUN_INTERRUPTED, note, NULL);
        return;
    case STOP_NOSTART:
        snprintf(why, sizeof why, "the engine did not start the task within "
                 "%.0f s", x->cfg.start_timeout_s);
        finish(x, r, STORE_RUN_FAILED, why, NULL);
        return;
    case STOP_NONE:
        break;
    }
    ASSERT(!"finish_stopped without a stop");
}

/* The task reached a terminal state (r->final). */
static void finish_terminal(struct rr *x, struct run *r)
{
    if (r->stop != STOP_NONE) {
        finish_stopped(x, r, NULL);
        return;
    }
    char why[512];
    enum store_outcome oc = classify(r->final, why, sizeof why);
    finish(x, r, oc, why[0] ? why : NULL, NULL);
}

/* ---------------------------------------------------------------- steps */

static void send_auth(struct rr *x, struct run *r)
{
    const char *why = NULL;
    char *key = run_credential(x, r, &why);
    if (!key) {
        finish(x, r, STORE_RUN_FAILED, why, NULL);
        return;
    }
    r->seq_auth = auth_request(x, r->conn, key);
    vault_text_free(key);
}

static void connect_run(struct rr *x, struct run *r)
{
    r->phase = PH_AUTH;
    r->seq_auth = r->seq_status = r->seq_exec = r->seq_term = r->seq_poll = 0;
    r->polling = false;
    r->deadline = ms_after(x->cfg.connect_timeout_s);
    r->retry_at = 0;
    r->opened = false;
    r->conn = dap_up_connect(x->up, on_run_conn, r);
    x->nconnected++;
    send_auth(x, r);
}

/* Subscribe to the task's events (project and source: valid before the
 * task exists, and across its runs) and ask for its status. */
static void look(struct rr *x, struct run *r)
{
    struct buf args;
    buf_init(&args, 0);
    buf_puts(&args, "{\"projectId\":");
    buf_json_cstr(&args, r->project_id);
    buf_puts(&args, ",\"source\":");
    buf_json_cstr(&args, r->source);
    buf_puts(&args, ",\"types\":[\"summary\",\"task\",\"output\",\"detail\"]}");
    run_request(x, r, DAP_ENGINE_REQ_MONITOR, "rrext_monitor", buf_data(&args), args.len);
    buf_free(&args);
    int64_t seq = token_request(x, r, DAP_ENGINE_REQ_STATUS, "rrext_get_task_status");
    if (r->exec_sent) {          /* back after a lost connection, or adopted */
        r->exec_answered = true; /* the status says what became of it */
        r->phase = PH_FOLLOWING;
        r->seq_poll = seq;
        r->polling = true;
        if (r->stop != STOP_NONE)
            send_terminate(x, r);
    } else {
        r->phase = PH_LOOKING;
        r->seq_status = seq;
    }
}

static void report_started(struct rr *x, struct run *r)
{
    char *task = task_record(r);
    struct sched_report rep = {.kind = SCHED_RUN_STARTED, .run_id = r->run_id,
                               .at = time_now_real(), .exit_code = -1,
                               .started = true, .task = task};
    report_queue_push(&x->reports, &rep);
    free(task);
    x->cfg.wake(x->cfg.wake_ud);
}

static void execute(struct rr *x, struct run *r)
{
    r->t0 = time_now_real();
    report_started(x, r);
    struct buf args;
    buf_init(&args, 0);
    buf_puts(&args, "{\"pipeline\":");
    buf_puts(&args, r->pipeline);
    buf_puts(&args, ",\"args\":[],\"ttl\":0,\"name\":");
    buf_json_cstr(&args, r->project_id);
    buf_putc(&args, '}');
    r->exec_sent = true;
    r->seq_exec = run_request(x, r, DAP_ENGINE_REQ_EXECUTE, "execute", buf_data(&args), args.len);
    buf_free(&args);
    r->phase = PH_STARTING;
    r->deadline = ms_after(x->cfg.start_timeout_s);
}

static void send_terminate(struct rr *x, struct run *r)
{
    if (!r->conn)
        return; /* r->stop is set: look() sends it once the connection is back */
    r->phase = PH_STOPPING;
    r->deadline = ms_after(x->cfg.stop_timeout_s);
    r->seq_term = token_request(x, r, DAP_ENGINE_REQ_TERMINATE, "terminate");
}

/* rrdeploy stops the task: a cancel, the timeout, the window's end. */
static void request_stop(struct rr *x, struct run *r, enum stop why)
{
    if (r->stop == STOP_NONE)
        r->stop = why;
    if (r->phase == PH_STARTING && !r->exec_answered)
        return; /* terminate once execute answers (or its deadline passes) */
    if (r->phase != PH_STOPPING)
        send_terminate(x, r);
}

/* ---------------------------------------------------------------- responses */

/* The engine's ConnectResult: its userId; false when it has none. */
static bool take_identity(struct run *r, const struct dap_msg *m)
{
    struct jraw_span v;
    struct buf user;
    buf_init(&user, 0);
    bool ok = m->body.p && jraw_member(m->body.p, m->body.n, "userId", &v, NULL) &&
              jraw_str(&user, v) && user.len > 0;
    if (ok) {
        free(r->engine_user);
        r->engine_user = buf_take(&user, NULL);
    }
    buf_free(&user);
    return ok;
}

static bool perm_refusal(const char *msg)
{
    return msg && (strncmp(msg, "Permission '", 12) == 0 ||
                   strncmp(msg, "Access denied", 13) == 0);
}

static void on_auth(struct rr *x, struct run *r, const struct dap_msg *m)
{
    if (!m->success) {
        const char *msg = m->message && *m->message ? m->message : "authentication refused";
        char why[512];
        if (!r->cred) {   /* the operator's credential, not the owner's */
            snprintf(why, sizeof why, "the engine refused the server's service "
                     "credential: %s", msg);
            finish(x, r, r->exec_sent ? STORE_RUN_INTERRUPTED : STORE_RUN_FAILED,
                   why, NULL);
            return;
        }
        pthread_mutex_lock(&x->mu);
        x->stats.owner_refusals++;
        pthread_mutex_unlock(&x->mu);
        snprintf(why, sizeof why, "the engine refused the owner's credential: %s", msg);
        finish(x, r, r->exec_sent ? STORE_RUN_INTERRUPTED : STORE_RUN_FAILED, why, why);
        return;
    }
    r->attempts = 0;
    r->lost_since = 0;
    if (!take_identity(r, m)) {
        finish(x, r, STORE_RUN_FAILED, "the engine's auth answer has no userId", NULL);
        return;
    }
    if (!r->source && !pipeline_source(r->pipeline, &r->source, &r->provider)) {
        /* The engine decides what is wrong with it, in its own words. */
        r->token[0] = '\0';
        execute(x, r);
        return;
    }
    r->resident = is_resident(r->provider);
    if (!r->token[0] || !r->reattach)
        rocketride_task_token(r->engine_user, r->project_id, r->source, r->token);
    snprintf(r->task_id, sizeof r->task_id, "%.8s.%s", r->token + 3, r->source);
    look(x, r);
}

/* A status body: its state, and whether it is this run's end. */
static int status_state(const struct dap_msg *m, double *start)
{
    json_t *st = load_json(m->body.p, m->body.n);
    int state = (int)json_integer_value(json_object_get(st, "state"));
    *start = json_number_value(json_object_get(st, "startTime"));
    json_decref(st);
    return state;
}

static bool terminal(int state)
{
    return state == 5 || state == 6;
}

static void on_look_status(struct rr *x, struct run *r, const struct dap_msg *m)
{
    double start;
    if (m->success && m->body.p) {
        int state = status_state(m, &start);
        if (state >= 1 && state <= 4) {
            finish(x, r, STORE_RUN_SKIPPED,
                   "overlap: the deployment's task is already running on the engine",
                   NULL);
            return;
        }
    }
    execute(x, r);
}

static void on_exec(struct rr *x, struct run *r, const struct dap_msg *m)
{
    r->exec_answered = true;
    if (m->success) {
        struct jraw_span v;
        struct buf s;
        buf_init(&s, 0);
        if (m->body.p && jraw_member(m->body.p, m->body.n, "provider", &v, NULL) &&
            jraw_str(&s, v)) {
            free(r->provider);
            r->provider = buf_take(&s, NULL);
            r->resident = is_resident(r->provider);
        }
        buf_reset(&s);
        if (m->body.p && jraw_member(m->body.p, m->body.n, "token", &v, NULL) &&
            jraw_str(&s, v) && s.len < sizeof r->token)
            memcpy(r->token, buf_cstr(&s), s.len + 1);
        buf_reset(&s);
        if (m->body.p && jraw_member(m->body.p, m->body.n, "id", &v, NULL) &&
            jraw_str(&s, v) && s.len < sizeof r->task_id)
            memcpy(r->task_id, buf_cstr(&s), s.len + 1);
        buf_free(&s);
        r->phase = PH_FOLLOWING;
        r->deadline = 0;
        r->next_poll = ms_after(x->cfg.poll_s);
        if (r->stop != STOP_NONE)
            send_terminate(x, r);
        else if (r->final)
            finish_terminal(x, r);
        return;
    }
    const char *msg = m->message ? m->message : "";
    if (strcmp(msg, "Pipeline is already running.") == 0) {
        finish(x, r, STORE_RUN_SKIPPED,
               "overlap: the deployment's task is already running on the engine", NULL);
        return;
    }
    if (r->stop == STOP_CANCEL || r->stop == STOP_INTERRUPT) {
        finish_stopped(x, r, NULL);
        return;
    }
    /* A batch that ends before the engine saw it running fails its execute
     * with "Task has already completed" or an empty text, after its events
     * went out: with RUNNING and then a clean end seen, the run succeeded.
     * (A task that fails to start ends the same way, without RUNNING.) */
    if ((strcmp(msg, "Task has already completed") == 0 || !*msg) && r->final &&
        r->reached_running) {
        finish_terminal(x, r);
        return;
    }
    if (perm_refusal(msg) && r->cred) {
        char why[512];
        pthread_mutex_lock(&x->mu);
        x->stats.owner_refusals++;
        pthread_mutex_unlock(&x->mu);
        snprintf(why, sizeof why, "the engine refused the owner's credential: %s", msg);
        finish(x, r, STORE_RUN_FAILED, why, why);
        return;
    }
    finish(x, r, STORE_RUN_FAILED, *msg ? msg : "engine failed during startup", NULL);
}

/* A status answer while following (a poll, or the one after a reconnect). */
static void on_poll(struct rr *x, struct run *r, const struct dap_msg *m)
{
    r->polling = false;
    r->next_poll = ms_after(x->cfg.poll_s);
    if (!m->success) {
        if (r->final) {
            finish_terminal(x, r);
            return;
        }
        if (r->stop != STOP_NONE) {
            finish_stopped(x, r, "the engine no longer knows the task");
            return;
        }
        finish(x, r, STORE_RUN_INTERRUPTED,
               "the engine no longer knows the task (it restarted, or dropped "
               "the task) and its end was not seen", NULL);
        return;
    }
    double start;
    int state = status_state(m, &start);
    if (terminal(state) && (r->begin_seen || start >= r->t0 - SKEW_S)) {
        free(r->final);
        r->final = xstrndup(m->body.p, m->body.n);
        finish_terminal(x, r);
    }
}

static void on_response(struct rr *x, struct run *r, const struct dap_msg *m)
{
    int64_t s = m->request_seq;
    if (s == r->seq_auth)
        on_auth(x, r, m);
    else if (s == r->seq_status)
        on_look_status(x, r, m);
    else if (s == r->seq_exec)
        on_exec(x, r, m);
    else if (s == r->seq_poll)
        on_poll(x, r, m);
    else if (s == r->seq_term)
        finish_stopped(x, r, NULL);
}

/* ---------------------------------------------------------------- events */

static bool event_is_ours(const struct run *r, const struct dap_msg *m)
{
    struct jraw_span v;
    if (!m->body.p || !jraw_member(m->body.p, m->body.n, "__id", &v, NULL))
        return true; /* output lines of the subscribed project and source */
    return jraw_str_eq(v, r->task_id);
}

static void on_event(struct rr *x, struct run *r, const struct dap_msg *m)
{
    if (!r->exec_sent || !m->event || !m->body.p || !event_is_ours(r, m))
        return; /* the catch-up of the subscription: before this run */
    struct jraw_span v;
    if (strcmp(m->event, "output") == 0) {
        struct buf s;
        buf_init(&s, 0);
        if (jraw_member(m->body.p, m->body.n, "output", &v, NULL) && jraw_str(&s, v))
            out_tail_push(&r->out, buf_data(&s), s.len);
        buf_free(&s);
    } else if (strcmp(m->event, "apaevt_status_error") == 0 ||
               strcmp(m->event, "apaevt_status_warning") == 0) {
        struct buf s;
        buf_init(&s, 0);
        buf_puts(&s, m->event[14] == 'e' ? "error: " : "warning: ");
        size_t head = s.len;
        if (jraw_member(m->body.p, m->body.n, "message", &v, NULL) && jraw_str(&s, v) &&
            s.len > head) {
            buf_putc(&s, '\n');
            out_tail_push(&r->out, buf_data(&s), s.len);
        }
        buf_free(&s);
    } else if (strcmp(m->event, "apaevt_task") == 0) {
        if (jraw_member(m->body.p, m->body.n, "action", &v, NULL)) {
            if (jraw_str_eq(v, "begin"))
                r->begin_seen = true;
            else if (jraw_str_eq(v, "end") && !r->final)
                r->next_poll = time_now_mono_ms(); /* its final status was lost */
        }
    } else if (strcmp(m->event, "apaevt_status_update") == 0) {
        double start;
        int state = status_state(m, &start);
        if (!(r->begin_seen || start >= r->t0 - SKEW_S))
            return;
        if (state == 3)
            r->reached_running = true;
        if (!terminal(state))
            return;
        if (!r->final)
            r->final = xstrndup(m->body.p, m->body.n);
        if (r->exec_answered && r->phase == PH_FOLLOWING)
            finish_terminal(x, r);
        /* STOPPING: the terminate answer ends the run; STARTING: execute's */
    }
}

/* ---------------------------------------------------------------- connection */

static void lost(struct rr *x, struct run *r, const char *why)
{
    int64_t now = time_now_mono_ms();
    if (!r->exec_sent) {
        /* Nothing runs yet: retry a few times, then the run fails. The
         * deployment stays active: an unreachable engine is not its owner's
         * doing. */
        if (++r->attempts >= x->cfg.connect_attempts) {
            char msg[512];
            snprintf(msg, sizeof msg, "the RocketRide engine at %s could not be "
                     "reached after %d attempts: %s", x->cfg.url, r->attempts, why);
            finish(x, r, STORE_RUN_FAILED, msg, NULL);
            return;
        }
        r->phase = PH_WAITING;
        r->retry_at = now + (RETRY_FIRST_MS << (r->attempts - 1));
        return;
    }
    /* The task may still run: reconnect and find it by its token. */
    if (!r->lost_since)
        r->lost_since = now;
    if (now - r->lost_since >= (int64_t)(x->cfg.lost_s * 1000)) {
        char msg[512];
        snprintf(msg, sizeof msg, "lost the RocketRide engine for %.0f s (%s); "
                 "the task's end is unknown", x->cfg.lost_s, why);
        finish(x, r, STORE_RUN_INTERRUPTED, msg, NULL);
        return;
    }
    int64_t delay = RETRY_FIRST_MS << (r->attempts < 4 ? r->attempts : 4);
    r->attempts++;
    r->phase = PH_WAITING;
    r->retry_at = now + (delay < RETRY_MAX_MS ? delay : RETRY_MAX_MS);
}

static void on_run_conn(void *ud, struct dap_up_conn *c, enum dap_up_event ev,
                        const struct dap_msg *m, const char *why)
{
    struct run *r = ud;
    if (!r)
        return; /* a connection of a run that has ended: its close */
    struct rr *x = r->x;
    switch (ev) {
    case DAP_UP_OPENED:
        r->opened = true;
        note_contact(x, true, NULL);
        return;
    case DAP_UP_MESSAGE:
        if (m->is_event)
            on_event(x, r, m);
        else
            on_response(x, r, m);
        return;
    case DAP_UP_CLOSED:
        if (c != r->conn)
            return;
        r->conn = NULL;
        x->nconnected--;
        if (is_stopping(x))
            return; /* the run goes on without us: the next start adopts it */
        if (!r->opened)
            note_contact(x, false, why);
        lost(x, r, why);
        return;
    }
}

/* ================================================================ the end of a run */

static void unlink_run(struct rr *x, struct run *r)
{
    for (struct run **pp = &x->runs; *pp; pp = &(*pp)->next)
        if (*pp == r) {
            *pp = r->next;
            return;
        }
}

static void finish(struct rr *x, struct run *r, enum store_outcome oc,
                   const char *reason, const char *owner_refused)
{
    char *task = r->token[0] ? task_record(r) : NULL;
    size_t len;
    char *output = out_tail_take(&r->out, &len);
    struct sched_report rep = {
        .kind = SCHED_RUN_FINISHED, .run_id = r->run_id, .at = time_now_real(),
        .outcome = oc, .exit_code = -1, .reason = reason, .output = output,
        .output_len = len, .started = r->exec_sent, .task = task,
        .owner_refused = owner_refused,
    };
    report_queue_push(&x->reports, &rep);
    free(task);
    free(output);
    log_info("rocketride: run %lld of %s/%s %s%s%s", (long long)r->run_id, r->user,
             r->project_id, store_outcome_name(oc), reason ? ": " : "",
             reason ? reason : "");
    if (r->conn) {
        dap_up_set_ud(r->conn, NULL);
        dap_up_close(r->conn);
        r->conn = NULL;
        x->nconnected--;
    }
    unlink_run(x, r);
    run_free(r);
    pthread_mutex_lock(&x->mu);
    x->nactive--;
    pthread_mutex_unlock(&x->mu);
    x->cfg.wake(x->cfg.wake_ud);
}

/* ================================================================ the clock */

/* Deadlines of one run (it may end, and be freed, here). */
static void run_tick(struct rr *x, struct run *r, int64_t now)
{
    if (r->phase == PH_WAITING) {
        if (r->retry_at && now >= r->retry_at)
            connect_run(x, r);
        return;
    }
    if (r->run_deadline && now >= r->run_deadline && r->stop == STOP_NONE &&
        r->exec_sent) {
        request_stop(x, r, r->resident ? STOP_WINDOW : STOP_TIMEOUT);
        return;
    }
    if (r->deadline && now >= r->deadline) {
        r->deadline = 0;
        switch (r->phase) {
        case PH_AUTH:
        case PH_LOOKING:
            if (r->conn) { /* its close comes back as a loss */
                dap_up_set_ud(r->conn, NULL);
                dap_up_close(r->conn);
                r->conn = NULL;
                x->nconnected--;
            }
            if (!r->opened)
                note_contact(x, false, "timed out connecting");
            lost(x, r, "the engine did not answer in time");
            return;
        case PH_STARTING:
            r->stop = r->stop == STOP_NONE ? STOP_NOSTART : r->stop;
            r->exec_answered = true; /* no longer waited for */
            send_terminate(x, r);
            return;
        case PH_STOPPING: {
            char note[160];
            snprintf(note, sizeof note, "the engine did not confirm the stop "
                     "within %.0f s", x->cfg.stop_timeout_s);
            finish_stopped(x, r, note);
            return;
        }
        default:
            return;
        }
    }
    if (r->phase == PH_FOLLOWING && r->conn && r->opened && !r->polling &&
        r->next_poll && now >= r->next_poll) {
        r->seq_poll = token_request(x, r, DAP_ENGINE_REQ_STATUS, "rrext_get_task_status");
        r->polling = true; /* its answer re-arms next_poll */
    }
}

/* ================================================================ identities */

static void ident_free(struct ident *id)
{
    if (id->key)
        sodium_free(id->key);
    free(id);
}

static void push_verdict(struct rr *x, struct verdict *v)
{
    pthread_mutex_lock(&x->mu);
    if (x->verdicts_tail)
        x->verdicts_tail->next = v;
    else
        x->verdicts = v;
    x->verdicts_tail = v;
    pthread_mutex_unlock(&x->mu);
    x->cfg.wake(x->cfg.wake_ud);
}

/* The permissions a ConnectResult grants on its default team: an org with
 * org.admin grants everything on its teams, else the team's own list. */
static unsigned connect_perms(json_t *cr)
{
    const char *team = json_string_value(json_object_get(cr, "defaultTeam"));
    size_t i, j;
    json_t *org, *t, *p;
    json_array_foreach(json_object_get(cr, "organizations"), i, org) {
        json_array_foreach(json_object_get(org, "teams"), j, t) {
            const char *id = json_string_value(json_object_get(t, "id"));
            if (!team || !id || strcmp(id, team) != 0)
                continue;
            unsigned perms = 0;
            size_t k;
            json_array_foreach(json_object_get(org, "permissions"), k, p)
                if (json_is_string(p) && strcmp(json_string_value(p), "org.admin") == 0)
                    perms |= STORE_PERM_CONTROL | STORE_PERM_MONITOR;
            json_array_foreach(json_object_get(t, "permissions"), k, p) {
                const char *s = json_string_value(p);
                if (s && strcmp(s, "task.control") == 0)
                    perms |= STORE_PERM_CONTROL;
                else if (s && strcmp(s, "task.monitor") == 0)
                    perms |= STORE_PERM_MONITOR;
            }
            return perms;
        }
    }
    return 0;
}

/* End a check: a verdict out, the connection closed, the check freed. */
static void ident_done(struct rr *x, struct ident *id, struct verdict *v)
{
    v->ticket = id->ticket;
    push_verdict(x, v);
    if (id->conn) {
        dap_up_set_ud(id->conn, NULL);
        dap_up_close(id->conn);
    }
    for (struct ident **pp = &x->idents; *pp; pp = &(*pp)->next)
        if (*pp == id) {
            *pp = id->next;
            break;
        }
    ident_free(id);
}

static void ident_fail(struct rr *x, struct ident *id, bool refused, const char *why)
{
    struct verdict *v = xcalloc(1, sizeof *v);
    v->refused = refused;
    v->why = xstrdup(why);
    ident_done(x, id, v);
}

static void on_ident_answer(struct rr *x, struct ident *id, const struct dap_msg *m)
{
    if (!m->success) {
        ident_fail(x, id, true, m->message && *m->message ? m->message
                                                          : "Authentication failed");
        return;
    }
    json_t *cr = m->body.p ? load_json(m->body.p, m->body.n) : NULL;
    const char *user = json_string_value(json_object_get(cr, "userId"));
    struct verdict *v = xcalloc(1, sizeof *v);
    if (!user || !*user || strlen(user) >= sizeof v->id.user) {
        free(v);
        json_decref(cr);
        ident_fail(x, id, false, "the engine's answer has no usable userId");
        return;
    }
    v->ok = true;
    snprintf(v->id.user, sizeof v->id.user, "%s", user);
    v->id.perms = connect_perms(cr);
    json_decref(cr);
    ident_done(x, id, v);
}

static void on_ident_conn(void *ud, struct dap_up_conn *c, enum dap_up_event ev,
                          const struct dap_msg *m, const char *why)
{
    (void)c;
    struct ident *id = ud;
    if (!id)
        return;
    struct rr *x = id->x;
    if (ev == DAP_UP_OPENED) {
        note_contact(x, true, NULL);
    } else if (ev == DAP_UP_MESSAGE) {
        if (!m->is_event && m->request_seq == id->seq)
            on_ident_answer(x, id, m);
    } else {
        id->conn = NULL;
        if (!is_stopping(x))
            note_contact(x, false, why);
        ident_fail(x, id, false, why);
    }
}

static void ident_start(struct rr *x, struct ident *id)
{
    id->next = x->idents;
    x->idents = id;
    id->deadline = time_now_mono_ms() + IDENTIFY_TIMEOUT_MS;
    id->conn = dap_up_connect(x->up, on_ident_conn, id);
    id->seq = auth_request(x, id->conn, id->key);
    sodium_free(id->key);
    id->key = NULL;
}

/* ================================================================ reachability */

static void on_probe(void *ud, struct dap_up_conn *c, enum dap_up_event ev,
                     const struct dap_msg *m, const char *why)
{
    (void)m;
    struct rr *x = ud;
    if (!x)
        return;
    if (ev == DAP_UP_OPENED) {
        note_contact(x, true, NULL);
        dap_up_set_ud(c, NULL);
        dap_up_close(c);
        x->probe = NULL;
    } else if (ev == DAP_UP_CLOSED) {
        x->probe = NULL;
        if (!is_stopping(x))
            note_contact(x, false, why);
    }
}

/* When nothing else has talked to the engine for a while, open a connection
 * and close it again: /healthz says whether the engine can be reached. */
static void probe_if_idle(struct rr *x, int64_t now)
{
    if (x->probe || x->nconnected > 0 || now - x->last_contact < PROBE_EVERY_MS)
        return;
    x->last_contact = now; /* the next probe in PROBE_EVERY_MS */
    x->probe = dap_up_connect(x->up, on_probe, x);
}

/* ================================================================ the service */

static struct order *take_inbox(struct rr *x, bool *stopping)
{
    pthread_mutex_lock(&x->mu);
    struct order *o = x->inbox;
    x->inbox = x->inbox_tail = NULL;
    *stopping = x->stopping;
    pthread_mutex_unlock(&x->mu);
    return o;
}

static struct run *find_run(struct rr *x, int64_t run_id)
{
    for (struct run *r = x->runs; r; r = r->next)
        if (r->run_id == run_id)
            return r;
    return NULL;
}

static void add_run(struct rr *x, struct run *r)
{
    struct run **pp = &x->runs; /* FIFO: oldest first */
    while (*pp)
        pp = &(*pp)->next;
    r->next = NULL;
    *pp = r;
}

static void take_order(struct rr *x, struct order *o)
{
    struct run *r;
    switch (o->kind) {
    case ORD_SUBMIT:
    case ORD_RECLAIM:
        add_run(x, o->run);
        return;
    case ORD_CANCEL:
        r = find_run(x, o->run_id);
        if (!r)
            return;
        if (!r->exec_sent) { /* nothing runs on the engine yet */
            r->stop = o->as == STORE_RUN_CANCELLED ? STOP_CANCEL : STOP_INTERRUPT;
            finish_stopped(x, r, NULL);
            return;
        }
        request_stop(x, r, o->as == STORE_RUN_CANCELLED ? STOP_CANCEL : STOP_INTERRUPT);
        return;
    case ORD_IDENTIFY:
        ident_start(x, o->ident);
        return;
    }
}

/* Runs waiting for a connection start, oldest first, up to max_runs. */
static void start_waiting(struct rr *x)
{
    for (struct run *r = x->runs, *nx; r && x->nconnected < x->cfg.max_runs; r = nx) {
        nx = r->next; /* connect_run may end r */
        if (r->phase == PH_WAITING && r->retry_at == 0)
            connect_run(x, r);
    }
}

static void service(void *ud)
{
    struct rr *x = ud;
    pthread_mutex_lock(&x->mu);
    bool started = x->up != NULL; /* the first call comes before dap_up_start returns */
    pthread_mutex_unlock(&x->mu);
    if (!started)
        return;
    bool stopping;
    struct order *o = take_inbox(x, &stopping);
    while (o) {
        struct order *nx = o->next;
        if (!stopping)
            take_order(x, o);
        else if (o->run)
            run_free(o->run);
        else if (o->ident)
            ident_free(o->ident);
        free(o);
        o = nx;
    }
    if (stopping)
        return;
    int64_t now = time_now_mono_ms();
    for (struct run *r = x->runs, *nx; r; r = nx) {
        nx = r->next;
        run_tick(x, r, now);
    }
    for (struct ident *id = x->idents, *nx; id; id = nx) {
        nx = id->next;
        if (now >= id->deadline)
            ident_fail(x, id, false, "the engine did not answer in time");
    }
    start_waiting(x);
    probe_if_idle(x, now);
}

/* ================================================================ the executor */

static struct rr *rr_of(struct executor *base)
{
    return (struct rr *)base; /* base is the first member */
}

static int post(struct rr *x, struct order *o)
{
    pthread_mutex_lock(&x->mu);
    if (x->stopping) {
        pthread_mutex_unlock(&x->mu);
        return RR_E_BUSY;
    }
    if (o->kind == ORD_SUBMIT || o->kind == ORD_RECLAIM)
        x->nactive++;
    if (x->inbox_tail)
        x->inbox_tail->next = o;
    else
        x->inbox = o;
    x->inbox_tail = o;
    pthread_mutex_unlock(&x->mu);
    dap_up_wake(x->up);
    return 0;
}

static int rr_submit(struct executor *base, const struct sched_job *job)
{
    struct rr *x = rr_of(base);
    if (!job || !job->pipeline)
        return RR_E_INVAL;
    struct order *o = xcalloc(1, sizeof *o);
    o->kind = ORD_SUBMIT;
    o->run = run_new(x, job);
    if (x->cfg.timeout_s > 0)
        o->run->run_deadline = ms_after(x->cfg.timeout_s);
    int rc = post(x, o);
    if (rc) {
        run_free(o->run);
        free(o);
    }
    return rc;
}

static int rr_cancel(struct executor *base, int64_t run_id, enum store_outcome as)
{
    struct rr *x = rr_of(base);
    if (as != STORE_RUN_CANCELLED && as != STORE_RUN_INTERRUPTED)
        return RR_E_INVAL;
    struct order *o = xcalloc(1, sizeof *o);
    o->kind = ORD_CANCEL;
    o->run_id = run_id;
    o->as = as;
    int rc = post(x, o);
    if (rc)
        free(o);
    return rc;
}

/* A run a previous server left running: its task may still run on the
 * engine. Adopt it when its row names the task (the token went into the
 * ledger before execute), and follow it to its end. */
static bool rr_reclaim(struct executor *base, const struct sched_job *job,
                       const struct store_run *r)
{
    struct rr *x = rr_of(base);
    if (r->outcome != STORE_RUN_RUNNING || !r->task || !job)
        return false;
    json_t *t = load_json(r->task, strlen(r->task));
    const char *token = json_string_value(json_object_get(t, "token"));
    const char *source = json_string_value(json_object_get(t, "source"));
    bool ok = token && source && strlen(token) < 36;
    struct order *o = NULL;
    if (ok) {
        o = xcalloc(1, sizeof *o);
        o->kind = ORD_RECLAIM;
        o->run = run_new(x, job);
        struct run *run = o->run;
        memcpy(run->token, token, strlen(token) + 1);
        run->source = xstrdup(source);
        const char *prov = json_string_value(json_object_get(t, "provider"));
        run->provider = prov ? xstrdup(prov) : NULL;
        run->resident = is_resident(run->provider);
        run->reattach = true;
        run->exec_sent = run->exec_answered = true;
        run->begin_seen = true; /* any end of this token is this run's */
        run->t0 = json_number_value(json_object_get(t, "executeAt"));
        if (x->cfg.timeout_s > 0 && run->t0 > 0) {
            double left = run->t0 + x->cfg.timeout_s - time_now_real();
            run->run_deadline = ms_after(left > 0 ? left : 0.001);
        } else if (x->cfg.timeout_s > 0) {
            run->run_deadline = ms_after(x->cfg.timeout_s);
        }
    }
    if (ok)
        log_info("rocketride: run %lld of %s/%s: following its task %s again "
                 "after the restart", (long long)r->id, r->user, r->project_id, token);
    json_decref(t); /* token was its */
    if (!ok || post(x, o) != 0) {
        if (o) {
            run_free(o->run);
            free(o);
        }
        return false;
    }
    return true;
}

static int rr_active(struct executor *base)
{
    struct rr *x = rr_of(base);
    pthread_mutex_lock(&x->mu);
    int n = x->nactive;
    pthread_mutex_unlock(&x->mu);
    return n;
}

static int rr_drain(struct executor *base, int max, executor_report_fn fn, void *ud)
{
    return report_queue_drain(&rr_of(base)->reports, max, fn, ud);
}

/* Stop following: tasks keep running on the engine and their rows stay
 * running, for the next start to re-attach. */
static void rr_free(struct executor *base)
{
    struct rr *x = rr_of(base);
    pthread_mutex_lock(&x->mu);
    x->stopping = true;
    pthread_mutex_unlock(&x->mu);
    dap_up_stop(x->up); /* every connection's close runs, then the thread ends */
    for (struct run *r = x->runs, *nx; r; r = nx) {
        nx = r->next;
        run_free(r);
    }
    for (struct ident *id = x->idents, *nx; id; id = nx) {
        nx = id->next;
        ident_free(id);
    }
    bool dummy;
    for (struct order *o = take_inbox(x, &dummy), *nx; o; o = nx) {
        nx = o->next;
        if (o->run)
            run_free(o->run);
        if (o->ident)
            ident_free(o->ident);
        free(o);
    }
    for (struct verdict *v = x->verdicts, *nx; v; v = nx) {
        nx = v->next;
        free(v->why);
        free(v);
    }
    report_queue_destroy(&x->reports);
    pthread_mutex_destroy(&x->mu);
    if (x->service_key)
        sodium_free(x->service_key);
    free((char *)x->cfg.url);
    free(x);
}

static const struct executor_ops rr_ops = {
    .name = "rocketride",
    .detaches = true,
    .submit = rr_submit,
    .cancel = rr_cancel,
    .reclaim = rr_reclaim,
    .active = rr_active,
    .drain = rr_drain,
    .free = rr_free,
};

void rocketride_config_defaults(struct rocketride_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->max_runs = 64;
    cfg->timeout_s = 3600;
    cfg->start_timeout_s = 600;
    cfg->stop_timeout_s = 30;
    cfg->poll_s = 5;
    cfg->connect_timeout_s = 10;
    cfg->connect_attempts = 3;
    cfg->lost_s = 60;
    cfg->output_max = EXEC_OUTPUT_DEFAULT;
}

static int config_check(const struct rocketride_config *cfg, struct dap_url *u,
                        struct err *e)
{
    if (!cfg->url || !cfg->wake)
        return err_set(e, RR_E_INVAL, "no engine URL");
    int rc = dap_url_parse(cfg->url, u, e);
    if (rc)
        return rc;
    if (cfg->max_runs < 1 || cfg->connect_attempts < 1 || cfg->poll_s <= 0 ||
        cfg->connect_timeout_s <= 0 || cfg->start_timeout_s <= 0 ||
        cfg->stop_timeout_s <= 0 || cfg->lost_s <= 0)
        return err_set(e, RR_E_INVAL, "invalid engine executor settings");
    if (cfg->output_max > EXEC_OUTPUT_LIMIT)
        return err_set(e, RR_E_INVAL, "output_max over %d bytes", EXEC_OUTPUT_LIMIT);
    return 0;
}

struct executor *rocketride_new(const struct rocketride_config *cfg, struct err *e)
{
    struct dap_url u;
    if (config_check(cfg, &u, e) != 0 || sodium_init() < 0)
        return NULL;
    struct rr *x = xcalloc(1, sizeof *x);
    x->base.ops = &rr_ops;
    x->cfg = *cfg;
    x->cfg.url = xstrdup(u.text);
    if (cfg->service_key) {
        size_t n = strlen(cfg->service_key);
        x->service_key = sodium_malloc(n + 1);
        memcpy(x->service_key, cfg->service_key, n + 1);
    }
    pthread_mutex_init(&x->mu, NULL);
    report_queue_init(&x->reports);
    x->last_contact = time_now_mono_ms() - PROBE_EVERY_MS; /* probe at once */
    struct dap_up_config uc;
    dap_up_config_defaults(&uc);
    uc.url = u;
    uc.connect_timeout_s = cfg->connect_timeout_s;
    uc.service = service;
    uc.tick_ms = TICK_MS;
    uc.ud = x;
    struct dap_up *up = dap_up_start(&uc, e);
    pthread_mutex_lock(&x->mu);
    x->up = up;
    pthread_mutex_unlock(&x->mu);
    if (up) {
        dap_up_wake(up); /* the start-up call found it not set yet */
    } else {
        report_queue_destroy(&x->reports);
        pthread_mutex_destroy(&x->mu);
        if (x->service_key)
            sodium_free(x->service_key);
        free((char *)x->cfg.url);
        free(x);
        return NULL;
    }
    log_info("rocketride: runs go to the engine at %s", x->cfg.url);
    return &x->base;
}

int rocketride_identify(struct executor *base, const char *key, uint64_t ticket)
{
    struct rr *x = rr_of(base);
    struct ident *id = xcalloc(1, sizeof *id);
    id->x = x;
    id->ticket = ticket;
    size_t n = strlen(key);
    id->key = sodium_malloc(n + 1);
    memcpy(id->key, key, n + 1);
    struct order *o = xcalloc(1, sizeof *o);
    o->kind = ORD_IDENTIFY;
    o->ident = id;
    int rc = post(x, o);
    if (rc) {
        ident_free(id);
        free(o);
    }
    return rc;
}

int rocketride_drain_identities(struct executor *base, rocketride_verdict_fn fn,
                                void *ud)
{
    struct rr *x = rr_of(base);
    pthread_mutex_lock(&x->mu);
    struct verdict *v = x->verdicts;
    x->verdicts = x->verdicts_tail = NULL;
    pthread_mutex_unlock(&x->mu);
    int n = 0;
    while (v) {
        struct verdict *nx = v->next;
        fn(ud, v->ticket, v->ok ? &v->id : NULL, v->refused, v->why);
        free(v->why);
        free(v);
        v = nx;
        n++;
    }
    return n;
}

void rocketride_state(struct executor *base, struct dap_engine_state *out)
{
    struct rr *x = rr_of(base);
    pthread_mutex_lock(&x->mu);
    *out = x->stats;
    pthread_mutex_unlock(&x->mu);
    out->url = x->cfg.url;
}
