import assert from "node:assert/strict";
import { formatBytes, ProgressBar, renderProgress } from "./progress.ts";

Deno.test({
  name: "formatBytes() uses binary units",
  permissions: "none",
  fn() {
    assert.equal(formatBytes(0), "0 B");
    assert.equal(formatBytes(1023), "1023 B");
    assert.equal(formatBytes(1536), "1.5 KiB");
    assert.equal(formatBytes(200 * 1024 * 1024), "200.0 MiB");
  },
});

Deno.test({
  name: "renderProgress() shows a bar, percentage, bytes and rate",
  permissions: "none",
  fn() {
    const line = renderProgress("scan.pdf", 512 * 1024, 1024 * 1024, 1000, 10);
    assert.match(line, /^scan\.pdf\s+\[#####-----\] {2}50% 512\.0 KiB 512\.0 KiB\/s$/);
    assert.match(renderProgress("empty", 0, 0, 0, 4), /\[####\] 100%/);
  },
});

Deno.test({
  name: "ProgressBar stays silent when disabled (stderr is not a terminal)",
  permissions: "none",
  fn() {
    const bar = new ProgressBar(false);
    bar.update(1, 2, "x"); // would throw without permissions if it wrote
    bar.update(2, 2, "x");
  },
});
