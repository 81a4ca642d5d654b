/* pbjson: descriptor-driven conversion. Memory is built so that protobuf-c's own
 * free_unpacked releases it (malloc'd strings and arrays, never static ones). */
#include "rpc/pbjson.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *xcalloc(size_t n, size_t s)
{
    void *p = calloc(n ? n : 1, s);
    if (!p) abort();
    return p;
}

static int set_scalar(const ProtobufCFieldDescriptor *f, void *dst, json_t *v, char *err, size_t errlen)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING:
        if (!json_is_string(v)) goto bad;
        *(char **)dst = strdup(json_string_value(v));
        return 0;
    case PROTOBUF_C_TYPE_BYTES: {
        if (!json_is_string(v)) goto bad;
        ProtobufCBinaryData *b = dst;
        b->len = json_string_length(v);
        b->data = xcalloc(b->len + 1, 1);
        memcpy(b->data, json_string_value(v), b->len);
        return 0;
    }
    case PROTOBUF_C_TYPE_BOOL:
        if (!json_is_boolean(v)) goto bad;
        *(protobuf_c_boolean *)dst = json_is_true(v);
        return 0;
    case PROTOBUF_C_TYPE_DOUBLE:
        if (!json_is_number(v)) goto bad;
        *(double *)dst = json_number_value(v);
        return 0;
    case PROTOBUF_C_TYPE_FLOAT:
        if (!json_is_number(v)) goto bad;
        *(float *)dst = (float)json_number_value(v);
        return 0;
    case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_SINT32: case PROTOBUF_C_TYPE_SFIXED32: case PROTOBUF_C_TYPE_ENUM:
        if (!json_is_integer(v)) goto bad;
        *(int32_t *)dst = (int32_t)json_integer_value(v);
        return 0;
    case PROTOBUF_C_TYPE_UINT32: case PROTOBUF_C_TYPE_FIXED32:
        if (!json_is_integer(v)) goto bad;
        *(uint32_t *)dst = (uint32_t)json_integer_value(v);
        return 0;
    case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64: case PROTOBUF_C_TYPE_SFIXED64:
        if (!json_is_integer(v)) goto bad;
        *(int64_t *)dst = (int64_t)json_integer_value(v);
        return 0;
    case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_FIXED64:
        if (!json_is_integer(v)) goto bad;
        *(uint64_t *)dst = (uint64_t)json_integer_value(v);
        return 0;
    case PROTOBUF_C_TYPE_MESSAGE: {
        ProtobufCMessage *m = pbjson_to_message((const ProtobufCMessageDescriptor *)f->descriptor, v, err, errlen);
        if (!m) return -1;
        *(ProtobufCMessage **)dst = m;
        return 0;
    }
    }
bad:
    snprintf(err, errlen, "field %s: wrong JSON type", f->name);
    return -1;
}

static size_t elem_size(const ProtobufCFieldDescriptor *f)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING: case PROTOBUF_C_TYPE_MESSAGE: return sizeof(void *);
    case PROTOBUF_C_TYPE_BYTES: return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_BOOL: return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_DOUBLE: case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64: case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_FIXED64: return 8;
    default: return 4;
    }
}

