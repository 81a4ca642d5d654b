/* wire: arenas, message encoding, channel arguments and credentials for the rpc layer. */
#include "rpc/wire.h"

#include <errno.h>
#include <grpc/byte_buffer_reader.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <sys/stat.h>
#include <time.h>
#include <grpc/compression.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/cfg.h"
#include "base/log.h"

/* ---- arena -------------------------------------------------------------------------------- */

struct chunk {
    struct chunk *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
};

struct wire_arena {
    struct chunk *head;
};

static struct chunk *chunk_new(size_t cap)
{
    struct chunk *c = malloc(sizeof *c + cap);
    if (!c) abort();
    c->next = NULL;
    c->used = 0;
    c->cap = cap;
    return c;
}

wire_arena *wire_arena_new_sized(size_t first)
{
    wire_arena *a = malloc(sizeof *a);
    if (!a) abort();
    a->head = chunk_new(first > sizeof(struct chunk) + 64 ? first - sizeof(struct chunk) : 64);
    return a;
}

wire_arena *wire_arena_new(void) { return wire_arena_new_sized(4096); }

void wire_arena_free(wire_arena *a)
{
    if (!a) return;
    for (struct chunk *c = a->head, *n; c; c = n) {
        n = c->next;
        free(c);
    }
    free(a);
}

void *wire_arena_alloc(wire_arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (n == 0) n = 16;
    struct chunk *c = a->head;
    if (c->used + n > c->cap) {
        size_t cap = n > 8192 ? n : 8192;
        struct chunk *nc = chunk_new(cap);
        /* A big one-off block goes behind the head so the head's free space stays usable. */
        if (n > 8192) {
            nc->next = c->next;
            c->next = nc;
            nc->used = n;
            memset(nc->data, 0, n);
            return nc->data;
        }
        nc->next = c;
        a->head = c = nc;
    }
    void *p = c->data + c->used;
    c->used += n;
    memset(p, 0, n);
    return p;
}

static void *arena_pb_alloc(void *ctx, size_t n) { return wire_arena_alloc(ctx, n); }
static void arena_pb_free(void *ctx, void *p) { (void)ctx; (void)p; }

ProtobufCAllocator wire_arena_allocator(wire_arena *a)
{
    ProtobufCAllocator al = {.alloc = arena_pb_alloc, .free = arena_pb_free, .allocator_data = a};
    return al;
}

/* ---- messages ----------------------------------------------------------------------------- */

