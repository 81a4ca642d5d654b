#!/usr/bin/env node
'use strict';
// Fan-out load generator: N virtual daemons, each registered with its own node_id and holding
// its own manager.ManagerService/SubscribeUpdates stream, then ONE event published to all of
// them through AdminService.PublishConfig (label selector), timed until the last stream got it.
//
//   fanout.js --manager HOST:PORT --token TOKEN [--nodes 10000] [--channels 100]
//             [--pid MANAGER_PID] [--label RUN_ID]
//
// Prints one line of key=value results: subscribe time, publish call time, delivery latency
// p50/p99/max (ms from just before the publish call to each stream's arrival), how many
// streams got it, and the manager's VmRSS/VmHWM (sampled every 20 ms from /proc/PID/status
// from before the publish to the last delivery).
process.noDeprecation = true;
const path = require('path');
const fs = require('fs');
const modules = path.resolve(__dirname, '..', 'tests', 'interop', 'node_modules');
const grpc = require(path.join(modules, '@grpc/grpc-js'));
const protoLoader = require(path.join(modules, '@grpc/proto-loader'));

const opts = { manager: '127.0.0.1:9090', token: '', nodes: 10000, channels: 100, pid: 0, label: 'fanout' };
for (let i = 2; i < process.argv.length; i += 2) {
  const k = process.argv[i].replace(/^--/, ''), v = process.argv[i + 1];
  if (!(k in opts) || v === undefined) { console.error(`fanout.js: bad argument ${process.argv[i]}`); process.exit(2); }
  opts[k] = typeof opts[k] === 'number' ? Number(v) : v;
}
const PROTO = path.resolve(__dirname, '..', 'proto');
const load = (f) => grpc.loadPackageDefinition(protoLoader.loadSync(path.join(PROTO, f), { includeDirs: [PROTO], longs: String, keepCase: true, defaults: true }));
const mgrPkg = load('manager.proto').manager;
const admPkg = load('admin.proto').ops.admin.v1;

// Many connections: one HTTP/2 connection per channel (own subchannel pool), streams spread.
const chOpts = { 'grpc.use_local_subchannel_pool': 1, 'grpc.max_receive_message_length': 16 << 20,
  'grpc.keepalive_time_ms': 60000, 'grpc.keepalive_permit_without_calls': 1 };
const clients = [];
for (let i = 0; i < opts.channels; i++)
  clients.push(new mgrPkg.ManagerService(opts.manager, grpc.credentials.createInsecure(), { ...chOpts, 'ops.bench.channel': i }));
const admin = new admPkg.AdminService(opts.manager, grpc.credentials.createInsecure());
const md = new grpc.Metadata();
md.set('authorization', `Bearer ${opts.token}`);

function memory() {
  if (!opts.pid) return null;
  try {
    const s = fs.readFileSync(`/proc/${opts.pid}/status`, 'utf8');
    const g = (k) => Number((s.match(new RegExp(`${k}:\\s+(\\d+)`)) || [0, 0])[1]);
    return { rss: g('VmRSS'), hwm: g('VmHWM'), threads: g('Threads') };
  } catch (e) { return null; }
}
const ms = () => Number(process.hrtime.bigint()) / 1e6;
const nodeId = (i) => `${opts.label}-${String(i).padStart(5, '0')}`;

async function pool(n, width, fn) {
  let next = 0;
  const run = async () => { while (next < n) { const i = next++; await fn(i); } };
  await Promise.all(Array.from({ length: width }, run));
}

function unary(client, method, req, meta) {
  return new Promise((resolve, reject) => {
    const dl = new Date(Date.now() + 120000);
    const cb = (err, resp) => (err ? reject(err) : resolve(resp));
    if (meta) client[method](req, meta, { deadline: dl }, cb);
    else client[method](req, { deadline: dl }, cb);
  });
}

