/* identity.c -- what the RocketRide engine said about credentials, for a
 * short while, and the checks still under way.
 *
 * Design: a table of a size fixed at creation. An entry is keyed by a keyed
 * hash of the credential (BLAKE2b, crypto_generichash, with a key drawn at
 * random when the table is made), so the credential itself is never kept
 * and a client cannot aim at one bucket. An entry is one of:
 *   - a check under way: the ticket the engine will answer, and until when
 *     rrdeploy waits for it. A second auth with the same credential waits
 *     for the same ticket instead of asking the engine again;
 *   - an accepted verdict (the engine's identity), kept for accept_ms;
 *   - a refusal (the engine's text), kept for refuse_ms.
 * "The engine could not be asked" is never kept: the next auth asks again.
 * The buckets are chains of slot indices; every used slot is also on an age
 * list, and a new entry takes a free slot, or the oldest entry that is not a
 * check still under way. When every slot holds a check under way, no new
 * check starts (too many at once). A ticket carries its slot index in its
 * low 16 bits, so a verdict finds its entry without a search.
 *
 * Also here: the memory credentials are kept in (dap__secret_dup).
 *
 * Time: every call takes now_ms from a monotonic clock, so tests inject it.
 * Thread: service thread only. */
#include "dap/dap_internal.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#define NIL UINT32_MAX
#define SLOT_BITS 16

enum state { FREE = 0, PENDING, ACCEPTED, REFUSED };

struct entry {
    unsigned char hash[DAP_IDS_HASH_BYTES];
    uint32_t chain;          /* next in its bucket (FREE: in the free list) */
    uint32_t older, newer;   /* on the age list */
    uint8_t state;
    int64_t until_ms;        /* PENDING: the deadline; else: the expiry */
    uint64_t ticket;         /* PENDING only */
    union {
        struct dap_identity id;     /* ACCEPTED */
        char why[DAP_REFUSAL_MAX];      /* REFUSED */
    } v;
};

struct dap_ids {
    struct dap_ids_config cfg;
    struct entry *slots;     /* owned: cfg.slots entries */
    uint32_t *buckets;       /* owned: cfg.slots chain heads */
    uint32_t free_head;
    uint32_t oldest, newest; /* the age list */
    uint64_t gen;            /* tickets: gen << SLOT_BITS | slot */
    unsigned char key[crypto_generichash_KEYBYTES];
};

/* ---------------------------------------------------------------- text */

/* The length of the valid UTF-8 sequence at s (n bytes left), 0 if none. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    size_t len;
    uint32_t min, c;
    if (s[0] < 0x80)
        return 1;
    if ((s[0] & 0xe0) == 0xc0)
        len = 2, min = 0x80, c = s[0] & 0x1f;
    else if ((s[0] & 0xf0) == 0xe0)
        len = 3, min = 0x800, c = s[0] & 0x0f;
    else if ((s[0] & 0xf8) == 0xf0)
        len = 4, min = 0x10000, c = s[0] & 0x07;
    else
        return 0;
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        c = c << 6 | (s[i] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    return len;
}

void dap__copy_text(char *dst, size_t size, const char *src)
{
    size_t o = 0, n = src ? strlen(src) : 0;
    const unsigned char *s = (const unsigned char *)src;
    for (size_t i = 0; i < n && size > 0;) {
        size_t len = utf8_len(s + i, n - i);
        if (len == 0 || (len == 1 && (s[i] < 0x20 || s[i] == 0x7f))) {
            if (o + 1 >= size)
                break;
            dst[o++] = len == 0 ? '?' : ' ';
            i += len ? len : 1;
            continue;
        }
        if (o + len >= size)
            break; /* never half a character */
        memcpy(dst + o, s + i, len);
        o += len;
        i += len;
    }
    if (size > 0)
        dst[o] = '\0';
}

/* ---------------------------------------------------------------- table */

void dap__ids_config_defaults(struct dap_ids_config *c)
{
    c->slots = 4096;
    c->accept_ms = 30 * 1000;
    c->refuse_ms = 5 * 1000;
    c->wait_ms = 15 * 1000;
}

