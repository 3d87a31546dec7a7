/* fuzz_jraw.c -- libFuzzer target for the raw JSON scanner (util/jraw.c).
 *
 * Purpose: jraw_check must accept exactly the JSON texts RFC 8259 allows,
 * jraw_compact must keep a valid text valid (and be idempotent), and
 * jraw_member must stay inside its input whatever the input is; jraw_members,
 * jraw_str and jraw_str_eq must agree with jraw_member and jansson.
 *
 * Design: the input is copied into a buffer of exactly its size (so ASan
 * sees any read past the end; the replay driver's buffer is larger) and:
 *   - jraw_member is asked for a few keys on any input, valid or not, and its
 *     spans must lie inside the input;
 *   - on a rejection the error says why;
 *   - on acceptance, compact(x) re-validates, compact(compact(x)) ==
 *     compact(x), and no white space is left outside strings;
 *   - acceptance is cross-checked against jansson (json_loadb with
 *     JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL), as are
 *     the values jraw_member finds for each top-level key.
 * Intended differences from jansson, excused only after an independent scan
 * of the text confirms them:
 *   - numbers that overflow a double (1e400): valid JSON, jansson refuses;
 *   - object keys holding \u0000: valid JSON, jansson refuses;
 *   - surrogate escapes without their pair ("\ud800"): valid JSON text,
 *     jansson refuses; compared through jraw_tame_surrogates (-> \ufffd),
 *     which is also how jraw_str decodes them;
 *   - nesting: jraw is run with JRAW_DEPTH (the server's 64), jansson allows
 *     2048 levels, so texts jraw refuses for depth are not compared.
 *   - a NUL byte right after a number or literal ("1\0", "[1e-4\0]",
 *     "true\0") is skipped by jansson 2.14's lexer (its stream buffer is
 *     NUL-terminated), so jansson accepts what jraw rightly refuses. Excused
 *     when the text with such NULs removed is valid. (The DAP layer runs
 *     jraw_check before jansson, so the quirk never reaches it.)
 * Thread: single-threaded. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/jraw.h"
#include "util/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define JRAW_DEPTH 64
#define MAX_KEYS 16
#define JSON_FLAGS (JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL)

#define CHECK(x) ((x) ? (void)0 : __builtin_trap())

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool span_inside(struct jraw_span sp, const char *s, size_t n)
{
    return sp.p >= s && sp.n <= n && (size_t)(sp.p - s) <= n - sp.n;
}

/* jraw_member on any text: found spans lie within s[0..n). */
static void member_bounds(const char *s, size_t n, const char *key)
{
    struct jraw_span v = {0}, k = {0};
    if (!jraw_member(s, n, key, &v, &k))
        return;
    CHECK(span_inside(v, s, n));
    CHECK(span_inside(k, s, n) && k.n >= 1 && k.p[0] == '"');
    CHECK(k.p + k.n <= v.p);
}

/* What jansson may refuse in a valid text (see the top comment): a number
 * overflowing a double, or an object key with an escaped NUL. c is compact
 * valid JSON. */
static bool jansson_may_refuse(const char *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (c[i] == '"') {
            size_t start = i;
            bool nul = false;
            for (i++; c[i] != '"'; i++) {
                if (c[i] == '\\') {
                    nul = nul || (c[i + 1] == 'u' && memcmp(c + i + 2, "0000", 4) == 0);
                    i++;
                }
            }
            if (nul && i + 1 < n && c[i + 1] == ':' && start < i)
                return true;
        } else if (c[i] == '-' || (c[i] >= '0' && c[i] <= '9')) {
            size_t j = i;
            while (j < n && strchr("+-.eE0123456789", c[j]) && c[j])
                j++;
            char *tok = malloc(j - i + 1);
            CHECK(tok != NULL);
            memcpy(tok, c + i, j - i);
            tok[j - i] = '\0';
            errno = 0;
            double d = strtod(tok, NULL);
            free(tok);
            if (isinf(d))
                return true;
            i = j - 1;
        }
    }
    return false;
}

/* Is s[0..n) valid once NUL bytes right after a letter or digit (the end of
 * a number or literal, as jansson lexes them) are removed? */
static bool valid_without_token_nuls(const char *s, size_t n)
{
    char *t = malloc(n ? n : 1);
    CHECK(t != NULL);
    size_t m = 0;
    bool removed = false;
    for (size_t i = 0; i < n; i++) {
        unsigned char p = m ? (unsigned char)t[m - 1] : 0;
        if (s[i] == '\0' && ((p >= '0' && p <= '9') || (p >= 'a' && p <= 'z') ||
                             (p >= 'A' && p <= 'Z'))) {
            removed = true;
            continue;
        }
        t[m++] = s[i];
    }
    bool ok = removed && jraw_check(t, m, JRAW_DEPTH, NULL) == 0;
    free(t);
    return ok;
}

/* jansson's tree of valid JSON, lone surrogate escapes read as U+FFFD. */
static json_t *load_tame(const char *s, size_t n)
{
    json_t *v = json_loadb(s, n, JSON_FLAGS, NULL);
    if (v)
        return v;
    struct buf t;
    buf_init(&t, 0);
    jraw_tame_surrogates(&t, s, n);
    v = json_loadb(buf_data(&t), t.len, JSON_FLAGS, NULL);
    buf_free(&t);
    return v;
}

/* v is the raw text of want: jraw_str decodes a string to jansson's value
 * (bytes and length), jraw_str_eq agrees, and anything else is refused. */
