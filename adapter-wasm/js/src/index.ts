// The tether browser client. Every protocol decision (authentication, heartbeats,
// acknowledgements, resume, backoff, falling back to the HTTP binding) is made by the
// tether-core client state machine, compiled to wasm; this module only carries inputs in
// (time, bytes, transport events) and outputs out (frames, timers, events), over the
// browser's WebSocket, fetch and setTimeout. The protocol: docs/protocol.md.

import init, { Core, DownReader, upBody } from "./wasm/tether_wasm.js";

await init();

/** The connection states of docs/protocol.md §6.2. */
export type ConnectionState =
  | "initialized"
  | "connecting"
  | "connected"
  | "disconnected"
  | "suspended"
  | "closing"
  | "closed"
  | "failed";

/** Why the client asks for a token. */
export type TokenReason = "initial" | "renewal" | "expired";

/** A channel position: the epoch (64 bits, as a decimal string) and the serial. */
export interface Position {
  epoch: string;
  serial: number;
}

/** An error of the protocol: its stable `code` (e.g. `token_expired`) and number (§8). */
export interface TetherError extends Error {
  code: string;
  number: number;
}

/** A message delivered on a channel, once and in order. */
export interface Message {
  channel: string;
  /** The message id (the hub drops duplicates of an id). */
  id: string;
  name: string;
  data: Uint8Array;
  /** `data` decoded as UTF-8. */
  text: string;
  /** The publisher's client id. */
  publisher: string;
  position: Position;
  /** When the hub accepted it, in Unix milliseconds. */
  timestamp: number;
}

/** A bound of a history query: a position or a time (Unix ms), inclusive. */
export type HistoryBound = { position: Position } | { time: number };

/** A history query (§7.5): default the newest 100 messages, newest first. */
export interface HistoryQuery {
  start?: HistoryBound;
  end?: HistoryBound;
  direction?: "backwards" | "forwards";
  /** 1 to 1000. */
  limit?: number;
}

/** A page of history; `next` asks for the following page. */
export interface HistoryPage {
  messages: Message[];
  next?: HistoryQuery;
}

/** A change of the connection state. */
export interface StateChange {
  previous: ConnectionState;
  current: ConnectionState;
  reason?: { code: string; number: number; message: string };
}

/** Continuity lost on a channel: messages after `last` up to `resumedAfter` may be missing. */
export interface Discontinuity {
  channel: string;
  last?: Position;
  resumedAfter: Position;
  reason?: { code: string; number: number; message: string };
}

export interface ClientOptions {
  /** Gets a token (a JWT from your backend) whenever the client needs one, also for
   * renewal in band before the current one expires. */
  authCallback?: (reason: TokenReason) => Promise<string>;
  /** An API key instead of tokens: for trusted code only, never in a public page. */
  apiKey?: { name: string; secret: string };
  /** The client id to ask for (API keys only; tokens carry their own). */
  clientId?: string;
  /** Whether this client receives its own messages (default true). */
  echo?: boolean;
  /** Fall back to the HTTP binding when WebSocket is blocked (default true, §6.10). */
  fallback?: boolean;
  /** Use the HTTP binding only (default false). */
  httpOnly?: boolean;
  /** How long a WebSocket may take to open before it counts as blocked (ms, default 5000). */
  websocketTimeout?: number;
  /** How long to keep to the HTTP binding before trying WebSocket again (ms, default 300000). */
  probeInterval?: number;
  /** Connect at once (default true); otherwise call `connect()`. */
  autoConnect?: boolean;
}

type CoreEvent = { type: string; [key: string]: any };
type Output =
  | { kind: "open"; transport: number; http: boolean }
  | { kind: "send"; transport: number; bytes: Uint8Array }
  | { kind: "close"; transport: number; reason: string }
  | { kind: "event"; event: CoreEvent };

const now = () => performance.now();
const decoder = new TextDecoder();
const encoder = new TextEncoder();

