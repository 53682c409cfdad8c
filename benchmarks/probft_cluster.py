"""ProBFT on a real cluster: 7 `dwcp serve probft` processes on loopback, and PBFT on the same 7 nodes.

Issue 11's cluster targets: with no faults, quorum achievement >= 99.9%; finalization p99 <= 50 ms at
500 tx/s on this 2-core machine; and the ratio to PBFT on the same 7 nodes in the same run. The seed's
baseline is "ProBFT finalization: < 1 s".

Each protocol gets a fresh 7-node cluster of the inventory's probft service (committee file with VRF
keys; `settings.protocol` picks the core), a warm-up, then one open-loop run (`tpbft_cluster.measured`:
submit -> durable commit per transaction, measured by the client, plus node CPU from /proc over the
window). Quorum achievement is the nodes' own count after the backlog settled: phases that gathered a
quorum over phases voted in (`/v1/status`: quorum_achieved / quorum_attempts, summed over nodes).
At n = 7 ProBFT runs dense (sample = everyone, q = 2f+1: docs/probft.md), so the comparison measures
what its ballot format and header signatures cost over PBFT's votes (no VRF proofs in dense mode since
session 8).

    .venv/bin/python benchmarks/probft_cluster.py                       # 500 tx/s for 20 s, each protocol
    .venv/bin/python benchmarks/probft_cluster.py --rate 200 --duration 10 --json probft_cluster.json
    .venv/bin/python benchmarks/probft_cluster.py --batch-ms 10   # batched client (POST /v1/batches per 10 ms)
    .venv/bin/python benchmarks/probft_cluster.py --batch-ms 10 --stages  # + where each tx's latency goes, per stage

Measured 2026-12-04 19:59 UTC (`--rate 500 --duration 10`, load average ~20 from other sessions): ProBFT
p50 232 / p99 721 ms, quorum achievement 100%, 7.39 ms node CPU per block (43.9 tx/block); PBFT on the same
7 nodes p50 183 / p99 454 ms, 5.70 ms per block (30.7 tx/block). p99 target 50 ms missed (PBFT too).
Session 6 (2026-12-05, `--batch-ms 10 --stages`, load 11-15, after the log-fsync and gc.freeze cuts): ProBFT
p50 34-41 / p99 97-113 ms, PBFT 30-32 / 80-96 ms; where the rest goes per stage: docs/probft.md, "Session 6".
Session 7 (`--batch-ms 10 --stages`, load 6-10, after the index-flush cut): ProBFT p50 33-39 / p99 80-100 ms,
PBFT 29-34 / 71-87 ms, ratio 1.10-1.15 (docs/probft.md, "Session 7").
Session 8 (`--batch-ms 10 --stages`, load 5-11, dense ballots without proofs): ProBFT p50 34-38 / p99 93-104 ms,
PBFT 29-35 / 74-92 ms, ratio 1.10-1.26; `--pbft-first` runs PBFT's cluster first (2 runs: no order effect shown).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _harness import open_loop
from tpbft_cluster import check_logs_agree, measured, node_target, report, settle, top_height

from dwcp.consensus.node.cluster import LocalCluster

N = 7
TARGET_P99_S = 0.050
TARGET_QUORUM = 0.999
SEED_BASELINE_S = 1.0


def quorum_counts(cluster: LocalCluster) -> tuple[int, int]:
    """(phases that reached quorum, phases voted in), summed over every node and both phases."""
    achieved = attempts = 0
    with httpx.Client(timeout=5, headers=cluster.headers) as client:
        for url in cluster.urls:
            status = client.get(f"{url}/v1/status").json()
            achieved += sum(status.get("quorum_achieved", {}).values())
            attempts += sum(status.get("quorum_attempts", {}).values())
    return achieved, attempts


def log_writes(cluster: LocalCluster) -> tuple[int, int]:
    """(commit-writer transactions, log fsyncs) summed over the nodes since they started (0, 0 if not reported)."""
    writes = fsyncs = 0
    with httpx.Client(timeout=5, headers=cluster.headers) as client:
        for url in cluster.urls:
            status = client.get(f"{url}/v1/status").json()
            writes += status.get("log_writes", 0)
            fsyncs += status.get("log_fsyncs", 0)
    return writes, fsyncs


def per_block(before: dict, after: dict, blocks: int) -> dict[str, float]:
    """Counter deltas per block per node (`_crypto_counts`), sorted by name."""
    return {k: round((v - before.get(k, 0)) / blocks / N, 3) for k, v in sorted(after.items())
            if v > before.get(k, 0)} if blocks else {}


def count_line(counts: dict[str, float]) -> str:
    main = ("ed25519_verify", "ed25519_verify_calls", "ed25519_sign", "vrf_verify", "vrf_prove")
    frames = sum(v for k, v in counts.items() if k.startswith("in_frames:"))
    size = sum(v for k, v in counts.items() if k.startswith("in_bytes:"))
    sealed = sum(v for k, v in counts.items() if k.startswith("out_frames:"))
    out = sum(v for k, v in counts.items() if k.startswith("out_bytes:"))
    return ("    per block per node: " + ", ".join(f"{k} {counts.get(k, 0):.2f}" for k in main)
            + f"; frames in {frames:.1f} ({size:.0f} B), sealed out {sealed:.1f} ({out:.0f} B, before fan-out); "
            + ", ".join(f"{k} {v:.2f}" for k, v in counts.items() if k.startswith(("in_frames:", "in_bytes:"))))


def one_protocol(protocol: str, args: argparse.Namespace) -> dict:
    root = Path(tempfile.mkdtemp(prefix=f"dwcp-bench-{protocol}-"))
    settings = {"protocol": protocol, **dict(s.split("=", 1) for s in args.setting)}
    counts_dir = None
    saved_env = dict(os.environ)
    if args.count_crypto:
        import _crypto_counts
        counts_dir = _crypto_counts.enable(os.environ)  # the nodes LocalCluster starts inherit it
    trace_dir = root / "trace" if args.stages else None
    if trace_dir is not None:
        from dwcp.consensus.transport import trace  # here: an A/B run may name a tree without it

        os.environ[trace.ENV] = str(trace_dir)  # the nodes record their commit-path events (trace.py)
    try:
        with LocalCluster(root, N, service="probft", settings=settings) as cluster:
            cluster.start_all()
            cluster.wait_ready(timeout=90)
            asyncio.run(open_loop(node_target(cluster), min(args.rate, 200.0), args.warmup))
            settle(cluster)
            a0, t0 = quorum_counts(cluster) if protocol == "probft" else (0, 0)
            profile = args.profile_node if protocol == "probft" else None
            if counts_dir is not None:
                time.sleep(0.5)  # the counters are written every 0.25 s
                h0, c0 = top_height(cluster), _crypto_counts.read(counts_dir)
            since = time.monotonic()
            run = measured(cluster, args.rate, args.duration, profile_node=profile, batch_ms=args.batch_ms)
            until = time.monotonic()
            after = settle(cluster)
            counts = None
            if counts_dir is not None:
                time.sleep(0.5)
                counts = per_block(c0, _crypto_counts.read(counts_dir), top_height(cluster) - h0)
            top, compared = check_logs_agree(cluster)
            writes, fsyncs = log_writes(cluster)
            out = run.summary() | {"protocol": protocol, "after": after, "logs_agree_heights": compared}
            if top and writes:  # since the node started (warm-up included); absent from trees before writer.fsyncs
                out["log_writes_per_block"], out["log_fsyncs_per_block"] = writes / top / N, fsyncs / top / N
                print(f"    log per node per block: {writes / top / N:.2f} writes, {fsyncs / top / N:.2f} fsyncs",
                      flush=True)
            if protocol == "probft":
                a1, t1 = quorum_counts(cluster)
                out["quorum_achieved"], out["quorum_attempts"] = a1 - a0, t1 - t0
                out["quorum_achievement"] = (a1 - a0) / (t1 - t0) if t1 > t0 else float("nan")
            print(f"{protocol}: " + report(run) + f"  | after: {after}", flush=True)
            if counts is not None:
                out["counts_per_block_per_node"] = counts
                print(count_line(counts), flush=True)
        if trace_dir is not None:  # after the nodes stopped: their last events are flushed
            import commit_stages

            traces = commit_stages.load(trace_dir)
            out["stages"] = commit_stages.summarize(commit_stages.join(traces, since, until),
                                                    commit_stages.gc_pauses(traces, since, until),
                                                    commit_stages.writer_stalls(traces, since, until))
            print(commit_stages.table(out["stages"]), flush=True)
        return out
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        if counts_dir is not None:
            shutil.rmtree(counts_dir, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--setting", action="append", default=[], metavar="KEY=VALUE",
                    help="node setting for both protocols' nodes (e.g. batch_timeout_ms=2)")
    ap.add_argument("--batch-ms", type=float, default=0.0,
                    help="client sends the transactions due every N ms as one POST /v1/batches (0: one POST per tx)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--profile-node", type=int, default=None, metavar="I",
                    help="profile ProBFT node I during its run (py-spy phases, perf libraries: tpbft_cluster.py)")
    ap.add_argument("--count-crypto", action="store_true",
                    help="count, inside every node, Ed25519/VRF checks and signs and frames/bytes in and out per block "
                         "(_crypto_counts.py)")
    ap.add_argument("--stages", action="store_true",
                    help="trace the commit path in every node and print where a transaction's latency goes, stage by "
                         "stage (commit_stages.py)")
    ap.add_argument("--pbft-first", action="store_true",
                    help="run PBFT's cluster before ProBFT's (the default order is ProBFT first): checks whether the "
                         "order itself moves the figures")
    args = ap.parse_args(argv)
    order = ("pbft", "probft") if args.pbft_first else ("probft", "pbft")
    results = {p: one_protocol(p, args) for p in order}
    pro, base = results["probft"], results["pbft"]
    ratio = pro["p99"] / base["p99"] if base["p99"] else float("nan")
    print(f"\nProBFT at {args.rate:.0f} tx/s on {N} nodes: finalization p50 {pro['p50'] * 1e3:.1f} ms, "
          f"p99 {pro['p99'] * 1e3:.1f} ms (target <= {TARGET_P99_S * 1e3:.0f} ms; seed < {SEED_BASELINE_S:.0f} s), "
          f"quorum achievement {pro.get('quorum_achievement', float('nan')):.4%} (target >= {TARGET_QUORUM:.1%}); "
          f"PBFT same nodes p50 {base['p50'] * 1e3:.1f} ms, p99 {base['p99'] * 1e3:.1f} ms; "
          f"p99 ratio ProBFT/PBFT {ratio:.2f}; node CPU ms/block {pro['node_cpu_ms_per_block']:.2f} vs "
          f"{base['node_cpu_ms_per_block']:.2f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results | {"args": vars(args) | {"json": str(args.json)}}, indent=2,
                                        default=str))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main())
