/* agent: copying, comparing and freeing agent_spec (see agent.h). */
#include "daemon/agent.h"

#include <stdlib.h>
#include <string.h>

static void free_strv(char **v)
{
    if (!v) return;
    for (char **p = v; *p; p++) free(*p);
    free(v);
}

void agent_spec_free(agent_spec *spec)
{
    if (!spec) return;
    free(spec->id);
    free(spec->type);
    free(spec->name);
    free(spec->version);
    free(spec->binary_path);
    free_strv(spec->args);
    free_strv(spec->env);
    free(spec->config_file);
    free(spec->work_dir);
    free(spec->health.http_endpoint);
    memset(spec, 0, sizeof *spec);
}

/* NULL stays NULL; *ok drops to 0 when an allocation fails. */
static char *dup_str(const char *s, int *ok)
{
    if (!s) return NULL;
    char *d = strdup(s);
    if (!d) *ok = 0;
    return d;
}

static char **dup_strv(char *const *v, int *ok)
{
    if (!v) return NULL;
    size_t n = 0;
    while (v[n]) n++;
    char **d = calloc(n + 1, sizeof *d);
    if (!d) { *ok = 0; return NULL; }
    for (size_t i = 0; i < n; i++) {
        d[i] = strdup(v[i]);
        if (!d[i]) { *ok = 0; free_strv(d); return NULL; }
    }
    return d;
}

int agent_spec_copy(agent_spec *dst, const agent_spec *src)
{
    int ok = 1;
    *dst = *src; /* scalars; every pointer is replaced below */
    dst->id = dup_str(src->id, &ok);
    dst->type = dup_str(src->type, &ok);
    dst->name = dup_str(src->name, &ok);
    dst->version = dup_str(src->version, &ok);
    dst->binary_path = dup_str(src->binary_path, &ok);
    dst->args = dup_strv(src->args, &ok);
    dst->env = dup_strv(src->env, &ok);
    dst->config_file = dup_str(src->config_file, &ok);
    dst->work_dir = dup_str(src->work_dir, &ok);
    dst->health.http_endpoint = dup_str(src->health.http_endpoint, &ok);
    if (!ok) {
        agent_spec_free(dst);
        return -1;
    }
    return 0;
}

static int str_eq(const char *a, const char *b)
{
    if (!a || !b) return a == b;
    return strcmp(a, b) == 0;
}

static int strv_eq(char *const *a, char *const *b)
{
    /* An empty list and no list run the same process. */
    if (!a || !*a || !b || !*b) return (!a || !*a) && (!b || !*b);
    size_t i = 0;
    for (; a[i] && b[i]; i++)
        if (strcmp(a[i], b[i]) != 0) return 0;
    return a[i] == b[i];
}

/* Only what changes the process itself counts: health checks, restart policy, stop grace and
 * log rotation are applied to a running agent in place, so editing them never restarts it.
 * The version counts because an update that keeps the binary path must still restart. */
int agent_spec_equal(const agent_spec *a, const agent_spec *b)
{
    return str_eq(a->id, b->id) && str_eq(a->binary_path, b->binary_path) &&
           strv_eq(a->args, b->args) && strv_eq(a->env, b->env) &&
           str_eq(a->config_file, b->config_file) && str_eq(a->work_dir, b->work_dir) &&
           str_eq(a->version, b->version) && (!a->enabled) == (!b->enabled);
}

const char *agent_restart_policy_name(agent_restart_policy p)
{
    switch (p) {
    case AGENT_RESTART_ALWAYS: return "always";
    case AGENT_RESTART_ON_FAILURE: return "on-failure";
    case AGENT_RESTART_NEVER: return "never";
    }
    return "?";
}
