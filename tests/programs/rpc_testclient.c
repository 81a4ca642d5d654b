/* rpc_testclient: our rpc client against any opstest.Test server (in the interop tests, a
 * grpc-js one). One line per check, "ok NAME" or "FAIL NAME: why"; exit 0 when all passed.
 *   rpc_testclient --target HOST:PORT [--ca CA [--cert C --key K] [--servername N]] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "rpc/client.h"
#include "testsvc.pb-c.h"

static int failures;

static void report(const char *name, int ok, const char *why)
{
    if (ok) printf("ok %s\n", name);
    else { printf("FAIL %s: %s\n", name, why); failures++; }
    fflush(stdout);
}

int main(int argc, char **argv)
{
    const char *target = NULL;
    rpc_client_opts co;
    memset(&co, 0, sizeof co);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--target") && i + 1 < argc) target = argv[++i];
        else if (!strcmp(argv[i], "--ca") && i + 1 < argc) { co.tls.enabled = 1; co.tls.ca_file = argv[++i]; }
        else if (!strcmp(argv[i], "--cert") && i + 1 < argc) co.tls.cert_file = argv[++i];
        else if (!strcmp(argv[i], "--key") && i + 1 < argc) co.tls.key_file = argv[++i];
        else if (!strcmp(argv[i], "--servername") && i + 1 < argc) co.tls.server_name = argv[++i];
        else { fprintf(stderr, "usage: %s --target HOST:PORT [--ca CA [--cert C --key K] [--servername N]]\n", argv[0]); return 2; }
    }
    if (!target) { fprintf(stderr, "rpc_testclient: --target is required\n"); return 2; }
    log_open(LOGL_WARN, NULL);
    char err[512], why[600];
    rpc_channel *ch = rpc_channel_new(target, &co, err, sizeof err);
    if (!ch) { fprintf(stderr, "rpc_testclient: %s\n", err); return 1; }
    rpc_result res;
    ProtobufCMessage *m;

    Opstest__EchoRequest req = OPSTEST__ECHO_REQUEST__INIT;
    req.text = "hello from C";
    rpc_call_opts o = {.timeout_ms = 5000, .trace_id = "c-interop-trace"};
    int code = rpc_call_unary(ch, "/opstest.Test/Echo", &req.base, &opstest__echo_response__descriptor, &m, &o, &res);
    snprintf(why, sizeof why, "code=%s msg=%s", rpc_code_name(code), res.message);
    if (code == RPC_OK) {
        Opstest__EchoResponse *r = (Opstest__EchoResponse *)m;
        int ok = !strcmp(r->text, "hello from C") && !strcmp(r->trace_id, "c-interop-trace");
        snprintf(why, sizeof why, "text=%s trace_id=%s", r->text, r->trace_id);
        report("unary", ok, why);
        protobuf_c_message_free_unpacked(m, NULL);
    } else {
        report("unary", 0, why);
    }

    Opstest__CountRequest creq = OPSTEST__COUNT_REQUEST__INIT;
    creq.n = 10000;
    rpc_stream *st;
    if (rpc_stream_open(ch, "/opstest.Test/Count", &creq.base, &o, &st, &res) != 0) {
        snprintf(why, sizeof why, "open: %s %s", rpc_code_name(res.code), res.message);
        report("stream", 0, why);
    } else {
        int expect = 0, inorder = 1;
        while (rpc_stream_next(st, &opstest__count_reply__descriptor, &m, &res) == 1) {
            if (((Opstest__CountReply *)m)->i != expect) inorder = 0;
            expect++;
            protobuf_c_message_free_unpacked(m, NULL);
        }
        snprintf(why, sizeof why, "got %d in_order=%d final=%s %s", expect, inorder, rpc_code_name(res.code), res.message);
        report("stream", expect == 10000 && inorder && res.code == RPC_OK, why);
        rpc_stream_close(st);
    }

    Opstest__EchoRequest ereq = OPSTEST__ECHO_REQUEST__INIT;
    ereq.code = RPC_NOT_FOUND;
    ereq.message = "no such agent: z9";
    code = rpc_call_unary(ch, "/opstest.Test/Echo", &ereq.base, &opstest__echo_response__descriptor, &m, &o, &res);
    snprintf(why, sizeof why, "code=%s kind=%s msg=%s", rpc_code_name(code), rpc_error_kind_name(res.kind), res.message);
    report("error", code == RPC_NOT_FOUND && res.kind == RPC_ERR_AGENT_NOT_FOUND && !strcmp(res.message, "no such agent: z9"), why);

    Opstest__EchoRequest sreq = OPSTEST__ECHO_REQUEST__INIT;
    sreq.sleep_ms = 2000;
    rpc_call_opts short_o = {.timeout_ms = 200};
    code = rpc_call_unary(ch, "/opstest.Test/Echo", &sreq.base, &opstest__echo_response__descriptor, &m, &short_o, &res);
    snprintf(why, sizeof why, "code=%s", rpc_code_name(code));
    report("deadline", code == RPC_DEADLINE_EXCEEDED && res.kind == RPC_ERR_TIMEOUT, why);

    rpc_channel_free(ch);
    printf("%d passed, %d failed\n", 4 - failures, failures);
    return failures ? 1 : 0;
}
