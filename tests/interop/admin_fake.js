#!/usr/bin/env node
'use strict';
// An independent ops.admin.v1.AdminService (grpc-js), for testing opsctl without our C server:
// it shares no code with ours. It keeps a small fleet in memory and really applies what it is
// asked (OperateAgent changes an agent's status and pid, DeleteNode removes the node) so tests
// can observe the effect, and it streams the resulting events to WatchEvents callers.
//
//   admin_fake.js [--port N] [--page-max N] [--token ROLE=TOKEN]... [--tls CERT KEY]
//
// Binds 127.0.0.1 (port 0 = any), prints `LISTENING <port>` when ready, serves until
// SIGTERM/SIGINT. Default tokens: viewer=tok-viewer, operator=tok-operator, admin=tok-admin.
// ListNodes pages hold at most --page-max nodes (default 2) so paging is exercised.
//
// Fleet (times relative to start):
//   node-1 web-1        online  env=prod,role=web   agents nginx (running), worker (running),
//                                                    cron (stopped), broken (operations fail),
//                                                    slow (operations answer after 2 s)
//   node-2 db-1         offline env=prod,role=db    agents postgres; live calls -> UNAVAILABLE
//   node-3 bäckerei-日本 online  env=staging         agents none
//   node-4 cache-1      online  env=staging,role=cache
// Metrics: cpu {usage_percent, user}, memory {used, used_percent}, one raw point a minute,
// values a deterministic function of time.
process.noDeprecation = true;

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_DIR = path.resolve(__dirname, '..', '..', 'proto');
const S = grpc.status;
const ROLE_RANK = { viewer: 1, operator: 2, admin: 3 };
const MAX_RANGE = 30 * 86400;

function die(msg) {
  process.stderr.write(`admin_fake.js: ${msg}\n`);
  process.exit(2);
}

const opts = { port: 0, pageMax: 2, tokens: {}, tls: null };
{
  const a = process.argv.slice(2);
  for (let i = 0; i < a.length; i++) {
    if (a[i] === '--port') opts.port = Number(a[++i]);
    else if (a[i] === '--page-max') opts.pageMax = Number(a[++i]);
    else if (a[i] === '--tls') opts.tls = [a[++i], a[++i]];
    else if (a[i] === '--token') {
      const [role, tok] = String(a[++i]).split('=');
      if (!ROLE_RANK[role] || !tok) die(`--token takes ROLE=TOKEN, got ${a[i]}`);
      opts.tokens[tok] = role;
    } else die(`unknown argument: ${a[i]}`);
  }
  if (!Object.keys(opts.tokens).length)
    opts.tokens = { 'tok-viewer': 'viewer', 'tok-operator': 'operator', 'tok-admin': 'admin' };
}

const now = () => Math.floor(Date.now() / 1000);
const T0 = now();
let nextPid = 5000;
let eventId = 0;

function agent(id, type, status, pid) {
  return { id, type, version: '1.0.0', status, pid, start_time: pid ? T0 - 600 : 0, restart_count: 0,
           last_heartbeat: T0 - 3 };
}

const fleet = new Map();
function addNode(id, hostname, ip, status, labels, agents, lastSeenAgo) {
  fleet.set(id, {
    node: { node_id: id, hostname, ip, os: 'linux', arch: 'amd64', labels, daemon_version: '0.1.0',
            agent_version: '1.0.0', daemon_address: `${ip}:9091`, status, registered_at: T0 - 86400,
            last_seen: T0 - lastSeenAgo, updated_at: T0 - lastSeenAgo },
    agents,
  });
}
addNode('node-1', 'web-1', '10.0.0.1', 'online', { env: 'prod', role: 'web' },
        [agent('nginx', 'web', 'running', 1200), agent('worker', 'job', 'running', 1300),
         agent('cron', 'job', 'stopped', 0), agent('broken', 'job', 'stopped', 0),
         agent('slow', 'job', 'running', 1400)], 5);
addNode('node-2', 'db-1', '10.0.0.2', 'offline', { env: 'prod', role: 'db' },
        [agent('postgres', 'db', 'running', 2200)], 3600);
addNode('node-3', 'bäckerei-日本', '10.0.0.3', 'online', { env: 'staging' }, [], 2);
addNode('node-4', 'cache-1', '10.0.0.4', 'online', { env: 'staging', role: 'cache' }, [], 1);

