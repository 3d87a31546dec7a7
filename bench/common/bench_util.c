/* bench_util.c -- see bench_util.h. */
#include "bench/common/bench_util.h"

#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int bench_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

double bench_median(const double *v, size_t n)
{
    if (n == 0)
        return NAN;
    double *tmp = malloc(n * sizeof *tmp);
    if (!tmp)
        abort();
    memcpy(tmp, v, n * sizeof *v);
    qsort(tmp, n, sizeof *tmp, bench_cmp_double);
    double m = n % 2 ? tmp[n / 2] : (tmp[n / 2 - 1] + tmp[n / 2]) / 2;
    free(tmp);
    return m;
}

void bench_cpu_model(char *out, size_t n)
{
    snprintf(out, n, "unknown");
    FILE *ci = fopen("/proc/cpuinfo", "r");
    if (!ci)
        return;
    char line[256];
    while (fgets(line, sizeof line, ci)) {
        if (strncmp(line, "model name", 10) != 0)
            continue;
        char *c = strchr(line, ':');
        if (c) {
            snprintf(out, n, "%s", c + 2);
            out[strcspn(out, "\n")] = '\0';
        }
        break;
    }
    fclose(ci);
}

static pthread_mutex_t wake_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake_cv = PTHREAD_COND_INITIALIZER;
static bool woken;

void bench_wake(void *ud)
{
    (void)ud;
    pthread_mutex_lock(&wake_mu);
    woken = true;
    pthread_cond_signal(&wake_cv);
    pthread_mutex_unlock(&wake_mu);
}

void bench_wait_wake(int ms)
{
    pthread_mutex_lock(&wake_mu);
    if (!woken) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += (long)ms * 1000000;
        ts.tv_sec += ts.tv_nsec / 1000000000;
        ts.tv_nsec %= 1000000000;
        pthread_cond_timedwait(&wake_cv, &wake_mu, &ts);
    }
    woken = false;
    pthread_mutex_unlock(&wake_mu);
}
