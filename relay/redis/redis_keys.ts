/**
 * The Redis key layout of the shared directory, in one place. `docs/operations.md`
 * describes each key for operators; keep the two in step.
 *
 * Layout 2 (this code) fits Redis Cluster: a `{...}` hash tag puts the keys that one
 * script or transaction touches in one slot, and nothing else needs to share a slot.
 *
 * | key                       | type   | holds                                              |
 * |---------------------------|--------|----------------------------------------------------|
 * | `<p>layout`               | string | `2`: the layout version                            |
 * | `<p>regs`                 | set    | index: every registered device ID (a superset)     |
 * | `<p>reg:{<id>}`           | hash   | type, attributes (JSON), passwordHash, updatedAt   |
 * | `<p>regs-gen`             | string | counter, incremented after every registry change   |
 * | `<p>dev:{<id>}`           | hash   | relay, epoch, seq, at, version, entry (JSON), inst |
 * | `<p>relays`               | set    | index: names of relays that may own entries        |
 * | `<p>relay:{<name>}`       | hash   | address, epoch, startedAt; expires after the TTL   |
 * | `<p>relaydevs:{<name>}`   | set    | index: IDs whose `dev:` entry may name `<name>`    |
 * | `<p>evict:{<name>}`       | list   | IDs a newer login took from relay `<name>`         |
 * | `<p>login-secret`         | string | the relays' shared fake-salt secret                |
 *
 * A device's two keys share the slot of `{<id>}`; a relay's three keys the slot of
 * `{<name>}`. The indexes are written before and cleaned after the keys they list,
 * so they list at least every key (readers skip members whose key is gone).
 *
 * `<p>` is the key prefix, `tsunagi:` unless configured otherwise.
 *
 * @module
 */

/** Default prefix of every key. */
export const DEFAULT_KEY_PREFIX = "tsunagi:";

/** The key layout this code reads and writes (the `<p>layout` key). */
export const KEY_LAYOUT = "2";

/** Key names under one prefix. */
export class RedisKeys {
  /** The prefix, e.g. `tsunagi:`. */
  readonly prefix: string;
  /** Creates the layout under `prefix`; a `RangeError` if it holds `{` or `}` (hash tags). */
  constructor(prefix = DEFAULT_KEY_PREFIX) {
    if (/[{}]/.test(prefix)) {
      throw new RangeError(`Key prefix "${prefix}" must not contain { or }: they are hash tags`);
    }
    this.prefix = prefix;
  }
  /** The layout version marker. */
  get layout(): string {
    return `${this.prefix}layout`;
  }
  /** Set of registered device IDs. */
  get regs(): string {
    return `${this.prefix}regs`;
  }
  /** Counter incremented after every change of a registration (relays poll it). */
  get regsGeneration(): string {
    return `${this.prefix}regs-gen`;
  }
  /** Registration hash of device `id`. */
  reg(id: string): string {
    return `${this.prefix}reg:{${id}}`;
  }
  /** Connection information (presence) of device `id`; same slot as {@link reg}. */
  dev(id: string): string {
    return `${this.prefix}dev:{${id}}`;
  }
  /** Set of relay names that may own entries. */
  get relays(): string {
    return `${this.prefix}relays`;
  }
  /** Liveness and address of relay `name` (with a TTL). */
  relay(name: string): string {
    return `${this.prefix}relay:{${name}}`;
  }
  /** IDs that newer logins on other relays took from relay `name`; same slot as {@link relay}. */
  evictions(name: string): string {
    return `${this.prefix}evict:{${name}}`;
  }
  /** IDs of the devices relay `name` may own; same slot as {@link relay}. */
  relayDevices(name: string): string {
    return `${this.prefix}relaydevs:{${name}}`;
  }
  /** The relays' shared login secret. */
  get loginSecret(): string {
    return `${this.prefix}login-secret`;
  }
}

/** Key names of layout 1 (untagged), read only by the migration. */
export class LegacyKeys {
  /** The prefix. */
  readonly prefix: string;
  /** Creates the old layout under `prefix`. */
  constructor(prefix = DEFAULT_KEY_PREFIX) {
    this.prefix = prefix;
  }
  /** Layout 1 registration hash. */
  reg(id: string): string {
    return `${this.prefix}reg:${id}`;
  }
  /** Layout 1 presence hash. */
  dev(id: string): string {
    return `${this.prefix}dev:${id}`;
  }
  /** Layout 1 relay liveness hash. */
  relay(name: string): string {
    return `${this.prefix}relay:${name}`;
  }
  /** Layout 1 relay device set. */
  relayDevices(name: string): string {
    return `${this.prefix}relaydevs:${name}`;
  }
  /** Layout 1 eviction list. */
  evictions(name: string): string {
    return `${this.prefix}evict:${name}`;
  }
}