// Metric values as functions of time: the same answer for the same question.
const METRICS = {
  cpu: { usage_percent: (t) => 50 + 40 * Math.sin(t / 900), user: (t) => 30 + 10 * Math.cos(t / 1200) },
  memory: { used: (t) => 4e9 + 1e9 * Math.sin(t / 3000), used_percent: (t) => 50 + 12 * Math.sin(t / 3000) },
};

const audit = [];
const watchers = new Set();

function emit(kind, node_id, agent_id, status, previous_status, detail) {
  const ev = { id: ++eventId, timestamp: now(), kind, node_id, agent_id: agent_id || '', status: status || '',
               previous_status: previous_status || '', detail: detail || '' };
  for (const w of watchers) {
    const kindOk = !w.kinds.length || w.kinds.some((k) => k === '' || kind.startsWith(k));
    if (kindOk && (!w.node || w.node === node_id)) w.call.write(ev);
  }
}

function fail(cb, code, details) {
  cb({ code, details });
}

// Checks the bearer token and role. Returns the role, or undefined after failing the call.
function authorize(call, need, method, cb) {
  const md = call.metadata.get('authorization');
  const m = md.length ? /^Bearer (.+)$/.exec(String(md[0])) : null;
  const role = m ? opts.tokens[m[1]] : undefined;
  if (!role) {
    fail(cb, S.UNAUTHENTICATED, md.length ? 'unknown token' : 'missing authorization metadata');
    return undefined;
  }
  if (ROLE_RANK[role] < ROLE_RANK[need]) {
    fail(cb, S.PERMISSION_DENIED, `role ${role} may not call ${method} (needs ${need})`);
    return undefined;
  }
  return role;
}

function node(id, cb) {
  const n = fleet.get(id);
  if (!n) fail(cb, S.NOT_FOUND, `node ${id} not found`);
  return n;
}

function range(req, cb) {
  const to = Number(req.to) || now();
  const from = Number(req.from) || to - 3600;
  if (to - from > MAX_RANGE) {
    fail(cb, S.INVALID_ARGUMENT, 'to - from: at most 30 days');
    return undefined;
  }
  if (to <= from) {
    fail(cb, S.INVALID_ARGUMENT, 'from must be before to');
    return undefined;
  }
  return [from, to];
}

function rawTimes(from, to) {
  const out = [];
  for (let t = Math.ceil(from / 60) * 60; t < to && out.length < 50000; t += 60) out.push(t);
  return out;
}

function series(type, keys, from, to, buckets) {
  const fns = METRICS[type] || {};
  const out = [];
  for (const key of Object.keys(fns).sort()) {
    if (keys.length && !keys.includes(key)) continue;
    const f = fns[key];
    const times = rawTimes(from, to);
    let points;
    if (!buckets || buckets >= times.length) {
      points = times.map((t) => ({ timestamp: t, value: f(t), min: f(t), max: f(t), count: 1 }));
    } else {
      points = [];
      for (let b = 0; b < buckets; b++) {
        const bs = from + Math.floor(((to - from) * b) / buckets);
        const be = from + Math.floor(((to - from) * (b + 1)) / buckets);
        const vs = times.filter((t) => t >= bs && t < be).map(f);
        if (!vs.length) continue;
        points.push({ timestamp: bs, value: vs.reduce((a, v) => a + v, 0) / vs.length, min: Math.min(...vs),
                      max: Math.max(...vs), count: vs.length });
      }
    }
    out.push({ key, points });
  }
  return out;
}

function agentRecord(a) {
  return { agent_id: a.id, type: a.type, version: a.version, status: a.status, pid: a.pid,
           last_heartbeat: a.last_heartbeat, updated_at: a.last_heartbeat };
}

function daemonReachable(n, cb) {
  if (n.node.status !== 'online') {
    fail(cb, S.UNAVAILABLE, `daemon of node ${n.node.node_id} is unreachable: node is offline`);
    return false;
  }
  return true;
}

