/* client.c -- the client subcommands of rrdeploy: add, list, status, update,
 * remove, run, cancel, runs, watch, preview. Each talks to a running server
 * over WebSocket with the DAP envelope the SDKs use (dap/client.h).
 *
 * Design: a command validates everything local first (arguments, the
 * pipeline file) so a usage error never costs a connection, then opens a
 * session (connect, `auth`), sends its request(s) and prints; the session
 * ends with `deauth` and a 1000 close. Request arguments are written by hand
 * with buf_* and util/jraw so a pipeline travels byte for byte as the user
 * wrote it (only insignificant white space is removed). Responses are read
 * with jansson for display; --json prints the body's raw text as it came in
 * the frame, so numbers and key order survive for scripts. Server strings
 * shown in tables have control characters replaced (cli__clean() and the
 * tables of format.c), so a deployment cannot send escape sequences to the
 * terminal.
 * Exit codes: 0 ok, 1 the server said no (or a waited-for run did not
 * succeed), 2 usage or input file, 3 connection or timeout, 130 interrupted.
 * Thread: main thread only. */
#include "cli/cli.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli_internal.h"
#include "dap/client.h"
#include "util/jraw.h"
#include "util/util.h"

#define DEFAULT_URL "ws://127.0.0.1:5565"
#define DEFAULT_TIMEOUT_S 30.0
#define PIPELINE_FILE_MAX (64u * 1024 * 1024)
#define PIPELINE_DEPTH 64
#define CLIENT_NAME "rrdeploy CLI"

/* ---------------------------------------------------------------- options */

enum {
    O_URL = 1u << 0,
    O_KEY = 1u << 1,
    O_TIMEOUT = 1u << 2,
    O_JSON = 1u << 3,
    O_SCHEDULE = 1u << 4,
    O_PIPELINE = 1u << 5,
    O_PAUSE = 1u << 6,
    O_RESUME = 1u << 7,
    O_WAIT = 1u << 8,
    O_IDEM = 1u << 9,
    O_LIMIT = 1u << 10,
    O_COUNT = 1u << 11,
    O_FROM = 1u << 12,
    O_PROJECT = 1u << 13,
};
#define O_COMMON (O_URL | O_KEY | O_TIMEOUT | O_JSON)

struct ctx;
typedef int (*cmd_fn)(struct ctx *x);

struct command {
    const char *name;
    const char *synopsis;   /* after the name */
    const char *about;      /* one paragraph */
    const char *opt_help;   /* the command's own options, or NULL */
    unsigned opts;          /* O_* accepted besides O_COMMON */
    int min_pos, max_pos;
    cmd_fn fn;
};

/* Everything one invocation knows. */
struct ctx {
    const struct command *cmd;
    const char *pos[2];            /* borrowed from argv */
    int npos;
    const char *url, *key;         /* borrowed from argv or the environment */
    double timeout;
    bool timeout_set;
    bool json;
    bool color;
    const char *schedule;
    const char *pipeline_file;
    const char *state;             /* "paused" | "active" | NULL */
    bool wait;
    const char *idem;
    const char *project_id;        /* preview --project-id, borrowed */
    long limit;
    bool has_limit;
    long count;
    bool has_count;
    double from;
    bool has_from;
    const char *done_verb;         /* what show_done() says happened */
    struct dap_client *c;          /* owned: the session, NULL until opened */
};

/* ---------------------------------------------------------------- JSON reading */

/* The body of m as a tree for display (owned: json_decref), or NULL with a
 * message printed. */
static json_t *body_tree(const struct dap_msg *m)
{
    if (!m->body.p)
        return json_object();
    const size_t flags = JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL;
    json_error_t jerr;
    /* tamed when it holds 1e400, or "\ud800" in a pipeline string */
    json_t *v = jraw_load(m->body.p, m->body.n, flags, &jerr);
    if (!v || !json_is_object(v)) {
        json_decref(v);
        cli__fail(CLI_EXIT_FAILED, "cannot read the server's answer: %s",
                  v ? "not an object" : jerr.text);
        return NULL;
    }
    return v;
}

