/* jraw.c -- a validating JSON scanner that keeps text as it is.
 *
 * Design: one recursive-descent validator with an explicit depth bound (so
 * hostile nesting costs a bounded stack), a whitespace-stripping copier that
 * relies on prior validation, and a member lookup that walks only the top
 * level of an object, skipping nested values by bracket counting. Thread:
 * pure functions. */
#include "util/jraw.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- validator */

struct scan {
    const char *s;
    size_t n, i;
    int max_depth;
    struct err *e;
};

static int fail(struct scan *sc, const char *what)
{
    if (sc->i >= sc->n)
        return err_set(sc->e, RR_E_INVAL, "%s at end of input", what);
    unsigned char c = (unsigned char)sc->s[sc->i];
    if (c >= 0x20 && c < 0x7f)
        return err_set(sc->e, RR_E_INVAL, "%s: unexpected '%c' at offset %zu",
                       what, c, sc->i);
    return err_set(sc->e, RR_E_INVAL, "%s: unexpected byte 0x%02x at offset %zu",
                   what, c, sc->i);
}

static void skip_ws(struct scan *sc)
{
    while (sc->i < sc->n) {
        char c = sc->s[sc->i];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        sc->i++;
    }
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Read 4 hex digits at s[i..]; -1 if not hex. */
static long hex4(const char *s, size_t n, size_t i)
{
    if (i + 4 > n)
        return -1;
    long v = 0;
    for (int k = 0; k < 4; k++) {
        int h = hexval(s[i + (size_t)k]);
        if (h < 0)
            return -1;
        v = v * 16 + h;
    }
    return v;
}

static int scan_string(struct scan *sc)
{
    sc->i++; /* opening quote */
    while (sc->i < sc->n) {
        unsigned char c = (unsigned char)sc->s[sc->i];
        if (c == '"') {
            sc->i++;
            return 0;
        }
        if (c < 0x20)
            return fail(sc, "control character in string");
        if (c == '\\') {
            if (sc->i + 1 >= sc->n)
                return fail(sc, "unterminated string");
            char x = sc->s[sc->i + 1];
            if (strchr("\"\\/bfnrt", x) && x) {
                sc->i += 2;
                continue;
            }
            if (x != 'u') {
                sc->i++;
                return fail(sc, "invalid escape");
            }
            long u = hex4(sc->s, sc->n, sc->i + 2);
            if (u < 0)
                return fail(sc, "invalid \\u escape");
            /* A surrogate escape without its pair ("\ud800", what JSON
             * encoders write for a string cut inside an emoji) is valid JSON
             * text: RFC 8259's grammar allows any \uXXXX, and only raw bytes
             * must be UTF-8. Decoders here read it as U+FFFD. */
            sc->i += 6;
            continue;
        }
        size_t len = utf8_seq_len((const unsigned char *)sc->s + sc->i, sc->n - sc->i);
        if (!len)
            return fail(sc, "invalid UTF-8 in string");
        sc->i += len;
    }
    return fail(sc, "unterminated string");
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int scan_number(struct scan *sc)
{
    size_t i = sc->i;
    const char *s = sc->s;
    if (i < sc->n && s[i] == '-')
        i++;
    if (i < sc->n && s[i] == '0') {
        i++;
    } else if (i < sc->n && s[i] >= '1' && s[i] <= '9') {
        while (i < sc->n && is_digit(s[i]))
            i++;
    } else {
        sc->i = i;
        return fail(sc, "invalid number");
    }
    if (i < sc->n && s[i] == '.') {
        i++;
        if (i >= sc->n || !is_digit(s[i])) {
            sc->i = i;
            return fail(sc, "invalid number");
        }
        while (i < sc->n && is_digit(s[i]))
            i++;
    }
    if (i < sc->n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < sc->n && (s[i] == '+' || s[i] == '-'))
            i++;
        if (i >= sc->n || !is_digit(s[i])) {
            sc->i = i;
            return fail(sc, "invalid number");
        }
        while (i < sc->n && is_digit(s[i]))
            i++;
    }
    sc->i = i;
    return 0;
}

static int scan_literal(struct scan *sc, const char *lit)
{
    size_t len = strlen(lit);
    if (sc->n - sc->i < len || memcmp(sc->s + sc->i, lit, len) != 0)
        return fail(sc, "invalid literal");
    sc->i += len;
    return 0;
}

static int scan_value(struct scan *sc, int depth);

static int scan_container(struct scan *sc, int depth, char close)
{
    if (depth >= sc->max_depth)
        return err_set(sc->e, RR_E_INVAL, "nesting deeper than %d levels",
                       sc->max_depth);
    sc->i++; /* opening bracket */
    skip_ws(sc);
    if (sc->i < sc->n && sc->s[sc->i] == close) {
        sc->i++;
        return 0;
    }
    for (;;) {
        int rc;
        if (close == '}') {
            if (sc->i >= sc->n || sc->s[sc->i] != '"')
                return fail(sc, "expected member name");
            if ((rc = scan_string(sc)))
                return rc;
            skip_ws(sc);
            if (sc->i >= sc->n || sc->s[sc->i] != ':')
                return fail(sc, "expected ':'");
            sc->i++;
            skip_ws(sc);
        }
        if ((rc = scan_value(sc, depth + 1)))
            return rc;
        skip_ws(sc);
        if (sc->i < sc->n && sc->s[sc->i] == ',') {
            sc->i++;
            skip_ws(sc);
            continue;
        }
        if (sc->i < sc->n && sc->s[sc->i] == close) {
            sc->i++;
            return 0;
        }
        return fail(sc, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static int scan_value(struct scan *sc, int depth)
{
    if (sc->i >= sc->n)
        return fail(sc, "expected a value");
    switch (sc->s[sc->i]) {
    case '{': return scan_container(sc, depth, '}');
    case '[': return scan_container(sc, depth, ']');
    case '"': return scan_string(sc);
    case 't': return scan_literal(sc, "true");
    case 'f': return scan_literal(sc, "false");
    case 'n': return scan_literal(sc, "null");
    case '-': return scan_number(sc);
    default:
        if (sc->s[sc->i] >= '0' && sc->s[sc->i] <= '9')
            return scan_number(sc);
        return fail(sc, "expected a JSON value");
    }
}

int jraw_check(const char *s, size_t n, int max_depth, struct err *e)
{
    struct scan sc = {s, n, 0, max_depth, e};
    skip_ws(&sc);
    int rc = scan_value(&sc, 0);
    if (rc)
        return rc;
    skip_ws(&sc);
    if (sc.i != n)
        return fail(&sc, "trailing data after JSON value");
    return 0;
}

/* ---------------------------------------------------------------- compactor */

void jraw_compact(struct buf *out, const char *s, size_t n)
{
    size_t run = 0; /* start of pending bytes to copy */
    bool in_str = false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\')
                i++; /* the escaped byte can't end the string */
            else if (c == '"')
                in_str = false;
            continue;
        }
        if (c == '"') {
            in_str = true;
        } else if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            buf_append(out, s + run, i - run);
            run = i + 1;
        }
    }
    buf_append(out, s + run, n - run);
}

/* ---------------------------------------------------------------- lookup */

/* Skip a string starting at s[i] == '"'; returns the index after it. */
static size_t skip_string(const char *s, size_t n, size_t i)
{
    for (i++; i < n; i++) {
        if (s[i] == '\\')
            i++;
        else if (s[i] == '"')
            return i + 1;
    }
    return n;
}

static size_t skip_ws_at(const char *s, size_t n, size_t i)
{
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}

/* Skip one valid value starting at s[i]; returns the index after it. */
static size_t skip_value(const char *s, size_t n, size_t i)
{
    if (i >= n)
        return n;
    if (s[i] == '"')
        return skip_string(s, n, i);
    if (s[i] == '{' || s[i] == '[') {
        int depth = 0;
        for (; i < n; i++) {
            char c = s[i];
            if (c == '"') {
                i = skip_string(s, n, i) - 1;
            } else if (c == '{' || c == '[') {
                depth++;
            } else if (c == '}' || c == ']') {
                if (--depth == 0)
                    return i + 1;
            }
        }
        return n;
    }
    while (i < n && s[i] != ',' && s[i] != '}' && s[i] != ']' && s[i] != ' ' &&
           s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
        i++;
    return i;
}

/* The low surrogate of a "\\uDC00".."\\uDFFF" escape at s[i..end), or -1. */
static long low_surrogate_at(const char *s, size_t end, size_t i)
{
    if (i + 6 > end || s[i] != '\\' || s[i + 1] != 'u')
        return -1;
    long lo = hex4(s, end, i + 2);
    return lo >= 0xdc00 && lo <= 0xdfff ? lo : -1;
}

void jraw_tame_surrogates(struct buf *out, const char *s, size_t n)
{
    size_t i = 0, done = 0;
    while (i < n) {
        const char *bs = memchr(s + i, '\\', n - i);
        if (!bs)
            break;
        i = (size_t)(bs - s);
        if (i + 1 >= n) /* only on invalid text */
            break;
        if (s[i + 1] != 'u') {
            i += 2; /* \" \\ \n ...: never the start of a \u */
            continue;
        }
        long u = hex4(s, n, i + 2);
        if (u >= 0xd800 && u <= 0xdbff && low_surrogate_at(s, n, i + 6) >= 0) {
            i += 12; /* a pair */
        } else if (u >= 0xd800 && u <= 0xdfff) {
            buf_append(out, s + done, i - done);
            buf_puts(out, "\\ufffd");
            i += 6;
            done = i;
        } else {
            i += 6;
        }
    }
    buf_append(out, s + done, n - done);
}

/* Numbers a double cannot hold (1e400) become 0, strings copied as they
 * are: jansson refuses such numbers though they are valid JSON. */
static void tame_numbers(struct buf *out, const char *s, size_t n)
{
    bool in_str = false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_str) {
            buf_putc(out, c);
            if (c == '\\' && i + 1 < n)
                buf_putc(out, s[++i]);
            else if (c == '"')
                in_str = false;
            continue;
        }
        if (c == '"') {
            in_str = true;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            size_t j = i;
            while (j < n && strchr("+-.eE0123456789", s[j]))
                j++;
            char *tok = xstrndup(s + i, j - i);
            bool huge = isinf(strtod(tok, NULL));
            free(tok);
            if (huge)
                buf_putc(out, '0');
            else
                buf_append(out, s + i, j - i);
            i = j - 1;
            continue;
        }
        buf_putc(out, c);
    }
}

