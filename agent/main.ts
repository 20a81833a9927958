/**
 * `tsunagi`: the device agent's command line (`deno task agent ...`, or the bundled
 * `dist/tsunagi.js`).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { formatHostPort, type HostPort } from "../shared/address.ts";
import {
  ExitCode,
  invokedAs,
  parseCount,
  parseDuration,
  parseSize,
  printError,
} from "../shared/cli.ts";
import { describeReadError } from "../shared/json_file.ts";
import {
  ConnectionClosedError,
  LoginRefusedError,
  PeerUnavailableError,
  RelayError,
  TransferAbortedError,
  UnsafeChallengeError,
  UsageError,
} from "../shared/errors.ts";
import { escapeControl, Logger, parseLogFormat, parseLogLevel } from "../shared/log.ts";
import {
  DeviceState,
  ERROR_CODE_NAMES,
  ErrorCode,
  MAX_SERVICES,
} from "../shared/protocol/constants.ts";
import type { DirectoryEntry } from "../shared/protocol/messages.ts";
import {
  acceptFromConfig,
  loadConfig,
  parseAcceptFrom,
  parseExpose,
  parseForwards,
  pick,
  resolveCommon,
} from "./config.ts";
import { runForwarder } from "./forward.ts";
import { DEFAULT_MAX_FILE_SIZE, runAgent } from "./run.ts";
import { formatBytes, ProgressBar } from "./progress.ts";
import type { RelayConnection } from "./relay_client.ts";
import { DEFAULT_COMMAND_TIMEOUT_MS, openRelay, sendToDevice } from "./send.ts";
import { SessionAbortedError } from "./session.ts";
import { AgentReplacedError, DEFAULT_KEEPALIVE_MS, FatalLoginError } from "./supervisor.ts";

const PROGRAM = "tsunagi";
/** The command the user typed to start the agent (`deno task agent`, `tsunagi`, ...). */
const CMD = invokedAs("TSUNAGI_AGENT_CMD", PROGRAM);

const COMMON_HELP = `Connection options (also from env TSUNAGI_* or --config FILE):
  --relay HOST:PORT       relay address; repeat for fail-over (env TSUNAGI_RELAY,
                          default 127.0.0.1:7800)
  --id ID                 this device's ID (env TSUNAGI_ID)
  --password-file FILE    file holding this device's password, - for stdin
                          (env TSUNAGI_PASSWORD_FILE)
  --tls-ca FILE           connect with TLS, trusting this PEM CA (env TSUNAGI_TLS_CA)
  --config FILE           JSON config file (env TSUNAGI_CONFIG)
  --log-format text|json  log format on stderr (default text)
  --log-level LEVEL       debug, info, warn or error (default info)
  -h, --help              show help`;

const EXIT_HELP = `Exit codes: 0 ok, 1 failed, 2 bad usage, 3 login refused (or run replaced by
            another agent with the same ID, or logged out: password changed, device removed),
            4 relay unreachable or temporarily unavailable (retry later), 5 target unavailable
            (unknown, offline, busy, refused, timed out).`;

const HELP = `tsunagi: reach devices behind NAT through a tsunagi relay.

Usage: ${CMD} <command> [options]

Commands:
  run       stay logged in, keep idle connections, receive files, expose TCP services
  forward   listen on a local TCP port; each connection reaches a device's service
  send      send files to a FAX-type device (one with the FILE TX/RX attribute)
  list      list the devices the relay knows
  status    show one device

Run "${CMD} <command> --help" for a command's options.
${EXIT_HELP}`;