static const char *jstr(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* A number member; 0 when absent or null (the server's "no time"). */
static double jnum(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : 0;
}

static bool jhas_num(const json_t *o, const char *key)
{
    return json_is_number(json_object_get(o, key));
}

/* Print the raw body text of m as one line (an absent body prints {}). */
static void print_raw_body(const struct dap_msg *m)
{
    if (m->body.p)
        fwrite(m->body.p, 1, m->body.n, stdout);
    else
        fputs("{}", stdout);
    putchar('\n');
}

static const char *state_color(const struct ctx *x, const char *state)
{
    if (!x->color || !state)
        return NULL;
    if (strcmp(state, "active") == 0)
        return CLI_COLOR_GREEN;
    if (strcmp(state, "paused") == 0)
        return CLI_COLOR_YELLOW;
    if (strcmp(state, "errored") == 0)
        return CLI_COLOR_RED;
    return NULL;
}

/* The time a run is best described by: finished, else started, else created. */
static double run_time(const json_t *run)
{
    if (jhas_num(run, "finished_at"))
        return jnum(run, "finished_at");
    if (jhas_num(run, "started_at"))
        return jnum(run, "started_at");
    return jnum(run, "created_at");
}

/* "exit 3, signal 9, <reason>" or "". */
static void run_exit_reason(const json_t *run, struct buf *b)
{
    json_t *ec = json_object_get(run, "exit_code");
    json_t *sig = json_object_get(run, "signal");
    const char *reason = jstr(run, "reason");
    if (json_is_number(ec))
        buf_printf(b, "exit %.0f", json_number_value(ec));
    if (json_is_number(sig))
        buf_printf(b, "%ssignal %.0f", b->len ? ", " : "", json_number_value(sig));
    if (reason && *reason)
        buf_printf(b, "%s%s", b->len ? ", " : "", reason);
}

static bool run_duration(const json_t *run, char *out, size_t n)
{
    if (!jhas_num(run, "started_at"))
        return false;
    double end = jhas_num(run, "finished_at") ? jnum(run, "finished_at")
                                              : time_now_real();
    cli__fmt_dur(end - jnum(run, "started_at"), out, n);
    return true;
}

/* One line about a run: "#12 succeeded (manual), 0.1s, exit 0". */
static void run_summary(const json_t *run, struct buf *b)
{
    const char *trigger = jstr(run, "trigger");
    buf_printf(b, "#%.0f %s", jnum(run, "id"),
               jstr(run, "outcome") ? jstr(run, "outcome") : "?");
    if (trigger)
        buf_printf(b, " (%s)", trigger);
    char dur[32];
    if (jhas_num(run, "finished_at") && run_duration(run, dur, sizeof dur))
        buf_printf(b, ", %s", dur);
    struct buf er;
    buf_init(&er, 0);
    run_exit_reason(run, &er);
    if (er.len)
        buf_printf(b, ", %s", buf_cstr(&er));
    buf_free(&er);
}

/* ---------------------------------------------------------------- input */

/* Read a pipeline file ("-" = stdin): one JSON object, or a .pipe file
 * {"pipeline": {...}} around it. Appends its compact text to out. */
static int read_pipeline(const char *path, struct buf *out)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    const char *name = f == stdin ? "standard input" : path;
    if (!f)
        return cli__fail(CLI_EXIT_USAGE, "cannot open %s: %s", path,
                         strerror(errno));
    struct buf b;
    buf_init(&b, 0);
    char chunk[65536];
    size_t n;
    bool too_big = false;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (b.len + n > PIPELINE_FILE_MAX) {
            too_big = true;
            break;
        }
        buf_append(&b, chunk, n);
    }
    bool bad = ferror(f);
    int saved = errno;
    if (f != stdin)
        fclose(f);
    int rc = 0;
    struct err e = {0};
    struct jraw_span sp = {buf_cstr(&b), b.len}, inner, pid;
    if (bad)
        rc = cli__fail(CLI_EXIT_USAGE, "cannot read %s: %s", name,
                       strerror(saved));
    else if (too_big)
        rc = cli__fail(CLI_EXIT_USAGE, "%s: larger than %u bytes", name,
                       PIPELINE_FILE_MAX);
    else if (b.len == 0)
        rc = cli__fail(CLI_EXIT_USAGE, "%s: empty, expected a JSON object",
                       name);
    else if (jraw_check(sp.p, sp.n, PIPELINE_DEPTH, &e) != 0)
        rc = cli__fail(CLI_EXIT_USAGE, "%s: invalid JSON: %s", name, e.msg);
    if (rc) {
        buf_free(&b);
        return rc;
    }
    while (sp.n && strchr(" \t\r\n", *sp.p))
        sp.p++, sp.n--;
    if (sp.p[0] != '{') {
        buf_free(&b);
        return cli__fail(CLI_EXIT_USAGE,
                         "%s: expected a JSON object (the pipeline)", name);
    }
    /* a .pipe file: {"pipeline": {...}} without a project_id of its own */
    if (jraw_member(sp.p, sp.n, "pipeline", &inner, NULL) && inner.n &&
        inner.p[0] == '{' && !jraw_member(sp.p, sp.n, "project_id", &pid, NULL))
        sp = inner;
    jraw_compact(out, sp.p, sp.n);
    buf_free(&b);
    return 0;
}

static bool digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        char ch = (*p)[i];
        if (ch < '0' || ch > '9')
            return false;
        v = v * 10 + (ch - '0');
    }
    *p += n;
    *out = v;
    return true;
}

/* Unix seconds, or ISO 8601: YYYY-MM-DD[(T| )HH:MM[:SS[.f]]][Z|+HH[:MM]].
 * Without a zone the CLI's local time is meant. */
static int parse_when(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!errno && end != s && *end == '\0' && isfinite(v)) {
        *out = v;
        return 0;
    }
    const char *p = s;
    int Y, M, D, h = 0, mi = 0, sec = 0;
    double frac = 0;
    bool zoned = false;
    long off = 0;
    if (!digits(&p, 4, &Y) || *p++ != '-' || !digits(&p, 2, &M) ||
        *p++ != '-' || !digits(&p, 2, &D))
        goto bad;
    if (*p == 'T' || *p == 't' || *p == ' ') {
        p++;
        if (!digits(&p, 2, &h) || *p++ != ':' || !digits(&p, 2, &mi))
            goto bad;
        if (*p == ':') {
            p++;
            if (!digits(&p, 2, &sec))
                goto bad;
            if (*p == '.' || *p == ',') {
                const char *f = p + 1;
                double scale = 0.1;
                if (*f < '0' || *f > '9')
                    goto bad;
                for (; *f >= '0' && *f <= '9'; f++, scale /= 10)
                    frac += (*f - '0') * scale;
                p = f;
            }
        }
    }
    if (*p == 'Z' || *p == 'z') {
        zoned = true;
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p++ == '-' ? -1 : 1, oh, om = 0;
        if (!digits(&p, 2, &oh))
            goto bad;
        if (*p == ':')
            p++;
        if (*p && !digits(&p, 2, &om))
            goto bad;
        if (oh > 23 || om > 59)
            goto bad;
        zoned = true;
        off = sign * (oh * 3600L + om * 60L);
    }
    if (*p || M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || mi > 59 || sec > 60)
        goto bad;
    struct tm tm = {0};
    tm.tm_year = Y - 1900;
    tm.tm_mon = M - 1;
    tm.tm_mday = D;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    time_t t;
    if (zoned) {
        t = timegm(&tm);
        t -= off;
    } else {
        tm.tm_isdst = -1;
        t = mktime(&tm);
    }
    if (t == (time_t)-1 || tm.tm_mday != D) /* normalised: Feb 30 etc. */
        goto bad;
    *out = (double)t + frac;
    return 0;
