// The example's development server: serves adapter-wasm/ (the built package in js/dist and
// this page) and mints tokens at /token with `tether token`, as an application's backend
// would. Node's standard library only.
//
//   tether serve --key app:app-secret &
//   node adapter-wasm/example/serve.mjs      # then open the URL it prints
//
// Environment: TETHER_BIN (default `tether` on PATH), TETHER_KEY (the key tokens are signed
// with, default app:app-secret: the one `tether serve --key` was given), TETHER_URL (the
// hub's WebSocket URL, default ws://127.0.0.1:7400/), PORT (default 8080).

import http from "node:http";
import { readFile } from "node:fs/promises";
import { execFile } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".wasm": "application/wasm",
  ".json": "application/json",
  ".ts": "text/plain; charset=utf-8",
};

/** Mints a token for `clientId`, valid `ttl` seconds, signed with `key` (name:secret). */
function mint(tether, key, clientId, ttl) {
  return new Promise((resolve, reject) => {
    execFile(
      tether,
      ["token", "--key", key, "--client-id", clientId, "--ttl", String(ttl)],
      (error, stdout, stderr) => (error ? reject(new Error(stderr || error.message)) : resolve(stdout.trim())),
    );
  });
}

/**
 * Starts the server on 127.0.0.1:`port` (0: any free port). `/token?client=ID&ttl=S` answers
 * a token (ttl 1 to 86400 s, default 3600); anything else is a file under `root`.
 * Resolves to `{ url, tokens, close }` (`tokens`: how many were minted).
 */
export async function startExampleServer({ root, tether, key, port = 0 }) {
  const state = { tokens: 0 };
  const server = http.createServer(async (request, response) => {
    const url = new URL(request.url, "http://localhost");
    try {
      if (url.pathname === "/token") {
        const clientId = url.searchParams.get("client") ?? "browser";
        const ttl = Number(url.searchParams.get("ttl") ?? 3600);
        if (!/^[A-Za-z0-9_.-]{1,64}$/.test(clientId) || !Number.isInteger(ttl) || ttl < 1 || ttl > 86400) {
          response.writeHead(400, { "content-type": "text/plain" }).end("bad client or ttl");
          return;
        }
        const token = await mint(tether, key, clientId, ttl);
        state.tokens += 1;
        response.writeHead(200, { "content-type": "text/plain", "cache-control": "no-store" }).end(token);
        return;
      }
      const file = path.resolve(root, "." + decodeURIComponent(url.pathname));
      if (!file.startsWith(root + path.sep)) {
        response.writeHead(403).end();
        return;
      }
      const wanted = url.pathname.endsWith("/") ? path.join(file, "index.html") : file;
      const body = await readFile(wanted);
      response
        .writeHead(200, { "content-type": TYPES[path.extname(wanted)] ?? "application/octet-stream", "cache-control": "no-store" })
        .end(body);
    } catch (error) {
      const missing = error?.code === "ENOENT" || error?.code === "EISDIR";
      response.writeHead(missing ? 404 : 500, { "content-type": "text/plain" }).end(missing ? "not found" : String(error.message));
    }
  });
  await new Promise((resolve) => server.listen(port, "127.0.0.1", resolve));
  const address = server.address();
  return {
    url: `http://127.0.0.1:${address.port}`,
    get tokens() {
      return state.tokens;
    },
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections?.();
        server.close(resolve);
      }),
  };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
  const served = await startExampleServer({
    root,
    tether: process.env.TETHER_BIN ?? "tether",
    key: process.env.TETHER_KEY ?? "app:app-secret",
    port: Number(process.env.PORT ?? 8080),
  });
  const hub = process.env.TETHER_URL ?? "ws://127.0.0.1:7400/";
  console.log(`${served.url}/example/?server=${encodeURIComponent(hub)}`);
}
