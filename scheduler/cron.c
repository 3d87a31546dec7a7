/* cron.c -- cron schedules: parser, next fire time, preview (docs/schedules.md).
 *
 * Purpose: turn schedule text into an immutable struct cronx and answer "when
 * is the first fire strictly after instant t" under the documented DST
 * contract, fast enough to call for every deployment on every wake; and "how
 * many fires between two instants, and the latest two" without visiting them.
 *
 * Design: fields are bitmasks (minutes uint64, hours uint32, months uint16,
 * and for days a precomputed 31-bit mask for each weekday of the 1st, with
 * the DOM/DOW OR rule and n#k already applied; L and Ln also depend on the
 * month's length, so those schedules finish the mask per month in
 * month_days). H items are resolved into plain syntax while parsing, from a
 * seed the caller derives from the deployment. The search runs on local wall-clock
 * seconds and jumps by month/day/hour/minute using count-trailing-zeros, so a
 * next-fire is a handful of steps. Time zones come from tz.c as "spans" of
 * constant offset:
 *   - elapsed mode (hour field starts with '*'): fires are the instants whose
 *     local time matches; walk span by span, searching local times inside it;
 *   - wall mode (any other hour field): a matching local time L fires at
 *     f(L) = min{t : local(t) >= L}. f is monotone, equals the only instant
 *     for a normal time, the first occurrence in a fold, and the end of the
 *     gap for a time inside a gap; so the answer is f of the first matching L
 *     above the highest local time already reached at `after`.
 * Parse errors name the field and the reason only; the server adds
 * "Invalid schedule '<s>': ".
 *
 * Thread: parsing touches only the zone cache (locked in tz.c); a parsed
 * struct cronx is read-only, so any thread may use it concurrently. */
#include "scheduler/cron.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler/scheduler_internal.h"

/* ============================================================ limits */

#define MAX_TOKENS 16
#define STATIC_WARN_MAX 4
#define YEAR_SECS (366LL * 86400)
#define HORIZON_YEARS 400 /* give up after this much searching */

/* Instants outside [T_MIN, T_MAX) are clamped (1800-01-01 .. 9000-01-01). */
#define T_MIN (-5364662400LL)
#define T_MAX (221845392000LL)

enum { F_MIN, F_HOUR, F_DOM, F_MON, F_DOW, NFIELDS };

static const struct field_def {
    const char *name;
    int lo, hi;
} fields[NFIELDS] = {
    {"minute", 0, 59},
    {"hour", 0, 23},
    {"day-of-month", 1, 31},
    {"month", 1, 12},
    {"day-of-week", 0, 7},
};

static const char *const month_names[13] = {
    "", "JAN", "FEB", "MAR", "APR", "MAY", "JUN",
    "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"};
static const char *const month_full[13] = {
    "", "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December"};
static const char *const dow_names[7] = {"SUN", "MON", "TUE", "WED",
                                         "THU", "FRI", "SAT"};

struct cronx {
    bool manual;
    bool elapsed;               /* hour field starts with '*' */
    bool dom_or;                /* DOM and DOW both restricted */
    bool fixed;                 /* zone has one offset */
    bool by_dim;                /* L or Ln: the days depend on the month's length */
    uint8_t dows;               /* bits 0..6 */
    uint8_t dow_last;           /* Ln: bit n = the last weekday n of the month */
    uint16_t months;            /* bits 1..12 */
    uint64_t minutes;           /* bits 0..59 */
    uint32_t hours;             /* bits 0..23 */
    uint32_t doms;              /* bits 1..31; bit 0 = L, the last day */
    /* matching days 1..31 when the 1st is that weekday, the OR rule and n#k
     * applied; when by_dim, the day-of-week days only (month_days adds the
     * rest) */
    uint32_t days_by_first[7];
    const struct cronx__zone *zone; /* borrowed from the zone cache (immortal) */
    int32_t fixed_off;
    int nstatic;
    /* owned, NULL or nstatic entries: most schedules have no warning, and a
     * server holds one struct cronx per deployment */
    char (*static_warn)[CRONX_WARNING_LEN];
};

/* ============================================================ parsing */

struct parse {
    struct cronx *c;
    struct err *e;
    bool seeded;      /* H allowed: seed is the deployment's hash */
    uint32_t seed;
    bool dom_last;    /* L in day-of-month */
    uint8_t dow_last; /* Ln / nL: bit n */
    uint8_t nth[7];   /* n#k: bit k of nth[n] */
    char *res;        /* borrowed, NULL or res_cap bytes: the text, H resolved */
    size_t res_cap, res_len;
};

/* Append s[0..n) to the resolved text (truncated to its buffer). */
static void res_put(struct parse *ps, const char *s, size_t n)
{
    if (!ps->res)
        return;
    size_t room = ps->res_cap - 1 - ps->res_len;
    if (n > room)
        n = room;
    memcpy(ps->res + ps->res_len, s, n);
    ps->res_len += n;
    ps->res[ps->res_len] = '\0';
}

static bool is_digit(char ch) { return ch >= '0' && ch <= '9'; }
static bool is_alpha(char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z');
}
static char upper(char ch) { return ch >= 'a' && ch <= 'z' ? (char)(ch - 32) : ch; }

/* Case-insensitive compare of s[0..n) with NUL-terminated upper-case w. */
static bool name_eq(const char *s, size_t n, const char *w)
{
    if (strlen(w) != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (upper(s[i]) != w[i])
            return false;
    return true;
}

static void static_warn(struct cronx *c, const char *fmt, ...) RR_PRINTF(2, 3);
static void static_warn(struct cronx *c, const char *fmt, ...)
{
    if (c->nstatic >= STATIC_WARN_MAX)
        return;
    c->static_warn = xrealloc(c->static_warn,
                              (size_t)(c->nstatic + 1) * sizeof *c->static_warn);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->static_warn[c->nstatic++], CRONX_WARNING_LEN, fmt, ap);
    va_end(ap);
}

/* Classify an unusable run of letters. */
static int bad_letters(struct parse *ps, int f, const char *s, size_t n)
{
    if (name_eq(s, n, "L") && f == F_DOM)
        return err_set(ps->e, RR_E_INVAL,
                       "'L' (the last day) must stand alone in a day-of-month "
                       "list item");
    if (name_eq(s, n, "L") && f == F_DOW)
        return err_set(ps->e, RR_E_INVAL,
                       "'L' in day-of-week needs a weekday: 5L or L5 is the "
                       "last Friday of the month");
    if (name_eq(s, n, "L"))
        return err_set(ps->e, RR_E_INVAL,
                       "'L' (last) is only for day-of-month or day-of-week, "
                       "not %s", fields[f].name);
    if (name_eq(s, n, "W") || name_eq(s, n, "LW"))
        return err_set(ps->e, RR_E_INVAL,
                       "'W' (nearest weekday) not supported in %s: rrdeploy "
                       "never moves a fire to another day; write the days, "
                       "e.g. L for the last day or 1-5 in day-of-week for "
                       "weekdays", fields[f].name);
    if (name_eq(s, n, "H"))
        return err_set(ps->e, RR_E_INVAL,
                       "'H' must start its item in %s: H, H(a-b), H/n or "
                       "H(a-b)/n", fields[f].name);
    if (name_eq(s, n, "R"))
        return err_set(ps->e, RR_E_INVAL,
                       "'R' (random) not supported in %s: write H for a "
                       "value chosen once per deployment", fields[f].name);
    if (f == F_MON)
        return err_set(ps->e, RR_E_INVAL, "unknown month name '%.*s'",
                       (int)(n > 32 ? 32 : n), s);
    if (f == F_DOW)
        return err_set(ps->e, RR_E_INVAL, "unknown day-of-week name '%.*s'",
                       (int)(n > 32 ? 32 : n), s);
    return err_set(ps->e, RR_E_INVAL, "unexpected '%.*s' in %s",
                   (int)(n > 32 ? 32 : n), s, fields[f].name);
}

