#!/usr/bin/env node
'use strict';
// Independent gRPC peer built on @grpc/grpc-js, used to test the ops C gRPC layer against an
// implementation that shares no code with it. Two modes:
//
//   peer.js server [--host H] [--port N] [--tls CERT KEY] [--mtls CA] [--max-message BYTES]
//   peer.js client --target HOST:PORT [--ca CA] [--cert CERT --key KEY] [--servername NAME]
//                  [--check NAME[,NAME...]]... [--expect-identity NAME] [--list]
//
// See README.md beside this file for what each check expects.

// grpc-js sets the TLS ServerName to an IP target, which Node flags as deprecated (DEP0123) on
// every TLS run; the noise would bury real diagnostics on stderr.
process.noDeprecation = true;

const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const REPO = path.resolve(__dirname, '..', '..');
const PROTO_FILES = [
  'tests/proto/testsvc.proto',
  'proto/health.proto',
  'proto/daemon.proto',
  'proto/manager.proto',
];
// The contract's limit (10 MiB both ways); our server is meant to enforce the same.
const CONTRACT_MAX_MESSAGE = 10 * 1024 * 1024;
const CLIENT_MAX_MESSAGE = 64 * 1024 * 1024;
const S = grpc.status;
const STATUS_NAME = Object.fromEntries(Object.entries(S).map(([k, v]) => [v, k]));

function loadProtos() {
  const def = protoLoader.loadSync(PROTO_FILES, {
    keepCase: true,
    longs: String,
    defaults: true,
    includeDirs: [REPO],
  });
  return grpc.loadPackageDefinition(def);
}

function die(msg, code = 2) {
  process.stderr.write(`peer.js: ${msg}\n`);
  process.exit(code);
}

// Minimal parser: `spec` maps each flag to its number of values; flags listed in `repeat`
// accumulate into arrays.
function parseArgs(argv, spec, repeat = []) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    if (!(flag in spec)) die(`unknown argument: ${flag}`);
    const n = spec[flag];
    if (i + n > argv.length - 1) die(`${flag} needs ${n} value(s)`);
    const vals = argv.slice(i + 1, i + 1 + n);
    i += n;
    const key = flag.replace(/^--/, '');
    const val = n === 0 ? true : n === 1 ? vals[0] : vals;
    if (repeat.includes(flag)) (out[key] = out[key] || []).push(val);
    else out[key] = val;
  }
  return out;
}

function readFile(file) {
  try {
    return fs.readFileSync(file);
  } catch (e) {
    die(`cannot read ${file}: ${e.message}`);
  }
  return null;
}

function statusError(code, details) {
  const err = new Error(details);
  err.code = code;
  err.details = details;
  return err;
}

// ---------------------------------------------------------------------------------- server

const AGENTS = [
  { id: 'a1', type: 'custom', version: '1.0', status: 'running', pid: 100,
    start_time: '1700000000', restart_count: 0, last_heartbeat: '0' },
  { id: 'a2', type: 'custom', version: '1.0', status: 'stopped', pid: 0,
    start_time: '0', restart_count: 0, last_heartbeat: '0' },
];
const OPERATIONS = ['start', 'stop', 'restart'];
const SLOW_AGENT = 'slow';
const SLOW_AGENT_MS = 5000;
const HEALTHY_SERVICES = new Set(['', 'opstest.Test', 'grpc.health.v1.Health', 'proto.DaemonService']);

// Calls a unary callback after `ms`, unless the call is cancelled first (deadline or client
// cancel), so a slow answer never outlives its caller.
function later(call, ms, fn) {
  if (ms <= 0) return fn();
  const t = setTimeout(() => { if (!call.cancelled) fn(); }, ms);
  call.on('cancelled', () => clearTimeout(t));
  return undefined;
}

// The client certificate's CN under mTLS, else "".
function peerIdentity(call) {
  const ac = typeof call.getAuthContext === 'function' ? call.getAuthContext() : null;
  const cert = ac && ac.sslPeerCertificate;
  return cert && cert.subject && cert.subject.CN ? String(cert.subject.CN) : '';
}

