/* tz.c -- civil calendar arithmetic and IANA time zones from TZif files.
 *
 * Purpose: map UTC instants to local wall-clock offsets for the cron engine
 * without touching the process TZ (no tzset/setenv/localtime).
 *
 * Design: a zone is read once from the system tz database (/usr/share/zoneinfo,
 * or $RRDEPLOY_ZONEINFO for tests): the 64-bit (v2+) transition table, its
 * local time types and the POSIX TZ footer (RFC 8536). Instants past the table
 * use the footer rule, so "slim" files (table ends at the last rule change)
 * and "fat" files (table runs to 2037) give the same answers. The public view
 * is a "span": the maximal interval of instants with one offset, plus the
 * offset in force before it, which is what gap/fold logic needs.
 *
 * Thread: zones are immutable after loading; the cache is a singly linked list
 * guarded by one mutex, and entries are never freed, so a returned pointer is
 * valid forever and may be used by any thread without locking. */
#include "scheduler/scheduler_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ============================================================ civil time */

int64_t cronx__floordiv(int64_t a, int64_t b)
{
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0)))
        q--;
    return q;
}

int64_t cronx__days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = cronx__floordiv(y, 400);
    int64_t yoe = y - era * 400;                                 /* [0, 399] */
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1; /* [0, 365] */
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;        /* [0, 146096] */
    return era * 146097 + doe - 719468;
}

void cronx__civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t era = cronx__floordiv(z, 146097);
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

bool cronx__is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

int cronx__days_in_month(int64_t y, int m)
{
    static const int dim[13] = {0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && cronx__is_leap(y))
        return 29;
    return dim[m];
}

int cronx__weekday(int64_t days)
{
    int64_t w = (days + 4) % 7; /* 1970-01-01 was a Thursday */
    if (w < 0)
        w += 7;
    return (int)w;
}

/* ============================================================ zone data */

#define TZ_FILE_MAX (256 * 1024) /* real files are < 10 KB */
#define TZ_OFF_LIMIT (26 * 3600) /* |utoff| bound from RFC 8536 */

struct ttype {
    int32_t off;
    bool isdst;
    char abbr[CRONX_ABBR_MAX]; /* NUL-terminated, possibly truncated */
};

/* POSIX TZ rule date: Jn (julian1), n (julian0) or Mm.w.d. */
struct rdate {
    char kind; /* 'J', 'N' or 'M' */
    int n, m, w, d;
    int32_t time; /* seconds after local midnight, may be < 0 or > 24h */
};

struct posix_tz {
    bool valid;              /* footer parsed */
    bool has_dst;            /* dst part with a rule */
    int32_t std_off, dst_off; /* seconds east of UTC */
    char std_abbr[CRONX_ABBR_MAX];
    char dst_abbr[CRONX_ABBR_MAX];
    struct rdate start, end;
};

struct cronx__zone {
    struct cronx__zone *next; /* owned by the cache list */
    char *name;               /* owned */
    int64_t *trans;           /* owned; ntrans strictly increasing instants */
    uint8_t *tidx;            /* owned; type index per transition */
    size_t ntrans;
    struct ttype *types;      /* owned; ntypes >= 1 */
    size_t ntypes;
    struct posix_tz rule;
    bool fixed;               /* one offset for all time */
};

/* ============================================================ POSIX TZ */

static const char *ptz_name(const char *p, char out[CRONX_ABBR_MAX])
{
    size_t n = 0;
    if (*p == '<') {
        p++;
        while (*p && *p != '>') {
            if (n + 1 < CRONX_ABBR_MAX)
                out[n++] = *p;
            p++;
        }
        if (*p != '>')
            return NULL;
        p++;
    } else {
        while ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z')) {
            if (n + 1 < CRONX_ABBR_MAX)
                out[n++] = *p;
            p++;
        }
    }
    out[n] = '\0';
    return n >= 1 ? p : NULL;
}

