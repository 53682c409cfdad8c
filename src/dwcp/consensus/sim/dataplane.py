"""Declared batches: the simulator's data plane at the seed's scale, with no payload bytes.

A real Narwhal worker seals client transactions into 500 KB batches, sends each to the same-index
worker of every peer, hashes and stores what it receives, and tells its primary ("batch stored";
for its own batch, once 2f + 1 workers hold it). Here a batch is `(digest, declared size, tx count)`:
it costs its declared size on the sender's uplink and each receiver's downlink (`NetworkModel`) and
its hashing on both workers' CPU lanes (`CpuModel`), and nothing in memory. The primaries are the
real cores: what they get is exactly the node's `Local` input, built by the protocol's hooks
(registry `sim_scale`, e.g. `bullshark.simworker`), and what they ask of their worker (`ToLocal`:
fetch these digests; this height committed these batches) comes back through the same hooks.

Load: `rate` tx/s of `tx_size` bytes, an equal share per node (clients connect to every worker, as in
Narwhal's benchmark; a crashed node's clients get nothing in). A worker seals every `interval` =
min(max_batch_delay, batch_bytes / (share * tx_size)) seconds, so a batch is full or a delay old.
Backpressure as the real worker's: while `max_inflight` of its batches wait for 2f + 1 acknowledgements,
a worker reads no client, so that interval's transactions are not sent (counted in `throttled_txs`).

Byzantine workers (`Behaviour.batches`): "none" (a silent node: seals, sends and acknowledges
nothing) and "withhold" (tells its primary its batches are acknowledged but sends them to nobody and
answers no fetch, so its headers name batches no correct node can get).

Liveness: every batch a correct node sealed is due, and a run is settled once every correct node up
at the end has executed all of them (`unsettled`; the runner drains until then and counts what is
still missing as a liveness violation). Declared runs do not restart nodes, so nothing due is lost.

Figures kept: per correct node, the commits while the load ran after `warmup` (throughput is the
transactions committed between the first and the last of them, over the time between, so a window
does not gain or lose a whole height at its edges, as Narwhal's benchmark measures); per batch of a
correct origin sealed between `warmup` and the end of the load, sealed -> committed at its origin,
whenever that is (consensus latency plus the batch's dissemination; Narwhal's consensus latency
starts later, at header creation). `goodput` counts instead the transactions of batches sealed in the
window that the slowest node executed by the end of the run, over the window: with few heights in a short
window it is the steadier figure (it cannot exceed what the correct nodes' clients got in).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from dwcp.consensus.core.inputs import Local
from dwcp.consensus.sim.cpu import WORKER
from dwcp.consensus.sim.network import DATA

if TYPE_CHECKING:
    from dwcp.consensus.sim.invariants import InvariantChecker
    from dwcp.consensus.sim.nodes import Node
    from dwcp.consensus.sim.runner import Simulation

ACK_SIZE = 48  # a worker's acknowledgement (digest + frame header): too small to model its bandwidth
REFETCH_AFTER = 0.2  # seconds before the same batch is requested again by the same node


@dataclass(frozen=True, slots=True)
class Fetch:
    """The primary wants these batches; from `peer`'s worker, or from anyone (-1)."""

    digests: tuple[bytes, ...]
    peer: int


@dataclass(frozen=True, slots=True)
class Executed:
    """Height `height` committed these batches: (digest, tx count, size) in order."""

    height: int
    batches: tuple[tuple[bytes, int, int], ...]


class ScaleHooks(Protocol):
    """What a protocol gives the simulator for seed-scale runs (registry `sim_scale`)."""

    core_kwargs: dict[str, Any]  # core arguments with a worker outside the core

    def stored(self, digest: bytes, txs: int, size: int, own: bool) -> Any:
        """The `Local` message a node's primary gets from its worker: this batch is stored."""

    def command(self, message: Any) -> Fetch | Executed | None:
        """A primary's `ToLocal` message, read."""

    def signatures(self, message: Any) -> int:
        """How many signatures besides the envelope's a receiver verifies in `message`."""


class _Batch:
    __slots__ = ("origin", "sealed", "txs", "size", "acks")

    def __init__(self, origin: int, sealed: float, txs: int, size: int) -> None:
        self.origin, self.sealed, self.txs, self.size, self.acks = origin, sealed, txs, size, 1


