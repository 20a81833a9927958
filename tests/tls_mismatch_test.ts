import assert from "node:assert/strict";
import { makeCertificates } from "../scripts/certs.ts";
import { agentCommand, deviceFlags, event, register, startRelay, tempDir } from "./helpers.ts";

Deno.test("TLS mismatch: a plain agent at a TLS relay is told to use --tls-ca and exits 4; the relay says why", async () => {
  await using dir = await tempDir();
  await makeCertificates(dir.path);
  const pw = await register(dir.path, "pc1", "USER");
  await using relay = await startRelay(dir.path, [
    "--tls-cert",
    `${dir.path}/relay.pem`,
    "--tls-key",
    `${dir.path}/relay.key`,
  ]);
  const plain = await agentCommand(["list", ...deviceFlags(relay.address, "pc1", pw)]);
  assert.equal(plain.code, 4, plain.stderr);
  assert.match(plain.stderr, /speaks TLS .*give the agent --tls-ca/);
  assert.doesNotMatch(plain.stderr, /declared length/);
  await relay.proc.waitFor(event("TLS handshake failed"), "the relay's log of the mismatch");
});

Deno.test("TLS mismatch: a TLS agent at a plain relay is told the port is plain and exits 4; the relay says why", async () => {
  await using dir = await tempDir();
  await makeCertificates(dir.path);
  const pw = await register(dir.path, "pc1", "USER");
  await using relay = await startRelay(dir.path);
  const tls = await agentCommand([
    "list",
    "--tls-ca",
    `${dir.path}/ca.pem`,
    ...deviceFlags(relay.address, "pc1", pw),
  ]);
  assert.equal(tls.code, 4, tls.stderr);
  assert.match(tls.stderr, /does not speak TLS on this port/);
  await relay.proc.waitFor(
    (l) => l.event === "protocol error" && String(l.error).includes("TLS ClientHello"),
    "the relay's log of the mismatch",
  );
});
