"""PBFT vs T-PBFT in the deterministic simulator: a seeded campaign, both cores on the same runs.

Seed baseline: "T-PBFT latency: <60ms". Target (issue): n=10 with 3 Byzantine nodes of varied
behaviour over WAN regions, zero invariant violations over >= 10,000 seeded runs, and T-PBFT beside
PBFT (view changes, messages per block, latency) in the same runs.

Run k (seed first_seed + k) draws its 3 Byzantine nodes and their behaviours (silent, equivocate,
twins, invalid-signature, garbage) from the seed and runs *both* cores on that scenario with the same
client load, so the ratio column compares the protocols run by run. Latency is simulated time from
submit to commit at the node the tx was handed to; the WAN default spreads the 10 nodes over
us-east-1, eu-west-1, us-west-2 and ap-northeast-1 (public inter-region RTTs, 67-200 ms), so it
cannot be compared with the seed's 60 ms, which was a single-site figure: the `lan` section runs
the same campaign in one region (1 ms RTT) for that comparison.

    .venv/bin/python benchmarks/consensus_sim.py                          # 10,000 runs, 2 workers
    .venv/bin/python benchmarks/consensus_sim.py --runs 200 --lan-runs 50  # a quick look
    nice -n 10 .venv/bin/python benchmarks/consensus_sim.py --time-limit 2000 --json-out campaign.json

Each run offers 10 tx/s for 3 simulated seconds, then drains (until every due tx commits, at most
20 s): about 0.2 CPU-s per seed for both cores, so 10^4 seeds take ~35 CPU-minutes.

Measured 2026-12-04 20:05-21:04 UTC (commit 91ddb74: lazy vote verification, the simulator on the driver's
catch-up planner, T-PBFT's measurement epoch, standby voting and incumbent primary), `--runs 10000 --lan-runs 200
--workers 2 --time-limit 3800` at nice 10 on the 2-core VM at load ~20 (other sessions' campaigns): 1,716 WAN
seeds x 2 cores done in the time limit, 0 runs with violations for either core; LAN 200 seeds, 0 violations.
Runs of 3 s stay in T-PBFT's measurement epoch (epoch 0: the whole committee votes), so both cores match:
medians PBFT / T-PBFT p50 0.231 / 0.234 s, messages per block 191 / 193, view changes 643 / 643 in total.
T-PBFT's own claims need runs over several epochs (docs/tpbft.md, "Measured"): `--epoch-length 16 --duration 8`.

A fault trust can learn from (session 11; docs/tpbft.md "Session 11: a fault model trust can learn"):
`--behaviour intermittent` makes the faulty nodes honest cores on flaky hosts or links (down 0.3-1.5 s every
1-4 s, crash/restart or both-way link loss, all run long); `intermittent,mixed,mixed` deals one of them and two
mixed Byzantine nodes. Never drawn by "mixed", so existing seeds are unchanged. `--rows-out` writes every run's
figures (one JSON line per run and protocol) for same-run comparisons. Measured 2026-12-05 22:48-00:25 UTC,
`--runs 100 --lan-runs 0 --workers 1 --seed S --epoch-length 16 --duration 8` per chunk at nice 19 (~0.64 CPU-s
per seed for both cores), PBFT / T-PBFT:
- 3 intermittent, seeds 0-2999: 0 runs with violations; view changes 1101 / 1246; messages per block 193.1 / 162.6
  pooled (same-run median 0.842); p50 same-run median 1.086, p99 1.718.
- intermittent,mixed,mixed, seeds 0-2999: 0 violations; view changes 1148 / 1096; messages 187.6 / 152.5 (0.816);
  p50 1.063, p99 1.249.
- n = 31 with 10 intermittent (`--nodes 31 --byzantine 10`), seeds 0-24: 0 violations; view changes 11 / 11;
  messages 1908 / 1629 (0.844); p50 1.131.
At `--duration 24` T-PBFT's p50 gap grows (3 mixed, 30 seeds: 1.164, against 1.053 at 8 s), since 8 s runs are
~20% epoch 0, where the whole committee votes.

Session 12 (T-PBFT's `fresh_incumbent`, main 476fdd7; docs/tpbft.md "Session 12"): `--protocols tpbft` (PBFT,
core and simulator unchanged) per chunk of 100 seeds, `--epoch-length 16 --duration 8`, 02:38-03:16 UTC, nice 19:
3 mixed seeds 0-3899 and 5000-8899 (7,800 runs) and 3 intermittent seeds 0-2999 (3,000 runs), 0 runs with
violations; view changes 3045 and 1121; messages per block 154.3 and 162.8 pooled.

Measured 2026-12-04 22:47-23:24 UTC on main 1c9aa48 (T-PBFT's sticky standby widening; b421aee's view-change
timeouts), `nice -n 10 ... --runs 10000 --lan-runs 200 --workers 1 --time-limit 2100` beside other sessions'
work (load ~20): 1,244 WAN seeds x 2 cores in the limit (1,890 s wall), 0 runs with violations for either core;
LAN 200 seeds, 0 violations. Medians PBFT / T-PBFT p50 0.231 / 0.234 s, messages per block 191 / 194 (3 s runs
stay in T-PBFT's measurement epoch). Seeds run with 0 violations over this and the earlier campaigns on main
since the lazy-verification changes: 5,305 + 1,244 WAN and 400 LAN per core; the 10,000 are still not reached
in one sitting on this machine.

Measured 2026-12-05 01:53-02:35 UTC on main 7835380 (issue 12 session 3; docs/tpbft.md "Campaign on the code
of 2026-12-05"), `--runs 100 --lan-runs 0 --workers 1 --seed S --epoch-length 16 --duration 8` per chunk of
100 seeds at nice 10, load ~17-24: 4,100 WAN seeds x 2 cores, 0 runs with violations; pooled messages per
block 185.8 / 153.2 (same-run median 0.823), view changes 1539 / 1550, p50 same-run median 1.056; ~0.36 CPU-s
per seed for both cores (8 s runs). Earlier that night on a53daed: 1,100 seeds, 0 violations.

Measured 2026-11-25 22:21-22:38 UTC (commit 9649db2: client txs forwarded to the primary, request timeout in
halves, adaptive batching; `--runs 10000 --lan-runs 200 --workers 2`, nice 19 on the shared 2-core VM):
10,000 WAN seeds x 2 cores in 972 s wall, 0 runs with violations for either core. Medians over runs,
PBFT / T-PBFT: latency p50 0.231 / 0.351 s (same-run ratio 1.36), p99 0.365 / 1.426 s, messages per
block 191 / 215, view changes per run 0 / 1. LAN (200 seeds): p50 0.002 s for both (seed: < 0.060 s).
The previous protocol code (commit f062d37, same command): p50 0.234 / 0.349 s, p99 0.367 / 1.420 s,
messages per block 200 / 228, LAN p50 0.005 s, 0 violations.

Measured 2026-12-04 20:01-21:11 UTC on commit c941b85 (the NEW-VIEW by digest, pbft/newview.py; T-PBFT as
before its standby voting), `nice -n 10 ... --runs 10000 --lan-runs 200 --workers 2 --time-limit 4200` on
the shared VM at load average ~20: the limit stopped the WAN campaign at 2,520 seeds x 2 cores (3,780 s
wall, ~490 CPU-s for the whole run from /proc: ~0.09 CPU-s per seed and core); 0 runs with violations for
either core, WAN and LAN. Medians PBFT / T-PBFT: p50 0.231 / 0.349 s, p99 0.364 / 1.431 s, messages per
block 191 / 216, view changes per run 0 / 1; LAN (200 seeds) p50 0.002 s for both.
Continued 21:07-21:20 UTC on the landed code (cf244ad: also T-PBFT's standby voting and measurement epoch),
`--seed 2520 --runs 7480 --lan-runs 0 --workers 1 --time-limit 840`: seeds 2,520-5,304 (2,785 x 2 cores,
756 s wall, ~441 CPU-s), 0 runs with violations; medians PBFT / T-PBFT p50 0.231 / 0.232 s (T-PBFT's
first epoch is a whole-committee measurement epoch, longer than these 3 s runs), messages per block
191 / 193. In all: 5,305 WAN seeds and 200 LAN seeds per core with 0 violations; the 10,000 were not
reached inside the time limits on the loaded VM.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from dwcp.consensus import registry
from dwcp.consensus.sim.campaign import Campaign, CampaignSpec, run_campaign
from dwcp.consensus.sim.report import RunResult, percentile, totals

SEED_BASELINE_S = 0.060
DEFAULT_PROTOCOLS = ("pbft", "tpbft")  # compared run by run; any registered protocols via --protocols
METRICS: tuple[tuple[str, str, str], ...] = (  # (RunResult field, label, format)
    ("latency_p50_s", "latency p50 (s)", ".3f"),
    ("latency_p99_s", "latency p99 (s)", ".3f"),
    ("throughput_tx_per_s", "committed tx/s", ".1f"),
    ("committed_blocks", "blocks per run", ".0f"),
    ("messages_per_block", "messages/block", ".0f"),
    ("bytes_per_block", "bytes/block", ".0f"),
    ("view_changes", "view changes per run", ".1f"),
)


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def summarize(campaign: Campaign) -> dict[str, Any]:
    """Per protocol: pooled totals, and median / p99 over runs of each metric; same-run ratios of
    every other protocol over the first (the baseline)."""
    protocols = campaign.spec.protocols
    out: dict[str, Any] = {"runs": campaign.runs, "complete": campaign.complete, "wall_s": campaign.wall_s}
    by_seed: dict[str, dict[int, RunResult]] = {}
    for protocol, results in campaign.results.items():
        by_seed[protocol] = {r.seed: r for r in results}
        per_run = {field: [float(getattr(r, field)) for r in results] for field, _, _ in METRICS}
        out[protocol] = {
            "totals": totals(results),
            "median": {f: statistics.median(v) if v else 0.0 for f, v in per_run.items()},
            "p99": {f: percentile(v, 99) for f, v in per_run.items()},
            "violation_examples": [f"seed {r.seed}: {d}" for r in results for d in r.violation_details][:10],
        }
    base = protocols[0]
    for other in protocols[1:]:
        seeds = sorted(set(by_seed[base]) & set(by_seed[other]))
        ratios_out = out[f"ratio_{other}_over_{base}"] = {}
        for field, _, _ in METRICS:
            ratios = [x for s in seeds if (x := _ratio(float(getattr(by_seed[other][s], field)),
                                                       float(getattr(by_seed[base][s], field)))) is not None]
            ratios_out[field] = statistics.median(ratios) if ratios else None
    return out


def render(title: str, summary: dict[str, Any], protocols: tuple[str, ...], console: Console) -> None:
    table = Table(title=f"{title}: {summary['runs']} seeded runs per protocol"
                        f"{'' if summary['complete'] else ' (stopped early by --time-limit)'}")
    base, others = protocols[0], protocols[1:]
    table.add_column("metric")
    for p in protocols:
        table.add_column(f"{p} median", justify="right")
        table.add_column(f"{p} p99", justify="right")
    for p in others:
        table.add_column(f"{p}/{base} (same runs, median)", justify="right")
    table.add_column("seed baseline", justify="right")
    for field, label, fmt in METRICS:
        cells = [label]
        for p in protocols:
            cells += [format(summary[p]["median"][field], fmt), format(summary[p]["p99"][field], fmt)]
        for p in others:
            ratio = summary[f"ratio_{p}_over_{base}"][field]
            cells.append("-" if ratio is None else f"{ratio:.2f}")
        cells.append(f"T-PBFT < {SEED_BASELINE_S:.3f}" if field == "latency_p50_s" else "")
        table.add_row(*cells)
    pooled = ["all txs pooled: p50 / p99 (s)"]
    for p in protocols:
        t = summary[p]["totals"]
        pooled += [f"{t['latency_p50_s']:.3f}", f"{t['latency_p99_s']:.3f}"]
    table.add_row(*pooled, *[""] * len(others), "")
    bad = ["runs with violations"]
    for p in protocols:
        t = summary[p]["totals"]
        bad += [str(t["runs_with_violations"]), ", ".join(f"{k}={v}" for k, v in t["violations"].items() if v)]
    table.add_row(*bad, *[""] * len(others), "0 (target)")
    console.print(table)
    for p in protocols:
        for example in summary[p]["violation_examples"]:
            console.print(f"[red]{p}[/red] {example}")


def _protocols(text: str) -> tuple[str, ...]:
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = [p for p in names if p not in registry.PROTOCOLS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown protocol(s) {', '.join(unknown)}; known: "
                                         f"{', '.join(registry.names())}")
    return names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--protocols", type=_protocols, default=DEFAULT_PROTOCOLS,
                    help="registered protocols, comma-separated; the first is the baseline of the ratios")
    ap.add_argument("--runs", type=int, default=10_000, help="seeded WAN runs (each runs every protocol)")
    ap.add_argument("--lan-runs", type=int, default=200, help="seeded single-region runs, for the seed baseline")
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--byzantine", type=int, default=3)
    ap.add_argument("--behaviour", default="mixed")
    ap.add_argument("--regions", default="4")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--duration", type=float, default=3.0, help="simulated seconds of load per run")
    ap.add_argument("--rate", type=float, default=10.0, help="offered tx/s per run")
    ap.add_argument("--chaos", action="store_true", help="also partitions and crash/restarts")
    ap.add_argument("--epoch-length", type=int, default=0, help="blocks per epoch for cores with epochs (T-PBFT); "
                    "0: the core's default")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--time-limit", type=float, default=None, help="wall seconds; stop starting runs after")
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument("--rows-out", type=Path, default=None, help="also every run's figures, one JSON line per run "
                    "and protocol (for same-run comparisons of view changes and latency)")
    args = ap.parse_args(argv)
    console = Console(width=170)
    spec_args = {"protocols": args.protocols, "nodes": args.nodes, "byzantine": args.byzantine,
                 "behaviour": args.behaviour, "chaos": args.chaos,
                 "scenario_kwargs": {"duration": args.duration, "rate": args.rate,
                                     "epoch_length": args.epoch_length}}
    sections = [("WAN " + args.regions, CampaignSpec(regions=args.regions, first_seed=args.seed, runs=args.runs,
                                                      **spec_args))]
    if args.lan_runs:
        sections.append(("LAN (one region)", CampaignSpec(regions="lan", first_seed=args.seed,
                                                          runs=args.lan_runs, **spec_args)))
    report: dict[str, Any] = {"args": vars(args) | {"json_out": str(args.json_out), "rows_out": str(args.rows_out)}}
    rows: list[dict[str, Any]] = []
    ok = True
    shares = (0.9, 1.0)  # with --time-limit the WAN campaign may use 90% of it; the LAN one the rest
    spent = 0.0
    for (title, spec), share in zip(sections, shares, strict=False):
        limit = None if args.time_limit is None else args.time_limit * share - spent
        if limit is not None and limit <= 0:
            break
        campaign = run_campaign(spec, workers=args.workers, time_limit=limit)
        spent += campaign.wall_s
        summary = summarize(campaign)
        render(title, summary, args.protocols, console)
        console.print(f"{title}: {campaign.runs} runs x {len(args.protocols)} protocols "
                      f"in {campaign.wall_s:.0f} s wall")
        report[title] = summary
        rows += [{"section": title} | r.row() for rs in campaign.results.values() for r in rs]
        ok = ok and campaign.ok
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2))
    if args.rows_out:
        args.rows_out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