/* One value (number or name) at *pp within [.., end). */
static int parse_value(struct parse *ps, int f, const char **pp,
                       const char *end, int *out)
{
    const char *p = *pp, *s = p;
    const struct field_def *fd = &fields[f];
    if (p < end && is_digit(*p)) {
        long v = 0;
        while (p < end && is_digit(*p)) {
            if (v < 100000)
                v = v * 10 + (*p - '0');
            p++;
        }
        if (p < end && is_alpha(*p)) { /* "5L", "15W", "3#2" handled before */
            const char *a = p;
            while (p < end && is_alpha(*p))
                p++;
            return bad_letters(ps, f, a, (size_t)(p - a));
        }
        if (v < fd->lo || v > fd->hi)
            return err_set(ps->e, RR_E_INVAL, "%s %.*s out of range %d-%d",
                           fd->name, (int)(p - s > 12 ? 12 : p - s), s, fd->lo,
                           fd->hi);
        *out = (int)v;
        *pp = p;
        return 0;
    }
    if (p < end && is_alpha(*p)) {
        while (p < end && (is_alpha(*p) || is_digit(*p)))
            p++;
        size_t n = (size_t)(p - s);
        if (f == F_MON)
            for (int i = 1; i <= 12; i++)
                if (name_eq(s, n, month_names[i])) {
                    *out = i;
                    *pp = p;
                    return 0;
                }
        if (f == F_DOW)
            for (int i = 0; i < 7; i++)
                if (name_eq(s, n, dow_names[i])) {
                    *out = i;
                    *pp = p;
                    return 0;
                }
        return bad_letters(ps, f, s, n);
    }
    if (p >= end)
        return err_set(ps->e, RR_E_INVAL, "missing value in %s", fd->name);
    return err_set(ps->e, RR_E_INVAL, "unexpected '%c' in %s", *p, fd->name);
}

/* Uneven step warning for an item lo-hi/step that runs to the top of the
 * field's cycle. */
static void check_uneven(struct parse *ps, int f, const char *item, size_t n,
                         int lo, int hi, int step)
{
    int clo = fields[f].lo, chi = f == F_DOW ? 6 : fields[f].hi;
    if (hi < chi || step <= 1)
        return;
    if (hi > chi)
        hi = chi;
    int last = lo + (hi - lo) / step * step;
    int wrap = (chi + 1 - last) + (lo - clo);
    if (wrap == step)
        return;
    char list[64];
    int count = (hi - lo) / step + 1;
    if (count <= 4) {
        size_t len = 0;
        list[0] = '\0';
        for (int v = lo; v <= hi && len < sizeof list - 8; v += step)
            len += (size_t)snprintf(list + len, sizeof list - len, "%s%d",
                                    v == lo ? "" : ",", v);
    } else {
        snprintf(list, sizeof list, "%d,%d,\xe2\x80\xa6,%d", lo, lo + step, last);
    }
    static_warn(ps->c, "%.*s in %s does not divide %d evenly: fires at %s then %d again",
                (int)(n > 24 ? 24 : n), item, fields[f].name, chi - clo + 1,
                list, lo);
}

/* One comma-separated item; sets bits in *mask. */
static int parse_item(struct parse *ps, int f, const char *s, const char *end,
                      uint64_t *mask)
{
    const struct field_def *fd = &fields[f];
    const char *p = s;
    int lo, hi, step = 1;
    bool star = false, range = false;
    if (s == end)
        return err_set(ps->e, RR_E_INVAL, "empty list item in %s", fd->name);
    for (const char *q = s; q < end; q++) {
        if (!is_digit(*q) && !is_alpha(*q) && *q != '*' && *q != '-' &&
            *q != '/') {
            if ((unsigned char)*q < 0x20 || (unsigned char)*q >= 0x7f)
                return err_set(ps->e, RR_E_INVAL,
                               "unexpected byte 0x%02x in %s",
                               (unsigned char)*q, fd->name);
            return err_set(ps->e, RR_E_INVAL, "unexpected '%c' in %s", *q,
                           fd->name);
        }
    }
    if (*p == '*') {
        star = true;
        p++;
        lo = fd->lo;
        hi = fd->hi;
    } else {
        const char *a = p;
        int rc = parse_value(ps, f, &p, end, &lo);
        if (rc)
            return rc;
        hi = lo;
        if (p < end && *p == '-') {
            const char *a_end = p;
            p++;
            const char *b = p;
            rc = parse_value(ps, f, &p, end, &hi);
            if (rc)
                return rc;
            range = true;
            if (lo > hi)
                return err_set(ps->e, RR_E_INVAL, "reversed range %.*s-%.*s in %s",
                               (int)(a_end - a > 12 ? 12 : a_end - a), a,
                               (int)(p - b > 12 ? 12 : p - b), b, fd->name);
        }
    }
    if (p < end && *p == '/') {
        p++;
        const char *st = p;
        long v = 0;
        while (p < end && is_digit(*p)) {
            if (v < 100000)
                v = v * 10 + (*p - '0');
            p++;
        }
        if (p == st)
            return err_set(ps->e, RR_E_INVAL, "missing step after '/' in %s",
                           fd->name);
        if (v == 0)
            return err_set(ps->e, RR_E_INVAL, "step 0 in %s", fd->name);
        long maxstep = fd->hi - fd->lo + 1;
        if (v > maxstep)
            return err_set(ps->e, RR_E_INVAL, "step %.*s out of range 1-%ld in %s",
                           (int)(p - st > 12 ? 12 : p - st), st, maxstep,
                           fd->name);
        step = (int)v;
        if (!star && !range)
            hi = fd->hi; /* a/n = a-max/n */
        check_uneven(ps, f, s, (size_t)(end - s), lo, hi, step);
    } else if (star && p < end && *p == '-') {
        return err_set(ps->e, RR_E_INVAL, "unexpected '-' after '*' in %s",
                       fd->name);
    }
    if (p < end) {
        if (*p == '/')
            return err_set(ps->e, RR_E_INVAL, "more than one '/' in %s",
                           fd->name);
        if (*p == '-')
            return err_set(ps->e, RR_E_INVAL, "unexpected '-' in %s", fd->name);
        return err_set(ps->e, RR_E_INVAL, "unexpected '%c' in %s", *p,
                       fd->name);
    }
    for (int v = lo; v <= hi; v += step)
        *mask |= 1ULL << v;
    return 0;
}

/* A number of digits only at *pp (for H(a-b)); -1 when there is none. */
static long digits(const char **pp, const char *end)
{
    const char *p = *pp;
    long v = 0;
    if (p >= end || !is_digit(*p))
        return -1;
    while (p < end && is_digit(*p)) {
        if (v < 100000)
            v = v * 10 + (*p - '0');
        p++;
    }
    *pp = p;
    return v;
}

/* A hashed item "H", "H(a-b)", "H/n" or "H(a-b)/n" of field f, resolved
 * into plain syntax in out: a value, or start-end/n, chosen by the seed.
 * Plain H in day-of-month draws from 1-28, which every month has. */
