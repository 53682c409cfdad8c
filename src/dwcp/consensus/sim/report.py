"""Figures of one simulated run (`RunResult`) and totals over many (`totals`).

All times are simulated seconds. Latency is submit -> commit at the node the transaction was handed
to; throughput counts transactions first committed while the load ran (the scenario's duration).
Per-run latencies are kept as a sparse log-bucket histogram (1% wide buckets), so totals over 10^4
runs pool every transaction's latency without shipping millions of floats between processes.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from dwcp.consensus.sim.invariants import KINDS

if TYPE_CHECKING:
    from dwcp.consensus.sim.runner import Simulation

_BASE = math.log(1.01)


def bucket(latency: float) -> int:
    return round(math.log(max(latency, 1e-6)) / _BASE)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of `values` (0 when empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def histogram_percentile(hist: dict[int, int], q: float) -> float:
    total = sum(hist.values())
    if not total:
        return 0.0
    rank = max(1, math.ceil(q / 100 * total))
    seen = 0
    for b in sorted(hist):
        seen += hist[b]
        if seen >= rank:
            return math.exp(b * _BASE)
    return 0.0


@dataclass
class RunResult:
    protocol: str
    seed: int
    duration_s: float
    committed_blocks: int
    committed_tx: int
    throughput_tx_per_s: float
    latency_p50_s: float
    latency_p99_s: float
    messages_per_block: float
    bytes_per_block: float
    view_changes: int
    drain_s: float  # after the load stopped, how long until every due tx had committed (capped)
    violations: dict[str, int]
    messages: int
    bytes: int
    lost: int
    rejected: dict[str, int]  # dropped peer input, by reason (codec verdicts and cores' Rejected)
    tx_dropped: dict[str, int]  # submissions a core refused (TxDropped), by reason
    trace_hash: str
    wall_s: float
    events: int
    scenario: dict[str, Any]
    violation_details: list[str] = field(default_factory=list)
    latency_hist: dict[int, int] = field(default_factory=dict, repr=False)
    messages_by_type: dict[str, int] = field(default_factory=dict)  # `messages`, split by message type
    driver_messages: dict[str, int] = field(default_factory=dict)  # height gossip and fetches, not in `messages`

    @property
    def ok(self) -> bool:
        return not any(self.violations.values())

    def row(self) -> dict[str, Any]:
        """The JSON row: everything but the histogram."""
        out = asdict(self)
        out.pop("latency_hist")
        return out


def summarize(sim: Simulation, wall_s: float) -> RunResult:
    sc = sim.scenario
    checker = sim.checker
    correct = [n for n in sim.nodes if n.correct]
    blocks = max((len(n.instances[0].log) for n in correct), default=0)
    txs = max((len(checker.executed[n.node_id]) for n in correct), default=0)
    latencies = checker.latencies()
    in_time = sum(1 for t in checker.first_commit.values() if t <= sc.duration)
    hist = Counter(bucket(x) for x in latencies)
    view_changes = max((int(n.instances[0].core.status().get("view_changes", 0)) for n in correct), default=0)
    return RunResult(
        protocol=sc.protocol, seed=sc.seed, duration_s=sc.duration, committed_blocks=blocks, committed_tx=txs,
        throughput_tx_per_s=in_time / sc.duration, latency_p50_s=percentile(latencies, 50),
        latency_p99_s=percentile(latencies, 99), messages_per_block=sim.messages / blocks if blocks else 0.0,
        bytes_per_block=sim.bytes / blocks if blocks else 0.0, view_changes=view_changes, drain_s=sim.drained_s,
        violations={k: checker.violations.counts[k] for k in KINDS}, messages=sim.messages, bytes=sim.bytes,
        lost=sim.lost, rejected=dict(sorted(sim.rejected.items())),
        tx_dropped=dict(sorted(sim.dropped.items())), trace_hash=sim.trace_hash, wall_s=wall_s,
        events=sim.clock.events_run, scenario=sc.describe(), violation_details=list(checker.violations.details),
        latency_hist=dict(hist), messages_by_type=dict(sorted(sim.sent_by_type.items())),
        driver_messages=dict(sorted(sim.driver_sent.items())),
    )


def _per_block(counts: Iterable[dict[str, int]], blocks: int) -> dict[str, float]:
    total: Counter[str] = Counter()
    for c in counts:
        total.update(c)
    return {k: v / blocks for k, v in sorted(total.items(), key=lambda kv: -kv[1])} if blocks else {}


def totals(results: Iterable[RunResult]) -> dict[str, Any]:
    """Sums over runs; latency percentiles pooled over every transaction of every run."""
    results = list(results)
    hist: Counter[int] = Counter()
    violations: Counter[str] = Counter(dict.fromkeys(KINDS, 0))
    for r in results:
        hist.update(r.latency_hist)
        violations.update(r.violations)
    blocks = sum(r.committed_blocks for r in results)
    txs = sum(r.committed_tx for r in results)
    sim_time = sum(r.duration_s for r in results)
    committed_in_time = sum(r.throughput_tx_per_s * r.duration_s for r in results)
    return {
        "runs": len(results),
        "runs_with_violations": sum(1 for r in results if not r.ok),
        "committed_blocks": blocks,
        "committed_tx": txs,
        "throughput_tx_per_s": committed_in_time / sim_time if sim_time else 0.0,
        "latency_p50_s": histogram_percentile(hist, 50),
        "latency_p99_s": histogram_percentile(hist, 99),
        "messages_per_block": sum(r.messages for r in results) / blocks if blocks else 0.0,
        "bytes_per_block": sum(r.bytes for r in results) / blocks if blocks else 0.0,
        "view_changes": sum(r.view_changes for r in results),
        "messages_by_type_per_block": _per_block((r.messages_by_type for r in results), blocks),
        "driver_messages_per_block": _per_block((r.driver_messages for r in results), blocks),
        "violations": dict(violations),
        "wall_s": sum(r.wall_s for r in results),
    }
