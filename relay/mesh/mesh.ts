/**
 * The mesh directory: relays share connection information by flooding update notices
 * over control links (patent [0050]-[0053], Fig. 5), and route sessions hop by hop.
 *
 * Ownership: the directory owns its control links; each link has one loop (the only
 * reader). Notices are applied to {@link MeshState} and, when applied, forwarded to
 * every neighbour except the one they came from; a notice that is not newer is dropped
 * and not forwarded. When a link comes up both sides send a DIGEST and answer the
 * other's with the tables it lacks, so a relay that was partitioned converges without
 * waiting for new changes. See docs/mesh.md.
 *
 * @module
 */

import { formatHostPort, type HostPort, parseHostPort } from "../../shared/address.ts";
import { backoffDelay, delay } from "../../shared/backoff.ts";
import type { FramedConn } from "../../shared/framed_conn.ts";
import type { Logger } from "../../shared/log.ts";
import { type DirectoryEntry, LinkPurposes } from "../../shared/protocol/messages.ts";
import {
  type Directory,
  type DirectoryHealth,
  type Hop,
  type MeshTopology,
  offlineEntry,
  type SelfInfo,
} from "../directory.ts";
import { dialLink, isLinkRefused, type LinkCredentials } from "./link_auth.ts";
import { type Digest, MeshState, type Notice, parseNotice } from "./mesh_state.ts";
import type { Registration, RegistryStore } from "../registry/registry.ts";

/** Options for {@link MeshDirectory}. */
export interface MeshOptions {
  /** This relay's local registry (mesh registrations are written into it). */
  registry: RegistryStore;
  /** Folder for the persisted epoch. */
  dataDir: string;
  /** Relays to dial. */
  peers: HostPort[];
  /** Mesh secret. */
  secret: Uint8Array;
  /** PEM CA: dial peers with TLS. */
  tlsCa?: string;
  /** Relay record re-announced this often, ms (default 2000). */
  heartbeatMs?: number;
  /** A relay not heard from for this long is unreachable, ms (default 10000). */
  timeoutMs?: number;
  /** How often the local registry is checked for admin changes, ms (default 1000). */
  registryPollMs?: number;
  /** Logger. */
  logger: Logger;
  /** Wall clock, ms (information only; may be skewed). */
  now?: () => number;
}

interface ControlLink {
  readonly framed: FramedConn;
  readonly name: string;
  readonly address: string;
  /** Notices queued but not yet written: a link that falls too far behind is dropped. */
  pending: number;
}

/** Most notices queued on one link before it is dropped (it resyncs by digest). */
const MAX_PENDING = 10_000;

/** The flooding-mesh directory. */
export class MeshDirectory implements Directory {
  /** The local registry, kept in step with the mesh. */
  readonly registry: RegistryStore;
  readonly #options: MeshOptions;
  readonly #logger: Logger;
  readonly #now: () => number;
  readonly #heartbeatMs: number;
  readonly #timeoutMs: number;
  #state: MeshState | null = null;
  #self: SelfInfo | null = null;
  #epoch = 0;
  #seq = 0;
  readonly #links = new Map<string, Set<ControlLink>>();
  readonly #abort = new AbortController();
  readonly #tasks = new Set<Promise<void>>();
  readonly #timers: ReturnType<typeof setInterval>[] = [];
  /** Serialises registry polling and applying registration notices. */
  #registryLock: Promise<void> = Promise.resolve();
  /** Registrations learnt from the mesh, not yet written to the local registry. */
  readonly #pendingRegs = new Map<string, Registration | null>();
  #flushTimer: ReturnType<typeof setTimeout> | undefined;

  /** Creates the directory; it starts working in {@link start}. */
  constructor(options: MeshOptions) {
    this.registry = options.registry;
    this.#options = options;
    this.#logger = options.logger;
    this.#now = options.now ?? Date.now;
    this.#heartbeatMs = options.heartbeatMs ?? 2000;
    this.#timeoutMs = options.timeoutMs ?? 10_000;
  }

  /** Counters of applied and dropped notices. */
  get stats(): { applied: number; dropped: number } {
    return this.#state?.stats ?? { applied: 0, dropped: 0 };
  }

  get #mesh(): MeshState {
    if (this.#state === null) throw new Error("MeshDirectory used before start()");
    return this.#state;
  }

