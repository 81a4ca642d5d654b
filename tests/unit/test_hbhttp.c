/* Heartbeat endpoint over real HTTP on 127.0.0.1: every answer it can give, the callback's
 * view of a request, the counters, and start-up failures. The client is a plain socket. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <jansson.h>

#include "daemon/hbhttp.h"

/* What the callback saw (it runs on the server's thread). */
struct seen {
    pthread_mutex_t mu;
    int calls;
    char agent_id[64];
    char status[32];
    int pid;
    double cpu, memory;
    int64_t timestamp;
    unsigned fields;
};

static int on_heartbeat(void *user, const hb_report *r)
{
    struct seen *s = user;
    pthread_mutex_lock(&s->mu);
    s->calls++;
    snprintf(s->agent_id, sizeof s->agent_id, "%s", r->agent_id);
    snprintf(s->status, sizeof s->status, "%s", r->status ? r->status : "(null)");
    s->pid = r->pid;
    s->cpu = r->cpu;
    s->memory = r->memory;
    s->timestamp = r->timestamp;
    s->fields = r->fields;
    pthread_mutex_unlock(&s->mu);
    if (strcmp(r->agent_id, "web") == 0 || strcmp(r->agent_id, "db") == 0) return 0;
    if (strcmp(r->agent_id, "broken") == 0) return 7;
    return HB_UNKNOWN_AGENT;
}

struct fixture {
    hbhttp *srv;
    int port;
    struct seen seen;
};

static int start(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    if (!f) return -1;
    pthread_mutex_init(&f->seen.mu, NULL);
    hbhttp_options o = {.host = "127.0.0.1", .port = 0, .on_heartbeat = on_heartbeat, .user = &f->seen};
    char err[256];
    if (hbhttp_start(&o, &f->srv, err, sizeof err) != 0) {
        fprintf(stderr, "hbhttp_start: %s\n", err);
        free(f);
        return -1;
    }
    f->port = hbhttp_port(f->srv);
    *state = f;
    return 0;
}

static int stop(void **state)
{
    struct fixture *f = *state;
    hbhttp_stop(f->srv);
    pthread_mutex_destroy(&f->seen.mu);
    free(f);
    return 0;
}

struct resp {
    int status;
    char head[2048];
    json_t *body;     /* parsed JSON body, or NULL */
};

/* Sends raw bytes, reads the whole answer (the requests say Connection: close). */
static void exchange(int port, const char *req, size_t len, struct resp *out)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    for (size_t off = 0; off < len;) {
        ssize_t w = send(fd, req + off, len - off, MSG_NOSIGNAL);
        if (w <= 0) break; /* the server may answer (413) and close before taking it all */
        off += (size_t)w;
    }
    static char buf[1 << 17];
    size_t n = 0;
    for (;;) {
        ssize_t r = recv(fd, buf + n, sizeof buf - 1 - n, 0);
        if (r <= 0) break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = 0;
    memset(out, 0, sizeof *out);
    if (sscanf(buf, "HTTP/1.%*d %d", &out->status) != 1) fail_msg("no status line in: %s", buf);
    char *body = strstr(buf, "\r\n\r\n");
    assert_non_null(body);
    snprintf(out->head, sizeof out->head, "%.*s", (int)(body - buf), buf);
    body += 4;
    out->body = json_loads(body, 0, NULL);
}

static void request(int port, const char *method, const char *path, const char *body, struct resp *out)
{
    size_t blen = body ? strlen(body) : 0;
    char *req = malloc(blen + 512);
    assert_non_null(req);
    int n = snprintf(req, 512, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n", method, path);
    if (body) n += snprintf(req + n, 512 - (size_t)n, "Content-Type: application/json\r\nContent-Length: %zu\r\n", blen);
    n += snprintf(req + n, 512 - (size_t)n, "\r\n");
    if (body) memcpy(req + n, body, blen);
    exchange(port, req, (size_t)n + blen, out);
    free(req);
}

static const char *jstr(const struct resp *r, const char *key)
{
    json_t *v = r->body ? json_object_get(r->body, key) : NULL;
    return v && json_is_string(v) ? json_string_value(v) : NULL;
}

static void done(struct resp *r)
{
    json_decref(r->body);
    r->body = NULL;
}

static void accepted(void **state)
{
    struct fixture *f = *state;
    struct resp r;
    request(f->port, "POST", "/heartbeat",
            "{\"agent_id\":\"web\",\"pid\":4242,\"status\":\"running\",\"cpu\":12.5,"
            "\"memory\":1048576,\"timestamp\":1700000000,\"extra\":[1,2]}", &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.head, "Content-Type: application/json"));
    assert_string_equal(jstr(&r, "status"), "ok");
    done(&r);
    assert_int_equal(f->seen.calls, 1);
    assert_string_equal(f->seen.agent_id, "web");
    assert_string_equal(f->seen.status, "running");
    assert_int_equal(f->seen.pid, 4242);
    assert_true(f->seen.cpu == 12.5);
    assert_true(f->seen.memory == 1048576.0);
    assert_int_equal(f->seen.timestamp, 1700000000);
    assert_int_equal(f->seen.fields, HB_HAS_PID | HB_HAS_STATUS | HB_HAS_CPU | HB_HAS_MEMORY | HB_HAS_TIMESTAMP);

    /* Only agent_id is required; cpu may be an integer, null means absent. */
    request(f->port, "POST", "/heartbeat", "{\"agent_id\":\"db\",\"cpu\":3,\"status\":null}", &r);
    assert_int_equal(r.status, 200);
    done(&r);
    assert_string_equal(f->seen.agent_id, "db");
    assert_int_equal(f->seen.fields, HB_HAS_CPU);
    assert_true(f->seen.cpu == 3.0);
    assert_string_equal(f->seen.status, "(null)");
}

