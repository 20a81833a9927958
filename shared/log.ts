/**
 * Small structured logger: one line per event on stderr, as text or JSON.
 *
 * Logs are an attack surface: field values often come from the network (device IDs of
 * up to 64 KB from unauthenticated clients, error messages quoting them). So the logger
 * itself, not each caller, makes every line safe:
 * - string values are cut to {@link LoggerOptions.maxFieldLength} characters with a
 *   marker saying how many were cut, in both formats;
 * - control and other invisible characters (ESC, CR/LF, C1, bidi overrides, lone
 *   surrogates) are escaped as `\x1b` / `\u202e`, so a value cannot move the cursor,
 *   recolour the terminal or forge a second line;
 * - a warn or error with the same message text from the same peer (the host of its
 *   `remote` field) is written at most `rateLimit.lines` times per `rateLimit.windowMs`,
 *   and the same message text from all peers together at most 10 times that; the next
 *   line after a pause says how many were suppressed. A flood from one peer cannot fill
 *   the disk, nor hide the same event from another peer.
 *
 * @module
 */

/** The peer a log line is about: the host of its `remote` field, or "". */
function peerOf(fields: Record<string, unknown>): string {
  const remote = fields.remote;
  if (typeof remote !== "string") return "";
  const colon = remote.lastIndexOf(":");
  return colon > 0 && !remote.endsWith("]") ? remote.slice(0, colon) : remote;
}

/** Log levels, lowest first. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** Output format: human text or one JSON object per line. */
export type LogFormat = "text" | "json";

const LEVELS: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** How often the same warn or error message may be logged. */
export interface LogRateLimit {
  /** Lines of one message written per window (default 5). */
  lines: number;
  /** Window length in milliseconds (default 10 000). */
  windowMs: number;
}

/** Options for {@link Logger}. */
export interface LoggerOptions {
  /** Lowest level written (default "info"). */
  level?: LogLevel;
  /** Output format (default "text"). */
  format?: LogFormat;
  /** Component name added to each line, e.g. "relay". */
  component?: string;
  /** Where lines go; defaults to stderr. */
  write?: (line: string) => void;
  /** Clock in epoch milliseconds, for timestamps and rate limiting (default `Date.now`). */
  now?: () => number;
  /** Longest string value written, in UTF-16 units (default 128); the message gets twice that. */
  maxFieldLength?: number;
  /** Rate limit for repeated warn/error messages; `false` turns it off. */
  rateLimit?: Partial<LogRateLimit> | false;
}

/** Default for {@link LoggerOptions.maxFieldLength}. */
export const DEFAULT_MAX_FIELD_LENGTH = 128;

/** Default for {@link LoggerOptions.rateLimit}. */
export const DEFAULT_LOG_RATE_LIMIT: Readonly<LogRateLimit> = { lines: 5, windowMs: 10_000 };

/** Distinct (message, peer) keys tracked; beyond that, peers share their message's key. */
const MAX_TRACKED_MESSAGES = 1024;
/** A message from all peers together may be written this many times the per-peer limit. */
const ALL_PEERS_FACTOR = 10;

const encoder = new TextEncoder();

function defaultWrite(line: string) {
  Deno.stderr.writeSync(encoder.encode(line + "\n"));
}

/** One message's count in its current window. */
interface Window {
  level: LogLevel;
  event: string;
  start: number;
  count: number;
  suppressed: number;
}

/**
 * A structured logger. Every field value is made safe (see the module doc); plain
 * values (strings, numbers, booleans) read best.
 *
 * @example
 * ```ts
 * import { Logger } from "./log.ts";
 * const lines: string[] = [];
 * const logger = new Logger({ component: "relay", write: (l) => lines.push(l), now: () => 0 });
 * logger.warn("login refused", { device: "evil\x1b[2J" });
 * console.assert(lines[0] === "1970-01-01T00:00:00.000Z WARN relay: login refused device=evil\\x1b[2J");
 * ```
 */
export class Logger {
  readonly #level: number;
  readonly #format: LogFormat;
  readonly #component: string;
  readonly #write: (line: string) => void;
  readonly #now: () => number;
  readonly #maxField: number;
  readonly #limit: LogRateLimit | null;
  /** Rate-limit windows by level and message. */
  readonly #windows = new Map<string, Window>();
  /** When windows were last swept for ones that rolled over. */
  #lastSweep = 0;

