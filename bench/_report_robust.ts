/**
 * The report's part for what a peer can make the relay hold and what failures cost:
 * unauthenticated connections, idle sessions, aborted senders, NAT state loss. Their
 * targets and markdown sections. Pure.
 *
 * @module
 */

import type { AbortsResult } from "./_aborts.ts";
import type { SessionsResult, UnauthResult } from "./_hold.ts";
import type { NatResult } from "./_nat.ts";
import { atMost, notAvailable, table, type TargetCheck } from "./_report_util.ts";
import { fmt } from "./_stats.ts";

/** The results this part reads. */
export interface RobustResults {
  unauth?: UnauthResult;
  sessions?: SessionsResult;
  aborts?: AbortsResult;
  nat?: NatResult;
}

/** Share of the growth that must come back within the after window to count as given back. */
const GIVEN_BACK = 0.75;

const mib = (kib: number) => fmt(kib / 1024, 1);

/** The targets for these scenarios. */
export function robustTargets(r: RobustResults): TargetCheck[] {
  const out: TargetCheck[] = [];
  const partial = r.unauth?.variants.find((v) => v.bytesEach > 0);
  out.push(atMost(
    "≤ 16 KiB RSS per unauthenticated connection (partial pre-login frame)",
    partial?.rssPerConnKiB,
    16,
    "KiB",
  ));
  if (partial && r.unauth) {
    const back = partial.givenBack;
    out.push({
      target: `unauthenticated connections' RSS given back (≥ ${GIVEN_BACK * 100}% of the growth ` +
        `within ${r.unauth.afterS} s)`,
      measured: `${fmt(back * 100, 0)}% (${mib(partial.rssEmptyKiB)} → ${
        mib(partial.rssHeldKiB)
      } → ${mib(partial.rssAfterKiB)} MiB)`,
      status: back >= GIVEN_BACK ? "met" : "missed",
      detail: back >= GIVEN_BACK ? "" : `RSS ${mib(partial.rssAfterKiB)} MiB after they closed`,
    });
  } else out.push(notAvailable("unauthenticated connections' RSS given back", "did not run"));
  out.push(atMost("≤ 64 KiB RSS per open idle session", r.sessions?.rssPerSessionKiB, 64, "KiB"));
  const a = r.aborts;
  if (a) {
    const bad = a.hungSessions + a.senderSessions + a.partFiles + a.inboxFiles;
    const incomplete = a.aborted < a.sessions;
    out.push({
      target: `0 hung sessions, 0 leaked .part files after ${a.sessions} random-offset aborts`,
      measured: `${a.hungSessions} hung, ${a.partFiles} .part, ${a.inboxFiles} files in the ` +
        `inbox (${a.aborted} aborted)`,
      status: bad === 0 && !incomplete ? "met" : "missed",
      detail: incomplete ? `${a.failed} sessions never started: ${a.errors[0] ?? ""}` : "",
    });
  } else out.push(notAvailable("0 hung sessions, 0 leaked .part files", "did not run"));
  const n = r.nat;
  if (n) {
    const target = `NAT: reachable again within 1.5 keep-alive intervals (${n.targetMs} ms)`;
    out.push(
      n.reachableMaxMs === null
        ? {
          target,
          measured: "not reachable in a round",
          status: "missed",
          detail: "no new connection logged in within the deadline",
        }
        : {
          ...atMost(`${target}, worst round`, n.reachableMaxMs, n.targetMs, "ms"),
          measured: `${fmt(n.reachableMaxMs, 0)} ms (median ${fmt(n.reachableMedianMs, 0)})`,
        },
    );
    out.push({
      target: "NAT: a send started at the freeze succeeds",
      measured: `${n.sendsOk} of ${n.rounds.length}`,
      status: n.sendsOk === n.rounds.length ? "met" : "missed",
      detail: n.rounds.find((x) => x.send.code !== 0)?.send.error ?? "",
    });
  } else out.push(notAvailable("NAT: reachable again within 1.5 keep-alive intervals", ""));
  return out;
}

