/**
 * The mesh directory: relays share connection information by flooding update notices
 * over control links (patent [0050]-[0053], Fig. 5), and route sessions hop by hop.
 *
 * Ownership: the directory owns its control links; each link has one reader loop (here)
 * and one writer loop ({@link ControlLink}). Notices are applied to {@link MeshState}
 * and, when applied, forwarded to every neighbour except the one they came from; a
 * notice that is not newer is dropped and not forwarded; an invalid one is refused on
 * its own. When a link comes up both sides send a DIGEST (bucket hashes) and stream the
 * other the buckets that differ, so a relay that was partitioned converges without
 * waiting for new changes. Registrations reach the local registry through
 * {@link RegistrySync}. A device online on two relays stays on the newer login
 * ({@link MeshState.winner}); the other relay is told to let it go. See docs/mesh.md.
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
import { hashString, MeshState } from "./mesh_state.ts";
import { type Notice, parseUpdate, type RegNotice } from "./notices.ts";
import { mergeConcurrent } from "./reg_merge.ts";
import type { Registration, RegistryStore } from "../registry/registry.ts";
import { ControlLink, parseDigest } from "./control_link.ts";
import { RegistrySync } from "./registry_sync.ts";
import { REG_VERSIONS_FILE, RegVersions } from "./reg_versions.ts";
import { DeviceState } from "../../shared/protocol/constants.ts";

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
  /** Each control link is pinged this often, ms (default 2000). */
  heartbeatMs?: number;
  /**
   * A control link silent this long (less one ping interval) is closed, so a relay that
   * died or froze is unreachable within it, ms (default 10000).
   */
  timeoutMs?: number;
  /**
   * This relay's record is re-announced this often even when its links did not change,
   * ms (default 300000); a record not refreshed for 3 periods no longer counts.
   */
  refreshMs?: number;
  /** How often the local registry is checked for admin changes, ms (default 1000). */
  registryPollMs?: number;
  /** Logger. */
  logger: Logger;
  /** Wall clock, ms (information only; may be skewed). */
  now?: () => number;
}

/** The flooding-mesh directory. */
export class MeshDirectory implements Directory {
  /** The local registry, kept in step with the mesh. */
  readonly registry: RegistryStore;
  readonly #options: MeshOptions;
  readonly #logger: Logger;
  readonly #now: () => number;
  readonly #heartbeatMs: number;
  readonly #timeoutMs: number;
  readonly #refreshMs: number;
  #state: MeshState | null = null;
  #self: SelfInfo | null = null;
  #epoch = 0;
  #seq = 0;
  readonly #links = new Map<string, Set<ControlLink>>();
  readonly #abort = new AbortController();
  readonly #tasks = new Set<Promise<void>>();
  readonly #timers: ReturnType<typeof setInterval>[] = [];
  /** Mesh registrations to and from the local registry. */
  readonly #sync: RegistrySync;
  /** What the mesh knew of each registration when it last matched the registry file. */
  readonly #versions: RegVersions;
  /**
   * Admin edits made here (of a registration the mesh held) while they are the newest
   * version, with the registration they replaced: to merge a concurrent edit that beats one.
   */
  readonly #ownEdits = new Map<string, { n: RegNotice; base: Registration }>();
  /**
   * Resolved once the first registry poll has run (or on close): a link accepted earlier
   * waits, so no peer's older copy arrives before the edits made while we were stopped
   * are originated.
   */
  readonly #ready = Promise.withResolvers<void>();

