/* libFuzzer: arbitrary bytes as every message of the contract's services (manager.proto,
 * daemon.proto, admin.proto: each method's request and response, since each side decodes the
 * other's), the way the rpc layer decodes them; then what handlers do with a decoded request
 * before acting: the daemon's request checks (dservice_validate), its authorization decision
 * (dservice_authorize) and the manager's AdminService token check (auth_check) on strings
 * taken from the input; and the JSON mapping (pbjson) both ways, which pbcall and opsctl use.
 *
 * Input: byte 0 picks the message type, the rest is the wire encoding. */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "admin.pb-c.h"
#include "base/log.h"
#include "daemon.pb-c.h"
#include "daemon/dservice.h"
#include "manager.pb-c.h"
#include "manager/auth.h"
#include "rpc/pbjson.h"

#include "fuzz_types.h"

static auth *tokens;

static void init(void)
{
    log_open(LOGL_ERROR, NULL);
    /* Two well-formed entries: the check hashes whatever the input holds against them. */
    static const auth_token t[] = {
        {"v", AUTH_VIEWER, "8c1ca6d1c4bde1bb4ad6cd4db4a23e9e92e2e7d0d5d4a8c0f4fe3a4cfcd21bb1"},
        {"a", AUTH_ADMIN, "4d0b8c4e2f3a9b5d6c7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c"},
    };
    char err[256];
    tokens = auth_new(t, 2, err, sizeof err);
    if (!tokens) abort();
}

/* The first string field of m (or ""), to feed the auth checks with fuzzer-chosen text. */
static const char *first_string(const ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type == PROTOBUF_C_TYPE_STRING && f->label != PROTOBUF_C_LABEL_REPEATED) {
            const char *s = *(char *const *)((const char *)m + f->offset);
            if (s) return s;
        }
    }
    return "";
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!tokens) init();
    if (size < 1) return 0;
    const ProtobufCMessageDescriptor *d = fuzz_types[data[0] % FUZZ_N_TYPES];
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, size - 1, data + 1);
    if (!m) return 0;

    /* What decodes must encode to something that decodes again. */
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf || protobuf_c_message_pack(m, buf) != n) abort();
    /* protobuf-c keeps an unknown field numbered 0 (an overlong tag such as 80 00) and writes
     * it back as a plain 0 tag, which it then refuses: found by this harness; harmless to us
     * (requests are never re-encoded), so the property holds only without unknown fields. */
    ProtobufCMessage *again = protobuf_c_message_unpack(d, NULL, n, buf);
    if (!again && m->n_unknown_fields == 0) abort();
    if (again) protobuf_c_message_free_unpacked(again, NULL);
    free(buf);

    char why[512];
    int code = dservice_validate(m, why, sizeof why);
    if (code != 0 && !why[0]) abort(); /* a refusal always says why */

    const char *s = first_string(m);
    char *ids[] = {"ops-manager", NULL};
    dconfig_auth a = {.allowed_identities = ids, .n_allowed_identities = 1,
                      .manager_token_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"};
    (void)dservice_authorize(&a, s, s, why, sizeof why);
    auth_identity who;
    (void)auth_check(tokens, s, AUTH_OPERATOR, &who, why, sizeof why);

    /* JSON: every decoded message prints, and what prints reads back as the same type. */
    json_t *j = pbjson_from_message(m);
    if (!j) abort();
    char err[256];
    ProtobufCMessage *back = pbjson_to_message(d, j, err, sizeof err);
    if (back) protobuf_c_message_free_unpacked(back, NULL);
    json_decref(j);
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}