bad:
    return cli__fail(CLI_EXIT_USAGE,
                     "--from: expected Unix seconds or an ISO 8601 time "
                     "such as 2026-01-01T09:00:00Z, got '%s'", s);
}

/* ---------------------------------------------------------------- session */

/* Connect and authenticate. Returns 0 or an exit code (message printed). */
static int session_open(struct ctx *x)
{
    const char *url = x->url ? x->url : getenv("ROCKETRIDE_URI");
    if (!url || !*url)
        url = DEFAULT_URL;
    struct dap_url u;
    struct err e = {0};
    if (dap_url_parse(url, &u, &e))
        return cli__fail(CLI_EXIT_USAGE, "%s", e.msg);
    const char *key = x->key ? x->key : getenv("ROCKETRIDE_APIKEY");
    if (!key || !*key)
        return cli__fail(CLI_EXIT_USAGE,
                         "no API key: pass --key KEY or set ROCKETRIDE_APIKEY");

    if (dap_client_open(&u, x->timeout, &x->c, &e))
        return cli__fail(CLI_EXIT_CONN, "%s", e.msg);

    struct buf args;
    buf_init(&args, 0);
    buf_puts(&args, "{\"auth\":");
    buf_json_cstr(&args, key);
    buf_puts(&args, ",\"clientName\":\"" CLIENT_NAME
                    "\",\"clientVersion\":\"" RRDEPLOY_VERSION "\"}");
    struct dap_msg *m = NULL;
    int rc = dap_client_request(x->c, "auth", buf_cstr(&args), &m, &e);
    if (args.mem)
        sodium_memzero(args.mem, args.head + args.cap);
    buf_free(&args);
    if (rc)
        return cli__fail(CLI_EXIT_CONN, "%s", e.msg);
    /* auth is stricter than other commands, as in the SDKs: it needs an
     * explicit success:true, a missing success is a refusal */
    struct jraw_span ok;
    if (!m->success || !jraw_member(m->text, m->len, "success", &ok, NULL) ||
        ok.n != 4 || memcmp(ok.p, "true", 4) != 0)
        rc = cli__fail(CLI_EXIT_FAILED, "%s",
                       m->message ? m->message : "Authentication failed");
    dap_msg_free(m);
    return rc;
}

/* Send one request; 0 with *out (owned) on success, else an exit code with
 * the server's message (or the transport's) printed. */
