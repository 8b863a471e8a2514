// A proxy-wasm host in JS, to time and profile a filter's own Wasm work per request in V8 (the
// engine Envoy runs it in), without Envoy: see README.md.
//
//   node host.mjs FILTER.wasm CONFIG [REQUESTS]
//
// CONFIG is the plugin configuration: a file (the gateway filter's JSON, as `xds-server
// filter-config` prints it) or a literal (`minimal` for the floor filter). Every request is the
// benchmark's Converse POST with a 62-byte body, answered 200; GetSigningCredentials is
// answered with made-up credentials, every other gRPC call fails. Host calls are counted.
import { readFile } from 'node:fs/promises';
import { WASI } from 'node:wasi';
import { argv, hrtime } from 'node:process';

const [, , wasmPath, configArg, nArg] = argv;
const N = Number(nArg || 100000);
let config;
try { config = await readFile(configArg); } catch { config = Buffer.from(configArg); }

const enc = new TextEncoder();
const dec = new TextDecoder();
let mem, exp;
const u8 = () => new Uint8Array(mem.buffer);
const dv = () => new DataView(mem.buffer);
const str = (p, n) => dec.decode(u8().subarray(p, p + n));
const bytes = (p, n) => u8().slice(p, p + n);
function give(data, retPtr, retSize) {
  const p = exp.proxy_on_memory_allocate(data.length);
  u8().set(data, p);
  dv().setUint32(retPtr, p, true);
  dv().setUint32(retSize, data.length, true);
}
function serializeMap(pairs) {
  let size = 4;
  const kv = pairs.map(([k, v]) => [enc.encode(k), typeof v === 'string' ? enc.encode(v) : v]);
  for (const [k, v] of kv) size += 8 + k.length + 1 + v.length + 1;
  const out = new Uint8Array(size);
  const d = new DataView(out.buffer);
  d.setUint32(0, kv.length, true);
  let o = 4;
  for (const [k, v] of kv) { d.setUint32(o, k.length, true); d.setUint32(o + 4, v.length, true); o += 8; }
  for (const [k, v] of kv) { out.set(k, o); o += k.length + 1; out.set(v, o); o += v.length + 1; }
  return out;
}
function deserializeMap(data) {
  const d = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const n = d.getUint32(0, true);
  const lens = [];
  let o = 4;
  for (let i = 0; i < n; i++) { lens.push([d.getUint32(o, true), d.getUint32(o + 4, true)]); o += 8; }
  const pairs = [];
  for (const [kl, vl] of lens) {
    const k = dec.decode(data.subarray(o, o + kl)); o += kl + 1;
    const v = data.slice(o, o + vl); o += vl + 1;
    pairs.push([k, v]);
  }
  return pairs;
}
// protobuf: strings and varints only
function pbString(field, s) {
  const b = typeof s === 'string' ? enc.encode(s) : s;
  return [...varint((field << 3) | 2), ...varint(b.length), ...b];
}
function varint(v) { const out = []; v = BigInt(v); do { let b = Number(v & 0x7fn); v >>= 7n; if (v) b |= 0x80; out.push(b); } while (v); return out; }

const counts = {};
const count = (name) => { counts[name] = (counts[name] || 0) + 1; };
let reqHeaders = [], respHeaders = [], body = new Uint8Array(), respBody = new Uint8Array();
let grpcReply = null; let reqSerialized = null, respSerialized = null, lastSet = null; // bytes for GrpcReceiveBuffer
let nextToken = 1;
const pendingGrpc = [];
const props = new Map();
const ST = { ok: 0, notFound: 1 };

