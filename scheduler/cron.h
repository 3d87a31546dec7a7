/* cron.h -- cron schedules: parsing, time zones, next fire times, preview.
 *
 * The dialect (docs/schedules.md): "manual"; 5-field cron (minute hour day-of-month
 * month day-of-week) with *, a, a-b, * /n, a-b/n, a/n, comma lists, JAN-DEC and
 * SUN-SAT names (case-insensitive, 0 and 7 are Sunday); presets @yearly
 * @annually @monthly @weekly @daily @midnight @hourly; an optional leading
 * "CRON_TZ=<zone> " or "TZ=<zone> ". Beyond Vixie cron: L in day-of-month
 * (the last day), Ln / nL (the last weekday n) and n#k (the k-th weekday n,
 * k 1-5) in day-of-week, ? for * in a day field, and H items (seeded parse
 * only). Day-of-month and day-of-week both restricted (neither matches every
 * value of its range, however written): a day matches if either matches.
 * In day-of-week, "a/n" runs to 7 (= Sunday), as "a-7/n". Steps run 1..field
 * size (e.g. 1-60 in minute). Schedules that can never fire are rejected.
 * Input is limited to CRONX_TEXT_MAX bytes; zone names to [A-Za-z0-9_+-/],
 * relative, no "..".
 *
 * Time zones come from the system tz database (TZif files), are loaded once,
 * shared and never freed; the process TZ is never touched. A parsed struct
 * cronx is immutable: any thread may use it concurrently.
 *
 * DST contract: an hour field starting with '*' follows elapsed time (gap
 * times do not occur, fold times fire twice); any other hour field fires each
 * matching local date-time exactly once (inside a gap: at the first instant
 * after the gap; inside a fold: at the first occurrence).
 *
 * cronx_count counts the fires in a window without visiting each one.
 *
 * Instants are searched in 1800..9000 (earlier `after` values are clamped);
 * a search gives up after 400 years (CRONX_NEVER). Zone files are read from
 * /usr/share/zoneinfo, or $RRDEPLOY_ZONEINFO when set (tests). */
#ifndef RR_SCHEDULER_CRON_H
#define RR_SCHEDULER_CRON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/util.h"

#define CRONX_NEVER INT64_MIN    /* no next fire (manual, or none left) */
#define CRONX_LOCAL_MAX 32       /* "2026-01-01T00:00:00+05:30" + NUL */
#define CRONX_WARNING_MAX 8      /* warnings kept by a preview */
#define CRONX_WARNING_LEN 160
#define CRONX_TEXT_MAX 1024      /* longest schedule text accepted, bytes */
#define CRONX_RESOLVED_MAX (3 * CRONX_TEXT_MAX + 1) /* H resolved + NUL */

struct cronx;

/* Parse text. default_zone (NULL = "UTC") applies when there is no CRON_TZ=
 * prefix. On failure returns RR_E_INVAL and e->msg holds the specific reason
 * only, e.g. "minute 61 out of range 0-59" or "day-of-month 30 never occurs in
 * February"; the caller words it as "Invalid schedule '<s>': <reason>". */
int cronx_parse(const char *text, const char *default_zone,
                struct cronx **out /* OUT, free with cronx_free */,
                struct err *e) MUST_CHECK;

/* cronx_parse that also accepts H items (H, H(a-b), H/n, H(a-b)/n in any
 * field): each is replaced by a value, or a start-end/n, chosen by seed
 * (cronx_seed of the deployment's identity), the same on every call.
 * resolved (NULL, or resolved_cap bytes) receives the text with every H
 * replaced, e.g. "37 3 * * *" for "H H * * *"; "" on failure; it may be
 * longer than the text ("H/2" -> "1-59/2"), never more than CRONX_RESOLVED_MAX
 * bytes with the NUL. Plain cronx_parse rejects H. */
int cronx_parse_seeded(const char *text, const char *default_zone,
                       uint32_t seed, char *resolved /* OUT, may be NULL */,
                       size_t resolved_cap,
                       struct cronx **out /* OUT, free with cronx_free */,
                       struct err *e) MUST_CHECK;

/* The seed H draws from: CRC-32 (IEEE) of id[0..n), e.g. a deployment's
 * user "\0" project id. H in field i (minute 0 .. day-of-week 4) takes
 * (seed >> i) mod the range size, as croniter does with hash_id = id. */
uint32_t cronx_seed(const void *id, size_t n);

void cronx_free(struct cronx *c); /* NULL is fine */

bool cronx_is_manual(const struct cronx *c);
const char *cronx_zone_name(const struct cronx *c); /* "UTC" for manual */

/* The first fire instant (Unix seconds, UTC) strictly after `after`, or
 * CRONX_NEVER. */
int64_t cronx_next(const struct cronx *c, int64_t after);

/* The fires t with from <= t <= until: returns how many there are, with the
 * latest in *last and the one before it in *before_last (CRONX_NEVER when
 * there are fewer than 1 or 2; either pointer may be NULL). Exactly what
 * walking cronx_next from from - 1 gives, fire by fire, until a fire is past
 * `until` or there is none: the same DST rules, the same 1800..9000 clamp
 * (the first fire after 9000 still counts, none after it), the same 400-year
 * search bound. 0 for manual schedules and when from > until. Costs time in
 * proportion to the months spanned plus the DST transitions inside the
 * window, not to the number of fires (whole 400-year cycles cost one cycle). */
int64_t cronx_count(const struct cronx *c, int64_t from, int64_t until,
                    int64_t *last /* OUT */, int64_t *before_last /* OUT */);

/* Format instant t as local ISO-8601 with offset in the schedule's zone. */
void cronx_format_local(const struct cronx *c, int64_t t,
                        char out[CRONX_LOCAL_MAX]);

struct cronx_preview {
    int count;                                   /* fires written to at[] */
    int nwarnings;
    char warnings[CRONX_WARNING_MAX][CRONX_WARNING_LEN];
};

/* The next `count` fires strictly after `from` into at[] (room for count), and
 * warnings: DST gap/fold hits among those fires, the DOM/DOW OR rule in effect,
 * steps that do not divide their range evenly, months without a fire in some
 * or all years (day 31, the 5th weekday, February 29). */
void cronx_preview(const struct cronx *c, int64_t from, int count,
                   int64_t *at /* OUT */, struct cronx_preview *out /* OUT */);

/* Validate an IANA zone name and check it loads ("--timezone"). */
int cronx_zone_check(const char *name, struct err *e);

#endif
