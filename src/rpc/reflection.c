/* rpc reflection: the descriptor-set index and the ServerReflectionInfo stream handler.
 *
 * v1alpha and v1 are the same messages with the same field numbers under two package names,
 * so one handler decodes and answers both with the v1alpha C types: the bytes on the wire are
 * identical. */
#include "rpc/reflection.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "descset.pb-c.h"
#include "reflection_v1alpha.pb-c.h"

#define NOT_FOUND 5 /* gRPC status codes, as error_response carries them */
#define INVALID_ARGUMENT 3

enum sym_kind { SYM_SERVICE, SYM_METHOD, SYM_MESSAGE, SYM_ENUM };

struct sym {
    char *name; /* fully qualified, no leading dot */
    size_t file;
    enum sym_kind kind;
};

struct rfile {
    const unsigned char *bytes; /* the original FileDescriptorProto, inside the set */
    size_t len;
    Ops__Descset__FileDescriptorProto *fd; /* unpacked: names and dependencies */
    size_t *deps;                          /* indices of fd->dependency */
};

struct rpc_reflection {
    struct rfile *files;
    size_t n_files;
    struct sym *syms; /* sorted by name */
    size_t n_syms, cap_syms;
    rpc_bidi_method methods[2];
};

static int reflection_info(rpc_ctx *c, void *user);

/* ---- reading the set ---------------------------------------------------------------------- */

/* A base-128 varint at *p (< end). Returns 0, or -1 when truncated or too long. */
static int read_varint(const unsigned char **p, const unsigned char *end, uint64_t *v)
{
    uint64_t x = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        unsigned char b = *(*p)++;
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -1;
}

/* Walks the set's own wire format to find each file's byte range: clients need the bytes
 * protoc wrote, which re-encoding an unpacked message would not promise to reproduce. */
static int split_set(rpc_reflection *r, const unsigned char *set, size_t len, char *err, size_t errlen)
{
    const unsigned char *p = set, *end = set + len;
    size_t cap = 0;
    while (p < end) {
        uint64_t key, n;
        if (read_varint(&p, end, &key) != 0) goto bad;
        unsigned wt = (unsigned)(key & 7);
        if (wt == 0) {
            if (read_varint(&p, end, &n) != 0) goto bad;
            continue;
        }
        if (wt == 1 || wt == 5) {
            size_t skip = wt == 1 ? 8 : 4;
            if ((size_t)(end - p) < skip) goto bad;
            p += skip;
            continue;
        }
        if (wt != 2 || read_varint(&p, end, &n) != 0 || n > (uint64_t)(end - p)) goto bad;
        if ((key >> 3) == 1) { /* FileDescriptorSet.file */
            if (r->n_files == cap) {
                cap = cap ? cap * 2 : 16;
                r->files = realloc(r->files, cap * sizeof *r->files);
                if (!r->files) abort();
            }
            struct rfile *f = &r->files[r->n_files];
            memset(f, 0, sizeof *f);
            f->bytes = p;
            f->len = (size_t)n;
            f->fd = ops__descset__file_descriptor_proto__unpack(NULL, f->len, f->bytes);
            if (!f->fd) {
                snprintf(err, errlen, "descriptor set: file %zu is not a FileDescriptorProto", r->n_files);
                return -1;
            }
            r->n_files++;
        }
        p += n;
    }
    return 0;
bad:
    snprintf(err, errlen, "descriptor set: malformed at byte %zu", (size_t)(p - set));
    return -1;
}

static void add_sym(rpc_reflection *r, const char *prefix, const char *name, size_t file, enum sym_kind kind)
{
    if (!name || !*name) return;
    if (r->n_syms == r->cap_syms) {
        r->cap_syms = r->cap_syms ? r->cap_syms * 2 : 64;
        r->syms = realloc(r->syms, r->cap_syms * sizeof *r->syms);
        if (!r->syms) abort();
    }
    size_t n = strlen(prefix) + strlen(name) + 2;
    char *full = malloc(n);
    if (!full) abort();
    snprintf(full, n, "%s%s%s", prefix, *prefix ? "." : "", name);
    r->syms[r->n_syms++] = (struct sym){full, file, kind};
}

