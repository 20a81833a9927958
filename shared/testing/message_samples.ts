/**
 * Sample messages for protocol tests: a hand-written table with at least one value of
 * every message variant, and a seeded generator of random valid messages for fuzzing.
 *
 * @module
 */

import {
  DeviceState,
  EndReason,
  ErrorCode,
  FILE_ATTRIBUTE,
  MAX_PAYLOAD,
  Role,
} from "../protocol/constants.ts";
import type { DirectoryEntry, Message, MessageKind } from "../protocol/messages.ts";

/** The message variant whose `kind` is `K`. */
export type MessageOf<K extends MessageKind> = Extract<Message, { kind: K }>;

/**
 * Non-empty sample lists keyed by every `Message["kind"]`. Being a mapped type over
 * `MessageKind`, a table of this type fails to compile when a variant is missing.
 */
export type SampleTable = { [K in MessageKind]: [MessageOf<K>, ...MessageOf<K>[]] };

const printer: DirectoryEntry = {
  id: "printer-2f",
  type: "PRINTER",
  attributes: [FILE_ATTRIBUTE, "COLOR"],
  services: ["file", "ipp"],
  state: DeviceState.Online,
  relay: "relay-tokyo",
  idle: 2,
  sessions: 1,
  peers: ["alice"],
  lastUpdate: 1_790_000_000_123,
};

const offline: DirectoryEntry = {
  id: "fax",
  type: "FAX",
  attributes: [],
  services: [],
  state: DeviceState.Offline,
  relay: "",
  idle: 0,
  sessions: 0,
  peers: [],
  lastUpdate: 0,
};

const unreachable: DirectoryEntry = {
  id: "ユーザー",
  type: "USER",
  attributes: ["\u{1F4E0}", ""],
  services: ["ipp", "", "s".repeat(64)],
  state: DeviceState.Unreachable,
  relay: "relay-osaka",
  idle: 0xffff,
  sessions: 0xffff,
  peers: ["a", "b", "c"],
  lastUpdate: -1.5,
};

