/* wire: arenas, message encoding, channel arguments and credentials for the rpc layer. */
#include "rpc/wire.h"

#include <errno.h>
#include <grpc/byte_buffer_reader.h>
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

wire_arena *wire_arena_new(void)
{
    wire_arena *a = malloc(sizeof *a);
    if (!a) abort();
    a->head = chunk_new(4096 - sizeof(struct chunk));
    return a;
}

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
    grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
    /* Without a CA file the core falls back to the system roots. */
    grpc_channel_credentials *c = grpc_ssl_credentials_create_ex(ca, cert ? &pair : NULL, NULL, NULL);
    free(cert); free(key); free(ca);
    if (!c) snprintf(err, errlen, "tls: credentials were rejected");
    return c;
}
