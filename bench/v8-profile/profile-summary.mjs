// Self and inclusive shares of the functions in the .cpuprofile that `node --cpu-prof` wrote in
// this directory: node profile-summary.mjs [TOP_SELF] [TOP_INCLUSIVE]
import { readFileSync, readdirSync } from 'node:fs';
const f = readdirSync('.').filter(f => f.endsWith('.cpuprofile'))[0];
const p = JSON.parse(readFileSync(f));
const self = new Map(); const byId = new Map();
for (const n of p.nodes) byId.set(n.id, n);
const counts = new Map();
for (const s of p.samples) counts.set(s, (counts.get(s) || 0) + 1);
let total = 0;
for (const [id, c] of counts) { const n = byId.get(id); const name = n.callFrame.functionName || '(anon ' + n.callFrame.url.split('/').pop() + ')'; self.set(name, (self.get(name) || 0) + c); total += c; }
// inclusive
const parent = new Map();
for (const n of p.nodes) for (const ch of n.children || []) parent.set(ch, n.id);
const incl = new Map();
for (const [id, c] of counts) { const seen = new Set(); let x = id; while (x !== undefined) { const n = byId.get(x); const name = n.callFrame.functionName; if (!seen.has(name)) { incl.set(name, (incl.get(name) || 0) + c); seen.add(name); } x = parent.get(x); } }
const top = [...self].sort((a, b) => b[1] - a[1]).slice(0, +process.argv[2] || 40);
console.log('SELF'); for (const [n, c] of top) console.log((100 * c / total).toFixed(1).padStart(5), n.slice(0, 150));
console.log('INCLUSIVE'); for (const [n, c] of [...incl].sort((a, b) => b[1] - a[1]).slice(0, +process.argv[3] || 50)) console.log((100 * c / total).toFixed(1).padStart(5), n.slice(0, 150));
