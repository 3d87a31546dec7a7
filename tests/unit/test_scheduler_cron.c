/* test_scheduler_cron.c -- cron: the parser, zones, next fire (scheduler/cron.c, tz.c).
 *
 * Purpose: pin the schedule dialect and DST contract (docs/schedules.md).
 * Design:
 *   - table-driven vectors from tests/data/cron/<kind>.tsv (parse errors with their
 *     exact reason, next-N fires as local ISO strings, preview warnings);
 *   - a brute-force oracle of the DST contract, written independently of the
 *     fast path: minute-by-minute over UTC instants, local time from glibc
 *     (localtime_r with TZ set in this test process only), field matching on
 *     sets the generator built directly; compared with cronx_next for random
 *     expressions around real DST transitions in several zones;
 *   - zone offsets compared with glibc over 1970-2199 (footer rules beyond the
 *     table), slim-vs-fat TZif files, bounds, thread safety.
 * Thread: the thread test runs parses/next concurrently; the rest is serial. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <pthread.h>

#include <cmocka.h>

#include "scheduler/cron.h"

/* ------------------------------------------------------------ helpers */

static const char *src_dir(void)
{
    const char *d = getenv("RR_SOURCE_DIR");
    return d && *d ? d : ".";
}

/* Deterministic PRNG (xorshift64*). */
static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;
static uint64_t rnd(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}
static int rnd_in(int lo, int hi) { return lo + (int)(rnd() % (uint64_t)(hi - lo + 1)); }

/* Parse "YYYY-MM-DDTHH:MM[:SS](Z|±hh:mm)" to Unix seconds (independent of
 * scheduler/: uses timegm). Returns 0 on success. */
static int parse_iso(const char *s, int64_t *out)
{
    int y, mo, d, h, mi, sec = 0, n = 0;
    if (sscanf(s, "%d-%d-%dT%d:%d%n", &y, &mo, &d, &h, &mi, &n) != 5)
        return -1;
    s += n;
    if (*s == ':') {
        if (sscanf(s, ":%d%n", &sec, &n) != 1)
            return -1;
        s += n;
    }
    struct tm tm = {0};
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    int64_t t = (int64_t)timegm(&tm);
    if (*s == 'Z')
        return (*out = t), 0;
    int oh, om;
    if ((*s == '+' || *s == '-') && sscanf(s + 1, "%d:%d", &oh, &om) == 2) {
        int off = (oh * 3600 + om * 60) * (*s == '-' ? -1 : 1);
        *out = t - off;
        return 0;
    }
    return -1;
}

static struct cronx *must_parse(const char *text, const char *zone)
{
    struct cronx *c = NULL;
    struct err e = {0};
    int rc = cronx_parse(text, zone, &c, &e);
    if (rc != 0)
        fail_msg("parse '%s' failed: %s", text, e.msg);
    return c;
}

/* ------------------------------------------------------------ vectors */

static int nvectors;

static char *next_tab(char **p)
{
    char *s = *p;
    if (!s)
        return NULL;
    char *t = strchr(s, '\t');
    if (t) {
        *t = '\0';
        *p = t + 1;
    } else {
        *p = NULL;
    }
    return s;
}