async function main() {
  const N = opts.nodes;
  let t = ms();
  await pool(N, 200, (i) => unary(clients[i % clients.length], 'RegisterNode',
    { node_id: nodeId(i), hostname: nodeId(i), labels: { bench: opts.label } }));
  const registerMs = ms() - t;

  const arrival = new Float64Array(N).fill(-1);
  let subscribed = 0, errors = 0, got = 0, t0 = 0, resolveAll;
  const allIn = new Promise((r) => (resolveAll = r));
  const streams = [];
  t = ms();
  // A stream sends nothing until an event comes, so readiness is judged from the manager
  // side (waitStreams: one handler thread per stream).
  for (let i = 0; i < N; i++) {
    const call = clients[i % clients.length].SubscribeUpdates({ node_id: nodeId(i), last_event_id: 0 });
    call.on('data', () => {
      if (arrival[i] < 0 && t0) { arrival[i] = ms() - t0; if (++got === N) resolveAll(); }
    });
    call.on('error', (e) => { if (e.code !== grpc.status.CANCELLED) { errors++; if (errors < 5) console.error(`stream ${i}: ${e.message}`); } });
    streams.push(call);
    subscribed++;
  }
  const subscribeMs = ms() - t;
  return { registerMs, subscribeMs, arrival, streams, allIn, setT0: (v) => (t0 = v), gotCount: () => got, errCount: () => errors };
}

async function waitStreams(expect) {
  const start = ms();
  while (ms() - start < 120000) {
    const m = memory();
    if (!m) { await new Promise((r) => setTimeout(r, 5000)); return; }
    if (m.threads >= expect) return;
    await new Promise((r) => setTimeout(r, 200));
  }
}

(async () => {
  const st = await main();
  await waitStreams(opts.nodes);
  await new Promise((r) => setTimeout(r, 1000));
  const before = memory();
  let peak = before ? { ...before } : null;
  const sampler = setInterval(() => {
    const m = memory();
    if (m && peak) { peak.rss = Math.max(peak.rss, m.rss); peak.hwm = Math.max(peak.hwm, m.hwm); }
  }, 20);
  const cfg = Buffer.from(`fanout ${Date.now()}\n`);
  const t0 = ms();
  st.setT0(t0);
  const resp = await unary(admin, 'PublishConfig', { target: { labels: { bench: opts.label } }, agent_id: 'bench', config: cfg }, md);
  const publishMs = ms() - t0;
  await Promise.race([st.allIn, new Promise((r) => setTimeout(r, 60000))]);
  clearInterval(sampler);
  const after = memory();
  if (peak && after) { peak.rss = Math.max(peak.rss, after.rss); peak.hwm = Math.max(peak.hwm, after.hwm); }
  const lat = Array.from(st.arrival).filter((x) => x >= 0).sort((a, b) => a - b);
  const q = (p) => (lat.length ? lat[Math.min(lat.length - 1, Math.ceil(p * lat.length) - 1)] : NaN);
  const out = {
    nodes: opts.nodes, published: resp.events.length, received: lat.length, stream_errors: st.errCount(),
    register_ms: st.registerMs.toFixed(0), publish_call_ms: publishMs.toFixed(1),
    p50_ms: q(0.5).toFixed(1), p99_ms: q(0.99).toFixed(1), max_ms: (lat.length ? lat[lat.length - 1] : NaN).toFixed(1),
    mgr_threads: before ? before.threads : 'n/a',
    mgr_rss_before_mib: before ? (before.rss / 1024).toFixed(0) : 'n/a',
    mgr_rss_peak_mib: peak ? (peak.rss / 1024).toFixed(0) : 'n/a',
    mgr_hwm_mib: peak ? (peak.hwm / 1024).toFixed(0) : 'n/a',
  };
  console.log(Object.entries(out).map(([k, v]) => `${k}=${v}`).join(' '));
  for (const s of st.streams) s.cancel();
  process.exit(lat.length === opts.nodes ? 0 : 1);
})().catch((e) => { console.error(`fanout.js: ${e.stack || e}`); process.exit(1); });