const testService = {
  Echo(call, cb) {
    const req = call.request;
    later(call, req.sleep_ms, () => {
      if (req.code !== 0) return cb(statusError(req.code, req.message));
      const trace = call.metadata.get('x-trace-id');
      return cb(null, {
        text: req.text,
        trace_id: trace.length ? String(trace[0]) : '',
        peer_identity: peerIdentity(call),
        payload: req.payload,
      });
    });
  },

  Count(call) {
    const { n, sleep_ms: sleepMs } = call.request;
    let i = 0;
    let done = false;
    let timer = null;
    call.on('cancelled', () => { done = true; clearTimeout(timer); });
    const pump = () => {
      while (!done && i < n) {
        const more = call.write({ i });
        i++;
        if (i >= n) break;
        if (sleepMs > 0) { timer = setTimeout(pump, sleepMs); return; }
        if (!more) { call.once('drain', pump); return; }
      }
      if (!done) { done = true; call.end(); }
    };
    pump();
  },
};

const healthService = {
  Check(call, cb) {
    if (HEALTHY_SERVICES.has(call.request.service)) return cb(null, { status: 'SERVING' });
    return cb(statusError(S.NOT_FOUND, `unknown service: ${call.request.service}`));
  },
  Watch(call) {
    const known = HEALTHY_SERVICES.has(call.request.service);
    call.write({ status: known ? 'SERVING' : 'SERVICE_UNKNOWN' });
    // Stays open (status never changes) until the client goes away.
  },
};

// Deterministic stand-in for an ops-daemon, for manager -> daemon pool interop.
// Methods not listed here are answered UNIMPLEMENTED by grpc-js itself.
const daemonService = {
  ListAgents(call, cb) {
    cb(null, { agents: AGENTS });
  },

  OperateAgent(call, cb) {
    const { agent_id: id, operation } = call.request;
    if (!id) return cb(statusError(S.INVALID_ARGUMENT, 'agent_id is required'));
    if (!OPERATIONS.includes(operation)) {
      return cb(statusError(S.INVALID_ARGUMENT, `invalid operation: ${operation}`));
    }
    if (id === SLOW_AGENT) {
      return later(call, SLOW_AGENT_MS, () => cb(null, { success: true, error_message: '' }));
    }
    if (!AGENTS.some((a) => a.id === id)) {
      return cb(statusError(S.NOT_FOUND, `agent not found: ${id}`));
    }
    return cb(null, { success: true, error_message: '' });
  },

  GetAgentMetrics(call, cb) {
    const id = call.request.agent_id;
    if (!id) return cb(statusError(S.INVALID_ARGUMENT, 'agent_id is required'));
    if (!AGENTS.some((a) => a.id === id)) {
      return cb(statusError(S.NOT_FOUND, `agent not found: ${id}`));
    }
    const points = [0, 1, 2].map((k) => ({
      timestamp: String(1700000000 + 10 * k),
      cpu: 1.5 + k,
      memory_rss: String(1048576 * (k + 1)),
      memory_vms: String(4194304 * (k + 1)),
      disk_read_bytes: String(4096 * k),
      disk_write_bytes: String(8192 * k),
      open_files: 3 + k,
    }));
    return cb(null, { agent_id: id, data_points: points });
  },
};

