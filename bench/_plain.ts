/**
 * Plain TCP endpoints for the tunnel bench, sharing no code with tsunagi: the reference
 * two processes on plain sockets are measured against.
 *
 *   deno run -A bench/_plain.ts sink              listen; per connection read to EOF, answer
 *                                                 "k" and close (bulk); prints {"port":N}
 *   deno run -A bench/_plain.ts echo              listen; echo every connection
 *   deno run -A bench/_plain.ts bulk PORT BYTES N  N connections at once, each sends BYTES,
 *                                                 half-closes, waits for the answer;
 *                                                 prints per-connection ms
 *   deno run -A bench/_plain.ts ping PORT N       N times: connect, 1 byte, echo, close;
 *                                                 prints each round trip, ms
 *   deno run -A bench/_plain.ts proxy PORT        listen; per connection connect to PORT
 *                                                 and copy both ways (read/write loop,
 *                                                 half-close passed on); prints {"port":N}
 *
 * Three `proxy` processes in a row have the shape of a tunnel (forwarder, relay, device:
 * three processes that each copy every byte once): the floor any relay of that shape
 * reaches on this machine.
 *
 * @module
 */

const [mode, ...args] = Deno.args;

/** CPU seconds this process used so far (user + system, 100 ticks/s on Linux). */
function cpuSelf(): number {
  const stat = Deno.readTextFileSync("/proc/self/stat");
  const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(rest[11]) + Number(rest[12])) / 100;
}

async function writeAll(c: Deno.Conn, b: Uint8Array) {
  for (let off = 0; off < b.length;) off += await c.write(b.subarray(off));
}

if (mode === "sink" || mode === "echo") {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  console.log(JSON.stringify({ port: l.addr.port }));
  for await (const c of l) {
    (async () => {
      const buf = new Uint8Array(256 * 1024);
      for (let n = await c.read(buf); n !== null; n = await c.read(buf)) {
        if (mode === "echo") await writeAll(c, buf.subarray(0, n));
      }
      if (mode === "sink") await writeAll(c, new Uint8Array([107]));
      c.close();
    })().catch(() => {});
  }
} else if (mode === "bulk") {
  const [port, bytes, n] = args.map(Number);
  const chunk = new Uint8Array(256 * 1024).fill(1);
  const one = async () => {
    const t0 = performance.now();
    const c = await Deno.connect({ hostname: "127.0.0.1", port });
    for (let left = bytes; left > 0;) {
      const k = Math.min(left, chunk.length);
      await writeAll(c, chunk.subarray(0, k));
      left -= k;
    }
    await c.closeWrite();
    const ack = new Uint8Array(1);
    const r = await c.read(ack);
    c.close();
    if (r !== 1) throw new Error("no answer");
    return performance.now() - t0;
  };
  const cpu0 = cpuSelf();
  const t0 = performance.now();
  const each = await Promise.all(Array.from({ length: n }, one));
  const totalMs = performance.now() - t0;
  console.log(JSON.stringify({ totalMs, each, cpuS: cpuSelf() - cpu0 }));
} else if (mode === "ping") {
  const [port, n] = args.map(Number);
  const out: number[] = [];
  const b = new Uint8Array([1]);
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const c = await Deno.connect({ hostname: "127.0.0.1", port });
    c.setNoDelay(true);
    await writeAll(c, b);
    const r = await c.read(new Uint8Array(1));
    out.push(performance.now() - t0);
    c.close();
    if (r !== 1) throw new Error("no echo");
  }
  console.log(JSON.stringify({ rtt: out }));
} else if (mode === "proxy") {
  const next = Number(args[0]);
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  console.log(JSON.stringify({ port: l.addr.port }));
  const copy = async (from: Deno.TcpConn, to: Deno.TcpConn) => {
    const buf = new Uint8Array(256 * 1024);
    for (let n = await from.read(buf); n !== null; n = await from.read(buf)) {
      await writeAll(to, buf.subarray(0, n));
    }
    await to.closeWrite();
  };
  for await (const c of l) {
    (async () => {
      c.setNoDelay(true);
      const d = await Deno.connect({ hostname: "127.0.0.1", port: next });
      d.setNoDelay(true);
      await Promise.allSettled([copy(c, d), copy(d, c)]);
      c.close();
      d.close();
    })().catch(() => {});
  }
} else {
  console.error("usage: see the module doc");
  Deno.exit(2);
}
