/* cmd_updates: publish-config, publish-update, events, event -- the pushed events of
 * AdminService (operator role to publish, viewer to look). */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "admin.pb-c.h"
#include "ctl/cmd.h"
#include "ctl/table.h"
#include "rpc/pbjson.h"

#define M(x) ((ProtobufCMessage *)(x))
#define MAX_TARGET_ARGS 256
#define FILE_MAX (64u << 20)

static int is_flag(const char *a) { return a[0] == '-' && a[1] != 0; }

/* Node ids, --label K=V (repeatable) or --all, collected from the command line. The strings
 * are argv's except the label keys (malloc'd, target_free). */
typedef struct target {
    char *nodes[MAX_TARGET_ARGS];
    size_t n_nodes;
    Ops__Admin__V1__PublishTarget__LabelsEntry entries[MAX_TARGET_ARGS];
    Ops__Admin__V1__PublishTarget__LabelsEntry *eptr[MAX_TARGET_ARGS];
    size_t n_labels;
    int all;
    Ops__Admin__V1__PublishTarget msg;
} target;

static void target_free(target *t)
{
    for (size_t i = 0; i < t->n_labels; i++) free(t->entries[i].key);
}

/* 1 when argv[*i] was a target word or flag (consumed), 0 when not, -1 on a usage error. */
static int target_arg(cmd_ctx *x, const char *help, target *t, int argc, char **argv, int *i)
{
    const char *v;
    int m;
    if (!strcmp(argv[*i], "--all")) {
        t->all = 1;
        return 1;
    }
    if ((m = cmd_flag(argc, argv, i, "--label", &v)) != 0) {
        const char *eq = m > 0 ? strchr(v, '=') : NULL;
        if (!eq || eq == v) return cmd_usage_error(x, help, "--label takes KEY=VALUE"), -1;
        if (t->n_labels == MAX_TARGET_ARGS) return cmd_usage_error(x, help, "too many --label"), -1;
        Ops__Admin__V1__PublishTarget__LabelsEntry e = OPS__ADMIN__V1__PUBLISH_TARGET__LABELS_ENTRY__INIT;
        t->entries[t->n_labels] = e;
        t->entries[t->n_labels].key = strndup(v, (size_t)(eq - v));
        t->entries[t->n_labels].value = (char *)(eq + 1);
        t->eptr[t->n_labels] = &t->entries[t->n_labels];
        t->n_labels++;
        return 1;
    }
    if (is_flag(argv[*i])) return 0;
    if (t->n_nodes == MAX_TARGET_ARGS) return cmd_usage_error(x, help, "too many nodes (use --label or --all)"), -1;
    t->nodes[t->n_nodes++] = argv[*i];
    return 1;
}

static int target_done(cmd_ctx *x, const char *help, target *t)
{
    int kinds = (t->n_nodes > 0) + (t->n_labels > 0) + t->all;
    if (!kinds) return cmd_usage_error(x, help, "missing target: NODE..., --label KEY=VALUE or --all"), -1;
    if (kinds > 1) return cmd_usage_error(x, help, "give nodes, --label or --all, not several"), -1;
    Ops__Admin__V1__PublishTarget m = OPS__ADMIN__V1__PUBLISH_TARGET__INIT;
    t->msg = m;
    t->msg.node_ids = t->nodes;
    t->msg.n_node_ids = t->n_nodes;
    t->msg.labels = t->eptr;
    t->msg.n_labels = t->n_labels;
    t->msg.all = t->all;
    return 0;
}

