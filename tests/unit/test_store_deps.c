/* test_store_deps.c -- unit tests for store/deps.c: deployments, their
 * per-user limit, the walks, the scheduler's progress columns and the
 * owner's sealed credential.
 *
 * Design: every test gets a fresh database file in its own temporary
 * directory (fixture_setup) that fixture_teardown closes and removes. Time is
 * passed in explicitly, never read from the clock. Races between connections
 * are provoked with forked children, each opening its own connection, as
 * separate processes (the daemon and the `rrdeploy keys` CLI) do.
 *
 * Thread: single-threaded; children are forked before they open anything. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "store/store.h"
#include "store/store_internal.h"
#include "tests/unit/fixture.h"
#include "util/vault.h"

#define T0 FIXTURE_T0

static void assert_dep_equal(const struct store_dep *a, const struct store_dep *b)
{
    assert_string_equal(a->user, b->user);
    assert_string_equal(a->project_id, b->project_id);
    assert_string_equal(a->pipeline, b->pipeline);
    assert_string_equal(a->schedule, b->schedule);
    assert_int_equal(a->state, b->state);
    if (a->error || b->error) {
        assert_non_null(a->error);
        assert_non_null(b->error);
        assert_string_equal(a->error, b->error);
    }
    if (a->created_by || b->created_by)
        assert_string_equal(a->created_by, b->created_by);
    if (a->owner_key_id || b->owner_key_id)
        assert_string_equal(a->owner_key_id, b->owner_key_id);
    assert_true(a->created_at == b->created_at);
    assert_true(a->updated_at == b->updated_at);
    assert_true(a->next_run_at == b->next_run_at);
    assert_true(a->last_fire_at == b->last_fire_at);
}

static void test_dep_insert_get(void **state)
{
    struct fixture *f = *state;
    struct store_dep d =
        fixture_dep("alice", "proj-1", "{\"project_id\":\"proj-1\",\"b\":1,\"a\":2}");
    d.created_at = T0 + 0.125;
    d.updated_at = T0 + 0.5;
    assert_int_equal(store_dep_insert(f->s, &d, 10000), 0);

    struct store_dep g = {0};
    assert_int_equal(store_dep_get(f->s, "alice", "proj-1", &g), 0);
    assert_dep_equal(&g, &d);
    assert_null(g.error);
    store_dep_clear(&g);
    assert_null(g.user);
    store_dep_clear(NULL);

    /* next_run_at 0 <-> NULL; error and optional strings NULL <-> NULL. */
    struct store_dep m = fixture_dep("alice", "manual-one", "{}");
    m.schedule = (char *)"manual";
    m.next_run_at = 0;
    m.created_by = NULL;
    m.owner_key_id = NULL;
    assert_int_equal(store_dep_insert(f->s, &m, 0), 0);
    assert_int_equal(fixture_sql_int(f->path,
                                     "SELECT count(*) FROM deployments WHERE project_id = "
                                     "'manual-one' AND next_run_at IS NULL AND error IS NULL "
                                     "AND created_by IS NULL"),
                     1);
    assert_int_equal(store_dep_get(f->s, "alice", "manual-one", &g), 0);
    assert_true(g.next_run_at == 0);
    assert_null(g.created_by);
    assert_null(g.owner_key_id);
    store_dep_clear(&g);

    /* Not found: unknown id, unknown user; out untouched. */
    memset(&g, 0, sizeof g);
    assert_int_equal(store_dep_get(f->s, "alice", "nope", &g), RR_E_NOTFOUND);
    assert_null(g.user);
    assert_int_equal(store_dep_get(f->s, "nobody", "proj-1", &g), RR_E_NOTFOUND);

    /* Missing required fields are refused. */
    struct store_dep bad = fixture_dep("alice", "x", NULL);
    assert_int_equal(store_dep_insert(f->s, &bad, 0), RR_E_INVAL);
    bad = fixture_dep("alice", "x", "{}");
    bad.state = (enum store_state)7;
    assert_int_equal(store_dep_insert(f->s, &bad, 0), RR_E_INVAL);
}

static void test_dep_duplicate(void **state)
{
    struct fixture *f = *state;
    struct store_dep d = fixture_dep("alice", "p", "{\"v\":1}");
    assert_int_equal(store_dep_insert(f->s, &d, 100), 0);
    struct store_dep d2 = fixture_dep("alice", "p", "{\"v\":2}");
    assert_int_equal(store_dep_insert(f->s, &d2, 100), RR_E_EXISTS);
    assert_int_equal(store_dep_insert(f->s, &d2, 0), RR_E_EXISTS);
    struct store_dep g;
    assert_int_equal(store_dep_get(f->s, "alice", "p", &g), 0);
    assert_string_equal(g.pipeline, "{\"v\":1}"); /* the first one stays */
    store_dep_clear(&g);
    /* Same project id for another user is a different deployment. */
    struct store_dep o = fixture_dep("bob", "p", "{\"v\":3}");
    assert_int_equal(store_dep_insert(f->s, &o, 100), 0);
    /* The store is still usable: no transaction left open. */
    assert_true(sqlite3_get_autocommit(store__db(f->s)) != 0);
}

