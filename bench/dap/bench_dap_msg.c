/* bench_dap_msg.c -- the cost of one request in the message layer alone.
 *
 * Purpose: bench_dap measures requests over real sockets, where the kernel's
 * loopback TCP and the event loop take half of the time. This bench calls
 * dap__handle_message directly, as the server does at the end of a service
 * pass, so the userland cost of a request (decode, authorize, store reads,
 * encode) can be measured and profiled on its own: CPU nanoseconds and heap
 * allocations per request for rrext_deploy_status, rrext_deploy_list (100
 * deployments) and ping, each inside one store batch per B requests (the
 * group commit's read transaction).
 *
 * Design: a temporary file database (WAL, synchronous=FULL, as served) with
 * one key and 100 deployments, added through the message layer itself; a
 * fixed clock. Heap allocations (malloc, calloc, realloc: rrdeploy's, jansson's
 * and SQLite's) are counted by interposers defined here that forward to
 * glibc's __libc_* entry points. CPU time is the process's. Medians of R
 * repetitions of N requests each.
 *
 * Thread: single-threaded. */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench/common/bench_util.h"
#include "dap/dap_internal.h"

/* ---------------------------------------------------------------- malloc count */

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);

static uint64_t n_alloc; /* malloc + calloc + realloc(NULL or growing) calls */

void *malloc(size_t n)
{
    n_alloc++;
    return __libc_malloc(n);
}

void *calloc(size_t a, size_t b)
{
    n_alloc++;
    return __libc_calloc(a, b);
}

void *realloc(void *p, size_t n)
{
    n_alloc++;
    return __libc_realloc(p, n);
}

void free(void *p)
{
    __libc_free(p);
}

/* ---------------------------------------------------------------- fixture */

#define BENCH_NOW 1767225600.25 /* 2026-01-01T00:00:00.25Z */
#define DEPLOYMENTS 100

static struct clock bench_clock = {true, BENCH_NOW};

static void die(const char *what)
{
    fprintf(stderr, "bench_dap_msg: %s\n", what);
    exit(1);
}

struct sink {
    size_t frames;
    size_t bytes;
    bool ok;       /* every frame so far said "success":true */
};

static void sink_emit(void *ud, struct buf *f)
{
    struct sink *sk = ud;
    sk->frames++;
    sk->bytes += f->len;
    if (!memmem(buf_data(f), f->len, "\"success\":true", 14))
        sk->ok = false;
    buf_free(f);
    free(f);
}

static void send_one(struct dap_app *app, struct dap_session *ss, const char *req,
                     struct sink *sk)
{
    dap__handle_message(app, ss, req, strlen(req), sink_emit, sk);
}

static uint64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

struct result {
    double ns_per_req;     /* median */
    double allocs_per_req; /* median */
    size_t reply_bytes;
};

/* R repetitions of n requests, a store batch around every `batch` of them. */
static struct result measure(struct dap_app *app, struct dap_session *ss,
                             const char *req, int n, int batch, int reps)
{
    uint64_t ns[64], al[64];
    struct sink sk = {.ok = true};
    for (int r = 0; r < reps; r++) {
        sk.frames = sk.bytes = 0;
        uint64_t a0 = n_alloc, t0 = cpu_ns();
        for (int i = 0; i < n; i += batch) {
            if (store_batch_begin_read(app->store) != 0)
                die("batch begin");
            for (int j = i; j < i + batch && j < n; j++)
                send_one(app, ss, req, &sk);
            if (store_batch_commit(app->store) != 0)
                die("batch commit");
        }
        ns[r] = cpu_ns() - t0;
        al[r] = n_alloc - a0;
        if (!sk.ok || sk.frames != (size_t)n)
            die("a request failed");
    }
    qsort(ns, (size_t)reps, sizeof ns[0], bench_cmp_u64);
    qsort(al, (size_t)reps, sizeof al[0], bench_cmp_u64);
    return (struct result){
        .ns_per_req = (double)ns[reps / 2] / n,
        .allocs_per_req = (double)al[reps / 2] / n,
        .reply_bytes = sk.bytes / (size_t)n,
    };
}