class DeclaredDataPlane:
    def __init__(self, sim: Simulation, hooks: ScaleHooks, *, rate: float, tx_size: int, batch_bytes: int,
                 max_batch_delay: float, warmup: float, end: float, max_inflight: int = 16) -> None:
        self.sim, self.hooks = sim, hooks
        n = len(sim.nodes)
        self.share = rate / n  # tx/s each node's clients send
        full_after = batch_bytes / (self.share * tx_size) if self.share > 0 else max_batch_delay
        self.interval = min(max_batch_delay, full_after)
        self.tx_size, self.warmup, self.end = tx_size, warmup, end
        self.quorum = sim.committee.quorum
        self.batches: dict[bytes, _Batch] = {}
        self.holds: list[set[bytes]] = [set() for _ in range(n)]
        self._carry = [0.0] * n  # fractional transactions not yet in a batch
        self._seq = 0
        self._asked: dict[tuple[int, bytes], float] = {}
        self._turn = list(range(n))
        self.executed = [0] * n  # txs executed by each node in the window
        self._first: list[tuple[float, int] | None] = [None] * n  # (time, executed) at the window's first commit
        self._last: list[tuple[float, int] | None] = [None] * n
        self.due = 0  # batches sealed by correct nodes
        self.executed_due = [0] * n  # ... of which each node executed
        self.executed_sealed_in_window = [0] * n  # txs of correct nodes' batches sealed in the window
        self.latencies: list[float] = []
        self.sealed = 0
        self.fetches = 0
        self.max_inflight = max_inflight  # WorkerSetup.max_inflight on a node
        self.inflight = [0] * n  # own batches waiting for a quorum of acknowledgements
        self._incarnation = [0] * n  # a restarted worker's unacknowledged batches no longer hold it back
        self.throttled_txs = 0

    def start(self) -> None:
        if self.share <= 0:
            return
        for node in self.sim.nodes:
            offset = self.sim.rng_load.random() * self.interval
            self.sim.clock.at(offset, self._seal, node)

    # -- sealing and dissemination ------------------------------------------------------------
    def _seal(self, node: Node) -> None:
        sim = self.sim
        if not sim.loading:
            return
        sim.clock.after(self.interval, self._seal, node)
        kind = node.behaviour.batches
        if not node.up or kind == "none":
            return
        a = node.node_id
        want = self._carry[a] + self.share * self.interval
        txs = int(want)
        self._carry[a] = want - txs
        if txs == 0:
            return
        if self._incarnation[a] != node.incarnation:
            self._incarnation[a], self.inflight[a] = node.incarnation, 0
        if self.inflight[a] >= self.max_inflight:
            self.throttled_txs += txs
            return
        self._seq += 1
        d = hashlib.blake2b(f"{a}:{self._seq}".encode(), digest_size=32).digest()
        size = txs * self.tx_size
        now = sim.clock.now
        self.batches[d] = _Batch(a, now, txs, size)
        self.due += node.correct
        self.holds[a].add(d)
        self.sealed += 1
        ready = now if sim.cpu is None else sim.cpu.run(a, WORKER, now, sim.cpu.costs.batch(size))
        if kind == "withhold" or self.quorum <= 1:
            sim.clock.at(ready, self._own_stored, node, node.incarnation, d)
            return
        self.inflight[a] += 1
        self._transmit(ready, a, [b for b in sim.committee.ids if b != a], d, True)

    def _transmit(self, start: float, a: int, dsts: list[int], d: bytes, ack: bool) -> None:
        sim = self.sim
        size = self.batches[d].size
        for b, arrive in zip(dsts, sim.net.transmit_all(start, a, dsts, size, DATA), strict=True):
            if arrive is not None:
                target = sim.nodes[b]
                sim.clock.at(arrive, self._arrive, target, target.incarnation, a, d, ack)

    def _arrive(self, node: Node, incarnation: int, src: int, d: bytes, ack: bool) -> None:
        sim = self.sim
        if not node.up or node.incarnation != incarnation or not sim.net.connected(src, node.node_id):
            return
        b, size, now = node.node_id, self.batches[d].size, sim.clock.now
        ready = sim.net.downlink(now, b, size, DATA) if sim.net.downlink_bps else now
        if sim.cpu is not None:
            ready = sim.cpu.run(b, WORKER, ready, sim.cpu.costs.batch(size))
        sim.clock.at(ready, self._store, node, incarnation, src, d, ack)

    def _store(self, node: Node, incarnation: int, src: int, d: bytes, ack: bool) -> None:
        sim = self.sim
        if not node.up or node.incarnation != incarnation:
            return
        b = node.node_id
        if d not in self.holds[b]:
            self.holds[b].add(d)
            batch = self.batches[d]
            self._local(node, self.hooks.stored(d, batch.txs, batch.size, False))
        if ack and node.behaviour.batches != "none":
            origin = sim.nodes[src]
            sim.clock.after(sim.net.one_way(b, src), self._ack, origin, origin.incarnation, d)

    def _ack(self, node: Node, incarnation: int, d: bytes) -> None:
        if not node.up or node.incarnation != incarnation:
            return
        batch = self.batches[d]
        batch.acks += 1
        if batch.acks == self.quorum:
            self.inflight[node.node_id] -= 1
            self._own_stored(node, incarnation, d)

    def _own_stored(self, node: Node, incarnation: int, d: bytes) -> None:
        if node.up and node.incarnation == incarnation:
            batch = self.batches[d]
            self._local(node, self.hooks.stored(d, batch.txs, batch.size, True))

    def _local(self, node: Node, message: Any) -> None:
        for k in range(len(node.instances)):
            self.sim._feed(node, k, Local(message=message))

    # -- the primary's commands ---------------------------------------------------------------
    def command(self, node: Node, message: Any) -> None:
        cmd = self.hooks.command(message)
        if isinstance(cmd, Fetch):
            self._fetch(node, cmd)
        elif isinstance(cmd, Executed):
            self._executed(node, cmd)

    def _fetch(self, node: Node, cmd: Fetch) -> None:
        sim, a, now = self.sim, node.node_id, self.sim.clock.now
        peers = [p for p in sim.committee.ids if p != a]
        for d in cmd.digests:
            if d in self.holds[a] or d not in self.batches or now - self._asked.get((a, d), -1.0) < REFETCH_AFTER:
                continue
            self._asked[(a, d)] = now
            if cmd.peer >= 0:
                holder = cmd.peer
            else:  # anyone: ask the peers in turn
                self._turn[a] += 1
                holder = peers[self._turn[a] % len(peers)]
            self.fetches += 1
            server = sim.nodes[holder]
            sim.clock.after(sim.net.one_way(a, holder), self._serve, server, server.incarnation, a, d)

    def _serve(self, server: Node, incarnation: int, requester: int, d: bytes) -> None:
        sim = self.sim
        if not server.up or server.incarnation != incarnation or server.behaviour.batches != "send":
            return
        if d in self.holds[server.node_id] and sim.net.connected(server.node_id, requester):
            self._transmit(sim.clock.now, server.node_id, [requester], d, False)

    def _executed(self, node: Node, cmd: Executed) -> None:
        if not node.correct:
            return
        a, now, batches = node.node_id, self.sim.clock.now, self.sim.nodes
        self.executed_due[a] += sum(1 for d, _, _ in cmd.batches if d in self.batches and
                                    batches[self.batches[d].origin].correct)
        for d, _, _ in cmd.batches:  # latency of batches sealed in the window, whenever they commit
            batch = self.batches.get(d)
            if batch is None or not self.warmup <= batch.sealed <= self.end:
                continue
            if batch.origin == a:
                self.latencies.append(now - batch.sealed)
            if batches[batch.origin].correct:
                self.executed_sealed_in_window[a] += batch.txs
        if not self.warmup <= now <= self.end:
            return
        self.executed[a] += sum(txs for _, txs, _ in cmd.batches)
        if self._first[a] is None:
            self._first[a] = (now, self.executed[a])
        self._last[a] = (now, self.executed[a])

    # -- liveness and figures ------------------------------------------------------------------
    def finish(self, checker: InvariantChecker, live: list[int]) -> None:
        for node, missing in self.unsettled(live).items():
            checker.violations.add("liveness", f"node {node}: {missing} of {self.due} declared batches of "
                                               "correct nodes not committed")

    def unsettled(self, live: list[int]) -> dict[int, int]:
        """Correct live node -> due batches it has not executed (empty when settled)."""
        out = {}
        for i in live:
            if self.sim.nodes[i].correct and self.executed_due[i] < self.due:
                out[i] = self.due - self.executed_due[i]
        return out

    def goodput(self) -> float:
        """Tx/s of the window's batches (of correct nodes) the slowest correct live node executed."""
        live = [n.node_id for n in self.sim.nodes if n.correct and n.up]
        window = self.end - self.warmup
        return min((self.executed_sealed_in_window[i] for i in live), default=0) / window if window > 0 else 0.0

    def throughput(self) -> float:
        """Committed tx/s of the slowest correct live node (module docstring); 0 below two commits."""
        rates = []
        for n in self.sim.nodes:
            first, last = self._first[n.node_id], self._last[n.node_id]
            if n.correct and n.up:
                ok = first is not None and last is not None and last[0] > first[0]
                rates.append((last[1] - first[1]) / (last[0] - first[0]) if ok else 0.0)
        return min(rates, default=0.0)
