/* Server reflection: the index of the compiled-in descriptor set (symbols of every kind, files
 * with their imports, broken sets refused), and the v1 service over a real socket with our own
 * bidi client: list_services from the method table, a file with its dependencies, NOT_FOUND
 * without ending the stream. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "ops_descriptors.h"
#include "reflection_v1alpha.pb-c.h"
#include "rpc/client.h"
#include "rpc/reflection.h"
#include "rpc/server.h"

static void index_symbols(void **state)
{
    (void)state;
    char err[256];
    rpc_reflection *r = rpc_reflection_new(ops_descriptor_set, ops_descriptor_set_len, err, sizeof err);
    assert_non_null(r);
    assert_int_equal(rpc_reflection_file_count(r), 6);
    static const char *const cases[][2] = {
        {"manager.ManagerService", "manager.proto"},
        {"manager.ManagerService.Heartbeat", "manager.proto"},
        {"manager.RegisterNodeRequest", "manager.proto"},
        {"manager.RegisterNodeRequest.LabelsEntry", "manager.proto"}, /* nested */
        {".proto.AgentInfo", "daemon.proto"},                         /* leading dot */
        {"proto.DaemonService.SyncAgentStates", "daemon.proto"},
        {"grpc.health.v1.HealthCheckResponse.ServingStatus", "health.proto"}, /* nested enum */
        {"ops.admin.v1.AdminService", "admin.proto"},
        {"grpc.reflection.v1.ServerReflection.ServerReflectionInfo", "reflection_v1.proto"},
        {"grpc.reflection.v1alpha.ErrorResponse", "reflection_v1alpha.proto"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *f = rpc_reflection_file_of(r, cases[i][0]);
        assert_non_null(f);
        assert_string_equal(f, cases[i][1]);
    }
    assert_null(rpc_reflection_file_of(r, "manager"));
    assert_null(rpc_reflection_file_of(r, "manager.Nope"));
    assert_null(rpc_reflection_file_of(r, "manager.ManagerService.Nope"));
    rpc_reflection_free(r);
}

static void broken_sets_refused(void **state)
{
    (void)state;
    char err[256];
    static const unsigned char garbage[] = {0x0a, 0x7f, 0x01};
    assert_null(rpc_reflection_new(garbage, sizeof garbage, err, sizeof err));
    assert_non_null(strstr(err, "malformed"));
    assert_null(rpc_reflection_new(garbage, 0, err, sizeof err));
    /* admin.proto alone: it imports daemon.proto, which is missing */
    const unsigned char *p = ops_descriptor_set, *end = p + ops_descriptor_set_len;
    const unsigned char *admin = NULL;
    size_t admin_len = 0;
    while (p < end) { /* each entry: 0x0a, varint length, bytes */
        size_t len = 0;
        int shift = 0;
        const unsigned char *q = p + 1;
        while (*q & 0x80) len |= (size_t)(*q++ & 0x7f) << shift, shift += 7;
        len |= (size_t)*q++ << shift;
        if (memmem(q, len < 20 ? len : 20, "admin.proto", 11)) {
            admin = p;
            admin_len = (size_t)(q - p) + len;
        }
        p = q + len;
    }
    assert_non_null(admin);
    assert_null(rpc_reflection_new(admin, admin_len, err, sizeof err));
    assert_non_null(strstr(err, "daemon.proto"));
}

typedef Grpc__Reflection__V1alpha__ServerReflectionRequest refl_req;
typedef Grpc__Reflection__V1alpha__ServerReflectionResponse refl_resp;

static refl_resp *ask(rpc_stream *s, refl_req *req)
{
    rpc_result res;
    assert_int_equal(rpc_stream_send(s, &req->base), 0);
    ProtobufCMessage *m;
    assert_int_equal(rpc_stream_next(s, &grpc__reflection__v1alpha__server_reflection_response__descriptor, &m, &res), 1);
    return (refl_resp *)m;
}

