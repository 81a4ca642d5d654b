/* libFuzzer: the package verifier. Input = 1 byte selecting the digest (the package's own, or 64
 * bytes of the input as text), 64 bytes of signature, the rest the package. Whatever the input,
 * vfy_check never crashes, and it accepts only when the signature really verifies with the
 * fixed key (which random input cannot produce: an acceptance is a bug). Also fuzzes the
 * signature text decoder and PEM key parsing. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/verify.h"

/* A fixed Ed25519 public key (its private half is not kept anywhere). */
static const char pem[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MCowBQYDK2VwAyEAUZmt4XXL5i66mvUwA4YuHAj0PIuMJvlBPEyecX4iKF0=\n"
    "-----END PUBLIC KEY-----\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static vfy_key *key;
    char err[512];
    if (!key && !(key = vfy_key_from_pem(pem, sizeof pem - 1, err, sizeof err))) abort();
    if (size < 65) {
        vfy_key *k = vfy_key_from_pem((const char *)data, size, err, sizeof err);
        vfy_key_free(k);
        return 0;
    }
    const uint8_t *sig = data + 1, *pkg = data + 65;
    size_t n = size - 65;
    char hash[65];
    if (data[0] & 1) {
        if (vfy_sha256_hex(pkg, n, hash) != 0) abort();
    } else {
        size_t m = n < 64 ? n : 64;
        memcpy(hash, pkg, m);
        hash[m] = 0;
        if (memchr(hash, 0, m)) hash[0] = 0;
    }
    if (vfy_check(key, pkg, n, hash, sig, 64, err, sizeof err) == VFY_OK) abort();
    char text[200];
    size_t t = size - 1 < sizeof text - 1 ? size - 1 : sizeof text - 1;
    memcpy(text, data + 1, t);
    text[t] = 0;
    uint8_t out[64];
    (void)vfy_decode_signature(text, out);
    return 0;
}
