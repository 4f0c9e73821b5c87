#!/bin/sh
# Builds the browser package into adapter-wasm/js/dist: index.js (the TypeScript API and
# the wasm-bindgen glue, bundled and minified by esbuild), index.d.ts, and
# tether_wasm_bg.wasm (the client core, profile `wasm`). Needs the wasm32-unknown-unknown
# target, wasm-bindgen-cli at the version adapter-wasm/Cargo.toml pins, and `npm ci` run in
# adapter-wasm/js.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
target=${CARGO_TARGET_DIR:-$root/target}
cd "$root"
cargo build -q --profile wasm -p tether-wasm --target wasm32-unknown-unknown
rm -rf "$here/js/src/wasm" "$here/js/dist"
wasm-bindgen --target web --remove-name-section --remove-producers-section --out-dir "$here/js/src/wasm" \
  "$target/wasm32-unknown-unknown/wasm/tether_wasm.wasm"
cd "$here/js"
npx tsc -p tsconfig.json --emitDeclarationOnly
npx esbuild src/index.ts --bundle --format=esm --minify --target=es2022 \
  --log-level=warning --outfile=dist/index.js
cp src/wasm/tether_wasm_bg.wasm dist/