const HELPS: Record<string, string> = {
  run: `Usage: ${CMD} run [options]

Logs in, keeps idle connections open with keep-alives, answers connection requests,
receives files into the inbox, and pipes sessions for exposed services to local TCP
servers. Reconnects with backoff when the relay goes away.

  --expose NAME=HOST:PORT each session for service NAME gets a fresh TCP connection to
                          HOST:PORT (repeatable); if that connect fails, the requester
                          is refused with the reason
  --idle N                idle connections to keep (default 2)
  --inbox DIR             where received files go (env TSUNAGI_INBOX, default ./inbox)
  --accept-from ID,...    accept sessions only from these devices (default: all)
  --accept-from NAME=ID,...
                          service NAME (file or an exposed name) only from these
                          devices (repeatable, e.g. --accept-from ipp=pc1,pc2)
  --keepalive DURATION    ping interval; a relay silent half an interval after a ping
                          is dead and redialled (env TSUNAGI_KEEPALIVE, default 15s;
                          the relay's interval wins if shorter)
  --max-file-size SIZE    refuse larger files, e.g. 10MiB, 2GB; 0 = no limit
                          (env TSUNAGI_MAX_FILE_SIZE, default 4GiB)
${COMMON_HELP}

${EXIT_HELP}`,
  forward: `Usage: ${CMD} forward --listen HOST:PORT --to ID --service NAME [options]

Listens on HOST:PORT; each local TCP connection becomes one session to service NAME of
device ID (run there with --expose NAME=...), carried byte for byte both ways. Keeps a
warm pool of logged-in connections, so a local connection costs no login. A refused
request resets the local connection at once and backs off that target.

  --listen HOST:PORT      local address (repeatable; port 0 picks a free port, logged)
  --to ID                 target device (one per --listen, or one for all)
  --service NAME          service on the target (one per --listen, or one for all)
  --pool N                logged-in connections kept warm (default 4)
  --sockets node|deno     data path of an accepted connection: node (default)
                          resets (RST) a tunnel that fails midway, so the client
                          sees a cut stream, not an end; deno costs about a
                          quarter of the CPU per byte received but can only
                          close it (FIN). Refusals are an RST in both.
${COMMON_HELP}

${EXIT_HELP}`,
  send: `Usage: ${CMD} send --to ID [options] FILE...

Sends files to a device with the FILE TX/RX attribute. Success is reported only after
the receiver confirmed each file's length and SHA-256. Shows progress on a terminal.

  --to ID                 receiving device
  --timeout DURATION      give up if the session cannot start, or the transfer makes
                          no progress, for this long (default 60s); a busy or slow
                          target is retried until then, an offline one for 5s (it
                          may be reconnecting)
  --json                  print the receipts as JSON on stdout
${COMMON_HELP}

${EXIT_HELP}`,
  list: `Usage: ${CMD} list [options]

Lists the devices the relay knows (online ones; --all adds offline ones).

  --all                   include devices that are not logged in
  --json                  print JSON on stdout
${COMMON_HELP}

${EXIT_HELP}`,
  status: `Usage: ${CMD} status ID [options]

Shows one device's entry: type, attributes, services it offers, state, relay,
connections.

  --json                  print JSON on stdout
${COMMON_HELP}

${EXIT_HELP}`,
};

const COMMON_OPTIONS = {
  relay: { type: "string", multiple: true },
  id: { type: "string" },
  "password-file": { type: "string" },
  "tls-ca": { type: "string" },
  config: { type: "string" },
  "log-format": { type: "string" },
  "log-level": { type: "string" },
  help: { type: "boolean", short: "h" },
  json: { type: "boolean" },
} as const;

