/* rpc client: channels, unary calls with deadlines and retries, server-stream readers.
 *
 * Each call runs on a completion queue of its own, plucked by the calling thread, so calls are
 * blocking and any number of threads can share one channel without a dispatcher thread. */
#include "rpc/client.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "base/log.h"
#include "rpc/runtime.h"
#include "rpc/wire.h"

#define MAX_MD 16

struct rpc_channel {
    grpc_channel *ch;
    char *target; /* as the caller gave it */
};

struct rpc_stream {
    grpc_completion_queue *cq;
    grpc_call *call;
    grpc_metadata_array initial_md;
    int asked_initial_md;
    int finished;
};

static const char round_robin_config[] = "{\"loadBalancingConfig\":[{\"round_robin\":{}}]}";

void rpc_new_trace_id(char *buf)
{
    unsigned char r[16];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        memcpy(r, &ts, sizeof r < sizeof ts ? sizeof r : sizeof ts);
    }
    for (int i = 0; i < 16; i++) snprintf(buf + 2 * i, 3, "%02x", r[i]);
}

/* "a:1,b:2" -> "ipv4:1.2.3.4:1,1.2.3.5:2" (names resolved now), so that the core balances
 * over the list; IPv6 entries make an "ipv6:" list. Returns a heap string or NULL with err. */
static char *list_target(const char *target, char *err, size_t errlen)
{
    char *copy = strdup(target);
    if (!copy) abort();
    size_t cap = strlen(target) * 4 + 64, len = 0;
    char *out = malloc(cap);
    if (!out) abort();
    int family = 0;
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (isspace((unsigned char)*tok)) tok++;
        char host[256], port[16];
        const char *colon = strrchr(tok, ':');
        if (!colon || colon == tok || !colon[1]) {
            snprintf(err, errlen, "target %s: entry \"%s\" is not host:port", target, tok);
            goto fail;
        }
        size_t hl = (size_t)(colon - tok);
        if (*tok == '[' && hl >= 2 && tok[hl - 1] == ']') { tok++; hl -= 2; }
        if (hl >= sizeof host) hl = sizeof host - 1;
        memcpy(host, tok, hl);
        host[hl] = 0;
        snprintf(port, sizeof port, "%s", colon + 1);
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
        int e = getaddrinfo(host, port, &hints, &ai);
        if (e != 0) {
            snprintf(err, errlen, "target %s: cannot resolve %s: %s", target, host, gai_strerror(e));
            goto fail;
        }
        char ip[INET6_ADDRSTRLEN];
        int fam = ai->ai_family;
        if (fam == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)ai->ai_addr)->sin_addr, ip, sizeof ip);
        else
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr, ip, sizeof ip);
        freeaddrinfo(ai);
        if (family && fam != family) {
            snprintf(err, errlen, "target %s: mixes IPv4 and IPv6 addresses", target);
            goto fail;
        }
        if (!family) len += (size_t)snprintf(out + len, cap - len, "%s:", fam == AF_INET ? "ipv4" : "ipv6");
        family = fam;
        len += (size_t)snprintf(out + len, cap - len, fam == AF_INET ? "%s%s:%s" : "%s[%s]:%s",
                                out[len - 1] == ':' ? "" : ",", ip, port);
    }
    free(copy);
    return out;
fail:
    free(copy);
    free(out);
    return NULL;
}

