/* cmd: opsctl's commands. Each takes the words after its name (global flags already taken
 * out by main.c), parses its own flags, calls the AdminService, prints a table or JSON, and
 * returns the process exit code (conn.h's CTL_EXIT_*). Usage errors print the command's help
 * (help.h) to stderr.
 *
 * Owns: the context's connection, opened on first use (cmd_ctx_close). */
#ifndef OPS_CTL_CMD_H
#define OPS_CTL_CMD_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "ctl/conn.h"

typedef struct cmd_ctx {
    const conn_settings *settings; /* borrowed */
    conn *c;                       /* opened by cmd_conn() */
    int json;                      /* -o json */
    FILE *out, *err;
    int64_t now;                   /* Unix seconds, for "12s ago" */
} cmd_ctx;

/* The connection, opened on first use; NULL after printing why it could not be set up. */
conn *cmd_conn(cmd_ctx *x);
void cmd_ctx_close(cmd_ctx *x);

/* Prints "opsctl: <msg>" and the help of cmd to stderr; returns CTL_EXIT_USAGE. */
int cmd_usage_error(cmd_ctx *x, const char *cmd, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Prints "opsctl: <msg>" to stderr and returns code. */
int cmd_fail(cmd_ctx *x, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Writes j (consumed) as one JSON document (indented, or one line when compact). */
int cmd_print_json(cmd_ctx *x, json_t *j, int compact);

/* Matches argv[*i] against "--name VALUE" or "--name=VALUE". Returns 1 with *val (advancing
 * *i past a separate value), 0 when it is another word, -1 when the value is missing. */
int cmd_flag(int argc, char **argv, int *i, const char *name, const char **val);

/* A metric value for people: percentages as "12.5%", byte counts (memory/disk totals, keys
 * with "bytes") as sizes, the rest as table_fmt_num. Returns buf. */
const char *cmd_fmt_metric(const char *type, const char *key, double v, char *buf, size_t n);

int cmd_nodes(cmd_ctx *x, int argc, char **argv);
int cmd_node(cmd_ctx *x, int argc, char **argv);
int cmd_delete_node(cmd_ctx *x, int argc, char **argv);
int cmd_config(cmd_ctx *x, int argc, char **argv);
int cmd_watch(cmd_ctx *x, int argc, char **argv);
int cmd_agents(cmd_ctx *x, int argc, char **argv);
/* argv[0] is the subcommand: start, stop, restart, metrics. */
int cmd_agent(cmd_ctx *x, int argc, char **argv);
int cmd_metrics(cmd_ctx *x, int argc, char **argv);
int cmd_audit(cmd_ctx *x, int argc, char **argv);
/* argv[0] is the subcommand: create, list, revoke (cmd_enroll.c). */
int cmd_enroll_token(cmd_ctx *x, int argc, char **argv);
/* cmd_updates.c: pushed events */
int cmd_publish_config(cmd_ctx *x, int argc, char **argv);
int cmd_publish_update(cmd_ctx *x, int argc, char **argv);
int cmd_events(cmd_ctx *x, int argc, char **argv);
int cmd_event(cmd_ctx *x, int argc, char **argv);

#endif
