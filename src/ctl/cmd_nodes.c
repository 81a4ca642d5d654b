/* cmd_nodes: the node-level commands: nodes, node, delete-node, config, watch. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "admin.pb-c.h"
#include "ctl/cmd.h"
#include "ctl/table.h"
#include "rpc/pbjson.h"

#define M(x) ((ProtobufCMessage *)(x))

static int is_flag(const char *a) { return a[0] == '-' && a[1] != 0; }

/* Joins a node's labels as "k=v,k=v". */
static void labels_str(const Ops__Admin__V1__Node *n, char *buf, size_t len)
{
    size_t at = 0;
    buf[0] = 0;
    for (size_t i = 0; i < n->n_labels && at < len; i++) {
        int w = snprintf(buf + at, len - at, "%s%s=%s", i ? "," : "", n->labels[i]->key, n->labels[i]->value);
        if (w < 0) break;
        at += (size_t)w;
    }
}

int cmd_nodes(cmd_ctx *x, int argc, char **argv)
{
    const char *status = NULL;
    Ops__Admin__V1__ListNodesRequest__LabelsEntry *entries = calloc((size_t)argc + 1, sizeof *entries);
    Ops__Admin__V1__ListNodesRequest__LabelsEntry **eptr = calloc((size_t)argc + 1, sizeof *eptr);
    char **keys = calloc((size_t)argc + 1, sizeof *keys);
    if (!entries || !eptr || !keys) abort();
    size_t nl = 0;
    int rc = CTL_EXIT_OK;
    for (int i = 0; i < argc && rc == CTL_EXIT_OK; i++) {
        const char *v;
        int m;
        if ((m = cmd_flag(argc, argv, &i, "--status", &v)) != 0) {
            if (m < 0 || (strcmp(v, "online") && strcmp(v, "offline")))
                rc = cmd_usage_error(x, "nodes", "--status takes online or offline");
            else
                status = v;
        } else if ((m = cmd_flag(argc, argv, &i, "--label", &v)) != 0) {
            const char *eq = m > 0 ? strchr(v, '=') : NULL;
            if (!eq || eq == v) {
                rc = cmd_usage_error(x, "nodes", "--label takes KEY=VALUE");
            } else {
                keys[nl] = strndup(v, (size_t)(eq - v));
                Ops__Admin__V1__ListNodesRequest__LabelsEntry e = OPS__ADMIN__V1__LIST_NODES_REQUEST__LABELS_ENTRY__INIT;
                entries[nl] = e;
                entries[nl].key = keys[nl];
                entries[nl].value = (char *)(eq + 1);
                eptr[nl] = &entries[nl];
                nl++;
            }
        } else if (is_flag(argv[i])) {
            rc = cmd_usage_error(x, "nodes", "unknown flag %s", argv[i]);
        } else {
            rc = cmd_usage_error(x, "nodes", "nodes takes no arguments (got %s)", argv[i]);
        }
    }
    conn *c = rc == CTL_EXIT_OK ? cmd_conn(x) : NULL;
    if (rc == CTL_EXIT_OK && !c) rc = CTL_EXIT_CONN;

    json_t *all = json_array();
    const char *hdr[] = {"NODE", "HOSTNAME", "IP", "STATUS", "LAST SEEN", "VERSION", "LABELS"};
    table *t = table_new(7, hdr);
    char *token = strdup("");
    int pages = 0;
    while (rc == CTL_EXIT_OK) {
        Ops__Admin__V1__ListNodesRequest req = OPS__ADMIN__V1__LIST_NODES_REQUEST__INIT;
        req.status = (char *)(status ? status : "");
        req.n_labels = nl;
        req.labels = eptr;
        req.page_size = 500;
        req.page_token = token;
        Ops__Admin__V1__ListNodesResponse *resp = NULL;
        char err[1024];
        rc = conn_call(c, "ListNodes", M(&req), &ops__admin__v1__list_nodes_response__descriptor,
                       (ProtobufCMessage **)&resp, "list nodes", "viewer", err, sizeof err);
        if (rc != CTL_EXIT_OK) {
            cmd_fail(x, rc, "%s", err);
            break;
        }
        for (size_t i = 0; i < resp->n_nodes; i++) {
            const Ops__Admin__V1__Node *n = resp->nodes[i];
            json_array_append_new(all, pbjson_from_message(M(n)));
            char ago[32], lab[1024];
            labels_str(n, lab, sizeof lab);
            table_add(t, n->node_id, n->hostname, n->ip, n->status, table_fmt_ago(n->last_seen, x->now, ago, sizeof ago),
                      n->daemon_version, lab);
        }
        int done = !resp->next_page_token[0] || !strcmp(resp->next_page_token, token) || ++pages > 100000;
        free(token);
        token = strdup(resp->next_page_token);
        protobuf_c_message_free_unpacked(M(resp), NULL);
        if (done) break;
    }
    if (rc == CTL_EXIT_OK) {
        if (x->json) {
            json_t *doc = json_object();
            json_object_set(doc, "nodes", all);
            cmd_print_json(x, doc, 0);
        } else {
            table_print(t, x->out);
            if (!table_rows(t)) fprintf(x->err, "(no nodes%s)\n", status || nl ? " match" : "");
        }
    }
    json_decref(all);
    table_free(t);
    free(token);
    for (size_t i = 0; i < nl; i++) free(keys[i]);
    free(keys);
    free(entries);
    free(eptr);
    return rc;
}

