/* rpc settings: transport knobs (keepalive, message size, flow-control windows, compression)
 * and credentials (plaintext, TLS, mutual TLS). Defaults are CONTRACT.md's; config overrides.
 * Owns nothing: the strings are borrowed from the caller for the duration of the call that
 * takes them (files are read at channel/server creation; a server keeps copies of the paths
 * to reload them). Certificates outside their validity dates are refused. */
#ifndef OPS_RPC_SETTINGS_H
#define OPS_RPC_SETTINGS_H

#include <stdint.h>

typedef enum {
    RPC_PROFILE_SERVER,         /* manager/daemon server: 60 s / 20 s, min client ping 20 s */
    RPC_PROFILE_DAEMON_CLIENT,  /* daemon -> manager: 30 s / 10 s, pings without calls */
    RPC_PROFILE_MANAGER_CLIENT, /* manager -> daemon: 45 s / 15 s */
} rpc_profile;

typedef struct rpc_settings {
    int64_t keepalive_time_ms;
    int64_t keepalive_timeout_ms;
    int keepalive_without_calls;
    int64_t min_ping_interval_ms; /* server: pings closer than this are strikes */
    int max_message_bytes;        /* both directions */
    int window_bytes;             /* HTTP/2 stream and connection window */
    int gzip;                     /* compress what we send */
} rpc_settings;

void rpc_settings_defaults(rpc_settings *s, rpc_profile profile);

typedef struct rpc_tls {
    int enabled;
    const char *cert_file; /* PEM chain: the server's certificate, or the client's for mTLS */
    const char *key_file;
    const char *ca_file;   /* client: CA that signs the server; server: CA for client certs */
    int require_client_cert; /* server: mutual TLS */
    int request_client_cert; /* server: ask for a client certificate and verify it against
                              * ca_file when one is presented, but accept callers without */
    const char *server_name; /* client: override the name checked in the server certificate */
    int64_t reload_check_ms; /* server: how often new handshakes look at the files' mtimes
                              * (rotation without a signal); 0 = 60 s, < 0 = never */
} rpc_tls;

#endif