ProtobufCMessage *pbjson_to_message(const ProtobufCMessageDescriptor *d, json_t *j, char *err, size_t errlen)
{
    if (!json_is_object(j)) {
        snprintf(err, errlen, "%s: expected a JSON object", d->name);
        return NULL;
    }
    ProtobufCMessage *m = xcalloc(1, d->sizeof_message);
    d->message_init(m);
    const char *key;
    json_t *v;
    json_object_foreach(j, key, v) {
        const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, key);
        if (!f) {
            snprintf(err, errlen, "%s: unknown field %s", d->name, key);
            goto fail;
        }
        void *dst = (char *)m + f->offset;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t *count = (size_t *)((char *)m + f->quantifier_offset);
            int is_map = f->type == PROTOBUF_C_TYPE_MESSAGE && json_is_object(v);
            size_t n = is_map ? json_object_size(v) : json_array_size(v);
            if (!is_map && !json_is_array(v)) {
                snprintf(err, errlen, "field %s: expected an array", f->name);
                goto fail;
            }
            char *arr = xcalloc(n, elem_size(f));
            *(void **)dst = arr;
            *count = 0;
            if (is_map) {
                const char *mk;
                json_t *mv;
                json_object_foreach(v, mk, mv) {
                    json_t *entry = json_pack("{s:s,s:O}", "key", mk, "value", mv);
                    ProtobufCMessage *e = pbjson_to_message((const ProtobufCMessageDescriptor *)f->descriptor, entry, err, errlen);
                    json_decref(entry);
                    if (!e) goto fail;
                    ((ProtobufCMessage **)arr)[(*count)++] = e;
                }
            } else {
                for (size_t i = 0; i < n; i++) {
                    if (set_scalar(f, arr + i * elem_size(f), json_array_get(v, i), err, errlen) != 0) goto fail;
                    (*count)++;
                }
            }
        } else {
            if (f->type == PROTOBUF_C_TYPE_STRING) {
                char **sp = dst;
                if (*sp && *sp != (char *)f->default_value && *sp != protobuf_c_empty_string) free(*sp);
                *sp = NULL;
            }
            if (set_scalar(f, dst, v, err, errlen) != 0) goto fail;
        }
    }
    return m;
fail:
    protobuf_c_message_free_unpacked(m, NULL);
    return NULL;
}

static json_t *scalar_json(const ProtobufCFieldDescriptor *f, const void *src)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING: return json_string(*(char *const *)src ? *(char *const *)src : "");
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *b = src;
        return json_stringn_nocheck((const char *)b->data, b->len);
    }
    case PROTOBUF_C_TYPE_BOOL: return json_boolean(*(const protobuf_c_boolean *)src);
    case PROTOBUF_C_TYPE_DOUBLE: return json_real(*(const double *)src);
    case PROTOBUF_C_TYPE_FLOAT: return json_real(*(const float *)src);
    case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_SINT32: case PROTOBUF_C_TYPE_SFIXED32: case PROTOBUF_C_TYPE_ENUM:
        return json_integer(*(const int32_t *)src);
    case PROTOBUF_C_TYPE_UINT32: case PROTOBUF_C_TYPE_FIXED32: return json_integer(*(const uint32_t *)src);
    case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64: case PROTOBUF_C_TYPE_SFIXED64:
        return json_integer(*(const int64_t *)src);
    case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_FIXED64: return json_integer((json_int_t) * (const uint64_t *)src);
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *sub = *(ProtobufCMessage *const *)src;
        return sub ? pbjson_from_message(sub) : json_null();
    }
    }
    return json_null();
}

json_t *pbjson_from_message(const ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    json_t *o = json_object();
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const char *src = (const char *)m + f->offset;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)((const char *)m + f->quantifier_offset);
            const char *arr = *(char *const *)src;
            const ProtobufCMessageDescriptor *sd = f->type == PROTOBUF_C_TYPE_MESSAGE ? f->descriptor : NULL;
            int is_map = sd && sd->n_fields == 2 && !strcmp(sd->fields[0].name, "key") && strstr(sd->name, "Entry");
            json_t *out = is_map ? json_object() : json_array();
            for (size_t k = 0; k < n; k++) {
                if (is_map) {
                    const ProtobufCMessage *e = ((ProtobufCMessage *const *)arr)[k];
                    json_t *ej = pbjson_from_message(e);
                    json_t *kj = json_object_get(ej, "key");
                    json_object_set(out, json_string_value(kj) ? json_string_value(kj) : "", json_object_get(ej, "value"));
                    json_decref(ej);
                } else {
                    json_array_append_new(out, scalar_json(f, arr + k * elem_size(f)));
                }
            }
            json_object_set_new(o, f->name, out);
        } else {
            json_object_set_new(o, f->name, scalar_json(f, src));
        }
    }
    return o;
}
