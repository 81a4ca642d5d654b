/* rpc server: the only server-side code that touches the gRPC C core.
 *
 * A server listens on one or more addresses and serves a table of methods. Each call is a
 * small state machine driven by a pool of worker threads draining one completion queue.
 * A handler sees a decoded protobuf-c request and fills a response; both live in a per-call
 * arena that the server frees when the call ends, so handlers never free what they build:
 * allocate response strings and arrays with rpc_ctx_alloc()/rpc_ctx_strdup().
 *
 * Owns: the grpc_server, its completion queue, the worker threads, every in-flight call.
 * Every server also serves grpc.health.v1.Health (Check and Watch). */
#ifndef OPS_RPC_SERVER_H
#define OPS_RPC_SERVER_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#include "rpc/settings.h"
#include "rpc/status.h"

typedef struct rpc_server rpc_server;
typedef struct rpc_ctx rpc_ctx;

/* Unary handler: fill *resp (already initialised as an empty message of the method's response
 * type). Return RPC_OK, or a code set with rpc_ctx_errorf(), or RPC_PENDING to answer later
 * from any thread with rpc_ctx_complete() (the worker is free meanwhile: this is how a
 * handler waits for a group commit without holding a thread). */
typedef int (*rpc_unary_fn)(rpc_ctx *ctx, const void *req, void *resp, void *user);
/* Server-streaming handler: send messages with rpc_ctx_send() and return the final status.
 * Runs on a thread of its own, so it may block (poll rpc_ctx_cancelled() while waiting).
 * With RPC_METHOD_ASYNC it runs on a worker instead and must not block: it returns a final
 * code, or RPC_PENDING to keep the stream open without holding any thread (see
 * rpc_ctx_push, rpc_ctx_on_end, rpc_ctx_complete). */
typedef int (*rpc_stream_fn)(rpc_ctx *ctx, const void *req, void *user);
/* Bidirectional-streaming handler: read the client's messages with rpc_ctx_recv(), write with
 * rpc_ctx_send(), return the final status. Runs on a thread of its own, like rpc_stream_fn. */
typedef int (*rpc_bidi_fn)(rpc_ctx *ctx, void *user);

/* Run the handler off the worker pool, on a thread of its own: for calls that may take long
 * (stopping an agent gracefully takes up to 30 s) so that they never starve other calls. */
#define RPC_METHOD_SLOW 1u

/* An asynchronous server stream: the handler runs on a worker and keeps the call open by
 * returning RPC_PENDING (the response headers are sent then, unless a message went already);
 * messages are then queued from any thread with rpc_ctx_push(). This is
 * how ten thousand idle subscriptions cost ten thousand small structs instead of threads. */
#define RPC_METHOD_ASYNC 2u

/* Returned by a unary or RPC_METHOD_ASYNC handler that will call rpc_ctx_complete() later. */
#define RPC_PENDING (-1)

typedef struct rpc_method {
    const char *path; /* "/manager.ManagerService/Heartbeat" */
    const ProtobufCMessageDescriptor *req;
    const ProtobufCMessageDescriptor *resp;
    rpc_unary_fn unary;   /* exactly one of unary and stream */
    rpc_stream_fn stream;
    void *user;
    unsigned flags;
} rpc_method;

/* A bidirectional-streaming method (a table of its own, so that rpc_method keeps its shape). */
typedef struct rpc_bidi_method {
    const char *path;
    const ProtobufCMessageDescriptor *req;  /* the client's messages */
    const ProtobufCMessageDescriptor *resp; /* the server's messages */
    rpc_bidi_fn bidi;
    void *user;
} rpc_bidi_method;

typedef struct rpc_server_opts {
    const char *name;           /* for log lines: "manager", "daemon" */
    const char *const *listen;  /* NULL-terminated "host:port" list; port 0 picks one */
    rpc_tls tls;
    rpc_settings settings;      /* rpc_settings_defaults(RPC_PROFILE_SERVER) if zeroed */
    int workers;                /* completion-queue threads; 0 = one per core, at least 2 */
    int max_streams;            /* concurrent streaming/slow handler threads; 0 = 1024 */
    /* Streams (of any kind) open at once on one client connection; more are refused with
     * RESOURCE_EXHAUSTED, logged once per connection per minute. 0 = 1000. */
    int max_streams_per_conn;
    int quiet_access_log;       /* access lines at debug level instead of info */
    /* Called once per finished call of any kind (a method we do not serve is "(unknown)"),
     * on a worker thread when the final status has gone out: it must be quick and not block.
     * method is the table's path, valid during the call only. NULL: no observer. */
    void (*observe)(void *user, const char *method, int code, int64_t duration_us);
    void *observe_user;
} rpc_server_opts;

/* Creates and binds. Returns NULL with err set ("listen 0.0.0.0:9090: address in use"...). */
rpc_server *rpc_server_new(const rpc_server_opts *opts, char *err, size_t errlen);
/* Adds methods (before rpc_server_start). The table must outlive the server. Returns 0/-1. */
int rpc_server_add_methods(rpc_server *s, const rpc_method *methods, size_t n, char *err,
                           size_t errlen);
/* Adds bidirectional-streaming methods (before rpc_server_start). Returns 0/-1. */
int rpc_server_add_bidi_methods(rpc_server *s, const rpc_bidi_method *methods, size_t n, char *err,
                                size_t errlen);
/* Starts serving. Returns 0, or -1 with err. */
int rpc_server_start(rpc_server *s, char *err, size_t errlen);
/* The port actually bound for the i-th listen address (useful with port 0); 0 if none. */
int rpc_server_port(const rpc_server *s, size_t i);
/* Health of a service name ("" is the whole server): 1 serving, 0 not serving. Watchers are
 * told at once. The server sets "" serving at start and not serving at shutdown. */
