import assert from "node:assert/strict";
import { dial, tuneSocket } from "./dial.ts";
import { ConnectionClosedError } from "./errors.ts";

/** A CA no server holds a key for: enough for a handshake that never gets an answer. */
const UNUSED_CA = `-----BEGIN CERTIFICATE-----
MIIBvDCCAWOgAwIBAgIUF4IOhyDfNg6BYhTA4L91SxBkoa4wCgYIKoZIzj0EAwIw
MzExMC8GA1UEAwwodHN1bmFnaSBkaWFsIHRlc3QgQ0EgKG5vIHNlcnZlciB1c2Vz
IGl0KTAgFw0yNjExMzAxNDA3NDFaGA8yMTI2MTEwNjE0MDc0MVowMzExMC8GA1UE
AwwodHN1bmFnaSBkaWFsIHRlc3QgQ0EgKG5vIHNlcnZlciB1c2VzIGl0KTBZMBMG
ByqGSM49AgEGCCqGSM49AwEHA0IABCsY063BDBwOI/l42P4vqCi47DWiwyHBZeRK
4FTBK/JiofDjerMgotegrNJOHbbulNHJv3CDEj5j+vniNQXw7tajUzBRMB0GA1Ud
DgQWBBQr997Ds+d9mnuwbJgj4+xJ+ZVr4jAfBgNVHSMEGDAWgBQr997Ds+d9mnuw
bJgj4+xJ+ZVr4jAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0cAMEQCIEHT
V0vB5rG6DBF08Q7cBwWUgE0gAEOZAdCzWQaTNz3FAiAkH1FvT9OuhvHklhU+S5m0
WgkHg9JFpJucR21ajH34ew==
-----END CERTIFICATE-----
`;

/** A TCP listener that accepts and then says nothing (a stuck or hostile relay). */
function silentListener() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted: Deno.Conn[] = [];
  const accepting = (async () => {
    try {
      for await (const conn of listener) accepted.push(conn);
    } catch {
      // Listener closed.
    }
  })();
  return {
    address: { hostname: "127.0.0.1", port: listener.addr.port },
    accepted,
    async [Symbol.asyncDispose]() {
      listener.close();
      await accepting;
      for (const conn of accepted) conn.close();
    },
  };
}

Deno.test("dial() aborts a TLS handshake the relay never answers at the deadline", async () => {
  await using server = silentListener();
  const started = performance.now();
  await assert.rejects(
    dial(server.address, { tlsCa: UNUSED_CA, timeoutMs: 150 }),
    (e: unknown) => {
      assert.ok(e instanceof ConnectionClosedError);
      assert.equal(
        e.message,
        `Cannot reach relay 127.0.0.1:${server.address.port}: timed out after 150 ms in the TLS handshake`,
      );
      assert.equal((e.cause as DOMException).name, "TimeoutError");
      return true;
    },
  );
  const elapsed = performance.now() - started;
  assert.ok(elapsed >= 140, `gave up early, after ${elapsed} ms`);
  assert.equal(server.accepted.length, 1, "the TCP connect did succeed");
});

Deno.test("dial() reports a caller's TimeoutError signal with the time it waited", async () => {
  await using server = silentListener();
  await assert.rejects(
    dial(server.address, { tlsCa: UNUSED_CA, signal: AbortSignal.timeout(100) }),
    { name: "ConnectionClosedError", message: /: timed out after \d+ ms in the TLS handshake$/ },
  );
});

Deno.test("dial() with an already-aborted signal fails at once without connecting", async () => {
  await using server = silentListener();
  const controller = new AbortController();
  controller.abort(new Error("shutting down"));
  await assert.rejects(dial(server.address, { signal: controller.signal }), (e: unknown) => {
    assert.ok(e instanceof ConnectionClosedError);
    assert.equal(
      e.message,
      `Cannot reach relay 127.0.0.1:${server.address.port}: dial aborted in the TCP connect`,
    );
    assert.equal((e.cause as Error).message, "shutting down");
    return true;
  });
  await assert.rejects(
    dial(server.address, { signal: AbortSignal.abort(new DOMException("t", "TimeoutError")) }),
    { message: /timed out after \d+ ms in the TCP connect/ },
  );
  assert.equal(server.accepted.length, 0);
});

Deno.test("dial() aborts a TCP connect that gets no answer at the deadline", async () => {
  // A listener that never accepts, with its accept queue full: the kernel drops further
  // SYNs, so the next connect hangs like one to an unroutable address.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const address = { hostname: "127.0.0.1", port: listener.addr.port };
  const filler: Deno.Conn[] = [];
  try {
    for (;;) {
      assert.ok(filler.length < 8192, "the accept queue never filled up");
      try {
        // Generous: a queue with room answers in well under a millisecond.
        const signal = AbortSignal.timeout(1000);
        filler.push(await Deno.connect({ ...address, signal }));
      } catch (e) {
        if ((e as Error).name === "TimeoutError") break;
        throw e;
      }
    }
    await assert.rejects(dial(address, { timeoutMs: 100 }), {
      name: "ConnectionClosedError",
      message:
        `Cannot reach relay 127.0.0.1:${address.port}: timed out after 100 ms in the TCP connect`,
    });
  } finally {
    for (const conn of filler) conn.close();
    listener.close();
  }
});

Deno.test("dial() turns a refused connection into ConnectionClosedError", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  await assert.rejects(dial({ hostname: "127.0.0.1", port }, { timeoutMs: 5000 }), {
    name: "ConnectionClosedError",
    message: new RegExp(`^Cannot reach relay 127.0.0.1:${port}: `),
  });
});

Deno.test("dial() reports a peer that hangs up during the handshake as a TLS failure", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const hangUp = listener.accept().then((conn) => conn.close());
  await assert.rejects(
    dial({ hostname: "127.0.0.1", port: listener.addr.port }, {
      tlsCa: UNUSED_CA,
      timeoutMs: 5000,
    }),
    { name: "ConnectionClosedError", message: /^Cannot start TLS with relay 127.0.0.1:\d+: / },
  );
  await hangUp;
  listener.close();
});

Deno.test("tuneSocket() turns Nagle off and keep-alive on", () => {
  const calls: string[] = [];
  tuneSocket({
    setNoDelay: (on) => calls.push(`noDelay=${on}`),
    setKeepAlive: (on) => calls.push(`keepAlive=${on}`),
  });
  assert.deepEqual(calls, ["noDelay=true", "keepAlive=true"]);
});
