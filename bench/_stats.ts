/**
 * Small statistics and number formatting for the bench. Pure.
 *
 * @module
 */

/** Bytes in a MiB. */
export const MiB = 1024 * 1024;
/** Bytes in a GiB. */
export const GiB = 1024 * MiB;

/** The `p`-th percentile (0-100) of `values`, nearest-rank; NaN when empty. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

/** The median; NaN when empty. */
export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** Latency summary of a sample, in ms. */
export interface LatencySummary {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  min: number;
  max: number;
  mean: number;
}

/** Summarises latency samples (ms). */
export function summarize(samples: readonly number[]): LatencySummary {
  return {
    count: samples.length,
    p50: round(percentile(samples, 50), 3),
    p90: round(percentile(samples, 90), 3),
    p99: round(percentile(samples, 99), 3),
    min: round(samples.length ? Math.min(...samples) : NaN, 3),
    max: round(samples.length ? Math.max(...samples) : NaN, 3),
    mean: round(samples.length ? samples.reduce((a, b) => a + b, 0) / samples.length : NaN, 3),
  };
}

/** Rounds to `digits` decimals (NaN stays NaN). */
export function round(value: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

/** A ratio rounded to 3 decimals; NaN when the divisor is 0 or NaN. */
export function ratio(a: number, b: number): number {
  return b > 0 ? round(a / b, 3) : NaN;
}

/** Formats a number for tables: "n/a" for NaN/null. */
export function fmt(value: number | null | undefined, digits = 2, unit = ""): string {
  if (value === null || value === undefined || Number.isNaN(value)) return "n/a";
  return `${value.toFixed(digits)}${unit}`;
}
