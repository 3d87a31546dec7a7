/* vault.c -- the server secret and the sealing of credentials with it.
 *
 * Purpose: keep a deployment owner's credential in the database without the
 * database being enough to read it. The key lives in a file of its own
 * (util/vault.h says what is accepted); a stolen database, or a backup of
 * it, holds only sealed bytes.
 *
 * Design:
 *  - Opening reads the secret file and refuses anything that is not a
 *    private regular file of exactly 32 bytes, naming the reason (never the
 *    bytes). O_NOFOLLOW refuses a symbolic link, O_NONBLOCK keeps a FIFO
 *    planted at the path from hanging the open until fstat refuses it.
 *  - An absent file is created: 32 bytes from randombytes_buf are written to
 *    a fresh temporary file (mode 0600) in the same directory, fsynced, and
 *    link()ed to the path, which fails with EEXIST if it exists; then the
 *    directory is fsynced. Because the file appears under its name complete
 *    or not at all, another process opening at the same moment never reads
 *    a short file, and a crash mid-write leaves no truncated secret behind
 *    (at worst a stray temporary file). Whoever loses the race reads the
 *    winner's file, as every opener does after creating.
 *  - The key is kept in memory from sodium_malloc (guard pages, mlock'd as
 *    far as the limits allow, wiped by sodium_free), made read-only once
 *    loaded. Unsealed texts get the same kind of memory.
 *  - A sealed text is nonce (24 random bytes) || ciphertext || tag of
 *    crypto_aead_xchacha20poly1305_ietf, with "user\0project_id" as
 *    associated data: a random 192-bit nonce never repeats in practice, and
 *    the associated data ties the text to the row it belongs to.
 *  - Texts are C strings: a text holding a NUL byte is refused both ways.
 *
 * Thread: vault_open on any thread; afterwards the vault is read-only and
 * any thread may seal and unseal with it at the same time. */
#include "util/vault.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define KEY_BYTES crypto_aead_xchacha20poly1305_ietf_KEYBYTES
#define NONCE_BYTES crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define TAG_BYTES crypto_aead_xchacha20poly1305_ietf_ABYTES

_Static_assert(KEY_BYTES == 32, "the secret file holds a 32-byte key");

struct vault {
    unsigned char key[KEY_BYTES];
};

/* Memory for secrets: out of memory aborts, as xmalloc does. */
static void *guarded_alloc(size_t n)
{
    void *p = sodium_malloc(n);
    if (!p) {
        log_error("out of memory (%zu bytes of guarded memory)", n);
        abort();
    }
    return p;
}

/* ================================================================ the secret */

/* Read the 32-byte secret at path into key. RR_E_NOTFOUND (internal only)
 * when there is no file; RR_E_INVAL when the file is refused; RR_E_IO. */
static int secret_read(const char *path, unsigned char *key, struct err *e)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return RR_E_NOTFOUND;
        if (errno == ELOOP)
            return err_set(e, RR_E_INVAL,
                           "secret file %s is a symbolic link; give the path of the "
                           "file itself", path);
        return err_set(e, RR_E_IO, "cannot open secret file %s: %s", path, strerror(errno));
    }
    struct stat sb;
    int rc = 0;
    if (fstat(fd, &sb) != 0)
        rc = err_set(e, RR_E_IO, "cannot stat secret file %s: %s", path, strerror(errno));
    else if (!S_ISREG(sb.st_mode))
        rc = err_set(e, RR_E_INVAL, "secret file %s is not a regular file", path);
    else if (sb.st_mode & 077)
        rc = err_set(e, RR_E_INVAL,
                     "secret file %s can be read or written by group or others "
                     "(mode %03o): run `chmod 600 %s`",
                     path, (unsigned)(sb.st_mode & 0777), path);
    else if (sb.st_size != KEY_BYTES)
        rc = err_set(e, RR_E_INVAL, "secret file %s has %lld bytes; a secret is exactly %d",
                     path, (long long)sb.st_size, KEY_BYTES);
    size_t got = 0;
    while (rc == 0 && got < KEY_BYTES) {
        ssize_t n = read(fd, key + got, KEY_BYTES - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            rc = err_set(e, RR_E_IO, "cannot read secret file %s: %s", path,
                         n < 0 ? strerror(errno) : "it became shorter");
        else
            got += (size_t)n;
    }
    close(fd);
    return rc;
}

static int write_all(int fd, const unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* fsync the directory holding path, so that a name created or removed in
 * it survives a crash. */
static int dir_sync(const char *path, struct err *e)
{
    const char *slash = strrchr(path, '/');
    char *dir = !slash ? xstrdup(".") : xstrndup(path, slash == path ? 1 : (size_t)(slash - path));
    int rc = 0;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0)
        rc = err_set(e, RR_E_IO, "cannot sync directory %s: %s", dir, strerror(errno));
    if (fd >= 0)
        close(fd);
    free(dir);
    return rc;
}

/* Write the fresh secret in key to a temporary file next to path and link
 * it into place. 0 also when another process linked its own first (then
 * that one is the secret). */
