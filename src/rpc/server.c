/* rpc server: method table, worker pool, per-call state machine, health service, shutdown.
 *
 * Every call is one rpc_ctx. Completions carry a pointer to one of the ctx's tags, and the tag
 * kind says which step finished. A ctx is reference-counted: each batch in flight holds a
 * reference, and so does a handler thread; the last one out frees the call and its arena. */
#include "rpc/server.h"

#include <errno.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "health.pb-c.h"
#include "rpc/runtime.h"
#include "rpc/wire.h"

#define MAX_LISTEN 8
#define POSTS_PER_METHOD 2 /* per completion queue */
#define GENERIC_POSTS 1

enum tag_kind { TAG_REQUEST, TAG_FINISH, TAG_SEND, TAG_CLOSE, TAG_SHUTDOWN, TAG_RECV };
struct tag {
    enum tag_kind kind;
};

struct smethod {
    const rpc_method *m;
    void *handle; /* from grpc_server_register_method */
    rpc_bidi_fn bidi; /* bidi methods: m is then the server's own copy (path, types, user) */
};

struct rpc_ctx {
    struct tag t_req, t_finish, t_send, t_close;
    rpc_server *srv;
    struct smethod *sm; /* NULL: a method we do not serve */
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
    grpc_call_details details; /* generic requests only */
    wire_arena *arena;
    ProtobufCMessage *req, *resp;
    atomic_int refs;
    atomic_int cancelled;
    int code;
    char *msg;
    int recv_cancelled;
    int sent_initial_md;
    int is_stream;
    int cqi;      /* the completion queue (and so the worker) this call lives on */
    int accepted; /* matched with a client call: counted in calls_live */
    char trace_id[40];
    char *peer;
    struct timespec t0;
    grpc_byte_buffer *out_bb;
    grpc_slice status_details;
    int has_details;
    /* a handler thread waiting for its streamed message to be written */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int send_done, send_ok;
    /* bidi: the handler thread waiting for the client's next message (same mu/cv) */
    struct tag t_recv;
    int is_bidi;
    int recv_done, recv_ok, recv_eof;
    int quiet_log; /* rpc_ctx_quiet_log(): the access line at debug level */
    int recv_abandoned;      /* reading ended by our shutdown: the call ends UNAVAILABLE */
    int bad_message;         /* a client message did not decode: the call ends INVALID_ARGUMENT */
    grpc_byte_buffer *recv_bb;
    wire_arena *msg_arena;   /* the last received message only */
    /* async server streams (RPC_METHOD_ASYNC), all under mu: a ring of encoded messages whose
     * head is in flight while a_sending and a_sending_msg (a_sending alone: the headers) */
    int is_async;
    grpc_byte_buffer **aq;
    size_t aq_head, aq_len, aq_cap;
    int a_sending, a_sending_msg;
    int a_over;         /* no more messages can go: client gone, send failed, server stopping */
    int a_completing;   /* the owner called rpc_ctx_complete: status goes once the queue drains */
    int a_code;
    int handler_running, end_pending, end_told;
    rpc_end_fn on_end;
    void *end_user;
    rpc_ctx *anext, *aprev; /* the server's list of async streams (under srv->mu) */
    int in_list;
    struct peer_entry *pe;  /* a stream counted against its connection (under srv->mu) */
};

/* Streams open on one client connection (the peer string names the connection: address and
 * source port), and when its refusals were last logged. */
struct peer_entry {
    char *peer;
    int n;
    int64_t last_log_ms;
    unsigned long refused;
    struct peer_entry *next;
};
#define PEER_BUCKETS 1024

struct health_entry {
    char *service;
    int serving;
};

struct worker_arg {
    rpc_server *s;
    int i;
};

struct rpc_server {
    char name[32];
    grpc_server *server;
    /* One completion queue per worker: all of a call's completions go to the worker that took
     * it, so no two workers contend for one queue. The price: a handler that blocks holds up
     * the calls queued behind it on its worker, hence RPC_METHOD_SLOW and RPC_PENDING. */
    grpc_completion_queue **cqs;
    struct worker_arg *wargs;
    struct smethod *methods;
    size_t n_methods, cap_methods;
    pthread_t *workers;
    int n_workers; /* completion queues, one worker each */
    int n_threads; /* workers actually started */
    int ports[MAX_LISTEN];
    size_t n_ports;
    int started, shut, quiet;
    void (*observe)(void *user, const char *method, int code, int64_t duration_us);
    void *observe_user;
    atomic_int stopping;
    struct tag t_shutdown;
    wire_tls_src *tls; /* NULL: plaintext */
    pthread_mutex_t mu; /* the thread counts, idle, shutdown_done */
    pthread_cond_t cv;
    /* Handler threads (streams and RPC_METHOD_SLOW calls): threads_live exist, threads_busy
     * run a handler (the max_streams cap); the others wait in idle for the next call. */
    int threads_live, threads_busy, max_streams, shutdown_done;
    struct idle_slot *idle;
    int n_idle;
    int max_per_conn;
    struct peer_entry *peers[PEER_BUCKETS]; /* under mu */
    rpc_ctx *async_head;                    /* under mu */
    long calls_live; /* accepted calls not yet freed: the CQ may close only at zero */
    pthread_mutex_t hmu; /* health table */
    pthread_cond_t hcv;
    unsigned long hversion;
    struct health_entry *health;
    size_t n_health;
    uint64_t trace_base;
    atomic_uint_fast64_t trace_seq;
    rpc_method health_methods[2];
};

#define CTX_OF(ptr, member) ((rpc_ctx *)((char *)(ptr) - offsetof(rpc_ctx, member)))

/* A handler thread between calls. Starting a thread per call cost ~14% of the manager's CPU
 * while a fleet registered (clone, a fresh stack, page faults and TLB flushes as it went); a
 * thread that finished waits here a while for the next call instead. Lives on its thread's
 * stack, listed in s->idle under s->mu. */
struct idle_slot {
    pthread_cond_t cv;
    rpc_ctx *job;          /* set (and the slot unlisted) by the dispatcher */
    struct idle_slot *next;
};
#define IDLE_MAX 64        /* threads kept waiting at most; more finish */
#define IDLE_KEEP_S 10      /* a thread with no call for this many seconds finishes */

static void post_request(rpc_server *s, struct smethod *sm, int cqi);
static void finish(rpc_ctx *c, int code);
static void peer_release(rpc_server *s, struct peer_entry *pe);

/* ---- ctx lifetime ------------------------------------------------------------------------- */

static rpc_ctx *ctx_new(rpc_server *s, struct smethod *sm)
{
    rpc_ctx *c = calloc(1, sizeof *c);
    if (!c) abort();
    c->t_req.kind = TAG_REQUEST;
    c->t_finish.kind = TAG_FINISH;
    c->t_send.kind = TAG_SEND;
    c->t_close.kind = TAG_CLOSE;
    c->t_recv.kind = TAG_RECV;
    c->srv = s;
    c->sm = sm;
    atomic_init(&c->refs, 1);
    grpc_metadata_array_init(&c->md);
    grpc_call_details_init(&c->details);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    return c;
}

