/* daemon.yaml: defaults, agent_defaults merging, every error path an operator can hit, the
 * effective-config dump (and that it reads back to the same values) and the shipped example. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/dconfig.h"

static char tmpdir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_dconfig.XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Writes text to tmpdir/name and returns the path (static buffer). */
static const char *write_file(const char *name, const char *text)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
    return path;
}

static dconfig *load_ok(const char *text)
{
    char err[512] = "";
    dconfig *cfg = NULL;
    int rc = dconfig_load(write_file("daemon.yaml", text), &cfg, err, sizeof err);
    if (rc != 0) fail_msg("unexpected error: %s", err);
    assert_non_null(cfg);
    return cfg;
}

/* Loads text expecting failure; returns the message with the tmpdir prefix cut off. */
static const char *load_err(const char *text)
{
    static char err[512];
    dconfig *cfg = (dconfig *)1;
    err[0] = 0;
    int rc = dconfig_load_string("daemon.yaml", text, strlen(text), &cfg, err, sizeof err);
    if (rc == 0) { dconfig_free(cfg); fail_msg("loaded, expected an error for:\n%s", text); }
    assert_null(cfg);
    return err;
}

static void defaults_from_empty_file(void **state)
{
    (void)state;
    dconfig *cfg = load_ok("# nothing set\n");
    assert_string_equal(cfg->daemon.id, "");
    assert_int_equal(cfg->daemon.log_level, LOGL_INFO);
    assert_string_equal(cfg->daemon.log_file, "");
    assert_string_equal(cfg->daemon.work_dir, "/var/lib/ops-daemon");
    assert_string_equal(cfg->daemon.grpc_host, "127.0.0.1");
    assert_int_equal(cfg->daemon.grpc_port, 9091);
    assert_string_equal(cfg->daemon.http_host, "127.0.0.1");
    assert_int_equal(cfg->daemon.http_port, 8084);
    assert_int_equal(cfg->daemon.stop_agents_on_exit, 0);
    assert_int_equal(cfg->daemon.stop_grace_ms, 30000);
    assert_int_equal(cfg->daemon.resource_interval_ms, 10000);
    assert_string_equal(cfg->manager.address, "127.0.0.1:9090");
    assert_int_equal(cfg->manager.tls.enabled, 0);
    assert_int_equal(cfg->manager.heartbeat_interval_ms, 60000);
    assert_int_equal(cfg->manager.reconnect_interval_ms, 10000);
    assert_int_equal(cfg->manager.timeout_ms, 30000);
    assert_int_equal(cfg->manager.metrics_interval_ms, 60000);
    assert_string_equal(cfg->manager.spool_dir, "/var/lib/ops-daemon/spool");
    assert_true(cfg->manager.spool_max_bytes == 64ULL << 20);
    assert_int_equal(cfg->n_labels, 0);
    assert_int_equal(cfg->collectors.cpu.enabled, 1);
    assert_int_equal(cfg->collectors.cpu.interval_ms, 60000);
    assert_int_equal(cfg->collectors.disk.enabled, 1);
    assert_int_equal(cfg->collectors.network.interval_ms, 60000);
    assert_int_equal(cfg->collectors.n_mount_points, 0);
    assert_non_null(cfg->collectors.mount_points);
    assert_null(cfg->collectors.mount_points[0]);
    assert_int_equal(cfg->n_agents, 0);
    dconfig_free(cfg);

    char err[256];
    assert_int_equal(dconfig_load_string("empty.yaml", "", 0, &cfg, err, sizeof err), 0);
    assert_int_equal(cfg->daemon.grpc_port, 9091);
    dconfig_free(cfg);

    /* Sections left empty (every entry commented out) read as absent. */
    cfg = load_ok("daemon:\nmanager:\n  tls:\nlabels:\ncollectors:\n  disk:\n    mount_points:\n"
                  "agent_defaults:\nagents:\n");
    assert_int_equal(cfg->daemon.http_port, 8084);
    assert_int_equal(cfg->collectors.disk.enabled, 1);
    assert_int_equal(cfg->n_labels, 0);
    assert_int_equal(cfg->n_agents, 0);
    dconfig_free(cfg);
    /* An agent's empty args/env still replace the defaults'. */
    cfg = load_ok("agent_defaults: {args: [-v], env: {A: b}}\n"
                  "agents:\n  - id: a\n    binary_path: /bin/a\n    args:\n    env:\n    restart:\n");
    assert_null(cfg->agents[0].args[0]);
    assert_null(cfg->agents[0].env[0]);
    assert_int_equal(cfg->agents[0].restart.policy, AGENT_RESTART_ON_FAILURE);
    dconfig_free(cfg);
}

