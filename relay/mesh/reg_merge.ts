/**
 * Two administrators' edits of one registration made at about the same time on two
 * relays carry the same Lamport counter; the greater origin name wins the whole
 * registration, and the other edit would be lost silently (a password change undone by a
 * concurrent `registry set --attr`, or a removal undone by a concurrent edit). The relay
 * whose edit lost knows what it changed (its edit and the registration before it), so it
 * merges field by field and originates the result with the next counter:
 * - a field group (type and attributes; the verifier) that only our edit changed is ours;
 * - a removal wins over a concurrent edit (revoking access is never undone by an edit);
 * - a field both edits changed stays the winner's (and the caller warns).
 * Pure: no I/O.
 *
 * @module
 */

import type { Registration } from "../registry/registry.ts";

/** What to do after a concurrent edit beat ours. */
export interface MergeResult {
  /** What to originate (a merged registration, or null: our removal again); undefined: keep theirs. */
  reg?: Registration | null;
  /** True when a change of ours is lost (both edits changed the same field): warn. */
  lost: boolean;
}

function sameAttributes(a: Registration, b: Registration): boolean {
  return a.type === b.type && a.attributes.join("\0") === b.attributes.join("\0");
}

/**
 * Merges `ours` (our edit, made over `base`) into `theirs` (the concurrent edit that won).
 *
 * @example
 * ```ts
 * import { mergeConcurrent } from "./reg_merge.ts";
 * const base = { id: "fax1", type: "FAX", attributes: [], passwordHash: "old", updatedAt: 1 };
 * const ours = { ...base, passwordHash: "new" }; // registry passwd here
 * const theirs = { ...base, attributes: ["PRINT"] }; // registry set elsewhere, won
 * const { reg } = mergeConcurrent(base, ours, theirs);
 * console.assert(reg?.passwordHash === "new" && reg.attributes[0] === "PRINT");
 * ```
 */
export function mergeConcurrent(
  base: Registration,
  ours: Registration | null,
  theirs: Registration | null,
): MergeResult {
  // Our removal lost to an edit: remove again. To another removal: nothing lost.
  if (ours === null) return theirs === null ? { lost: false } : { reg: null, lost: false };
  if (theirs === null) return { lost: false }; // their removal wins
  const oursAttrs = !sameAttributes(ours, base), theirsAttrs = !sameAttributes(theirs, base);
  const oursPw = ours.passwordHash !== base.passwordHash;
  const theirsPw = theirs.passwordHash !== base.passwordHash;
  const merged: Registration = { ...theirs, attributes: [...theirs.attributes] };
  if (oursAttrs && !theirsAttrs) {
    merged.type = ours.type;
    merged.attributes = [...ours.attributes];
  }
  if (oursPw && !theirsPw) merged.passwordHash = ours.passwordHash;
  const lost = (oursAttrs && theirsAttrs && !sameAttributes(ours, theirs)) ||
    (oursPw && theirsPw && ours.passwordHash !== theirs.passwordHash);
  if (sameAttributes(merged, theirs) && merged.passwordHash === theirs.passwordHash) {
    return { lost };
  }
  merged.updatedAt = Math.max(ours.updatedAt, theirs.updatedAt);
  return { reg: merged, lost };
}