void jraw_tame(struct buf *out, const char *s, size_t n)
{
    struct buf nums;
    buf_init(&nums, 0);
    tame_numbers(&nums, s, n);
    jraw_tame_surrogates(out, buf_data(&nums), nums.len);
    buf_free(&nums);
}

/* Encode code point cp as UTF-8 into out; returns its length. */
static size_t utf8_put(unsigned long cp, char out[4])
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Decode the character at s[*i] inside the body of a valid JSON string
 * ending before `end` (an escape or one raw byte) into dec; advance *i past
 * it and return the number of bytes written (1 to 4). */
static size_t next_char(const char *s, size_t *i, size_t end, char dec[4])
{
    if (s[*i] != '\\') {
        dec[0] = s[(*i)++];
        return 1;
    }
    char x = s[*i + 1];
    *i += 2;
    switch (x) {
    case 'b': dec[0] = '\b'; return 1;
    case 'f': dec[0] = '\f'; return 1;
    case 'n': dec[0] = '\n'; return 1;
    case 'r': dec[0] = '\r'; return 1;
    case 't': dec[0] = '\t'; return 1;
    case 'u': {
        unsigned long cp = (unsigned long)hex4(s, end, *i);
        *i += 4;
        long lo = low_surrogate_at(s, end, *i);
        if (cp >= 0xd800 && cp <= 0xdbff && lo >= 0) {
            *i += 6;
            cp = 0x10000 + ((cp - 0xd800) << 10) + ((unsigned long)lo - 0xdc00);
        } else if (cp >= 0xd800 && cp <= 0xdfff) {
            cp = 0xfffd; /* a surrogate without its pair */
        }
        return utf8_put(cp, dec);
    }
    default: dec[0] = x; return 1; /* \" \\ \/ */
    }
}

