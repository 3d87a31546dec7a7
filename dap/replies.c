/* replies.c -- rendered read replies, kept while the store has not changed.
 *
 * Purpose: monitoring polls `status` and `list` far more often than anything
 * changes. Rendering a deployment record costs its statements, a copy of
 * every column and the JSON writing; a list of 100 records about 100 µs.
 * This keeps the body text of such replies and hands it back as long as the
 * store is provably unchanged, so a repeated poll costs a lookup and a copy.
 *
 * Design:
 *  - Correctness comes from the store, not from the writers: every entry
 *    keeps the store snapshot it was rendered at (store_snapshot: other
 *    connections' commits, rollbacks, and the rows of the entry's user that
 *    this connection changed, counted by SQLite's pre-update hook), and is
 *    answered only at an equal one. No code path that writes has to
 *    remember to invalidate anything, and a write by the CLI or another
 *    process is seen like our own.
 *  - A change that is not one user's own (another connection's commit, a
 *    rollback) may touch anything, and the first lookup after it empties
 *    the whole table. A user's own change (a run recorded, a deployment
 *    updated) makes only that user's entries stale: other users' polls go
 *    on hitting while the scheduler works.
 *  - Keys are (kind, user, project id), hashed with SipHash under a random
 *    key (libsodium's crypto_shorthash), so a client choosing project ids
 *    cannot pile them onto one slot. Open addressing, linear probing; a
 *    stale entry is replaced in place; no deletions but the whole-table
 *    reset, so no tombstones.
 *  - Bounded: at most REPLIES_SLOTS/2 entries and max_bytes of bodies; an
 *    insert that would go past either empties the table first (the simplest
 *    eviction; the hot entries come back at their next poll). A body larger
 *    than a quarter of max_bytes is never kept.
 *
 * Thread: service thread only (the store's thread). */
#include "dap/dap_internal.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#define REPLIES_SLOTS 4096 /* power of two; at most half used */

struct entry {
    uint64_t hash;      /* 0 = empty slot */
    struct store_snapshot snap; /* what the body was rendered at */
    char *key;          /* owned: kind byte, user, NUL, project id */
    size_t key_len;
    char *body;         /* owned: the body text */
    size_t body_len;
};

struct dap_replies {
    struct entry slot[REPLIES_SLOTS];
    size_t used;                 /* entries */
    size_t bytes;                /* keys and bodies */
    size_t max_bytes;
    bool have_snap;
    struct store_snapshot base;  /* every entry's snapshot but its user part */
    unsigned char hkey[crypto_shorthash_KEYBYTES];
    uint64_t hits, misses;       /* for /metrics */
};

struct dap_replies *dap__replies_new(size_t max_bytes)
{
    struct dap_replies *r = xcalloc(1, sizeof *r);
    r->max_bytes = max_bytes;
    randombytes_buf(r->hkey, sizeof r->hkey);
    return r;
}

static void clear(struct dap_replies *r)
{
    if (!r->used)
        return;
    for (size_t i = 0; i < REPLIES_SLOTS; i++) {
        struct entry *e = &r->slot[i];
        if (!e->hash)
            continue;
        free(e->key);
        free(e->body);
        memset(e, 0, sizeof *e);
    }
    r->used = r->bytes = 0;
}

void dap__replies_free(struct dap_replies *r)
{
    if (!r)
        return;
    clear(r);
    free(r);
}

/* A change that is not one user's own (another connection's commit, a
 * rollback, a row no user was read for) may have touched anything: drop
 * every entry. A user's own changes leave the other users' entries; the
 * user's are found stale one by one (their snapshot's user part). */
static void align(struct dap_replies *r, const struct store_snapshot *snap)
{
    if (r->have_snap && store_snapshot_same_base(&r->base, snap))
        return;
    clear(r);
    r->base = *snap;
    r->have_snap = true;
}

/* A key's bytes (kind, user, NUL, project id), on the stack when short. */
struct key {
    char small[256];
    char *p;            /* small, or owned heap memory */
    size_t n;
    uint64_t hash;      /* never 0 */
};

static void key_make(const struct dap_replies *r, struct key *k,
                     enum dap_reply_kind kind, const char *user, const char *project_id)
{
    if (!project_id)
        project_id = "";
    size_t ul = strlen(user) + 1, pl = strlen(project_id);
    k->n = 1 + ul + pl;
    k->p = k->n <= sizeof k->small ? k->small : xmalloc(k->n);
    k->p[0] = (char)kind;
    memcpy(k->p + 1, user, ul);
    memcpy(k->p + 1 + ul, project_id, pl);
    unsigned char h[crypto_shorthash_BYTES];
    crypto_shorthash(h, (const unsigned char *)k->p, k->n, r->hkey);
    memcpy(&k->hash, h, sizeof k->hash);
    if (!k->hash)
        k->hash = 1;
}

static void key_done(struct key *k)
{
    if (k->p != k->small)
        free(k->p);
}

/* The slot holding the key, or the empty slot where it would go. */
static struct entry *find(struct dap_replies *r, uint64_t hash, const char *key,
                          size_t key_len)
{
    for (size_t i = (size_t)hash & (REPLIES_SLOTS - 1);; i = (i + 1) & (REPLIES_SLOTS - 1)) {
        struct entry *e = &r->slot[i];
        if (!e->hash || (e->hash == hash && e->key_len == key_len &&
                         memcmp(e->key, key, key_len) == 0))
            return e;
    }
}

bool dap__replies_get(struct dap_replies *r, const struct store_snapshot *snap,
                      enum dap_reply_kind kind, const char *user,
                      const char *project_id, struct buf *out)
{
    align(r, snap);
    struct entry *e = NULL;
    if (r->used) {
        struct key k;
        key_make(r, &k, kind, user, project_id);
        e = find(r, k.hash, k.p, k.n);
        key_done(&k);
    }
    if (!e || !e->hash || !store_snapshot_eq(&e->snap, snap)) {
        r->misses++;
        return false;
    }
    r->hits++;
    buf_append(out, e->body, e->body_len);
    return true;
}

void dap__replies_put(struct dap_replies *r, const struct store_snapshot *snap,
                      enum dap_reply_kind kind, const char *user,
                      const char *project_id, const char *body, size_t body_len)
{
    align(r, snap);
    if (body_len > r->max_bytes / 4)
        return;
    struct key k;
    key_make(r, &k, kind, user, project_id);
    size_t cost = k.n + body_len;
    if (r->used + 1 > REPLIES_SLOTS / 2 || r->bytes + cost > r->max_bytes)
        clear(r);
    struct entry *e = find(r, k.hash, k.p, k.n);
    if (e->hash) { /* a stale body of the same key: replaced */
        r->bytes -= e->key_len + e->body_len;
        free(e->body);
    } else {
        e->hash = k.hash;
        e->key = xmalloc(k.n);
        memcpy(e->key, k.p, k.n);
        e->key_len = k.n;
        r->used++;
    }
    e->snap = *snap;
    e->body = xmalloc(body_len ? body_len : 1);
    memcpy(e->body, body, body_len);
    e->body_len = body_len;
    r->bytes += cost;
    key_done(&k);
}

void dap__replies_counts(const struct dap_replies *r, uint64_t *hits, uint64_t *misses)
{
    *hits = r ? r->hits : 0;
    *misses = r ? r->misses : 0;
}
