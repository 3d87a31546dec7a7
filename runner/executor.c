/* executor.c -- the executor interface: dispatch to an executor's ops, the
 * executor as the scheduler sees it, and the recording of its reports.
 *
 * Design: an executor is a struct whose first member is struct executor (its
 * ops); these wrappers are the only callers of the ops, so what every
 * executor must do is stated once, in executor.h. executor_record is the
 * one place where what executors report reaches the ledger: all pending
 * reports in one store transaction.
 * Thread: service thread only. */
#include "runner/executor.h"

#include <stdlib.h>
#include <string.h>

int executor_submit(struct executor *x, const struct sched_job *job)
{
    return x->ops->submit(x, job);
}

int executor_cancel(struct executor *x, int64_t run_id, enum store_outcome as)
{
    return x->ops->cancel(x, run_id, as);
}

bool executor_reclaim(struct executor *x, const struct sched_job *job,
                      const struct store_run *r)
{
    return x->ops->reclaim(x, job, r);
}

int executor_active(struct executor *x)
{
    return x->ops->active(x);
}

int executor_drain(struct executor *x, int max, executor_report_fn fn, void *ud)
{
    return x->ops->drain(x, max, fn, ud);
}

void executor_free(struct executor *x)
{
    if (x)
        x->ops->free(x);
}

/* ---------------------------------------------------------------- scheduler */

static int thunk_submit(void *ud, const struct sched_job *job)
{
    return executor_submit(ud, job);
}

static int thunk_cancel(void *ud, int64_t run_id, enum store_outcome as)
{
    return executor_cancel(ud, run_id, as);
}

static bool thunk_reclaim(void *ud, const struct sched_job *job,
                          const struct store_run *r)
{
    return executor_reclaim(ud, job, r);
}

struct sched_exec executor_sched_exec(struct executor *x)
{
    return (struct sched_exec){thunk_submit, thunk_cancel, thunk_reclaim, x};
}

struct record {
    struct sched *s;
    double at;      /* 0: the reports' own times */
};

static void record_one(void *ud, const struct sched_report *r)
{
    struct record *rec = ud;
    if (rec->at == 0) {
        sched_run_report(rec->s, r);
        return;
    }
    struct sched_report copy = *r;
    copy.at = rec->at;
    sched_run_report(rec->s, &copy);
}

int executor_record(struct executor *x, struct sched *s, struct store *st,
                    double at, int max)
{
    struct record rec = {s, at};
    bool batch = store_batch_begin(st) == 0;
    int n = executor_drain(x, max, record_one, &rec);
    if (batch && store_batch_commit(st) != 0)
        log_error("could not record the latest run starts and ends");
    return n;
}

/* ---------------------------------------------------------------- kit */

void out_tail_push(struct out_tail *t, const char *p, size_t n)
{
    if (t->max == 0 || n == 0)
        return;
    if (n >= t->max) {
        if (t->cap < t->max) {
            free(t->mem);
            t->mem = xmalloc(t->max);
            t->cap = t->max;
        }
        memcpy(t->mem, p + (n - t->max), t->max);
        t->start = 0;
        t->len = t->max;
        return;
    }
    if (t->len + n > t->cap && t->cap < t->max) {
        /* Grow (linearising) before wrapping. */
        size_t ncap = t->cap ? t->cap * 2 : 4096;
        if (ncap < t->len + n)
            ncap = t->len + n;
        if (ncap > t->max)
            ncap = t->max;
        char *m = xmalloc(ncap);
        size_t first = t->cap - t->start < t->len ? t->cap - t->start : t->len;
        if (first)
            memcpy(m, t->mem + t->start, first);
        if (t->len > first)
            memcpy(m + first, t->mem, t->len - first);
        free(t->mem);
        t->mem = m;
        t->cap = ncap;
        t->start = 0;
    }
    /* Now len + n <= cap, or cap == max and the oldest bytes go. */
    if (t->len + n > t->cap) {
        size_t drop = t->len + n - t->cap;
        t->start = (t->start + drop) % t->cap;
        t->len -= drop;
    }
    size_t pos = (t->start + t->len) % t->cap;
    size_t first = t->cap - pos < n ? t->cap - pos : n;
    memcpy(t->mem + pos, p, first);
    if (n > first)
        memcpy(t->mem, p + first, n - first);
    t->len += n;
}

char *out_tail_take(struct out_tail *t, size_t *len)
{
    char *s = xmalloc(t->len + 1);
    size_t first = 0;
    if (t->len) {
        first = t->cap - t->start < t->len ? t->cap - t->start : t->len;
        memcpy(s, t->mem + t->start, first);
        if (t->len > first)
            memcpy(s + first, t->mem, t->len - first);
    }
    s[t->len] = '\0';
    *len = t->len;
    free(t->mem);
    t->mem = NULL;
    t->cap = t->start = t->len = 0;
    return s;
}

void out_tail_free(struct out_tail *t)
{
    free(t->mem);
    t->mem = NULL;
    t->cap = t->start = t->len = 0;
}

/* A queued report; r's strings point at the owned copies. */
struct report_node {
    struct report_node *next;
    struct sched_report r;
    char *reason, *output, *task, *owner_refused; /* owned, or NULL */
};

void report_queue_init(struct report_queue *q)
{
    pthread_mutex_init(&q->mu, NULL);
    q->head = q->tail = NULL;
}

static char *dup_or_null(const char *s)
{
    return s ? xstrdup(s) : NULL;
}

static void report_node_free(struct report_node *n)
{
    free(n->reason);
    free(n->output);
    free(n->task);
    free(n->owner_refused);
    free(n);
}

void report_queue_destroy(struct report_queue *q)
{
    for (struct report_node *n = q->head, *nx; n; n = nx) {
        nx = n->next;
        report_node_free(n);
    }
    q->head = q->tail = NULL;
    pthread_mutex_destroy(&q->mu);
}

void report_queue_push(struct report_queue *q, const struct sched_report *r)
{
    struct report_node *n = xcalloc(1, sizeof *n);
    n->r = *r;
    n->r.reason = n->reason = dup_or_null(r->reason);
    n->r.task = n->task = dup_or_null(r->task);
    n->r.owner_refused = n->owner_refused = dup_or_null(r->owner_refused);
    if (r->output) {
        n->output = xmalloc(r->output_len + 1);
        memcpy(n->output, r->output, r->output_len);
        n->output[r->output_len] = '\0';
    }
    n->r.output = n->output;
    pthread_mutex_lock(&q->mu);
    if (q->tail)
        q->tail->next = n;
    else
        q->head = n;
    q->tail = n;
    pthread_mutex_unlock(&q->mu);
}

int report_queue_drain(struct report_queue *q, int max, executor_report_fn fn,
                       void *ud)
{
    pthread_mutex_lock(&q->mu);
    struct report_node *n = q->head, *last = NULL;
    int count = 0;
    for (struct report_node *e = n; e && (max <= 0 || count < max); e = e->next) {
        last = e;
        count++;
    }
    if (last) { /* detach the first count nodes */
        q->head = last->next;
        if (!q->head)
            q->tail = NULL;
        last->next = NULL;
    }
    pthread_mutex_unlock(&q->mu);
    while (n) {
        struct report_node *nx = n->next;
        if (fn)
            fn(ud, &n->r);
        report_node_free(n);
        n = nx;
    }
    return count;
}
