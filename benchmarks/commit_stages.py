"""Where a transaction's finalization latency goes, stage by stage, from the nodes' commit-path traces.

The nodes record their events when started with `DWCP_CONSENSUS_TRACE=<dir>` (src/dwcp/consensus/transport/
trace.py); `probft_cluster.py --stages` and `tpbft_cluster.py`-style benchmarks set it. This joins them per
transaction, on one host's monotonic clock:

    submitted (S at the node the client used, X)
      -> forward:   at the primary (F there; 0 when X is the primary)
      -> pending:   the primary proposes the block holding it (P sent by the primary)
      -> transit:   X has the proposal (P at X; 0 when X is the primary)
      -> prepare:   X's prepare quorum (X sends its commit vote or ballot: V)
      -> commit:    X's commit quorum, block decided and executed by X's core (C)
      -> queued:    X's commit writer thread starts the append holding it (W start: waits for the previous
                    append, the thread hand-off)
      -> write:       ... and ends it (W end: SQLite and the fsync)
      -> durable:   the event loop learns it is durable (D)
      -> answer:    the waiting HTTP request on X resumes (A)

A T-PBFT follower has no P or V (it learns the block from a group member's Decided), nor has a node that took
the block by catch-up: their transactions are left out of the stage table and counted apart in the per-entry
totals ("at a follower").

Stages sum to the node-side latency (S -> A); the client's figure adds its own batching delay and the
HTTP request and answer. Printed per stage: mean, p50, p99, and the mean of each stage over the slowest 1%
of transactions (what the tail is made of).

    .venv/bin/python benchmarks/commit_stages.py TRACE_DIR [--since T0 --until T1]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from dwcp.consensus.transport.trace import read

STAGES = ("forward", "pending", "transit", "prepare", "commit", "queued", "write", "durable", "answer")


def load(directory: Path) -> dict[int, list[tuple]]:
    out = {}
    for path in sorted(directory.glob("node-*.trace")):
        out[int(path.stem.split("-")[1])] = list(read(path))
    return out


def join(traces: dict[int, list[tuple]], since: float = float("-inf"), until: float = float("inf")) -> list[dict]:
    """One row per transaction submitted in [since, until) and answered: each stage's seconds, and `total`."""
    first_p: dict[int, tuple[float, int]] = {}  # height -> (earliest P, node): the primary's send
    per_node: dict[int, dict[str, dict]] = {}
    for node, events in traces.items():
        heights: dict[str, dict[int, float]] = {k: {} for k in "PVCD"}
        txs: dict[str, dict[bytes, float]] = {k: {} for k in "SFA"}
        tx_height: dict[bytes, int] = {}
        writes: dict[int, tuple[float, float]] = {}
        for ev in events:
            kind, t = ev[0], ev[1]
            if kind in heights:
                heights[kind].setdefault(ev[2], t)
                if kind == "P" and (ev[2] not in first_p or t < first_p[ev[2]][0]):
                    first_p[ev[2]] = (t, node)
            elif kind in txs:
                for tid in ev[2]:
                    txs[kind].setdefault(tid, t)
            elif kind == "W":
                for h in ev[3]:
                    writes.setdefault(h, (t, ev[2]))
            elif kind == "T":
                for tid in ev[3]:
                    tx_height.setdefault(tid, ev[2])
        per_node[node] = {**heights, **txs, "height": tx_height, "W": writes}
    rows = []
    for x, ev in per_node.items():
        for tid, t_s in ev["S"].items():
            if not since <= t_s < until or tid not in ev["A"] or tid not in ev["height"]:
                continue
            h = ev["height"][tid]
            if h not in first_p:
                continue
            t_pp, prim = first_p[h]
            t_f = t_s if prim == x else per_node[prim]["F"].get(tid)
            w = ev["W"].get(h, (None, None))
            p_x, v_x = ev["P"].get(h), ev["V"].get(h)
            # A node that did not vote on h (a T-PBFT follower, which executes the block a group member's
            # Decided brings) has no P or V: its "commit" runs from the primary's proposal to its decision.
            follower = v_x is None and ev["C"].get(h) is not None
            if follower:
                p_x = v_x = t_pp
            marks = (t_s, t_f, t_pp, p_x, v_x, ev["C"].get(h), *w, ev["D"].get(h), ev["A"][tid])
            if any(m is None for m in marks):
                continue
            row = {name: marks[i + 1] - marks[i] for i, name in enumerate(STAGES)}
            row["total"] = marks[-1] - marks[0]
            row["node"], row["primary"], row["start"], row["follower"] = x, prim, t_s, follower
            rows.append(row)
    return rows


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def gc_pauses(traces: dict[int, list[tuple]], since: float = float("-inf"), until: float = float("inf")) -> dict:
    """The nodes' cyclic collections of generations 1 and 2 in [since, until): count and ms, per generation."""
    out: dict[str, dict[str, float]] = {}
    for events in traces.values():
        for ev in events:
            if ev[0] == "G" and since <= ev[1] < until:
                g = out.setdefault(f"gen{ev[3]}", {"count": 0, "total_ms": 0.0, "max_ms": 0.0})
                ms = 1e3 * (ev[2] - ev[1])
                g["count"] += 1
                g["total_ms"] += ms
                g["max_ms"] = max(g["max_ms"], ms)
    return out