/* [+-]hh[:mm[:ss]] with hh <= max_h; result in seconds (sign applied). */
static const char *ptz_time(const char *p, int max_h, int32_t *out)
{
    int sign = 1;
    if (*p == '+' || *p == '-') {
        sign = *p == '-' ? -1 : 1;
        p++;
    }
    int part[3] = {0, 0, 0};
    for (int i = 0; i < 3; i++) {
        if (i > 0) {
            if (*p != ':')
                break;
            p++;
        }
        if (*p < '0' || *p > '9')
            return NULL;
        int v = 0, digits = 0;
        while (*p >= '0' && *p <= '9' && digits < 3) {
            v = v * 10 + (*p - '0');
            p++;
            digits++;
        }
        part[i] = v;
    }
    if (part[0] > max_h || part[1] > 59 || part[2] > 59)
        return NULL;
    *out = sign * (part[0] * 3600 + part[1] * 60 + part[2]);
    return p;
}

static const char *ptz_num(const char *p, int lo, int hi, int *out)
{
    int v = 0, digits = 0;
    while (*p >= '0' && *p <= '9' && digits < 4) {
        v = v * 10 + (*p - '0');
        p++;
        digits++;
    }
    if (digits == 0 || v < lo || v > hi)
        return NULL;
    *out = v;
    return p;
}

static const char *ptz_date(const char *p, struct rdate *r)
{
    if (*p == 'J') {
        r->kind = 'J';
        p = ptz_num(p + 1, 1, 365, &r->n);
    } else if (*p == 'M') {
        r->kind = 'M';
        p = ptz_num(p + 1, 1, 12, &r->m);
        if (!p || *p != '.')
            return NULL;
        p = ptz_num(p + 1, 1, 5, &r->w);
        if (!p || *p != '.')
            return NULL;
        p = ptz_num(p + 1, 0, 6, &r->d);
    } else {
        r->kind = 'N';
        p = ptz_num(p, 0, 365, &r->n);
    }
    if (!p)
        return NULL;
    r->time = 7200;
    if (*p == '/')
        p = ptz_time(p + 1, 167, &r->time);
    return p;
}

/* Parse e.g. "EST5EDT,M3.2.0,M11.1.0" or "<+1030>-10:30<+11>-11,M10.1.0,M4.1.0". */
static bool ptz_parse(const char *s, struct posix_tz *r)
{
    memset(r, 0, sizeof *r);
    const char *p = ptz_name(s, r->std_abbr);
    int32_t west;
    if (!p || !(p = ptz_time(p, 24, &west)))
        return false;
    r->std_off = -west;
    if (*p == '\0') {
        r->valid = true;
        return true;
    }
    if (!(p = ptz_name(p, r->dst_abbr)))
        return false;
    r->dst_off = r->std_off + 3600;
    if (*p && *p != ',') {
        if (!(p = ptz_time(p, 24, &west)))
            return false;
        r->dst_off = -west;
    }
    if (*p == '\0') { /* no rule: the POSIX default (US rules) */
        r->start = (struct rdate){'M', 0, 3, 2, 0, 7200};
        r->end = (struct rdate){'M', 0, 11, 1, 0, 7200};
    } else {
        if (*p != ',' || !(p = ptz_date(p + 1, &r->start)))
            return false;
        if (*p != ',' || !(p = ptz_date(p + 1, &r->end)))
            return false;
        if (*p != '\0')
            return false;
    }
    r->has_dst = true;
    r->valid = true;
    return true;
}

/* Local (wall) seconds of rule date r in year y, before applying r->time. */
static int64_t rdate_day(const struct rdate *r, int64_t y)
{
    int64_t jan1 = cronx__days_from_civil(y, 1, 1);
    switch (r->kind) {
    case 'J':
        return jan1 + r->n - 1 + (cronx__is_leap(y) && r->n >= 60 ? 1 : 0);
    case 'N':
        return jan1 + r->n;
    default: {
        int64_t first = cronx__days_from_civil(y, r->m, 1);
        int wd = cronx__weekday(first);
        int day = 1 + (r->d - wd + 7) % 7 + (r->w - 1) * 7;
        int dim = cronx__days_in_month(y, r->m);
        while (day > dim)
            day -= 7;
        return first + day - 1;
    }
    }
}

/* Instants of DST start and end in year y. */
static void rule_year(const struct posix_tz *r, int64_t y, int64_t *start,
                      int64_t *end)
{
    *start = rdate_day(&r->start, y) * 86400 + r->start.time - r->std_off;
    *end = rdate_day(&r->end, y) * 86400 + r->end.time - r->dst_off;
}

