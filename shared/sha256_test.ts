import assert from "node:assert/strict";
import { createHash, createHmac } from "node:crypto";
import { hmacSha256, sha256 } from "./sha256.ts";

const utf8 = new TextEncoder();
const hex = (s: string) => Uint8Array.fromHex(s);

Deno.test({
  name: "sha256() matches the FIPS 180-4 examples",
  permissions: "none",
  fn() {
    assert.equal(
      sha256(utf8.encode("abc")).toHex(),
      "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    );
    assert.equal(
      sha256(new Uint8Array(0)).toHex(),
      "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    );
    // 56 bytes: the padding needs a second block.
    assert.equal(
      sha256(utf8.encode("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")).toHex(),
      "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
    );
    assert.equal(
      sha256(new Uint8Array(1_000_000).fill(0x61)).toHex(),
      "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
    );
  },
});

Deno.test({
  name: "hmacSha256() matches the RFC 4231 test cases",
  permissions: "none",
  fn() {
    const cases: [key: Uint8Array, data: Uint8Array, mac: string][] = [
      [
        new Uint8Array(20).fill(0x0b),
        utf8.encode("Hi There"),
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
      ],
      [
        utf8.encode("Jefe"),
        utf8.encode("what do ya want for nothing?"),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
      ],
      [
        new Uint8Array(20).fill(0xaa),
        new Uint8Array(50).fill(0xdd),
        "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
      ],
      [
        hex("0102030405060708090a0b0c0d0e0f10111213141516171819"),
        new Uint8Array(50).fill(0xcd),
        "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
      ],
      // Keys longer than a block are hashed first (cases 6 and 7).
      [
        new Uint8Array(131).fill(0xaa),
        utf8.encode("Test Using Larger Than Block-Size Key - Hash Key First"),
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
      ],
      [
        new Uint8Array(131).fill(0xaa),
        utf8.encode(
          "This is a test using a larger than block-size key and a larger than block-size " +
            "data. The key needs to be hashed before being used by the HMAC algorithm.",
        ),
        "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
      ],
    ];
    for (const [key, data, mac] of cases) assert.equal(hmacSha256(key, data).toHex(), mac);
  },
});

Deno.test("sha256() and hmacSha256() agree with node:crypto for every length up to 300 bytes", () => {
  const data = crypto.getRandomValues(new Uint8Array(300));
  const key = crypto.getRandomValues(new Uint8Array(150));
  for (let n = 0; n <= data.length; n++) {
    const m = data.subarray(0, n);
    assert.equal(sha256(m).toHex(), createHash("sha256").update(m).digest("hex"), `${n} bytes`);
    const k = key.subarray(0, n % key.length);
    assert.equal(
      hmacSha256(k, m).toHex(),
      createHmac("sha256", k).update(m).digest("hex"),
      `${n} bytes, key ${k.length} bytes`,
    );
  }
});

Deno.test("sha256() and hmacSha256() hash the concatenation of their parts", () => {
  const data = crypto.getRandomValues(new Uint8Array(200));
  const key = crypto.getRandomValues(new Uint8Array(32));
  for (const cut of [0, 1, 55, 63, 64, 65, 128, 200]) {
    const mid = Math.max(cut, 130);
    const parts = [data.subarray(0, cut), data.subarray(cut, mid), data.subarray(mid)];
    assert.deepEqual(sha256(...parts), sha256(data));
    assert.deepEqual(hmacSha256(key, ...parts), hmacSha256(key, data));
  }
});