static int secret_create(const char *path, const unsigned char *key, struct err *e)
{
    static const char suffix[] = ".new-XXXXXX";
    size_t n = strlen(path);
    char *tmp = xmalloc(n + sizeof suffix);
    memcpy(tmp, path, n);
    memcpy(tmp + n, suffix, sizeof suffix);
    int rc = 0;
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        rc = err_set(e, RR_E_IO, "cannot create secret file %s: %s", path, strerror(errno));
        free(tmp);
        return rc;
    }
    /* Explicit, whatever the umask. */
    if (fchmod(fd, 0600) != 0 || write_all(fd, key, KEY_BYTES) != 0 || fsync(fd) != 0)
        rc = err_set(e, RR_E_IO, "cannot write secret file %s: %s", tmp, strerror(errno));
    if (close(fd) != 0 && rc == 0)
        rc = err_set(e, RR_E_IO, "cannot write secret file %s: %s", tmp, strerror(errno));
    bool linked = false;
    if (rc == 0) {
        if (link(tmp, path) == 0)
            linked = true;
        else if (errno != EEXIST)
            rc = err_set(e, RR_E_IO, "cannot create secret file %s: %s", path,
                         strerror(errno));
    }
    unlink(tmp);
    free(tmp);
    if (rc == 0 && (rc = dir_sync(path, e)) == 0 && linked)
        log_info("vault: created the secret file %s", path);
    return rc;
}

int vault_open(const char *path, struct vault **out, struct err *e)
{
    if (!path || !path[0] || !out)
        return err_set(e, RR_E_INVAL, "vault: no secret file given");
    if (sodium_init() < 0)
        return err_set(e, RR_E_IO, "libsodium failed to initialise");
    struct vault *v = guarded_alloc(sizeof *v);
    int rc = secret_read(path, v->key, e);
    if (rc == RR_E_NOTFOUND) {
        randombytes_buf(v->key, sizeof v->key);
        if ((rc = secret_create(path, v->key, e)) == 0)
            rc = secret_read(path, v->key, e); /* ours, or the race winner's */
        if (rc == RR_E_NOTFOUND)
            rc = err_set(e, RR_E_IO, "secret file %s was removed while it was created", path);
    }
    if (rc) {
        sodium_free(v);
        return rc;
    }
    (void)sodium_mprotect_readonly(v); /* hardening only; reads work either way */
    *out = v;
    return 0;
}

void vault_free(struct vault *v)
{
    sodium_free(v); /* NULL is fine; wipes, and undoes the read-only mode */
}

/* ================================================================ sealing */

/* The associated data of (user, project_id): user, a 0 byte, project_id. A
 * user name holds no NUL, so no two pairs give the same bytes. Free with
 * free(). */
static unsigned char *ad_make(const char *user, const char *project_id, size_t *n /* OUT */)
{
    size_t un = strlen(user), pn = strlen(project_id);
    unsigned char *ad = xmalloc(un + 1 + pn);
    memcpy(ad, user, un);
    ad[un] = 0;
    memcpy(ad + un + 1, project_id, pn);
    *n = un + 1 + pn;
    return ad;
}

int vault_seal(const struct vault *v, const char *user, const char *project_id,
               const void *pt, size_t n, unsigned char **out, size_t *outn)
{
    if (!v || !user || !project_id || (!pt && n) || !out || !outn ||
        n > crypto_aead_xchacha20poly1305_ietf_MESSAGEBYTES_MAX ||
        n > SIZE_MAX - NONCE_BYTES - TAG_BYTES || (n && memchr(pt, 0, n)))
        return RR_E_INVAL;
    unsigned char *c = xmalloc(NONCE_BYTES + n + TAG_BYTES);
    randombytes_buf(c, NONCE_BYTES);
    size_t adn;
    unsigned char *ad = ad_make(user, project_id, &adn);
    unsigned long long cn = 0;
    crypto_aead_xchacha20poly1305_ietf_encrypt(c + NONCE_BYTES, &cn, pt, n, ad, adn, NULL, c,
                                               v->key);
    free(ad);
    *out = c;
    *outn = NONCE_BYTES + (size_t)cn;
    return 0;
}

int vault_unseal(const struct vault *v, const char *user, const char *project_id,
                 const unsigned char *c, size_t n, char **out)
{
    if (!v || !user || !project_id || !c || !out || n < NONCE_BYTES + TAG_BYTES)
        return RR_E_INVAL;
    char *pt = guarded_alloc(n - NONCE_BYTES - TAG_BYTES + 1);
    size_t adn;
    unsigned char *ad = ad_make(user, project_id, &adn);
    unsigned long long got = 0;
    int rc = crypto_aead_xchacha20poly1305_ietf_decrypt((unsigned char *)pt, &got, NULL,
                                                        c + NONCE_BYTES, n - NONCE_BYTES, ad,
                                                        adn, c, v->key);
    free(ad);
    if (rc != 0 || memchr(pt, 0, (size_t)got)) {
        sodium_free(pt);
        return RR_E_INVAL;
    }
    pt[got] = '\0';
    *out = pt;
    return 0;
}

void vault_text_free(char *s)
{
    sodium_free(s); /* NULL is fine; wipes */
}
