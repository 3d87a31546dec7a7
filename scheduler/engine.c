/* engine.c -- tick decisions: when each deployment fires and what a fire
 * does; and every change of a deployment, so that the store and the
 * engine's index never disagree.
 *
 * Design: every deployment of the store sits in a hash index by (user,
 * project_id); the active, non-manual ones also sit in a binary min-heap
 * keyed by their next fire instant (ties broken by insertion sequence).
 * Adds, updates, removals and owner checks (sched_add, sched_update,
 * sched_remove, sched_keys_changed) write the store and update the index in
 * one call. The daemon arms one timer for sched_next_deadline() and calls
 * sched_tick(now) when it expires; the engine pops every due deployment and
 * decides: errored owner -> `errored`; previous run still going -> `skipped`
 * (overlap); otherwise a ledger row is committed and only then the run is
 * handed to the executor. Every decision advances the deployment's
 * last_fire_at, persisted, and the next fire is always computed strictly
 * after both now and last_fire_at: a wall clock stepped back can never fire a
 * scheduled time twice, and several ticks due at once (clock stepped
 * forward, stalled host) fire once, the earlier ones recorded as one
 * `missed` row -- never a burst. A restart records ticks that fell due while
 * the server was down the same way, and runs that were in progress become
 * `interrupted` (docs/runs.md).
 *
 * Bursts: a table counts the deployments of the heap due at each second, and
 * the engine keeps a running estimate of what one decision costs (commits
 * included). A second whose deployments -- with all those due before it --
 * would take longer to decide than the lead is decided that much earlier
 * (bounded by SCHED_TICK_LEAD_MAX), so the runs of 100,000 deployments due
 * together are held, committed, when their second comes.
 *
 * Memory: per deployment one struct sched_dep (names in one allocation); a
 * parsed schedule is shared by every deployment with the same text (a
 * million deployments hold a few thousand distinct schedules), so start-up
 * parses each text once; pipelines and sealed credentials stay in the
 * database until a run needs them.
 * Thread: the service thread only; no sockets, no locks. */
#include "scheduler/scheduler.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HEAP_NONE SIZE_MAX
#define DUE_EMPTY INT64_MIN       /* a free slot of the due table */
/* The least a decision is believed to cost, commits included: a 100,000
 * burst with full ledgers (100 rows each) took 98 us a decision on a 2-core
 * machine, with fresh ledgers 25 us. The estimate starts there, follows
 * what large ticks measure (a slower disk or machine), and never goes below
 * it: ledgers fill over days, and a burst must not be late the first time
 * they are full. The
 * smallest tick that teaches it anything (a tick of a few decisions is
 * mostly its commit), and how many decisions make one sample. */
#define DECISION_COST_S 100e-6
#define COST_SAMPLE_TICK 100
#define COST_SAMPLE_N 1000
/* Headroom on the estimate: chunks, requests served between them, noise. */
#define BURST_SAFETY 1.5
#define BURST_SLACK_S 0.25

/* A parsed schedule, shared by every deployment whose schedule has the same
 * text (the engine's default zone is fixed, so the text decides the parse). */
struct sched_cx {
    struct sched_cx *next;        /* hash chain */
    uint64_t hash;
    uint32_t refs;                /* deployments holding it */
    bool shared;                  /* in the table; else one deployment's own */
    struct cronx *cx;             /* owned */
    char text[];                  /* the schedule as written */
};

struct due_slot {
    int64_t at;                   /* DUE_EMPTY: free */
    uint32_t n;                   /* deployments due at that second */
};

struct sched_dep {
    struct sched_dep *hnext;  /* hash chain */
    uint64_t hash;
    char *user;               /* owned: "user\0project_id\0owner\0" */
    char *project_id;         /* into user's allocation */
    char *owner_key_id;       /* into user's allocation */
    struct sched_cx *sc;      /* a reference (cx_put); NULL: not parsed */
    enum store_state state;
    bool prune;               /* in the prune queue */
    int64_t next_at;          /* CRONX_NEVER when not in the heap */
    uint64_t seq;             /* heap tie-break */
    size_t heap_pos;          /* HEAP_NONE when not in the heap */
    int64_t last_fire;        /* last scheduled time decided; 0 none */
    int64_t run_id;           /* run queued or running; 0 none */
};

/* A run decided inside a tick batch, handed to the executor only once the
 * batch (and so its ledger row) is committed. */
struct held_event {
    struct sched_event ev;           /* its pointers are set when sent */
    char *user, *project_id, *error; /* owned */
    struct store_run run;            /* owned copy, when has_run */
    bool has_run;
};

struct pending {
    struct sched_dep *dep;        /* borrowed: a removed dep drops its entries */
    int64_t run_id;
    int64_t release_at;           /* scheduled time; 0 = at once (manual) */
    const char *trigger;          /* static string */
    char when[32];
    char *pipeline;               /* owned */
    unsigned char *credential;    /* owned, sealed; NULL = none */
    size_t credential_len;
};

struct sched {
    struct store *store;          /* borrowed */
    struct sched_config cfg;      /* strings borrowed for the engine's life */
    struct sched_exec exec;
    struct sched_dep **buckets;   /* owned array; deps owned through it */
    size_t nbuckets, ndeps;
    struct sched_dep **heap;      /* owned array of borrowed pointers */
    size_t heap_n, heap_cap;
    uint64_t seq;
    struct sched_stats stats;
    bool in_tick;                 /* decisions are batched; runs wait in pending */
    bool loading;                 /* sched_load into an empty index: no lookups,
                                   * and the heap is built once, at the end */
    bool more;                    /* the last tick stopped at its max: work is due */
    bool deferring;               /* the caller's batch is open: runs wait too */
    /* Within one tick a key cannot change: the last owner key looked up and
     * its row (found or not) serve every deployment it owns. */
    bool owner_memo;
    int owner_memo_rc;
    struct store_key owner_memo_key;
    struct pending *pending;      /* owned array */
    size_t npending, cap_pending;
    struct sched_dep **touched;   /* owned array: deps decided in this tick */
    size_t ntouched, cap_touched;
    /* Deployments whose ledgers grew since they were last pruned
     * (sched_prune works through them between ticks). */
    struct sched_dep **prune_q;   /* owned array of borrowed pointers */
    size_t nprune, cap_prune;
    /* Deployments added, updated or removed while deferring, as "user\0id"
     * (owned): if the batch fails they are read back from the store. */
    char **changed;
    size_t nchanged, cap_changed;
    /* Events raised while deferring: sent by sched_defer_end if the batch
     * commits, dropped if it does not (watchers never hear of it). */
    struct held_event *events;
    size_t nevents, cap_events;
    bool quiet;                   /* resyncing after a failed batch: no events */
    /* Runs decided ahead of their scheduled time (sched_tick's lead),
     * committed and waiting for it. Few: at most one per deployment. */
    struct pending *held;         /* owned array */
    size_t nheld, cap_held;
    int64_t held_min;             /* no held run is due before this */
    /* Bursts: deployments of the heap due at each second (open addressing,
     * linear probing; few slots: one per distinct second). */
    struct due_slot *due;         /* owned array of due_cap slots */
    size_t due_cap, due_used;
    double cost;                  /* seconds one decision takes, estimated */
    double cost_min;              /* ... never less than this */
    double cost_time;             /* measured since the estimate last moved */
    uint64_t cost_n;
    int64_t decided_to;           /* the last full tick decided all it could
                                   * of the seconds up to this one */
    int64_t chunk_to;             /* a tick cut into chunks works up to here */
    struct sched_cx **cx_buckets; /* owned array; entries owned through it */
    size_t cx_nbuckets, cx_n;
};

/* ---------------------------------------------------------------- helpers */

