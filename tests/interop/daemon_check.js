// Usage: node daemon_check.js HOST:PORT REPO_ROOT — grpc-js as a client of a real ops-daemon
// whose config has one agent "a1" (see tests/integration/test_interop.sh).
// grpc-js against ops-daemon: ListAgents, OperateAgent errors, GetAgentMetrics.
const grpc = require('@grpc/grpc-js'), loader = require('@grpc/proto-loader');
const [target, src] = process.argv.slice(2);
const def = loader.loadSync(src + '/proto/daemon.proto', { keepCase: true, longs: Number, defaults: true });
const D = grpc.loadPackageDefinition(def).proto.DaemonService;
const c = new D(target, grpc.credentials.createInsecure());
const call = (m, req) => new Promise((res) => c[m](req, { deadline: Date.now() + 10000 }, (e, r) => res({ e, r })));
(async () => {
  let bad = 0;
  const ok = (name, cond, why) => { console.log(cond ? `ok ${name}` : `FAIL ${name}: ${why}`); if (!cond) bad++; };
  let x = await call('ListAgents', {});
  ok('daemon-list', !x.e && x.r.agents.length === 1 && x.r.agents[0].id === 'a1' && x.r.agents[0].status === 'running', JSON.stringify(x));
  x = await call('OperateAgent', { agent_id: 'zz', operation: 'stop' });
  ok('daemon-not-found', x.e && x.e.code === grpc.status.NOT_FOUND && /zz/.test(x.e.details), JSON.stringify(x.e));
  x = await call('OperateAgent', { agent_id: 'a1', operation: 'explode' });
  ok('daemon-bad-op', x.e && x.e.code === grpc.status.INVALID_ARGUMENT, JSON.stringify(x.e));
  x = await call('OperateAgent', { agent_id: 'a1', operation: 'restart' });
  ok('daemon-restart', !x.e && x.r.success === true, JSON.stringify(x));
  x = await call('GetAgentMetrics', { agent_id: 'a1', duration_seconds: 60 });
  ok('daemon-metrics', !x.e && x.r.agent_id === 'a1', JSON.stringify(x));
  x = await call('GetConfig', { config_type: 'daemon' });
  ok('daemon-config', !x.e && x.r.success && Buffer.from(x.r.config_data).toString().includes('grpc_port'), JSON.stringify(x.e));
  process.exitCode = bad ? 1 : 0;
})();
