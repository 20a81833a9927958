import assert from "node:assert/strict";
import { jsonErrorOffset, parseJsonObject } from "./json_file.ts";
import { UsageError } from "./errors.ts";

Deno.test({
  name: "parseJsonObject() reports line and column of any syntax error",
  permissions: "none",
  fn() {
    const cases: [string, string][] = [
      ['{\n  "relay": [1,]\n}', "f.json:2:15"],
      ["{\n  id: 1}", "f.json:2:3"],
      ['{"a": tru}', "f.json:1:7"],
      ['{"a": 1', "f.json:1:8"],
      ['{"a": 1} x', "f.json:1:10"],
      ["", "f.json:1:1"],
    ];
    for (const [text, where] of cases) {
      assert.throws(() => parseJsonObject(text, "f.json"), (e: UsageError) => {
        assert.ok(e.message.startsWith(`${where}: JSON syntax error: `), e.message);
        assert.doesNotMatch(e.message, /\n/);
        return true;
      });
    }
    assert.throws(() => parseJsonObject("[1]", "f.json"), /f\.json: not a JSON object/);
    assert.equal(jsonErrorOffset('{"a": [1, {"b": "\\"x"}], "c": null}'), 35);
  },
});
