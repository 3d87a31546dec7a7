/* util.h -- small shared pieces: error codes, logging, allocation, byte buffers.
 *
 * Every module may include this header. Nothing here knows about sockets,
 * SQLite or schedules. All functions are thread-safe unless noted. */
#ifndef RR_UTIL_H
#define RR_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define MUST_CHECK __attribute__((warn_unused_result))
#define RR_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define RR_NORETURN __attribute__((noreturn))
#else
#define MUST_CHECK
#define RR_PRINTF(f, a)
#define RR_NORETURN
#endif

/* ---------------------------------------------------------------------------
 * Errors. Functions return 0 on success or a negative RR_E_* code; details go
 * into an optional struct err out-parameter (a fixed buffer, never heap). */
enum {
    RR_OK = 0,
    RR_E_NOMEM = -1,
    RR_E_INVAL = -2,     /* bad input from a user */
    RR_E_NOTFOUND = -3,
    RR_E_EXISTS = -4,
    RR_E_IO = -5,        /* file system or database failure */
    RR_E_LIMIT = -6,     /* a size or count limit was hit */
    RR_E_PERM = -7,
    RR_E_REVOKED = -8,
    RR_E_EXPIRED = -9,
    RR_E_BUSY = -10,
    RR_E_INTERNAL = -11,
};

#define RR_ERR_MSG_MAX 512
struct err {
    int code;                  /* the RR_E_* value last set */
    char msg[RR_ERR_MSG_MAX];  /* NUL-terminated, human readable */
};

/* Generic text for an RR_E_* code. Never NULL. */
const char *err_str(int code);

/* Record code and a formatted message into *e (e may be NULL). Returns code, so
 * that `return err_set(e, RR_E_INVAL, "...")` reads naturally. */
int err_set(struct err *e, int code, const char *fmt, ...) RR_PRINTF(3, 4);

/* ---------------------------------------------------------------------------
 * Assertions for programmer errors only; always on, never for user input. */
RR_NORETURN void rr__assert_fail(const char *expr, const char *file, int line);
#define ASSERT(x) ((x) ? (void)0 : rr__assert_fail(#x, __FILE__, __LINE__))

/* ---------------------------------------------------------------------------
 * Allocation: out of memory aborts (callers cap untrusted sizes first). */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

/* ---------------------------------------------------------------------------
 * Logging: one line per event to stderr. */
enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };
enum log_format { LOG_FORMAT_TEXT = 0, LOG_FORMAT_JSON };

void log_configure(enum log_level min, enum log_format format);
/* Parse "debug|info|warn|error" / "text|json". Return 0 or RR_E_INVAL. */
int log_level_parse(const char *s, enum log_level *out);
int log_format_parse(const char *s, enum log_format *out);
void log_msg(enum log_level lvl, const char *fmt, ...) RR_PRINTF(2, 3);
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

/* ---------------------------------------------------------------------------
 * Growable byte buffer. `head` bytes of headroom are reserved before the data
 * (libwebsockets wants LWS_PRE bytes in front of what it writes). The data is
 * always NUL-terminated, so buf_cstr() is usable as a C string. */
struct buf {
    char *mem;    /* owned; NULL until the first append */
    size_t head;  /* reserved bytes before data */
    size_t len;   /* bytes of data */
    size_t cap;   /* bytes allocated after head */
};

void buf_init(struct buf *b, size_t head);
void buf_free(struct buf *b);            /* releases memory; b may be reused */
void buf_reset(struct buf *b);           /* len = 0, keeps memory */
char *buf_data(struct buf *b);           /* start of data (after headroom) */
const char *buf_cstr(struct buf *b);     /* "" when empty */
void buf_append(struct buf *b, const void *p, size_t n);
void buf_puts(struct buf *b, const char *s);
void buf_putc(struct buf *b, char c);
void buf_printf(struct buf *b, const char *fmt, ...) RR_PRINTF(2, 3);
void buf_vprintf(struct buf *b, const char *fmt, va_list ap) RR_PRINTF(2, 0);
void buf_i64(struct buf *b, int64_t v);  /* decimal digits */
/* v in decimal digits into out (no NUL); their count, at most 20. */
size_t fmt_i64(char out[20], int64_t v);
/* Make room for extra more bytes, so appends up to that size do not
 * reallocate. */
void buf_reserve(struct buf *b, size_t extra);
/* Put n bytes in front of the data, into the headroom: n <= b->head. */
void buf_prepend(struct buf *b, const void *p, size_t n);
/* Append s (n bytes) as a JSON string literal with quotes. Control characters,
 * quote, backslash are escaped; other bytes are copied as they are (callers pass
 * valid UTF-8). */
void buf_json_str(struct buf *b, const char *s, size_t n);
void buf_json_cstr(struct buf *b, const char *s); /* NULL gives null */
/* Like buf_json_str for bytes of unknown encoding (process output): invalid
 * UTF-8 sequences become U+FFFD and NULs are escaped, so the result is always a
 * valid JSON string. */
void buf_json_bytes(struct buf *b, const char *s, size_t n);
/* Append a double as a JSON number with 6 decimals (timestamps); non-finite
 * values give null. */
void buf_json_time(struct buf *b, double t);
/* Take ownership of the data: returns a heap string (free()) of len bytes with
 * headroom dropped; b is left empty. */
char *buf_take(struct buf *b, size_t *len);

/* Length of the valid UTF-8 sequence starting at s (n > 0 bytes left), or 0
 * if invalid: overlong forms, surrogates and code points past U+10FFFF are. */
size_t utf8_seq_len(const unsigned char *s, size_t n);

/* ---------------------------------------------------------------------------
 * Time. */
double time_now_real(void);       /* CLOCK_REALTIME as float Unix seconds */
int64_t time_now_mono_ms(void);   /* CLOCK_MONOTONIC milliseconds */

/* The wall clock a server runs by: the real one, or -- with `fixed`, in test
 * builds started with --test-clock -- a time that moves only when a test
 * moves it. Owned by the daemon, borrowed by whoever needs the time. */
struct clock {
    bool fixed;
    double at;                    /* the fixed time, float Unix seconds */
};
double clock_now(const struct clock *c); /* float Unix seconds */

#endif