static void index_message(rpc_reflection *r, const char *prefix, const Ops__Descset__DescriptorProto *m, size_t file)
{
    if (!m->name) return;
    add_sym(r, prefix, m->name, file, SYM_MESSAGE);
    /* a copy: add_sym may move r->syms while the nested types are indexed under this name */
    char *self = strdup(r->syms[r->n_syms - 1].name);
    if (!self) abort();
    for (size_t i = 0; i < m->n_enum_type; i++) add_sym(r, self, m->enum_type[i]->name, file, SYM_ENUM);
    for (size_t i = 0; i < m->n_nested_type; i++) index_message(r, self, m->nested_type[i], file);
    free(self);
}

static int sym_cmp(const void *a, const void *b)
{
    return strcmp(((const struct sym *)a)->name, ((const struct sym *)b)->name);
}

static const struct sym *find_sym(const rpc_reflection *r, const char *name)
{
    if (!name) return NULL;
    if (*name == '.') name++; /* some clients send ".pkg.Type" */
    struct sym key = {(char *)name, 0, SYM_MESSAGE};
    return bsearch(&key, r->syms, r->n_syms, sizeof *r->syms, sym_cmp);
}

static long find_file(const rpc_reflection *r, const char *name)
{
    for (size_t i = 0; i < r->n_files; i++)
        if (r->files[i].fd->name && strcmp(r->files[i].fd->name, name) == 0) return (long)i;
    return -1;
}

rpc_reflection *rpc_reflection_new(const unsigned char *set, size_t len, char *err, size_t errlen)
{
    rpc_reflection *r = calloc(1, sizeof *r);
    if (!r) abort();
    if (split_set(r, set, len, err, errlen) != 0) goto fail;
    if (r->n_files == 0) {
        snprintf(err, errlen, "descriptor set: no files");
        goto fail;
    }
    for (size_t i = 0; i < r->n_files; i++) {
        Ops__Descset__FileDescriptorProto *fd = r->files[i].fd;
        if (!fd->name) {
            snprintf(err, errlen, "descriptor set: file %zu has no name", i);
            goto fail;
        }
        r->files[i].deps = calloc(fd->n_dependency + 1, sizeof *r->files[i].deps);
        if (!r->files[i].deps) abort();
        for (size_t d = 0; d < fd->n_dependency; d++) {
            long k = find_file(r, fd->dependency[d]);
            if (k < 0) {
                snprintf(err, errlen, "descriptor set: %s imports %s, which the set does not hold (build it with --include_imports)",
                         fd->name, fd->dependency[d]);
                goto fail;
            }
            r->files[i].deps[d] = (size_t)k;
        }
        const char *pkg = fd->package ? fd->package : "";
        for (size_t m = 0; m < fd->n_message_type; m++) index_message(r, pkg, fd->message_type[m], i);
        for (size_t e = 0; e < fd->n_enum_type; e++) add_sym(r, pkg, fd->enum_type[e]->name, i, SYM_ENUM);
        for (size_t s = 0; s < fd->n_service; s++) {
            const Ops__Descset__ServiceDescriptorProto *sv = fd->service[s];
            if (!sv->name) continue;
            add_sym(r, pkg, sv->name, i, SYM_SERVICE);
            char *svc = strdup(r->syms[r->n_syms - 1].name);
            if (!svc) abort();
            for (size_t m = 0; m < sv->n_method; m++) add_sym(r, svc, sv->method[m]->name, i, SYM_METHOD);
            free(svc);
        }
    }
    qsort(r->syms, r->n_syms, sizeof *r->syms, sym_cmp);
    const ProtobufCMessageDescriptor *rq = &grpc__reflection__v1alpha__server_reflection_request__descriptor;
    const ProtobufCMessageDescriptor *rs = &grpc__reflection__v1alpha__server_reflection_response__descriptor;
    r->methods[0] = (rpc_bidi_method){"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", rq, rs,
                                      reflection_info, r};
    r->methods[1] = (rpc_bidi_method){"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", rq, rs,
                                      reflection_info, r};
    return r;
fail:
    rpc_reflection_free(r);
    return NULL;
}

