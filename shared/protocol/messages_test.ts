import assert from "node:assert/strict";
import { authMessage, clientProof, saltedPassword, serverSignature, verifierOf } from "../scram.ts";
import { MalformedMessageError } from "../errors.ts";
import { SAMPLES, type SampleTable } from "../testing/message_samples.ts";
import { ErrorCode, FrameType, MAX_PAYLOAD, PROTOCOL_VERSION } from "./constants.ts";
import { FrameDecoder } from "./frame.ts";
import {
  checkVersion,
  decodeMessage,
  type DirectoryEntry,
  encodeData,
  encodeMessage,
  errorMessage,
  type Message,
  type MessageKind,
} from "./messages.ts";

/** Bytes from a hex string; spaces and line breaks are ignored. */
function hex(text: string): Uint8Array {
  const digits = text.replace(/\s+/g, "");
  assert.equal(digits.length % 2, 0, "odd number of hex digits");
  return Uint8Array.from(digits.match(/../g) ?? [], (b) => parseInt(b, 16));
}

/** Splits whole-frame bytes into exactly one frame and decodes it. */
function decodeBytes(bytes: Uint8Array): Message {
  const decoder = new FrameDecoder();
  const frames = decoder.push(bytes);
  assert.equal(frames.length, 1, "expected exactly one frame");
  decoder.finish();
  return decodeMessage(frames[0]);
}

// --- Type-level coverage ----------------------------------------------------------------

/** True when `A` and `B` are the same type. */
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true
  : false;

// SAMPLES is a mapped type over MessageKind, so a new variant without samples fails to
// compile; these lines keep that guarantee from being loosened by accident.
const sampleKindsCoverEveryKind: Equal<keyof typeof SAMPLES, MessageKind> = true;
function tableWithoutRelease(): SampleTable {
  const { release: _, ...rest } = SAMPLES;
  // @ts-expect-error: a table missing a variant (here `release`) must not type-check.
  return rest;
}

Deno.test({
  name: "SAMPLES holds a sample of every message kind and every frame type",
  permissions: "none",
  fn() {
    assert.ok(sampleKindsCoverEveryKind);
    assert.equal("release" in tableWithoutRelease(), false);
    const types = new Set<number>();
    for (const [kind, samples] of Object.entries(SAMPLES)) {
      for (const m of samples) {
        assert.equal(m.kind, kind);
        types.add(encodeMessage(m)[0]);
      }
    }
    // LINK_SEALED wraps another frame on relay links (relay/mesh/link_seal.ts): no message.
    const messageTypes = Object.values(FrameType).filter((t) => t !== FrameType.LinkSealed);
    assert.deepEqual([...types].sort((a, b) => a - b), messageTypes);
  },
});

// --- Round trips ------------------------------------------------------------------------

for (const [kind, samples] of Object.entries(SAMPLES)) {
  Deno.test({
    name: `decodeMessage() returns every ${kind} sample that encodeMessage() wrote`,
    permissions: "none",
    fn() {
      for (const m of samples) assert.deepStrictEqual(decodeBytes(encodeMessage(m)), m);
    },
  });
}

// --- Byte fixtures ----------------------------------------------------------------------

