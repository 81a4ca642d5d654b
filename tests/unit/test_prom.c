/* base/prom: the exposition text byte for byte (escaping, number formatting, cumulative
 * histogram buckets), the histogram accumulator, listen-address parsing, and the listener on
 * a real loopback socket (port 0): /metrics, 404, 405, 500 when the fill fails, and still
 * serving after each of them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "base/prom.h"

static void test_family_and_samples(void **state)
{
    (void)state;
    prom_buf b;
    prom_buf_init(&b);
    prom_family(&b, "x_total", PROM_COUNTER, "Help with a \\ backslash\nand a newline; \"quotes\" stay.");
    prom_sample(&b, "x_total", NULL, 0, 3);
    prom_sample(&b, "x_total", (prom_label[]){{"a", "plain"}, {"b", "q\"uo\\te\nnl"}}, 2, 1.5);
    prom_family(&b, "g", PROM_GAUGE, "");
    prom_sample(&b, "g", (prom_label[]){{"k", ""}}, 1, -2);
    prom_sample(&b, "g", NULL, 0, 0.1);
    prom_sample(&b, "g", NULL, 0, 1e-7);
    prom_sample(&b, "g", NULL, 0, 123456789012.0);
    prom_sample(&b, "g", NULL, 0, 1e20);
    prom_sample(&b, "g", NULL, 0, NAN);
    prom_sample(&b, "g", NULL, 0, INFINITY);
    prom_sample(&b, "g", NULL, 0, -INFINITY);
    prom_sample(&b, "g", NULL, 0, 1.0 / 3);
    assert_false(prom_buf_failed(&b));
    const char *want =
        "# HELP x_total Help with a \\\\ backslash\\nand a newline; \"quotes\" stay.\n"
        "# TYPE x_total counter\n"
        "x_total 3\n"
        "x_total{a=\"plain\",b=\"q\\\"uo\\\\te\\nnl\"} 1.5\n"
        "# HELP g \n"
        "# TYPE g gauge\n"
        "g{k=\"\"} -2\n"
        "g 0.1\n"
        "g 1e-07\n"
        "g 123456789012\n"
        "g 1e+20\n"
        "g NaN\n"
        "g +Inf\n"
        "g -Inf\n"
        "g 0.33333333333333331\n";
    assert_string_equal(b.data, want);
    assert_int_equal(b.len, strlen(want));
    /* Every finite value reads back exactly. */
    assert_true(strtod("0.33333333333333331", NULL) == 1.0 / 3);
    prom_buf_free(&b);
    assert_null(b.data);
}

static void test_histogram(void **state)
{
    (void)state;
    static const double bounds[] = {0.01, 0.1, 1};
    prom_hist h;
    assert_int_equal(prom_hist_init(&h, bounds, 3), 0);
    double obs[] = {0.005, 0.01 /* inclusive upper bound */, 0.05, 0.5, 0.7, 3, 30};
    for (size_t i = 0; i < sizeof obs / sizeof obs[0]; i++) prom_hist_observe(&h, obs[i]);
    assert_int_equal(h.counts[0], 2);
    assert_int_equal(h.counts[1], 1);
    assert_int_equal(h.counts[2], 2);
    assert_int_equal(h.counts[3], 2);
    prom_buf b;
    prom_buf_init(&b);
    prom_family(&b, "lat_seconds", PROM_HISTOGRAM, "Latency.");
    prom_hist_write(&b, "lat_seconds", (prom_label[]){{"method", "Get"}}, 1, &h);
    prom_hist_write(&b, "lat_seconds", NULL, 0, &h);
    const char *want =
        "# HELP lat_seconds Latency.\n"
        "# TYPE lat_seconds histogram\n"
        "lat_seconds_bucket{method=\"Get\",le=\"0.01\"} 2\n"
        "lat_seconds_bucket{method=\"Get\",le=\"0.1\"} 3\n"
        "lat_seconds_bucket{method=\"Get\",le=\"1\"} 5\n"
        "lat_seconds_bucket{method=\"Get\",le=\"+Inf\"} 7\n"
        "lat_seconds_sum{method=\"Get\"} 34.265\n"
        "lat_seconds_count{method=\"Get\"} 7\n"
        "lat_seconds_bucket{le=\"0.01\"} 2\n"
        "lat_seconds_bucket{le=\"0.1\"} 3\n"
        "lat_seconds_bucket{le=\"1\"} 5\n"
        "lat_seconds_bucket{le=\"+Inf\"} 7\n"
        "lat_seconds_sum 34.265\n"
        "lat_seconds_count 7\n";
    assert_string_equal(b.data, want);
    prom_buf_free(&b);

    /* An empty histogram still has every bucket, at zero. */
    prom_hist e;
    assert_int_equal(prom_hist_init(&e, bounds, 3), 0);
    prom_buf_init(&b);
    prom_hist_write(&b, "e", NULL, 0, &e);
    assert_string_equal(b.data, "e_bucket{le=\"0.01\"} 0\ne_bucket{le=\"0.1\"} 0\ne_bucket{le=\"1\"} 0\n"
                                "e_bucket{le=\"+Inf\"} 0\ne_sum 0\ne_count 0\n");
    prom_buf_free(&b);

    static const double bad[] = {1, 1};
    assert_int_equal(prom_hist_init(&e, bad, 2), -1);
    assert_int_equal(prom_hist_init(&e, bounds, PROM_HIST_MAX_BOUNDS + 1), -1);
}

