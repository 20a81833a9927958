import assert from "node:assert/strict";
import { checkModel } from "../scripts/model_check.ts";

// docs/mesh_model.pml: flooding and catch-up over Fig. 5 with loss, duplication and
// reordering. spin and gcc are needed (deno task test installs them); a few seconds.

Deno.test("mesh model: spin finds no convergence, loop or deadlock error", async () => {
  const r = await checkModel();
  assert.equal(r.errors, 0, `spin: ${r.violation}`);
  assert.ok(r.states > 10_000, `the search covered the model (${r.states} states)`);
});

Deno.test("mesh model: spin catches a relay that ignores digests (no convergence)", async () => {
  const r = await checkModel({ define: "MUTANT_NO_CATCHUP" });
  assert.ok(r.errors > 0, "the mutant passed: the check proves nothing");
  assert.match(r.violation ?? "", /held\[1\]/);
});

Deno.test("mesh model: spin catches a relay that forwards what it drops (a flood loop)", async () => {
  const r = await checkModel({ define: "MUTANT_FORWARD_OLD" });
  assert.ok(r.errors > 0, "the mutant passed: the check proves nothing");
});