/** Messages and their exact encoding, written out by hand from the layout table. */
const FIXTURES: [string, Message, string][] = [
  [
    "HELLO version 1, device, software 'agent/1'",
    { kind: "hello", version: 1, role: 1, software: "agent/1" },
    "01 00000010  54534e47 0001 01 0007 6167656e742f31",
  ],
  [
    "LOGIN 'alice', nonce 'abc', no instance, no ticket",
    { kind: "login", id: "alice", nonce: "abc", instance: "", ticket: "", services: [] },
    "02 00000011  0005 616c696365 0003 616263 0000 0000  00",
  ],
  [
    "LOGIN declaring services 'file' and 'ipp'",
    { kind: "login", id: "a", nonce: "n", instance: "", ticket: "", services: ["file", "ipp"] },
    "02 00000016  0001 61 0001 6e 0000 0000  02 0004 66696c65 0003 697070",
  ],
  [
    "LOGIN_CHALLENGE nonce 'abcd', salt 01 02, 4096 iterations, no prehash",
    {
      kind: "loginChallenge",
      nonce: "abcd",
      salt: new Uint8Array([1, 2]),
      iterations: 4096,
      prehash: "",
    },
    "19 00000010  0004 61626364 0002 0102 00001000 0000",
  ],
  [
    "LOGIN_PROOF of 3 bytes",
    { kind: "loginProof", proof: new Uint8Array([0xaa, 0xbb, 0xcc]) },
    "1a 00000005  0003 aabbcc",
  ],
  [
    "LOGIN_RESULT ok, keep-alive 30000 ms, relay 'relay-tokyo'",
    {
      kind: "loginResult",
      code: ErrorCode.Ok,
      keepaliveMs: 30_000,
      retryAfterMs: 0,
      relay: "relay-tokyo",
      message: "",
      signature: new Uint8Array([0xee]),
      ticket: "t",
      ticketTtlMs: 1000,
    },
    "03 00000023  0000 00007530 00000000 000b 72656c61792d746f6b796f 0000 0001ee 000174 000003e8",
  ],
  ["PING nonce 0x01020304", { kind: "ping", nonce: 0x01020304 }, "04 00000004  01020304"],
  ["PONG nonce 0xfffffffe", { kind: "pong", nonce: 0xfffffffe }, "05 00000004  fffffffe"],
  ["LOGOUT", { kind: "logout" }, "06 00000000"],
  ["LIST including offline devices", { kind: "list", includeOffline: true }, "07 00000001  01"],
  [
    "LIST_RESULT with one entry",
    {
      kind: "listResult",
      entries: [{
        id: "fax",
        type: "FAX",
        attributes: ["FILE TX/RX"],
        services: ["file"],
        state: 1,
        relay: "r1",
        idle: 2,
        sessions: 0,
        peers: [],
        lastUpdate: 1,
      }],
      more: false,
    },
    `08 00000033  00 0001
       0003 666178  0003 464158  01 000a 46494c452054582f5258  01 0004 66696c65  01  0002 7231
       0002 0000  00  3ff0000000000000`,
  ],
  ["STATUS 'fax'", { kind: "status", id: "fax" }, "09 00000005  0003 666178"],
  ["STATUS_RESULT not found", { kind: "statusResult", entry: null }, "0a 00000001  00"],
  [
    "CONNECT 'fax' service 'file'",
    { kind: "connect", target: "fax", service: "file" },
    "0b 0000000b  0003 666178 0004 66696c65",
  ],
  [
    "NOTICE session 's1' from 'alice' (USER) for 'file'",
    { kind: "notice", session: "s1", requester: "alice", requesterType: "USER", service: "file" },
    "0c 00000017  0002 7331 0005 616c696365 0004 55534552 0004 66696c65",
  ],
  [
    "ACCEPT session 's1' peer 'fax'",
    { kind: "accept", session: "s1", peer: "fax" },
    "0d 00000009  0002 7331 0003 666178",
  ],
  [
    "REJECT session 's1' TargetBusy 'busy'",
    { kind: "reject", session: "s1", code: ErrorCode.TargetBusy, message: "busy" },
    "0e 0000000c  0002 7331 0016 0004 62757379",
  ],
  ["DATA 'hi'", { kind: "data", bytes: new Uint8Array([0x68, 0x69]) }, "0f 00000002  6869"],
  ["END normal", { kind: "end", reason: 0 }, "10 00000001  00"],
  ["END aborted", { kind: "end", reason: 1 }, "10 00000001  01"],
  ["RELEASE", { kind: "release" }, "11 00000000"],
  [
    "ERROR UnsupportedVersion 'bad version'",
    { kind: "error", code: ErrorCode.UnsupportedVersion, message: "bad version" },
    "12 0000000f  0002 000b 6261642076657273696f6e",
  ],
];