static uint64_t hash_key(const char *user, const char *project_id)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (const char *p = user; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    h = (h ^ 0xffu) * 1099511628211ull;
    for (const char *p = project_id; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    return h;
}

static void iso_utc(int64_t t, char out[32])
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (!gmtime_r(&tt, &tm)) {
        snprintf(out, 32, "%lld", (long long)t);
        return;
    }
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* ---------------------------------------------------------------- schedules */

static uint64_t hash_text(const char *text)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (const char *p = text; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    return h;
}

static const struct cronx *dep_cx(const struct sched_dep *d)
{
    return d->sc ? d->sc->cx : NULL;
}

static void cx_grow(struct sched *s)
{
    size_t n = s->cx_nbuckets ? s->cx_nbuckets * 2 : 64;
    struct sched_cx **b = xcalloc(n, sizeof *b);
    for (size_t i = 0; i < s->cx_nbuckets; i++) {
        struct sched_cx *c = s->cx_buckets[i];
        while (c) {
            struct sched_cx *next = c->next;
            c->next = b[c->hash & (n - 1)];
            b[c->hash & (n - 1)] = c;
            c = next;
        }
    }
    free(s->cx_buckets);
    s->cx_buckets = b;
    s->cx_nbuckets = n;
}

/* A reference to the parsed form of schedule `text` for deployment (user,
 * project_id): the shared one when another deployment has the same text
 * (cx, when given, is then freed), else cx or -- cx NULL -- text parsed
 * now. Only a text without H items is shared: H is drawn from each
 * deployment's identity, so such a parse is the deployment's own. A text
 * is parsed plainly first (which refuses H), so each shared text is parsed
 * once. cx is taken in every case. NULL when the text does not parse (e
 * holds why). */
static struct sched_cx *cx_get(struct sched *s, const char *text, const char *user,
                               const char *project_id, struct cronx *cx, struct err *e)
{
    uint64_t h = hash_text(text);
    if (s->cx_nbuckets) {
        for (struct sched_cx *c = s->cx_buckets[h & (s->cx_nbuckets - 1)]; c;
             c = c->next) {
            if (c->hash == h && strcmp(c->text, text) == 0) {
                cronx_free(cx);
                c->refs++;
                return c;
            }
        }
    }
    struct cronx *plain = NULL;
    bool shared = cronx_parse(text, s->cfg.default_zone, &plain, NULL) == 0;
    if (shared) {
        cronx_free(cx);
        cx = plain;
    } else if (!cx && sched_parse(s, text, user, project_id, NULL, 0, &cx, e) != 0) {
        return NULL;
    }
    size_t len = shared ? strlen(text) : 0;
    struct sched_cx *c = xcalloc(1, sizeof *c + len + 1);
    c->hash = h;
    c->refs = 1;
    c->cx = cx;
    if (!shared)
        return c;
    memcpy(c->text, text, len + 1);
    c->shared = true;
    if (s->cx_n >= s->cx_nbuckets)
        cx_grow(s);
    c->next = s->cx_buckets[h & (s->cx_nbuckets - 1)];
    s->cx_buckets[h & (s->cx_nbuckets - 1)] = c;
    s->cx_n++;
    return c;
}

/* Drop a reference; the last one frees the parsed schedule. NULL is fine. */
static void cx_put(struct sched *s, struct sched_cx *c)
{
    if (!c || --c->refs > 0)
        return;
    if (c->shared) {
        struct sched_cx **pp = &s->cx_buckets[c->hash & (s->cx_nbuckets - 1)];
        while (*pp != c)
            pp = &(*pp)->next;
        *pp = c->next;
        s->cx_n--;
    }
    cronx_free(c->cx);
    free(c);
}

/* ---------------------------------------------------------------- bursts */

static size_t due_slot_of(const struct sched *s, int64_t at)
{
    uint64_t h = (uint64_t)at * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 20) & (s->due_cap - 1);
}

/* How many deployments of the heap are due at second `at`. */
static uint32_t due_count(const struct sched *s, int64_t at)
{
    if (!s->due_used)
        return 0;
    for (size_t i = due_slot_of(s, at);; i = (i + 1) & (s->due_cap - 1)) {
        if (s->due[i].at == at)
            return s->due[i].n;
        if (s->due[i].at == DUE_EMPTY)
            return 0;
    }
}

static void due_grow(struct sched *s)
{
    struct due_slot *old = s->due;
    size_t ocap = s->due_cap;
    s->due_cap = ocap ? ocap * 2 : 256;
    s->due = xmalloc(s->due_cap * sizeof *s->due);
    for (size_t i = 0; i < s->due_cap; i++)
        s->due[i].at = DUE_EMPTY;
    for (size_t i = 0; i < ocap; i++) {
        if (old[i].at == DUE_EMPTY)
            continue;
        size_t j = due_slot_of(s, old[i].at);
        while (s->due[j].at != DUE_EMPTY)
            j = (j + 1) & (s->due_cap - 1);
        s->due[j] = old[i];
    }
    free(old);
}

/* Free slot i, moving later slots of its probe run back so that no lookup
 * stops early (deletion without tombstones). */
static void due_free_slot(struct sched *s, size_t i)
{
    size_t mask = s->due_cap - 1;
    for (size_t j = (i + 1) & mask; s->due[j].at != DUE_EMPTY; j = (j + 1) & mask) {
        size_t home = due_slot_of(s, s->due[j].at);
        /* j's entry may move to i if its home is not within (i, j]. */
        if (((j - home) & mask) >= ((j - i) & mask)) {
            s->due[i] = s->due[j];
            i = j;
        }
    }
    s->due[i].at = DUE_EMPTY;
    s->due_used--;
}

/* One more (delta 1) or one fewer (-1) deployment due at `at`. */
static void due_add(struct sched *s, int64_t at, int delta)
{
    if (delta > 0 && 2 * (s->due_used + 1) > s->due_cap)
        due_grow(s);
    if (!s->due_cap)
        return;
    size_t i = due_slot_of(s, at);
    while (s->due[i].at != at && s->due[i].at != DUE_EMPTY)
        i = (i + 1) & (s->due_cap - 1);
    if (s->due[i].at == DUE_EMPTY) {
        if (delta < 0)
            return; /* not counted: cannot happen */
        s->due[i] = (struct due_slot){at, 0};
        s->due_used++;
    }
    if (delta > 0) {
        s->due[i].n++;
    } else if (--s->due[i].n == 0) {
        due_free_slot(s, i);
    }
}

/* Seconds it takes to decide n deployments, with headroom, at most
 * SCHED_TICK_LEAD_MAX. */
static double burst_lead(const struct sched *s, uint64_t n)
{
    double lead = BURST_SLACK_S + BURST_SAFETY * (double)n * s->cost;
    return lead < SCHED_TICK_LEAD_MAX ? lead : SCHED_TICK_LEAD_MAX;
}

/* The latest second a tick at `now` decides: those within `lead`, and any
 * later second (up to SCHED_TICK_LEAD_MAX ahead) that the deployments due up
 * to it would not be decided in time for if the tick waited. */
static int64_t tick_horizon(const struct sched *s, double now, double lead)
{
    int64_t ahead = (int64_t)floor(now + lead);
    if (lead <= 0 || !s->heap_n)
        return ahead;
    int64_t t0 = (int64_t)floor(now);
    int64_t from = s->heap[0]->next_at > t0 - 60 ? s->heap[0]->next_at : t0 - 60;
    int64_t until = (int64_t)floor(now + SCHED_TICK_LEAD_MAX);
    uint64_t cum = 0;
    for (int64_t t = from; t <= until; t++) {
        cum += due_count(s, t);
        if (t > ahead && cum && (double)t - burst_lead(s, cum) <= now)
            ahead = t;
    }
    return ahead;
}

/* The earliest time a burst not yet decided needs its tick: `now` when that
 * is late already, 0 when no second near `top` needs more than `lead`. */
static double burst_wake(const struct sched *s, int64_t top, double now, double lead)
{
    int64_t from = top > s->decided_to ? top : s->decided_to + 1;
    double wake = 0;
    uint64_t cum = 0;
    for (int64_t t = from; t <= top + (int64_t)SCHED_TICK_LEAD_MAX; t++) {
        cum += due_count(s, t);
        double need = cum ? burst_lead(s, cum) : 0;
        if (need <= lead)
            continue;
        double w = (double)t - need > now ? (double)t - need : now;
        if (wake == 0 || w < wake)
            wake = w;
    }
    return wake;
}

/* Learn what a decision costs from ticks large enough to tell. */
static void cost_sample(struct sched *s, int fired, double seconds)
{
    if (fired < COST_SAMPLE_TICK)
        return;
    s->cost_time += seconds;
    s->cost_n += (uint64_t)fired;
    if (s->cost_n < COST_SAMPLE_N)
        return;
    double c = 0.5 * s->cost + 0.5 * s->cost_time / (double)s->cost_n;
    s->cost = c > s->cost_min ? c : s->cost_min;
    s->cost_time = 0;
    s->cost_n = 0;
}

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---------------------------------------------------------------- heap */

static bool heap_less(const struct sched_dep *a, const struct sched_dep *b)
{
    return a->next_at < b->next_at || (a->next_at == b->next_at && a->seq < b->seq);
}

static void heap_place(struct sched *s, size_t i, struct sched_dep *d)
{
    s->heap[i] = d;
    d->heap_pos = i;
}

static void heap_up(struct sched *s, size_t i)
{
    struct sched_dep *d = s->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!heap_less(d, s->heap[parent]))
            break;
        heap_place(s, i, s->heap[parent]);
        i = parent;
    }
    heap_place(s, i, d);
}

static void heap_down(struct sched *s, size_t i)
{
    struct sched_dep *d = s->heap[i];
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const struct sched_dep *best = d;
        if (l < s->heap_n && heap_less(s->heap[l], best))
            m = l, best = s->heap[l];
        if (r < s->heap_n && heap_less(s->heap[r], best))
            m = r;
        if (m == i)
            break;
        heap_place(s, i, s->heap[m]);
        i = m;
    }
    heap_place(s, i, d);
}

static void heap_remove(struct sched *s, struct sched_dep *d)
{
    size_t i = d->heap_pos;
    if (i == HEAP_NONE)
        return;
    due_add(s, d->next_at, -1);
    d->heap_pos = HEAP_NONE;
    d->next_at = CRONX_NEVER;
    struct sched_dep *last = s->heap[--s->heap_n];
    if (i == s->heap_n)
        return;
    heap_place(s, i, last);
    heap_down(s, i);
    heap_up(s, last->heap_pos);
}

/* Put d in the heap at `at`, or take it out for CRONX_NEVER. */
static void heap_set(struct sched *s, struct sched_dep *d, int64_t at)
{
    if (at == CRONX_NEVER) {
        heap_remove(s, d);
        return;
    }
    if (d->heap_pos != HEAP_NONE)
        due_add(s, d->next_at, -1);
    due_add(s, at, 1);
    d->next_at = at;
    d->seq = ++s->seq;
    if (d->heap_pos == HEAP_NONE) {
        if (s->heap_n == s->heap_cap) {
            s->heap_cap = s->heap_cap ? s->heap_cap * 2 : 64;
            s->heap = xrealloc(s->heap, s->heap_cap * sizeof *s->heap);
        }
        heap_place(s, s->heap_n++, d);
        if (!s->loading)
            heap_up(s, d->heap_pos);
    } else if (!s->loading) {
        heap_down(s, d->heap_pos);
        heap_up(s, d->heap_pos);
    }
}

