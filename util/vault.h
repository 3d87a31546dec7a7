/* vault.h -- credentials at rest: sealed with a server secret that is not in
 * the database (docs/operations.md).
 *
 * The secret is 32 random bytes in a file of its own, created with mode 0600
 * on first use; a file that is readable by group or others, or is not
 * exactly 32 bytes, is refused with a message saying why. A credential is
 * sealed with XChaCha20-Poly1305 (libsodium's crypto_aead_xchacha20poly1305_ietf)
 * under a fresh random nonce, with the deployment's identity as associated
 * data, so a sealed credential copied onto another deployment's row does not
 * open. Plain text lives only in memory from sodium_malloc, wiped on free.
 * Thread: a vault never changes after vault_open; any thread may use it. */
#ifndef RR_UTIL_VAULT_H
#define RR_UTIL_VAULT_H

#include <stddef.h>

#include "util/util.h"

struct vault;

/* Open the secret at path, creating it when absent. 0 and *out, or
 * RR_E_IO / RR_E_INVAL with the reason in e (never the secret). */
int vault_open(const char *path, struct vault **out /* OUT */, struct err *e) MUST_CHECK;
void vault_free(struct vault *v); /* NULL is fine; wipes the secret */

/* Seal n bytes of pt for the deployment (user, project_id): *out is malloc'd
 * nonce || ciphertext || tag, *outn its length. 0 or RR_E_INVAL. */
int vault_seal(const struct vault *v, const char *user, const char *project_id,
               const void *pt, size_t n, unsigned char **out /* OUT */,
               size_t *outn /* OUT */) MUST_CHECK;

/* Open what vault_seal made for the same (user, project_id): *out is the
 * plain text, NUL-terminated, in guarded memory: free it with
 * vault_text_free. RR_E_INVAL when it does not open (another secret,
 * another deployment, or damaged). */
int vault_unseal(const struct vault *v, const char *user, const char *project_id,
                 const unsigned char *c, size_t n, char **out /* OUT */) MUST_CHECK;

/* Wipe and free a text from vault_unseal; NULL is fine. */
void vault_text_free(char *s);

#endif
