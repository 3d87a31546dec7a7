/* guard.c -- admission control: who may knock, and how often, before
 * authenticating.
 *
 * Design: a table of client addresses (an IPv4 address, or an IPv6 /64) of a
 * size fixed at creation, set-associative: a keyed hash (SipHash-2-4 with a
 * random key, so a client cannot aim at one set) picks a set of GUARD_WAYS
 * slots, and a new address takes an empty slot of its set or the least
 * useful entry there (keep_score). Memory never grows with the number of
 * addresses seen: a flood of addresses only churns the table. Each entry
 * holds:
 *   - the unauthenticated connections the address has open (capped);
 *   - a token bucket of failed authentications (fail_burst at once, then
 *     fail_rate per second); with no token left its credentials are not
 *     even checked;
 *   - whether it ever failed, and until when it is trusted (it
 *     authenticated successfully).
 * A global bucket (global_burst, global_rate) limits the failures of all
 * addresses together, but only for addresses not in good standing: one that
 * never failed (while the table remembers it) or authenticated within
 * trust_ms is always checked. So a flood from many addresses cannot keep a
 * returning user, or a newcomer's first try, out; it only stops repeated
 * guessing. The price: an attacker gets one unthrottled try per address he
 * controls (and again for addresses the table had to forget).
 *
 * Logging: the first event from an address after a quiet interval is
 * logged at once with its reason; the rest are counted and summarised once
 * per log_interval_ms: a line for each of the log_top busiest addresses and
 * one global line. At most log_firsts "first" lines per interval, so a flood
 * from any number of addresses logs a bounded number of lines.
 *
 * Also here: dap_config_check, the start-up rule for a guessable
 * ROCKETRIDE_APIKEY (refused beyond loopback).
 *
 * Time: every call takes now_ms from a monotonic clock, so tests inject it.
 * Thread: service thread only (dap_config_check: any, before the server). */
#include "dap/dap_internal.h"

#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define GUARD_WAYS 8

struct entry {
    struct dap_addr addr;
    uint64_t gen;            /* 0: empty slot; else unique to this tenancy */
    uint32_t unauth;         /* unauthenticated connections open */
    bool failed;             /* failed to authenticate while in the table */
    bool announced;          /* its first event of this burst was logged */
    double tokens;           /* failed authentications it may make now */
    int64_t tokens_at;       /* ms of the last refill */
    int64_t seen_at;         /* ms of the last use: oldest goes first */
    int64_t event_at;        /* ms of its last event */
    int64_t trusted_until;   /* ms; authenticated recently until then */
    uint32_t n[DAP_GUARD_NEVENTS]; /* events since its last summary line */
};

struct dap_guard {
    struct dap_guard_config cfg;
    struct entry *slots;     /* owned: cfg.slots entries */
    size_t nsets;
    unsigned char hkey[crypto_shorthash_KEYBYTES];
    uint64_t next_gen;
    double gtokens;          /* the global bucket */
    int64_t gtokens_at;
    /* the log window: opened by the first event after a flush */
    int64_t window_at;       /* 0: no window open */
    int firsts;              /* "first" lines logged in it */
    uint64_t unlogged;       /* events in it not logged on their own line */
    uint64_t win[DAP_GUARD_NEVENTS];
    uint64_t win_global;     /* of win[THROTTLED]: by the global limit */
    struct dap_guard_stats stats;
};

/* ---------------------------------------------------------------- addresses */

static const unsigned char v4_prefix[12] = {0, 0, 0, 0, 0,    0,
                                            0, 0, 0, 0, 0xff, 0xff};

static void addr_v4(struct dap_addr *out, const void *four)
{
    memcpy(out->b, v4_prefix, sizeof v4_prefix);
    memcpy(out->b + 12, four, 4);
}

/* An IPv6 address (16 bytes) as counted: IPv4-mapped ones as IPv4, others
 * cut to their /64. */
static void addr_v6(struct dap_addr *out, const unsigned char *sixteen)
{
    memset(out->b, 0, sizeof out->b);
    if (memcmp(sixteen, v4_prefix, sizeof v4_prefix) == 0)
        memcpy(out->b, sixteen, 16);
    else
        memcpy(out->b, sixteen, 8);
}

