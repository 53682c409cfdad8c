"""MADDPG allocator benchmark: held-out trace evaluation for every policy, then API and inference latency.

    .venv/bin/python benchmarks/maddpg_allocator.py [--traces 6] [--hours 6] [--base-rate 0.04] [--requests 2000]

Held-out traces: Google 2019 and Azure v2 series (training used Alibaba 2018 + synthetic) with seeds
>= 1,000,000 (training seeds are below); the first two are the committed `data/heldout_*.csv` files.
`--base-rate` scales the arrival rate (0.04/s, the training load, keeps the default cluster ~40% busy;
0.08-0.1 runs it hot enough that some workloads miss their SLA under every policy).
The live part starts the real service (uvicorn, 127.0.0.1, a free port, a temporary data directory) and
times allocation requests end to end from an HTTP client.
Prints measured figures beside the seed's baselines and the issue's targets.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dwcp.runtime.ports import free_port


def held_out(n_traces: int, hours: float, base_rate: float) -> list[tuple[str, dict[str, dict]]]:
    from dwcp.allocator.baselines import RoundRobin
    from dwcp.allocator.cluster import default_cluster
    from dwcp.allocator.evaluate import POLICIES, evaluate, make_policy, replay
    from dwcp.allocator.traces import generate
    from dwcp.allocator.train import HELD_OUT_SEED, HELD_OUT_SERIES

    hosts = default_cluster()
    rows = []
    for k in range(n_traces):
        series = HELD_OUT_SERIES[k % len(HELD_OUT_SERIES)]
        tr = generate(series, HELD_OUT_SEED + k, hours, base_rate)
        rr = replay(hosts, tr, RoundRobin())[0]
        rows.append((f"{series}/{HELD_OUT_SEED + k}", {p: evaluate(hosts, tr, make_policy(p), rr) for p in POLICIES}))
    return rows


def print_held_out(rows: list[tuple[str, dict[str, dict]]]) -> dict[str, dict]:
    from dwcp.allocator.evaluate import POLICIES

    print(f"\n== held-out traces ({len(rows)}; cost = powered-on core-hours, lower is better) ==")
    print(f"{'trace':26s}" + "".join(f"{p:>22s}" for p in POLICIES))
    for name, res in rows:
        cells = "".join(f"{res[p]['cost']:9.0f} {res[p]['optimization_vs_round_robin_pct']:5.1f}% "
                        f"{100 * res[p]['sla_compliance']:5.1f}" for p in POLICIES)
        print(f"{name:26s}{cells}")
    print(f"{'':26s}" + "".join(f"{'cost  opt%  sla%':>22s}" for _ in POLICIES))
    summary = {}
    for p in POLICIES:
        summary[p] = {
            "median_cost": statistics.median(r[p]["cost"] for _, r in rows),
            "median_optimization_pct": statistics.median(r[p]["optimization_vs_round_robin_pct"] for _, r in rows),
            "min_sla": min(r[p]["sla_compliance"] for _, r in rows),
            "median_sla": statistics.median(r[p]["sla_compliance"] for _, r in rows),
            "median_decisions_per_s": statistics.median(r[p]["decisions_per_s"] for _, r in rows),
        }
    ratios = [r["maddpg"]["cost"] / r["best-fit"]["cost"] for _, r in rows]
    summary["maddpg_vs_best_fit_cost_ratio"] = {"median": statistics.median(ratios), "max": max(ratios),
                                                "wins": sum(x < 1 for x in ratios), "of": len(ratios)}
    print("\nmedians:")
    for p in POLICIES:
        s = summary[p]
        print(f"  {p:12s} cost {s['median_cost']:8.1f}  optimization {s['median_optimization_pct']:6.2f}%  "
              f"SLA median {100 * s['median_sla']:6.2f}% min {100 * s['min_sla']:6.2f}%  "
              f"{s['median_decisions_per_s']:9.0f} decisions/s")
    r = summary["maddpg_vs_best_fit_cost_ratio"]
    print(f"  MADDPG/best-fit cost ratio (same trace): median {r['median']:.4f}, worst {r['max']:.4f}, "
          f"MADDPG cheaper on {r['wins']}/{r['of']} traces")
    return summary


def inference_p99(n: int) -> dict[str, float]:
    """Time `MaddpgPolicy.choose` alone over decisions from a held-out replay."""
    from dwcp.allocator.cluster import default_cluster
    from dwcp.allocator.policy import MaddpgPolicy
    from dwcp.allocator.sim import Simulator
    from dwcp.allocator.traces import generate

    pol = MaddpgPolicy()
    sim = Simulator(default_cluster(), generate("google2019", 1_000_999, 24.0))
    times, cpu = [], []
    while len(times) < n and (d := sim.next_decision()) is not None:
        t0, c0 = time.perf_counter(), time.thread_time()
        h = pol.choose(sim.state, d)
        times.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)  # CPU time of this thread only: excludes time preempted
        sim.apply(h)
    return {"n": len(times), "p50_ms": 1e3 * float(np.percentile(times, 50)),
            "p99_ms": 1e3 * float(np.percentile(times, 99)), "cpu_p99_ms": 1e3 * float(np.percentile(cpu, 99))}


def _serve(port: int, data_dir: str) -> None:
    """The service alone in its own process (as `dwcp serve` runs it), so the client never shares its GIL."""
    import uvicorn
    from prometheus_client import CollectorRegistry

    from dwcp.allocator.service import build_app
    from dwcp.allocator.settings import AllocatorSettings
    from dwcp.runtime.context import ServiceContext
    from dwcp.runtime.inventory import load_inventory

    ctx = ServiceContext(service="allocator", job="maddpg-allocator", instance=0, host="127.0.0.1", port=port,
                         settings=AllocatorSettings(), inventory=load_inventory(), data_dir=Path(data_dir),
                         registry=CollectorRegistry(), logger=logging.getLogger("bench"),
                         token_file=Path(data_dir) / "http-token")
    uvicorn.run(build_app(ctx), host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _handler_share_within(metrics_text: str, le: str) -> float:
    """Share of allocation requests whose server-side handler time was <= `le` seconds (histogram bucket)."""
    vals = {}
    for line in metrics_text.splitlines():
        if line.startswith("maddpg_allocation_duration_seconds_bucket{"):
            bound = line.split('le="')[1].split('"')[0]
            vals[bound] = float(line.rsplit(" ", 1)[1])
    return vals[le] / vals["+Inf"] if vals.get("+Inf") else float("nan")


def api_latency(n_requests: int) -> dict[str, float]:
    """Allocation requests (with releases mixed in) against the service in its own process, over loopback HTTP."""
    import multiprocessing

    import httpx

    from dwcp.allocator.load import allocation_body
    from dwcp.runtime.auth import bearer_header, client_token, ensure_token_file

    tmp = tempfile.TemporaryDirectory()
    port = free_port()
    token = client_token(ensure_token_file(Path(tmp.name) / "http-token"))
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(port, tmp.name), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{port}"
    rng = random.Random(1)
    lat, codes, ids = [], {}, []
    try:
        with httpx.Client(timeout=5.0, headers=bearer_header(token)) as client:
            for _ in range(600):
                try:
                    if client.get(f"{url}/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            for _ in range(50):  # warm-up
                client.post(f"{url}/v1/allocations", json=allocation_body(rng, 60.0))
            for _ in range(n_requests):
                t0 = time.perf_counter()
                r = client.post(f"{url}/v1/allocations", json=allocation_body(rng, 3600.0))
                lat.append(time.perf_counter() - t0)
                codes[r.status_code] = codes.get(r.status_code, 0) + 1
                if r.status_code == 201:
                    ids.append(r.json()["id"])
                if ids and rng.random() < 0.45:
                    client.delete(f"{url}/v1/allocations/{ids.pop(rng.randrange(len(ids)))}")
            view = client.get(f"{url}/v1/cluster").json()
            within = _handler_share_within(client.get(f"{url}/metrics").text, "0.01")
    finally:
        server.terminate()
        server.join(timeout=10)
        tmp.cleanup()
    return {"n": len(lat), "p50_ms": 1e3 * float(np.percentile(lat, 50)),
            "p99_ms": 1e3 * float(np.percentile(lat, 99)), "codes": codes, "handler_within_10ms": within,
            "service_sla_compliance": view["sla_compliance"], "service_optimization_pct": view["optimization_pct"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", type=int, default=6)
    ap.add_argument("--hours", type=float, default=6.0)
    ap.add_argument("--base-rate", type=float, default=0.04, help="mean arrivals per second (see traces.py)")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--json", type=Path, default=None, help="also write all figures here")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    print(f"held-out: {args.traces} traces x {args.hours} h, base rate {args.base_rate}/s, default cluster")
    rows = held_out(args.traces, args.hours, args.base_rate)
    summary = print_held_out(rows)
    inf = inference_p99(3000)
    api = api_latency(args.requests)
    m = summary["maddpg"]
    bf = summary["best-fit"]
    load1, _, _ = os.getloadavg()
    print(f"\n== MADDPG allocator vs seed baselines and issue targets (load average {load1:.1f}, "
          f"{os.cpu_count()} CPUs) ==")
    print(f"{'figure':34s}{'measured':>14s}{'seed':>10s}{'target':>12s}")
    print(f"{'optimization vs round-robin':34s}{m['median_optimization_pct']:13.1f}%{'>25%':>10s}"
          f"{'>=25%, >=BF':>12s}   (best-fit {bf['median_optimization_pct']:.1f}%)")
    print(f"{'SLA compliance (min over traces)':34s}{100 * m['min_sla']:13.2f}%{'>95%':>10s}{'>=97%':>12s}")
    print(f"{'allocation latency p99 (API)':34s}{api['p99_ms']:11.2f} ms{'<50 ms':>10s}{'<=10 ms':>12s}"
          f"   (p50 {api['p50_ms']:.2f} ms, n={api['n']}, codes {api['codes']}; "
          f"{100 * api['handler_within_10ms']:.1f}% of handler times <= 10 ms)")
    print(f"{'  service, same stream (saturates)':34s}   SLA {100 * api['service_sla_compliance']:.2f}%, "
          f"optimization vs its round-robin shadow {api['service_optimization_pct']:.1f}%")
    print(f"{'inference p99':34s}{inf['p99_ms']:11.3f} ms{'<100 ms':>10s}{'<=2 ms':>12s}"
          f"   (p50 {inf['p50_ms']:.3f} ms, CPU-time p99 {inf['cpu_p99_ms']:.3f} ms, n={inf['n']})")
    if args.json:
        args.json.write_text(json.dumps({"held_out": summary, "per_trace": rows, "inference": inf, "api": api},
                                        indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