static void stream_answers(void **state)
{
    (void)state;
    char err[256];
    rpc_reflection *r = rpc_reflection_new(ops_descriptor_set, ops_descriptor_set_len, err, sizeof err);
    assert_non_null(r);
    const char *listen[] = {"127.0.0.1:0", NULL};
    rpc_server_opts o = {.name = "refl-test", .listen = listen, .quiet_access_log = 1};
    rpc_server *srv = rpc_server_new(&o, err, sizeof err);
    assert_non_null(srv);
    assert_int_equal(rpc_reflection_register(srv, r, err, sizeof err), 0);
    assert_int_equal(rpc_server_start(srv, err, sizeof err), 0);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", rpc_server_port(srv, 0));
    rpc_channel *ch = rpc_channel_new(target, NULL, err, sizeof err);
    assert_non_null(ch);
    rpc_stream *s;
    rpc_result res;
    assert_int_equal(rpc_bidi_open(ch, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", NULL, &s, &res), 0);

    /* the services this server serves: health and both reflections, nothing else */
    refl_req req = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__INIT;
    req.message_request_case = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES;
    req.list_services = "";
    refl_resp *a = ask(s, &req);
    assert_int_equal(a->message_response_case, GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE);
    assert_int_equal(a->list_services_response->n_service, 3);
    assert_string_equal(a->list_services_response->service[0]->name, "grpc.health.v1.Health");
    protobuf_c_message_free_unpacked(&a->base, NULL);

    /* unknown: NOT_FOUND, and the stream goes on */
    req.message_request_case = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL;
    req.file_containing_symbol = "nope.Nothing";
    a = ask(s, &req);
    assert_int_equal(a->message_response_case, GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE);
    assert_int_equal(a->error_response->error_code, RPC_NOT_FOUND);
    assert_non_null(strstr(a->error_response->error_message, "nope.Nothing"));
    assert_string_equal(a->original_request->file_containing_symbol, "nope.Nothing");
    protobuf_c_message_free_unpacked(&a->base, NULL);

    /* admin.proto first, then its import daemon.proto: the original bytes */
    req.file_containing_symbol = "ops.admin.v1.AdminService.ListNodes";
    a = ask(s, &req);
    assert_int_equal(a->message_response_case, GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE);
    Grpc__Reflection__V1alpha__FileDescriptorResponse *fr = a->file_descriptor_response;
    assert_int_equal(fr->n_file_descriptor_proto, 2);
    assert_non_null(memmem(fr->file_descriptor_proto[0].data, 20, "admin.proto", 11));
    assert_non_null(memmem(fr->file_descriptor_proto[1].data, 20, "daemon.proto", 12));
    assert_non_null(memmem(ops_descriptor_set, ops_descriptor_set_len, fr->file_descriptor_proto[0].data,
                           fr->file_descriptor_proto[0].len));
    protobuf_c_message_free_unpacked(&a->base, NULL);

    /* a known message has no extensions: an empty list */
    req.message_request_case = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE;
    req.all_extension_numbers_of_type = "proto.AgentInfo";
    a = ask(s, &req);
    assert_int_equal(a->message_response_case, GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE);
    assert_string_equal(a->all_extension_numbers_response->base_type_name, "proto.AgentInfo");
    assert_int_equal(a->all_extension_numbers_response->n_extension_number, 0);
    protobuf_c_message_free_unpacked(&a->base, NULL);

    /* file by name */
    req.message_request_case = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME;
    req.file_by_filename = "health.proto";
    a = ask(s, &req);
    assert_int_equal(a->message_response_case, GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE);
    assert_int_equal(a->file_descriptor_response->n_file_descriptor_proto, 1);
    protobuf_c_message_free_unpacked(&a->base, NULL);

    assert_int_equal(rpc_stream_close_send(s), 0);
    ProtobufCMessage *m;
    assert_int_equal(rpc_stream_next(s, &grpc__reflection__v1alpha__server_reflection_response__descriptor, &m, &res), 0);
    assert_int_equal(res.code, RPC_OK);
    rpc_stream_close(s);
    rpc_channel_free(ch);
    rpc_server_free(srv);
    rpc_reflection_free(r);
}

int main(void)
{
    log_open(getenv("OPS_TEST_DEBUG") ? LOGL_DEBUG : LOGL_WARN, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(index_symbols),
        cmocka_unit_test(broken_sets_refused),
        cmocka_unit_test(stream_answers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