static const char *full_yaml =
    "daemon:\n"
    "  id: node-7\n"
    "  log_level: debug\n"
    "  log_file: /tmp/x.log\n"
    "  work_dir: /srv/ops\n"
    "  grpc_port: 19091\n"
    "  http_port: 0\n"
    "  stop_agents_on_exit: true\n"
    "  stop_grace: 5s\n"
    "manager:\n"
    "  address: dns:///managers.internal:9090\n"
    "  tls: {enabled: true, cert_file: /etc/ops/c.pem, key_file: /etc/ops/k.pem, ca_file: /etc/ops/ca.pem}\n"
    "  heartbeat_interval: 15s\n"
    "  spool_max: 1MiB\n"
    "labels:\n"
    "  env: prod\n"
    "  rack: \"12\"\n"
    "collectors:\n"
    "  cpu: {interval: 10s, per_core: true}\n"
    "  memory: {enabled: false}\n"
    "  disk: {mount_points: [/, /data]}\n"
    "  network: {interfaces: [lo, eth0]}\n"
    "agent_defaults:\n"
    "  type: exporter\n"
    "  args: [--default]\n"
    "  env: {FROM_DEFAULTS: \"1\", SHARED: d}\n"
    "  log_keep: 7\n"
    "  health_check: {interval: 5s, cpu_threshold: 80, memory_threshold: 512MiB}\n"
    "  restart: {policy: always, backoff_max: 2m}\n"
    "agents:\n"
    "  - id: web\n"
    "    binary_path: /usr/bin/web\n"
    "    args: [--port, \"8080\"]\n"
    "    env:\n"
    "      PORT: 8080\n"
    "      EMPTY: \"\"\n"
    "    health_check: {interval: 1s}\n"
    "    restart: {max_retries: 0}\n"
    "  - id: logs\n"
    "    type: shipper\n"
    "    name: Log shipper\n"
    "    version: 1.2.3\n"
    "    binary_path: /usr/bin/logs\n"
    "    config_file: /etc/logs.yaml\n"
    "    work_dir: /var/tmp/logs\n"
    "    enabled: false\n"
    "    stop_grace: 0\n"
    "    log_max_size: 1KB\n"
    "    health_check: {heartbeat_timeout: 90s, http_endpoint: \"http://127.0.0.1:9100/health\"}\n"
    "    restart: {policy: never, backoff_base: 250ms}\n"
    "  - id: bare\n"
    "    binary_path: /bin/true\n"
    "    args: []\n";

