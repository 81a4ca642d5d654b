/* store: picks the driver named in the config and forwards every call to it; also the free
 * functions for results, which are the same whatever driver filled them. */
#include "manager/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *store_node_status_name(store_node_status s)
{
    return s == STORE_NODE_ONLINE ? "online" : "offline";
}

store *store_open(const store_config *cfg, char *err, size_t errlen)
{
    const char *d = cfg->driver;
    if (!d || !*d || strcmp(d, "sqlite") == 0) return store_sqlite_open(cfg, err, errlen);
    if (strcmp(d, "postgres") == 0) return store_pg_open(cfg, err, errlen);
    snprintf(err, errlen, "unknown database driver '%s' (expected sqlite or postgres)", d);
    return NULL;
}

void store_close(store *s)
{
    if (s) s->drv->close(s);
}

const char *store_driver_name(const store *s)
{
    return s->drv->name;
}

int store_get_stats(store *s, store_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!s->drv->get_stats) return -1;
    s->drv->get_stats(s, out);
    return 0;
}

int store_is_shared(store *s)
{
    return s->drv->is_leader != NULL;
}

int store_is_leader(store *s)
{
    return s->drv->is_leader ? s->drv->is_leader(s) : 1;
}

void store_notify(store *s, const char *json)
{
    if (s->drv->notify) s->drv->notify(s, json);
}

void store_set_notice_handler(store *s, store_notice_fn fn, void *user)
{
    if (s->drv->set_notice_handler) s->drv->set_notice_handler(s, fn, user);
}

int store_upsert_node(store *s, const store_node_in *n, int64_t now, char *err, size_t errlen)
{
    return s->drv->upsert_node(s, n, now, err, errlen);
}

int store_upsert_placeholder(store *s, const char *node_id, int64_t now, int *created, char *err,
                             size_t errlen)
{
    return s->drv->upsert_placeholder(s, node_id, now, created, err, errlen);
}

int store_touch_nodes(store *s, const store_touch *t, size_t n, char *err, size_t errlen)
{
    return s->drv->touch_nodes(s, t, n, err, errlen);
}

int store_add_node_events(store *s, const store_event_in *ev, size_t n, char *err, size_t errlen)
{
    return s->drv->add_node_events(s, ev, n, err, errlen);
}

int store_sync_agents(store *s, const char *node_id, const store_agent_in *a, size_t n,
                      int64_t now, char *err, size_t errlen)
{
    return s->drv->sync_agents(s, node_id, a, n, now, err, errlen);
}

int store_insert_metrics(store *s, const char *node_id, const store_metric_in *m, size_t n,
                         size_t *inserted, char *err, size_t errlen)
{
    return s->drv->insert_metrics(s, node_id, m, n, inserted, err, errlen);
}

void store_set_update_result_async(store *s, const char *node_id, uint64_t id, const char *outcome,
                                   const char *message, int64_t at, store_result_fn cb, void *user)
{
    if (s->drv->set_update_result_async) {
        s->drv->set_update_result_async(s, node_id, id, outcome, message, at, cb, user);
        return;
    }
    char err[512] = "";
    int found = 0;
    int rc = s->drv->set_update_result(s, node_id, id, outcome, message, at, &found, err, sizeof err);
    cb(user, rc, err, found);
}

void store_insert_metrics_async(store *s, const char *node_id, const store_metric_in *m, size_t n,
                                store_done_fn cb, void *user)
{
    if (s->drv->insert_metrics_async) {
        s->drv->insert_metrics_async(s, node_id, m, n, cb, user);
        return;
    }
    char err[512] = "";
    size_t inserted = 0;
    int rc = s->drv->insert_metrics(s, node_id, m, n, &inserted, err, sizeof err);
    cb(user, rc, err, inserted);
}

void store_upsert_node_async(store *s, const store_node_in *n, int64_t now, store_done_fn cb,
                             void *user)
{
    if (s->drv->upsert_node_async) {
        s->drv->upsert_node_async(s, n, now, cb, user);
        return;
    }
    char err[512] = "";
    int rc = s->drv->upsert_node(s, n, now, err, sizeof err);
    cb(user, rc, err, 0);
}

void store_sync_agents_async(store *s, const char *node_id, const store_agent_in *a, size_t n,
                             int64_t now, int want_before, store_sync_fn cb, void *user)
{
    if (s->drv->sync_agents_async) {
        s->drv->sync_agents_async(s, node_id, a, n, now, want_before, cb, user);
        return;
    }
    char err[512] = "";
    /* Read outside the sync's transaction: a concurrent sync of the same node may slip in
     * between, which at worst reports one change twice. */
    store_agent_list before = {0};
    int have_before = want_before && s->drv->list_agents(s, node_id, 0, &before, err, sizeof err) == 0;
    err[0] = 0;
    int rc = s->drv->sync_agents(s, node_id, a, n, now, err, sizeof err);
    cb(user, rc, err, rc == 0 && have_before ? &before : NULL);
    store_agent_list_free(&before);
}