rpc_channel *rpc_channel_new(const char *target, const rpc_client_opts *o, char *err, size_t errlen)
{
    if (!target || !*target) {
        snprintf(err, errlen, "empty target");
        return NULL;
    }
    rpc_client_opts dflt;
    if (!o) {
        memset(&dflt, 0, sizeof dflt);
        o = &dflt;
    }
    rpc_runtime_init();
    char *resolved = NULL;
    const char *service_config = NULL;
    if (strchr(target, ',')) {
        resolved = list_target(target, err, errlen);
        if (!resolved) { grpc_shutdown(); return NULL; }
        service_config = round_robin_config;
    } else if (strncmp(target, "dns:", 4) == 0) {
        service_config = round_robin_config;
    }
    grpc_channel_credentials *creds = wire_channel_creds(&o->tls, err, errlen);
    if (!creds) {
        free(resolved);
        grpc_shutdown();
        return NULL;
    }
    rpc_settings st = o->settings;
    if (st.max_message_bytes == 0 && st.keepalive_time_ms == 0) rpc_settings_defaults(&st, RPC_PROFILE_DAEMON_CLIENT);
    wire_args wa;
    wire_args_build(&wa, &st, 0, service_config, o->tls.enabled ? o->tls.server_name : NULL);
    rpc_channel *c = calloc(1, sizeof *c);
    if (!c) abort();
    c->target = strdup(target);
    c->ch = grpc_channel_create(resolved ? resolved : target, creds, &wa.ca);
    grpc_channel_credentials_release(creds);
    free(resolved);
    if (!o->tls.enabled) log_debug("rpc.plaintext", "target=%s msg=\"channel without TLS\"", target);
    return c;
}

void rpc_channel_free(rpc_channel *c)
{
    if (!c) return;
    grpc_channel_destroy(c->ch);
    free(c->target);
    free(c);
    grpc_shutdown();
}

const char *rpc_channel_target(const rpc_channel *c) { return c->target; }

void rpc_channel_reset_backoff(rpc_channel *c) { grpc_channel_reset_connect_backoff(c->ch); }

static void set_result(rpc_result *r, int code, const char *msg, size_t msglen)
{
    r->code = code;
    r->kind = rpc_error_kind_of(code);
    if (msglen >= sizeof r->message) msglen = sizeof r->message - 1;
    memcpy(r->message, msg, msglen);
    r->message[msglen] = 0;
}