static void full_file_and_merging(void **state)
{
    (void)state;
    dconfig *cfg = load_ok(full_yaml);
    assert_string_equal(cfg->daemon.id, "node-7");
    assert_int_equal(cfg->daemon.log_level, LOGL_DEBUG);
    assert_int_equal(cfg->daemon.grpc_port, 19091);
    assert_int_equal(cfg->daemon.http_port, 0);
    assert_int_equal(cfg->daemon.stop_agents_on_exit, 1);
    assert_string_equal(cfg->manager.address, "dns:///managers.internal:9090");
    assert_int_equal(cfg->manager.tls.enabled, 1);
    assert_string_equal(cfg->manager.tls.key_file, "/etc/ops/k.pem");
    assert_string_equal(cfg->manager.tls.server_name, "");
    assert_int_equal(cfg->manager.heartbeat_interval_ms, 15000);
    assert_string_equal(cfg->manager.spool_dir, "/srv/ops/spool");
    assert_true(cfg->manager.spool_max_bytes == 1 << 20);
    assert_int_equal(cfg->n_labels, 2);
    assert_string_equal(cfg->labels[0].key, "env");
    assert_string_equal(cfg->labels[0].value, "prod");
    assert_string_equal(cfg->labels[1].value, "12");
    assert_int_equal(cfg->collectors.cpu.interval_ms, 10000);
    assert_int_equal(cfg->collectors.cpu_per_core, 1);
    assert_int_equal(cfg->collectors.memory.enabled, 0);
    assert_int_equal(cfg->collectors.n_mount_points, 2);
    assert_string_equal(cfg->collectors.mount_points[1], "/data");
    assert_null(cfg->collectors.mount_points[2]);
    assert_string_equal(cfg->collectors.interfaces[0], "lo");
    assert_int_equal(cfg->n_agents, 3);

    const agent_spec *web = dconfig_find_agent(cfg, "web");
    assert_ptr_equal(web, &cfg->agents[0]);
    assert_string_equal(web->type, "exporter");          /* from agent_defaults */
    assert_string_equal(web->name, "web");                /* defaults to the id */
    assert_string_equal(web->version, "");
    assert_string_equal(web->args[0], "--port");           /* the agent's list replaces */
    assert_string_equal(web->args[1], "8080");
    assert_null(web->args[2]);
    assert_string_equal(web->env[0], "PORT=8080");        /* and so does its env map */
    assert_string_equal(web->env[1], "EMPTY=");
    assert_null(web->env[2]);
    assert_null(web->config_file);
    assert_string_equal(web->work_dir, "/srv/ops/agents/web");
    assert_int_equal(web->enabled, 1);
    assert_int_equal(web->stop_grace_ms, 5000);           /* daemon.stop_grace */
    assert_true(web->log_max_bytes == 10ULL << 20);
    assert_int_equal(web->log_keep, 7);
    assert_int_equal(web->health.interval_ms, 1000);      /* agent wins per key... */
    assert_true(web->health.cpu_threshold == 80.0);       /* ...the rest from defaults */
    assert_true(web->health.memory_threshold == 512ULL << 20);
    assert_int_equal(web->health.heartbeat_timeout_ms, 0);
    assert_int_equal(web->health.threshold_duration_ms, 60000);
    assert_null(web->health.http_endpoint);
    assert_int_equal(web->restart.policy, AGENT_RESTART_ALWAYS);
    assert_int_equal(web->restart.max_retries, 0);
    assert_int_equal(web->restart.backoff_base_ms, 1000);
    assert_int_equal(web->restart.backoff_max_ms, 120000);

    const agent_spec *logs = &cfg->agents[1];
    assert_string_equal(logs->type, "shipper");
    assert_string_equal(logs->name, "Log shipper");
    assert_string_equal(logs->version, "1.2.3");
    assert_string_equal(logs->args[0], "--default");       /* inherited list */
    assert_null(logs->args[1]);
    assert_string_equal(logs->env[0], "FROM_DEFAULTS=1");
    assert_string_equal(logs->env[1], "SHARED=d");
    assert_string_equal(logs->config_file, "/etc/logs.yaml");
    assert_string_equal(logs->work_dir, "/var/tmp/logs");
    assert_int_equal(logs->enabled, 0);
    assert_int_equal(logs->stop_grace_ms, 0);
    assert_true(logs->log_max_bytes == 1000);
    assert_int_equal(logs->health.heartbeat_timeout_ms, 90000);
    assert_string_equal(logs->health.http_endpoint, "http://127.0.0.1:9100/health");
    assert_int_equal(logs->restart.policy, AGENT_RESTART_NEVER);
    assert_int_equal(logs->restart.max_retries, 5);
    assert_int_equal(logs->restart.backoff_base_ms, 250);

    const agent_spec *bare = &cfg->agents[2];
    assert_null(bare->args[0]);                            /* explicit [] beats the default */
    assert_null(dconfig_find_agent(cfg, "nope"));
    dconfig_free(cfg);
}

