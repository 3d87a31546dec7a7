/* store.h -- SQLite persistence for users, API keys and deployments.
 *
 * One struct store wraps one sqlite3 connection; it is used by one thread at a
 * time (the server's service thread, or a CLI command). The database runs in
 * WAL mode with synchronous=FULL: when a write call returns 0 it is durable.
 * Schema changes are migrations keyed by PRAGMA user_version.
 *
 * Errors: 0 or a negative RR_E_* code (util/util.h); an optional struct err
 * receives the detail. Out-parameters are written only on success. */
#ifndef RR_STORE_H
#define RR_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "util/util.h"

struct store;

/* Permission bits carried by a key. */
#define STORE_PERM_CONTROL 0x1u   /* task.control: add, update, remove, run */
#define STORE_PERM_MONITOR 0x2u   /* task.monitor: list, status, runs, watch */
#define STORE_PERM_ORG_ADMIN 0x4u /* org.admin: key administration */
#define STORE_PERM_ALL (STORE_PERM_CONTROL | STORE_PERM_MONITOR)

#define STORE_USER_MAX 64         /* bytes of a user name */
#define STORE_LABEL_MAX 128       /* bytes of a key label */
#define STORE_KEY_ID_MAX 32       /* bytes of a key id, NUL included */
#define STORE_KEY_TEXT_MAX 80     /* bytes of a key's text, NUL included */

/* A key's metadata. The key text itself is never stored, only its keyed hash. */
struct store_key {
    char id[STORE_KEY_ID_MAX];          /* "k_" + 16 hex */
    char user[STORE_USER_MAX + 1];
    char label[STORE_LABEL_MAX + 1];
    unsigned perms;                     /* STORE_PERM_* bits */
    double created_at;                  /* Unix seconds */
    double expires_at;                  /* 0 = never */
    double revoked_at;                  /* 0 = not revoked */
};

/* Parse "task.control,task.monitor" (also "org.admin"; empty = none) into bits.
 * Returns 0 or RR_E_INVAL naming the unknown permission in e. */
int store_perms_parse(const char *text, unsigned *out, struct err *e);
/* Format bits as "task.control,task.monitor" into out (at least 64 bytes). */
void store_perms_format(unsigned perms, char *out, size_t outsz);

/* Open (creating if needed) and migrate the database at path. */
int store_open(const char *path, struct store **out, struct err *e) MUST_CHECK;
void store_close(struct store *s); /* NULL is fine */

/* Group many writes into one transaction (one fsync): until
 * store_batch_commit, every write call joins the batch (its own transaction
 * becomes a savepoint) and is durable only once the batch commits. Not
 * nestable: RR_E_BUSY inside a batch. store_batch_commit returns RR_E_IO if
 * the batch was lost to an earlier error, then nothing of it was kept. */
int store_batch_begin(struct store *s) MUST_CHECK;
int store_batch_commit(struct store *s) MUST_CHECK;

/* A batch for work that may only read: it starts as a deferred transaction,
 * which takes no write lock (and no lock at all until the first read).
 * Call store_batch_write before the first write: it ends the read part and
 * holds the write lock from then on, as store_batch_begin does. Reads done
 * before it are not repeated, so they may be older than the writes after;
 * a batch handling independent requests does not mind. Outside a read batch
 * store_batch_write does nothing. */
int store_batch_begin_read(struct store *s) MUST_CHECK;
int store_batch_write(struct store *s) MUST_CHECK;
/* Inside a batch begun by store_batch_begin_read that store_batch_write has
 * not made a write batch: nothing was written in it. */
bool store_batch_read_only(const struct store *s);

#ifdef RRDEPLOY_TEST_HOOKS
/* Test builds only: the next n batch commits fail as a full or broken disk
 * would make them (the batch is rolled back and RR_E_IO returned). */
void store_test_fail_commits(struct store *s, int n);
#endif

#define STORE_WAL_LIMIT (64 * 1024 * 1024) /* bytes of WAL, by default */

/* Keep the WAL small and checkpoints off this connection's commits: a thread
 * with its own connection makes a passive checkpoint about once a second --
 * at once when the WAL passes a quarter of wal_limit -- and truncates the WAL
 * file to zero once nothing was committed for a second; this connection's
 * automatic checkpoints are turned off. Should the WAL still pass wal_limit
 * bytes (the checkpointer behind a burst of writes), the commit that passed
 * it checkpoints and truncates it before returning: the file stays within
 * wal_limit plus one transaction. wal_limit <= 0 means STORE_WAL_LIMIT. For
 * long-lived processes (the server); stopped by store_close. */