/* DST in force all year (e.g. "XXX3EDT4,0/0,J365/25"). */
static bool rule_permanent_dst(const struct posix_tz *r, int64_t y)
{
    int64_t s0, e0, s1, e1;
    rule_year(r, y, &s0, &e0);
    rule_year(r, y + 1, &s1, &e1);
    return s0 <= e0 && e0 >= s1;
}

/* Span of the footer rule around instant t (ignoring the table). */
static void rule_span(const struct cronx__zone *z, int64_t t,
                      struct cronx__span *out)
{
    const struct posix_tz *r = &z->rule;
    if (!r->has_dst || r->std_off == r->dst_off) {
        *out = (struct cronx__span){INT64_MIN, INT64_MAX, r->std_off,
                                    r->std_off, false, r->std_abbr};
        return;
    }
    int64_t y, yd;
    int m, d;
    cronx__civil_from_days(cronx__floordiv(t, 86400), &yd, &m, &d);
    y = yd;
    if (rule_permanent_dst(r, y)) {
        *out = (struct cronx__span){INT64_MIN, INT64_MAX, r->dst_off,
                                    r->dst_off, true, r->dst_abbr};
        return;
    }
    /* Transitions of y-1..y+1, in time order (each year: start, end or end,
     * start depending on hemisphere). */
    int64_t at[6];
    bool to_dst[6];
    int n = 0;
    for (int64_t yy = y - 1; yy <= y + 1; yy++) {
        int64_t s, e;
        rule_year(r, yy, &s, &e);
        if (s < e) {
            at[n] = s, to_dst[n++] = true;
            at[n] = e, to_dst[n++] = false;
        } else {
            at[n] = e, to_dst[n++] = false;
            at[n] = s, to_dst[n++] = true;
        }
    }
    int last = -1;
    for (int i = 0; i < n; i++)
        if (at[i] <= t)
            last = i;
    /* t is within a year of at[2..3], so last >= 0 and last + 1 < n. */
    if (last < 0)
        last = 0;
    if (last + 1 >= n)
        last = n - 2;
    bool dst = to_dst[last];
    out->start = at[last];
    out->end = at[last + 1];
    out->off = dst ? r->dst_off : r->std_off;
    out->prev_off = dst ? r->std_off : r->dst_off;
    out->isdst = dst;
    out->abbr = dst ? r->dst_abbr : r->std_abbr;
}

/* ============================================================ spans */

void cronx__zone_span(const struct cronx__zone *z, int64_t t,
                      struct cronx__span *out)
{
    if (z->ntrans == 0 || t >= z->trans[z->ntrans - 1]) {
        const struct ttype *last =
            &z->types[z->ntrans ? z->tidx[z->ntrans - 1] : 0];
        if (!z->rule.valid) {
            int32_t prev = z->ntrans >= 2 ? z->types[z->tidx[z->ntrans - 2]].off
                           : z->types[0].off;
            *out = (struct cronx__span){
                z->ntrans ? z->trans[z->ntrans - 1] : INT64_MIN, INT64_MAX,
                last->off, z->ntrans ? prev : last->off, last->isdst,
                last->abbr};
            return;
        }
        rule_span(z, t, out);
        if (z->ntrans && out->start < z->trans[z->ntrans - 1]) {
            size_t n = z->ntrans;
            out->start = z->trans[n - 1];
            out->prev_off = n >= 2 ? z->types[z->tidx[n - 2]].off
                                   : z->types[0].off;
        }
        return;
    }
    if (t < z->trans[0]) {
        const struct ttype *ty = &z->types[0];
        *out = (struct cronx__span){INT64_MIN, z->trans[0], ty->off, ty->off,
                                    ty->isdst, ty->abbr};
        return;
    }
    /* trans[lo] <= t < trans[lo + 1] */
    size_t lo = 0, hi = z->ntrans - 1;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (z->trans[mid] <= t)
            lo = mid;
        else
            hi = mid;
    }
    const struct ttype *ty = &z->types[z->tidx[lo]];
    out->start = z->trans[lo];
    out->end = z->trans[lo + 1];
    out->off = ty->off;
    out->prev_off = lo > 0 ? z->types[z->tidx[lo - 1]].off : z->types[0].off;
    out->isdst = ty->isdst;
    out->abbr = ty->abbr;
}

const char *cronx__zone_name(const struct cronx__zone *z)
{
    return z->name;
}

bool cronx__zone_fixed(const struct cronx__zone *z)
{
    return z->fixed;
}

