"""Transactions known to a node but not yet committed, with the time each was first seen.

Bounded (`max_pending`): a full pool refuses new transactions rather than grow. Committed ids are
remembered for duplicate detection (16 bytes each; a node-lifetime set, see docs/consensus.md).
"""

from __future__ import annotations

from collections.abc import Iterable

from dwcp.consensus.core.messages import Transaction


def framed_size(tx: Transaction) -> int:
    """Bytes a tx takes in a block or batch: its payload plus 8 bytes of msgpack framing (an upper bound)."""
    return len(tx.payload) + 8


class Mempool:
    def __init__(self, max_pending: int = 100_000, max_tx_bytes: int | None = None) -> None:
        self.max_pending = max_pending
        self.max_tx_bytes = max_tx_bytes  # a bigger tx could never fit in a block
        self.pending: dict[bytes, tuple[Transaction, float]] = {}  # insertion-ordered: oldest first
        self.committed: set[bytes] = set()
        self.inflight: set[bytes] = set()  # proposed by us (as primary), not yet committed

    def __len__(self) -> int:
        return len(self.pending)

    def add(self, tx: Transaction, now: float) -> str | None:
        """Add a tx; returns a reason when it is refused."""
        tid = tx.id
        if tid in self.committed:
            return "committed"
        if tid in self.pending:
            return "duplicate"
        if self.max_tx_bytes is not None and len(tx.payload) > self.max_tx_bytes:
            return "too_large"
        if len(self.pending) >= self.max_pending:
            return "mempool_full"
        self.pending[tid] = (tx, now)
        return None

    def take(self, limit: int, max_bytes: int | None = None) -> list[Transaction]:
        """Oldest pending transactions not already in one of our in-flight proposals: at most
        `limit` of them, and (when given) at most `max_bytes` as `framed_size` counts them (the first
        one is always taken: `add` refused any that could not fit)."""
        out: list[Transaction] = []
        size = 0
        for tid, (tx, _) in self.pending.items():
            if tid not in self.inflight:
                size += framed_size(tx)
                if max_bytes is not None and size > max_bytes and out:
                    break
                out.append(tx)
                if len(out) >= limit:
                    break
        return out

    def available(self) -> int:
        return len(self.pending) - len(self.inflight & self.pending.keys())

    def oldest(self) -> float | None:
        for _, seen in self.pending.values():
            return seen
        return None

    def mark_committed(self, txs: Iterable[Transaction]) -> list[Transaction]:
        """Record a committed block's txs; returns those not committed before (the executed ones)."""
        executed = []
        for tx in txs:
            tid = tx.id
            if tid in self.committed:
                continue
            self.committed.add(tid)
            self.pending.pop(tid, None)
            self.inflight.discard(tid)
            executed.append(tx)
        return executed

    def restart_clocks(self, now: float, txs: Iterable[Transaction] | None = None) -> None:
        """Give the primary a full timeout from `now` for `txs` (all pending ones when None: after a view
        change). Restarted txs move to the back, which keeps `pending` ordered by time seen."""
        if txs is None:
            self.pending = {tid: (tx, now) for tid, (tx, _) in self.pending.items()}
            return
        for tx in txs:
            if self.pending.pop(tx.id, None) is not None:
                self.pending[tx.id] = (tx, now)