static void run_vector_file(const char *name)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/data/cron/%s", src_dir(), name);
    FILE *f = fopen(path, "r");
    if (!f)
        fail_msg("cannot open %s", path);
    char line[4096];
    int lineno = 0, failures = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '#' || line[0] == '\0')
            continue;
        char *p = line;
        char *kind = next_tab(&p), *expr = next_tab(&p), *zone = next_tab(&p);
        if (!kind || !expr || !zone)
            fail_msg("%s:%d: malformed", name, lineno);
        const char *z = strcmp(zone, "-") == 0 ? NULL : zone;
        struct cronx *c = NULL;
        struct err e = {0};
        int rc = cronx_parse(expr, z, &c, &e);
        nvectors++;
        if (strcmp(kind, "error") == 0) {
            char *want = next_tab(&p);
            if (rc == 0) {
                print_error("%s:%d: '%s' parsed, wanted error '%s'\n", name,
                            lineno, expr, want);
                failures++;
                cronx_free(c);
            } else if (rc != RR_E_INVAL || strcmp(e.msg, want) != 0) {
                print_error("%s:%d: '%s': got '%s' (rc %d), wanted '%s'\n",
                            name, lineno, expr, e.msg, rc, want);
                failures++;
            }
            continue;
        }
        if (rc != 0) {
            print_error("%s:%d: '%s' failed to parse: %s\n", name, lineno,
                        expr, e.msg);
            failures++;
            continue;
        }
        char *from_s = next_tab(&p);
        int64_t from;
        if (!from_s || parse_iso(from_s, &from) != 0)
            fail_msg("%s:%d: bad from", name, lineno);
        if (strcmp(kind, "next") == 0) {
            char *want = next_tab(&p);
            char got[8192];
            size_t len = 0;
            got[0] = '\0';
            int n = 0;
            for (const char *q = want; *q; q++)
                n += *q == ' ';
            n++;
            int64_t t = from;
            for (int i = 0; i < n; i++) {
                t = cronx_next(c, t);
                char buf[CRONX_LOCAL_MAX];
                if (t == CRONX_NEVER)
                    snprintf(buf, sizeof buf, "never");
                else
                    cronx_format_local(c, t, buf);
                len += (size_t)snprintf(got + len, sizeof got - len, "%s%s",
                                        i ? " " : "", buf);
                if (t == CRONX_NEVER)
                    break;
            }
            if (strcmp(got, want) != 0) {
                print_error("%s:%d: '%s' %s from %s:\n  got  %s\n  want %s\n",
                            name, lineno, expr, zone, from_s, got, want);
                failures++;
            }
            /* preview gives the same fires */
            int64_t at[64];
            struct cronx_preview pv;
            cronx_preview(c, from, n < 64 ? n : 64, at, &pv);
            t = from;
            for (int i = 0; i < pv.count; i++) {
                t = cronx_next(c, t);
                if (at[i] != t) {
                    print_error("%s:%d: preview differs at %d\n", name, lineno, i);
                    failures++;
                    break;
                }
            }
        } else if (strcmp(kind, "warn") == 0) {
            char *count_s = next_tab(&p), *want = next_tab(&p);
            int count = count_s ? atoi(count_s) : 5;
            int64_t at[1000];
            struct cronx_preview pv;
            cronx_preview(c, from, count, at, &pv);
            bool found = false;
            for (int i = 0; i < pv.nwarnings; i++)
                if (strcmp(want, "none") != 0 && strstr(pv.warnings[i], want))
                    found = true;
            if (strcmp(want, "none") == 0)
                found = pv.nwarnings == 0;
            if (!found) {
                print_error("%s:%d: '%s': warning '%s' not found; got %d:\n",
                            name, lineno, expr, want, pv.nwarnings);
                for (int i = 0; i < pv.nwarnings; i++)
                    print_error("    %s\n", pv.warnings[i]);
                failures++;
            }
        } else {
            fail_msg("%s:%d: unknown kind '%s'", name, lineno, kind);
        }
        cronx_free(c);
    }
    fclose(f);
    if (failures)
        fail_msg("%s: %d vector(s) failed", name, failures);
}

static void test_vectors_errors(void **state)
{
    (void)state;
    run_vector_file("errors.tsv");
}

static void test_vectors_next(void **state)
{
    (void)state;
    run_vector_file("next.tsv");
}

static void test_vectors_dst(void **state)
{
    (void)state;
    run_vector_file("dst.tsv");
}

static void test_vectors_warnings(void **state)
{
    (void)state;
    run_vector_file("warnings.tsv");
}

static void test_vector_count(void **state)
{
    (void)state;
    print_message("vectors checked: %d\n", nvectors);
    assert_true(nvectors >= 300);
}

/* ------------------------------------------------------------ oracle */

/* A generated expression: the text and the sets it denotes (built by the
 * generator, not by parsing the text). */
struct gen {
    char text[160];
    bool minute[60], hour[24], dom[32], mon[13], dow[7];
    bool dom_star, dow_star, hour_star_first;
};

static void set_all(bool *v, int lo, int hi, int step)
{
    for (int i = lo; i <= hi; i += step)
        v[i] = true;
}