  /** Creates the directory; it starts working in {@link start}. */
  constructor(options: MeshOptions) {
    // Reads see registrations learnt from the mesh before they are written to the file.
    const local = options.registry;
    this.registry = {
      get: async (id) => {
        const learnt = this.#sync.pendingFor(id);
        return learnt === undefined ? await local.get(id) : learnt ?? undefined;
      },
      list: () => local.list(),
      put: (reg) => local.put(reg),
      remove: (id) => local.remove(id),
      applyMany: local.applyMany?.bind(local),
      generation: local.generation?.bind(local),
      loginSecret: local.loginSecret?.bind(local),
    };
    this.#options = options;
    this.#logger = options.logger;
    this.#now = options.now ?? Date.now;
    this.#heartbeatMs = options.heartbeatMs ?? 2000;
    this.#timeoutMs = options.timeoutMs ?? 10_000;
    this.#refreshMs = options.refreshMs ?? 300_000;
    this.#versions = new RegVersions({
      path: `${options.dataDir}/${REG_VERSIONS_FILE}`,
      logger: options.logger,
    });
    this.#sync = new RegistrySync({
      registry: options.registry,
      logger: options.logger,
      held: (id) => this.#mesh.registration(id),
      originate: (id, reg, after) => this.#originateReg(id, reg, after),
      load: (n) => void this.#mesh.apply(n),
      versions: this.#versions,
    });
  }

  /** Counters of applied, dropped and refused notices. */
  get stats(): { applied: number; dropped: number; refused: number } {
    return this.#state?.stats ?? { applied: 0, dropped: 0, refused: 0 };
  }

  get #mesh(): MeshState {
    if (this.#state === null) throw new Error("MeshDirectory used before start()");
    return this.#state;
  }

  /** Loads and bumps the epoch, announces this relay, dials peers, starts timers. */
  async start(self: SelfInfo): Promise<void> {
    this.#self = self;
    this.#state = new MeshState(self.name, () => performance.now(), {
      recordTtlMs: 3 * this.#refreshMs + this.#timeoutMs,
    });
    this.#epoch = await bumpEpoch(`${this.#options.dataDir}/mesh-epoch`);
    this.#announceRelay();
    // Before any link: registrations unchanged since the last run keep their version, an
    // edit made while the relay was stopped gets a newer one (see RegistrySync).
    await this.#versions.load();
    await this.#sync.poll();
    this.#ready.resolve();
    // Liveness is per link (pings in #runControl); the record floods when a link comes or
    // goes, and is refreshed rarely, so its cost does not grow with every ping.
    this.#timers.push(setInterval(() => this.#announceRelay(), this.#refreshMs));
    this.#timers.push(
      setInterval(() => void this.#sync.poll(), this.#options.registryPollMs ?? 1000),
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

  /** Originates a registration change made here, above the mesh's counter and `after`. */
  #originateReg(id: string, reg: Registration | null, after: number): RegNotice {
    const base = this.#mesh.registration(id)?.reg;
    const n: RegNotice = {
      t: "reg",
      id,
      lamport: Math.max(this.#mesh.lamportOf(id), after) + 1,
      origin: this.#self!.name,
      reg,
    };
    this.#originate(n);
    if (base) this.#ownEdits.set(id, { n, base });
    else this.#ownEdits.delete(id);
    return n;
  }

  /**
   * A concurrent edit (same counter, made without seeing ours) replaced our admin edit:
   * merge field by field ({@link mergeConcurrent}) and originate the result, so a password
   * change is not undone by an attributes edit, nor a removal by an edit.
   */
  #mergeConcurrent(mine: { n: RegNotice; base: Registration }, theirs: RegNotice): void {
    const result = mergeConcurrent(mine.base, mine.n.reg, theirs.reg);
    const fields = { device: theirs.id, relay: theirs.origin, lamport: theirs.lamport };
    if (result.lost) {
      this.#logger.warn("registry edit here overridden by a concurrent edit on another relay", {
        ...fields,
        hint: "check the registration (registry list) and repeat the edit if it is still wanted",
      });
    }
    if (result.reg === undefined) return;
    this.#logger.info("concurrent registry edits merged", {
      ...fields,
      removed: result.reg === null,
    });
    const merged = this.#originateReg(theirs.id, result.reg, 0);
    this.#sync.learn(merged);
  }

  /** Applies a notice made here and floods it to every neighbour. */
  #originate(n: Notice) {
    this.#mesh.apply(n);
    this.#flood(n, null);
  }

  /**
   * See {@link Directory.publish}: a local device changed. A new login (the device was
   * not online here, or another agent instance took it over) gets a new claim, higher
   * than any the mesh holds for the ID: the newer login wins (see {@link MeshState.winner}).
   */
  publish(entry: DirectoryEntry): void {
    if (this.#state === null) return;
    const self = this.#self!;
    const held = this.#mesh.deviceAt(self.name, entry.id);
    const token = self.instance?.(entry.id) ?? "";
    const inst = token === "" ? undefined : hashString(`tsunagi-instance:${token}`).toString(16);
    let claim = held?.claim;
    // Only an agent instance claims the device: a one-shot client's login never outranks
    // an agent elsewhere (docs/protocol.md 6.9).
    const newLogin = entry.state === DeviceState.Online && inst !== undefined &&
      (held === undefined || held.entry.state !== DeviceState.Online || held.inst !== inst);
    if (newLogin) claim = this.#mesh.claimOf(entry.id) + 1;
    this.#originate({
      t: "dev",
      origin: self.name,
      v: this.#nextVersion(),
      entry,
      claim,
      inst: entry.state === DeviceState.Online ? inst : held?.inst,
    });
  }

  /**
   * One device, one place: when the mesh-wide winner for `id` is on another relay, the
   * connections here are closed (told `Replaced` unless it is the same agent moving).
   */
  #checkPlace(id: string): void {
    const self = this.#self!;
    const mine = this.#mesh.deviceAt(self.name, id);
    if (mine === undefined || mine.entry.state !== DeviceState.Online) return;
    const winner = this.#mesh.winner(id);
    if (winner === null || winner.origin === self.name) return;
    const sameInstance = winner.inst !== undefined && winner.inst === mine.inst;
    this.#logger.warn("device taken over by a newer login on another relay", {
      device: id,
      relay: winner.origin,
      sameInstance,
    });
    self.evict?.(id, { relay: winner.origin, sameInstance });
  }

  /** See {@link Directory.lookup}. */
  async lookup(id: string): Promise<DirectoryEntry | null> {
    const reg = await this.registry.get(id);
    if (reg === undefined) return null;
    return this.#mesh.presence(id) ?? offlineEntry(reg);
  }

  /** See {@link Directory.list}. */
  async list(includeOffline: boolean): Promise<DirectoryEntry[]> {
    const out: DirectoryEntry[] = [];
    for (const reg of await this.registry.list()) {
      const entry = this.#mesh.presence(reg.id);
      if (entry !== null) out.push(entry);
      else if (includeOffline) out.push(offlineEntry(reg));
    }
    return out;
  }

  /** See {@link Directory.nextHop}: first relay on a shortest path of live links. */
  nextHop(relay: string): Promise<Hop | null> {
    const name = this.#mesh.nextHop(relay);
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
        alive: mesh.isAlive(name),
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
    return { relays, links, notices: { ...mesh.stats } };
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
    await this.#ready.promise;
    if (peer.name === this.#self!.name || this.#abort.signal.aborted) {
      framed.close();
      return;
    }
    const link = new ControlLink(framed, peer, this.#mesh, this.#logger);
    let set = this.#links.get(peer.name);
    const isNew = set === undefined;
    if (set === undefined) this.#links.set(peer.name, set = new Set());
    set.add(link);
    const onAbort = () => framed.close();
    this.#abort.signal.addEventListener("abort", onAbort, { once: true });
    if (isNew) {
      this.#logger.info("neighbour up", { relay: peer.name, address: peer.address });
      this.#mesh.setDirect(this.#links.keys());
      this.#announceRelay();
    }
    // Per-link liveness: a link silent for `silentMs` is closed; the check runs every ping
    // interval, so a dead or frozen neighbour is dropped within --mesh-timeout, and the
    // changed record floods from here.
    const silentMs = Math.max(2 * this.#heartbeatMs, this.#timeoutMs - this.#heartbeatMs);
    let lastHeard = performance.now();
    const pinger = setInterval(() => {
      if (performance.now() - lastHeard > silentMs) {
        this.#logger.warn("neighbour silent: link closed", { relay: peer.name, silentMs });
        framed.close();
      } else void framed.trySend({ kind: "ping", nonce: 0 });
    }, this.#heartbeatMs);
    // The writer sends our digest first, then floods and the catch-up the peer needs.
    const writer = link.run().catch((e) => {
      if (!framed.closed) this.#logger.debug("control link write failed", { error: String(e) });
      framed.close();
    });
    try {
      for (;;) {
        const m = await framed.readMessage();
        if (m === null) return;
        lastHeard = performance.now();
        switch (m.kind) {
          case "update":
            this.#receiveUpdate(m.body, link);
            break;
          case "digest": {
            let d;
            try {
              d = parseDigest(m.body);
            } catch (e) {
              this.#refuse(link, String(e));
              break;
            }
            if ("ask" in d) link.sendDigest();
            else link.answerDigest(d.from, d.h);
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
      link.close();
      framed.close();
      await writer;
      set.delete(link);
      if (set.size === 0 && this.#links.get(peer.name) === set) {
        this.#links.delete(peer.name);
        this.#mesh.setDirect(this.#links.keys());
        if (!this.#abort.signal.aborted) {
          this.#logger.info("neighbour down", { relay: peer.name });
          this.#announceRelay();
        }
      }
    }
  }

  #refuse(from: ControlLink, reason: string): void {
    this.#mesh.stats.refused++;
    this.#logger.warn("notice refused", { relay: from.name, reason: reason.slice(0, 200) });
  }

  /** Applies the notices of one UPDATE, each on its own: an invalid one is refused alone. */
  #receiveUpdate(body: string, from: ControlLink): void {
    let parsed;
    try {
      parsed = parseUpdate(body);
    } catch (e) {
      this.#refuse(from, `not JSON: ${e instanceof Error ? e.message : String(e)}`);
      return;
    }
    for (const reason of parsed.refused) this.#refuse(from, reason);
    const via = parsed.catchUp ? "catch-up" : "flood";
    for (const n of parsed.notices) this.#receive(n, from, via);
  }

  /** Applies a notice from a neighbour; floods it on if it was new. */
  #receive(n: Notice, from: ControlLink, via: "flood" | "catch-up"): void {
    const self = this.#self!.name;
    if (n.t !== "reg" && n.origin === self) {
      // Our own notices coming back (or from an earlier run): we are the authority.
      this.#mesh.stats.dropped++;
      this.#logNotice("dropped", n, from.name, via);
      return;
    }
    const held = n.t === "reg" ? this.#mesh.registration(n.id) : undefined;
    const applied = this.#mesh.apply(n);
    this.#logNotice(applied ? "applied" : "dropped", n, from.name, via);
    if (!applied) return;
    if (n.t === "reg") {
      this.#sync.learn(n);
      const mine = this.#ownEdits.get(n.id);
      this.#ownEdits.delete(n.id);
      if (mine !== undefined && held === mine.n && n.lamport === mine.n.lamport) {
        this.#mergeConcurrent(mine, n);
      }
    }
    this.#flood(n, from);
    if (n.t === "dev" && n.entry.state === DeviceState.Online) this.#checkPlace(n.entry.id);
  }

  #logNotice(action: string, n: Notice, from: string, via: "flood" | "catch-up") {
    this.#logger.debug("notice", {
      action,
      via,
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
      if (link !== undefined) link.enqueue(n);
    }
  }

  /** Stops dialing, closes links and timers, makes a last attempt at pending writes. */
  async close(): Promise<void> {
    this.#abort.abort();
    this.#ready.resolve();
    for (const t of this.#timers) clearInterval(t);
    await this.#sync.close();
    for (const set of this.#links.values()) for (const l of set) l.framed.close();
    await Promise.allSettled([...this.#tasks]);
  }
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
