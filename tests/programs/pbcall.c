/* pbcall: calls any method of the contract with a JSON request and prints one JSON line:
 * {"code":"OK","message":"...","response":{...}}. For test scripts.
 *   pbcall [--timeout MS] [--ca F [--cert F --key F]] [--header KEY:VALUE]... [--max N]
 *          TARGET METHOD [JSON]
 *   METHOD is e.g. manager.ManagerService/Heartbeat or proto.DaemonService/ListAgents.
 * A server-streaming method (ops.admin.v1.AdminService/WatchEvents) prints one line per
 * message, {"response":{...}}, flushed at once, then the final {"code":...,"message":...};
 * --max N stops (cancels) after N messages and ends with code OK.
 * Exit code: the gRPC status code (0 = OK); 100 for usage or a bad JSON request. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "admin.pb-c.h"
#include "daemon.pb-c.h"
#include "health.pb-c.h"
#include "manager.pb-c.h"
#include "rpc/pbjson.h"
#include "rpc/client.h"

static const struct {
    const char *method;
    const ProtobufCMessageDescriptor *req, *resp;
    int stream;
} methods[] = {
    {"manager.ManagerService/RegisterNode", &manager__register_node_request__descriptor, &manager__register_node_response__descriptor, 0},
    {"manager.ManagerService/Heartbeat", &manager__heartbeat_request__descriptor, &manager__heartbeat_response__descriptor, 0},
    {"manager.ManagerService/ReportMetrics", &manager__report_metrics_request__descriptor, &manager__report_metrics_response__descriptor, 0},
    {"manager.ManagerService/ReportEventResult", &manager__event_result_request__descriptor, &manager__event_result_response__descriptor, 0},
    {"proto.DaemonService/Register", &proto__register_request__descriptor, &proto__register_response__descriptor, 0},
    {"proto.DaemonService/Heartbeat", &proto__heartbeat_request__descriptor, &proto__heartbeat_response__descriptor, 0},
    {"proto.DaemonService/ReportMetrics", &proto__metrics_request__descriptor, &proto__metrics_response__descriptor, 0},
    {"proto.DaemonService/GetConfig", &proto__config_request__descriptor, &proto__config_response__descriptor, 0},
    {"proto.DaemonService/PushUpdate", &proto__update_request__descriptor, &proto__update_response__descriptor, 0},
    {"proto.DaemonService/ListAgents", &proto__list_agents_request__descriptor, &proto__list_agents_response__descriptor, 0},
    {"proto.DaemonService/OperateAgent", &proto__agent_operation_request__descriptor, &proto__agent_operation_response__descriptor, 0},
    {"proto.DaemonService/GetAgentMetrics", &proto__agent_metrics_request__descriptor, &proto__agent_metrics_response__descriptor, 0},
    {"proto.DaemonService/SyncAgentStates", &proto__sync_agent_states_request__descriptor, &proto__sync_agent_states_response__descriptor, 0},
    {"grpc.health.v1.Health/Check", &grpc__health__v1__health_check_request__descriptor, &grpc__health__v1__health_check_response__descriptor, 0},
#define ADM(m, req, resp, st) {"ops.admin.v1.AdminService/" m, &ops__admin__v1__##req##__descriptor, &ops__admin__v1__##resp##__descriptor, st}
    ADM("ListNodes", list_nodes_request, list_nodes_response, 0),
    ADM("GetNode", get_node_request, get_node_response, 0),
    ADM("DeleteNode", delete_node_request, delete_node_response, 0),
    ADM("ListAgents", list_agents_request, list_agents_response, 0),
    ADM("OperateAgent", operate_agent_request, operate_agent_response, 0),
    ADM("GetAgentMetrics", get_agent_metrics_request, get_agent_metrics_response, 0),
    ADM("QueryMetrics", query_metrics_request, query_metrics_response, 0),
    ADM("MetricsSummary", metrics_summary_request, metrics_summary_response, 0),
    ADM("GetDaemonConfig", get_daemon_config_request, get_daemon_config_response, 0),
    ADM("ListAudit", list_audit_request, list_audit_response, 0),
    ADM("WatchEvents", watch_events_request, event, 1),
    ADM("CreateEnrollmentToken", create_enrollment_token_request, create_enrollment_token_response, 0),
    ADM("ListEnrollmentTokens", list_enrollment_tokens_request, list_enrollment_tokens_response, 0),
    ADM("RevokeEnrollmentToken", revoke_enrollment_token_request, revoke_enrollment_token_response, 0),
    ADM("PublishConfig", publish_config_request, publish_response, 0),
    ADM("PublishUpdate", publish_update_request, publish_response, 0),
    ADM("ListUpdateEvents", list_update_events_request, list_update_events_response, 0),
    ADM("GetUpdateEvent", get_update_event_request, get_update_event_response, 0),
#undef ADM
    {"manager.ManagerService/SubscribeUpdates", &manager__subscribe_updates_request__descriptor, &manager__update_event__descriptor, 1},
};

#define MAX_HEADERS 16

static void print_json(json_t *out)
{
    char *s = json_dumps(out, JSON_COMPACT | JSON_SORT_KEYS);
    puts(s);
    fflush(stdout);
    free(s);
    json_decref(out);
}

/* Prints each message as it arrives; returns the final code. */
static int stream(rpc_channel *ch, const char *path, const ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *desc, const rpc_call_opts *o, long max)
{
    rpc_stream *st = NULL;
    rpc_result res;
    if (rpc_stream_open(ch, path, req, o, &st, &res) != 0) {
        print_json(json_pack("{s:s,s:s}", "code", rpc_code_name(res.code), "message", res.message));
        return res.code;
    }
    long n = 0;
    ProtobufCMessage *msg = NULL;
    while (rpc_stream_next(st, desc, &msg, &res) == 1) {
        print_json(json_pack("{s:o}", "response", pbjson_from_message(msg)));
        protobuf_c_message_free_unpacked(msg, NULL);
        if (max > 0 && ++n >= max) {
            res.code = RPC_OK;
            snprintf(res.message, sizeof res.message, "stopped after %ld messages", n);
            break;
        }
    }
    rpc_stream_close(st);
    print_json(json_pack("{s:s,s:s}", "code", rpc_code_name(res.code), "message", res.message));
    return res.code;
}

