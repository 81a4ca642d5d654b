/* opsctl audit against an in-process AdminService/ListAudit on a real loopback socket: the
 * flags become the request (actor, target, limit, since), the answer is printed as a table
 * (a record without a token is "(no token)") and as JSON, usage errors exit 2 before any
 * call, a refused token exits 3 and a weak role 1 with the role to ask for. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.pb-c.h"
#include "ctl/cmd.h"
#include "ctl/conn.h"
#include "rpc/server.h"

typedef struct fake {
    int calls;
    char actor[64], target[64];
    int32_t limit;
    int64_t since;
} fake;

static int list_audit(rpc_ctx *c, const void *reqp, void *respp, void *user)
{
    fake *f = user;
    const Ops__Admin__V1__ListAuditRequest *req = reqp;
    Ops__Admin__V1__ListAuditResponse *resp = respp;
    const char *auth = rpc_ctx_metadata(c, "authorization");
    if (!auth || strcmp(auth, "Bearer adm1n") != 0) {
        if (auth && !strcmp(auth, "Bearer v1ewer"))
            return rpc_ctx_errorf(c, RPC_PERMISSION_DENIED, "ListAudit needs role admin; token has role viewer");
        return rpc_ctx_errorf(c, RPC_UNAUTHENTICATED, "unknown token");
    }
    f->calls++;
    snprintf(f->actor, sizeof f->actor, "%s", req->actor);
    snprintf(f->target, sizeof f->target, "%s", req->target);
    f->limit = req->limit;
    f->since = req->since;
    resp->n_records = 2;
    resp->records = rpc_ctx_alloc(c, 2 * sizeof *resp->records);
    for (int i = 0; i < 2; i++) {
        Ops__Admin__V1__AuditRecord *r = rpc_ctx_alloc(c, sizeof *r);
        ops__admin__v1__audit_record__init(r);
        r->id = 2 - i;
        r->timestamp = 1700000000 + 60 * (2 - i);
        r->actor = rpc_ctx_strdup(c, i ? "" : "otto");
        r->role = rpc_ctx_strdup(c, i ? "" : "operator");
        r->method = rpc_ctx_strdup(c, i ? "DeleteNode" : "OperateAgent");
        r->target = rpc_ctx_strdup(c, i ? "n1" : "n1/web");
        r->result = rpc_ctx_strdup(c, i ? "UNAUTHENTICATED" : "OK");
        r->detail = rpc_ctx_strdup(c, i ? "" : "restart");
        r->peer = rpc_ctx_strdup(c, "ipv4:127.0.0.1:4242");
        resp->records[i] = r;
    }
    return RPC_OK;
}

typedef struct env {
    fake f;
    rpc_method m;
    rpc_server *srv;
    char target[64];
} env;

static int setup(void **state)
{
    env *e = calloc(1, sizeof *e);
    e->m = (rpc_method){.path = "/ops.admin.v1.AdminService/ListAudit",
                        .req = &ops__admin__v1__list_audit_request__descriptor,
                        .resp = &ops__admin__v1__list_audit_response__descriptor,
                        .unary = list_audit,
                        .user = &e->f};
    const char *listen[] = {"127.0.0.1:0", NULL};
    rpc_server_opts o = {.name = "fake-admin", .listen = listen, .quiet_access_log = 1};
    char err[256];
    e->srv = rpc_server_new(&o, err, sizeof err);
    assert_non_null(e->srv);
    assert_int_equal(rpc_server_add_methods(e->srv, &e->m, 1, err, sizeof err), 0);
    assert_int_equal(rpc_server_start(e->srv, err, sizeof err), 0);
    snprintf(e->target, sizeof e->target, "127.0.0.1:%d", rpc_server_port(e->srv, 0));
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    env *e = *state;
    rpc_server_free(e->srv);
    free(e);
    return 0;
}

/* Runs `opsctl [-o json] audit ARGS` in-process with token; returns the exit code and what
 * went to stdout and stderr (the caller frees both). */
