"""The live gauge's question offline, and the live truth's own repeatability beside it.

`compression_selector_accuracy` (the shadow evaluator, `shadow.py`) scores the selector's pick against one
first-pass oracle measurement of the request (one or two short timing turns per option, a miss timed again
before it counts). This tool asks that question of N items of `dwcp up`'s own request mix (`load.items`, a
seed's payload pool, links and chunks, each parsed as the service parses it), all in process:

- the gauge: every item offered to a `ShadowEvaluator` built as the service builds it (the service's model,
  the host's calibration, the selector's choice for an item whose chunk is larger than its sample), as if
  the shadow fraction were 1;
- the oracle's own repeatability on the same question: a second, independent evaluator (its own pilot
  reading, its own measurement of every item) makes the oracle's pick, the fastest option on *its*
  measurement, and that pick is scored against the first evaluator's measurement exactly as the gauge
  scores the selector's (miss confirmation included). The reverse (the first pass's pick against the
  second) is printed too. The two measurements of an item are taken back to back, in alternating order;
- careful re-measures: every miss (selector's or oracle's) is measured again `--careful` times with the
  benchmark oracle's turns (`min_total` 10 ms) and counted `overturned` when most of them find it near-best.

The issue's rule: where the oracle's own repeatability is below the 0.995 target, both figures are reported
side by side. Per family and sample-size bucket too.

    PYTHONPATH=src .venv/bin/python benchmarks/compression_live.py 600 30 --calibration CAL.json [--json-out F]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from dwcp.compression import load, oracle, selector
from dwcp.compression.codecs import OPTIONS
from dwcp.compression.model import Model
from dwcp.compression.selector import Request
from dwcp.compression.shadow import PILOT_DRIFT, Job, ShadowEvaluator

CAREFUL_SECONDS = 0.01  # the benchmark oracle's turns (session 8's pool truth), for the careful re-measures
SAMPLE_BUCKETS = (
    (1 << 10, "<1 KiB"),
    (4 << 10, "1-4 KiB"),
    (16 << 10, "4-16 KiB"),
    (64 << 10, "16-64 KiB"),
    (math.inf, "64 KiB"),
)


def sample_bucket(n: int) -> str:
    return next(name for edge, name in SAMPLE_BUCKETS if n < edge)


def evaluator(pilot: float, choose, pilot_drift: float = PILOT_DRIFT) -> ShadowEvaluator:
    """The service's evaluator (its timing turns, pilot cadence and canary check), offered every item."""
    return ShadowEvaluator(
        fraction=1.0, window=1 << 30, max_per_second=1e9, pilot=pilot, choose=choose, pilot_drift=pilot_drift
    )


class Pass:
    """One evaluator's first-pass measurements, with the CPU each took and every pilot reading it used."""

    def __init__(self, ev: ShadowEvaluator, start: float) -> None:
        self.ev, self.start = ev, start
        self.cpu: list[float] = []
        self.pilots: list[tuple[float, float]] = []  # (seconds since the run started, MB/s) of each new reading

    def truth(self, r: Request) -> tuple[oracle.Measurement, np.ndarray]:
        cpu = time.thread_time()
        m, t = self.ev.truth(r)
        self.cpu.append(time.thread_time() - cpu)
        if not self.pilots or self.pilots[-1][1] != round(self.ev.host_pilot / 1e6, 1):
            self.pilots.append((round(time.monotonic() - self.start, 1), round(self.ev.host_pilot / 1e6, 1)))
        return m, t

    def figures(self) -> dict:
        return {
            "evaluations": len(self.cpu),
            "cpu_ms_per_evaluation": 1e3 * float(np.mean(self.cpu)),
            "repiloted": self.ev.repiloted,
            "pilot_readings_mbps": self.pilots,
        }


def careful(r: Request, chosen: int, pilot: float, times: int) -> int:
    """How many of `times` careful measurements of `r` find `chosen` near-best."""
    hits = 0
    for _ in range(times):
        m = oracle.measure(r.sample, min_total=CAREFUL_SECONDS, chunk=r.chunk).at_speed(pilot)
        hits += oracle.score(chosen, oracle.times(m, r.size_bytes, r.link, r.chunk_bytes)).near_best
    return hits