void dap__addr_from_sockaddr(struct dap_addr *out, const struct sockaddr *sa)
{
    memset(out->b, 0, sizeof out->b);
    if (sa && sa->sa_family == AF_INET) {
        struct sockaddr_in sin;
        memcpy(&sin, sa, sizeof sin);
        addr_v4(out, &sin.sin_addr);
    } else if (sa && sa->sa_family == AF_INET6) {
        struct sockaddr_in6 sin6;
        memcpy(&sin6, sa, sizeof sin6);
        addr_v6(out, sin6.sin6_addr.s6_addr);
    }
}

int dap__addr_parse(const char *text, struct dap_addr *out)
{
    unsigned char b[16];
    if (inet_pton(AF_INET, text, b) == 1) {
        addr_v4(out, b);
        return 0;
    }
    if (inet_pton(AF_INET6, text, b) == 1) {
        addr_v6(out, b);
        return 0;
    }
    return RR_E_INVAL;
}

void dap__addr_format(const struct dap_addr *a, char out[DAP_ADDR_TEXT_MAX])
{
    static const unsigned char zero[16];
    if (memcmp(a->b, zero, 16) == 0) {
        snprintf(out, DAP_ADDR_TEXT_MAX, "an unknown address");
    } else if (memcmp(a->b, v4_prefix, sizeof v4_prefix) == 0) {
        if (!inet_ntop(AF_INET, a->b + 12, out, DAP_ADDR_TEXT_MAX))
            snprintf(out, DAP_ADDR_TEXT_MAX, "?");
    } else {
        char six[INET6_ADDRSTRLEN];
        if (!inet_ntop(AF_INET6, a->b, six, sizeof six))
            snprintf(six, sizeof six, "?");
        snprintf(out, DAP_ADDR_TEXT_MAX, "%s/64", six);
    }
}

/* ---------------------------------------------------------------- start-up */

#define DEV_KEY_MIN 16
#define SDK_DEFAULT_KEY "MYAPIKEY" /* what the SDKs send when given no key */

/* Only this machine can connect to host: 127.0.0.0/8, ::1, localhost. A
 * host name other than localhost counts as reachable from outside. */
static bool is_loopback(const char *host)
{
    unsigned char b[16];
    if (strcmp(host, "localhost") == 0)
        return true;
    if (inet_pton(AF_INET, host, b) == 1)
        return b[0] == 127;
    if (inet_pton(AF_INET6, host, b) != 1)
        return false;
    static const unsigned char one[16] = {[15] = 1};
    return memcmp(b, one, 16) == 0 ||
           (memcmp(b, v4_prefix, sizeof v4_prefix) == 0 && b[12] == 127);
}

int dap_config_check(const struct dap_config *cfg, struct err *e)
{
    const char *key = cfg->dev_key;
    char why[128];
    if (!key)
        return 0;
    if (strcmp(key, SDK_DEFAULT_KEY) == 0)
        snprintf(why, sizeof why, "ROCKETRIDE_APIKEY is %s, the SDKs' "
                 "well-known default key", SDK_DEFAULT_KEY);
    else if (strlen(key) < DEV_KEY_MIN)
        snprintf(why, sizeof why, "ROCKETRIDE_APIKEY is only %zu characters "
                 "long", strlen(key));
    else
        return 0;
    const char *fix = "set ROCKETRIDE_APIKEY to a random string of at least 16 "
                      "characters (openssl rand -hex 32), or unset it and use "
                      "keys from `rrdeploy keys create`";
    if (!is_loopback(cfg->listen_host))
        return err_set(e, RR_E_INVAL,
                       "refusing to start: %s, and --listen %s is not a "
                       "loopback address: anyone who can reach the port could "
                       "guess it and act as user 'local'. To fix it, %s, or "
                       "listen on 127.0.0.1 only",
                       why, cfg->listen_host, fix);
    log_warn("WARNING: %s: anything that can connect to %s can guess it and "
             "act as user 'local'", why, cfg->listen_host);
    log_warn("WARNING: fine for development on this machine only; otherwise %s",
             fix);
    return 0;
}

/* ---------------------------------------------------------------- table */

void dap__guard_config_defaults(struct dap_guard_config *gc)
{
    memset(gc, 0, sizeof *gc);
    gc->slots = 4096;
    gc->max_unauth = 10;
    gc->fail_burst = 30;
    gc->fail_rate = 0.5;
    gc->global_burst = 100;
    gc->global_rate = 10;
    gc->trust_ms = 24 * 3600 * 1000;
    gc->log_interval_ms = 10 * 1000;
    gc->log_firsts = 10;
    gc->log_top = 5;
}

