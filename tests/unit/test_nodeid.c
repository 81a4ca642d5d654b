/* node_id: configured id, the file, generation (and that it sticks), bad inputs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "daemon/nodeid.h"

static char tmpdir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_nodeid.XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static const char *sub(const char *name)
{
    static char path[4][256];
    static int i;
    i = (i + 1) % 4;
    snprintf(path[i], sizeof path[i], "%s/%s", tmpdir, name);
    return path[i];
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

static void read_text(const char *path, char *buf, size_t n)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t r = fread(buf, 1, n - 1, f);
    buf[r] = 0;
    fclose(f);
}

static int is_uuid(const char *s)
{
    if (strlen(s) != 36) return 0;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) { if (s[i] != '-') return 0; }
        else if (!isxdigit((unsigned char)s[i]) || isupper((unsigned char)s[i])) return 0;
    }
    return 1;
}

static void configured_id_wins(void **state)
{
    (void)state;
    char id[NODEID_MAX + 1], err[256];
    const char *wd = sub("configured");
    assert_int_equal(nodeid_resolve("node-a", wd, id, sizeof id, err, sizeof err), 0);
    assert_string_equal(id, "node-a");
    struct stat st;
    assert_int_equal(stat(wd, &st), -1); /* nothing touched on disk */

    assert_int_equal(nodeid_resolve("bad id", wd, id, sizeof id, err, sizeof err), -1);
    assert_non_null(strstr(err, "daemon.id"));
    char small[4];
    assert_int_equal(nodeid_resolve("node-a", wd, small, sizeof small, err, sizeof err), -1);
    assert_non_null(strstr(err, "too small"));
}

static void generated_once_then_kept(void **state)
{
    (void)state;
    char id[NODEID_MAX + 1], again[NODEID_MAX + 1], err[256];
    const char *wd = sub("fresh/deeper/work");   /* created on the way */
    assert_int_equal(nodeid_resolve(NULL, wd, id, sizeof id, err, sizeof err), 0);
    assert_true(is_uuid(id));

    char path[300], text[128];
    snprintf(path, sizeof path, "%s/node_id", wd);
    read_text(path, text, sizeof text);
    char expect[NODEID_MAX + 2];
    snprintf(expect, sizeof expect, "%s\n", id);
    assert_string_equal(text, expect);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0644);

    /* No temporary file left behind. */
    DIR *d = opendir(wd);
    assert_non_null(d);
    int entries = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) entries++;
    closedir(d);
    assert_int_equal(entries, 1);

    assert_int_equal(nodeid_resolve("", wd, again, sizeof again, err, sizeof err), 0);
    assert_string_equal(again, id);

    /* A different work dir is a different node. */
    assert_int_equal(nodeid_resolve(NULL, sub("other"), again, sizeof again, err, sizeof err), 0);
    assert_true(is_uuid(again));
    assert_string_not_equal(again, id);
}

static void existing_file(void **state)
{
    (void)state;
    char id[NODEID_MAX + 1], err[256];
    const char *wd = sub("existing");
    assert_int_equal(mkdir(wd, 0755), 0);
    char path[300];
    snprintf(path, sizeof path, "%s/node_id", wd);

    write_text(path, "  host-42.example \n\n");
    assert_int_equal(nodeid_resolve(NULL, wd, id, sizeof id, err, sizeof err), 0);
    assert_string_equal(id, "host-42.example");

    /* Damaged: refused, not replaced. */
    write_text(path, "two words\n");
    assert_int_equal(nodeid_resolve(NULL, wd, id, sizeof id, err, sizeof err), -1);
    assert_non_null(strstr(err, "node_id: does not hold a valid node id"));
    char text[64];
    read_text(path, text, sizeof text);
    assert_string_equal(text, "two words\n");

    /* Empty (or blank): as good as missing. */
    write_text(path, " \n");
    assert_int_equal(nodeid_resolve(NULL, wd, id, sizeof id, err, sizeof err), 0);
    assert_true(is_uuid(id));
    char again[NODEID_MAX + 1];
    assert_int_equal(nodeid_resolve(NULL, wd, again, sizeof again, err, sizeof err), 0);
    assert_string_equal(again, id);
}

static void unusable_work_dir(void **state)
{
    (void)state;
    char id[NODEID_MAX + 1], err[256];
    const char *file = sub("plainfile");
    write_text(file, "x");
    char wd[300];
    snprintf(wd, sizeof wd, "%s/work", file);   /* a path through a regular file */
    assert_int_equal(nodeid_resolve(NULL, wd, id, sizeof id, err, sizeof err), -1);
    assert_non_null(strstr(err, "cannot create directory"));
    assert_int_equal(nodeid_resolve(NULL, file, id, sizeof id, err, sizeof err), -1);
    assert_non_null(strstr(err, "not a directory"));
    assert_int_equal(nodeid_resolve(NULL, "", id, sizeof id, err, sizeof err), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(configured_id_wins),
        cmocka_unit_test(generated_once_then_kept),
        cmocka_unit_test(existing_file),
        cmocka_unit_test(unusable_work_dir),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