/* Append a random item for a field with range lo..hi to text; mark set. */
static void gen_field(char *text, size_t cap, bool *set, int lo, int hi,
                      int field, bool *is_star, bool *star_first, int pref_lo,
                      int pref_hi)
{
    static const char *mon_n[] = {"", "jan", "Feb", "MAR", "apr", "May", "jun",
                                  "JUL", "aug", "Sep", "oct", "NOV", "dec"};
    static const char *dow_n[] = {"sun", "Mon", "TUE", "wed", "Thu", "fri", "SAT"};
    int kind = rnd_in(0, 9);
    size_t len = strlen(text);
    char *o = text + len;
    size_t room = cap - len;
    *is_star = false;
    *star_first = false;
    int a = rnd_in(pref_lo, pref_hi), b;
    if (field == 4 && kind == 9)
        kind = 1;
    switch (kind) {
    case 0:
    case 1:
        snprintf(o, room, "*");
        set_all(set, lo, hi, 1);
        *is_star = true;
        *star_first = true;
        break;
    case 2: /* single value, maybe a name */
        if (field == 3 && rnd() % 2)
            snprintf(o, room, "%s", mon_n[a]);
        else if (field == 4 && rnd() % 2)
            snprintf(o, room, "%s", dow_n[a % 7]);
        else
            snprintf(o, room, "%d", a);
        set[field == 4 ? a % 7 : a] = true;
        break;
    case 3: /* range */
        b = rnd_in(a, pref_hi);
        snprintf(o, room, "%d-%d", a, b);
        for (int i = a; i <= b; i++)
            set[field == 4 ? i % 7 : i] = true;
        break;
    case 4: { /* star step */
        int st = rnd_in(1, (hi - lo) / 2 + 1);
        snprintf(o, room, "*/%d", st);
        set_all(set, lo, hi, st);
        *star_first = true;
        if (field == 4)
            set[0] = set[0] || set[7 % 7];
        break;
    }
    case 5: { /* a-b/n */
        b = rnd_in(a, hi);
        int st = rnd_in(1, 7);
        snprintf(o, room, "%d-%d/%d", a, b, st);
        for (int i = a; i <= b; i += st)
            set[field == 4 ? i % 7 : i] = true;
        break;
    }
    case 6: { /* a/n */
        int st = rnd_in(1, hi - lo + 1 < 9 ? hi - lo + 1 : 9);
        snprintf(o, room, "%d/%d", a, st);
        for (int i = a; i <= hi; i += st)
            set[field == 4 ? i % 7 : i] = true;
        break;
    }
    default: { /* list */
        int n = rnd_in(2, 4);
        size_t l2 = 0;
        for (int k = 0; k < n; k++) {
            int v = rnd_in(pref_lo, pref_hi);
            l2 += (size_t)snprintf(o + l2, room - l2, "%s%d", k ? "," : "", v);
            set[field == 4 ? v % 7 : v] = true;
        }
        break;
    }
    }
}

static void gen_expr(struct gen *g, bool loose_days)
{
    memset(g, 0, sizeof *g);
    bool star, sf;
    gen_field(g->text, sizeof g->text, g->minute, 0, 59, 0, &star, &sf, 0, 59);
    strcat(g->text, " ");
    /* hours concentrated around typical transition hours */
    gen_field(g->text, sizeof g->text, g->hour, 0, 23, 1, &star, &sf, 0,
              rnd() % 3 ? 4 : 23);
    g->hour_star_first = sf;
    strcat(g->text, " ");
    if (loose_days && rnd() % 3) {
        strcat(g->text, "*");
        set_all(g->dom, 1, 31, 1);
        g->dom_star = true;
    } else {
        gen_field(g->text, sizeof g->text, g->dom, 1, 31, 2, &g->dom_star, &sf,
                  1, 31);
        g->dom_star = strcmp(g->text + strlen(g->text) - 1, "*") == 0 &&
                      g->text[strlen(g->text) - 2] == ' ';
    }
    strcat(g->text, " *");
    set_all(g->mon, 1, 12, 1);
    strcat(g->text, " ");
    if (loose_days && rnd() % 3) {
        strcat(g->text, "*");
        set_all(g->dow, 0, 6, 1);
        g->dow_star = true;
    } else {
        bool tmp[8] = {0};
        gen_field(g->text, sizeof g->text, tmp, 0, 7, 4, &g->dow_star, &sf, 0, 7);
        for (int i = 0; i < 8; i++)
            if (tmp[i])
                g->dow[i % 7] = true;
        size_t L = strlen(g->text);
        g->dow_star = g->text[L - 1] == '*' && g->text[L - 2] == ' ';
    }
    /* A day-of-month list that can never occur is rejected at parse: the
     * month field is '*', so day 1..29 always exists; fine. */
}

