/* pbjson: protobuf-c messages to and from JSON (jansson), driven by the descriptors, so test
 * scripts can build any request and read any answer, and opsctl can print any answer
 * (-o json). proto3 JSON-ish: field names as in the .proto, maps as objects, int64 as
 * numbers, bytes as UTF-8 strings. Owns nothing. */
#ifndef OPS_RPC_PBJSON_H
#define OPS_RPC_PBJSON_H

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

/* Builds a message of type d from j (malloc'd; free with protobuf_c_message_free_unpacked).
 * NULL with err naming the field on a type mismatch or unknown field. */
ProtobufCMessage *pbjson_to_message(const ProtobufCMessageDescriptor *d, json_t *j, char *err, size_t errlen);
json_t *pbjson_from_message(const ProtobufCMessage *m);

#endif
