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
 *     table), slim-vs-fat TZif files, bounds, thread safety;
 *   - cronx_count against walking cronx_next: hand-worked tables, and random
 *     expressions and windows in five real zones and in synthetic zones whose
 *     offset changes hours apart.
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
        /* "kind@id": parse with H allowed, hashing id */
        char *id = strchr(kind, '@'), resolved[CRONX_RESOLVED_MAX];
        if (id)
            *id++ = '\0';
        int rc = id ? cronx_parse_seeded(expr, z, cronx_seed(id, strlen(id)),
                                         resolved, sizeof resolved, &c, &e)
                    : cronx_parse(expr, z, &c, &e);
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
        if (strcmp(kind, "resolved") == 0) {
            char *want = next_tab(&p);
            if (!id || !want || strcmp(resolved, want) != 0) {
                print_error("%s:%d: '%s': resolved '%s', wanted '%s'\n", name,
                            lineno, expr, resolved, want ? want : "");
                failures++;
            }
            cronx_free(c);
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

static void test_vectors_forms(void **state)
{
    (void)state;
    run_vector_file("forms.tsv");
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
    bool dom_last, dow_last[7]; /* L, and Ln for weekday n */
    uint8_t nth[7];             /* n#k: bit k */
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
    /* The forms beyond Vixie cron, now and then: L in day-of-month, Ln /
     * nL / n#k in day-of-week (appended to the list, or alone). */
    char *dow_text = strrchr(g->text, ' ') + 1;
    if (rnd() % 5 == 0) {
        char *dom_text = dow_text - 3; /* "<dom> * <dow>": back over " * " */
        while (dom_text > g->text && dom_text[-1] != ' ')
            dom_text--;
        char rest[160];
        snprintf(rest, sizeof rest, "%s", dom_text);
        char *sp = strchr(rest, ' ');
        *sp = '\0';
        bool alone = rnd() % 2;
        snprintf(dom_text, sizeof g->text - (size_t)(dom_text - g->text),
                 "%s%sL %s", alone ? "" : rest, alone ? "" : ",", sp + 1);
        if (alone)
            memset(g->dom, 0, sizeof g->dom);
        g->dom_last = true;
        dow_text = strrchr(g->text, ' ') + 1;
    }
    if (rnd() % 4 == 0) {
        static const char *const names[] = {"SUN", "mon", "Tue", "WED",
                                            "thu", "Fri", "sat"};
        bool alone = rnd() % 2;
        if (alone) {
            *dow_text = '\0';
            memset(g->dow, 0, sizeof g->dow);
        }
        int n = rnd_in(1, 2);
        for (int i = 0; i < n; i++) {
            int wd = rnd_in(0, 7), k = rnd_in(1, 5);
            size_t len = strlen(g->text);
            const char *sep = *dow_text ? "," : "";
            switch (rnd() % 3) {
            case 0:
                snprintf(g->text + len, sizeof g->text - len, "%s%dL", sep, wd);
                g->dow_last[wd % 7] = true;
                break;
            case 1:
                snprintf(g->text + len, sizeof g->text - len, "%sL%s", sep,
                         names[wd % 7]);
                g->dow_last[wd % 7] = true;
                break;
            default:
                snprintf(g->text + len, sizeof g->text - len, "%s%d#%d", sep,
                         wd, k);
                g->nth[wd % 7] |= (uint8_t)(1u << k);
                break;
            }
        }
    }
    /* Unrestricted is a set matching every value, however written. */
    g->dom_star = g->dow_star = true;
    for (int d = 1; d <= 31; d++)
        g->dom_star = g->dom_star && g->dom[d];
    for (int d = 0; d < 7; d++)
        g->dow_star = g->dow_star && g->dow[d];
}

static int gen_dim(const struct tm *tm)
{
    static const int dim[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y = tm->tm_year + 1900;
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return dim[tm->tm_mon] + (tm->tm_mon == 1 && leap);
}

static bool gen_day_match(const struct gen *g, const struct tm *tm)
{
    int dim = gen_dim(tm), d = tm->tm_mday, wd = tm->tm_wday;
    bool dm = g->dom[d] || (g->dom_last && d == dim);
    bool wm = g->dow[wd] || (g->dow_last[wd] && d + 7 > dim) ||
              ((g->nth[wd] >> ((d + 6) / 7)) & 1);
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

/* ------------------------------------------------------------ count */

#define T_1800 (-5364662400LL) /* 1800-01-01T00:00Z: earlier instants clamp */
#define T_9000 (221845392000LL) /* 9000-01-01T00:00Z: no search starts later */
#define WALK_CAP 1500           /* fires the walking reference may visit */

/* The reference cronx_count must equal: walk cronx_next from from - 1. At
 * most `cap` fires: returns -1 when there are more, with *capped the cap-th
 * fire; else the count, *last and *before_last. */
static int64_t walk_count(const struct cronx *c, int64_t from, int64_t until,
                          int cap, int64_t *last, int64_t *before_last,
                          int64_t *capped)
{
    int64_t n = 0, t = from == INT64_MIN ? from : from - 1;
    *last = *before_last = CRONX_NEVER;
    while ((t = cronx_next(c, t)) != CRONX_NEVER && t <= until) {
        *before_last = *last;
        *last = t;
        if (++n == cap) {
            *capped = t;
            return -1;
        }
    }
    return n;
}

/* A random expression of all five fields: gen_expr's, with the month field
 * replaced by a random one half of the time, or a preset. */
static void gen_count_expr(char *out, size_t cap)
{
    static const char *const presets[] = {"@hourly", "@daily", "@weekly",
                                          "@monthly", "@yearly"};
    if (rnd() % 16 == 0) {
        snprintf(out, cap, "%s", presets[rnd() % 5]);
        return;
    }
    struct gen g;
    gen_expr(&g, rnd() % 2 == 0);
    char mon[64] = "*";
    if (rnd() % 2) {
        bool set[13] = {0}, star, sf;
        mon[0] = '\0';
        gen_field(mon, sizeof mon, set, 1, 12, 3, &star, &sf, 1, 12);
    }
    char f[5][64];
    if (sscanf(g.text, "%63s %63s %63s %63s %63s", f[0], f[1], f[2], f[3],
               f[4]) != 5)
        fail_msg("generated '%s' has not 5 fields", g.text);
    snprintf(out, cap, "%s %s %s %s %s", f[0], f[1], f[2], mon, f[4]);
}

/* cronx_count over [from, until] against the walk; windows the walk cannot
 * afford are cut at its WALK_CAP-th fire (or just before it), and the full
 * window is checked for consistency instead: the latest two are consecutive
 * fires, and with `split` the count splits at any point (a walk started
 * between fires finds the same fires as one from before them: true in real
 * zones, not in the dense test zones). Returns the fires compared. */
static int64_t check_window(const struct cronx *c, const char *what,
                            int64_t from, int64_t until, bool split)
{
    int64_t wl, wb, capped = 0, gl = 0, gb = 0;
    int64_t wn = walk_count(c, from, until, WALK_CAP, &wl, &wb, &capped);
    if (wn < 0) {
        int64_t n = cronx_count(c, from, until, &gl, &gb);
        int64_t mid = from + (until - from) / (int64_t)(2 + rnd() % 8);
        if (mid >= T_9000) /* a walk from 9000 on finds nothing */
            mid = from < T_9000 ? T_9000 - 1 : from;
        int64_t l1, b1, l2, b2;
        int64_t n1 = cronx_count(c, from, mid, &l1, &b1);
        int64_t n2 = cronx_count(c, mid + 1, until, &l2, &b2);
        int64_t after = cronx_next(c, gl);
        bool split_ok = n2 >= 2   ? gl == l2 && gb == b2
                        : n2 == 1 ? gl == l2 && gb == l1
                                  : gl == l1 && gb == b1;
        if (split && (n != n1 + n2 || !split_ok))
            fail_msg("%s [%lld, %lld]: count %lld, split at %lld: %lld + %lld",
                     what, (long long)from, (long long)until, (long long)n,
                     (long long)mid, (long long)n1, (long long)n2);
        if (n < WALK_CAP || gl > until ||
            cronx_next(c, gb) != gl || !(after == CRONX_NEVER || after > until))
            fail_msg("%s [%lld, %lld]: count %lld last %lld before %lld", what,
                     (long long)from, (long long)until, (long long)n,
                     (long long)gl, (long long)gb);
        until = capped - (int64_t)(rnd() % 2);
        wn = walk_count(c, from, until, WALK_CAP + 1, &wl, &wb, &capped);
    }
    int64_t gn = cronx_count(c, from, until, &gl, &gb);
    if (gn != wn || gl != wl || gb != wb)
        fail_msg("%s [%lld, %lld]: count %lld last %lld before %lld, walking "
                 "gives %lld %lld %lld", what, (long long)from,
                 (long long)until, (long long)gn, (long long)gl, (long long)gb,
                 (long long)wn, (long long)wl, (long long)wb);
    return wn;
}

/* A window of one of the kinds the contract is sharpest on. */
static void pick_window(const struct cronx *c, const int64_t *tr, int ntr,
                        int64_t *from, int64_t *until)
{
    /* 1990..2040 */
    int64_t base = 631152000 + (int64_t)(rnd() % 1577836800ULL);
    int64_t len = (int64_t)(rnd() % (1ULL << rnd_in(0, 28))); /* to 8.5 y */
    switch (rnd() % 8) {
    case 0: /* from and until exactly on fires */
        *from = cronx_next(c, base);
        *until = cronx_next(c, *from + len);
        return;
    case 1: /* one second either side of a fire */
        *from = cronx_next(c, base) + 1;
        *until = cronx_next(c, *from + len) - 1;
        return;
    case 2:
    case 3: /* around an offset change; ends in a gap or fold half the time */
        if (ntr > 0) {
            int64_t T = tr[rnd() % (uint64_t)ntr];
            *from = T - (int64_t)(rnd() % (2 * 86400));
            *until = rnd() % 2 ? T - 3600 + (int64_t)(rnd() % 7200)
                               : T + (int64_t)(rnd() % (2 * 86400));
            if (rnd() % 2)
                *from = T - 3600 + (int64_t)(rnd() % 7200);
            return;
        }
        break;
    case 4: /* the ends of the searched range: 1800 and 9000 */
        if (rnd() % 2) {
            *from = T_1800 - 86400 + (int64_t)(rnd() % (3 * 86400));
            *until = *from + len;
            if (rnd() % 4 == 0)
                *from = INT64_MIN;
        } else {
            *from = T_9000 - (int64_t)(rnd() % (3 * 366 * 86400LL));
            *until = rnd() % 4 == 0 ? INT64_MAX : *from + len;
        }
        return;
    default:
        break;
    }
    *from = base;
    *until = base + len;
}

static const char *const count_zones[] = {
    "UTC", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe",
    "Asia/Kolkata",
};

/* Differential: cronx_count against walking cronx_next, random expressions,
 * zones and windows (docs/schedules.md §10 for what walking means at DST). */
static void test_count_vs_walk(void **state)
{
    (void)state;
    rng_state = 0xC0FFEE;
    int64_t exprs = 0, windows = 0, fires = 0;
    for (size_t zi = 0; zi < sizeof count_zones / sizeof *count_zones; zi++) {
        const char *zone = count_zones[zi];
        static int64_t tr[512];
        set_tz(zone);
        int ntr = find_transitions(tr, 512, 1985, 2045);
        for (int q = 0; q < 1000; q++) {
            char text[200];
            gen_count_expr(text, sizeof text);
            struct cronx *c = NULL;
            struct err e = {0};
            if (cronx_parse(text, zone, &c, &e) != 0)
                continue; /* a day-of-month the months never have */
            exprs++;
            for (int w = 0; w < 8; w++) {
                int64_t from, until;
                pick_window(c, tr, ntr, &from, &until);
                char what[300];
                snprintf(what, sizeof what, "%s '%s'", zone, text);
                fires += check_window(c, what, from, until, true);
                windows++;
            }
            cronx_free(c);
        }
    }
    unsetenv("TZ");
    tzset();
    print_message("count vs walk: %lld expressions, %lld windows, %lld fires\n",
                  (long long)exprs, (long long)windows, (long long)fires);
    assert_true(exprs >= 4500);
}

#define DENSE_START 1893456000LL /* 2030-01-01T00:00Z */
#define DENSE_CHANGES 400

/* Write dir/Dense/<name>: a TZif v2 zone without a footer rule whose offset
 * changes DENSE_CHANGES times from DENSE_START on, between 30 minutes and 20
 * days apart, by up to 5 hours either way (gaps and folds of every size, folds
 * in a row). No real zone is this dense; it drives cronx_count off its
 * arithmetic path. */
static void make_dense(const char *dir, const char *name, uint64_t seed)
{
    static const int32_t offs[] = {0,    3600,  -3600, 7200,  1800,
                                   -1800, 5400, 10800, -7200, 2700};
    static const int64_t apart[] = {1800,      3600,      5400,
                                    3 * 3600,  5 * 3600,  86400,
                                    2 * 86400, 4 * 86400, 20 * 86400};
    enum { NTYPES = sizeof offs / sizeof *offs };
    static unsigned char out[16384];
    memset(out, 0, sizeof out);
    memcpy(out, "TZif2", 5); /* v1 part: no transitions, one type */
    wr32(out + 36, 1);
    wr32(out + 40, 1);
    size_t o = 44 + 7;
    unsigned char *h = out + o;
    memcpy(h, "TZif2", 5);
    wr32(h + 32, DENSE_CHANGES);
    wr32(h + 36, NTYPES);
    wr32(h + 40, 4);
    o += 44;
    unsigned char *idx = out + o + 8 * DENSE_CHANGES;
    int64_t t = DENSE_START;
    rng_state = seed;
    for (int i = 0; i < DENSE_CHANGES; i++, o += 8) {
        t += apart[rnd() % (sizeof apart / sizeof *apart)];
        wr32(out + o, (uint32_t)((uint64_t)t >> 32));
        wr32(out + o + 4, (uint32_t)t);
        idx[i] = (unsigned char)(rnd() % NTYPES);
        if (i > 0 && idx[i] == idx[i - 1])
            idx[i] = (unsigned char)((idx[i] + 1) % NTYPES);
    }
    o += DENSE_CHANGES;
    for (int k = 0; k < NTYPES; k++, o += 6)
        wr32(out + o, (uint32_t)offs[k]); /* isdst 0, abbreviation 0 */
    memcpy(out + o, "TST", 4);
    o += 4;
    out[o++] = '\n'; /* an empty footer: the last offset holds for ever */
    out[o++] = '\n';
    char path[1024];
    snprintf(path, sizeof path, "%s/Dense", dir);
    mkdir(path, 0700);
    snprintf(path, sizeof path, "%s/Dense/%s", dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(out, 1, o, f), o);
    assert_int_equal(fclose(f), 0);
}

/* The same differential in zones whose offset changes hours apart, where
 * cronx_count must fall back to walking near every change. */
static void test_count_dense_zones(void **state)
{
    (void)state;
    char dir[] = "/tmp/rr_tz_XXXXXX";
    assert_non_null(mkdtemp(dir));
    static const char *const names[] = {"Dense/A", "Dense/B", "Dense/C"};
    for (int z = 0; z < 3; z++) {
        make_dense(dir, names[z] + 6, 1000 + (uint64_t)z);
        struct err e = {0};
        setenv("RRDEPLOY_ZONEINFO", dir, 1); /* loaded once, then cached */
        assert_int_equal(cronx_zone_check(names[z], &e), 0);
        unsetenv("RRDEPLOY_ZONEINFO");
    }
    char cmd[1100];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    rng_state = 0xDE115E;
    int64_t exprs = 0, fires = 0;
    for (int q = 0; q < 900; q++) {
        char text[200];
        gen_count_expr(text, sizeof text);
        struct cronx *c = NULL;
        struct err e = {0};
        if (cronx_parse(text, names[q % 3], &c, &e) != 0)
            continue;
        exprs++;
        for (int w = 0; w < 6; w++) {
            int64_t from = DENSE_START + (int64_t)(rnd() % (1300 * 86400ULL));
            int64_t until = from + (int64_t)(rnd() % (1ULL << rnd_in(0, 26)));
            if (w == 0)
                from = cronx_next(c, from);
            char what[300];
            snprintf(what, sizeof what, "%s '%s'", names[q % 3], text);
            fires += check_window(c, what, from, until, false);
        }
        cronx_free(c);
    }
    print_message("count vs walk, dense zones: %lld expressions, %lld fires\n",
                  (long long)exprs, (long long)fires);
    assert_true(exprs >= 750);
}

/* Month ends, leap years, DST days, the ends of the range: counts worked out
 * by hand (docs/schedules.md §9, §10, §12). */
static const struct count_case {
    const char *expr, *zone, *from, *until;
    int64_t n;
    const char *last, *before_last; /* NULL: CRONX_NEVER */
} count_cases[] = {
    /* leap years: 2000 is one, 2100 is not */
    {"0 0 29 2 *", "UTC", "2000-01-01T00:00Z", "2100-12-31T23:59Z", 25,
     "2096-02-29T00:00Z", "2092-02-29T00:00Z"},
    {"0 0 29 2 *", "UTC", "2096-03-01T00:00Z", "2104-02-28T23:59Z", 0,
     NULL, NULL},
    {"0 0 28-31 2 *", "UTC", "2024-01-01T00:00Z", "2025-12-31T00:00Z", 3,
     "2025-02-28T00:00Z", "2024-02-29T00:00Z"},
    /* month ends */
    {"0 0 31 * *", "UTC", "2026-01-01T00:00Z", "2026-12-31T23:59:59Z", 7,
     "2026-12-31T00:00Z", "2026-10-31T00:00Z"},
    {"0 0 30,31 4,6,9,11 *", "UTC", "2026-01-01T00:00Z", "2026-12-31T00:00Z",
     4, "2026-11-30T00:00Z", "2026-09-30T00:00Z"},
    {"59 23 31 12 *", "UTC", "2020-01-01T00:00Z", "2029-12-31T23:59Z", 10,
     "2029-12-31T23:59Z", "2028-12-31T23:59Z"},
    {"59 23 31 12 *", "UTC", "2020-01-01T00:00Z", "2029-12-31T23:58:59Z", 9,
     "2028-12-31T23:59Z", "2027-12-31T23:59Z"},
    /* the OR rule, and day-of-week a/n running to 7 (Sunday) */
    {"0 0 13 * FRI", "UTC", "2026-01-01T00:00Z", "2026-12-31T23:59Z", 61,
     "2026-12-25T00:00Z", "2026-12-18T00:00Z"},
    {"0 0 * * 1/2", "UTC", "2026-01-05T00:00Z", "2026-01-11T23:59Z", 4,
     "2026-01-11T00:00Z", "2026-01-09T00:00Z"},
    /* America/New_York: gap on 8 March 2026, fold on 1 November 2026 */
    {"* * * * *", "America/New_York", "2026-03-08T00:00-05:00",
     "2026-03-08T23:59:59-04:00", 23 * 60, "2026-03-08T23:59-04:00",
     "2026-03-08T23:58-04:00"},
    {"* * * * *", "America/New_York", "2026-11-01T00:00-04:00",
     "2026-11-01T23:59:59-05:00", 25 * 60, "2026-11-01T23:59-05:00",
     "2026-11-01T23:58-05:00"},
    {"0,30 * * * *", "America/New_York", "2026-03-08T00:00-05:00",
     "2026-03-08T23:59-04:00", 46, "2026-03-08T23:30-04:00",
     "2026-03-08T23:00-04:00"},
    {"30 * * * *", "America/New_York", "2026-11-01T01:00-04:00",
     "2026-11-01T01:59-05:00", 2, "2026-11-01T01:30-05:00",
     "2026-11-01T01:30-04:00"},
    {"30 2 * * *", "America/New_York", "2026-03-07T00:00-05:00",
     "2026-03-09T23:59-04:00", 3, "2026-03-09T02:30-04:00",
     "2026-03-08T03:00-04:00"},
    {"*/30 2 * * *", "America/New_York", "2026-03-08T00:00-05:00",
     "2026-03-08T23:59-04:00", 1, "2026-03-08T03:00-04:00", NULL},
    {"0 2,3 * * *", "America/New_York", "2026-03-08T00:00-05:00",
     "2026-03-08T23:59-04:00", 1, "2026-03-08T03:00-04:00", NULL},
    {"30 1 * * *", "America/New_York", "2026-10-31T12:00-04:00",
     "2026-11-02T12:00-05:00", 2, "2026-11-02T01:30-05:00",
     "2026-11-01T01:30-04:00"},
    {"*/15 1 * * *", "America/New_York", "2026-11-01T00:00-04:00",
     "2026-11-01T23:59-05:00", 4, "2026-11-01T01:45-04:00",
     "2026-11-01T01:30-04:00"},
    /* a window inside the gap's jump and inside the fold */
    {"30 2 * * *", "America/New_York", "2026-03-08T03:00-04:00",
     "2026-03-08T03:00-04:00", 1, "2026-03-08T03:00-04:00", NULL},
    {"30 1 * * *", "America/New_York", "2026-11-01T01:00-05:00",
     "2026-11-01T01:59-05:00", 0, NULL, NULL},
    /* Australia/Lord_Howe shifts by 30 minutes */
    {"* * * * *", "Australia/Lord_Howe", "2026-10-04T00:00+10:30",
     "2026-10-04T23:59+11:00", 24 * 60 - 30, "2026-10-04T23:59+11:00",
     "2026-10-04T23:58+11:00"},
    {"* * * * *", "Australia/Lord_Howe", "2026-04-05T00:00+11:00",
     "2026-04-05T23:59+10:30", 24 * 60 + 30, "2026-04-05T23:59+10:30",
     "2026-04-05T23:58+10:30"},
    {"15 2 * * *", "Australia/Lord_Howe", "2026-10-04T00:00+10:30",
     "2026-10-04T23:59+11:00", 1, "2026-10-04T02:30+11:00", NULL},
    /* Europe/Berlin */
    {"30 2 * * *", "Europe/Berlin", "2026-03-29T00:00+01:00",
     "2026-03-29T23:59+02:00", 1, "2026-03-29T03:00+02:00", NULL},
    {"30 2 * * *", "Europe/Berlin", "2026-10-25T00:00+02:00",
     "2026-10-25T23:59+01:00", 1, "2026-10-25T02:30+02:00", NULL},
    /* four centuries in a zone without DST */
    {"0 0 1 1 *", "Asia/Kolkata", "2001-01-01T00:00+05:30",
     "2400-12-31T23:59+05:30", 400, "2400-01-01T00:00+05:30",
     "2399-01-01T00:00+05:30"},
    /* the ends of the range: from 1800 on, and the first fire at or after
     * 9000-01-01 is the last */
    {"0 0 1 1 *", "UTC", "1700-01-01T00:00Z", "1802-12-31T00:00Z", 2,
     "1802-01-01T00:00Z", "1801-01-01T00:00Z"},
    {"0 0 1 1 *", "UTC", "8990-06-01T00:00Z", "9100-01-01T00:00Z", 10,
     "9000-01-01T00:00Z", "8999-01-01T00:00Z"},
    {"0 0 2 1 *", "UTC", "8998-06-01T00:00Z", "9100-01-01T00:00Z", 2,
     "9000-01-02T00:00Z", "8999-01-02T00:00Z"},
};

/* count_cases, each also against the walk. */
static void test_count_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof count_cases / sizeof *count_cases; i++) {
        const struct count_case *k = &count_cases[i];
        struct cronx *c = must_parse(k->expr, k->zone);
        int64_t from = 0, until = 0, want_last = CRONX_NEVER;
        int64_t want_before = CRONX_NEVER;
        if (parse_iso(k->from, &from) || parse_iso(k->until, &until) ||
            (k->last && parse_iso(k->last, &want_last)) ||
            (k->before_last && parse_iso(k->before_last, &want_before)))
            fail_msg("case %zu: bad time", i);
        int64_t last, before, wl, wb, capped;
        int64_t n = cronx_count(c, from, until, &last, &before);
        if (n != k->n || last != want_last || before != want_before)
            fail_msg("case %zu '%s' %s: count %lld last %lld before %lld, want "
                     "%lld %lld %lld", i, k->expr, k->zone, (long long)n,
                     (long long)last, (long long)before, (long long)k->n,
                     (long long)want_last, (long long)want_before);
        assert_int_equal(walk_count(c, from, until, 100000, &wl, &wb, &capped),
                         n);
        cronx_free(c);
    }
}

/* The edges of the arguments: manual, an empty or reversed window, NULL
 * outputs, the whole range. */
static void test_count_edges(void **state)
{
    (void)state;
    int64_t last = 1, before = 1;
    struct cronx *c = must_parse("manual", NULL);
    assert_int_equal(cronx_count(c, 0, INT64_MAX, &last, &before), 0);
    assert_true(last == CRONX_NEVER && before == CRONX_NEVER);
    cronx_free(c);
    c = must_parse("* * * * *", "America/New_York");
    assert_int_equal(cronx_count(c, 120, 60, &last, &before), 0);
    assert_true(last == CRONX_NEVER && before == CRONX_NEVER);
    assert_int_equal(cronx_count(c, 120, 120, &last, &before), 1);
    assert_true(last == 120 && before == CRONX_NEVER);
    assert_int_equal(cronx_count(c, 121, 179, NULL, NULL), 0);
    assert_int_equal(cronx_count(c, 60, 180, NULL, &before), 3);
    assert_int_equal(before, 120);
    cronx_free(c);
    /* every minute after 1800-01-01T00:00Z to 9000-01-01T00:00Z included */
    c = must_parse("* * * * *", "UTC");
    int64_t n = cronx_count(c, INT64_MIN, INT64_MAX, &last, &before);
    assert_int_equal(n, (T_9000 - T_1800) / 60);
    assert_int_equal(last, T_9000);
    assert_int_equal(before, T_9000 - 60);
    cronx_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors_errors),
        cmocka_unit_test(test_vectors_next),
        cmocka_unit_test(test_vectors_dst),
        cmocka_unit_test(test_vectors_warnings),
        cmocka_unit_test(test_vectors_forms),
        cmocka_unit_test(test_vector_count),
        cmocka_unit_test(test_manual),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_zone_check),
        cmocka_unit_test(test_oracle_dst),
        cmocka_unit_test(test_offsets_vs_glibc),
        cmocka_unit_test(test_slim_vs_fat),
        cmocka_unit_test(test_properties),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_count_table),
        cmocka_unit_test(test_count_edges),
        cmocka_unit_test(test_count_vs_walk),
        cmocka_unit_test(test_count_dense_zones),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
