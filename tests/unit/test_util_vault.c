/* test_util_vault.c -- unit tests for util/vault.c: the secret file (created
 * on first use, refused when unsafe or malformed, shared by processes that
 * open it at once) and sealing (round trips, the deployment's identity as
 * associated data, damage, another secret, fresh nonces).
 *
 * Design: every test works in a fresh temporary directory (the fixture's,
 * whose database is not used); the sealed format is checked from outside by
 * sealing with libsodium and the secret file's own bytes.
 *
 * Thread: the test's, and in test_open_race a few threads opening at once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/unit/fixture.h"
#include "util/vault.h"

#define TEXT "rr-secret-key-123456"

static void path_in(const struct fixture *f, const char *name, char *out, size_t n)
{
    snprintf(out, n, "%s/%s", f->dir, name);
}

static struct vault *open_ok(const char *path)
{
    struct err e = {0};
    struct vault *v = NULL;
    int rc = vault_open(path, &v, &e);
    if (rc)
        fail_msg("vault_open %s: %d %s", path, rc, e.msg);
    assert_non_null(v);
    return v;
}

/* vault_open must refuse path with code, its message holding `says`. */
static void open_refused(const char *path, int code, const char *says)
{
    struct err e = {0};
    struct vault *v = NULL;
    assert_int_equal(vault_open(path, &v, &e), code);
    assert_null(v);
    if (!strstr(e.msg, says))
        fail_msg("message '%s' does not say '%s'", e.msg, says);
    assert_non_null(strstr(e.msg, path));
}

static void write_file(const char *path, const void *p, size_t n, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, p, n), (ssize_t)n);
    assert_int_equal(fchmod(fd, mode), 0);
    assert_int_equal(close(fd), 0);
}

static void read_secret(const char *path, unsigned char key[32])
{
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(read(fd, key, 32), 32);
    close(fd);
}

static void seal_ok(const struct vault *v, const char *user, const char *project_id,
                    const char *text, unsigned char **c, size_t *n)
{
    assert_int_equal(vault_seal(v, user, project_id, text, strlen(text), c, n), 0);
    assert_int_equal(*n, 24 + strlen(text) + 16);
}

/* ================================================================ the secret */

static void test_create_on_first_use(void **state)
{
    struct fixture *f = *state;
    char path[200];
    path_in(f, "secret", path, sizeof path);
    mode_t old = umask(0); /* the file is private whatever the umask */
    struct vault *v = open_ok(path);
    umask(old);
    struct stat sb;
    assert_int_equal(lstat(path, &sb), 0);
    assert_true(S_ISREG(sb.st_mode));
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_int_equal(sb.st_size, 32);

    /* No temporary file is left beside it. */
    DIR *d = opendir(f->dir);
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strncmp(de->d_name, "secret", 6) == 0)
            assert_string_equal(de->d_name, "secret");
    closedir(d);

    /* Opened again, it is the same secret: what one seals the other opens. */
    unsigned char *c = NULL;
    size_t n = 0;
    seal_ok(v, "alice", "p", TEXT, &c, &n);
    struct vault *w = open_ok(path);
    char *pt = NULL;
    assert_int_equal(vault_unseal(w, "alice", "p", c, n, &pt), 0);
    assert_string_equal(pt, TEXT);
    vault_text_free(pt);
    free(c);
    vault_free(v);
    vault_free(w);
    vault_free(NULL);
    vault_text_free(NULL);
}

static void test_group_readable_refused(void **state)
{
    struct fixture *f = *state;
    char path[200];
    path_in(f, "secret", path, sizeof path);
    vault_free(open_ok(path));
    assert_int_equal(chmod(path, 0640), 0);
    open_refused(path, RR_E_INVAL, "chmod 600");
    assert_int_equal(chmod(path, 0602), 0);
    open_refused(path, RR_E_INVAL, "chmod 600");
    assert_int_equal(chmod(path, 0400), 0); /* read-only for the owner is fine */
    vault_free(open_ok(path));
}

static void test_wrong_size_refused(void **state)
{
    struct fixture *f = *state;
    char path[200];
    path_in(f, "secret", path, sizeof path);
    unsigned char bytes[64] = {1, 2, 3};
    write_file(path, bytes, 31, 0600);
    open_refused(path, RR_E_INVAL, "31 bytes");
    write_file(path, bytes, 33, 0600);
    open_refused(path, RR_E_INVAL, "33 bytes");
    write_file(path, bytes, 0, 0600); /* an empty file is not created over */
    open_refused(path, RR_E_INVAL, "0 bytes");
    write_file(path, bytes, 32, 0600);
    vault_free(open_ok(path));
}