function runServer(argv) {
  const o = parseArgs(argv, {
    '--host': 1, '--port': 1, '--tls': 2, '--mtls': 1, '--max-message': 1,
  });
  const host = o.host || '127.0.0.1';
  const port = o.port === undefined ? 0 : Number(o.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) die(`bad --port ${o.port}`);
  const maxMessage = o['max-message'] === undefined ? CONTRACT_MAX_MESSAGE : Number(o['max-message']);
  if (o.mtls && !o.tls) die('--mtls needs --tls CERT KEY');

  let creds;
  if (o.tls) {
    const [cert, key] = o.tls;
    const ca = o.mtls ? readFile(o.mtls) : null;
    creds = grpc.ServerCredentials.createSsl(
      ca, [{ cert_chain: readFile(cert), private_key: readFile(key) }], Boolean(o.mtls));
  } else {
    creds = grpc.ServerCredentials.createInsecure();
  }

  const pkgs = loadProtos();
  const server = new grpc.Server({
    'grpc.max_receive_message_length': maxMessage,
    'grpc.max_send_message_length': maxMessage,
  });
  server.addService(pkgs.opstest.Test.service, testService);
  server.addService(pkgs.grpc.health.v1.Health.service, healthService);
  server.addService(pkgs.proto.DaemonService.service, daemonService);

  let stopping = false;
  const stop = (why) => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`peer.js server: stopping (${why})\n`);
    const force = setTimeout(() => { server.forceShutdown(); process.exit(0); }, 1000);
    server.tryShutdown(() => { clearTimeout(force); process.exit(0); });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  // Only a pipe/socket stdin means "a parent holds me": EOF there = parent gone. A /dev/null
  // stdin (bash background jobs, CI) would otherwise stop the server at once.
  let st = null;
  try { st = fs.fstatSync(0); } catch (e) { st = null; }
  if (st && (st.isFIFO() || st.isSocket())) {
    process.stdin.on('end', () => stop('stdin closed'));
    process.stdin.on('error', () => stop('stdin error'));
    process.stdin.resume();
  }

  server.bindAsync(`${host}:${port}`, creds, (err, bound) => {
    if (err) die(`cannot bind ${host}:${port}: ${err.message}`, 1);
    process.stdout.write(`LISTENING ${bound}\n`);
  });
}

// ---------------------------------------------------------------------------------- client

const DEFAULT_DEADLINE_MS = 10000;

function deadlineIn(ms) {
  return new Date(Date.now() + ms);
}

// Resolves (never rejects) with {err, res, ms} so checks can assert on failures too.
function callUnary(client, method, req, { metadata, deadlineMs = DEFAULT_DEADLINE_MS } = {}) {
  const started = Date.now();
  return new Promise((resolve) => {
    client[method](req, metadata || new grpc.Metadata(), { deadline: deadlineIn(deadlineMs) },
      (err, res) => resolve({ err, res, ms: Date.now() - started }));
  });
}

function callRaw(client, methodPath, serialize, deserialize, { deadlineMs = DEFAULT_DEADLINE_MS } = {}) {
  return new Promise((resolve) => {
    client.makeUnaryRequest(methodPath, serialize, deserialize, {}, new grpc.Metadata(),
      { deadline: deadlineIn(deadlineMs) }, (err, res) => resolve({ err, res }));
  });
}

function describe(err) {
  if (!err) return 'OK';
  const name = STATUS_NAME[err.code] || String(err.code);
  return `${name} "${err.details}"`;
}

function fail(reason) {
  throw new Error(reason);
}

function expectOk(r, what) {
  if (r.err) fail(`${what}: expected OK, got ${describe(r.err)}`);
}

function expectStatus(r, code, details) {
  if (!r.err) fail(`expected ${STATUS_NAME[code]}, got OK`);
  if (r.err.code !== code) fail(`expected ${STATUS_NAME[code]}, got ${describe(r.err)}`);
  if (details !== undefined && r.err.details !== details) {
    fail(`expected details "${details}", got "${r.err.details}"`);
  }
}

function expectEq(what, got, want) {
  if (got !== want) fail(`${what}: expected ${JSON.stringify(want)}, got ${JSON.stringify(got)}`);
}

// A payload whose every byte depends on its position, so truncation or reordering shows.
function pattern(len) {
  const b = Buffer.allocUnsafe(len);
  for (let i = 0; i < len; i++) b[i] = (i * 7 + (i >> 8)) & 0xff;
  return b;
}