/* Exactly one positional NODE and no flags. Returns 0, or -1 after printing a usage error. */
static int one_node_arg(cmd_ctx *x, const char *cmd, int argc, char **argv, const char **node)
{
    *node = NULL;
    for (int i = 0; i < argc; i++) {
        if (is_flag(argv[i])) return cmd_usage_error(x, cmd, "unknown flag %s", argv[i]), -1;
        if (*node) return cmd_usage_error(x, cmd, "unexpected argument %s", argv[i]), -1;
        *node = argv[i];
    }
    if (!*node) return cmd_usage_error(x, cmd, "missing NODE"), -1;
    return 0;
}

int cmd_node(cmd_ctx *x, int argc, char **argv)
{
    const char *node;
    if (one_node_arg(x, "node", argc, argv, &node) < 0) return CTL_EXIT_USAGE;
    conn *c = cmd_conn(x);
    if (!c) return CTL_EXIT_CONN;
    Ops__Admin__V1__GetNodeRequest req = OPS__ADMIN__V1__GET_NODE_REQUEST__INIT;
    req.node_id = (char *)node;
    Ops__Admin__V1__GetNodeResponse *resp = NULL;
    char err[1024];
    int rc = conn_call(c, "GetNode", M(&req), &ops__admin__v1__get_node_response__descriptor,
                       (ProtobufCMessage **)&resp, "read nodes", "viewer", err, sizeof err);
    if (rc != CTL_EXIT_OK) return cmd_fail(x, rc, "%s", err);
    if (x->json) {
        cmd_print_json(x, pbjson_from_message(M(resp)), 0);
        protobuf_c_message_free_unpacked(M(resp), NULL);
        return CTL_EXIT_OK;
    }
    const Ops__Admin__V1__Node *n = resp->node;
    char a[64], b[64], c2[128], lab[2048];
    if (n) {
        table *kv = table_new(2, NULL);
        labels_str(n, lab, sizeof lab);
        snprintf(c2, sizeof c2, "%s/%s", n->os, n->arch);
        table_add(kv, "Node:", n->node_id);
        table_add(kv, "Hostname:", n->hostname);
        table_add(kv, "IP:", n->ip);
        table_add(kv, "OS/Arch:", c2);
        table_add(kv, "Status:", n->status);
        table_add(kv, "Labels:", lab[0] ? lab : "-");
        table_add(kv, "Daemon:", n->daemon_version);
        table_add(kv, "Agent version:", n->agent_version);
        table_add(kv, "Daemon address:", n->daemon_address);
        char reg[128], seen[128];
        snprintf(reg, sizeof reg, "%s (%s)", table_fmt_time(n->registered_at, a, sizeof a),
                 table_fmt_ago(n->registered_at, x->now, b, sizeof b));
        table_add(kv, "Registered:", reg);
        snprintf(seen, sizeof seen, "%s (%s)", table_fmt_time(n->last_seen, a, sizeof a),
                 table_fmt_ago(n->last_seen, x->now, b, sizeof b));
        table_add(kv, "Last seen:", seen);
        table_print(kv, x->out);
        table_free(kv);
    }
    fprintf(x->out, "\nAgents (as last reported):\n");
    if (!resp->n_agents) {
        fprintf(x->out, "  none\n");
    } else {
        const char *hdr[] = {"AGENT", "TYPE", "VERSION", "STATUS", "PID", "LAST HEARTBEAT"};
        table *t = table_new(6, hdr);
        table_align_right(t, 4);
        for (size_t i = 0; i < resp->n_agents; i++) {
            const Ops__Admin__V1__AgentRecord *r = resp->agents[i];
            char pid[16];
            snprintf(pid, sizeof pid, "%d", r->pid);
            table_add(t, r->agent_id, r->type, r->version, r->status, r->pid ? pid : "-",
                      table_fmt_ago(r->last_heartbeat, x->now, a, sizeof a));
        }
        table_print(t, x->out);
        table_free(t);
    }
    fprintf(x->out, "\nLatest metrics:\n");
    if (!resp->n_latest_metrics) {
        fprintf(x->out, "  none\n");
    } else {
        const char *hdr[] = {"TYPE", "KEY", "VALUE", "AGE"};
        table *t = table_new(4, hdr);
        table_align_right(t, 2);
        for (size_t i = 0; i < resp->n_latest_metrics; i++) {
            const Ops__Admin__V1__MetricSample *s = resp->latest_metrics[i];
            for (size_t k = 0; k < s->n_values; k++) {
                char v[64];
                cmd_fmt_metric(s->type, s->values[k]->key, s->values[k]->value, v, sizeof v);
                table_add(t, s->type, s->values[k]->key, v, table_fmt_ago(s->timestamp, x->now, a, sizeof a));
            }
        }
        table_print(t, x->out);
        table_free(t);
    }
    protobuf_c_message_free_unpacked(M(resp), NULL);
    return CTL_EXIT_OK;
}