static int expand_h(struct parse *ps, int f, const char *s, const char *end,
                    char *out, size_t cap)
{
    const struct field_def *fd = &fields[f];
    const char *p = s + 1;
    if (!ps->seeded)
        return err_set(ps->e, RR_E_INVAL,
                       "'H' in %s needs a deployment to hash (its user and "
                       "project id)", fd->name);
    int lo = fd->lo, hi = f == F_DOW ? 6 : fd->hi;
    int plain_hi = f == F_DOM ? 28 : hi;
    if (p < end && *p == '(') {
        p++;
        long a = digits(&p, end), b = -1;
        if (a >= 0 && p < end && *p == '-') {
            p++;
            b = digits(&p, end);
        }
        if (a < 0 || b < 0 || p >= end || *p != ')')
            return err_set(ps->e, RR_E_INVAL,
                           "H( in %s needs a range and ')', as H(%d-%d)",
                           fd->name, fd->lo, fd->lo + (fd->hi - fd->lo) / 2);
        p++;
        if (a < fd->lo || a > fd->hi || b < fd->lo || b > fd->hi)
            return err_set(ps->e, RR_E_INVAL, "%s H(%ld-%ld) out of range %d-%d",
                           fd->name, a, b, fd->lo, fd->hi);
        if (a > b)
            return err_set(ps->e, RR_E_INVAL, "reversed range H(%ld-%ld) in %s",
                           a, b, fd->name);
        lo = (int)a;
        hi = plain_hi = (int)b;
    }
    long step = 0;
    if (p < end && *p == '/') {
        p++;
        const char *st = p;
        step = digits(&p, end);
        if (step < 0)
            return err_set(ps->e, RR_E_INVAL, "missing step after '/' in %s",
                           fd->name);
        if (step == 0)
            return err_set(ps->e, RR_E_INVAL, "step 0 in %s", fd->name);
        long maxstep = fd->hi - fd->lo + 1;
        if (step > maxstep)
            return err_set(ps->e, RR_E_INVAL, "step %.*s out of range 1-%ld in %s",
                           (int)(p - st > 12 ? 12 : p - st), st, maxstep,
                           fd->name);
    }
    if (p < end)
        return err_set(ps->e, RR_E_INVAL,
                       "unexpected '%c' after H in %s: H, H(a-b), H/n or "
                       "H(a-b)/n", *p, fd->name);
    uint32_t h = ps->seed >> f; /* croniter's choice for H and H(a-b) */
    if (step == 0) {
        snprintf(out, cap, "%d", (int)(h % (uint32_t)(plain_hi - lo + 1)) + lo);
    } else {
        uint32_t span = (uint32_t)(hi - lo + 1);
        uint32_t off = h % ((uint32_t)step < span ? (uint32_t)step : span);
        snprintf(out, cap, "%d-%d/%ld", lo + (int)off, hi, step);
    }
    return 0;
}

/* The forms beyond Vixie cron: H items in any field, L in day-of-month, Ln
 * nL n#k in day-of-week. Returns 1 when the item is none of them. */
static int parse_special(struct parse *ps, int f, const char *s,
                         const char *end, uint64_t *mask)
{
    const struct field_def *fd = &fields[f];
    size_t n = (size_t)(end - s);
    if (memchr(s, '?', n))
        return f == F_DOM || f == F_DOW
                   ? err_set(ps->e, RR_E_INVAL,
                             "'?' must be the whole %s field", fd->name)
                   : err_set(ps->e, RR_E_INVAL,
                             "'?' is only for day-of-month or day-of-week, "
                             "not %s", fd->name);
    if (n > 0 && upper(*s) == 'H') {
        char buf[32];
        int rc = expand_h(ps, f, s, end, buf, sizeof buf);
        if (rc)
            return rc;
        res_put(ps, buf, strlen(buf));
        return parse_item(ps, f, buf, buf + strlen(buf), mask);
    }
    if (f == F_DOM && name_eq(s, n, "L")) {
        ps->dom_last = true;
        res_put(ps, s, n);
        return 0;
    }
    const char *hash = memchr(s, '#', n);
    if (f != F_DOW)
        return hash ? err_set(ps->e, RR_E_INVAL,
                              "'#' (n#k, the k-th weekday n) is only for "
                              "day-of-week, not %s: 0 0 * 2 5#5 is the 5th "
                              "Friday of February", fd->name)
                    : 1;
    int v;
    if (hash) {
        const char *p = s;
        if (hash == s)
            return err_set(ps->e, RR_E_INVAL,
                           "'#' needs one weekday before it in day-of-week, "
                           "as 1#2 (the second Monday)");
        int rc = parse_value(ps, f, &p, hash, &v);
        if (rc)
            return rc;
        if (p != hash)
            return err_set(ps->e, RR_E_INVAL,
                           "'#' needs one weekday before it in day-of-week, "
                           "as 1#2 (the second Monday)");
        p = hash + 1;
        const char *st = p;
        long k = digits(&p, end);
        if (k < 0 || p != end)
            return err_set(ps->e, RR_E_INVAL,
                           "'#' needs an occurrence 1-5 after it in "
                           "day-of-week, as 1#2 (the second Monday)");
        if (k < 1 || k > 5)
            return err_set(ps->e, RR_E_INVAL,
                           "occurrence #%.*s out of range 1-5 in day-of-week",
                           (int)(p - st > 12 ? 12 : p - st), st);
        ps->nth[v % 7] |= (uint8_t)(1u << k);
        res_put(ps, s, n);
        return 0;
    }
    if (n >= 2 && (upper(s[0]) == 'L' || upper(end[-1]) == 'L')) {
        const char *a = upper(s[0]) == 'L' ? s + 1 : s;
        const char *b = upper(s[0]) == 'L' ? end : end - 1;
        const char *p = a;
        if (a == b || !(is_digit(*a) || is_alpha(*a)))
            return bad_letters(ps, f, "L", 1);
        int rc = parse_value(ps, f, &p, b, &v);
        if (rc)
            return rc;
        if (p != b)
            return err_set(ps->e, RR_E_INVAL,
                           "'L' in day-of-week takes one weekday: 5L or L5 is "
                           "the last Friday of the month");
        ps->dow_last |= (uint8_t)(1u << (v % 7));
        res_put(ps, s, n);
        return 0;
    }
    return 1;
}

static int parse_field(struct parse *ps, int f, const char *s, size_t n,
                       uint64_t *mask)
{
    const char *end = s + n, *p = s;
    *mask = 0;
    if (n == 1 && *s == '?' && (f == F_DOM || f == F_DOW)) {
        res_put(ps, s, n);
        static const char star[] = "*"; /* Quartz: no specific value */
        return parse_item(ps, f, star, star + 1, mask);
    }
    for (;;) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *item_end = comma ? comma : end;
        if (p != s)
            res_put(ps, ",", 1);
        int rc = parse_special(ps, f, p, item_end, mask);
        if (rc == 1) {
            res_put(ps, p, (size_t)(item_end - p));
            rc = parse_item(ps, f, p, item_end, mask);
        }
        if (rc)
            return rc;
        if (!comma)
            break;
        p = comma + 1;
    }
    if (f == F_DOW && (*mask & (1ULL << 7)))
        *mask = (*mask | 1) & 0x7f;
    return 0;
}

/* The days of a month whose 1st is weekday w1 and which has dim days that
 * match the day fields (bits 1..31; bits above dim are meaningless). */
