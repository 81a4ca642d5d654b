/* rpc client: channels and calls, the only client-side code that touches the gRPC C core.
 *
 * A channel targets "host:port", a comma-separated list of them (round-robin), or
 * "dns:///name:port" (round-robin over every address). Calls are blocking and thread-safe:
 * many threads may call on one channel at once.
 *
 * Owns: the grpc_channel. A unary call's decoded answer belongs to the caller, freed with
 * protobuf_c_message_free_unpacked(msg, NULL); a stream belongs to the caller until
 * rpc_stream_close(). */
#ifndef OPS_RPC_CLIENT_H
#define OPS_RPC_CLIENT_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#include "rpc/settings.h"
#include "rpc/status.h"

typedef struct rpc_channel rpc_channel;
typedef struct rpc_stream rpc_stream;

typedef struct rpc_client_opts {
    rpc_tls tls;
    rpc_settings settings; /* rpc_settings_defaults(RPC_PROFILE_DAEMON_CLIENT) if zeroed */
} rpc_client_opts;

/* The outcome of a call: the status code, its message, and the error kind of CONTRACT.md. */
typedef struct rpc_result {
    int code;
    rpc_error_kind kind;
    int attempts;
    char message[512];
} rpc_result;

typedef struct rpc_call_opts {
    int64_t timeout_ms;      /* per attempt; 0 = 30 s */
    int idempotent;          /* only then are failed attempts retried */
    int retry_on_deadline;   /* also retry DEADLINE_EXCEEDED (idempotent calls only) */
    int max_attempts;        /* 0 = 3; backoff 100 ms doubling to at most 1 s */
    const char *trace_id;    /* sent as x-trace-id; NULL = a new one */
    const char *const *metadata; /* extra key, value, key, value, ..., NULL */
} rpc_call_opts;

rpc_channel *rpc_channel_new(const char *target, const rpc_client_opts *opts, char *err,
                             size_t errlen);
void rpc_channel_free(rpc_channel *ch);
const char *rpc_channel_target(const rpc_channel *ch);
/* Forgets the channel's connection backoff so the next call tries to connect at once (our
 * callers run their own jittered backoff and should not also wait out the core's). */
void rpc_channel_reset_backoff(rpc_channel *ch);

/* Calls method ("/pkg.Service/Method") with req. On RPC_OK *resp is the decoded answer (the
 * caller's). Returns res->code. opts may be NULL. */
int rpc_call_unary(rpc_channel *ch, const char *method, const ProtobufCMessage *req,
                   const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                   const rpc_call_opts *opts, rpc_result *res);

/* Opens a server-streaming call (timeout_ms 0 = no deadline for streams). Returns 0, or -1
 * with res set. */
int rpc_stream_open(rpc_channel *ch, const char *method, const ProtobufCMessage *req,
                    const rpc_call_opts *opts, rpc_stream **out, rpc_result *res);
/* Next message: 1 with *msg (the caller's), 0 at the end of the stream with the final status
 * in res (res->code RPC_OK for a clean end). */
int rpc_stream_next(rpc_stream *st, const ProtobufCMessageDescriptor *desc, ProtobufCMessage **msg,
                    rpc_result *res);
/* Cancels the call if still open, and frees it. */
void rpc_stream_close(rpc_stream *st);
/* Cancels the call from any thread (a reader blocked in rpc_stream_next returns 0 with
 * CANCELLED); the stream must still be closed by its owner. */
void rpc_stream_cancel(rpc_stream *st);

/* Bidirectional streams reuse rpc_stream: open without a request, then alternate
 * rpc_stream_send() and rpc_stream_next() from one thread; rpc_stream_close_send() half-closes
 * (the server sees the end of the client stream). Open returns 0, or -1 with res set. */
int rpc_bidi_open(rpc_channel *ch, const char *method, const rpc_call_opts *opts, rpc_stream **out,
                  rpc_result *res);
/* Writes one message. Returns 0, or -1 when the call is over (rpc_stream_next() then reports
 * the status). */
int rpc_stream_send(rpc_stream *st, const ProtobufCMessage *msg);
int rpc_stream_close_send(rpc_stream *st);

/* ---- asynchronous unary calls ------------------------------------------------------------
 * For callers that keep many calls in flight (load generators, a manager fanning out to many
 * daemons): a loop owns a few completion-queue threads; each call's callback runs on one of
 * them when the call ends. No retries here: the callback decides. */
typedef struct rpc_loop rpc_loop;
/* resp is the caller's (NULL unless code is RPC_OK); res is valid during the callback only. */
typedef void (*rpc_unary_cb)(void *user, ProtobufCMessage *resp, const rpc_result *res);

rpc_loop *rpc_loop_new(int threads, char *err, size_t errlen);
/* Cancels the async streams still open, waits for every call in flight to end (their
 * callbacks run), then stops the threads. */
void rpc_loop_free(rpc_loop *l);
/* Starts the call; cb runs exactly once (also when the call cannot start). Returns 0. */
int rpc_call_unary_async(rpc_loop *l, rpc_channel *ch, const char *method, const ProtobufCMessage *req,
                         const ProtobufCMessageDescriptor *resp_desc, const rpc_call_opts *opts,
                         rpc_unary_cb cb, void *user);

/* ---- asynchronous server streams ----------------------------------------------------------
 * Many open streams on a few loop threads (no thread per stream): each message is handed to
 * on_msg on a loop thread, in order; on_end runs exactly once after the last message, with the
 * final status (RPC_OK for a clean end, CANCELLED after rpc_stream_async_cancel()). All the
 * callbacks of one stream run on one loop thread, never at the same time. Callbacks must not
 * block for long: they hold up every other call on that thread. */
typedef struct rpc_astream rpc_astream;
/* msg is the caller's: free it with protobuf_c_message_free_unpacked(msg, NULL). */
typedef void (*rpc_stream_msg_cb)(void *user, ProtobufCMessage *msg);
/* res is valid during the callback only. */
typedef void (*rpc_stream_end_cb)(void *user, const rpc_result *res);

/* Opens a server-streaming call of method with req (opts->timeout_ms 0 = no deadline), decoding
 * messages as msg_desc. Returns 0; a call that cannot start ends at once (on_end may then run
 * on the calling thread before this returns). With out non-NULL, *out is a handle the caller
 * holds until rpc_stream_async_release(), also after on_end; with out NULL the stream cannot be
 * cancelled except by rpc_loop_free(), which cancels every stream still open. */
int rpc_stream_async_open(rpc_loop *l, rpc_channel *ch, const char *method, const ProtobufCMessage *req,
                          const ProtobufCMessageDescriptor *msg_desc, const rpc_call_opts *opts, rpc_stream_msg_cb on_msg,
                          rpc_stream_end_cb on_end, void *user, rpc_astream **out);
/* Ends the stream from any thread (on_end follows with CANCELLED unless it had already ended);
 * a no-op after the end. The handle must still be released. */
void rpc_stream_async_cancel(rpc_astream *s);
/* Gives up the caller's handle; the stream itself goes on. NULL is ignored. */
void rpc_stream_async_release(rpc_astream *s);

/* A fresh trace id (32 hex characters) into buf (>= 33 bytes). */
void rpc_new_trace_id(char *buf);

#endif