static void ctx_free(rpc_ctx *c)
{
    rpc_server *s = c->srv;
    int accepted = c->accepted;
    if (c->call) grpc_call_unref(c->call);
    grpc_metadata_array_destroy(&c->md);
    grpc_call_details_destroy(&c->details);
    if (c->payload) grpc_byte_buffer_destroy(c->payload);
    if (c->out_bb) grpc_byte_buffer_destroy(c->out_bb);
    if (c->recv_bb) grpc_byte_buffer_destroy(c->recv_bb);
    wire_arena_free(c->msg_arena);
    if (c->has_details) grpc_slice_unref(c->status_details);
    if (c->peer) gpr_free(c->peer);
    wire_arena_free(c->arena);
    for (size_t i = 0; i < c->aq_len; i++) grpc_byte_buffer_destroy(c->aq[(c->aq_head + i) % c->aq_cap]);
    free(c->aq);
    if (c->in_list || c->pe) {
        pthread_mutex_lock(&s->mu);
        if (c->in_list) {
            if (c->aprev) c->aprev->anext = c->anext;
            else s->async_head = c->anext;
            if (c->anext) c->anext->aprev = c->aprev;
        }
        if (c->pe) peer_release(s, c->pe);
        pthread_mutex_unlock(&s->mu);
    }
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c);
    if (accepted) {
        pthread_mutex_lock(&s->mu);
        if (--s->calls_live == 0) pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
    }
}

static void ctx_unref(rpc_ctx *c)
{
    if (atomic_fetch_sub(&c->refs, 1) == 1) ctx_free(c);
}

/* ---- handler-facing accessors ------------------------------------------------------------- */

const char *rpc_ctx_method(const rpc_ctx *c)
{
    return c->sm ? c->sm->m->path : "(unknown)";
}
const char *rpc_ctx_peer(const rpc_ctx *c) { return c->peer ? c->peer : "unknown"; }
void rpc_ctx_quiet_log(rpc_ctx *c) { c->quiet_log = 1; }

const char *rpc_ctx_trace_id(const rpc_ctx *c) { return c->trace_id; }

int64_t rpc_ctx_deadline_ms(const rpc_ctx *c)
{
    gpr_timespec d = gpr_convert_clock_type(c->deadline, GPR_CLOCK_REALTIME);
    if (gpr_time_cmp(d, gpr_inf_future(GPR_CLOCK_REALTIME)) >= 0) return INT64_MAX;
    return (int64_t)d.tv_sec * 1000 + d.tv_nsec / 1000000;
}

void *rpc_ctx_alloc(rpc_ctx *c, size_t n) { return wire_arena_alloc(c->arena, n); }

char *rpc_ctx_strdup(rpc_ctx *c, const char *s)
{
    if (!s) s = "";
    size_t n = strlen(s) + 1;
    char *p = wire_arena_alloc(c->arena, n);
    memcpy(p, s, n);
    return p;
}

static char *ctx_vsprintf(rpc_ctx *c, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0) n = 0;
    char *p = wire_arena_alloc(c->arena, (size_t)n + 1);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    return p;
}

char *rpc_ctx_sprintf(rpc_ctx *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *p = ctx_vsprintf(c, fmt, ap);
    va_end(ap);
    return p;
}

int rpc_ctx_errorf(rpc_ctx *c, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    c->msg = ctx_vsprintf(c, fmt, ap);
    va_end(ap);
    return code;
}

static const char *md_lookup(rpc_ctx *c, const char *key)
{
    size_t klen = strlen(key);
    for (size_t i = 0; i < c->md.count; i++) {
        grpc_slice k = c->md.metadata[i].key;
        if (GRPC_SLICE_LENGTH(k) == klen && memcmp(GRPC_SLICE_START_PTR(k), key, klen) == 0) {
            grpc_slice v = c->md.metadata[i].value;
            size_t n = GRPC_SLICE_LENGTH(v);
            char *p = wire_arena_alloc(c->arena, n + 1);
            memcpy(p, GRPC_SLICE_START_PTR(v), n);
            p[n] = 0;
            return p;
        }
    }
    return NULL;
}

const char *rpc_ctx_metadata(rpc_ctx *c, const char *key) { return md_lookup(c, key); }

const char *rpc_ctx_peer_identity(rpc_ctx *c)
{
    grpc_auth_context *ac = grpc_call_auth_context(c->call);
    if (!ac) return NULL;
    const char *found = NULL;
    static const char *const names[] = {GRPC_PEER_DNS_PROPERTY_NAME, GRPC_X509_CN_PROPERTY_NAME};
    for (size_t i = 0; i < 2 && !found; i++) {
        grpc_auth_property_iterator it = grpc_auth_context_find_properties_by_name(ac, names[i]);
        const grpc_auth_property *p = grpc_auth_property_iterator_next(&it);
        if (p && p->value_length > 0) {
            char *v = wire_arena_alloc(c->arena, p->value_length + 1);
            memcpy(v, p->value, p->value_length);
            v[p->value_length] = 0;
            found = v;
        }
    }
    grpc_auth_context_release(ac);
    return found;
}

int rpc_ctx_cancelled(const rpc_ctx *c)
{
    return atomic_load(&c->cancelled) || atomic_load(&c->srv->stopping);
}

int rpc_ctx_send(rpc_ctx *c, const ProtobufCMessage *msg)
{
    if (rpc_ctx_cancelled(c)) return -1;
    grpc_byte_buffer *bb = wire_encode(msg);
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    if (!c->sent_initial_md) {
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        n++;
        c->sent_initial_md = 1;
    }
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n].data.send_message.send_message = bb;
    n++;
    pthread_mutex_lock(&c->mu);
    c->send_done = 0;
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, &c->t_send, NULL);
    if (e != GRPC_CALL_OK) {
        pthread_mutex_unlock(&c->mu);
        grpc_byte_buffer_destroy(bb);
        return -1;
    }
    while (!c->send_done) pthread_cond_wait(&c->cv, &c->mu);
    int ok = c->send_ok;
    pthread_mutex_unlock(&c->mu);
    grpc_byte_buffer_destroy(bb);
    return ok ? 0 : -1;
}

/* Waits for a recv batch to complete. Returns 1 when it did, 0 when the server started stopping
 * first: a handler blocked here would otherwise hold shutdown for the whole grace period, so
 * it gives up and returns, and its status (UNAVAILABLE "server shutting down", as server
 * streams end) goes out while the batch is still pending; the batch's own reference keeps
 * the ctx until it completes. */
