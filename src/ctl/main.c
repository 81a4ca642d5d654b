/* opsctl: the operator's command line. Takes the global flags out of the command line
 * (they may appear anywhere), answers --help at every level, resolves the connection
 * settings and hands the rest to the command (cmd.h). */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "ctl/cmd.h"
#include "ctl/conn.h"
#include "ctl/help.h"
#include "ctl/table.h"

static const struct {
    const char *name;
    int (*run)(cmd_ctx *, int, char **);
} commands[] = {
    {"nodes", cmd_nodes},   {"node", cmd_node},       {"agents", cmd_agents},
    {"agent", cmd_agent},   {"metrics", cmd_metrics}, {"config", cmd_config},
    {"watch", cmd_watch},   {"delete-node", cmd_delete_node},
    {"audit", cmd_audit},
    {"enroll-token", cmd_enroll_token},
    {"publish-config", cmd_publish_config}, {"publish-update", cmd_publish_update},
    {"events", cmd_events}, {"event", cmd_event},
};

static int find_command(const char *name)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(commands[i].name, name)) return (int)i;
    return -1;
}

/* The help topic for words (non-flag arguments): "agent start", "metrics", "". */
static void help_topic(int n, char **words, char *buf, size_t len)
{
    buf[0] = 0;
    if (n < 1) return;
    if (!strcmp(words[0], "agent") && n > 1 &&
        (!strcmp(words[1], "start") || !strcmp(words[1], "stop") || !strcmp(words[1], "restart") ||
         !strcmp(words[1], "metrics")))
        snprintf(buf, len, "agent %s", words[1]);
    else
        snprintf(buf, len, "%s", words[0]);
}

static int print_help(const char *topic)
{
    const char *h = help_text(topic);
    if (!h) {
        fprintf(stderr, "opsctl: unknown command %s\n\n%s", topic, help_text(""));
        return CTL_EXIT_USAGE;
    }
    fputs(h, stdout);
    return CTL_EXIT_OK;
}

int main(int argc, char **argv)
{
    log_set_level(LOGL_WARN);
    conn_flags fl = {0};
    const char *output = "table", *timeout = NULL;
    int help = 0;
    char **rest = calloc((size_t)argc + 1, sizeof *rest);
    if (!rest) abort();
    int nrest = 0, rc = CTL_EXIT_OK;
    static const struct {
        const char *name;
        size_t off;
    } gflags[] = {
        {"--manager", offsetof(conn_flags, manager)}, {"--token", offsetof(conn_flags, token)},
        {"--ca", offsetof(conn_flags, ca)},           {"--cert", offsetof(conn_flags, cert)},
        {"--key", offsetof(conn_flags, key)},
    };
    for (int i = 1; i < argc && rc == CTL_EXIT_OK; i++) {
        const char *v = NULL;
        int m = 0;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            help = 1;
            continue;
        }
        if ((m = cmd_flag(argc, argv, &i, "-o", &v)) != 0 || (m = cmd_flag(argc, argv, &i, "--output", &v)) != 0) {
            if (m < 0 || (strcmp(v, "table") && strcmp(v, "json"))) {
                fprintf(stderr, "opsctl: -o takes table or json\n\n%s", help_text(""));
                rc = CTL_EXIT_USAGE;
            }
            output = v;
            continue;
        }
        if ((m = cmd_flag(argc, argv, &i, "--timeout", &v)) != 0) {
            if (m < 0) {
                fprintf(stderr, "opsctl: --timeout needs a duration, e.g. 30s\n");
                rc = CTL_EXIT_USAGE;
            }
            timeout = v;
            continue;
        }
        size_t g = 0;
        for (; g < sizeof gflags / sizeof gflags[0]; g++) {
            if ((m = cmd_flag(argc, argv, &i, gflags[g].name, &v)) != 0) break;
        }
        if (g < sizeof gflags / sizeof gflags[0]) {
            if (m < 0) {
                fprintf(stderr, "opsctl: %s needs a value\n\n%s", gflags[g].name, help_text(""));
                rc = CTL_EXIT_USAGE;
            }
            *(const char **)((char *)&fl + gflags[g].off) = v;
            continue;
        }
        rest[nrest++] = argv[i];
    }
    if (rc != CTL_EXIT_OK) goto out;

    /* Help needs no manager and no config: answer it first. */
    if (nrest > 0 && !strcmp(rest[0], "help")) {
        char topic[64];
        help_topic(nrest - 1, rest + 1, topic, sizeof topic);
        rc = print_help(topic);
        goto out;
    }
    if (help) {
        char topic[64];
        help_topic(nrest, rest, topic, sizeof topic);
        rc = print_help(topic);
        goto out;
    }
    if (nrest == 0) {
        fprintf(stderr, "opsctl: missing command\n\n%s", help_text(""));
        rc = CTL_EXIT_USAGE;
        goto out;
    }
    int k = find_command(rest[0]);
    if (k < 0) {
        fprintf(stderr, "opsctl: unknown command %s\n\n%s", rest[0], help_text(""));
        rc = CTL_EXIT_USAGE;
        goto out;
    }

    int64_t timeout_s = 0;
    if (timeout && table_parse_since(timeout, &timeout_s) != 0) {
        fprintf(stderr, "opsctl: --timeout %s: not a duration (e.g. 30s, 2m)\n", timeout);
        rc = CTL_EXIT_USAGE;
        goto out;
    }
    conn_settings s;
    char err[4096];
    if (conn_resolve(&s, &fl, NULL, err, sizeof err) != 0) {
        fprintf(stderr, "opsctl: %s\n", err);
        rc = CTL_EXIT_USAGE;
        goto out;
    }
    if (timeout_s) {
        s.timeout_ms = timeout_s * 1000;
        s.timeout_explicit = 1;
    }
    cmd_ctx x = {
        .settings = &s, .json = !strcmp(output, "json"), .out = stdout, .err = stderr, .now = (int64_t)time(NULL),
    };
    rc = commands[k].run(&x, nrest - 1, rest + 1);
    cmd_ctx_close(&x);
    conn_settings_free(&s);
out:
    free(rest);
    if (fflush(stdout) != 0 && rc == CTL_EXIT_OK) rc = CTL_EXIT_FAILED;
    return rc;
}