static gpr_timespec deadline_after(int64_t ms)
{
    if (ms <= 0) return gpr_inf_future(GPR_CLOCK_MONOTONIC);
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

/* copy: the caller's strings may not outlive the call (async calls), so copy them into slices
 * that free_md() releases. */
static size_t build_md(grpc_metadata *md, const rpc_call_opts *o, char *tid, int copy)
{
    size_t n = 0;
    if (o && o->trace_id && *o->trace_id) snprintf(tid, 40, "%s", o->trace_id);
    else rpc_new_trace_id(tid);
    md[n].key = grpc_slice_from_static_string("x-trace-id");
    md[n].value = grpc_slice_from_static_string(tid);
    n++;
    if (o && o->metadata) {
        for (size_t i = 0; o->metadata[i] && o->metadata[i + 1] && n < MAX_MD; i += 2) {
            md[n].key = copy ? grpc_slice_from_copied_string(o->metadata[i]) : grpc_slice_from_static_string(o->metadata[i]);
            md[n].value = copy ? grpc_slice_from_copied_string(o->metadata[i + 1]) : grpc_slice_from_static_string(o->metadata[i + 1]);
            n++;
        }
    }
    return n;
}

static void destroy_cq(grpc_completion_queue *cq)
{
    grpc_completion_queue_shutdown(cq);
    grpc_completion_queue_destroy(cq);
}

/* The six operations of a unary call, as one batch. */
static void unary_ops(grpc_op ops[6], grpc_metadata *md, size_t nmd, grpc_byte_buffer *req_bb,
                      grpc_metadata_array *init_md, grpc_byte_buffer **resp_bb, grpc_metadata_array *trail_md,
                      grpc_status_code *status, grpc_slice *details)
{
    memset(ops, 0, 6 * sizeof *ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = nmd;
    ops[0].data.send_initial_metadata.metadata = md;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = req_bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = init_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = resp_bb;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = trail_md;
    ops[5].data.recv_status_on_client.status = status;
    ops[5].data.recv_status_on_client.status_details = details;
}

static int unary_once(rpc_channel *ch, const char *method, grpc_byte_buffer *req_bb,
                      const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                      const rpc_call_opts *o, rpc_result *res)
{
    int64_t timeout = o && o->timeout_ms > 0 ? o->timeout_ms : 30000;
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_slice mslice = grpc_slice_from_static_string(method);
    grpc_call *call = grpc_channel_create_call(ch->ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, mslice, NULL,
                                               deadline_after(timeout), NULL);
    grpc_metadata md[MAX_MD];
    char tid[40];
    size_t nmd = build_md(md, o, tid, 0);
    grpc_metadata_array init_md, trail_md;
    grpc_metadata_array_init(&init_md);
    grpc_metadata_array_init(&trail_md);
    grpc_byte_buffer *resp_bb = NULL;
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_op ops[6];
    unary_ops(ops, md, nmd, req_bb, &init_md, &resp_bb, &trail_md, &status, &details);
    int tag;
    grpc_call_error e = grpc_call_start_batch(call, ops, 6, &tag, NULL);
    if (e != GRPC_CALL_OK) {
        set_result(res, RPC_INTERNAL, grpc_call_error_to_string(e), strlen(grpc_call_error_to_string(e)));
    } else {
        grpc_event ev = grpc_completion_queue_pluck(cq, &tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        (void)ev; /* RECV_STATUS always completes with a status, whatever happened */
        set_result(res, (int)status, (const char *)GRPC_SLICE_START_PTR(details), GRPC_SLICE_LENGTH(details));
        if (status == GRPC_STATUS_OK) {
            ProtobufCMessage *m = NULL;
            if (wire_decode(resp_bb, resp_desc, NULL, &m) != 0) {
                const char *msg = "answer is not a valid message of the expected type";
                set_result(res, RPC_INTERNAL, msg, strlen(msg));
            } else {
                *resp = m;
            }
        }
    }
    if (resp_bb) grpc_byte_buffer_destroy(resp_bb);
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&init_md);
    grpc_metadata_array_destroy(&trail_md);
    grpc_call_unref(call);
    destroy_cq(cq);
    return res->code;
}

int rpc_call_unary(rpc_channel *ch, const char *method, const ProtobufCMessage *req,
                   const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                   const rpc_call_opts *o, rpc_result *res)
{
    *resp = NULL;
    memset(res, 0, sizeof *res);
    int max = o && o->max_attempts > 0 ? o->max_attempts : 3;
    if (!o || !o->idempotent) max = 1;
    int64_t backoff_ms = 100;
    grpc_byte_buffer *bb = wire_encode(req);
    for (int attempt = 1;; attempt++) {
        res->attempts = attempt;
        /* The core moves a sent message's slices out of its byte buffer: send a copy. */
        grpc_byte_buffer *copy = grpc_byte_buffer_copy(bb);
        int code = unary_once(ch, method, copy, resp_desc, resp, o, res);
        grpc_byte_buffer_destroy(copy);
        int retryable = code == RPC_UNAVAILABLE || (code == RPC_DEADLINE_EXCEEDED && o && o->retry_on_deadline);
        if (code == RPC_OK || !retryable || attempt >= max) break;
        log_debug("rpc.retry", "target=%s method=%s attempt=%d code=%s backoff_ms=%lld", ch->target, method,
                  attempt, rpc_code_name(code), (long long)backoff_ms);
        struct timespec ts = {backoff_ms / 1000, (backoff_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        backoff_ms = backoff_ms * 2 > 1000 ? 1000 : backoff_ms * 2;
    }
    grpc_byte_buffer_destroy(bb);
    return res->code;
}

/* ---- server streams ----------------------------------------------------------------------- */

static int run_batch(rpc_stream *st, grpc_op *ops, size_t n)
{
    int tag;
    if (grpc_call_start_batch(st->call, ops, n, &tag, NULL) != GRPC_CALL_OK) return 0;
    grpc_event ev = grpc_completion_queue_pluck(st->cq, &tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    return ev.success;
}

static void stream_status(rpc_stream *st, rpc_result *res)
{
    grpc_metadata_array trail;
    grpc_metadata_array_init(&trail);
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op.data.recv_status_on_client.trailing_metadata = &trail;
    op.data.recv_status_on_client.status = &status;
    op.data.recv_status_on_client.status_details = &details;
    run_batch(st, &op, 1);
    set_result(res, (int)status, (const char *)GRPC_SLICE_START_PTR(details), GRPC_SLICE_LENGTH(details));
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&trail);
    st->finished = 1;
}

int rpc_stream_open(rpc_channel *ch, const char *method, const ProtobufCMessage *req,
                    const rpc_call_opts *o, rpc_stream **out, rpc_result *res)
{
    memset(res, 0, sizeof *res);
    *out = NULL;
    rpc_stream *st = calloc(1, sizeof *st);
    if (!st) abort();
    st->cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_metadata_array_init(&st->initial_md);
    st->call = grpc_channel_create_call(ch->ch, NULL, GRPC_PROPAGATE_DEFAULTS, st->cq,
                                        grpc_slice_from_static_string(method), NULL,
                                        deadline_after(o ? o->timeout_ms : 0), NULL);
    grpc_metadata md[MAX_MD];
    char tid[40];
    size_t nmd = build_md(md, o, tid, 0);
    grpc_byte_buffer *bb = wire_encode(req);
    grpc_op ops[3];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = nmd;
    ops[0].data.send_initial_metadata.metadata = md;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    int ok = run_batch(st, ops, 3);
    grpc_byte_buffer_destroy(bb);
    if (!ok) {
        stream_status(st, res);
        if (res->code == RPC_OK) set_result(res, RPC_UNAVAILABLE, "stream failed to start", 22);
        rpc_stream_close(st);
        return -1;
    }
    res->code = RPC_OK;
    *out = st;
    return 0;
}

void rpc_stream_cancel(rpc_stream *st)
{
    grpc_call_cancel(st->call, NULL); /* thread-safe in the core */
}

int rpc_stream_next(rpc_stream *st, const ProtobufCMessageDescriptor *desc, ProtobufCMessage **msg,
                    rpc_result *res)
{
    *msg = NULL;
    if (st->finished) {
        return 0;
    }
    grpc_byte_buffer *bb = NULL;
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    if (!st->asked_initial_md) {
        /* First read: the server's initial metadata comes with it. */
        ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[n].data.recv_initial_metadata.recv_initial_metadata = &st->initial_md;
        n++;
        st->asked_initial_md = 1;
    }
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n].data.recv_message.recv_message = &bb;
    n++;
    run_batch(st, ops, n);
    if (!bb) {
        stream_status(st, res);
        return 0;
    }
    int rc = wire_decode(bb, desc, NULL, msg);
    grpc_byte_buffer_destroy(bb);
    if (rc != 0) {
        grpc_call_cancel(st->call, NULL);
        stream_status(st, res);
        set_result(res, RPC_INTERNAL, "stream message is not a valid message of the expected type", 58);
        return 0;
    }
    return 1;
}

int rpc_bidi_open(rpc_channel *ch, const char *method, const rpc_call_opts *o, rpc_stream **out,
                  rpc_result *res)
{
    memset(res, 0, sizeof *res);
    *out = NULL;
    rpc_stream *st = calloc(1, sizeof *st);
    if (!st) abort();
    st->cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_metadata_array_init(&st->initial_md);
    st->call = grpc_channel_create_call(ch->ch, NULL, GRPC_PROPAGATE_DEFAULTS, st->cq,
                                        grpc_slice_from_static_string(method), NULL,
                                        deadline_after(o ? o->timeout_ms : 0), NULL);
    grpc_metadata md[MAX_MD];
    char tid[40];
    size_t nmd = build_md(md, o, tid, 0);
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_SEND_INITIAL_METADATA;
    op.data.send_initial_metadata.count = nmd;
    op.data.send_initial_metadata.metadata = md;
    if (!run_batch(st, &op, 1)) {
        stream_status(st, res);
        if (res->code == RPC_OK) set_result(res, RPC_UNAVAILABLE, "stream failed to start", 22);
        rpc_stream_close(st);
        return -1;
    }
    res->code = RPC_OK;
    *out = st;
    return 0;
}

int rpc_stream_send(rpc_stream *st, const ProtobufCMessage *msg)
{
    if (st->finished) return -1;
    grpc_byte_buffer *bb = wire_encode(msg);
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = bb;
    int ok = run_batch(st, &op, 1);
    grpc_byte_buffer_destroy(bb);
    return ok ? 0 : -1;
}

int rpc_stream_close_send(rpc_stream *st)
{
    if (st->finished) return -1;
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    return run_batch(st, &op, 1) ? 0 : -1;
}

void rpc_stream_close(rpc_stream *st)
{
    if (!st) return;
    if (!st->finished) {
        grpc_call_cancel(st->call, NULL);
        rpc_result r;
        stream_status(st, &r);
    }
    grpc_call_unref(st->call);
    grpc_metadata_array_destroy(&st->initial_md);
    destroy_cq(st->cq);
    free(st);
}

/* ---- asynchronous unary calls ------------------------------------------------------------- */

/* Every tag a loop's queues see starts with this: the completion handler of one batch. Batches
 * of one call all go to one queue, served by one thread, so a call's handlers never overlap. */
typedef struct loop_tag loop_tag;
struct loop_tag {
    void (*done)(loop_tag *t, int success);
};

struct rpc_loop {
    int n;
    grpc_completion_queue **cqs;
    pthread_t *threads;
    atomic_uint next;
    /* Open async streams, so that rpc_loop_free() can cancel them (their queues would never
     * drain otherwise). */
    pthread_mutex_t mu;
    pthread_cond_t streams_gone; /* signalled when the last stream leaves the list */
    rpc_astream *streams;
};

/* An async server stream: a start batch (send the request, receive the initial metadata and,
 * at the end, the status) and one receive batch at a time, so messages reach the caller in
 * order. pending counts the batches in flight; on_end runs when the status is in
 * and none is left. Two references: the loop's (until on_end has returned) and the caller's
 * (until rpc_stream_async_release()), so cancel is safe whenever the caller holds one. */
struct rpc_astream {
    loop_tag recv_tag, status_tag;
    rpc_loop *loop;
    rpc_astream *prev, *next; /* loop->streams, under loop->mu */
    grpc_call *call;
    const ProtobufCMessageDescriptor *desc;
    rpc_stream_msg_cb on_msg;
    rpc_stream_end_cb on_end;
    void *user;
    grpc_byte_buffer *req_bb, *recv_bb;
    grpc_metadata md[MAX_MD];
    size_t nmd;
    char tid[40];
    grpc_metadata_array init_md, trail_md;
    grpc_status_code status;
    grpc_slice details;
    atomic_int pending, refs;
    int status_in;
    int bad_message; /* a message did not decode: the call was cancelled, the end says INTERNAL */
};

struct async_call {
    loop_tag tag;
    grpc_call *call;
    const ProtobufCMessageDescriptor *resp_desc;
    rpc_unary_cb cb;
    void *user;
    grpc_byte_buffer *req_bb, *resp_bb;
    grpc_metadata md[MAX_MD];
    size_t nmd;
    char tid[40];
    grpc_metadata_array init_md, trail_md;
    grpc_status_code status;
    grpc_slice details;
};

static void async_done(loop_tag *t, int success)
{
    (void)success; /* RECV_STATUS always completes with a status, whatever happened */
    struct async_call *a = (struct async_call *)t;
    rpc_result res;
    memset(&res, 0, sizeof res);
    res.attempts = 1;
    set_result(&res, (int)a->status, (const char *)GRPC_SLICE_START_PTR(a->details), GRPC_SLICE_LENGTH(a->details));
    ProtobufCMessage *m = NULL;
    if (a->status == GRPC_STATUS_OK && wire_decode(a->resp_bb, a->resp_desc, NULL, &m) != 0) {
        const char *msg = "answer is not a valid message of the expected type";
        set_result(&res, RPC_INTERNAL, msg, strlen(msg));
    }
    a->cb(a->user, m, &res);
    for (size_t i = 1; i < a->nmd; i++) { /* [0] is the trace id, pointing into a->tid */
        grpc_slice_unref(a->md[i].key);
        grpc_slice_unref(a->md[i].value);
    }
    grpc_byte_buffer_destroy(a->req_bb);
    if (a->resp_bb) grpc_byte_buffer_destroy(a->resp_bb);
    grpc_slice_unref(a->details);
    grpc_metadata_array_destroy(&a->init_md);
    grpc_metadata_array_destroy(&a->trail_md);
    grpc_call_unref(a->call);
    free(a);
}

static void *loop_main(void *arg)
{
    pthread_setname_np(pthread_self(), "rpc-client-cq");
    grpc_completion_queue *cq = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type == GRPC_OP_COMPLETE) {
            loop_tag *t = ev.tag;
            t->done(t, ev.success);
        }
    }
    return NULL;
}

rpc_loop *rpc_loop_new(int threads, char *err, size_t errlen)
{
    if (threads < 1) threads = 1;
    rpc_runtime_init();
    rpc_loop *l = calloc(1, sizeof *l);
    if (!l) abort();
    l->n = threads;
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->streams_gone, NULL);
    l->cqs = calloc((size_t)threads, sizeof *l->cqs);
    l->threads = calloc((size_t)threads, sizeof *l->threads);
    if (!l->cqs || !l->threads) abort();
    for (int i = 0; i < threads; i++) {
        l->cqs[i] = grpc_completion_queue_create_for_next(NULL);
        int e = pthread_create(&l->threads[i], NULL, loop_main, l->cqs[i]);
        if (e != 0) {
            snprintf(err, errlen, "cannot start a loop thread: %s", strerror(e));
            l->n = i;
            grpc_completion_queue_destroy(l->cqs[i]);
            rpc_loop_free(l);
            return NULL;
        }
    }
    return l;
}

