/* Host collectors: exact values from fixture /proc files, scheduling, errors, and plausible
 * values from this machine's real /proc. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "daemon/collectors.h"

static char root[64];

static int setup(void **state)
{
    (void)state;
    snprintf(root, sizeof root, "/tmp/test_collectors.XXXXXX");
    if (!mkdtemp(root)) return -1;
    char p[128];
    snprintf(p, sizeof p, "%s/net", root);
    return mkdir(p, 0755);
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    return system(cmd) == 0 ? 0 : -1;
}

static void put(const char *rel, const char *text)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

/* All four collectors, 60 s each, no filters: what an empty daemon.yaml gives. */
static dconfig_collectors config(void)
{
    static char *none[] = {NULL};
    dconfig_collectors c = {
        .cpu = {1, 60000}, .memory = {1, 60000}, .disk = {1, 60000}, .network = {1, 60000},
        .mount_points = none, .interfaces = none,
    };
    return c;
}

static double get(const coll_sample *s, const char *key)
{
    double v;
    if (coll_sample_get(s, key, &v) != 0) fail_msg("key %s missing from %s sample", key, s->type);
    return v;
}

static void assert_near(double a, double b)
{
    if (a - b > 1e-9 || b - a > 1e-9) fail_msg("%.12g != %.12g", a, b);
}

static void cpu_percentages_between_reads(void **state)
{
    (void)state;
    put("stat", "cpu  100 0 50 800 50 0 0 0 0 0\n"
                "cpu0 50 0 25 400 25 0 0 0 0 0\n"
                "cpu1 50 0 25 400 25 0 0 0 0 0\n"
                "intr 12345 0 0\nctxt 999\n");
    dconfig_collectors cfg = config();
    cfg.cpu_per_core = 1;
    coll *c = NULL;
    char err[256];
    assert_int_equal(coll_new(&cfg, root, &c, err, sizeof err), 0);

    /* 1000 ticks later: 100 user + 20 nice, 40 system + 10 irq, 800 idle, 30 iowait. */
    put("stat", "cpu  200 20 90 1600 80 10 0 0 0 0\n"
                "cpu0 150 20 65 500 55 10 0 0 0 0\n"   /* 300 busy of 500 ticks */
                "cpu1 50 0 25 1100 25 0 0 0 0 0\n");   /* idle */
    coll_sample s = {0};
    assert_int_equal(coll_read(c, COLL_CPU, 0, &s, err, sizeof err), 0);
    assert_string_equal(s.type, "cpu");
    assert_true(s.timestamp > 1600000000);
    assert_near(get(&s, "usage_percent"), 17.0);
    assert_near(get(&s, "user"), 12.0);
    assert_near(get(&s, "system"), 5.0);
    assert_near(get(&s, "idle"), 80.0);
    assert_near(get(&s, "iowait"), 3.0);
    assert_near(get(&s, "steal"), 0.0);
    assert_near(get(&s, "cores"), 2);
    assert_near(get(&s, "cpu0.usage_percent"), 100.0 * 170 / 300);
    assert_near(get(&s, "cpu1.usage_percent"), 0.0);

    /* No ticks since: the since-boot averages rather than 0/0. */
    assert_int_equal(coll_read(c, COLL_CPU, 1, &s, err, sizeof err), 0);
    assert_near(get(&s, "idle"), 100.0 * 1600 / 2000);

    coll_sample_free(&s);
    coll_free(c);
}

