/**
 * Model-checks docs/mesh_model.pml (flooding and catch-up over Fig. 5 with message loss,
 * duplication and reordering) with spin and gcc.
 *
 * ```sh
 * deno run -A scripts/model_check.ts          # safety: convergence at quiescence, loop freedom
 * deno run -A scripts/model_check.ts --ltl    # also <>[] converged under weak fairness (~1 min)
 * ```
 *
 * Exit code 0 when every check gives the expected answer (the model passes, the
 * mutants fail), 1 otherwise, 2 when spin or gcc is missing.
 *
 * @module
 */

import { parseArgs } from "node:util";

/** The model, relative to the repository root. */
export const MODEL = new URL("../docs/mesh_model.pml", import.meta.url);

/** What one spin run found. */
export interface ModelResult {
  /** Errors spin reported (assertion violations, invalid end states, acceptance cycles). */
  errors: number;
  /** States stored. */
  states: number;
  /** First violation line, if any. */
  violation?: string;
  /** Wall time, s. */
  seconds: number;
}

async function run(cmd: string, args: string[], cwd: string): Promise<string> {
  const out = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" })
    .output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  if (!out.success && cmd !== "./pan") {
    throw new Error(`Cannot model-check: ${cmd} exited ${out.code}: ${text.slice(0, 500)}`);
  }
  return text;
}

/**
 * Generates, compiles and runs the verifier. `define` is passed to spin's preprocessor
 * (a mutant); `ltl` checks the `eventually_converged` claim with weak fairness instead
 * of the safety properties.
 */
export async function checkModel(
  options: { define?: string; ltl?: boolean } = {},
): Promise<ModelResult> {
  const dir = await Deno.makeTempDir({ prefix: "tsunagi-spin-" });
  const started = performance.now();
  try {
    await Deno.copyFile(MODEL, `${dir}/model.pml`);
    await run("spin", [...(options.define ? [`-D${options.define}`] : []), "-a", "model.pml"], dir);
    const cflags = options.ltl ? ["-DNFAIR=12"] : ["-DSAFETY", "-DNOCLAIM"];
    await run("gcc", ["-O1", "-w", ...cflags, "-o", "pan", "pan.c"], dir);
    const panArgs = options.ltl
      ? ["-a", "-f", "-m1000000", "-N", "eventually_converged"]
      : ["-m1000000"];
    const text = await run("./pan", panArgs, dir);
    const errors = Number(/errors: (\d+)/.exec(text)?.[1] ?? NaN);
    if (!Number.isFinite(errors)) {
      throw new Error(`Cannot read spin's answer: ${text.slice(0, 500)}`);
    }
    return {
      errors,
      states: Number(/(\d+) states, stored/.exec(text)?.[1] ?? 0),
      violation: /^pan:\d+: (.*)$/m.exec(text)?.[1],
      seconds: Math.round((performance.now() - started) / 100) / 10,
    };
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

async function hasTool(name: string): Promise<boolean> {
  try {
    const out = await new Deno.Command("sh", { args: ["-c", `command -v ${name}`], stdout: "null" })
      .output();
    return out.success;
  } catch {
    return false;
  }
}

if (import.meta.main) {
  const { values } = parseArgs({ args: Deno.args, options: { ltl: { type: "boolean" } } });
  for (const tool of ["spin", "gcc"]) {
    if (!(await hasTool(tool))) {
      console.error(`model_check: ${tool} is not installed`);
      console.error("hint: sudo apt-get install -y spin gcc");
      Deno.exit(2);
    }
  }
  const checks: { label: string; define?: string; ltl?: boolean; expectErrors: boolean }[] = [
    { label: "safety (convergence at quiescence, loop freedom)", expectErrors: false },
    { label: "mutant: digests ignored", define: "MUTANT_NO_CATCHUP", expectErrors: true },
    {
      label: "mutant: dropped notices forwarded",
      define: "MUTANT_FORWARD_OLD",
      expectErrors: true,
    },
    ...(values.ltl
      ? [{ label: "liveness <>[] converged (weak fairness)", ltl: true, expectErrors: false }]
      : []),
  ];
  let ok = true;
  for (const c of checks) {
    const r = await checkModel(c);
    const pass = (r.errors > 0) === c.expectErrors;
    ok &&= pass;
    console.log(
      `${
        pass ? "ok  " : "FAIL"
      } ${c.label}: ${r.errors} error(s), ${r.states} states, ${r.seconds} s` +
        (r.violation ? ` (${r.violation})` : ""),
    );
  }
  Deno.exit(ok ? 0 : 1);
}
