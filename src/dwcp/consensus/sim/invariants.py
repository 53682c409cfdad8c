"""Invariant checkers, run on every simulated scenario. Only correct nodes' commits are judged, and
those of `honest` nodes: faulty ones whose core is honest (an intermittent node that crashes and loses
its links in episodes), judged on everything but liveness.

- agreement: no two correct nodes commit different blocks at one height (nor one node twice);
- validity: every committed transaction was submitted by a client, and a commit executes only
  transactions of its own block;
- duplicate: no correct node executes one transaction twice (at two heights, or twice in a block);
- order: a core's commits come in height order with no gaps (what the driver's log relies on);
- certificate: every commit carries a certificate that verifies (`verify_certificate`), since
  that is what lets other nodes accept the block during catch-up;
- liveness: after the last fault heals, every transaction submitted to a correct node is committed
  by every correct node; the runner stops the load at the scenario's duration and lets the run
  drain (bounded) before `finish` judges it;
- exception: a core raised while handling an input, or the codec while opening a frame (bad peer
  input must never raise).

The runner feeds `submitted` and `committed`; tests plant violations by feeding them directly.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from dwcp.consensus.core.messages import Transaction

KINDS = ("agreement", "validity", "duplicate", "order", "certificate", "liveness", "exception")
MAX_DETAILS = 20


@dataclass
class Violations:
    counts: Counter[str] = field(default_factory=Counter)
    details: list[str] = field(default_factory=list)

    def add(self, kind: str, detail: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown invariant {kind!r}")
        self.counts[kind] += 1
        if len(self.details) < MAX_DETAILS:
            self.details.append(f"{kind}: {detail}")

    def __bool__(self) -> bool:
        return bool(self.counts)

    def total(self) -> int:
        return sum(self.counts.values())


class InvariantChecker:
    def __init__(self, correct: Iterable[int], honest: Iterable[int] = ()) -> None:
        self.correct = frozenset(correct)
        self.checked = self.correct | frozenset(honest)  # safety: correct and honest-but-faulty nodes
        self.violations = Violations()
        self.submitted: dict[bytes, tuple[float, int]] = {}  # tx id -> (time, node it was handed to)
        self.decided: dict[int, bytes] = {}  # height -> block digest first committed by a correct node
        self.heights: dict[int, int] = dict.fromkeys(self.checked, 0)
        self.digests: dict[int, dict[int, bytes]] = {n: {} for n in self.checked}  # node -> height -> digest
        self.executed: dict[int, dict[bytes, int]] = {n: {} for n in self.checked}  # node -> tx id -> height
        self.first_commit: dict[bytes, float] = {}  # tx id -> first time a correct node executed it
        self.commit_at_origin: dict[bytes, float] = {}  # tx id -> time the node it was handed to executed it

    def submitted_tx(self, now: float, node: int, tx: Transaction) -> None:
        self.submitted.setdefault(tx.id, (now, node))

    def committed(self, now: float, node: int, height: int, digest: bytes, block_txs: Iterable[Transaction],
                  txs: Iterable[Transaction]) -> None:
        if node not in self.checked:
            return
        v = self.violations
        mine = self.digests[node]
        if height in mine:
            if mine[height] != digest:
                v.add("agreement", f"node {node} committed two blocks at height {height}")
            return  # a repeat of an earlier commit: the driver ignores it
        if height != self.heights[node] + 1:
            v.add("order", f"node {node} committed height {height} after {self.heights[node]}")
        self.heights[node] = max(self.heights[node], height)
        mine[height] = digest
        first = self.decided.setdefault(height, digest)
        if first != digest:
            v.add("agreement", f"height {height}: node {node} committed {digest.hex()[:12]}, "
                               f"another correct node {first.hex()[:12]}")
        block_ids = [t.id for t in block_txs]
        if len(set(block_ids)) != len(block_ids):
            v.add("duplicate", f"node {node} height {height}: a transaction twice in one block")
        in_block = set(block_ids)
        done = self.executed[node]
        for tx in txs:
            tid = tx.id
            if tid not in in_block:
                v.add("validity", f"node {node} height {height}: executed tx {tid.hex()[:12]} not in the block")
            if tid not in self.submitted:
                v.add("validity", f"node {node} height {height}: tx {tid.hex()[:12]} was never submitted")
            if tid in done:
                v.add("duplicate", f"node {node}: tx {tid.hex()[:12]} at heights {done[tid]} and {height}")
                continue
            done[tid] = height
            if node not in self.correct:
                continue  # latency is measured at correct nodes
            self.first_commit.setdefault(tid, now)
            origin = self.submitted.get(tid)
            if origin is not None and origin[1] == node:
                self.commit_at_origin.setdefault(tid, now)

    def bad_certificate(self, node: int, height: int) -> None:
        self.violations.add("certificate", f"node {node} committed height {height} with a certificate "
                                           "that does not verify")

    def core_error(self, node: int, detail: str) -> None:
        self.violations.add("exception", f"node {node}: {detail}")

    def codec_error(self, node: int, sender: int, detail: str) -> None:
        """`Codec.open` raised on a frame from `sender` (the driver would let it escape)."""
        self.violations.add("exception", f"codec.open at node {node} on a frame from {sender}: {detail}")

    def due(self, healed_at: float, until: float) -> list[bytes]:
        """Txs liveness is judged on: handed to a correct node in [healed_at, until]."""
        return [tid for tid, (t, origin) in self.submitted.items()
                if healed_at <= t <= until and origin in self.correct]

    def settled(self, due: list[bytes], live: Iterable[int]) -> bool:
        """Has every correct node in `live` executed every tx in `due`?"""
        return all(tid in self.executed[n] for n in live if n in self.correct for tid in due)

    def finish(self, healed_at: float, until: float, live: Iterable[int]) -> None:
        """Liveness: txs submitted to a correct node in [healed_at, until] are executed by every
        correct node in `live` (up at the end, not crashed after `healed_at`) by the time this is called."""
        due = self.due(healed_at, until)
        for node in [n for n in live if n in self.correct]:
            done = self.executed[node]
            missing = sum(1 for tid in due if tid not in done)
            if missing:
                self.violations.add("liveness", f"node {node}: {missing} of {len(due)} txs submitted after "
                                                f"the heal at {healed_at:.2f}s not committed (height "
                                                f"{self.heights[node]})")

    def latencies(self) -> list[float]:
        """Submit -> commit at the node the tx was handed to (else at the first correct node)."""
        out = []
        for tid, (t, _) in self.submitted.items():
            done = self.commit_at_origin.get(tid, self.first_commit.get(tid))
            if done is not None:
                out.append(done - t)
        return out