int wire_decode(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *d,
                ProtobufCAllocator *alloc, ProtobufCMessage **out)
{
    *out = NULL;
    if (!bb) {
        /* An absent message decodes as the empty message only if the caller sent none at
         * all, which a unary client never does; treat it as malformed. */
        return -1;
    }
    grpc_byte_buffer_reader r;
    if (!grpc_byte_buffer_reader_init(&r, bb)) return -1; /* bad compression */
    grpc_slice s = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    *out = protobuf_c_message_unpack(d, alloc, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
    grpc_slice_unref(s);
    return *out ? 0 : -1;
}

grpc_byte_buffer *wire_encode(const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    grpc_slice s = grpc_slice_malloc(n);
    protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(s));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

/* ---- settings ----------------------------------------------------------------------------- */

void rpc_settings_defaults(rpc_settings *s, rpc_profile profile)
{
    memset(s, 0, sizeof *s);
    s->max_message_bytes = 10 << 20;
    s->window_bytes = 1 << 20;
    switch (profile) {
    case RPC_PROFILE_SERVER:
        s->keepalive_time_ms = 60000;
        s->keepalive_timeout_ms = 20000;
        s->min_ping_interval_ms = 20000;
        s->keepalive_without_calls = 1;
        break;
    case RPC_PROFILE_DAEMON_CLIENT:
        s->keepalive_time_ms = 30000;
        s->keepalive_timeout_ms = 10000;
        s->keepalive_without_calls = 1;
        break;
    case RPC_PROFILE_MANAGER_CLIENT:
        s->keepalive_time_ms = 45000;
        s->keepalive_timeout_ms = 15000;
        s->keepalive_without_calls = 0;
        break;
    }
}

static void arg_int(wire_args *w, const char *key, int v)
{
    grpc_arg *a = &w->args[w->ca.num_args++];
    a->type = GRPC_ARG_INTEGER;
    a->key = (char *)key;
    a->value.integer = v;
}

static void arg_str(wire_args *w, const char *key, const char *v)
{
    grpc_arg *a = &w->args[w->ca.num_args++];
    a->type = GRPC_ARG_STRING;
    a->key = (char *)key;
    a->value.string = (char *)v;
}

static int clamp_int(int64_t v) { return v > 0x7fffffff ? 0x7fffffff : (int)v; }

void wire_args_build(wire_args *w, const rpc_settings *s, int is_server, const char *service_config,
                     const char *ssl_target_override)
{
    memset(w, 0, sizeof *w);
    w->ca.args = w->args;
    /* channelz's per-call and per-message counters feed only the C++ channelz service, which
     * nothing here serves (0.4% of the manager's and 0.9% of the load generator's samples in a
     * publish to 20,000). */
    arg_int(w, GRPC_ARG_ENABLE_CHANNELZ, 0);
    if (s->max_message_bytes > 0) {
        arg_int(w, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, s->max_message_bytes);
        arg_int(w, GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, s->max_message_bytes);
    }
    if (s->window_bytes > 0) arg_int(w, GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, s->window_bytes);
    if (s->keepalive_time_ms > 0) {
        arg_int(w, GRPC_ARG_KEEPALIVE_TIME_MS, clamp_int(s->keepalive_time_ms));
        arg_int(w, GRPC_ARG_KEEPALIVE_TIMEOUT_MS, clamp_int(s->keepalive_timeout_ms));
        arg_int(w, GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, s->keepalive_without_calls ? 1 : 0);
        /* Without this the core sends at most two pings without data, and keepalive stops
         * protecting an idle connection through a NAT. */
        arg_int(w, GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
    }
    if (is_server && s->min_ping_interval_ms > 0) {
        arg_int(w, GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, clamp_int(s->min_ping_interval_ms));
        arg_int(w, GRPC_ARG_HTTP2_MAX_PING_STRIKES, 2);
    }
    if (s->gzip) arg_int(w, GRPC_COMPRESSION_CHANNEL_DEFAULT_ALGORITHM, GRPC_COMPRESS_GZIP);
    if (!is_server) {
        /* We retry ourselves (only idempotent calls, with our backoff); the core's transparent
         * retries would hide attempts from the access log. */
        arg_int(w, GRPC_ARG_ENABLE_RETRIES, 0);
        if (service_config) arg_str(w, GRPC_ARG_SERVICE_CONFIG, service_config);
        if (ssl_target_override) arg_str(w, GRPC_SSL_TARGET_NAME_OVERRIDE_ARG, ssl_target_override);
    }
}

/* ---- credentials -------------------------------------------------------------------------- */

int wire_read_file(const char *path, char **out, char *err, size_t errlen)
{
    return cfg_read_file(path, out, NULL, err, errlen);
}

grpc_server_credentials *wire_server_creds(const rpc_tls *t, char *err, size_t errlen)
{
    if (!t->enabled) return grpc_insecure_server_credentials_create();
    if (!t->cert_file || !t->key_file) {
        snprintf(err, errlen, "tls: cert_file and key_file are required");
        return NULL;
    }
    char *cert = NULL, *key = NULL, *ca = NULL;
    if (wire_read_file(t->cert_file, &cert, err, errlen) || wire_read_file(t->key_file, &key, err, errlen) ||
        (t->ca_file && *t->ca_file && wire_read_file(t->ca_file, &ca, err, errlen))) {
        free(cert); free(key); free(ca);
        return NULL;
    }
    if (t->require_client_cert && !ca) {
        free(cert); free(key);
        snprintf(err, errlen, "tls: require_client_cert needs ca_file");
        return NULL;
    }
    grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
    grpc_ssl_client_certificate_request_type req =
        t->require_client_cert ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                               : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE;
    grpc_server_credentials *c = grpc_ssl_server_credentials_create_ex(ca, &pair, 1, req, NULL);
    free(cert); free(key); free(ca);
    if (!c) snprintf(err, errlen, "tls: the certificate or key was rejected");
    return c;
}

grpc_channel_credentials *wire_channel_creds(const rpc_tls *t, char *err, size_t errlen)
{
    if (!t->enabled) return grpc_insecure_credentials_create();
    char *cert = NULL, *key = NULL, *ca = NULL;
    if ((t->ca_file && *t->ca_file && wire_read_file(t->ca_file, &ca, err, errlen)) ||
        (t->cert_file && *t->cert_file && wire_read_file(t->cert_file, &cert, err, errlen)) ||
        (t->key_file && *t->key_file && wire_read_file(t->key_file, &key, err, errlen))) {
        free(cert); free(key); free(ca);
        return NULL;
    }
    if ((cert == NULL) != (key == NULL)) {
        free(cert); free(key); free(ca);
        snprintf(err, errlen, "tls: cert_file and key_file go together");
        return NULL;
    }
    if (cert && wire_check_cert(cert, key, t->cert_file, err, errlen) != 0) {
        free(cert); free(key); free(ca);
        return NULL;
    }
    grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
    /* Without a CA file the core falls back to the system roots. */
    grpc_channel_credentials *c = grpc_ssl_credentials_create_ex(ca, cert ? &pair : NULL, NULL, NULL);
    free(cert); free(key); free(ca);
    if (!c) snprintf(err, errlen, "tls: credentials were rejected");
    return c;
}

/* ---- certificate checks and rotation ------------------------------------------------------ */

static void asn1_time_text(const ASN1_TIME *t, char *buf, size_t len)
{
    buf[0] = 0;
    BIO *b = BIO_new(BIO_s_mem());
    if (!b) return;
    if (ASN1_TIME_print(b, t) > 0) {
        int n = BIO_read(b, buf, (int)len - 1);
        buf[n > 0 ? n : 0] = 0;
    }
    BIO_free(b);
}

int wire_check_cert(const char *cert_pem, const char *key_pem, const char *file, char *err, size_t errlen)
{
    BIO *b = BIO_new_mem_buf(cert_pem, -1);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    if (!x) {
        snprintf(err, errlen, "%s: no PEM certificate in the file", file);
        return -1;
    }
    char nb[64], na[64];
    asn1_time_text(X509_get0_notBefore(x), nb, sizeof nb);
    asn1_time_text(X509_get0_notAfter(x), na, sizeof na);
    int rc = 0;
    if (X509_cmp_current_time(X509_get0_notBefore(x)) >= 0) {
        snprintf(err, errlen, "%s: certificate not valid yet: valid from %s until %s", file, nb, na);
        rc = -1;
    } else if (X509_cmp_current_time(X509_get0_notAfter(x)) <= 0) {
        snprintf(err, errlen, "%s: certificate expired on %s (valid from %s)", file, na, nb);
        rc = -1;
    } else if (key_pem) {
        BIO *kb = BIO_new_mem_buf(key_pem, -1);
        EVP_PKEY *k = kb ? PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL) : NULL;
        BIO_free(kb);
        if (!k) {
            snprintf(err, errlen, "%s: the key file holds no PEM private key", file);
            rc = -1;
        } else if (X509_check_private_key(x, k) != 1) {
            snprintf(err, errlen, "%s: the private key does not belong to this certificate", file);
            rc = -1;
        }
        EVP_PKEY_free(k);
    }
    ERR_clear_error();
    X509_free(x);
    return rc;
}

#define MAX_TLS_PORTS 16

struct tls_port {
    wire_tls_src *src;
    unsigned long gen_seen; /* what this port's credentials last handed to the core */
};

struct wire_tls_src {
    char name[32];
    char *cert_file, *key_file, *ca_file; /* ca_file may be NULL */
    grpc_ssl_client_certificate_request_type req;
    int64_t check_ms;
    pthread_mutex_t mu; /* everything below */
    char *cert, *key, *ca;
    unsigned long gen;
    struct stat st[3];
    int64_t last_check_ms;
    struct tls_port ports[MAX_TLS_PORTS];
    size_t n_ports;
};

static int64_t wire_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void stat_files(const wire_tls_src *s, struct stat st[3])
{
    const char *f[3] = {s->cert_file, s->key_file, s->ca_file};
    memset(st, 0, 3 * sizeof *st);
    for (int i = 0; i < 3; i++)
        if (f[i]) (void)stat(f[i], &st[i]);
}

static int same_stat(const struct stat *a, const struct stat *b)
{
    return a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
           a->st_size == b->st_size && a->st_ino == b->st_ino;
}

/* Reads and checks the three files; on success the texts are the caller's. */
static int load_material(const wire_tls_src *s, char **cert, char **key, char **ca, char *err, size_t errlen)
{
    *cert = *key = *ca = NULL;
    if (wire_read_file(s->cert_file, cert, err, errlen) || wire_read_file(s->key_file, key, err, errlen) ||
        (s->ca_file && wire_read_file(s->ca_file, ca, err, errlen)) ||
        wire_check_cert(*cert, *key, s->cert_file, err, errlen)) {
        free(*cert); free(*key); free(*ca);
        *cert = *key = *ca = NULL;
        return -1;
    }
    return 0;
}

wire_tls_src *wire_tls_src_new(const rpc_tls *t, const char *name, char *err, size_t errlen)
{
    if (!t->cert_file || !*t->cert_file || !t->key_file || !*t->key_file) {
        snprintf(err, errlen, "tls: cert_file and key_file are required");
        return NULL;
    }
    int have_ca = t->ca_file && *t->ca_file;
    if (t->require_client_cert && !have_ca) {
        snprintf(err, errlen, "tls: require_client_cert needs ca_file");
        return NULL;
    }
    wire_tls_src *s = calloc(1, sizeof *s);
    if (!s) abort();
    snprintf(s->name, sizeof s->name, "%s", name ? name : "server");
    s->cert_file = strdup(t->cert_file);
    s->key_file = strdup(t->key_file);
    s->ca_file = have_ca ? strdup(t->ca_file) : NULL;
    if (!s->cert_file || !s->key_file || (have_ca && !s->ca_file)) abort();
    s->req = t->require_client_cert ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
             : t->request_client_cert && have_ca ? GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY
                                                 : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE;
    s->check_ms = t->reload_check_ms == 0 ? 60000 : t->reload_check_ms;
    pthread_mutex_init(&s->mu, NULL);
    stat_files(s, s->st);
    if (load_material(s, &s->cert, &s->key, &s->ca, err, errlen) != 0) {
        wire_tls_src_free(s);
        return NULL;
    }
    s->gen = 1;
    s->last_check_ms = wire_mono_ms();
    return s;
}

int wire_tls_src_reload(wire_tls_src *s, int force)
{
    struct stat now[3];
    stat_files(s, now);
    pthread_mutex_lock(&s->mu);
    s->last_check_ms = wire_mono_ms();
    int changed = 0;
    for (int i = 0; i < 3; i++) changed |= !same_stat(&now[i], &s->st[i]);
    /* Remembered even when refused: a bad file is reported once, not at every check, and a
     * fixed one (new mtime) is tried again. */
    memcpy(s->st, now, sizeof now);
    pthread_mutex_unlock(&s->mu);
    if (!force && !changed) return 0;
    char err[512], *cert, *key, *ca;
    if (load_material(s, &cert, &key, &ca, err, sizeof err) != 0) {
        char q[600];
        log_error("rpc.tls_reload_refused", "server=%s cert_file=%s error=%s (the certificate in use stays)", s->name,
                  s->cert_file, log_quote(q, sizeof q, err));
        return -1;
    }
    pthread_mutex_lock(&s->mu);
    int same = !strcmp(cert, s->cert) && !strcmp(key, s->key) && !strcmp(ca ? ca : "", s->ca ? s->ca : "");
    if (!same) {
        free(s->cert); free(s->key); free(s->ca);
        s->cert = cert; s->key = key; s->ca = ca;
        s->gen++;
    }
    pthread_mutex_unlock(&s->mu);
    if (same) {
        free(cert); free(key); free(ca);
        return 0;
    }
    log_info("rpc.tls_reloaded", "server=%s cert_file=%s msg=\"new connections use the new certificate\"", s->name, s->cert_file);
    return 1;
}

/* Called by the core at each new handshake (and when the port is set up). */
static grpc_ssl_certificate_config_reload_status fetch_config(void *user, grpc_ssl_server_certificate_config **out)
{
    struct tls_port *p = user;
    wire_tls_src *s = p->src;
    pthread_mutex_lock(&s->mu);
    int due = s->check_ms > 0 && wire_mono_ms() - s->last_check_ms >= s->check_ms;
    pthread_mutex_unlock(&s->mu);
    if (due) (void)wire_tls_src_reload(s, 0);
    pthread_mutex_lock(&s->mu);
    if (p->gen_seen == s->gen) {
        pthread_mutex_unlock(&s->mu);
        return GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_UNCHANGED;
    }
    grpc_ssl_pem_key_cert_pair pair = {.private_key = s->key, .cert_chain = s->cert};
    /* The core insists on roots even when it asks for no client certificate; ours then go
     * unused, so our own chain stands in. */
    *out = grpc_ssl_server_certificate_config_create(s->ca ? s->ca : s->cert, &pair, 1);
    p->gen_seen = s->gen;
    pthread_mutex_unlock(&s->mu);
    return *out ? GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_NEW : GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_FAIL;
}

grpc_server_credentials *wire_tls_src_creds(wire_tls_src *s, char *err, size_t errlen)
{
    pthread_mutex_lock(&s->mu);
    if (s->n_ports == MAX_TLS_PORTS) {
        pthread_mutex_unlock(&s->mu);
        snprintf(err, errlen, "tls: at most %d listening ports", MAX_TLS_PORTS);
        return NULL;
    }
    struct tls_port *p = &s->ports[s->n_ports++];
    p->src = s;
    p->gen_seen = 0;
    pthread_mutex_unlock(&s->mu);
    grpc_ssl_server_credentials_options *o =
        grpc_ssl_server_credentials_create_options_using_config_fetcher(s->req, fetch_config, p);
    grpc_server_credentials *c = o ? grpc_ssl_server_credentials_create_with_options(o) : NULL;
    if (!c) snprintf(err, errlen, "tls: the certificate or key was rejected");
    return c;
}

void wire_tls_src_free(wire_tls_src *s)
{
    if (!s) return;
    free(s->cert_file); free(s->key_file); free(s->ca_file);
    free(s->cert); free(s->key); free(s->ca);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
