/* scheduler.h -- the tick engine: tick decisions over all deployments
 * (engine.c). Cron itself -- parsing, zones, next fire times, preview -- is
 * scheduler/cron.h.
 *
 * The daemon owns one struct sched on its service thread, arms one timer at
 * sched_next_deadline() and calls sched_tick() when it expires. Runs go to an
 * executor through struct sched_exec; the executor's reports come back
 * through sched_run_report(). Watchers hear of decisions through cfg.emit, as
 * typed struct sched_event values (the protocol layer writes them on the
 * wire). Thread: the service thread only. */
#ifndef RR_SCHEDULER_H
#define RR_SCHEDULER_H

#include <stdbool.h>
#include <stdint.h>

#include "scheduler/cron.h"
#include "store/store.h"
#include "util/util.h"

#define SCHED_DEV_KEY_ID "dev" /* owner_key_id of the ROCKETRIDE_APIKEY key */
/* owner_key_id of deployments added with a RocketRide key (the engine
 * checked it; no local key has this id): the engine checks the owner's
 * credential again at every run, and its refusal errors the deployment. */
#define SCHED_ENGINE_KEY_ID "engine"
#define SCHED_TICK_LEAD 1.0    /* seconds ahead the server decides due ticks */
/* A burst too large to decide within SCHED_TICK_LEAD is decided as far ahead
 * as its size needs, but never more than this many seconds. */
#define SCHED_TICK_LEAD_MAX 30.0

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
    /* The deployment's sealed credential (util/vault.h), to run as its
     * owner; NULL = none (the server's service credential). */
    const unsigned char *credential;
    size_t credential_len;
};

struct sched_exec {
    /* Take the job (copy what is needed); 0 or a negative code. */
    int (*submit)(void *ud, const struct sched_job *job);
    /* Stop run_id, finishing it as `as`; 0 or RR_E_NOTFOUND. */
    int (*cancel)(void *ud, int64_t run_id, enum store_outcome as);
    /* At start-up, for each run a previous life of the server left
     * running, with the job it is (may be NULL): true when the executor
     * adopts it (it goes on, and is reported as usual); false when whatever
     * of it is still going was stopped: the run is recorded interrupted. */
    bool (*reclaim)(void *ud, const struct sched_job *job,
                    const struct store_run *r);
    void *ud;
};

/* What an executor reports about a run; pointers borrowed for the call. */
enum sched_report_kind { SCHED_RUN_STARTED, SCHED_RUN_FINISHED };
struct sched_report {
    enum sched_report_kind kind;
    int64_t run_id;
    double at;                 /* wall clock */
    /* SCHED_RUN_STARTED: the run's process group (= its leader's pid) and
     * the leader's start time, to recognise the group after a crash; 0 when
     * unknown. */
    int pgid;
    uint64_t leader_start;
    /* SCHED_RUN_FINISHED: */
    enum store_outcome outcome;
    int exit_code;             /* -1 = none */
    int signal;                /* 0 = none */
    const char *reason;        /* NULL or why */
    const char *output;        /* output tail (any bytes) */
    size_t output_len;
    bool started;              /* a process ran */
    /* What a RocketRide engine said about the run's task, a JSON object
     * (NULL: nothing; STARTED and FINISHED may both carry it). */
    const char *task;
    /* SCHED_RUN_FINISHED: the engine refused the owner's credential (this
     * text says how): the deployment becomes errored. NULL otherwise. */
    const char *owner_refused;
};

/* What watchers are told (the apaevt_deploy events); every pointer is
 * borrowed for the call. */
enum sched_event_kind {
    SCHED_EV_RUN_STARTED,
    SCHED_EV_RUN_FINISHED,
    SCHED_EV_TICK_SKIPPED,
    SCHED_EV_TICK_MISSED,
    SCHED_EV_STATE_CHANGED,
    SCHED_EV_REMOVED,
};
struct sched_event {
    enum sched_event_kind kind;
    const char *user;
    const char *project_id;
    double at;                   /* when it happened (float Unix seconds) */
    const struct store_run *run; /* RUN_* and TICK_*: the ledger row */
    enum store_state state;      /* STATE_CHANGED: the new state ... */
    const char *error;           /* ... and why it is errored, or NULL */
};