/** Runs the CLI with `args`; returns the exit code. */
export async function agentMain(args: string[]): Promise<number> {
  const [command, ...rest] = args;
  if (command === undefined || command === "-h" || command === "--help" || command === "help") {
    console.log(HELP);
    return command === undefined ? ExitCode.Usage : ExitCode.Ok;
  }
  if (!(command in HELPS)) {
    printError(PROGRAM, `Unknown command "${command}"`, `run ${CMD} --help`);
    return ExitCode.Usage;
  }
  try {
    const { values, positionals } = parseArgs({
      args: rest,
      options: {
        ...COMMON_OPTIONS,
        idle: { type: "string" },
        inbox: { type: "string" },
        "accept-from": { type: "string", multiple: true },
        to: { type: "string", multiple: true },
        expose: { type: "string", multiple: true },
        listen: { type: "string", multiple: true },
        service: { type: "string", multiple: true },
        pool: { type: "string" },
        sockets: { type: "string" },
        all: { type: "boolean" },
        keepalive: { type: "string" },
        "max-file-size": { type: "string" },
        timeout: { type: "string" },
      },
      strict: true,
      allowPositionals: true,
    });
    if (values.help) {
      console.log(HELPS[command]);
      return ExitCode.Ok;
    }
    const config = await loadConfig(values.config);
    const logger = new Logger({
      component: PROGRAM,
      format: parseLogFormat(
        pick(values["log-format"], "TSUNAGI_LOG_FORMAT", config, "logFormat") ?? "text",
      ),
      level: parseLogLevel(values["log-level"] ?? "info"),
      // One line per failed session is what a device's operator (and a script reading the
      // log) needs; the relay, which faces strangers, is the one that rate-limits.
      rateLimit: false,
    });
    const common = await resolveCommon(values, config);
    const timeoutMs = values.timeout === undefined
      ? DEFAULT_COMMAND_TIMEOUT_MS
      : positiveDuration(values.timeout, "timeout");
    switch (command) {
      case "run": {
        if (positionals.length > 0) throw new UsageError(`Unexpected argument "${positionals[0]}"`);
        const idleText = pick(values.idle, "TSUNAGI_IDLE", config, "idle");
        const accept = parseAcceptFrom(
          values["accept-from"] ?? Deno.env.get("TSUNAGI_ACCEPT_FROM")?.split(";") ??
            acceptFromConfig(config.acceptFrom),
        );
        const inbox = pick(values.inbox, "TSUNAGI_INBOX", config, "inbox") ?? "./inbox";
        const keepaliveText = pick(values.keepalive, "TSUNAGI_KEEPALIVE", config, "keepalive");
        const maxSizeText = pick(
          values["max-file-size"],
          "TSUNAGI_MAX_FILE_SIZE",
          config,
          "maxFileSize",
        );
        const exposeList = values.expose ??
          (pick(undefined, "TSUNAGI_EXPOSE", config, "expose")?.split(",") ?? []);
        const exposed = exposeList.map(parseExpose);
        const names = new Set<string>();
        for (const e of exposed) {
          if (e.name === "file") {
            throw new UsageError(
              `Service name "file" is taken by the agent's own file service`,
              "give this --expose another name",
            );
          }
          if (names.has(e.name)) {
            throw new UsageError(
              `Service "${e.name}" given twice`,
              "give each --expose a new name",
            );
          }
          names.add(e.name);
        }
        if (names.size + 1 > MAX_SERVICES) {
          throw new UsageError(
            `${names.size} exposed services: a device offers at most ${MAX_SERVICES}, ` +
              `its file service included`,
            `expose at most ${MAX_SERVICES - 1} services`,
          );
        }
        for (const name of accept.byService.keys()) {
          if (name !== "file" && !names.has(name)) {
            throw new UsageError(
              `--accept-from names service "${name}", which this agent does not offer`,
              "expose it with --expose NAME=HOST:PORT, or fix the name",
            );
          }
        }
        await Deno.mkdir(inbox, { recursive: true });
        const controller = new AbortController();
        let stoppedBy = "";
        const onSignal = (signal: Deno.Signal) => () => {
          stoppedBy ||= signal;
          controller.abort(new Error(`stopped by ${signal}`));
        };
        const onInt = onSignal("SIGINT");
        const onTerm = onSignal("SIGTERM");
        Deno.addSignalListener("SIGINT", onInt);
        Deno.addSignalListener("SIGTERM", onTerm);
        try {
          await runAgent({
            ...common,
            idle: idleText ? parseCount(idleText, "idle", 1, 64, source(values.idle, "idle")) : 2,
            inbox,
            expose: exposed,
            acceptFrom: accept.all,
            acceptFromService: accept.byService,
            keepaliveMs: keepaliveText
              ? positiveDuration(keepaliveText, "keepalive")
              : DEFAULT_KEEPALIVE_MS,
            maxFileSize: maxSizeText
              ? parseSize(maxSizeText, "max-file-size")
              : DEFAULT_MAX_FILE_SIZE,
            logger,
            signal: controller.signal,
          });
        } finally {
          Deno.removeSignalListener("SIGINT", onInt);
          Deno.removeSignalListener("SIGTERM", onTerm);
        }
        logger.info("stopped", { id: common.id, reason: stoppedBy || "done" });
        return ExitCode.Ok;
      }
      case "forward": {
        if (positionals.length > 0) throw new UsageError(`Unexpected argument "${positionals[0]}"`);
        const rules = parseForwards(values, config);
        const poolText = pick(values.pool, "TSUNAGI_POOL", config, "pool");
        const keepaliveText = pick(values.keepalive, "TSUNAGI_KEEPALIVE", config, "keepalive");
        const controller = new AbortController();
        const onInt = () => controller.abort();
        Deno.addSignalListener("SIGINT", onInt);
        Deno.addSignalListener("SIGTERM", onInt);
        try {
          await runForwarder({
            ...common,
            rules,
            pool: poolText ? parseCount(poolText, "pool", 1, 64, source(values.pool, "pool")) : 4,
            sockets: parseSockets(values.sockets),
            keepaliveMs: keepaliveText ? positiveDuration(keepaliveText, "keepalive") : undefined,
            logger,
            signal: controller.signal,
          });
        } finally {
          Deno.removeSignalListener("SIGINT", onInt);
          Deno.removeSignalListener("SIGTERM", onInt);
        }
        logger.info("stopped", { id: common.id });
        return ExitCode.Ok;
      }
      case "send": {
        if (!values.to) throw new UsageError("No receiver given", "use --to ID");
        if (values.to.length > 1) throw new UsageError("Several --to given", "send to one device");
        if (positionals.length === 0) {
          throw new UsageError("No files given", `${CMD} send --to ID FILE...`);
        }
        for (const path of positionals) {
          let info: Deno.FileInfo;
          try {
            info = await Deno.stat(path);
          } catch (e) {
            throw new UsageError(
              `Cannot read ${path}: ${describeReadError(e)}`,
              "check the file path",
            );
          }
          if (info.isDirectory) {
            throw new UsageError(
              `Cannot send ${path}: is a directory`,
              "give the files, not a folder",
            );
          }
          if (!info.isFile) throw new UsageError(`Cannot send ${path}: not a regular file`);
        }
        const to = values.to[0];
        const bar = new ProgressBar();
        const receipts = await sendToDevice({
          ...common,
          to,
          files: positionals.map((path) => ({ path })),
          timeoutMs,
          onProgress: (done, total, name) => bar.update(done, total, name),
          onWait: (why, inMs) =>
            console.error(
              escapeControl(`${PROGRAM}: ${why}; retrying in ${(inMs / 1000).toFixed(1)} s`),
            ),
          onFallback,
        });
        if (values.json) console.log(JSON.stringify(receipts));
        else {
          for (const r of receipts) {
            console.log(
              escapeControl(`sent ${r.name} (${formatBytes(r.size)}) to ${to}: sha256 ${r.sha256}`),
            );
          }
        }
        return ExitCode.Ok;
      }
      case "list": {
        const conn = await open(common, timeoutMs);
        try {
          const entries = await conn.list(values.all ?? false, {
            signal: AbortSignal.timeout(timeoutMs),
          });
          if (values.json) console.log(JSON.stringify(entries.map(jsonEntry)));
          else printTable(entries);
        } finally {
          conn.close();
        }
        return ExitCode.Ok;
      }
      case "status": {
        const id = positionals[0];
        if (!id) throw new UsageError("No device ID given", `${CMD} status ID`);
        const conn = await open(common, timeoutMs);
        try {
          const entry = await conn.status(id, { signal: AbortSignal.timeout(timeoutMs) });
          if (values.json) console.log(JSON.stringify(entry && jsonEntry(entry)));
          else if (entry === null) console.log(`${id}: not registered`);
          else printTable([entry]);
          return entry === null ? ExitCode.PeerUnavailable : ExitCode.Ok;
        } finally {
          conn.close();
        }
      }
    }
    return ExitCode.Usage;
  } catch (e) {
    return reportError(e);
  }
}