int store_checkpointer_start(struct store *s, int64_t wal_limit, struct err *e);

/* Is the database usable: its file is still the one opened, at the same
 * path, and a read succeeds. 0, or RR_E_IO with the reason in e. */
int store_health(struct store *s, struct err *e);

/* PRAGMA data_version: changes whenever another connection (e.g. the
 * `rrdeploy keys` CLI) commits. Cheap; used to poll for revocations. */
int store_data_version(struct store *s, int64_t *out);

/* What this connection reads of one user's deployments and runs, named:
 * two snapshots of the same user compare equal only if nothing could have
 * changed that user's rows between them -- no commit by another connection
 * or process, no row of the user's written by this one (committed or not),
 * no rollback. Writes to other users' rows, or to keys, leave it as it is.
 * For keeping what was computed from the store (rendered replies) exactly
 * as long as it is still true. Take it before the reads it names. Inside a
 * batch the first call of the batch steps one statement (PRAGMA
 * data_version, which also opens the batch's read snapshot); later ones
 * cost no statement. */
struct store_snapshot {
    int64_t other;       /* PRAGMA data_version: other connections' commits */
    uint64_t rollbacks;  /* this connection's rollbacks */
    uint64_t any;        /* its changed rows no user could be read for */
    uint64_t user;       /* its changed rows of the user (or of a user whose
                            name shares the user's slot) */
};
int store_snapshot(struct store *s, const char *user,
                   struct store_snapshot *out /* OUT */) MUST_CHECK;
/* Equal snapshots of one user. */
bool store_snapshot_eq(const struct store_snapshot *a, const struct store_snapshot *b);
/* Whether a and b differ only in their user part: the changes since are
 * some user's own, so what was kept for other users still holds. */
bool store_snapshot_same_base(const struct store_snapshot *a,
                              const struct store_snapshot *b);

/* ---------------------------------------------------------------- keys */

/* Create a key for user (the user row is created if missing). key_text
 * receives "rrk_" + 64 hex, shown once; only its keyed hash is kept. label may
 * be NULL. expires_at 0 = never. */
int store_key_create(struct store *s, const char *user, const char *label,
                     unsigned perms, double expires_at, double now,
                     char key_text[STORE_KEY_TEXT_MAX] /* OUT */,
                     struct store_key *out /* OUT, may be NULL */) MUST_CHECK;

/* Authenticate a presented key: 0 and *out on success; RR_E_NOTFOUND (no such
 * key), RR_E_REVOKED or RR_E_EXPIRED (then *out is still filled). The
 * comparison is constant time. */
int store_key_auth(struct store *s, const char *key_text, double now,
                   struct store_key *out /* OUT */);

/* Look up a key by id. RR_E_NOTFOUND when absent. */
int store_key_get(struct store *s, const char *id, struct store_key *out /* OUT */);

/* Every key, ordered by created_at. cb returning non-zero stops the walk and
 * that value is returned. */
typedef int (*store_key_cb)(const struct store_key *k, void *ud);
int store_key_list(struct store *s, store_key_cb cb, void *ud);

/* Revoke by key id or by the key text itself. RR_E_NOTFOUND when no such key;
 * revoking twice keeps the first revoked_at and returns 0. */
int store_key_revoke(struct store *s, const char *id_or_key, double now,
                     struct store_key *out /* OUT, may be NULL */);

/* Number of keys in the database (0 on a fresh database). */
int store_key_count(struct store *s, int64_t *out);
/* Number of keys of user, revoked and expired ones included: whether the
 * name belongs to a local user of this server. */
int store_user_key_count(struct store *s, const char *user, int64_t *out);

/* Check a user name (1..STORE_USER_MAX bytes of [A-Za-z0-9._@-]) or a label
 * (NULL, or at most STORE_LABEL_MAX bytes without control characters) the way
 * store_key_create does: 0 or RR_E_INVAL with the reason in e. store_key_create
 * has no err parameter (it logs), so a CLI calls these first for its message. */
int store_user_validate(const char *user, struct err *e);
int store_label_validate(const char *label, struct err *e);

/* ---------------------------------------------------------------- deployments */

enum store_state { STORE_ACTIVE = 0, STORE_PAUSED, STORE_ERRORED };
const char *store_state_name(enum store_state st);
int store_state_parse(const char *s, enum store_state *out);

/* One deployment row. Strings and the credential are owned by the struct
 * (free with store_dep_clear) when filled by the store; when passed in they
 * are borrowed for the call. */
