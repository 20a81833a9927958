/**
 * Small structured logger: one line per event on stderr, as text or JSON.
 *
 * @module
 */

/** Log levels, lowest first. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** Output format: human text or one JSON object per line. */
export type LogFormat = "text" | "json";

const LEVELS: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

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
}

const encoder = new TextEncoder();

function defaultWrite(line: string) {
  Deno.stderr.writeSync(encoder.encode(line + "\n"));
}

/** A structured logger. `fields` values should be JSON-serialisable. */
export class Logger {
  readonly #level: number;
  readonly #format: LogFormat;
  readonly #component: string;
  readonly #write: (line: string) => void;

  /** Creates a logger. */
  constructor(options: LoggerOptions = {}) {
    this.#level = LEVELS[options.level ?? "info"];
    this.#format = options.format ?? "text";
    this.#component = options.component ?? "";
    this.#write = options.write ?? defaultWrite;
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
  /** Logs at warn level. */
  warn(event: string, fields: Record<string, unknown> = {}): void {
    this.#log("warn", event, fields);
  }
  /** Logs at error level. */
  error(event: string, fields: Record<string, unknown> = {}): void {
    this.#log("error", event, fields);
  }

  #log(level: LogLevel, event: string, fields: Record<string, unknown>) {
    if (LEVELS[level] < this.#level) return;
    const time = new Date().toISOString();
    if (this.#format === "json") {
      this.#write(JSON.stringify({ time, level, component: this.#component, event, ...fields }));
      return;
    }
    const parts = Object.entries(fields).map(([k, v]) =>
      `${k}=${typeof v === "string" && !/\s/.test(v) ? v : JSON.stringify(v)}`
    );
    const prefix = this.#component ? `${this.#component}: ` : "";
    this.#write(`${time} ${level.toUpperCase()} ${prefix}${event} ${parts.join(" ")}`.trimEnd());
  }
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