struct sched_config {
    const char *default_zone;  /* for schedules without CRON_TZ= */
    int64_t keep_runs;         /* ledger rows kept per deployment */
    /* A run decided before a restart that never started still starts after
     * it if at most this many seconds late; else it is recorded missed. */
    double starting_deadline_s;
    bool dev_key_present;      /* ROCKETRIDE_APIKEY is configured */
    /* The least one decision is assumed to cost (seconds, commits
     * included), to size the lead of a burst before ticks have measured
     * it; 0: the engine's default (100 us). */
    double decision_cost_s;
    /* Event sink, on the service thread. Events raised inside a batch are
     * sent once it commits and dropped if it fails. */
    void (*emit)(void *ud, const struct sched_event *ev);
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

/* Startup: what is left of runs a previous server left running is stopped
 * (the executor's reclaim) and those runs become interrupted; every
 * deployment is indexed; ticks that fell due while down become one `missed`
 * row each; runs that were decided but never started are started (held for
 * their second when it has not come yet) if at most cfg.starting_deadline_s
 * late, and recorded missed otherwise. No scheduled time gets two rows. */
int sched_load(struct sched *s, double now) MUST_CHECK;

/* Parse a schedule as the engine reads it: cronx_parse_seeded with the
 * engine's default zone and the seed of deployment (user, project_id) (both
 * borrowed; see sched_seed), so H resolves the same on every restart and
 * every node. resolved: as cronx_parse_seeded (NULL = not wanted). */
int sched_parse(const struct sched *s, const char *text, const char *user,
                const char *project_id, char *resolved /* OUT, may be NULL */,
                size_t resolved_cap,
                struct cronx **out /* OUT, free with cronx_free */,
                struct err *e) MUST_CHECK;

/* The H seed of a deployment: cronx_seed of user "\0" project_id. */
uint32_t sched_seed(const char *user, const char *project_id);

/* The next fire of a deployment in state st that last fired at last_fire:
 * strictly after both now and last_fire; CRONX_NEVER when it never fires. */
int64_t sched_next_fire(const struct cronx *cx, enum store_state st,
                        int64_t last_fire, double now);

/* ---- Deployment changes. Each writes the store and updates the engine's
 * index together, so no caller can do one and forget the other; on an error
 * neither changed and e holds the message for the client. */

/* Add a deployment from d's user, project_id, pipeline (compact JSON text),
 * schedule, created_by, owner_key_id and sealed credential (NULL = none; all
 * borrowed); cx is d->schedule
 * parsed with sched_parse, taken in every case. The engine fills in d's
 * state (active), error, created_at and updated_at (now), last_fire_at and
 * next_run_at. RR_E_EXISTS (the user has that project id), RR_E_LIMIT (the
 * user has max_per_user deployments; <= 0 means no limit). */
int sched_add(struct sched *s, struct store_dep *d, struct cronx *cx,
              int64_t max_per_user, double now, struct err *e) MUST_CHECK;

/* What an update changes; strings and the credential borrowed for the
 * call. */
struct sched_change {
    const char *pipeline;      /* compact JSON text; NULL = keep */
    const char *schedule;      /* NULL = keep */
    struct cronx *cx;          /* schedule parsed (taken); NULL with it */
    bool set_state;
    enum store_state state;    /* with set_state: active or paused */
    bool set_credential;       /* false = keep the credential */
    const unsigned char *credential; /* with set_credential: the new sealed
                                      * credential; NULL clears it */
    size_t credential_len;
};
/* Change a deployment (updated_at = now, next_run_at recomputed).
 * RR_E_NOTFOUND; RR_E_BUSY for a state change of an errored deployment
 * (it is removed and added again instead). ch->cx is taken in every case. */
int sched_update(struct sched *s, const char *user, const char *project_id,
                 struct sched_change *ch, double now, struct err *e) MUST_CHECK;

/* Remove a deployment and its ledger; a run of it still going is stopped
 * (interrupted). RR_E_NOTFOUND. */
int sched_remove(struct sched *s, const char *user, const char *project_id,
                 double now, struct err *e) MUST_CHECK;

/* The state of (user, project_id), from the engine's index (which holds
 * every deployment of the store). RR_E_NOTFOUND when there is none. */
int sched_lookup(const struct sched *s, const char *user, const char *project_id,
                 enum store_state *out /* OUT */);

/* Earliest fire instant of all deployments, CRONX_NEVER when none. */
int64_t sched_next_deadline(const struct sched *s);
/* Decide every tick due at `now`, and -- with lead > 0 -- the ticks due
 * within `lead` seconds of deployments that have nothing running (those
 * cannot overlap): their ledger rows are committed now and their runs held
 * until their time (sched_release), so a burst of thousands due in the same
 * second starts on time. With lead > 0 a burst whose decisions would not fit
 * in `lead` (the engine counts the deployments due at each second and
 * measures what a decision costs) is decided as far ahead as it needs, at
 * most SCHED_TICK_LEAD_MAX seconds. With max > 0, stop after max decisions (the rest
 * stay due; sched_next_wake says so), so that a very large amount of work --
 * a clock stepped days ahead -- is cut into short turns of the event loop.
 * Returns how many deployments were decided. */
int sched_tick(struct sched *s, double now, double lead, int max);
/* When the engine next needs sched_tick or sched_release, in Unix seconds
 * (`now` when work is due already), or 0 when nothing is scheduled: lead
 * seconds before the earliest fire, or that fire's own time when it is
 * within the lead (a deployment still running is decided at its time, not
 * ahead), or earlier for a burst that needs more than the lead (see
 * sched_tick), or the earliest held run. */
double sched_next_wake(const struct sched *s, double now, double lead);
/* Prune the ledgers of deployments decided since (to cfg.keep_runs rows
 * each), at most max of them (<= 0: all), in one transaction -- work a tick
 * leaves for later. Does nothing while a tick is being worked through in
 * chunks or is due within SCHED_TICK_LEAD. Returns how many deployments are
 * still waiting. */
size_t sched_prune(struct sched *s, double now, int max);
/* How many deployments' ledgers wait for sched_prune. */
size_t sched_prune_waiting(const struct sched *s);
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

/* Record what an executor reports: a run started or finished. */
void sched_run_report(struct sched *s, const struct sched_report *r);

/* Re-check every deployment's owner key (after the key table changed);
 * returns how many became errored, or a negative code. */
int sched_keys_changed(struct sched *s, double now);

const struct sched_stats *sched_stats(const struct sched *s);
/* Deployments indexed, by state (indexed by enum store_state). */
void sched_count_states(const struct sched *s, uint64_t out[3]);
/* Deployments indexed; *scheduled (may be NULL) gets how many are in the heap. */
size_t sched_count(const struct sched *s, size_t *scheduled);

#endif