struct dap_ids *dap__ids_new(const struct dap_ids_config *c)
{
    ASSERT(c->slots >= 1 && c->slots <= (1u << SLOT_BITS));
    if (sodium_init() < 0)
        return NULL;
    struct dap_ids *ids = xcalloc(1, sizeof *ids);
    ids->cfg = *c;
    ids->slots = xcalloc(c->slots, sizeof *ids->slots);
    ids->buckets = xmalloc(c->slots * sizeof *ids->buckets);
    for (uint32_t i = 0; i < c->slots; i++) {
        ids->buckets[i] = NIL;
        ids->slots[i].chain = i + 1 < c->slots ? i + 1 : NIL;
    }
    ids->free_head = 0;
    ids->oldest = ids->newest = NIL;
    randombytes_buf(ids->key, sizeof ids->key);
    return ids;
}

void dap__ids_free(struct dap_ids *ids)
{
    if (!ids)
        return;
    sodium_memzero(ids->slots, ids->cfg.slots * sizeof *ids->slots);
    sodium_memzero(ids->key, sizeof ids->key);
    free(ids->slots);
    free(ids->buckets);
    free(ids);
}

void dap__ids_hash(const struct dap_ids *ids, const char *cred, size_t len,
                   unsigned char out[DAP_IDS_HASH_BYTES])
{
    crypto_generichash(out, DAP_IDS_HASH_BYTES, (const unsigned char *)cred,
                       len, ids->key, sizeof ids->key);
}

static uint32_t bucket_of(const struct dap_ids *ids, const unsigned char *h)
{
    uint32_t b;
    memcpy(&b, h, sizeof b); /* the hash is keyed: its bits are uniform */
    return b % (uint32_t)ids->cfg.slots;
}

static void unlink_entry(struct dap_ids *ids, uint32_t i)
{
    struct entry *e = &ids->slots[i];
    uint32_t *pp = &ids->buckets[bucket_of(ids, e->hash)];
    while (*pp != i)
        pp = &ids->slots[*pp].chain;
    *pp = e->chain;
    if (e->older != NIL)
        ids->slots[e->older].newer = e->newer;
    else
        ids->oldest = e->newer;
    if (e->newer != NIL)
        ids->slots[e->newer].older = e->older;
    else
        ids->newest = e->older;
    sodium_memzero(e, sizeof *e);
    e->chain = ids->free_head;
    ids->free_head = i;
}

/* Is entry e of no use any more at now_ms? A check under way stays until
 * its deadline; a verdict until its expiry. */
static bool stale(const struct entry *e, int64_t now_ms)
{
    return now_ms >= e->until_ms;
}

static uint32_t find(struct dap_ids *ids, const unsigned char *h)
{
    for (uint32_t i = ids->buckets[bucket_of(ids, h)]; i != NIL;
         i = ids->slots[i].chain)
        if (sodium_memcmp(ids->slots[i].hash, h, DAP_IDS_HASH_BYTES) == 0)
            return i;
    return NIL;
}

enum dap_ids_found dap__ids_find(struct dap_ids *ids,
                                 const unsigned char h[DAP_IDS_HASH_BYTES],
                                 int64_t now_ms, struct dap_ids_hit *out)
{
    uint32_t i = find(ids, h);
    if (i == NIL)
        return DAP_IDS_NONE;
    struct entry *e = &ids->slots[i];
    if (stale(e, now_ms)) {
        unlink_entry(ids, i);
        return DAP_IDS_NONE;
    }
    memset(out, 0, sizeof *out);
    switch (e->state) {
    case PENDING:
        out->ticket = e->ticket;
        out->deadline_ms = e->until_ms;
        return DAP_IDS_PENDING;
    case ACCEPTED:
        out->id = e->v.id;
        return DAP_IDS_ACCEPTED;
    default:
        memcpy(out->why, e->v.why, sizeof out->why);
        return DAP_IDS_REFUSED;
    }
}

/* A slot for a new entry: a free one, else the oldest that is not a check
 * still under way (stale ones first, as they come first by age). NIL when
 * every slot is a live check. */
static uint32_t take_slot(struct dap_ids *ids, int64_t now_ms)
{
    if (ids->free_head == NIL) {
        for (uint32_t i = ids->oldest; i != NIL; i = ids->slots[i].newer) {
            const struct entry *e = &ids->slots[i];
            if (e->state != PENDING || stale(e, now_ms)) {
                unlink_entry(ids, i);
                break;
            }
        }
    }
    uint32_t i = ids->free_head;
    if (i != NIL)
        ids->free_head = ids->slots[i].chain;
    return i;
}

