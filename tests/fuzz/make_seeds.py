#!/usr/bin/env python3
"""Writes the seed corpora of fuzz_requests and fuzz_pbjson (tests/fuzz/corpus/requests,
corpus/pbjson). Byte 0 of a seed picks the message type the way the harnesses do: every
method's input then output, in service order (manager, daemon, admin), each type once. Run it
again when a service gains a method (the indices move). Usage: make_seeds.py [SOURCE_DIR]"""
import json, os, re, struct, sys

src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), '..', '..')
types = []
for f in ('manager', 'daemon', 'admin'):
    text = open(os.path.join(src, 'proto', f + '.proto')).read()
    pkg = re.search(r'^package\s+([\w.]+);', text, re.M).group(1)
    for a, b in re.findall(r'rpc\s+\w+\s*\(\s*(?:stream\s+)?([\w.]+)\s*\)\s*returns\s*\(\s*(?:stream\s+)?([\w.]+)\s*\)', text):
        for t in (a, b):
            q = pkg + '.' + t
            if q not in types:
                types.append(q)

def varint(n):
    out = b''
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7f
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])

def enc(fields):
    """fields: list of (number, value): str/bytes -> length-delimited, int -> varint,
    float -> fixed64 double, list -> nested message."""
    out = b''
    for num, v in fields:
        if isinstance(v, bool) or isinstance(v, int):
            out += varint(num << 3) + varint(int(v))
        elif isinstance(v, float):
            out += varint(num << 3 | 1) + struct.pack('<d', v)
        else:
            if isinstance(v, list):
                v = enc(v)
            elif isinstance(v, str):
                v = v.encode()
            out += varint(num << 3 | 2) + varint(len(v)) + v
    return out

def mapentry(k, v):
    return [(1, k), (2, v)]

wire = {
    'op_restart': ('proto.AgentOperationRequest', [(1, 'ticker'), (2, 'restart')]),
    'op_bad': ('proto.AgentOperationRequest', [(1, ''), (2, 'explode')]),
    'metrics': ('proto.AgentMetricsRequest', [(1, 'web'), (2, 3600)]),
    'config_agent': ('proto.ConfigRequest', [(1, 'n1'), (2, 'agent'), (3, 'web')]),
    'push_agent': ('proto.UpdateRequest', [(1, 'n1'), (2, 'agent:web'), (3, '1.2.3'), (5, 'ab' * 32),
                                           (6, '00' * 64), (7, b'\x7fELF')]),
    'sync': ('proto.SyncAgentStatesRequest', [(1, 'n1'), (2, [(1, 'web'), (2, 'running'), (3, 4242), (4, 1700000000)])]),
    'register': ('manager.RegisterNodeRequest', [(1, 'n1'), (2, 'host'), (3, '10.0.0.1'), (4, 'linux'), (5, 'amd64'),
                                                 (6, mapentry('env', 'prod')), (9, '10.0.0.1:9091')]),
    'heartbeat': ('manager.HeartbeatRequest', [(1, 'n1'), (2, 1700000000)]),
    'report': ('manager.ReportMetricsRequest', [(1, 'n1'), (2, [(1, 'cpu'), (2, 1700000000),
                                                                 (3, mapentry('usage_percent', 12.5))])]),
    'list_nodes': ('ops.admin.v1.ListNodesRequest', [(1, 'online'), (2, mapentry('env', 'prod')), (3, 50)]),
    'operate': ('ops.admin.v1.OperateAgentRequest', [(1, 'n1'), (2, 'web'), (3, 'stop')]),
}
js = {
    'operate': ('proto.AgentOperationRequest', {'agent_id': 'ticker', 'operation': 'restart'}),
    'register': ('manager.RegisterNodeRequest', {'node_id': 'n1', 'hostname': 'h', 'labels': {'env': 'prod'}}),
    'report': ('manager.ReportMetricsRequest', {'node_id': 'n1', 'metrics': [{'type': 'cpu', 'timestamp': 1700000000,
                                                                              'values': {'usage_percent': 12.5}}]}),
    'push': ('proto.UpdateRequest', {'component': 'agent:web', 'version': '1.2.3', 'update_data': 'AAEC'}),
    'list_nodes': ('ops.admin.v1.ListNodesRequest', {'status': 'online', 'labels': {'env': 'prod'}, 'page_size': 10}),
    'sync': ('proto.SyncAgentStatesRequest', {'node_id': 'n1', 'states': [{'agent_id': 'web', 'pid': 42}]}),
}
for sub, table, body in (('requests', wire, lambda v: enc(v)), ('pbjson', js, lambda v: json.dumps(v).encode())):
    d = os.path.join(src, 'tests', 'fuzz', 'corpus', sub)
    os.makedirs(d, exist_ok=True)
    for name, (t, v) in table.items():
        with open(os.path.join(d, name), 'wb') as f:
            f.write(bytes([types.index(t)]) + body(v))
print(len(types), 'message types')
