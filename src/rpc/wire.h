/* wire: what server.c and client.c share inside the rpc layer (not a public header):
 * per-call arenas, protobuf-c <-> grpc_byte_buffer, channel arguments from rpc_settings,
 * credentials from rpc_tls. Owns nothing beyond what each function returns. */
#ifndef OPS_RPC_WIRE_H
#define OPS_RPC_WIRE_H

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

#include "rpc/settings.h"

/* A bump allocator: everything of one call, freed at once. */
typedef struct wire_arena wire_arena;
wire_arena *wire_arena_new(void);
/* The same with a first block of `first` bytes (later blocks are 8 KiB): a call that lives long
 * and allocates little (a server stream's request) should not hold 4 KiB for its life. */
wire_arena *wire_arena_new_sized(size_t first);
void wire_arena_free(wire_arena *a);
void *wire_arena_alloc(wire_arena *a, size_t n); /* zeroed, 16-aligned; aborts on OOM */
ProtobufCAllocator wire_arena_allocator(wire_arena *a);

/* Decodes bb into a message allocated with alloc (NULL = malloc). Returns 0, or -1 when the
 * bytes are not a valid message of that type. */
int wire_decode(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *d,
                ProtobufCAllocator *alloc, ProtobufCMessage **out);
/* Encodes m into a new byte buffer (the caller's, grpc_byte_buffer_destroy). */
grpc_byte_buffer *wire_encode(const ProtobufCMessage *m);

/* Channel arguments for a server or a client; the struct owns the strings it points to. */
typedef struct wire_args {
    grpc_arg args[20];
    grpc_channel_args ca;
} wire_args;
void wire_args_build(wire_args *w, const rpc_settings *s, int is_server, const char *service_config,
                     const char *ssl_target_override);

grpc_server_credentials *wire_server_creds(const rpc_tls *t, char *err, size_t errlen);
grpc_channel_credentials *wire_channel_creds(const rpc_tls *t, char *err, size_t errlen);

/* Server TLS material that can be replaced while serving: the paths, the PEM texts last
 * accepted and a generation. Each listening port gets credentials whose certificate-config
 * fetcher hands the core a new config when the generation moved on, so new handshakes use
 * the new files and established connections keep theirs. */
typedef struct wire_tls_src wire_tls_src;
/* Loads and checks the files (dates, key matching the certificate). NULL with err naming the
 * file (and the dates) otherwise. name is the server's, for log lines. */
wire_tls_src *wire_tls_src_new(const rpc_tls *t, const char *name, char *err, size_t errlen);
/* Credentials for one more listening port (the caller's: grpc_server_credentials_release).
 * At most 16 per source. */
grpc_server_credentials *wire_tls_src_creds(wire_tls_src *src, char *err, size_t errlen);
/* Re-reads the files: force, or only when an mtime or size changed. 1 new material accepted,
 * 0 unchanged, -1 refused (logged; the previous material stays in use). */
int wire_tls_src_reload(wire_tls_src *src, int force);
/* After grpc_server_destroy: no handshake uses it any more. NULL is ignored. */
void wire_tls_src_free(wire_tls_src *src);

/* Checks a PEM certificate chain's first certificate against the clock and, when key_pem is
 * given, that the key belongs to it. 0, or -1 with err "FILE: certificate expired on ...". */
int wire_check_cert(const char *cert_pem, const char *key_pem, const char *file, char *err, size_t errlen);

/* Reads a whole file into a NUL-terminated heap string. Returns 0 or -1 with err. */
int wire_read_file(const char *path, char **out, char *err, size_t errlen);

#endif