static uint32_t month_days_slow(const struct cronx *c, int w1, int dim)
{
    uint32_t wset = c->days_by_first[w1];
    uint32_t dset = c->doms & ~1u;
    if (c->doms & 1)
        dset |= 1u << dim;
    if (c->dow_last) {
        int wl = (w1 + dim - 1) % 7; /* weekday of the last day */
        for (int n = 0; n < 7; n++)
            if ((c->dow_last >> n) & 1)
                wset |= 1u << (dim - (wl - n + 7) % 7);
    }
    return c->dom_or ? dset | wset : dset & wset;
}

static inline uint32_t month_days(const struct cronx *c, int w1, int dim)
{
    if (__builtin_expect(c->by_dim, 0))
        return month_days_slow(c, w1, dim);
    return c->days_by_first[w1];
}

/* month_days for month m of year y, its length looked up only when needed. */
static inline uint32_t month_days_ym(const struct cronx *c, int w1, int64_t y,
                                     int m)
{
    if (__builtin_expect(c->by_dim, 0))
        return month_days_slow(c, w1, cronx__days_in_month(y, m));
    return c->days_by_first[w1];
}

/* Which calendars of month mo fire: bit w1 for a month whose 1st is weekday
 * w1, bit 7 + w1 for the same in a leap year (February differs). */
static unsigned month_pattern(const struct cronx *c, int mo)
{
    unsigned pat = 0;
    for (int leap = 0; leap < 2; leap++) {
        int dim = mo == 2 ? 28 + leap : cronx__days_in_month(2001, mo);
        uint32_t in = (uint32_t)(((2ULL << dim) - 1) & ~1ULL);
        for (int w1 = 0; w1 < 7; w1++)
            if (month_days(c, w1, dim) & in)
                pat |= 1u << (leap * 7 + w1);
    }
    return pat;
}

/* "April, June or September" */
static void month_list(uint16_t months, char *out, size_t cap)
{
    int n = 0, total = 0;
    for (int m = 1; m <= 12; m++)
        total += (months >> m) & 1;
    size_t len = 0;
    out[0] = '\0';
    for (int m = 1; m <= 12 && len < cap; m++) {
        if (!((months >> m) & 1))
            continue;
        const char *sep = n == 0 ? "" : (n == total - 1 ? " or " : ", ");
        int w = snprintf(out + len, cap - len, "%s%s", sep, month_full[m]);
        if (w < 0)
            break;
        len += (size_t)w;
        n++;
    }
}

static int compile(struct parse *ps, const char *tok[NFIELDS],
                   const size_t toklen[NFIELDS])
{
    struct cronx *c = ps->c;
    uint64_t m[NFIELDS];
    for (int f = 0; f < NFIELDS; f++) {
        if (f)
            res_put(ps, " ", 1);
        int rc = parse_field(ps, f, tok[f], toklen[f], &m[f]);
        if (rc)
            return rc;
    }
    c->minutes = m[F_MIN];
    c->hours = (uint32_t)m[F_HOUR];
    c->months = (uint16_t)m[F_MON];
    c->elapsed = tok[F_HOUR][0] == '*';
    /* A field matching every value of its range is unrestricted, however it
     * is written (croniter's reading): the OR rule needs both restricted. */
    bool dom_full = (m[F_DOM] & 0xfffffffeULL) == 0xfffffffeULL;
    bool dow_full = (m[F_DOW] & 0x7f) == 0x7f;
    c->dom_or = !dom_full && !dow_full;
    c->doms = (uint32_t)m[F_DOM] | (ps->dom_last && !dom_full ? 1u : 0u);
    c->dows = (uint8_t)m[F_DOW];
    c->dow_last = dow_full ? 0 : ps->dow_last;
    c->by_dim = (c->doms & 1) || c->dow_last;
    for (int w1 = 0; w1 < 7; w1++) {
        uint32_t dm = 0;
        for (int d = 1; d <= 31; d++) {
            int wd = (w1 + d - 1) % 7;
            if (((c->dows >> wd) & 1) || ((ps->nth[wd] >> ((d + 6) / 7)) & 1))
                dm |= 1u << d;
        }
        if (c->by_dim)
            c->days_by_first[w1] = dm;
        else
            c->days_by_first[w1] = c->dom_or ? (c->doms | dm) : (c->doms & dm);
    }
    /* Never-firing check, exact: every month starts on every weekday, in
     * leap and common years, somewhere in the 400-year cycle. */
    bool ok = false;
    for (int mo = 1; mo <= 12 && !ok; mo++)
        if ((c->months >> mo) & 1)
            ok = month_pattern(c, mo) != 0;
    if (!ok) {
        char list[128];
        month_list(c->months, list, sizeof list);
        if (dow_full)
            return err_set(ps->e, RR_E_INVAL, "day-of-month %.*s never occurs in %s",
                           (int)(toklen[F_DOM] > 40 ? 40 : toklen[F_DOM]),
                           tok[F_DOM], list);
        return err_set(ps->e, RR_E_INVAL,
                       "day-of-month %.*s and day-of-week %.*s never meet in %s",
                       (int)(toklen[F_DOM] > 40 ? 40 : toklen[F_DOM]), tok[F_DOM],
                       (int)(toklen[F_DOW] > 40 ? 40 : toklen[F_DOW]), tok[F_DOW],
                       list);
    }
    if (c->dom_or)
        static_warn(c, "day-of-month and day-of-week are both restricted: "
                       "a day matches if either matches");
    return 0;
}

static bool has_prefix(const char *s, size_t n, const char *pre)
{
    size_t k = strlen(pre);
    return n >= k && memcmp(s, pre, k) == 0;
}

static const struct {
    const char *name;
    const char *expr;
} presets[] = {
    {"@YEARLY", "0 0 1 1 *"},  {"@ANNUALLY", "0 0 1 1 *"},
    {"@MONTHLY", "0 0 1 * *"}, {"@WEEKLY", "0 0 * * 0"},
    {"@DAILY", "0 0 * * *"},   {"@MIDNIGHT", "0 0 * * *"},
    {"@HOURLY", "0 * * * *"},
};

/* Split s[0..n) on blanks into tok[]; returns the token count (may exceed
 * MAX_TOKENS; only the first MAX_TOKENS are stored). */
static int split(const char *s, size_t n, const char *tok[MAX_TOKENS],
                 size_t toklen[MAX_TOKENS])
{
    int count = 0;
    size_t i = 0;
    while (i < n) {
        while (i < n && (s[i] == ' ' || s[i] == '\t'))
            i++;
        if (i >= n)
            break;
        size_t j = i;
        while (j < n && s[j] != ' ' && s[j] != '\t')
            j++;
        if (count < MAX_TOKENS) {
            tok[count] = s + i;
            toklen[count] = j - i;
        }
        count++;
        i = j;
    }
    return count;
}