static void memory_from_meminfo(void **state)
{
    (void)state;
    put("stat", "cpu  1 0 1 1 0 0 0 0\n");
    put("meminfo", "MemTotal:        1000 kB\n"
                   "MemFree:          200 kB\n"
                   "MemAvailable:     600 kB\n"
                   "Buffers:           50 kB\n"
                   "Cached:           250 kB\n"
                   "SwapCached:         0 kB\n"
                   "SwapTotal:        400 kB\n"
                   "SwapFree:         100 kB\n"
                   "SReclaimable:      30 kB\n");
    dconfig_collectors cfg = config();
    coll *c = NULL;
    char err[256];
    assert_int_equal(coll_new(&cfg, root, &c, err, sizeof err), 0);
    coll_sample s = {0};
    assert_int_equal(coll_read(c, COLL_MEMORY, 0, &s, err, sizeof err), 0);
    assert_string_equal(s.type, "memory");
    assert_near(get(&s, "total"), 1024000);
    assert_near(get(&s, "available"), 614400);
    assert_near(get(&s, "used"), 409600);
    assert_near(get(&s, "used_percent"), 40.0);
    assert_near(get(&s, "free"), 204800);
    assert_near(get(&s, "buffers"), 51200);
    assert_near(get(&s, "cached"), 280 * 1024);
    assert_near(get(&s, "swap_total"), 409600);
    assert_near(get(&s, "swap_used"), 307200);
    assert_near(get(&s, "swap_free"), 102400);

    /* Old kernels without MemAvailable: free + buffers + cache. */
    put("meminfo", "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 100 kB\nCached: 100 kB\n");
    assert_int_equal(coll_read(c, COLL_MEMORY, 0, &s, err, sizeof err), 0);
    assert_near(get(&s, "available"), 300 * 1024);
    assert_near(get(&s, "used_percent"), 70.0);
    assert_near(get(&s, "swap_total"), 0);

    put("meminfo", "garbage\n");
    assert_int_equal(coll_read(c, COLL_MEMORY, 0, &s, err, sizeof err), -1);
    assert_non_null(strstr(err, "collector memory:"));
    assert_non_null(strstr(err, "meminfo"));
    coll_sample_free(&s);
    coll_free(c);
}

static void disk_mounts_and_filters(void **state)
{
    (void)state;
    put("stat", "cpu  1 0 1 1 0 0 0 0\n");
    char dir[128], spaced[128], text[1024];
    snprintf(dir, sizeof dir, "%s/data", root);
    snprintf(spaced, sizeof spaced, "%s/with space", root);
    assert_int_equal(mkdir(dir, 0755), 0);
    assert_int_equal(mkdir(spaced, 0755), 0);
    snprintf(text, sizeof text,
             "proc /proc proc rw 0 0\n"
             "/dev/vda / ext4 rw 0 0\n"
             "tmpfs %s tmpfs rw 0 0\n"          /* a nodev filesystem: left out by default */
             "/dev/sdb1 %s xfs rw 0 0\n"
             "/dev/sdb1 %s xfs rw 0 0\n"        /* over-mounted: reported once */
             "/dev/sdc1 %s/with\\040space ext4 rw 0 0\n"
             "/dev/sdd1 /nonexistent/mount ext4 rw 0 0\n", /* statvfs fails: skipped */
             root, dir, dir, root);
    put("mounts", text);
    put("filesystems", "nodev\tsysfs\nnodev\ttmpfs\nnodev\tproc\n\text4\n\txfs\n");

    dconfig_collectors cfg = config();
    coll *c = NULL;
    char err[256];
    assert_int_equal(coll_new(&cfg, root, &c, err, sizeof err), 0);
    coll_sample s = {0};
    assert_int_equal(coll_read(c, COLL_DISK, 0, &s, err, sizeof err), 0);
    assert_string_equal(s.type, "disk");
    char key[160];
    snprintf(key, sizeof key, "%s.total", dir);
    assert_true(get(&s, key) > 0);
    snprintf(key, sizeof key, "%s.used_percent", spaced);
    double pct = get(&s, key);
    assert_true(pct >= 0 && pct <= 100);
    assert_true(get(&s, "/.total") > 0);
    assert_true(get(&s, "/.used") <= get(&s, "/.total"));
    assert_true(get(&s, "/.free") <= get(&s, "/.total"));
    double v;
    snprintf(key, sizeof key, "%s.total", root);
    assert_int_equal(coll_sample_get(&s, key, &v), -1);
    assert_int_equal(coll_sample_get(&s, "/proc.total", &v), -1);
    assert_int_equal(coll_sample_get(&s, "/nonexistent/mount.total", &v), -1);
    assert_int_equal(s.n, 3 * 4); /* /, data, with space */
    coll_free(c);

    /* Only what is asked for, nodev or not. */
    char *only[] = {spaced, root, NULL};
    cfg.mount_points = only;
    cfg.n_mount_points = 2;
    assert_int_equal(coll_new(&cfg, root, &c, err, sizeof err), 0);
    assert_int_equal(coll_read(c, COLL_DISK, 0, &s, err, sizeof err), 0);
    assert_int_equal(s.n, 2 * 4);
    snprintf(key, sizeof key, "%s.free", spaced);
    assert_true(get(&s, key) > 0);
    snprintf(key, sizeof key, "%s.total", root);
    assert_true(get(&s, key) > 0);
    assert_int_equal(coll_sample_get(&s, "/.total", &v), -1);
    coll_sample_free(&s);
    coll_free(c);
}