STALL_S = 0.030  # a commit writer append at least this long counts as a stall (`writer_stalls`)


def writer_stalls(traces: dict[int, list[tuple]], since: float = float("-inf"), until: float = float("inf"),
                  least: float = STALL_S) -> dict:
    """The commit writers' slow spells in [since, until): appends of at least `least` seconds, and log upkeep
    (M events: checkpoint, idle sync, index flush) by kind, each as count, ms in all and longest; plus
    `spans`, the (start, end) of each over every node, which `summarize` matches with the slowest txs."""
    out: dict = {"spans": []}
    for events in traces.values():
        for ev in events:
            if ev[0] not in ("W", "M") or not since <= ev[1] < until:
                continue
            ms = 1e3 * (ev[2] - ev[1])
            if ev[0] == "W" and ms < 1e3 * least:
                continue
            g = out.setdefault("append" if ev[0] == "W" else ev[3], {"count": 0, "total_ms": 0.0, "max_ms": 0.0})
            g["count"] += 1
            g["total_ms"] += ms
            g["max_ms"] = max(g["max_ms"], ms)
            if ev[0] == "W":
                out["spans"].append((ev[1], ev[2]))
    return out


def late_appends(traces: dict[int, list[tuple]], since: float = float("-inf"), until: float = float("inf"),
                 least: float = 0.015) -> dict:
    """Appends that started at least `least` seconds after their first block was decided (C), in [since, until),
    told apart by what the writer thread was still doing when the block was decided: an earlier append (W),
    log upkeep (M: checkpoint or idle sync), or nothing (the thread was idle: the hand-off from the event
    loop to the thread was late, waiting for the CPU or the GIL)."""
    out = {"late": 0, "behind_append": 0, "behind_upkeep": 0, "thread_idle": 0}
    for events in traces.values():
        decided = {e[2]: e[1] for e in events if e[0] == "C"}
        spans = sorted((e for e in events if e[0] == "W" or (e[0] == "M" and e[3] != "index")), key=lambda e: e[1])
        for i, e in enumerate(spans):
            if e[0] != "W" or not since <= e[1] < until or not e[3] or e[3][0] not in decided:
                continue
            t_c = decided[e[3][0]]
            if e[1] - t_c < least:
                continue
            out["late"] += 1
            busy = [p[0] for p in spans[:i] if p[2] > t_c]  # what the thread was still doing at the decision
            key = "behind_append" if "W" in busy else "behind_upkeep" if busy else "thread_idle"
            out[key] += 1
    return out