def summary(rows: list[dict], key: str) -> dict:
    """Near-best, exact-best, mean regret of the scores under `key`, with the misses' careful verdicts."""
    if not rows:
        return {"n": 0}
    scores = [r[key] for r in rows]
    misses = [r for r in rows if not r[key]["near_best"]]
    return {
        "n": len(rows),
        "accuracy": float(np.mean([s["near_best"] for s in scores])),
        "exact_best": float(np.mean([s["exact_best"] for s in scores])),
        "mean_regret": float(np.mean([s["regret"] for s in scores])),
        "first_pass_misses": int(sum(r[key]["confirmed"] for r in rows)),
        "misses": len(misses),
        "overturned_by_careful": int(sum(r[key].get("careful_overturned", False) for r in misses)),
    }


def run(args: argparse.Namespace) -> dict:
    cal_path = Path(args.calibration)
    loaded = selector.load(args.model, cal_path)
    if loaded.warning:
        print(f"warning: {loaded.warning}", file=sys.stderr)
    sel = loaded.selector
    pilot = sel.calibration.pilot
    # Each evaluator chooses with a selector of its own, as the service's shadow does (an Extractor per thread).
    own_a, own_b = (selector.Selector(sel.model, sel.calibration) for _ in range(2))
    a = evaluator(pilot, lambda r: own_a.choose([r])[0].index, args.pilot_drift)
    b = evaluator(pilot, lambda r: own_b.choose([r])[0].index, args.pilot_drift)
    # Another artifact judged against the same first pass as the gauge's (paired: same items, same truth).
    other = selector.Selector(Model.load(args.compare), sel.calibration) if args.compare else None
    items = load.items(args.seed, args.n)
    rows: list[dict] = []
    cpu0, wall0 = time.process_time(), time.monotonic()
    pass_a, pass_b = Pass(a, wall0), Pass(b, wall0)
    questions = [(i, *a.question(Job(request, sel.choose([request])[0].index))) for i, request in items]
    # --apart: the second pass measures every item before the first pass starts (minutes apart, not seconds).
    early = [pass_b.truth(r) for _, r, _, _ in questions] if args.apart else None
    for k, (i, r, chosen, rescoped) in enumerate(questions):
        if early is not None:
            (ma, ta), (mb, tb) = pass_a.truth(r), early[k]
        elif k % 2 == 0:  # alternate which pass is timed first: neither is always the colder one
            (ma, ta), (mb, tb) = pass_a.truth(r), pass_b.truth(r)
        else:
            (mb, tb), (ma, ta) = pass_b.truth(r), pass_a.truth(r)
        pick_a, pick_b = int(ta.argmin()), int(tb.argmin())
        row = {
            "item": k,
            "pool_index": i,
            "family": load.pool_family(i),
            "sample_bytes": len(r.sample),
            "size_bytes": r.size_bytes,
            "chunk_bytes": r.chunk_bytes,
            "rescoped": rescoped,
            "link": [r.link.bandwidth_mbps, r.link.rtt_ms, r.link.loss_rate],
            "chosen": OPTIONS[chosen].key,
            "pick_a": OPTIONS[pick_a].key,
            "pick_b": OPTIONS[pick_b].key,
        }
        judged = [
            ("gauge", a, chosen, ma, ta),
            ("oracle_b_on_a", a, pick_b, ma, ta),
            ("oracle_a_on_b", b, pick_a, mb, tb),
        ]
        if other is not None:
            row["compare_chosen"] = OPTIONS[other.choose([r])[0].index].key
            judged.append(("compare", a, other.choose([r])[0].index, ma, ta))
        for key, ev, pick, m, t in judged:
            s, confirmed = ev.judge(r, pick, m, t)
            row[key] = {
                "near_best": bool(s.near_best),
                "exact_best": bool(s.exact_best),
                "regret": s.regret,
                "confirmed": confirmed,
            }
            if not s.near_best and args.careful:
                hits = careful(r, pick, pilot, args.careful)
                row[key] |= {"careful_near_best": hits, "careful_overturned": 2 * hits > args.careful}
        rows.append(row)
        if args.progress and (k + 1) % args.progress == 0:
            print(f"{k + 1}/{len(items)} ({time.monotonic() - wall0:.0f} s)", file=sys.stderr, flush=True)
    keys = ("gauge", "oracle_b_on_a", "oracle_a_on_b") + (("compare",) if other is not None else ())
    out = {
        "n": args.n,
        "seed": args.seed,
        "model": sel.version,
        "compare": other.version if other is not None else None,
        "apart": bool(args.apart),
        "calibration": str(cal_path),
        "calibration_pilot_bps": pilot,
        "cpu_s": time.process_time() - cpu0,
        "wall_s": time.monotonic() - wall0,
        "rescoped": int(sum(r["rescoped"] for r in rows)),
        "pilot_drift": args.pilot_drift,
        "pilot_readings_bps": {"a": a.host_pilot, "b": b.host_pilot},
        "passes": {"a": pass_a.figures(), "b": pass_b.figures()},
        "overall": {key: summary(rows, key) for key in keys},
        "by_family": {},
        "by_sample_bytes": {},
        "by_rescoped": {},
    }
    for field, group in (
        ("by_family", lambda r: r["family"]),
        ("by_sample_bytes", lambda r: sample_bucket(r["sample_bytes"])),
        ("by_rescoped", lambda r: "rescoped" if r["rescoped"] else "direct"),
    ):
        groups = defaultdict(list)
        for row in rows:
            groups[group(row)].append(row)
        order = [name for _, name in SAMPLE_BUCKETS if name in groups] if field == "by_sample_bytes" else sorted(groups)
        out[field] = {g: {key: summary(groups[g], key) for key in keys} for g in order}
    out["misses"] = [r for r in rows if not all(r[key]["near_best"] for key in keys)]
    # Every item's near-best per key, in item order: the paired comparisons (bootstrap) read these.
    out["near_best"] = {key: [int(r[key]["near_best"]) for r in rows] for key in keys}
    return out


