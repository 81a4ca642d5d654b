/* replicas: hub events <-> store notices, as JSON objects with the hub event's fields. */
#include "manager/replicas.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"

/* Long enough for any detail we publish; keeps a notice well under NOTIFY's 8000 bytes. */
#define MAX_DETAIL 2000

struct replicas {
    replicas_opts o;
    int hooked;
};

/* Cuts s to at most max bytes without splitting a UTF-8 sequence. */
static size_t utf8_cut(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n <= max) return n;
    while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80) max--;
    return max;
}

char *replicas_encode(const evhub_event *e)
{
    json_t *o = json_object();
    if (!o) return NULL;
    const char *keys[] = {"kind", "node_id", "agent_id", "status", "previous_status"};
    const char *vals[] = {e->kind, e->node_id, e->agent_id, e->status, e->previous_status};
    int bad = 0;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        bad |= json_object_set_new(o, keys[i], json_string(vals[i])) != 0;
    bad |= json_object_set_new(o, "detail", json_stringn(e->detail, utf8_cut(e->detail, MAX_DETAIL))) != 0;
    char *out = bad ? NULL : json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (out && strlen(out) > STORE_NOTICE_MAX) { /* ids too long to share: say nothing */
        free(out);
        out = NULL;
    }
    return out;
}

static void forward(void *user, const evhub_event *e)
{
    replicas *r = user;
    char *json = replicas_encode(e);
    if (!json) {
        log_warn("replicas.notice_skipped", "kind=%s msg=\"cannot encode the event\"", e->kind);
        return;
    }
    store_notify(r->o.store, json);
    free(json);
}

static const char *field(json_t *o, const char *k)
{
    const char *v = json_string_value(json_object_get(o, k));
    return v ? v : "";
}

static void on_notice(void *user, const char *json)
{
    replicas *r = user;
    json_t *o = json_loads(json, 0, NULL);
    const char *kind = o ? field(o, "kind") : "";
    if (!*kind) {
        log_warn("replicas.bad_notice", "bytes=%zu", strlen(json));
        json_decref(o);
        return;
    }
    const char *node = field(o, "node_id");
    if (!strcmp(kind, "update.published")) {
        if (r->o.updates && *node) upd_wake(r->o.updates, node);
    } else {
        if (r->o.live && *node && !strcmp(kind, "node.registered"))
            liveness_register(r->o.live, node, liveness_now(r->o.live));
        if (r->o.live && *node && !strcmp(kind, "node.deleted")) liveness_remove(r->o.live, node);
        evhub_publish_remote(r->o.hub, kind, node, field(o, "agent_id"), field(o, "status"),
                             field(o, "previous_status"), field(o, "detail"));
    }
    json_decref(o);
}

replicas *replicas_new(const replicas_opts *o, char *err, size_t errlen)
{
    replicas *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, errlen, "replicas: out of memory");
        return NULL;
    }
    r->o = *o;
    if (store_is_shared(o->store)) {
        r->hooked = 1;
        evhub_set_forward(o->hub, forward, r);
        store_set_notice_handler(o->store, on_notice, r);
    }
    return r;
}

void replicas_free(replicas *r)
{
    if (!r) return;
    if (r->hooked) {
        store_set_notice_handler(r->o.store, NULL, NULL);
        evhub_set_forward(r->o.hub, NULL, NULL);
    }
    free(r);
}