function toMessage(raw: any): Message {
  return { ...raw, text: decoder.decode(raw.data) };
}

function toError(raw: { code: string; number: number; message: string }): TetherError {
  const error = new Error(raw.message) as TetherError;
  error.code = raw.code;
  error.number = raw.number;
  return error;
}

/** Coded errors the package raises itself (§8's codes). */
const badRequest = (message: string) => toError({ code: "bad_request", number: 40000, message });
const gone = (message: string) => toError({ code: "gone", number: 41000, message });

/** A payload as bytes: a string (UTF-8), an ArrayBuffer, or a view of one. */
function payload(data: unknown): Uint8Array {
  if (typeof data === "string") return encoder.encode(data);
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw badRequest("data is a string, an ArrayBuffer or a view of one");
}

interface Transport {
  send(bytes: Uint8Array): void;
  /** The core gave it up. */
  close(): void;
  /** Fails it as a network failure would (reported to the core as closed). */
  drop(): void;
}

/** A tether client: one connection to a hub, its session and its channels. */
export class Client {
  readonly url: string;
  private readonly options: ClientOptions;
  private readonly core: Core;
  private readonly transports = new Map<number, Transport>();
  private readonly channels = new Map<string, Channel>();
  private readonly publishes = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
  private readonly histories = new Map<number, { resolve: (p: HistoryPage) => void; reject: (e: Error) => void }>();
  private readonly listeners = new Map<string, Set<(value: any) => void>>();
  /** Events taken from the core, not yet dispatched: emptied by every `drive()`, so it holds
   * at most what one core call produced (bounded by the core's own limits). */
  private readonly events: CoreEvent[] = [];
  private dispatching = false;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private readonly online = () => this.input((core, t) => core.retryNow(t));
  private autoConnect = false;
  private lastReason: { code: string; number: number; message: string } | undefined;
  /** @internal Whether responses of the HTTP binding come buffered on the way: poll. */
  buffered = false;

  /** A client of the hub at `url` (`ws://` or `wss://`); connects at once unless
   * `autoConnect` is false. */
  constructor(url: string, options: ClientOptions = {}) {
    this.url = url;
    this.options = options;
    if (!options.apiKey && !options.authCallback) {
      throw new TypeError("tether: give authCallback (tokens) or apiKey");
    }
    const seed = new Uint8Array(32);
    crypto.getRandomValues(seed);
    this.core = new Core(seed, now(), {
      apiKey: options.apiKey,
      clientId: options.clientId,
      echo: options.echo,
      fallback: options.fallback,
      httpOnly: options.httpOnly,
      websocketTimeout: options.websocketTimeout,
      probeInterval: options.probeInterval,
    });
    if (options.autoConnect !== false) {
      // After the caller's own code: listeners it adds at once see every state change (and
      // a close() it calls at once cancels it).
      this.autoConnect = true;
      queueMicrotask(() => {
        if (this.autoConnect) this.connect();
      });
    }
  }

  /** The connection state now. */
  get state(): ConnectionState {
    return this.core.state() as ConnectionState;
  }

  /** Connects (again, after `close()` or a failure). */
  connect(): void {
    this.autoConnect = false;
    // The browser coming back online retries at once instead of after the backoff.
    globalThis.addEventListener?.("online", this.online);
    this.input((core, t) => core.connect(t));
  }

  /** Closes the connection; resolves once it is closed. */
  close(): Promise<void> {
    this.autoConnect = false;
    globalThis.removeEventListener?.("online", this.online);
    const closed = new Promise<void>((resolve) => {
      const done = () => {
        const state = this.state;
        if (state === "closed" || state === "failed" || state === "initialized") {
          off();
          resolve();
        }
      };
      const off = this.on("statechange", done);
      queueMicrotask(done);
    });
    this.input((core, t) => core.close(t));
    return closed;
  }