struct dap_guard *dap__guard_new(const struct dap_guard_config *gc)
{
    ASSERT(gc->slots >= GUARD_WAYS && gc->slots % GUARD_WAYS == 0);
    ASSERT(gc->fail_rate > 0 && gc->global_rate > 0 && gc->log_interval_ms > 0);
    if (sodium_init() < 0)
        return NULL;
    struct dap_guard *g = xcalloc(1, sizeof *g);
    g->cfg = *gc;
    g->slots = xcalloc(gc->slots, sizeof *g->slots);
    g->nsets = gc->slots / GUARD_WAYS;
    randombytes_buf(g->hkey, sizeof g->hkey);
    g->next_gen = 1;
    g->gtokens = gc->global_burst;
    return g;
}

void dap__guard_free(struct dap_guard *g)
{
    if (!g)
        return;
    free(g->slots);
    free(g);
}

const struct dap_guard_stats *dap__guard_stats(const struct dap_guard *g)
{
    return &g->stats;
}

static struct entry *set_of(struct dap_guard *g, const struct dap_addr *a)
{
    unsigned char h[crypto_shorthash_BYTES];
    crypto_shorthash(h, a->b, sizeof a->b, g->hkey);
    uint64_t v;
    memcpy(&v, h, sizeof v);
    return &g->slots[(v % g->nsets) * GUARD_WAYS];
}

static struct entry *find(struct dap_guard *g, const struct dap_addr *a)
{
    struct entry *set = set_of(g, a);
    for (int i = 0; i < GUARD_WAYS; i++)
        if (set[i].gen && memcmp(set[i].addr.b, a->b, sizeof a->b) == 0)
            return &set[i];
    return NULL;
}

/* A bucket's tokens at now, without changing it. */
static double bucket_at(double tokens, int64_t at, double burst, double rate,
                        int64_t now)
{
    double t = tokens + (double)(now > at ? now - at : 0) / 1000.0 * rate;
    return t > burst ? burst : t;
}

static void refill(struct dap_guard *g, struct entry *e, int64_t now)
{
    e->tokens = bucket_at(e->tokens, e->tokens_at, g->cfg.fail_burst,
                          g->cfg.fail_rate, now);
    e->tokens_at = now;
}

static void refill_global(struct dap_guard *g, int64_t now)
{
    g->gtokens = bucket_at(g->gtokens, g->gtokens_at, g->cfg.global_burst,
                           g->cfg.global_rate, now);
    g->gtokens_at = now;
}

/* How much an entry is worth keeping, 0 (an empty slot) to 5: connections
 * it counts must not be forgotten (the cap would leak), nor a trusted
 * address (its good standing is what the global limit spares), nor fresh
 * failures (their throttle); an address that only ever connected is the
 * cheapest to forget. */
static int keep_score(const struct dap_guard *g, const struct entry *e,
                      int64_t now)
{
    if (!e->gen)
        return 0;
    if (e->unauth)
        return 5;
    if (e->trusted_until > now)
        return 4;
    if (!e->failed)
        return 1;
    double t = bucket_at(e->tokens, e->tokens_at, g->cfg.fail_burst,
                         g->cfg.fail_rate, now);
    return t >= g->cfg.fail_burst ? 2 : 3;
}

/* The entry of a, made if needed (evicting the least useful of its set). */
static struct entry *lookup_or_add(struct dap_guard *g, const struct dap_addr *a,
                                   int64_t now)
{
    struct entry *e = find(g, a);
    if (e) {
        e->seen_at = now;
        return e;
    }
    struct entry *set = set_of(g, a);
    struct entry *victim = &set[0];
    int best = keep_score(g, victim, now);
    for (int i = 1; i < GUARD_WAYS && best > 0; i++) {
        int s = keep_score(g, &set[i], now);
        if (s < best || (s == best && set[i].seen_at < victim->seen_at)) {
            victim = &set[i];
            best = s;
        }
    }
    if (victim->gen)
        g->stats.evicted++;
    else
        g->stats.tracked++;
    memset(victim, 0, sizeof *victim);
    victim->addr = *a;
    victim->gen = g->next_gen++;
    victim->tokens = g->cfg.fail_burst;
    victim->tokens_at = now;
    victim->seen_at = now;
    return victim;
}