const env = {
  proxy_log(level, p, n) { count('log' + level); if (level >= 3) console.error('filter log', level, str(p, n)); return 0; },
  proxy_get_log_level(ret) { dv().setUint32(ret, 2, true); return 0; },
  proxy_get_current_time_nanoseconds(ret) { count('time'); dv().setBigUint64(ret, BigInt(Date.now()) * 1000000n, true); return 0; },
  proxy_set_tick_period_milliseconds() { return 0; },
  proxy_get_buffer_bytes(type, start, max, retPtr, retSize) {
    count('get_buffer');
    let b;
    if (type === 0) b = body; else if (type === 1) b = respBody; else if (type === 5) b = grpcReply;
    else if (type === 7) b = config; else if (type === 6) b = new Uint8Array();
    else return ST.notFound;
    if (!b) return ST.notFound;
    const s = b.subarray(start >>> 0, Math.min(b.length, (start >>> 0) + (max >>> 0)));
    give(s, retPtr, retSize); return 0;
  },
  proxy_set_buffer_bytes() { return 0; },
  proxy_get_header_map_pairs(type, retPtr, retSize) {
    count('get_map');
    if (type === 0 && reqSerialized) { give(reqSerialized, retPtr, retSize); return 0; }
    if (type === 2 && respSerialized) { give(respSerialized, retPtr, retSize); return 0; }
    give(serializeMap(type === 0 ? reqHeaders : type === 2 ? respHeaders : []), retPtr, retSize); return 0;
  },
  proxy_set_header_map_pairs(type, p, n) { count('set_map'); lastSet = bytes(p, n); if (type === 0) reqSerialized = null; return 0; },
  proxy_get_header_map_size() { return 0; },
  proxy_get_header_map_value(type, kp, kn, retPtr, retSize) {
    count('get_header');
    const k = str(kp, kn); const m = type === 0 ? reqHeaders : respHeaders;
    const e = m.find(([n]) => n === k); if (!e) return ST.notFound;
    give(typeof e[1] === 'string' ? enc.encode(e[1]) : e[1], retPtr, retSize); return 0;
  },
  proxy_replace_header_map_value(type, kp, kn, vp, vn) { count('replace_header'); const k = str(kp, kn); const v = bytes(vp, vn); const m = type === 0 ? reqHeaders : respHeaders; const i = m.findIndex(([n]) => n === k); if (i >= 0) m[i] = [k, v]; else m.push([k, v]); return 0; },
  proxy_add_header_map_value(type, kp, kn, vp, vn) { count('add_header'); const m = type === 0 ? reqHeaders : respHeaders; m.push([str(kp, kn), bytes(vp, vn)]); return 0; },
  proxy_remove_header_map_value(type, kp, kn) { count('remove_header'); const k = str(kp, kn); if (type === 0) reqHeaders = reqHeaders.filter(([n]) => n !== k); return 0; },
  proxy_get_property(pp, pn, retPtr, retSize) {
    count('get_property');
    const path = str(pp, pn).split('\0').filter(Boolean).join('.');
    if (path === 'node.id') { give(enc.encode('sim-node'), retPtr, retSize); return 0; }
    if (props.has(path)) { give(props.get(path), retPtr, retSize); return 0; }
    return ST.notFound;
  },
  proxy_set_property(pp, pn, vp, vn) { count('set_property'); props.set(str(pp, pn), bytes(vp, vn)); return 0; },
  proxy_get_shared_data() { count('get_shared_data'); return ST.notFound; },
  proxy_set_shared_data() { return 0; },
  proxy_register_shared_queue() { return ST.notFound; },
  proxy_resolve_shared_queue() { return ST.notFound; },
  proxy_dequeue_shared_queue() { return ST.notFound; },
  proxy_enqueue_shared_queue() { return ST.notFound; },
  proxy_continue_stream() { count('continue'); return 0; },
  proxy_close_stream() { return 0; },
  proxy_send_local_response(status) { count('local_reply'); console.error('local reply', status); return 0; },
  proxy_http_call() { return 10; },
  proxy_grpc_call(up, upn, sp, sn, mp, mn, ip, inn, dp, dn, timeout, retToken) {
    count('grpc_call');
    const method = str(mp, mn); const t = nextToken++;
    dv().setUint32(retToken, t, true); pendingGrpc.push([t, method]); return 0;
  },
  proxy_grpc_stream(up, upn, sp, sn, mp, mn, ip, inn, retToken) { const t = nextToken++; dv().setUint32(retToken, t, true); return 0; },
  proxy_grpc_send() { return 0; },
  proxy_grpc_cancel() { return 0; },
  proxy_grpc_close() { return 0; },
  proxy_get_status(retCode, retPtr, retSize) { dv().setUint32(retCode, 0, true); dv().setUint32(retPtr, 0, true); dv().setUint32(retSize, 0, true); return 0; },
  proxy_set_effective_context() { count('set_effective_context'); return 0; },
  proxy_call_foreign_function() { return ST.notFound; },
  proxy_done() { return 0; },
  proxy_define_metric(type, np, nn, ret) { dv().setUint32(ret, nextToken++, true); return 0; },
  proxy_get_metric() { count('get_metric'); return 0; },
  proxy_record_metric() { count('record_metric'); return 0; },
  proxy_increment_metric() { count('increment_metric'); return 0; },
};