  /** The channel `name` (the same object for the same name). */
  channel(name: string): Channel {
    let channel = this.channels.get(name);
    if (!channel) {
      channel = new Channel(this, name);
      this.channels.set(name, channel);
    }
    return channel;
  }

  /** Listens to `statechange` (a {@link StateChange}) or `update` (conditions changed
   * without a state change: a resume refused, a renewal failed). Returns the function
   * that stops listening. */
  on(event: "statechange", listener: (change: StateChange) => void): () => void;
  on(event: "update", listener: (reason: TetherError) => void): () => void;
  on(event: string, listener: (value: any) => void): () => void {
    let set = this.listeners.get(event);
    if (!set) {
      set = new Set();
      this.listeners.set(event, set);
    }
    set.add(listener);
    return () => set!.delete(listener);
  }

  /** Drops the transport now, as a network failure would: the client reconnects and
   * resumes its session, losing and repeating nothing (for demonstrations and tests). */
  dropTransport(): void {
    for (const transport of [...this.transports.values()]) transport.drop();
  }

  /** Resolves once the client is connected (rejects if it fails or is closed first). */
  connected(): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const state = this.state;
        if (state === "connected") {
          off();
          resolve();
        } else if (state === "failed" || state === "closed") {
          off();
          const fallback = state === "failed"
            ? { code: "connection_failed", number: 50303, message: "the connection failed" }
            : { code: "connection_closed", number: 50302, message: "the connection is closed" };
          reject(toError(state === "failed" && this.lastReason ? this.lastReason : fallback));
        }
      };
      const off = this.on("statechange", check);
      check();
    });
  }

  // ----- internals, used by channels and transports -----

  /** @internal */
  input<T>(step: (core: Core, now: number) => T): T {
    const result = step(this.core, now());
    this.drive();
    return result;
  }

  /** @internal A request whose answer comes as an event with its id: tracked before
   * the outputs are carried out, so an answer among them finds it. */
  request<T>(map: "publishes" | "histories", step: (core: Core, now: number) => number): Promise<T> {
    let id: number;
    try {
      id = step(this.core, now());
    } catch (error) {
      this.drive();
      return Promise.reject(error);
    }
    const answer = new Promise<T>((resolve, reject) => {
      (this[map] as Map<number, any>).set(id, { resolve, reject });
    });
    this.drive();
    return answer;
  }

  private emit(event: string, value: unknown): void {
    for (const listener of [...(this.listeners.get(event) ?? [])]) {
      try {
        listener(value);
      } catch (error) {
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }

  /** Carries out the core's outputs: transports now, events in order (a listener that
   * calls the client adds to the queue instead of overtaking it). */
  private drive(): void {
    const outputs = this.core.takeOutputs() as Output[];
    for (const output of outputs) {
      switch (output.kind) {
        case "open":
          this.transports.set(
            output.transport,
            output.http
              ? new HttpTransport(this, output.transport)
              : new SocketTransport(this, output.transport),
          );
          break;
        case "send":
          this.transports.get(output.transport)?.send(output.bytes);
          break;
        case "close":
          this.transports.get(output.transport)?.close();
          this.transports.delete(output.transport);
          break;
        case "event":
          this.events.push(output.event);
          break;
      }
    }
    this.schedule();
    if (this.dispatching) {
      return;
    }
    this.dispatching = true;
    try {
      let event;
      while ((event = this.events.shift()) !== undefined) {
        this.dispatch(event);
      }
    } finally {
      this.dispatching = false;
    }
  }

  private schedule(): void {
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    const wait = this.core.timeoutIn(now());
    if (wait !== undefined) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.input((core, t) => core.timeout(t));
      }, Math.ceil(wait));
    }
  }

  private dispatch(event: CoreEvent): void {
    switch (event.type) {
      case "statechange":
        this.lastReason = event.reason;
        this.emit("statechange", {
          previous: event.previous,
          current: event.current,
          reason: event.reason,
        });
        if (event.current === "closed" || event.current === "failed") {
          this.failAll(event.reason ?? { code: "connection_closed", number: 0, message: "closed" });
        }
        break;
      case "update":
        this.emit("update", toError(event.reason));
        break;
      case "token":
        this.fetchToken(event.reason as TokenReason);
        break;
      case "publish": {
        const waiting = this.publishes.get(event.id);
        this.publishes.delete(event.id);
        if (event.error) waiting?.reject(toError(event.error));
        else waiting?.resolve();
        break;
      }
      case "history": {
        const waiting = this.histories.get(event.id);
        this.histories.delete(event.id);
        if (event.error) waiting?.reject(toError(event.error));
        else waiting?.resolve({ messages: event.messages.map(toMessage), next: event.next });
        break;
      }
      case "attached":
      case "detached":
      case "message":
      case "discontinuity": {
        const name = event.type === "message" ? event.message.channel : event.channel;
        this.channels.get(name)?.handle(event);
        break;
      }
    }
  }

  private failAll(reason: { code: string; number: number; message: string }): void {
    for (const [, waiting] of this.histories) waiting.reject(toError(reason));
    this.histories.clear();
  }

  private fetchToken(reason: TokenReason): void {
    const callback = this.options.authCallback;
    if (!callback) {
      this.input((core, t) => core.tokenUnavailable(t, "no authCallback"));
      return;
    }
    Promise.resolve()
      .then(() => callback(reason))
      .then(
        (token) => this.input((core, t) => core.provideToken(t, String(token))),
        (error) => this.input((core, t) => core.tokenUnavailable(t, String(error?.message ?? error))),
      );
  }

  /** @internal The HTTP binding's base URL. */
  httpUrl(): string {
    return this.url.replace(/^ws(s?):/i, "http$1:");
  }
}

