/* keys.c -- users and API keys, and the checks on names, labels and
 * permissions.
 *
 * Purpose: the functions of store/store.h that read or write the users and
 * api_keys tables: creating a key (and its user), authenticating one, looking
 * keys up, listing, revoking and counting them; also store_user_validate,
 * store_label_validate and the permission names.
 *
 * Design:
 *  - API keys: the text is "rrk_" + 64 hex of 32 random bytes. Only a keyed
 *    BLAKE2b-256 hash (crypto_generichash, key = 32 random bytes in table
 *    meta) is stored. Authentication looks the hash up through its UNIQUE
 *    index and then compares with sodium_memcmp. Secrets on the stack are
 *    wiped with sodium_memzero.
 *  - The keyed-hash key is created and loaded by store_open (store.c) and
 *    kept in struct store for the life of the connection.
 *  - Creating and revoking read before they write, so each is its own
 *    transaction (store__tx_begin): the user row and the key commit together,
 *    and a second revoke keeps the first revoked_at.
 *  - The validators are the checks store_key_create runs; they are public so
 *    a CLI can show its user why a name or label was refused.
 *
 * Thread: like every store call, on the one thread using the struct store. */
#include "store/store.h"
#include "store/store_internal.h"

#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#define HASH_BYTES crypto_generichash_BYTES /* 32: BLAKE2b-256 */
#define KEY_RAW_BYTES 32                   /* random bytes in a key's text */
#define KEY_ID_RAW_BYTES 8                 /* random bytes in a key's id */
#define KEY_TEXT_PREFIX "rrk_"
#define KEY_TEXT_INPUT_MAX 1024            /* longer presented keys: not found */

/* ================================================================ validation */

int store_user_validate(const char *user, struct err *e)
{
    if (!user || !*user)
        return err_set(e, RR_E_INVAL, "user name is empty");
    size_t n = strlen(user);
    if (n > STORE_USER_MAX)
        return err_set(e, RR_E_INVAL, "user name is longer than %d bytes", STORE_USER_MAX);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)user[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '@' || c == '-'))
            return err_set(e, RR_E_INVAL,
                           "user name may contain only letters, digits and . _ @ - "
                           "(bad byte 0x%02x at offset %zu)",
                           c, i);
    }
    return 0;
}

int store_label_validate(const char *label, struct err *e)
{
    if (!label)
        return 0;
    size_t n = strlen(label);
    if (n > STORE_LABEL_MAX)
        return err_set(e, RR_E_INVAL, "label is longer than %d bytes", STORE_LABEL_MAX);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)label[i];
        if (c < 0x20 || c == 0x7f)
            return err_set(e, RR_E_INVAL,
                           "label contains a control character (0x%02x at offset %zu)", c, i);
    }
    return 0;
}

/* ================================================================ permissions */

static const struct {
    const char *name;
    unsigned bit;
} perm_names[] = {
    {"task.control", STORE_PERM_CONTROL},
    {"task.monitor", STORE_PERM_MONITOR},
    {"org.admin", STORE_PERM_ORG_ADMIN},
};
#define PERM_KNOWN (STORE_PERM_CONTROL | STORE_PERM_MONITOR | STORE_PERM_ORG_ADMIN)

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

int store_perms_parse(const char *text, unsigned *out, struct err *e)
{
    unsigned bits = 0;
    const char *p = text ? text : "";
    for (;;) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        const char *b = p, *x = p + n;
        while (b < x && is_space(*b))
            b++;
        while (x > b && is_space(x[-1]))
            x--;
        size_t len = (size_t)(x - b);
        if (len > 0) { /* empty items ("a,,b", trailing comma, "") add nothing */
            size_t i;
            for (i = 0; i < sizeof perm_names / sizeof perm_names[0]; i++) {
                if (strlen(perm_names[i].name) == len && memcmp(perm_names[i].name, b, len) == 0)
                    break;
            }
            if (i == sizeof perm_names / sizeof perm_names[0]) {
                int shown = len > 64 ? 64 : (int)len;
                return err_set(e, RR_E_INVAL, "unknown permission '%.*s%s'", shown, b,
                               len > 64 ? "..." : "");
            }
            bits |= perm_names[i].bit;
        }
        if (!end)
            break;
        p = end + 1;
    }
    *out = bits;
    return 0;
}

