/* cmd: what every command shares: the lazily opened connection, error printing, JSON
 * output, flag matching. */
#include "ctl/cmd.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "ctl/help.h"

conn *cmd_conn(cmd_ctx *x)
{
    if (x->c) return x->c;
    char err[1024];
    x->c = conn_open(x->settings, err, sizeof err);
    if (!x->c) fprintf(x->err, "opsctl: %s\n", err);
    return x->c;
}

void cmd_ctx_close(cmd_ctx *x)
{
    conn_close(x->c);
    x->c = NULL;
}

int cmd_usage_error(cmd_ctx *x, const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("opsctl: ", x->err);
    vfprintf(x->err, fmt, ap);
    va_end(ap);
    fputs("\n\n", x->err);
    const char *h = help_text(cmd);
    fputs(h ? h : help_text(""), x->err);
    return CTL_EXIT_USAGE;
}

int cmd_fail(cmd_ctx *x, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("opsctl: ", x->err);
    vfprintf(x->err, fmt, ap);
    va_end(ap);
    fputc('\n', x->err);
    return code;
}

int cmd_print_json(cmd_ctx *x, json_t *j, int compact)
{
    char *s = json_dumps(j, compact ? JSON_COMPACT : JSON_INDENT(2));
    json_decref(j);
    if (!s) return cmd_fail(x, CTL_EXIT_FAILED, "cannot encode the answer as JSON");
    fputs(s, x->out);
    fputc('\n', x->out);
    free(s);
    fflush(x->out);
    return CTL_EXIT_OK;
}

int cmd_flag(int argc, char **argv, int *i, const char *name, const char **val)
{
    const char *a = argv[*i];
    size_t l = strlen(name);
    if (strncmp(a, name, l) != 0) return 0;
    if (a[l] == '=') {
        *val = a + l + 1;
        return 1;
    }
    if (a[l] != 0) return 0;
    if (*i + 1 >= argc) return -1;
    *val = argv[++*i];
    return 1;
}
