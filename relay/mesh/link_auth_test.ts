import assert from "node:assert/strict";
import { acceptorMac, dialerMac, macEquals, newNonce } from "./link_auth.ts";

const secret = new TextEncoder().encode("0123456789abcdef0123456789abcdef");
const other = new TextEncoder().encode("fedcba9876543210fedcba9876543210");

Deno.test({
  name: "link MACs bind the secret, both nonces, the name, the address and the purpose",
  permissions: "none",
  fn() {
    const r1 = { name: "r1", address: "10.0.0.1:7000" };
    const base = dialerMac(secret, "na", "nd", r1, 0);
    assert.match(base, /^[0-9a-f]{64}$/);
    assert.equal(dialerMac(secret, "na", "nd", r1, 0), base, "deterministic");
    for (
      const changed of [
        dialerMac(other, "na", "nd", r1, 0),
        dialerMac(secret, "nb", "nd", r1, 0), // a replay against a fresh challenge
        dialerMac(secret, "na", "ne", r1, 0),
        dialerMac(secret, "na", "nd", { ...r1, name: "r2" }, 0),
        dialerMac(secret, "na", "nd", { ...r1, address: "10.6.6.6:7000" }, 0),
        dialerMac(secret, "na", "nd", r1, 1),
      ]
    ) assert.notEqual(changed, base);
    // The acceptor's proof differs from the dialer's even over the same values, and
    // covers its own address and who it answers.
    const ok = acceptorMac(secret, "nd", "na", r1, "r0", 0);
    assert.notEqual(ok, base);
    assert.notEqual(acceptorMac(secret, "nd", "na", { ...r1, address: "x:1" }, "r0", 0), ok);
    assert.notEqual(acceptorMac(secret, "nd", "na", r1, "r9", 0), ok);
    assert.notEqual(acceptorMac(secret, "nd", "na", r1, "r0", 1), ok);
  },
});

Deno.test({
  name: "macEquals() compares in constant time and rejects different lengths",
  permissions: "none",
  fn() {
    const m = dialerMac(secret, "a", "b", { name: "c", address: "d:1" }, 1);
    assert.ok(macEquals(m, m));
    assert.ok(!macEquals(m, m.slice(1)));
    assert.ok(!macEquals(m, m.replace(/.$/, (c) => (c === "0" ? "1" : "0"))));
  },
});

Deno.test({
  name: "newNonce() is 16 random bytes in hex",
  permissions: "none",
  fn() {
    const a = newNonce();
    assert.match(a, /^[0-9a-f]{32}$/);
    assert.notEqual(newNonce(), a);
  },
});