static void test_dep_limit(void **state)
{
    struct fixture *f = *state;
    char id[16];
    for (int i = 0; i < 3; i++) {
        snprintf(id, sizeof id, "p%d", i);
        struct store_dep d = fixture_dep("alice", id, "{}");
        assert_int_equal(store_dep_insert(f->s, &d, 3), 0);
    }
    struct store_dep d = fixture_dep("alice", "p3", "{}");
    assert_int_equal(store_dep_insert(f->s, &d, 3), RR_E_LIMIT);
    assert_int_equal(store_dep_get(f->s, "alice", "p3", &(struct store_dep){0}), RR_E_NOTFOUND);
    /* At the limit a duplicate is still a duplicate. */
    struct store_dep dup = fixture_dep("alice", "p1", "{}");
    assert_int_equal(store_dep_insert(f->s, &dup, 3), RR_E_EXISTS);
    /* Other users are counted separately. */
    struct store_dep o = fixture_dep("bob", "p3", "{}");
    assert_int_equal(store_dep_insert(f->s, &o, 3), 0);
    int64_t n = 0;
    assert_int_equal(store_dep_count(f->s, "alice", &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(store_dep_count(f->s, "bob", &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(store_dep_count(f->s, NULL, &n), 0);
    assert_int_equal(n, 4);
    assert_int_equal(store_dep_count(f->s, "nobody", &n), 0);
    assert_int_equal(n, 0);
    /* Room again after a delete. */
    assert_int_equal(store_dep_delete(f->s, "alice", "p0"), 0);
    assert_int_equal(store_dep_insert(f->s, &d, 3), 0);
    assert_int_equal(store_dep_insert(f->s, &dup, 1), RR_E_EXISTS);
    struct store_dep x = fixture_dep("alice", "p9", "{}");
    assert_int_equal(store_dep_insert(f->s, &x, 1), RR_E_LIMIT);
}

static void test_dep_update_delete(void **state)
{
    struct fixture *f = *state;
    struct store_dep d = fixture_dep("alice", "p", "{\"v\":1}");
    assert_int_equal(store_dep_insert(f->s, &d, 0), 0);

    struct store_dep u = d;
    u.pipeline = (char *)"{\"v\":2}";
    u.schedule = (char *)"0 3 * * *";
    u.state = STORE_ERRORED;
    u.error = (char *)"owner key k_1 was revoked";
    u.owner_key_id = (char *)"k_1111111111111111";
    u.updated_at = T0 + 99;
    u.next_run_at = 0;
    assert_int_equal(store_dep_update(f->s, &u), 0);
    struct store_dep g;
    assert_int_equal(store_dep_get(f->s, "alice", "p", &g), 0);
    assert_dep_equal(&g, &u);
    store_dep_clear(&g);

    u.state = STORE_PAUSED;
    u.error = NULL;
    assert_int_equal(store_dep_update(f->s, &u), 0);
    assert_int_equal(store_dep_get(f->s, "alice", "p", &g), 0);
    assert_int_equal(g.state, STORE_PAUSED);
    assert_null(g.error);
    store_dep_clear(&g);

    struct store_dep missing = fixture_dep("alice", "q", "{}");
    assert_int_equal(store_dep_update(f->s, &missing), RR_E_NOTFOUND);
    missing = fixture_dep("bob", "p", "{}"); /* another user's id */
    assert_int_equal(store_dep_update(f->s, &missing), RR_E_NOTFOUND);
    assert_int_equal(store_dep_delete(f->s, "bob", "p"), RR_E_NOTFOUND);
    assert_int_equal(store_dep_delete(f->s, "alice", "q"), RR_E_NOTFOUND);

    assert_int_equal(store_dep_delete(f->s, "alice", "p"), 0);
    assert_int_equal(store_dep_delete(f->s, "alice", "p"), RR_E_NOTFOUND);
    assert_int_equal(store_dep_get(f->s, "alice", "p", &g), RR_E_NOTFOUND);
}

struct dep_walk {
    int n;
    char got[16][64];
    int stop_at;
    struct store *s; /* for re-entrant calls */
    int nested;
};

static int dep_cb(const struct store_dep *d, void *ud)
{
    struct dep_walk *w = ud;
    assert_true(w->n < 16);
    snprintf(w->got[w->n], sizeof w->got[w->n], "%s/%s", d->user, d->project_id);
    w->n++;
    return w->n == w->stop_at ? -99 : 0;
}

static void test_dep_list_order_isolation(void **state)
{
    struct fixture *f = *state;
    /* BINARY collation: bytes compare, so "C" < "a" < "aa" < "b" < "é". */
    static const char *const ids[] = {"b", "a", "\xc3\xa9", "C", "aa"};
    for (size_t i = 0; i < 5; i++) {
        struct store_dep d = fixture_dep("alice", ids[i], "{}");
        assert_int_equal(store_dep_insert(f->s, &d, 0), 0);
    }
    struct store_dep o = fixture_dep("bob", "a", "{}");
    assert_int_equal(store_dep_insert(f->s, &o, 0), 0);
    o = fixture_dep("Adam", "z", "{}");
    assert_int_equal(store_dep_insert(f->s, &o, 0), 0);

    struct dep_walk w = {0};
    assert_int_equal(store_dep_list(f->s, "alice", dep_cb, &w), 0);
    assert_int_equal(w.n, 5);
    assert_string_equal(w.got[0], "alice/C");
    assert_string_equal(w.got[1], "alice/a");
    assert_string_equal(w.got[2], "alice/aa");
    assert_string_equal(w.got[3], "alice/b");
    assert_string_equal(w.got[4], "alice/\xc3\xa9");

    memset(&w, 0, sizeof w);
    assert_int_equal(store_dep_list(f->s, "bob", dep_cb, &w), 0);
    assert_int_equal(w.n, 1);
    assert_string_equal(w.got[0], "bob/a");

    memset(&w, 0, sizeof w);
    assert_int_equal(store_dep_list(f->s, "nobody", dep_cb, &w), 0);
    assert_int_equal(w.n, 0);

    memset(&w, 0, sizeof w);
    assert_int_equal(store_dep_list(f->s, NULL, dep_cb, &w), 0);
    assert_int_equal(w.n, 7);
    assert_string_equal(w.got[0], "Adam/z");
    assert_string_equal(w.got[1], "alice/C");
    assert_string_equal(w.got[6], "bob/a");

    memset(&w, 0, sizeof w);
    w.stop_at = 2;
    assert_int_equal(store_dep_list(f->s, NULL, dep_cb, &w), -99);
    assert_int_equal(w.n, 2);

    /* bob's "a" and alice's "a" are separate rows. */
    assert_int_equal(store_dep_delete(f->s, "bob", "a"), 0);
    struct store_dep g;
    assert_int_equal(store_dep_get(f->s, "alice", "a", &g), 0);
    store_dep_clear(&g);
}

static int nested_cb(const struct store_dep *d, void *ud)
{
    struct dep_walk *w = ud;
    struct dep_walk inner = {0};
    /* Re-enter the same walk and other calls while the outer one runs. */
    assert_int_equal(store_dep_list(w->s, d->user, dep_cb, &inner), 0);
    assert_int_equal(inner.n, 2);
    struct store_dep g;
    assert_int_equal(store_dep_get(w->s, d->user, d->project_id, &g), 0);
    assert_string_equal(g.project_id, d->project_id);
    store_dep_clear(&g);
    struct store_dep u = *d;
    u.updated_at = T0 + 1000;
    assert_int_equal(store_dep_update(w->s, &u), 0);
    /* A write transaction that fails and rolls back under the running walk. */
    struct store_dep dup = *d;
    assert_int_equal(store_dep_insert(w->s, &dup, 0), RR_E_EXISTS);
    assert_int_equal(store_dep_insert(w->s, &dup, 1), RR_E_EXISTS);
    w->n++;
    return 0;
}

static void test_dep_list_reentrant(void **state)
{
    struct fixture *f = *state;
    struct store_dep d = fixture_dep("alice", "one", "{}");
    assert_int_equal(store_dep_insert(f->s, &d, 0), 0);
    d = fixture_dep("alice", "two", "{}");
    assert_int_equal(store_dep_insert(f->s, &d, 0), 0);
    struct dep_walk w = {.s = f->s};
    assert_int_equal(store_dep_list(f->s, "alice", nested_cb, &w), 0);
    assert_int_equal(w.n, 2);
    struct store_dep g;
    assert_int_equal(store_dep_get(f->s, "alice", "two", &g), 0);
    assert_true(g.updated_at == T0 + 1000);
    store_dep_clear(&g);
}

static void test_dep_unicode_big(void **state)
{
    struct fixture *f = *state;
    const char *pid = "\xe9\xa1\xb9\xe7\x9b\xae-\xf0\x9f\x9a\x80"; /* 项目-🚀 */
    const char *pipe_small =
        "{\"z\":1,\"a\":\"caf\xc3\xa9 \xf0\x9f\x98\x80\",\"m\":[3,2,1],\"e\":\"\\u0000\\n\"}";
    struct store_dep d = fixture_dep("alice", pid, pipe_small);
    d.schedule = (char *)"30 2 * * 1-5";
    assert_int_equal(store_dep_insert(f->s, &d, 0), 0);
    struct store_dep g;
    assert_int_equal(store_dep_get(f->s, "alice", pid, &g), 0);
    assert_string_equal(g.project_id, pid);
    assert_string_equal(g.pipeline, pipe_small);
    store_dep_clear(&g);

    /* 1 MiB pipeline, non-repeating content, round-trips byte for byte. */
    size_t n = 1u << 20;
    char *big = malloc(n + 1);
    assert_non_null(big);
    memcpy(big, "{\"k\":\"", 6);
    for (size_t i = 6; i < n - 2; i++)
        big[i] = (char)('a' + (i * 7919u) % 26);
    memcpy(big + n - 2, "\"}", 2);
    big[n] = '\0';
    struct store_dep b = fixture_dep("alice", "big", big);
    assert_int_equal(store_dep_insert(f->s, &b, 0), 0);
    fixture_reopen(f);
    assert_int_equal(store_dep_get(f->s, "alice", "big", &g), 0);
    assert_int_equal(strlen(g.pipeline), n);
    assert_memory_equal(g.pipeline, big, n);
    store_dep_clear(&g);
    free(big);
}

static int key_dep_cb(const struct store_dep *d, void *ud)
{
    return dep_cb(d, ud);
}

static void test_dep_list_by_key(void **state)
{
    struct fixture *f = *state;
    struct store_dep d = fixture_dep("alice", "a1", "{}");
    d.owner_key_id = (char *)"k_aaaaaaaaaaaaaaaa";
    assert_int_equal(store_dep_insert(f->s, &d, 0), 0);
    d = fixture_dep("alice", "a2", "{}");
    d.owner_key_id = (char *)"k_bbbbbbbbbbbbbbbb";
    assert_int_equal(store_dep_insert(f->s, &d, 0), 0);
    d = fixture_dep("alice", "a0", "{}");
    d.owner_key_id = (char *)"k_aaaaaaaaaaaaaaaa";
    assert_int_equal(store_dep_insert(f->s, &d, 0), 0);
    struct dep_walk w = {0};
    assert_int_equal(store_dep_list_by_key(f->s, "k_aaaaaaaaaaaaaaaa", key_dep_cb, &w), 0);
    assert_int_equal(w.n, 2);
    assert_string_equal(w.got[0], "alice/a0");
    assert_string_equal(w.got[1], "alice/a1");
    memset(&w, 0, sizeof w);
    assert_int_equal(store_dep_list_by_key(f->s, "k_cccccccccccccccc", key_dep_cb, &w), 0);
    assert_int_equal(w.n, 0);
}

static void test_state_names(void **state)
{
    (void)state;
    enum store_state st;
    static const char *const names[] = {"active", "paused", "errored"};
    for (int i = 0; i < 3; i++) {
        assert_string_equal(store_state_name((enum store_state)i), names[i]);
        assert_int_equal(store_state_parse(names[i], &st), 0);
        assert_int_equal(st, i);
    }
    assert_int_equal(store_state_parse("Active", &st), RR_E_INVAL);
    assert_int_equal(store_state_parse("", &st), RR_E_INVAL);
    assert_int_equal(store_state_parse(NULL, &st), RR_E_INVAL);
}

/* ================================================================ several connections */

/* Fork n children that each open their own connection and insert; return how
 * many got 0, RR_E_EXISTS and RR_E_LIMIT. The parent's connection is closed
 * across the fork: a SQLite connection must never be carried into a child. */
static void race(struct fixture *f, int n, int same_id, int64_t max, int *ok, int *exists,
                 int *limit)
{
    const char *path = f->path;
    store_close(f->s);
    f->s = NULL;
    pid_t pids[16];
    int go[2];
    assert_true(n <= 16);
    assert_int_equal(pipe(go), 0);
    for (int i = 0; i < n; i++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(go[1]);
            struct store *s = NULL;
            if (store_open(path, &s, NULL) != 0)
                _exit(100);
            char buf;
            if (read(go[0], &buf, 1) < 0) /* wait until everyone is ready */
                _exit(101);
            char id[16];
            snprintf(id, sizeof id, "p%d", same_id ? 0 : i);
            struct store_dep d = fixture_dep("racer", id, "{}");
            int rc = store_dep_insert(s, &d, max);
            store_close(s);
            _exit(rc == 0 ? 0 : rc == RR_E_EXISTS ? 1 : rc == RR_E_LIMIT ? 2 : 3);
        }
        pids[i] = pid;
    }
    close(go[0]);
    close(go[1]); /* EOF releases every child at once */
    *ok = *exists = *limit = 0;
    for (int i = 0; i < n; i++) {
        int st = 0;
        assert_int_equal(waitpid(pids[i], &st, 0), pids[i]);
        assert_true(WIFEXITED(st));
        switch (WEXITSTATUS(st)) {
        case 0: (*ok)++; break;
        case 1: (*exists)++; break;
        case 2: (*limit)++; break;
        default: fail_msg("child exit %d", WEXITSTATUS(st));
        }
    }
    fixture_reopen(f);
}

static void test_racing_inserts(void **state)
{
    struct fixture *f = *state;
    int ok, exists, limit;
    race(f, 8, 1, 0, &ok, &exists, &limit);
    assert_int_equal(ok, 1);
    assert_int_equal(exists, 7);
    assert_int_equal(limit, 0);

    assert_int_equal(store_dep_delete(f->s, "racer", "p0"), 0);
    race(f, 8, 0, 3, &ok, &exists, &limit);
    assert_int_equal(ok, 3);
    assert_int_equal(limit, 5);
    int64_t n = 0;
    assert_int_equal(store_dep_count(f->s, "racer", &n), 0);
    assert_int_equal(n, 3);
}

/* ================================================================ scheduler progress */

static void test_dep_progress(void **state)
{
    struct fixture *f = *state;
    struct store_dep d = fixture_dep("alice", "p", "{}");
    d.last_fire_at = T0 + 60;
    assert_int_equal(store_dep_insert(f->s, &d, 0), 0);
    struct store_dep g;
    assert_int_equal(store_dep_get(f->s, "alice", "p", &g), 0);
    assert_dep_equal(&g, &d);
    store_dep_clear(&g);

    /* The walk reads it too. */
    struct store_dep x = fixture_dep("alice", "q", "{}"); /* last_fire_at 0 */
    assert_int_equal(store_dep_insert(f->s, &x, 0), 0);
    assert_int_equal(fixture_sql_int(f->path,
                                     "SELECT count(*) FROM deployments WHERE project_id = 'q' "
                                     "AND last_fire_at IS NULL"),
                     1);

    /* update overwrites it, 0 <-> NULL. */
    struct store_dep u = d;
    u.last_fire_at = 0;
    assert_int_equal(store_dep_update(f->s, &u), 0);
    assert_int_equal(fixture_sql_int(f->path,
                                     "SELECT count(*) FROM deployments WHERE project_id = 'p' "
                                     "AND last_fire_at IS NULL"),
                     1);
    u.last_fire_at = T0 + 90.5;
    assert_int_equal(store_dep_update(f->s, &u), 0);
    assert_int_equal(store_dep_get(f->s, "alice", "p", &g), 0);
    assert_true(g.last_fire_at == T0 + 90.5);
    store_dep_clear(&g);

    /* set_progress touches those two columns only. */
    assert_int_equal(store_dep_set_progress(f->s, "alice", "p", T0 + 120, T0 + 180), 0);
    assert_int_equal(store_dep_get(f->s, "alice", "p", &g), 0);
    struct store_dep want = u;
    want.last_fire_at = T0 + 120;
    want.next_run_at = T0 + 180;
    assert_dep_equal(&g, &want);
    store_dep_clear(&g);
    assert_int_equal(store_dep_set_progress(f->s, "alice", "p", T0 + 180, 0), 0);
    assert_int_equal(fixture_sql_int(f->path,
                                     "SELECT count(*) FROM deployments WHERE project_id = 'p' "
                                     "AND next_run_at IS NULL AND last_fire_at IS NOT NULL"),
                     1);
    /* The other row is untouched. */
    assert_int_equal(store_dep_get(f->s, "alice", "q", &g), 0);
    assert_dep_equal(&g, &x);
    store_dep_clear(&g);

    assert_int_equal(store_dep_set_progress(f->s, "alice", "nope", T0, T0), RR_E_NOTFOUND);
    assert_int_equal(store_dep_set_progress(f->s, "bob", "p", T0, T0), RR_E_NOTFOUND);
    assert_int_equal(store_dep_set_progress(f->s, NULL, "p", T0, T0), RR_E_NOTFOUND);
}

/* ================================================================ narrow writes */

static void test_dep_set_errored(void **state)
{
    struct fixture *f = *state;
    struct store_dep d = fixture_dep("alice", "p", "{\"v\":1}");
    d.last_fire_at = T0 + 60;
    assert_int_equal(store_dep_insert(f->s, &d, 0), 0);
    struct store_dep o = fixture_dep("alice", "q", "{}");
    assert_int_equal(store_dep_insert(f->s, &o, 0), 0);

    /* state, error, next_run_at and updated_at change; the rest is kept */
    assert_int_equal(store_dep_set_errored(f->s, "alice", "p", "owner key k_1 was revoked",
                                           T0 + 99),
                     0);
    struct store_dep want = d;
    want.state = STORE_ERRORED;
    want.error = (char *)"owner key k_1 was revoked";
    want.next_run_at = 0;
    want.updated_at = T0 + 99;
    struct store_dep g;
    assert_int_equal(store_dep_get(f->s, "alice", "p", &g), 0);
    assert_dep_equal(&g, &want);
    store_dep_clear(&g);
    assert_int_equal(fixture_sql_int(f->path, "SELECT count(*) FROM deployments WHERE "
                                              "project_id = 'p' AND next_run_at IS NULL"),
                     1);
    assert_int_equal(store_dep_get(f->s, "alice", "q", &g), 0);
    assert_dep_equal(&g, &o); /* only that row */
    store_dep_clear(&g);

    /* Again: the latest reason; a paused one errors too; no reason is NULL. */
    assert_int_equal(store_dep_set_errored(f->s, "alice", "p", "second reason", T0 + 100), 0);
    want.error = (char *)"second reason";
    want.updated_at = T0 + 100;
    assert_int_equal(store_dep_get(f->s, "alice", "p", &g), 0);
    assert_dep_equal(&g, &want);
    store_dep_clear(&g);
    o.state = STORE_PAUSED;
    o.next_run_at = 0;
    assert_int_equal(store_dep_update(f->s, &o), 0);
    assert_int_equal(store_dep_set_errored(f->s, "alice", "q", NULL, T0 + 5), 0);
    assert_int_equal(store_dep_get(f->s, "alice", "q", &g), 0);
    assert_int_equal(g.state, STORE_ERRORED);
    assert_null(g.error);
    store_dep_clear(&g);

    assert_int_equal(store_dep_set_errored(f->s, "alice", "nope", "x", T0), RR_E_NOTFOUND);
    assert_int_equal(store_dep_set_errored(f->s, "bob", "p", "x", T0), RR_E_NOTFOUND);
    assert_int_equal(store_dep_set_errored(f->s, NULL, "p", "x", T0), RR_E_NOTFOUND);
    assert_int_equal(store_dep_set_errored(f->s, "alice", NULL, "x", T0), RR_E_NOTFOUND);
}

static void test_dep_change(void **state)
{
    struct fixture *f = *state;
    struct store_dep d = fixture_dep("alice", "p", "{\"v\":1}");
    d.last_fire_at = T0 + 60;
    assert_int_equal(store_dep_insert(f->s, &d, 0), 0);

    /* Pause, pipeline and schedule kept. */
    struct store_dep_change c = {.state = STORE_PAUSED, .updated_at = T0 + 10};
    assert_int_equal(store_dep_change(f->s, "alice", "p", &c), 0);
    struct store_dep want = d;
    want.state = STORE_PAUSED;
    want.updated_at = T0 + 10;
    want.next_run_at = 0;
    struct store_dep g;
    assert_int_equal(store_dep_get(f->s, "alice", "p", &g), 0);
    assert_dep_equal(&g, &want);
    store_dep_clear(&g);
    assert_int_equal(fixture_sql_int(f->path, "SELECT count(*) FROM deployments WHERE "
                                              "next_run_at IS NULL AND last_fire_at IS NOT NULL"),
                     1);

    /* Everything it can change at once. */
    c = (struct store_dep_change){.pipeline = "{\"v\":2}", .schedule = "0 3 * * *",
                                  .state = STORE_ACTIVE, .updated_at = T0 + 20,
                                  .next_run_at = T0 + 10800};
    assert_int_equal(store_dep_change(f->s, "alice", "p", &c), 0);
    want.pipeline = (char *)"{\"v\":2}";
    want.schedule = (char *)"0 3 * * *";
    want.state = STORE_ACTIVE;
    want.updated_at = T0 + 20;
    want.next_run_at = T0 + 10800;
    assert_int_equal(store_dep_get(f->s, "alice", "p", &g), 0);
    assert_dep_equal(&g, &want);
    store_dep_clear(&g);

    /* An errored deployment keeps its error through a change. */
    assert_int_equal(store_dep_set_errored(f->s, "alice", "p", "revoked", T0 + 30), 0);
    c = (struct store_dep_change){.schedule = "*/10 * * * *", .state = STORE_ERRORED,
                                  .updated_at = T0 + 40};
    assert_int_equal(store_dep_change(f->s, "alice", "p", &c), 0);
    want.schedule = (char *)"*/10 * * * *";
    want.state = STORE_ERRORED;
    want.error = (char *)"revoked";
    want.updated_at = T0 + 40;
    want.next_run_at = 0;
    assert_int_equal(store_dep_get(f->s, "alice", "p", &g), 0);
    assert_dep_equal(&g, &want);
    store_dep_clear(&g);

    /* Refused: programmer errors before SQL, then unknown deployments. */
    assert_int_equal(store_dep_change(f->s, "alice", "p", NULL), RR_E_INVAL);
    c.state = (enum store_state)7;
    assert_int_equal(store_dep_change(f->s, "alice", "p", &c), RR_E_INVAL);
    c.state = STORE_ACTIVE;
    assert_int_equal(store_dep_change(f->s, "alice", "nope", &c), RR_E_NOTFOUND);
    assert_int_equal(store_dep_change(f->s, "bob", "p", &c), RR_E_NOTFOUND);
    assert_int_equal(store_dep_change(f->s, NULL, "p", &c), RR_E_NOTFOUND);
    assert_int_equal(store_dep_get(f->s, "alice", "p", &g), 0);
    assert_dep_equal(&g, &want);
    store_dep_clear(&g);
}

/* Inside a batch, read or write, they join it as every write call does. */
static void test_dep_narrow_writes_batch(void **state)
{
    struct fixture *f = *state;
    fixture_add_dep(f->s, "alice", "p");
    fixture_add_dep(f->s, "alice", "q");

    assert_int_equal(store_batch_begin(f->s), 0);
    assert_int_equal(store_dep_set_errored(f->s, "alice", "p", "revoked", T0 + 1), 0);
    struct store_dep_change c = {.state = STORE_PAUSED, .updated_at = T0 + 2};
    assert_int_equal(store_dep_change(f->s, "alice", "q", &c), 0);
    assert_int_equal(store_dep_change(f->s, "alice", "nope", &c), RR_E_NOTFOUND);
    struct store_dep g; /* the batch reads its own writes; nobody else does */
    assert_int_equal(store_dep_get(f->s, "alice", "q", &g), 0);
    assert_int_equal(g.state, STORE_PAUSED);
    store_dep_clear(&g);
    assert_int_equal(fixture_sql_int(f->path, "SELECT count(*) FROM deployments WHERE "
                                              "state = 'active'"),
                     2);
    assert_int_equal(store_batch_commit(f->s), 0);
    assert_int_equal(fixture_sql_int(f->path, "SELECT count(*) FROM deployments WHERE "
                                              "(project_id = 'p' AND state = 'errored' AND "
                                              "error = 'revoked') OR (project_id = 'q' AND "
                                              "state = 'paused')"),
                     2);

    /* A read batch: after store_batch_write, and straight away. */
    assert_int_equal(store_batch_begin_read(f->s), 0);
    assert_int_equal(store_dep_get(f->s, "alice", "q", &g), 0);
    store_dep_clear(&g);
    assert_int_equal(store_batch_write(f->s), 0);
    c = (struct store_dep_change){.state = STORE_ACTIVE, .updated_at = T0 + 3,
                                  .next_run_at = T0 + 300};
    assert_int_equal(store_dep_change(f->s, "alice", "q", &c), 0);
    assert_int_equal(store_batch_commit(f->s), 0);
    assert_int_equal(store_batch_begin_read(f->s), 0);
    assert_int_equal(store_dep_get(f->s, "alice", "q", &g), 0);
    store_dep_clear(&g);
    assert_int_equal(store_dep_set_errored(f->s, "alice", "q", "later", T0 + 4), 0);
    assert_int_equal(fixture_sql_int(f->path, "SELECT count(*) FROM deployments WHERE "
                                              "project_id = 'q' AND state = 'active'"),
                     1);
    assert_int_equal(store_batch_commit(f->s), 0);
    assert_int_equal(fixture_sql_int(f->path, "SELECT count(*) FROM deployments WHERE "
                                              "project_id = 'q' AND error = 'later'"),
                     1);
}

/* ================================================================ credentials */

/* The credential store_dep_pipeline reads for (user, project_id): NULL when
 * none. Owned: free(). */
static unsigned char *pipeline_credential(struct store *s, const char *user,
                                          const char *project_id, size_t *n)
{
    char *pipeline = NULL;
    unsigned char *c = (unsigned char *)"unset";
    *n = 99;
    assert_int_equal(store_dep_pipeline(s, user, project_id, &pipeline, &c, n), 0);
    assert_non_null(pipeline);
    free(pipeline);
    if (!c)
        assert_int_equal(*n, 0);
    return c;
}

static int no_credential_cb(const struct store_dep *d, void *ud)
{
    (void)ud;
    assert_null(d->credential);
    assert_int_equal(d->credential_len, 0);
    return 0;
}

static void test_dep_credential(void **state)
{
    struct fixture *f = *state;
    /* Any bytes: a sealed credential holds NULs and high bytes. */
    static const unsigned char cred[] = {0x00, 0xff, 0x10, 0x00, 'x', 0x80, 0x7f};
    struct store_dep d = fixture_dep("alice", "p", "{\"v\":1}");
    d.credential = (unsigned char *)cred;
    d.credential_len = sizeof cred;
    assert_int_equal(store_dep_insert(f->s, &d, 0), 0);
    fixture_add_dep(f->s, "alice", "none");

    /* One statement reads the pipeline and the credential. */
    char *pipeline = NULL;
    unsigned char *c = NULL;
    size_t n = 0;
    assert_int_equal(store_dep_pipeline(f->s, "alice", "p", &pipeline, &c, &n), 0);
    assert_string_equal(pipeline, "{\"v\":1}");
    assert_int_equal(n, sizeof cred);
    assert_memory_equal(c, cred, sizeof cred);
    free(pipeline);
    free(c);
    pipeline = NULL; /* the credential may be skipped */
    assert_int_equal(store_dep_pipeline(f->s, "alice", "p", &pipeline, NULL, NULL), 0);
    assert_string_equal(pipeline, "{\"v\":1}");
    free(pipeline);
    assert_null(pipeline_credential(f->s, "alice", "none", &n)); /* NULL stays NULL */
    assert_int_equal(fixture_sql_int(f->path, "SELECT count(*) FROM deployments "
                                              "WHERE credential IS NULL"),
                     1);
    c = (unsigned char *)"unset";
    assert_int_equal(store_dep_pipeline(f->s, "alice", "nope", &pipeline, &c, &n),
                     RR_E_NOTFOUND);

    /* No other read returns it. */
    struct store_dep g;
    assert_int_equal(store_dep_get(f->s, "alice", "p", &g), 0);
    assert_null(g.credential);
    assert_int_equal(g.credential_len, 0);
    store_dep_clear(&g);
    assert_int_equal(store_dep_list(f->s, "alice", no_credential_cb, NULL), 0);
    assert_int_equal(store_dep_list(f->s, NULL, no_credential_cb, NULL), 0);
    assert_int_equal(store_dep_list_by_key(f->s, "k_0000000000000000", no_credential_cb, NULL),
                     0);

    /* A change without set_credential keeps it, and so does an update. */
    struct store_dep_change ch = {.pipeline = "{\"v\":2}", .state = STORE_ACTIVE,
                                  .updated_at = T0 + 1, .next_run_at = T0 + 300};
    assert_int_equal(store_dep_change(f->s, "alice", "p", &ch), 0);
    assert_int_equal(store_dep_get(f->s, "alice", "p", &g), 0);
    g.updated_at = T0 + 2;
    assert_int_equal(store_dep_update(f->s, &g), 0);
    store_dep_clear(&g);
    c = pipeline_credential(f->s, "alice", "p", &n);
    assert_int_equal(n, sizeof cred);
    assert_memory_equal(c, cred, sizeof cred);
    free(c);

    /* set_credential replaces it ... */
    static const unsigned char other[] = "another sealed credential";
    ch = (struct store_dep_change){.state = STORE_ACTIVE, .updated_at = T0 + 3,
                                   .set_credential = true, .credential = other,
                                   .credential_len = sizeof other};
    assert_int_equal(store_dep_change(f->s, "alice", "p", &ch), 0);
    c = pipeline_credential(f->s, "alice", "p", &n);
    assert_int_equal(n, sizeof other);
    assert_memory_equal(c, other, sizeof other);
    free(c);
    ch.updated_at = T0 + 4; /* ... on a deployment that had none too */
    assert_int_equal(store_dep_change(f->s, "alice", "none", &ch), 0);
    c = pipeline_credential(f->s, "alice", "none", &n);
    assert_int_equal(n, sizeof other);
    free(c);

    /* ... and with NULL clears it. */
    ch = (struct store_dep_change){.state = STORE_PAUSED, .updated_at = T0 + 5,
                                   .set_credential = true};
    assert_int_equal(store_dep_change(f->s, "alice", "p", &ch), 0);
    assert_null(pipeline_credential(f->s, "alice", "p", &n));
    assert_int_equal(fixture_sql_int(f->path, "SELECT count(*) FROM deployments "
                                              "WHERE project_id = 'p' AND credential IS NULL "
                                              "AND state = 'paused'"),
                     1);
    assert_int_equal(store_dep_change(f->s, "alice", "nope", &ch), RR_E_NOTFOUND);
}

/* Does the file at path hold the n bytes p? false when there is no file. */
static bool file_holds(const char *path, const void *p, size_t n)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return false;
    struct stat sb;
    assert_int_equal(fstat(fileno(fp), &sb), 0);
    char *buf = malloc((size_t)sb.st_size + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)sb.st_size, fp), (size_t)sb.st_size);
    fclose(fp);
    bool found = memmem(buf, (size_t)sb.st_size, p, n) != NULL;
    free(buf);
    return found;
}