static void test_not_a_file_refused(void **state)
{
    struct fixture *f = *state;
    char real[200], link[200], dangling[200], gone[200], dir[200];
    path_in(f, "real", real, sizeof real);
    path_in(f, "link", link, sizeof link);
    path_in(f, "dangling", dangling, sizeof dangling);
    path_in(f, "gone", gone, sizeof gone);
    path_in(f, "dir", dir, sizeof dir);
    vault_free(open_ok(real));
    assert_int_equal(symlink(real, link), 0);
    open_refused(link, RR_E_INVAL, "symbolic link");
    /* A link to nowhere is not followed to create its target. */
    assert_int_equal(symlink(gone, dangling), 0);
    open_refused(dangling, RR_E_INVAL, "symbolic link");
    assert_int_equal(access(gone, F_OK), -1);
    assert_int_equal(mkdir(dir, 0700), 0);
    open_refused(dir, RR_E_INVAL, "not a regular file");
    rmdir(dir);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    struct err e = {0};
    struct vault *v = NULL;
    assert_int_equal(vault_open(NULL, &v, &e), RR_E_INVAL);
    assert_int_equal(vault_open("", &v, NULL), RR_E_INVAL);
    assert_int_equal(vault_open("/nonexistent-dir-rr/secret", &v, &e), RR_E_IO);
    assert_null(v);
    assert_non_null(strstr(e.msg, "/nonexistent-dir-rr/secret"));
}

struct racer {
    const char *path;
    struct vault *v;
    int rc;
};

static void *race_open(void *arg)
{
    struct racer *r = arg;
    r->rc = vault_open(r->path, &r->v, NULL);
    return NULL;
}

/* Openers racing to create the file all end up with the same secret. */
static void test_open_race(void **state)
{
    struct fixture *f = *state;
    enum { ROUNDS = 20, RACERS = 4 };
    for (int round = 0; round < ROUNDS; round++) {
        char path[200];
        snprintf(path, sizeof path, "%s/secret%d", f->dir, round);
        struct racer r[RACERS];
        pthread_t t[RACERS];
        for (int i = 0; i < RACERS; i++) {
            r[i] = (struct racer){.path = path};
            assert_int_equal(pthread_create(&t[i], NULL, race_open, &r[i]), 0);
        }
        for (int i = 0; i < RACERS; i++)
            assert_int_equal(pthread_join(t[i], NULL), 0);
        unsigned char *c = NULL;
        size_t n = 0;
        assert_int_equal(r[0].rc, 0);
        seal_ok(r[0].v, "alice", "p", TEXT, &c, &n);
        for (int i = 0; i < RACERS; i++) {
            assert_int_equal(r[i].rc, 0);
            char *pt = NULL;
            assert_int_equal(vault_unseal(r[i].v, "alice", "p", c, n, &pt), 0);
            assert_string_equal(pt, TEXT);
            vault_text_free(pt);
            vault_free(r[i].v);
        }
        free(c);
    }
}

/* ================================================================ sealing */

static void test_round_trip(void **state)
{
    struct fixture *f = *state;
    char path[200];
    path_in(f, "secret", path, sizeof path);
    struct vault *v = open_ok(path);
    unsigned char *c = NULL;
    size_t n = 0;
    seal_ok(v, "alice", "nightly", TEXT, &c, &n);
    assert_null(memmem(c, n, TEXT, strlen(TEXT)));
    char *pt = NULL;
    assert_int_equal(vault_unseal(v, "alice", "nightly", c, n, &pt), 0);
    assert_string_equal(pt, TEXT);
    vault_text_free(pt);
    free(c);

    /* The empty text, and one with a NUL refused. */
    assert_int_equal(vault_seal(v, "alice", "nightly", "", 0, &c, &n), 0);
    assert_int_equal(n, 40);
    assert_int_equal(vault_unseal(v, "alice", "nightly", c, n, &pt), 0);
    assert_string_equal(pt, "");
    vault_text_free(pt);
    free(c);
    c = NULL;
    assert_int_equal(vault_seal(v, "alice", "nightly", "a\0b", 3, &c, &n), RR_E_INVAL);
    assert_null(c);
    assert_int_equal(vault_seal(v, NULL, "nightly", "a", 1, &c, &n), RR_E_INVAL);
    assert_int_equal(vault_seal(v, "alice", NULL, "a", 1, &c, &n), RR_E_INVAL);
    assert_int_equal(vault_seal(v, "alice", "nightly", NULL, 1, &c, &n), RR_E_INVAL);
    vault_free(v);
}

/* The sealed format, from outside: nonce || ciphertext || tag under the
 * file's key with "user\0project_id" as associated data. A text holding a
 * NUL, which vault_seal refuses, is refused by vault_unseal too. */
static void test_format(void **state)
{
    struct fixture *f = *state;
    char path[200];
    path_in(f, "secret", path, sizeof path);
    struct vault *v = open_ok(path);
    unsigned char key[32];
    read_secret(path, key);
    static const unsigned char ad[] = "alice\0p"; /* 7 bytes */
    unsigned char c[24 + 3 + 16];
    randombytes_buf(c, 24);
    unsigned long long cn = 0;
    crypto_aead_xchacha20poly1305_ietf_encrypt(c + 24, &cn, (const unsigned char *)"abc", 3,
                                               ad, 7, NULL, c, key);
    char *pt = NULL;
    assert_int_equal(vault_unseal(v, "alice", "p", c, sizeof c, &pt), 0);
    assert_string_equal(pt, "abc");
    vault_text_free(pt);
    crypto_aead_xchacha20poly1305_ietf_encrypt(c + 24, &cn, (const unsigned char *)"a\0c", 3,
                                               ad, 7, NULL, c, key);
    pt = NULL;
    assert_int_equal(vault_unseal(v, "alice", "p", c, sizeof c, &pt), RR_E_INVAL);
    assert_null(pt);
    sodium_memzero(key, sizeof key);
    vault_free(v);
}