const handlers = {
  ListNodes(call, cb) {
    if (!authorize(call, 'viewer', 'ListNodes', cb)) return;
    const r = call.request;
    const want = r.labels || {};
    const all = [...fleet.values()].map((n) => n.node)
      .filter((n) => !r.status || n.status === r.status)
      .filter((n) => Object.entries(want).every(([k, v]) => n.labels[k] === v))
      .sort((a, b) => (a.node_id < b.node_id ? -1 : 1));
    const size = Math.min(r.page_size || 100, 1000, opts.pageMax);
    let start = 0;
    if (r.page_token) {
      start = all.findIndex((n) => n.node_id > r.page_token);
      if (start < 0) start = all.length;
    }
    const page = all.slice(start, start + size);
    const more = start + size < all.length;
    cb(null, { nodes: page, next_page_token: more ? page[page.length - 1].node_id : '' });
  },
  GetNode(call, cb) {
    if (!authorize(call, 'viewer', 'GetNode', cb)) return;
    const n = node(call.request.node_id, cb);
    if (!n) return;
    const t = Math.floor(now() / 60) * 60;
    const latest = Object.entries(METRICS).map(([type, fns]) => ({
      type, timestamp: t, values: Object.fromEntries(Object.entries(fns).map(([k, f]) => [k, f(t)])),
    }));
    cb(null, { node: n.node, agents: n.agents.map(agentRecord), latest_metrics: latest });
  },
  DeleteNode(call, cb) {
    const role = authorize(call, 'admin', 'DeleteNode', cb);
    if (!role) return;
    const id = call.request.node_id;
    if (!node(id, cb)) return;
    fleet.delete(id);
    audit.push({ id: audit.length + 1, timestamp: now(), actor: role, role, method: 'DeleteNode', target: id,
                 result: 'OK', detail: '', peer: call.getPeer() });
    emit('node.deleted', id, '', 'deleted', '', 'deleted by ' + role);
    cb(null, { deleted: true });
  },
  ListAgents(call, cb) {
    if (!authorize(call, 'viewer', 'ListAgents', cb)) return;
    const n = node(call.request.node_id, cb);
    if (!n || !daemonReachable(n, cb)) return;
    cb(null, { node_id: n.node.node_id, agents: n.agents });
  },
  OperateAgent(call, cb) {
    const role = authorize(call, 'operator', 'OperateAgent', cb);
    if (!role) return;
    const { node_id, agent_id, operation } = call.request;
    if (!['start', 'stop', 'restart'].includes(operation))
      return fail(cb, S.INVALID_ARGUMENT, `invalid operation: ${operation}`);
    const n = node(node_id, cb);
    if (!n || !daemonReachable(n, cb)) return;
    const a = n.agents.find((x) => x.id === agent_id);
    if (!a) return fail(cb, S.NOT_FOUND, `agent not found: ${agent_id}`);
    const rec = { id: audit.length + 1, timestamp: now(), actor: role, role, method: 'OperateAgent',
                  target: `${node_id}/${agent_id}`, result: 'OK', detail: operation, peer: call.getPeer() };
    audit.push(rec);
    if (a.id === 'broken') {
      rec.detail = `${operation}: exec ./broken: permission denied`;
      return cb(null, { success: false, error_message: 'exec ./broken: permission denied', via: 'pool' });
    }
    if (a.id === 'slow') {
      setTimeout(() => cb(null, { success: true, error_message: '', via: 'pool' }), 2000);
      return;
    }
    const prev = a.status;
    if (operation === 'stop') {
      a.status = 'stopped';
      a.pid = 0;
    } else {
      if (operation === 'restart') a.restart_count++;
      a.status = 'running';
      a.pid = nextPid++;
      a.start_time = now();
    }
    emit('agent.state', node_id, agent_id, a.status, prev, `${operation} by ${role}`);
    cb(null, { success: true, error_message: '', via: 'pool' });
  },
  GetAgentMetrics(call, cb) {
    if (!authorize(call, 'viewer', 'GetAgentMetrics', cb)) return;
    const { node_id, agent_id } = call.request;
    const n = node(node_id, cb);
    if (!n || !daemonReachable(n, cb)) return;
    if (!n.agents.find((x) => x.id === agent_id)) return fail(cb, S.NOT_FOUND, `agent not found: ${agent_id}`);
    const dur = Number(call.request.duration_seconds) || 300;
    const count = Math.max(1, Math.min(20, Math.floor(dur / 15)));
    const t = now();
    const pts = [];
    for (let i = 0; i < count; i++)
      pts.push({ timestamp: t - (count - 1 - i) * 15, cpu: 5 + i, memory_rss: (100 + i) * 1048576,
                 memory_vms: 512 * 1048576, disk_read_bytes: i * 4096, disk_write_bytes: i * 8192,
                 open_files: 10 + (i % 3) });
    cb(null, { node_id, agent_id, data_points: pts });
  },
  QueryMetrics(call, cb) {
    if (!authorize(call, 'viewer', 'QueryMetrics', cb)) return;
    const r = call.request;
    const n = node(r.node_id, cb);
    if (!n) return;
    if (!r.type) return fail(cb, S.INVALID_ARGUMENT, 'type is required');
    const rg = range(r, cb);
    if (!rg) return;
    cb(null, { node_id: r.node_id, type: r.type, from: rg[0], to: rg[1],
               series: series(r.type, r.keys || [], rg[0], rg[1], r.buckets) });
  },
  MetricsSummary(call, cb) {
    if (!authorize(call, 'viewer', 'MetricsSummary', cb)) return;
    const r = call.request;
    const n = node(r.node_id, cb);
    if (!n) return;
    const rg = range(r, cb);
    if (!rg) return;
    const keys = [];
    for (const type of (r.type ? [r.type] : Object.keys(METRICS).sort())) {
      for (const s of series(type, [], rg[0], rg[1], 0)) {
        const vs = s.points.map((p) => p.value);
        if (!vs.length) continue;
        const last = s.points[s.points.length - 1];
        keys.push({ type, key: s.key, min: Math.min(...vs), avg: vs.reduce((a, v) => a + v, 0) / vs.length,
                    max: Math.max(...vs), latest: last.value, latest_timestamp: last.timestamp, count: vs.length });
      }
    }
    cb(null, { node_id: r.node_id, from: rg[0], to: rg[1], keys });
  },
  GetDaemonConfig(call, cb) {
    if (!authorize(call, 'viewer', 'GetDaemonConfig', cb)) return;
    const r = call.request;
    const n = node(r.node_id, cb);
    if (!n || !daemonReachable(n, cb)) return;
    let text;
    if (r.config_type === 'agent') {
      const a = n.agents.find((x) => x.id === r.agent_id);
      if (!a) return fail(cb, S.NOT_FOUND, `agent not found: ${r.agent_id}`);
      text = `id: ${a.id}\ntype: ${a.type}\ncommand: /usr/bin/${a.id}\nrestart: on-failure\n`;
    } else if (!r.config_type || r.config_type === 'daemon') {
      text = `node_id: ${n.node.node_id}\nmanager:\n  address: 127.0.0.1:9090\nagents:\n` +
             n.agents.map((a) => `  - id: ${a.id}\n`).join('');
    } else {
      return fail(cb, S.INVALID_ARGUMENT, `config_type: unknown type ${r.config_type}`);
    }
    cb(null, { node_id: n.node.node_id, config_data: Buffer.from(text) });
  },
  WatchEvents(call) {
    const md = call.metadata.get('authorization');
    const m = md.length ? /^Bearer (.+)$/.exec(String(md[0])) : null;
    if (!m || !opts.tokens[m[1]]) {
      call.emit('error', { code: S.UNAUTHENTICATED, details: 'unknown token' });
      return;
    }
    const w = { call, kinds: (call.request.kinds || []).filter((k) => k !== ''), node: call.request.node_id };
    watchers.add(w);
    const done = () => watchers.delete(w);
    call.on('cancelled', done);
    call.on('close', done);
    call.on('error', done);
    process.stderr.write(`admin_fake.js: watcher added (${watchers.size})\n`);
  },
  ListAudit(call, cb) {
    if (!authorize(call, 'admin', 'ListAudit', cb)) return;
    const limit = call.request.limit || 100;
    cb(null, { records: audit.slice().reverse().slice(0, limit) });
  },
};

const def = protoLoader.loadSync(['admin.proto', 'health.proto'], {
  keepCase: true, longs: Number, defaults: true, includeDirs: [PROTO_DIR],
});
const pkg = grpc.loadPackageDefinition(def);
const server = new grpc.Server();
server.addService(pkg.ops.admin.v1.AdminService.service, handlers);
server.addService(pkg.grpc.health.v1.Health.service, {
  Check(call, cb) { cb(null, { status: 'SERVING' }); },
  Watch(call) { call.write({ status: 'SERVING' }); },
});
const creds = opts.tls
  ? grpc.ServerCredentials.createSsl(null, [{ cert_chain: require('fs').readFileSync(opts.tls[0]),
                                              private_key: require('fs').readFileSync(opts.tls[1]) }], false)
  : grpc.ServerCredentials.createInsecure();
server.bindAsync(`127.0.0.1:${opts.port}`, creds, (err, port) => {
  if (err) die(err.message);
  process.stdout.write(`LISTENING ${port}\n`);
});
const stop = () => { server.forceShutdown(); process.exit(0); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
