/* scheduler_internal.h -- declarations shared by cron.c and tz.c only.
 *
 * Two layers: civil-calendar arithmetic (proleptic Gregorian, int64 days since
 * 1970-01-01) and time zones (TZif + POSIX TZ footer) presented as "spans":
 * maximal intervals of UTC instants with one UTC offset. cron.c works on local
 * wall-clock seconds ("local" = UTC instant + offset, counted as if it were
 * UTC) and uses spans to map them back to instants. */
#ifndef RR_SCHEDULER_INTERNAL_H
#define RR_SCHEDULER_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "util/util.h"

/* ------------------------------------------------------------ civil time */

/* Days since 1970-01-01 of y-m-d (m 1..12, d 1..31); any y (H. Hinnant). */
int64_t cronx__days_from_civil(int64_t y, int m, int d);
/* Inverse of cronx__days_from_civil. */
void cronx__civil_from_days(int64_t days, int64_t *y, int *m, int *d);
bool cronx__is_leap(int64_t y);
int cronx__days_in_month(int64_t y, int m);
/* 0 = Sunday .. 6 = Saturday */
int cronx__weekday(int64_t days);
/* Floor division and modulo for negative numerators. */
int64_t cronx__floordiv(int64_t a, int64_t b);

/* ------------------------------------------------------------ time zones */

#define CRONX_ZONE_NAME_MAX 255
#define CRONX_ABBR_MAX 16

struct cronx__zone; /* immutable once loaded; lives until process exit */

/* One span of constant offset: instants in [start, end) have local time
 * t + off. start == INT64_MIN / end == INT64_MAX mean unbounded. prev_off is
 * the offset in force just before start (== off when start is unbounded). */
struct cronx__span {
    int64_t start;
    int64_t end;
    int32_t off;
    int32_t prev_off;
    bool isdst;
    const char *abbr; /* borrowed from the zone: lives forever */
};

/* Find or load zone `name` (validated first). Returns a borrowed pointer that
 * stays valid for the life of the process, or NULL with e set (RR_E_INVAL:
 * bad or unknown name). Thread-safe. */
const struct cronx__zone *cronx__zone_get(const char *name, struct err *e);
const char *cronx__zone_name(const struct cronx__zone *z);
/* True when the zone has one fixed offset for all time (e.g. UTC). */
bool cronx__zone_fixed(const struct cronx__zone *z);
/* The span containing instant t. */
void cronx__zone_span(const struct cronx__zone *z, int64_t t,
                      struct cronx__span *out /* OUT */);

#endif