/* Put a new entry for h in slot i, the newest. */
static struct entry *insert(struct dap_ids *ids, uint32_t i,
                            const unsigned char *h)
{
    struct entry *e = &ids->slots[i];
    memset(e, 0, sizeof *e);
    memcpy(e->hash, h, DAP_IDS_HASH_BYTES);
    uint32_t b = bucket_of(ids, h);
    e->chain = ids->buckets[b];
    ids->buckets[b] = i;
    e->older = ids->newest;
    e->newer = NIL;
    if (ids->newest != NIL)
        ids->slots[ids->newest].newer = i;
    else
        ids->oldest = i;
    ids->newest = i;
    return e;
}

uint64_t dap__ids_begin(struct dap_ids *ids,
                        const unsigned char h[DAP_IDS_HASH_BYTES],
                        int64_t now_ms, int64_t *deadline_ms)
{
    uint32_t old = find(ids, h);
    if (old != NIL)
        unlink_entry(ids, old); /* the caller found it stale or wants anew */
    uint32_t i = take_slot(ids, now_ms);
    if (i == NIL)
        return 0;
    struct entry *e = insert(ids, i, h);
    e->state = PENDING;
    e->until_ms = now_ms + ids->cfg.wait_ms;
    e->ticket = ++ids->gen << SLOT_BITS | i;
    *deadline_ms = e->until_ms;
    return e->ticket;
}

/* The entry that waits for ticket, or NIL. */
static uint32_t pending_slot(const struct dap_ids *ids, uint64_t ticket)
{
    uint32_t i = (uint32_t)(ticket & ((1u << SLOT_BITS) - 1));
    if (ticket == 0 || i >= ids->cfg.slots)
        return NIL;
    const struct entry *e = &ids->slots[i];
    return e->state == PENDING && e->ticket == ticket ? i : NIL;
}

void dap__ids_cancel(struct dap_ids *ids, uint64_t ticket)
{
    uint32_t i = pending_slot(ids, ticket);
    if (i != NIL)
        unlink_entry(ids, i);
}

bool dap__ids_settle(struct dap_ids *ids, uint64_t ticket,
                     const struct dap_identity *id, bool refused,
                     const char *why, int64_t now_ms)
{
    uint32_t i = pending_slot(ids, ticket);
    if (i == NIL)
        return false;
    struct entry *e = &ids->slots[i];
    if (id) {
        e->state = ACCEPTED;
        e->v.id = *id;
        e->v.id.user[sizeof e->v.id.user - 1] = '\0';
        e->until_ms = now_ms + ids->cfg.accept_ms;
    } else if (refused) {
        e->state = REFUSED;
        dap__copy_text(e->v.why, sizeof e->v.why, why);
        e->until_ms = now_ms + ids->cfg.refuse_ms;
    } else {
        unlink_entry(ids, i); /* could not ask: the next auth asks again */
    }
    return true;
}

size_t dap__ids_count(const struct dap_ids *ids)
{
    size_t n = 0;
    for (uint32_t i = ids->oldest; i != NIL; i = ids->slots[i].newer)
        n++;
    return n;
}

/* ---------------------------------------------------------------- secrets */

/* A secret is a flag byte, the text and a NUL; the caller sees the text.
 * sodium_malloc gives each allocation pages of its own between guard pages
 * (four mappings each): a process has only so many mappings
 * (vm.max_map_count, 65530 by default), and sqlite, lws and malloc need
 * theirs. So at most GUARDED_MAX secrets are guarded at once; the rest (and
 * any sodium_malloc refuses) go to ordinary memory, locked if the system
 * allows. Either way a secret is wiped when freed. */
#define SECRET_GUARDED 1
#define SECRET_PLAIN 2
#define GUARDED_MAX 2048

static size_t guarded_live;

char *dap__secret_dup(const char *s, size_t n)
{
    char *p = guarded_live < GUARDED_MAX ? sodium_malloc(n + 2) : NULL;
    if (p) {
        p[0] = SECRET_GUARDED;
        guarded_live++;
    } else {
        p = xmalloc(n + 2);
        (void)sodium_mlock(p, n + 2); /* best effort */
        p[0] = SECRET_PLAIN;
    }
    memcpy(p + 1, s, n);
    p[n + 1] = '\0';
    return p + 1;
}

void dap__secret_free(char *s)
{
    if (!s)
        return;
    char *p = s - 1;
    if (p[0] == SECRET_GUARDED) {
        sodium_free(p); /* zeroes it first */
        guarded_live--;
        return;
    }
    ASSERT(p[0] == SECRET_PLAIN);
    size_t n = strlen(s) + 2;
    sodium_munlock(p, n); /* zeroes it, locked or not */
    free(p);
}