static void string_agrees(struct jraw_span v, json_t *want)
{
    struct buf d;
    buf_init(&d, 0);
    if (!json_is_string(want)) {
        CHECK(!jraw_str(&d, v) && d.len == 0);
        CHECK(!jraw_str_eq(v, ""));
        buf_free(&d);
        return;
    }
    const char *w = json_string_value(want);
    size_t wn = json_string_length(want);
    CHECK(jraw_str(&d, v));
    CHECK(d.len == wn && (wn == 0 || memcmp(buf_data(&d), w, wn) == 0));
    if (strlen(w) == wn) /* no NUL inside: comparable as a C string */
        CHECK(jraw_str_eq(v, w));
    if (wn > 0 && strlen(w) == wn) { /* a prefix is not equal */
        char *shorter = strndup(w, wn - 1);
        CHECK(shorter != NULL && !jraw_str_eq(v, shorter));
        free(shorter);
    }
    buf_free(&d);
}

/* For each top-level key jansson saw, jraw_member finds the same value, and
 * jraw_members finds the same spans for several keys in one walk. */
static void members_agree(const char *s, size_t n, json_t *root)
{
    if (!json_is_object(root)) {
        struct jraw_span v, vs[2];
        static const char *const two[] = {"", "a"};
        CHECK(!jraw_member(s, n, "", &v, NULL));
        CHECK(!jraw_member(s, n, "a", &v, NULL));
        CHECK(!jraw_members(s, n, two, 2, vs) && !vs[0].p && !vs[1].p);
        struct jraw_span whole = {s, n}; /* one value: maybe a string */
        while (whole.n && is_ws(whole.p[0]))
            whole.p++, whole.n--;
        while (whole.n && is_ws(whole.p[whole.n - 1]))
            whole.n--;
        string_agrees(whole, root);
        return;
    }
    const char *key;
    json_t *want;
    const char *keys[MAX_KEYS + 1];
    struct jraw_span one[MAX_KEYS + 1];
    int k = 0;
    json_object_foreach(root, key, want) {
        if (k == MAX_KEYS)
            break;
        struct jraw_span v, ks;
        CHECK(jraw_member(s, n, key, &v, &ks));
        CHECK(span_inside(v, s, n) && span_inside(ks, s, n));
        json_t *got = load_tame(v.p, v.n);
        CHECK(got && json_equal(got, want));
        json_decref(got);
        json_t *kj = load_tame(ks.p, ks.n);
        CHECK(json_is_string(kj) && strcmp(json_string_value(kj), key) == 0);
        json_decref(kj);
        string_agrees(v, want);
        keys[k] = key;
        one[k++] = v;
    }
    struct jraw_span v;
    bool absent = !json_object_get(root, "\x01zz-absent");
    if (absent)
        CHECK(!jraw_member(s, n, "\x01zz-absent", &v, NULL));

    keys[k] = "\x01zz-absent";
    struct jraw_span all[MAX_KEYS + 1];
    CHECK(jraw_members(s, n, keys, (size_t)k + 1, all));
    for (int i = 0; i < k; i++)
        CHECK(all[i].p == one[i].p && all[i].n == one[i].n);
    if (absent)
        CHECK(all[k].p == NULL && all[k].n == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size ? size : 1);
    CHECK(s != NULL);
    if (size)
        memcpy(s, data, size);
    size_t n = size;

    static const char *const keys[] = {"type", "seq", "a", "", "pipeline",
                                       "\xc3\xa9", "\xf0\x9f\x98\x80"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        member_bounds(s, n, keys[i]);

    struct err e = {0};
    int rc = jraw_check(s, n, JRAW_DEPTH, &e);
    json_error_t je;
    json_t *root = json_loadb(s, n, JSON_FLAGS, &je);
    if (rc != 0) {
        CHECK(rc == RR_E_INVAL && e.code == RR_E_INVAL && e.msg[0] != '\0');
        /* jansson nests deeper than JRAW_DEPTH, and skips a NUL byte after
         * a number or literal; otherwise it must refuse too */
        if (root && strncmp(e.msg, "nesting deeper than", 19) != 0)
            CHECK(valid_without_token_nuls(s, n));
        json_decref(root);
        free(s);
        return 0;
    }

    struct buf c1, c2;
    buf_init(&c1, 0);
    buf_init(&c2, 0);
    jraw_compact(&c1, s, n);
    CHECK(c1.len <= n);
    CHECK(jraw_check(buf_data(&c1), c1.len, JRAW_DEPTH, NULL) == 0);
    jraw_compact(&c2, buf_data(&c1), c1.len);
    CHECK(c2.len == c1.len && memcmp(buf_data(&c1), buf_data(&c2), c1.len) == 0);
    const char *c = buf_data(&c1);
    for (size_t i = 0; i < c1.len; i++) { /* no white space outside strings */
        CHECK(!is_ws(c[i]));
        if (c[i] == '"')
            for (i++; c[i] != '"'; i++)
                i += c[i] == '\\';
    }

    if (!root)
        root = load_tame(s, n);
    if (!root) {
        CHECK(jansson_may_refuse(c, c1.len));
    } else {
        json_t *croot = load_tame(c, c1.len);
        CHECK(croot && json_equal(root, croot));
        json_decref(croot);
        members_agree(s, n, root);
        members_agree(c, c1.len, root);
    }
    json_decref(root);
    buf_free(&c1);
    buf_free(&c2);
    free(s);
    return 0;
}