/* Does the (valid) JSON string s[i..end) -- quotes included -- decode to the
 * klen bytes at key? */
static bool string_equals(const char *s, size_t i, size_t end, const char *key,
                          size_t klen)
{
    size_t k = 0;
    for (i++; i < end - 1;) {
        if (s[i] != '\\') { /* the common case, byte for byte */
            if (k == klen || key[k] != s[i])
                return false;
            k++, i++;
            continue;
        }
        char dec[4];
        size_t dlen = next_char(s, &i, end, dec);
        if (k + dlen > klen || memcmp(key + k, dec, dlen) != 0)
            return false;
        k += dlen;
    }
    return k == klen;
}

/* The walk behind jraw_member and jraw_members: out[k] (and key_at[k]) get
 * the last value of keys[k]; false if s is not an object. */
static bool find_members(const char *s, size_t n, const char *const *keys,
                         size_t nkeys, struct jraw_span *out,
                         struct jraw_span *key_at)
{
    for (size_t k = 0; k < nkeys; k++)
        out[k] = (struct jraw_span){NULL, 0};
    size_t i = skip_ws_at(s, n, 0);
    if (i >= n || s[i] != '{')
        return false;
    i = skip_ws_at(s, n, i + 1);
    while (i < n && s[i] == '"') {
        size_t kstart = i, kend = skip_string(s, n, i);
        i = skip_ws_at(s, n, kend);
        if (i >= n || s[i] != ':')
            break; /* only reachable on invalid input */
        i = skip_ws_at(s, n, i + 1);
        if (i >= n)
            break;
        size_t vend = skip_value(s, n, i);
        for (size_t k = 0; k < nkeys; k++) {
            if (!string_equals(s, kstart, kend, keys[k], strlen(keys[k])))
                continue;
            out[k] = (struct jraw_span){s + i, vend - i};
            if (key_at)
                key_at[k] = (struct jraw_span){s + kstart, kend - kstart};
            break;
        }
        i = skip_ws_at(s, n, vend);
        if (i < n && s[i] == ',')
            i = skip_ws_at(s, n, i + 1);
    }
    return true;
}