  /** Creates a logger. */
  constructor(options: LoggerOptions = {}) {
    this.#level = LEVELS[options.level ?? "info"];
    this.#format = options.format ?? "text";
    this.#component = options.component ?? "";
    this.#write = options.write ?? defaultWrite;
    this.#now = options.now ?? Date.now;
    this.#maxField = options.maxFieldLength ?? DEFAULT_MAX_FIELD_LENGTH;
    this.#limit = options.rateLimit === false
      ? null
      : { ...DEFAULT_LOG_RATE_LIMIT, ...options.rateLimit };
    this.#lastSweep = this.#now();
  }

  /** A logger that writes nothing (tests, libraries). */
  static silent(): Logger {
    return new Logger({ level: "error", write: () => {} });
  }

  /** Logs at debug level. */
  debug(event: string, fields: Record<string, unknown> = {}): void {
    this.#log("debug", event, fields);
  }
  /** Logs at info level. */
  info(event: string, fields: Record<string, unknown> = {}): void {
    this.#log("info", event, fields);
  }
  /** Logs at warn level; repeats of one message are rate limited. */
  warn(event: string, fields: Record<string, unknown> = {}): void {
    this.#log("warn", event, fields);
  }
  /** Logs at error level; repeats of one message are rate limited. */
  error(event: string, fields: Record<string, unknown> = {}): void {
    this.#log("error", event, fields);
  }

  /**
   * Writes a `(N similar suppressed)` line for every message whose window has rolled
   * over with lines suppressed, and forgets those windows. Runs by itself on any warn or
   * error once a window length has passed; call it at shutdown or from a timer too.
   */
  flush(): void {
    const now = this.#now();
    this.#lastSweep = now;
    if (this.#limit === null) return;
    for (const [key, w] of this.#windows) {
      if (now - w.start < this.#limit.windowMs) continue;
      this.#windows.delete(key);
      if (w.suppressed > 0) this.#emit(now, w.level, w.event, {}, w.suppressed);
    }
  }

  #log(level: LogLevel, event: string, fields: Record<string, unknown>) {
    if (LEVELS[level] < this.#level) return;
    const now = this.#now();
    let suppressed = 0;
    const limit = this.#limit;
    if (limit !== null && (level === "warn" || level === "error")) {
      const base = `${level}\0${event}`;
      const peer = peerOf(fields);
      const perPeer = peer === "" || this.#windows.size >= MAX_TRACKED_MESSAGES
        ? null
        : `${base}\0${peer}`;
      // The peer's window and the message's own window (all peers) must both allow it.
      const mine = perPeer === null ? 0 : this.#admit(perPeer, level, event, now, limit.lines);
      const all = mine === null ? null : this.#admit(
        base,
        level,
        event,
        now,
        perPeer === null ? limit.lines : limit.lines * ALL_PEERS_FACTOR,
      );
      if (all === null || mine === null) {
        this.#suppressed(base, now, limit.windowMs);
        return;
      }
      suppressed = Math.max(all, mine);
      if (now - this.#lastSweep >= limit.windowMs) this.flush();
    }
    this.#emit(now, level, event, fields, suppressed);
  }

  /**
   * Counts a line in window `key`: null when over `lines` (held back), else how many
   * lines the previous window of `key` held back (reported on this one).
   */
  #admit(key: string, level: LogLevel, event: string, now: number, lines: number) {
    const limit = this.#limit!;
    const w = this.#windows.get(key);
    if (w !== undefined && now - w.start < limit.windowMs) {
      if (w.count >= lines) return null;
      w.count++;
      return 0;
    }
    if (w !== undefined || this.#windows.size < MAX_TRACKED_MESSAGES + 64) {
      this.#windows.set(key, { level, event, start: now, count: 1, suppressed: 0 });
    }
    return w?.suppressed ?? 0;
  }

  /** Counts a held-back line on the message's window (the one flush reports). */
  #suppressed(base: string, now: number, windowMs: number) {
    const w = this.#windows.get(base);
    if (w !== undefined && now - w.start < windowMs) w.suppressed++;
  }