for (const [what, message, bytes] of FIXTURES) {
  Deno.test({
    name: `encodeMessage() writes the exact bytes of ${what}`,
    permissions: "none",
    fn() {
      assert.deepEqual(encodeMessage(message), hex(bytes));
      assert.deepStrictEqual(decodeBytes(hex(bytes)), message);
    },
  });
}

Deno.test({
  name: "encodeMessage() and scram.ts write the login exchange shown in docs/protocol.md",
  permissions: "none",
  async fn() {
    // Section 9 of docs/protocol.md: keep the two in step.
    const salt = hex("41 25 c2 47 e4 3a b1 e9 3c 6d ff 76 ba 4f 2d 9e");
    const x = {
      id: "alice",
      clientNonce: "fyko+d2lbbFgONRv9qkxdawL",
      nonce: "fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j",
      salt,
      iterations: 4096,
    };
    const hello = encodeMessage({
      kind: "hello",
      version: 3,
      role: 1,
      software: "tsunagi-agent/0.2",
    });
    const login = encodeMessage({
      kind: "login",
      id: "alice",
      nonce: x.clientNonce,
      instance: "",
      ticket: "",
      services: ["ipp"],
    });
    assert.deepEqual(
      new Uint8Array([...hello, ...login]),
      hex(`01 00 00 00 1a  54 53 4e 47  00 03  01
           00 11 74 73 75 6e 61 67 69 2d 61 67 65 6e 74 2f 30 2e 32
           02 00 00 00 2b  00 05 61 6c 69 63 65
           00 18 66 79 6b 6f 2b 64 32 6c 62 62 46 67 4f 4e 52 76 39 71 6b 78 64 61 77 4c
           00 00  00 00  01 00 03 69 70 70`),
    );
    assert.deepEqual(
      encodeMessage({
        kind: "loginChallenge",
        nonce: x.nonce,
        salt,
        iterations: 4096,
        prehash: "",
      }),
      hex(`19 00 00 00 44
           00 2a 66 79 6b 6f 2b 64 32 6c 62 62 46 67 4f 4e 52 76 39 71 6b 78 64 61 77 4c
                 33 72 66 63 4e 48 59 4a 59 31 5a 56 76 57 56 73 37 6a
           00 10 41 25 c2 47 e4 3a b1 e9 3c 6d ff 76 ba 4f 2d 9e
           00 00 10 00
           00 00`),
    );
    const salted = await saltedPassword("s3cret", salt, 4096);
    const auth = authMessage(x);
    assert.deepEqual(
      encodeMessage({ kind: "loginProof", proof: clientProof(salted, auth) }),
      hex(`1a 00 00 00 22  00 20 5a 2f 00 8b 28 a5 6d dc 00 3e 27 fc 2e e4 1e 73
                                 9e e0 e6 cd 47 c7 72 06 06 45 f9 80 d3 de 7c 52`),
    );
    const v = verifierOf(salted, salt, 4096);
    assert.equal(v.storedKey.toBase64(), "eU0IgNVUsxN322Vx/DscmalBGRt2dk0FEsNQoJhzAvA=");
    assert.equal(v.serverKey.toBase64(), "kXU9k4mVqG7bN1HFgZH7MBo/yfeXaBqEbnoWShETYcs=");
    const relay = "relay-tokyo";
    const none = new Uint8Array(0);
    assert.deepEqual(
      encodeMessage({
        kind: "loginResult",
        code: ErrorCode.Ok,
        keepaliveMs: 15_000,
        retryAfterMs: 0,
        relay,
        message: "",
        signature: serverSignature(v.serverKey, auth),
        ticket: "",
        ticketTtlMs: 0,
      }),
      hex(`03 00 00 00 41  00 00  00 00 3a 98  00 00 00 00
           00 0b 72 65 6c 61 79 2d 74 6f 6b 79 6f  00 00
           00 20 54 76 e2 2a 43 72 fe 24 47 a3 8d d9 e1 c7 59 7f
                 1b 9f 04 55 8a 0a 56 14 13 91 7f c5 22 54 1f bc
           00 00  00 00 00 00`),
    );
    assert.deepEqual(
      encodeMessage({
        kind: "loginResult",
        code: ErrorCode.AuthFailed,
        keepaliveMs: 0,
        retryAfterMs: 0,
        relay,
        message: "Unknown device or wrong password",
        signature: none,
        ticket: "",
        ticketTtlMs: 0,
      }),
      hex(`03 00 00 00 41  00 0a  00 00 00 00  00 00 00 00
           00 0b 72 65 6c 61 79 2d 74 6f 6b 79 6f
           00 20 55 6e 6b 6e 6f 77 6e 20 64 65 76 69 63 65 20 6f 72 20 77 72 6f 6e 67 20
           70 61 73 73 77 6f 72 64
           00 00  00 00  00 00 00 00`),
    );
  },
});