static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Kept replies while the store changes: before each request, a write
 * (the scheduler's progress columns, committed) to a deployment of `writer`.
 * Returns the share of requests answered from a kept reply and, in *ns, the
 * median CPU ns of a request alone: this thread's, the write not counted
 * (each commit wakes the checkpointer's thread, whose work is not the
 * request's). */
static double kept_under_writes(struct dap_app *app, struct dap_session *ss,
                                const char *req, const char *writer,
                                const char *writer_pid, int n, double *ns)
{
    uint64_t h0, m0, h1, m1;
    struct sink sk = {.ok = true};
    uint64_t *each = xmalloc(sizeof *each * (size_t)n);
    dap__replies_counts(app->replies, &h0, &m0);
    for (int i = 0; i < n; i++) {
        if (store_dep_set_progress(app->store, writer, writer_pid, BENCH_NOW + i,
                                   BENCH_NOW + i + 60) != 0)
            die("store_dep_set_progress");
        uint64_t t0 = thread_cpu_ns();
        if (store_batch_begin_read(app->store) != 0)
            die("batch begin");
        send_one(app, ss, req, &sk);
        if (store_batch_commit(app->store) != 0)
            die("batch commit");
        each[i] = thread_cpu_ns() - t0;
    }
    if (!sk.ok)
        die("a request failed");
    dap__replies_counts(app->replies, &h1, &m1);
    qsort(each, (size_t)n, sizeof *each, bench_cmp_u64);
    *ns = (double)each[n / 2];
    free(each);
    return (double)(h1 - h0) / (double)((h1 - h0) + (m1 - m0));
}

int main(int argc, char **argv)
{
    int n = 20000, reps = 9, batch = 8;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-n") == 0 && i + 1 < argc)
            n = atoi(argv[++i]);
        else if (strcmp(argv[i], "-r") == 0 && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "-b") == 0 && i + 1 < argc)
            batch = atoi(argv[++i]);
        else if (strcmp(argv[i], "-c") == 0 && i + 1 < argc)
            only = argv[++i];
        else {
            fprintf(stderr, "usage: bench_dap_msg [-n requests] [-r reps] [-b batch] "
                            "[-c command]\n");
            return 2;
        }
    }
    if (n < 1 || reps < 1 || reps > 64 || batch < 1)
        die("bad arguments");
    log_configure((enum log_level)(LOG_ERROR + 1), LOG_FORMAT_TEXT);

    char dir[] = "/tmp/bench_dap_msg.XXXXXX", path[64];
    if (!mkdtemp(dir))
        die("mkdtemp");
    snprintf(path, sizeof path, "%s/bench.db", dir);
    struct store *st;
    if (store_open(path, &st, NULL) != 0)
        die("store_open");
    struct dap_config cfg;
    dap_config_defaults(&cfg);
    struct sched_config sc;
    sched_config_defaults(&sc);
    struct sched *sched = sched_new(st, &sc, NULL);
    if (!sched)
        die("sched_new");
    struct dap_guard_config gc;
    dap__guard_config_defaults(&gc);
    struct dap_app app = {.cfg = &cfg, .store = st, .sched = sched,
                          .started_at = BENCH_NOW, .clock = &bench_clock,
                          .guard = dap__guard_new(&gc)};
    if (!app.guard)
        die("dap__guard_new");
    char key[STORE_KEY_TEXT_MAX];
    if (store_key_create(st, "admin", NULL, STORE_PERM_ALL, 0, BENCH_NOW, key, NULL) != 0)
        die("store_key_create");

    struct dap_session ss = {0};
    struct sink sk = {.ok = true};
    char req[2048];
    snprintf(req, sizeof req,
             "{\"type\":\"request\",\"seq\":1,\"command\":\"auth\","
             "\"arguments\":{\"auth\":\"%s\",\"clientName\":\"bench\"}}", key);
    send_one(&app, &ss, req, &sk);
    if (!ss.authed)
        die("auth failed");
    for (int i = 0; i < DEPLOYMENTS; i++) {
        snprintf(req, sizeof req,
                 "{\"type\":\"request\",\"seq\":%d,\"command\":\"rrext_deploy_add\","
                 "\"arguments\":{\"pipeline\":{\"project_id\":\"bench-%03d\","
                 "\"components\":[{\"id\":\"webhook_1\",\"provider\":\"webhook\","
                 "\"config\":{\"mode\":\"Source\",\"type\":\"webhook\",\"hideForm\":true}},"
                 "{\"id\":\"response_1\",\"provider\":\"response\",\"config\":{},"
                 "\"input\":[{\"lane\":\"text\",\"from\":\"webhook_1\"}]}],"
                 "\"source\":\"webhook_1\"},\"schedule\":\"manual\"}}",
                 i + 2, i);
        send_one(&app, &ss, req, &sk);
    }
    if (!sk.ok)
        die("setup failed");

    static const struct {
        const char *name, *req;
        int div; /* fewer requests for the heavy ones */
    } cases[] = {
        {"ping", "{\"type\":\"request\",\"seq\":7,\"command\":\"rrext_ping\","
                 "\"arguments\":{}}", 1},
        {"rrext_deploy_status", "{\"type\":\"request\",\"seq\":7,\"command\":"
                                "\"rrext_deploy_status\",\"arguments\":{\"projectId\":"
                                "\"bench-000\"}}", 1},
        {"rrext_deploy_list (100)", "{\"type\":\"request\",\"seq\":7,\"command\":"
                                    "\"rrext_deploy_list\",\"arguments\":{}}", 50},
    };
    printf("bench_dap_msg: the message layer alone (no sockets), %d requests x %d,\n"
           "a store batch around every %d; medians\n\n", n, reps, batch);
    printf("  %-30s %10s %12s %12s\n", "request", "ns/req", "allocs/req", "reply B");
    /* Each case twice: rendered every time (no reply cache), then as the
     * server runs it, with replies kept while the store is unchanged (every
     * request after the first is then answered from the cache). */
    struct dap_replies *kept = dap__replies_new(cfg.reply_cache);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        if (only && !strstr(cases[c].name, only))
            continue;
        for (int mode = 0; mode < 2; mode++) {
            app.replies = mode ? kept : NULL;
            int cn = n / cases[c].div > 0 ? n / cases[c].div : 1;
            measure(&app, &ss, cases[c].req, cn / 10 + 1, batch, 1); /* warm */
            struct result r = measure(&app, &ss, cases[c].req, cn, batch, reps);
            char name[64];
            snprintf(name, sizeof name, "%s%s", cases[c].name, mode ? ", kept" : "");
            printf("  %-30s %10.0f %12.1f %12zu\n", name, r.ns_per_req,
                   r.allocs_per_req, r.reply_bytes);
        }
    }
    /* While the scheduler records progress for some deployment before every
     * request: another user's (the reply stays kept) or the same user's (it
     * is rendered again each time). */
    if (!only || strstr("rrext_deploy_status", only)) {
        app.replies = kept;
        struct store_dep other = {
            .user = "other", .project_id = "o", .pipeline = "{\"project_id\":\"o\"}",
            .schedule = "manual", .state = STORE_ACTIVE, .created_by = "other",
            .owner_key_id = "k", .created_at = BENCH_NOW, .updated_at = BENCH_NOW};
        if (store_dep_insert(st, &other, 0) != 0)
            die("store_dep_insert");
        const char *status = cases[1].req;
        int wn = n / 10 > 0 ? n / 10 : 1;
        printf("\n  status with a committed write before each request (%d requests):\n", wn);
        printf("  %-30s %10s %12s\n", "the write is to", "ns/req", "kept");
        double ns;
        double share = kept_under_writes(&app, &ss, status, "other", "o", wn, &ns);
        printf("  %-30s %10.0f %11.0f%%\n", "another user's deployment", ns, share * 100);
        share = kept_under_writes(&app, &ss, status, "admin", "bench-050", wn, &ns);
        printf("  %-30s %10.0f %11.0f%%\n", "the same user's deployment", ns, share * 100);
    }
    app.replies = NULL;
    dap__replies_free(kept);

    dap__guard_free(app.guard);
    sched_free(sched);
    store_close(st);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "bench_dap_msg: could not remove %s\n", dir);
    return 0;
}