/* ---------------------------------------------------------------- logging */

static void emit(struct dap_guard *g, enum log_level lvl, const char *fmt, ...)
    RR_PRINTF(3, 4);

static void emit(struct dap_guard *g, enum log_level lvl, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (g->cfg.log)
        g->cfg.log(g->cfg.log_ud, lvl, line);
    else
        log_msg(lvl, "%s", line);
}

static const char *const event_what[DAP_GUARD_NEVENTS] = {
    "failed auths", "auths throttled", "connections refused",
    "unauthenticated messages too large", "cut off for too many requests",
};

/* Record an event of e's address (e may be NULL: not in the table); log
 * it on its own line when it opens a burst (detail says what happened). */
static void event(struct dap_guard *g, struct entry *e, const struct dap_addr *a,
                  enum dap_guard_event ev, int64_t now, const char *detail)
{
    if (g->window_at == 0)
        g->window_at = now;
    g->win[ev]++;
    if (e && e->announced && now - e->event_at >= g->cfg.log_interval_ms)
        e->announced = false; /* quiet since its last event */
    if (e)
        e->event_at = now;
    if (e && !e->announced && g->firsts < g->cfg.log_firsts) {
        char at[DAP_ADDR_TEXT_MAX];
        dap__addr_format(a, at);
        e->announced = true;
        g->firsts++;
        emit(g, ev == DAP_GUARD_FAILED ? LOG_INFO : LOG_WARN,
             "%s (from %s; more are summarised every %lld s)", detail, at,
             (long long)(g->cfg.log_interval_ms / 1000));
        return;
    }
    g->unlogged++;
    if (e)
        e->n[ev]++;
}

/* ", 12 failed auths, 3 auths throttled": the non-zero counts of n. */
static void counts_text(char *out, size_t outsz, const uint64_t *n)
{
    size_t at = 0;
    out[0] = '\0';
    for (int i = 0; i < DAP_GUARD_NEVENTS && at < outsz; i++) {
        if (!n[i])
            continue;
        int w = snprintf(out + at, outsz - at, "%s%llu %s", at ? ", " : "",
                         (unsigned long long)n[i], event_what[i]);
        if (w < 0)
            break;
        at += (size_t)w;
    }
}

/* The summary of the window: the log_top busiest addresses, then all. */
static void summarise(struct dap_guard *g, int64_t now)
{
    enum { TOP_MAX = 16 };
    struct entry *top[TOP_MAX];
    uint64_t topn[TOP_MAX];
    int ntop = 0, want = g->cfg.log_top < TOP_MAX ? g->cfg.log_top : TOP_MAX;
    size_t busy = 0;
    for (size_t i = 0; i < g->cfg.slots; i++) {
        struct entry *e = &g->slots[i];
        uint64_t sum = 0;
        for (int k = 0; k < DAP_GUARD_NEVENTS; k++)
            sum += e->gen ? e->n[k] : 0;
        if (!sum)
            continue;
        busy++;
        int at; /* insertion into top[], largest first */
        if (ntop < want)
            at = ntop++;
        else if (want > 0 && sum > topn[want - 1])
            at = want - 1;
        else
            continue;
        for (; at > 0 && topn[at - 1] < sum; at--) {
            top[at] = top[at - 1];
            topn[at] = topn[at - 1];
        }
        top[at] = e;
        topn[at] = sum;
    }
    long long secs = (long long)((now - g->window_at + 999) / 1000);
    char text[400], addr[DAP_ADDR_TEXT_MAX];
    for (int i = 0; i < ntop; i++) {
        uint64_t n[DAP_GUARD_NEVENTS];
        for (int k = 0; k < DAP_GUARD_NEVENTS; k++)
            n[k] = top[i]->n[k];
        counts_text(text, sizeof text, n);
        dap__addr_format(&top[i]->addr, addr);
        emit(g, LOG_WARN, "from %s in the last %lld s: %s", addr, secs, text);
    }
    for (size_t i = 0; i < g->cfg.slots; i++)
        memset(g->slots[i].n, 0, sizeof g->slots[i].n);
    counts_text(text, sizeof text, g->win);
    emit(g, LOG_WARN,
         "before authentication, in the last %lld s: %s (%llu throttled by the "
         "global limit); addresses: %zu (%zu not listed above)",
         secs, text, (unsigned long long)g->win_global, busy,
         busy - (size_t)ntop);
}