static void agent_errors(void **state)
{
    (void)state;
    assert_string_equal(load_err("agents:\n  - {id: a, binary_path: /bin/a}\n"
                                 "  - {id: web, binary_path: /bin/w, restart: {policy: sometimes}}\n"),
                        "daemon.yaml: agents[1] (id \"web\"): restart.policy: must be always, "
                        "on-failure or never (got \"sometimes\")");
    assert_string_equal(load_err("agents:\n  - {id: a, binary_path: /bin/a}\n  - {id: a, binary_path: /bin/b}\n"),
                        "daemon.yaml: agents[1] (id \"a\"): id: duplicate of agents[0]");
    assert_string_equal(load_err("agents:\n  - {id: a, binary_path: bin/a}\n"),
                        "daemon.yaml: agents[0] (id \"a\"): binary_path: must be an absolute path (got \"bin/a\")");
    assert_string_equal(load_err("agents:\n  - {id: a, binary_path: /bin/a}\n  - {binary_path: /bin/b}\n"),
                        "daemon.yaml: agents[1]: id: required");
    assert_string_equal(load_err("agents:\n  - {id: a}\n"),
                        "daemon.yaml: agents[0] (id \"a\"): binary_path: required");
    assert_string_equal(load_err("agents:\n  - {id: ../etc, binary_path: /bin/a}\n"),
                        "daemon.yaml: agents[0] (id \"../etc\"): id: must be 1-64 letters, digits, "
                        "'.', '_' or '-', not starting with '.'");
    /* A bad value inherited from agent_defaults is blamed on agent_defaults. */
    assert_string_equal(load_err("agent_defaults: {stop_grace: soon}\nagents:\n  - {id: a, binary_path: /bin/a}\n"),
                        "daemon.yaml: agent_defaults: stop_grace: must be a duration such as \"30s\", "
                        "\"1m30s\" or \"250ms\" (got \"soon\")");
    assert_string_equal(load_err("agents:\n  - {id: a, binary_path: /bin/a, health_check: {memory_threshold: lots}}\n"),
                        "daemon.yaml: agents[0] (id \"a\"): health_check.memory_threshold: must be a size "
                        "such as \"512MiB\", \"10MB\" or \"4096\" (got \"lots\")");
    assert_string_equal(load_err("agents:\n  - {id: a, binary_path: /bin/a, health_check: {interval: 0}}\n"),
                        "daemon.yaml: agents[0] (id \"a\"): health_check.interval: must be greater than zero (got \"0\")");
    assert_string_equal(load_err("agents:\n  - {id: a, binary_path: /bin/a, restart: {backoff_base: 10s, backoff_max: 1s}}\n"),
                        "daemon.yaml: agents[0] (id \"a\"): restart.backoff_max: must not be shorter than restart.backoff_base");
    assert_string_equal(load_err("agents:\n  - {id: a, binary_path: /bin/a, restart: {max_retries: -1}}\n"),
                        "daemon.yaml: agents[0] (id \"a\"): restart.max_retries: must be 0 (unlimited) or more (got -1)");
    assert_string_equal(load_err("agents:\n  - id: a\n    binary_path: /bin/a\n    env: {\"A=B\": x}\n"),
                        "daemon.yaml: agents[0] (id \"a\"): env: variable names must be non-empty and without '=' (got \"A=B\")");
    assert_string_equal(load_err("agents:\n  - id: a\n    binary_path: /bin/a\n    env: [A]\n"),
                        "daemon.yaml: agents[0] (id \"a\"): env: must be a mapping of NAME: value (line 4)");
    assert_string_equal(load_err("agents:\n  - {id: a, binary_path: /bin/a, health_check: {http_endpoint: localhost:80}}\n"),
                        "daemon.yaml: agents[0] (id \"a\"): health_check.http_endpoint: must be an http:// or "
                        "https:// URL (got \"localhost:80\")");
}

static void other_errors(void **state)
{
    (void)state;
    assert_string_equal(load_err("daemon: {log_level: loud}\n"),
                        "daemon.yaml: daemon.log_level: must be debug, info, warn or error (got \"loud\")");
    assert_string_equal(load_err("daemon: {grpc_port: 70000}\n"),
                        "daemon.yaml: daemon.grpc_port: must be a port number 0-65535 (got 70000)");
    assert_string_equal(load_err("manager: {heartbeat_interval: 60}\n"),
                        "daemon.yaml: manager.heartbeat_interval: must be a duration such as \"30s\", "
                        "\"1m30s\" or \"250ms\" (got \"60\")");
    assert_string_equal(load_err("manager: {tls: {enabled: true, cert_file: /c.pem}}\n"),
                        "daemon.yaml: manager.tls.key_file: cert_file and key_file go together: set both or neither");
    assert_string_equal(load_err("collectors: {cpu: {interval: 0s}}\n"),
                        "daemon.yaml: collectors.cpu.interval: must be greater than zero (got \"0s\")");
    assert_string_equal(load_err("collectors: {disk: {mount_points: [data]}}\n"),
                        "daemon.yaml: collectors.disk.mount_points: must be absolute paths (got \"data\")");
    assert_string_equal(load_err("labels: [a, b]\n"),
                        "daemon.yaml: labels: must be a mapping of NAME: value (line 1)");
    assert_string_equal(load_err("labels:\n  a: {b: c}\n"),
                        "daemon.yaml: labels: keys and values must be plain strings (line 2)");

    /* Unknown keys and syntax errors come from libcyaml (through cfg.h), with a line: the
     * one libcyaml was at, which for an unknown key is the end of the value before it. */
    const char *e = load_err("daemon:\n  id: x\n  colour: blue\n");
    assert_non_null(strstr(e, "daemon.yaml: "));
    assert_non_null(strstr(e, "line"));
    assert_non_null(strstr(e, "Unexpected key: colour"));
    e = load_err("agents:\n  - id: a\n    binary_path: /bin/a\n    helth_check: {}\n");
    assert_non_null(strstr(e, "line"));
    assert_non_null(strstr(e, "helth_check"));
    e = load_err("daemon: {id: [unclosed\n");
    assert_non_null(strstr(e, "daemon.yaml: "));
    assert_non_null(strstr(e, "line"));
    e = load_err("daemon: {grpc_port: many}\n");
    assert_non_null(strstr(e, "grpc_port"));

    char err[256];
    dconfig *cfg = (dconfig *)1;
    assert_int_equal(dconfig_load("/nonexistent/daemon.yaml", &cfg, err, sizeof err), -1);
    assert_null(cfg);
    assert_non_null(strstr(err, "/nonexistent/daemon.yaml: cannot open"));
}