/* Make the array a heap in one pass (Floyd): O(n), where n inserts cost
 * O(n log n). */
static void heap_build(struct sched *s)
{
    for (size_t i = s->heap_n / 2; i-- > 0;)
        heap_down(s, i);
}

/* ---------------------------------------------------------------- index */

static struct sched_dep *dep_find(const struct sched *s, const char *user,
                                  const char *project_id)
{
    uint64_t h = hash_key(user, project_id);
    for (struct sched_dep *d = s->buckets[h & (s->nbuckets - 1)]; d; d = d->hnext)
        if (d->hash == h && strcmp(d->user, user) == 0 &&
            strcmp(d->project_id, project_id) == 0)
            return d;
    return NULL;
}

static void index_grow(struct sched *s)
{
    size_t n = s->nbuckets * 2;
    struct sched_dep **b = xcalloc(n, sizeof *b);
    for (size_t i = 0; i < s->nbuckets; i++) {
        struct sched_dep *d = s->buckets[i];
        while (d) {
            struct sched_dep *next = d->hnext;
            d->hnext = b[d->hash & (n - 1)];
            b[d->hash & (n - 1)] = d;
            d = next;
        }
    }
    free(s->buckets);
    s->buckets = b;
    s->nbuckets = n;
}

/* Before a load: size the index for every deployment of the store at once,
 * rather than rehashing it a dozen times on the way to a million. */
static void index_reserve(struct sched *s)
{
    int64_t n = 0;
    if (s->ndeps || store_dep_count(s->store, NULL, &n) != 0)
        return;
    size_t want = s->nbuckets;
    while ((int64_t)want < n)
        want *= 2;
    if (want == s->nbuckets)
        return;
    free(s->buckets);
    s->buckets = xcalloc(want, sizeof *s->buckets);
    s->nbuckets = want;
}

static struct sched_dep *dep_new(struct sched *s, const char *user,
                                 const char *project_id, const char *owner)
{
    if (s->ndeps >= s->nbuckets)
        index_grow(s);
    size_t lu = strlen(user), lp = strlen(project_id);
    size_t lo = owner ? strlen(owner) : 0;
    struct sched_dep *d = xcalloc(1, sizeof *d);
    d->user = xmalloc(lu + lp + lo + 3);
    memcpy(d->user, user, lu + 1);
    d->project_id = d->user + lu + 1;
    memcpy(d->project_id, project_id, lp + 1);
    d->owner_key_id = d->project_id + lp + 1;
    memcpy(d->owner_key_id, owner ? owner : "", lo + 1);
    d->hash = hash_key(user, project_id);
    d->heap_pos = HEAP_NONE;
    d->next_at = CRONX_NEVER;
    size_t b = d->hash & (s->nbuckets - 1);
    d->hnext = s->buckets[b];
    s->buckets[b] = d;
    s->ndeps++;
    return d;
}

static void dep_delete(struct sched *s, struct sched_dep *d)
{
    heap_remove(s, d);
    for (size_t i = 0; d->prune && i < s->nprune; i++) {
        if (s->prune_q[i] == d) {
            s->prune_q[i] = s->prune_q[--s->nprune];
            break;
        }
    }
    struct sched_dep **pp = &s->buckets[d->hash & (s->nbuckets - 1)];
    while (*pp != d)
        pp = &(*pp)->hnext;
    *pp = d->hnext;
    s->ndeps--;
    cx_put(s, d->sc);
    free(d->user);
    free(d);
}

/* ---------------------------------------------------------------- events */

/* Tell watchers what happened. Inside a batch -- a tick, or the caller's
 * deferred pass -- the event waits for the commit (sched_tick,
 * sched_defer_end): watchers never hear of a change that was rolled back.
 * ev and what it points to are borrowed for the call. */
static void emit(struct sched *s, const struct sched_event *ev)
{
    if (!s->cfg.emit || s->quiet)
        return;
    if (!s->in_tick && !s->deferring) {
        s->cfg.emit(s->cfg.emit_ud, ev);
        return;
    }
    if (s->nevents == s->cap_events) {
        s->cap_events = s->cap_events ? s->cap_events * 2 : 16;
        s->events = xrealloc(s->events, s->cap_events * sizeof *s->events);
    }
    struct held_event *h = &s->events[s->nevents++];
    memset(h, 0, sizeof *h);
    h->ev = *ev;
    h->user = xstrdup(ev->user);
    h->project_id = xstrdup(ev->project_id);
    h->error = ev->error ? xstrdup(ev->error) : NULL;
    h->has_run = ev->run != NULL;
    if (ev->run)
        store_run_copy(&h->run, ev->run);
}

/* Send (send true) or drop the events held while in a batch. */
static void free_events(struct sched *s, bool send)
{
    for (size_t i = 0; i < s->nevents; i++) {
        struct held_event *h = &s->events[i];
        if (send) {
            h->ev.user = h->user;
            h->ev.project_id = h->project_id;
            h->ev.error = h->error;
            h->ev.run = h->has_run ? &h->run : NULL;
            s->cfg.emit(s->cfg.emit_ud, &h->ev);
        }
        free(h->user);
        free(h->project_id);
        free(h->error);
        store_run_clear(&h->run);
    }
    s->nevents = 0;
}

/* An event about a deployment's state. */
static void emit_state(struct sched *s, const struct sched_dep *d,
                       enum store_state st, const char *error, double at)
{
    struct sched_event ev = {.kind = SCHED_EV_STATE_CHANGED, .user = d->user,
                             .project_id = d->project_id, .at = at,
                             .state = st, .error = error};
    emit(s, &ev);
}

/* An event about a run (its ledger row). */
static void emit_run(struct sched *s, enum sched_event_kind kind,
                     const struct store_run *r, double at)
{
    struct sched_event ev = {.kind = kind, .user = r->user,
                             .project_id = r->project_id, .at = at, .run = r};
    emit(s, &ev);
}

/* ---------------------------------------------------------------- owners */

/* Why the owner's credential no longer allows runs, or NULL if it does.
 * k is the owner key's row (NULL: no such key). */
static const char *owner_verdict(const struct sched *s, const struct sched_dep *d,
                                 const struct store_key *k, double now,
                                 char *why, size_t whysz)
{
    if (strcmp(d->owner_key_id, SCHED_ENGINE_KEY_ID) == 0)
        return NULL; /* the engine decides, at the run (sched_run_report) */
    if (strcmp(d->owner_key_id, SCHED_DEV_KEY_ID) == 0) {
        if (s->cfg.dev_key_present)
            return NULL;
        snprintf(why, whysz, "owner key ROCKETRIDE_APIKEY is no longer configured");
        return why;
    }
    if (!k)
        snprintf(why, whysz, "owner key %s no longer exists", d->owner_key_id);
    else if (k->revoked_at != 0)
        snprintf(why, whysz, "owner key %s was revoked", d->owner_key_id);
    else if (k->expires_at != 0 && now >= k->expires_at)
        snprintf(why, whysz, "owner key %s expired", d->owner_key_id);
    else if (!(k->perms & STORE_PERM_CONTROL))
        snprintf(why, whysz, "owner key %s lacks task.control", d->owner_key_id);
    else
        return NULL;
    return why;
}

static const char *owner_problem(struct sched *s, const struct sched_dep *d,
                                 double now, char *why, size_t whysz)
{
    struct store_key k;
    int rc;
    if (s->in_tick && s->owner_memo &&
        strcmp(s->owner_memo_key.id, d->owner_key_id) == 0) {
        rc = s->owner_memo_rc;
        k = s->owner_memo_key;
    } else {
        rc = store_key_get(s->store, d->owner_key_id, &k);
        if (rc == RR_E_NOTFOUND) {
            memset(&k, 0, sizeof k);
            snprintf(k.id, sizeof k.id, "%s", d->owner_key_id);
        }
        if (s->in_tick && (rc == 0 || rc == RR_E_NOTFOUND)) {
            s->owner_memo = true;
            s->owner_memo_rc = rc;
            s->owner_memo_key = k;
        }
    }
    if (rc != 0 && rc != RR_E_NOTFOUND)
        return NULL; /* cannot tell now: do not error a deployment on an I/O hiccup */
    return owner_verdict(s, d, rc == 0 ? &k : NULL, now, why, whysz);
}

static void set_errored(struct sched *s, struct sched_dep *d, const char *why,
                        double now)
{
    if (store_dep_set_errored(s->store, d->user, d->project_id, why, now) != 0)
        return;
    d->state = STORE_ERRORED;
    heap_remove(s, d);
    s->stats.errored++;
    log_warn("deployment %s/%s errored: %s", d->user, d->project_id, why);
    emit_state(s, d, STORE_ERRORED, why, now);
}

/* ---------------------------------------------------------------- runs */

/* Rows kept per deployment when inserting: inside a tick nothing is pruned
 * (that waits until the tick's runs are handed over, see sched_tick). */
static int64_t ledger_keep(const struct sched *s)
{
    return s->in_tick ? 0 : s->cfg.keep_runs;
}

/* Free what a pending run owns (its pipeline and credential); p stays, empty. */
static void pending_clear(struct pending *p)
{
    free(p->pipeline);
    free(p->credential);
    p->pipeline = NULL;
    p->credential = NULL;
    p->credential_len = 0;
}