int64_t dap__guard_flush(struct dap_guard *g, int64_t now_ms, bool force)
{
    if (g->window_at == 0)
        return -1;
    int64_t due = g->window_at + g->cfg.log_interval_ms;
    if (!force && now_ms < due)
        return due - now_ms;
    if (g->unlogged)
        summarise(g, now_ms);
    g->window_at = 0;
    g->firsts = 0;
    g->unlogged = 0;
    memset(g->win, 0, sizeof g->win);
    g->win_global = 0;
    return -1;
}

/* ---------------------------------------------------------------- admission */

int dap__guard_conn_open(struct dap_guard *g, const struct dap_addr *a,
                         bool force, int64_t now_ms, struct dap_guard_conn *out)
{
    struct entry *e = lookup_or_add(g, a, now_ms);
    int cap = g->cfg.max_unauth;
    if (!force && cap > 0 && e->unauth >= (uint32_t)cap) {
        char detail[128];
        snprintf(detail, sizeof detail,
                 "connection refused: the address already has %d "
                 "unauthenticated connections open", cap);
        g->stats.refused++;
        event(g, e, a, DAP_GUARD_REFUSED, now_ms, detail);
        return RR_E_LIMIT;
    }
    e->unauth++;
    out->slot = (uint32_t)(e - g->slots);
    out->gen = e->gen;
    return 0;
}

void dap__guard_conn_close(struct dap_guard *g, struct dap_guard_conn *c)
{
    if (!c->gen)
        return;
    struct entry *e = &g->slots[c->slot];
    if (e->gen == c->gen && e->unauth > 0) /* else evicted: nothing counted */
        e->unauth--;
    c->gen = 0;
}

/* Whole seconds (at least 1) until a bucket gains the token it lacks. */
static int wait_s(double tokens, double rate)
{
    double s = ceil((1.0 - tokens) / rate);
    return s < 1 ? 1 : s > 86400 ? 86400 : (int)s;
}

enum dap_guard_verdict dap__guard_auth_check(struct dap_guard *g,
                                             const struct dap_addr *a,
                                             int64_t now_ms, int *retry_s)
{
    struct entry *e = find(g, a);
    if (e) {
        e->seen_at = now_ms;
        refill(g, e, now_ms);
        if (e->tokens < 1.0) {
            *retry_s = wait_s(e->tokens, g->cfg.fail_rate);
            g->stats.throttled_address++;
            event(g, e, a, DAP_GUARD_THROTTLED, now_ms,
                  "auth throttled: too many failed attempts from this address");
            return DAP_GUARD_BY_ADDRESS;
        }
    }
    refill_global(g, now_ms);
    bool good = !e || !e->failed || e->trusted_until > now_ms;
    if (!good && g->gtokens < 1.0) {
        *retry_s = wait_s(g->gtokens, g->cfg.global_rate);
        g->stats.throttled_global++;
        g->win_global++;
        event(g, e, a, DAP_GUARD_THROTTLED, now_ms,
              "auth throttled: too many failed attempts on this server");
        return DAP_GUARD_BY_GLOBAL;
    }
    return DAP_GUARD_OK;
}

void dap__guard_auth_failed(struct dap_guard *g, const struct dap_addr *a,
                            int64_t now_ms, const char *reason)
{
    struct entry *e = lookup_or_add(g, a, now_ms);
    refill(g, e, now_ms);
    e->tokens = e->tokens >= 1.0 ? e->tokens - 1.0 : 0.0;
    e->failed = true;
    refill_global(g, now_ms);
    g->gtokens = g->gtokens >= 1.0 ? g->gtokens - 1.0 : 0.0;
    g->stats.auth_failed++;
    char detail[160];
    snprintf(detail, sizeof detail, "auth failed: %s", reason);
    event(g, e, a, DAP_GUARD_FAILED, now_ms, detail);
}

void dap__guard_auth_ok(struct dap_guard *g, const struct dap_addr *a,
                        int64_t now_ms)
{
    struct entry *e = lookup_or_add(g, a, now_ms);
    e->trusted_until = now_ms + g->cfg.trust_ms;
}

void dap__guard_note(struct dap_guard *g, const struct dap_addr *a,
                     enum dap_guard_event ev, int64_t now_ms, const char *detail)
{
    event(g, find(g, a), a, ev, now_ms, detail);
}