static int run(env *e, const char *token, int json, char **out, char **errout, int argc, char **argv)
{
    conn_flags fl = {.manager = e->target, .token = token};
    conn_settings s;
    char err[1024];
    assert_int_equal(conn_resolve(&s, &fl, "/nonexistent/opsctl.yaml", err, sizeof err), 0);
    s.timeout_ms = 5000;
    size_t on = 0, en = 0;
    FILE *o = open_memstream(out, &on), *er = open_memstream(errout, &en);
    cmd_ctx x = {.settings = &s, .json = json, .out = o, .err = er, .now = 1700003600};
    int rc = cmd_audit(&x, argc, argv);
    cmd_ctx_close(&x);
    conn_settings_free(&s);
    fclose(o);
    fclose(er);
    return rc;
}

static void test_audit_usage(void **state)
{
    env *e = *state;
    char *out, *err;
    char *bad[][3] = {
        {"--limit", "0", NULL}, {"--limit", "1001", NULL}, {"--limit", "ten", NULL}, {"--since", "soon", NULL},
        {"--bogus", NULL, NULL}, {"extra", NULL, NULL},     {"--actor", NULL, NULL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int argc = bad[i][1] ? 2 : 1;
        assert_int_equal(run(e, "adm1n", 0, &out, &err, argc, bad[i]), CTL_EXIT_USAGE);
        assert_non_null(strstr(err, "Usage: opsctl audit"));
        assert_string_equal(out, "");
        free(out);
        free(err);
    }
    assert_int_equal(e->f.calls, 0); /* refused before any call */
}

static void test_audit_table_and_request(void **state)
{
    env *e = *state;
    char *out, *err;
    char *argv[] = {"--actor", "otto", "--target=n1", "--limit", "5", "--since", "1h"};
    assert_int_equal(run(e, "adm1n", 0, &out, &err, 7, argv), CTL_EXIT_OK);
    assert_int_equal(e->f.calls, 1);
    assert_string_equal(e->f.actor, "otto");
    assert_string_equal(e->f.target, "n1");
    assert_int_equal(e->f.limit, 5);
    assert_int_equal(e->f.since, 1700003600 - 3600);
    assert_non_null(strstr(out, "ACTOR"));
    assert_non_null(strstr(out, "RESULT"));
    assert_non_null(strstr(out, "n1/web"));
    assert_non_null(strstr(out, "restart"));
    assert_non_null(strstr(out, "(no token)"));
    assert_non_null(strstr(out, "UNAUTHENTICATED"));
    /* Newest first, as answered. */
    assert_true(strstr(out, "OperateAgent") < strstr(out, "DeleteNode"));
    free(out);
    free(err);

    /* Defaults: no filters, limit 0 (the manager's 100), no since. */
    assert_int_equal(run(e, "adm1n", 1, &out, &err, 0, NULL), CTL_EXIT_OK);
    assert_string_equal(e->f.actor, "");
    assert_int_equal(e->f.limit, 0);
    assert_int_equal(e->f.since, 0);
    json_error_t je;
    json_t *j = json_loads(out, 0, &je);
    assert_non_null(j);
    assert_int_equal(json_array_size(json_object_get(j, "records")), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(j, "records"), 0), "actor")),
                        "otto");
    json_decref(j);
    free(out);
    free(err);
}

static void test_audit_refused(void **state)
{
    env *e = *state;
    char *out, *err;
    assert_int_equal(run(e, "nope", 0, &out, &err, 0, NULL), CTL_EXIT_CONN);
    assert_non_null(strstr(err, "token refused"));
    free(out);
    free(err);
    assert_int_equal(run(e, "v1ewer", 0, &out, &err, 0, NULL), CTL_EXIT_FAILED);
    assert_non_null(strstr(err, "read the audit trail; ask for an admin token"));
    assert_string_equal(out, "");
    free(out);
    free(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_audit_usage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_audit_table_and_request, setup, teardown),
        cmocka_unit_test_setup_teardown(test_audit_refused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
