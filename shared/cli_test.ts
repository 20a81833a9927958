import assert from "node:assert/strict";
import { parseDuration, parseSize } from "./cli.ts";
import { UsageError } from "./errors.ts";

Deno.test({
  name: "parseSize() reads bytes, decimal and binary units",
  permissions: "none",
  fn() {
    assert.equal(parseSize("0", "max-file-size"), 0);
    assert.equal(parseSize("1048576", "max-file-size"), 1048576);
    assert.equal(parseSize("10MiB", "max-file-size"), 10 * 1024 * 1024);
    assert.equal(parseSize("10 mib", "max-file-size"), 10 * 1024 * 1024);
    assert.equal(parseSize("2GB", "max-file-size"), 2_000_000_000);
    assert.equal(parseSize("4GiB", "max-file-size"), 4 * 1024 ** 3);
    assert.equal(parseSize("1.5KiB", "max-file-size"), 1536);
    assert.equal(parseSize("500kB", "max-file-size"), 500_000);
    assert.equal(parseSize("7b", "max-file-size"), 7);
  },
});

Deno.test({
  name: "parseSize() rejects what is not a size, naming the flag",
  permissions: "none",
  fn() {
    for (const bad of ["", "-1", "10XB", "MiB", "1e3", "10 MiB extra", "99999999TiB"]) {
      assert.throws(() => parseSize(bad, "max-file-size"), (e) => {
        assert.ok(e instanceof UsageError, bad);
        assert.match(e.message, /--max-file-size/);
        return true;
      });
    }
  },
});

Deno.test({
  name: "parseDuration() reads seconds and units",
  permissions: "none",
  fn() {
    assert.equal(parseDuration("30", "timeout"), 30_000);
    assert.equal(parseDuration("250ms", "timeout"), 250);
    assert.equal(parseDuration("2m", "timeout"), 120_000);
  },
});