/** A WebSocket transport (§2.2): one frame per binary message. */
class SocketTransport implements Transport {
  private readonly socket: WebSocket;
  private opened = false;
  private done = false;

  constructor(client: Client, id: number) {
    const socket = new WebSocket(client.url);
    this.socket = socket;
    socket.binaryType = "arraybuffer";
    socket.onopen = () => {
      this.opened = true;
      client.input((core, t) => core.transportOpen(t, id));
    };
    socket.onmessage = (message) => {
      if (message.data instanceof ArrayBuffer) {
        const bytes = new Uint8Array(message.data);
        client.input((core, t) => core.transportBytes(t, id, bytes));
      } else {
        // Text messages break the protocol (§2.2): the transport is lost.
        this.close();
        client.input((core, t) => core.transportClosed(t, id, "a text message"));
      }
    };
    socket.onclose = (event) => {
      if (this.done) return;
      this.done = true;
      const why = `WebSocket closed (${event.code}${event.reason ? ` ${event.reason}` : ""})`;
      if (this.opened) {
        client.input((core, t) => core.transportClosed(t, id, why));
        return;
      }
      // A browser does not show why an upgrade failed. Blocked means something answered
      // over HTTP (§6.10): a plain request to the same URL that gets any answer (opaque,
      // whatever its status) says so; one that gets none is an ordinary failed attempt.
      fetch(client.httpUrl(), { method: "GET", mode: "no-cors", cache: "no-store" }).then(
        () => client.input((core, t) => core.transportBlocked(t, id, `${why} before it opened; HTTP answers`)),
        () => client.input((core, t) => core.transportClosed(t, id, `${why} before it opened`)),
      );
    };
  }

  send(bytes: Uint8Array): void {
    if (this.socket.readyState === WebSocket.OPEN) this.socket.send(bytes);
  }

  drop(): void {
    // The `close` event reports it, as for any closed socket.
    this.socket.close(1000);
  }

  close(): void {
    this.done = true;
    this.socket.onopen = this.socket.onmessage = this.socket.onclose = null;
    try {
      this.socket.close(1000);
    } catch {
      // Already closing.
    }
  }
}

