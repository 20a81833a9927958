import assert from "node:assert/strict";
import { backoffDelay, delay } from "./backoff.ts";

Deno.test("backoffDelay() doubles from the base and stops at the maximum", () => {
  const fixed = (attempt: number) =>
    backoffDelay(attempt, { baseMs: 100, maxMs: 1000, random: () => 0 });
  assert.deepEqual([0, 1, 2, 3, 4, 5, 40].map(fixed), [50, 100, 200, 400, 500, 500, 500]);
});

Deno.test("backoffDelay() jitter stays within [ceiling/2, ceiling]", () => {
  const hi = backoffDelay(2, { baseMs: 100, maxMs: 1000, random: () => 0.999999 });
  assert.equal(hi, 400);
  const mid = backoffDelay(2, { baseMs: 100, maxMs: 1000, random: () => 0.5 });
  assert.equal(mid, 300);
});

Deno.test("delay() rejects with the abort reason", async () => {
  const controller = new AbortController();
  const pending = delay(60_000, { signal: controller.signal });
  controller.abort(new Error("stop"));
  await assert.rejects(pending, /stop/);
});
