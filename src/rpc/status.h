/* rpc status: gRPC status codes, and the client-side error kinds of CONTRACT.md, produced by
 * one mapping function. Owns nothing. */
#ifndef OPS_RPC_STATUS_H
#define OPS_RPC_STATUS_H

/* The gRPC status codes, numbered as on the wire. */
typedef enum {
    RPC_OK = 0,
    RPC_CANCELLED = 1,
    RPC_UNKNOWN = 2,
    RPC_INVALID_ARGUMENT = 3,
    RPC_DEADLINE_EXCEEDED = 4,
    RPC_NOT_FOUND = 5,
    RPC_ALREADY_EXISTS = 6,
    RPC_PERMISSION_DENIED = 7,
    RPC_RESOURCE_EXHAUSTED = 8,
    RPC_FAILED_PRECONDITION = 9,
    RPC_ABORTED = 10,
    RPC_OUT_OF_RANGE = 11,
    RPC_UNIMPLEMENTED = 12,
    RPC_INTERNAL = 13,
    RPC_UNAVAILABLE = 14,
    RPC_DATA_LOSS = 15,
    RPC_UNAUTHENTICATED = 16,
} rpc_code;

/* What the manager's client makes of a status (CONTRACT.md, "The Manager's client maps..."). */
typedef enum {
    RPC_ERR_NONE = 0,
    RPC_ERR_AGENT_NOT_FOUND,
    RPC_ERR_INVALID_ARGUMENT,
    RPC_ERR_TIMEOUT,
    RPC_ERR_CONNECTION_FAILED,
    RPC_ERR_OTHER,
} rpc_error_kind;

/* "OK", "INVALID_ARGUMENT", ...; "CODE_<n>" style for out-of-range values is not needed:
 * anything unknown is "UNKNOWN". */
const char *rpc_code_name(int code);
rpc_error_kind rpc_error_kind_of(int code);
/* "agent not found", "invalid argument", "timeout", "connection failed", "error". */
const char *rpc_error_kind_name(rpc_error_kind kind);

#endif