int store_async_writes(store *s)
{
    return s->drv->upsert_node_async && s->drv->sync_agents_async;
}

int store_delete_metrics_before(store *s, int64_t before, size_t batch_limit, uint64_t *deleted,
                                char *err, size_t errlen)
{
    return s->drv->delete_metrics_before(s, before, batch_limit, deleted, err, errlen);
}

int store_delete_node(store *s, const char *node_id, int *found, char *err, size_t errlen)
{
    return s->drv->delete_node(s, node_id, found, err, errlen);
}

int store_list_nodes(store *s, const store_node_filter *filter, store_node_list *out, char *err,
                     size_t errlen)
{
    return s->drv->list_nodes(s, filter, out, err, errlen);
}

int store_get_node(store *s, const char *node_id, store_node *out, char *err, size_t errlen)
{
    return s->drv->get_node(s, node_id, out, err, errlen);
}

int store_list_agents(store *s, const char *node_id, int include_removed, store_agent_list *out,
                      char *err, size_t errlen)
{
    return s->drv->list_agents(s, node_id, include_removed, out, err, errlen);
}

int store_list_node_events(store *s, const char *node_id, int64_t from, int64_t to,
                           store_event_list *out, char *err, size_t errlen)
{
    return s->drv->list_node_events(s, node_id, from, to, out, err, errlen);
}

int store_query_metrics(store *s, const char *node_id, const char *type, int64_t from, int64_t to,
                        size_t limit, store_point_list *out, char *err, size_t errlen)
{
    return s->drv->query_metrics(s, node_id, type, from, to, limit, out, err, errlen);
}

int store_metric_stats(store *s, const char *node_id, const char *type, int64_t from, int64_t to,
                       store_stat_list *out, char *err, size_t errlen)
{
    return s->drv->metric_stats(s, node_id, type, from, to, out, err, errlen);
}

int store_add_audit(store *s, const store_audit_in *a, char *err, size_t errlen)
{
    return s->drv->add_audit(s, a, err, errlen);
}

int store_list_audit(store *s, const store_audit_filter *f, store_audit_list *out, char *err,
                     size_t errlen)
{
    return s->drv->list_audit(s, f, out, err, errlen);
}

int store_list_metric_types(store *s, const char *node_id, int64_t from, int64_t to,
                            store_string_list *out, char *err, size_t errlen)
{
    return s->drv->list_metric_types(s, node_id, from, to, out, err, errlen);
}

void store_node_free(store_node *n)
{
    if (!n) return;
    free(n->node_id); free(n->hostname); free(n->ip); free(n->os); free(n->arch);
    for (size_t i = 0; i < n->n_labels; i++) {
        free(n->labels[i].key);
        free(n->labels[i].value);
    }
    free(n->labels);
    free(n->daemon_version); free(n->agent_version); free(n->daemon_address);
    memset(n, 0, sizeof *n);
}

