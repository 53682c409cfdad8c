"""ProBFT's metrics of one node, with the seed's names and meanings (docs/contracts.md), fed by the
driver: `committed(height, txs, latencies)` once per durable block and `update(status)` with the
driver's status (the core's `status()` merged with the driver's) after each block and every sync
interval. Counters follow the core's running counts by their increase, so a restart (counts from 0)
never makes a counter go down.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# The seed's baseline is finalization < 1 s; the loopback target is p99 <= 50 ms.
FINALIZATION_BUCKETS = (
    0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0,
)
PHASES = ("prepare", "commit")
RATE_WINDOW_S = 60.0  # the achievement rate covers the phases resolved in the last minute


class Metrics:
    """`probft_*` metrics of one node, built from a registry passed in (nothing registered at import)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.finalization = Histogram(
            "probft_finalization_duration_seconds",
            "Seconds from this node accepting a block's proposal until it executed the block (a probabilistic "
            "commit quorum of the block's commit ballots reached it, or a certified copy arrived).",
            buckets=FINALIZATION_BUCKETS, registry=registry,
        )
        self.blocks = Counter(
            "probft_blocks_finalized_total",
            "Blocks this node has durably finalized since it started (including blocks fetched by catch-up).",
            registry=registry,
        )
        self.transactions = Counter(
            "probft_transactions_committed_total",
            "Transactions this node has durably committed (each counted once, at its first block).",
            registry=registry,
        )
        self.achieved = Counter(
            "probft_quorum_achieved_total",
            "Phases (prepare or commit of one block) in which this node gathered a probabilistic quorum of "
            "q = l*sqrt(n) matching ballots from senders whose VRF sample held it.",
            ["phase"], registry=registry,
        )
        self.attempts = Counter(
            "probft_quorum_attempts_total",
            "Phases in which this node voted and so waited for a quorum (achieved or not).",
            ["phase"], registry=registry,
        )
        self.rate = Gauge(
            "probft_quorum_achievement_rate",
            "Share of this node's phases resolved in the last minute that reached their quorum before a view "
            "change (timeout) ended them; 1 when none was resolved.",
            registry=registry,
        )
        self.view_changes = Counter(
            "probft_view_changes_total", "View changes this node has started (a leader was suspected).",
            registry=registry,
        )
        self.messages = Counter(
            "probft_messages_sent_total",
            "Protocol messages this node sent, one per recipient, by phase (propose, prepare, commit, "
            "view_change, checkpoint, other).",
            ["phase"], registry=registry,
        )
        self.rejected = Counter(
            "probft_vrf_proofs_rejected_total",
            "Ballots dropped for their VRF proof: invalid or replayed (bad_vrf_proof), a second proof for a "
            "view and phase (proof_mismatch), or a sender whose sample does not hold this node (outside_sample).",
            ["reason"], registry=registry,
        )
        self.height = Gauge("probft_committed_height", "Height of this node's newest durable block.",
                            registry=registry)
        self._seen: dict[str, int] = {}
        self._last_height = 0
        self._window: deque[tuple[float, int, int]] = deque()  # (time, achieved, failed) snapshots

    def committed(self, height: int, txs: int, latencies: list[float]) -> None:
        self.blocks.inc()
        if txs:
            self.transactions.inc(txs)
        self.height.set(height)

    def _advance(self, counter: Any, key: str, value: object) -> None:
        """Increase `counter` by the growth of a running count since we last saw it."""
        if not isinstance(value, int):
            return
        prev = self._seen.get(key, 0)
        if value > prev:
            counter.inc(value - prev)
        self._seen[key] = value

    def update(self, status: dict[str, Any], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for phase in PHASES:
            self._advance(self.achieved.labels(phase=phase), f"a:{phase}", status.get("quorum_achieved", {}).get(phase))
            self._advance(self.attempts.labels(phase=phase), f"t:{phase}", status.get("quorum_attempts", {}).get(phase))
        for phase, count in status.get("messages_sent", {}).items():
            self._advance(self.messages.labels(phase=phase), f"m:{phase}", count)
        for reason in ("bad_vrf_proof", "proof_mismatch", "outside_sample"):
            self._advance(self.rejected.labels(reason=reason), f"r:{reason}", status.get("rejected", {}).get(reason, 0))
        self._advance(self.view_changes, "vc", status.get("view_changes"))
        for height, seconds in status.get("finalized", ()):
            if height > self._last_height:
                self.finalization.observe(seconds)
                self._last_height = height
        achieved = sum(status.get("quorum_achieved", {}).values())
        failed = sum(status.get("quorum_failed", {}).values())
        self._window.append((now, achieved, failed))
        while len(self._window) > 2 and self._window[1][0] <= now - RATE_WINDOW_S:
            self._window.popleft()
        _, a0, f0 = self._window[0]
        resolved = (achieved - a0) + (failed - f0)
        self.rate.set((achieved - a0) / resolved if resolved > 0 else 1.0)
