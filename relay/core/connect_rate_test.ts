import assert from "node:assert/strict";
import { ConnectRate } from "./connect_rate.ts";

Deno.test({
  name: "ConnectRate.take() allows a burst, then one request per 1/rate, per device",
  permissions: "none",
  fn() {
    const rate = new ConnectRate(10, 3);
    assert.deepEqual([0, 0, 0].map(() => rate.take("a", 1000)), [0, 0, 0]);
    assert.equal(rate.take("a", 1000), 100, "empty: the next token in 100 ms");
    assert.equal(rate.take("b", 1000), 0, "another device is not affected");
    assert.equal(rate.take("a", 1050), 50);
    assert.equal(rate.take("a", 1100), 0);
    assert.equal(rate.take("a", 1100), 100);
    // A long pause refills up to the burst, not beyond.
    const after = [0, 0, 0, 0].map(() => rate.take("a", 60_000));
    assert.deepEqual(after, [0, 0, 0, 100]);
  },
});

Deno.test({
  name: "ConnectRate with a rate of 0 never refuses",
  permissions: "none",
  fn() {
    const rate = new ConnectRate(0, 1);
    for (let i = 0; i < 1000; i++) assert.equal(rate.take("a", 0), 0);
  },
});