/** How long a streamed down response has to show its `open` mark before the client takes
 * it that something on the way buffers responses, and polls instead (§2.5). */
const PROBE_MS = 2000;
/** Most frames in one up request. */
const UP_BATCH = 64;

/** The HTTP binding (§2.5): a POST opens the transport, GETs bring the hub's frames
 * (streamed, or polled behind a buffering proxy), POSTs carry ours, one at a time, in order. */
class HttpTransport implements Transport {
  private readonly client: Client;
  private readonly id: number;
  /** Frames waiting for the previous up request: what the core transmits, bounded by its
   * publish queue and one frame per outstanding request (as for the Rust clients). */
  private readonly queue: Uint8Array[] = [];
  private readonly abort = new AbortController();
  private transport: string | undefined;
  private seq = 0;
  private sending = false;
  private done = false;

  constructor(client: Client, id: number) {
    this.client = client;
    this.id = id;
    // fetch needs no connection of its own first: the transport is open at once, and the
    // core's first frame (`connect`) opens it on the hub.
    queueMicrotask(() => client.input((core, t) => core.transportOpen(t, id)));
  }

  send(bytes: Uint8Array): void {
    this.queue.push(bytes);
    void this.pump();
  }

  close(): void {
    this.done = true;
    this.abort.abort();
  }

  drop(): void {
    this.lost("dropped");
  }

  private lost(reason: string): void {
    if (this.done) return;
    this.done = true;
    this.abort.abort();
    this.client.input((core, t) => core.transportClosed(t, this.id, reason));
  }

  private headers(extra: Record<string, string>): Record<string, string> {
    return { "content-type": "application/x-tether-stream", ...extra };
  }

  /** Sends queued frames, one request at a time. */
  private async pump(): Promise<void> {
    if (this.sending || this.done) return;
    this.sending = true;
    try {
      while (this.queue.length > 0 && !this.done) {
        const frames = this.queue.splice(0, UP_BATCH);
        const body = upBody(frames);
        if (this.transport === undefined) {
          await this.open(body);
        } else {
          const response = await fetch(this.client.httpUrl(), {
            method: "POST",
            headers: this.headers({
              "x-tether-transport": this.transport,
              "x-tether-seq": String(this.seq),
            }),
            body: body as unknown as BodyInit,
            signal: this.abort.signal,
          });
          await response.arrayBuffer();
          if (response.status !== 204) {
            this.lost(`an up request was answered ${response.status}`);
            return;
          }
          this.seq += 1;
        }
      }
    } catch (error: any) {
      this.lost(`the HTTP binding failed: ${error?.message ?? error}`);
    } finally {
      this.sending = false;
    }
  }

  /** The opening POST: its answer names the transport and brings the first frames. */
  private async open(body: Uint8Array): Promise<void> {
    const response = await fetch(this.client.httpUrl(), {
      method: "POST",
      headers: this.headers({}),
      body: body as unknown as BodyInit,
      signal: this.abort.signal,
    });
    const transport = response.headers.get("x-tether-transport");
    if (response.status !== 200 || !transport) {
      this.lost(`the HTTP binding answered ${response.status}`);
      return;
    }
    this.transport = transport;
    const reader = new DownReader();
    if ((await this.read(response, reader, false)) === "end") {
      void this.down(reader);
    }
  }

  /** Asks for down responses one after another. */
  private async down(reader: DownReader): Promise<void> {
    try {
      while (!this.done) {
        const poll = this.client.buffered;
        const response = await fetch(this.client.httpUrl(), {
          method: "GET",
          headers: { "x-tether-transport": this.transport!, "x-tether-mode": poll ? "poll" : "stream" },
          signal: this.abort.signal,
        });
        if (response.status !== 200) {
          this.lost(`the HTTP binding answered ${response.status}`);
          return;
        }
        const ended = await this.read(response, reader, !poll);
        if (ended !== "end") return;
      }
    } catch (error: any) {
      this.lost(`the HTTP stream failed: ${error?.message ?? error}`);
    }
  }