static int call(struct ctx *x, const char *command, const char *args,
                struct dap_msg **out)
{
    struct err e = {0};
    struct dap_msg *m = NULL;
    if (dap_client_request(x->c, command, args, &m, &e))
        return cli__fail(CLI_EXIT_CONN, "%s", e.msg);
    if (!m->success) {
        int rc = cli__fail(CLI_EXIT_FAILED, "%s",
                           m->message ? m->message : "request failed");
        dap_msg_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

/* {"projectId": id} plus whatever the caller appends before the brace. */
static void args_project(struct buf *b, const char *id)
{
    buf_puts(b, "{\"projectId\":");
    buf_json_cstr(b, id);
}

/* Print an answer for people; returns an exit status. */
typedef int (*show_fn)(struct ctx *x, const struct dap_msg *m);

/* Open a session, send command with args and print the body: raw with
 * --json, else through show(). */
static int simple(struct ctx *x, const char *command, const char *args,
                  show_fn show)
{
    int rc = session_open(x);
    if (rc)
        return rc;
    struct dap_msg *m = NULL;
    if ((rc = call(x, command, args, &m)) != 0)
        return rc;
    if (x->json)
        print_raw_body(m);
    else
        rc = show(x, m);
    dap_msg_free(m);
    return rc;
}

/* simple() for a command whose only argument is the deployment's id, sent
 * as {"projectId": ID}. */
static int project_only(struct ctx *x, const char *command, show_fn show)
{
    struct buf args;
    buf_init(&args, 0);
    args_project(&args, x->pos[0]);
    buf_putc(&args, '}');
    int rc = simple(x, command, buf_cstr(&args), show);
    buf_free(&args);
    return rc;
}

/* ---------------------------------------------------------------- records */

static const char *record_project(const json_t *rec)
{
    return jstr(json_object_get(rec, "pipeline"), "project_id");
}

static int show_list(struct ctx *x, const struct dap_msg *m)
{
    json_t *body = body_tree(m);
    if (!body)
        return CLI_EXIT_FAILED;
    json_t *deps = json_object_get(body, "deployments");
    if (json_array_size(deps) == 0) {
        puts("no deployments");
        json_decref(body);
        return 0;
    }
    double now = time_now_real();
    struct cli_table t;
    cli__table_init(&t, 5);
    cli__table_row(&t, "PROJECT", "STATE", "SCHEDULE", "NEXT RUN", "LAST RUN");
    size_t i;
    json_t *rec;
    json_array_foreach(deps, i, rec) {
        char next[32] = "-";
        if (jhas_num(rec, "next_run_at"))
            cli__fmt_rel(jnum(rec, "next_run_at"), now, next, sizeof next);
        struct buf last;
        buf_init(&last, 0);
        json_t *run = json_object_get(rec, "last_run");
        if (json_is_object(run)) {
            char ago[32];
            cli__fmt_rel(run_time(run), now, ago, sizeof ago);
            buf_printf(&last, "%s %s",
                       jstr(run, "outcome") ? jstr(run, "outcome") : "?", ago);
        }
        const char *state = jstr(rec, "state");
        cli__table_row(&t, record_project(rec), state, jstr(rec, "schedule"),
                       next, buf_cstr(&last));
        cli__table_color(&t, 1, state_color(x, state));
        buf_free(&last);
    }
    cli__table_print(&t);
    cli__table_free(&t);
    json_decref(body);
    return 0;
}

static void kv(const char *key, const char *value, const char *color)
{
    char *v = cli__clean(value && *value ? value : "-");
    printf("%-12s %s%s%s\n", key, color ? color : "", v,
           color ? CLI_COLOR_RESET : "");
    free(v);
}

static void kv_time(const json_t *o, const char *member, const char *key,
                    double now)
{
    char when[64], rel[32], line[128];
    if (!jhas_num(o, member)) {
        kv(key, "-", NULL);
        return;
    }
    double t = jnum(o, member);
    cli__fmt_time(t, true, when, sizeof when);
    cli__fmt_rel(t, now, rel, sizeof rel);
    snprintf(line, sizeof line, "%s (%s)", when, rel);
    kv(key, line, NULL);
}

static int show_record(struct ctx *x, const struct dap_msg *m)
{
    json_t *rec = body_tree(m);
    if (!rec)
        return CLI_EXIT_FAILED;
    double now = time_now_real();
    const char *state = jstr(rec, "state");
    kv("project", record_project(rec), NULL);
    kv("user", jstr(rec, "userId"), NULL);
    kv("state", state, state_color(x, state));
    kv("schedule", jstr(rec, "schedule"), NULL);
    kv_time(rec, "next_run_at", "next run", now);
    json_t *run = json_object_get(rec, "last_run");
    if (json_is_object(run)) {
        struct buf b;
        buf_init(&b, 0);
        run_summary(run, &b);
        char when[64], rel[32];
        cli__fmt_time(run_time(run), true, when, sizeof when);
        cli__fmt_rel(run_time(run), now, rel, sizeof rel);
        buf_printf(&b, ", at %s (%s)", when, rel);
        kv("last run", buf_cstr(&b), NULL);
        buf_free(&b);
    } else {
        kv("last run", "-", NULL);
    }
    kv("error", jstr(rec, "error"), NULL);
    kv("created by", jstr(rec, "created_by"), NULL);
    kv_time(rec, "created_at", "created at", now);
    kv_time(rec, "updated_at", "updated at", now);
    kv("owner key", jstr(rec, "owner_key_id"), NULL);
    struct jraw_span sp;
    if (jraw_member(m->body.p, m->body.n, "pipeline", &sp, NULL)) {
        struct buf b;
        buf_init(&b, 0);
        cli__pretty_json(&b, sp.p, sp.n, 2);
        printf("pipeline\n%s\n", buf_cstr(&b));
        buf_free(&b);
    }
    json_decref(rec);
    return 0;
}

static int show_added(struct ctx *x, const struct dap_msg *m)
{
    json_t *rec = body_tree(m);
    if (!rec)
        return CLI_EXIT_FAILED;
    char *id = cli__clean(record_project(rec));
    char *sched = cli__clean(jstr(rec, "schedule"));
    char next[32];
    if (jhas_num(rec, "next_run_at")) {
        cli__fmt_rel(jnum(rec, "next_run_at"), time_now_real(), next,
                     sizeof next);
        printf("added %s (schedule %s, next run %s)\n", id, sched, next);
    } else {
        printf("added %s (schedule %s)\n", id, sched);
    }
    free(id);
    free(sched);
    json_decref(rec);
    return 0;
}

/* ---------------------------------------------------------------- commands */

static int cmd_add(struct ctx *x)
{
    struct buf args;
    buf_init(&args, 0);
    buf_puts(&args, "{\"pipeline\":");
    int rc = read_pipeline(x->pos[0], &args);
    if (rc == 0) {
        if (x->schedule) {
            buf_puts(&args, ",\"schedule\":");
            buf_json_cstr(&args, x->schedule);
        }
        buf_putc(&args, '}');
        rc = simple(x, "rrext_deploy_add", buf_cstr(&args), show_added);
    }
    buf_free(&args);
    return rc;
}

static int cmd_list(struct ctx *x)
{
    return simple(x, "rrext_deploy_list", NULL, show_list);
}

static int cmd_status(struct ctx *x)
{
    return project_only(x, "rrext_deploy_status", show_record);
}

/* For commands whose answer is {}: say what happened. */
static int show_done(struct ctx *x, const struct dap_msg *m)
{
    char *id = cli__clean(x->pos[0]);
    printf("%s %s\n", x->done_verb, id);
    free(id);
    return 0;
}

static int cmd_update(struct ctx *x)
{
    if (!x->schedule && !x->pipeline_file && !x->state)
        return cli__fail(CLI_EXIT_USAGE,
                         "update: nothing to change: give --schedule, "
                         "--pipeline, --pause or --resume");
    struct buf args;
    buf_init(&args, 0);
    args_project(&args, x->pos[0]);
    int rc = 0;
    if (x->pipeline_file) {
        buf_puts(&args, ",\"pipeline\":");
        rc = read_pipeline(x->pipeline_file, &args);
    }
    if (rc == 0) {
        if (x->schedule) {
            buf_puts(&args, ",\"schedule\":");
            buf_json_cstr(&args, x->schedule);
        }
        if (x->state) {
            buf_puts(&args, ",\"state\":");
            buf_json_cstr(&args, x->state);
        }
        buf_putc(&args, '}');
        x->done_verb = "updated";
        if (x->state && !x->schedule && !x->pipeline_file)
            x->done_verb = strcmp(x->state, "paused") == 0 ? "paused" : "resumed";
        rc = simple(x, "rrext_deploy_update", buf_cstr(&args), show_done);
    }
    buf_free(&args);
    return rc;
}

static int cmd_remove(struct ctx *x)
{
    x->done_verb = "removed";
    return project_only(x, "rrext_deploy_remove", show_done);
}

static int cmd_cancel(struct ctx *x)
{
    x->done_verb = "cancel requested for";
    return project_only(x, "rrext_deploy_cancel", show_done);
}

static int show_runs(struct ctx *x, const struct dap_msg *m)
{
    json_t *body = body_tree(m);
    if (!body)
        return CLI_EXIT_FAILED;
    json_t *runs = json_object_get(body, "runs");
    if (json_array_size(runs) == 0) {
        puts("no runs");
        json_decref(body);
        return 0;
    }
    struct cli_table t;
    cli__table_init(&t, 7);
    cli__table_row(&t, "ID", "TRIGGER", "OUTCOME", "SCHEDULED", "STARTED",
                   "DURATION", "EXIT/REASON");
    size_t i;
    json_t *run;
    json_array_foreach(runs, i, run) {
        char id[32], sched[40] = "-", started[40] = "-", dur[32] = "-";
        snprintf(id, sizeof id, "%.0f", jnum(run, "id"));
        if (jhas_num(run, "scheduled_for"))
            cli__fmt_time(jnum(run, "scheduled_for"), false, sched,
                          sizeof sched);
        if (jhas_num(run, "started_at"))
            cli__fmt_time(jnum(run, "started_at"), false, started,
                          sizeof started);
        run_duration(run, dur, sizeof dur);
        struct buf er;
        buf_init(&er, 0);
        run_exit_reason(run, &er);
        cli__table_row(&t, id, jstr(run, "trigger"), jstr(run, "outcome"),
                       sched, started, dur, buf_cstr(&er));
        buf_free(&er);
    }
    cli__table_print(&t);
    cli__table_free(&t);
    json_decref(body);
    return 0;
}

static int cmd_runs(struct ctx *x)
{
    struct buf args;
    buf_init(&args, 0);
    args_project(&args, x->pos[0]);
    if (x->has_limit)
        buf_printf(&args, ",\"limit\":%ld", x->limit);
    buf_putc(&args, '}');
    int rc = simple(x, "rrext_deploy_runs", buf_cstr(&args), show_runs);
    buf_free(&args);
    return rc;
}

static int show_preview(struct ctx *x, const struct dap_msg *m)
{
    json_t *body = body_tree(m);
    if (!body)
        return CLI_EXIT_FAILED;
    const char *zone = jstr(body, "timezone");
    bool other_zone = zone && strcmp(zone, "UTC") != 0;
    json_t *next = json_object_get(body, "next");
    char *sched = cli__clean(jstr(body, "schedule"));
    char *zname = cli__clean(zone ? zone : "UTC");
    printf("schedule %s (zone %s)\n", sched, zname);
    json_t *from = json_object_get(body, "hashedFrom");
    if (from) {
        char *res = cli__clean(jstr(body, "resolved"));
        char *u = cli__clean(jstr(from, "user"));
        char *p = cli__clean(jstr(from, "projectId"));
        printf("resolved %s (H drawn from user %s, project id '%s')\n", res, u,
               p);
        free(res);
        free(u);
        free(p);
    }
    if (json_array_size(next) == 0) {
        puts("no fire times");
    } else {
        struct cli_table t;
        cli__table_init(&t, other_zone ? 3 : 2);
        cli__table_row(&t, "UTC", "LOCAL", zname);
        size_t i;
        json_t *n;
        json_array_foreach(next, i, n) {
            char utc[40], local[48];
            cli__fmt_utc(jnum(n, "at"), utc, sizeof utc);
            cli__fmt_time(jnum(n, "at"), true, local, sizeof local);
            cli__table_row(&t, utc, local, jstr(n, "local"));
        }
        cli__table_print(&t);
        cli__table_free(&t);
    }
    free(sched);
    free(zname);
    json_t *warnings = json_object_get(body, "warnings");
    if (json_array_size(warnings) > 0) {
        puts("warnings:");
        size_t i;
        json_t *w;
        json_array_foreach(warnings, i, w) {
            char *s = cli__clean(json_string_value(w));
            printf("  - %s\n", s);
            free(s);
        }
    }
    json_decref(body);
    return 0;
}

static int cmd_preview(struct ctx *x)
{
    struct buf args;
    buf_init(&args, 0);
    buf_puts(&args, "{\"schedule\":");
    buf_json_cstr(&args, x->pos[0]);
    if (x->has_count)
        buf_printf(&args, ",\"count\":%ld", x->count);
    if (x->has_from)
        buf_printf(&args, ",\"from\":%.6f", x->from);
    if (x->project_id) {
        buf_puts(&args, ",\"projectId\":");
        buf_json_cstr(&args, x->project_id);
    }
    buf_putc(&args, '}');
    int rc = simple(x, "rrext_deploy_preview", buf_cstr(&args), show_preview);
    buf_free(&args);
    return rc;
}

/* ---------------------------------------------------------------- run, watch */

static void on_signal(int sig)
{
    (void)sig;
    dap_client_interrupt();
}

/* SIGINT/SIGTERM end the wait; the goodbye (deauth, close) still runs,
 * bounded by --timeout. A second signal is not caught (SA_RESETHAND): it
 * ends the process at once. No SA_RESTART, so poll() wakes up. */
static void catch_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0)
        cli__fail(CLI_EXIT_OK, /* a warning: the command goes on */
                  "cannot catch SIGINT/SIGTERM (%s): interrupting will not say "
                  "goodbye to the server", strerror(errno));
}