int cmd_delete_node(cmd_ctx *x, int argc, char **argv)
{
    const char *node = NULL;
    int yes = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--yes") || !strcmp(argv[i], "-y")) yes = 1;
        else if (is_flag(argv[i])) return cmd_usage_error(x, "delete-node", "unknown flag %s", argv[i]);
        else if (node) return cmd_usage_error(x, "delete-node", "unexpected argument %s", argv[i]);
        else node = argv[i];
    }
    if (!node) return cmd_usage_error(x, "delete-node", "missing NODE");
    if (!yes) {
        if (!isatty(STDIN_FILENO))
            return cmd_usage_error(x, "delete-node",
                                   "refusing to delete node %s without --yes (stdin is not a terminal to confirm on)",
                                   node);
        fprintf(stderr, "Delete node %s with its agents and metrics from the manager? Type the node id to confirm: ",
                node);
        fflush(stderr);
        char line[512];
        if (!fgets(line, sizeof line, stdin)) return cmd_fail(x, CTL_EXIT_FAILED, "not confirmed; nothing deleted");
        line[strcspn(line, "\r\n")] = 0;
        if (strcmp(line, node) != 0) return cmd_fail(x, CTL_EXIT_FAILED, "not confirmed; nothing deleted");
    }
    conn *c = cmd_conn(x);
    if (!c) return CTL_EXIT_CONN;
    Ops__Admin__V1__DeleteNodeRequest req = OPS__ADMIN__V1__DELETE_NODE_REQUEST__INIT;
    req.node_id = (char *)node;
    Ops__Admin__V1__DeleteNodeResponse *resp = NULL;
    char err[1024];
    int rc = conn_call(c, "DeleteNode", M(&req), &ops__admin__v1__delete_node_response__descriptor,
                       (ProtobufCMessage **)&resp, "delete nodes", "admin", err, sizeof err);
    if (rc != CTL_EXIT_OK) return cmd_fail(x, rc, "%s", err);
    int deleted = resp->deleted;
    if (x->json) cmd_print_json(x, pbjson_from_message(M(resp)), 0);
    protobuf_c_message_free_unpacked(M(resp), NULL);
    if (!deleted) return cmd_fail(x, CTL_EXIT_FAILED, "node %s was not deleted (not found?): see 'opsctl nodes'", node);
    if (!x->json) fprintf(x->out, "deleted node %s\n", node);
    return CTL_EXIT_OK;
}

int cmd_config(cmd_ctx *x, int argc, char **argv)
{
    const char *node = NULL, *agent = NULL;
    for (int i = 0; i < argc; i++) {
        const char *v;
        int m = cmd_flag(argc, argv, &i, "--agent", &v);
        if (m < 0) return cmd_usage_error(x, "config", "--agent needs an agent id");
        if (m > 0) agent = v;
        else if (is_flag(argv[i])) return cmd_usage_error(x, "config", "unknown flag %s", argv[i]);
        else if (node) return cmd_usage_error(x, "config", "unexpected argument %s", argv[i]);
        else node = argv[i];
    }
    if (!node) return cmd_usage_error(x, "config", "missing NODE");
    conn *c = cmd_conn(x);
    if (!c) return CTL_EXIT_CONN;
    Ops__Admin__V1__GetDaemonConfigRequest req = OPS__ADMIN__V1__GET_DAEMON_CONFIG_REQUEST__INIT;
    req.node_id = (char *)node;
    req.config_type = (char *)(agent ? "agent" : "daemon");
    req.agent_id = (char *)(agent ? agent : "");
    Ops__Admin__V1__GetDaemonConfigResponse *resp = NULL;
    char err[1024];
    int rc = conn_call(c, "GetDaemonConfig", M(&req), &ops__admin__v1__get_daemon_config_response__descriptor,
                       (ProtobufCMessage **)&resp, "read configs", "viewer", err, sizeof err);
    if (rc != CTL_EXIT_OK) return cmd_fail(x, rc, "%s", err);
    if (x->json) {
        cmd_print_json(x, pbjson_from_message(M(resp)), 0);
    } else {
        fwrite(resp->config_data.data, 1, resp->config_data.len, x->out);
        if (resp->config_data.len && resp->config_data.data[resp->config_data.len - 1] != '\n') fputc('\n', x->out);
    }
    protobuf_c_message_free_unpacked(M(resp), NULL);
    return CTL_EXIT_OK;
}

