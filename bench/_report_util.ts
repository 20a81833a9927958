/**
 * Building blocks of the report: a target checked against a limit, markdown tables. Pure.
 *
 * @module
 */

import { fmt } from "./_stats.ts";

/** One target of the issue, checked. */
export interface TargetCheck {
  target: string;
  measured: string;
  status: "met" | "missed" | "not available";
  detail: string;
}

/** Met when `value` ≤ `limit`. */
export function atMost(target: string, value: number | undefined, limit: number, unit: string) {
  if (value === undefined || Number.isNaN(value)) return notAvailable(target, "did not run");
  const measured = `${fmt(value, unit === "ms" ? 3 : 2)} ${unit}`;
  if (value <= limit) return { target, measured, status: "met" as const, detail: "" };
  return {
    target,
    measured,
    status: "missed" as const,
    detail: `over by ${fmt(value - limit, 2)} ${unit} (${fmt(value / limit, 2)}× the limit)`,
  };
}

/** Met when `value` ≥ `limit`. */
export function atLeast(target: string, value: number | undefined, limit: number, unit = "×") {
  if (value === undefined || Number.isNaN(value)) return notAvailable(target, "did not run");
  const measured = `${fmt(value, 3)}${unit}`;
  if (value >= limit) return { target, measured, status: "met" as const, detail: "" };
  return {
    target,
    measured,
    status: "missed" as const,
    detail: `short by ${fmt(limit - value, 3)}${unit} (${
      fmt((1 - value / limit) * 100, 0)
    }% below the target)`,
  };
}

/** A target that could not be checked, and why. */
export function notAvailable(target: string, why: string): TargetCheck {
  return { target, measured: "—", status: "not available", detail: why };
}

/** A markdown table. */
export function table(header: string[], rows: string[][]): string {
  const line = (cells: string[]) => `| ${cells.join(" | ")} |`;
  return [line(header), line(header.map(() => "---")), ...rows.map(line)].join("\n");
}