/* ============================================================ TZif */

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           (uint32_t)p[3];
}

static int64_t be64(const unsigned char *p)
{
    return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

struct tzhead {
    uint32_t isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt;
};

static bool tzif_head(const unsigned char *p, size_t len, struct tzhead *h,
                      int *version)
{
    if (len < 44 || memcmp(p, "TZif", 4) != 0)
        return false;
    *version = p[4] == 0 ? 1 : p[4] - '0';
    h->isutcnt = be32(p + 20);
    h->isstdcnt = be32(p + 24);
    h->leapcnt = be32(p + 28);
    h->timecnt = be32(p + 32);
    h->typecnt = be32(p + 36);
    h->charcnt = be32(p + 40);
    return h->typecnt >= 1 && h->typecnt <= 256 && h->timecnt <= 100000 &&
           h->charcnt <= 65536 && h->leapcnt <= 10000 && h->isutcnt <= 256 &&
           h->isstdcnt <= 256;
}

static size_t tzif_body_len(const struct tzhead *h, int tsize)
{
    return (size_t)h->timecnt * (size_t)tsize + h->timecnt + h->typecnt * 6u +
           h->charcnt + h->leapcnt * (size_t)(tsize + 4) + h->isstdcnt +
           h->isutcnt;
}

/* Parse file contents into z (name already set). Returns a reason or NULL. */
static const char *tzif_parse(const unsigned char *p, size_t len,
                              struct cronx__zone *z)
{
    struct tzhead h;
    int version;
    if (!tzif_head(p, len, &h, &version))
        return "not a TZif file";
    int tsize = 4;
    size_t need = 44 + tzif_body_len(&h, 4);
    if (need > len)
        return "truncated TZif file";
    if (version >= 2) {
        p += need;
        len -= need;
        if (!tzif_head(p, len, &h, &version))
            return "bad TZif v2 header";
        tsize = 8;
        need = 44 + tzif_body_len(&h, 8);
        if (need > len)
            return "truncated TZif file";
    }
    if (h.leapcnt > 0)
        return "leap-second zones are not supported";
    const unsigned char *q = p + 44;
    z->ntrans = h.timecnt;
    z->ntypes = h.typecnt;
    z->trans = xcalloc(h.timecnt ? h.timecnt : 1, sizeof *z->trans);
    z->tidx = xcalloc(h.timecnt ? h.timecnt : 1, 1);
    z->types = xcalloc(h.typecnt, sizeof *z->types);
    for (uint32_t i = 0; i < h.timecnt; i++) {
        z->trans[i] = tsize == 8 ? be64(q) : (int32_t)be32(q);
        q += tsize;
        if (i > 0 && z->trans[i] <= z->trans[i - 1])
            return "transitions out of order";
    }
    for (uint32_t i = 0; i < h.timecnt; i++) {
        z->tidx[i] = q[i];
        if (q[i] >= h.typecnt)
            return "bad type index";
    }
    q += h.timecnt;
    const unsigned char *tt = q;
    const char *chars = (const char *)(q + h.typecnt * 6u);
    for (uint32_t i = 0; i < h.typecnt; i++) {
        int32_t off = (int32_t)be32(tt + 6 * i);
        if (off <= -TZ_OFF_LIMIT || off >= TZ_OFF_LIMIT)
            return "offset out of range";
        z->types[i].off = off;
        z->types[i].isdst = tt[6 * i + 4] != 0;
        unsigned idx = tt[6 * i + 5];
        if (idx >= h.charcnt && h.charcnt > 0)
            return "bad abbreviation index";
        size_t n = 0;
        while (h.charcnt > 0 && idx + n < h.charcnt && chars[idx + n] &&
               n + 1 < CRONX_ABBR_MAX) {
            z->types[i].abbr[n] = chars[idx + n];
            n++;
        }
        z->types[i].abbr[n] = '\0';
    }
    /* Footer: "\n<TZ string>\n" after the v2+ body. */
    if (version >= 2) {
        const unsigned char *f = p + need;
        size_t flen = len - need;
        if (flen >= 2 && f[0] == '\n') {
            char tzs[256];
            size_t n = 0;
            while (n + 1 < flen && f[1 + n] != '\n' && n + 1 < sizeof tzs) {
                tzs[n] = (char)f[1 + n];
                n++;
            }
            tzs[n] = '\0';
            if (n > 0 && !ptz_parse(tzs, &z->rule))
                return "bad POSIX TZ footer";
        }
    }
    bool fixed = true;
    int32_t off0 = z->ntrans ? z->types[z->tidx[0]].off : z->types[0].off;
    for (size_t i = 0; i < z->ntrans; i++)
        if (z->types[z->tidx[i]].off != off0 || z->types[0].off != off0)
            fixed = false;
    if (z->rule.valid &&
        (z->rule.std_off != off0 || (z->rule.has_dst && z->rule.dst_off != off0)))
        fixed = false;
    z->fixed = fixed;
    return NULL;
}

/* ============================================================ loading */

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cronx__zone *cache; /* guarded by cache_lock; never freed */

static bool zone_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > CRONX_ZONE_NAME_MAX || name[0] == '/' ||
        name[n - 1] == '/' || strstr(name, "..") || strstr(name, "//"))
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                  (c >= '0' && c <= '9') || c == '_' || c == '+' || c == '-' ||
                  c == '/';
        if (!ok)
            return false;
    }
    /* A component may not start with '-' (avoid option-like names). */
    for (size_t i = 0; i < n; i++)
        if (name[i] == '-' && (i == 0 || name[i - 1] == '/'))
            return false;
    return true;
}