static void test_big_output(void **state)
{
    (void)state;
    prom_buf b;
    prom_buf_init(&b);
    char v[32];
    for (int i = 0; i < 20000; i++) {
        snprintf(v, sizeof v, "n%d", i);
        prom_sample(&b, "many", (prom_label[]){{"i", v}}, 1, i);
    }
    assert_false(prom_buf_failed(&b));
    assert_non_null(strstr(b.data, "many{i=\"n19999\"} 19999\n"));
    assert_int_equal(strlen(b.data), b.len);
    prom_buf_free(&b);
}

static void test_parse_listen(void **state)
{
    (void)state;
    char host[64], err[256];
    int port;
    assert_int_equal(prom_parse_listen("127.0.0.1:9190", host, sizeof host, &port, err, sizeof err), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 9190);
    assert_int_equal(prom_parse_listen("[::1]:0", host, sizeof host, &port, err, sizeof err), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 0);
    assert_int_equal(prom_parse_listen("localhost:65535", host, sizeof host, &port, err, sizeof err), 0);
    const char *bad[] = {"", "9190", ":9190", "host:", "host:x", "host:65536", "host:-1", "::1:9190", "[::1]9190", "h:1 "};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        assert_int_equal(prom_parse_listen(bad[i], host, sizeof host, &port, err, sizeof err), -1);
        assert_true(err[0] != 0);
    }
    assert_int_equal(prom_parse_listen(NULL, host, sizeof host, &port, err, sizeof err), -1);
}

/* ---- the listener ---------------------------------------------------------------------------- */

struct fill_state {
    int calls;
    int fail;
};

static int fill(void *user, prom_buf *b)
{
    struct fill_state *f = user;
    f->calls++;
    if (f->fail) return -1;
    prom_family(b, "scrapes_total", PROM_COUNTER, "Scrapes so far.");
    prom_sample(b, "scrapes_total", NULL, 0, f->calls);
    return 0;
}

struct resp {
    int status;
    char head[2048];
    char body[4096];
};

static void exchange(int port, const char *req, struct resp *out)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    size_t len = strlen(req);
    assert_int_equal(send(fd, req, len, MSG_NOSIGNAL), (ssize_t)len);
    static char buf[1 << 16];
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
    snprintf(out->body, sizeof out->body, "%s", body + 4);
}

static void get(int port, const char *method, const char *path, struct resp *out)
{
    char req[512];
    snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", method, path);
    exchange(port, req, out);
}

static void test_listener(void **state)
{
    (void)state;
    struct fill_state fs = {0};
    prom_http *h = NULL;
    char err[256];
    assert_int_equal(prom_http_start("127.0.0.1:0", fill, &fs, &h, err, sizeof err), 0);
    int port = prom_http_port(h);
    assert_true(port > 0);

    struct resp r;
    get(port, "GET", "/metrics", &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.head, "Content-Type: text/plain; version=0.0.4; charset=utf-8"));
    assert_string_equal(r.body, "# HELP scrapes_total Scrapes so far.\n# TYPE scrapes_total counter\nscrapes_total 1\n");

    const char *not_found[] = {"/", "/metrics/", "/metricsx", "/Metrics", "/metrics%00x", "/m%65trics", "/../metrics"};
    for (size_t i = 0; i < sizeof not_found / sizeof not_found[0]; i++) {
        get(port, "GET", not_found[i], &r);
        if (r.status != 404) fail_msg("GET %s: %d, want 404", not_found[i], r.status);
    }
    /* A query string is not part of the path. */
    get(port, "GET", "/metrics?x=1", &r);
    assert_int_equal(r.status, 200);

    const char *methods[] = {"POST", "PUT", "DELETE", "HEAD", "OPTIONS"};
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
        get(port, methods[i], "/metrics", &r);
        if (r.status != 405) fail_msg("%s /metrics: %d, want 405", methods[i], r.status);
        assert_non_null(strstr(r.head, "Allow: GET"));
    }
    /* A POST with a body, and bytes that are not HTTP. */
    exchange(port, "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello", &r);
    assert_int_equal(r.status, 405);
    {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        struct timeval tv = {.tv_sec = 5};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
        send(fd, "\x01\x02garbage\r\n\r\n", 13, MSG_NOSIGNAL);
        char junk[512];
        while (recv(fd, junk, sizeof junk, 0) > 0) {}
        close(fd);
    }

    fs.fail = 1;
    get(port, "GET", "/metrics", &r);
    assert_int_equal(r.status, 500);
    fs.fail = 0;
    get(port, "GET", "/metrics", &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "scrapes_total 4\n")); /* the 404s and 405s never filled */

    /* The port is taken: a second listener says so. */
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    prom_http *h2 = NULL;
    assert_int_equal(prom_http_start(listen, fill, &fs, &h2, err, sizeof err), -1);
    assert_null(h2);
    assert_non_null(strstr(err, listen));
    assert_int_equal(prom_http_start("127.0.0.1", fill, &fs, &h2, err, sizeof err), -1);
    assert_int_equal(prom_http_start("no.such.host.invalid:0", fill, &fs, &h2, err, sizeof err), -1);

    prom_http_stop(h);
    prom_http_stop(NULL);
}

static void test_listener_ipv6(void **state)
{
    (void)state;
    struct fill_state fs = {0};
    prom_http *h = NULL;
    char err[256];
    if (prom_http_start("[::1]:0", fill, &fs, &h, err, sizeof err) != 0) {
        skip(); /* no IPv6 loopback on this machine */
    }
    assert_true(prom_http_port(h) > 0);
    prom_http_stop(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_family_and_samples),
        cmocka_unit_test(test_histogram),
        cmocka_unit_test(test_big_output),
        cmocka_unit_test(test_parse_listen),
        cmocka_unit_test(test_listener),
        cmocka_unit_test(test_listener_ipv6),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