struct store_dep {
    char *user;          /* owner's user name; key part 1 */
    char *project_id;    /* key part 2 */
    char *pipeline;      /* compact JSON text, stored and returned verbatim */
    char *schedule;      /* as the user wrote it */
    enum store_state state;
    char *error;         /* why it is errored, or NULL */
    char *created_by;    /* user name that added it */
    char *owner_key_id;  /* key that added it */
    double created_at;
    double updated_at;
    double next_run_at;  /* 0 = none */
    double last_fire_at; /* last scheduled time decided (fired, skipped or
                          * missed); 0 = none. The scheduler resumes after it. */
    /* The owner's credential, sealed (util/vault.h): runs on an engine run
     * as the owner with it. NULL (or length 0) = none: runs use the
     * server's service credential. Written by store_dep_insert; every read
     * leaves it NULL but store_dep_pipeline's, the one a run needs: a walk
     * or a lookup that copied it around would hold it for no purpose. */
    unsigned char *credential;
    size_t credential_len;
};
void store_dep_clear(struct store_dep *d); /* frees owned strings, zeroes */

/* Insert a new deployment (its credential included) atomically: RR_E_EXISTS
 * if (user, project_id) is taken; RR_E_LIMIT if the user already has
 * max_per_user deployments.
 * (Additions: max_per_user <= 0 means no limit; a duplicate is RR_E_EXISTS even
 * when the user is also at the limit. user, project_id, pipeline and schedule
 * must be non-NULL, else RR_E_INVAL.) */
int store_dep_insert(struct store *s, const struct store_dep *d,
                     int64_t max_per_user) MUST_CHECK;
/* RR_E_NOTFOUND when absent. out->credential stays NULL. */
int store_dep_get(struct store *s, const char *user, const char *project_id,
                  struct store_dep *out /* OUT, clear with store_dep_clear */);
/* Overwrite every column of the row (user, project_id) but the credential,
 * which no read fills (store_dep_change sets it). RR_E_NOTFOUND. */
int store_dep_update(struct store *s, const struct store_dep *d) MUST_CHECK;
int store_dep_delete(struct store *s, const char *user, const char *project_id) MUST_CHECK;
/* Deployments of user (user NULL: of everyone). */
int store_dep_count(struct store *s, const char *user, int64_t *out);
/* A user's deployments ordered by project_id (user NULL: everyone's, ordered
 * by user then project_id), credential NULL. d is borrowed for the callback
 * only. cb returning non-zero stops the walk and that value is returned. */
typedef int (*store_dep_cb)(const struct store_dep *d, void *ud);
int store_dep_list(struct store *s, const char *user, store_dep_cb cb, void *ud);
/* Every deployment for the scheduler's start-up: in storage order (no sort,
 * no index walk), pipeline "" (not read), error and created_by NULL,
 * credential NULL. Same callback rules. */
int store_dep_scan(struct store *s, store_dep_cb cb, void *ud);
/* Deployments whose owner_key_id is key_id (e.g. to mark them errored when
 * that key is revoked), ordered by user then project_id, credential NULL.
 * Same callback rules. */
int store_dep_list_by_key(struct store *s, const char *key_id, store_dep_cb cb, void *ud);

/* What a run of a deployment needs, read in one statement: its pipeline
 * text (*pipeline: free()) and, when credential is not NULL, its sealed
 * credential (*credential: free(), NULL when it has none; *credential_len
 * its length, 0 when none). RR_E_NOTFOUND. */
int store_dep_pipeline(struct store *s, const char *user, const char *project_id,
                       char **pipeline /* OUT */,
                       unsigned char **credential /* OUT, may be NULL to skip */,
                       size_t *credential_len /* OUT, with credential */);

/* Record the scheduler's progress for one deployment without touching the
 * rest of the row. RR_E_NOTFOUND. */
int store_dep_set_progress(struct store *s, const char *user, const char *project_id,
                           double last_fire_at, double next_run_at) MUST_CHECK;

/* A deployment becomes errored: state errored, error = why, next_run_at none,
 * updated_at = now; the rest of the row is kept. One statement, no read
 * first. why is borrowed for the call (NULL: no reason). RR_E_NOTFOUND. */
int store_dep_set_errored(struct store *s, const char *user, const char *project_id,
                          const char *why, double now) MUST_CHECK;

/* Every deployment key_id owns that is not errored yet becomes errored (as
 * store_dep_set_errored), in one statement: revoking a key that owns
 * thousands of deployments costs one write. *count (may be NULL) gets how
 * many. */
