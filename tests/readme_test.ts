/**
 * Runs every `sh` block of README.md in order, as a new user would, in a fresh copy of
 * the repository, so the README cannot drift from what the commands do.
 *
 * A block may be preceded by one marker comment:
 * - `<!-- readme-test: background wait="REGEX" -->`: a long-running command (a relay,
 *   `agent run`, redis-server); it runs in the background until the end of the test and
 *   the next block starts once its output matches REGEX.
 * - `<!-- readme-test: expect="REGEX" -->`: the block's stdout must match REGEX.
 * - `<!-- readme-test: skip (REASON) -->`: not run; the reason is required.
 * Every other block must exit 0. Background processes run in their own process group
 * and are stopped by PID (SIGTERM, then SIGKILL) at the end.
 *
 * @module
 */

import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { tempDir } from "./helpers.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const BLOCK_TIMEOUT_MS = 60_000;

/** One shell block of the README and what its marker asks. */
export interface ReadmeBlock {
  /** 1-based line of the opening fence. */
  line: number;
  script: string;
  mode: "run" | "background" | "skip";
  /** background: output that means "ready"; run: stdout that must appear. */
  pattern?: RegExp;
  reason?: string;
}

/** Extracts the `sh` blocks of a Markdown text with their markers. */
export function readmeBlocks(markdown: string): ReadmeBlock[] {
  const lines = markdown.split("\n");
  const blocks: ReadmeBlock[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)```(\S*)\s*$/.exec(lines[i]);
    if (!open) continue;
    const indent = open[1].length;
    let end = i + 1;
    while (end < lines.length && !/^\s*```\s*$/.test(lines[end])) end++;
    const body = lines.slice(i + 1, end).map((l) => l.slice(Math.min(indent, l.search(/\S|$/))));
    if (open[2] === "sh") {
      let m = i - 1;
      while (m >= 0 && lines[m].trim() === "") m--;
      const marker = m >= 0 ? /<!-- readme-test: (.*) -->/.exec(lines[m])?.[1] : undefined;
      const block: ReadmeBlock = { line: i + 1, script: body.join("\n"), mode: "run" };
      if (marker !== undefined) {
        const pattern = /(?:wait|expect)="((?:[^"\\]|\\.)*)"/.exec(marker)?.[1];
        if (marker.startsWith("skip")) {
          block.mode = "skip";
          block.reason = /^skip \((.+)\)$/.exec(marker)?.[1];
        } else if (marker.startsWith("background")) block.mode = "background";
        if (pattern !== undefined) block.pattern = new RegExp(pattern.replaceAll('\\"', '"'));
      }
      blocks.push(block);
    }
    i = end;
  }
  return blocks;
}

/** A shell block running in its own process group, its output collected. */
class Shell {
  readonly child: Deno.ChildProcess;
  output = "";
  stdout = "";
  readonly done: Promise<Deno.CommandStatus>;
  #wake: () => void = () => {};

