/* bench_cron.c -- next-fire latency of the cron engine, and counting.
 *
 * Purpose: print median, p99 and worst ns per cronx_next over a fixed corpus
 * (bench/cron/corpus.txt), in UTC and in America/New_York (DST spans); then
 * what cronx_count costs for 30 days of each corpus expression against
 * walking cronx_next over the same days, and the two targets of counting.
 * Design: for each expression and zone, START_POINTS random start instants in
 * 1990..2037; from each, CHAIN chained calls are timed together and averaged
 * (one sample), so clock overhead stays out of the numbers. The worst
 * expression is the one with the highest median sample; the worst single
 * call is the slowest of one call per start, each timed 5 times (minimum).
 * Counting: COUNT_STARTS random 30-day windows per expression and zone, each
 * counted COUNT_REPS times (minimum) and walked once. Prints numbers only;
 * not a test.
 * Thread: single-threaded. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/common/bench_util.h"
#include "scheduler/cron.h"

#define MAX_EXPRS 256
#define START_POINTS 64
#define CHAIN 32
#define COUNT_STARTS 8
#define COUNT_REPS 3
#define DAYS_30 (30 * 86400LL)

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static uint64_t rng = 88172645463325252ULL;
static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static volatile int64_t sink;

static void run_zone(char exprs[][128], int n, const char *zone)
{
    static double samples[MAX_EXPRS * START_POINTS];
    int ns = 0;
    double worst_avg = 0, worst_one = 0;
    const char *worst_expr = "", *worst_one_expr = "";
    for (int i = 0; i < n; i++) {
        struct cronx *c = NULL;
        struct err e = {0};
        if (cronx_parse(exprs[i], zone, &c, &e) != 0) {
            fprintf(stderr, "bench_cron: '%s': %s\n", exprs[i], e.msg);
            exit(1);
        }
        double mine[START_POINTS];
        for (int s = 0; s < START_POINTS; s++) {
            int64_t t = 631152000 + (int64_t)(rnd() % 1514764800ULL);
            double t0 = now_ns();
            for (int k = 0; k < CHAIN; k++)
                t = cronx_next(c, t);
            double per = (now_ns() - t0) / CHAIN;
            sink = t;
            samples[ns++] = per;
            mine[s] = per;
            /* one call, repeated: the minimum is its cost without noise */
            int64_t u = 631152000 + (int64_t)(rnd() % 1514764800ULL);
            double one = 1e18;
            for (int r = 0; r < 5; r++) {
                t0 = now_ns();
                sink = cronx_next(c, u);
                double d = now_ns() - t0;
                if (d < one)
                    one = d;
            }
            if (one > worst_one) {
                worst_one = one;
                worst_one_expr = exprs[i];
            }
        }
        qsort(mine, START_POINTS, sizeof *mine, bench_cmp_double);
        if (mine[START_POINTS / 2] > worst_avg) {
            worst_avg = mine[START_POINTS / 2];
            worst_expr = exprs[i];
        }
        cronx_free(c);
    }
    qsort(samples, (size_t)ns, sizeof *samples, bench_cmp_double);
    printf("%-18s median %7.0f ns  p99 %7.0f ns  worst expr median %6.0f ns ('%s')"
           "  worst single call %7.0f ns ('%s')\n",
           zone, samples[ns / 2], samples[(ns * 99) / 100], worst_avg,
           worst_expr, worst_one, worst_one_expr);
}

static struct cronx *must_parse(const char *expr, const char *zone)
{
    struct cronx *c = NULL;
    struct err e = {0};
    if (cronx_parse(expr, zone, &c, &e) != 0) {
        fprintf(stderr, "bench_cron: '%s': %s\n", expr, e.msg);
        exit(1);
    }
    return c;
}

/* ns of cronx_count over [from, from + len], the best of COUNT_REPS. */
static double time_count(const struct cronx *c, int64_t from, int64_t len)
{
    double best = 1e18;
    for (int r = 0; r < COUNT_REPS; r++) {
        int64_t last, before_last;
        double t0 = now_ns();
        sink = cronx_count(c, from, from + len, &last, &before_last);
        double d = now_ns() - t0;
        if (d < best)
            best = d;
    }
    return best;
}

/* ns of walking cronx_next over [from, from + len], as the engine did. */
static double time_walk(const struct cronx *c, int64_t from, int64_t len)
{
    int64_t t = from - 1, n = 0;
    double t0 = now_ns();
    while ((t = cronx_next(c, t)) != CRONX_NEVER && t <= from + len)
        n++;
    double d = now_ns() - t0;
    sink = n;
    return d;
}

