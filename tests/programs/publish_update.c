/* publish_update: publishes one pushed update event the way a manager replica does (upd_publish
 * on the shared store), from a process of its own -- for the replica tests, until AdminService
 * can publish. Prints the event id.
 *   publish_update DSN NODE_ID command AGENT_ID start|stop|restart
 *   publish_update DSN NODE_ID config_change AGENT_ID CONTENT */
#include <stdio.h>
#include <string.h>

#include "base/log.h"
#include "manager/store.h"
#include "manager/updates.h"

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: publish_update DSN NODE_ID command|config_change AGENT_ID OPERATION|CONTENT\n");
        return 2;
    }
    log_open(LOGL_WARN, NULL);
    char err[512];
    store_config sc = {.driver = "postgres", .dsn = argv[1], .readers = 1};
    store *st = store_open(&sc, err, sizeof err);
    if (!st) { fprintf(stderr, "publish_update: %s\n", err); return 1; }
    upd_opts uo = {.store = st};
    upd *u = upd_new(&uo, err, sizeof err);
    if (!u) { fprintf(stderr, "publish_update: %s\n", err); store_close(st); return 1; }
    upd_event_in ev = {.kind = argv[3], .agent_id = argv[4]};
    if (!strcmp(argv[3], "command")) ev.operation = argv[5];
    else { ev.payload = (const uint8_t *)argv[5]; ev.payload_len = strlen(argv[5]); }
    const char *nodes[] = {argv[2]};
    uint64_t id = 0;
    int rc = upd_publish(u, &ev, nodes, 1, &id, err, sizeof err);
    if (rc == UPD_OK) printf("%llu\n", (unsigned long long)id);
    else fprintf(stderr, "publish_update: %s\n", err);
    upd_free(u);
    store_close(st);
    return rc == UPD_OK ? 0 : 1;
}