static int wait_recv(rpc_ctx *c)
{
    pthread_mutex_lock(&c->mu);
    while (!c->recv_done) {
        if (atomic_load(&c->srv->stopping)) {
            pthread_mutex_unlock(&c->mu);
            return 0;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 200 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
        pthread_cond_timedwait(&c->cv, &c->mu, &ts);
    }
    pthread_mutex_unlock(&c->mu);
    return 1;
}

/* The end of a bidi handler's reading: when it is our shutdown rather than the client's doing,
 * say so, so that the client hears UNAVAILABLE whatever the handler returns. */
static int recv_over(rpc_ctx *c)
{
    if (atomic_load(&c->srv->stopping) && !atomic_load(&c->cancelled)) c->recv_abandoned = 1;
    return -1;
}

int rpc_ctx_recv(rpc_ctx *c, const ProtobufCMessageDescriptor *desc, ProtobufCMessage **msg)
{
    *msg = NULL;
    if (!c->is_bidi || c->recv_eof) return c->recv_eof ? 1 : -1;
    if (c->bad_message || c->recv_abandoned) return -1;
    if (rpc_ctx_cancelled(c)) return recv_over(c);
    /* The previous message's memory goes now: the handler was told it lives until this call. */
    wire_arena_free(c->msg_arena);
    c->msg_arena = NULL;
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->recv_bb;
    pthread_mutex_lock(&c->mu);
    c->recv_done = 0;
    pthread_mutex_unlock(&c->mu);
    atomic_fetch_add(&c->refs, 1); /* the batch's */
    if (grpc_call_start_batch(c->call, &op, 1, &c->t_recv, NULL) != GRPC_CALL_OK) {
        ctx_unref(c);
        return recv_over(c);
    }
    if (!wait_recv(c)) {
        c->recv_abandoned = 1;
        return -1;
    }
    if (!c->recv_ok) return recv_over(c);
    if (!c->recv_bb) {
        /* No message on a good batch: the client half-closed, unless it was really a cancel. */
        if (rpc_ctx_cancelled(c)) return recv_over(c);
        c->recv_eof = 1;
        return 1;
    }
    c->msg_arena = wire_arena_new();
    ProtobufCAllocator al = wire_arena_allocator(c->msg_arena);
    int rc = wire_decode(c->recv_bb, desc, &al, msg);
    grpc_byte_buffer_destroy(c->recv_bb);
    c->recv_bb = NULL;
    if (rc != 0) {
        c->bad_message = 1;
        rpc_ctx_errorf(c, RPC_INVALID_ARGUMENT, "stream message is not a valid %s message", desc->name);
        *msg = NULL;
        return -1;
    }
    return 0;
}

rpc_server *rpc_ctx_server(const rpc_ctx *c) { return c->srv; }

/* ---- streams per connection --------------------------------------------------------------- */

static uint32_t peer_hash(const char *p)
{
    uint32_t h = 2166136261u;
    for (; *p; p++) h = (h ^ (unsigned char)*p) * 16777619u;
    return h % PEER_BUCKETS;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Counts a new stream against its connection. 0, or -1 when the connection is at its limit
 * (*log_it: this refusal should be logged, with *held the refusals not logged before it). */
static int peer_acquire(rpc_server *s, rpc_ctx *c, int *log_it, unsigned long *held)
{
    const char *peer = rpc_ctx_peer(c);
    *log_it = 0;
    pthread_mutex_lock(&s->mu);
    struct peer_entry **pp = &s->peers[peer_hash(peer)];
    while (*pp && strcmp((*pp)->peer, peer) != 0) pp = &(*pp)->next;
    struct peer_entry *pe = *pp;
    if (!pe) {
        pe = calloc(1, sizeof *pe);
        if (!pe || !(pe->peer = strdup(peer))) abort();
        pe->last_log_ms = INT64_MIN / 2;
        *pp = pe;
    }
    if (pe->n >= s->max_per_conn) {
        int64_t now = mono_ms();
        if (now - pe->last_log_ms >= 60000) {
            *log_it = 1;
            *held = pe->refused;
            pe->refused = 0;
            pe->last_log_ms = now;
        } else {
            pe->refused++;
        }
        pthread_mutex_unlock(&s->mu);
        return -1;
    }
    pe->n++;
    c->pe = pe;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

/* Caller holds s->mu. The entry goes with its connection's last stream (a refused connection
 * keeps its entry, and so its log pacing, while its streams stay open). */
static void peer_release(rpc_server *s, struct peer_entry *pe)
{
    if (--pe->n > 0) return;
    struct peer_entry **pp = &s->peers[peer_hash(pe->peer)];
    while (*pp != pe) pp = &(*pp)->next;
    *pp = pe->next;
    free(pe->peer);
    free(pe);
}

/* ---- asynchronous server streams ---------------------------------------------------------- */

/* A send batch for the queue's head, prepared under c->mu (the queue is not empty and nothing
 * is in flight) and started after unlocking: starting a batch may write to the socket inline,
 * and a worker finishing the previous send must not wait for that on c->mu. */
static void async_drop_queue(rpc_ctx *c);
static void async_finish(rpc_ctx *c);

typedef struct async_batch {
    grpc_op ops[2];
    size_t n;
} async_batch;

static void async_prepare(rpc_ctx *c, async_batch *b)
{
    memset(b, 0, sizeof *b);
    if (!c->sent_initial_md) {
        b->ops[b->n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        c->sent_initial_md = 1;
    }
    b->ops[b->n].op = GRPC_OP_SEND_MESSAGE;
    b->ops[b->n].data.send_message.send_message = c->aq[c->aq_head];
    b->n++;
    atomic_fetch_add(&c->refs, 1); /* the batch's; the caller holds another, so never the last */
    c->a_sending = 1;
    c->a_sending_msg = 1;
}

/* The response headers alone, as soon as the handler has accepted the stream: the client
 * learns at once that it is subscribed, and the first pushed message (often a whole fleet's at
 * the same moment) carries no HEADERS frame to encode. Same rules as async_prepare(). */
static void async_prepare_headers(rpc_ctx *c, async_batch *b)
{
    memset(b, 0, sizeof *b);
    b->ops[b->n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    c->sent_initial_md = 1;
    atomic_fetch_add(&c->refs, 1);
    c->a_sending = 1;
    c->a_sending_msg = 0;
}

static void async_start(rpc_ctx *c, async_batch *b)
{
    if (grpc_call_start_batch(c->call, b->ops, b->n, &c->t_send, NULL) == GRPC_CALL_OK) return;
    /* cannot happen with one send at a time; treat the stream as broken */
    pthread_mutex_lock(&c->mu);
    c->a_sending = 0;
    c->a_over = 1;
    async_drop_queue(c);
    int fin = c->a_completing;
    pthread_mutex_unlock(&c->mu);
    atomic_fetch_sub(&c->refs, 1);
    if (fin) async_finish(c);
}

/* Caller holds c->mu. */
static void async_drop_queue(rpc_ctx *c)
{
    size_t keep = c->a_sending && c->a_sending_msg ? 1 : 0; /* in flight: goes when its batch completes */
    for (size_t i = keep; i < c->aq_len; i++) grpc_byte_buffer_destroy(c->aq[(c->aq_head + i) % c->aq_cap]);
    c->aq_len = keep;
}

int rpc_ctx_push(rpc_ctx *c, const ProtobufCMessage *msg)
{
    if (!c->is_async) return -1;
    grpc_byte_buffer *bb = wire_encode(msg);
    pthread_mutex_lock(&c->mu);
    if (c->a_over || c->a_completing) {
        pthread_mutex_unlock(&c->mu);
        grpc_byte_buffer_destroy(bb);
        return -1;
    }
    if (c->aq_len == c->aq_cap) {
        size_t cap = c->aq_cap ? c->aq_cap * 2 : 4;
        grpc_byte_buffer **q = malloc(cap * sizeof *q);
        if (!q) abort();
        for (size_t i = 0; i < c->aq_len; i++) q[i] = c->aq[(c->aq_head + i) % c->aq_cap];
        free(c->aq);
        c->aq = q;
        c->aq_cap = cap;
        c->aq_head = 0;
    }
    int waiting = (int)c->aq_len;
    c->aq[(c->aq_head + c->aq_len) % c->aq_cap] = bb;
    c->aq_len++;
    async_batch b;
    int start = !c->a_sending;
    if (start) async_prepare(c, &b);
    pthread_mutex_unlock(&c->mu);
    if (start) async_start(c, &b);
    return waiting;
}

int rpc_ctx_pending(rpc_ctx *c)
{
    if (!c->is_async) return -1;
    pthread_mutex_lock(&c->mu);
    int n = c->a_over || c->a_completing ? -1 : (int)c->aq_len;
    pthread_mutex_unlock(&c->mu);
    return n;
}

void rpc_ctx_hold(rpc_ctx *c) { atomic_fetch_add(&c->refs, 1); }
void rpc_ctx_release(rpc_ctx *c) { ctx_unref(c); }

void rpc_ctx_on_end(rpc_ctx *c, rpc_end_fn fn, void *user)
{
    pthread_mutex_lock(&c->mu);
    c->on_end = fn;
    c->end_user = user;
    pthread_mutex_unlock(&c->mu);
}

/* The stream can no longer carry messages: tell the owner, once. While its handler is still
 * running (the server stopping meanwhile), the news waits for the handler to return. */
static void async_end(rpc_ctx *c)
{
    pthread_mutex_lock(&c->mu);
    c->a_over = 1;
    async_drop_queue(c);
    int tell = 0;
    if (!c->end_told) {
        if (c->handler_running) c->end_pending = 1;
        else if (c->on_end) c->end_told = tell = 1;
    }
    rpc_end_fn fn = c->on_end;
    void *user = c->end_user;
    pthread_mutex_unlock(&c->mu);
    if (tell) fn(c, user);
}

/* The owner's reference passes to the status batch. */
static void async_finish(rpc_ctx *c)
{
    int code = c->a_code;
    if (code == RPC_OK && atomic_load(&c->srv->stopping) && !atomic_load(&c->cancelled))
        code = rpc_ctx_errorf(c, RPC_UNAVAILABLE, "server shutting down");
    finish(c, code);
}

static void async_complete(rpc_ctx *c, int code)
{
    pthread_mutex_lock(&c->mu);
    if (c->a_completing) { /* a second completion is the owner's bug: the first one stands */
        pthread_mutex_unlock(&c->mu);
        log_error("rpc.complete_twice", "server=%s method=%s", c->srv->name, rpc_ctx_method(c));
        return;
    }
    c->a_completing = 1;
    c->a_code = code;
    int now = !c->a_sending; /* else the send's completion finishes the call */
    if (now) async_drop_queue(c);
    pthread_mutex_unlock(&c->mu);
    if (now) async_finish(c);
}

/* A send of an async stream completed (on the call's worker). */
static void async_sent(rpc_ctx *c, int ok)
{
    pthread_mutex_lock(&c->mu);
    if (c->a_sending_msg) {
        grpc_byte_buffer_destroy(c->aq[c->aq_head]);
        c->aq_head = (c->aq_head + 1) % c->aq_cap;
        c->aq_len--;
    }
    c->a_sending = 0;
    c->a_sending_msg = 0;
    if (!ok) c->a_over = 1;
    if (c->a_over) async_drop_queue(c);
    int fin = 0, start = 0;
    async_batch b;
    if (c->aq_len > 0 && !c->a_over) {
        async_prepare(c, &b);
        start = 1;
    } else if (c->a_completing) {
        fin = 1;
    }
    pthread_mutex_unlock(&c->mu);
    if (start) async_start(c, &b);
    if (fin) async_finish(c);
    if (!ok) async_end(c);
}

/* ---- call flow ---------------------------------------------------------------------------- */

static double elapsed_ms(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

static void access_log(rpc_ctx *c)
{
    log_level lvl = c->srv->quiet ? LOGL_DEBUG : LOGL_INFO;
    if (c->code != RPC_OK && c->code != RPC_NOT_FOUND && c->code != RPC_INVALID_ARGUMENT &&
        c->code != RPC_UNIMPLEMENTED && c->code != RPC_CANCELLED && c->code != RPC_DEADLINE_EXCEEDED)
        lvl = LOGL_WARN;
    if (c->quiet_log) lvl = LOGL_DEBUG;
    if (!log_enabled(lvl)) return;
    char q[300];
    char method[256];
    if (c->sm) snprintf(method, sizeof method, "%s", c->sm->m->path);
    else snprintf(method, sizeof method, "%.*s", (int)GRPC_SLICE_LENGTH(c->details.method),
                  (const char *)GRPC_SLICE_START_PTR(c->details.method));
    log_event(lvl, "rpc.call", "server=%s method=%s peer=%s code=%s duration_ms=%.3f trace_id=%s%s%s%s",
              c->srv->name, method, rpc_ctx_peer(c), rpc_code_name(c->code), elapsed_ms(&c->t0),
              c->trace_id, c->msg ? " msg=" : "", c->msg ? log_quote(q, sizeof q, c->msg) : "",
              c->recv_cancelled ? " cancelled=1" : "");
}

/* Sends the final status (and the response for a unary call that succeeded). The reference
 * the caller holds passes to the batch. */
static void finish(rpc_ctx *c, int code)
{
    if (code < 0 || code > RPC_UNAUTHENTICATED) code = RPC_UNKNOWN;
    c->code = code;
    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    if (!c->sent_initial_md) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        c->sent_initial_md = 1;
    }
    if (code == RPC_OK && !c->is_stream && c->resp) {
        c->out_bb = wire_encode(c->resp);
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = c->out_bb;
        n++;
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = (grpc_status_code)code;
    if (c->msg) {
        c->status_details = grpc_slice_from_copied_string(c->msg);
        c->has_details = 1;
        ops[n].data.send_status_from_server.status_details = &c->status_details;
    }
    n++;
    if (!c->is_stream) {
        ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
        ops[n].data.recv_close_on_server.cancelled = &c->recv_cancelled;
        n++;
    }
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, &c->t_finish, NULL);
    if (e != GRPC_CALL_OK) {
        log_error("rpc.batch_failed", "server=%s method=%s error=%s", c->srv->name, rpc_ctx_method(c),
                  grpc_call_error_to_string(e));
        ctx_unref(c);
    }
}

void rpc_ctx_complete(rpc_ctx *c, int code)
{
    if (c->is_async) async_complete(c, code);
    else finish(c, code);
}

static void run_handler(rpc_ctx *c)
{
    const rpc_method *m = c->sm->m;
    if (c->is_stream) {
        int code = c->is_bidi ? c->sm->bidi(c, m->user) : m->stream(c, c->req, m->user);
        if (c->bad_message) code = RPC_INVALID_ARGUMENT;
        /* reading ended because we are stopping: whatever the handler made of that, the
         * client should hear why and come back */
        if (c->recv_abandoned) code = rpc_ctx_errorf(c, RPC_UNAVAILABLE, "server shutting down");
        if (code == RPC_OK && atomic_load(&c->srv->stopping) && !atomic_load(&c->cancelled)) {
            /* The stream ended because we are going away: tell the client to come back. */
            code = rpc_ctx_errorf(c, RPC_UNAVAILABLE, "server shutting down");
        }
        finish(c, code);
    } else {
        int code = m->unary(c, c->req, c->resp, m->user);
        if (code != RPC_PENDING) finish(c, code);
    }
}

/* An async stream's handler runs here, on the worker; the call then lives on without a thread. */
static void run_async(rpc_ctx *c)
{
    rpc_server *s = c->srv;
    const rpc_method *m = c->sm->m;
    c->is_async = 1;
    pthread_mutex_lock(&s->mu);
    int stopping = atomic_load(&s->stopping);
    if (!stopping) { /* the shutdown walk sees every stream listed before stopping was set */
        c->anext = s->async_head;
        if (s->async_head) s->async_head->aprev = c;
        s->async_head = c;
        c->in_list = 1;
    }
    pthread_mutex_unlock(&s->mu);
    if (stopping) {
        finish(c, rpc_ctx_errorf(c, RPC_UNAVAILABLE, "server shutting down"));
        return;
    }
    /* Learn about a client that goes away. */
    atomic_fetch_add(&c->refs, 1);
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->recv_cancelled;
    if (grpc_call_start_batch(c->call, &op, 1, &c->t_close, NULL) != GRPC_CALL_OK) ctx_unref(c);
    c->handler_running = 1;
    int code = m->stream(c, c->req, m->user);
    pthread_mutex_lock(&c->mu);
    c->handler_running = 0;
    int tell = c->end_pending && !c->end_told && c->on_end;
    if (tell) c->end_told = 1;
    async_batch hb;
    int headers = code == RPC_PENDING && !c->sent_initial_md && !c->a_sending && !c->a_over && !c->a_completing;
    if (headers) async_prepare_headers(c, &hb);
    pthread_mutex_unlock(&c->mu);
    if (headers) async_start(c, &hb);
    if (code != RPC_PENDING) async_complete(c, code);
    if (tell) c->on_end(c, c->end_user);
}

/* Caller holds s->mu: slot me leaves the idle list (it had no call). */
static void idle_unlist(rpc_server *s, struct idle_slot *me)
{
    for (struct idle_slot **p = &s->idle; *p; p = &(*p)->next) {
        if (*p == me) {
            *p = me->next;
            s->n_idle--;
            return;
        }
    }
}

static void *handler_thread(void *arg)
{
    pthread_setname_np(pthread_self(), "rpc-handler");
    rpc_ctx *c = arg;
    rpc_server *s = c->srv;
    struct idle_slot me = {.job = NULL};
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&me.cv, &ca);
    pthread_condattr_destroy(&ca);
    while (c) {
        run_handler(c);
        pthread_mutex_lock(&s->mu);
        s->threads_busy--;
        me.job = NULL;
        if (!atomic_load(&s->stopping) && s->n_idle < IDLE_MAX) {
            me.next = s->idle;
            s->idle = &me;
            s->n_idle++;
            struct timespec until;
            clock_gettime(CLOCK_MONOTONIC, &until);
            until.tv_sec += IDLE_KEEP_S;
            while (!me.job && !atomic_load(&s->stopping))
                if (pthread_cond_timedwait(&me.cv, &s->mu, &until) == ETIMEDOUT) break;
            if (!me.job) idle_unlist(s, &me);
        }
        c = me.job;
        if (!c) {
            s->threads_live--;
            pthread_cond_broadcast(&s->cv);
        }
        pthread_mutex_unlock(&s->mu);
    }
    pthread_cond_destroy(&me.cv);
    return NULL;
}

static void on_request(rpc_ctx *c, int ok)
{
    rpc_server *s = c->srv;
    if (!ok) { /* shutting down: this request was never matched with a call */
        ctx_unref(c);
        return;
    }
    c->accepted = 1;
    pthread_mutex_lock(&s->mu);
    s->calls_live++;
    pthread_mutex_unlock(&s->mu);
    if (!atomic_load(&s->stopping)) post_request(s, c->sm, c->cqi);
    clock_gettime(CLOCK_MONOTONIC, &c->t0);
    /* 20,000 update streams held 4 KiB each for a request of ~100 bytes. */
    c->arena = c->sm && (c->sm->m->stream || c->sm->bidi) ? wire_arena_new_sized(512) : wire_arena_new();
    c->peer = grpc_call_get_peer(c->call);
    const char *tid = md_lookup(c, "x-trace-id");
    if (tid && *tid && strlen(tid) < sizeof c->trace_id)
        snprintf(c->trace_id, sizeof c->trace_id, "%s", tid);
    else
        snprintf(c->trace_id, sizeof c->trace_id, "%016llx%016llx", (unsigned long long)s->trace_base,
                 (unsigned long long)atomic_fetch_add(&s->trace_seq, 1));
    if (!c->sm) {
        finish(c, rpc_ctx_errorf(c, RPC_UNIMPLEMENTED, "unknown method %.*s",
                                 (int)GRPC_SLICE_LENGTH(c->details.method),
                                 (const char *)GRPC_SLICE_START_PTR(c->details.method)));
        return;
    }
    const rpc_method *m = c->sm->m;
    c->is_bidi = c->sm->bidi != NULL;
    c->is_stream = m->stream != NULL || c->is_bidi;
    ProtobufCAllocator al = wire_arena_allocator(c->arena);
    /* A bidi call has no request payload: its handler reads the messages itself. */
    if (!c->is_bidi && wire_decode(c->payload, m->req, &al, &c->req) != 0) {
        finish(c, rpc_ctx_errorf(c, RPC_INVALID_ARGUMENT, "request is not a valid %s message",
                                 m->req->name));
        return;
    }
    if (c->payload) grpc_byte_buffer_destroy(c->payload);
    c->payload = NULL;
    if (!c->is_stream) {
        c->resp = wire_arena_alloc(c->arena, m->resp->sizeof_message);
        m->resp->message_init(c->resp);
    }
    if (!c->is_stream && !(m->flags & RPC_METHOD_SLOW)) {
        run_handler(c);
        return;
    }
    if (c->is_stream) {
        int log_it;
        unsigned long held = 0;
        if (peer_acquire(s, c, &log_it, &held) != 0) {
            c->quiet_log = 1; /* a flood of refusals must not flood the log */
            if (log_it)
                log_warn("rpc.stream_refused", "server=%s method=%s peer=%s limit=%d held=%lu reason=\"too many streams on one connection\"",
                         s->name, m->path, rpc_ctx_peer(c), s->max_per_conn, held);
            finish(c, rpc_ctx_errorf(c, RPC_RESOURCE_EXHAUSTED, "too many streams on this connection (limit %d)", s->max_per_conn));
            return;
        }
    }
    if (c->is_stream && !c->is_bidi && (m->flags & RPC_METHOD_ASYNC)) {
        run_async(c);
        return;
    }
    /* Streams and slow calls get a thread of their own (an idle one if any), within a cap. */
    pthread_mutex_lock(&s->mu);
    int room = s->threads_busy < s->max_streams;
    if (room) s->threads_busy++;
    pthread_mutex_unlock(&s->mu);
    if (!room) {
        finish(c, rpc_ctx_errorf(c, RPC_RESOURCE_EXHAUSTED, "too many concurrent streams (limit %d)",
                                 s->max_streams));
        return;
    }
    if (c->is_stream) {
        /* Learn about a client that goes away while the handler is streaming. */
        atomic_fetch_add(&c->refs, 1);
        grpc_op op;
        memset(&op, 0, sizeof op);
        op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
        op.data.recv_close_on_server.cancelled = &c->recv_cancelled;
        if (grpc_call_start_batch(c->call, &op, 1, &c->t_close, NULL) != GRPC_CALL_OK) ctx_unref(c);
    }
    pthread_mutex_lock(&s->mu);
    struct idle_slot *idle = s->idle;
    if (idle) {
        s->idle = idle->next;
        s->n_idle--;
        idle->job = c;
        pthread_cond_signal(&idle->cv);
    } else {
        s->threads_live++;
    }
    pthread_mutex_unlock(&s->mu);
    if (idle) return;
    pthread_t th;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    int e = pthread_create(&th, &attr, handler_thread, c);
    pthread_attr_destroy(&attr);
    if (e != 0) {
        pthread_mutex_lock(&s->mu);
        s->threads_live--;
        s->threads_busy--;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
        finish(c, rpc_ctx_errorf(c, RPC_RESOURCE_EXHAUSTED, "cannot start a handler thread: %s", strerror(e)));
    }
}

static void post_request(rpc_server *s, struct smethod *sm, int cqi)
{
    rpc_ctx *c = ctx_new(s, sm);
    c->cqi = cqi;
    grpc_completion_queue *cq = s->cqs[cqi];
    grpc_call_error e;
    if (sm)
        e = grpc_server_request_registered_call(s->server, sm->handle, &c->call, &c->deadline, &c->md,
                                                sm->bidi ? NULL : &c->payload, cq, cq, &c->t_req);
    else
        e = grpc_server_request_call(s->server, &c->call, &c->details, &c->md, cq, cq, &c->t_req);
    if (e != GRPC_CALL_OK) {
        if (!atomic_load(&s->stopping))
            log_error("rpc.request_failed", "server=%s error=%s", s->name, grpc_call_error_to_string(e));
        ctx_unref(c);
    } else if (!sm) {
        c->deadline = c->details.deadline;
    }
}

static void *worker_main(void *arg)
{
    pthread_setname_np(pthread_self(), "rpc-server-cq");
    struct worker_arg *wa = arg;
    rpc_server *s = wa->s;
    grpc_completion_queue *cq = s->cqs[wa->i];
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type != GRPC_OP_COMPLETE) continue;
        struct tag *t = ev.tag;
        switch (t->kind) {
        case TAG_REQUEST: {
            rpc_ctx *c = CTX_OF(t, t_req);
            if (ev.success && !c->sm) c->deadline = c->details.deadline;
            on_request(c, ev.success);
            break;
        }
        case TAG_FINISH: {
            rpc_ctx *c = CTX_OF(t, t_finish);
            if (c->recv_cancelled) atomic_store(&c->cancelled, 1);
            access_log(c);
            if (s->observe) s->observe(s->observe_user, rpc_ctx_method(c), c->code, (int64_t)(elapsed_ms(&c->t0) * 1000));
            if (c->is_async) async_end(c);
            ctx_unref(c);
            break;
        }
        case TAG_SEND: {
            rpc_ctx *c = CTX_OF(t, t_send);
            if (c->is_async) {
                async_sent(c, ev.success);
                ctx_unref(c);
                break;
            }
            pthread_mutex_lock(&c->mu);
            c->send_done = 1;
            c->send_ok = ev.success;
            pthread_cond_signal(&c->cv);
            pthread_mutex_unlock(&c->mu);
            break;
        }
        case TAG_RECV: {
            rpc_ctx *c = CTX_OF(t, t_recv);
            pthread_mutex_lock(&c->mu);
            c->recv_done = 1;
            c->recv_ok = ev.success;
            pthread_cond_signal(&c->cv);
            pthread_mutex_unlock(&c->mu);
            ctx_unref(c);
            break;
        }
        case TAG_CLOSE: {
            rpc_ctx *c = CTX_OF(t, t_close);
            if (c->recv_cancelled) atomic_store(&c->cancelled, 1);
            if (c->is_async) async_end(c);
            ctx_unref(c);
            break;
        }
        case TAG_SHUTDOWN:
            pthread_mutex_lock(&s->mu);
            s->shutdown_done = 1;
            pthread_cond_broadcast(&s->cv);
            pthread_mutex_unlock(&s->mu);
            break;
        }
    }
    return NULL;
}

/* ---- health (grpc.health.v1.Health) ------------------------------------------------------- */

static int health_lookup(rpc_server *s, const char *svc, unsigned long *version)
{
    int st = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
    pthread_mutex_lock(&s->hmu);
    for (size_t i = 0; i < s->n_health; i++) {
        if (strcmp(s->health[i].service, svc) == 0) {
            st = s->health[i].serving ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                                      : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
            break;
        }
    }
    if (version) *version = s->hversion;
    pthread_mutex_unlock(&s->hmu);
    return st;
}

static int health_check(rpc_ctx *c, const void *reqv, void *respv, void *user)
{
    const Grpc__Health__V1__HealthCheckRequest *req = reqv;
    Grpc__Health__V1__HealthCheckResponse *resp = respv;
    int st = health_lookup(user, req->service, NULL);
    if (st == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN)
        return rpc_ctx_errorf(c, RPC_NOT_FOUND, "unknown service %s", req->service);
    resp->status = st;
    return RPC_OK;
}

static int health_watch(rpc_ctx *c, const void *reqv, void *user)
{
    const Grpc__Health__V1__HealthCheckRequest *req = reqv;
    rpc_server *s = user;
    unsigned long version;
    int last = -1;
    for (;;) {
        int st = health_lookup(s, req->service, &version);
        if (st != last) {
            Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
            r.status = st;
            if (rpc_ctx_send(c, &r.base) != 0) return RPC_CANCELLED;
            last = st;
        }
        pthread_mutex_lock(&s->hmu);
        while (s->hversion == version && !rpc_ctx_cancelled(c)) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 200 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
            pthread_cond_timedwait(&s->hcv, &s->hmu, &ts);
        }
        pthread_mutex_unlock(&s->hmu);
        if (rpc_ctx_cancelled(c)) return RPC_OK;
    }
}

void rpc_server_set_health(rpc_server *s, const char *service, int serving)
{
    pthread_mutex_lock(&s->hmu);
    size_t i;
    for (i = 0; i < s->n_health; i++)
        if (strcmp(s->health[i].service, service) == 0) break;
    if (i == s->n_health) {
        struct health_entry *h = realloc(s->health, (s->n_health + 1) * sizeof *h);
        char *name = strdup(service);
        if (!h || !name) abort();
        s->health = h;
        s->health[i].service = name;
        s->n_health++;
    }
    s->health[i].serving = serving;
    s->hversion++;
    pthread_cond_broadcast(&s->hcv);
    pthread_mutex_unlock(&s->hmu);
}

/* ---- server lifetime ---------------------------------------------------------------------- */

rpc_server *rpc_server_new(const rpc_server_opts *o, char *err, size_t errlen)
{
    if (!o->listen || !o->listen[0]) {
        snprintf(err, errlen, "no listen address");
        return NULL;
    }
    rpc_runtime_init();
    rpc_server *s = calloc(1, sizeof *s);
    if (!s) abort();
    snprintf(s->name, sizeof s->name, "%s", o->name ? o->name : "server");
    s->quiet = o->quiet_access_log;
    s->observe = o->observe;
    s->observe_user = o->observe_user;
    s->max_streams = o->max_streams > 0 ? o->max_streams : 1024;
    s->max_per_conn = o->max_streams_per_conn > 0 ? o->max_streams_per_conn : 1000;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    /* One worker per core measured fastest (bench/RESULTS.md): handlers that wait return
     * RPC_PENDING or run as RPC_METHOD_SLOW instead of holding a worker. */
    s->n_workers = o->workers > 0 ? o->workers : (int)(ncpu > 2 ? ncpu : 2);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_mutex_init(&s->hmu, NULL);
    pthread_cond_init(&s->hcv, NULL);
    s->t_shutdown.kind = TAG_SHUTDOWN;
    if (getrandom(&s->trace_base, sizeof s->trace_base, 0) != sizeof s->trace_base)
        s->trace_base = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);

    rpc_settings st = o->settings;
    if (st.max_message_bytes == 0 && st.keepalive_time_ms == 0) rpc_settings_defaults(&st, RPC_PROFILE_SERVER);
    wire_args wa;
    wire_args_build(&wa, &st, 1, NULL, NULL);
    s->server = grpc_server_create(&wa.ca, NULL);
    s->cqs = calloc((size_t)s->n_workers, sizeof *s->cqs);
    s->wargs = calloc((size_t)s->n_workers, sizeof *s->wargs);
    if (!s->cqs || !s->wargs) abort();
    for (int i = 0; i < s->n_workers; i++) {
        s->cqs[i] = grpc_completion_queue_create_for_next(NULL);
        grpc_server_register_completion_queue(s->server, s->cqs[i], NULL);
        s->wargs[i] = (struct worker_arg){s, i};
    }

    if (o->tls.enabled && !(s->tls = wire_tls_src_new(&o->tls, s->name, err, errlen))) goto fail;
    if (!o->tls.enabled)
        log_warn("rpc.plaintext", "server=%s msg=\"serving without TLS: anyone who can reach the port can call it\"", s->name);
    for (size_t i = 0; o->listen[i]; i++) {
        if (i >= MAX_LISTEN) {
            snprintf(err, errlen, "at most %d listen addresses", MAX_LISTEN);
            goto fail;
        }
        /* Credentials per port: each port's certificate fetcher tracks what it handed out. */
        grpc_server_credentials *creds = s->tls ? wire_tls_src_creds(s->tls, err, errlen) : wire_server_creds(&o->tls, err, errlen);
        if (!creds) goto fail;
        int port = grpc_server_add_http2_port(s->server, o->listen[i], creds);
        grpc_server_credentials_release(creds);
        if (port == 0) {
            snprintf(err, errlen, "cannot listen on %s (address in use, not local, or malformed)", o->listen[i]);
            goto fail;
        }
        s->ports[s->n_ports++] = port;
    }

    s->health_methods[0] = (rpc_method){"/grpc.health.v1.Health/Check", &grpc__health__v1__health_check_request__descriptor,
                                        &grpc__health__v1__health_check_response__descriptor, health_check, NULL, s, 0};
    s->health_methods[1] = (rpc_method){"/grpc.health.v1.Health/Watch", &grpc__health__v1__health_check_request__descriptor,
                                        &grpc__health__v1__health_check_response__descriptor, NULL, health_watch, s, 0};
    if (rpc_server_add_methods(s, s->health_methods, 2, err, errlen) != 0) goto fail;
    return s;
fail:
    grpc_server_destroy(s->server);
    wire_tls_src_free(s->tls);
    for (int i = 0; i < s->n_workers; i++) {
        grpc_completion_queue_shutdown(s->cqs[i]);
        grpc_completion_queue_destroy(s->cqs[i]);
    }
    free(s->cqs);
    free(s->wargs);
    free(s->methods);
    free(s);
    grpc_shutdown();
    return NULL;
}