void rpc_reflection_free(rpc_reflection *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->n_files; i++) {
        ops__descset__file_descriptor_proto__free_unpacked(r->files[i].fd, NULL);
        free(r->files[i].deps);
    }
    free(r->files);
    for (size_t i = 0; i < r->n_syms; i++) free(r->syms[i].name);
    free(r->syms);
    free(r);
}

const char *rpc_reflection_file_of(const rpc_reflection *r, const char *symbol)
{
    const struct sym *s = find_sym(r, symbol);
    return s ? r->files[s->file].fd->name : NULL;
}

size_t rpc_reflection_file_count(const rpc_reflection *r) { return r->n_files; }

/* ---- answering ---------------------------------------------------------------------------- */

/* The file and everything it imports, transitively, the file first (what clients expect:
 * they can build the descriptor from this one answer). out has room for n_files entries. */
static size_t closure(const rpc_reflection *r, size_t root, ProtobufCBinaryData *out, unsigned char *seen)
{
    size_t n = 0;
    size_t *stack = malloc(r->n_files * sizeof *stack);
    if (!stack) abort();
    size_t top = 0;
    memset(seen, 0, r->n_files);
    stack[top++] = root;
    seen[root] = 1;
    while (top > 0) {
        size_t f = stack[--top];
        out[n].data = (uint8_t *)r->files[f].bytes;
        out[n].len = r->files[f].len;
        n++;
        for (size_t d = 0; d < r->files[f].fd->n_dependency; d++) {
            size_t k = r->files[f].deps[d];
            if (!seen[k]) {
                seen[k] = 1;
                stack[top++] = k;
            }
        }
    }
    free(stack);
    return n;
}

/* Services are what the method table says, so the list cannot drift from what is served. */
static size_t served_services(rpc_server *s, char ***out)
{
    size_t n = 0, cap = 8;
    char **names = malloc(cap * sizeof *names);
    if (!names) abort();
    const char *path;
    for (size_t i = 0; (path = rpc_server_method_path(s, i)) != NULL; i++) {
        if (*path == '/') path++;
        const char *slash = strchr(path, '/');
        if (!slash || slash == path) continue;
        size_t len = (size_t)(slash - path);
        size_t k;
        for (k = 0; k < n; k++)
            if (strlen(names[k]) == len && memcmp(names[k], path, len) == 0) break;
        if (k < n) continue;
        if (n == cap) {
            cap *= 2;
            names = realloc(names, cap * sizeof *names);
            if (!names) abort();
        }
        names[n] = strndup(path, len);
        if (!names[n]) abort();
        n++;
    }
    *out = names;
    return n;
}

typedef Grpc__Reflection__V1alpha__ServerReflectionRequest refl_req;
typedef Grpc__Reflection__V1alpha__ServerReflectionResponse refl_resp;

static int send_error(rpc_ctx *c, refl_resp *resp, int code, const char *fmt, const char *what)
{
    char msg[512];
    snprintf(msg, sizeof msg, fmt, what ? what : "");
    Grpc__Reflection__V1alpha__ErrorResponse er = GRPC__REFLECTION__V1ALPHA__ERROR_RESPONSE__INIT;
    er.error_code = code;
    er.error_message = msg;
    resp->message_response_case = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
    resp->error_response = &er;
    return rpc_ctx_send(c, &resp->base);
}

static int send_files(rpc_ctx *c, const rpc_reflection *r, refl_resp *resp, size_t file)
{
    ProtobufCBinaryData *files = malloc(r->n_files * sizeof *files);
    unsigned char *seen = malloc(r->n_files);
    if (!files || !seen) abort();
    Grpc__Reflection__V1alpha__FileDescriptorResponse fr = GRPC__REFLECTION__V1ALPHA__FILE_DESCRIPTOR_RESPONSE__INIT;
    fr.n_file_descriptor_proto = closure(r, file, files, seen);
    fr.file_descriptor_proto = files;
    resp->message_response_case = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
    resp->file_descriptor_response = &fr;
    int rc = rpc_ctx_send(c, &resp->base);
    free(files);
    free(seen);
    return rc;
}