Deno.test({
  name: "encodeMessage() keeps a leading U+FEFF in strings (no BOM stripping on decode)",
  permissions: "none",
  fn() {
    const bytes = encodeMessage({ kind: "status", id: "\uFEFFfax" });
    assert.deepEqual(bytes, hex("09 00000008  0006 efbbbf 666178"));
    assert.deepStrictEqual(decodeBytes(bytes), { kind: "status", id: "\uFEFFfax" });
  },
});

Deno.test({
  name:
    "encodeMessage() and decodeMessage() keep every string exactly, ASCII or not, short or long",
  permissions: "none",
  fn() {
    const utf8 = new TextEncoder();
    const strings = [
      "",
      "\0",
      "fax-01",
      "x".repeat(64),
      "x".repeat(65),
      "\x7f" + "a".repeat(63),
      "caf\u00e9",
      "\u00e9".repeat(64),
      "ok\x1b[2J",
      "\u{1f4e0}",
      "a".repeat(63) + "\u00e9",
      "\ud800", // a lone surrogate goes out as U+FFFD, as TextEncoder writes it
    ];
    for (const id of strings) {
      const bytes = encodeMessage({ kind: "status", id });
      const body = utf8.encode(id);
      assert.deepEqual(bytes.subarray(5), new Uint8Array([body.length >> 8, body.length, ...body]));
      assert.deepStrictEqual(decodeBytes(bytes), { kind: "status", id: id.toWellFormed() });
    }
  },
});

Deno.test({
  name: "encodeData() writes the same bytes as encodeMessage() for a data message",
  permissions: "none",
  fn() {
    const payload = new Uint8Array([0x10, 0x00, 0x00, 0x00, 0x01, 0x00]);
    assert.deepEqual(encodeData(payload), hex("0f 00000006  100000000100"));
    assert.deepEqual(encodeData(payload), encodeMessage({ kind: "data", bytes: payload }));
  },
});

Deno.test({
  name: "decodeMessage() returns DATA bytes as a view of the frame payload",
  permissions: "none",
  fn() {
    const payload = new Uint8Array([1, 2, 3]);
    const m = decodeMessage({ type: FrameType.Data, payload });
    assert.equal(m.kind, "data");
    assert.equal((m as { bytes: Uint8Array }).bytes, payload);
  },
});

Deno.test({
  name: "decodeMessage() reads only bit 0 of the LIST flags",
  permissions: "none",
  fn() {
    assert.deepStrictEqual(decodeBytes(hex("07 00000001 03")), {
      kind: "list",
      includeOffline: true,
    });
    assert.deepStrictEqual(decodeBytes(hex("07 00000001 fe")), {
      kind: "list",
      includeOffline: false,
    });
  },
});

