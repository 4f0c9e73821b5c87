// Bundle sizes, measured in one run: the tether browser package (adapter-wasm/js/dist:
// index.js + tether_wasm_bg.wasm) against the browser bundles of the `ably` and
// `centrifuge` npm packages installed next to this script (versions from their
// package.json). Sizes are gzip -9 (zlib level 9) of each file, summed per package.
// Prints a table; exits 1 when tether's is over ably's (the requirement) unless
// BUNDLE_SIZE_REPORT_ONLY is set.

import { readFile } from "node:fs/promises";
import { gzipSync } from "node:zlib";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..");

async function measure(files) {
  let raw = 0;
  let gzip = 0;
  for (const file of files) {
    const bytes = await readFile(file);
    raw += bytes.length;
    gzip += gzipSync(bytes, { level: 9 }).length;
  }
  return { raw, gzip };
}

async function version(name) {
  const manifest = JSON.parse(await readFile(path.join(here, "node_modules", name, "package.json"), "utf8"));
  return manifest.version;
}

const rows = [
  {
    name: "tether-client (wasm + JS)",
    ...(await measure([path.join(root, "js/dist/index.js"), path.join(root, "js/dist/tether_wasm_bg.wasm")])),
  },
  {
    name: `ably ${await version("ably")} (build/ably.min.js)`,
    ...(await measure([path.join(here, "node_modules/ably/build/ably.min.js")])),
  },
  {
    name: `centrifuge ${await version("centrifuge")} (dist/centrifuge.js)`,
    ...(await measure([path.join(here, "node_modules/centrifuge/dist/centrifuge.js")])),
  },
];
const kb = (n) => (n / 1024).toFixed(1);
console.log("| package | raw KiB | gzip KiB | tether ÷ it (gzip) |");
console.log("|---|---:|---:|---:|");
for (const row of rows) {
  console.log(`| ${row.name} | ${kb(row.raw)} | ${kb(row.gzip)} | ${(rows[0].gzip / row.gzip).toFixed(2)} |`);
}
if (rows[0].gzip > rows[1].gzip && !process.env.BUNDLE_SIZE_REPORT_ONLY) {
  console.error("tether's bundle is larger than ably's");
  process.exit(1);
}