function countStream(client, req, { deadlineMs = 30000, cancelAfter = 0 } = {}) {
  return new Promise((resolve) => {
    const got = [];
    let bad = null;
    const call = client.Count(req, new grpc.Metadata(), { deadline: deadlineIn(deadlineMs) });
    call.on('data', (m) => {
      if (bad === null && m.i !== got.length) bad = `reply #${got.length} has i=${m.i}`;
      got.push(m.i);
      if (cancelAfter > 0 && got.length === cancelAfter) call.cancel();
    });
    call.on('error', (err) => resolve({ err, count: got.length, bad }));
    call.on('status', (st) => {
      if (st.code === S.OK) resolve({ err: null, count: got.length, bad });
    });
  });
}

// Each check: group it belongs to ("test" checks run by default), a one-line description,
// and run(ctx) which throws to fail.
const CHECKS = {
  unary: {
    group: 'test',
    desc: 'Echo "hello" with x-trace-id; text and trace_id come back',
    async run({ test }) {
      const md = new grpc.Metadata();
      md.set('x-trace-id', 'interop-trace-1');
      const r = await callUnary(test, 'Echo', { text: 'hello' }, { metadata: md });
      expectOk(r, 'Echo');
      expectEq('text', r.res.text, 'hello');
      expectEq('trace_id', r.res.trace_id, 'interop-trace-1');
    },
  },
  stream: {
    group: 'test',
    desc: 'Count n=10000 streams 0..9999 in order',
    async run({ test }) {
      const r = await countStream(test, { n: 10000 });
      if (r.err) fail(`after ${r.count} replies: ${describe(r.err)}`);
      if (r.bad) fail(r.bad);
      expectEq('reply count', r.count, 10000);
    },
  },
  error: {
    group: 'test',
    desc: 'Echo code=5 -> NOT_FOUND "no such thing"',
    async run({ test }) {
      const r = await callUnary(test, 'Echo', { code: 5, message: 'no such thing' });
      expectStatus(r, S.NOT_FOUND, 'no such thing');
    },
  },
  deadline: {
    group: 'test',
    desc: 'Echo sleep_ms=2000 under a 200 ms deadline -> DEADLINE_EXCEEDED',
    async run({ test }) {
      const r = await callUnary(test, 'Echo', { text: 'late', sleep_ms: 2000 }, { deadlineMs: 200 });
      expectStatus(r, S.DEADLINE_EXCEEDED);
      if (r.ms > 1500) fail(`took ${r.ms} ms, the deadline was 200 ms`);
    },
  },
  health: {
    group: 'test',
    desc: 'grpc.health.v1.Health/Check service "" -> SERVING',
    async run({ health }) {
      const r = await callUnary(health, 'Check', { service: '' });
      expectOk(r, 'Check');
      if (r.res.status !== 1 && r.res.status !== 'SERVING') {
        fail(`status: expected SERVING, got ${r.res.status}`);
      }
    },
  },
  large: {
    group: 'test',
    desc: 'Echo a 1 MiB payload; it comes back byte for byte',
    async run({ test }) {
      const payload = pattern(1024 * 1024);
      const r = await callUnary(test, 'Echo', { text: 'large', payload });
      expectOk(r, 'Echo');
      const back = Buffer.from(r.res.payload);
      expectEq('payload length', back.length, payload.length);
      if (!back.equals(payload)) fail('payload differs');
    },
  },
  'bad-method': {
    group: 'test',
    desc: '/opstest.Test/Nope -> UNIMPLEMENTED',
    async run({ raw }) {
      const r = await callRaw(raw, '/opstest.Test/Nope', () => Buffer.alloc(0), (b) => b);
      expectStatus(r, S.UNIMPLEMENTED);
    },
  },
  'bad-payload': {
    group: 'test',
    ours: true,
    desc: 'Echo with bytes ff ff ff (not a protobuf) -> INVALID_ARGUMENT',
    async run({ raw }) {
      const r = await callRaw(raw, '/opstest.Test/Echo', () => Buffer.from([0xff, 0xff, 0xff]), (b) => b);
      expectStatus(r, S.INVALID_ARGUMENT);
    },
  },
  oversize: {
    group: 'test',
    desc: 'Echo with an 11 MiB payload (server limit 10 MiB) -> RESOURCE_EXHAUSTED',
    async run({ test }) {
      const r = await callUnary(test, 'Echo', { text: 'big', payload: Buffer.alloc(11 * 1024 * 1024, 0x5a) },
        { deadlineMs: 20000 });
      expectStatus(r, S.RESOURCE_EXHAUSTED);
    },
  },
  cancel: {
    group: 'test',
    desc: 'cancel Count n=1000000 after 100 replies -> CANCELLED; server still answers Echo',
    async run({ test }) {
      const r = await countStream(test, { n: 1000000 }, { cancelAfter: 100 });
      if (!r.err) fail(`stream finished OK with ${r.count} replies; expected CANCELLED`);
      expectStatus(r, S.CANCELLED);
      const e = await callUnary(test, 'Echo', { text: 'after-cancel' });
      expectOk(e, 'Echo after cancel');
      expectEq('text', e.res.text, 'after-cancel');
    },
  },
  concurrent: {
    group: 'test',
    desc: '64 Echo calls in flight at once all answer correctly',
    async run({ test }) {
      const rs = await Promise.all(Array.from({ length: 64 }, (_, k) =>
        callUnary(test, 'Echo', { text: `c${k}`, sleep_ms: k % 4 === 0 ? 50 : 0 })));
      rs.forEach((r, k) => {
        expectOk(r, `Echo #${k}`);
        expectEq(`text #${k}`, r.res.text, `c${k}`);
      });
    },
  },
  identity: {
    group: 'tls',
    desc: 'Echo under mTLS: peer_identity equals --expect-identity (default node-1)',
    async run({ test, opts }) {
      const r = await callUnary(test, 'Echo', { text: 'who' });
      expectOk(r, 'Echo');
      expectEq('peer_identity', r.res.peer_identity, opts['expect-identity'] || 'node-1');
    },
  },
  rejected: {
    group: 'tls',
    desc: 'the TLS handshake is refused (wrong CA / missing or expired cert) -> UNAVAILABLE',
    async run({ test }) {
      const r = await callUnary(test, 'Echo', { text: 'should-not-arrive' }, { deadlineMs: 5000 });
      expectStatus(r, S.UNAVAILABLE);
    },
  },
  'daemon-list': {
    group: 'daemon',
    desc: 'DaemonService/ListAgents returns the fixture agents a1 (running), a2 (stopped)',
    async run({ daemon }) {
      const r = await callUnary(daemon, 'ListAgents', {});
      expectOk(r, 'ListAgents');
      const summary = r.res.agents.map((a) => `${a.id}:${a.status}:${a.pid}:${a.start_time}`).join(',');
      expectEq('agents', summary, 'a1:running:100:1700000000,a2:stopped:0:0');
    },
  },
  'daemon-operate': {
    group: 'daemon',
    desc: 'OperateAgent: a1/restart ok; empty id, bad op -> INVALID_ARGUMENT; zz -> NOT_FOUND',
    async run({ daemon }) {
      const ok = await callUnary(daemon, 'OperateAgent', { agent_id: 'a1', operation: 'restart' });
      expectOk(ok, 'OperateAgent a1 restart');
      expectEq('success', ok.res.success, true);
      expectStatus(await callUnary(daemon, 'OperateAgent', { agent_id: '', operation: 'start' }),
        S.INVALID_ARGUMENT, 'agent_id is required');
      expectStatus(await callUnary(daemon, 'OperateAgent', { agent_id: 'a1', operation: 'explode' }),
        S.INVALID_ARGUMENT);
      expectStatus(await callUnary(daemon, 'OperateAgent', { agent_id: 'zz', operation: 'stop' }),
        S.NOT_FOUND, 'agent not found: zz');
    },
  },
  'daemon-slow': {
    group: 'daemon',
    desc: 'OperateAgent on agent "slow" under a 300 ms deadline -> DEADLINE_EXCEEDED',
    async run({ daemon }) {
      const r = await callUnary(daemon, 'OperateAgent', { agent_id: 'slow', operation: 'stop' },
        { deadlineMs: 300 });
      expectStatus(r, S.DEADLINE_EXCEEDED);
    },
  },
  'daemon-metrics': {
    group: 'daemon',
    desc: 'GetAgentMetrics a1 -> 3 points; zz -> NOT_FOUND',
    async run({ daemon }) {
      const r = await callUnary(daemon, 'GetAgentMetrics', { agent_id: 'a1', duration_seconds: 60 });
      expectOk(r, 'GetAgentMetrics a1');
      expectEq('agent_id', r.res.agent_id, 'a1');
      expectEq('points', r.res.data_points.length, 3);
      expectStatus(await callUnary(daemon, 'GetAgentMetrics', { agent_id: 'zz' }),
        S.NOT_FOUND, 'agent not found: zz');
    },
  },
  'daemon-unimplemented': {
    group: 'daemon',
    desc: 'DaemonService/Register (not served by a daemon) -> UNIMPLEMENTED',
    async run({ daemon }) {
      expectStatus(await callUnary(daemon, 'Register', { hostname: 'h' }), S.UNIMPLEMENTED);
    },
  },
  'manager-register': {
    group: 'manager',
    desc: 'ManagerService/RegisterNode js-node-1 with labels -> success; no node_id -> INVALID_ARGUMENT',
    async run({ manager }) {
      const r = await callUnary(manager, 'RegisterNode', {
        node_id: 'js-node-1', hostname: 'js-host', ip: '127.0.0.1', os: 'linux', arch: 'amd64',
        labels: { env: 'interop' }, daemon_version: 'grpc-js',
      });
      expectOk(r, 'RegisterNode');
      expectEq('success', r.res.success, true);
      expectStatus(await callUnary(manager, 'RegisterNode', { hostname: 'h' }), S.INVALID_ARGUMENT, 'node_id is required');
    },
  },
  'manager-heartbeat': {
    group: 'manager',
    desc: 'Heartbeat js-node-1 -> success; empty node_id -> INVALID_ARGUMENT',
    async run({ manager }) {
      const r = await callUnary(manager, 'Heartbeat', { node_id: 'js-node-1', timestamp: Math.floor(Date.now() / 1000) });
      expectOk(r, 'Heartbeat');
      expectEq('success', r.res.success, true);
      expectStatus(await callUnary(manager, 'Heartbeat', { node_id: '' }), S.INVALID_ARGUMENT, 'node_id is required');
    },
  },
  'manager-report': {
    group: 'manager',
    desc: 'ReportMetrics 2 types -> success; unknown node -> success=false "node not registered"; no type -> INVALID_ARGUMENT',
    async run({ manager }) {
      const ts = Math.floor(Date.now() / 1000);
      const r = await callUnary(manager, 'ReportMetrics', {
        node_id: 'js-node-1',
        metrics: [{ type: 'cpu', timestamp: ts, values: { usage_percent: 1.5 } },
          { type: 'memory', timestamp: ts, values: { used: 1024, total: 4096 } }],
      });
      expectOk(r, 'ReportMetrics');
      expectEq('success', r.res.success, true);
      const u = await callUnary(manager, 'ReportMetrics', { node_id: 'nobody-js', metrics: [{ type: 'cpu', timestamp: ts, values: { a: 1 } }] });
      expectOk(u, 'ReportMetrics unknown node');
      expectEq('success', u.res.success, false);
      expectEq('message', u.res.message, 'node not registered');
      expectStatus(await callUnary(manager, 'ReportMetrics', { node_id: 'js-node-1', metrics: [{ type: '', timestamp: ts }] }),
        S.INVALID_ARGUMENT);
    },
  },
  'manager-sync': {
    group: 'manager',
    desc: 'DaemonService/SyncAgentStates on the manager -> success; ListAgents there -> UNIMPLEMENTED',
    async run({ daemon }) {
      const r = await callUnary(daemon, 'SyncAgentStates', {
        node_id: 'js-node-1', states: [{ agent_id: 'a1', status: 'running', pid: 42, type: 'custom', version: '1' }],
      });
      expectOk(r, 'SyncAgentStates');
      expectEq('success', r.res.success, true);
      expectStatus(await callUnary(daemon, 'ListAgents', {}), S.UNIMPLEMENTED);
    },
  },
};
const GROUPS = ['test', 'tls', 'daemon', 'manager'];