int rpc_server_add_methods(rpc_server *s, const rpc_method *methods, size_t n, char *err, size_t errlen)
{
    if (s->started) {
        snprintf(err, errlen, "methods must be added before the server starts");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const rpc_method *m = &methods[i];
        if (!m->path || !m->req || !m->resp || (!m->unary == !m->stream)) {
            snprintf(err, errlen, "method %s: needs a path, both descriptors and one handler",
                     m->path ? m->path : "(null)");
            return -1;
        }
        if (s->n_methods == s->cap_methods) {
            s->cap_methods = s->cap_methods ? s->cap_methods * 2 : 16;
            s->methods = realloc(s->methods, s->cap_methods * sizeof *s->methods);
            if (!s->methods) abort();
        }
        void *h = grpc_server_register_method(s->server, m->path, NULL, GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
        if (!h) {
            snprintf(err, errlen, "method %s: registered twice", m->path);
            return -1;
        }
        s->methods[s->n_methods++] = (struct smethod){m, h, NULL};
    }
    return 0;
}

int rpc_server_add_bidi_methods(rpc_server *s, const rpc_bidi_method *methods, size_t n, char *err,
                                size_t errlen)
{
    if (s->started) {
        snprintf(err, errlen, "methods must be added before the server starts");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const rpc_bidi_method *b = &methods[i];
        if (!b->path || !b->req || !b->resp || !b->bidi) {
            snprintf(err, errlen, "method %s: needs a path, both descriptors and a handler",
                     b->path ? b->path : "(null)");
            return -1;
        }
        if (s->n_methods == s->cap_methods) {
            s->cap_methods = s->cap_methods ? s->cap_methods * 2 : 16;
            s->methods = realloc(s->methods, s->cap_methods * sizeof *s->methods);
            if (!s->methods) abort();
        }
        /* No initial payload: the handler reads every message with rpc_ctx_recv(). */
        void *h = grpc_server_register_method(s->server, b->path, NULL, GRPC_SRM_PAYLOAD_NONE, 0);
        if (!h) {
            snprintf(err, errlen, "method %s: registered twice", b->path);
            return -1;
        }
        rpc_method *m = calloc(1, sizeof *m);
        if (!m) abort();
        m->path = b->path;
        m->req = b->req;
        m->resp = b->resp;
        m->user = b->user;
        s->methods[s->n_methods++] = (struct smethod){m, h, b->bidi};
    }
    return 0;
}

int rpc_server_start(rpc_server *s, char *err, size_t errlen)
{
    if (s->started) {
        snprintf(err, errlen, "already started");
        return -1;
    }
    grpc_server_start(s->server);
    s->started = 1;
    for (int q = 0; q < s->n_workers; q++) {
        for (size_t i = 0; i < s->n_methods; i++)
            for (int k = 0; k < POSTS_PER_METHOD; k++) post_request(s, &s->methods[i], q);
        for (int k = 0; k < GENERIC_POSTS; k++) post_request(s, NULL, q);
    }
    s->workers = calloc((size_t)s->n_workers, sizeof *s->workers);
    if (!s->workers) abort();
    for (int i = 0; i < s->n_workers; i++) {
        int e = pthread_create(&s->workers[i], NULL, worker_main, &s->wargs[i]);
        if (e == 0) s->n_threads++;
        if (e != 0) {
            snprintf(err, errlen, "cannot start worker thread: %s", strerror(e));
            return -1;
        }
    }
    rpc_server_set_health(s, "", 1);
    for (size_t i = 0; i < s->n_ports; i++)
        log_info("rpc.listen", "server=%s port=%d workers=%d", s->name, s->ports[i], s->n_workers);
    return 0;
}

int rpc_server_port(const rpc_server *s, size_t i) { return i < s->n_ports ? s->ports[i] : 0; }

const char *rpc_server_method_path(const rpc_server *s, size_t i)
{
    return i < s->n_methods ? s->methods[i].m->path : NULL;
}

/* Waits until the core has closed every connection, every accepted call is freed (a
 * handler may still be running after its client went away) and every handler thread is out
 * of the server (it touches s->mu after its call is freed). ms < 0 waits for ever. */
static int wait_shutdown(rpc_server *s, int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
    pthread_mutex_lock(&s->mu);
    while (!s->shutdown_done || s->calls_live > 0 || s->threads_live > 0) {
        if (ms < 0) pthread_cond_wait(&s->cv, &s->mu);
        else if (pthread_cond_timedwait(&s->cv, &s->mu, &ts) == ETIMEDOUT) break;
    }
    int done = s->shutdown_done && s->calls_live == 0 && s->threads_live == 0;
    pthread_mutex_unlock(&s->mu);
    return done;
}

void rpc_server_shutdown(rpc_server *s, int64_t grace_ms)
{
    if (s->shut) return;
    s->shut = 1;
    if (!s->started) return;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    /* Health first, so that watchers and load balancers see us leave before the port closes. */
    pthread_mutex_lock(&s->hmu);
    for (size_t i = 0; i < s->n_health; i++) s->health[i].serving = 0;
    s->hversion++;
    pthread_cond_broadcast(&s->hcv);
    pthread_mutex_unlock(&s->hmu);
    pthread_mutex_lock(&s->mu);
    atomic_store(&s->stopping, 1);
    for (struct idle_slot *i = s->idle; i; i = i->next) pthread_cond_signal(&i->cv); /* they finish */
    /* Async streams hold no thread that could notice: tell their owners, who complete them. */
    size_t n_async = 0;
    for (rpc_ctx *c = s->async_head; c; c = c->anext) n_async++;
    rpc_ctx **ends = n_async ? calloc(n_async, sizeof *ends) : NULL;
    size_t k = 0;
    for (rpc_ctx *c = s->async_head; c && ends; c = c->anext) {
        int r = atomic_load(&c->refs);
        while (r > 0 && !atomic_compare_exchange_weak(&c->refs, &r, r + 1)) {}
        if (r > 0) ends[k++] = c; /* r == 0: being freed, waiting for this lock to unlist */
    }
    pthread_mutex_unlock(&s->mu);
    for (size_t i = 0; i < k; i++) {
        async_end(ends[i]);
        ctx_unref(ends[i]);
    }
    free(ends);
    grpc_server_shutdown_and_notify(s->server, s->cqs[0], &s->t_shutdown);
    int cancelled = 0;
    if (!wait_shutdown(s, grace_ms < 0 ? 0 : grace_ms)) {
        cancelled = 1;
        grpc_server_cancel_all_calls(s->server);
        wait_shutdown(s, -1);
    }
    for (int i = 0; i < s->n_workers; i++) grpc_completion_queue_shutdown(s->cqs[i]);
    for (int i = 0; i < s->n_threads; i++) pthread_join(s->workers[i], NULL);
    log_info("rpc.shutdown", "server=%s duration_ms=%.1f cancelled_calls=%d", s->name, elapsed_ms(&t0), cancelled);
}

int rpc_server_reload_tls(rpc_server *s)
{
    if (!s->tls) return 0;
    return wire_tls_src_reload(s->tls, 1) < 0 ? -1 : 0;
}

void rpc_server_free(rpc_server *s)
{
    if (!s) return;
    rpc_server_shutdown(s, 0);
    grpc_server_destroy(s->server);
    wire_tls_src_free(s->tls); /* no handshake after the server is gone */
    for (int i = 0; i < s->n_workers; i++) {
        if (!s->started) grpc_completion_queue_shutdown(s->cqs[i]);
        grpc_completion_queue_destroy(s->cqs[i]);
    }
    free(s->cqs);
    free(s->wargs);
    for (size_t i = 0; i < s->n_health; i++) free(s->health[i].service);
    free(s->health);
    for (size_t i = 0; i < s->n_methods; i++)
        if (s->methods[i].bidi) free((rpc_method *)s->methods[i].m);
    free(s->methods);
    free(s->workers);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->hmu);
    pthread_cond_destroy(&s->hcv);
    free(s);
    grpc_shutdown();
}