static int parse_text(struct parse *ps, const char *text,
                      const char *default_zone)
{
    struct cronx *c = ps->c;
    size_t n = strnlen(text, CRONX_TEXT_MAX + 1);
    if (n > CRONX_TEXT_MAX)
        return err_set(ps->e, RR_E_INVAL, "schedule too long (more than %d bytes)",
                       CRONX_TEXT_MAX);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)text[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            return err_set(ps->e, RR_E_INVAL,
                           "control character 0x%02x not allowed", ch);
    }
    const char *tok[MAX_TOKENS];
    size_t toklen[MAX_TOKENS];
    int ntok = split(text, n, tok, toklen);
    if (ntok == 0)
        return err_set(ps->e, RR_E_INVAL, "empty schedule");

    const char *zone = default_zone ? default_zone : "UTC";
    char zbuf[CRONX_ZONE_NAME_MAX + 1];
    int first = 0;
    if (has_prefix(tok[0], toklen[0], "CRON_TZ=") ||
        has_prefix(tok[0], toklen[0], "TZ=")) {
        size_t k = tok[0][0] == 'C' ? 8 : 3;
        size_t zl = toklen[0] - k;
        if (zl == 0)
            return err_set(ps->e, RR_E_INVAL, "missing time zone after %.*s",
                           (int)k, tok[0]);
        if (zl > CRONX_ZONE_NAME_MAX)
            return err_set(ps->e, RR_E_INVAL, "time zone name too long");
        memcpy(zbuf, tok[0] + k, zl);
        zbuf[zl] = '\0';
        zone = zbuf;
        first = 1;
        res_put(ps, tok[0], toklen[0]);
        res_put(ps, " ", 1);
        if (ntok == 1)
            return err_set(ps->e, RR_E_INVAL,
                           "missing cron expression after %.*s",
                           (int)(toklen[0] > 64 ? 64 : toklen[0]), tok[0]);
    }
    for (int i = first; i < ntok && i < MAX_TOKENS; i++)
        if (has_prefix(tok[i], toklen[i], "CRON_TZ=") ||
            has_prefix(tok[i], toklen[i], "TZ="))
            return err_set(ps->e, RR_E_INVAL,
                           "time zone prefix must come first, once");

    int nf = ntok - first;
    const char **ft = tok + first;
    size_t *fl = toklen + first;
    if (nf == 1 && fl[0] == 6 && memcmp(ft[0], "manual", 6) == 0) {
        if (first)
            return err_set(ps->e, RR_E_INVAL,
                           "a time zone prefix cannot be used with manual");
        c->manual = true;
        res_put(ps, ft[0], fl[0]);
        c->zone = cronx__zone_get("UTC", ps->e);
        return c->zone ? 0 : RR_E_INTERNAL;
    }

    /* Zone before fields: an unknown zone is the first thing to fix. */
    c->zone = cronx__zone_get(zone, ps->e);
    if (!c->zone)
        return RR_E_INVAL;

    const char *pt[MAX_TOKENS];
    size_t pl[MAX_TOKENS];
    if (ft[0][0] == '@') {
        size_t k = fl[0];
        const char *expr = NULL;
        for (size_t i = 0; i < sizeof presets / sizeof *presets; i++)
            if (name_eq(ft[0], k, presets[i].name))
                expr = presets[i].expr;
        if (!expr) {
            if (name_eq(ft[0], k, "@REBOOT"))
                return err_set(ps->e, RR_E_INVAL,
                               "@reboot not supported: rrdeploy schedules "
                               "minutes of the clock, not server starts; run "
                               "the deployment by hand or give it a schedule");
            if (k >= 6 && name_eq(ft[0], 6, "@EVERY"))
                return err_set(ps->e, RR_E_INVAL,
                               "@every not supported: rrdeploy schedules whole "
                               "minutes of the clock; write a step, e.g. "
                               "*/15 * * * * for every 15 minutes");
            return err_set(ps->e, RR_E_INVAL, "unknown preset '%.*s'",
                           (int)(k > 32 ? 32 : k), ft[0]);
        }
        if (nf > 1)
            return err_set(ps->e, RR_E_INVAL, "unexpected text after %.*s",
                           (int)k, ft[0]);
        int np = split(expr, strlen(expr), pt, pl);
        (void)np;
        res_put(ps, ft[0], k);
        char *res = ps->res;
        ps->res = NULL; /* the preset is its own resolved text */
        int rc = compile(ps, pt, pl);
        ps->res = res;
        return rc;
    }
    if (nf != 5) {
        if (nf == 6)
            return err_set(ps->e, RR_E_INVAL,
                           "seconds field not supported (expected 5 fields, "
                           "got 6): rrdeploy schedules whole minutes; drop "
                           "the seconds");
        if (nf == 7)
            return err_set(ps->e, RR_E_INVAL,
                           "year field not supported (expected 5 fields, got 7)");
        return err_set(ps->e, RR_E_INVAL, "expected 5 fields, got %d", nf);
    }
    return compile(ps, ft, fl);
}

uint32_t cronx_seed(const void *id, size_t n)
{
    const unsigned char *p = id;
    uint32_t crc = 0xffffffffu; /* CRC-32 (IEEE), as zlib and binascii */
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1)));
    }
    return ~crc;
}

static int parse_common(const char *text, const char *default_zone,
                        const uint32_t *seed, char *resolved, size_t cap,
                        struct cronx **out, struct err *e)
{
    if (!text || !out)
        return err_set(e, RR_E_INVAL, "empty schedule");
    struct cronx *c = xcalloc(1, sizeof *c);
    struct parse ps = {.c = c, .e = e};
    if (seed) {
        ps.seeded = true;
        ps.seed = *seed;
    }
    if (resolved && cap > 0) {
        ps.res = resolved;
        ps.res_cap = cap;
        resolved[0] = '\0';
    }
    int rc = parse_text(&ps, text, default_zone);
    if (rc) {
        if (ps.res)
            ps.res[0] = '\0';
        cronx_free(c);
        return rc < 0 ? rc : RR_E_INVAL;
    }
    c->fixed = cronx__zone_fixed(c->zone);
    if (c->fixed) {
        struct cronx__span s;
        cronx__zone_span(c->zone, 0, &s);
        c->fixed_off = s.off;
    }
    *out = c;
    return 0;
}

int cronx_parse(const char *text, const char *default_zone, struct cronx **out,
                struct err *e)
{
    return parse_common(text, default_zone, NULL, NULL, 0, out, e);
}

int cronx_parse_seeded(const char *text, const char *default_zone,
                       uint32_t seed, char *resolved, size_t resolved_cap,
                       struct cronx **out, struct err *e)
{
    return parse_common(text, default_zone, &seed, resolved, resolved_cap, out,
                        e);
}

void cronx_free(struct cronx *c)
{
    if (c)
        free(c->static_warn);
    free(c);
}

bool cronx_is_manual(const struct cronx *c)
{
    return c->manual;
}

const char *cronx_zone_name(const struct cronx *c)
{
    return c->manual ? "UTC" : cronx__zone_name(c->zone);
}

int cronx_zone_check(const char *name, struct err *e)
{
    return cronx__zone_get(name, e) ? 0 : RR_E_INVAL;
}

/* ============================================================ search */

static void span_at(const struct cronx *c, int64_t t, struct cronx__span *s)
{
    if (c->fixed) {
        *s = (struct cronx__span){INT64_MIN, INT64_MAX, c->fixed_off,
                                  c->fixed_off, false, NULL};
        return;
    }
    cronx__zone_span(c->zone, t, s);
}

static inline int ctz64(uint64_t x) { return __builtin_ctzll(x); }

/* First matching local minute >= L (L minute-aligned), or CRONX_NEVER when
 * past `limit`. */