static void network_counters(void **state)
{
    (void)state;
    put("stat", "cpu  1 0 1 1 0 0 0 0\n");
    put("net/dev",
        "Inter-|   Receive                                                |  Transmit\n"
        " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n"
        "    lo: 1000 10 0 0 0 0 0 0 1000 10 0 0 0 0 0 0\n"
        "  eth0: 123456789012 2000 3 4 0 0 0 7 5000 60 1 2 0 0 0 0\n"
        "veth1a2b3c: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n");
    dconfig_collectors cfg = config();
    coll *c = NULL;
    char err[256];
    assert_int_equal(coll_new(&cfg, root, &c, err, sizeof err), 0);
    coll_sample s = {0};
    assert_int_equal(coll_read(c, COLL_NETWORK, 0, &s, err, sizeof err), 0);
    assert_string_equal(s.type, "network");
    assert_int_equal(s.n, 3 * 8);
    assert_near(get(&s, "eth0.bytes_recv"), 123456789012.0);
    assert_near(get(&s, "eth0.packets_recv"), 2000);
    assert_near(get(&s, "eth0.errin"), 3);
    assert_near(get(&s, "eth0.dropin"), 4);
    assert_near(get(&s, "eth0.bytes_sent"), 5000);
    assert_near(get(&s, "eth0.packets_sent"), 60);
    assert_near(get(&s, "eth0.errout"), 1);
    assert_near(get(&s, "eth0.dropout"), 2);
    assert_near(get(&s, "lo.bytes_sent"), 1000);
    assert_near(get(&s, "veth1a2b3c.bytes_sent"), 9);
    coll_free(c);

    char *only[] = {"eth0", NULL};
    cfg.interfaces = only;
    cfg.n_interfaces = 1;
    assert_int_equal(coll_new(&cfg, root, &c, err, sizeof err), 0);
    assert_int_equal(coll_read(c, COLL_NETWORK, 0, &s, err, sizeof err), 0);
    assert_int_equal(s.n, 8);
    double v;
    assert_int_equal(coll_sample_get(&s, "lo.bytes_recv", &v), -1);
    coll_sample_free(&s);
    coll_free(c);
}

static void scheduling(void **state)
{
    (void)state;
    put("stat", "cpu  1 0 1 1 0 0 0 0\n");
    put("meminfo", "MemTotal: 1000 kB\nMemFree: 100 kB\n");
    dconfig_collectors cfg = config();
    cfg.cpu.interval_ms = 10000;
    cfg.disk.enabled = 0;
    cfg.network.enabled = 0;
    coll *c = NULL;
    char err[256];
    assert_int_equal(coll_new(&cfg, root, &c, err, sizeof err), 0);
    unsigned both = (1u << COLL_CPU) | (1u << COLL_MEMORY);
    assert_int_equal(coll_due(c, 5000), both);      /* everything enabled is due at once */
    coll_sample s = {0};
    assert_int_equal(coll_read(c, COLL_CPU, 5000, &s, err, sizeof err), 0);
    assert_int_equal(coll_due(c, 5000), 1u << COLL_MEMORY);
    assert_int_equal(coll_read(c, COLL_MEMORY, 5000, &s, err, sizeof err), 0);
    assert_int_equal(coll_due(c, 5001), 0);
    assert_int_equal(coll_next_due(c), 15000);
    assert_int_equal(coll_due(c, 14999), 0);
    assert_int_equal(coll_due(c, 15000), 1u << COLL_CPU);
    assert_int_equal(coll_due(c, 65000), both);
    /* A failed read is still rescheduled: no hot loop on a broken file. */
    put("meminfo", "");
    assert_int_equal(coll_read(c, COLL_MEMORY, 65000, &s, err, sizeof err), -1);
    assert_int_equal(s.n, 0);
    assert_int_equal(coll_due(c, 65000), 1u << COLL_CPU);
    /* Disabled collectors are never due, but can be read on demand. */
    put("net/dev", "h\nh\n lo: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n");
    assert_int_equal(coll_read(c, COLL_NETWORK, 65000, &s, err, sizeof err), 0);
    assert_near(get(&s, "lo.bytes_recv"), 1);
    assert_int_equal(coll_due(c, INT64_MAX) & (1u << COLL_NETWORK), 0);
    assert_int_equal(coll_read(c, COLL_COUNT, 0, &s, err, sizeof err), -1);
    coll_sample_free(&s);
    coll_free(c);

    cfg.cpu.enabled = cfg.memory.enabled = 0;
    assert_int_equal(coll_new(&cfg, root, &c, err, sizeof err), 0);
    assert_int_equal(coll_due(c, 0), 0);
    assert_true(coll_next_due(c) == INT64_MAX);
    coll_free(c);
}