bool jraw_member(const char *s, size_t n, const char *key,
                 struct jraw_span *out, struct jraw_span *key_at)
{
    find_members(s, n, &key, 1, out, key_at);
    return out->p != NULL;
}

bool jraw_members(const char *s, size_t n, const char *const *keys, size_t nkeys,
                  struct jraw_span *out)
{
    return find_members(s, n, keys, nkeys, out, NULL);
}

bool jraw_str_eq(struct jraw_span v, const char *lit)
{
    return v.n >= 2 && v.p[0] == '"' && string_equals(v.p, 0, v.n, lit, strlen(lit));
}

bool jraw_str(struct buf *out, struct jraw_span v)
{
    if (v.n < 2 || v.p[0] != '"')
        return false;
    char dec[4];
    for (size_t i = 1; i < v.n - 1;) {
        const char *run = memchr(v.p + i, '\\', v.n - 1 - i);
        size_t plain = run ? (size_t)(run - v.p) - i : v.n - 1 - i;
        buf_append(out, v.p + i, plain); /* unescaped bytes in one copy */
        i += plain;
        if (i < v.n - 1)
            buf_append(out, dec, next_char(v.p, &i, v.n, dec));
    }
    return true;
}

json_t *jraw_load(const char *s, size_t n, size_t flags, json_error_t *err)
{
    json_t *root = json_loadb(s, n, flags, err);
    if (root)
        return root;
    struct buf tame;
    buf_init(&tame, 0);
    jraw_tame(&tame, s, n);
    root = json_loadb(buf_data(&tame), tame.len, flags, err);
    buf_free(&tame);
    return root;
}
