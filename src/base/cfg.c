/* cfg: libcyaml with its diagnostics collected into one precise message. */
#include "base/cfg.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* libcyaml reports through a log callback, several lines per error (the problem, then a
 * backtrace of the mapping fields it was in). We gather them per load call. */
struct diag {
    char text[1024];
    size_t len;
};

static void diag_log(cyaml_log_t level, void *ctx, const char *fmt, va_list args)
{
    struct diag *d = ctx;
    if (level < CYAML_LOG_ERROR || d->len >= sizeof d->text - 1) return;
    char line[512];
    vsnprintf(line, sizeof line, fmt, args);
    /* Drop libcyaml's "Load: " prefixes and newlines so the message reads as one line. */
    char *p = line;
    if (strncmp(p, "Load: ", 6) == 0) p += 6;
    size_t l = strlen(p);
    while (l && (p[l - 1] == '\n' || p[l - 1] == ' ')) p[--l] = 0;
    while (*p == ' ') p++;
    if (!*p || strcmp(p, "Backtrace:") == 0) return;
    int n = snprintf(d->text + d->len, sizeof d->text - d->len, "%s%s", d->len ? "; " : "", p);
    if (n > 0) d->len += (size_t)n;
    if (d->len >= sizeof d->text) d->len = sizeof d->text - 1;
}

static cyaml_config_t make_config(struct diag *d)
{
    cyaml_config_t c = {
        .log_fn = diag_log,
        .log_ctx = d,
        .mem_fn = cyaml_mem,
        .log_level = CYAML_LOG_ERROR,
        .flags = CYAML_CFG_DEFAULT,
    };
    return c;
}

static int finish(const char *name, cyaml_err_t e, struct diag *d, char *err, size_t errlen)
{
    if (e == CYAML_OK) return 0;
    if (d->len)
        snprintf(err, errlen, "%s: %s", name, d->text);
    else
        snprintf(err, errlen, "%s: %s", name, cyaml_strerror(e));
    return -1;
}

int cfg_load_string(const char *name, const char *yaml, size_t len,
                    const cyaml_schema_value_t *schema, void **out, char *err, size_t errlen)
{
    struct diag d = {.len = 0};
    d.text[0] = 0;
    cyaml_config_t c = make_config(&d);
    *out = NULL;
    cyaml_err_t e = cyaml_load_data((const uint8_t *)yaml, len, &c, schema, (cyaml_data_t **)out, NULL);
    return finish(name, e, &d, err, errlen);
}

int cfg_read_file(const char *path, char **out, size_t *outlen, char *err, size_t errlen)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 > cap) {
            cap = cap ? cap * 2 : 8192;
            char *nb = realloc(buf, cap);
            if (!nb) { free(buf); fclose(f); snprintf(err, errlen, "%s: out of memory", path); return -1; }
            buf = nb;
        }
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0) break;
    }
    int rerr = ferror(f);
    fclose(f);
    if (rerr) { free(buf); snprintf(err, errlen, "%s: read error", path); return -1; }
    buf[len] = 0;
    *out = buf;
    if (outlen) *outlen = len;
    return 0;
}

int cfg_load(const char *path, const cyaml_schema_value_t *schema, void **out, char *err,
             size_t errlen)
{
    char *buf;
    size_t len;
    *out = NULL;
    if (cfg_read_file(path, &buf, &len, err, errlen) != 0) return -1;
    int rc = cfg_load_string(path, buf, len, schema, out, err, errlen);
    free(buf);
    return rc;
}

void cfg_free(const cyaml_schema_value_t *schema, void *data)
{
    if (!data) return;
    struct diag d = {.len = 0};
    cyaml_config_t c = make_config(&d);
    cyaml_free(&c, schema, data, 0);
}

int cfg_save_string(const cyaml_schema_value_t *schema, const void *data, char **yaml, size_t *len)
{
    struct diag d = {.len = 0};
    cyaml_config_t c = make_config(&d);
    *yaml = NULL;
    cyaml_err_t e = cyaml_save_data(yaml, len, &c, schema, data, 0);
    return e == CYAML_OK ? 0 : -1;
}