static bool terminal_outcome(const char *o)
{
    return o && strcmp(o, "queued") != 0 && strcmp(o, "running") != 0;
}

/* Print a finished run (human) and return the exit code it means. */
static int report_run(struct ctx *x, const json_t *run, const char *project)
{
    const char *outcome = jstr(run, "outcome");
    bool ok = outcome && strcmp(outcome, "succeeded") == 0;
    if (x->json)
        return ok ? 0 : CLI_EXIT_FAILED;
    struct buf b;
    buf_init(&b, 0);
    run_summary(run, &b);
    char *line = cli__clean(buf_cstr(&b));
    char *id = cli__clean(project);
    printf("%s: run %s\n", id, line + 1); /* drop '#': "run 12 succeeded" */
    free(line);
    free(id);
    buf_free(&b);
    const char *tail = jstr(run, "output_tail");
    if (!ok && tail && *tail) {
        printf("output (tail):\n%s", tail);
        if (tail[strlen(tail) - 1] != '\n')
            putchar('\n');
    }
    return ok ? 0 : CLI_EXIT_FAILED;
}

static int cmd_run(struct ctx *x)
{
    const char *project = x->pos[0];
    struct buf args;
    buf_init(&args, 0);
    int rc = session_open(x);
    struct dap_msg *m = NULL;
    if (rc)
        goto out;
    if (x->wait) {
        /* subscribe first: the run may finish before its response arrives */
        args_project(&args, project);
        buf_putc(&args, '}');
        if ((rc = call(x, "rrext_deploy_watch", buf_cstr(&args), &m)) != 0)
            goto out;
        dap_msg_free(m);
        m = NULL;
        buf_reset(&args);
    }
    args_project(&args, project);
    if (x->idem) {
        buf_puts(&args, ",\"idempotencyKey\":");
        buf_json_cstr(&args, x->idem);
    }
    buf_putc(&args, '}');
    if ((rc = call(x, "rrext_deploy_run", buf_cstr(&args), &m)) != 0)
        goto out;
    json_t *run = body_tree(m);
    if (!run) {
        rc = CLI_EXIT_FAILED;
        goto out;
    }
    double run_id = jnum(run, "id");
    if (!x->wait) {
        if (x->json) {
            print_raw_body(m);
        } else {
            struct buf b;
            buf_init(&b, 0);
            run_summary(run, &b);
            char *line = cli__clean(buf_cstr(&b));
            char *id = cli__clean(project);
            printf("%s: run %s\n", id, line + 1);
            free(line);
            free(id);
            buf_free(&b);
        }
        json_decref(run);
        goto out;
    }
    if (terminal_outcome(jstr(run, "outcome"))) {
        /* an idempotent retry of a run that already ended */
        if (x->json)
            print_raw_body(m);
        rc = report_run(x, run, project);
        json_decref(run);
        goto out;
    }
    json_decref(run);
    if (!x->json) {
        char *id = cli__clean(project);
        fprintf(stderr, "%s: run %.0f started, waiting for it to finish\n", id,
                run_id);
        free(id);
    }
    catch_signals();
    for (;;) {
        struct dap_msg *ev = NULL;
        struct err e = {0};
        int r = dap_client_event(x->c, x->timeout_set, &ev, &e);
        if (r == -EINTR) {
            rc = cli__fail(CLI_EXIT_INTERRUPTED,
                           "interrupted; run %.0f goes on on the server",
                           run_id);
            break;
        }
        if (r == -ETIMEDOUT) {
            rc = cli__fail(CLI_EXIT_CONN,
                           "timed out waiting for run %.0f to finish", run_id);
            break;
        }
        if (r) {
            rc = cli__fail(CLI_EXIT_CONN, "%s", e.msg);
            break;
        }
        json_t *body = body_tree(ev);
        const char *action = body ? jstr(body, "action") : NULL;
        json_t *evrun = body ? json_object_get(body, "run") : NULL;
        bool done = false;
        if (action && strcmp(action, "run_finished") == 0 &&
            json_is_object(evrun) && jnum(evrun, "id") == run_id) {
            struct jraw_span sp;
            if (x->json && jraw_member(ev->body.p, ev->body.n, "run", &sp, NULL)) {
                fwrite(sp.p, 1, sp.n, stdout);
                putchar('\n');
            }
            rc = report_run(x, evrun, project);
            done = true;
        } else if (action && strcmp(action, "removed") == 0) {
            rc = cli__fail(CLI_EXIT_FAILED,
                           "deployment %s was removed while waiting", project);
            done = true;
        }
        json_decref(body);
        dap_msg_free(ev);
        if (done)
            break;
    }
    /* the wait may have outlived the deadline: give the goodbye its own */
    dap_client_set_deadline(x->c, x->timeout);
out:
    dap_msg_free(m);
    buf_free(&args);
    return rc;
}