/* Median, p99 and worst of v[0..n) on one line; who[i] is v[i]'s
 * expression. */
static void print_spread(const char *what, const char *zone, const double *v,
                         const int *who, int n, char exprs[][128])
{
    static double sorted[MAX_EXPRS * COUNT_STARTS];
    int worst = 0;
    for (int i = 0; i < n; i++) {
        sorted[i] = v[i];
        if (v[i] > v[worst])
            worst = i;
    }
    qsort(sorted, (size_t)n, sizeof *sorted, bench_cmp_double);
    printf("%s 30 days %-18s median %8.0f ns  p99 %8.0f ns  worst %8.0f ns"
           " ('%s')\n", what, zone, sorted[n / 2], sorted[(n * 99) / 100],
           v[worst], exprs[who[worst]]);
}

/* 30 days of every corpus expression: counted vs walked. */
static void count_zone(char exprs[][128], int n, const char *zone)
{
    static double counted[MAX_EXPRS * COUNT_STARTS];
    static double walked[MAX_EXPRS * COUNT_STARTS];
    static double ratio[MAX_EXPRS * COUNT_STARTS];
    static int who[MAX_EXPRS * COUNT_STARTS];
    int ns = 0;
    double sum_counted = 0, sum_walked = 0;
    for (int i = 0; i < n; i++) {
        struct cronx *c = must_parse(exprs[i], zone);
        for (int s = 0; s < COUNT_STARTS; s++, ns++) {
            int64_t from = 631152000 + (int64_t)(rnd() % 1514764800ULL);
            counted[ns] = time_count(c, from, DAYS_30);
            walked[ns] = time_walk(c, from, DAYS_30);
            ratio[ns] = walked[ns] / counted[ns];
            who[ns] = i;
            sum_counted += counted[ns];
            sum_walked += walked[ns];
        }
        cronx_free(c);
    }
    print_spread("count", zone, counted, who, ns, exprs);
    print_spread("walk ", zone, walked, who, ns, exprs);
    printf("ratio 30 days %-18s every window: walked %.1f ms, counted %.1f us"
           " -> %.0fx; per window: median %.0fx\n", zone, sum_walked / 1e6,
           sum_counted / 1e3, sum_walked / sum_counted,
           bench_median(ratio, (size_t)ns));
}

/* The targets: 30 days of every minute, 10 years of every 5 minutes. */
static void count_target(const char *expr, int64_t len, const char *what,
                         const char *target)
{
    static const char *const zones[] = {"UTC", "America/New_York"};
    printf("count target %-26s", what);
    for (int z = 0; z < 2; z++) {
        struct cronx *c = must_parse(expr, zones[z]);
        double v[COUNT_STARTS];
        for (int s = 0; s < COUNT_STARTS; s++)
            v[s] = time_count(c, 631152000 + (int64_t)(rnd() % 1514764800ULL),
                              len);
        printf("  %s median %7.0f ns", zones[z], bench_median(v, COUNT_STARTS));
        cronx_free(c);
    }
    printf("  (target %s)\n", target);
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : BENCH_CORPUS;
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "bench_cron: cannot open %s\n", path);
        return 1;
    }
    static char exprs[MAX_EXPRS][128];
    int n = 0;
    char line[256];
    while (n < MAX_EXPRS && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '#' || line[0] == '\0')
            continue;
        size_t len = strnlen(line, sizeof exprs[0] - 1);
        memcpy(exprs[n], line, len);
        exprs[n++][len] = '\0';
    }
    fclose(f);
    printf("bench_cron: %d expressions x %d starts x %d chained next-fires\n",
           n, START_POINTS, CHAIN);
    run_zone(exprs, n, "UTC");
    run_zone(exprs, n, "America/New_York");
    printf("count: %d expressions x %d windows of 30 days, counted (best of %d)"
           " and walked\n", n, COUNT_STARTS, COUNT_REPS);
    count_zone(exprs, n, "UTC");
    count_zone(exprs, n, "America/New_York");
    count_target("* * * * *", DAYS_30, "30 days of '* * * * *'", "< 50 us");
    count_target("*/5 * * * *", 3653 * 86400LL, "10 years of '*/5 * * * *'",
                 "< 1 ms");
    return 0;
}