/* Hand a decided run to the executor; a refusal is recorded as the run's
 * failure. Takes p->pipeline and p->credential. */
static void submit(struct sched *s, struct pending *p, double now)
{
    struct sched_job job = {
        .run_id = p->run_id,
        .user = p->dep->user,
        .project_id = p->dep->project_id,
        .trigger = p->trigger,
        .scheduled_at = p->when,
        .pipeline = p->pipeline,
        .pipeline_len = strlen(p->pipeline),
        .credential = p->credential,
        .credential_len = p->credential_len,
    };
    s->stats.runs_started++;
    int rc = s->exec.submit ? s->exec.submit(s->exec.ud, &job) : RR_E_INVAL;
    pending_clear(p);
    if (rc == 0)
        return;
    log_error("run %lld of %s/%s: the executor refused it: %s",
              (long long)p->run_id, p->dep->user, p->dep->project_id, err_str(rc));
    struct store_run_end end = {.outcome = STORE_RUN_FAILED, .at = now,
                                .reason = "executor refused the run",
                                .exit_code = -1};
    rc = store_run_finish(s->store, p->run_id, &end, NULL);
    if (rc && rc != RR_E_NOTFOUND)
        log_error("run %lld: cannot record its failure", (long long)p->run_id);
    if (p->dep->run_id == p->run_id)
        p->dep->run_id = 0;
}

/* Record a queued row and hand the run to the executor -- at once, or, inside
 * a tick, after the tick's batch commits: a run never starts before its row
 * is durable. Returns 0 and fills *out (when not NULL), or a negative code:
 * RR_E_EXISTS when this scheduled time or idempotency key was decided. */
static int start_run(struct sched *s, struct sched_dep *d, const char *trigger,
                     int64_t scheduled_for, const char *idem, double now,
                     struct store_run *out)
{
    struct pending p = {.dep = d, .trigger = trigger, .release_at = scheduled_for};
    int rc = store_dep_pipeline(s->store, d->user, d->project_id, &p.pipeline,
                                &p.credential, &p.credential_len);
    if (rc)
        return rc;
    struct store_run r = {0};
    r.user = d->user;
    r.project_id = d->project_id;
    r.trigger = (char *)trigger;
    r.scheduled_for = (double)scheduled_for;
    r.created_at = now;
    r.outcome = STORE_RUN_QUEUED;
    r.exit_code = -1;
    r.idempotency_key = (char *)idem;
    rc = store_run_insert(s->store, &r, ledger_keep(s), &r.id);
    if (rc) {
        pending_clear(&p);
        return rc;
    }
    d->run_id = r.id;
    p.run_id = r.id;
    iso_utc(scheduled_for ? scheduled_for : (int64_t)floor(now), p.when);
    if (s->in_tick || s->deferring) {
        if (s->npending == s->cap_pending) {
            s->cap_pending = s->cap_pending ? s->cap_pending * 2 : 64;
            s->pending = xrealloc(s->pending, s->cap_pending * sizeof *s->pending);
        }
        s->pending[s->npending++] = p;
    } else {
        submit(s, &p, now);
    }
    if (out) /* read back: a refused submit has already failed the run */
        return store_run_get(s->store, r.id, out);
    return 0;
}

static void record_skip(struct sched *s, struct sched_dep *d, int64_t t,
                        enum store_outcome outcome, const char *reason,
                        int64_t count, int64_t from, double now)
{
    struct store_run r = {0};
    r.user = d->user;
    r.project_id = d->project_id;
    r.trigger = (char *)"schedule";
    r.scheduled_for = (double)t;
    r.created_at = now;
    r.finished_at = now;
    r.outcome = outcome;
    r.reason = (char *)reason;
    r.exit_code = -1;
    if (outcome == STORE_RUN_MISSED) {
        r.missed_count = count;
        r.window_start = (double)from;
        r.window_end = (double)t;
    }
    int rc = store_run_insert(s->store, &r, ledger_keep(s), &r.id);
    if (rc == RR_E_EXISTS)
        return; /* decided in an earlier life */
    if (rc) {
        log_error("deployment %s/%s: cannot record a %s tick: %s", d->user,
                  d->project_id, store_outcome_name(outcome), err_str(rc));
        return;
    }
    if (outcome == STORE_RUN_SKIPPED)
        s->stats.skipped_overlap++;
    else
        s->stats.missed += (uint64_t)count;
    /* r is the row as stored: no need to read it back */
    emit_run(s, outcome == STORE_RUN_SKIPPED ? SCHED_EV_TICK_SKIPPED
                                             : SCHED_EV_TICK_MISSED,
             &r, now);
}

static void persist_progress(struct sched *s, const struct sched_dep *d)
{
    if (store_dep_set_progress(s->store, d->user, d->project_id,
                               (double)d->last_fire,
                               d->next_at == CRONX_NEVER ? 0 : (double)d->next_at) != 0)
        log_error("deployment %s/%s: cannot persist scheduler progress",
                  d->user, d->project_id);
}

/* Advance last_fire and re-queue d at its next fire. Persisting that (and
 * pruning the ledger) waits, inside a tick, until the tick's runs are handed
 * over: neither is needed for exactly-once, which the ledger row's unique
 * scheduled time already guarantees. */
static void advance(struct sched *s, struct sched_dep *d, int64_t fired,
                    int64_t now)
{
    if (fired > d->last_fire)
        d->last_fire = fired;
    heap_set(s, d, sched_next_fire(dep_cx(d), d->state, d->last_fire, (double)now));
    if (!s->in_tick) {
        persist_progress(s, d);
        return;
    }
    if (s->ntouched == s->cap_touched) {
        s->cap_touched = s->cap_touched ? s->cap_touched * 2 : 64;
        s->touched = xrealloc(s->touched, s->cap_touched * sizeof *s->touched);
    }
    s->touched[s->ntouched++] = d;
}

static void record_lateness(struct sched_stats *st, double late)
{
    static const double bounds[] = SCHED_LATENESS_BOUNDS;
    size_t i = 0;
    while (i < SCHED_LATENESS_NBUCKETS && late > bounds[i])
        i++;
    st->lateness_bucket[i]++;
    st->lateness_sum += late;
    st->ticks++;
}

static void fire(struct sched *s, struct sched_dep *d, int64_t now, double now_f)
{
    /* Counted, not walked: a clock 30 days ahead costs what a minute does. */
    int64_t due = d->next_at, last, before_last;
    int64_t n = 1 + cronx_count(dep_cx(d), due + 1, now, &last, &before_last);
    int64_t latest = n > 1 ? last : due; /* due may be ahead (the lead) */
    int64_t prev = n > 2 ? before_last : due;
    if (n > 1) {
        /* Several ticks due at once: the latest fires, the others are one
         * missed row. Not a burst. */
        record_skip(s, d, prev, STORE_RUN_MISSED,
                    "clock jumped forward or the server was stalled", n - 1, due,
                    now_f);
    }
    if (latest <= now)
        record_lateness(&s->stats, now_f - (double)latest);

    char why[160];
    if (owner_problem(s, d, now_f, why, sizeof why)) {
        set_errored(s, d, why, now_f);
        return;
    }
    if (d->run_id) {
        record_skip(s, d, latest, STORE_RUN_SKIPPED, "overlap", 0, 0, now_f);
    } else {
        int rc = start_run(s, d, "schedule", latest, NULL, now_f, NULL);
        if (rc && rc != RR_E_EXISTS)
            log_error("deployment %s/%s: cannot start the run: %s", d->user,
                      d->project_id, err_str(rc));
    }
    advance(s, d, latest, now);
}

/* ---------------------------------------------------------------- public */

int64_t sched_next_fire(const struct cronx *cx, enum store_state st,
                        int64_t last_fire, double now)
{
    if (st != STORE_ACTIVE || !cx || cronx_is_manual(cx))
        return CRONX_NEVER;
    int64_t from = (int64_t)floor(now);
    return cronx_next(cx, from > last_fire ? from : last_fire);
}

uint32_t sched_seed(const char *user, const char *project_id)
{
    size_t nu = strlen(user), np = strlen(project_id);
    char *id = xmalloc(nu + 1 + np);
    memcpy(id, user, nu + 1); /* with its NUL: the separator */
    memcpy(id + nu + 1, project_id, np);
    uint32_t seed = cronx_seed(id, nu + 1 + np);
    free(id);
    return seed;
}

int sched_parse(const struct sched *s, const char *text, const char *user,
                const char *project_id, char *resolved, size_t resolved_cap,
                struct cronx **out, struct err *e)
{
    return cronx_parse_seeded(text, s->cfg.default_zone,
                              sched_seed(user, project_id), resolved,
                              resolved_cap, out, e);
}

void sched_config_defaults(struct sched_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->default_zone = "UTC";
    cfg->keep_runs = 100;
    cfg->starting_deadline_s = 60;
}

struct sched *sched_new(struct store *st, const struct sched_config *cfg,
                        const struct sched_exec *exec)
{
    struct sched *s = xcalloc(1, sizeof *s);
    s->store = st;
    s->cfg = *cfg;
    if (exec)
        s->exec = *exec;
    s->nbuckets = 1024;
    s->buckets = xcalloc(s->nbuckets, sizeof *s->buckets);
    s->cost_min = cfg->decision_cost_s > 0 ? cfg->decision_cost_s : DECISION_COST_S;
    s->cost = s->cost_min;
    return s;
}

