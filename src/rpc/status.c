/* rpc status: names and the one code -> error-kind mapping of CONTRACT.md. */
#include "rpc/status.h"

static const char *const names[] = {
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
    "UNAUTHENTICATED",
};

const char *rpc_code_name(int code)
{
    if (code < 0 || code > RPC_UNAUTHENTICATED) return "UNKNOWN";
    return names[code];
}

rpc_error_kind rpc_error_kind_of(int code)
{
    switch (code) {
    case RPC_OK: return RPC_ERR_NONE;
    case RPC_NOT_FOUND: return RPC_ERR_AGENT_NOT_FOUND;
    case RPC_INVALID_ARGUMENT: return RPC_ERR_INVALID_ARGUMENT;
    case RPC_DEADLINE_EXCEEDED: return RPC_ERR_TIMEOUT;
    case RPC_UNAVAILABLE: return RPC_ERR_CONNECTION_FAILED;
    default: return RPC_ERR_OTHER;
    }
}

const char *rpc_error_kind_name(rpc_error_kind kind)
{
    switch (kind) {
    case RPC_ERR_NONE: return "ok";
    case RPC_ERR_AGENT_NOT_FOUND: return "agent not found";
    case RPC_ERR_INVALID_ARGUMENT: return "invalid argument";
    case RPC_ERR_TIMEOUT: return "timeout";
    case RPC_ERR_CONNECTION_FAILED: return "connection failed";
    case RPC_ERR_OTHER: return "error";
    }
    return "error";
}