int cmd_watch(cmd_ctx *x, int argc, char **argv)
{
    char **kinds = calloc((size_t)argc + 1, sizeof *kinds);
    if (!kinds) abort();
    size_t nk = 0;
    const char *node = NULL;
    long long count = 0;
    for (int i = 0; i < argc; i++) {
        const char *v;
        int m;
        if ((m = cmd_flag(argc, argv, &i, "--kind", &v)) != 0) {
            if (m < 0) { free(kinds); return cmd_usage_error(x, "watch", "--kind needs a kind"); }
            kinds[nk++] = (char *)v;
        } else if ((m = cmd_flag(argc, argv, &i, "--node", &v)) != 0) {
            if (m < 0) { free(kinds); return cmd_usage_error(x, "watch", "--node needs a node id"); }
            node = v;
        } else if ((m = cmd_flag(argc, argv, &i, "--count", &v)) != 0) {
            char *end = NULL;
            count = m > 0 ? strtoll(v, &end, 10) : 0;
            if (m < 0 || !end || *end || count <= 0) {
                free(kinds);
                return cmd_usage_error(x, "watch", "--count takes a positive number");
            }
        } else {
            free(kinds);
            return cmd_usage_error(x, "watch", is_flag(argv[i]) ? "unknown flag %s" : "unexpected argument %s", argv[i]);
        }
    }
    conn *c = cmd_conn(x);
    if (!c) { free(kinds); return CTL_EXIT_CONN; }
    Ops__Admin__V1__WatchEventsRequest req = OPS__ADMIN__V1__WATCH_EVENTS_REQUEST__INIT;
    req.n_kinds = nk;
    req.kinds = kinds;
    req.node_id = (char *)(node ? node : "");
    rpc_stream *st = NULL;
    char err[1024];
    int rc = conn_stream_open(c, "WatchEvents", M(&req), &st, err, sizeof err);
    free(kinds);
    if (rc != CTL_EXIT_OK) return cmd_fail(x, rc, "%s", err);
    long long seen = 0;
    for (;;) {
        ProtobufCMessage *m = NULL;
        rpc_result res;
        if (rpc_stream_next(st, &ops__admin__v1__event__descriptor, &m, &res) != 1) {
            /* The stream's first answer may be the refusal (bad token...): explain it the
             * same way as a unary call's. A clean end is the manager going away. */
            if (res.code == RPC_OK) {
                rc = cmd_fail(x, CTL_EXIT_CONN, "the manager ended the event stream (shutting down?)");
            } else {
                rc = conn_explain(c, "WatchEvents", &res, "watch events", "viewer", err, sizeof err);
                cmd_fail(x, rc, "%s", err);
            }
            break;
        }
        const Ops__Admin__V1__Event *e = (const Ops__Admin__V1__Event *)m;
        if (x->json) {
            cmd_print_json(x, pbjson_from_message(m), 1);
        } else {
            char tbuf[64], change[256];
            if (e->previous_status[0]) snprintf(change, sizeof change, "%s -> %s", e->previous_status, e->status);
            else snprintf(change, sizeof change, "%s", e->status);
            char who[512];
            snprintf(who, sizeof who, "%s%s%s", e->node_id, e->agent_id[0] ? "/" : "", e->agent_id);
            fprintf(x->out, "%s  %-15s %-24s %s%s%s\n", table_fmt_time(e->timestamp, tbuf, sizeof tbuf), e->kind, who,
                    change, e->detail[0] ? "  " : "", e->detail);
            fflush(x->out);
        }
        protobuf_c_message_free_unpacked(m, NULL);
        if (count && ++seen >= count) break;
    }
    rpc_stream_close(st);
    return rc;
}
