/* scheduler.h -- cron schedules: parsing, next fire times, preview.
 *
 * The dialect (PRODUCT §4): "manual"; 5-field cron (minute hour day-of-month
 * month day-of-week) with *, a, a-b, * /n, a-b/n, a/n, comma lists, JAN-DEC and
 * SUN-SAT names (case-insensitive, 0 and 7 are Sunday); presets @yearly
 * @annually @monthly @weekly @daily @midnight @hourly; an optional leading
 * "CRON_TZ=<zone> " or "TZ=<zone> ". Day-of-month and day-of-week both
 * restricted (neither field is exactly "*"): a day matches if either matches.
 * In day-of-week, "a/n" runs to 7 (= Sunday), as "a-7/n". Steps run 1..field
 * size (e.g. 1-60 in minute). Schedules that can never fire are rejected.
 * Input is limited to CRONX_TEXT_MAX bytes; zone names to [A-Za-z0-9_+-/],
 * relative, no "..".
 *
 * Time zones come from the system tz database (TZif files), are loaded once,
 * shared and never freed; the process TZ is never touched. A parsed struct
 * cronx is immutable: any thread may use it concurrently.
 *
 * DST contract: an hour field starting with '*' follows elapsed time (gap
 * times do not occur, fold times fire twice); any other hour field fires each
 * matching local date-time exactly once (inside a gap: at the first instant
 * after the gap; inside a fold: at the first occurrence).
 *
 * Instants are searched in 1800..9000 (earlier `after` values are clamped);
 * a search gives up after 400 years (CRONX_NEVER). Zone files are read from
 * /usr/share/zoneinfo, or $RRDEPLOY_ZONEINFO when set (tests). */
#ifndef RR_SCHEDULER_H
#define RR_SCHEDULER_H

#include <stdbool.h>
#include <stdint.h>

#include "store/store.h"
#include "util/util.h"

#define CRONX_NEVER INT64_MIN    /* no next fire (manual, or none left) */
#define CRONX_LOCAL_MAX 32       /* "2026-01-01T00:00:00+05:30" + NUL */
#define CRONX_WARNING_MAX 8      /* warnings kept by a preview */
#define CRONX_WARNING_LEN 160
#define CRONX_TEXT_MAX 1024      /* longest schedule text accepted, bytes */

struct cronx;

/* Parse text. default_zone (NULL = "UTC") applies when there is no CRON_TZ=
 * prefix. On failure returns RR_E_INVAL and e->msg holds the specific reason
 * only, e.g. "minute 61 out of range 0-59" or "day-of-month 30 never occurs in
 * February"; the caller words it as "Invalid schedule '<s>': <reason>". */
int cronx_parse(const char *text, const char *default_zone,
                struct cronx **out /* OUT, free with cronx_free */,
                struct err *e) MUST_CHECK;
void cronx_free(struct cronx *c); /* NULL is fine */

bool cronx_is_manual(const struct cronx *c);
const char *cronx_zone_name(const struct cronx *c); /* "UTC" for manual */

/* The first fire instant (Unix seconds, UTC) strictly after `after`, or
 * CRONX_NEVER. */
int64_t cronx_next(const struct cronx *c, int64_t after);

/* Format instant t as local ISO-8601 with offset in the schedule's zone. */
void cronx_format_local(const struct cronx *c, int64_t t,
                        char out[CRONX_LOCAL_MAX]);

struct cronx_preview {
    int count;                                   /* fires written to at[] */
    int nwarnings;
    char warnings[CRONX_WARNING_MAX][CRONX_WARNING_LEN];
};

/* The next `count` fires strictly after `from` into at[] (room for count), and
 * warnings: DST gap/fold hits among those fires, the DOM/DOW OR rule in effect,
 * steps that do not divide their range evenly. */
void cronx_preview(const struct cronx *c, int64_t from, int count,
                   int64_t *at /* OUT */, struct cronx_preview *out /* OUT */);

/* Validate an IANA zone name and check it loads ("--timezone"). */
int cronx_zone_check(const char *name, struct err *e);

/* ===========================================================================
 * The engine: tick decisions over all deployments (engine.c).
 *
 * The server owns one struct sched on its service thread, tells it about
 * every deployment change after the store write succeeded, arms one timer at
 * sched_next_deadline() and calls sched_tick() when it expires. Runs go to an
 * executor through struct sched_exec; the executor reports back through
 * sched_run_started/sched_run_finished. Events for watchers leave through
 * cfg.emit as the body of an apaevt_deploy event. */

#define SCHED_DEV_KEY_ID "dev" /* owner_key_id of the ROCKETRIDE_APIKEY key */
#define SCHED_TICK_LEAD 1.0    /* seconds ahead the server decides due ticks */

struct sched;

/* A run handed to the executor; every pointer is borrowed for the call. */
struct sched_job {
    int64_t run_id;
    const char *user;
    const char *project_id;
    const char *trigger;       /* "schedule" | "manual" */
    const char *scheduled_at;  /* ISO-8601 UTC */
    const char *pipeline;      /* JSON text */
    size_t pipeline_len;
};

struct sched_exec {
    /* Take the job (copy what is needed); 0 or a negative code. */
    int (*submit)(void *ud, const struct sched_job *job);
    /* Stop run_id, finishing it as `as`; 0 or RR_E_NOTFOUND. */
    int (*cancel)(void *ud, int64_t run_id, enum store_outcome as);
    /* At start-up: stop a process group a crashed server left running
     * (may be NULL). */
    void (*kill_stale)(void *ud, int pgid, uint64_t leader_start);
    void *ud;
};