static void test_other_deployment_refused(void **state)
{
    struct fixture *f = *state;
    char path[200];
    path_in(f, "secret", path, sizeof path);
    struct vault *v = open_ok(path);
    unsigned char *c = NULL;
    size_t n = 0;
    seal_ok(v, "ab", "c", TEXT, &c, &n);
    char *pt = NULL;
    assert_int_equal(vault_unseal(v, "bob", "c", c, n, &pt), RR_E_INVAL);
    assert_int_equal(vault_unseal(v, "ab", "d", c, n, &pt), RR_E_INVAL);
    assert_int_equal(vault_unseal(v, "a", "bc", c, n, &pt), RR_E_INVAL); /* same bytes joined */
    assert_null(pt);
    assert_int_equal(vault_unseal(v, "ab", "c", c, n, &pt), 0);
    vault_text_free(pt);
    free(c);
    vault_free(v);
}

static void test_damage_refused(void **state)
{
    struct fixture *f = *state;
    char path[200];
    path_in(f, "secret", path, sizeof path);
    struct vault *v = open_ok(path);
    unsigned char *c = NULL;
    size_t n = 0;
    seal_ok(v, "alice", "p", TEXT, &c, &n);
    char *pt = NULL;
    for (size_t i = 0; i < n; i++) { /* nonce, ciphertext and tag alike */
        c[i] ^= 0x01;
        if (vault_unseal(v, "alice", "p", c, n, &pt) != RR_E_INVAL)
            fail_msg("a flipped bit at byte %zu was not noticed", i);
        c[i] ^= 0x01;
    }
    assert_int_equal(vault_unseal(v, "alice", "p", c, n - 1, &pt), RR_E_INVAL);
    assert_int_equal(vault_unseal(v, "alice", "p", c, 39, &pt), RR_E_INVAL);
    assert_int_equal(vault_unseal(v, "alice", "p", c, 0, &pt), RR_E_INVAL);
    assert_int_equal(vault_unseal(v, "alice", "p", NULL, n, &pt), RR_E_INVAL);
    assert_null(pt);
    assert_int_equal(vault_unseal(v, "alice", "p", c, n, &pt), 0);
    vault_text_free(pt);
    free(c);
    vault_free(v);
}

static void test_other_secret_refused(void **state)
{
    struct fixture *f = *state;
    char a[200], b[200];
    path_in(f, "a", a, sizeof a);
    path_in(f, "b", b, sizeof b);
    struct vault *v = open_ok(a), *w = open_ok(b);
    unsigned char *c = NULL;
    size_t n = 0;
    seal_ok(v, "alice", "p", TEXT, &c, &n);
    char *pt = NULL;
    assert_int_equal(vault_unseal(w, "alice", "p", c, n, &pt), RR_E_INVAL);
    assert_null(pt);
    free(c);
    vault_free(v);
    vault_free(w);
}

static void test_fresh_nonce(void **state)
{
    struct fixture *f = *state;
    char path[200];
    path_in(f, "secret", path, sizeof path);
    struct vault *v = open_ok(path);
    unsigned char *c1 = NULL, *c2 = NULL;
    size_t n1 = 0, n2 = 0;
    seal_ok(v, "alice", "p", TEXT, &c1, &n1);
    seal_ok(v, "alice", "p", TEXT, &c2, &n2);
    assert_int_equal(n1, n2);
    assert_memory_not_equal(c1, c2, 24);        /* the nonces */
    assert_memory_not_equal(c1 + 24, c2 + 24, n1 - 24); /* and so the rest */
    char *pt = NULL;
    assert_int_equal(vault_unseal(v, "alice", "p", c2, n2, &pt), 0);
    assert_string_equal(pt, TEXT);
    vault_text_free(pt);
    free(c1);
    free(c2);
    vault_free(v);
}

int main(void)
{
    log_configure(LOG_WARN, LOG_FORMAT_TEXT);
    const struct CMUnitTest tests[] = {
        FIXTURE_TEST(test_create_on_first_use),
        FIXTURE_TEST(test_group_readable_refused),
        FIXTURE_TEST(test_wrong_size_refused),
        FIXTURE_TEST(test_not_a_file_refused),
        FIXTURE_TEST(test_bad_arguments),
        FIXTURE_TEST(test_open_race),
        FIXTURE_TEST(test_round_trip),
        FIXTURE_TEST(test_format),
        FIXTURE_TEST(test_other_deployment_refused),
        FIXTURE_TEST(test_damage_refused),
        FIXTURE_TEST(test_other_secret_refused),
        FIXTURE_TEST(test_fresh_nonce),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