void sched_free(struct sched *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nbuckets; i++) {
        struct sched_dep *d = s->buckets[i];
        while (d) {
            struct sched_dep *next = d->hnext;
            cx_put(s, d->sc);
            free(d->user);
            free(d);
            d = next;
        }
    }
    free(s->buckets);
    free(s->cx_buckets); /* empty: every deployment dropped its reference */
    free(s->heap);
    free(s->due);
    for (size_t i = 0; i < s->nheld; i++)
        pending_clear(&s->held[i]);
    free(s->held);
    free(s->pending);
    free(s->touched);
    free(s->prune_q);
    for (size_t i = 0; i < s->nchanged; i++)
        free(s->changed[i]);
    free(s->changed);
    free_events(s, false);
    free(s->events);
    free(s);
}

/* Create or refresh the in-memory state of a deployment from its row. cx is
 * row->schedule parsed (taken), or NULL to parse it here. A stored schedule
 * that no longer parses (a dialect tightened by an upgrade) keeps the
 * deployment indexed but never scheduled: it can still be shown, run by
 * hand, updated and removed. */
static struct sched_dep *dep_apply(struct sched *s, const struct store_dep *row,
                                   struct cronx *cx)
{
    struct err e = {0};
    struct sched_cx *sc = cx_get(s, row->schedule, row->user, row->project_id, cx, &e);
    if (!sc)
        log_error("deployment %s/%s: stored schedule '%s' no longer parses: %s",
                  row->user, row->project_id, row->schedule, e.msg);
    /* The owner never changes: update keeps it, remove and add make a new
     * deployment. A load sees each (user, project_id) once: no lookup. */
    struct sched_dep *d = s->loading ? NULL : dep_find(s, row->user, row->project_id);
    if (!d)
        d = dep_new(s, row->user, row->project_id, row->owner_key_id);
    cx_put(s, d->sc);
    d->sc = sc;
    d->state = row->state;
    d->last_fire = (int64_t)row->last_fire_at;
    return d;
}

/* While deferring, remember that (user, project_id) was changed. */
static void note_changed(struct sched *s, const char *user, const char *project_id)
{
    if (!s->deferring)
        return;
    if (s->nchanged == s->cap_changed) {
        s->cap_changed = s->cap_changed ? s->cap_changed * 2 : 16;
        s->changed = xrealloc(s->changed, s->cap_changed * sizeof *s->changed);
    }
    size_t nu = strlen(user), np = strlen(project_id);
    char *k = xmalloc(nu + np + 2);
    memcpy(k, user, nu + 1);
    memcpy(k + nu + 1, project_id, np + 1);
    s->changed[s->nchanged++] = k;
}

/* Index a deployment as its row now stands in the store (cx as for
 * dep_apply) and schedule it at row->next_run_at. */
static void index_put(struct sched *s, const struct store_dep *row,
                      struct cronx *cx)
{
    note_changed(s, row->user, row->project_id);
    struct sched_dep *d = dep_find(s, row->user, row->project_id);
    bool changed = d && d->state != row->state;
    d = dep_apply(s, row, cx);
    heap_set(s, d, d->sc && row->next_run_at > 0 ? (int64_t)row->next_run_at
                                                 : CRONX_NEVER);
    if (changed)
        emit_state(s, d, row->state, row->error, row->updated_at);
}

/* Forget a deployment the store no longer has: its run is stopped
 * (interrupted), a run decided ahead is dropped with it. */
static void index_drop(struct sched *s, const char *user, const char *project_id,
                       double now)
{
    note_changed(s, user, project_id);
    struct sched_dep *d = dep_find(s, user, project_id);
    if (!d)
        return;
    /* A run decided ahead and not started yet: forget it (its row went with
     * the deployment). */
    size_t keep = 0;
    for (size_t i = 0; i < s->nheld; i++) {
        if (s->held[i].dep == d) {
            if (d->run_id == s->held[i].run_id)
                d->run_id = 0;
            pending_clear(&s->held[i]);
        } else {
            s->held[keep++] = s->held[i];
        }
    }
    s->nheld = keep;
    if (d->run_id && s->exec.cancel)
        s->exec.cancel(s->exec.ud, d->run_id, STORE_RUN_INTERRUPTED);
    struct sched_event ev = {.kind = SCHED_EV_REMOVED, .user = user,
                             .project_id = project_id, .at = now};
    emit(s, &ev);
    dep_delete(s, d);
}

/* ---------------------------------------------------------------- changes */

int sched_lookup(const struct sched *s, const char *user, const char *project_id,
                 enum store_state *out)
{
    const struct sched_dep *d = dep_find(s, user, project_id);
    if (!d)
        return RR_E_NOTFOUND;
    *out = d->state;
    return 0;
}

static int64_t next_or_zero(const struct cronx *cx, enum store_state st,
                            int64_t last_fire, double now)
{
    int64_t t = sched_next_fire(cx, st, last_fire, now);
    return t == CRONX_NEVER ? 0 : t;
}

int sched_add(struct sched *s, struct store_dep *d, struct cronx *cx,
              int64_t max_per_user, double now, struct err *e)
{
    d->state = STORE_ACTIVE;
    d->error = NULL;
    d->created_at = d->updated_at = now;
    d->last_fire_at = 0;
    d->next_run_at = (double)next_or_zero(cx, d->state, 0, now);
    int rc = store_dep_insert(s->store, d, max_per_user);
    if (rc) {
        cronx_free(cx);
        if (rc == RR_E_EXISTS)
            return err_set(e, rc, "Deployment already exists: %s", d->project_id);
        if (rc == RR_E_LIMIT)
            return err_set(e, rc, "Deployment limit reached: at most %lld per user",
                           (long long)max_per_user);
        return err_set(e, rc, "Internal error: %s", err_str(rc));
    }
    index_put(s, d, cx);
    return 0;
}

int sched_update(struct sched *s, const char *user, const char *project_id,
                 struct sched_change *ch, double now, struct err *e)
{
    struct cronx *cx = ch->cx;
    ch->cx = NULL; /* taken */
    struct sched_dep *d = dep_find(s, user, project_id);
    if (!d) {
        cronx_free(cx);
        return err_set(e, RR_E_NOTFOUND, "Deployment not found: %s", project_id);
    }
    if (ch->set_state && d->state == STORE_ERRORED) {
        struct store_dep row;
        bool got = store_dep_get(s->store, user, project_id, &row) == 0;
        err_set(e, RR_E_BUSY,
                "Deployment '%s' is errored (%s): remove it and add it again",
                project_id, got && row.error ? row.error : "no reason recorded");
        if (got)
            store_dep_clear(&row);
        cronx_free(cx);
        return RR_E_BUSY;
    }
    enum store_state st = ch->set_state ? ch->state : d->state;
    struct store_dep_change c = {
        .pipeline = ch->pipeline,
        .schedule = ch->schedule,
        .state = st,
        .updated_at = now,
        .next_run_at = (double)next_or_zero(cx ? cx : dep_cx(d), st, d->last_fire, now),
        .set_credential = ch->set_credential,
        .credential = ch->credential,
        .credential_len = ch->credential_len,
    };
    int rc = store_dep_change(s->store, user, project_id, &c);
    if (rc) {
        cronx_free(cx);
        return err_set(e, rc, rc == RR_E_NOTFOUND ? "Deployment not found: %s"
                                                  : "Internal error: cannot update %s",
                       project_id);
    }
    note_changed(s, user, project_id);
    if (cx) {
        cx_put(s, d->sc);
        d->sc = cx_get(s, ch->schedule, user, project_id, cx, NULL);
    }
    heap_set(s, d, c.next_run_at > 0 ? (int64_t)c.next_run_at : CRONX_NEVER);
    if (st != d->state) {
        d->state = st;
        emit_state(s, d, st, NULL, now);
    }
    return 0;
}

int sched_remove(struct sched *s, const char *user, const char *project_id,
                 double now, struct err *e)
{
    int rc = store_dep_delete(s->store, user, project_id);
    if (rc == RR_E_NOTFOUND)
        return err_set(e, rc, "Deployment not found: %s", project_id);
    if (rc)
        return err_set(e, rc, "Internal error: %s", err_str(rc));
    index_drop(s, user, project_id, now);
    return 0;
}

struct load_ctx {
    struct sched *s;
    double now;
    int64_t loaded, missed;
};

/* Ticks seem to have fallen due while the server was down, from `next` on.
 * The deployment's progress columns are written after the ledger rows of a
 * tick, in a second commit, so a crash between the two leaves them behind:
 * the ledger is what says which scheduled times were decided. Returns the
 * first fire after the latest of them. */
static int64_t after_ledger(struct sched *s, struct sched_dep *d, int64_t next)
{
    double decided = 0;
    if (store_run_last_scheduled(s->store, d->user, d->project_id, &decided) != 0 ||
        (int64_t)decided < next)
        return next;
    d->last_fire = (int64_t)decided;
    return cronx_next(dep_cx(d), d->last_fire);
}

