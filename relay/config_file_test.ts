import assert from "node:assert/strict";
import { applyConfigFile, type OptionSpec } from "./config_file.ts";
import { UsageError } from "../shared/errors.ts";

const OPTIONS: Record<string, OptionSpec> = {
  listen: { type: "string" },
  data: { type: "string" },
  peer: { type: "string", multiple: true },
  config: { type: "string" },
  help: { type: "boolean", short: "h" },
};

async function withFile(text: string, fn: (file: string, dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/relay.json`, text);
    await fn(`${dir}/relay.json`, dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("applyConfigFile() lets flags override the file and resolves paths from its folder", async () => {
  await withFile('{"listen": "127.0.0.1:1", "data": "d", "peer": "127.0.0.1:2"}', async (f, d) => {
    const v = await applyConfigFile(f, OPTIONS, { listen: "127.0.0.1:9", data: undefined });
    assert.deepEqual(v, { listen: "127.0.0.1:9", data: `${d}/d`, peer: ["127.0.0.1:2"] });
  });
});

Deno.test("applyConfigFile() names an unknown key, a wrong type and a syntax error's position", async () => {
  await withFile('{"listen": "x", "lisen": "y"}', async (f) => {
    await assert.rejects(applyConfigFile(f, OPTIONS, {}), (e: UsageError) => {
      assert.match(e.message, /unknown key "lisen"/);
      assert.match(e.hint, /known keys: listen, data, peer$/);
      return true;
    });
  });
  await withFile('{"listen": 7800}', async (f) => {
    await assert.rejects(applyConfigFile(f, OPTIONS, {}), /key "listen" must be a string/);
  });
  await withFile('{\n  "listen": "x",\n}', async (f) => {
    await assert.rejects(applyConfigFile(f, OPTIONS, {}), /relay\.json:3:1: JSON syntax error/);
  });
});