const wasi = new WASI({ version: 'preview1', args: [], env: {}, returnOnExit: true });
const module = await WebAssembly.compile(await readFile(wasmPath));
const imports = { env: new Proxy(env, { get: (t, k) => t[k] || ((...a) => { console.error('missing import', k); return 10; }) }), ...wasi.getImportObject() };
const instance = await WebAssembly.instantiate(module, imports);
exp = instance.exports; mem = exp.memory;
if (exp._initialize) wasi.initialize(instance); else if (exp._start) wasi.start(instance);
exp.proxy_on_context_create(1, 0);
exp.proxy_on_vm_start(1, 0);
if (!exp.proxy_on_configure(1, config.length)) { console.error('configure failed'); process.exit(1); }

function answerGrpc() {
  while (pendingGrpc.length) {
    const [t, method] = pendingGrpc.shift();
    if (method === 'GetSigningCredentials') {
      grpcReply = new Uint8Array([...pbString(1, 'AKIDSIMULATOR'), ...pbString(2, 'sim-secret'), ...pbString(3, 'sim-session-token')]);
      exp.proxy_on_grpc_receive(1, t, grpcReply.length);
    } else {
      exp.proxy_on_grpc_close(1, t, 14);
    }
  }
}
answerGrpc();
exp.proxy_on_tick(1); answerGrpc();

const baseHeaders = [[':method', 'POST'], [':path', '/model/anthropic.claude-3-haiku-20240307-v1:0/converse'], [':authority', '127.0.0.1:8080'], [':scheme', 'http'],
  ['content-type', 'application/json'], ['content-length', '62'], ['user-agent', 'wrk'], ['x-forwarded-proto', 'http'], ['x-request-id', '9b0d3c2e-8a6e-4f67-9d8b-3b7c1e9f0a11']];
const baseSerialized = serializeMap(baseHeaders);
const baseResp = [[':status', '200'], ['content-type', 'application/json'], ['content-length', '11']];
const baseRespSerialized = serializeMap(baseResp);
const reqBody = enc.encode('{"messages":[{"role":"user","content":[{"text":"benchmark"}]}]}');
const respBodyBytes = enc.encode('{"ok":true}');
let ctx = 100;
function one() {
  const c = ctx++;
  reqHeaders = baseHeaders.map(([k, v]) => [k, v]); reqSerialized = baseSerialized;
  body = reqBody;
  exp.proxy_on_context_create(c, 1);
  exp.proxy_on_request_headers(c, reqHeaders.length, 0);
  exp.proxy_on_request_body(c, body.length, 1);
  respHeaders = baseResp; respSerialized = baseRespSerialized;
  respBody = respBodyBytes;
  exp.proxy_on_response_headers(c, respHeaders.length, 0);
  exp.proxy_on_response_body(c, respBody.length, 1);
  exp.proxy_on_log(c);
  exp.proxy_on_done(c);
  exp.proxy_on_delete(c);
}
for (let i = 0; i < 20000; i++) one();
for (const k of Object.keys(counts)) delete counts[k];
const t0 = hrtime.bigint();
for (let i = 0; i < N; i++) one();
const ns = Number(hrtime.bigint() - t0) / N;
console.log(`${(ns / 1000).toFixed(2)} µs/request over ${N}; host calls/request:`, Object.fromEntries(Object.entries(counts).map(([k, v]) => [k, +(v / N).toFixed(2)])));
if (lastSet) reqHeaders = deserializeMap(lastSet);
console.log('upstream headers:', reqHeaders.map(([k, v]) => k + '=' + (typeof v === 'string' ? v : dec.decode(v)).slice(0, 60)).join(' | '));
