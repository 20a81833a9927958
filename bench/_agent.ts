/**
 * The real agent CLI as bench processes: `tsunagi run` receiving files (device
 * {@link FILE_DEVICE}) and one-shot `tsunagi send` runs, both through `agent/main.ts`.
 *
 * @module
 */

import { join } from "node:path";
import { PARTIAL_DIR } from "../agent/transfer.ts";
import type { BenchContext } from "./_context.ts";
import { Child } from "./_procs.ts";
import { FILE_DEVICE } from "./_workspace.ts";

/** A running `tsunagi run` and its inbox. */
export interface AgentProc {
  child: Child;
  inbox: string;
}

/** Starts `tsunagi run` as {@link FILE_DEVICE} with a fresh inbox; waits until it logged in. */
export async function startReceiver(
  ctx: BenchContext,
  relay: string,
  label: string,
  extra: string[] = [],
): Promise<AgentProc> {
  const inbox = join(ctx.workspace.root, `inbox-${label}`);
  await Deno.mkdir(inbox, { recursive: true });
  const child = new Child([
    "run",
    "-A",
    "agent/main.ts",
    "run",
    "--relay",
    relay,
    "--id",
    FILE_DEVICE,
    "--password-file",
    await ctx.workspace.passwordFile(),
    "--inbox",
    inbox,
    "--log-format",
    "json",
    ...extra,
  ], { name: `tsunagi run (${label})` });
  try {
    await child.waitLog((l) => l.event === "logged in", "logged in", 30_000);
  } catch (e) {
    await child.stop("SIGKILL");
    throw e;
  }
  return { child, inbox };
}

/** Log lines of `child` whose event is `name`. */
export function countEvents(child: Child, name: string): number {
  return child.logs.filter((l) => l.event === name).length;
}

/** Outcome of one `tsunagi send`. */
export interface SendOutcome {
  /** Exit code (0 sent and confirmed). */
  code: number;
  /** From spawn to exit, ms. */
  ms: number;
  /** "retrying in" lines it printed (transient refusals it waited out). */
  retries: number;
  /** Its last stderr line when it failed. */
  error: string;
}

/** Runs `tsunagi send --to fax` of `file` as device `from`; bounded by `timeoutS` + 15 s. */
export async function runSend(
  ctx: BenchContext,
  relay: string,
  from: string,
  file: string,
  timeoutS: number,
): Promise<SendOutcome> {
  const t0 = performance.now();
  const child = new Child([
    "run",
    "-A",
    "agent/main.ts",
    "send",
    "--relay",
    relay,
    "--id",
    from,
    "--password-file",
    await ctx.workspace.passwordFile(),
    "--to",
    FILE_DEVICE,
    "--timeout",
    `${timeoutS}s`,
    "--log-format",
    "json",
    file,
  ], { name: "tsunagi send" });
  const timer = setTimeout(() => child.stop("SIGKILL"), (timeoutS + 15) * 1000);
  try {
    const { code } = await child.status;
    await child.stop();
    const retries = child.stderrTail.filter((l) => / retrying in /.test(l)).length;
    const plain = child.stderrTail.filter((l) => !l.startsWith("{"));
    return {
      code,
      ms: performance.now() - t0,
      retries,
      error: code === 0 ? "" : (plain[plain.length - 1] ?? child.stderrTail.at(-1) ?? ""),
    };
  } finally {
    clearTimeout(timer);
  }
}

/** Files directly in `dir` (not folders), and `*.part` files in its partial folder. */
export async function inboxContents(inbox: string): Promise<{ files: number; parts: number }> {
  const count = async (dir: string, match: (name: string) => boolean) => {
    let n = 0;
    try {
      for await (const e of Deno.readDir(dir)) if (e.isFile && match(e.name)) n++;
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    return n;
  };
  return {
    files: await count(inbox, () => true),
    parts: await count(join(inbox, PARTIAL_DIR), (name) => name.endsWith(".part")),
  };
}

/** Writes `size` random bytes to a workspace file; returns its path. */
export async function randomFile(ctx: BenchContext, name: string, size: number): Promise<string> {
  const bytes = new Uint8Array(size);
  for (let off = 0; off < size; off += 65536) {
    crypto.getRandomValues(bytes.subarray(off, Math.min(size, off + 65536)));
  }
  const path = join(ctx.workspace.root, name);
  await Deno.writeFile(path, bytes);
  return path;
}
