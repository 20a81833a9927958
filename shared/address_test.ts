import assert from "node:assert/strict";
import { addressGroup } from "./address.ts";

Deno.test("addressGroup: IPv4 as is, IPv6 by /64, IPv4-mapped as IPv4, anything else as is", () => {
  const cases: [string, string][] = [
    ["192.0.2.7", "192.0.2.7"],
    ["2001:db8:1:2:a::1", "2001:db8:1:2::/64"],
    ["2001:DB8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"],
    ["2001:db8::", "2001:db8:0:0::/64"],
    ["[2001:db8:0:0:1:2:3:4]", "2001:db8:0:0::/64"],
    ["fe80::1%eth0", "fe80:0:0:0::/64"],
    ["::1", "0:0:0:0::/64"],
    ["::ffff:192.0.2.1", "192.0.2.1"],
    ["0:0:0:0:0:ffff:c000:0201", "192.0.2.1"],
    ["64:ff9b::192.0.2.1", "64:ff9b:0:0::/64"],
    ["1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7:8:9"],
    ["1::2::3", "1::2::3"],
    ["relay.example", "relay.example"],
  ];
  for (const [host, group] of cases) assert.equal(addressGroup(host), group, host);
});