/* One line per event: time, project, action, outcome or detail. */
static void print_event_line(struct ctx *x, const struct dap_msg *ev)
{
    json_t *body = body_tree(ev);
    if (!body)
        return;
    /* when it happened, by the server's clock; older servers send no "at" */
    json_t *at = json_object_get(body, "at");
    double t = json_is_number(at) ? json_number_value(at) : 0;
    char when[40];
    cli__fmt_time(t > 0 && t < 253402300800.0 ? t : time_now_real(), false,
                  when, sizeof when);
    const char *action = jstr(body, "action");
    struct buf detail;
    buf_init(&detail, 0);
    json_t *run = json_object_get(body, "run");
    if (json_is_object(run)) {
        run_summary(run, &detail);
    } else if (jstr(body, "state")) {
        buf_puts(&detail, jstr(body, "state"));
        if (jstr(body, "error"))
            buf_printf(&detail, ": %s", jstr(body, "error"));
    }
    char *project = cli__clean(jstr(body, "projectId"));
    char *act = cli__clean(action ? action : "?");
    char *det = cli__clean(buf_cstr(&detail));
    const char *color = state_color(x, jstr(body, "state"));
    printf("%s  %s  %-13s  %s%s%s\n", when, project, act, color ? color : "", det,
           color ? CLI_COLOR_RESET : "");
    free(project);
    free(act);
    free(det);
    buf_free(&detail);
    json_decref(body);
}