void store_perms_format(unsigned perms, char *out, size_t outsz)
{
    if (!out || outsz == 0)
        return;
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < sizeof perm_names / sizeof perm_names[0]; i++) {
        if (!(perms & perm_names[i].bit))
            continue;
        int n = snprintf(out + used, outsz - used, "%s%s", used ? "," : "", perm_names[i].name);
        if (n < 0 || (size_t)n >= outsz - used) {
            out[used] = '\0'; /* drop a name that does not fit whole */
            return;
        }
        used += (size_t)n;
    }
}

/* ================================================================ keys */

static void key_hash(const struct store *s, const char *text, size_t len,
                     unsigned char h[HASH_BYTES] /* OUT */)
{
    /* Cannot fail with these sizes (out 32, key 32 bytes). */
    (void)crypto_generichash(h, HASH_BYTES, (const unsigned char *)text, len, s->hkey,
                             sizeof s->hkey);
}

static void key_from_row(sqlite3_stmt *st, struct store_key *k /* OUT */)
{
    memset(k, 0, sizeof *k);
    store__copy_col(k->id, sizeof k->id, st, 0);
    store__copy_col(k->user, sizeof k->user, st, 1);
    store__copy_col(k->label, sizeof k->label, st, 2);
    k->perms = (unsigned)sqlite3_column_int64(st, 3) & PERM_KNOWN;
    k->created_at = sqlite3_column_double(st, 4);
    k->expires_at = store__col_time(st, 5);
    k->revoked_at = store__col_time(st, 6);
}

/* Find the key whose text is text (by its keyed hash, then a constant-time
 * compare). 0 and *out, RR_E_NOTFOUND, or an error. */
static int key_find_by_text(struct store *s, const char *text, struct store_key *out /* OUT */,
                            struct err *e)
{
    size_t len = text ? strnlen(text, KEY_TEXT_INPUT_MAX + 1) : 0;
    if (len == 0 || len > KEY_TEXT_INPUT_MAX)
        return err_set(e, RR_E_NOTFOUND, "no such key");
    unsigned char h[HASH_BYTES];
    key_hash(s, text, len, h);

    sqlite3_stmt *st = NULL;
    int rc = store__stmt_acquire(s, ST_KEY_BY_HASH, &st, e);
    if (rc)
        goto out_wipe;
    if ((rc = sqlite3_bind_blob(st, 1, h, sizeof h, SQLITE_STATIC)) != SQLITE_OK) {
        rc = store__db_fail(s, e, rc, "bind");
        goto out;
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        rc = err_set(e, RR_E_NOTFOUND, "no such key");
    } else if (rc != SQLITE_ROW) {
        rc = store__db_fail(s, e, rc, "look up key");
    } else if (sqlite3_column_bytes(st, 7) != HASH_BYTES ||
               sodium_memcmp(sqlite3_column_blob(st, 7), h, HASH_BYTES) != 0) {
        rc = err_set(e, RR_E_NOTFOUND, "no such key");
    } else {
        key_from_row(st, out);
        rc = 0;
    }
out:
    store__stmt_release(s, ST_KEY_BY_HASH, st);
out_wipe:
    sodium_memzero(h, sizeof h);
    return rc;
}

static int key_find_by_id(struct store *s, const char *id, struct store_key *out /* OUT */,
                          struct err *e)
{
    if (!id || !*id)
        return err_set(e, RR_E_NOTFOUND, "no such key");
    sqlite3_stmt *st = NULL;
    int rc = store__stmt_acquire(s, ST_KEY_BY_ID, &st, e);
    if (rc)
        return rc;
    if ((rc = store__bind_str(st, 1, id)) != SQLITE_OK) {
        rc = store__db_fail(s, e, rc, "bind");
        goto out;
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        key_from_row(st, out);
        rc = 0;
    } else if (rc == SQLITE_DONE) {
        rc = err_set(e, RR_E_NOTFOUND, "no such key");
    } else {
        rc = store__db_fail(s, e, rc, "look up key");
    }
out:
    store__stmt_release(s, ST_KEY_BY_ID, st);
    return rc;
}