/* What the executor reports when a run ends; pointers borrowed for the call. */
struct sched_result {
    int64_t run_id;
    double at;                 /* wall clock */
    enum store_outcome outcome;
    int exit_code;             /* -1 = none */
    int signal;                /* 0 = none */
    const char *reason;        /* NULL or why */
    const char *output;        /* output tail */
    size_t output_len;
    bool started;              /* a process ran */
};

struct sched_config {
    const char *default_zone;  /* for schedules without CRON_TZ= */
    int64_t keep_runs;         /* ledger rows kept per deployment */
    bool dev_key_present;      /* ROCKETRIDE_APIKEY is configured */
    /* Event sink: body is a JSON object {"action":..., "projectId":..., ...}. */
    void (*emit)(void *ud, const char *user, const char *project_id,
                 const char *body);
    void *emit_ud;
};

/* Upper bounds (seconds) of the fire-lateness histogram buckets; a last,
 * implicit bucket is +Inf. */
#define SCHED_LATENESS_BOUNDS {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}
#define SCHED_LATENESS_NBUCKETS 12

struct sched_stats {
    uint64_t ticks;            /* scheduled ticks decided */
    uint64_t runs_started;     /* runs handed to the executor */
    uint64_t skipped_overlap;  /* ticks skipped: previous run still going */
    uint64_t missed;           /* ticks recorded as missed */
    uint64_t errored;          /* deployments errored by owner checks */
    uint64_t finished[STORE_RUN_MISSED + 1]; /* runs finished, by outcome */
    /* Fire lateness: seconds from a tick's due instant to its decision. */
    uint64_t lateness_bucket[SCHED_LATENESS_NBUCKETS + 1]; /* not cumulative */
    double lateness_sum;
};

void sched_config_defaults(struct sched_config *cfg);
/* st is borrowed for the engine's life; cfg and exec are copied. */
struct sched *sched_new(struct store *st, const struct sched_config *cfg,
                        const struct sched_exec *exec);
void sched_free(struct sched *s); /* NULL is fine */

/* Startup: process groups of runs a crashed server left running are killed
 * and those runs, with any left queued, become interrupted; every deployment
 * is indexed; ticks missed while down become one `missed` row each. */
int sched_load(struct sched *s, double now) MUST_CHECK;

/* The next fire of a deployment in state st that last fired at last_fire:
 * strictly after both now and last_fire; CRONX_NEVER when it never fires. */
int64_t sched_next_fire(const struct cronx *cx, enum store_state st,
                        int64_t last_fire, double now);

/* After a successful store insert/update of row (with next_run_at computed by
 * sched_next_fire): index it and (re)schedule it. */
int sched_dep_upsert(struct sched *s, const struct store_dep *row);
/* After a successful store delete at now: stop its run (interrupted) and
 * forget it. */
void sched_dep_removed(struct sched *s, const char *user, const char *project_id,
                       double now);

/* Earliest fire instant of all deployments, CRONX_NEVER when none. */
int64_t sched_next_deadline(const struct sched *s);
/* Decide every tick due at `now`, and -- with lead > 0 -- the ticks due
 * within `lead` seconds of deployments that have nothing running (those
 * cannot overlap): their ledger rows are committed now and their runs held
 * until their time (sched_release), so a burst of thousands due in the same
 * second starts on time. Returns how many deployments were decided. */
int sched_tick(struct sched *s, double now, double lead);
/* Start the held runs whose time has come (one whose deployment was paused
 * or errored meanwhile does not start; its row says so). Returns how many. */
int sched_release(struct sched *s, double now);
/* When the earliest held run is due (Unix seconds), 0 when none is held. */
double sched_next_release(const struct sched *s);

/* The caller has opened a store batch (store_batch_begin) around several
 * calls: runs decided meanwhile are not handed to the executor until
 * sched_defer_end, which the caller calls after its commit (committed true)
 * or its failure (false: those runs never were, and the deployments
 * upserted or removed meanwhile are read back from the store). Events raised
 * meanwhile are sent by sched_defer_end after a commit, and dropped after a
 * failure. */
void sched_defer_begin(struct sched *s);
void sched_defer_end(struct sched *s, double now, bool committed);

/* rrext_deploy_run: start a manual run now, or return the run recorded under
 * the same idempotency key. Errors (message in e): RR_E_NOTFOUND; RR_E_BUSY
 * for paused, errored or already running. *out is filled on success. */
int sched_run_now(struct sched *s, const char *user, const char *project_id,
                  const char *idem, double now, struct store_run *out /* OUT */,
                  struct err *e);
/* rrext_deploy_cancel: RR_E_NOTFOUND, or RR_E_BUSY when nothing runs. */
int sched_cancel(struct sched *s, const char *user, const char *project_id,
                 struct err *e);

/* The run's process started; pgid/leader_start identify its process group
 * (0 when unknown) and are kept in the ledger for sched_load after a crash. */
void sched_run_started(struct sched *s, int64_t run_id, double at, int pgid,
                       uint64_t leader_start);
void sched_run_finished(struct sched *s, const struct sched_result *res);

/* Re-check every deployment's owner key (after the key table changed);
 * returns how many became errored, or a negative code. */
int sched_keys_changed(struct sched *s, double now);

/* The run object as it appears on the wire; without its output tail when
 * with_output is false (the last_run summary inside deployment records). */
void sched_run_json(struct buf *b, const struct store_run *r, bool with_output);

const struct sched_stats *sched_stats(const struct sched *s);
/* Deployments indexed, by state (indexed by enum store_state). */
void sched_count_states(const struct sched *s, uint64_t out[3]);
/* Deployments indexed; *scheduled (may be NULL) gets how many are in the heap. */
size_t sched_count(const struct sched *s, size_t *scheduled);

#endif
