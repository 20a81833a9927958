import assert from "node:assert/strict";
import { buildAgent } from "../scripts/build.ts";
import { makeCertificates } from "../scripts/certs.ts";
import {
  agentCommand,
  deviceFlags,
  listFiles,
  register,
  sha256File,
  startAgent,
  startMesh,
  startRelay,
  tempDir,
  waitPresence,
  waitRegistration,
  writeRandomFile,
} from "./helpers.ts";

Deno.test("TLS: agents reach a TLS relay with --tls-ca and files arrive intact", async () => {
  await using dir = await tempDir();
  await makeCertificates(dir.path);
  const pcPw = await register(dir.path, "pc1", "USER");
  const faxPw = await register(dir.path, "fax1", "FAX", ["FILE TX/RX"]);
  await using relay = await startRelay(dir.path, [
    "--tls-cert",
    `${dir.path}/relay.pem`,
    "--tls-key",
    `${dir.path}/relay.key`,
  ]);
  const tls = ["--tls-ca", `${dir.path}/ca.pem`];
  await using _fax = await startAgent(relay.address, "fax1", faxPw, [
    "--inbox",
    `${dir.path}/inbox`,
    ...tls,
  ]);
  await writeRandomFile(`${dir.path}/doc.bin`, 3 << 20, 9);
  const r = await agentCommand([
    "send",
    "--to",
    "fax1",
    ...tls,
    ...deviceFlags(relay.address, "pc1", pcPw),
    `${dir.path}/doc.bin`,
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(
    await sha256File(`${dir.path}/inbox/doc.bin`),
    await sha256File(`${dir.path}/doc.bin`),
  );
  // Without the CA the agent must refuse the relay's certificate.
  const plain = await agentCommand(["list", ...deviceFlags(relay.address, "pc1", pcPw)]);
  assert.notEqual(plain.code, 0);
  // A valid CA that did not sign the relay's certificate: refused on trust, not on parsing.
  const other = await makeCertificates(`${dir.path}/other-ca`);
  const untrusted = await agentCommand([
    "list",
    "--tls-ca",
    other.caFile,
    ...deviceFlags(relay.address, "pc1", pcPw),
  ]);
  assert.notEqual(untrusted.code, 0);
  // (Both CAs share a subject name, so the verifier finds "the" issuer and rejects its
  // signature; a CA with another name gives UnknownIssuer. Both are trust failures.)
  assert.match(untrusted.stderr, /invalid peer certificate: (BadSignature|UnknownIssuer)/);
  // The same command with the right CA works: the failure above was the trust decision.
  const trusted = await agentCommand(["list", ...tls, ...deviceFlags(relay.address, "pc1", pcPw)]);
  assert.equal(trusted.code, 0, trusted.stderr);
});

Deno.test("TLS mesh: relays link over TLS (--tls-ca) and a file crosses them", async () => {
  await using dir = await tempDir();
  await makeCertificates(dir.path);
  const r0 = `${dir.path}/r0`;
  const pcPw = await register(r0, "pc1", "USER");
  const faxPw = await register(r0, "fax1", "FAX", ["FILE TX/RX"]);
  const tlsRelay = [
    "--tls-cert",
    `${dir.path}/relay.pem`,
    "--tls-key",
    `${dir.path}/relay.key`,
    "--tls-ca",
    `${dir.path}/ca.pem`,
  ];
  await using relays = await startMesh(dir.path, 2, [[0, 1]], () => tlsRelay);
  await waitRegistration(relays[1], "fax1");
  const tls = ["--tls-ca", `${dir.path}/ca.pem`];
  await using _fax = await startAgent(relays[1].address, "fax1", faxPw, [
    "--inbox",
    `${dir.path}/inbox`,
    ...tls,
  ]);
  await waitPresence(relays[0], "fax1", "r1", 1);
  await writeRandomFile(`${dir.path}/doc.bin`, 2 << 20, 2);
  const r = await agentCommand([
    "send",
    "--to",
    "fax1",
    ...tls,
    ...deviceFlags(relays[0].address, "pc1", pcPw),
    `${dir.path}/doc.bin`,
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(
    await sha256File(`${dir.path}/inbox/doc.bin`),
    await sha256File(`${dir.path}/doc.bin`),
  );
});

Deno.test("bundle: the single-file agent (deno bundle) sends and receives a file", async () => {
  await using dir = await tempDir();
  const bundle = `${dir.path}/tsunagi.js`;
  await buildAgent(bundle);
  const pcPw = await register(dir.path, "pc1", "USER");
  const faxPw = await register(dir.path, "fax1", "FAX", ["FILE TX/RX"]);
  await using relay = await startRelay(dir.path);
  await using _fax = await startAgent(relay.address, "fax1", faxPw, [
    "--inbox",
    `${dir.path}/inbox`,
  ], bundle);
  await writeRandomFile(`${dir.path}/scan.pdf`, 1 << 20, 3);
  const r = await agentCommand([
    "send",
    "--to",
    "fax1",
    ...deviceFlags(relay.address, "pc1", pcPw),
    `${dir.path}/scan.pdf`,
  ], bundle);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(await listFiles(`${dir.path}/inbox`), ["scan.pdf"]);
  assert.equal(
    await sha256File(`${dir.path}/inbox/scan.pdf`),
    await sha256File(`${dir.path}/scan.pdf`),
  );
  const help = await agentCommand(["--help"], bundle);
  assert.equal(help.code, 0);
  // The bundle names itself as it was run, for a user who has no `tsunagi` command.
  assert.match(help.stdout, /Usage: deno run -A \S*tsunagi\.js <command>/);
});