static int cmd_watch(struct ctx *x)
{
    int rc = session_open(x);
    if (rc)
        return rc;
    struct buf args;
    buf_init(&args, 0);
    if (x->npos > 0) {
        args_project(&args, x->pos[0]);
        buf_putc(&args, '}');
    }
    struct dap_msg *m = NULL;
    rc = call(x, "rrext_deploy_watch", x->npos > 0 ? buf_cstr(&args) : NULL, &m);
    buf_free(&args);
    if (rc)
        return rc;
    dap_msg_free(m);
    catch_signals();
    /* on stderr in both modes: people see it, scripts can wait for it */
    char *id = x->npos > 0 ? cli__clean(x->pos[0]) : NULL;
    fprintf(stderr, "watching %s%s (Ctrl-C to stop)\n",
            id ? "deployment " : "all your deployments", id ? id : "");
    free(id);
    for (;;) {
        struct dap_msg *ev = NULL;
        struct err e = {0};
        int r = dap_client_event(x->c, false, &ev, &e);
        if (r == -EINTR)
            break;
        if (r) {
            rc = cli__fail(CLI_EXIT_CONN, "%s", e.msg);
            break;
        }
        if (x->json)
            print_raw_body(ev);
        else
            print_event_line(x, ev);
        dap_msg_free(ev);
        if (fflush(stdout) != 0) {
            rc = cli__fail(CLI_EXIT_FAILED,
                           "cannot write to standard output: %s",
                           strerror(errno));
            break;
        }
    }
    dap_client_set_deadline(x->c, x->timeout);
    return rc;
}

/* ---------------------------------------------------------------- table of commands */

static const struct command commands[] = {
    {"add", "FILE [--schedule S]",
     "Deploy the pipeline in FILE: a JSON object with a project_id, a .pipe\n"
     "file wrapping it as {\"pipeline\": {...}}, or - for standard input. The\n"
     "pipeline is sent exactly as written (white space aside).",
     "  --schedule S            cron expression (5 fields, optionally\n"
     "                          CRON_TZ=Zone first), @hourly etc., or manual\n"
     "                          (the default)\n",
     O_SCHEDULE, 1, 1, cmd_add},
    {"list", "",
     "List your deployments: state, schedule, next run and last run.", NULL, 0,
     0, 0, cmd_list},
    {"status", "ID", "Show everything about one deployment.", NULL, 0, 1, 1,
     cmd_status},
    {"update", "ID [--schedule S] [--pipeline FILE] [--pause|--resume]",
     "Change a deployment's schedule or pipeline, or pause or resume it.",
     "  --schedule S            the new schedule\n"
     "  --pipeline FILE         the new pipeline (as for add; - for stdin)\n"
     "  --pause                 stop scheduled runs until --resume\n"
     "  --resume                make a paused deployment active again\n",
     O_SCHEDULE | O_PIPELINE | O_PAUSE | O_RESUME, 1, 1, cmd_update},
    {"remove", "ID", "Remove a deployment.", NULL, 0, 1, 1, cmd_remove},
    {"run", "ID [--wait] [--idempotency-key K]",
     "Start a run of a deployment now and print its id and outcome.",
     "  --wait                  wait for the run to finish; exit 0 only if it\n"
     "                          succeeded (without --timeout, waits as long as\n"
     "                          the run takes)\n"
     "  --idempotency-key K     a retry with the same K returns the same run\n",
     O_WAIT | O_IDEM, 1, 1, cmd_run},
    {"cancel", "ID", "Stop the running run of a deployment.", NULL, 0, 1, 1,
     cmd_cancel},
    {"runs", "ID [--limit N]", "List a deployment's recent runs, newest first.",
     "  --limit N               at most N runs (server default 100)\n", O_LIMIT, 1,
     1, cmd_runs},
    {"watch", "[ID]",
     "Print one line per event (runs starting and finishing, state changes)\n"
     "of your deployments, or of one, until interrupted.",
     NULL, 0, 0, 1, cmd_watch},
    {"preview", "SCHEDULE [--count N] [--from TIME] [--project-id ID]",
     "Validate a schedule and show its next fire times (UTC and local) and\n"
     "any warnings about it.",
     "  --count N               how many fire times (default 5, at most 1000)\n"
     "  --from TIME             start after TIME: Unix seconds or ISO 8601\n"
     "                          (2026-01-01T09:00:00Z; no zone = local time)\n"
     "  --project-id ID         resolve H as for your deployment ID\n",
     O_COUNT | O_FROM | O_PROJECT, 1, 1, cmd_preview},
};

static const char common_help[] =
    "options:\n"
    "  --url URL               server (default $ROCKETRIDE_URI, else\n"
    "                          " DEFAULT_URL "); http(s)://, ws(s):// or host:port\n"
    "  --key KEY               API key (default $ROCKETRIDE_APIKEY)\n"
    "  --timeout SECS          give up after SECS (default 30)\n"
    "  --json                  print the server's JSON, one line per answer\n"
    "  --help                  show this help\n"
    "\n"
    "exit status: 0 ok, 1 refused by the server (or the run failed), 2 usage,\n"
    "3 connection or timeout.\n";

static void command_help(const struct command *c, FILE *f)
{
    fprintf(f, "usage: rrdeploy %s%s%s [options]\n\n%s\n\n", c->name,
            *c->synopsis ? " " : "", c->synopsis, c->about);
    if (c->opt_help)
        fprintf(f, "%s\n", c->opt_help);
    fputs(common_help, f);
}

static const struct command *find_command(const char *name)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

bool cli_is_client_command(const char *name)
{
    return name && find_command(name) != NULL;
}

