import assert from "node:assert/strict";
import {
  authMessage,
  challengeCostError,
  checkProof,
  clientKey,
  clientProof,
  MAX_ITERATIONS,
  resumeKey,
  resumeProof,
  resumeSignature,
  saltedPassword,
  saslName,
  serverSignature,
  verifierOf,
} from "./scram.ts";

// RFC 7677 section 3: user "user", password "pencil".
const RFC = {
  id: "user",
  clientNonce: "rOprNGfwEbeRWgbNEkqO",
  nonce: "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
  salt: Uint8Array.fromBase64("W22ZaJ0SNY7soEsUEjb6gQ=="),
  iterations: 4096,
};

Deno.test("scram: reproduces the RFC 7677 SCRAM-SHA-256 example proof and signature", async () => {
  const salted = await saltedPassword("pencil", RFC.salt, RFC.iterations);
  const auth = authMessage(RFC);
  assert.equal(
    new TextDecoder().decode(auth),
    "n=user,r=rOprNGfwEbeRWgbNEkqO," +
      "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096," +
      "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
  );
  const proof = clientProof(salted, auth);
  assert.equal(proof.toBase64(), "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
  const v = verifierOf(salted, RFC.salt, RFC.iterations);
  assert.equal(
    serverSignature(v.serverKey, auth).toBase64(),
    "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
  );
});

Deno.test("scram: checkProof() accepts the right proof, returns ClientKey, refuses others", async () => {
  const salted = await saltedPassword("pencil", RFC.salt, RFC.iterations);
  const v = verifierOf(salted, RFC.salt, RFC.iterations);
  const auth = authMessage(RFC);
  const proof = clientProof(salted, auth);
  assert.deepEqual(checkProof(v, auth, proof), clientKey(salted));
  const flipped = proof.slice();
  flipped[31] ^= 1;
  assert.equal(checkProof(v, auth, flipped), null);
  assert.equal(checkProof(v, auth, proof.subarray(0, 31)), null);
  assert.equal(checkProof(v, authMessage({ ...RFC, nonce: RFC.nonce + "x" }), proof), null);
  const wrong = await saltedPassword("pencil2", RFC.salt, RFC.iterations);
  assert.equal(checkProof(v, auth, clientProof(wrong, auth)), null);
});

Deno.test("scram: both sides derive the same resumption key; its proofs differ by direction", async () => {
  const salted = await saltedPassword("pencil", RFC.salt, RFC.iterations);
  const auth = authMessage(RFC);
  const v = verifierOf(salted, RFC.salt, RFC.iterations);
  const recovered = checkProof(v, auth, clientProof(salted, auth))!;
  const device = resumeKey(clientKey(salted), auth);
  assert.deepEqual(resumeKey(recovered, auth), device);
  assert.notDeepEqual(resumeProof(device, auth), resumeSignature(device, auth));
});

Deno.test("scram: saslName() escapes = and ,", () => {
  assert.equal(saslName("a=b,c"), "a=3Db=2Cc");
  assert.equal(saslName("fax-01"), "fax-01");
});

Deno.test("challengeCostError: a floor on rounds, made up for only by a strong scrypt prehash", () => {
  const strong = `scrypt$16384$8$1$${"A".repeat(22)}==$32`;
  const weak = `scrypt$1024$8$1$${"A".repeat(22)}==$32`;
  assert.equal(challengeCostError(100_000, "", 100_000), null);
  assert.equal(challengeCostError(MAX_ITERATIONS, "", 100_000), null);
  assert.match(
    challengeCostError(99_999, "", 100_000)!,
    /fewer than this agent accepts \(100000\)/,
  );
  assert.match(challengeCostError(MAX_ITERATIONS + 1, "", 4096)!, /at most/);
  assert.equal(challengeCostError(4096, "", 4096), null);
  // Never below RFC 7677's 4096, whatever the device was told.
  assert.match(challengeCostError(4095, "", 1)!, /accepts \(4096\)/);
  assert.equal(challengeCostError(4096, strong, 100_000), null);
  assert.match(challengeCostError(4096, weak, 100_000)!, /cheap scrypt prehash/);
  assert.match(challengeCostError(4095, strong, 100_000)!, /fewer/);
  assert.match(challengeCostError(4096, "scrypt$junk", 100_000)!, /unsupported password prehash/);
  assert.match(
    challengeCostError(100_000, `scrypt$1048576$32$1$${"A".repeat(22)}==$32`, 100_000)!,
    /unsupported/,
    "1 GiB x 32 of scrypt memory",
  );
  // What the impostor used: 128 x 2^20 x 11 bytes and p = 16 (1.5 GB, a minute of CPU).
  assert.match(
    challengeCostError(4096, `scrypt$1048576$11$16$${"A".repeat(22)}==$32`, 100_000)!,
    /unsupported/,
  );
  for (const [n, r, p] of [[2 ** 18, 8, 1], [2 ** 14, 16, 1], [2 ** 14, 8, 2]]) {
    assert.match(
      challengeCostError(100_000, `scrypt$${n}$${r}$${p}$${"A".repeat(22)}==$32`, 100_000)!,
      /unsupported/,
      `N ${n} r ${r} p ${p}`,
    );
  }
  assert.equal(challengeCostError(4096, `scrypt$131072$8$1$${"A".repeat(22)}==$32`, 100_000), null);
});
