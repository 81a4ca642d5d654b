/* libFuzzer: arbitrary text as the JSON of a contract message (what pbcall and opsctl turn
 * into requests): pbjson_to_message must build a message or name the field it refuses, never
 * crash; a built message must encode, decode and print back.
 *
 * Input: byte 0 picks the message type (every request and response of the three services),
 * the rest is the JSON text. */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "admin.pb-c.h"
#include "daemon.pb-c.h"
#include "manager.pb-c.h"
#include "rpc/pbjson.h"

#include "fuzz_types.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const ProtobufCMessageDescriptor *d = fuzz_types[data[0] % FUZZ_N_TYPES];
    json_error_t je;
    json_t *j = json_loadb((const char *)data + 1, size - 1, JSON_DECODE_ANY, &je);
    if (!j) return 0;
    char err[256] = "";
    ProtobufCMessage *m = pbjson_to_message(d, j, err, sizeof err);
    json_decref(j);
    if (!m) {
        if (!err[0]) abort(); /* a refusal names the problem */
        return 0;
    }
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf || protobuf_c_message_pack(m, buf) != n) abort();
    ProtobufCMessage *again = protobuf_c_message_unpack(d, NULL, n, buf);
    if (!again) abort();
    json_t *out = pbjson_from_message(again);
    if (!out) abort();
    json_decref(out);
    protobuf_c_message_free_unpacked(again, NULL);
    free(buf);
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}