void store_node_list_free(store_node_list *l)
{
    if (!l) return;
    for (size_t i = 0; i < l->n; i++) store_node_free(&l->items[i]);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

void store_event_list_free(store_event_list *l)
{
    if (!l) return;
    for (size_t i = 0; i < l->n; i++) {
        free(l->items[i].node_id);
        free(l->items[i].event);
    }
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

void store_agent_list_free(store_agent_list *l)
{
    if (!l) return;
    for (size_t i = 0; i < l->n; i++) {
        store_agent *a = &l->items[i];
        free(a->agent_id); free(a->type); free(a->version); free(a->status);
    }
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

void store_point_list_free(store_point_list *l)
{
    if (!l) return;
    for (size_t i = 0; i < l->n; i++) free(l->items[i].key);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

void store_stat_list_free(store_stat_list *l)
{
    if (!l) return;
    for (size_t i = 0; i < l->n; i++) free(l->items[i].key);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

void store_audit_list_free(store_audit_list *l)
{
    if (!l) return;
    for (size_t i = 0; i < l->n; i++) {
        store_audit *a = &l->items[i];
        free(a->actor); free(a->role); free(a->method); free(a->target);
        free(a->result); free(a->detail); free(a->peer);
    }
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

void store_string_list_free(store_string_list *l)
{
    if (!l) return;
    for (size_t i = 0; i < l->n; i++) free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

/* ---- pushed update events ------------------------------------------------------------------ */

static int no_updates(const store *s, char *err, size_t errlen)
{
    snprintf(err, errlen, "database driver '%s' does not store update events yet", s->drv->name);
    return -1;
}

int store_add_updates(store *s, const store_update_in *ev, const char *const *node_ids, size_t n,
                      uint64_t *ids_out, char *err, size_t errlen)
{
    if (!s->drv->add_updates) return no_updates(s, err, errlen);
    return s->drv->add_updates(s, ev, node_ids, n, ids_out, err, errlen);
}

int store_set_update_result(store *s, const char *node_id, uint64_t id, const char *outcome,
                            const char *message, int64_t at, int *found, char *err, size_t errlen)
{
    if (!s->drv->set_update_result) return no_updates(s, err, errlen);
    return s->drv->set_update_result(s, node_id, id, outcome, message, at, found, err, errlen);
}

int store_compact_updates(store *s, int64_t before, uint64_t *deleted, char *err, size_t errlen)
{
    if (!s->drv->compact_updates) return no_updates(s, err, errlen);
    return s->drv->compact_updates(s, before, deleted, err, errlen);
}

int store_list_updates_after(store *s, const char *node_id, uint64_t after_id, int64_t stale_before,
                             size_t limit, store_update_list *out, char *err, size_t errlen)
{
    out->items = NULL;
    out->n = 0;
    if (!s->drv->list_updates_after) return no_updates(s, err, errlen);
    return s->drv->list_updates_after(s, node_id, after_id, stale_before, limit, out, err, errlen);
}

int store_list_updates(store *s, const store_update_filter *f, store_update_list *out, char *err,
                       size_t errlen)
{
    out->items = NULL;
    out->n = 0;
    if (!s->drv->list_updates) return no_updates(s, err, errlen);
    return s->drv->list_updates(s, f, out, err, errlen);
}

void store_update_list_free(store_update_list *l)
{
    if (!l) return;
    for (size_t i = 0; i < l->n; i++) {
        store_update *u = &l->items[i];
        free(u->node_id); free(u->kind); free(u->component); free(u->agent_id);
        free(u->version); free(u->download_url); free(u->hash_sha256); free(u->operation);
        free(u->signature); free(u->payload); free(u->outcome); free(u->message);
    }
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

/* ---- node authentication ---------------------------------------------------------------------- */

static int no_auth(const store *s, char *err, size_t errlen)
{
    snprintf(err, errlen, "node authentication is not supported by the %s driver", s->drv->name);
    return -1;
}

int store_set_node_secret(store *s, const char *node_id, const char *sha256, int64_t now, char *err,
                          size_t errlen)
{
    if (!s->drv->set_node_secret) return no_auth(s, err, errlen);
    return s->drv->set_node_secret(s, node_id, sha256, now, err, errlen);
}

int store_get_node_secret(store *s, const char *node_id, char *out, char *err, size_t errlen)
{
    if (!s->drv->get_node_secret) return no_auth(s, err, errlen);
    return s->drv->get_node_secret(s, node_id, out, err, errlen);
}

int store_add_enroll_token(store *s, const char *name, const char *sha256, int64_t created_at,
                           int64_t expires_at, int32_t max_uses, char *err, size_t errlen)
{
    if (!s->drv->add_enroll_token) return no_auth(s, err, errlen);
    return s->drv->add_enroll_token(s, name, sha256, created_at, expires_at, max_uses, err, errlen);
}

int store_use_enroll_token(store *s, const char *sha256, int64_t now, store_enroll_use *use,
                           char *name, size_t namelen, char *err, size_t errlen)
{
    if (!s->drv->use_enroll_token) return no_auth(s, err, errlen);
    return s->drv->use_enroll_token(s, sha256, now, use, name, namelen, err, errlen);
}

int store_list_enroll_tokens(store *s, store_enroll_token_list *out, char *err, size_t errlen)
{
    out->items = NULL;
    out->n = 0;
    if (!s->drv->list_enroll_tokens) return no_auth(s, err, errlen);
    return s->drv->list_enroll_tokens(s, out, err, errlen);
}

int store_revoke_enroll_token(store *s, const char *name, int64_t now, int *found, char *err,
                              size_t errlen)
{
    if (!s->drv->revoke_enroll_token) return no_auth(s, err, errlen);
    return s->drv->revoke_enroll_token(s, name, now, found, err, errlen);
}

void store_enroll_token_list_free(store_enroll_token_list *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->items[i].name);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}