function selectChecks(requested) {
  const names = (requested || ['test'])
    .flatMap((s) => s.split(','))
    .map((s) => s.trim())
    .filter(Boolean);
  const out = [];
  for (const n of names) {
    let add;
    if (n === 'all') add = Object.keys(CHECKS);
    else if (GROUPS.includes(n)) add = Object.keys(CHECKS).filter((k) => CHECKS[k].group === n);
    else if (n in CHECKS) add = [n];
    else die(`unknown check "${n}" (try --list)`);
    for (const a of add) if (!out.includes(a)) out.push(a);
  }
  return out;
}

function listChecks() {
  for (const g of GROUPS) {
    process.stdout.write(`${g}${g === 'test' ? ' (default)' : ''}:\n`);
    for (const [name, c] of Object.entries(CHECKS)) {
      if (c.group !== g) continue;
      const tag = c.ours ? ' [our server only]' : '';
      process.stdout.write(`  ${name.padEnd(22)} ${c.desc}${tag}\n`);
    }
  }
}

async function runClient(argv) {
  const o = parseArgs(argv, {
    '--target': 1, '--ca': 1, '--cert': 1, '--key': 1, '--servername': 1, '--check': 1,
    '--expect-identity': 1, '--list': 0,
  }, ['--check']);
  if (o.list) { listChecks(); return 0; }
  if (!o.target) die('client needs --target HOST:PORT');
  if (Boolean(o.cert) !== Boolean(o.key)) die('--cert and --key go together');
  const checks = selectChecks(o.check);

  const options = {
    'grpc.max_send_message_length': CLIENT_MAX_MESSAGE,
    'grpc.max_receive_message_length': CLIENT_MAX_MESSAGE,
  };
  let creds;
  if (o.ca || o.cert) {
    creds = grpc.credentials.createSsl(
      o.ca ? readFile(o.ca) : null,
      o.key ? readFile(o.key) : null,
      o.cert ? readFile(o.cert) : null);
    if (o.servername) options['grpc.ssl_target_name_override'] = o.servername;
  } else {
    creds = grpc.credentials.createInsecure();
  }

  const pkgs = loadProtos();
  const raw = new grpc.Client(o.target, creds, options);
  const shared = { ...options, channelOverride: raw.getChannel() };
  const ctx = {
    opts: o,
    raw,
    test: new pkgs.opstest.Test(o.target, creds, shared),
    health: new pkgs.grpc.health.v1.Health(o.target, creds, shared),
    daemon: new pkgs.proto.DaemonService(o.target, creds, shared),
    manager: new pkgs.manager.ManagerService(o.target, creds, shared),
  };

  let failed = 0;
  for (const name of checks) {
    try {
      await CHECKS[name].run(ctx);
      process.stdout.write(`ok ${name}\n`);
    } catch (e) {
      failed++;
      process.stdout.write(`FAIL ${name}: ${e.message}\n`);
    }
  }
  raw.close();
  return failed === 0 ? 0 : 1;
}

// ------------------------------------------------------------------------------------ main

function main() {
  const [mode, ...rest] = process.argv.slice(2);
  if (mode === 'server') return runServer(rest);
  if (mode === 'client') {
    return runClient(rest).then((code) => {
      process.exitCode = code;
    }, (e) => die(`client crashed: ${e.stack || e}`, 1));
  }
  return die('usage: peer.js server [--port N] [--tls CERT KEY] [--mtls CA] | '
    + 'peer.js client --target HOST:PORT [--ca CA] [--cert C --key K] [--servername N] '
    + '[--check NAME]... [--list]');
}

main();