static void unknown_agent_and_callback_failure(void **state)
{
    struct fixture *f = *state;
    struct resp r;
    request(f->port, "POST", "/heartbeat", "{\"agent_id\":\"ghost\"}", &r);
    assert_int_equal(r.status, 404);
    assert_string_equal(jstr(&r, "error"), "unknown agent: ghost");
    done(&r);
    request(f->port, "POST", "/heartbeat", "{\"agent_id\":\"broken\"}", &r);
    assert_int_equal(r.status, 500);
    assert_non_null(jstr(&r, "error"));
    done(&r);
}

static void bad_requests(void **state)
{
    struct fixture *f = *state;
    static const struct { const char *body, *field, *error; } cases[] = {
        {"{\"agent_id\": \"web\"", NULL, "invalid JSON"},
        {"", NULL, "invalid JSON"},
        {"[\"web\"]", NULL, "body must be a JSON object"},
        {"{\"pid\": 1}", "agent_id", "agent_id: required"},
        {"{\"agent_id\": 5}", "agent_id", "agent_id: must be a non-empty string"},
        {"{\"agent_id\": \"\"}", "agent_id", "agent_id: must be a non-empty string"},
        {"{\"agent_id\": \"web\", \"pid\": \"12\"}", "pid", "pid: must be a non-negative integer"},
        {"{\"agent_id\": \"web\", \"pid\": -1}", "pid", "pid: must be a non-negative integer"},
        {"{\"agent_id\": \"web\", \"pid\": 1.5}", "pid", "pid: must be a non-negative integer"},
        {"{\"agent_id\": \"web\", \"status\": 3}", "status", "status: must be a string"},
        {"{\"agent_id\": \"web\", \"cpu\": \"high\"}", "cpu", "cpu: must be a number"},
        {"{\"agent_id\": \"web\", \"memory\": true}", "memory", "memory: must be a number"},
        {"{\"agent_id\": \"web\", \"timestamp\": 1.5}", "timestamp", "timestamp: must be an integer (Unix seconds)"},
        {"{\"agent_id\": \"web\", \"agent_id\": \"db\"}", NULL, "invalid JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct resp r;
        request(f->port, "POST", "/heartbeat", cases[i].body, &r);
        if (r.status != 400) fail_msg("%s: status %d", cases[i].body, r.status);
        const char *e = jstr(&r, "error");
        if (!e || strncmp(e, cases[i].error, strlen(cases[i].error)) != 0)
            fail_msg("%s: error %s, want %s", cases[i].body, e ? e : "(none)", cases[i].error);
        if (cases[i].field) assert_string_equal(jstr(&r, "field"), cases[i].field);
        done(&r);
    }
    assert_int_equal(f->seen.calls, 0);
}

static void body_size_limit(void **state)
{
    struct fixture *f = *state;
    /* Exactly the limit is fine. */
    const char *pre = "{\"agent_id\":\"web\",\"pad\":\"", *post = "\"}";
    size_t pad = HBHTTP_MAX_BODY - strlen(pre) - strlen(post);
    char *body = malloc(HBHTTP_MAX_BODY + 2);
    assert_non_null(body);
    sprintf(body, "%s", pre);
    memset(body + strlen(pre), 'x', pad);
    strcpy(body + strlen(pre) + pad, post);
    assert_int_equal(strlen(body), HBHTTP_MAX_BODY);
    struct resp r;
    request(f->port, "POST", "/heartbeat", body, &r);
    assert_int_equal(r.status, 200);
    done(&r);

    /* One byte more, sent in chunks (no length known up front). */
    size_t blen = HBHTTP_MAX_BODY + 1;
    memmove(body + 1, body, HBHTTP_MAX_BODY + 1);
    body[0] = ' ';
    char *req = malloc(blen + 1024);
    assert_non_null(req);
    int n = sprintf(req, "POST /heartbeat HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n");
    for (size_t off = 0; off < blen; off += 20000) {
        size_t c = blen - off < 20000 ? blen - off : 20000;
        n += sprintf(req + n, "%zx\r\n", c);
        memcpy(req + n, body + off, c);
        n += (int)c;
        n += sprintf(req + n, "\r\n");
    }
    n += sprintf(req + n, "0\r\n\r\n");
    exchange(f->port, req, (size_t)n, &r);
    assert_int_equal(r.status, 413);
    assert_non_null(jstr(&r, "error"));
    done(&r);

    /* A declared oversize body is refused before the client sends it. */
    const char *expect = "POST /heartbeat HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                         "Content-Length: 70000\r\nExpect: 100-continue\r\n\r\n";
    exchange(f->port, expect, strlen(expect), &r);
    assert_int_equal(r.status, 413);
    done(&r);
    free(req);
    free(body);
    assert_int_equal(f->seen.calls, 1);
}

static void routes_methods_and_stats(void **state)
{
    struct fixture *f = *state;
    struct resp r;
    request(f->port, "GET", "/", NULL, &r);
    assert_int_equal(r.status, 404);
    done(&r);
    request(f->port, "POST", "/heartbeats", "{\"agent_id\":\"web\"}", &r);
    assert_int_equal(r.status, 404);
    done(&r);
    request(f->port, "GET", "/heartbeat", NULL, &r);
    assert_int_equal(r.status, 405);
    assert_non_null(strstr(r.head, "Allow: POST"));
    done(&r);
    request(f->port, "PUT", "/heartbeat", "{\"agent_id\":\"web\"}", &r);
    assert_int_equal(r.status, 405);
    done(&r);
    request(f->port, "POST", "/heartbeat/stats", "{}", &r);
    assert_int_equal(r.status, 405);
    assert_non_null(strstr(r.head, "Allow: GET"));
    done(&r);

    /* Two accepted, one unknown, one malformed. Routing errors above are not heartbeats. */
    request(f->port, "POST", "/heartbeat", "{\"agent_id\":\"web\"}", &r); done(&r);
    request(f->port, "POST", "/heartbeat", "{\"agent_id\":\"db\"}", &r); done(&r);
    request(f->port, "POST", "/heartbeat", "{\"agent_id\":\"ghost\"}", &r); done(&r);
    request(f->port, "POST", "/heartbeat", "nope", &r); done(&r);
    request(f->port, "GET", "/heartbeat/stats", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(r.body);
    assert_int_equal(json_integer_value(json_object_get(r.body, "received")), 4);
    assert_int_equal(json_integer_value(json_object_get(r.body, "processed")), 2);
    assert_int_equal(json_integer_value(json_object_get(r.body, "errors")), 2);
    done(&r);
    hbhttp_stats s;
    hbhttp_get_stats(f->srv, &s);
    assert_true(s.received == 4 && s.processed == 2 && s.errors == 2);
}

static void start_failures(void **state)
{
    struct fixture *f = *state;
    assert_true(f->port > 0);
    hbhttp_options o = {.host = "127.0.0.1", .port = f->port, .on_heartbeat = on_heartbeat};
    hbhttp *h = (hbhttp *)1;
    char err[256];
    assert_int_equal(hbhttp_start(&o, &h, err, sizeof err), -1);
    assert_null(h);
    char want[64];
    snprintf(want, sizeof want, "http 127.0.0.1:%d: ", f->port);
    assert_non_null(strstr(err, want));
    o.host = "no-such-host.invalid";
    o.port = 0;
    assert_int_equal(hbhttp_start(&o, &h, err, sizeof err), -1);
    assert_non_null(strstr(err, "no-such-host.invalid"));
    o.host = "127.0.0.1";
    o.port = 70000;
    assert_int_equal(hbhttp_start(&o, &h, err, sizeof err), -1);
    hbhttp_stop(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(accepted, start, stop),
        cmocka_unit_test_setup_teardown(unknown_agent_and_callback_failure, start, stop),
        cmocka_unit_test_setup_teardown(bad_requests, start, stop),
        cmocka_unit_test_setup_teardown(body_size_limit, start, stop),
        cmocka_unit_test_setup_teardown(routes_methods_and_stats, start, stop),
        cmocka_unit_test_setup_teardown(start_failures, start, stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