function open(
  common: Awaited<ReturnType<typeof resolveCommon>>,
  timeoutMs: number,
): Promise<RelayConnection> {
  return openRelay(common, { signal: AbortSignal.timeout(timeoutMs), onFallback });
}

function onFallback(address: HostPort) {
  console.error(`${PROGRAM}: ${formatHostPort(address)} failed, trying next relay`);
}

/** `--sockets node|deno` of `forward`. */
function parseSockets(text: string | undefined): "node" | "deno" | undefined {
  if (text === undefined || text === "node" || text === "deno") return text;
  throw new UsageError(
    `Invalid --sockets "${text}"`,
    "use node (default) or deno (native data path, FIN on failure)",
  );
}

/** A duration flag that must be above zero. */
function positiveDuration(text: string, flag: string): number {
  const ms = parseDuration(text, flag);
  if (ms <= 0) throw new UsageError(`--${flag} must be above zero`, "e.g. 15s");
  return ms;
}

const STATE_NAMES: Record<number, string> = {
  [DeviceState.Offline]: "offline",
  [DeviceState.Online]: "online",
  [DeviceState.Unreachable]: "unreachable",
};

/** A directory entry for `--json`: the state as its name ("online"), not its wire number. */
function jsonEntry(entry: DirectoryEntry): Omit<DirectoryEntry, "state"> & { state: string } {
  return { ...entry, state: STATE_NAMES[entry.state] ?? String(entry.state) };
}

