/* pbcall: calls any method of the contract with a JSON request and prints one JSON line:
 * {"code":"OK","message":"...","response":{...}}. For test scripts.
 *   pbcall [--timeout MS] [--ca F [--cert F --key F]] TARGET METHOD [JSON]
 *   METHOD is e.g. manager.ManagerService/Heartbeat or proto.DaemonService/ListAgents.
 * Exit code: the gRPC status code (0 = OK); 100 for usage or a bad JSON request. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
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
};

int main(int argc, char **argv)
{
    rpc_client_opts co;
    memset(&co, 0, sizeof co);
    int64_t timeout = 10000;
    int i = 1;
    for (; i < argc && argv[i][0] == '-' && argv[i][1] == '-'; i++) {
        if (!strcmp(argv[i], "--timeout") && i + 1 < argc) timeout = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--ca") && i + 1 < argc) { co.tls.enabled = 1; co.tls.ca_file = argv[++i]; }
        else if (!strcmp(argv[i], "--cert") && i + 1 < argc) co.tls.cert_file = argv[++i];
        else if (!strcmp(argv[i], "--key") && i + 1 < argc) co.tls.key_file = argv[++i];
        else break;
    }
    if (argc - i < 2) {
        fprintf(stderr, "usage: pbcall [--timeout MS] [--ca F [--cert F --key F]] TARGET METHOD [JSON]\n");
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
    rpc_call_opts o = {.timeout_ms = timeout};
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
