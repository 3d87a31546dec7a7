/* util.c -- errors, assertions, allocation, logging, buffers, time.
 *
 * Design: the smallest pieces every module needs, with the redis policy for
 * memory (abort on OOM). Thread: all functions are thread-safe; the log writes
 * each line with a single write(2) so lines from threads never interleave. */
#include "util/util.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- errors */

const char *err_str(int code)
{
    switch (code) {
    case RR_OK: return "ok";
    case RR_E_NOMEM: return "out of memory";
    case RR_E_INVAL: return "invalid argument";
    case RR_E_NOTFOUND: return "not found";
    case RR_E_EXISTS: return "already exists";
    case RR_E_IO: return "I/O error";
    case RR_E_LIMIT: return "limit exceeded";
    case RR_E_PERM: return "permission denied";
    case RR_E_REVOKED: return "revoked";
    case RR_E_EXPIRED: return "expired";
    case RR_E_BUSY: return "busy";
    case RR_E_INTERNAL: return "internal error";
    }
    return "unknown error";
}

int err_set(struct err *e, int code, const char *fmt, ...)
{
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        e->code = code;
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

void rr__assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "rrdeploy: assertion failed: %s (%s:%d)\n", expr, file, line);
    abort();
}

/* ---------------------------------------------------------------- memory */

static void oom(size_t n)
{
    fprintf(stderr, "rrdeploy: out of memory allocating %zu bytes\n", n);
    abort();
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        oom(n * size);
    return p;
}

void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom(n);
    return q;
}

char *xstrndup(const char *s, size_t n)
{
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

/* ---------------------------------------------------------------- logging */

static enum log_level log_min = LOG_INFO;
static enum log_format log_fmt = LOG_FORMAT_TEXT;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_configure(enum log_level min, enum log_format format)
{
    log_min = min;
    log_fmt = format;
}

int log_level_parse(const char *s, enum log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return RR_E_INVAL;
}

int log_format_parse(const char *s, enum log_format *out)
{
    if (strcmp(s, "text") == 0)
        *out = LOG_FORMAT_TEXT;
    else if (strcmp(s, "json") == 0)
        *out = LOG_FORMAT_JSON;
    else
        return RR_E_INVAL;
    return 0;
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
    if (lvl < log_min)
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[64];
    snprintf(when, sizeof when, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, (int)(ts.tv_nsec / 1000000));

    struct buf b;
    buf_init(&b, 0);
    if (log_fmt == LOG_FORMAT_JSON) {
        buf_printf(&b, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":", when,
                   level_names[lvl]);
        buf_json_cstr(&b, msg);
        buf_puts(&b, "}\n");
    } else {
        buf_printf(&b, "%s %-5s %s\n", when, level_names[lvl], msg);
    }
    /* One write per line; a short write to stderr is not worth retrying. */
    ssize_t w = write(STDERR_FILENO, buf_data(&b), b.len);
    (void)w;
    buf_free(&b);
}

/* ---------------------------------------------------------------- buffers */

void buf_init(struct buf *b, size_t head)
{
    b->mem = NULL;
    b->head = head;
    b->len = 0;
    b->cap = 0;
}

void buf_free(struct buf *b)
{
    free(b->mem);
    b->mem = NULL;
    b->len = b->cap = 0;
}

void buf_reset(struct buf *b)
{
    b->len = 0;
    if (b->mem)
        b->mem[b->head] = '\0';
}

void buf_reserve(struct buf *b, size_t extra)
{
    size_t need = b->len + extra + 1; /* + NUL */
    if (need <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    b->mem = xrealloc(b->mem, b->head + cap);
    b->cap = cap;
}

void buf_prepend(struct buf *b, const void *p, size_t n)
{
    ASSERT(n <= b->head);
    buf_reserve(b, 0);
    b->head -= n;
    b->cap += n;
    b->len += n;
    memcpy(b->mem + b->head, p, n);
}

char *buf_data(struct buf *b)
{
    buf_reserve(b, 0);
    return b->mem + b->head;
}

const char *buf_cstr(struct buf *b)
{
    char *d = buf_data(b);
    d[b->len] = '\0';
    return d;
}

void buf_append(struct buf *b, const void *p, size_t n)
{
    buf_reserve(b, n);
    memcpy(b->mem + b->head + b->len, p, n);
    b->len += n;
    b->mem[b->head + b->len] = '\0';
}

void buf_puts(struct buf *b, const char *s)
{
    buf_append(b, s, strlen(s));
}

void buf_putc(struct buf *b, char c)
{
    buf_append(b, &c, 1);
}

void buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
    va_list again;
    va_copy(again, ap);
    char small[256];
    int n = vsnprintf(small, sizeof small, fmt, ap);
    ASSERT(n >= 0);
    if ((size_t)n < sizeof small) {
        buf_append(b, small, (size_t)n);
    } else {
        buf_reserve(b, (size_t)n);
        vsnprintf(b->mem + b->head + b->len, (size_t)n + 1, fmt, again);
        b->len += (size_t)n;
    }
    va_end(again);
}

void buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(b, fmt, ap);
    va_end(ap);
}