static void assert_same_spec(const agent_spec *a, const agent_spec *b)
{
    assert_string_equal(a->id, b->id);
    assert_string_equal(a->type, b->type);
    assert_string_equal(a->name, b->name);
    assert_string_equal(a->version, b->version);
    assert_string_equal(a->binary_path, b->binary_path);
    size_t i;
    for (i = 0; a->args[i]; i++) assert_string_equal(a->args[i], b->args[i]);
    assert_null(b->args[i]);
    for (i = 0; a->env[i]; i++) assert_string_equal(a->env[i], b->env[i]);
    assert_null(b->env[i]);
    if (a->config_file) assert_string_equal(a->config_file, b->config_file);
    else assert_null(b->config_file);
    assert_string_equal(a->work_dir, b->work_dir);
    assert_int_equal(a->enabled, b->enabled);
    assert_int_equal(a->stop_grace_ms, b->stop_grace_ms);
    assert_true(a->log_max_bytes == b->log_max_bytes);
    assert_int_equal(a->log_keep, b->log_keep);
    assert_int_equal(a->health.interval_ms, b->health.interval_ms);
    assert_int_equal(a->health.heartbeat_timeout_ms, b->health.heartbeat_timeout_ms);
    assert_true(a->health.cpu_threshold == b->health.cpu_threshold);
    assert_true(a->health.memory_threshold == b->health.memory_threshold);
    assert_int_equal(a->health.threshold_duration_ms, b->health.threshold_duration_ms);
    if (a->health.http_endpoint) assert_string_equal(a->health.http_endpoint, b->health.http_endpoint);
    else assert_null(b->health.http_endpoint);
    assert_int_equal(a->restart.policy, b->restart.policy);
    assert_int_equal(a->restart.max_retries, b->restart.max_retries);
    assert_int_equal(a->restart.backoff_base_ms, b->restart.backoff_base_ms);
    assert_int_equal(a->restart.backoff_max_ms, b->restart.backoff_max_ms);
}