/** At least one value of every message variant, including edge values. */
export const SAMPLES: SampleTable = {
  hello: [
    { kind: "hello", version: 1, role: Role.Device, software: "tsunagi-agent/0.1" },
    { kind: "hello", version: 0xffff, role: Role.Relay, software: "" },
  ],
  login: [
    {
      kind: "login",
      id: "alice",
      nonce: "rOprNGfwEbeRWgbNEkqO",
      instance: "",
      ticket: "",
      services: [],
    },
    {
      kind: "login",
      id: "\uFEFFbom",
      nonce: "",
      instance: "пароль",
      ticket: "t".repeat(43),
      services: ["file", "ipp", "", "\u{1F5A8}"],
    },
  ],
  loginChallenge: [
    {
      kind: "loginChallenge",
      nonce: "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
      salt: Uint8Array.fromBase64("W22ZaJ0SNY7soEsUEjb6gQ=="),
      iterations: 4096,
      prehash: "",
    },
    {
      kind: "loginChallenge",
      nonce: "",
      salt: new Uint8Array(0),
      iterations: 0xffffffff,
      prehash: "scrypt$16384$8$1$c2FsdA==",
    },
  ],
  loginProof: [
    { kind: "loginProof", proof: new Uint8Array(32).fill(0x5a) },
    { kind: "loginProof", proof: new Uint8Array(0) },
  ],
  loginResult: [
    {
      kind: "loginResult",
      code: ErrorCode.Ok,
      keepaliveMs: 30_000,
      retryAfterMs: 0,
      relay: "relay-tokyo",
      message: "",
      signature: new Uint8Array(32).fill(0xc3),
      ticket: "abc",
      ticketTtlMs: 300_000,
    },
    {
      kind: "loginResult",
      code: ErrorCode.Throttled,
      keepaliveMs: 0,
      retryAfterMs: 0xffffffff,
      relay: "r",
      message: "Too many failed logins",
      signature: new Uint8Array(0),
      ticket: "",
      ticketTtlMs: 0,
    },
  ],
  ping: [{ kind: "ping", nonce: 0 }, { kind: "ping", nonce: 0xffffffff }],
  pong: [{ kind: "pong", nonce: 0x01020304 }],
  logout: [{ kind: "logout" }],
  list: [{ kind: "list", includeOffline: false }, { kind: "list", includeOffline: true }],
  listResult: [
    { kind: "listResult", entries: [], more: false },
    { kind: "listResult", entries: [printer, offline, unreachable], more: true },
  ],
  status: [{ kind: "status", id: "printer-2f" }],
  statusResult: [
    { kind: "statusResult", entry: null },
    { kind: "statusResult", entry: printer },
  ],
  connect: [{ kind: "connect", target: "printer-2f", service: "file" }],
  notice: [
    { kind: "notice", session: "s-1", requester: "alice", requesterType: "USER", service: "file" },
  ],
  accept: [{ kind: "accept", session: "s-1", peer: "printer-2f" }],
  reject: [
    { kind: "reject", session: "s-1", code: ErrorCode.TargetBusy, message: "Target is busy" },
  ],
  data: [
    { kind: "data", bytes: new Uint8Array(0) },
    { kind: "data", bytes: new Uint8Array([0x10, 0, 0, 0, 1, 0]) },
    { kind: "data", bytes: new Uint8Array(MAX_PAYLOAD).fill(0xa5) },
  ],
  end: [{ kind: "end", reason: EndReason.Normal }, { kind: "end", reason: EndReason.Aborted }],
  release: [{ kind: "release" }],
  error: [
    { kind: "error", code: ErrorCode.UnsupportedVersion, message: "Cannot speak version 2" },
  ],
  linkChallenge: [{ kind: "linkChallenge", nonce: "00ff".repeat(8) }],
  linkAuth: [
    {
      kind: "linkAuth",
      name: "relay-a",
      address: "127.0.0.1:7801",
      purpose: 0,
      nonce: "ab".repeat(16),
      mac: "cd".repeat(32),
    },
    { kind: "linkAuth", name: "", address: "", purpose: 1, nonce: "", mac: "" },
  ],
  linkOk: [{ kind: "linkOk", name: "relay-b", address: "[::1]:7802", mac: "ef".repeat(32) }],
  route: [
    {
      kind: "route",
      session: "s-1",
      requester: "pc1",
      requesterType: "USER",
      target: "fax1",
      service: "file",
      hops: 255,
    },
  ],
  update: [{ kind: "update", body: '{"t":"dev","origin":"r1"}' }],
  digest: [{ kind: "digest", body: "{}" }],
};

/** Every sample of {@link SAMPLES}, flattened. */
export function allSamples(): Message[] {
  return Object.values(SAMPLES).flat();
}

/** A seeded PRNG (mulberry32): returns floats in [0, 1), the same sequence per seed. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Small helpers over a PRNG, shared by the fuzz tests. */
export class Rng {
  readonly #next: () => number;
  /** Creates a generator from a seed. */
  constructor(seed: number) {
    this.#next = mulberry32(seed);
  }
  /** A float in [0, 1). */
  float(): number {
    return this.#next();
  }
  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.#next() * n);
  }
  /** An integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }
  /** One element of `items`. */
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }
  /** `n` random bytes. */
  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.int(256);
    return out;
  }
  /** A random string: ASCII, wider BMP characters, astral characters and U+FEFF. */
  string(maxChars = 12): string {
    const n = this.int(maxChars + 1);
    let s = "";
    for (let i = 0; i < n; i++) {
      const r = this.int(10);
      if (r < 6) s += String.fromCharCode(this.range(0x20, 0x7e));
      else if (r < 8) s += String.fromCharCode(this.range(0xa0, 0xd7ff));
      else if (r < 9) s += String.fromCodePoint(this.range(0x10000, 0x10ffff));
      else s += "\uFEFF";
    }
    return s;
  }
}