def summarize(rows: list[dict], gc: dict | None = None, stalls: dict | None = None) -> dict:
    """Stage by stage over the transactions whose entry node voted on their block; `total_by_entry` splits
    every transaction's total by where it entered (the primary, another voter, a follower)."""
    every, rows = rows, [r for r in rows if not r.get("follower")]
    if not rows:
        return {"transactions": 0}
    tail = sorted(rows, key=lambda r: r["total"])[-max(1, len(rows) // 100):]
    out: dict = {"transactions": len(rows), "tail_transactions": len(tail), "stages": {}, "gc": gc or {}}
    if stalls is not None:
        spans = stalls.get("spans", [])

        def during(r: dict) -> bool:  # the tx was in flight while some node's writer stalled
            return any(s < r["start"] + r["total"] and e > r["start"] for s, e in spans)

        out["writer_stalls"] = {k: v for k, v in stalls.items() if k != "spans"}
        out["tail_during_stall"], out["all_during_stall"] = sum(map(during, tail)), sum(map(during, rows))
    for name in (*STAGES, "total"):
        values = [r[name] for r in rows]
        out["stages"][name] = {
            "mean_ms": 1e3 * sum(values) / len(values), "p50_ms": 1e3 * quantile(values, 0.5),
            "p99_ms": 1e3 * quantile(values, 0.99), "tail_mean_ms": 1e3 * sum(r[name] for r in tail) / len(tail),
        }
    by_primary = defaultdict(list)
    for r in every:
        by_primary["at a follower" if r.get("follower") else "at primary" if r["node"] == r["primary"]
                   else "elsewhere"].append(r["total"])
    out["total_by_entry"] = {k: {"n": len(v), "p50_ms": 1e3 * quantile(v, 0.5), "p99_ms": 1e3 * quantile(v, 0.99)}
                             for k, v in sorted(by_primary.items())}
    return out


def table(summary: dict) -> str:
    if not summary.get("transactions"):
        return "    stages: no transaction traced"
    lines = [f"    stages over {summary['transactions']} txs (node side, submit -> answer; the slowest "
             f"{summary['tail_transactions']} = 'tail'):",
             f"    {'stage':<9} {'mean':>7} {'p50':>7} {'p99':>7} {'tail mean':>10}  (ms)"]
    for name, s in summary["stages"].items():
        lines.append(f"    {name:<9} {s['mean_ms']:7.1f} {s['p50_ms']:7.1f} {s['p99_ms']:7.1f} "
                     f"{s['tail_mean_ms']:10.1f}")
    if summary.get("gc"):
        lines.append("    cyclic GC over all nodes: " + "; ".join(
            f"{k} {v['count']} runs, {v['total_ms']:.0f} ms in all, longest {v['max_ms']:.1f} ms"
            for k, v in sorted(summary["gc"].items())))
    if "writer_stalls" in summary:
        lines.append(f"    commit writers over all nodes (appends >= {STALL_S * 1e3:.0f} ms, upkeep): " + "; ".join(
            f"{k} {v['count']}, {v['total_ms']:.0f} ms in all, longest {v['max_ms']:.1f} ms"
            for k, v in sorted(summary["writer_stalls"].items())) + f"; in flight during such an append: "
            f"{summary['tail_during_stall']} of the {summary['tail_transactions']} slowest txs, "
            f"{summary['all_during_stall']} of all {summary['transactions']}")
    if "late_appends" in summary:
        x = summary["late_appends"]
        lines.append(f"    appends begun >= 15 ms after their block was decided: {x['late']}; the writer thread "
                     f"was still on an earlier append for {x['behind_append']}, on a checkpoint or idle sync for "
                     f"{x['behind_upkeep']}, idle for {x['thread_idle']} (the hand-off to it was late)")
    lines.append("    total by entry node: " + "; ".join(
        f"{k} n={v['n']} p50 {v['p50_ms']:.1f} p99 {v['p99_ms']:.1f} ms" for k, v in summary["total_by_entry"].items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("directory", type=Path)
    ap.add_argument("--since", type=float, default=float("-inf"), help="time.monotonic() of the window's start")
    ap.add_argument("--until", type=float, default=float("inf"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    traces = load(args.directory)
    summary = summarize(join(traces, args.since, args.until), gc_pauses(traces, args.since, args.until),
                        writer_stalls(traces, args.since, args.until))
    if summary.get("transactions"):
        summary["late_appends"] = late_appends(traces, args.since, args.until)
    print(table(summary))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