/* Does the database (its file or its WAL) hold the n bytes p? */
static bool db_holds(const struct fixture *f, const void *p, size_t n)
{
    char wal[sizeof f->path + 8];
    snprintf(wal, sizeof wal, "%s-wal", f->path);
    return file_holds(f->path, p, n) || file_holds(wal, p, n);
}

/* A credential sealed with the vault is stored sealed: its plain text is
 * nowhere in the database's files, before or after the WAL is checkpointed
 * into the database at close, while the sealed bytes are (so the search
 * does look in the right place). */
static void test_dep_credential_sealed_at_rest(void **state)
{
    struct fixture *f = *state;
    static const char plain[] = "rr-secret-key-123456";
    char secret[sizeof f->dir + 16];
    snprintf(secret, sizeof secret, "%s/secret", f->dir);
    struct vault *v = NULL;
    assert_int_equal(vault_open(secret, &v, NULL), 0);
    unsigned char *sealed = NULL;
    size_t n = 0;
    assert_int_equal(vault_seal(v, "alice", "p", plain, strlen(plain), &sealed, &n), 0);
    struct store_dep d = fixture_dep("alice", "p", "{}");
    d.credential = sealed;
    d.credential_len = n;
    assert_int_equal(store_dep_insert(f->s, &d, 0), 0);

    assert_true(db_holds(f, sealed, n));
    assert_false(db_holds(f, plain, strlen(plain)));
    store_close(f->s);
    f->s = NULL;
    assert_true(file_holds(f->path, sealed, n));
    assert_false(db_holds(f, plain, strlen(plain)));

    /* What the store gives back opens with the vault. */
    f->s = fixture_open(f->path);
    unsigned char *c = pipeline_credential(f->s, "alice", "p", &n);
    char *text = NULL;
    assert_int_equal(vault_unseal(v, "alice", "p", c, n, &text), 0);
    assert_string_equal(text, plain);
    vault_text_free(text);
    free(c);
    free(sealed);
    vault_free(v);
}

