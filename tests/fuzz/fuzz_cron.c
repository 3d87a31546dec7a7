/* fuzz_cron.c -- libFuzzer target for the cron parser, next-fire search and
 * counting.
 *
 * Purpose: any byte string must either be rejected with a reason or parse
 * into a schedule whose next/preview/count calls terminate and stay
 * consistent.
 * Design: the input is split at the first '\n' into a default zone name
 * (optional) and the schedule text; on success next/preview run from fixed
 * instants, including DST-heavy dates, and basic invariants are checked
 * (next > after, preview agrees with next); cronx_count is checked against
 * walking cronx_next over windows of up to two days around the same dates and
 * the 1800 and 9000 ends, their lengths drawn from the input's hash. The
 * text is parsed seeded (H allowed, the seed drawn from the input) and the
 * text with H resolved must parse unseeded into the same schedule; plain
 * parsing must accept exactly the texts without H that the seeded one does.
 * Thread: single-threaded. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler/cron.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_MAX 4096
#define COUNT_WINDOW_MAX (2 * 86400) /* the walk below stays cheap */

/* cronx_count over [from, from + len] must give what walking gives. */
static void check_count(const struct cronx *c, int64_t from, int64_t len)
{
    int64_t until = from + len, n = 0, last = CRONX_NEVER;
    int64_t before_last = CRONX_NEVER, t = from - 1;
    while ((t = cronx_next(c, t)) != CRONX_NEVER && t <= until) {
        before_last = last;
        last = t;
        n++;
    }
    int64_t got_last, got_before;
    if (cronx_count(c, from, until, &got_last, &got_before) != n ||
        got_last != last || got_before != before_last)
        abort();
}

/* FNV-1a: window lengths that follow the input, so the fuzzer steers them. */
static uint64_t hash(const uint8_t *data, size_t size)
{
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < size; i++)
        h = (h ^ data[i]) * 1099511628211ULL;
    return h;
}

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
    struct cronx *c = NULL, *plain = NULL;
    struct err e = {0}, e2 = {0};
    char resolved[CRONX_RESOLVED_MAX];
    uint32_t seed = (uint32_t)(hash(data, size) >> 13);
    if (cronx_parse_seeded(text, zone, seed, resolved, sizeof resolved, &c,
                           &e) != 0) {
        if (e.msg[0] == '\0' || resolved[0] != '\0')
            abort(); /* every rejection says why */
        if (cronx_parse(text, zone, &plain, &e2) == 0)
            abort(); /* H is all a seed adds */
        return 0;
    }
    /* The resolved text is the same schedule, without H. */
    if (strlen(resolved) <= CRONX_TEXT_MAX &&
        cronx_parse(resolved, zone, &plain, &e2) != 0)
        abort();
    for (int64_t t = 1772900000, k = 0; plain && k < 8; k++) {
        int64_t a = cronx_next(c, t), b = cronx_next(plain, t);
        if (a != b)
            abort();
        if (a == CRONX_NEVER)
            break;
        t = a;
    }
    cronx_free(plain);
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
    /* each window starts up to a day after one of these and lasts up to two */
    static const int64_t windows[] = {
        1772900000,           /* 2026-03-07T16:13Z, before New York's gap */
        1793500000,           /* 2026-11-01T02:26Z, before New York's fold */
        1775170000,           /* 2026-04-02T22:46Z, before Lord Howe's fold */
        1774700000,           /* 2026-03-28T12:13Z, before Berlin's gap */
        -5364662400 - 86400,  /* 1799-12-31T00:00Z */
        221845392000 - 86400, /* 8999-12-31T00:00Z */
    };
    uint64_t h = hash(data, size);
    for (size_t i = 0; i < sizeof windows / sizeof *windows; i++) {
        int64_t from = windows[i] + (int64_t)(h % 86400);
        h = h * 6364136223846793005ULL + 1442695040888963407ULL;
        int64_t len = (int64_t)((h >> 16) % (COUNT_WINDOW_MAX + 1));
        check_count(c, from, len);
        int64_t fire = cronx_next(c, from); /* a window starting on a fire */
        if (fire != CRONX_NEVER)
            check_count(c, fire, len);
    }
    int64_t last, before_last;
    if (cronx_count(c, 10, 0, &last, &before_last) != 0 ||
        last != CRONX_NEVER || before_last != CRONX_NEVER)
        abort();
    (void)cronx_zone_name(c);
    (void)cronx_is_manual(c);
    cronx_free(c);
    return 0;
}
