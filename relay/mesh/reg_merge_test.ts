import assert from "node:assert/strict";
import type { Registration } from "../registry/registry.ts";
import { mergeConcurrent } from "./reg_merge.ts";

const opts = { permissions: "none" } as const;
const base: Registration = {
  id: "fax1",
  type: "FAX",
  attributes: ["FILE TX/RX"],
  passwordHash: "old",
  updatedAt: 1,
};
const passwd: Registration = { ...base, passwordHash: "new", updatedAt: 2 };
const set: Registration = { ...base, attributes: ["FILE TX/RX", "PRINT"], updatedAt: 3 };

Deno.test({
  name: "mergeConcurrent(): a password change is not undone by a concurrent attributes edit",
  ...opts,
  fn() {
    // Our passwd lost to their set, and our set lost to their passwd: the same merge.
    const expected = { ...set, passwordHash: "new", updatedAt: 3 };
    assert.deepEqual(mergeConcurrent(base, passwd, set), { reg: expected, lost: false });
    assert.deepEqual(mergeConcurrent(base, set, passwd), {
      reg: { ...expected, updatedAt: 3 },
      lost: false,
    });
  },
});

Deno.test({
  name: "mergeConcurrent(): a removal wins over a concurrent edit, either way round",
  ...opts,
  fn() {
    assert.deepEqual(mergeConcurrent(base, null, passwd), { reg: null, lost: false });
    assert.deepEqual(mergeConcurrent(base, passwd, null), { lost: false });
    assert.deepEqual(mergeConcurrent(base, null, null), { lost: false });
  },
});

Deno.test({
  name: "mergeConcurrent(): the same field changed on both sides keeps the winner's, and says so",
  ...opts,
  fn() {
    assert.deepEqual(mergeConcurrent(base, passwd, { ...base, passwordHash: "other" }), {
      lost: true,
    });
    assert.deepEqual(mergeConcurrent(base, passwd, passwd), { lost: false }, "the same edit");
    // Both changed the password, only ours changed the attributes: ours are kept, the
    // password change is lost.
    const both = { ...set, passwordHash: "mine" };
    assert.deepEqual(mergeConcurrent(base, both, { ...base, passwordHash: "theirs" }), {
      reg: { ...set, passwordHash: "theirs", updatedAt: 3 },
      lost: true,
    });
  },
});