static const struct {
    const char *name;
    unsigned bit;
} opt_names[] = {
    {"--url", O_URL},           {"--key", O_KEY},
    {"--timeout", O_TIMEOUT},   {"--json", O_JSON},
    {"--schedule", O_SCHEDULE}, {"--pipeline", O_PIPELINE},
    {"--pause", O_PAUSE},       {"--resume", O_RESUME},
    {"--wait", O_WAIT},         {"--idempotency-key", O_IDEM},
    {"--limit", O_LIMIT},       {"--count", O_COUNT},
    {"--from", O_FROM},         {"--project-id", O_PROJECT},
};

static const char *opt_name(unsigned bit)
{
    for (size_t i = 0; i < sizeof opt_names / sizeof opt_names[0]; i++)
        if (opt_names[i].bit == bit)
            return opt_names[i].name;
    return "?";
}

int cli_run_client(int argc, char **argv)
{
    static const struct option opts[] = {
        {"url", required_argument, NULL, O_URL},
        {"key", required_argument, NULL, O_KEY},
        {"timeout", required_argument, NULL, O_TIMEOUT},
        {"json", no_argument, NULL, O_JSON},
        {"schedule", required_argument, NULL, O_SCHEDULE},
        {"pipeline", required_argument, NULL, O_PIPELINE},
        {"pause", no_argument, NULL, O_PAUSE},
        {"resume", no_argument, NULL, O_RESUME},
        {"wait", no_argument, NULL, O_WAIT},
        {"idempotency-key", required_argument, NULL, O_IDEM},
        {"limit", required_argument, NULL, O_LIMIT},
        {"count", required_argument, NULL, O_COUNT},
        {"from", required_argument, NULL, O_FROM},
        {"project-id", required_argument, NULL, O_PROJECT},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    if (argc < 1 || !cli_is_client_command(argv[0]))
        return cli__fail(CLI_EXIT_USAGE, "unknown command '%s'",
                         argc ? argv[0] : "");
    struct ctx x;
    memset(&x, 0, sizeof x);
    x.cmd = find_command(argv[0]);
    x.timeout = DEFAULT_TIMEOUT_S;
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        if (c == 'h') {
            command_help(x.cmd, stdout);
            return 0;
        }
        if (c == '?' || c == ':')
            return cli__fail(CLI_EXIT_USAGE,
                             "%s: %s '%s' (try 'rrdeploy %s --help')",
                             x.cmd->name,
                             c == ':' ? "missing the value of" : "unknown option",
                             argv[optind - 1], x.cmd->name);
        if (!((O_COMMON | x.cmd->opts) & (unsigned)c))
            return cli__fail(CLI_EXIT_USAGE,
                             "%s: %s is not an option of this command",
                             x.cmd->name, opt_name((unsigned)c));
        char *end;
        switch (c) {
        case O_URL: x.url = optarg; break;
        case O_KEY: x.key = optarg; break;
        case O_TIMEOUT:
            errno = 0;
            x.timeout = strtod(optarg, &end);
            if (errno || end == optarg || *end || !(x.timeout > 0) ||
                x.timeout > 86400 * 365)
                return cli__fail(CLI_EXIT_USAGE,
                                 "--timeout: expected seconds, got '%s'",
                                 optarg);
            x.timeout_set = true;
            break;
        case O_JSON: x.json = true; break;
        case O_SCHEDULE: x.schedule = optarg; break;
        case O_PIPELINE: x.pipeline_file = optarg; break;
        case O_PAUSE:
        case O_RESUME: {
            const char *st = c == O_PAUSE ? "paused" : "active";
            if (x.state && strcmp(x.state, st) != 0)
                return cli__fail(CLI_EXIT_USAGE,
                                 "update: --pause and --resume exclude "
                                 "each other");
            x.state = st;
            break;
        }
        case O_WAIT: x.wait = true; break;
        case O_IDEM: x.idem = optarg; break;
        case O_LIMIT:
            if (cli__parse_long_opt("--limit", optarg, LONG_MIN, LONG_MAX,
                                    "an integer", &x.limit))
                return CLI_EXIT_USAGE;
            x.has_limit = true;
            break;
        case O_COUNT:
            if (cli__parse_long_opt("--count", optarg, LONG_MIN, LONG_MAX,
                                    "an integer", &x.count))
                return CLI_EXIT_USAGE;
            x.has_count = true;
            break;
        case O_FROM:
            if (parse_when(optarg, &x.from))
                return CLI_EXIT_USAGE;
            x.has_from = true;
            break;
        case O_PROJECT: x.project_id = optarg; break;
        }
    }
    int npos = argc - optind;
    if (npos < x.cmd->min_pos || npos > x.cmd->max_pos) {
        fprintf(stderr, "rrdeploy: %s: expected %s%s\n", x.cmd->name,
                *x.cmd->synopsis ? "" : "no arguments",
                *x.cmd->synopsis ? x.cmd->synopsis : "");
        fprintf(stderr, "usage: rrdeploy %s%s%s [options]\n", x.cmd->name,
                *x.cmd->synopsis ? " " : "", x.cmd->synopsis);
        return CLI_EXIT_USAGE;
    }
    for (int i = 0; i < npos; i++) {
        x.pos[i] = argv[optind + i];
        if (!*x.pos[i])
            return cli__fail(CLI_EXIT_USAGE, "%s: empty argument", x.cmd->name);
    }
    x.npos = npos;
    x.color = !x.json && isatty(STDOUT_FILENO) && getenv("NO_COLOR") == NULL;
    tzset();

    int rc = x.cmd->fn(&x);
    dap_client_close(x.c);
    x.c = NULL;
    if (fflush(stdout) != 0 || ferror(stdout)) {
        if (rc == 0)
            rc = cli__fail(CLI_EXIT_FAILED, "cannot write to standard output");
    }
    return rc;
}
