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

int executor_submit(struct executor *x, const struct sched_job *job)
{
    return x->ops->submit(x, job);
}

int executor_cancel(struct executor *x, int64_t run_id, enum store_outcome as)
{
    return x->ops->cancel(x, run_id, as);
}

void executor_reclaim(struct executor *x, const struct store_run *r)
{
    x->ops->reclaim(x, r);
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

static void thunk_reclaim(void *ud, const struct store_run *r)
{
    executor_reclaim(ud, r);
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