int store_dep_error_by_key(struct store *s, const char *key_id, const char *why,
                           double now, int64_t *count /* OUT, may be NULL */) MUST_CHECK;

/* What an update changes; strings and the credential borrowed for the call. */
struct store_dep_change {
    const char *pipeline;       /* NULL = keep */
    const char *schedule;       /* NULL = keep */
    enum store_state state;
    double updated_at;
    double next_run_at;         /* 0 = none */
    bool set_credential;        /* false = keep the credential */
    const unsigned char *credential; /* with set_credential: the new sealed
                                      * credential; NULL (or length 0) clears it */
    size_t credential_len;
};
/* Change a deployment in one statement (no read first): pipeline and schedule
 * when given, the credential with set_credential, state, updated_at and
 * next_run_at always; error, last_fire_at and the rest of the row are kept.
 * RR_E_NOTFOUND; RR_E_INVAL when c is NULL or its state invalid. */
int store_dep_change(struct store *s, const char *user, const char *project_id,
                     const struct store_dep_change *c) MUST_CHECK;

/* ---------------------------------------------------------------- run ledger
 *
 * One row per tick decision (docs/runs.md §6). Rows belong to a deployment
 * (user, project_id) and are deleted with it. A scheduled time is decided at
 * most once: (user, project_id, scheduled_for) is unique among rows with
 * trigger "schedule", and the row is committed before the process starts. */

enum store_outcome {
    STORE_RUN_QUEUED = 0,
    STORE_RUN_RUNNING,
    STORE_RUN_SUCCEEDED,
    STORE_RUN_FAILED,
    STORE_RUN_TIMED_OUT,
    STORE_RUN_CANCELLED,
    STORE_RUN_INTERRUPTED,
    STORE_RUN_SKIPPED,
    STORE_RUN_MISSED,
};
const char *store_outcome_name(enum store_outcome o); /* "queued", ... */
int store_outcome_parse(const char *s, enum store_outcome *out);
bool store_outcome_final(enum store_outcome o); /* not queued/running */

struct store_run {
    int64_t id;               /* assigned by store_run_insert */
    char *user;
    char *project_id;
    char *trigger;            /* "schedule" | "manual" */
    double scheduled_for;     /* the tick's time; 0 for manual runs */
    double created_at;        /* when the decision was recorded */
    double started_at;        /* 0 = not started */
    double finished_at;       /* 0 = not finished */
    enum store_outcome outcome;
    char *reason;             /* NULL, or "overlap", "removed", ... */
    int exit_code;            /* -1 = none */
    int signal;               /* 0 = none */
    char *output;             /* output tail bytes (may hold NULs), NULL = none */
    size_t output_len;
    char *idempotency_key;    /* manual runs; NULL = none */
    int64_t missed_count;     /* missed rows: ticks not run; else 0 */
    double window_start;      /* missed rows: first and last tick missed */
    double window_end;
    int pid;                  /* running: the process group (its leader); 0 = none */
    uint64_t pid_start;       /* the leader's start time (clock ticks after boot) */
    char *task;               /* what the engine told about the run's task: a
                               * JSON object text, kept verbatim (the store
                               * checks nothing of it); NULL = none */
};
/* Rows the store fills own their strings (task included). */
void store_run_clear(struct store_run *r); /* frees owned strings, zeroes */
/* A deep copy of src into dst (clear it with store_run_clear). */
void store_run_copy(struct store_run *dst /* OUT */, const struct store_run *src);

/* Insert a decision (its task included), then prune the deployment's ledger
 * to its newest `keep` rows (keep <= 0: no pruning), in one transaction.
 * RR_E_EXISTS when a scheduled row for the same scheduled_for, or a row with
 * the same idempotency key, already exists for that deployment. *id_out
 * receives the new row id. */
int store_run_insert(struct store *s, const struct store_run *r, int64_t keep,
                     int64_t *id_out /* OUT */) MUST_CHECK;
/* Overwrite the mutable columns of row r->id: started_at, finished_at,
 * outcome, reason, exit_code, signal, output, pid, pid_start, task (NULL
 * clears it). RR_E_NOTFOUND. */
int store_run_update(struct store *s, const struct store_run *r) MUST_CHECK;

/* A queued run starts: outcome running, started_at = at, pid, pid_start
 * (0 = none), and task when not NULL (a JSON object text, borrowed for the
 * call; NULL keeps the row's); the rest of the row is kept. One statement,
 * no read first (only a refusal reads, to tell its two reasons apart). *out (may be NULL)
 * receives the row as it is after the change (owned: store_run_clear).
 * RR_E_NOTFOUND: no such run; RR_E_BUSY: the run is not queued (nothing
 * changes). A database that stays locked past the busy timeout is RR_E_IO
 * here, never RR_E_BUSY. */