  #emit(
    now: number,
    level: LogLevel,
    event: string,
    fields: Record<string, unknown>,
    suppressed: number,
  ) {
    const time = new Date(now).toISOString();
    const message = truncate(event, 2 * this.#maxField);
    if (this.#format === "json") {
      const record: Record<string, unknown> = { time, level, component: this.#component };
      record.event = message;
      for (const [k, v] of Object.entries(fields)) {
        record[truncate(k, this.#maxField)] = jsonValue(v, this.#maxField);
      }
      if (suppressed > 0) record.suppressed = suppressed;
      this.#write(escapeJsonLine(JSON.stringify(record)));
      return;
    }
    const parts = Object.entries(fields).filter(([, v]) => v !== undefined).map(([k, v]) =>
      `${escapeText(truncate(k, this.#maxField))}=${textValue(v, this.#maxField)}`
    );
    if (suppressed > 0) parts.push(`(${suppressed} similar suppressed)`);
    const prefix = this.#component ? `${escapeText(this.#component)}: ` : "";
    const head = `${time} ${level.toUpperCase()} ${prefix}${escapeText(message)}`;
    this.#write(`${head} ${parts.join(" ")}`.trimEnd());
  }
}

/** Cuts `s` to `max` UTF-16 units (never inside a surrogate pair), marking the cut. */
export function truncate(s: string, max: number): string {
  if (s.length <= max) return s;
  let end = max;
  const last = s.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end--; // keep a pair whole
  return `${s.slice(0, end)}…[${s.length - end} chars cut]`;
}

/**
 * Characters a log line must not carry raw: C0 controls, DEL, C1 controls, line and
 * paragraph separators, bidi and zero-width marks, BOM, and lone surrogates.
 */
const UNSAFE =
  // deno-lint-ignore no-control-regex -- matching control characters is the point
  /[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

function hexEscape(c: string): string {
  const code = c.charCodeAt(0);
  return code < 0x100
    ? `\\x${code.toString(16).padStart(2, "0")}`
    : `\\u${code.toString(16).padStart(4, "0")}`;
}

/** Escapes backslashes and every unsafe character as `\xNN` / `\uNNNN`. */
export function escapeText(s: string): string {
  return s.replace(/\\/g, "\\\\").replace(UNSAFE, hexEscape);
}

/**
 * Escapes control and invisible characters only (backslashes stay as they are): for text
 * from the network shown on a terminal, such as a peer's REJECT message.
 *
 * @example
 * ```ts
 * import { escapeControl } from "./log.ts";
 * console.assert(escapeControl("ok\x1b[2J") === "ok\\x1b[2J");
 * ```
 */
export function escapeControl(s: string): string {
  return s.replace(UNSAFE, hexEscape);
}

/** JSON.stringify escapes C0 and lone surrogates; this escapes the rest of {@link UNSAFE}. */
function escapeJsonLine(line: string): string {
  return line.replace(UNSAFE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/** A value as a string for the text format, before truncation. */
function stringOf(v: unknown): string {
  if (typeof v === "string") return v;
  if (v instanceof Uint8Array) return `<${v.length} bytes>`;
  if (v instanceof Error) return String(v);
  if (typeof v === "object" && v !== null) {
    try {
      return JSON.stringify(v) ?? String(v);
    } catch {
      return String(v); // cycles, BigInt inside
    }
  }
  return String(v);
}

/** A field value in the text format: bare when it is one safe word, else quoted. */
function textValue(v: unknown, max: number): string {
  const s = escapeText(truncate(stringOf(v), max));
  // Escaped text has no line breaks; quoting values with spaces keeps fields unforgeable.
  return s !== "" && !/\s/.test(s) ? s : `"${s.replace(/"/g, '\\"')}"`;
}

/**
 * A field value for the JSON format: strings truncated and escaped (a consumer that
 * decodes the line and prints a field must not print control characters from the
 * network either), objects cut if too long.
 */
function jsonValue(v: unknown, max: number): unknown {
  if (typeof v === "string") return escapeText(truncate(v, max));
  if (typeof v === "number" || typeof v === "boolean" || v === null || v === undefined) return v;
  if (typeof v === "bigint" || v instanceof Uint8Array || v instanceof Error) {
    return truncate(stringOf(v), max);
  }
  const s = stringOf(v);
  return s.length <= max ? v : truncate(s, max);
}

/** Parses a `--log-level` value; throws on an unknown one. */
export function parseLogLevel(value: string): LogLevel {
  if (value in LEVELS) return value as LogLevel;
  throw new RangeError(`Unknown log level "${value}": use debug, info, warn or error`);
}

/** Parses a `--log-format` value; throws on an unknown one. */
export function parseLogFormat(value: string): LogFormat {
  if (value === "text" || value === "json") return value;
  throw new RangeError(`Unknown log format "${value}": use text or json`);
}
