/* fuzz_cron.c -- libFuzzer target for the cron parser and next-fire search.
 *
 * Purpose: any byte string must either be rejected with a reason or parse
 * into a schedule whose next/preview calls terminate and stay consistent.
 * Design: the input is split at the first '\n' into a default zone name
 * (optional) and the schedule text; on success next/preview run from fixed
 * instants, including DST-heavy dates, and basic invariants are checked
 * (next > after, preview agrees with next). Thread: single-threaded. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler/cron.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_MAX 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > FUZZ_MAX)
        return 0;
    char buf[FUZZ_MAX + 1];
    memcpy(buf, data, size);
    buf[size] = '\0';
    const char *zone = NULL, *text = buf;
    char *nl = memchr(buf, '\n', size);
    if (nl && nl - buf < 64) {
        *nl = '\0';
        zone = buf;
        text = nl + 1;
    }
    struct cronx *c = NULL;
    struct err e = {0};
    if (cronx_parse(text, zone, &c, &e) != 0) {
        if (e.msg[0] == '\0')
            abort(); /* every rejection says why */
        return 0;
    }
    static const int64_t froms[] = {
        0, 1772900000, 1793500000, 1541300000, 4102444800, -1, INT64_MAX,
        INT64_MIN + 1, 7258118400,
    };
    for (size_t i = 0; i < sizeof froms / sizeof *froms; i++) {
        int64_t t = froms[i];
        for (int k = 0; k < 4; k++) {
            int64_t n = cronx_next(c, t);
            if (n == CRONX_NEVER)
                break;
            if (n <= t)
                abort(); /* must be strictly after */
            char out[CRONX_LOCAL_MAX];
            cronx_format_local(c, n, out);
            if (strlen(out) >= CRONX_LOCAL_MAX)
                abort();
            t = n;
        }
    }
    int64_t at[16];
    struct cronx_preview pv;
    cronx_preview(c, 1772900000, 16, at, &pv);
    int64_t t = 1772900000;
    for (int i = 0; i < pv.count; i++) {
        t = cronx_next(c, t);
        if (t != at[i])
            abort();
    }
    (void)cronx_zone_name(c);
    (void)cronx_is_manual(c);
    cronx_free(c);
    return 0;
}