#ifdef RRDEPLOY_TEST_HOOKS
/* A batch that does not commit (the test hook fails it as a full disk would)
 * leaves no trace of them. */
static void test_dep_narrow_writes_rolled_back(void **state)
{
    struct fixture *f = *state;
    struct store_dep d = fixture_dep("alice", "p", "{}");
    assert_int_equal(store_dep_insert(f->s, &d, 0), 0);
    for (int read = 0; read < 2; read++) {
        assert_int_equal(read ? store_batch_begin_read(f->s) : store_batch_begin(f->s), 0);
        assert_int_equal(store_batch_write(f->s), 0);
        struct store_dep_change c = {.pipeline = "{\"v\":9}", .schedule = "manual",
                                     .state = STORE_PAUSED, .updated_at = T0 + 1};
        assert_int_equal(store_dep_change(f->s, "alice", "p", &c), 0);
        assert_int_equal(store_dep_set_errored(f->s, "alice", "p", "lost", T0 + 2), 0);
        store_test_fail_commits(f->s, 1);
        assert_int_equal(store_batch_commit(f->s), RR_E_IO);
        assert_true(sqlite3_get_autocommit(store__db(f->s)) != 0);
        struct store_dep g;
        assert_int_equal(store_dep_get(f->s, "alice", "p", &g), 0);
        assert_dep_equal(&g, &d);
        assert_null(g.error);
        store_dep_clear(&g);
    }
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        FIXTURE_TEST(test_dep_insert_get),
        FIXTURE_TEST(test_dep_duplicate),
        FIXTURE_TEST(test_dep_limit),
        FIXTURE_TEST(test_dep_update_delete),
        FIXTURE_TEST(test_dep_list_order_isolation),
        FIXTURE_TEST(test_dep_list_reentrant),
        FIXTURE_TEST(test_dep_unicode_big),
        FIXTURE_TEST(test_dep_list_by_key),
        FIXTURE_TEST(test_state_names),
        FIXTURE_TEST(test_racing_inserts),
        FIXTURE_TEST(test_dep_progress),
        FIXTURE_TEST(test_dep_set_errored),
        FIXTURE_TEST(test_dep_change),
        FIXTURE_TEST(test_dep_credential),
        FIXTURE_TEST(test_dep_credential_sealed_at_rest),
        FIXTURE_TEST(test_dep_narrow_writes_batch),
#ifdef RRDEPLOY_TEST_HOOKS
        FIXTURE_TEST(test_dep_narrow_writes_rolled_back),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