void rpc_loop_free(rpc_loop *l)
{
    if (!l) return;
    pthread_mutex_lock(&l->mu);
    for (rpc_astream *s = l->streams; s; s = s->next) grpc_call_cancel(s->call, NULL);
    /* A cancelled stream may still hold a message that arrived before the cancel; its
     * completion starts the next receive, and starting a batch on a queue already shut down
     * aborts the process in the core. So the queues shut down only once every stream ended. */
    while (l->streams) pthread_cond_wait(&l->streams_gone, &l->mu);
    pthread_mutex_unlock(&l->mu);
    /* Shutdown is queued behind every pending completion, so in-flight calls finish first. */
    for (int i = 0; i < l->n; i++) grpc_completion_queue_shutdown(l->cqs[i]);
    for (int i = 0; i < l->n; i++) {
        pthread_join(l->threads[i], NULL);
        grpc_completion_queue_destroy(l->cqs[i]);
    }
    free(l->cqs);
    free(l->threads);
    pthread_cond_destroy(&l->streams_gone);
    pthread_mutex_destroy(&l->mu);
    free(l);
    grpc_shutdown();
}

int rpc_call_unary_async(rpc_loop *l, rpc_channel *ch, const char *method, const ProtobufCMessage *req,
                         const ProtobufCMessageDescriptor *resp_desc, const rpc_call_opts *o,
                         rpc_unary_cb cb, void *user)
{
    struct async_call *a = calloc(1, sizeof *a);
    if (!a) abort();
    a->tag.done = async_done;
    a->resp_desc = resp_desc;
    a->cb = cb;
    a->user = user;
    a->req_bb = wire_encode(req);
    a->details = grpc_empty_slice();
    a->status = GRPC_STATUS_UNKNOWN;
    grpc_metadata_array_init(&a->init_md);
    grpc_metadata_array_init(&a->trail_md);
    grpc_completion_queue *cq = l->cqs[atomic_fetch_add(&l->next, 1) % (unsigned)l->n];
    int64_t timeout = o && o->timeout_ms > 0 ? o->timeout_ms : 30000;
    a->call = grpc_channel_create_call(ch->ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, grpc_slice_from_static_string(method),
                                       NULL, deadline_after(timeout), NULL);
    a->nmd = build_md(a->md, o, a->tid, 1);
    size_t nmd = a->nmd;
    grpc_op ops[6];
    unary_ops(ops, a->md, nmd, a->req_bb, &a->init_md, &a->resp_bb, &a->trail_md, &a->status, &a->details);
    grpc_call_error e = grpc_call_start_batch(a->call, ops, 6, a, NULL);
    if (e != GRPC_CALL_OK) {
        a->status = GRPC_STATUS_INTERNAL;
        grpc_slice_unref(a->details);
        a->details = grpc_slice_from_copied_string(grpc_call_error_to_string(e));
        async_done(&a->tag, 0);
    }
    return 0;
}