void rpc_server_set_health(rpc_server *s, const char *service, int serving);
/* Graceful: stop accepting, let in-flight calls finish within grace_ms, cancel the rest,
 * drain, join the workers. Idempotent. */
void rpc_server_shutdown(rpc_server *s, int64_t grace_ms);
/* Re-reads the TLS certificate, key and CA files now (SIGHUP). New connections get the new
 * ones, established connections keep theirs. 0 (reloaded, unchanged or no TLS), or -1 when the
 * new files were refused (expired, not yet valid, key not matching: logged with the file and
 * dates) and the old ones stay. Besides, new handshakes look at the files' mtimes every
 * tls.reload_check_ms (60 s) and reload by themselves. Thread-safe. */
int rpc_server_reload_tls(rpc_server *s);
/* Shuts down (grace 0) if needed, then frees. */
void rpc_server_free(rpc_server *s);

/* --- inside a handler ------------------------------------------------------------------- */
const char *rpc_ctx_method(const rpc_ctx *c);
const char *rpc_ctx_peer(const rpc_ctx *c);      /* "ipv4:127.0.0.1:5555" */
const char *rpc_ctx_trace_id(const rpc_ctx *c);  /* from x-trace-id, or made for this call */
/* This call's access line goes out at debug level: the handler logs the refusal itself, rate
 * limited (a flood must not also flood the log). */
void rpc_ctx_quiet_log(rpc_ctx *c);
/* Wall-clock deadline in ms since the epoch; INT64_MAX when the client set none. */
int64_t rpc_ctx_deadline_ms(const rpc_ctx *c);
/* Value of an incoming metadata key (lower case), or NULL. Arena-owned. */
const char *rpc_ctx_metadata(rpc_ctx *c, const char *key);
/* The verified client certificate's identity (first DNS SAN, else CN) under mutual TLS; NULL
 * otherwise. Arena-owned. */
const char *rpc_ctx_peer_identity(rpc_ctx *c);
void *rpc_ctx_alloc(rpc_ctx *c, size_t n);   /* zeroed; never NULL (aborts on OOM) */
char *rpc_ctx_strdup(rpc_ctx *c, const char *s);
char *rpc_ctx_sprintf(rpc_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Sets the status message; returns code so that handlers can `return rpc_ctx_errorf(...)`. */
int rpc_ctx_errorf(rpc_ctx *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Streams one message. Returns 0, or -1 when the client went away or the server is stopping
 * (the handler should then return). */
int rpc_ctx_send(rpc_ctx *c, const ProtobufCMessage *msg);
int rpc_ctx_cancelled(const rpc_ctx *c);
/* Bidi handlers: waits for the client's next message. Returns 0 with *msg (of type desc) valid
 * until the next rpc_ctx_recv() or the handler's return (each message has an arena of its own,
 * so a long stream does not grow the call's memory); 1 when the client closed its side (a
 * client that cancels can also look like this: the core may report the end before the cancel,
 * and the status sent then goes nowhere, which is harmless); -1
 * when the call is over (cancelled, server stopping, or a message that does not decode, which
 * ends the call with INVALID_ARGUMENT): the handler should then return. */
int rpc_ctx_recv(rpc_ctx *c, const ProtobufCMessageDescriptor *desc, ProtobufCMessage **msg);
/* The server the call came to (for services that describe the server, such as reflection). */
rpc_server *rpc_ctx_server(const rpc_ctx *c);
/* The i-th method path served (health included), or NULL past the end. Fixed once started. */
const char *rpc_server_method_path(const rpc_server *s, size_t i);
/* Finishes a call whose handler returned RPC_PENDING: sends the response filled so far (when
 * code is RPC_OK) or the error. Call it exactly once; ctx is gone afterwards (an async stream's
 * ctx stays valid until its on_end callback has returned; queued messages go out before the
 * status). An async stream completed with RPC_OK while the server stops ends UNAVAILABLE. */
void rpc_ctx_complete(rpc_ctx *c, int code);

/* --- asynchronous server streams (RPC_METHOD_ASYNC) ------------------------------------- */
/* Called exactly once per async stream whose handler set it, without any rpc lock held, at the
 * first of: the stream can no longer carry messages (client gone, a send failed, the server
 * stopping): the owner must then call rpc_ctx_complete() if it has not, from inside the
 * callback or later; or the final status of a completed stream has gone out. Either way the
 * owner may free its `user` state when the callback returns and rpc_ctx_complete() was called:
 * the rpc layer never uses it again. Set it inside the handler, before returning RPC_PENDING. */
typedef void (*rpc_end_fn)(rpc_ctx *c, void *user);
void rpc_ctx_on_end(rpc_ctx *c, rpc_end_fn fn, void *user);
/* Queues one message of an async stream (encoded now: msg may be freed on return), from any
 * thread; sends go out one at a time in push order. Returns the number of messages that were
 * already waiting (0: it went straight out; the caller can use this for backpressure), or -1
 * when the stream is over or completed (the message is dropped). */
int rpc_ctx_push(rpc_ctx *c, const ProtobufCMessage *msg);
/* Keeps an async stream's ctx allocated (not the call open) until rpc_ctx_release(): for a
 * thread that pushes without the owner's lock, racing with the stream's end (a push to a stream
 * that ended returns -1). The holder must not use it for anything but push, pending, release. */
void rpc_ctx_hold(rpc_ctx *c);
void rpc_ctx_release(rpc_ctx *c);
/* Messages of an async stream queued and not yet written (the one being written included), or
 * -1 when the stream is over or completed. */
int rpc_ctx_pending(rpc_ctx *c);

#endif