def report(out: dict) -> None:
    print(
        f"model {out['model']}, seed {out['seed']}, {out['n']} items ({out['rescoped']} rescoped to the sample's "
        f"size), {out['cpu_s']:.0f} CPU-s, {out['wall_s']:.0f} s"
    )
    names = {
        "gauge": "selector vs pass A (the live gauge)",
        "oracle_b_on_a": "pass B's pick vs pass A (oracle)",
        "oracle_a_on_b": "pass A's pick vs pass B (oracle)",
        "compare": f"{out['compare']} vs pass A",
    }
    for name, p in out["passes"].items():
        readings = " ".join(f"{t:.0f}s:{v:.0f}" for t, v in p["pilot_readings_mbps"])
        print(
            f"  pass {name.upper()}: {p['cpu_ms_per_evaluation']:.1f} CPU-ms per evaluation, repiloted "
            f"{p['repiloted']} of {p['evaluations']} (pilot_drift {out['pilot_drift']}); pilot readings MB/s {readings}"
        )
    for key, name in names.items():
        if key not in out["overall"]:
            continue
        s = out["overall"][key]
        print(
            f"  {name:38s} near-best {s['accuracy']:.4f}  exact {s['exact_best']:.4f}  regret "
            f"{s['mean_regret']:.4f}  misses {s['misses']} (first-pass {s['first_pass_misses']}, overturned by "
            f"careful re-measures {s['overturned_by_careful']})"
        )
    for field in ("by_family", "by_sample_bytes", "by_rescoped"):
        print(f"  {field}: group  n  near-best of: " + ", ".join(k for k in out["overall"]))
        for g, s in out[field].items():
            print(f"    {g:14s} {s['gauge']['n']:4d}  " + "  ".join(f"{s[k]['accuracy']:.4f}" for k in s))


def parser() -> argparse.ArgumentParser:
    """The tool's command line (main's, and the tests' way to build its arguments as a user would)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("n", type=int, help="items of the mix to evaluate")
    p.add_argument("seed", type=int, help="the mix's seed (payload pool and items); report only seeds never tuned on")
    p.add_argument("--calibration", required=True, help="the host's calibration (run and stored here when missing)")
    p.add_argument("--model", type=Path, help="the artifact (default: the shipped one)")
    p.add_argument("--compare", type=Path, help="another artifact, judged against the same first pass as the gauge")
    p.add_argument("--apart", action="store_true", help="the second pass measures every item before the first starts")
    p.add_argument(
        "--pilot-drift",
        type=float,
        default=PILOT_DRIFT,
        help="the evaluators' canary threshold (inf: no canary, the evaluator before 2026-12-06)",
    )
    p.add_argument("--careful", type=int, default=3, help="careful re-measures per miss (0: none)")
    p.add_argument("--progress", type=int, default=100, help="a progress line every this many items (0: none)")
    p.add_argument("--json-out", help="write the figures (and every miss) as JSON here")
    return p


def main() -> int:
    args = parser().parse_args()
    out = run(args)
    report(out)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