/* ---- asynchronous server streams ----------------------------------------------------------- */

static void astream_unref(rpc_astream *s)
{
    if (atomic_fetch_sub(&s->refs, 1) != 1) return;
    for (size_t i = 1; i < s->nmd; i++) { /* [0] is the trace id, pointing into s->tid */
        grpc_slice_unref(s->md[i].key);
        grpc_slice_unref(s->md[i].value);
    }
    if (s->req_bb) grpc_byte_buffer_destroy(s->req_bb);
    if (s->recv_bb) grpc_byte_buffer_destroy(s->recv_bb);
    grpc_slice_unref(s->details);
    grpc_metadata_array_destroy(&s->init_md);
    grpc_metadata_array_destroy(&s->trail_md);
    grpc_call_unref(s->call);
    free(s);
}

static void astream_maybe_end(rpc_astream *s)
{
    if (!s->status_in || atomic_load(&s->pending) != 0) return;
    rpc_result res;
    memset(&res, 0, sizeof res);
    res.attempts = 1;
    if (s->bad_message) {
        const char *msg = "stream message is not a valid message of the expected type";
        set_result(&res, RPC_INTERNAL, msg, strlen(msg));
    } else {
        set_result(&res, (int)s->status, (const char *)GRPC_SLICE_START_PTR(s->details), GRPC_SLICE_LENGTH(s->details));
    }
    rpc_loop *l = s->loop;
    pthread_mutex_lock(&l->mu);
    if (s->prev) s->prev->next = s->next;
    else l->streams = s->next;
    if (s->next) s->next->prev = s->prev;
    if (!l->streams) pthread_cond_broadcast(&l->streams_gone);
    pthread_mutex_unlock(&l->mu);
    s->on_end(s->user, &res);
    astream_unref(s);
}