  constructor(script: string, cwd: string, env: Record<string, string>) {
    // setsid: the shell leads a new process group, so one kill(-pid) reaches the deno
    // processes `deno task` starts under it.
    this.child = new Deno.Command("setsid", {
      args: ["bash", "-e", "-o", "pipefail", "-c", script],
      cwd,
      env,
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const pumps = [this.#pump(this.child.stdout, true), this.#pump(this.child.stderr, false)];
    this.done = Promise.all(pumps).then(() => this.child.status);
  }

  async #pump(stream: ReadableStream<Uint8Array>, isStdout: boolean) {
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      this.output += text;
      if (isStdout) this.stdout += text;
      this.#wake();
    }
    this.#wake();
  }

  /** Waits until the output matches `pattern`; fails on exit or after `ms`. */
  async waitFor(pattern: RegExp, ms: number, what: string): Promise<void> {
    const deadline = Date.now() + ms;
    let exited = false;
    void this.child.status.then(() => {
      exited = true;
      this.#wake();
    });
    while (!pattern.test(this.output)) {
      if (exited) throw new Error(`${what} exited before printing ${pattern}:\n${this.output}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${what}: no ${pattern} within ${ms} ms:\n${this.output}`);
      const { promise, resolve } = Promise.withResolvers<void>();
      this.#wake = resolve;
      const timer = setTimeout(resolve, left);
      await promise;
      clearTimeout(timer);
    }
  }

  /** Signals the whole process group (ignored once it is gone). */
  signal(signal: Deno.Signal): void {
    try {
      Deno.kill(-this.child.pid, signal);
    } catch {
      // the group is gone
    }
  }

  /** SIGTERM, then SIGKILL after `ms`; resolves when the output is drained. */
  async stop(ms = 10_000): Promise<void> {
    this.signal("SIGTERM");
    const timer = setTimeout(() => this.signal("SIGKILL"), ms);
    await this.done;
    clearTimeout(timer);
    this.signal("SIGKILL"); // anything of the group that outlived its shell
  }
}

/** Copies the repository's files (tracked and new, not ignored) into `dest`. */
async function copyRepository(dest: string): Promise<void> {
  const { stdout } = await new Deno.Command("git", {
    args: ["ls-files", "-z", "--cached", "--others", "--exclude-standard"],
    cwd: ROOT,
    stdout: "piped",
  }).output();
  for (const file of new TextDecoder().decode(stdout).split("\0").filter(Boolean)) {
    try {
      await Deno.mkdir(join(dest, dirname(file)), { recursive: true });
      await Deno.copyFile(join(ROOT, file), join(dest, file));
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e; // deleted but still tracked
    }
  }
}

Deno.test("readmeBlocks() reads markers, indented blocks and skip reasons", () => {
  const blocks = readmeBlocks([
    "1. step",
    '   <!-- readme-test: background wait="listening" -->',
    "",
    "   ```sh",
    "   deno task relay",
    "   ```",
    "```json",
    "{}",
    "```",
    "<!-- readme-test: skip (needs root) -->",
    "```sh",
    "systemctl start x",
    "```",
  ].join("\n"));
  assert.deepEqual(blocks.map((b) => [b.mode, b.script, b.reason]), [
    ["background", "deno task relay", undefined],
    ["skip", "systemctl start x", "needs root"],
  ]);
  assert.deepEqual(blocks[0].pattern, /listening/);
});

Deno.test({
  name: "README: every shell block runs as written, in order, in a fresh copy",
  // The relay and agent processes are ours to stop, by process group, at the end.
  sanitizeResources: true,
  async fn() {
    const blocks = readmeBlocks(await Deno.readTextFile(join(ROOT, "README.md")));
    assert.ok(blocks.length >= 15, `only ${blocks.length} sh blocks found`);
    for (const b of blocks.filter((b) => b.mode === "skip")) {
      assert.ok(b.reason, `README.md:${b.line}: a skipped block needs a reason`);
    }
    await using dir = await tempDir();
    await copyRepository(dir.path);
    const env: Record<string, string> = {
      PATH: `${dirname(Deno.execPath())}:${Deno.env.get("PATH") ?? "/usr/bin:/bin"}`,
      HOME: Deno.env.get("HOME") ?? dir.path,
      NO_COLOR: "1",
    };
    for (const name of ["DENO_DIR", "XDG_CACHE_HOME", "DENORT_BIN"]) {
      const value = Deno.env.get(name);
      if (value) env[name] = value;
    }
    const background: Shell[] = [];
    try {
      for (const block of blocks) {
        const what = `README.md:${block.line} (${block.script.split("\n")[0]})`;
        if (block.mode === "skip") continue;
        const shell = new Shell(block.script, dir.path, env);
        if (block.mode === "background") {
          background.push(shell);
          await shell.waitFor(block.pattern ?? /./, BLOCK_TIMEOUT_MS, what);
          continue;
        }
        const timer = setTimeout(() => shell.signal("SIGKILL"), BLOCK_TIMEOUT_MS);
        const status = await shell.done;
        clearTimeout(timer);
        assert.equal(status.code, 0, `${what} failed:\n${shell.output}`);
        if (block.pattern) assert.match(shell.stdout, block.pattern, `${what}: stdout`);
      }
    } finally {
      for (const shell of background.reverse()) await shell.stop();
    }
  },
});