static int send_services(rpc_ctx *c, refl_resp *resp)
{
    char **names;
    size_t n = served_services(rpc_ctx_server(c), &names);
    Grpc__Reflection__V1alpha__ServiceResponse *items = calloc(n + 1, sizeof *items);
    Grpc__Reflection__V1alpha__ServiceResponse **ptrs = calloc(n + 1, sizeof *ptrs);
    if (!items || !ptrs) abort();
    for (size_t i = 0; i < n; i++) {
        grpc__reflection__v1alpha__service_response__init(&items[i]);
        items[i].name = names[i];
        ptrs[i] = &items[i];
    }
    Grpc__Reflection__V1alpha__ListServiceResponse ls = GRPC__REFLECTION__V1ALPHA__LIST_SERVICE_RESPONSE__INIT;
    ls.n_service = n;
    ls.service = ptrs;
    resp->message_response_case = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
    resp->list_services_response = &ls;
    int rc = rpc_ctx_send(c, &resp->base);
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    free(items);
    free(ptrs);
    return rc;
}

/* One answer per request, in order, for as long as the client keeps the stream open. A request
 * we cannot answer gets an error_response and the stream goes on. */
static int reflection_info(rpc_ctx *c, void *user)
{
    const rpc_reflection *r = user;
    for (;;) {
        ProtobufCMessage *m;
        int rc = rpc_ctx_recv(c, &grpc__reflection__v1alpha__server_reflection_request__descriptor, &m);
        if (rc == 1) return RPC_OK;
        if (rc != 0) return RPC_CANCELLED;
        refl_req *req = (refl_req *)m;
        refl_resp resp = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__INIT;
        resp.valid_host = req->host;
        resp.original_request = req;
        int sent;
        switch (req->message_request_case) {
        case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
            sent = send_services(c, &resp);
            break;
        case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME: {
            long f = find_file(r, req->file_by_filename);
            sent = f < 0 ? send_error(c, &resp, NOT_FOUND, "file not found: %s", req->file_by_filename)
                         : send_files(c, r, &resp, (size_t)f);
            break;
        }
        case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL: {
            const struct sym *s = find_sym(r, req->file_containing_symbol);
            sent = !s ? send_error(c, &resp, NOT_FOUND, "symbol not found: %s", req->file_containing_symbol)
                      : send_files(c, r, &resp, s->file);
            break;
        }
        case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION:
            /* our protos declare no extensions */
            sent = send_error(c, &resp, NOT_FOUND, "extension not found: %s",
                              req->file_containing_extension ? req->file_containing_extension->containing_type : "");
            break;
        case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE: {
            const struct sym *s = find_sym(r, req->all_extension_numbers_of_type);
            if (!s || s->kind != SYM_MESSAGE) {
                sent = send_error(c, &resp, NOT_FOUND, "message type not found: %s", req->all_extension_numbers_of_type);
                break;
            }
            /* a known message with no extensions: an empty list, not an error */
            Grpc__Reflection__V1alpha__ExtensionNumberResponse en = GRPC__REFLECTION__V1ALPHA__EXTENSION_NUMBER_RESPONSE__INIT;
            en.base_type_name = s->name;
            resp.message_response_case = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE;
            resp.all_extension_numbers_response = &en;
            sent = rpc_ctx_send(c, &resp.base);
            break;
        }
        default:
            sent = send_error(c, &resp, INVALID_ARGUMENT, "request sets none of message_request%s", NULL);
            break;
        }
        if (sent != 0) return RPC_CANCELLED;
    }
}

int rpc_reflection_register(rpc_server *s, const rpc_reflection *r, char *err, size_t errlen)
{
    return rpc_server_add_bidi_methods(s, r->methods, 2, err, errlen);
}
