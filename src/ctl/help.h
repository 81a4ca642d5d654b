/* help: opsctl's help texts, one per command level, each teaching with examples. Owns
 * nothing (static strings). */
#ifndef OPS_CTL_HELP_H
#define OPS_CTL_HELP_H

/* The help of "" (opsctl itself), "nodes", "node", "agents", "agent", "agent start" (also
 * stop/restart), "agent metrics", "metrics", "config", "watch", "delete-node"; NULL for an
 * unknown name. */
const char *help_text(const char *cmd);

#endif