static void dump_reads_back_and_hides_keys(void **state)
{
    (void)state;
    /* A key file whose contents must never appear in the dump. */
    write_file("client.key", "-----BEGIN PRIVATE KEY-----\nTOP-SECRET-KEY-MATERIAL\n");
    char yaml[4096];
    snprintf(yaml, sizeof yaml,
             "daemon: {work_dir: \"%s/w\", id: \"n1\"}\n"
             "manager: {tls: {enabled: true, cert_file: /c.pem, key_file: \"%s/client.key\"}}\n"
             "labels: {\"odd: key\": \"yes\", quote: \"a \\\"b\\\" \\\\ c\\n\"}\n"
             "agents:\n"
             "  - id: a\n"
             "    binary_path: /bin/echo\n"
             "    args: [\"-n\", \"two words\", \"#not a comment\", \"true\"]\n"
             "    env: {X: \"1:2\", Y: \"\"}\n"
             "    health_check: {cpu_threshold: 12.34, memory_threshold: 1000000, http_endpoint: \"http://h/x\"}\n"
             "    restart: {policy: always, backoff_base: 1500ms}\n"
             "    log_max_size: 3GiB\n",
             tmpdir, tmpdir);
    dconfig *a = load_ok(yaml);
    char *dump = NULL;
    assert_int_equal(dconfig_dump_yaml(a, &dump), 0);
    assert_null(strstr(dump, "TOP-SECRET"));
    assert_null(strstr(dump, "BEGIN PRIVATE"));
    assert_non_null(strstr(dump, "client.key"));

    char err[512];
    dconfig *b = NULL;
    if (dconfig_load_string("dump", dump, strlen(dump), &b, err, sizeof err) != 0)
        fail_msg("dump does not load back: %s\n%s", err, dump);
    assert_string_equal(a->daemon.id, b->daemon.id);
    assert_string_equal(a->daemon.work_dir, b->daemon.work_dir);
    assert_int_equal(a->daemon.log_level, b->daemon.log_level);
    assert_int_equal(a->daemon.grpc_port, b->daemon.grpc_port);
    assert_int_equal(a->daemon.stop_grace_ms, b->daemon.stop_grace_ms);
    assert_string_equal(a->manager.address, b->manager.address);
    assert_string_equal(a->manager.tls.key_file, b->manager.tls.key_file);
    assert_int_equal(a->manager.tls.enabled, b->manager.tls.enabled);
    assert_string_equal(a->manager.spool_dir, b->manager.spool_dir);
    assert_true(a->manager.spool_max_bytes == b->manager.spool_max_bytes);
    assert_int_equal(a->manager.metrics_interval_ms, b->manager.metrics_interval_ms);
    assert_int_equal(a->n_labels, b->n_labels);
    for (size_t i = 0; i < a->n_labels; i++) {
        assert_string_equal(a->labels[i].key, b->labels[i].key);
        assert_string_equal(a->labels[i].value, b->labels[i].value);
    }
    assert_string_equal(b->labels[1].value, "a \"b\" \\ c\n");
    assert_int_equal(a->collectors.disk.interval_ms, b->collectors.disk.interval_ms);
    assert_int_equal(a->n_agents, b->n_agents);
    assert_same_spec(&a->agents[0], &b->agents[0]);

    /* One agent on its own. */
    char *one = NULL;
    assert_int_equal(dconfig_agent_yaml(&a->agents[0], &one), 0);
    assert_true(strncmp(one, "id: \"a\"\n", 8) == 0);
    assert_non_null(strstr(one, "policy: always\n"));
    assert_non_null(strstr(one, "backoff_base: \"1500ms\"\n"));
    assert_non_null(strstr(one, "log_max_size: \"3GiB\"\n"));
    /* ...is a valid agents entry too. */
    char wrapped[4096] = "agents:\n";
    size_t o = strlen(wrapped);
    const char *p = one;
    for (int first = 1; *p; first = 0) {
        const char *nl = strchr(p, '\n');
        size_t l = nl ? (size_t)(nl - p + 1) : strlen(p);
        o += (size_t)snprintf(wrapped + o, sizeof wrapped - o, "%s%.*s", first ? "  - " : "    ", (int)l, p);
        p += l;
    }
    dconfig *c = NULL;
    if (dconfig_load_string("one", wrapped, strlen(wrapped), &c, err, sizeof err) != 0)
        fail_msg("agent yaml does not load back: %s\n%s", err, wrapped);
    /* Its work_dir was explicit in the dump, so it survives a different daemon.work_dir. */
    assert_same_spec(&a->agents[0], &c->agents[0]);

    free(one);
    free(dump);
    dconfig_free(a);
    dconfig_free(b);
    dconfig_free(c);
}

static void shipped_example_loads(void **state)
{
    (void)state;
    const char *src = getenv("OPS_SOURCE_DIR");
    char path[512];
    snprintf(path, sizeof path, "%s/configs/daemon.yaml", src ? src : ".");
    char err[512];
    dconfig *cfg = NULL;
    if (dconfig_load(path, &cfg, err, sizeof err) != 0) fail_msg("%s", err);
    /* The example documents the defaults: they must be the real ones. */
    assert_int_equal(cfg->daemon.grpc_port, 9091);
    assert_int_equal(cfg->daemon.http_port, 8084);
    assert_int_equal(cfg->manager.heartbeat_interval_ms, 60000);
    assert_true(cfg->n_agents >= 1);
    dconfig_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults_from_empty_file),
        cmocka_unit_test(full_file_and_merging),
        cmocka_unit_test(agent_errors),
        cmocka_unit_test(other_errors),
        cmocka_unit_test(dump_reads_back_and_hides_keys),
        cmocka_unit_test(shipped_example_loads),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
