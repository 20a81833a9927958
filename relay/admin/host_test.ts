import assert from "node:assert/strict";
import { hostAllowed } from "./server.ts";

Deno.test({
  name: "hostAllowed() takes IP addresses and localhost, refuses names (DNS rebinding)",
  permissions: "none",
  fn() {
    for (const ok of ["127.0.0.1:9780", "127.0.0.1", "[::1]:9780", "localhost:9780", "10.0.0.5"]) {
      assert.ok(hostAllowed(ok), ok);
    }
    for (const bad of ["evil.example", "evil.example:9780", "localhost.evil.example", ""]) {
      assert.ok(!hostAllowed(bad), bad);
    }
  },
});