  /** Reads one down response to its `end` mark, handing frames to the core. A streamed
   * one must show its `open` mark within the probe, or the client polls from then on. */
  private async read(response: Response, reader: DownReader, probe: boolean): Promise<"end" | "lost"> {
    const body = response.body!.getReader();
    let opened = !probe;
    const timer = probe
      ? setTimeout(() => {
          if (!opened) {
            this.client.buffered = true;
            this.lost("the HTTP binding's stream is buffered on the way: polling from now on");
          }
        }, PROBE_MS)
      : undefined;
    try {
      for (;;) {
        let item;
        while ((item = reader.next()) !== undefined) {
          if (item === "open") {
            opened = true;
          } else if (item === "end") {
            return "end";
          } else if (!this.done) {
            const frame = item as Uint8Array;
            this.client.input((core, t) => core.transportBytes(t, this.id, frame));
          }
        }
        const { value, done } = await body.read();
        if (done) {
          this.lost("the HTTP stream was cut");
          return "lost";
        }
        reader.push(value);
      }
    } catch (error: any) {
      this.lost(`the HTTP stream failed: ${error?.message ?? error}`);
      return "lost";
    } finally {
      if (timer !== undefined) clearTimeout(timer);
    }
  }
}

/** A subscription's messages as an async iterator; ends when the channel is unsubscribed. */
export interface Subscription extends AsyncIterable<Message> {
  /** Resolves once the channel is attached. */
  readonly attached: Promise<void>;
}

/** A channel of a client: subscribe, publish, history. */
export class Channel {
  readonly name: string;
  private readonly client: Client;
  private readonly listeners = new Set<(message: Message) => void>();
  private readonly iterators = new Set<Queue>();
  private readonly discontinuityListeners = new Set<(d: Discontinuity) => void>();
  private attaching: Promise<void> | undefined;
  private settle: { resolve: () => void; reject: (e: Error) => void } | undefined;

  /** @internal */
  constructor(client: Client, name: string) {
    this.client = client;
    this.name = name;
  }

  /** Subscribes: with a listener, calls it for each message and resolves once attached;
   * without, returns an async iterator of the messages. */
  subscribe(listener: (message: Message) => void): Promise<void>;
  subscribe(): Subscription;
  subscribe(listener?: (message: Message) => void): Promise<void> | Subscription {
    const attached = this.attach();
    if (listener) {
      if (typeof listener !== "function") return Promise.reject(badRequest("the listener is a function"));
      // A subscribe that fails registers nothing.
      this.listeners.add(listener);
      attached.catch(() => this.listeners.delete(listener));
      return attached;
    }
    const queue = new Queue(() => this.iterators.delete(queue));
    this.iterators.add(queue);
    attached.catch((error) => queue.fail(error));
    return {
      attached,
      [Symbol.asyncIterator]: () => queue,
    };
  }

  /** Detaches: listeners are dropped and iterators end. */
  unsubscribe(): void {
    this.listeners.clear();
    for (const queue of [...this.iterators]) queue.end();
    this.iterators.clear();
    this.attaching = undefined;
    this.settle?.reject(gone("unsubscribed before the channel was attached"));
    this.settle = undefined;
    this.client.input((core, t) => core.detach(t, this.name));
  }

  /** Listens to discontinuities: continuity lost (history gone, epoch changed). */
  onDiscontinuity(listener: (discontinuity: Discontinuity) => void): () => void {
    this.discontinuityListeners.add(listener);
    return () => this.discontinuityListeners.delete(listener);
  }

