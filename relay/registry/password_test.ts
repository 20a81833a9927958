import assert from "node:assert/strict";
import { DEFAULT_SCRYPT_COST, hashPassword, verifyPassword } from "./password.ts";

const FAST = { cost: 2 ** 10 };

Deno.test("hashPassword() produces scrypt$N$r$p$salt$hash with a 16-byte salt and 32-byte key", async () => {
  const stored = await hashPassword("correct horse", FAST);
  const parts = stored.split("$");
  assert.equal(parts.length, 6);
  assert.deepEqual(parts.slice(0, 4), ["scrypt", "1024", "8", "1"]);
  assert.equal(Uint8Array.fromBase64(parts[4]).length, 16);
  assert.equal(Uint8Array.fromBase64(parts[5]).length, 32);
});

Deno.test("hashPassword() defaults to N = 2**14", async () => {
  const stored = await hashPassword("pw");
  assert.equal(stored.split("$")[1], String(DEFAULT_SCRYPT_COST));
  assert.equal(await verifyPassword("pw", stored), true);
});

Deno.test("hashPassword() salts every hash differently", async () => {
  const a = await hashPassword("same", FAST);
  const b = await hashPassword("same", FAST);
  assert.notEqual(a, b);
  assert.equal(await verifyPassword("same", a), true);
  assert.equal(await verifyPassword("same", b), true);
});

Deno.test("hashPassword() rejects a cost that is not a power of two >= 2**10", async () => {
  for (const cost of [2 ** 9, 1000, 2 ** 10 + 1, 0, -1024, 1.5, NaN, 2 ** 21]) {
    await assert.rejects(hashPassword("pw", { cost }), RangeError, `cost ${cost}`);
  }
});

Deno.test("verifyPassword() accepts the right password and refuses others", async () => {
  const stored = await hashPassword("pässwörd 🔑", FAST);
  assert.equal(await verifyPassword("pässwörd 🔑", stored), true);
  assert.equal(await verifyPassword("pässwörd", stored), false);
  assert.equal(await verifyPassword("", stored), false);
  assert.equal(await verifyPassword("pässwörd 🔑 ", stored), false);
});

Deno.test("verifyPassword() reads the parameters from the stored string", async () => {
  const stored = await hashPassword("pw", { cost: 2 ** 11 });
  assert.equal(stored.split("$")[1], "2048");
  assert.equal(await verifyPassword("pw", stored), true);
  // Changing N changes the derived key, so the hash no longer matches.
  assert.equal(await verifyPassword("pw", stored.replace("$2048$", "$1024$")), false);
});

Deno.test("verifyPassword() returns false for malformed stored strings", async () => {
  const good = await hashPassword("pw", FAST);
  const [, n, r, p, salt, hash] = good.split("$");
  const malformed = [
    "",
    "pw",
    "scrypt",
    "bcrypt$1024$8$1$" + salt + "$" + hash,
    ["scrypt", n, r, p, salt].join("$"),
    ["scrypt", n, r, p, salt, hash, "extra"].join("$"),
    ["scrypt", "1000", r, p, salt, hash].join("$"), // not a power of two
    ["scrypt", "512", r, p, salt, hash].join("$"), // below the minimum
    ["scrypt", String(2 ** 30), r, p, salt, hash].join("$"), // would need 128 GiB
    ["scrypt", "01024", r, p, salt, hash].join("$"),
    ["scrypt", n, "0", p, salt, hash].join("$"),
    ["scrypt", n, "999", p, salt, hash].join("$"),
    ["scrypt", n, r, "0", salt, hash].join("$"),
    ["scrypt", n, r, "x", salt, hash].join("$"),
    ["scrypt", n, r, p, "", hash].join("$"),
    ["scrypt", n, r, p, "not base64!", hash].join("$"),
    ["scrypt", n, r, p, salt, ""].join("$"),
    ["scrypt", n, r, p, salt, "AAAA"].join("$"), // 3-byte hash
    ["scrypt", n, r, p, salt, hash.replace(/=+$/, "")].join("$"), // unpadded
  ];
  for (const stored of malformed) {
    assert.equal(await verifyPassword("pw", stored), false, stored);
  }
  // Not a string at all (e.g. a damaged registry entry read from JSON).
  assert.equal(await verifyPassword("pw", null as unknown as string), false);
});
