/**
 * The TLS engines without tsunagi code: one program, started per role by `bench/tls.ts`
 * ("engines"), with its options as one JSON argument. It prints JSON event lines on stdout
 * and takes commands on stdin, like `bench/load.ts`.
 *
 * Servers use one of three engines: `plain` (`Deno.listen`, TCP_NODELAY set), `node`
 * (`node:tls`, as the relay does, `setNoDelay(true)`) or `deno` (`Deno.listenTls`, which
 * offers no way to set TCP_NODELAY). Clients dial as tsunagi does: `Deno.connect`,
 * `setNoDelay(true)`, then `Deno.startTls`.
 *
 * - `forward`: bytes from the first port's connection to the second's (a relay's data
 *   path with nothing else), to read the engine's CPU per GiB.
 * - `echo2`: answers each request with two writes back to back (5 bytes, then 1): the
 *   second waits for the client's delayed ACK when Nagle's algorithm is on.
 * - `hold`: echoes whatever arrives; the bench reads the RSS per idle connection.
 *
 * @module
 */

import { Duplex } from "node:stream";
import * as tls from "node:tls";
import { Commands, emit } from "./_load_device.ts";

/** Server engines. */
export type Engine = "plain" | "node" | "deno" | "node-js";

/** Options of one process. */
export type EngineProcOptions =
  | {
    role: "server";
    engine: Engine;
    kind: "forward" | "echo2" | "hold";
    certFile: string;
    keyFile: string;
  }
  | { role: "send" | "recv"; port: number; caFile?: string; bytes: number }
  | { role: "probe"; port: number; caFile?: string; count: number }
  | { role: "hold"; port: number; caFile?: string; count: number };

/** What the servers need of a connection. */
interface Conn {
  read(p: Uint8Array): Promise<number | null>;
  write(p: Uint8Array): Promise<number>;
  close(): void;
}

const HOST = "127.0.0.1";

async function dial(port: number, caFile: string | undefined): Promise<Deno.Conn> {
  const tcp = await Deno.connect({ hostname: HOST, port });
  tcp.setNoDelay(true);
  if (caFile === undefined) return tcp;
  const conn = await Deno.startTls(tcp, {
    hostname: HOST,
    caCerts: [await Deno.readTextFile(caFile)],
  });
  await conn.handshake();
  return conn;
}

async function writeAll(conn: Conn, bytes: Uint8Array) {
  for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
}

/** Node sockets accepted and not taken yet. */
interface NodeQueue {
  queue: tls.TLSSocket[];
  wake: (() => void) | null;
}

/** Accepted connections of one listening port, as a pull queue. */
class Accepts {
  readonly port: number;
  readonly #next: (() => Promise<Conn>) | null;
  readonly #node: NodeQueue | null;

  private constructor(port: number, next: (() => Promise<Conn>) | null, node: NodeQueue | null) {
    this.port = port;
    this.#next = next;
    this.#node = node;
  }

  static async open(engine: Engine, cert: string, key: string): Promise<Accepts> {
    if (engine === "plain") {
      const l = Deno.listen({ hostname: HOST, port: 0 });
      return new Accepts(l.addr.port, async () => {
        const c = await l.accept();
        c.setNoDelay(true);
        return c;
      }, null);
    }
    if (engine === "node-js") {
      // node:tls over a Deno.TcpConn (TCP_NODELAY set) through a JS Duplex.
      const l = Deno.listen({ hostname: HOST, port: 0 });
      const context = tls.createSecureContext({ cert, key });
      const node: NodeQueue = { queue: [], wake: null };
      void (async () => {
        for (;;) {
          const c = await l.accept();
          c.setNoDelay(true);
          const s = new tls.TLSSocket(duplexOf(c), { isServer: true, secureContext: context });
          s.once("secure", () => {
            node.queue.push(s);
            node.wake?.();
          });
        }
      })();
      return new Accepts(l.addr.port, null, node);
    }
    if (engine === "deno") {
      const l = Deno.listenTls({ hostname: HOST, port: 0, cert, key });
      return new Accepts(l.addr.port, () => l.accept(), null);
    }
    const node: NodeQueue = { queue: [], wake: null };
    const server = tls.createServer({ cert, key });
    server.on("secureConnection", (s: tls.TLSSocket) => {
      s.setNoDelay(true);
      node.queue.push(s);
      node.wake?.();
    });
    await new Promise<void>((resolve) => server.listen(0, HOST, resolve));
    return new Accepts((server.address() as { port: number }).port, null, node);
  }

  /** The next node socket (node engine). */
  async nodeSocket(): Promise<tls.TLSSocket> {
    const node = this.#node!;
    while (node.queue.length === 0) await new Promise<void>((r) => node.wake = r);
    return node.queue.shift()!;
  }

