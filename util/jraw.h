/* jraw.h -- validate, compact and query JSON text without building a tree.
 *
 * Deployment pipelines must come back exactly as they were sent: key order,
 * number spelling (1e400, 0.10, 12345678901234567890) and string escapes. A
 * tree library normalises all three, so rrdeploy keeps pipelines as text and
 * uses this scanner to check them, strip insignificant white space and find
 * members. Thread: pure functions, no state. */
#ifndef RR_JRAW_H
#define RR_JRAW_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "util/util.h"

/* A slice of the input text: the raw JSON of one value. */
struct jraw_span {
    const char *p; /* borrowed from the scanned text */
    size_t n;
};

/* Check that s[0..n) is exactly one JSON value (RFC 8259) with surrounding
 * white space allowed and containers nested at most max_depth deep. Returns 0,
 * or RR_E_INVAL with a reason such as "unexpected ']' at offset 12" or
 * "nesting deeper than 64 levels" in e. Raw bytes in strings must be valid
 * UTF-8; a \\u escape of a surrogate without its pair ("\\ud800") is valid
 * JSON text and accepted (the decoders below read it as U+FFFD). */
int jraw_check(const char *s, size_t n, int max_depth, struct err *e);

/* Append a copy of the valid JSON s[0..n) with all insignificant white space
 * removed. Everything else (escapes, numbers, key order) is kept byte for byte. */
void jraw_compact(struct buf *out, const char *s, size_t n);

/* s[0..n) is a valid JSON value. If it is an object with member `key`
 * (compared after unescaping), store the raw value of its last occurrence in
 * *out and return true; otherwise return false. `key_at`, when not NULL,
 * receives the span of that member's key string (quotes included). On invalid
 * text it stays within s[0..n) and its answer is only a best guess. */
bool jraw_member(const char *s, size_t n, const char *key,
                 struct jraw_span *out /* OUT */,
                 struct jraw_span *key_at /* OUT, may be NULL */);

/* Like jraw_member for several keys in one walk: out[k] receives the raw
 * value of the last occurrence of keys[k], or {NULL, 0} when absent. Returns
 * false (all absent) when s[0..n) is not an object. */
bool jraw_members(const char *s, size_t n, const char *const *keys, size_t nkeys,
                  struct jraw_span *out /* OUT, nkeys entries */);

/* Is v a JSON string whose decoded value is exactly the C string lit? */
bool jraw_str_eq(struct jraw_span v, const char *lit);

/* Append the decoded value of v, a valid JSON string value (quotes
 * included), to out as UTF-8; \u0000 becomes a NUL byte and a surrogate
 * escape without its pair U+FFFD. Returns false, appending nothing, when v is
 * not a string. */
bool jraw_str(struct buf *out, struct jraw_span v);

/* Append a copy of the valid JSON s[0..n) to out with every surrogate escape
 * that lacks its pair replaced by \\ufffd, for parsers that refuse them
 * (jansson). The text kept for the user is never this copy. */
void jraw_tame_surrogates(struct buf *out, const char *s, size_t n);

/* A copy of the valid JSON s[0..n) that jansson reads: lone surrogate
 * escapes as jraw_tame_surrogates, and numbers a double cannot hold (1e400)
 * as 0. For reading values out of text kept as it is; never shown. */
void jraw_tame(struct buf *out, const char *s, size_t n);

/* jansson's tree of the JSON text s[0..n) (json_loadb with flags), read
 * through jraw_tame when jansson refuses it as it is (owned: json_decref).
 * NULL, with jansson's reason in err (may be NULL), when it is not JSON. */
json_t *jraw_load(const char *s, size_t n, size_t flags, json_error_t *err);

#endif