static int64_t next_local(const struct cronx *c, int64_t L, int64_t limit)
{
    int64_t days = cronx__floordiv(L, 86400);
    int64_t sod = L - days * 86400;
    int h = (int)(sod / 3600), mi = (int)(sod % 3600 / 60);
    int64_t y;
    int m, d;
    cronx__civil_from_days(days, &y, &m, &d);
    int64_t ylimit;
    {
        int lm, ld;
        cronx__civil_from_days(cronx__floordiv(limit, 86400), &ylimit, &lm, &ld);
    }

    for (int guard = 0; guard < 8 * (HORIZON_YEARS + 2) * 13; guard++) {
        if (y > ylimit)
            return CRONX_NEVER;
        uint32_t mm = (uint32_t)c->months >> m << m;
        if (!mm) {
            y++;
            m = ctz64(c->months);
            d = 1, h = 0, mi = 0;
            continue;
        }
        int nm = ctz64(mm);
        if (nm != m) {
            m = nm;
            d = 1, h = 0, mi = 0;
        }
        int64_t first = cronx__days_from_civil(y, m, 1);
        int dim = cronx__days_in_month(y, m);
        uint64_t dmask = (uint64_t)month_days(c, cronx__weekday(first), dim) &
                         (((2ULL << dim) - 1) & ~1ULL);
        dmask = dmask >> d << d;
        if (!dmask) {
            if (++m > 12) {
                m = 1;
                y++;
            }
            d = 1, h = 0, mi = 0;
            continue;
        }
        int nd = ctz64(dmask);
        if (nd != d) {
            d = nd;
            h = 0, mi = 0;
        }
        uint32_t hm = c->hours >> h << h;
        if (!hm) {
            d++, h = 0, mi = 0; /* d may be 32: dmask handles it */
            continue;
        }
        int nh = ctz64(hm);
        if (nh != h) {
            h = nh;
            mi = 0;
        }
        uint64_t mnm = c->minutes >> mi << mi;
        if (!mnm) {
            h++, mi = 0;
            if (h == 24)
                d++, h = 0;
            continue;
        }
        mi = ctz64(mnm);
        int64_t r = (first + d - 1) * 86400 + h * 3600 + mi * 60;
        return r > limit ? CRONX_NEVER : r;
    }
    return CRONX_NEVER;
}

static int64_t floor60(int64_t x) { return cronx__floordiv(x, 60) * 60; }

/* f(L) = min{t : local(t) >= L}: the instant a wall-mode local time fires. */
static int64_t first_instant(const struct cronx *c, int64_t L,
                             struct cronx__span *sp /* OUT */)
{
    struct cronx__span s;
    span_at(c, L, &s);
    span_at(c, L - s.off, &s);
    for (int k = 0; k < 8 && s.start != INT64_MIN &&
                    s.start - 1 + s.prev_off >= L;
         k++)
        span_at(c, s.start - 1, &s);
    for (int k = 0; k < 8 && s.end != INT64_MAX && s.end - 1 + s.off < L; k++)
        span_at(c, s.end, &s);
    int64_t t = L - s.off;
    if (s.start != INT64_MIN && t < s.start)
        t = s.start;
    if (sp)
        *sp = s;
    return t;
}

/* Next fire strictly after `after`; *L_out gets the local time that fired. */
static int64_t next_fire(const struct cronx *c, int64_t after, int64_t *L_out)
{
    if (c->manual || after >= T_MAX)
        return CRONX_NEVER;
    if (after < T_MIN)
        after = T_MIN;
    int64_t limit = after + HORIZON_YEARS * YEAR_SECS;
    struct cronx__span s;
    if (c->elapsed || c->fixed) {
        int64_t t = after + 1;
        for (int iter = 0; iter < 4 * HORIZON_YEARS + 64; iter++) {
            span_at(c, t, &s);
            int64_t L0 = floor60(t + s.off + 59);
            int64_t M = next_local(c, L0, limit + s.off);
            if (M == CRONX_NEVER)
                return CRONX_NEVER;
            int64_t cand = M - s.off;
            if (s.end == INT64_MAX || cand < s.end) {
                if (L_out)
                    *L_out = M;
                return cand;
            }
            t = s.end;
        }
        return CRONX_NEVER;
    }
    span_at(c, after, &s);
    int64_t H = after + s.off;
    if (s.start != INT64_MIN && s.start - 1 + s.prev_off > H)
        H = s.start - 1 + s.prev_off;
    int64_t M = next_local(c, floor60(H) + 60, limit + s.off);
    if (M == CRONX_NEVER)
        return CRONX_NEVER;
    if (L_out)
        *L_out = M;
    return first_instant(c, M, NULL);
}

int64_t cronx_next(const struct cronx *c, int64_t after)
{
    return next_fire(c, after, NULL);
}

/* ============================================================ counting */

/* Counting the fires in a window without visiting each one. Inside one span
 * of constant offset the walk of next_fire from a fire t is plain: the next
 * fire is L - off for the next matching local minute L, as long as no instant
 * before the span reached a later local time (a fold) and the zone is not too
 * dense for first_instant to find its way. So cronx_count walks with
 * next_fire only into each span (one call, or a few after a fold) and counts
 * the rest of the span arithmetically, day by day and month by month. */

#define DAY_SECS 86400LL
#define CYCLE_DAYS 146097LL /* 400 years: dates and weekdays repeat */
#define SETTLE_SECS (3 * DAY_SECS) /* > twice the largest offset (26 h) */
#define SETTLE_SPANS 4 /* more spans than this within SETTLE_SECS: walk */

static inline int hibit64(uint64_t x) { return 63 - __builtin_clzll(x); }
static inline int popc64(uint64_t x) { return __builtin_popcountll(x); }

/* Bits lo..hi of a 64-bit mask (0 <= lo, hi <= 62; empty when lo > hi). */
static uint64_t bits(int lo, int hi)
{
    return lo > hi ? 0 : ((2ULL << hi) - 1) & ~((1ULL << lo) - 1);
}

static bool day_matches(const struct cronx *c, int64_t day)
{
    int64_t y;
    int m, d;
    cronx__civil_from_days(day, &y, &m, &d);
    return ((c->months >> m) & 1) &&
           ((month_days_ym(c, cronx__weekday(day - d + 1), y, m) >> d) & 1);
}

/* Matching minutes of a matching day whose minute-of-day is in [a, b]. */
static int64_t minutes_in_day(const struct cronx *c, int a, int b)
{
    int ha = a / 60, hb = b / 60;
    if (ha == hb)
        return ((c->hours >> ha) & 1)
                   ? popc64(c->minutes & bits(a % 60, b % 60))
                   : 0;
    int64_t n = (int64_t)popc64(c->hours & bits(ha + 1, hb - 1)) *
                popc64(c->minutes);
    if ((c->hours >> ha) & 1)
        n += popc64(c->minutes & bits(a % 60, 59));
    if ((c->hours >> hb) & 1)
        n += popc64(c->minutes & bits(0, b % 60));
    return n;
}

/* Matching days in [d0, d1] (days since the epoch), one month at a time;
 * months the schedule excludes cost a test each. */
static int64_t days_by_month(const struct cronx *c, int64_t d0, int64_t d1)
{
    int64_t y, y1, n = 0;
    int m, d, m1, d1m;
    cronx__civil_from_days(d0, &y, &m, &d);
    cronx__civil_from_days(d1, &y1, &m1, &d1m);
    for (;;) {
        bool end = y == y1 && m == m1;
        if ((c->months >> m) & 1) {
            int64_t first = cronx__days_from_civil(y, m, 1);
            int hi = end ? d1m : cronx__days_in_month(y, m);
            n += popc64(month_days_ym(c, cronx__weekday(first), y, m) &
                        bits(d, hi));
        }
        if (end)
            return n;
        d = 1;
        if (++m > 12) {
            m = 1;
            y++;
        }
    }
}