/* One INSERT attempt of a fresh key inside the caller's transaction. */
static int key_insert(struct store *s, const char *id, const char *user, const char *label,
                      unsigned perms, const unsigned char h[HASH_BYTES], double expires_at,
                      double now, struct err *e)
{
    sqlite3_stmt *st = NULL;
    int rc = store__stmt_acquire(s, ST_KEY_INSERT, &st, e);
    if (rc)
        return rc;
    if ((rc = store__bind_str(st, 1, id)) != SQLITE_OK ||
        (rc = store__bind_str(st, 2, label)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(st, 3, (sqlite3_int64)perms)) != SQLITE_OK ||
        (rc = sqlite3_bind_blob(st, 4, h, HASH_BYTES, SQLITE_STATIC)) != SQLITE_OK ||
        (rc = sqlite3_bind_double(st, 5, now)) != SQLITE_OK ||
        (rc = store__bind_time_opt(st, 6, expires_at)) != SQLITE_OK ||
        (rc = store__bind_str(st, 7, user)) != SQLITE_OK) {
        rc = store__db_fail(s, e, rc, "bind");
        goto out;
    }
    if ((rc = store__step_done(s, st, e, "insert key")) == 0 && sqlite3_changes(s->db) != 1)
        rc = err_set(e, RR_E_INTERNAL, "insert key: user '%s' vanished", user);
out:
    store__stmt_release(s, ST_KEY_INSERT, st);
    return rc;
}

static int user_ensure(struct store *s, const char *user, double now, struct err *e)
{
    sqlite3_stmt *st = NULL;
    int rc = store__stmt_acquire(s, ST_USER_ENSURE, &st, e);
    if (rc)
        return rc;
    if ((rc = store__bind_str(st, 1, user)) != SQLITE_OK ||
        (rc = sqlite3_bind_double(st, 2, now)) != SQLITE_OK)
        rc = store__db_fail(s, e, rc, "bind");
    else
        rc = store__step_done(s, st, e, "create user");
    store__stmt_release(s, ST_USER_ENSURE, st);
    return rc;
}

int store_key_create(struct store *s, const char *user, const char *label, unsigned perms,
                     double expires_at, double now, char key_text[STORE_KEY_TEXT_MAX],
                     struct store_key *out)
{
    struct err local = {0};
    struct err *e = &local; /* no err parameter: collect, then log */
    int rc;
    if ((rc = store_user_validate(user, e)) != 0 || (rc = store_label_validate(label, e)) != 0)
        goto fail;
    if (perms & ~PERM_KNOWN) {
        rc = err_set(e, RR_E_INVAL, "unknown permission bits 0x%x", perms & ~PERM_KNOWN);
        goto fail;
    }
    if (!isfinite(expires_at) || expires_at < 0 || (expires_at != 0 && expires_at <= now)) {
        rc = err_set(e, RR_E_INVAL, "key expiry must be in the future");
        goto fail;
    }

    unsigned char raw[KEY_RAW_BYTES], idraw[KEY_ID_RAW_BYTES], h[HASH_BYTES];
    char text[STORE_KEY_TEXT_MAX];
    char id[STORE_KEY_ID_MAX];
    if ((rc = store__tx_begin(s, e)) != 0)
        goto fail;
    if ((rc = user_ensure(s, user, now, e)) != 0)
        goto rollback;
    /* A clash of 64 random bits (id) or 256 (hash) is never expected, but a
     * retry is cheaper than reasoning about it. */
    for (int attempt = 0; attempt < 3; attempt++) {
        randombytes_buf(raw, sizeof raw);
        randombytes_buf(idraw, sizeof idraw);
        memcpy(text, KEY_TEXT_PREFIX, sizeof KEY_TEXT_PREFIX - 1);
        const size_t pl = sizeof KEY_TEXT_PREFIX - 1;
        sodium_bin2hex(text + pl, sizeof text - pl, raw, sizeof raw);
        memcpy(id, "k_", 2);
        sodium_bin2hex(id + 2, sizeof id - 2, idraw, sizeof idraw);
        key_hash(s, text, strlen(text), h);
        rc = key_insert(s, id, user, label, perms, h, expires_at, now, e);
        if (rc != RR_E_EXISTS)
            break;
    }
    if (rc)
        goto rollback;
    if ((rc = store__tx_commit(s, e)) != 0)
        goto wipe;