static int load_one(const struct store_dep *row, void *ud)
{
    struct load_ctx *lc = ud;
    struct sched *s = lc->s;
    struct sched_dep *d = dep_apply(s, row, NULL);
    lc->loaded++;
    int64_t now = (int64_t)floor(lc->now);
    int64_t next = row->next_run_at > 0 ? (int64_t)row->next_run_at
                                        : sched_next_fire(dep_cx(d), d->state,
                                                          d->last_fire, lc->now);
    if (d->state != STORE_ACTIVE || !d->sc || cronx_is_manual(dep_cx(d)))
        next = CRONX_NEVER;
    if (next != CRONX_NEVER && next <= d->last_fire)
        next = sched_next_fire(dep_cx(d), d->state, d->last_fire, lc->now);
    if (next != CRONX_NEVER && next <= now)
        next = after_ledger(s, d, next);
    if (next != CRONX_NEVER && next <= now) {
        int64_t latest;
        int64_t n = 1 + cronx_count(dep_cx(d), next + 1, now, &latest, NULL);
        int64_t last = n > 1 ? latest : next;
        record_skip(s, d, last, STORE_RUN_MISSED, "server was not running", n,
                    next, lc->now);
        lc->missed++;
        advance(s, d, last, now);
        return 0;
    }
    heap_set(s, d, next);
    if (row->next_run_at != (next == CRONX_NEVER ? 0 : (double)next) &&
        store_dep_set_progress(s->store, d->user, d->project_id, row->last_fire_at,
                               next == CRONX_NEVER ? 0 : (double)next) != 0)
        log_error("deployment %s/%s: cannot persist next_run_at", d->user,
                  d->project_id);
    return 0;
}

static void hold(struct sched *s, const struct pending *p)
{
    if (!s->nheld || p->release_at < s->held_min)
        s->held_min = p->release_at;
    if (s->nheld == s->cap_held) {
        s->cap_held = s->cap_held ? s->cap_held * 2 : 64;
        s->held = xrealloc(s->held, s->cap_held * sizeof *s->held);
    }
    s->held[s->nheld++] = *p;
}

/* A run the previous server decided and never started: held for its
 * second, queued behind the executor's limit, or not yet handed over. */
struct undone {
    int64_t id;
    char *user, *project_id;      /* owned */
    bool manual;
    double due;                   /* scheduled_for; created_at when manual */
};

struct live_ctx {
    struct sched *s;
    double now;
    struct undone *undone;        /* owned array */
    size_t n, cap;
    struct store_run *running;    /* owned copies of the running rows */
    size_t nrunning, caprunning;
    int64_t adopted;              /* running rows the executor went on with */
    int64_t interrupted;          /* ... and those it could not */
};

/* A running row: the executor adopts it (its run goes on: a task on an
 * engine outlives the server), or stops what is left of it, and the row
 * becomes interrupted. */
static void reclaim_running(struct live_ctx *lc, const struct store_run *r)
{
    struct sched *s = lc->s;
    struct sched_dep *d = dep_find(s, r->user, r->project_id);
    char *pipeline = NULL;
    unsigned char *cred = NULL;
    size_t cred_len = 0;
    bool adopted = false;
    if (s->exec.reclaim) {
        struct sched_job job = {.run_id = r->id, .user = r->user,
                                .project_id = r->project_id, .trigger = r->trigger};
        bool have = store_dep_pipeline(s->store, r->user, r->project_id, &pipeline,
                                       &cred, &cred_len) == 0;
        if (have) {
            job.pipeline = pipeline;
            job.pipeline_len = strlen(pipeline);
            job.credential = cred;
            job.credential_len = cred_len;
        }
        adopted = s->exec.reclaim(s->exec.ud, have ? &job : NULL, r);
    }
    free(pipeline);
    free(cred);
    if (adopted) {
        if (d)
            d->run_id = r->id;
        lc->adopted++;
        return;
    }
    struct store_run_end end = {.outcome = STORE_RUN_INTERRUPTED, .at = lc->now,
                                .reason = "server stopped while the run was in progress",
                                .exit_code = -1};
    if (store_run_finish(s->store, r->id, &end, NULL) == 0)
        lc->interrupted++;
}

/* Running rows: kept for reclaim_running; queued rows: for resume_undone
 * (both once the deployments are indexed). */
static int take_live(const struct store_run *r, void *ud)
{
    struct live_ctx *lc = ud;
    if (r->outcome == STORE_RUN_RUNNING) {
        if (lc->nrunning == lc->caprunning) {
            lc->caprunning = lc->caprunning ? lc->caprunning * 2 : 16;
            lc->running = xrealloc(lc->running, lc->caprunning * sizeof *lc->running);
        }
        store_run_copy(&lc->running[lc->nrunning++], r);
        return 0;
    }
    if (lc->n == lc->cap) {
        lc->cap = lc->cap ? lc->cap * 2 : 64;
        lc->undone = xrealloc(lc->undone, lc->cap * sizeof *lc->undone);
    }
    bool manual = strcmp(r->trigger, "manual") == 0;
    lc->undone[lc->n++] = (struct undone){
        .id = r->id, .user = xstrdup(r->user), .project_id = xstrdup(r->project_id),
        .manual = manual, .due = manual ? r->created_at : r->scheduled_for};
    return 0;
}

/* Start an undone run after all (held until its second, if that has not
 * come), or record it missed when it is more than the starting deadline
 * late. Its scheduled time counts as decided either way. */
static void resume_undone(struct sched *s, const struct undone *u, double now)
{
    struct sched_dep *d = dep_find(s, u->user, u->project_id);
    if (!d)
        return; /* the ledger goes with its deployment: cannot happen */
    if (!u->manual && (int64_t)u->due > d->last_fire) {
        d->last_fire = (int64_t)u->due;
        heap_set(s, d, sched_next_fire(dep_cx(d), d->state, d->last_fire, now));
        persist_progress(s, d);
    }
    double late = now - u->due;
    char why[160];
    struct pending p = {.dep = d, .run_id = u->id,
                        .trigger = u->manual ? "manual" : "schedule",
                        .release_at = u->manual ? 0 : (int64_t)u->due};
    if (late > s->cfg.starting_deadline_s)
        snprintf(why, sizeof why, "decided but not started before the server "
                 "stopped; %.0f s late at restart, past the %.0f s starting deadline",
                 late, s->cfg.starting_deadline_s);
    else if (d->run_id)
        snprintf(why, sizeof why, "decided but not started before the server "
                 "stopped; another run of the deployment came first");
    else if (store_dep_pipeline(s->store, d->user, d->project_id, &p.pipeline,
                                &p.credential, &p.credential_len) != 0)
        snprintf(why, sizeof why, "decided but not started before the server "
                 "stopped; its pipeline could not be read");
    if (!p.pipeline) {
        if (store_run_miss(s->store, u->id, now, why) != 0)
            log_error("run %lld: cannot record it missed", (long long)u->id);
        return;
    }
    d->run_id = u->id;
    iso_utc((int64_t)floor(u->due), p.when);
    hold(s, &p);
    log_info("run %lld of %s/%s: decided before the restart, not started: "
             "%s", (long long)u->id, d->user, d->project_id,
             late > 0 ? "starting it now" : "held for its time");
}

int sched_load(struct sched *s, double now)
{
    /* A run of the previous life may still be going: stop it, or it would
     * overlap the next run of its deployment. */
    struct live_ctx live = {.s = s, .now = now};
    int rc = store_run_list_live(s->store, take_live, &live);
    /* The missed rows and progress of every deployment, and what becomes of
     * the runs decided but not started: one transaction. */
    struct load_ctx lc = {s, now, 0, 0};
    if (rc == 0) {
        bool batch = store_batch_begin(s->store) == 0;
        index_reserve(s);
        s->loading = s->ndeps == 0; /* an empty index: each row is new */
        rc = store_dep_scan(s->store, load_one, &lc);
        s->loading = false;
        heap_build(s);
        for (size_t i = 0; rc == 0 && i < live.nrunning; i++)
            reclaim_running(&live, &live.running[i]);
        for (size_t i = 0; rc == 0 && i < live.n; i++)
            resume_undone(s, &live.undone[i], now);
        if (batch && store_batch_commit(s->store) != 0 && rc == 0)
            rc = RR_E_IO;
    }
    if (live.interrupted)
        log_warn("%lld run(s) were in progress when the server stopped: "
                 "recorded as interrupted", (long long)live.interrupted);
    if (live.adopted)
        log_info("%lld run(s) in progress when the server stopped go on",
                 (long long)live.adopted);
    for (size_t i = 0; i < live.nrunning; i++)
        store_run_clear(&live.running[i]);
    free(live.running);
    for (size_t i = 0; i < live.n; i++) {
        free(live.undone[i].user);
        free(live.undone[i].project_id);
    }
    free(live.undone);
    if (rc)
        return rc;
    log_info("scheduler: %lld deployment(s) loaded, %zu scheduled, %lld with "
             "missed ticks, %zu run(s) decided before the restart", (long long)lc.loaded,
             s->heap_n, (long long)lc.missed, live.n);
    sched_release(s, now); /* those whose time has come start now */
    return 0;
}

int64_t sched_next_deadline(const struct sched *s)
{
    return s->heap_n ? s->heap[0]->next_at : CRONX_NEVER;
}


/* A held run whose deployment was paused or errored before its time does
 * not start: its row says why. */
static void drop_held(struct sched *s, struct pending *p, double now,
                      const char *why)
{
    struct store_run_end end = {.outcome = STORE_RUN_CANCELLED, .at = now,
                                .reason = why, .exit_code = -1};
    int rc = store_run_finish(s->store, p->run_id, &end, NULL);
    if (rc && rc != RR_E_NOTFOUND)
        log_error("run %lld: cannot record that it did not start",
                  (long long)p->run_id);
    if (p->dep->run_id == p->run_id)
        p->dep->run_id = 0;
    pending_clear(p);
}

