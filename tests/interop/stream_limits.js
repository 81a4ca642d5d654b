// Usage: node stream_limits.js HOST:PORT REPO_ROOT PER_CONN TOTAL
//
// An independent client (grpc-js) against the manager's stream limits: connection A opens
// PER_CONN + 2 SubscribeUpdates streams (distinct nodes), connection B opens enough to pass
// TOTAL (limits.max_update_streams). Expected: A's first PER_CONN stay open and A's extra ones
// end RESOURCE_EXHAUSTED (limits.max_streams_per_connection); B's streams up to TOTAL in all
// stay open, the rest end RESOURCE_EXHAUSTED. Then every open stream still receives an event
// published to its node (the refusals harmed nothing), and after closing A's streams A can
// open one again. Prints "ok ..." / "FAIL ..." lines and "refused=N"; exit 1 on a failure.
// Publishing goes through AdminService.PublishConfig with the token in OPS_TOKEN.
const grpc = require('@grpc/grpc-js'), loader = require('@grpc/proto-loader');
const [target, src, perConnArg, totalArg] = process.argv.slice(2);
const PER_CONN = Number(perConnArg), TOTAL = Number(totalArg);
const RESOURCE_EXHAUSTED = 8;
const opts = { keepCase: true, longs: Number, defaults: true, includeDirs: [`${src}/proto`] };
const M = grpc.loadPackageDefinition(loader.loadSync(`${src}/proto/manager.proto`, opts)).manager.ManagerService;
const A = grpc.loadPackageDefinition(loader.loadSync(`${src}/proto/admin.proto`, opts)).ops.admin.v1.AdminService;

let bad = 0, refused = 0;
const ok = (name, cond, why) => { console.log(cond ? `ok ${name}` : `FAIL ${name}: ${why}`); if (!cond) bad++; };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// Different channel options: a connection of its own (grpc-js shares subchannels otherwise).
const conn = (tag) => new M(target, grpc.credentials.createInsecure(), { 'grpc.primary_user_agent': `limits-${tag}` });
const unary = (c, method, req, md) => new Promise((res, rej) => c[method](req, md || new grpc.Metadata(), (e, r) => (e ? rej(e) : res(r))));

// Opens a stream; resolves after 1.5 s with {open, code, events, call}.
function subscribe(client, node) {
  const s = { open: true, code: null, events: [], call: null, node };
  s.call = client.SubscribeUpdates({ node_id: node, last_event_id: 0 });
  s.call.on('data', (m) => s.events.push(m));
  s.call.on('error', (e) => { s.open = false; s.code = e.code; });
  s.call.on('end', () => { s.open = false; });
  return s;
}

(async () => {
  const ca = conn('a'), cb = conn('b');
  const nodes = [];
  for (let i = 0; i < PER_CONN + 2 + TOTAL; i++) nodes.push(`lim-${i}`);
  for (const n of nodes) await unary(ca, 'RegisterNode', { node_id: n, hostname: n, labels: { suite: 'limits' } });
  const sa = [], sb = [];
  for (let i = 0; i < PER_CONN + 2; i++) sa.push(subscribe(ca, nodes[i]));
  await sleep(1500);
  const aOpen = sa.filter((s) => s.open), aRefused = sa.filter((s) => s.code === RESOURCE_EXHAUSTED);
  ok(`connection A: ${aOpen.length} of ${sa.length} streams open (limit ${PER_CONN} per connection)`, aOpen.length === PER_CONN, `open ${aOpen.length}`);
  ok(`connection A: ${aRefused.length} refused RESOURCE_EXHAUSTED`, aRefused.length === 2, `codes ${sa.map((s) => s.code)}`);
  refused += aRefused.length;
  const wantB = TOTAL - PER_CONN;
  for (let i = 0; i < wantB + 2; i++) sb.push(subscribe(cb, nodes[PER_CONN + 2 + i]));
  await sleep(1500);
  const bOpen = sb.filter((s) => s.open), bRefused = sb.filter((s) => s.code === RESOURCE_EXHAUSTED);
  ok(`connection B: ${bOpen.length} open, so ${aOpen.length + bOpen.length} in all (limit ${TOTAL} update streams)`, bOpen.length === wantB, `open ${bOpen.length}`);
  ok(`connection B: ${bRefused.length} refused RESOURCE_EXHAUSTED`, bRefused.length === 2, `codes ${sb.map((s) => s.code)}`);
  refused += bRefused.length;

  // Every open stream still gets what is published to its node.
  const admin = new A(target, grpc.credentials.createInsecure());
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${process.env.OPS_TOKEN}`);
  const open = aOpen.concat(bOpen);
  await unary(admin, 'PublishConfig', { target: { labels: { suite: 'limits' } }, agent_id: 'web', config: Buffer.from('x: 1\n') }, md);
  for (let t = 0; t < 100 && open.some((s) => s.events.length === 0); t++) await sleep(100);
  const got = open.filter((s) => s.events.length === 1 && s.events[0].event_type === 'config_change').length;
  ok(`the ${open.length} open streams each received the published event`, got === open.length, `${got} received`);

  // A's slots come back when its streams close.
  for (const s of aOpen) s.call.cancel();
  await sleep(500);
  const again = subscribe(ca, nodes[0]);
  await sleep(1000);
  ok('connection A opens a stream again after closing its streams', again.open, `code ${again.code}`);
  again.call.cancel();
  for (const s of bOpen) s.call.cancel();
  console.log(`refused=${refused}`);
  ca.close(); cb.close(); admin.close();
  process.exit(bad ? 1 : 0);
})().catch((e) => { console.log(`FAIL ${e.stack || e}`); process.exit(1); });
