"""The "Convergence against REV" section of bench/run --baseline REV.

compare.py --base RAW.tsv --current RAW.tsv --rev REV --reps N --sections "control kube spokes" --out FILE
Both RAW files are bench/run's raw samples (key<TAB>variant<TAB>value) of the same run: the baseline build's rounds and
this tree's, interleaved per repetition. Writes a Markdown fragment (one section) that bench/lib/report.py puts into the
report: every convergence figure of sections control, kube and spokes for both builds, side by side, with the ratio
this tree / baseline (below 1: this tree is faster).
"""
import argparse
import collections
import statistics

from figures import num, pct

p = argparse.ArgumentParser()
p.add_argument("--base", required=True)
p.add_argument("--current", required=True)
p.add_argument("--rev", required=True)
p.add_argument("--reps", type=int, required=True)
p.add_argument("--sections", required=True)
p.add_argument("--flags-note", default="")
p.add_argument("--out", required=True)
a = p.parse_args()
sections = a.sections.split()


def load(path):
    s = collections.defaultdict(list)
    for line in open(path):
        parts = line.rstrip("\n").split("\t")
        if len(parts) != 3 or parts[2] == "":
            continue
        try:
            s[(parts[0], parts[1])].append(float(parts[2]))
        except ValueError:
            pass
    return s


B, C = load(a.base), load(a.current)


def ratio(c, b):
    return "–" if c is None or not b else f"{c / b:.2f}×"


out = []
w = out.append


def runs_row(label, key, variant, q):
    """Pooled convergence runs (every round's runs together): percentile q of each build."""
    b, c = B.get((key, variant), []), C.get((key, variant), [])
    bt, ct = len(B.get((f"{key}_timeout", variant), [])), len(C.get((f"{key}_timeout", variant), []))
    pb, pc = pct(b, q), pct(c, q)
    w(f"| {label}, p{q} | {len(b)} / {len(c)} | {num(pb)} ms | {num(pc)} ms | {ratio(pc, pb)} | {bt} / {ct} |")


def reps_row(label, key, variant, unit, digits=None):
    """One sample per round: median (min–max) of each build."""
    b, c = B.get((key, variant), []), C.get((key, variant), [])

    def cell(v):
        if not v:
            return "–"
        if len(v) == 1:
            return f"{num(v[0], digits)} {unit}"
        return f"**{num(statistics.median(v), digits)}** ({num(min(v), digits)}–{num(max(v), digits)}) {unit}"

    mb = statistics.median(b) if b else None
    mc = statistics.median(c) if c else None
    w(f"| {label} | {len(b)} / {len(c)} | {cell(b)} | {cell(c)} | {ratio(mc, mb)} | |")


w(f"## Convergence against {a.rev}")
w("")
w(f"The same sections run for two builds in one run: the baseline **{a.rev}** (its wormhole-server and wormhole-client, "
  "built from a `git worktree` of that commit the way this tree's are) and this tree, interleaved per repetition "
  f"(baseline, this tree, baseline, this tree, …; {a.reps} repetitions each), so both share the machine's conditions. "
  "Each round starts from nothing (new namespaces, new state directories, a new pairing). The harnesses "
  "(`bench/SpokeSim`, the API emulator) and the measuring scripts are this tree's for both builds. The convergence "
  "toggles spread their runs over the repetitions, so each build gets about as many runs as the tables above (runs "
  "column: baseline / this tree; with about 50 runs p99 is the slowest run, nearest rank). Every other figure is "
  "**median** (min–max) over the repetitions. *Ratio*: this tree / baseline of the p50, p99 or median; below 1.00× "
  "this tree is faster.")
if a.flags_note:
    w("")
    w(a.flags_note)
w("")
w(f"| figure | runs or reps | baseline {a.rev} | this tree | ratio | timeouts (15 s) |")
w("|---|---|---|---|---|---|")
if "control" in sections:
    for d, label in [("spoke-to-hub", "spoke's apps file → hub"), ("hub-to-spoke", "hub's apps file → spoke")]:
        for k in ("expose", "unexpose"):
            for q in (50, 99):
                runs_row(f"apps file, {k} ({label})", f"cp.{k}", d, q)
    reps_row("1,000 apps into the spoke's apps file → listed on the hub", "bulk.bulk_expose", "1000", "ms")
    reps_row("… removed → none listed", "bulk.bulk_withdraw", "1000", "ms")
    for n in ("1000", "10000"):
        reps_row(f"one sync of {int(n):,} apps: POST round trip", "sync.post_ms", n, "ms")
        reps_row(f"one sync of {int(n):,} apps: until listed on the hub", "sync.exposed_ms", n, "ms")
if "kube" in sections:
    for t, tl in [("patch", "PATCH"), ("kubectl", "`kubectl annotate`")]:
        for k in ("expose", "unexpose"):
            for q in (50, 99):
                runs_row(f"Kubernetes, {tl}, {k}", f"kube.{k}", t, q)
if "spokes" in sections:
    reps_row("250 spokes: pairing one after another", "s250.pair_total_s", "sim", "s")
    reps_row("250 spokes: first sync of all → hub lists all apps", "s250.initial_s", "sim", "s", 2)
    reps_row("sync latency hub → every spoke, p50 over spokes", "s250.h2s_p50_ms", "sim", "ms")
    reps_row("… p99 over spokes", "s250.h2s_p99_ms", "sim", "ms")
    reps_row("… the last spoke", "s250.h2s_max_ms", "sim", "ms")
    reps_row("… hub CPU time for that fan-out", "s250.h2s_cpu_ms", "sim", "ms")
    reps_row("sync latency one spoke → hub", "s250.s2h_one_ms", "sim", "ms")
    reps_row("all spokes change at once → hub lists all new apps", "s250.s2h_all_ms", "sim", "ms")
    reps_row("… hub CPU time for that burst", "s250.burst_cpu_ms", "sim", "ms")
    reps_row("hub CPU, idle with every long-poll open", "s250.idle_cpu_pct", "sim", "% of one core")
w("")
open(a.out, "w").write("\n".join(out) + "\n")
