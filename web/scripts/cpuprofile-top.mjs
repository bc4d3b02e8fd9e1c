// Prints the functions a Chrome .cpuprofile (ui.bench.ts with
// SIOT_UI_PROFILE) spent its time in: self and inclusive ms, the top N
// (default 25) of each, with file:line. node web/scripts/cpuprofile-top.mjs FILE [N]
import { readFileSync } from "node:fs";
import { basename } from "node:path";

const [file, topArg] = process.argv.slice(2);
if (!file) {
  console.error("usage: cpuprofile-top.mjs FILE [N]");
  process.exit(2);
}
const top = Number(topArg ?? 25);
const p = JSON.parse(readFileSync(file, "utf8"));
const byId = new Map(p.nodes.map((n) => [n.id, n]));
const parent = new Map();
for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const label = (n) => {
  const f = n.callFrame;
  return `${f.functionName || "(anonymous)"} ${f.url ? basename(f.url) + ":" + (f.lineNumber + 1) : ""}`.trim();
};
const self = new Map();
const incl = new Map();
let total = 0;
p.samples.forEach((id, i) => {
  const dt = (p.timeDeltas[i] ?? 0) / 1000;
  total += dt;
  const n = byId.get(id);
  self.set(label(n), (self.get(label(n)) ?? 0) + dt);
  const seen = new Set();
  for (let x = id; x !== undefined; x = parent.get(x)) {
    const l = label(byId.get(x));
    if (seen.has(l)) continue;
    seen.add(l);
    incl.set(l, (incl.get(l) ?? 0) + dt);
  }
});
const show = (title, m) => {
  console.log(`${title} (of ${total.toFixed(0)} ms sampled)`);
  for (const [l, ms] of [...m].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${ms.toFixed(0).padStart(8)} ms  ${l}`);
};
show("self", self);
show("inclusive", incl);