/* Matching days in [d0, d1]; whole 400-year cycles are counted once. */
static int64_t count_days(const struct cronx *c, int64_t d0, int64_t d1)
{
    if (d1 < d0)
        return 0;
    int64_t n = 0, len = d1 - d0 + 1;
    if (len >= 2 * CYCLE_DAYS) {
        int64_t k = len / CYCLE_DAYS - 1;
        n = k * days_by_month(c, 0, CYCLE_DAYS - 1);
        d0 += k * CYCLE_DAYS;
    }
    return n + days_by_month(c, d0, d1);
}

/* Matching local minutes in [La, Lb] (minute-aligned local seconds). */
static int64_t count_local(const struct cronx *c, int64_t La, int64_t Lb)
{
    if (La > Lb)
        return 0;
    int64_t da = cronx__floordiv(La, DAY_SECS);
    int64_t db = cronx__floordiv(Lb, DAY_SECS);
    int ma = (int)((La - da * DAY_SECS) / 60);
    int mb = (int)((Lb - db * DAY_SECS) / 60);
    if (da == db)
        return day_matches(c, da) ? minutes_in_day(c, ma, mb) : 0;
    int64_t n = 0;
    if (day_matches(c, da))
        n += minutes_in_day(c, ma, 24 * 60 - 1);
    if (day_matches(c, db))
        n += minutes_in_day(c, 0, mb);
    int64_t per_day = (int64_t)popc64(c->hours) * popc64(c->minutes);
    return n + count_days(c, da + 1, db - 1) * per_day;
}

/* Last matching local minute <= L (L minute-aligned), or CRONX_NEVER when
 * there is none at or after lo: next_local run backwards. */
static int64_t prev_local(const struct cronx *c, int64_t L, int64_t lo)
{
    int64_t days = cronx__floordiv(L, DAY_SECS), sod = L - days * DAY_SECS;
    int h = (int)(sod / 3600), mi = (int)(sod % 3600 / 60), m, d, lm, ld;
    int64_t y, ylo;
    cronx__civil_from_days(days, &y, &m, &d);
    cronx__civil_from_days(cronx__floordiv(lo, DAY_SECS), &ylo, &lm, &ld);
    while (y >= ylo) {
        uint32_t mm = (uint32_t)c->months & (uint32_t)bits(1, m);
        if (!mm) {
            y--, m = 12, d = 31, h = 23, mi = 59;
            continue;
        }
        if (hibit64(mm) != m)
            m = hibit64(mm), d = 31, h = 23, mi = 59;
        int64_t first = cronx__days_from_civil(y, m, 1);
        int dim = cronx__days_in_month(y, m);
        uint64_t dmask = month_days(c, cronx__weekday(first), dim) &
                         bits(1, d < dim ? d : dim);
        if (!dmask) {
            if (--m == 0)
                m = 12, y--;
            d = 31, h = 23, mi = 59;
            continue;
        }
        if (hibit64(dmask) != d)
            d = hibit64(dmask), h = 23, mi = 59;
        uint64_t hm = c->hours & bits(0, h);
        if (!hm) {
            d--, h = 23, mi = 59; /* d may be 0: dmask is then empty */
            continue;
        }
        if (hibit64(hm) != h)
            h = hibit64(hm), mi = 59;
        uint64_t mnm = c->minutes & bits(0, mi);
        if (!mnm) {
            if (--h < 0)
                d--, h = 23;
            mi = 59;
            continue;
        }
        int64_t r = (first + d - 1) * DAY_SECS + h * 3600 + hibit64(mnm) * 60;
        return r < lo ? CRONX_NEVER : r;
    }
    return CRONX_NEVER;
}

/* Wall mode: may fire t in span *s start a counted stretch, and up to which
 * instant (*hi, lowered if needed)? Yes when t's local time is at least the
 * latest local time any earlier instant reached (nothing left of a fold), the
 * spans of the 3 days before *s are few, and the stretch stays 3 days clear of
 * a short span after *s; so next_fire and first_instant see one offset. */
static bool wall_settled(const struct cronx *c, int64_t t,
                         const struct cronx__span *s, int64_t *hi)
{
    if (s->start != INT64_MIN) {
        int64_t high = s->start - 1 + s->prev_off;
        struct cronx__span q;
        span_at(c, s->start - 1, &q);
        for (int k = 0;; k++) {
            if (q.end - 1 + q.off > high)
                high = q.end - 1 + q.off;
            if (q.start == INT64_MIN || q.start <= s->start - SETTLE_SECS)
                break;
            if (k == SETTLE_SPANS)
                return false;
            span_at(c, q.start - 1, &q);
        }
        if (t + s->off < high)
            return false;
    }
    if (s->end != INT64_MAX) {
        struct cronx__span nx;
        span_at(c, s->end, &nx);
        if (nx.end != INT64_MAX && nx.end - nx.start < SETTLE_SECS &&
            *hi > s->end - 1 - SETTLE_SECS)
            *hi = s->end - 1 - SETTLE_SECS;
    }
    return true;
}

struct tally {
    int64_t n, last, before_last;
};

/* Count the fires after fire t that share its span, up to `until`, without
 * visiting them; returns the last one counted (t when none). */
static int64_t count_span(const struct cronx *c, int64_t t, int64_t until,
                          struct tally *k)
{
    struct cronx__span s;
    span_at(c, t, &s);
    int64_t hi = until < T_MAX - 1 ? until : T_MAX - 1; /* past 9000: walk */
    if (s.end != INT64_MAX && s.end - 1 < hi)
        hi = s.end - 1;
    if (!c->elapsed && !c->fixed && !wall_settled(c, t, &s, &hi))
        return t;
    if (hi <= t)
        return t;
    /* next_fire from t searches local minutes above t's, in both modes */
    int64_t La = floor60(t + s.off) + 60, Lb = floor60(hi + s.off);
    int64_t n = count_local(c, La, Lb);
    if (n == 0)
        return t;
    int64_t L1 = prev_local(c, Lb, La);
    ASSERT(L1 != CRONX_NEVER);
    if (n >= 2) {
        int64_t L2 = prev_local(c, L1 - 60, La);
        ASSERT(L2 != CRONX_NEVER);
        k->before_last = L2 - s.off;
    } else {
        k->before_last = k->last;
    }
    k->last = L1 - s.off;
    k->n += n;
    return k->last;
}

int64_t cronx_count(const struct cronx *c, int64_t from, int64_t until,
                    int64_t *last, int64_t *before_last)
{
    struct tally k = {0, CRONX_NEVER, CRONX_NEVER};
    if (!c->manual && from <= until) {
        /* the walk this replaces starts at next_fire(from - 1) */
        int64_t x = from <= T_MIN ? T_MIN : from - 1, t;
        while ((t = next_fire(c, x, NULL)) != CRONX_NEVER && t <= until) {
            k.before_last = k.last;
            k.last = t;
            k.n++;
            x = count_span(c, t, until, &k);
        }
    }
    if (last)
        *last = k.last;
    if (before_last)
        *before_last = k.before_last;
    return k.n;
}

/* ============================================================ output */

static int64_t clamp_t(int64_t t)
{
    return t < T_MIN ? T_MIN : t > T_MAX ? T_MAX : t;
}

