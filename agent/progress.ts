/**
 * A one-line progress bar for long transfers, drawn only on a terminal.
 *
 * @module
 */

const encoder = new TextEncoder();

/** Formats a byte count with a binary unit: `12.3 MiB`. */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(1)} ${units[i]}`;
}

/** Formats a duration in seconds as `m:ss` (or `h:mm:ss`); `--:--` when unknown. */
export function formatEta(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "--:--";
  const s = Math.ceil(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}

/**
 * Renders one progress line (pure, for tests): name, bar, percentage, bytes done of
 * the total, rate, and the time left at that rate (`ETA --:--` until there is a rate).
 */
export function renderProgress(
  name: string,
  done: number,
  total: number,
  elapsedMs: number,
  width = 24,
): string {
  const ratio = total === 0 ? 1 : done / total;
  const filled = Math.round(ratio * width);
  const rate = elapsedMs > 0 ? done / (elapsedMs / 1000) : 0;
  const eta = done >= total ? 0 : rate > 0 ? (total - done) / rate : NaN;
  return `${name.slice(0, 30).padEnd(30)} [${"#".repeat(filled)}${"-".repeat(width - filled)}] ` +
    `${(ratio * 100).toFixed(0).padStart(3)}% ${formatBytes(done)} of ${formatBytes(total)} ` +
    `${formatBytes(rate)}/s ETA ${formatEta(eta)}`;
}

/** Draws progress on stderr at most every 100 ms; silent when stderr is not a terminal. */
export class ProgressBar {
  readonly #enabled: boolean;
  #start = 0;
  #last = 0;
  #name = "";

  /** Creates a bar; `enabled` defaults to "stderr is a terminal". */
  constructor(enabled = Deno.stderr.isTerminal()) {
    this.#enabled = enabled;
  }

  /** Reports progress of the current file. */
  update(done: number, total: number, name: string): void {
    if (!this.#enabled) return;
    const now = performance.now();
    if (name !== this.#name) {
      this.#name = name;
      this.#start = now;
    }
    if (now - this.#last < 100 && done !== total) return;
    this.#last = now;
    Deno.stderr.writeSync(
      encoder.encode(`\r${renderProgress(name, done, total, now - this.#start)}`),
    );
    if (done === total) Deno.stderr.writeSync(encoder.encode("\n"));
  }
}
