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
  name: "renderProgress() shows a bar, percentage, bytes of the total, rate and ETA",
  permissions: "none",
  fn() {
    const line = renderProgress("scan.pdf", 512 * 1024, 1024 * 1024, 1000, 10);
    assert.match(
      line,
      /^scan\.pdf\s+\[#####-----\] {2}50% 512\.0 KiB of 1\.0 MiB 512\.0 KiB\/s ETA 0:01$/,
    );
    assert.match(renderProgress("big.iso", 2 ** 20, 4000 * 2 ** 20, 1000, 4), /ETA 1:06:39$/);
    assert.match(renderProgress("slow", 0, 100, 0, 4), /ETA --:--$/);
    assert.match(renderProgress("empty", 0, 0, 0, 4), /\[####\] 100% 0 B of 0 B .* ETA 0:00$/);
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