/* Starts the next receive; its count in pending was taken by the caller. */
static void astream_recv(rpc_astream *s)
{
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &s->recv_bb;
    if (grpc_call_start_batch(s->call, &op, 1, &s->recv_tag, NULL) != GRPC_CALL_OK) {
        /* Cannot read on: end the call (its status batch then completes). Should the status be
         * in already, this is the last count and ends the stream here. */
        grpc_call_cancel(s->call, NULL);
        if (atomic_fetch_sub(&s->pending, 1) == 1) astream_maybe_end(s);
    }
}

static void astream_recv_done(loop_tag *t, int success)
{
    (void)success; /* no message (NULL) is what tells that the stream is over */
    rpc_astream *s = (rpc_astream *)((char *)t - offsetof(rpc_astream, recv_tag));
    grpc_byte_buffer *bb = s->recv_bb;
    s->recv_bb = NULL;
    if (bb) {
        ProtobufCMessage *m = NULL;
        int rc = wire_decode(bb, s->desc, NULL, &m);
        grpc_byte_buffer_destroy(bb);
        if (rc != 0) {
            s->bad_message = 1;
            grpc_call_cancel(s->call, NULL);
        } else {
            s->on_msg(s->user, m);
            atomic_fetch_add(&s->pending, 1);
            astream_recv(s);
        }
    }
    atomic_fetch_sub(&s->pending, 1);
    astream_maybe_end(s);
}

