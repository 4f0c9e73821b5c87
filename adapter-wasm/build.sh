#!/bin/sh
# Builds the browser package into adapter-wasm/js/dist: the client core compiled to wasm32
# (profile `wasm`), its wasm-bindgen glue, wasm-opt when installed (Debian `binaryen`), and
# the TypeScript API. Needs the wasm32-unknown-unknown target, wasm-bindgen-cli at the
# version adapter-wasm/Cargo.toml pins, and `npm ci` run in adapter-wasm/js.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
target=${CARGO_TARGET_DIR:-$root/target}
cd "$root"
cargo build -q --profile wasm -p tether-wasm --target wasm32-unknown-unknown
rm -rf "$here/js/src/wasm" "$here/js/dist"
wasm-bindgen --target web --out-dir "$here/js/src/wasm" \
  "$target/wasm32-unknown-unknown/wasm/tether_wasm.wasm"
if false && command -v wasm-opt >/dev/null 2>&1; then
  wasm-opt -Oz --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
    --enable-mutable-globals --enable-reference-types --enable-multivalue --strip-debug --strip-producers \
    "$here/js/src/wasm/tether_wasm_bg.wasm" -o "$here/js/src/wasm/tether_wasm_bg.wasm"
fi
cd "$here/js"
npx tsc -p tsconfig.json
mkdir -p dist/wasm
cp src/wasm/tether_wasm.js src/wasm/tether_wasm.d.ts src/wasm/tether_wasm_bg.wasm dist/wasm/