static bool gen_day_match(const struct gen *g, const struct tm *tm)
{
    bool dm = g->dom[tm->tm_mday], wm = g->dow[tm->tm_wday];
    if (!g->dom_star && !g->dow_star)
        return dm || wm;
    return dm && wm;
}

/* Does local wall time L (seconds, as if UTC) match? Uses gmtime_r. */
static bool gen_match(const struct gen *g, int64_t L)
{
    time_t tt = (time_t)L;
    struct tm tm;
    gmtime_r(&tt, &tm);
    return g->minute[tm.tm_min] && g->hour[tm.tm_hour] &&
           g->mon[tm.tm_mon + 1] && gen_day_match(g, &tm);
}

static int64_t glibc_local(int64_t t)
{
    time_t tt = (time_t)t;
    struct tm tm;
    localtime_r(&tt, &tm);
    return t + tm.tm_gmtoff;
}

/* Oracle: next fire strictly after `after` per docs/schedules.md, or INT64_MIN if
 * none within `window` seconds. Instants and offsets are minute-aligned in the
 * zones used here (post-1970). */
static int64_t oracle_next(const struct gen *g, int64_t after, int64_t window)
{
    int64_t t0 = (after / 60 + 1) * 60; /* first minute instant > after */
    if (after < 0 && after % 60 != 0)
        t0 = (after / 60) * 60;
    if (g->hour_star_first) {
        for (int64_t t = t0; t <= after + window; t += 60)
            if (gen_match(g, glibc_local(t)))
                return t;
        return INT64_MIN;
    }
    /* highest local time reached at instants <= after */
    int64_t hw = INT64_MIN;
    int64_t base = after - after % 60;
    if (after % 60 < 0)
        base -= 60;
    for (int64_t t = base - 3 * 3600; t <= base; t += 60) {
        int64_t span = after - t < 59 ? after - t : 59;
        int64_t v = glibc_local(t) + span;
        if (v > hw)
            hw = v;
    }
    for (int64_t t = t0; t <= after + window; t += 60) {
        int64_t lt = glibc_local(t);
        int64_t L = hw >= 0 ? (hw / 60 + 1) * 60 : -((-hw) / 60) * 60;
        if (L <= hw)
            L += 60;
        for (; L <= lt; L += 60)
            if (gen_match(g, L))
                return t;
        if (lt + 59 > hw)
            hw = lt + 59;
    }
    return INT64_MIN;
}

static void set_tz(const char *zone)
{
    if (setenv("TZ", zone, 1) != 0)
        fail_msg("setenv");
    tzset();
}

/* Offset-change instants (per glibc) between years y0 and y1, hourly scan
 * then bisection. */
static int find_transitions(int64_t *out, int max, int y0, int y1)
{
    struct tm tm = {0};
    tm.tm_year = y0 - 1900;
    tm.tm_mday = 1;
    int64_t t = (int64_t)timegm(&tm);
    tm.tm_year = y1 - 1900;
    int64_t end = (int64_t)timegm(&tm);
    int n = 0;
    int64_t prev = glibc_local(t) - t;
    for (; t < end && n < max; t += 3600) {
        int64_t off = glibc_local(t + 3600) - (t + 3600);
        if (off != prev) {
            int64_t lo = t, hi = t + 3600; /* off(lo)=prev, off(hi)=off */
            while (hi - lo > 1) {
                int64_t mid = lo + (hi - lo) / 2;
                if (glibc_local(mid) - mid == prev)
                    lo = mid;
                else
                    hi = mid;
            }
            out[n++] = hi;
            prev = off;
        }
    }
    return n;
}

static const char *const oracle_zones[] = {
    "America/New_York", "Europe/Berlin", "Australia/Lord_Howe",
    "America/Sao_Paulo", "Asia/Kolkata",
};

