/**
 * The Redis key layout of the shared directory, in one place. `docs/operations.md`
 * describes each key for operators; keep the two in step.
 *
 * | key                       | type   | holds                                              |
 * |---------------------------|--------|----------------------------------------------------|
 * | `<p>regs`                 | set    | every registered device ID                         |
 * | `<p>reg:<id>`             | hash   | type, attributes (JSON), passwordHash, updatedAt   |
 * | `<p>dev:<id>`             | hash   | relay, epoch, seq, at, version, entry (JSON)       |
 * | `<p>relays`               | set    | names of relays that wrote entries                 |
 * | `<p>relay:<name>`         | hash   | address, epoch, startedAt; expires after the TTL   |
 * | `<p>relaydevs:<name>`     | set    | IDs whose `dev:` entry names relay `<name>`        |
 * | `<p>evict:<name>`         | list   | IDs a newer login took from relay `<name>`         |
 *
 * `<p>` is the key prefix, `tsunagi:` unless configured otherwise.
 *
 * @module
 */

/** Default prefix of every key. */
export const DEFAULT_KEY_PREFIX = "tsunagi:";

/** Key names under one prefix. */
export class RedisKeys {
  /** The prefix, e.g. `tsunagi:`. */
  readonly prefix: string;
  /** Creates the layout under `prefix`. */
  constructor(prefix = DEFAULT_KEY_PREFIX) {
    this.prefix = prefix;
  }
  /** Set of registered device IDs. */
  get regs(): string {
    return `${this.prefix}regs`;
  }
  /** Registration hash of device `id`. */
  reg(id: string): string {
    return `${this.prefix}reg:${id}`;
  }
  /** Connection information (presence) of device `id`. */
  dev(id: string): string {
    return `${this.prefix}dev:${id}`;
  }
  /** Set of relay names that own entries. */
  get relays(): string {
    return `${this.prefix}relays`;
  }
  /** Liveness and address of relay `name` (with a TTL). */
  relay(name: string): string {
    return `${this.prefix}relay:${name}`;
  }
  /** IDs that newer logins on other relays took from relay `name` (it lets them go). */
  evictions(name: string): string {
    return `${this.prefix}evict:${name}`;
  }
  /** IDs of the devices relay `name` owns. */
  relayDevices(name: string): string {
    return `${this.prefix}relaydevs:${name}`;
  }
}