/* Read a whole regular file (<= TZ_FILE_MAX). Returns owned buffer or NULL. */
static unsigned char *read_file(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 ||
        st.st_size > TZ_FILE_MAX) {
        close(fd);
        return NULL;
    }
    size_t want = (size_t)st.st_size, got = 0;
    unsigned char *buf = xmalloc(want);
    while (got < want) {
        ssize_t r = read(fd, buf + got, want - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    if (got != want) {
        free(buf);
        return NULL;
    }
    *len = got;
    return buf;
}

static void zone_discard(struct cronx__zone *z)
{
    free(z->name);
    free(z->trans);
    free(z->tidx);
    free(z->types);
    free(z);
}

/* Load a zone (cache_lock held). */
static struct cronx__zone *zone_load(const char *name, struct err *e)
{
    struct cronx__zone *z = xcalloc(1, sizeof *z);
    z->name = xstrdup(name);
    if (strcmp(name, "UTC") == 0) { /* built in: works without tzdata */
        z->types = xcalloc(1, sizeof *z->types);
        z->ntypes = 1;
        memcpy(z->types[0].abbr, "UTC", 4);
        z->fixed = true;
        return z;
    }
    const char *dir = getenv("RRDEPLOY_ZONEINFO");
    if (!dir || !*dir)
        dir = "/usr/share/zoneinfo";
    char path[4096];
    int n = snprintf(path, sizeof path, "%s/%s", dir, name);
    size_t len = 0;
    unsigned char *data = NULL;
    if (n > 0 && (size_t)n < sizeof path)
        data = read_file(path, &len);
    if (!data) {
        err_set(e, RR_E_INVAL, "unknown time zone '%s'", name);
        zone_discard(z);
        return NULL;
    }
    const char *why = tzif_parse(data, len, z);
    free(data);
    if (why) {
        if (memcmp(why, "not a", 5) == 0)
            err_set(e, RR_E_INVAL, "unknown time zone '%s'", name);
        else
            err_set(e, RR_E_INVAL, "time zone '%s' cannot be used: %s", name,
                    why);
        zone_discard(z);
        return NULL;
    }
    return z;
}

const struct cronx__zone *cronx__zone_get(const char *name, struct err *e)
{
    if (!name || !zone_name_ok(name)) {
        size_t n = name ? strlen(name) : 0;
        if (n == 0)
            err_set(e, RR_E_INVAL, "empty time zone name");
        else
            err_set(e, RR_E_INVAL, "invalid time zone name '%.64s%s'", name,
                    n > 64 ? "..." : "");
        return NULL;
    }
    struct cronx__zone *z;
    if (pthread_mutex_lock(&cache_lock) != 0) {
        err_set(e, RR_E_INTERNAL, "time zone cache lock failed");
        return NULL;
    }
    for (z = cache; z; z = z->next)
        if (strcmp(z->name, name) == 0)
            break;
    if (!z) {
        z = zone_load(name, e);
        if (z) {
            z->next = cache;
            cache = z;
        }
    }
    pthread_mutex_unlock(&cache_lock);
    return z;
}