static void test_oracle_dst(void **state)
{
    (void)state;
    int compared = 0, fires = 0;
    rng_state = 0x1234567ULL;
    for (size_t zi = 0; zi < sizeof oracle_zones / sizeof *oracle_zones; zi++) {
        const char *zone = oracle_zones[zi];
        set_tz(zone);
        static int64_t tr[512];
        int ntr = find_transitions(tr, 512, 1985, 2045);
        if (strcmp(zone, "Asia/Kolkata") == 0)
            assert_int_equal(ntr, 0);
        else
            assert_true(ntr > 20);
        int queries = ntr ? 320 : 60;
        for (int q = 0; q < queries; q++) {
            struct gen g;
            gen_expr(&g, true);
            struct cronx *c = NULL;
            struct err e = {0};
            if (cronx_parse(g.text, zone, &c, &e) != 0)
                fail_msg("generated '%s' rejected: %s", g.text, e.msg);
            int64_t center = ntr ? tr[rnd() % (uint64_t)ntr]
                                 : 631152000 + (int64_t)(rnd() % 1500000000ULL);
            /* start somewhere in the 30 h before the transition, sometimes
             * inside the gap/fold hour, sometimes at odd seconds */
            int64_t after = center - (int64_t)(rnd() % (30 * 3600));
            if (rnd() % 4 == 0)
                after = center - 3600 + (int64_t)(rnd() % 7200);
            int64_t a = after;
            for (int k = 0; k < 5; k++) {
                int64_t want = oracle_next(&g, a, 8 * 86400);
                int64_t got = cronx_next(c, a);
                if (want == INT64_MIN) {
                    if (got != CRONX_NEVER && got <= a + 8 * 86400)
                        fail_msg("%s '%s' after %lld: oracle none, got %lld",
                                 zone, g.text, (long long)a, (long long)got);
                    break;
                }
                if (got != want)
                    fail_msg("%s '%s' after %lld: got %lld want %lld", zone,
                             g.text, (long long)a, (long long)got,
                             (long long)want);
                fires++;
                a = got;
            }
            compared++;
            cronx_free(c);
        }
    }
    unsetenv("TZ");
    tzset();
    print_message("oracle: %d expressions, %d fires compared\n", compared, fires);
}

/* ------------------------------------------------------------ zones */

/* Our offsets (via cronx_format_local) against glibc's over 1970-2199. */
static void test_offsets_vs_glibc(void **state)
{
    (void)state;
    static const char *const zones[] = {
        "America/New_York", "Europe/Berlin", "Australia/Lord_Howe",
        "America/Sao_Paulo", "Asia/Kolkata", "Europe/London",
        "Australia/Sydney", "America/Santiago", "Pacific/Chatham",
        "Africa/Casablanca", "Europe/Dublin", "America/Godthab", "UTC",
        "Etc/GMT+5", "Asia/Tehran", "America/St_Johns",
    };
    rng_state = 42;
    for (size_t zi = 0; zi < sizeof zones / sizeof *zones; zi++) {
        struct cronx *c = must_parse("0 0 * * *", zones[zi]);
        set_tz(zones[zi]);
        for (int i = 0; i < 4000; i++) {
            int64_t t = (int64_t)(rnd() % 7258118400ULL); /* 1970..2199 */
            char buf[CRONX_LOCAL_MAX];
            cronx_format_local(c, t, buf);
            time_t tt = (time_t)t;
            struct tm tm;
            localtime_r(&tt, &tm);
            char want[64];
            long off = tm.tm_gmtoff < 0 ? -tm.tm_gmtoff : tm.tm_gmtoff;
            snprintf(want, sizeof want, "%04d-%02d-%02dT%02d:%02d:%02d%c%02ld:%02ld",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                     tm.tm_min, tm.tm_sec, tm.tm_gmtoff < 0 ? '-' : '+',
                     off / 3600, off % 3600 / 60);
            if (strcmp(buf, want) != 0)
                fail_msg("%s at %lld: got %s want %s", zones[zi], (long long)t,
                         buf, want);
        }
        cronx_free(c);
    }
    unsetenv("TZ");
    tzset();
}

static uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void wr32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* Write a "slim" copy of a zone: v2 data only, transitions before `cut`
 * kept, footer kept. */
