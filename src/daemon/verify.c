/* verify: fetch, SHA-256, Ed25519 (OpenSSL EVP_DigestVerify with no digest: Ed25519 hashes the
 * message itself, so the signature covers the package bytes, not their digest). */
#include "daemon/verify.h"

#include <curl/curl.h>
#include <errno.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct vfy_key {
    EVP_PKEY *pkey;
};

vfy_key *vfy_key_from_pem(const char *pem, size_t len, char *err, size_t errlen)
{
    if (len > (1u << 20)) {
        snprintf(err, errlen, "public key: too large");
        return NULL;
    }
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    if (!b) {
        snprintf(err, errlen, "public key: out of memory");
        return NULL;
    }
    EVP_PKEY *pk = PEM_read_bio_PUBKEY(b, NULL, NULL, NULL);
    BIO_free(b);
    if (!pk) {
        snprintf(err, errlen, "public key: not a PEM public key");
        return NULL;
    }
    if (EVP_PKEY_id(pk) != EVP_PKEY_ED25519) {
        EVP_PKEY_free(pk);
        snprintf(err, errlen, "public key: not an Ed25519 key");
        return NULL;
    }
    vfy_key *k = calloc(1, sizeof *k);
    if (!k) {
        EVP_PKEY_free(pk);
        snprintf(err, errlen, "public key: out of memory");
        return NULL;
    }
    k->pkey = pk;
    return k;
}

/* Reads a whole regular file, at most max bytes. */
static int read_file(const char *path, size_t max, uint8_t **out, size_t *n, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(f);
        snprintf(err, errlen, "%s: not a regular file", path);
        return -1;
    }
    if ((uint64_t)sb.st_size > max) {
        fclose(f);
        snprintf(err, errlen, "%s: larger than %zu bytes", path, max);
        return -1;
    }
    uint8_t *buf = malloc((size_t)sb.st_size + 1);
    if (!buf) {
        fclose(f);
        snprintf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    size_t got = fread(buf, 1, (size_t)sb.st_size, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || got != (size_t)sb.st_size) {
        free(buf);
        snprintf(err, errlen, "%s: read failed", path);
        return -1;
    }
    *out = buf;
    *n = got;
    return 0;
}

vfy_key *vfy_key_load(const char *pem_path, char *err, size_t errlen)
{
    uint8_t *pem;
    size_t n;
    if (!pem_path || !*pem_path) {
        snprintf(err, errlen, "no public key configured (updates.public_key)");
        return NULL;
    }
    if (read_file(pem_path, 1u << 20, &pem, &n, err, errlen) < 0) return NULL;
    char sub[256];
    vfy_key *k = vfy_key_from_pem((const char *)pem, n, sub, sizeof sub);
    free(pem);
    if (!k) snprintf(err, errlen, "%s: %s", pem_path, sub);
    return k;
}

void vfy_key_free(vfy_key *k)
{
    if (!k) return;
    EVP_PKEY_free(k->pkey);
    free(k);
}

int vfy_sha256_hex(const uint8_t *data, size_t n, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_Digest(data, n, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32) return -1;
    for (unsigned i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", md[i]);
    return 0;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

vfy_result vfy_check(const vfy_key *k, const uint8_t *data, size_t n, const char *hash_hex,
                     const uint8_t *sig, size_t siglen, char *err, size_t errlen)
{
    if (!k) {
        snprintf(err, errlen, "no public key configured (updates.public_key): refusing every package");
        return VFY_ERROR;
    }
    if (!hash_hex || strlen(hash_hex) != 64) {
        snprintf(err, errlen, "hash_sha256: expected 64 hex digits");
        return VFY_BAD_HASH;
    }
    for (size_t i = 0; i < 64; i++) {
        if (hexval((unsigned char)hash_hex[i]) < 0) {
            snprintf(err, errlen, "hash_sha256: expected 64 hex digits");
            return VFY_BAD_HASH;
        }
    }
    char got[65];
    if (vfy_sha256_hex(data ? data : (const uint8_t *)"", n, got) < 0) {
        snprintf(err, errlen, "sha256: digest failed");
        return VFY_ERROR;
    }
    for (size_t i = 0; i < 64; i++) {
        if (hexval((unsigned char)hash_hex[i]) != hexval((unsigned char)got[i])) {
            snprintf(err, errlen, "hash_sha256 mismatch: package has %s", got);
            return VFY_BAD_HASH;
        }
    }
    if (!sig || siglen != 64) {
        snprintf(err, errlen, "signature: expected 64 bytes of Ed25519, got %zu", sig ? siglen : 0);
        return VFY_BAD_SIGNATURE;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx) {
        snprintf(err, errlen, "signature: out of memory");
        return VFY_ERROR;
    }
    int ok = EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, k->pkey) == 1 &&
             EVP_DigestVerify(ctx, sig, siglen, data ? data : (const uint8_t *)"", n) == 1;
    EVP_MD_CTX_free(ctx);
    if (!ok) {
        snprintf(err, errlen, "signature does not verify with the configured public key");
        return VFY_BAD_SIGNATURE;
    }
    return VFY_OK;
}

static int b64val(int c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

int vfy_decode_signature(const char *text, uint8_t out[64])
{
    if (!text) return -1;
    size_t len = strlen(text);
    if (len == 128) {
        int all_hex = 1;
        for (size_t i = 0; i < 128 && all_hex; i++) all_hex = hexval((unsigned char)text[i]) >= 0;
        if (all_hex) {
            for (size_t i = 0; i < 64; i++)
                out[i] = (uint8_t)(hexval((unsigned char)text[2 * i]) << 4 | hexval((unsigned char)text[2 * i + 1]));
            return 0;
        }
    }
    /* 64 bytes = 86 base64 characters plus "==" */
    if (len != 88 || text[86] != '=' || text[87] != '=') return -1;
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < 86; i++) {
        int v = b64val((unsigned char)text[i]);
        if (v < 0) return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o < 64) out[o++] = (uint8_t)(acc >> bits);
        }
    }
    return o == 64 ? 0 : -1;
}