Deno.test({
  name: "decodeMessage() treats any non-zero STATUS_RESULT found byte as found",
  permissions: "none",
  fn() {
    const entry = "0003 666178 0003 464158 00 00 00 0000 0000 0000 00 0000000000000000";
    assert.deepStrictEqual(decodeBytes(hex(`0a 0000001d 02 ${entry}`)), {
      kind: "statusResult",
      entry: {
        id: "fax",
        type: "FAX",
        attributes: [],
        services: [],
        state: 0,
        relay: "",
        idle: 0,
        sessions: 0,
        peers: [],
        lastUpdate: 0,
      },
    });
  },
});

// --- Decode errors ----------------------------------------------------------------------

/** Frames that must be refused, with the message each error must carry. */
const MALFORMED: [string, string, RegExp][] = [
  ["unknown type 0x1b", "1b 00000000", /^Cannot decode frame: unknown type 0x1b$/],
  ["unknown type 0x00", "00 00000000", /unknown type 0x0$/],
  ["unknown type 0xff", "ff 00000001 00", /unknown type 0xff$/],
  ["PING with a 3-byte payload", "04 00000003 010203", /payload ends after 3 bytes/],
  ["END with an empty payload", "10 00000000", /payload ends after 0 bytes/],
  ["LOGIN whose id declares more bytes than remain", "02 00000005 0005 616c69", /ends after 5/],
  ["LOGIN without its password", "02 00000007 0005 616c696365", /ends after 7 bytes/],
  [
    "LOGIN_RESULT without its message string",
    "03 0000000e 0000 00007530 00000000 0002 7231",
    /ends after 14 bytes/,
  ],
  ["LIST_RESULT declaring 2 entries but holding none", "08 00000002 0002", /ends after 2/],
  ["PING with a trailing byte", "04 00000005 0102030405", /: 1 trailing bytes$/],
  ["LOGOUT with a payload", "06 00000001 00", /: 1 trailing bytes$/],
  ["RELEASE with a payload", "11 00000002 0000", /: 2 trailing bytes$/],
  ["STATUS_RESULT not-found with a trailing byte", "0a 00000002 0000", /1 trailing bytes/],
  ["END with a trailing byte", "10 00000002 0000", /1 trailing bytes/],
  [
    "HELLO with bad magic 'TSNH'",
    "01 00000009 54534e48 0001 01 0000",
    /^Cannot decode HELLO: bad magic 0x54534e48$/,
  ],
  ["HELLO with magic in little-endian order", "01 00000009 474e5354 0001 01 0000", /bad magic/],
  [
    "HELLO with role 0",
    "01 00000009 54534e47 0001 00 0000",
    /^Cannot decode HELLO: unknown role 0$/,
  ],
  ["HELLO with role 3", "01 00000009 54534e47 0001 03 0000", /unknown role 3$/],
  ["a string holding byte 0xff", "09 00000003 0001 ff", /string is not UTF-8$/],
  ["a string with an overlong NUL (c0 80)", "09 00000004 0002 c080", /not UTF-8/],
  ["a string with an encoded surrogate (ed a0 80)", "09 00000005 0003 eda080", /not UTF-8/],
  ["a string with a cut multi-byte character", "09 00000004 0002 e381", /not UTF-8/],
  ["a string with a lone continuation byte", "12 00000005 0000 0001 80", /not UTF-8/],
  ["END with reason 2", "10 00000001 02", /^Cannot decode END: reason 2$/],
  ["END with reason 0xff", "10 00000001 ff", /reason 255$/],
  [
    "a directory entry with state 3",
    "0a 0000001d 01 0003 666178 0003 464158 00 00 03 0000 0000 0000 00 0000000000000000",
    /state 3$/,
  ],
];

for (const [what, bytes, message] of MALFORMED) {
  Deno.test({
    name: `decodeMessage() throws MalformedMessageError for ${what}`,
    permissions: "none",
    fn() {
      assert.throws(() => decodeBytes(hex(bytes)), (e: unknown) => {
        assert.ok(e instanceof MalformedMessageError, `got ${e}`);
        assert.ok(e instanceof SyntaxError);
        assert.equal(e.code, ErrorCode.BadFrame);
        assert.match(e.message, message);
        return true;
      });
    },
  });
}

