// The browser client in a real browser (Debian's Chromium, driven by playwright-core)
// against a real `tether serve`: tokens from a callback and renewed in band, subscribe,
// publish with ACK, a dropped socket and its resume, 1,000 messages from a Rust publisher,
// the HTTP binding through fetch, and a screenshot of the example page.
//
// Needs the package built (adapter-wasm/build.sh) and the `tether` binary (TETHER_BIN,
// default target/debug/tether); CHROMIUM names the browser (default /usr/bin/chromium).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFile } from "node:child_process";
import { mkdir } from "node:fs/promises";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { startExampleServer } from "../example/serve.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..");
const tether = process.env.TETHER_BIN ?? path.resolve(root, "../target/debug/tether");
const KEY = "app:app-secret";
/** Every wait of these tests ends by itself. */
const LIMIT = 20_000;

let server; // tether serve
let tetherPort;
let proxy; // a TCP proxy in front of it that can cut every connection
let site; // the static server with /token
let browser;

function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

async function waitForPort(port) {
  const deadline = Date.now() + LIMIT;
  for (;;) {
    const open = await new Promise((resolve) => {
      const socket = net.connect(port, "127.0.0.1");
      socket.once("connect", () => {
        socket.destroy();
        resolve(true);
      });
      socket.once("error", () => resolve(false));
    });
    if (open) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on ${port}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

function startProxy(upstream) {
  const sockets = new Set();
  const listener = net.createServer((client) => {
    const target = net.connect(upstream, "127.0.0.1");
    for (const socket of [client, target]) {
      sockets.add(socket);
      socket.on("close", () => sockets.delete(socket));
      socket.on("error", () => {});
    }
    client.pipe(target);
    target.pipe(client);
    client.on("close", () => target.destroy());
    target.on("close", () => client.destroy());
  });
  return new Promise((resolve) => {
    listener.listen(0, "127.0.0.1", () =>
      resolve({
        port: listener.address().port,
        cut: () => {
          for (const socket of sockets) socket.destroy();
        },
        close: () => new Promise((done) => {
          for (const socket of sockets) socket.destroy();
          listener.close(done);
        }),
      }),
    );
  });
}

/** An HTTP proxy to the hub that refuses WebSocket upgrades (403), as corporate proxies do,
 * and passes every other request through, streaming. */
function startRefusingProxy(upstream) {
  const counts = { refused: 0, passed: 0 };
  const proxy = http.createServer((request, response) => {
    counts.passed += 1;
    const forward = http.request(
      { host: "127.0.0.1", port: upstream, method: request.method, path: request.url, headers: request.headers },
      (answer) => {
        response.writeHead(answer.statusCode, answer.headers);
        answer.pipe(response);
      },
    );
    forward.on("error", () => response.destroy());
    request.pipe(forward);
  });
  proxy.on("upgrade", (_request, socket) => {
    counts.refused += 1;
    socket.end("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
  });
  return new Promise((resolve) => {
    proxy.listen(0, "127.0.0.1", () =>
      resolve({
        port: proxy.address().port,
        counts,
        close: () => new Promise((done) => {
          proxy.closeAllConnections();
          proxy.close(done);
        }),
      }),
    );
  });
}

/** Runs the tether CLI; resolves to its stdout. */
function cli(args) {
  return new Promise((resolve, reject) => {
    execFile(tether, args, { timeout: LIMIT * 3 }, (error, stdout, stderr) =>
      error ? reject(new Error(`tether ${args.join(" ")}: ${stderr || error.message}`)) : resolve(stdout),
    );
  });
}

before(async () => {
  tetherPort = await freePort();
  server = spawn(tether, ["serve", "--listen", `127.0.0.1:${tetherPort}`, "--key", KEY], {
    stdio: ["ignore", "ignore", "inherit"],
  });
  await waitForPort(tetherPort);
  proxy = await startProxy(tetherPort);
  site = await startExampleServer({ root, tether, key: KEY });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox", "--headless=new"],
  });
});

after(async () => {
  await browser?.close();
  await site?.close();
  await proxy?.close();
  server?.kill("SIGTERM");
});

/** A page with the package loaded, its console and errors kept for failures. */
async function page() {
  const page = await browser.newPage();
  const problems = [];
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console: ${message.text()}`);
  });
  await page.goto(`${site.url}/tests/blank.html`);
  await page.evaluate(async () => {
    window.tether = await import("/js/dist/index.js");
  });
  page.problems = problems;
  return page;
}

const direct = () => `ws://127.0.0.1:${tetherPort}/`;
const proxied = () => `ws://127.0.0.1:${proxy.port}/`;

test("connects with a token callback, subscribes, and publishes with acknowledgement", async () => {
  const tab = await page();
  const result = await tab.evaluate(
    async ({ url, limit }) => {
      const reasons = [];
      const client = new tether.Client(url, {
        authCallback: async (reason) => {
          reasons.push(reason);
          return (await fetch("/token?client=alice")).text();
        },
      });
      const states = [];
      client.on("statechange", (change) => states.push(change.current));
      await client.connected();
      const news = client.channel("news");
      const received = [];
      const subscription = news.subscribe();
      await subscription.attached;
      for (let n = 0; n < 20; n += 1) {
        await news.publish("n", `message ${n}`);
      }
      const timeout = setTimeout(() => subscription[Symbol.asyncIterator]().return(), limit);
      for await (const message of subscription) {
        received.push({ text: message.text, publisher: message.publisher, serial: message.position.serial });
        if (received.length === 20) break;
      }
      clearTimeout(timeout);
      await client.close();
      return { reasons, states, received, state: client.state };
    },
    { url: direct(), limit: LIMIT },
  );
  assert.deepEqual(result.reasons, ["initial"]);
  assert.deepEqual(result.states.slice(0, 2), ["connecting", "connected"]);
  assert.equal(result.state, "closed");
  assert.deepEqual(
    result.received.map((m) => m.text),
    Array.from({ length: 20 }, (_, n) => `message ${n}`),
  );
  assert.ok(result.received.every((m) => m.publisher === "alice"));
  const serials = result.received.map((m) => m.serial);
  assert.deepEqual(serials, serials.map((_, i) => serials[0] + i), "consecutive serials");
  assert.deepEqual(tab.problems, []);
  await tab.close();
});

test("a dropped socket resumes the session: nothing published meanwhile is lost or repeated", async () => {
  const tab = await page();
  await tab.evaluate(async ({ url }) => {
    const client = new tether.Client(url, {
      authCallback: async () => (await fetch("/token?client=bob")).text(),
    });
    window.states = [];
    window.received = [];
    window.gaps = [];
    client.on("statechange", (change) => window.states.push(change.current));
    await client.connected();
    const channel = client.channel("resume");
    channel.onDiscontinuity((gap) => window.gaps.push(gap));
    await channel.subscribe((message) => window.received.push(message.text));
    window.client = client;
  }, { url: proxied() });
  await cli(["pub", "resume", "before {n}", "--count", "50", "--key", KEY, "--url", direct()]);
  await tab.waitForFunction(() => window.received.length === 50, null, { timeout: LIMIT });
  // Every connection through the proxy is cut; the publisher goes on meanwhile.
  proxy.cut();
  await cli(["pub", "resume", "after {n}", "--count", "50", "--key", KEY, "--url", direct()]);
  await tab.waitForFunction(() => window.received.length >= 100, null, { timeout: LIMIT });
  await new Promise((resolve) => setTimeout(resolve, 300)); // room for a duplicate to show
  const outcome = await tab.evaluate(async () => {
    const result = { received: window.received, states: window.states, gaps: window.gaps, state: window.client.state };
    await window.client.close();
    return result;
  });
  const expected = [
    ...Array.from({ length: 50 }, (_, n) => `before ${n}`),
    ...Array.from({ length: 50 }, (_, n) => `after ${n}`),
  ];
  assert.deepEqual(outcome.received, expected);
  assert.deepEqual(outcome.gaps, []);
  assert.ok(outcome.states.includes("disconnected"), `the cut was seen: ${outcome.states}`);
  assert.equal(outcome.state, "connected");
  assert.deepEqual(tab.problems, []);
  await tab.close();
});

test("a token about to expire is renewed in band, without reconnecting", async () => {
  const tab = await page();
  const outcome = await tab.evaluate(async ({ url, limit }) => {
    const reasons = [];
    // 12 s tokens: the client renews each halfway (§6.8), so the second renewal comes as
    // the first token expires — the connection outlives it.
    const client = new tether.Client(url, {
      authCallback: async (reason) => {
        reasons.push(reason);
        return (await fetch("/token?client=carol&ttl=12")).text();
      },
    });
    const states = [];
    client.on("statechange", (change) => states.push(change.current));
    await client.connected();
    const started = performance.now();
    while (reasons.filter((r) => r === "renewal").length < 2 && performance.now() - started < limit) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const channel = client.channel("renewed");
    const received = [];
    await channel.subscribe((message) => received.push(message.text));
    await channel.publish("n", "still here");
    while (received.length < 1 && performance.now() - started < limit) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await client.close();
    return { reasons, states, received };
  }, { url: direct(), limit: LIMIT });
  assert.deepEqual(outcome.reasons, ["initial", "renewal", "renewal"]);
  assert.deepEqual(outcome.states, ["connecting", "connected", "closing", "closed"], "never disconnected");
  assert.deepEqual(outcome.received, ["still here"]);
  assert.deepEqual(tab.problems, []);
  await tab.close();
});

test("1,000 messages from a Rust publisher arrive once and in order", async () => {
  const tab = await page();
  await tab.evaluate(async ({ url }) => {
    const client = new tether.Client(url, {
      authCallback: async () => (await fetch("/token?client=dave")).text(),
    });
    window.received = [];
    const subscription = client.channel("bulk").subscribe();
    await subscription.attached;
    window.client = client;
    (async () => {
      for await (const message of subscription) window.received.push(message.text);
    })();
  }, { url: direct() });
  await cli(["pub", "bulk", "m {n}", "--count", "1000", "--key", KEY, "--url", direct()]);
  await tab.waitForFunction(() => window.received.length >= 1000, null, { timeout: LIMIT });
  await new Promise((resolve) => setTimeout(resolve, 300));
  const received = await tab.evaluate(async () => {
    await window.client.close();
    return window.received;
  });
  assert.deepEqual(received, Array.from({ length: 1000 }, (_, n) => `m ${n}`));
  assert.deepEqual(tab.problems, []);
  await tab.close();
});

test("with WebSocket unavailable the client uses the HTTP binding through fetch", async () => {
  const tab = await page();
  const outcome = await tab.evaluate(async ({ url, limit }) => {
    const client = new tether.Client(url, {
      authCallback: async () => (await fetch("/token?client=erin")).text(),
      httpOnly: true,
    });
    await client.connected();
    const channel = client.channel("over-http");
    const received = [];
    await channel.subscribe((message) => received.push(message.text));
    for (let n = 0; n < 30; n += 1) await channel.publish("n", `h${n}`);
    const started = performance.now();
    while (received.length < 30 && performance.now() - started < limit) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const history = await channel.history({ direction: "forwards", limit: 5 });
    await client.close();
    return { received, history: history.messages.map((m) => m.text) };
  }, { url: direct(), limit: LIMIT });
  assert.deepEqual(outcome.received, Array.from({ length: 30 }, (_, n) => `h${n}`));
  assert.deepEqual(outcome.history, ["h0", "h1", "h2", "h3", "h4"]);
  assert.deepEqual(tab.problems, []);
  await tab.close();
});

test("behind a proxy that refuses WebSocket upgrades the client falls back to the HTTP binding", async () => {
  const refusing = await startRefusingProxy(tetherPort);
  const tab = await page();
  const outcome = await tab.evaluate(async ({ url, limit }) => {
    const updates = [];
    const client = new tether.Client(url, {
      authCallback: async () => (await fetch("/token?client=frank")).text(),
    });
    client.on("update", (reason) => updates.push(reason.message));
    await client.connected();
    const channel = client.channel("blocked");
    const received = [];
    await channel.subscribe((message) => received.push(message.text));
    for (let n = 0; n < 20; n += 1) await channel.publish("n", `b${n}`);
    const started = performance.now();
    while (received.length < 20 && performance.now() - started < limit) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await client.close();
    return { received, updates };
  }, { url: `ws://127.0.0.1:${refusing.port}/`, limit: LIMIT });
  await refusing.close();
  assert.deepEqual(outcome.received, Array.from({ length: 20 }, (_, n) => `b${n}`));
  assert.ok(outcome.updates.some((u) => u.includes("WebSocket blocked")), outcome.updates.join("; "));
  assert.ok(refusing.counts.refused >= 1, "WebSocket was tried");
  assert.ok(refusing.counts.passed >= 3, "the HTTP binding went through the proxy");
  // Chromium logs the refused upgrade and the probe's status itself; nothing else.
  const network = /WebSocket connection to .* failed|Failed to load resource/;
  assert.deepEqual(tab.problems.filter((p) => !network.test(p)), []);
  await tab.close();
});

test("a WebSocket refused because nothing listens is an ordinary failed attempt, not a fallback", async () => {
  const port = await freePort();
  const tab = await page();
  const outcome = await tab.evaluate(async ({ url }) => {
    const updates = [];
    const states = [];
    const client = new tether.Client(url, {
      authCallback: async () => (await fetch("/token?client=gina")).text(),
    });
    client.on("update", (reason) => updates.push(reason.message));
    client.on("statechange", (change) => states.push(change.current));
    while (!states.includes("disconnected")) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await client.close();
    return { updates, states };
  }, { url: `ws://127.0.0.1:${port}/` });
  assert.deepEqual(outcome.updates, [], "no fallback");
  assert.deepEqual(outcome.states.slice(0, 2), ["connecting", "disconnected"]);
  await tab.close();
});

test("the browser coming back online retries at once instead of after the backoff", async () => {
  const port = await freePort();
  const tab = await page();
  const outcome = await tab.evaluate(async ({ url, limit }) => {
    const changes = [];
    const client = new tether.Client(url, {
      authCallback: async () => (await fetch("/token?client=hana")).text(),
    });
    client.on("statechange", (change) => changes.push({ state: change.current, at: performance.now() }));
    const started = performance.now();
    const disconnects = () => changes.filter((c) => c.state === "disconnected").length;
    // Past the first retry, attempts are at least 100 ms apart (§6.4).
    while (disconnects() < 2 && performance.now() - started < limit) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    const before = changes.length;
    const online = performance.now();
    window.dispatchEvent(new Event("online"));
    const next = changes[before];
    await client.close();
    return { disconnects: disconnects(), next: next && { state: next.state, after: next.at - online } };
  }, { url: `ws://127.0.0.1:${port}/`, limit: LIMIT });
  assert.equal(outcome.disconnects, 2);
  assert.equal(outcome.next?.state, "connecting", "an attempt began at the online event");
  assert.ok(outcome.next.after < 50, `it began ${outcome.next.after} ms after it`);
  await tab.close();
});

test("review regressions: iterators end on return, close cancels the auto-connect, refused subscribes register nothing, bad arguments are coded", async () => {
  const tab = await page();
  const outcome = await tab.evaluate(async ({ url, limit }) => {
    const token = async () => (await fetch("/token?client=ivan")).text();
    const result = {};
    // A loop waiting on an iterator ends when the iterator is returned.
    const client = new tether.Client(url, { authCallback: token });
    const subscription = client.channel("quiet").subscribe();
    await subscription.attached;
    const iterator = subscription[Symbol.asyncIterator]();
    const waiting = iterator.next();
    setTimeout(() => iterator.return(), 50);
    result.returned = await Promise.race([
      waiting.then((r) => r.done),
      new Promise((resolve) => setTimeout(() => resolve("hung"), limit)),
    ]);
    // Bad arguments: coded refusals; an ArrayBuffer is sent as its bytes.
    const channel = client.channel("args");
    const codes = [];
    for (const call of [() => channel.publish(42, "x"), () => channel.publish("n", "x", { id: 5 }),
      () => channel.publish("n", null), () => channel.publish("n", { a: 1 }), () => channel.history("x")]) {
      codes.push(await call().then(() => "resolved", (e) => e.code));
    }
    result.codes = codes;
    await channel.publish("n", new Uint8Array([1, 2, 3]).buffer);
    const page = await channel.history({ limit: 1 });
    result.bytes = Array.from(page.messages[0].data);
    // A subscribe refused (the client is closed) registers nothing for later.
    await client.close();
    const later = [];
    result.refused = await client.channel("later").subscribe((m) => later.push(m.text)).then(() => "attached", (e) => e.code);
    client.connect();
    await client.connected();
    const now = [];
    await client.channel("later").subscribe((m) => now.push(m.text));
    await client.channel("later").publish("n", "hi");
    const started = performance.now();
    while (now.length < 1 && performance.now() - started < limit) await new Promise((r) => setTimeout(r, 20));
    result.later = later;
    result.now = now;
    await client.close();
    // close() right after the constructor: never connects.
    const quiet = new tether.Client(url, { authCallback: token });
    const states = [];
    quiet.on("statechange", (c) => states.push(c.current));
    await quiet.close();
    await new Promise((r) => setTimeout(r, 500));
    result.closedStates = states;
    result.closedState = quiet.state;
    // connected() on a failed client rejects with the failure's code.
    const failing = new tether.Client(url, { authCallback: async () => "not a token" });
    result.failedCode = await failing.connected().then(() => "connected", (e) => e.code);
    await failing.close();
    return result;
  }, { url: direct(), limit: 5000 });
  assert.equal(outcome.returned, true);
  assert.deepEqual(outcome.codes, ["bad_request", "bad_request", "bad_request", "bad_request", "bad_request"]);
  assert.deepEqual(outcome.bytes, [1, 2, 3]);
  assert.equal(outcome.refused, "connection_closed");
  assert.deepEqual(outcome.later, []);
  assert.deepEqual(outcome.now, ["hi"]);
  assert.equal(outcome.closedState, "closed");
  assert.ok(!outcome.closedStates.includes("connecting"), outcome.closedStates.join(","));
  assert.equal(outcome.failedCode, "token_invalid");
  await tab.close();
});

test("the example page shows its state and messages (screenshot saved)", async () => {
  const tab = await browser.newPage({ viewport: { width: 1000, height: 620 } });
  const problems = [];
  tab.on("pageerror", (error) => problems.push(error.message));
  tab.on("console", (message) => {
    if (message.type() === "error") problems.push(`console: ${message.text()}`);
  });
  await tab.goto(`${site.url}/example/?server=${encodeURIComponent(direct())}&channel=lobby&client=ada`);
  await tab.waitForSelector("#state.connected", { timeout: LIMIT }).catch((error) => {
    throw new Error(`${error.message}; page problems: ${problems.join("; ")}`);
  });
  for (const text of ["Hello from the browser", "Every message once, in order"]) {
    await tab.fill("#text", text);
    await tab.click("button:text('Send')");
  }
  await cli(["pub", "lobby", "And one from a Rust publisher", "--key", KEY, "--url", direct()]);
  await tab.waitForFunction(() => document.querySelectorAll("#messages li").length === 3, null, { timeout: LIMIT });
  await tab.click("#drop");
  await tab.waitForSelector("#state.connected", { timeout: LIMIT });
  const log = await tab.locator("#log li").allTextContents();
  assert.ok(log.some((line) => line.includes("dropped")), log.join("\n"));
  await mkdir(path.join(here, "output"), { recursive: true });
  const file = path.join(here, "output", "example.png");
  await tab.screenshot({ path: file });
  const messages = await tab.locator("#messages li").allTextContents();
  assert.equal(messages.length, 3);
  assert.ok(messages[2].includes("And one from a Rust publisher"));
  assert.deepEqual(problems, []);
  await tab.close();
});
