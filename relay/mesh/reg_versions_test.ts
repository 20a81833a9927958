import assert from "node:assert/strict";
import { Logger } from "../../shared/log.ts";
import type { Registration } from "../registry/registry.ts";
import { regDigest, RegVersions } from "./reg_versions.ts";

function reg(hash: string, attributes: string[] = []): Registration {
  return { id: "fax1", type: "FAX", attributes, passwordHash: hash, updatedAt: 1 };
}

Deno.test("regDigest() covers type, attributes and verifier, not the timestamp", () => {
  assert.equal(regDigest(reg("h1")), regDigest({ ...reg("h1"), updatedAt: 2 }));
  assert.notEqual(regDigest(reg("h1")), regDigest(reg("h2")));
  assert.notEqual(regDigest(reg("h1")), regDigest(reg("h1", ["PRINT"])));
  assert.notEqual(regDigest(reg("h1")), regDigest({ ...reg("h1"), type: "USER" }));
});

Deno.test("RegVersions: changes are written once, coalesced, and read back", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/mesh-registry.json`;
    const table = new RegVersions({ path, coalesceMs: 60_000 });
    for (let i = 0; i < 1000; i++) table.set(`d${i}`, i + 1, "r1", reg(`h${i}`));
    table.set("gone", 4, "r2", null);
    await assert.rejects(Deno.stat(path), Deno.errors.NotFound, "nothing written per change");
    await table.close();
    const again = new RegVersions({ path });
    await again.load();
    assert.equal(again.size, 1001);
    assert.deepEqual(again.get("d9"), { lamport: 10, origin: "r1", digest: regDigest(reg("h9")) });
    assert.deepEqual(again.get("gone"), { lamport: 4, origin: "r2", digest: null });
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["mesh-registry.json"]);
    await again.close(); // unchanged: not rewritten
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("RegVersions.load(): a corrupt file is reported and read as empty", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/mesh-registry.json`;
    await Deno.writeTextFile(path, "{not json");
    const lines: string[] = [];
    const logger = new Logger({ level: "info", write: (line) => lines.push(line) });
    const table = new RegVersions({ path, logger });
    await table.load();
    assert.equal(table.size, 0);
    assert.ok(lines.some((l) => l.includes("mesh registry versions unreadable")), lines.join("\n"));
    await table.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
