/* rpc reflection: gRPC server reflection (grpc.reflection.v1alpha.ServerReflection and the
 * identical grpc.reflection.v1.ServerReflection), so that grpcurl, grpc_cli, Postman or evans
 * can call a server without its .proto files.
 *
 * The descriptors come from a serialized google.protobuf.FileDescriptorSet made at build time
 * (protoc --include_imports --descriptor_set_out, compiled in as bytes). An rpc_reflection is
 * the index of one such set: each file's original bytes, its dependencies, and every symbol it
 * declares (services, methods, messages with their nested types, enums). It is immutable once
 * built, so any number of servers and calls share it.
 *
 * The services listed are the ones the server actually serves, read from its method table at
 * each request, so the list stays true whatever was registered (health and reflection
 * included).
 *
 * Owns: the index (the unpacked descriptors). Borrows the set's bytes, which must outlive it. */
#ifndef OPS_RPC_REFLECTION_H
#define OPS_RPC_REFLECTION_H

#include <stddef.h>

#include "rpc/server.h"

typedef struct rpc_reflection rpc_reflection;

/* Indexes a serialized FileDescriptorSet. NULL with err when the bytes are not one, or a
 * file names a dependency the set does not hold. */
rpc_reflection *rpc_reflection_new(const unsigned char *set, size_t len, char *err, size_t errlen);
void rpc_reflection_free(rpc_reflection *r);

/* Adds both reflection services to s (before rpc_server_start); one index may serve many
 * servers. r must outlive s. Returns 0, or -1 with err. */
int rpc_reflection_register(rpc_server *s, const rpc_reflection *r, char *err, size_t errlen);

/* The name of the file declaring a fully qualified symbol ("manager.ManagerService",
 * "manager.ManagerService.Heartbeat", "proto.AgentInfo"), or NULL. */
const char *rpc_reflection_file_of(const rpc_reflection *r, const char *symbol);
/* Number of files in the set. */
size_t rpc_reflection_file_count(const rpc_reflection *r);

#endif
