/* help: the texts. Kept together so they stay consistent with each other. */
#include "ctl/help.h"

#include <string.h>

#define GLOBAL_FLAGS                                                                               \
    "Global flags (anywhere on the line):\n"                                                       \
    "  -o, --output table|json  output format (default table; json: one JSON document,\n"         \
    "                           for watch one JSON object per line)\n"                             \
    "  --manager HOST:PORT      the manager (env OPS_MANAGER; default 127.0.0.1:9090)\n"           \
    "  --token TOKEN            bearer token (env OPS_TOKEN)\n"                                    \
    "  --ca FILE                CA of the manager's certificate: use TLS (env OPS_CA)\n"          \
    "  --cert FILE --key FILE   client certificate for mutual TLS (env OPS_CERT, OPS_KEY)\n"      \
    "  --timeout DURATION       per call (default 10s; agent operations 90s)\n"               \
    "Settings not given as flags or in the environment are read from\n"                            \
    "$XDG_CONFIG_HOME/ops/opsctl.yaml or ~/.config/ops/opsctl.yaml (keys manager, token, ca,\n"   \
    "cert, key).\n"

static const struct {
    const char *cmd;
    const char *text;
} texts[] = {
    {"",
     "opsctl: look at and operate the fleet through the manager's AdminService.\n"
     "\n"
     "Usage: opsctl [global flags] COMMAND [args] [flags]\n"
     "\n"
     "Commands:\n"
     "  nodes                          list nodes (filter by status and labels)\n"
     "  node NODE                      one node: details, agents, latest metrics\n"
     "  agents NODE                    a node's agents, live from its daemon\n"
     "  agent start|stop|restart NODE AGENT\n"
     "                                 operate an agent (operator role)\n"
     "  agent metrics NODE AGENT       an agent's resource use, as sparklines\n"
     "  metrics NODE                   a node's metrics as a chart, or a summary\n"
     "  config NODE                    the daemon's effective config (or an agent's)\n"
     "  watch                          stream fleet events as they happen\n"
     "  delete-node NODE               forget a node (admin role)\n"
     "  audit                          who changed or tried to change what (admin role)\n"
     "  enroll-token create|list|revoke\n"
     "                                 enrollment tokens for new nodes (admin role)\n"
     "  publish-config TARGET --agent AGENT --file PATH\n"
     "                                 push an agent config (operator role)\n"
     "  publish-update TARGET --component agent|daemon ...\n"
     "                                 push a signed package (operator role)\n"
     "  events [NODE] [--pending]      pushed events and their outcomes\n"
     "  event ID                       one pushed event\n"
     "  help [COMMAND]                 this text, or a command's\n"
     "\n"
     "Examples:\n"
     "  opsctl nodes --status offline\n"
     "  opsctl node web-1\n"
     "  opsctl agent restart web-1 nginx\n"
     "  opsctl metrics web-1 --type memory --since 6h\n"
     "  OPS_TOKEN=... opsctl -o json nodes | jq '.nodes[].node_id'\n"
     "\n" GLOBAL_FLAGS
     "\n"
     "Exit codes: 0 ok, 1 the operation failed, 2 usage, 3 cannot reach or authenticate with\n"
     "the manager.\n"
     "Run 'opsctl COMMAND --help' for a command's flags.\n"},
    {"nodes",
     "Usage: opsctl nodes [--status online|offline] [--label KEY=VALUE]...\n"
     "\n"
     "Lists every node the manager knows (all pages), sorted by node id.\n"
     "  --status S         only nodes with this status\n"
     "  --label KEY=VALUE  only nodes carrying this label; repeat to require several\n"
     "\n"
     "Examples:\n"
     "  opsctl nodes\n"
     "  opsctl nodes --status online --label env=prod --label role=web\n"
     "  opsctl nodes -o json | jq -r '.nodes[] | select(.status==\"offline\") | .node_id'\n"},
    {"node",
     "Usage: opsctl node NODE\n"
     "\n"
     "Shows a node's details, its agents as its daemon last reported them, and the newest\n"
     "sample of each metric type.\n"
     "\n"
     "Examples:\n"
     "  opsctl node web-1\n"
     "  opsctl node web-1 -o json | jq '.latest_metrics'\n"},
    {"agents",
     "Usage: opsctl agents NODE\n"
     "\n"
     "Lists a node's agents live, asked from its daemon through the manager (fails when the\n"
     "daemon cannot be reached; 'opsctl node NODE' shows the last reported state instead).\n"
     "\n"
     "Example:\n"
     "  opsctl agents web-1\n"},
    {"agent",
     "Usage: opsctl agent start|stop|restart NODE AGENT\n"
     "       opsctl agent metrics NODE AGENT [--since 1h]\n"
     "\n"
     "Operates one agent through its node's daemon (needs an operator or admin token), or\n"
     "shows its resource use (cpu, memory, disk i/o, open files) as sparklines.\n"
     "\n"
     "Examples:\n"
     "  opsctl agent restart web-1 nginx\n"
     "  opsctl agent stop web-1 nginx && opsctl agents web-1\n"
     "  opsctl agent metrics web-1 nginx --since 30m\n"},
    {"agent start",
     "Usage: opsctl agent start|stop|restart NODE AGENT\n"
     "\n"
     "Asks the node's daemon, through the manager, to start, stop or restart the agent and\n"
     "waits for the answer (a stop may take as long as the agent's stop timeout: opsctl\n"
     "waits up to 90s unless --timeout says otherwise). Needs an operator or admin token.\n"
     "Exit 1 when the daemon reports a failure.\n"
     "\n"
     "Examples:\n"
     "  opsctl agent start web-1 nginx\n"
     "  opsctl agent stop web-1 nginx --timeout 60s\n"},
    {"agent metrics",
     "Usage: opsctl agent metrics NODE AGENT [--since DURATION]\n"
     "\n"
     "An agent's resource samples as kept by its daemon, one sparkline per measure with\n"
     "min, avg, max and latest.\n"
     "  --since DURATION  how far back (e.g. 90s, 15m, 1h; default: the daemon's default)\n"
     "\n"
     "Examples:\n"
     "  opsctl agent metrics web-1 nginx\n"
     "  opsctl agent metrics web-1 nginx --since 10m -o json | jq '.data_points | length'\n"},
    {"metrics",
     "Usage: opsctl metrics NODE [--type TYPE] [--series KEY]... [--since DURATION] [--summary]\n"
     "       [--height ROWS]\n"
     "\n"
     "Draws a node's metric series as braille charts (one per key) sized to the terminal;\n"
     "the manager averages the points down to the chart's width. With --summary, a table of\n"
     "min/avg/max/latest per key with a sparkline of the trend.\n"
     "  --type TYPE       cpu, memory, disk, network, ... (default cpu; --summary: all types)\n"
     "  --series KEY      only this key (repeatable), e.g. usage_percent\n"
     "  --since DURATION  how far back (default 1h; at most 30d), e.g. 15m, 24h, 7d, 2w\n"
     "  --summary         the per-key table instead of charts\n"
     "  --height ROWS     chart height in rows (default 8)\n"
     "\n"
     "Examples:\n"
     "  opsctl metrics web-1\n"
     "  opsctl metrics web-1 --type memory --series used_percent --since 24h\n"
     "  opsctl metrics web-1 --summary --since 6h\n"},
    {"config",
     "Usage: opsctl config NODE [--agent AGENT]\n"
     "\n"
     "Prints the daemon's effective config (YAML), or one agent's, as the daemon answers it.\n"
     "\n"
     "Examples:\n"
     "  opsctl config web-1\n"
     "  opsctl config web-1 --agent nginx\n"},
    {"watch",
     "Usage: opsctl watch [--kind KIND]... [--node NODE] [--count N]\n"
     "\n"
     "Streams fleet events as they happen, one line each, until interrupted: nodes going\n"
     "online or offline, registered or deleted, agents changing state.\n"
     "  --kind KIND  only these kinds (repeatable); a prefix matches: node, agent.,\n"
     "               node.offline, agent.state\n"
     "  --node NODE  only this node's events\n"
     "  --count N    exit after N events\n"
     "With -o json, one JSON object per line.\n"
     "\n"
     "Examples:\n"
     "  opsctl watch\n"
     "  opsctl watch --kind node.offline --kind agent.state\n"
     "  opsctl watch -o json --node web-1 | jq -r .kind\n"},
    {"enroll-token",
     "Usage: opsctl enroll-token create NAME [--ttl DURATION] [--uses N]\n"
     "       opsctl enroll-token list\n"
     "       opsctl enroll-token revoke NAME\n"
     "\n"
     "Enrollment tokens let new nodes register when the manager runs node_auth.mode token\n"
     "(admin role). create prints the token once -- the manager keeps only its SHA-256 -- for\n"
     "daemon.yaml's manager.enrollment_token (or a file named by manager.enrollment_token_file).\n"
     "A node that registers with it gets a secret of its own and no longer needs the token.\n"
     "  --ttl DURATION  how long the token can be used (default 24h; at most 365d)\n"
     "  --uses N        how many registrations it allows (default 1)\n"
     "\n"
     "Examples:\n"
     "  opsctl enroll-token create rack-7 --ttl 2h --uses 40\n"
     "  opsctl enroll-token list\n"
     "  opsctl enroll-token revoke rack-7\n"},
    {"delete-node",
     "Usage: opsctl delete-node NODE [--yes]\n"
     "\n"
     "Makes the manager forget a node: its record, agents and metrics (needs an admin token).\n"
     "A daemon still running there registers the node again. Asks for confirmation when\n"
     "stdin is a terminal; otherwise --yes is required.\n"
     "  --yes  do not ask\n"
     "\n"
     "Examples:\n"
     "  opsctl delete-node old-web-7\n"
     "  opsctl delete-node old-web-7 --yes\n"},
    {"audit",
     "Usage: opsctl audit [--actor NAME] [--target NODE[/AGENT]] [--since DURATION] [--limit N]\n"
     "\n"
     "The manager's audit trail, newest first: every call that changes something (agent\n"
     "operations, node deletions), refused and failed attempts included, with who made it\n"
     "(the token's name; \"(no token)\" when it had none or an unknown one), the result and\n"
     "where it came from. Needs an admin token.\n"
     "  --actor NAME      only this token name's records\n"
     "  --target T        only targets starting with T: a node id, or NODE/AGENT\n"
     "  --since DURATION  only records from this far back (e.g. 1h, 7d)\n"
     "  --limit N         at most N records (1-1000; default 100)\n"
     "\n"
     "Examples:\n"
     "  opsctl audit\n"
     "  opsctl audit --target web-1 --since 24h\n"
     "  opsctl audit --actor ci-bot --limit 10 -o json | jq -r '.records[].result'\n"},
    {"publish-config",
     "Usage: opsctl publish-config (NODE... | --label KEY=VALUE... | --all) --agent AGENT --file PATH\n"
     "\n"
     "Publishes a config_change event to each target node (operator role). The node's daemon\n"
     "writes PATH's content to the agent's config_file (keeping the previous one as .prev),\n"
     "restarts the agent, and rolls back to the previous config when the agent does not reach\n"
     "running. Daemons behind NAT get it on their update stream; offline ones when they\n"
     "reconnect. Prints the event id per node; see the outcome with opsctl events.\n"
     "  NODE...            these nodes\n"
     "  --label KEY=VALUE  every node carrying the label (repeat: all must match)\n"
     "  --all              every registered node\n"
     "  --agent AGENT      the agent whose config this is\n"
     "  --file PATH        the whole new config file\n"
     "\n"
     "Examples:\n"
     "  opsctl publish-config web-1 --agent nginx --file nginx.conf\n"
     "  opsctl publish-config --label env=prod --agent nginx --file nginx.conf\n"
     "  opsctl events web-1\n"},
    {"publish-update",
     "Usage: opsctl publish-update (NODE... | --label KEY=VALUE... | --all) --component agent|daemon\n"
     "         [--agent AGENT] --version V (--url URL | --package FILE) --sha256 HEX\n"
     "         --signature-file FILE\n"
     "\n"
     "Publishes a version_update event (operator role). Each daemon fetches the package,\n"
     "checks its SHA-256 and its Ed25519 signature against the public key in its daemon.yaml,\n"
     "and only then installs it: an agent's binary is replaced (older versions kept) and the\n"
     "agent restarted, rolled back if it does not keep running; the daemon replaces its own\n"
     "binary and re-executes itself, the agents staying up. A bad hash or signature changes\n"
     "nothing and is reported as refused.\n"
     "  --component C         agent or daemon\n"
     "  --agent AGENT         the agent to update (component agent)\n"
     "  --version V           the new version\n"
     "  --url URL             where daemons download it (http://, https://, file://)\n"
     "  --package FILE        send the package inline instead (at most 8 MiB)\n"
     "  --sha256 HEX          the package's SHA-256 (sha256sum FILE)\n"
     "  --signature-file FILE the raw 64-byte Ed25519 signature of the package\n"
     "                        (openssl pkeyutl -sign -rawin -inkey key.pem -in FILE -out FILE.sig)\n"
     "\n"
     "Examples:\n"
     "  opsctl publish-update web-1 --component agent --agent nginx --version 1.25.3 \\\n"
     "      --package nginx --sha256 $(sha256sum nginx | cut -d' ' -f1) --signature-file nginx.sig\n"
     "  opsctl publish-update --all --component daemon --version 1.4.0 \\\n"
     "      --url https://repo.example/ops-daemon-1.4.0 --sha256 3a7b... --signature-file d.sig\n"},
    {"events",
     "Usage: opsctl events [NODE] [--pending] [--limit N]\n"
     "\n"
     "Lists pushed events (config changes, updates, commands sent through a node's stream),\n"
     "newest first, with the outcome the daemon reported: applied, rolled_back, refused,\n"
     "failed, or pending while no result came back.\n"
     "  NODE       only this node's events\n"
     "  --pending  only events without a result yet\n"
     "  --limit N  at most N events (default 50, at most 1000)\n"
     "\n"
     "Examples:\n"
     "  opsctl events\n"
     "  opsctl events web-1 --pending\n"
     "  opsctl -o json events | jq '.events[] | select(.outcome == \"refused\")'\n"},
    {"event",
     "Usage: opsctl event ID\n"
     "\n"
     "Shows one pushed event: what it carries, when it was created, and the daemon's result.\n"
     "\n"
     "Examples:\n"
     "  opsctl event 42\n"
     "  opsctl -o json event 42\n"},
};

const char *help_text(const char *cmd)
{
    if (!cmd) cmd = "";
    if (!strcmp(cmd, "agent stop") || !strcmp(cmd, "agent restart")) cmd = "agent start";
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
        if (!strcmp(texts[i].cmd, cmd)) return texts[i].text;
    return NULL;
}