  /** Loads and bumps the epoch, announces this relay, dials peers, starts timers. */
  async start(self: SelfInfo): Promise<void> {
    this.#self = self;
    this.#state = new MeshState(self.name, () => performance.now());
    this.#epoch = await bumpEpoch(`${this.#options.dataDir}/mesh-epoch`);
    this.#announceRelay();
    await this.#pollRegistry();
    this.#timers.push(setInterval(() => this.#announceRelay(), this.#heartbeatMs));
    this.#timers.push(
      setInterval(() => void this.#pollRegistry(), this.#options.registryPollMs ?? 1000),
    );
    for (const peer of this.#options.peers) this.#track(this.#dialLoop(peer));
  }

  #track(task: Promise<void>) {
    this.#tasks.add(task);
    task.finally(() => this.#tasks.delete(task));
  }

  #nextVersion(): [number, number] {
    return [this.#epoch, ++this.#seq];
  }

  /** Floods this relay's record (address, neighbours). */
  #announceRelay() {
    const self = this.#self!;
    this.#originate({
      t: "relay",
      origin: self.name,
      v: this.#nextVersion(),
      address: formatHostPort(self.address),
      neighbors: [...this.#links.keys()].sort(),
      wall: this.#now(),
    });
  }

  /** Applies a notice made here and floods it to every neighbour. */
  #originate(n: Notice) {
    this.#mesh.apply(n);
    this.#flood(n, null);
  }

  /** See {@link Directory.publish}: a local device changed. */
  publish(entry: DirectoryEntry): void {
    if (this.#state === null) return;
    this.#originate({ t: "dev", origin: this.#self!.name, v: this.#nextVersion(), entry });
  }

  /** See {@link Directory.lookup}. */
  async lookup(id: string): Promise<DirectoryEntry | null> {
    const reg = await this.registry.get(id);
    if (reg === undefined) return null;
    return this.#mesh.presence(id, this.#timeoutMs) ?? offlineEntry(reg);
  }

  /** See {@link Directory.list}. */
  async list(includeOffline: boolean): Promise<DirectoryEntry[]> {
    const out: DirectoryEntry[] = [];
    for (const reg of await this.registry.list()) {
      const entry = this.#mesh.presence(reg.id, this.#timeoutMs);
      if (entry !== null) out.push(entry);
      else if (includeOffline) out.push(offlineEntry(reg));
    }
    return out;
  }

  /** See {@link Directory.nextHop}: first relay on a shortest path of live links. */
  nextHop(relay: string): Promise<Hop | null> {
    const direct = new Set(this.#links.keys());
    const name = this.#mesh.nextHop(relay, direct, this.#timeoutMs);
    if (name === null) return Promise.resolve(null);
    const link = this.#links.get(name)?.values().next().value;
    const address = link?.address ?? this.#mesh.relay(name)?.address;
    if (!address) return Promise.resolve(null);
    return Promise.resolve({ name, address: parseHostPort(address) });
  }

  /** Names of the relays this one has a live control link with. */
  neighbors(): string[] {
    return [...this.#links.keys()].sort();
  }

  /** See {@link Directory.health}: the mesh answers from memory and the local registry. */
  health(): DirectoryHealth {
    return { backend: "mesh", up: true };
  }

  /** See {@link Directory.topology}. */
  topology(): MeshTopology {
    if (this.#state === null) return { relays: [], links: [] };
    const mesh = this.#state;
    const self = this.#self!;
    const relays = mesh.relayNames().sort().map((name) => {
      const record = mesh.relay(name)!;
      return {
        name,
        address: record.address,
        alive: mesh.isAlive(name, this.#timeoutMs),
        neighbors: name === self.name ? this.neighbors() : [...record.neighbors].sort(),
      };
    });
    const links: MeshTopology["links"] = [];
    const upAddresses = new Set<string>();
    for (const [name, set] of this.#links) {
      const address = set.values().next().value?.address ?? "";
      upAddresses.add(address);
      links.push({ relay: name, address, up: true });
    }
    for (const peer of this.#options.peers) {
      const address = formatHostPort(peer);
      if (upAddresses.has(address)) continue;
      const known = relays.find((r) => r.address === address);
      if (known !== undefined && this.#links.has(known.name)) continue;
      links.push({ relay: known?.name ?? "", address, up: false });
    }
    return { relays, links };
  }

  /** See {@link Directory.acceptControlLink}. */
  acceptControlLink(framed: FramedConn, peer: { name: string; address: string }): Promise<void> {
    const task = this.#runControl(framed, peer);
    this.#track(task);
    return task;
  }

  async #dialLoop(address: HostPort): Promise<void> {
    const creds: LinkCredentials = {
      name: this.#self!.name,
      address: this.#self!.address,
      secret: this.#options.secret,
      tlsCa: this.#options.tlsCa,
    };
    const signal = this.#abort.signal;
    let attempt = 0;
    let refused = false;
    while (!signal.aborted) {
      try {
        const link = await dialLink(address, LinkPurposes.Control, creds, { signal });
        attempt = 0;
        refused = false;
        await this.#runControl(link.framed, { name: link.name, address: link.address });
      } catch (e) {
        if (signal.aborted) return;
        const fields = {
          peer: formatHostPort(address),
          error: e instanceof Error ? e.message : String(e),
        };
        // A refused secret will not fix itself: say so once per streak of refusals,
        // instead of retrying silently at debug level.
        if (isLinkRefused(e)) {
          if (!refused) this.#logger.warn("peer refused our mesh secret", fields);
          refused = true;
        } else {
          refused = false;
          this.#logger.debug("peer dial failed", fields);
        }
      }
      try {
        await delay(backoffDelay(attempt++, { baseMs: 200, maxMs: 5000 }), { signal });
      } catch {
        return;
      }
    }
  }

  async #runControl(framed: FramedConn, peer: { name: string; address: string }): Promise<void> {
    if (peer.name === this.#self!.name) {
      framed.close();
      return;
    }
    const link: ControlLink = { framed, name: peer.name, address: peer.address, pending: 0 };
    let set = this.#links.get(peer.name);
    const isNew = set === undefined;
    if (set === undefined) this.#links.set(peer.name, set = new Set());
    set.add(link);
    const onAbort = () => framed.close();
    this.#abort.signal.addEventListener("abort", onAbort, { once: true });
    if (isNew) {
      this.#logger.info("neighbour up", { relay: peer.name, address: peer.address });
      this.#announceRelay();
    }
    let lastHeard = performance.now();
    const pinger = setInterval(() => {
      if (performance.now() - lastHeard > 3 * this.#heartbeatMs + 1000) framed.close();
      else void framed.trySend({ kind: "ping", nonce: 0 });
    }, this.#heartbeatMs);
    try {
      await framed.send({ kind: "digest", body: JSON.stringify(this.#mesh.digest()) });
      for (;;) {
        const m = await framed.readMessage();
        if (m === null) return;
        lastHeard = performance.now();
        switch (m.kind) {
          case "update":
            this.#receive(parseNotice(m.body), link);
            break;
          case "digest": {
            const missing = this.#mesh.missingFor(JSON.parse(m.body) as Digest);
            for (const n of missing) this.#send(link, n);
            this.#logger.debug("digest answered", { relay: peer.name, notices: missing.length });
            break;
          }
          case "ping":
            await framed.send({ kind: "pong", nonce: m.nonce });
            break;
          case "pong":
            break;
          default:
            throw new SyntaxError(`unexpected ${m.kind} on a control link`);
        }
      }
    } catch (e) {
      if (!this.#abort.signal.aborted) {
        this.#logger.warn("control link failed", { relay: peer.name, error: String(e) });
      }
    } finally {
      clearInterval(pinger);
      this.#abort.signal.removeEventListener("abort", onAbort);
      framed.close();
      set.delete(link);
      if (set.size === 0 && this.#links.get(peer.name) === set) {
        this.#links.delete(peer.name);
        if (!this.#abort.signal.aborted) {
          this.#logger.info("neighbour down", { relay: peer.name });
          this.#announceRelay();
        }
      }
    }
  }

  /** Applies a notice from a neighbour; floods it on if it was new. */
  #receive(n: Notice, from: ControlLink): void {
    if (n.t !== "reg" && n.origin === this.#self!.name) {
      // Our own notices coming back (or from an earlier run): we are the authority.
      this.#mesh.stats.dropped++;
      this.#logNotice("dropped", n, from.name);
      return;
    }
    const applied = this.#mesh.apply(n);
    if (applied && n.t === "reg") {
      // Coalesce: a catch-up may bring thousands; write them in one go.
      this.#pendingRegs.set(n.id, n.reg);
      this.#flushTimer ??= setTimeout(() => {
        this.#flushTimer = undefined;
        void this.#withRegistry(() => this.#flushRegistrations());
      }, 20);
    }
    this.#logNotice(applied ? "applied" : "dropped", n, from.name);
    if (applied) this.#flood(n, from);
  }

  #logNotice(action: string, n: Notice, from: string) {
    this.#logger.debug("notice", {
      action,
      t: n.t,
      origin: n.origin,
      key: n.t === "dev" ? n.entry.id : n.t === "reg" ? n.id : n.origin,
      v: n.t === "reg" ? n.lamport : n.v.join("."),
      from,
      state: n.t === "dev" ? n.entry.state : undefined,
    });
  }

  #flood(n: Notice, from: ControlLink | null) {
    for (const [name, set] of this.#links) {
      if (from !== null && name === from.name) continue;
      const link = set.values().next().value;
      if (link !== undefined) this.#send(link, n);
    }
  }

  #send(link: ControlLink, n: Notice) {
    if (link.pending >= MAX_PENDING) {
      this.#logger.warn("neighbour too slow: dropping its link", { relay: link.name });
      link.framed.close();
      return;
    }
    link.pending++;
    void link.framed.trySend({ kind: "update", body: JSON.stringify(n) }).finally(() =>
      link.pending--
    );
  }

  #withRegistry<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#registryLock.then(fn);
    this.#registryLock = run.then(() => {}, () => {});
    return run;
  }

  /** Writes registrations learnt from the mesh into the local registry (under the lock). */
  async #flushRegistrations(): Promise<void> {
    if (this.#pendingRegs.size === 0) return;
    const changes = [...this.#pendingRegs].map(([id, reg]) => ({ id, reg }));
    this.#pendingRegs.clear();
    try {
      if (this.registry.applyMany) await this.registry.applyMany(changes);
      else {
        for (const c of changes) {
          if (c.reg === null) await this.registry.remove(c.id);
          else await this.registry.put(c.reg);
        }
      }
    } catch (e) {
      this.#logger.error("cannot write registrations", { error: String(e) });
    }
  }

  /** Turns admin changes of the local registry into registration notices. */
  #pollRegistry(): Promise<void> {
    return this.#withRegistry(async () => {
      // Mesh changes first, or they would look like local edits to undo.
      await this.#flushRegistrations();
      let regs: Registration[];
      try {
        regs = await this.registry.list();
      } catch (e) {
        this.#logger.warn("registry unreadable", { error: String(e) });
        return;
      }
      const mesh = this.#mesh;
      const seen = new Set<string>();
      for (const reg of regs) {
        seen.add(reg.id);
        const held = mesh.registration(reg.id);
        if (held?.reg && sameRegistration(held.reg, reg)) continue;
        this.#originate({
          t: "reg",
          id: reg.id,
          lamport: mesh.lamportOf(reg.id) + 1,
          origin: this.#self!.name,
          reg,
        });
      }
      for (const id of mesh.registeredIds()) {
        if (seen.has(id)) continue;
        this.#originate({
          t: "reg",
          id,
          lamport: mesh.lamportOf(id) + 1,
          origin: this.#self!.name,
          reg: null,
        });
      }
    });
  }

  /** Stops dialing, closes links and timers. */
  async close(): Promise<void> {
    this.#abort.abort();
    for (const t of this.#timers) clearInterval(t);
    clearTimeout(this.#flushTimer);
    await this.#withRegistry(() => this.#flushRegistrations());
    for (const set of this.#links.values()) for (const l of set) l.framed.close();
    await Promise.allSettled([...this.#tasks]);
  }
}

function sameRegistration(a: Registration, b: Registration): boolean {
  return a.type === b.type && a.passwordHash === b.passwordHash &&
    a.attributes.join("\0") === b.attributes.join("\0");
}

/** Reads, increments and writes the epoch file (missing file = epoch 0). */
async function bumpEpoch(path: string): Promise<number> {
  let epoch = 0;
  try {
    epoch = Number((await Deno.readTextFile(path)).trim()) || 0;
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  epoch++;
  const tmp = `${path}.tmp`;
  await Deno.writeTextFile(tmp, `${epoch}\n`);
  await Deno.rename(tmp, path);
  return epoch;
}