static void astream_status_done(loop_tag *t, int success)
{
    (void)success;
    rpc_astream *s = (rpc_astream *)((char *)t - offsetof(rpc_astream, status_tag));
    s->status_in = 1;
    atomic_fetch_sub(&s->pending, 1);
    astream_maybe_end(s);
}

int rpc_stream_async_open(rpc_loop *l, rpc_channel *ch, const char *method, const ProtobufCMessage *req,
                          const ProtobufCMessageDescriptor *msg_desc, const rpc_call_opts *o, rpc_stream_msg_cb on_msg,
                          rpc_stream_end_cb on_end, void *user, rpc_astream **out)
{
    rpc_astream *s = calloc(1, sizeof *s);
    if (!s) abort();
    s->recv_tag.done = astream_recv_done;
    s->status_tag.done = astream_status_done;
    s->loop = l;
    s->desc = msg_desc;
    s->on_msg = on_msg;
    s->on_end = on_end;
    s->user = user;
    s->req_bb = wire_encode(req);
    s->details = grpc_empty_slice();
    s->status = GRPC_STATUS_UNKNOWN;
    grpc_metadata_array_init(&s->init_md);
    grpc_metadata_array_init(&s->trail_md);
    atomic_init(&s->refs, out ? 2 : 1);
    atomic_init(&s->pending, 2); /* the start batch and the first receive */
    if (out) *out = s;
    grpc_completion_queue *cq = l->cqs[atomic_fetch_add(&l->next, 1) % (unsigned)l->n];
    s->call = grpc_channel_create_call(ch->ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, grpc_slice_from_static_string(method), NULL,
                                       deadline_after(o ? o->timeout_ms : 0), NULL);
    s->nmd = build_md(s->md, o, s->tid, 1);
    pthread_mutex_lock(&l->mu);
    s->next = l->streams;
    if (l->streams) l->streams->prev = s;
    l->streams = s;
    pthread_mutex_unlock(&l->mu);

    /* The status rides with the start: that batch completes when the call is over. */
    grpc_op ops[5];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = s->nmd;
    ops[0].data.send_initial_metadata.metadata = s->md;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = s->req_bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &s->init_md;
    ops[4].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[4].data.recv_status_on_client.trailing_metadata = &s->trail_md;
    ops[4].data.recv_status_on_client.status = &s->status;
    ops[4].data.recv_status_on_client.status_details = &s->details;
    grpc_call_error e = grpc_call_start_batch(s->call, ops, 5, &s->status_tag, NULL);
    if (e != GRPC_CALL_OK) {
        /* Nothing is in flight: end it here, on the caller's thread. */
        s->status = GRPC_STATUS_INTERNAL;
        grpc_slice_unref(s->details);
        s->details = grpc_slice_from_copied_string(grpc_call_error_to_string(e));
        s->status_in = 1;
        atomic_store(&s->pending, 0);
        astream_maybe_end(s);
        return 0;
    }
    astream_recv(s);
    return 0;
}

void rpc_stream_async_cancel(rpc_astream *s)
{
    grpc_call_cancel(s->call, NULL); /* thread-safe in the core; a no-op once the call is over */
}

void rpc_stream_async_release(rpc_astream *s)
{
    if (s) astream_unref(s);
}