static void make_slim(const char *zone, const char *dir, const char *name,
                      int64_t cut)
{
    char path[1024];
    snprintf(path, sizeof path, "/usr/share/zoneinfo/%s", zone);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static unsigned char in[65536];
    size_t len = fread(in, 1, sizeof in, f);
    fclose(f);
    assert_true(len > 44 && in[4] >= '2');
    uint32_t c[6];
    for (int i = 0; i < 6; i++)
        c[i] = rd32(in + 20 + 4 * i);
    size_t v1 = 44 + c[3] * 5 + c[4] * 6 + c[5] + c[2] * 8 + c[1] + c[0];
    const unsigned char *h = in + v1;
    for (int i = 0; i < 6; i++)
        c[i] = rd32(h + 20 + 4 * i);
    uint32_t timecnt = c[3], typecnt = c[4], charcnt = c[5];
    const unsigned char *tr = h + 44, *idx = tr + timecnt * 8,
                        *types = idx + timecnt, *chars = types + typecnt * 6;
    const unsigned char *rest = chars + charcnt; /* leap(0), isstd, isut */
    size_t restlen = c[1] + c[0];
    const unsigned char *footer = rest + restlen;
    size_t flen = (size_t)(in + len - footer);
    uint32_t keep = 0;
    while (keep < timecnt) {
        int64_t t = (int64_t)((uint64_t)rd32(tr + 8 * keep) << 32 |
                              rd32(tr + 8 * keep + 4));
        if (t >= cut)
            break;
        keep++;
    }
    static unsigned char out[65536];
    size_t o = 0;
    /* v1 header with zero counts except typecnt 1, then v2 header */
    memcpy(out, in, 44);
    for (int i = 0; i < 6; i++)
        wr32(out + 20 + 4 * i, 0);
    wr32(out + 36, 1);
    wr32(out + 40, 1);
    o = 44;
    memset(out + o, 0, 7); /* one ttinfo + one char */
    o += 7;
    memcpy(out + o, h, 44);
    wr32(out + o + 32, keep);
    wr32(out + o + 20, 0);
    wr32(out + o + 24, 0);
    o += 44;
    memcpy(out + o, tr, keep * 8);
    o += keep * 8;
    memcpy(out + o, idx, keep);
    o += keep;
    memcpy(out + o, types, typecnt * 6 + charcnt);
    o += typecnt * 6 + charcnt;
    memcpy(out + o, footer, flen);
    o += flen;
    char dpath[1024];
    snprintf(dpath, sizeof dpath, "%s/Slim", dir);
    mkdir(dpath, 0700);
    snprintf(path, sizeof path, "%s/Slim/%s", dir, name);
    f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(out, 1, o, f), o);
    assert_int_equal(fclose(f), 0);
}