void buf_json_str(struct buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    buf_reserve(b, n + 2);
    buf_putc(b, '"');
    size_t run = 0; /* start of the pending run of plain bytes */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        buf_append(b, s + run, i - run);
        run = i + 1;
        switch (c) {
        case '"': buf_puts(b, "\\\""); break;
        case '\\': buf_puts(b, "\\\\"); break;
        case '\n': buf_puts(b, "\\n"); break;
        case '\r': buf_puts(b, "\\r"); break;
        case '\t': buf_puts(b, "\\t"); break;
        case '\b': buf_puts(b, "\\b"); break;
        case '\f': buf_puts(b, "\\f"); break;
        default: {
            char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            buf_append(b, u, 6);
        }
        }
    }
    buf_append(b, s + run, n - run);
    buf_putc(b, '"');
}

size_t utf8_seq_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned cp, min;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2, cp = c & 0x1fu, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3, cp = c & 0x0fu, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4, cp = c & 0x07u, min = 0x10000;
    else
        return 0;
    if (len > n)
        return 0;
    for (size_t k = 1; k < len; k++) {
        if ((s[k] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[k] & 0x3fu);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

void buf_json_bytes(struct buf *b, const char *s, size_t n)
{
    struct buf clean;
    buf_init(&clean, 0);
    size_t run = 0, i = 0;
    while (i < n) {
        size_t len = utf8_seq_len((const unsigned char *)s + i, n - i);
        if (len) {
            i += len;
            continue;
        }
        buf_append(&clean, s + run, i - run);
        buf_puts(&clean, "\xef\xbf\xbd"); /* U+FFFD */
        run = ++i;
    }
    buf_append(&clean, s + run, n - run);
    buf_json_str(b, buf_data(&clean), clean.len);
    buf_free(&clean);
}

void buf_json_cstr(struct buf *b, const char *s)
{
    if (!s)
        buf_puts(b, "null");
    else
        buf_json_str(b, s, strlen(s));
}

/* Write the decimal digits of u so that they end just before end; returns
 * where they start. */
static char *put_digits(char *end, unsigned long long u)
{
    do {
        *--end = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    return end;
}

size_t fmt_i64(char out[20], int64_t v)
{
    char tmp[24], *p = tmp + sizeof tmp;
    unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
    p = put_digits(p, u);
    if (v < 0)
        *--p = '-';
    size_t n = (size_t)(tmp + sizeof tmp - p);
    memcpy(out, p, n);
    return n;
}

void buf_i64(struct buf *b, int64_t v)
{
    char tmp[20];
    buf_append(b, tmp, fmt_i64(tmp, v));
}

void buf_json_time(struct buf *b, double t)
{
    /* Integer digits, not printf: records carry five of these and list
     * answers thousands of records. */
    if (!isfinite(t) || fabs(t) >= 9e15) {
        if (isfinite(t))
            buf_printf(b, "%.6f", t);
        else
            buf_puts(b, "null");
        return;
    }
    bool neg = t < 0;
    double a = fabs(t), whole = floor(a);
    /* a - whole is exact; only the fraction is scaled, so the rounding to
     * microseconds matches printf's "%.6f" */
    unsigned long long u = (unsigned long long)whole;
    long long us = (long long)nearbyint((a - whole) * 1e6); /* half to even */
    if (us >= 1000000) {
        u++;
        us -= 1000000;
    }
    neg = neg && (u || us); /* no "-0.000000" */
    char tmp[32], *p = tmp + sizeof tmp;
    for (int i = 0; i < 6; i++, us /= 10)
        *--p = (char)('0' + us % 10);
    *--p = '.';
    p = put_digits(p, u);
    if (neg)
        *--p = '-';
    buf_append(b, p, (size_t)(tmp + sizeof tmp - p));
}

char *buf_take(struct buf *b, size_t *len)
{
    size_t n = b->len;
    char *out = xmalloc(n + 1);
    if (n)
        memcpy(out, b->mem + b->head, n);
    out[n] = '\0';
    if (len)
        *len = n;
    buf_free(b);
    return out;
}

/* ---------------------------------------------------------------- time */

double clock_now(const struct clock *c)
{
    return c->fixed ? c->at : time_now_real();
}

double time_now_real(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int64_t time_now_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