    memcpy(key_text, text, sizeof text);
    if (out) {
        memset(out, 0, sizeof *out);
        snprintf(out->id, sizeof out->id, "%s", id);
        snprintf(out->user, sizeof out->user, "%s", user);
        snprintf(out->label, sizeof out->label, "%s", label ? label : "");
        out->perms = perms;
        out->created_at = now;
        out->expires_at = expires_at;
    }
    rc = 0;
    goto wipe;
rollback:
    store__tx_rollback(s);
wipe:
    sodium_memzero(raw, sizeof raw);
    sodium_memzero(text, sizeof text);
    sodium_memzero(h, sizeof h);
    if (rc == 0)
        return 0;
fail:
    if (rc == RR_E_INVAL) /* the name may be what is invalid: not echoed */
        log_warn("store: create key: %s", local.msg);
    else
        log_error("store: create key for '%s': %s", user ? user : "(null)", local.msg);
    return rc;
}

int store_key_auth(struct store *s, const char *key_text, double now, struct store_key *out)
{
    struct err e = {0};
    struct store_key k;
    int rc = key_find_by_text(s, key_text, &k, &e);
    if (rc == RR_E_NOTFOUND)
        return rc;
    if (rc) {
        log_error("store: authenticate key: %s", e.msg);
        return rc;
    }
    *out = k;
    sodium_memzero(&k, sizeof k);
    if (out->revoked_at != 0)
        return RR_E_REVOKED;
    if (out->expires_at != 0 && now >= out->expires_at)
        return RR_E_EXPIRED;
    return 0;
}

int store_key_get(struct store *s, const char *id, struct store_key *out)
{
    struct err e = {0};
    struct store_key k;
    int rc = key_find_by_id(s, id, &k, &e);
    if (rc == 0)
        *out = k;
    else if (rc != RR_E_NOTFOUND)
        log_error("store: get key: %s", e.msg);
    return rc;
}

int store_key_list(struct store *s, store_key_cb cb, void *ud)
{
    sqlite3_stmt *st = NULL;
    int rc = store__stmt_acquire(s, ST_KEY_LIST, &st, NULL);
    if (rc)
        return rc;
    for (;;) {
        int src = sqlite3_step(st);
        if (src == SQLITE_DONE) {
            rc = 0;
            break;
        }
        if (src != SQLITE_ROW) {
            rc = store__db_fail(s, NULL, src, "list keys");
            break;
        }
        struct store_key k;
        key_from_row(st, &k);
        if ((rc = cb(&k, ud)) != 0)
            break;
    }
    store__stmt_release(s, ST_KEY_LIST, st);
    return rc;
}

int store_key_revoke(struct store *s, const char *id_or_key, double now, struct store_key *out)
{
    struct err e = {0};
    struct store_key k;
    bool by_text =
        id_or_key && strncmp(id_or_key, KEY_TEXT_PREFIX, sizeof KEY_TEXT_PREFIX - 1) == 0;
    int rc = store__tx_begin(s, &e);
    if (rc)
        goto fail;
    rc = by_text ? key_find_by_text(s, id_or_key, &k, &e) : key_find_by_id(s, id_or_key, &k, &e);
    if (rc)
        goto rollback;
    sqlite3_stmt *st = NULL;
    if ((rc = store__stmt_acquire(s, ST_KEY_REVOKE, &st, &e)) != 0)
        goto rollback;
    if ((rc = sqlite3_bind_double(st, 1, now)) != SQLITE_OK ||
        (rc = store__bind_str(st, 2, k.id)) != SQLITE_OK)
        rc = store__db_fail(s, &e, rc, "bind");
    else
        rc = store__step_done(s, st, &e, "revoke key");
    store__stmt_release(s, ST_KEY_REVOKE, st);
    if (rc)
        goto rollback;
    /* Read back: a second revoke keeps the first revoked_at. */
    if ((rc = key_find_by_id(s, k.id, &k, &e)) != 0)
        goto rollback;
    if ((rc = store__tx_commit(s, &e)) != 0)
        goto fail;
    if (out)
        *out = k;
    return 0;
rollback:
    store__tx_rollback(s);
fail:
    if (rc != RR_E_NOTFOUND)
        log_error("store: revoke key: %s", e.msg);
    return rc;
}

int store_user_key_count(struct store *s, const char *user, int64_t *out)
{
    return store__query_int64(s, ST_USER_KEYS, user, out, NULL, "count a user's keys");
}

int store_key_count(struct store *s, int64_t *out)
{
    return store__query_int64(s, ST_KEY_COUNT, NULL, out, NULL, "count keys");
}