function printTable(entries: DirectoryEntry[]) {
  const rows = entries.map((e) =>
    [
      e.id,
      e.type,
      e.attributes.join(",") || "-",
      e.services.join(",") || "-",
      STATE_NAMES[e.state] ?? String(e.state),
      e.relay || "-",
      String(e.idle),
      String(e.sessions),
      e.peers.join(",") || "-",
    ].map(escapeControl)
  ); // other devices' IDs and services reach this terminal
  const header = [
    "ID",
    "TYPE",
    "ATTRIBUTES",
    "SERVICES",
    "STATE",
    "RELAY",
    "IDLE",
    "SESSIONS",
    "PEERS",
  ];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd();
  console.log(line(header));
  for (const r of rows) console.log(line(r));
}

/** Where a setting came from, for an error message: its flag, else its variable or key. */
function source(flag: string | undefined, key: string): string {
  if (flag !== undefined) return `--${key}`;
  const env = `TSUNAGI_${key.toUpperCase()}`;
  return Deno.env.get(env) ? env : `"${key}" in the config file`;
}

/** Relay errors that mean "try again later" (exit 4, like an unreachable relay). */
const RETRY_LATER_CODES: ReadonlySet<number> = new Set([
  ErrorCode.ShuttingDown,
  ErrorCode.TooManyUnauthenticated,
  ErrorCode.DirectoryUnavailable,
]);

