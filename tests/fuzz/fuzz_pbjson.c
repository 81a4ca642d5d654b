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

static const ProtobufCServiceDescriptor *const services[] = {
    &manager__manager_service__descriptor,
    &proto__daemon_service__descriptor,
    &ops__admin__v1__admin_service__descriptor,
};

#define MAX_TYPES 128
static const ProtobufCMessageDescriptor *types[MAX_TYPES];
static size_t n_types;

static void init(void)
{
    for (size_t s = 0; s < sizeof services / sizeof *services; s++)
        for (unsigned m = 0; m < services[s]->n_methods; m++) {
            const ProtobufCMessageDescriptor *io[2] = {services[s]->methods[m].input, services[s]->methods[m].output};
            for (int k = 0; k < 2; k++) {
                size_t i = 0;
                while (i < n_types && types[i] != io[k]) i++;
                if (i == n_types && n_types < MAX_TYPES) types[n_types++] = io[k];
            }
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!n_types) init();
    if (size < 1) return 0;
    const ProtobufCMessageDescriptor *d = types[data[0] % n_types];
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