/* "YYYY-MM-DDTHH:MM:SS" of local seconds L, plus seconds-precision flag. */
static void fmt_civil(int64_t L, char *out, size_t cap, bool with_secs)
{
    int64_t days = cronx__floordiv(L, 86400), sod = L - days * 86400;
    int64_t y;
    int m, d;
    cronx__civil_from_days(days, &y, &m, &d);
    if (with_secs)
        snprintf(out, cap, "%04lld-%02d-%02dT%02d:%02d:%02d", (long long)y, m, d,
                 (int)(sod / 3600), (int)(sod % 3600 / 60), (int)(sod % 60));
    else
        snprintf(out, cap, "%04lld-%02d-%02dT%02d:%02d", (long long)y, m, d,
                 (int)(sod / 3600), (int)(sod % 3600 / 60));
}

void cronx_format_local(const struct cronx *c, int64_t t,
                        char out[CRONX_LOCAL_MAX])
{
    struct cronx__span s;
    t = clamp_t(t);
    if (c->manual)
        s.off = 0;
    else
        span_at(c, t, &s);
    char civil[40], tmp[80];
    fmt_civil(t + s.off, civil, sizeof civil, true);
    int off = s.off < 0 ? -s.off : s.off;
    snprintf(tmp, sizeof tmp, "%s%c%02d:%02d", civil, s.off < 0 ? '-' : '+',
             off / 3600 % 100, off % 3600 / 60);
    size_t n = strnlen(tmp, CRONX_LOCAL_MAX - 1);
    memcpy(out, tmp, n); /* years are 1800..9000: always fits */
    out[n] = '\0';
}

static void add_warning(struct cronx_preview *out, const char *fmt, ...)
    RR_PRINTF(2, 3);
static void add_warning(struct cronx_preview *out, const char *fmt, ...)
{
    if (out->nwarnings >= CRONX_WARNING_MAX)
        return;
    char tmp[CRONX_WARNING_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    for (int i = 0; i < out->nwarnings; i++)
        if (strcmp(out->warnings[i], tmp) == 0)
            return;
    memcpy(out->warnings[out->nwarnings++], tmp, sizeof tmp);
}

/* Matching local minutes in [lo, hi), counted up to 2 (the warnings only
 * need "one" or "several"); the first one in *first. */
static int matches_in(const struct cronx *c, int64_t lo, int64_t hi,
                      int64_t *first)
{
    int n = 0;
    int64_t L = floor60(lo + 59);
    while (n < 2) {
        int64_t M = next_local(c, L, hi);
        if (M == CRONX_NEVER || M >= hi)
            break;
        if (n == 0)
            *first = M;
        n++;
        L = M + 60;
    }
    return n;
}

/* DST warnings for transitions in (from, last]. */
static void dst_warnings(const struct cronx *c, int64_t from, int64_t last,
                         struct cronx_preview *out)
{
    if (c->fixed || c->manual)
        return;
    struct cronx__span s, ns;
    span_at(c, from, &s);
    const char *zn = cronx__zone_name(c->zone);
    for (int iter = 0; iter < 4096 && s.end != INT64_MAX && s.end <= last;
         iter++) {
        int64_t T = s.end;
        span_at(c, T, &ns);
        char lt[40], at[40];
        int64_t M = 0;
        if (ns.off > s.off) {
            int n = matches_in(c, T + s.off, T + ns.off, &M);
            if (n > 0) {
                fmt_civil(M, lt, sizeof lt, false);
                fmt_civil(T + ns.off, at, sizeof at, false);
                if (c->elapsed)
                    add_warning(out, "%s does not exist in %s (DST gap); skipped%s",
                                lt, zn, n > 1 ? " with the other times in the gap" : "");
                else
                    add_warning(out, "%s does not exist in %s (DST gap); fires at %s %s%s",
                                lt, zn, at + 11, ns.abbr ? ns.abbr : "",
                                n > 1 ? " (times in the gap fire once)" : "");
            }
        } else if (ns.off < s.off) {
            int n = matches_in(c, T + ns.off, T + s.off, &M);
            if (n > 0) {
                fmt_civil(M, lt, sizeof lt, false);
                if (c->elapsed)
                    add_warning(out, "%s occurs twice in %s (DST fold); fires at both "
                                "occurrences (%s and %s)", lt, zn,
                                s.abbr ? s.abbr : "", ns.abbr ? ns.abbr : "");
                else
                    add_warning(out, "%s occurs twice in %s (DST fold); fires once, "
                                "at the first occurrence (%s)", lt, zn,
                                s.abbr ? s.abbr : "");
            }
        }
        s = ns;
    }
}

/* "Monday, Tuesday or Friday" for the weekday bits of w. */
static void weekday_list(unsigned w, char *out, size_t cap)
{
    static const char *const full[7] = {"Sunday", "Monday", "Tuesday",
                                        "Wednesday", "Thursday", "Friday",
                                        "Saturday"};
    int total = popc64(w), n = 0;
    size_t len = 0;
    out[0] = '\0';
    for (int d = 0; d < 7 && len < cap; d++) {
        if (!((w >> d) & 1))
            continue;
        const char *sep = n == 0 ? "" : (n == total - 1 ? " or " : ", ");
        int k = snprintf(out + len, cap - len, "%s%s", sep, full[d]);
        if (k < 0)
            break;
        len += (size_t)k;
        n++;
    }
}

/* Months of the schedule that have no fire in some years (day 31, the 5th
 * weekday, February 29): computed here rather than kept per schedule. Months
 * with the same calendars are named together. */
static void calendar_warnings(const struct cronx *c, struct cronx_preview *out)
{
    unsigned pat[13];
    uint16_t done = 0;
    for (int mo = 1; mo <= 12; mo++)
        if ((c->months >> mo) & 1)
            pat[mo] = month_pattern(c, mo);
    for (int mo = 1; mo <= 12; mo++) {
        if (!((c->months >> mo) & 1) || ((done >> mo) & 1) ||
            pat[mo] == 0x3fff)
            continue;
        uint16_t group = 0;
        for (int k = mo; k <= 12; k++)
            if (((c->months >> k) & 1) && pat[k] == pat[mo])
                group |= (uint16_t)(1u << k);
        done |= group;
        char months[128], common[80], leap[80];
        month_list(group, months, sizeof months);
        unsigned pc = pat[mo] & 0x7f, pl = pat[mo] >> 7;
        weekday_list(pc, common, sizeof common);
        weekday_list(pl, leap, sizeof leap);
        if (pat[mo] == 0)
            add_warning(out, "no fire in %s: those months have no matching day", months);
        else if (pc == pl)
            add_warning(out, "fires in %s only when the 1st is a %s",
                        months, common);
        else if (pl == 0x7f && pc == 0)
            add_warning(out, "fires in %s only in leap years", months);
        else if (pc == 0)
            add_warning(out, "fires in %s only in leap years when the 1st is a %s",
                        months, leap);
        else if (pl == 0x7f)
            add_warning(out, "fires in %s in leap years, and in other years only "
                        "when the 1st is a %s", months, common);
        else
            add_warning(out, "fires in %s only when the 1st is a %s (in leap "
                        "years: %s)", months, common, leap);
    }
}

void cronx_preview(const struct cronx *c, int64_t from, int count, int64_t *at,
                   struct cronx_preview *out)
{
    memset(out, 0, sizeof *out);
    for (int i = 0; i < c->nstatic; i++)
        add_warning(out, "%s", c->static_warn[i]);
    if (!c->manual)
        calendar_warnings(c, out);
    int64_t t = from;
    for (int i = 0; i < count; i++) {
        t = cronx_next(c, t);
        if (t == CRONX_NEVER)
            break;
        at[out->count++] = t;
    }
    if (out->count > 0)
        dst_warnings(c, clamp_t(from), at[out->count - 1], out);
}