Deno.test({
  name: "decodeMessage() keeps the TextDecoder error as the cause of a UTF-8 failure",
  permissions: "none",
  fn() {
    assert.throws(() => decodeBytes(hex("09 00000003 0001 ff")), (e: unknown) => {
      assert.ok(e instanceof MalformedMessageError);
      assert.ok(e.cause instanceof TypeError);
      return true;
    });
  },
});

// --- Encode errors ----------------------------------------------------------------------

Deno.test({
  name: "encodeMessage() rejects a string over 65535 UTF-8 bytes",
  permissions: "none",
  fn() {
    // The largest string that fits a frame: 2 length bytes + 65534 = MAX_PAYLOAD.
    assert.equal(encodeMessage({ kind: "status", id: "x".repeat(0xfffe) }).length, 5 + MAX_PAYLOAD);
    assert.throws(() => encodeMessage({ kind: "status", id: "é".repeat(0x8000) }), {
      name: "RangeError",
      message: "Cannot encode string: 65536 bytes exceeds 65535",
    });
  },
});

Deno.test({
  name: "encodeMessage() rejects a payload over MAX_PAYLOAD",
  permissions: "none",
  fn() {
    const long = "x".repeat(40_000);
    assert.throws(
      () =>
        encodeMessage({
          kind: "login",
          id: long,
          nonce: long,
          instance: "",
          ticket: "",
          services: [],
        }),
      {
        name: "RangeError",
        message: "Cannot encode message: payload 80009 bytes exceeds maximum 65536",
      },
    );
    assert.throws(
      () => encodeMessage({ kind: "data", bytes: new Uint8Array(MAX_PAYLOAD + 1) }),
      RangeError,
    );
  },
});

Deno.test({
  name: "encodeMessage() rejects a directory entry with more than 255 attributes or peers",
  permissions: "none",
  fn() {
    const entry: DirectoryEntry = {
      id: "a",
      type: "USER",
      attributes: [],
      services: [],
      state: 1,
      relay: "r",
      idle: 0,
      sessions: 0,
      peers: [],
      lastUpdate: 0,
    };
    const many = Array.from({ length: 256 }, () => "x");
    assert.throws(
      () => encodeMessage({ kind: "statusResult", entry: { ...entry, attributes: many } }),
      { name: "RangeError", message: "Cannot encode directory entry: 256 attributes exceeds 255" },
    );
    assert.throws(
      () =>
        encodeMessage({ kind: "listResult", entries: [{ ...entry, peers: many }], more: false }),
      { name: "RangeError", message: "Cannot encode directory entry: 256 peers exceeds 255" },
    );
    assert.throws(
      () => encodeMessage({ kind: "statusResult", entry: { ...entry, services: many } }),
      { name: "RangeError", message: "Cannot encode directory entry: 256 services exceeds 255" },
    );
    const most = {
      ...entry,
      attributes: many.slice(1),
      services: many.slice(1),
      peers: many.slice(1),
    };
    assert.deepStrictEqual(
      decodeBytes(encodeMessage({ kind: "statusResult", entry: most })),
      { kind: "statusResult", entry: most },
    );
  },
});

// --- Helpers ----------------------------------------------------------------------------

Deno.test({
  name: "checkVersion() accepts only the same version and explains a mismatch",
  permissions: "none",
  fn() {
    assert.equal(checkVersion(PROTOCOL_VERSION, PROTOCOL_VERSION), null);
    assert.equal(
      checkVersion(2, 1),
      "Cannot speak protocol version 2: this side speaks version 1",
    );
  },
});

Deno.test({
  name: "errorMessage() builds an ERROR message",
  permissions: "none",
  fn() {
    assert.deepStrictEqual(errorMessage(ErrorCode.AuthFailed, "Wrong password"), {
      kind: "error",
      code: ErrorCode.AuthFailed,
      message: "Wrong password",
    });
  },
});