/* Reads a whole file (at most FILE_MAX). 0, or -1 having printed why. */
static int read_file(cmd_ctx *x, const char *flag, const char *path, uint8_t **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return cmd_fail(x, CTL_EXIT_USAGE, "%s %s: %s", flag, path, strerror(errno)), -1;
    size_t cap = 0;
    uint8_t *buf = NULL;
    for (;;) {
        if (*len == cap) {
            cap = cap ? cap * 2 : 65536;
            uint8_t *nb = cap <= FILE_MAX + 1 ? realloc(buf, cap) : NULL;
            if (!nb) {
                free(buf);
                fclose(f);
                return cmd_fail(x, CTL_EXIT_USAGE, "%s %s: larger than %u MiB", flag, path, FILE_MAX >> 20), -1;
            }
            buf = nb;
        }
        size_t r = fread(buf + *len, 1, cap - *len, f);
        *len += r;
        if (r == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return cmd_fail(x, CTL_EXIT_USAGE, "%s %s: read error", flag, path), -1;
    }
    *data = buf;
    return 0;
}

static int print_published(cmd_ctx *x, Ops__Admin__V1__PublishResponse *resp, const char *what)
{
    if (x->json) {
        cmd_print_json(x, pbjson_from_message(M(resp)), 0);
    } else {
        const char *hdr[] = {"NODE", "EVENT"};
        table *t = table_new(2, hdr);
        table_align_right(t, 1);
        for (size_t i = 0; i < resp->n_events; i++) {
            char id[24];
            snprintf(id, sizeof id, "%" PRIu64, resp->events[i]->event_id);
            table_add(t, resp->events[i]->node_id, id);
        }
        table_print(t, x->out);
        table_free(t);
        fprintf(x->err, "%s published to %zu node(s); follow with: opsctl events [NODE]\n", what, resp->n_events);
    }
    protobuf_c_message_free_unpacked(M(resp), NULL);
    return CTL_EXIT_OK;
}

int cmd_publish_config(cmd_ctx *x, int argc, char **argv)
{
    const char *H = "publish-config";
    target t = {0};
    const char *agent = NULL, *file = NULL;
    int rc = CTL_EXIT_OK;
    for (int i = 0; i < argc && rc == CTL_EXIT_OK; i++) {
        const char *v;
        int m;
        if ((m = cmd_flag(argc, argv, &i, "--agent", &v)) != 0) {
            if (m < 0) rc = cmd_usage_error(x, H, "--agent needs an agent id");
            agent = v;
        } else if ((m = cmd_flag(argc, argv, &i, "--file", &v)) != 0) {
            if (m < 0) rc = cmd_usage_error(x, H, "--file needs a path");
            file = v;
        } else if ((m = target_arg(x, H, &t, argc, argv, &i)) != 0) {
            if (m < 0) rc = CTL_EXIT_USAGE;
        } else {
            rc = cmd_usage_error(x, H, "unknown flag %s", argv[i]);
        }
    }
    if (rc == CTL_EXIT_OK && target_done(x, H, &t) != 0) rc = CTL_EXIT_USAGE;
    if (rc == CTL_EXIT_OK && !agent) rc = cmd_usage_error(x, H, "missing --agent AGENT");
    if (rc == CTL_EXIT_OK && !file) rc = cmd_usage_error(x, H, "missing --file PATH");
    uint8_t *data = NULL;
    size_t len = 0;
    if (rc == CTL_EXIT_OK && read_file(x, "--file", file, &data, &len) != 0) rc = CTL_EXIT_USAGE;
    conn *c = rc == CTL_EXIT_OK ? cmd_conn(x) : NULL;
    if (rc == CTL_EXIT_OK && !c) rc = CTL_EXIT_CONN;
    if (rc == CTL_EXIT_OK) {
        Ops__Admin__V1__PublishConfigRequest req = OPS__ADMIN__V1__PUBLISH_CONFIG_REQUEST__INIT;
        req.target = &t.msg;
        req.agent_id = (char *)agent;
        req.config.data = data;
        req.config.len = len;
        Ops__Admin__V1__PublishResponse *resp = NULL;
        char err[1024];
        rc = conn_call(c, "PublishConfig", M(&req), &ops__admin__v1__publish_response__descriptor, (ProtobufCMessage **)&resp,
                       "publish configs", "operator", err, sizeof err);
        if (rc != CTL_EXIT_OK) rc = cmd_fail(x, rc, "%s", err);
        else rc = print_published(x, resp, "config_change");
    }
    free(data);
    target_free(&t);
    return rc;
}

static int hex_ok(const char *s)
{
    if (strlen(s) != 64) return 0;
    for (; *s; s++)
        if (!strchr("0123456789abcdefABCDEF", *s)) return 0;
    return 1;
}

int cmd_publish_update(cmd_ctx *x, int argc, char **argv)
{
    const char *H = "publish-update";
    target t = {0};
    const char *component = NULL, *agent = "", *version = NULL, *url = NULL, *pkg = NULL, *sha = NULL, *sigf = NULL;
    struct {
        const char *flag, **val, *what;
    } fl[] = {
        {"--component", &component, "agent or daemon"}, {"--agent", &agent, "an agent id"},
        {"--version", &version, "a version"},           {"--url", &url, "a URL"},
        {"--package", &pkg, "a file"},                  {"--sha256", &sha, "64 hex digits"},
        {"--signature-file", &sigf, "a file"},
    };
    int rc = CTL_EXIT_OK;
    for (int i = 0; i < argc && rc == CTL_EXIT_OK; i++) {
        const char *v;
        int m = 0;
        size_t k = 0;
        for (; k < sizeof fl / sizeof fl[0]; k++)
            if ((m = cmd_flag(argc, argv, &i, fl[k].flag, &v)) != 0) break;
        if (k < sizeof fl / sizeof fl[0]) {
            if (m < 0) rc = cmd_usage_error(x, H, "%s needs %s", fl[k].flag, fl[k].what);
            else *fl[k].val = v;
        } else if ((m = target_arg(x, H, &t, argc, argv, &i)) != 0) {
            if (m < 0) rc = CTL_EXIT_USAGE;
        } else {
            rc = cmd_usage_error(x, H, "unknown flag %s", argv[i]);
        }
    }
    if (rc == CTL_EXIT_OK && target_done(x, H, &t) != 0) rc = CTL_EXIT_USAGE;
    if (rc == CTL_EXIT_OK) {
        if (!component || (strcmp(component, "agent") && strcmp(component, "daemon")))
            rc = cmd_usage_error(x, H, "--component must be agent or daemon");
        else if (!strcmp(component, "agent") && !agent[0]) rc = cmd_usage_error(x, H, "--component agent needs --agent AGENT");
        else if (!version) rc = cmd_usage_error(x, H, "missing --version");
        else if (!url == !pkg) rc = cmd_usage_error(x, H, "give exactly one of --url and --package");
        else if (!sha || !hex_ok(sha)) rc = cmd_usage_error(x, H, "--sha256 needs the package's SHA-256 as 64 hex digits");
        else if (!sigf) rc = cmd_usage_error(x, H, "missing --signature-file (64 bytes of Ed25519)");
    }
    uint8_t *sig = NULL, *data = NULL;
    size_t sig_len = 0, len = 0;
    if (rc == CTL_EXIT_OK && read_file(x, "--signature-file", sigf, &sig, &sig_len) != 0) rc = CTL_EXIT_USAGE;
    if (rc == CTL_EXIT_OK && sig_len != 64)
        rc = cmd_fail(x, CTL_EXIT_USAGE, "--signature-file %s: %zu bytes, an Ed25519 signature is 64 (raw, not base64)", sigf,
                      sig_len);
    if (rc == CTL_EXIT_OK && pkg && read_file(x, "--package", pkg, &data, &len) != 0) rc = CTL_EXIT_USAGE;
    conn *c = rc == CTL_EXIT_OK ? cmd_conn(x) : NULL;
    if (rc == CTL_EXIT_OK && !c) rc = CTL_EXIT_CONN;
    if (rc == CTL_EXIT_OK) {
        Ops__Admin__V1__PublishUpdateRequest req = OPS__ADMIN__V1__PUBLISH_UPDATE_REQUEST__INIT;
        req.target = &t.msg;
        req.component = (char *)component;
        req.agent_id = (char *)agent;
        req.version = (char *)version;
        req.download_url = (char *)(url ? url : "");
        req.hash_sha256 = (char *)sha;
        req.signature.data = sig;
        req.signature.len = sig_len;
        req.package_data.data = data;
        req.package_data.len = len;
        Ops__Admin__V1__PublishResponse *resp = NULL;
        char err[1024];
        rc = conn_call(c, "PublishUpdate", M(&req), &ops__admin__v1__publish_response__descriptor, (ProtobufCMessage **)&resp,
                       "publish updates", "operator", err, sizeof err);
        if (rc != CTL_EXIT_OK) rc = cmd_fail(x, rc, "%s", err);
        else rc = print_published(x, resp, "version_update");
    }
    free(sig);
    free(data);
    target_free(&t);
    return rc;
}

/* What an event is about, for the table: "web (config)", "daemon 1.2.0", "web restart". */
static void about(const Ops__Admin__V1__UpdateEventRecord *e, char *buf, size_t n)
{
    if (!strcmp(e->kind, "config_change")) snprintf(buf, n, "%s config (%" PRId64 " bytes)", e->agent_id, e->payload_size);
    else if (!strcmp(e->kind, "command")) snprintf(buf, n, "%s %s", e->agent_id, e->operation);
    else if (!strcmp(e->component, "daemon")) snprintf(buf, n, "daemon %s", e->version);
    else snprintf(buf, n, "%s %s", e->agent_id, e->version);
}

int cmd_events(cmd_ctx *x, int argc, char **argv)
{
    const char *H = "events", *node = "", *limit_s = NULL;
    int pending = 0;
    for (int i = 0; i < argc; i++) {
        const char *v;
        int m;
        if (!strcmp(argv[i], "--pending")) pending = 1;
        else if ((m = cmd_flag(argc, argv, &i, "--limit", &v)) != 0) {
            if (m < 0) return cmd_usage_error(x, H, "--limit needs a number");
            limit_s = v;
        } else if (is_flag(argv[i])) return cmd_usage_error(x, H, "unknown flag %s", argv[i]);
        else if (node[0]) return cmd_usage_error(x, H, "unexpected argument %s", argv[i]);
        else node = argv[i];
    }
    long limit = 50;
    if (limit_s) {
        char *end;
        limit = strtol(limit_s, &end, 10);
        if (*end || limit < 1 || limit > 1000) return cmd_usage_error(x, H, "--limit takes 1..1000");
    }
    conn *c = cmd_conn(x);
    if (!c) return CTL_EXIT_CONN;
    Ops__Admin__V1__ListUpdateEventsRequest req = OPS__ADMIN__V1__LIST_UPDATE_EVENTS_REQUEST__INIT;
    req.node_id = (char *)node;
    req.pending_only = pending;
    req.limit = (int32_t)limit;
    Ops__Admin__V1__ListUpdateEventsResponse *resp = NULL;
    char err[1024];
    int rc = conn_call(c, "ListUpdateEvents", M(&req), &ops__admin__v1__list_update_events_response__descriptor,
                       (ProtobufCMessage **)&resp, "list events", "viewer", err, sizeof err);
    if (rc != CTL_EXIT_OK) return cmd_fail(x, rc, "%s", err);
    if (x->json) {
        cmd_print_json(x, pbjson_from_message(M(resp)), 0);
    } else {
        const char *hdr[] = {"EVENT", "NODE", "KIND", "WHAT", "CREATED", "OUTCOME", "MESSAGE"};
        table *t = table_new(7, hdr);
        table_align_right(t, 0);
        for (size_t i = 0; i < resp->n_events; i++) {
            const Ops__Admin__V1__UpdateEventRecord *e = resp->events[i];
            char id[24], what[200], created[32], msg[81];
            snprintf(id, sizeof id, "%" PRIu64, e->event_id);
            about(e, what, sizeof what);
            snprintf(msg, sizeof msg, "%s", e->message);
            for (char *p = msg; *p; p++)
                if (*p == '\n' || *p == '\t') *p = ' ';
            table_add(t, id, e->node_id, e->kind, what, table_fmt_ago(e->created_at, x->now, created, sizeof created),
                      e->outcome[0] ? e->outcome : "pending", msg);
        }
        table_print(t, x->out);
        table_free(t);
        if (!resp->n_events) fprintf(x->err, "(no %sevents%s%s)\n", pending ? "pending " : "", node[0] ? " for node " : "", node);
        else if (resp->next_before_id) fprintf(x->err, "(newest %zu shown; --limit for more)\n", resp->n_events);
    }
    protobuf_c_message_free_unpacked(M(resp), NULL);
    return CTL_EXIT_OK;
}

int cmd_event(cmd_ctx *x, int argc, char **argv)
{
    const char *H = "event";
    const char *id_s = NULL;
    for (int i = 0; i < argc; i++) {
        if (is_flag(argv[i])) return cmd_usage_error(x, H, "unknown flag %s", argv[i]);
        if (id_s) return cmd_usage_error(x, H, "unexpected argument %s", argv[i]);
        id_s = argv[i];
    }
    if (!id_s) return cmd_usage_error(x, H, "missing EVENT id");
    char *end;
    errno = 0;
    unsigned long long id = strtoull(id_s, &end, 10);
    if (*end || !id || errno || id_s[0] == '-') return cmd_usage_error(x, H, "EVENT must be a positive number (got %s)", id_s);
    conn *c = cmd_conn(x);
    if (!c) return CTL_EXIT_CONN;
    Ops__Admin__V1__GetUpdateEventRequest req = OPS__ADMIN__V1__GET_UPDATE_EVENT_REQUEST__INIT;
    req.event_id = id;
    Ops__Admin__V1__GetUpdateEventResponse *resp = NULL;
    char err[1024];
    int rc = conn_call(c, "GetUpdateEvent", M(&req), &ops__admin__v1__get_update_event_response__descriptor,
                       (ProtobufCMessage **)&resp, "read events", "viewer", err, sizeof err);
    if (rc != CTL_EXIT_OK) return cmd_fail(x, rc, "%s", err);
    if (x->json) {
        cmd_print_json(x, pbjson_from_message(M(resp->event)), 0);
    } else if (resp->event) {
        const Ops__Admin__V1__UpdateEventRecord *e = resp->event;
        char t1[64], t2[64], what[200];
        about(e, what, sizeof what);
        fprintf(x->out, "Event:      %" PRIu64 "\nNode:       %s\nKind:       %s\nWhat:       %s\n", e->event_id, e->node_id, e->kind,
                what);
        if (e->download_url[0]) fprintf(x->out, "URL:        %s\n", e->download_url);
        if (e->hash_sha256[0]) fprintf(x->out, "SHA-256:    %s\n", e->hash_sha256);
        fprintf(x->out, "Created:    %s\n", table_fmt_time(e->created_at, t1, sizeof t1));
        fprintf(x->out, "Outcome:    %s\n", e->outcome[0] ? e->outcome : "pending (no result from the daemon yet)");
        if (e->result_at) fprintf(x->out, "Result at:  %s\n", table_fmt_time(e->result_at, t2, sizeof t2));
        if (e->message[0]) fprintf(x->out, "Message:    %s\n", e->message);
    }
    protobuf_c_message_free_unpacked(M(resp), NULL);
    return CTL_EXIT_OK; /* an event that did not apply is still a successful lookup */
}