static void names_and_errors(void **state)
{
    (void)state;
    coll_kind k;
    assert_int_equal(coll_kind_from_name("network", &k), 0);
    assert_int_equal(k, COLL_NETWORK);
    assert_int_equal(coll_kind_from_name("gpu", &k), -1);
    assert_string_equal(coll_kind_name(COLL_DISK), "disk");

    dconfig_collectors cfg = config();
    coll *c = (coll *)1;
    char err[256], missing[128];
    snprintf(missing, sizeof missing, "%s/no-such-proc", root);
    assert_int_equal(coll_new(&cfg, missing, &c, err, sizeof err), -1);
    assert_null(c);
    assert_non_null(strstr(err, "collector cpu:"));
    assert_non_null(strstr(err, "no-such-proc/stat"));

    cfg.cpu.enabled = 0;  /* nothing to read up front */
    assert_int_equal(coll_new(&cfg, missing, &c, err, sizeof err), 0);
    coll_sample s = {0};
    assert_int_equal(coll_read(c, COLL_NETWORK, 0, &s, err, sizeof err), -1);
    assert_non_null(strstr(err, "no-such-proc/net/dev"));
    coll_free(c);
}

static void real_host(void **state)
{
    (void)state;
    dconfig_collectors cfg = config();
    cfg.cpu_per_core = 1;
    coll *c = NULL;
    char err[256];
    assert_int_equal(coll_new(&cfg, NULL, &c, err, sizeof err), 0);
    /* Burn a little CPU so the first delta has ticks in it. */
    volatile double x = 0;
    for (long i = 0; i < 30000000; i++) x += (double)i * 0.5;
    coll_sample s = {0};
    assert_int_equal(coll_read(c, COLL_CPU, 0, &s, err, sizeof err), 0);
    double cores = get(&s, "cores");
    assert_true(cores >= 1);
    const char *pct[] = {"usage_percent", "user", "system", "idle", "iowait", "cpu0.usage_percent"};
    for (size_t i = 0; i < sizeof pct / sizeof pct[0]; i++) {
        double v = get(&s, pct[i]);
        if (v < 0 || v > 100) fail_msg("cpu %s = %g", pct[i], v);
    }
    assert_true(get(&s, "user") + get(&s, "system") + get(&s, "idle") + get(&s, "iowait") <= 100.0 + 1e-6);

    assert_int_equal(coll_read(c, COLL_MEMORY, 0, &s, err, sizeof err), 0);
    assert_true(get(&s, "total") > 0);
    assert_true(get(&s, "used") <= get(&s, "total"));
    assert_true(get(&s, "available") <= get(&s, "total"));
    assert_true(get(&s, "used_percent") >= 0 && get(&s, "used_percent") <= 100);

    assert_int_equal(coll_read(c, COLL_DISK, 0, &s, err, sizeof err), 0);
    assert_true(get(&s, "/.total") > 0);
    assert_true(get(&s, "/.used") <= get(&s, "/.total"));

    assert_int_equal(coll_read(c, COLL_NETWORK, 0, &s, err, sizeof err), 0);
    assert_true(get(&s, "lo.bytes_recv") >= 0);
    assert_true(get(&s, "lo.packets_sent") >= 0);
    coll_sample_free(&s);
    coll_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cpu_percentages_between_reads),
        cmocka_unit_test(memory_from_meminfo),
        cmocka_unit_test(disk_mounts_and_filters),
        cmocka_unit_test(network_counters),
        cmocka_unit_test(scheduling),
        cmocka_unit_test(names_and_errors),
        cmocka_unit_test(real_host),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
