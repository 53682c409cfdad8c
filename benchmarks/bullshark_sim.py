"""Bullshark in the deterministic simulator: the seed's scale, and HammerHead against round-robin anchors.

`--scale seed` (default): the real primaries over WAN regions with declared 500 KB batches carried by
simulated workers (sim/dataplane.py), per-node uplink and downlink bandwidth, and CPU costs calibrated on
this machine (benchmarks/bullshark_calibrate.py -> benchmarks/bullshark_cpu.json, sim/cpu.py). For each
committee size and fault mode it prints committed tx/s and latency (batch sealed -> committed at its
node) beside the seed's 300,000 tx/s and Narwhal/Bullshark's published figures, with the violations and
the CPU-seconds the simulation took per simulated second; `--json` writes every row.

    .venv/bin/python benchmarks/bullshark_sim.py --nodes 100 --faults none,crashed,byzantine \
        --rate 300000 --tx-size 200 --cores 4 --duration 6 --warmup 2 --json bs_seed.json

`--scale token` is the earlier comparison (in-core worker, a token load): HammerHead leader reputation
against round-robin anchors with `--byzantine` silent nodes.

    .venv/bin/python benchmarks/bullshark_sim.py --scale token --nodes 10 --byzantine 3 --seeds 3 --duration 15

Measured 2026-12-04 (token scale, n = 10, 3 silent, 15 s, 20 tx/s): round-robin 17/17/18 heights, p50
1.25/1.31/1.28 s; HammerHead (period 5) 23/23/22 heights, p50 1.14/1.17/1.20 s; zero violations. The
seed-scale figures are in docs/bullshark.md ("Simulator at the seed's scale").
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from dwcp.consensus.bullshark.primary import Config
from dwcp.consensus.sim import Scenario
from dwcp.consensus.sim.cpu import CpuCosts
from dwcp.consensus.sim.report import percentile
from dwcp.consensus.sim.runner import Simulation

SEED_TPS = 300_000  # the seed guide's Bullshark baseline (> 300K tx/s, all 100 nodes)
PUBLISHED = (
    "published: Narwhal+Bullshark 125,000 tx/s at 2 s (50 parties); 100-node WAN with 33 faulty "
    "214,000 tx/s at 4.8 s (200 B tx); Narwhal-HotStuff 170,000 tx/s at 2.5 s"
)
FAULTS = {  # mode -> (behaviour of the f chosen nodes, or None for a fault-free run)
    "none": None,
    "crashed": "silent",
    "byzantine": "equivocate,withhold",
}


def seed_run(nodes: int, mode: str, seed: int, args: argparse.Namespace, costs: CpuCosts | None) -> dict:
    f = (nodes - 1) // 3
    behaviour = FAULTS[mode]
    sc = Scenario.build(
        "bullshark", nodes=nodes, byzantine=f if behaviour else 0, behaviour=behaviour or "silent", seed=seed,
        regions=args.regions, duration=args.duration, warmup=args.warmup, drain=args.drain, rate=args.rate,
        tx_size=args.tx_size, batch_bytes=args.batch_size, max_batch_delay=args.max_batch_delay,
        bandwidth_mbps=args.bandwidth_mbps, downlink_mbps=args.bandwidth_mbps, cpu=costs,
        cpu_cores=(args.cores, args.cores),
    )
    started = time.process_time()
    sim = Simulation(sc, core_kwargs={"config": Config(schedule_period=args.period)})
    res = sim.run()
    cpu_s = time.process_time() - started
    plane = sim.dataplane
    assert plane is not None
    correct = [i for i in sc.correct if sim.nodes[i].up]
    primary_util = [sim.cpu.utilisation(i, 0, sc.duration) for i in correct] if sim.cpu else []
    worker_util = [sim.cpu.utilisation(i, 1, sc.duration) for i in correct] if sim.cpu else []
    up = len(sc.correct)  # clients of crashed or Byzantine nodes: not counted as offered
    return {
        "nodes": nodes, "faults": mode, "faulty": f if behaviour else 0, "seed": seed,
        "offered_tx_per_s": round(args.rate * up / nodes), "committed_tx_per_s": round(plane.throughput()),
        "goodput_tx_per_s": round(plane.goodput()),
        "throttled_tx": plane.throttled_txs,
        "latency_p50_s": round(percentile(plane.latencies, 50), 3),
        "latency_p99_s": round(percentile(plane.latencies, 99), 3),
        "latency_samples": len(plane.latencies), "heights": res.committed_blocks,
        "violations": sum(res.violations.values()), "violation_details": res.violation_details,
        "batches_sealed": plane.sealed, "batch_fetches": plane.fetches, "rejected": res.rejected,
        "primary_cores_busy_mean": round(statistics.mean(primary_util), 2) if primary_util else None,
        "worker_cores_busy_mean": round(statistics.mean(worker_util), 2) if worker_util else None,
        "events": res.events, "sim_cpu_s": round(cpu_s, 1),
        "sim_cpu_s_per_simulated_s": round(cpu_s / (sc.duration + sim.drained_s), 2),
        "scenario": sc.describe(),
    }


def seed_scale(args: argparse.Namespace) -> dict:
    costs = None if args.cpu == "off" else CpuCosts.load(args.cpu)
    rows = []
    print(f"seed baseline {SEED_TPS:,} tx/s; {PUBLISHED}", flush=True)
    print(f"tx {args.tx_size} B, batch {args.batch_size:,} B, {args.bandwidth_mbps:g} Mbit/s up and down per node, "
          f"{args.cores} core(s) per primary and per worker, CPU costs {args.cpu}", flush=True)
    for nodes in args.nodes:
        for mode in args.faults:
            for seed in range(args.seeds):
                row = seed_run(nodes, mode, seed, args, costs)
                rows.append(row)
                print(f"n={nodes:3d} {mode:9s} seed {seed}: {row['committed_tx_per_s']:>9,} tx/s of "
                      f"{row['offered_tx_per_s']:,} offered (goodput {row['goodput_tx_per_s']:,}), "
                      f"p50 {row['latency_p50_s']:.2f} s, p99 {row['latency_p99_s']:.2f} s, {row['heights']} heights, "
                      f"violations {row['violations']}, "
                      f"primary CPU {row['primary_cores_busy_mean']} cores busy, sim {row['sim_cpu_s']} CPU-s "
                      f"({row['sim_cpu_s_per_simulated_s']} per simulated s)", flush=True)
    summary = []
    for nodes in args.nodes:
        for mode in args.faults:
            group = [r for r in rows if r["nodes"] == nodes and r["faults"] == mode]
            summary.append({
                "nodes": nodes, "faults": mode, "runs": len(group),
                "runs_with_violations": sum(1 for r in group if r["violations"]),
                "committed_tx_per_s_median": statistics.median(r["committed_tx_per_s"] for r in group),
                "committed_tx_per_s_min": min(r["committed_tx_per_s"] for r in group),
                "goodput_tx_per_s_min": min(r["goodput_tx_per_s"] for r in group),
                "latency_p50_s_median": statistics.median(r["latency_p50_s"] for r in group),
                "latency_p99_s_max": max(r["latency_p99_s"] for r in group),
                "sim_cpu_s_per_simulated_s": round(statistics.mean(r["sim_cpu_s_per_simulated_s"] for r in group), 2),
            })
            print("summary " + json.dumps(summary[-1]), flush=True)
    return {"seed_tps": SEED_TPS, "published": PUBLISHED, "args": {k: v for k, v in vars(args).items()
                                                                   if k != "json"}, "rows": rows,
            "summary": summary}


def token_run(nodes: int, byzantine: int, seed: int, duration: float, rate: float, period: int) -> dict:
    sc = Scenario.build("bullshark", nodes=nodes, byzantine=byzantine, behaviour="silent", seed=seed,
                        chaos=False, duration=duration, rate=rate)
    started = time.process_time()
    res = Simulation(sc, core_kwargs={"config": Config(schedule_period=period)}).run()
    return {"seed": seed, "ok": res.ok, "violations": sum(res.violations.values()), "heights": res.committed_blocks,
            "committed_tx": res.committed_tx, "latency_p50_s": res.latency_p50_s,
            "latency_p99_s": res.latency_p99_s, "cpu_s": round(time.process_time() - started, 1)}


def token_scale(args: argparse.Namespace) -> dict:
    out = {}
    for name, period in (("round_robin", 0), ("hammerhead", args.period or 5)):
        rows = [token_run(n, args.byzantine, s, args.duration, args.rate, period)
                for n in args.nodes for s in range(args.seeds)]
        out[name] = rows
        heights = [r["heights"] for r in rows]
        p50, p99 = ([round(r[k], 2) for r in rows] for k in ("latency_p50_s", "latency_p99_s"))
        print(f"{name:11s} heights {heights} (mean {statistics.mean(heights):.1f}), p50 {p50}, p99 {p99}, "
              f"violations {sum(r['violations'] for r in rows)}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=("seed", "token"), default="seed")
    ap.add_argument("--nodes", type=lambda s: [int(x) for x in s.split(",")], default=[100])
    ap.add_argument("--faults", type=lambda s: s.split(","), default=["none"],
                    help=f"seed scale: any of {', '.join(FAULTS)} (f = (n-1)/3 nodes crashed or Byzantine)")
    ap.add_argument("--byzantine", type=int, default=3, help="token scale: silent nodes")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--duration", type=float, default=6.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--drain", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=300_000.0, help="offered client tx/s (the whole cluster)")
    ap.add_argument("--tx-size", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=500_000)
    ap.add_argument("--max-batch-delay", type=float, default=0.1)
    ap.add_argument("--bandwidth-mbps", type=float, default=1000.0, help="per node, uplink and downlink each")
    ap.add_argument("--cores", type=int, default=1, help="cores per primary and per worker")
    ap.add_argument("--cpu", default="benchmarks/bullshark_cpu.json", help="calibration file, or 'off'")
    ap.add_argument("--regions", default="4")
    ap.add_argument("--period", type=int, default=0, help="HammerHead: committed anchors per schedule (0: off)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    out = seed_scale(args) if args.scale == "seed" else token_scale(args)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
