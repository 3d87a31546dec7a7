/* bench_util.c -- see bench_util.h. */
#include "bench/common/bench_util.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
