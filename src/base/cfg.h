/* cfg: loading a YAML config file through a libcyaml schema, with errors a person can act on.
 *
 * Owns nothing long-lived: cfg_load() returns a tree the caller frees with cfg_free(). Each
 * program declares its own schema next to its config struct; this file only runs libcyaml and
 * turns its log output into one message naming the file, the line, the key and the problem. */
#ifndef OPS_BASE_CFG_H
#define OPS_BASE_CFG_H

#include <cyaml/cyaml.h>
#include <stddef.h>

/* Loads path into *out following schema. Unknown keys are errors. Returns 0, or -1 with
 * err holding "FILE: line N: <what libcyaml said> (in key.path)". */
int cfg_load(const char *path, const cyaml_schema_value_t *schema, void **out, char *err,
             size_t errlen);
/* Same, from a string in memory; name is used in messages in place of a file name. */
int cfg_load_string(const char *name, const char *yaml, size_t len,
                    const cyaml_schema_value_t *schema, void **out, char *err, size_t errlen);
void cfg_free(const cyaml_schema_value_t *schema, void *data);
/* Reads a whole file into *buf (malloc'd, NUL-terminated; *len excludes the NUL). Returns 0,
 * or -1 with err "FILE: cannot open: reason". */
int cfg_read_file(const char *path, char **buf, size_t *len, char *err, size_t errlen);
/* Serialises data back to YAML (caller frees *yaml with free()). Returns 0 or -1. */
int cfg_save_string(const cyaml_schema_value_t *schema, const void *data, char **yaml,
                    size_t *len);

#endif