int sched_release(struct sched *s, double now)
{
    int64_t t = (int64_t)floor(now);
    int released = 0;
    size_t keep = 0;
    if (!s->nheld || s->held_min > t) /* a burst's runs are held for seconds */
        return 0;
    int64_t next_min = CRONX_NEVER;
    for (size_t i = 0; i < s->nheld; i++) {
        struct pending *p = &s->held[i];
        if (p->release_at > t) {
            if (next_min == CRONX_NEVER || p->release_at < next_min)
                next_min = p->release_at;
            s->held[keep++] = *p;
            continue;
        }
        if (p->dep->state == STORE_PAUSED)
            drop_held(s, p, now, "deployment paused before the run's time");
        else if (p->dep->state == STORE_ERRORED)
            drop_held(s, p, now, "deployment errored before the run's time");
        else {
            record_lateness(&s->stats, now - (double)p->release_at);
            submit(s, p, now);
            released++;
        }
    }
    s->nheld = keep;
    s->held_min = next_min;
    return released;
}

double sched_next_wake(const struct sched *s, double now, double lead)
{
    if (s->more)
        return now;
    double wake = 0;
    if (s->heap_n) {
        double top = (double)s->heap[0]->next_at;
        wake = top - lead > now ? top - lead : top;
        double burst = lead > 0 && wake > now
                           ? burst_wake(s, s->heap[0]->next_at, now, lead) : 0;
        if (burst > 0 && burst < wake)
            wake = burst;
    }
    double release = sched_next_release(s);
    if (release > 0 && (wake == 0 || release < wake))
        wake = release;
    return wake;
}

double sched_next_release(const struct sched *s)
{
    /* held_min may be early (a held run dropped with its deployment): that
     * costs one release that finds nothing, and sets it right. */
    return s->nheld ? (double)s->held_min : 0;
}

/* Queue d for sched_prune. */
static void prune_later(struct sched *s, struct sched_dep *d)
{
    if (d->prune)
        return;
    if (s->nprune == s->cap_prune) {
        s->cap_prune = s->cap_prune ? s->cap_prune * 2 : 64;
        s->prune_q = xrealloc(s->prune_q, s->cap_prune * sizeof *s->prune_q);
    }
    s->prune_q[s->nprune++] = d;
    d->prune = true;
}

/* The decisions of a tick are committed: send its events, hand over the
 * runs due now (or, inside the caller's batch, after its commit), hold those
 * decided ahead, and record each deployment's progress -- off the
 * latency-critical path, in a second transaction. Ledgers are pruned later,
 * between ticks (sched_prune): with full ledgers a prune deletes a row from
 * three b-trees, more than the decision itself costs. */
static void tick_committed(struct sched *s, int64_t t, double now, int fired)
{
    if (!s->deferring) /* else they wait for the caller's commit */
        free_events(s, true);
    size_t waiting = 0;
    for (size_t i = 0; i < s->npending; i++) {
        if (s->pending[i].release_at > t)
            hold(s, &s->pending[i]);
        else if (s->deferring) /* inside the caller's batch: after its commit */
            s->pending[waiting++] = s->pending[i];
        else
            submit(s, &s->pending[i], now);
    }
    s->npending = waiting;
    /* Off the latency-critical path: progress and ledger pruning of every
     * deployment decided, again in one transaction. */
    bool batch = store_batch_begin(s->store) == 0;
    for (size_t i = 0; i < s->ntouched; i++) {
        persist_progress(s, s->touched[i]);
        prune_later(s, s->touched[i]);
    }
    s->ntouched = 0;
    if (batch && store_batch_commit(s->store) != 0)
        log_error("scheduler: could not record the progress of %d tick(s)", fired);
}

int sched_tick(struct sched *s, double now, double lead, int max)
{
    int64_t t = (int64_t)floor(now);
    int64_t ahead = tick_horizon(s, now, lead > 0 ? lead : 0);
    /* A burst cut into chunks is worked through to the second it was begun
     * for, though what is left of it alone would need less lead. */
    if (s->more && s->chunk_to > ahead)
        ahead = s->chunk_to;
    s->more = false;
    if (!s->heap_n || s->heap[0]->next_at > ahead) {
        if (ahead > s->decided_to)
            s->decided_to = ahead;
        return 0;
    }
    double started = mono_now();
    /* One transaction for every decision of this wake-up: 10,000 ticks due
     * in the same second cost one fsync, not 40,000. */
    bool batch = store_batch_begin(s->store) == 0;
    s->in_tick = true;
    s->owner_memo = false;
    int fired = 0;
    /* Due now: decided as they stand. Due within the lead: decided ahead,
     * so that a burst's ledger rows are durable by the time it is due --
     * but only for deployments with nothing running, which could not
     * overlap; the others wait for their time. */
    struct sched_dep **later = NULL;
    size_t nlater = 0, cap_later = 0;
    while (s->heap_n && s->heap[0]->next_at <= ahead) {
        struct sched_dep *d = s->heap[0];
        if (d->next_at > t && d->run_id) {
            if (nlater == cap_later) {
                cap_later = cap_later ? cap_later * 2 : 16;
                later = xrealloc(later, cap_later * sizeof *later);
            }
            later[nlater++] = d;
            int64_t at = d->next_at;
            heap_remove(s, d);
            d->next_at = at;
            continue;
        }
        if (max > 0 && fired == max) {
            s->more = true; /* the rest in the next turn */
            s->chunk_to = ahead;
            break;
        }
        fire(s, d, t, now);
        fired++;
    }
    for (size_t i = 0; i < nlater; i++)
        heap_set(s, later[i], later[i]->next_at);
    free(later);
    s->in_tick = false;
    if (batch && store_batch_commit(s->store) != 0) {
        /* Nothing of this tick was kept: start none of its runs. */
        log_error("scheduler: could not commit the decisions of %d tick(s); "
                  "their runs are not started", fired);
        for (size_t i = 0; i < s->npending; i++) {
            if (s->pending[i].dep->run_id == s->pending[i].run_id)
                s->pending[i].dep->run_id = 0;
            pending_clear(&s->pending[i]);
        }
        s->npending = 0;
        s->ntouched = 0;
        if (!s->deferring)
            free_events(s, false);
        return fired;
    }
    tick_committed(s, t, now, fired);
    if (!s->more && ahead > s->decided_to)
        s->decided_to = ahead;
    cost_sample(s, fired, mono_now() - started);
    return fired;
}

size_t sched_prune(struct sched *s, double now, int max)
{
    /* Never in the way of a burst: not while one is worked through, nor
     * when a tick is due within the lead. */
    if (!s->nprune || s->more || s->in_tick || s->deferring ||
        sched_next_wake(s, now, SCHED_TICK_LEAD) < now + SCHED_TICK_LEAD)
        return s->nprune;
    bool batch = store_batch_begin(s->store) == 0;
    for (int n = 0; s->nprune && (max <= 0 || n < max); n++) {
        struct sched_dep *d = s->prune_q[--s->nprune];
        d->prune = false;
        if (store_run_prune(s->store, d->user, d->project_id, s->cfg.keep_runs) != 0)
            log_error("deployment %s/%s: cannot prune its ledger", d->user,
                      d->project_id);
    }
    if (batch && store_batch_commit(s->store) != 0)
        log_error("scheduler: could not prune the ledgers of a batch of "
                  "deployments");
    return s->nprune;
}

size_t sched_prune_waiting(const struct sched *s)
{
    return s->nprune;
}

void sched_defer_begin(struct sched *s)
{
    s->deferring = true;
}

/* The batch that changed (user, project_id) was rolled back: make the
 * engine agree with the store again. */
static void resync(struct sched *s, const char *user, const char *project_id,
                   double now)
{
    struct store_dep row;
    int rc = store_dep_get(s->store, user, project_id, &row);
    if (rc == 0) {
        index_put(s, &row, NULL);
        store_dep_clear(&row);
    } else if (rc == RR_E_NOTFOUND) {
        if (dep_find(s, user, project_id))
            index_drop(s, user, project_id, now);
    } else {
        log_error("deployment %s/%s: cannot reload it: %s", user, project_id,
                  err_str(rc));
    }
}

void sched_defer_end(struct sched *s, double now, bool committed)
{
    int64_t t = (int64_t)floor(now);
    s->deferring = false;
    for (size_t i = 0; i < s->npending; i++) {
        struct pending *p = &s->pending[i];
        if (!committed) { /* its row was rolled back: it never was */
            if (p->dep->run_id == p->run_id)
                p->dep->run_id = 0;
            pending_clear(p);
        } else if (p->release_at > t) {
            hold(s, p);
        } else {
            submit(s, p, now);
        }
    }
    s->npending = 0;
    free_events(s, committed);
    s->quiet = true; /* what watchers never heard of needs no correction */
    for (size_t i = 0; i < s->nchanged; i++) {
        const char *user = s->changed[i];
        if (!committed)
            resync(s, user, user + strlen(user) + 1, now);
        free(s->changed[i]);
    }
    s->quiet = false;
    s->nchanged = 0;
}

static const char *dep_name(const struct sched_dep *d)
{
    return d->project_id;
}

