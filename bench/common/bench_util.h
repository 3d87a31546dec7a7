/* bench_util.h -- what every benchmark needs: sorting, medians, and the
 * machine's name for the report, an executor's wake-up. No product code:
 * bench_dap's echo baseline and generator link only this. Thread: pure
 * functions, but for the wake-up (any thread). */
#ifndef RR_BENCH_UTIL_H
#define RR_BENCH_UTIL_H

#include <stddef.h>

/* qsort comparators, ascending. */
int bench_cmp_double(const void *a, const void *b);
int bench_cmp_u64(const void *a, const void *b);

/* Median of v[0..n) (v is left as it is); NAN when n is 0. */
double bench_median(const double *v, size_t n);

/* The CPU model /proc/cpuinfo names, or "unknown". */
void bench_cpu_model(char *out, size_t n);

/* An executor's wake callback (any thread), and the bench's wait for it:
 * returns after a wake, or after ms milliseconds without one. */
void bench_wake(void *ud);
void bench_wait_wake(int ms);

#endif