int main(int argc, char **argv)
{
    rpc_client_opts co;
    memset(&co, 0, sizeof co);
    int64_t timeout = 10000;
    long max = 0;
    const char *md[2 * MAX_HEADERS + 1] = {NULL};
    char hk[MAX_HEADERS][128];
    size_t nh = 0;
    int i = 1;
    for (; i < argc && argv[i][0] == '-' && argv[i][1] == '-'; i++) {
        if (!strcmp(argv[i], "--timeout") && i + 1 < argc) timeout = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--max") && i + 1 < argc) max = atol(argv[++i]);
        else if (!strcmp(argv[i], "--header") && i + 1 < argc) {
            const char *h = argv[++i], *colon = strchr(h, ':');
            if (!colon || colon == h || (size_t)(colon - h) >= sizeof hk[0] || nh == MAX_HEADERS) {
                fprintf(stderr, "pbcall: --header wants KEY:VALUE (at most %d)\n", MAX_HEADERS);
                return 100;
            }
            size_t kl = (size_t)(colon - h);
            for (size_t c = 0; c < kl; c++) hk[nh][c] = (char)(h[c] >= 'A' && h[c] <= 'Z' ? h[c] - 'A' + 'a' : h[c]);
            hk[nh][kl] = 0;
            const char *v = colon + 1;
            while (*v == ' ') v++;
            md[2 * nh] = hk[nh];
            md[2 * nh + 1] = v;
            nh++;
        }
        else if (!strcmp(argv[i], "--ca") && i + 1 < argc) { co.tls.enabled = 1; co.tls.ca_file = argv[++i]; }
        else if (!strcmp(argv[i], "--cert") && i + 1 < argc) co.tls.cert_file = argv[++i];
        else if (!strcmp(argv[i], "--key") && i + 1 < argc) co.tls.key_file = argv[++i];
        else break;
    }
    if (argc - i < 2) {
        fprintf(stderr, "usage: pbcall [--timeout MS] [--ca F [--cert F --key F]] [--header KEY:VALUE]... [--max N] TARGET METHOD [JSON]\n");
        return 100;
    }
    const char *target = argv[i], *method = argv[i + 1], *body = argc - i > 2 ? argv[i + 2] : "{}";
    size_t k;
    for (k = 0; k < sizeof methods / sizeof methods[0]; k++)
        if (!strcmp(methods[k].method, method)) break;
    if (k == sizeof methods / sizeof methods[0]) {
        fprintf(stderr, "pbcall: unknown method %s\n", method);
        return 100;
    }
    log_open(LOGL_ERROR, NULL);
    json_error_t je;
    json_t *j = json_loads(body, 0, &je);
    if (!j) {
        fprintf(stderr, "pbcall: request JSON: %s\n", je.text);
        return 100;
    }
    char err[512];
    ProtobufCMessage *req = pbjson_to_message(methods[k].req, j, err, sizeof err);
    json_decref(j);
    if (!req) {
        fprintf(stderr, "pbcall: %s\n", err);
        return 100;
    }
    rpc_channel *ch = rpc_channel_new(target, &co, err, sizeof err);
    if (!ch) {
        fprintf(stderr, "pbcall: %s\n", err);
        return 100;
    }
    char path[256];
    snprintf(path, sizeof path, "/%s", method);
    rpc_call_opts o = {.timeout_ms = timeout, .metadata = nh ? md : NULL};
    if (methods[k].stream) {
        int code = stream(ch, path, req, methods[k].resp, &o, max);
        protobuf_c_message_free_unpacked(req, NULL);
        rpc_channel_free(ch);
        return code;
    }
    rpc_result res;
    ProtobufCMessage *resp = NULL;
    rpc_call_unary(ch, path, req, methods[k].resp, &resp, &o, &res);
    json_t *out = json_pack("{s:s,s:s}", "code", rpc_code_name(res.code), "message", res.message);
    if (resp) json_object_set_new(out, "response", pbjson_from_message(resp));
    char *s = json_dumps(out, JSON_COMPACT | JSON_SORT_KEYS);
    puts(s);
    free(s);
    json_decref(out);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    protobuf_c_message_free_unpacked(req, NULL);
    rpc_channel_free(ch);
    return res.code;
}
