#!/bin/sh
# Builds the browser package into adapter-wasm/js/dist: index.js (the TypeScript API and
# the wasm-bindgen glue, bundled and minified by esbuild), index.d.ts, and
# tether_wasm_bg.wasm (the client core, profile `wasm`). Needs the wasm32-unknown-unknown
# target and the rust-src component (rustup), wasm-bindgen-cli at the version
# adapter-wasm/Cargo.toml pins, and `npm ci` run in adapter-wasm/js.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
target=${CARGO_TARGET_DIR:-$root/target}
cd "$root"
# The small build: the standard library rebuilt with panics that abort at once (no panic
# messages or their formatting in the wasm: 25 % smaller). Both are unstable compiler
# features, enabled on stable Rust with RUSTC_BOOTSTRAP, as the fuzz targets are; it needs
# the rust-src component. A core panic traps the same way either way (`panic = "abort"`);
# only its message is gone. TETHER_WASM_STABLE=1, or a toolchain that refuses, builds the
# plain stable way instead.
wasm=""
if [ "${TETHER_WASM_STABLE:-0}" != 1 ]; then
  if RUSTC_BOOTSTRAP=1 RUSTFLAGS="-Zunstable-options -Cpanic=immediate-abort" \
    cargo build -q --profile wasm -p tether-wasm --target wasm32-unknown-unknown \
    -Zbuild-std=std,panic_abort --target-dir "$target/wasm-small"; then
    wasm="$target/wasm-small/wasm32-unknown-unknown/wasm/tether_wasm.wasm"
  else
    echo "build.sh: the small build failed (rust-src missing?); building the stable way" >&2
  fi
fi
if [ -z "$wasm" ]; then
  cargo build -q --profile wasm -p tether-wasm --target wasm32-unknown-unknown
  wasm="$target/wasm32-unknown-unknown/wasm/tether_wasm.wasm"
fi
rm -rf "$here/js/src/wasm" "$here/js/dist"
wasm-bindgen --target web --remove-name-section --remove-producers-section --out-dir "$here/js/src/wasm" \
  "$wasm"
cd "$here/js"
npx tsc -p tsconfig.json --emitDeclarationOnly
npx esbuild src/index.ts --bundle --format=esm --minify --target=es2022 \
  --log-level=warning --outfile=dist/index.js
cp src/wasm/tether_wasm_bg.wasm dist/