function randomEntry(rng: Rng): DirectoryEntry {
  const list = () => Array.from({ length: rng.int(4) }, () => rng.string(6));
  return {
    id: rng.string(),
    type: rng.string(),
    attributes: list(),
    services: list(),
    state: rng.int(3) as DeviceState,
    relay: rng.string(),
    idle: rng.int(0x10000),
    sessions: rng.int(0x10000),
    peers: list(),
    lastUpdate: rng.pick([0, -0, 1.5, Date.UTC(2026, 10, 1), Number.MAX_VALUE, rng.float()]),
  };
}

/** A random valid message of a random kind. */
export function randomMessage(rng: Rng): Message {
  const kinds = Object.keys(SAMPLES) as MessageKind[];
  const kind = rng.pick(kinds);
  const u16 = () => rng.int(0x10000);
  const u32 = () => rng.int(0x100000000);
  const code = () => rng.pick(Object.values(ErrorCode)) as ErrorCode;
  switch (kind) {
    case "hello":
      return {
        kind,
        version: u16(),
        role: rng.pick([Role.Device, Role.Relay]),
        software: rng.string(),
      };
    case "login":
      return {
        kind,
        id: rng.string(),
        nonce: rng.string(),
        instance: rng.string(),
        ticket: rng.string(),
        services: Array.from({ length: rng.int(4) }, () => rng.string(6)),
      };
    case "loginChallenge":
      return {
        kind,
        nonce: rng.string(),
        salt: rng.bytes(rng.int(64)),
        iterations: u32(),
        prehash: rng.string(),
      };
    case "loginProof":
      return { kind, proof: rng.bytes(rng.int(64)) };
    case "loginResult":
      return {
        kind,
        code: code(),
        keepaliveMs: u32(),
        retryAfterMs: u32(),
        relay: rng.string(),
        message: rng.string(),
        signature: rng.bytes(rng.int(64)),
        ticket: rng.string(),
        ticketTtlMs: u32(),
      };
    case "ping":
    case "pong":
      return { kind, nonce: u32() };
    case "logout":
    case "release":
      return { kind };
    case "list":
      return { kind, includeOffline: rng.int(2) === 1 };
    case "listResult":
      return {
        kind,
        entries: Array.from({ length: rng.int(4) }, () => randomEntry(rng)),
        more: rng.int(2) === 1,
      };
    case "status":
      return { kind, id: rng.string() };
    case "statusResult":
      return { kind, entry: rng.int(2) === 0 ? null : randomEntry(rng) };
    case "connect":
      return { kind, target: rng.string(), service: rng.string() };
    case "notice":
      return {
        kind,
        session: rng.string(),
        requester: rng.string(),
        requesterType: rng.string(),
        service: rng.string(),
      };
    case "accept":
      return { kind, session: rng.string(), peer: rng.string() };
    case "reject":
      return { kind, session: rng.string(), code: code(), message: rng.string() };
    case "data":
      return { kind, bytes: rng.bytes(rng.int(64)) };
    case "end":
      return { kind, reason: rng.pick([EndReason.Normal, EndReason.Aborted]) };
    case "error":
      return { kind, code: code(), message: rng.string() };
    case "linkChallenge":
      return { kind, nonce: rng.string() };
    case "linkAuth":
      return {
        kind,
        name: rng.string(),
        address: rng.string(),
        purpose: rng.pick([0, 1] as const),
        nonce: rng.string(),
        mac: rng.string(),
      };
    case "linkOk":
      return { kind, name: rng.string(), address: rng.string(), mac: rng.string() };
    case "route":
      return {
        kind,
        session: rng.string(),
        requester: rng.string(),
        requesterType: rng.string(),
        target: rng.string(),
        service: rng.string(),
        hops: rng.int(256),
      };
    case "update":
    case "digest":
      return { kind, body: rng.string() };
    default: {
      const never: never = kind;
      throw new TypeError(`Cannot generate message: unknown kind ${never}`);
    }
  }
}