  /** Publishes a message; resolves once the hub acknowledged it (its position taken),
   * rejects with a {@link TetherError} when it is refused. `id` makes retries safe: the hub
   * stores one message per id. */
  publish(
    name: string,
    data: string | ArrayBuffer | ArrayBufferView,
    options: { id?: string } = {},
  ): Promise<void> {
    let bytes: Uint8Array;
    try {
      if (typeof name !== "string") throw badRequest("the message name is a string");
      if (options?.id !== undefined && typeof options.id !== "string") throw badRequest("the message id is a string");
      bytes = payload(data);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.client.request<void>("publishes", (core, t) =>
      core.publish(t, this.name, name, bytes, options?.id),
    );
  }

  /** A page of the channel's history (default: the newest 100, newest first); needs a
   * connection. */
  history(query: HistoryQuery = {}): Promise<HistoryPage> {
    if (query === null || typeof query !== "object") return Promise.reject(badRequest("the query is an object"));
    return this.client.request<HistoryPage>("histories", (core, t) =>
      core.history(t, this.name, query),
    );
  }

  private attach(): Promise<void> {
    if (!this.attaching) {
      this.attaching = new Promise<void>((resolve, reject) => {
        this.settle = { resolve, reject };
      });
      try {
        this.client.input((core, t) => core.attach(t, this.name));
      } catch (error) {
        this.settle?.reject(error as Error);
        this.settle = undefined;
        const failed = this.attaching;
        this.attaching = undefined;
        return failed;
      }
    }
    return this.attaching;
  }

  /** @internal */
  handle(event: CoreEvent): void {
    switch (event.type) {
      case "attached":
        this.settle?.resolve();
        this.settle = undefined;
        break;
      case "detached":
        if (event.error) {
          const error = toError(event.error);
          this.settle?.reject(error);
          this.settle = undefined;
          this.attaching = undefined;
          for (const queue of [...this.iterators]) queue.fail(error);
          this.iterators.clear();
          this.listeners.clear();
        }
        break;
      case "message": {
        const message = toMessage(event.message);
        for (const listener of [...this.listeners]) {
          try {
            listener(message);
          } catch (error) {
            queueMicrotask(() => {
              throw error;
            });
          }
        }
        for (const queue of this.iterators) queue.push(message);
        break;
      }
      case "discontinuity":
        for (const listener of [...this.discontinuityListeners]) {
          try {
            listener(event as unknown as Discontinuity);
          } catch (error) {
            queueMicrotask(() => {
              throw error;
            });
          }
        }
        break;
    }
  }
}

/** The messages of one iterator, waiting for the application (unbounded, like the Rust
 * clients' subscriptions: what it holds is what the application subscribed to and has
 * not read). */
class Queue implements AsyncIterator<Message> {
  private readonly items: Message[] = [];
  /** Reads waiting for a message, in order (a loop and a stray `next()` may both wait). */
  private readonly waiting: { resolve: (r: IteratorResult<Message>) => void; reject: (e: Error) => void }[] = [];
  private ended = false;
  private error: Error | undefined;
  private readonly forget: () => void;

  constructor(forget: () => void) {
    this.forget = forget;
  }

  push(message: Message): void {
    if (this.ended) return;
    const reader = this.waiting.shift();
    if (reader) reader.resolve({ value: message, done: false });
    else this.items.push(message);
  }

  end(): void {
    this.ended = true;
    for (const reader of this.waiting.splice(0)) reader.resolve({ value: undefined, done: true });
  }

  fail(error: Error): void {
    if (this.ended) return;
    this.error = error;
    this.ended = true;
    for (const reader of this.waiting.splice(0)) reader.reject(error);
  }

  next(): Promise<IteratorResult<Message>> {
    const item = this.items.shift();
    if (item !== undefined) return Promise.resolve({ value: item, done: false });
    if (this.error) return Promise.reject(this.error);
    if (this.ended) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
    });
  }

  return(): Promise<IteratorResult<Message>> {
    this.items.length = 0;
    this.end();
    this.forget();
    return Promise.resolve({ value: undefined, done: true });
  }
}
