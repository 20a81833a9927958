/*
 * A Promela model of the mesh's flooding and catch-up (docs/mesh.md), for spin.
 *
 *   spin -a docs/mesh_model.pml && gcc -O1 -DSAFETY -DNOCLAIM -o pan pan.c && ./pan -m1000000
 *   gcc -O1 -DNFAIR=12 -o pan pan.c && ./pan -a -f -m1000000 -N eventually_converged
 *   (deno run -A scripts/model_check.ts [--ltl] does both; tests/mesh_model_test.ts runs
 *   the safety checks and the mutants)
 *
 * What is modelled. Relays of patent Fig. 5 (51-52, 52-53, 52-54, 53-54; here 0-1, 1-2,
 * 1-3, 2-3). One key (a device's presence) owned by relay 0, which makes versions 1..MAXV
 * at any time, applying each and sending it to every neighbour. Each directed link is a
 * channel. A relay applies an UPDATE only if it is strictly newer than what it holds, and
 * then forwards it to every neighbour except the sender; older or equal ones are dropped.
 *
 * Faults, each at any time and bounded so that runs end:
 * - reordering: a receiver takes any message waiting on a link, not only the oldest;
 * - duplication: a message waiting on a link is copied (MAXDUP times in all);
 * - loss: a link resets (MAXRESET times in all): every message in flight on it, both
 *   ways, is lost, and on the new link both ends send a DIGEST of what they hold; a relay
 *   that holds something newer than the digest it receives sends it (the catch-up),
 *   and the receiver applies it by the normal rule and floods it on. (TCP loses no
 *   message on a live link; a lost message means a lost link, or a flood queue that
 *   overflowed, which asks for a digest just the same.)
 *
 * Properties checked:
 * - convergence: whenever nothing more can happen, every relay holds MAXV (assertion
 *   at `timeout`), and with weak fairness every run eventually stays converged (LTL);
 * - loop freedom: a relay applies, hence forwards, each version at most once, so each
 *   version crosses each link at most once per direction plus one catch-up per reset;
 *   the state space being finite, a notice that looped forever would break this bound;
 * - no deadlock (spin's invalid end states) and no link queue overflow (assertion).
 *
 * The checks can fail: `-DMUTANT_NO_CATCHUP` (digests ignored) breaks convergence after
 * a reset, `-DMUTANT_FORWARD_OLD` (dropped notices still forwarded) floods forever;
 * scripts/model_check.ts verifies that spin reports both.
 */

#define N 4          /* relays */
#define E 8          /* directed links */
#define MAXV 2       /* versions the origin makes */
#define MAXDUP 1     /* duplications */
#define MAXRESET 1   /* link resets (loss of everything in flight on one link) */
#define CAP 6        /* link queue capacity: never reached within these bounds (asserted) */

mtype = { UPD, DIG };

byte src[E];
byte dst[E];
byte rev[E];
chan link[E] = [CAP] of { mtype, byte };

byte held[N];              /* version each relay holds (0: none) */
byte applied[N * (MAXV + 1)];  /* times relay r applied version v */
byte ndup = 0;
byte nreset = 0;
bool built = false;

#define converged (held[1] == MAXV && held[2] == MAXV && held[3] == MAXV)

inline edge(i, a, b) {
  src[2 * i] = a; dst[2 * i] = b; rev[2 * i] = 2 * i + 1;
  src[2 * i + 1] = b; dst[2 * i + 1] = a; rev[2 * i + 1] = 2 * i;
}

/* Relay `me` applies version `v` (from link `from`, or E for its own) and floods it. */
inline apply(me, v, from) {
  held[me] = v;
  applied[me * (MAXV + 1) + v]++;
  assert(applied[me * (MAXV + 1) + v] == 1);   /* loop freedom */
  for (f : 0 .. E - 1) {
    if
    :: src[f] == me && (from == E || f != rev[from]) ->
       assert(nfull(link[f]));
       link[f] ! UPD, v
    :: else -> skip
    fi
  }
}

/* Takes any message of link e (reordering): sets t and v. */
#define TAKE(T, K) :: link[e] ?? T, eval(K) -> t = T; v = K

proctype Origin() {
  byte i, f;
  for (i : 1 .. MAXV) {
    atomic { apply(0, i, E) }
  }
}

/* The receiving end of directed link e (relay dst[e]), and the faults of that link. */
proctype Link(byte e) {
  mtype t;
  byte v, f, me = dst[e];
end:
  do
  :: atomic {
       if
       TAKE(UPD, 1) TAKE(UPD, 2)
       TAKE(DIG, 0) TAKE(DIG, 1) TAKE(DIG, 2)
       fi;
       if
       :: t == UPD && v > held[me] -> apply(me, v, e)
#ifdef MUTANT_FORWARD_OLD
       :: t == UPD && v <= held[me] ->               /* wrong: passes on what it drops */
          for (f : 0 .. E - 1) {
            if
            :: src[f] == me && f != rev[e] -> assert(nfull(link[f])); link[f] ! UPD, v
            :: else -> skip
            fi
          }
#else
       :: t == UPD && v <= held[me] -> skip          /* not newer: dropped, not forwarded */
#endif
#ifndef MUTANT_NO_CATCHUP
       :: t == DIG && held[me] > v ->                 /* catch-up: send what the peer lacks */
          assert(nfull(link[rev[e]]));
          link[rev[e]] ! UPD, held[me]
       :: t == DIG && held[me] <= v -> skip
#else
       :: t == DIG -> skip                            /* wrong: digests ignored */
#endif
       fi;
       t = 0; v = 0
     }
  :: atomic {                                     /* duplication */
       ndup < MAXDUP && len(link[e]) > 0 && len(link[e]) < CAP ->
       ndup++;
       if
       TAKE(UPD, 1) TAKE(UPD, 2)
       TAKE(DIG, 0) TAKE(DIG, 1) TAKE(DIG, 2)
       fi;
       link[e] ! t, v; link[e] ! t, v;
       t = 0; v = 0
     }
  :: atomic {                                     /* loss: the link resets */
       nreset < MAXRESET && e % 2 == 0 && built ->
       nreset++;
       do :: link[e] ? t, v :: empty(link[e]) -> break od;
       do :: link[rev[e]] ? t, v :: empty(link[rev[e]]) -> break od;
       link[e] ! DIG, held[src[e]];                  /* each end sends its digest */
       link[rev[e]] ! DIG, held[me];
       t = 0; v = 0
     }
  od
}

init {
  byte e;
  atomic {
    edge(0, 0, 1); edge(1, 1, 2); edge(2, 1, 3); edge(3, 2, 3);
    for (e : 0 .. E - 1) { run Link(e) }
    run Origin();
    built = true
  }
  /* Convergence: once nothing can move, every relay holds the newest version. */
  timeout -> assert(converged)
}

ltl eventually_converged { <>[] converged }