/** Markdown sections 7-10. */
export function robustMarkdown(r: RobustResults): string[] {
  const out: string[] = [];
  if (r.unauth) {
    const u = r.unauth;
    out.push(
      "",
      `## 7. Unauthenticated connections: held ${u.holdS} s, watched ${u.afterS} s after they ` +
        `closed (login timeout ${u.loginTimeoutS} s, unauth limits above the count)`,
      "",
      table(
        [
          "connections",
          "RSS empty MiB",
          "RSS held MiB",
          "KiB / connection",
          "RSS after close MiB (lowest)",
          "given back",
          "relay CPU s",
          "failed / dropped",
        ],
        u.variants.map((v) => [
          `${v.connections}, ${v.label}`,
          mib(v.rssEmptyKiB),
          mib(v.rssHeldKiB),
          fmt(v.rssPerConnKiB, 2),
          `${mib(v.rssAfterKiB)} (${mib(v.rssAfterMinKiB)})`,
          `${fmt(v.givenBack * 100, 0)}%`,
          fmt(v.cpuS, 2),
          `${v.failed} / ${v.lost}`,
        ]),
      ),
    );
  }
  if (r.sessions) {
    const s = r.sessions;
    out.push(
      "",
      `## 8. Idle sessions: ${s.pairs} pairs, each phase held ${s.holdS} s`,
      "",
      table(
        ["phase", "RSS MiB", "KiB each", "note"],
        [
          ["empty relay", mib(s.rssEmptyKiB), "—", ""],
          [
            `${s.connections} connections logged in, idle (baseline)`,
            mib(s.rssIdleKiB),
            `${fmt(s.rssPerIdleConnKiB, 2)} / connection`,
            `${s.failedLogins} failed logins`,
          ],
          [
            `the same connections as ${s.sessions} sessions`,
            mib(s.rssSessionsKiB),
            `${fmt(s.rssPerSessionKiB, 2)} / session, over idle`,
            `${s.failedSetups} failed setups, ${s.lost} dropped; setups took ` +
            `${fmt(s.setupWallS, 2)} s, relay CPU ${fmt(s.setupCpuS, 2)} s`,
          ],
          ["all closed", mib(s.rssAfterKiB), "—", ""],
        ],
      ),
    );
    if (s.errors.length) out.push("", `First errors: ${s.errors.slice(0, 3).join("; ")}`);
  }
  if (r.aborts) {
    const a = r.aborts;
    const cuts = Object.entries(a.cuts).map(([k, v]) => `${k} ${v}`).join(", ");
    out.push(
      "",
      `## 9. Aborted senders: ${a.sessions} file sessions cut at random byte offsets (seed ` +
        `${a.seed}), ${a.concurrency} at a time, against \`tsunagi run\``,
      "",
      table(
        ["figure", "value"],
        [
          ["sessions aborted / never started", `${a.aborted} / ${a.failed}`],
          ["where the cuts fell", cuts],
          ["bytes sent before the cuts", `${fmt(a.mibSent, 1)} MiB in ${fmt(a.wallS, 1)} s`],
          [
            "CONNECTs retried: busy / target offline",
            `${a.busyRetries} / ${a.offlineRetries}`,
          ],
          ["relay CPU", `${fmt(a.relayCpuS, 2)} s`],
          [
            `receiver's sessions on the relay (hung), polled until 0 or ${a.deadlineS} s`,
            String(a.hungSessions),
          ],
          ["sender's sessions on the relay", String(a.senderSessions)],
          ["`.part` files leaked / files in the inbox", `${a.partFiles} / ${a.inboxFiles}`],
          [
            "all four 0, after the last abort",
            a.cleanAfterMs === null ? `not within ${a.deadlineS} s` : `${a.cleanAfterMs} ms`,
          ],
          [
            "agent log: sessions accepted / failed / ended / files received",
            `${a.agent.accepted} / ${a.agent.failed} / ${a.agent.ended} / ${a.agent.received}` +
            (a.agent.running ? "" : " (agent exited)"),
          ],
          [
            "a real `tsunagi send` of 1 MiB afterwards",
            a.check.code === 0
              ? `ok in ${fmt(a.check.s, 2)} s (${a.check.inboxFiles} file in the inbox)`
              : `exit ${a.check.code}: ${a.check.error}`,
          ],
        ],
      ),
    );
    if (a.errors.length) out.push("", `First errors: ${a.errors.slice(0, 3).join("; ")}`);
  }
  if (r.nat) {
    const n = r.nat;
    out.push(
      "",
      `## 10. NAT state loss: \`tsunagi run --keepalive ${n.keepaliveMs / 1000}s --idle 2\` ` +
        `behind a NAT that freezes; \`tsunagi send --timeout ${n.sendTimeoutS}s\` started at ` +
        `the freeze`,
      "",
      table(
        [
          "round",
          "relay --answer-timeout",
          "frozen",
          "dead noticed, ms",
          "reachable again, ms",
          "send",
          "send retries",
        ],
        n.rounds.map((x, i) => [
          `${i + 1} (freeze ${x.phaseMs} ms after the pool was up)`,
          `${x.answerTimeoutMs / 1000} s${x.answerTimeoutMs === 10_000 ? " (default)" : ""}`,
          String(x.frozen),
          fmt(x.deadMs, 0),
          x.reachableMs === null ? "not within the deadline" : fmt(x.reachableMs, 0),
          x.send.code === 0 && x.send.arrived
            ? `ok in ${fmt(x.send.ms, 0)} ms`
            : `exit ${x.send.code} after ${fmt(x.send.ms, 0)} ms: ${x.send.error}`,
          String(x.send.retries),
        ]),
      ),
      "",
      `Target: ${n.targetMs} ms (1.5 × ${n.keepaliveMs} ms). "Reachable again" is the first ` +
        `connection opened through the NAT after the freeze whose LOGIN_RESULT(Ok) passed it; ` +
        `send times run from the freeze to the command's exit (process start included).`,
    );
  }
  return out;
}
