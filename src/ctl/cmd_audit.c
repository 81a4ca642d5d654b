/* cmd_audit: audit [--actor A] [--target T] [--since D] [--limit N], the manager's record of
 * who changed (or tried to change) what, newest first. */
#include <stdlib.h>
#include <string.h>

#include "admin.pb-c.h"
#include "ctl/cmd.h"
#include "ctl/table.h"
#include "rpc/pbjson.h"

#define M(x) ((ProtobufCMessage *)(x))

/* The manager's cap on one answer (admin.h ADMIN_AUDIT_MAX): a larger --limit would be cut
 * silently, so it is refused here instead. */
#define AUDIT_LIMIT_MAX 1000

int cmd_audit(cmd_ctx *x, int argc, char **argv)
{
    const char *actor = "", *target = "", *since = NULL;
    long long limit = 0;
    for (int i = 0; i < argc; i++) {
        const char *v;
        int m;
        if ((m = cmd_flag(argc, argv, &i, "--actor", &v)) != 0) {
            if (m < 0) return cmd_usage_error(x, "audit", "--actor needs a token name");
            actor = v;
        } else if ((m = cmd_flag(argc, argv, &i, "--target", &v)) != 0) {
            if (m < 0) return cmd_usage_error(x, "audit", "--target needs a node id (or NODE/AGENT)");
            target = v;
        } else if ((m = cmd_flag(argc, argv, &i, "--since", &v)) != 0) {
            if (m < 0) return cmd_usage_error(x, "audit", "--since needs a duration, e.g. 1h");
            since = v;
        } else if ((m = cmd_flag(argc, argv, &i, "--limit", &v)) != 0) {
            char *end = NULL;
            limit = m > 0 ? strtoll(v, &end, 10) : 0;
            if (m < 0 || !end || *end || limit <= 0 || limit > AUDIT_LIMIT_MAX)
                return cmd_usage_error(x, "audit", "--limit takes a number from 1 to %d", AUDIT_LIMIT_MAX);
        } else {
            return cmd_usage_error(x, "audit", argv[i][0] == '-' && argv[i][1] ? "unknown flag %s" : "unexpected argument %s",
                                   argv[i]);
        }
    }
    int64_t secs = 0;
    if (since && table_parse_since(since, &secs) != 0)
        return cmd_usage_error(x, "audit", "--since %s: not a duration (e.g. 90s, 15m, 1h, 7d)", since);
    conn *c = cmd_conn(x);
    if (!c) return CTL_EXIT_CONN;
    Ops__Admin__V1__ListAuditRequest req = OPS__ADMIN__V1__LIST_AUDIT_REQUEST__INIT;
    req.actor = (char *)actor;
    req.target = (char *)target;
    req.limit = (int32_t)limit;
    req.since = secs ? x->now - secs : 0;
    Ops__Admin__V1__ListAuditResponse *resp = NULL;
    char err[1024];
    int rc = conn_call(c, "ListAudit", M(&req), &ops__admin__v1__list_audit_response__descriptor,
                       (ProtobufCMessage **)&resp, "read the audit trail", "admin", err, sizeof err);
    if (rc != CTL_EXIT_OK) return cmd_fail(x, rc, "%s", err);
    if (x->json) {
        cmd_print_json(x, pbjson_from_message(M(resp)), 0);
    } else {
        const char *hdr[] = {"TIME", "ACTOR", "ROLE", "METHOD", "TARGET", "RESULT", "DETAIL", "PEER"};
        table *t = table_new(8, hdr);
        for (size_t i = 0; i < resp->n_records; i++) {
            const Ops__Admin__V1__AuditRecord *r = resp->records[i];
            char tb[64];
            /* An empty actor is a caller without a valid token: say so rather than print "". */
            table_add(t, table_fmt_time(r->timestamp, tb, sizeof tb), r->actor[0] ? r->actor : "(no token)",
                      r->role[0] ? r->role : "-", r->method, r->target[0] ? r->target : "-", r->result,
                      r->detail[0] ? r->detail : "-", r->peer[0] ? r->peer : "-");
        }
        table_print(t, x->out);
        if (!resp->n_records)
            fprintf(x->err, "(no audit records%s)\n", actor[0] || target[0] || since ? " match" : "");
        table_free(t);
    }
    protobuf_c_message_free_unpacked(M(resp), NULL);
    return CTL_EXIT_OK;
}
