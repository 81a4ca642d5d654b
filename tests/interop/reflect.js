// Usage: node reflect.js HOST:PORT REPO_ROOT VERSION SERVICES CALLS
//   VERSION   v1alpha | v1 (which reflection service to speak)
//   SERVICES  comma-separated service names the server must list (exactly these)
//   CALLS     semicolon-separated "pkg.Service/Method=JSON" calls to make with what was learned
//
// An independent client of our server reflection (grpc-js + protobufjs): the only .proto it
// reads is the reflection protocol's own. It lists the services, fetches the file declaring each
// one (with its dependencies), builds descriptors from those bytes alone, and then makes real
// calls it learned about through reflection. Also: unknown symbols and files get error_response
// NOT_FOUND and the stream stays usable.
const grpc = require('@grpc/grpc-js'), loader = require('@grpc/proto-loader');
const descriptor = require('protobufjs/ext/descriptor');

const [target, src, version, servicesArg, callsArg] = process.argv.slice(2);
const NOT_FOUND = 5;

let bad = 0;
const ok = (name, cond, why) => { console.log(cond ? `ok ${version} ${name}` : `FAIL ${version} ${name}: ${why}`); if (!cond) bad++; };

// A reader over one bidi stream: ask() sends a request and resolves with the next response.
function openStream() {
  const def = loader.loadSync(`${src}/proto/reflection_${version}.proto`, { keepCase: true, longs: Number, oneofs: true });
  const R = grpc.loadPackageDefinition(def).grpc.reflection[version].ServerReflection;
  const client = new R(target, grpc.credentials.createInsecure());
  const call = client.ServerReflectionInfo({ deadline: Date.now() + 30000 });
  const waiting = [];
  let ended = null;
  call.on('data', (m) => { const w = waiting.shift(); if (w) w.res(m); });
  call.on('error', (e) => { ended = e; while (waiting.length) waiting.shift().rej(e); });
  call.on('end', () => { ended = ended || new Error('stream ended'); while (waiting.length) waiting.shift().rej(ended); });
  const ask = (req) => new Promise((res, rej) => {
    if (ended) return rej(ended);
    waiting.push({ res, rej });
    call.write(Object.assign({ host: 'reflect-test' }, req));
  });
  return { client, call, ask };
}

// FileDescriptorProto bytes -> decoded message (name, dependency, service...)
const decodeFile = (b) => descriptor.FileDescriptorProto.decode(b);

// Wraps files (raw FileDescriptorProto bytes) into a serialized FileDescriptorSet.
function descriptorSet(files) {
  const parts = [];
  for (const b of files) {
    const len = [];
    let n = b.length;
    do { let x = n & 0x7f; n >>>= 7; if (n) x |= 0x80; len.push(x); } while (n);
    parts.push(Buffer.from([0x0a, ...len]), Buffer.from(b));
  }
  return Buffer.concat(parts);
}

(async () => {
  const { client, call, ask } = openStream();
  const want = servicesArg.split(',').filter(Boolean).sort();

  // 1. list_services: exactly what the server serves
  let r = await ask({ list_services: '' });
  const listed = (r.list_services_response ? r.list_services_response.service : []).map((s) => s.name).sort();
  ok('list-services', JSON.stringify(listed) === JSON.stringify(want), `listed ${listed} want ${want}`);
  ok('original-request-echoed', r.original_request && r.original_request.list_services === '' && r.valid_host === 'reflect-test',
    JSON.stringify(r.original_request));

  // 2. for every listed service, the file declaring it, with its dependencies
  const files = new Map(); // name -> bytes
  for (const svc of listed) {
    r = await ask({ file_containing_symbol: svc });
    const got = r.file_descriptor_response ? r.file_descriptor_response.file_descriptor_proto : [];
    const decoded = got.map(decodeFile);
    const first = decoded[0];
    const short = svc.slice(svc.lastIndexOf('.') + 1);
    const pkg = svc.slice(0, svc.lastIndexOf('.'));
    ok(`symbol ${svc}`, first && first.package === pkg && first.service.some((s) => s.name === short),
      JSON.stringify(r.error_response || decoded.map((d) => d.name)));
    const names = new Set(decoded.map((d) => d.name));
    const missing = decoded.flatMap((d) => d.dependency || []).filter((d) => !names.has(d));
    ok(`deps ${svc}`, missing.length === 0, `missing ${missing}`);
    got.forEach((b, i) => files.set(decoded[i].name, b));
    // each method of the service is a symbol too
    for (const m of first ? first.service.find((s) => s.name === short).method : []) {
      const q = await ask({ file_containing_symbol: `${svc}.${m.name}` });
      ok(`method ${svc}.${m.name}`, q.file_descriptor_response &&
        decodeFile(q.file_descriptor_response.file_descriptor_proto[0]).name === first.name, JSON.stringify(q.error_response));
    }
  }

  // 3. not found: error_response NOT_FOUND, and the stream goes on
  r = await ask({ file_containing_symbol: 'no.such.Symbol' });
  ok('unknown-symbol', r.error_response && r.error_response.error_code === NOT_FOUND, JSON.stringify(r));
  r = await ask({ file_by_filename: 'nope.proto' });
  ok('unknown-file', r.error_response && r.error_response.error_code === NOT_FOUND, JSON.stringify(r));
  r = await ask({ file_containing_extension: { containing_type: 'grpc.health.v1.HealthCheckRequest', extension_number: 100 } });
  ok('extension', r.error_response && r.error_response.error_code === NOT_FOUND, JSON.stringify(r));
  r = await ask({ file_by_filename: 'health.proto' });
  ok('file-by-name-after-errors', r.file_descriptor_response &&
    decodeFile(r.file_descriptor_response.file_descriptor_proto[0]).name === 'health.proto', JSON.stringify(r.error_response));
  r = await ask({ list_services: '' });
  ok('stream-still-usable', r.list_services_response && r.list_services_response.service.length === want.length, JSON.stringify(r));
  call.end();
  client.close();

  // 4. calls learned only through reflection
  const def = loader.loadFileDescriptorSetFromBuffer(descriptorSet([...files.values()]),
    { keepCase: true, longs: Number, enums: String, defaults: true });
  const pkgs = grpc.loadPackageDefinition(def);
  for (const spec of (callsArg || '').split(';').filter(Boolean)) {
    const eq = spec.indexOf('=');
    const [svc, method] = spec.slice(0, eq).split('/');
    const req = JSON.parse(spec.slice(eq + 1));
    const Ctor = svc.split('.').reduce((o, k) => (o ? o[k] : undefined), pkgs);
    if (!Ctor) { ok(`call ${svc}/${method}`, false, 'service not built from reflection'); continue; }
    const c = new Ctor(target, grpc.credentials.createInsecure());
    const x = await new Promise((res) => c[method](req, { deadline: Date.now() + 10000 }, (e, resp) => res({ e, resp })));
    ok(`call ${svc}/${method}`, !x.e, x.e && `${x.e.code} ${x.e.details}`);
    if (!x.e) console.log(`  ${svc}/${method} -> ${JSON.stringify(x.resp)}`);
    c.close();
  }
  process.exitCode = bad ? 1 : 0;
})().catch((e) => { console.log(`FAIL ${version} ${e.stack || e}`); process.exitCode = 1; });