typedef struct dl {
    uint8_t *p;
    size_t n, cap;
    int too_big;
} dl;

static size_t dl_write(char *ptr, size_t size, size_t nmemb, void *user)
{
    dl *d = user;
    size_t len = size * nmemb;
    if (d->n + len > VFY_MAX_PACKAGE) {
        d->too_big = 1;
        return 0;
    }
    if (d->n + len > d->cap) {
        size_t nc = d->cap ? d->cap : 65536;
        while (nc < d->n + len) nc *= 2;
        uint8_t *np = realloc(d->p, nc);
        if (!np) return 0;
        d->p = np;
        d->cap = nc;
    }
    memcpy(d->p + d->n, ptr, len);
    d->n += len;
    return len;
}

static int http_fetch(const char *url, int64_t timeout_ms, uint8_t **out, size_t *n, char *err, size_t errlen)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(err, errlen, "%s: libcurl failed to initialise", url);
        return -1;
    }
    CURL *c = curl_easy_init();
    if (!c) {
        snprintf(err, errlen, "%s: libcurl failed to initialise", url);
        return -1;
    }
    dl d = {0};
    char ebuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)(timeout_ms > 0 ? timeout_ms : 300000));
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 30000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, dl_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &d);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, ebuf);
    CURLcode rc = curl_easy_perform(c);
    curl_easy_cleanup(c);
    if (rc != CURLE_OK) {
        free(d.p);
        if (d.too_big) snprintf(err, errlen, "%s: larger than %u bytes", url, VFY_MAX_PACKAGE);
        else snprintf(err, errlen, "%s: %s", url, ebuf[0] ? ebuf : curl_easy_strerror(rc));
        return -1;
    }
    if (!d.p) d.p = malloc(1);
    if (!d.p) {
        snprintf(err, errlen, "%s: out of memory", url);
        return -1;
    }
    *out = d.p;
    *n = d.n;
    return 0;
}

int vfy_fetch(const char *url, const uint8_t *inline_data, size_t inline_len, int64_t timeout_ms,
              uint8_t **out, size_t *n, char *err, size_t errlen)
{
    *out = NULL;
    *n = 0;
    if (!url || !*url) {
        if (!inline_len) {
            snprintf(err, errlen, "no package: download_url is empty and no bytes came inline");
            return -1;
        }
        if (inline_len > VFY_MAX_PACKAGE) {
            snprintf(err, errlen, "inline package larger than %u bytes", VFY_MAX_PACKAGE);
            return -1;
        }
        uint8_t *p = malloc(inline_len);
        if (!p) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        memcpy(p, inline_data, inline_len);
        *out = p;
        *n = inline_len;
        return 0;
    }
    if (!strncmp(url, "file://", 7)) {
        const char *path = url + 7;
        if (*path != '/') {
            snprintf(err, errlen, "download_url %s: a file URL needs an absolute path", url);
            return -1;
        }
        return read_file(path, VFY_MAX_PACKAGE, out, n, err, errlen);
    }
    if (!strncmp(url, "http://", 7) || !strncmp(url, "https://", 8))
        return http_fetch(url, timeout_ms, out, n, err, errlen);
    snprintf(err, errlen, "download_url %s: expected http://, https:// or file://", url);
    return -1;
}