function reportError(e: unknown): number {
  if (e instanceof UsageError) {
    printError(PROGRAM, e.message, e.hint || `run ${CMD} --help`);
    return ExitCode.Usage;
  }
  if (e instanceof TypeError && "code" in e && String(e.code).startsWith("ERR_PARSE_ARGS")) {
    // parseArgs explains over several lines: the first is the error, the rest the fix.
    const [first, ...rest] = e.message.split("\n");
    printError(PROGRAM, first, rest.length > 0 ? rest.join(" ") : `run ${CMD} <command> --help`);
    return ExitCode.Usage;
  }
  if (e instanceof RangeError) {
    printError(PROGRAM, e.message, `run ${CMD} <command> --help`);
    return ExitCode.Usage;
  }
  if (e instanceof AgentReplacedError) {
    printError(
      PROGRAM,
      `Stopped: ${e.message}`,
      `run one \`${CMD} run\` per device ID; stop the other agent to use this one`,
    );
    return ExitCode.AuthFailed;
  }
  if (
    e instanceof LoginRefusedError &&
    (e.code === ErrorCode.TooManyConnections || e.code === ErrorCode.ShuttingDown)
  ) {
    printError(
      PROGRAM,
      `Relay refused the connection: ${e.message}`,
      e.code === ErrorCode.ShuttingDown
        ? "the relay is restarting; retry in a moment, or use another --relay"
        : "close some of this device's connections (other agents or commands), then retry",
    );
    return ExitCode.Unreachable;
  }
  if (e instanceof LoginRefusedError && e.code === ErrorCode.DirectoryUnavailable) {
    printError(
      PROGRAM,
      `Relay temporarily unavailable: ${e.message}`,
      "the relay's directory (Redis) is down; your ID and password were not checked. " +
        "Retry later, or try another relay with --relay",
    );
    return ExitCode.Unreachable;
  }
  if (e instanceof LoginRefusedError && e.code === ErrorCode.Throttled) {
    printError(
      PROGRAM,
      `Relay refused the login for now: ${e.message}`,
      "the relay limits logins from this address (failed or unfinished ones); retry later, " +
        "and check --password-file if it repeats",
    );
    return ExitCode.Unreachable;
  }
  if (e instanceof UnsafeChallengeError) {
    printError(
      PROGRAM,
      `Login refused by this agent: ${e.message}`,
      "check that --relay is your relay; if its registry really uses fewer iterations, set " +
        "TSUNAGI_MIN_ITERATIONS, or have the password set again with `registry passwd`",
    );
    return ExitCode.AuthFailed;
  }
  if (e instanceof FatalLoginError && e.revoked !== "") {
    printError(
      PROGRAM,
      `Logged out: ${e.message}`,
      "an administrator changed this device's password or removed it: put its new password " +
        "in --password-file (or register it again), then start the agent again",
    );
    return ExitCode.AuthFailed;
  }
  if (e instanceof LoginRefusedError || e instanceof FatalLoginError) {
    printError(
      PROGRAM,
      `Login refused: ${e.message}`,
      "check --id and --password-file, and that the device is registered on the relay",
    );
    return ExitCode.AuthFailed;
  }
  if (e instanceof PeerUnavailableError) {
    printError(
      PROGRAM,
      `${e.message} (${ERROR_CODE_NAMES[e.code] ?? e.code})`,
      `check the target with: ${CMD} status ID`,
    );
    return ExitCode.PeerUnavailable;
  }
  if (e instanceof TransferAbortedError || e instanceof SessionAbortedError) {
    printError(
      PROGRAM,
      `Transfer failed: ${e.message}`,
      "the receiver keeps no partial file (a receiver that was killed removes it when it " +
        "restarts); send again",
    );
    return ExitCode.Failure;
  }
  if (e instanceof ConnectionClosedError) {
    printError(PROGRAM, e.message, "is the relay running? check --relay");
    return ExitCode.Unreachable;
  }
  if (e instanceof RelayError) {
    printError(PROGRAM, `Relay error: ${e.message} (${ERROR_CODE_NAMES[e.code] ?? e.code})`);
    // "Retry later" answers get the exit code scripts retry on.
    return RETRY_LATER_CODES.has(e.code) ? ExitCode.Unreachable : ExitCode.Failure;
  }
  printError(PROGRAM, e instanceof Error ? e.message : String(e));
  return ExitCode.Failure;
}

if (import.meta.main) Deno.exit(await agentMain(Deno.args));