  /** The next connection, with node sockets adapted to read/write. */
  async conn(): Promise<Conn> {
    if (this.#next !== null) return await this.#next();
    return adapt(await this.nodeSocket());
  }
}

/** A Deno connection as a node Duplex: 64 KiB reads, one write at a time. */
function duplexOf(c: Deno.TcpConn): Duplex {
  let reading = false;
  return new Duplex({
    read() {
      if (reading) return;
      reading = true;
      void (async () => {
        for (;;) {
          const buf = new Uint8Array(64 * 1024);
          const n = await c.read(buf);
          if (n === null) return void this.push(null);
          if (!this.push(buf.subarray(0, n))) break;
        }
        reading = false;
      })().catch((e) => this.destroy(e));
    },
    write(chunk: Uint8Array, _encoding, callback) {
      writeAll(c, chunk).then(() => callback(), callback);
    },
    final(callback) {
      c.closeWrite().then(() => callback(), () => callback());
    },
    destroy(_e, callback) {
      try {
        c.close();
      } catch {
        // Already closed.
      }
      callback(null);
    },
  });
}

/** A node socket as read/write (small control traffic only: echo2 and hold). */
function adapt(s: tls.TLSSocket): Conn {
  const chunks: Uint8Array[] = [];
  let ended = false;
  let wake: (() => void) | null = null;
  const notify = () => {
    wake?.();
    wake = null;
  };
  s.on("data", (d: Uint8Array) => {
    chunks.push(d);
    notify();
  });
  s.on("end", () => {
    ended = true;
    notify();
  });
  s.on("close", () => {
    ended = true;
    notify();
  });
  s.on("error", () => {});
  return {
    async read(p) {
      while (chunks.length === 0) {
        if (ended) return null;
        await new Promise<void>((r) => wake = r);
      }
      const head = chunks.shift()!;
      const n = Math.min(head.length, p.length);
      p.set(head.subarray(0, n));
      if (n < head.length) chunks.unshift(head.subarray(n));
      return n;
    },
    write: (p) =>
      new Promise((resolve, reject) => s.write(p, (e) => e ? reject(e) : resolve(p.length))),
    close: () => s.destroy(),
  };
}

async function server(o: Extract<EngineProcOptions, { role: "server" }>) {
  const [cert, key] = await Promise.all([
    Deno.readTextFile(o.certFile),
    Deno.readTextFile(o.keyFile),
  ]);
  const a = await Accepts.open(o.engine, cert, key);
  if (o.kind === "forward") {
    const b = await Accepts.open(o.engine, cert, key);
    emit("ready", { port: a.port, port2: b.port });
    if (o.engine === "node" || o.engine === "node-js") {
      const [from, to] = await Promise.all([a.nodeSocket(), b.nodeSocket()]);
      from.pipe(to);
      return;
    }
    const [from, to] = await Promise.all([a.conn(), b.conn()]);
    const buf = new Uint8Array(128 * 1024);
    for (let n = await from.read(buf); n !== null; n = await from.read(buf)) {
      await writeAll(to, buf.subarray(0, n));
    }
    to.close();
    return;
  }
  emit("ready", { port: a.port });
  for (;;) {
    const conn = await a.conn();
    void (async () => {
      const buf = new Uint8Array(128);
      for (let n = await conn.read(buf); n !== null; n = await conn.read(buf)) {
        if (o.kind === "hold") {
          await writeAll(conn, buf.subarray(0, n));
        } else {
          await writeAll(conn, new Uint8Array([1, 2, 3, 4, 5]));
          await writeAll(conn, new Uint8Array([6]));
        }
      }
    })().catch(() => {});
  }
}

async function readFull(conn: Conn, n: number, buf: Uint8Array) {
  for (let got = 0; got < n;) {
    const r = await conn.read(buf);
    if (r === null) throw new Error(`connection closed after ${got} of ${n} bytes`);
    got += r;
  }
}

async function client(o: Exclude<EngineProcOptions, { role: "server" }>, commands: Commands) {
  if (o.role === "send" || o.role === "recv") {
    const conn = await dial(o.port, o.caFile);
    emit("ready");
    const buf = new Uint8Array(64 * 1024);
    if (o.role === "send") {
      await commands.next();
      for (let sent = 0; sent < o.bytes; sent += buf.length) await writeAll(conn, buf);
      emit("result");
    } else {
      await readFull(conn, o.bytes, buf);
      emit("result");
    }
    conn.close();
    return;
  }
  if (o.role === "probe") return await probe(o);
  if (o.role === "hold") {
    const held: Deno.Conn[] = [];
    const buf = new Uint8Array(64);
    for (let i = 0; i < o.count; i++) {
      const conn = await dial(o.port, o.caFile);
      await writeAll(conn, new Uint8Array(40));
      await readFull(conn, 40, buf);
      held.push(conn);
    }
    emit("ready", { conns: held.length });
    await commands.next();
  }
}

/** Fresh connections, two request/answer rounds each. */
async function probe(o: Extract<EngineProcOptions, { role: "probe" }>) {
  const first: number[] = [];
  const second: number[] = [];
  const handshake: number[] = [];
  const buf = new Uint8Array(64);
  for (let i = 0; i < o.count; i++) {
    const t0 = performance.now();
    const conn = await dial(o.port, o.caFile);
    handshake.push(performance.now() - t0);
    for (const samples of [first, second]) {
      const t = performance.now();
      await writeAll(conn, new Uint8Array([0]));
      await readFull(conn, 6, buf);
      samples.push(performance.now() - t);
    }
    conn.close();
  }
  emit("result", { handshake, first, second });
}

if (import.meta.main) {
  const o = JSON.parse(Deno.args[0]) as EngineProcOptions;
  const commands = new Commands();
  if (o.role === "server") await server(o);
  else await client(o, commands);
  // Stay up until the bench closes stdin (it reads this process's CPU time meanwhile).
  for (;;) await commands.next();
}