/* Footer rules must give the same fires as the fat table. */
static void test_slim_vs_fat(void **state)
{
    (void)state;
    char dir[] = "/tmp/rr_tz_XXXXXX";
    assert_non_null(mkdtemp(dir));
    make_slim("America/New_York", dir, "NY", 1199145600 /* 2008 */);
    make_slim("Australia/Lord_Howe", dir, "LH", 1199145600);
    make_slim("Europe/Berlin", dir, "BER", 946684800 /* 2000 */);
    setenv("RRDEPLOY_ZONEINFO", dir, 1);
    static const char *const pairs[][2] = {
        {"America/New_York", "Slim/NY"},
        {"Australia/Lord_Howe", "Slim/LH"},
        {"Europe/Berlin", "Slim/BER"},
    };
    static const char *const exprs[] = {
        "30 2 * * *", "*/15 * * * *", "0 1 * * *", "15 2 * * SUN",
        "0 0 1 * *", "45 * * * *", "0,30 1-3 * * *",
    };
    for (size_t p = 0; p < 3; p++) {
        /* load the slim zone while the override is in force */
        struct err e = {0};
        assert_int_equal(cronx_zone_check(pairs[p][1], &e), 0);
    }
    unsetenv("RRDEPLOY_ZONEINFO");
    rng_state = 7;
    for (size_t p = 0; p < 3; p++)
        for (size_t x = 0; x < sizeof exprs / sizeof *exprs; x++) {
            struct cronx *fat = must_parse(exprs[x], pairs[p][0]);
            struct cronx *slim = must_parse(exprs[x], pairs[p][1]);
            for (int i = 0; i < 200; i++) {
                int64_t t = 1199145600 + (int64_t)(rnd() % 5900000000ULL);
                int64_t a = cronx_next(fat, t), b = cronx_next(slim, t);
                if (a != b)
                    fail_msg("%s '%s' from %lld: fat %lld slim %lld",
                             pairs[p][0], exprs[x], (long long)t, (long long)a,
                             (long long)b);
            }
            cronx_free(fat);
            cronx_free(slim);
        }
    char cmd[1100];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_zone_check(void **state)
{
    (void)state;
    struct err e = {0};
    assert_int_equal(cronx_zone_check("UTC", &e), 0);
    assert_int_equal(cronx_zone_check("America/New_York", &e), 0);
    assert_int_equal(cronx_zone_check("Etc/GMT-14", &e), 0);
    static const struct {
        const char *name, *msg;
    } bad[] = {
        {"Mars/Base", "unknown time zone 'Mars/Base'"},
        {"../etc/passwd", "invalid time zone name '../etc/passwd'"},
        {"/etc/passwd", "invalid time zone name '/etc/passwd'"},
        {"America/../UTC", "invalid time zone name 'America/../UTC'"},
        {"America", "unknown time zone 'America'"},
        {"zone.tab", "invalid time zone name 'zone.tab'"},
        {"", "empty time zone name"},
        {"a b", "invalid time zone name 'a b'"},
        {"America/", "invalid time zone name 'America/'"},
        {"-rf", "invalid time zone name '-rf'"},
        {"right/UTC", NULL},
        {"leapseconds", "unknown time zone 'leapseconds'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        memset(&e, 0, sizeof e);
        int rc = cronx_zone_check(bad[i].name, &e);
        if (bad[i].msg == NULL) { /* right/ may be absent; never accepted */
            assert_int_not_equal(rc, 0);
            continue;
        }
        assert_int_equal(rc, RR_E_INVAL);
        if (strcmp(e.msg, bad[i].msg) != 0)
            fail_msg("zone '%s': got '%s' want '%s'", bad[i].name, e.msg,
                     bad[i].msg);
    }
    char longname[400];
    memset(longname, 'A', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    assert_int_equal(cronx_zone_check(longname, &e), RR_E_INVAL);
}

/* ------------------------------------------------------------ misc */

static void test_manual(void **state)
{
    (void)state;
    struct cronx *c = must_parse("manual", "Europe/Berlin");
    assert_true(cronx_is_manual(c));
    assert_string_equal(cronx_zone_name(c), "UTC");
    assert_true(cronx_next(c, 0) == CRONX_NEVER);
    int64_t at[3];
    struct cronx_preview pv;
    cronx_preview(c, 0, 3, at, &pv);
    assert_int_equal(pv.count, 0);
    assert_int_equal(pv.nwarnings, 0);
    cronx_free(c);
    cronx_free(NULL);
    c = must_parse("  0 0 * * *  ", NULL);
    assert_false(cronx_is_manual(c));
    assert_string_equal(cronx_zone_name(c), "UTC");
    char buf[CRONX_LOCAL_MAX];
    cronx_format_local(c, 1767225600, buf);
    assert_string_equal(buf, "2026-01-01T00:00:00+00:00");
    cronx_free(c);
    c = must_parse("CRON_TZ=Asia/Kolkata 0 0 * * *", "Europe/Berlin");
    assert_string_equal(cronx_zone_name(c), "Asia/Kolkata");
    cronx_format_local(c, 1767225600, buf);
    assert_string_equal(buf, "2026-01-01T05:30:00+05:30");
    cronx_free(c);
    c = must_parse("0 0 * * *", "Europe/Berlin");
    assert_string_equal(cronx_zone_name(c), "Europe/Berlin");
    cronx_free(c);
}

static void test_bounds(void **state)
{
    (void)state;
    struct cronx *c = must_parse("* * * * *", NULL);
    assert_true(cronx_next(c, INT64_MAX) == CRONX_NEVER);
    assert_true(cronx_next(c, INT64_MAX - 1) == CRONX_NEVER);
    int64_t t = cronx_next(c, INT64_MIN + 1);
    assert_true(t != CRONX_NEVER);
    char buf[CRONX_LOCAL_MAX];
    cronx_format_local(c, INT64_MIN, buf);
    cronx_format_local(c, INT64_MAX, buf);
    /* 2199 must work */
    int64_t y2199;
    assert_int_equal(parse_iso("2199-12-31T23:59:00Z", &y2199), 0);
    assert_int_equal(cronx_next(c, y2199 - 60), y2199);
    cronx_free(c);
    c = must_parse("0 0 29 2 *", "America/New_York");
    int64_t from;
    assert_int_equal(parse_iso("2096-03-01T00:00:00Z", &from), 0);
    t = cronx_next(c, from);
    cronx_format_local(c, t, buf);
    assert_string_equal(buf, "2104-02-29T00:00:00-05:00"); /* 2100 not leap */
    cronx_free(c);
    /* very long input is rejected quickly */
    char *big = malloc(200000);
    assert_non_null(big);
    memset(big, '1', 199999);
    big[199999] = '\0';
    struct err e = {0};
    assert_int_equal(cronx_parse(big, NULL, &c, &e), RR_E_INVAL);
    assert_string_equal(e.msg, "schedule too long (more than 1024 bytes)");
    free(big);
    assert_int_equal(cronx_parse(NULL, NULL, &c, &e), RR_E_INVAL);
}

/* Monotonicity and strictness over many random expressions in UTC and a DST
 * zone: next(t) > t, and no fire is skipped between t and next(t)-1. */
static void test_properties(void **state)
{
    (void)state;
    rng_state = 99;
    static const char *const zones[] = {"UTC", "America/New_York",
                                        "Australia/Lord_Howe"};
    for (int i = 0; i < 600; i++) {
        struct gen g;
        gen_expr(&g, false);
        struct cronx *c = NULL;
        struct err e = {0};
        if (cronx_parse(g.text, zones[i % 3], &c, &e) != 0)
            fail_msg("'%s': %s", g.text, e.msg);
        int64_t t = (int64_t)(rnd() % 7000000000ULL);
        for (int k = 0; k < 20; k++) {
            int64_t n = cronx_next(c, t);
            assert_true(n != CRONX_NEVER);
            assert_true(n > t);
            if (n - 1 > t)
                assert_int_equal(cronx_next(c, n - 1), n);
            t = n + (int64_t)(rnd() % 3);
        }
        cronx_free(c);
    }
}

static void *thread_body(void *arg)
{
    static const char *const zones[] = {"Europe/Paris", "Asia/Tokyo",
                                        "America/Chicago", "Africa/Cairo",
                                        "Pacific/Auckland", "Europe/Madrid"};
    intptr_t id = (intptr_t)arg;
    int64_t sum = 0;
    for (int i = 0; i < 200; i++) {
        struct cronx *c = NULL;
        struct err e = {0};
        if (cronx_parse("*/5 1-3 * * *", zones[(id + i) % 6], &c, &e) != 0)
            return (void *)1;
        int64_t t = 1700000000 + i * 86400;
        for (int k = 0; k < 50; k++)
            t = cronx_next(c, t);
        sum += t;
        cronx_free(c);
    }
    return sum > 0 ? NULL : (void *)1;
}

static void test_threads(void **state)
{
    (void)state;
    pthread_t th[8];
    for (intptr_t i = 0; i < 8; i++)
        assert_int_equal(pthread_create(&th[i], NULL, thread_body, (void *)i), 0);
    for (int i = 0; i < 8; i++) {
        void *r;
        assert_int_equal(pthread_join(th[i], &r), 0);
        assert_null(r);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors_errors),
        cmocka_unit_test(test_vectors_next),
        cmocka_unit_test(test_vectors_dst),
        cmocka_unit_test(test_vectors_warnings),
        cmocka_unit_test(test_vector_count),
        cmocka_unit_test(test_manual),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_zone_check),
        cmocka_unit_test(test_oracle_dst),
        cmocka_unit_test(test_offsets_vs_glibc),
        cmocka_unit_test(test_slim_vs_fat),
        cmocka_unit_test(test_properties),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
