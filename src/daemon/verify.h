/* verify: the one gate every package passes before it is installed (pushed events and
 * DaemonService.PushUpdate alike): fetch the bytes (http(s) through libcurl, file://, or the
 * bytes carried inline), check their SHA-256 against the hex digest the manager sent, and check
 * the Ed25519 signature over the bytes against the public key configured in daemon.yaml.
 *
 * Owns: a loaded public key (vfy_key). Everything it returns belongs to the caller. No global
 * state; libcurl's global init happens once per process inside vfy_fetch (thread-safe since
 * libcurl 7.84). */
#ifndef OPS_DAEMON_VERIFY_H
#define OPS_DAEMON_VERIFY_H

#include <stddef.h>
#include <stdint.h>

/* Packages larger than this are refused while they are fetched. */
#define VFY_MAX_PACKAGE (256u << 20)

typedef enum { VFY_OK = 0, VFY_BAD_HASH, VFY_BAD_SIGNATURE, VFY_ERROR } vfy_result;

typedef struct vfy_key vfy_key;

/* Loads an Ed25519 public key from a PEM file ("-----BEGIN PUBLIC KEY-----"). NULL with err
 * when the file cannot be read or holds another kind of key. */
vfy_key *vfy_key_load(const char *pem_path, char *err, size_t errlen);
/* The same from PEM text in memory. */
vfy_key *vfy_key_from_pem(const char *pem, size_t len, char *err, size_t errlen);
void vfy_key_free(vfy_key *k);

/* Lower-case hex SHA-256 of data into out (65 bytes). 0 or -1. */
int vfy_sha256_hex(const uint8_t *data, size_t n, char out[65]);

/* Checks data against hash_hex (64 hex digits, either case) and sig (64 bytes of Ed25519).
 * VFY_BAD_HASH / VFY_BAD_SIGNATURE with err naming what did not match; VFY_ERROR when the
 * inputs are malformed (no key, a digest that is not 64 hex digits). */
vfy_result vfy_check(const vfy_key *k, const uint8_t *data, size_t n, const char *hash_hex,
                     const uint8_t *sig, size_t siglen, char *err, size_t errlen);

/* A signature sent as text (DaemonService.UpdateRequest.signature is a string): 128 hex digits
 * or standard base64 of the 64 bytes. 0 with out filled, -1 when it is neither. */
int vfy_decode_signature(const char *text, uint8_t out[64]);

/* The package bytes: inline when url is NULL or "" (a copy of inline_data), else read from a
 * file:// URL or downloaded from http(s)://. timeout_ms bounds a download (0 = 5 min). *out is
 * the caller's (free()). 0, or -1 with err. */
int vfy_fetch(const char *url, const uint8_t *inline_data, size_t inline_len, int64_t timeout_ms,
              uint8_t **out, size_t *n, char *err, size_t errlen);

#endif