int store_run_start(struct store *s, int64_t id, double at, int pid,
                    uint64_t pid_start, const char *task,
                    struct store_run *out /* OUT, may be NULL */) MUST_CHECK;

/* How a run ended. Strings borrowed for the call. */
struct store_run_end {
    enum store_outcome outcome; /* a final outcome */
    double at;                  /* finished_at; also started_at when the row has
                                 * none and started is true */
    bool started;               /* a process (or task) really ran */
    const char *reason;         /* NULL = none (replaces the row's reason) */
    int exit_code;              /* -1 = none */
    int signal;                 /* 0 = none */
    const char *output;         /* output tail, may hold NULs; NULL or
                                 * output_len 0 = none */
    size_t output_len;
    const char *task;           /* what the engine told about the task, a
                                 * JSON object text; NULL = keep the row's */
};
/* A queued or running run ends: outcome, finished_at, reason, exit_code,
 * signal and output become end's, and task when end's is not NULL;
 * started_at is kept when the row has one; pid, pid_start and the rest of
 * the row are kept. One statement, no read first. RR_E_NOTFOUND: no such
 * run; RR_E_BUSY: it already has a final outcome (the first decision wins,
 * nothing changes); RR_E_INVAL: end is NULL or its outcome is not final. *out (may be NULL) receives the row after the
 * change (owned: store_run_clear). Locking as for store_run_start. */
int store_run_finish(struct store *s, int64_t id, const struct store_run_end *end,
                     struct store_run *out /* OUT, may be NULL */) MUST_CHECK;

/* Drop a deployment's finished rows beyond its newest `keep` (what
 * store_run_insert does with keep > 0), for callers that insert with keep 0
 * on a hot path and prune later. */
int store_run_prune(struct store *s, const char *user, const char *project_id,
                    int64_t keep);
int store_run_get(struct store *s, int64_t id, struct store_run *out /* OUT */);
/* The row of a deployment with idempotency key `key`. RR_E_NOTFOUND. */
int store_run_find_idem(struct store *s, const char *user, const char *project_id,
                        const char *key, struct store_run *out /* OUT */);
/* The newest row of a deployment. RR_E_NOTFOUND when it has none. */
int store_run_last(struct store *s, const char *user, const char *project_id,
                   struct store_run *out /* OUT */);
/* A deployment's rows, newest first, at most limit (<= 0: all). Same
 * callback rules as store_dep_list. */
typedef int (*store_run_cb)(const struct store_run *r, void *ud);
int store_run_list(struct store *s, const char *user, const char *project_id,
                   int64_t limit, store_run_cb cb, void *ud);
/* A deployment and its newest run (NULL when it has none), as status and
 * list show them: both borrowed from their statements until cb returns,
 * the run without its output (NULL). cb must not write. */
typedef int (*store_view_cb)(const struct store_dep *d, const struct store_run *last,
                             void *ud);
/* Deployment (user, project_id): RR_E_NOTFOUND without calling cb, or cb's
 * result. */
int store_dep_view(struct store *s, const char *user, const char *project_id,
                   store_view_cb cb, void *ud);
/* Every deployment of user, ordered by project_id; a non-zero result of cb
 * stops the walk and is returned. */
int store_dep_list_view(struct store *s, const char *user, store_view_cb cb, void *ud);
/* Every row still queued or running, oldest first. Same callback rules. */
int store_run_list_live(struct store *s, store_run_cb cb, void *ud);
/* Every row still running becomes interrupted with `reason` and
 * finished_at = now (after a crash or at shutdown). Queued rows -- decided,
 * never started -- are left to the scheduler. *count gets how many. */
int store_run_interrupt_running(struct store *s, double now, const char *reason,
                                int64_t *count /* OUT, may be NULL */) MUST_CHECK;
/* A queued run that will not start: outcome missed, one scheduled time not
 * run (missed_count 1, the window its scheduled time), finished_at = at.
 * RR_E_NOTFOUND: no such run; RR_E_BUSY: it is not queued. */
int store_run_miss(struct store *s, int64_t id, double at, const char *reason) MUST_CHECK;
/* The latest scheduled time a deployment's ledger has decided (0 when
 * none), whatever its outcome: the ledger, not the deployment's progress
 * columns, is what says a time was decided. */
int store_run_last_scheduled(struct store *s, const char *user,
                             const char *project_id, double *out /* OUT */);

#endif