int sched_run_now(struct sched *s, const char *user, const char *project_id,
                  const char *idem, double now, struct store_run *out,
                  struct err *e)
{
    struct sched_dep *d = dep_find(s, user, project_id);
    if (!d)
        return err_set(e, RR_E_NOTFOUND, "Deployment not found: %s", project_id);
    if (idem) {
        int rc = store_run_find_idem(s->store, user, project_id, idem, out);
        if (rc == 0)
            return 0;
        if (rc != RR_E_NOTFOUND)
            return err_set(e, rc, "Internal error: %s", err_str(rc));
    }
    if (d->state == STORE_PAUSED)
        return err_set(e, RR_E_BUSY, "Deployment '%s' is paused", dep_name(d));
    char why[160];
    if (d->state != STORE_ERRORED && owner_problem(s, d, now, why, sizeof why))
        set_errored(s, d, why, now);
    if (d->state == STORE_ERRORED) {
        struct store_dep row;
        int rc = store_dep_get(s->store, user, project_id, &row);
        err_set(e, RR_E_BUSY, "Deployment '%s' is errored: %s", dep_name(d),
                rc == 0 && row.error ? row.error : "no reason recorded");
        if (rc == 0)
            store_dep_clear(&row);
        return RR_E_BUSY;
    }
    if (d->run_id)
        return err_set(e, RR_E_BUSY, "Deployment '%s' is already running",
                       dep_name(d));
    int rc = start_run(s, d, "manual", 0, idem, now, out);
    if (rc == RR_E_EXISTS && idem) /* raced with itself: cannot happen on one thread */
        return err_set(e, rc, "Deployment '%s': idempotency key already used",
                       dep_name(d));
    if (rc)
        return err_set(e, rc, "Internal error: %s", err_str(rc));
    return 0;
}

int sched_cancel(struct sched *s, const char *user, const char *project_id,
                 struct err *e)
{
    struct sched_dep *d = dep_find(s, user, project_id);
    if (!d)
        return err_set(e, RR_E_NOTFOUND, "Deployment not found: %s", project_id);
    if (!d->run_id)
        return err_set(e, RR_E_BUSY, "Deployment '%s' is not running", dep_name(d));
    if (!s->exec.cancel ||
        s->exec.cancel(s->exec.ud, d->run_id, STORE_RUN_CANCELLED) != 0)
        return err_set(e, RR_E_BUSY, "Deployment '%s' is not running", dep_name(d));
    return 0;
}

/* The run's process started; the report's pgid and leader_start identify its
 * process group and are kept in the ledger for sched_load after a crash. A
 * run that is no longer queued (removed with its deployment, or already
 * ended) is left as it is. */
static void run_started(struct sched *s, const struct sched_report *rep)
{
    struct store_run r;
    int rc = store_run_start(s->store, rep->run_id, rep->at, rep->pgid,
                             rep->leader_start, rep->task, &r);
    if (rc == RR_E_NOTFOUND || rc == RR_E_BUSY)
        return;
    if (rc) {
        log_error("run %lld: cannot record its start", (long long)rep->run_id);
        return;
    }
    emit_run(s, SCHED_EV_RUN_STARTED, &r, rep->at);
    store_run_clear(&r);
}

/* The first decision wins: a run that already has its outcome keeps it. */
static void run_finished(struct sched *s, const struct sched_report *rep)
{
    struct store_run_end end = {
        .outcome = rep->outcome, .at = rep->at, .started = rep->started,
        .reason = rep->reason, .exit_code = rep->exit_code,
        .signal = rep->signal, .output = rep->output,
        .output_len = rep->output_len, .task = rep->task,
    };
    struct store_run r;
    int rc = store_run_finish(s->store, rep->run_id, &end, &r);
    if (rc == RR_E_BUSY) /* already ended: only its deployment is freed */
        rc = store_run_get(s->store, rep->run_id, &r) == 0 ? RR_E_BUSY : RR_E_NOTFOUND;
    if (rc == RR_E_NOTFOUND)
        return; /* its deployment was removed */
    if (rc != 0 && rc != RR_E_BUSY) {
        log_error("run %lld: cannot record its outcome", (long long)rep->run_id);
        return;
    }
    struct sched_dep *d = dep_find(s, r.user, r.project_id);
    if (d && d->run_id == rep->run_id)
        d->run_id = 0;
    if (rc == 0) {
        s->stats.finished[rep->outcome]++;
        emit_run(s, SCHED_EV_RUN_FINISHED, &r, rep->at);
    }
    /* The engine refused the owner's credential: retrying cannot help, so
     * the deployment stops firing until it is removed and added again. */
    if (d && rep->owner_refused && d->state != STORE_ERRORED)
        set_errored(s, d, rep->owner_refused, rep->at);
    store_run_clear(&r);
}

void sched_run_report(struct sched *s, const struct sched_report *rep)
{
    if (rep->kind == SCHED_RUN_STARTED)
        run_started(s, rep);
    else
        run_finished(s, rep);
}

struct key_scan {
    struct store_key *keys; /* sorted by id */
    size_t n, cap;
};

static int collect_key(const struct store_key *k, void *ud)
{
    struct key_scan *ks = ud;
    if (ks->n == ks->cap) {
        ks->cap = ks->cap ? ks->cap * 2 : 64;
        ks->keys = xrealloc(ks->keys, ks->cap * sizeof *ks->keys);
    }
    ks->keys[ks->n++] = *k;
    return 0;
}

static int key_cmp(const void *a, const void *b)
{
    return strcmp(((const struct store_key *)a)->id, ((const struct store_key *)b)->id);
}

/* An owner key that lost the right to run, and why. */
struct bad_owner {
    char id[STORE_KEY_ID_MAX];
    char why[160];
    int64_t n;                    /* deployments errored */
};

struct owner_sweep {
    struct bad_owner *owners;     /* owned; few: the keys just revoked */
    size_t nowners, cap_owners;
    struct sched_dep **deps;      /* owned array of borrowed pointers */
    size_t ndeps, cap_deps;
};

static void sweep_add(struct owner_sweep *w, struct sched_dep *d, const char *why)
{
    size_t i = 0;
    while (i < w->nowners && strcmp(w->owners[i].id, d->owner_key_id) != 0)
        i++;
    if (i == w->nowners) {
        if (w->nowners == w->cap_owners) {
            w->cap_owners = w->cap_owners ? w->cap_owners * 2 : 4;
            w->owners = xrealloc(w->owners, w->cap_owners * sizeof *w->owners);
        }
        struct bad_owner *o = &w->owners[w->nowners++];
        snprintf(o->id, sizeof o->id, "%s", d->owner_key_id);
        snprintf(o->why, sizeof o->why, "%s", why);
        o->n = 0;
    }
    if (w->ndeps == w->cap_deps) {
        w->cap_deps = w->cap_deps ? w->cap_deps * 2 : 64;
        w->deps = xrealloc(w->deps, w->cap_deps * sizeof *w->deps);
    }
    w->deps[w->ndeps++] = d;
}

/* Write the sweep: one statement per owner, all in one transaction, so
 * revoking a key that owns thousands of deployments is one short write. */
static int sweep_write(struct sched *s, struct owner_sweep *w, double now)
{
    int rc = store_batch_begin(s->store);
    if (rc)
        return rc;
    for (size_t i = 0; rc == 0 && i < w->nowners; i++)
        rc = store_dep_error_by_key(s->store, w->owners[i].id, w->owners[i].why,
                                    now, &w->owners[i].n);
    int crc = store_batch_commit(s->store);
    return rc ? rc : crc;
}

int sched_keys_changed(struct sched *s, double now)
{
    struct key_scan ks = {0};
    int rc = store_key_list(s->store, collect_key, &ks);
    if (rc) {
        free(ks.keys);
        return rc;
    }
    qsort(ks.keys, ks.n, sizeof *ks.keys, key_cmp);
    struct owner_sweep w = {0};
    for (size_t i = 0; i < s->nbuckets; i++) {
        for (struct sched_dep *d = s->buckets[i]; d; d = d->hnext) {
            if (d->state == STORE_ERRORED)
                continue;
            struct store_key probe;
            snprintf(probe.id, sizeof probe.id, "%s", d->owner_key_id);
            const struct store_key *k =
                bsearch(&probe, ks.keys, ks.n, sizeof *ks.keys, key_cmp);
            char why[160];
            if (owner_verdict(s, d, k, now, why, sizeof why))
                sweep_add(&w, d, why);
        }
    }
    free(ks.keys);
    rc = w.ndeps ? sweep_write(s, &w, now) : 0;
    if (rc == 0) {
        for (size_t i = 0; i < w.ndeps; i++) {
            struct sched_dep *d = w.deps[i];
            const struct bad_owner *o = w.owners;
            while (strcmp(o->id, d->owner_key_id) != 0)
                o++;
            d->state = STORE_ERRORED;
            heap_remove(s, d);
            s->stats.errored++;
            emit_state(s, d, STORE_ERRORED, o->why, now);
        }
        for (size_t i = 0; i < w.nowners; i++)
            log_warn("%s: %lld deployment(s) errored", w.owners[i].why,
                     (long long)w.owners[i].n);
    } else {
        log_error("cannot mark the deployments of %zu owner key(s) errored: %s",
                  w.nowners, err_str(rc));
    }
    int n = rc ? rc : (int)w.ndeps;
    free(w.owners);
    free(w.deps);
    return n;
}

const struct sched_stats *sched_stats(const struct sched *s)
{
    return &s->stats;
}

void sched_count_states(const struct sched *s, uint64_t out[3])
{
    out[0] = out[1] = out[2] = 0;
    for (size_t i = 0; i < s->nbuckets; i++)
        for (const struct sched_dep *d = s->buckets[i]; d; d = d->hnext)
            out[d->state]++;
}

size_t sched_count(const struct sched *s, size_t *scheduled)
{
    if (scheduled)
        *scheduled = s->heap_n;
    return s->ndeps;
}
