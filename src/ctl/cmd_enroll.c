/* cmd_enroll: `opsctl enroll-token create|list|revoke` -- the enrollment tokens new nodes
 * register with when the manager runs node_auth.mode token (admin role). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.pb-c.h"
#include "base/units.h"
#include "ctl/cmd.h"
#include "ctl/table.h"
#include "rpc/pbjson.h"

#define M(x) ((ProtobufCMessage *)(x))
#define HELP "enroll-token"

static int is_flag(const char *a) { return a[0] == '-' && a[1] != 0; }

static int create(cmd_ctx *x, int argc, char **argv)
{
    const char *name = NULL, *ttl = NULL, *uses = NULL;
    for (int i = 0; i < argc; i++) {
        const char *v;
        int m;
        if ((m = cmd_flag(argc, argv, &i, "--ttl", &v)) != 0) {
            if (m < 0) return cmd_usage_error(x, HELP, "--ttl needs a duration, e.g. 24h");
            ttl = v;
        } else if ((m = cmd_flag(argc, argv, &i, "--uses", &v)) != 0) {
            if (m < 0) return cmd_usage_error(x, HELP, "--uses needs a number");
            uses = v;
        } else if (is_flag(argv[i])) {
            return cmd_usage_error(x, HELP, "unknown flag %s", argv[i]);
        } else if (name) {
            return cmd_usage_error(x, HELP, "unexpected argument %s", argv[i]);
        } else {
            name = argv[i];
        }
    }
    if (!name) return cmd_usage_error(x, HELP, "missing NAME");
    Ops__Admin__V1__CreateEnrollmentTokenRequest req = OPS__ADMIN__V1__CREATE_ENROLLMENT_TOKEN_REQUEST__INIT;
    req.name = (char *)name;
    if (ttl) {
        int64_t ms;
        if (units_parse_duration_ms(ttl, &ms) != 0 || ms < 1000)
            return cmd_usage_error(x, HELP, "--ttl %s: not a duration of a second or more (e.g. 30m, 24h, 7d)", ttl);
        req.ttl_seconds = ms / 1000;
    }
    if (uses) {
        char *end;
        long n = strtol(uses, &end, 10);
        if (*end || end == uses || n < 1 || n > 100000) return cmd_usage_error(x, HELP, "--uses %s: not a number from 1 to 100000", uses);
        req.max_uses = (int32_t)n;
    }
    conn *c = cmd_conn(x);
    if (!c) return CTL_EXIT_CONN;
    Ops__Admin__V1__CreateEnrollmentTokenResponse *resp = NULL;
    char err[1024];
    int rc = conn_call(c, "CreateEnrollmentToken", M(&req), &ops__admin__v1__create_enrollment_token_response__descriptor,
                       (ProtobufCMessage **)&resp, "manage enrollment tokens", "admin", err, sizeof err);
    if (rc != CTL_EXIT_OK) return cmd_fail(x, rc, "%s", err);
    if (x->json) {
        cmd_print_json(x, pbjson_from_message(M(resp)), 0);
    } else {
        char t[64];
        fprintf(x->out, "enrollment token %s (expires %s, %d use%s):\n%s\n", name,
                table_fmt_time(resp->token ? resp->token->expires_at : 0, t, sizeof t), resp->token ? resp->token->max_uses : 0,
                resp->token && resp->token->max_uses == 1 ? "" : "s", resp->secret);
        fprintf(x->err, "Shown once: put it in daemon.yaml (manager.enrollment_token or a file named by "
                        "manager.enrollment_token_file).\n");
    }
    protobuf_c_message_free_unpacked(M(resp), NULL);
    return CTL_EXIT_OK;
}

static int list(cmd_ctx *x, int argc, char **argv)
{
    if (argc > 0) return cmd_usage_error(x, HELP, "unexpected argument %s", argv[0]);
    conn *c = cmd_conn(x);
    if (!c) return CTL_EXIT_CONN;
    Ops__Admin__V1__ListEnrollmentTokensRequest req = OPS__ADMIN__V1__LIST_ENROLLMENT_TOKENS_REQUEST__INIT;
    Ops__Admin__V1__ListEnrollmentTokensResponse *resp = NULL;
    char err[1024];
    int rc = conn_call(c, "ListEnrollmentTokens", M(&req), &ops__admin__v1__list_enrollment_tokens_response__descriptor,
                       (ProtobufCMessage **)&resp, "list enrollment tokens", "admin", err, sizeof err);
    if (rc != CTL_EXIT_OK) return cmd_fail(x, rc, "%s", err);
    if (x->json) {
        cmd_print_json(x, pbjson_from_message(M(resp)), 0);
    } else {
        static const char *const h[] = {"NAME", "STATE", "USES", "EXPIRES", "CREATED"};
        table *t = table_new(5, h);
        for (size_t i = 0; i < resp->n_tokens; i++) {
            const Ops__Admin__V1__EnrollmentToken *k = resp->tokens[i];
            char u[48], e[64], cr[64];
            snprintf(u, sizeof u, "%d/%d", (int)k->uses, (int)k->max_uses);
            table_add(t, k->name, k->state, u, table_fmt_time(k->expires_at, e, sizeof e), table_fmt_ago(k->created_at, x->now, cr, sizeof cr));
        }
        table_print(t, x->out);
        table_free(t);
    }
    protobuf_c_message_free_unpacked(M(resp), NULL);
    return CTL_EXIT_OK;
}

static int revoke(cmd_ctx *x, int argc, char **argv)
{
    if (argc < 1) return cmd_usage_error(x, HELP, "missing NAME");
    if (argc > 1) return cmd_usage_error(x, HELP, "unexpected argument %s", argv[1]);
    conn *c = cmd_conn(x);
    if (!c) return CTL_EXIT_CONN;
    Ops__Admin__V1__RevokeEnrollmentTokenRequest req = OPS__ADMIN__V1__REVOKE_ENROLLMENT_TOKEN_REQUEST__INIT;
    req.name = argv[0];
    Ops__Admin__V1__RevokeEnrollmentTokenResponse *resp = NULL;
    char err[1024];
    int rc = conn_call(c, "RevokeEnrollmentToken", M(&req), &ops__admin__v1__revoke_enrollment_token_response__descriptor,
                       (ProtobufCMessage **)&resp, "manage enrollment tokens", "admin", err, sizeof err);
    if (rc != CTL_EXIT_OK) return cmd_fail(x, rc, "%s", err);
    if (x->json) cmd_print_json(x, pbjson_from_message(M(resp)), 0);
    else fprintf(x->out, "revoked enrollment token %s\n", argv[0]);
    protobuf_c_message_free_unpacked(M(resp), NULL);
    return CTL_EXIT_OK;
}

int cmd_enroll_token(cmd_ctx *x, int argc, char **argv)
{
    if (argc < 1) return cmd_usage_error(x, HELP, "missing create, list or revoke");
    if (!strcmp(argv[0], "create")) return create(x, argc - 1, argv + 1);
    if (!strcmp(argv[0], "list")) return list(x, argc - 1, argv + 1);
    if (!strcmp(argv[0], "revoke")) return revoke(x, argc - 1, argv + 1);
    return cmd_usage_error(x, HELP, "unknown subcommand %s (create, list or revoke)", argv[0]);
}
