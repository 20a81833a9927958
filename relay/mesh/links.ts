/**
 * Pool of data links to other relays: authenticated connections that carry one
 * forwarded session at a time and go back to the pool when it is released, so a
 * session across relays usually costs no dial.
 *
 * Idle pooled links have no reader (nothing arrives on an idle data link); a link that
 * died while idle is found out on use and the caller retries once with a fresh dial.
 * Links idle longer than `maxIdleAgeMs` are closed instead of reused.
 *
 * @module
 */

import { formatHostPort } from "../../shared/address.ts";
import type { Logger } from "../../shared/log.ts";
import { LinkPurposes } from "../../shared/protocol/messages.ts";
import type { Hop } from "../directory.ts";
import { type DialedLink, dialLink, isLinkRefused, type LinkCredentials } from "./link_auth.ts";

/** Options for {@link LinkPool}. */
export interface LinkPoolOptions {
  /** Idle links kept per relay (default 16). */
  maxIdlePerPeer?: number;
  /** Idle links older than this are not reused, ms (default 30000). */
  maxIdleAgeMs?: number;
  /** Logger. */
  logger: Logger;
}

/** A link taken from the pool. */
export interface PooledLink extends DialedLink {
  /** True when dialed for this use; false when reused from the pool. */
  fresh: boolean;
}

/** Data links per relay. */
export class LinkPool {
  readonly #creds: LinkCredentials;
  readonly #idle = new Map<string, { link: DialedLink; since: number }[]>();
  readonly #maxIdle: number;
  readonly #maxAge: number;
  readonly #logger: Logger;
  /** Links handed out and not yet released: closed on shutdown. */
  readonly #inUse = new Set<DialedLink>();
  #closed = false;

  /** Creates an empty pool dialing with `creds`. */
  constructor(creds: LinkCredentials, options: LinkPoolOptions) {
    this.#creds = creds;
    this.#maxIdle = options.maxIdlePerPeer ?? 16;
    this.#maxAge = options.maxIdleAgeMs ?? 30_000;
    this.#logger = options.logger;
  }

  /** A link to `hop`: an idle pooled one if any (`fresh: false`), else a new one. */
  async acquire(hop: Hop, options: { forceFresh?: boolean } = {}): Promise<PooledLink> {
    const key = formatHostPort(hop.address);
    const list = this.#idle.get(key);
    const now = Date.now();
    while (!options.forceFresh && list && list.length > 0) {
      const { link, since } = list.pop()!;
      if (now - since <= this.#maxAge && !link.framed.closed) {
        this.#inUse.add(link);
        return { ...link, fresh: false };
      }
      link.framed.close();
    }
    let link: DialedLink;
    try {
      link = await dialLink(hop.address, LinkPurposes.Data, this.#creds);
    } catch (e) {
      if (isLinkRefused(e)) {
        this.#logger.warn("peer refused our mesh secret", {
          peer: key,
          error: e instanceof Error ? e.message : String(e),
        });
      }
      throw e;
    }
    this.#logger.debug("data link dialed", { relay: link.name, address: key });
    if (this.#closed) link.framed.close();
    this.#inUse.add(link);
    return { ...link, fresh: true };
  }

  /** Returns a link whose session was released; closes it if the pool is full. */
  release(hop: Hop, link: DialedLink): void {
    this.#forget(link);
    const key = formatHostPort(hop.address);
    let list = this.#idle.get(key);
    if (list === undefined) this.#idle.set(key, list = []);
    if (this.#closed || link.framed.closed || list.length >= this.#maxIdle) {
      link.framed.close();
      return;
    }
    list.push({ link, since: Date.now() });
  }

  /** Forgets a link that was closed instead of released. */
  discard(link: DialedLink): void {
    this.#forget(link);
    link.framed.close();
  }

  #forget(link: DialedLink) {
    for (const l of this.#inUse) if (l.framed === link.framed) this.#inUse.delete(l);
  }

  /** Closes every link, idle or in use; later releases close their link. */
  close(): void {
    this.#closed = true;
    for (const link of this.#inUse) link.framed.close();
    this.#inUse.clear();
    for (const list of this.#idle.values()) for (const { link } of list) link.framed.close();
    this.#idle.clear();
  }
}
