"""The only loop that runs a protocol core for real: inputs in, outputs executed over TCP and SQLite.

Theory of operation. Everything happens on one asyncio loop, one input at a time:
- peer frames (tcp.py) are opened by the codec (signature checked, sender = authenticated peer)
  and fed as `Received`; the types a core lists in `lazy_messages` (PBFT's votes) are fed unchecked
  and the core checks them when they would complete a quorum; timers fire as `TimerFired`; HTTP
  submissions arrive as `Submitted` (or one `SubmittedBatch` per batched request);
- each `core.handle(time.monotonic(), input)` returns outputs executed in order: `Send`,
  `Multicast`, `Broadcast` seal once and queue per peer; `SetTimer`/`CancelTimer` map to
  `loop.call_later` handles; `Rejected` is counted; `Commit` goes to the group-commit writer and
  its transactions are acknowledged (latency observed, status "committed") only once durable;
- catch-up (sync.py) runs beside the core: heights are gossiped on the SYNC channel, to a peer
  that is behind with the block and certificate proving it (a claim to be ahead is believed only
  with a proof that `core.verify_certificate` accepts), a node that is
  behind (or whose core asked with `RequestSync`) fetches blocks from a peer, checks each commit
  certificate with `core.verify_certificate` and feeds it as `Fetched`; the core then emits the
  `Commit`, so the log is only ever written from `Commit` outputs, in height order.
On start the node replays its own log into the core (`Restored`, trusted) before `Started`.
There is no protocol logic here: what to send, when to commit, is the core's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from dwcp.consensus.core.codec import Codec, DecodeError, encode
from dwcp.consensus.core.committee import Committee
from dwcp.consensus.core.crypto import Signer, Verifier
from dwcp.consensus.core.inputs import (
    Fetched,
    Input,
    Local,
    Received,
    Recovered,
    Restored,
    Started,
    Submitted,
    SubmittedBatch,
    Timer,
    TimerFired,
)
from dwcp.consensus.core.messages import Block, Certificate, Transaction
from dwcp.consensus.core.outputs import (
    Broadcast,
    CancelTimer,
    Commit,
    Multicast,
    Output,
    Persist,
    Rejected,
    RequestSync,
    Send,
    SetTimer,
    ToLocal,
    TxDropped,
)
from dwcp.consensus.registry import ProtocolMetrics
from dwcp.consensus.storage import BlockStore, CoreState, StoredBlock
from dwcp.consensus.transport.framing import Channel
from dwcp.consensus.transport.metrics import TransportMetrics, message_kind
from dwcp.consensus.transport.sync import (
    CatchUpPlanner,
    SyncBlock,
    SyncBlocks,
    SyncDecodeError,
    SyncRequest,
    SyncStatus,
    apply_fetched,
    decode_sync,
    encode_sync,
)
from dwcp.consensus.transport.tcp import TcpTransport, TransportConfig
from dwcp.consensus.transport.trace import StageTrace, from_env
from dwcp.consensus.transport.writer import CommitWriter

log = logging.getLogger("dwcp.consensus.driver")
_CONSENSUS, _SYNC = Channel.CONSENSUS, Channel.SYNC  # per frame: globals, not enum class attributes
SYNC_RESPONSE_BYTES = 6 * 1024 * 1024  # under the SYNC channel's 8 MiB frame limit
REPORT_INTERVAL = 0.1  # seconds between status snapshots for the observer while blocks commit
# Messages nothing waits on within milliseconds (a checkpoint moves the window of 64 heights by 8; a trust report
# counts at the next epoch): sent with `defer`, they ride with the next frame to each peer (tcp.py, DEFER_S)
# instead of a write, a read and an ACK of their own. Every other kind, and Decided (a follower's commit), at once.
DEFERRED_KINDS = frozenset({"ckpt", "trust"})
# In step with every peer (`Driver._in_step`), a node sends its sync status every STEADY_ROUNDS-th sync interval
# (2 s at the default 0.5 s) instead of every one; anything else (a peer silent, behind or ahead, a block
# missing here) sends it every interval again. A peer's last word counts as fresh for STALE_ROUNDS intervals.
STEADY_ROUNDS = 4
STALE_ROUNDS = STEADY_ROUNDS + 1


class DuplicateTransaction(Exception):
    def __init__(self, tx_id: str, status: str) -> None:
        super().__init__(f"transaction {tx_id} is already {status}")
        self.tx_id, self.status = tx_id, status


class PoolFull(Exception):
    """This node holds as many pending transactions as it may: retry later or elsewhere."""


@dataclass(frozen=True, slots=True)
class Submission:
    """What became of one submitted transaction: `pending` (taken, or already pending: `detail` says so),
    `committed` (already committed before), or `refused` (the pending pool is full; `detail` says why)."""

    tx_id: str
    status: str
    detail: str = ""


@dataclass
class DriverConfig:
    protocol: str
    sync_interval: float = 0.5
    sync_max_blocks: int = 64
    sync_timeout: float = 2.0
    max_pending: int = 100_000
    drain_timeout: float = 3.0  # on stop, how long transactions taken here may take to become durable
    peers_needed: int = 0  # peers to reach for the protocol to make progress (the registry's live_peers)
    # A block holding none of the transactions submitted here is written without an fsync of its own and is
    # durable with the next synced write, at most this many seconds later (writer.py); 0: fsync every block.
    max_unsynced: float = 0.0


class Driver:
    def __init__(
        self,
        *,
        core: Any,
        certificate: type,
        codec: Codec,
        signer: Signer,
        verifier: Verifier,
        committee: Committee,
        store: BlockStore,
        transport: TransportConfig,
        config: DriverConfig,
        metrics: TransportMetrics,
        observer: ProtocolMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.core, self.codec, self.signer, self.verifier = core, codec, signer, verifier
        self.committee, self.store, self.config = committee, store, config
        self.metrics, self.observer, self.clock = metrics, observer, clock
        self.me = signer.node_id
        self.state = CoreState(store.path)  # the core's Persist-ed values
        self.local_sink: Callable[[Any], None] | None = None  # where ToLocal outputs go (a node component)
        self.status_extra: dict[str, Any] = {}  # what node components add to /v1/status (e.g. a worker address)
        self.peers = tuple(i for i in committee.ids if i != self.me)
        self.transport = TcpTransport(transport, self._on_frame, metrics)
        self.writer = CommitWriter(store, config.max_unsynced)
        self.planner = CatchUpPlanner(config.sync_max_blocks, config.sync_timeout)
        self._pending: dict[bytes, float] = {}  # tx id -> submit time, txs submitted here until durable
        self._waiters: dict[bytes, asyncio.Future] = {}  # clients waiting for a commit (POST ?wait=true)
        self._timers: dict[Timer, asyncio.TimerHandle] = {}
        self._next_height = store.last_height + 1  # next height to hand to the writer
        self._logged_height = store.last_height  # top of the log (written; durable up to store.synced_height)
        self._tip: tuple[bytes, bytes] = (b"", b"")  # block `_logged_height` and its certificate, encoded
        # Each peer's last word on its own height (proven or not), ours when it arrived, and when.
        self._peer_heights: dict[int, tuple[int, int, float]] = {}
        self._gossip: asyncio.Task | None = None
        self._quiet_rounds = 0  # sync intervals since our status last went out (`_gossip_round`)
        self._running = False
        self._reported_at = float("-inf")
        self.failed: str | None = None  # set when the log could not be written: the node stops acknowledging
        self._draining = False  # stopping: submissions are refused (503), those taken are seen to commit
        self._lazy: tuple[type, ...] = getattr(core, "lazy_messages", ())  # the core checks these itself
        self._batch_submissions: bool = getattr(core, "batch_submissions", False)  # takes SubmittedBatch
        self._block_decoder = msgspec.msgpack.Decoder(Block)
        # The protocol's certificate type (registry): the driver stores, serves and hands over
        # certificates without knowing their shape.
        self._cert_decoder = msgspec.msgpack.Decoder(certificate)
        self.trace: StageTrace | None = from_env(self.me)  # commit-path stage trace (trace.py), off by default
        self.writer.trace = self.trace

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        for key, value in self.state.items():
            self._execute(self.core.handle(self.clock(), Recovered(key=key, value=value)))
        restored = 0
        for stored in self.store.scan(chunk_bytes=SYNC_RESPONSE_BYTES):
            block, cert = self._block_decoder.decode(stored.block), self._cert_decoder.decode(stored.certificate)
            self._execute(self.core.handle(self.clock(), Restored(
                height=stored.height, block=block, certificate=cert, tx_ids=stored.tx_ids)))
            self._tip = (stored.block, stored.certificate)
            restored += 1
        log.info("node %s restored %d blocks (height %d)", self.me, restored, self.store.last_height)
        self.writer.start()
        self._running = True
        await self.transport.start()
        self._feed(Started())
        self._gossip = asyncio.create_task(self._gossip_loop(), name="sync-gossip")
        self._report()

    async def drain(self) -> None:
        """The first step of a stop (SIGTERM): refuse new submissions, then give the transactions this node
        acknowledged with 202 up to `drain_timeout` seconds to become durable while everything (peers,
        timers, the worker) still runs, so a stop never drops what it took. What is still pending after
        that is the protocol's to recover on restart (Bullshark persists its sealed batches)."""
        self._draining = True
        deadline = self.clock() + self.config.drain_timeout
        while self._pending and self._running and self.failed is None and self.clock() < deadline:
            await asyncio.sleep(0.01)
        log.info("node %s stopping with %d transactions taken here not yet durable", self.me, len(self._pending))

    async def stop(self) -> None:
        self._running = False
        if self._gossip is not None:
            self._gossip.cancel()
            await asyncio.gather(self._gossip, return_exceptions=True)
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        await self.transport.stop()
        await self.writer.stop()
        self.store.close()
        self.state.close()
        if self.trace is not None:
            self.trace.unwatch_gc()
            self.trace.flush()

    # -- inputs ------------------------------------------------------------------------------
    def _feed(self, inp: Input) -> list[Output]:
        outputs = self.core.handle(self.clock(), inp)
        self._execute(outputs)
        return outputs

    def submit(self, payload: bytes) -> str:
        """Hand a client transaction to the core; returns its hex id. Raises DuplicateTransaction, PoolFull."""
        (outcome,) = self.submit_many((payload,))
        if outcome.status in ("pending", "committed") and outcome.detail:
            raise DuplicateTransaction(outcome.tx_id, outcome.status)
        if outcome.status == "refused":
            raise PoolFull(outcome.detail)
        return outcome.tx_id

    def submit_many(self, payloads: Sequence[bytes]) -> list[Submission]:
        """Hand client transactions to the core in one step (`SubmittedBatch` where the core takes it, so
        they are forwarded to the primary in one signed batch); one `Submission` per payload, in order.
        Raises PoolFull when this node can no longer commit at all."""
        if self.failed is not None:
            raise PoolFull(f"this node cannot commit: {self.failed}")
        if self._draining:
            raise PoolFull("this node is stopping: submit to another node of the cluster")
        outcomes: list[Submission] = []
        fresh: dict[bytes, int] = {}  # tx id -> its index in outcomes
        txs: list[Transaction] = []
        for payload in payloads:
            tx = Transaction(payload=payload)
            tid = tx.id
            if tid in self._pending:  # submitted here before, or earlier in this batch
                outcomes.append(Submission(tid.hex(), "pending", "already pending"))
            # Committed txs are refused by the core below (its pool remembers every committed id, restored
            # from the log at start, and knows a commit before the log does): no database lookup per submit.
            elif len(self._pending) >= self.config.max_pending:
                outcomes.append(Submission(tid.hex(), "refused", f"{len(self._pending)} transactions pending here"))
            else:
                self._pending[tid] = self.clock()
                fresh[tid] = len(outcomes)
                outcomes.append(Submission(tid.hex(), "pending"))
                txs.append(tx)
        if self.trace is not None and txs:
            self.trace.txs("S", [tx.id for tx in txs])
        if len(txs) > 1 and self._batch_submissions:
            inputs: list[Input] = [SubmittedBatch(txs=tuple(txs))]
        else:
            inputs = [Submitted(tx=tx) for tx in txs]
        for inp in inputs:
            for out in self._feed(inp):
                if isinstance(out, TxDropped) and out.tx_id in fresh:
                    self._pending.pop(out.tx_id, None)
                    at = fresh.pop(out.tx_id)
                    if out.reason in ("duplicate", "committed"):  # known to the core from a peer or a block
                        status = "pending" if out.reason == "duplicate" else "committed"
                        outcomes[at] = Submission(out.tx_id.hex(), status, f"already {status}")
                    else:
                        outcomes[at] = Submission(out.tx_id.hex(), "refused",
                                                  f"the protocol refused the transaction: {out.reason}")
        return outcomes

    async def wait_committed(self, tx_hex: str, timeout: float) -> int | None:
        """Height once the transaction is durably committed, or None after `timeout` seconds."""
        (height,) = await self.wait_committed_many((tx_hex,), timeout)
        return height

    async def wait_committed_many(self, tx_hexes: Sequence[str], timeout: float) -> list[int | None]:
        """Each transaction's height once durably committed; None for those still not after `timeout` seconds."""
        heights: list[int | None] = []
        waiting: dict[int, asyncio.Future] = {}
        for i, tx_hex in enumerate(tx_hexes):
            tid = bytes.fromhex(tx_hex)
            if tid not in self._pending:  # submitted here and not yet durable, or else look it up
                heights.append(self._durable_tx_height(tid))
                continue
            heights.append(None)
            fut = self._waiters.get(tid) or asyncio.get_running_loop().create_future()
            self._waiters[tid] = waiting[i] = fut
        if waiting:
            await asyncio.wait(set(waiting.values()), timeout=timeout)  # never cancels them
            for i, fut in waiting.items():
                if fut.done() and not fut.cancelled():
                    heights[i] = fut.result()
            if self.trace is not None:
                self.trace.txs("A", [bytes.fromhex(tx_hexes[i]) for i in waiting])
        return heights

    def deliver_local(self, message: Any) -> None:
        """A fact from another component of this node (its worker), fed to the core as `Local`."""
        if self._running:
            self._feed(Local(message=message))

    def _fire(self, timer: Timer) -> None:
        self._timers.pop(timer, None)
        if self._running:
            self._feed(TimerFired(timer=timer))

    def _on_frame(self, peer: int, channel: Channel, payload: bytes) -> None:
        if channel is _CONSENSUS:
            opened = self.codec.open(self.verifier, payload, self._lazy)
            if isinstance(opened, DecodeError):
                self.metrics.rejected(opened.reason)
                return
            if opened.sender != peer:  # envelopes are sealed by the node that sends them
                self.metrics.rejected("sender_mismatch")
                return
            self.metrics.received(message_kind(opened.message))
            if self.trace is not None:
                self._trace_in(opened.message)
            self._feed(Received(sender=peer, message=opened.message, signature=opened.signature,
                                verified=opened.verified))
        elif channel is _SYNC:
            try:
                msg = decode_sync(payload)
            except SyncDecodeError:
                self.metrics.rejected("malformed")
                return
            self.metrics.received(f"sync_{type(msg).__name__[4:].lower()}")
            self._on_sync(peer, msg)
        else:
            self.metrics.rejected("unexpected_channel")

    # -- outputs -----------------------------------------------------------------------------
    def _execute(self, outputs: list[Output]) -> None:
        for out in outputs:
            if isinstance(out, Send):
                self._send_to((out.to,), out.message)
            elif isinstance(out, Multicast):
                self._send_to(out.to, out.message)
            elif isinstance(out, Broadcast):
                self._send_to(self.peers, out.message)
            elif isinstance(out, SetTimer):
                old = self._timers.pop(out.timer, None)
                if old is not None:
                    old.cancel()
                self._timers[out.timer] = asyncio.get_running_loop().call_later(out.delay, self._fire, out.timer)
            elif isinstance(out, CancelTimer):
                handle = self._timers.pop(out.timer, None)
                if handle is not None:
                    handle.cancel()
            elif isinstance(out, Commit):
                self._commit(out)
            elif isinstance(out, Rejected):
                self.metrics.rejected(out.reason)
            elif isinstance(out, RequestSync):
                for peer in out.peers:
                    self.planner.on_status(peer, out.to_height)
                self._request_missing()
            elif isinstance(out, Persist):
                self.state.save(out.key, out.value)  # before the outputs that follow (see CoreState)
            elif isinstance(out, ToLocal):
                if self.local_sink is not None:  # e.g. the node's worker process (bullshark)
                    self.local_sink(out.message)
            elif isinstance(out, TxDropped):
                self._pending.pop(out.tx_id, None)
                self._waiters.pop(out.tx_id, None)  # its waiters time out; bounded by max_pending meanwhile

    def _send_to(self, peers: tuple[int, ...], message: Any) -> None:
        if self.trace is not None:
            self._trace_out(message)
        data = self.codec.seal(self.signer, message)
        kind = message_kind(message)
        sent = self.transport.send_many((p for p in peers if p != self.me), Channel.CONSENSUS, data,
                                        defer=kind in DEFERRED_KINDS)
        self.metrics.sent(kind, sent)

    def _commit(self, c: Commit) -> None:
        if c.height < self._next_height:
            log.debug("height %d already committed here; ignoring the repeat", c.height)
            return
        if c.height > self._next_height:  # cores emit in order; a gap is a driver/core bug
            raise RuntimeError(f"core committed height {c.height} but the log expects {self._next_height}")
        stored = StoredBlock(
            height=c.height, digest=c.certificate.digest, block=encode(c.block), certificate=encode(c.certificate),
            tx_ids=tuple(t.id for t in c.txs), committed_at=time.time(),
        )
        self._next_height += 1
        if self.trace is not None:
            self.trace.height("C", c.height)
            self.trace.block_txs(c.height, stored.tx_ids)
        # Durable before it is answered: a block with a transaction submitted here is fsynced at once (and
        # with it every block before it); the others within `max_unsynced`, before anyone is told of them.
        waited = bool(self._pending) and any(t in self._pending for t in stored.tx_ids)
        self.writer.submit(stored, sync=waited).add_done_callback(lambda fut: self._durable(c, stored, fut))

    def _durable(self, c: Commit, stored: StoredBlock, fut: asyncio.Future) -> None:
        if fut.cancelled() or fut.exception() is not None:
            # Fail-stop: the log can no longer be extended, so this node must not acknowledge anything.
            why = "cancelled" if fut.cancelled() else fut.exception()
            self.failed = f"block {c.height} could not be made durable: {why}"
            log.critical("%s; refusing submissions from now on", self.failed)
            return
        self._logged_height = c.height
        self._tip = (stored.block, stored.certificate)
        if self.trace is not None:
            self.trace.height("D", c.height)
            self.trace.maybe_flush()
        now = self.clock()
        latencies = [now - self._pending.pop(t.id) for t in c.txs if t.id in self._pending]
        if self._waiters:
            for t in c.txs:
                waiter = self._waiters.pop(t.id, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(c.height)
        if self.observer is not None:
            self.observer.committed(c.height, len(c.txs), latencies)
        if now - self._reported_at >= REPORT_INTERVAL:
            self._report()

    def _trace_in(self, message: Any) -> None:
        block = getattr(message, "block", None)
        if isinstance(block, Block):  # a proposal (PBFT's pre-prepare, ProBFT's Proposal)
            self.trace.height("P", block.height)
        elif isinstance(getattr(message, "txs", None), tuple):  # forwarded client txs (TxBatch)
            self.trace.txs("F", [tx.id for tx in message.txs if isinstance(tx, Transaction)])

    def _trace_out(self, message: Any) -> None:
        block = getattr(message, "block", None)
        if isinstance(block, Block):
            self.trace.height("P", block.height)
        elif getattr(message, "kind", None) == "commit" and isinstance(getattr(message, "height", None), int):
            self.trace.height("V", message.height)

    def _report(self) -> None:
        """Status gauges: after blocks at most every REPORT_INTERVAL, and every sync interval."""
        self._reported_at = self.clock()
        if self.observer is not None:
            self.observer.update(self.status())

    # -- catch-up ----------------------------------------------------------------------------
    async def _gossip_loop(self) -> None:
        while True:
            try:
                self._gossip_round()
            except Exception:  # a bug here must not silently end catch-up for the node's lifetime
                log.exception("sync gossip round failed")
            await asyncio.sleep(self.config.sync_interval)

    def _gossip_round(self) -> None:
        """One sync interval: our status to the peers (every STEADY_ROUNDS-th round only while in step with
        every peer), the next catch-up request if any, a status report."""
        self._quiet_rounds += 1
        if self._quiet_rounds >= STEADY_ROUNDS or not self._in_step():
            self._send_status()
            self._quiet_rounds = 0
        self._request_missing()
        self._report()

    def _in_step(self) -> bool:
        """Every peer's last status came within STALE_ROUNDS sync intervals and was within one block of our
        height when it came (so it needs no proof from us, and we none from it), and nothing is missing here.

        The statuses were ~20 of an idle node's ~23 wake-ups a second (nine peers, twice a second), and at
        light load (a block every ~0.1-0.2 s) ~3.6 frames in and out per block; a node in step needs none of
        them: a peer that falls behind says so in its next status (within STEADY_ROUNDS intervals), which
        makes its peers send every interval, with the proof, until it is level again; a peer that goes
        silent does the same once its word is stale, and so does a status showing us behind."""
        height = self._logged_height
        if height <= 0 or self.planner.behind(height):
            return False
        fresh = self.clock() - STALE_ROUNDS * self.config.sync_interval
        for p in self.peers:
            said = self._peer_heights.get(p)
            if said is None or said[2] < fresh or abs(said[0] - said[1]) > 1:
                return False
        return True

    def _send_status(self) -> None:
        """Our height to every peer; to a peer that said it is behind, with the block and certificate that
        prove it (a peer believes no height without): one block per lagging peer per sync interval.

        "Behind" is judged when the peer said it: its height below ours at the time its status arrived
        (or nothing heard from it yet). Under load a live peer's last status is always a few blocks older
        than our height now, so comparing with our height now sent the tip block and its certificate to
        nearly every peer every interval, to be discarded (issue 12); a peer that really lags (stalled,
        restarted, cut off) says a height below ours in every status it sends, and gets the proof. A peer
        silent for STALE_ROUNDS intervals (peers in step speak every STEADY_ROUNDS) is judged by its last
        word against our height now."""
        height = self._logged_height
        if height <= 0:
            behind: list[int] = []
        else:
            stale = self.clock() - STALE_ROUNDS * self.config.sync_interval
            behind = [p for p in self.peers if (said := self._peer_heights.get(p)) is None
                      or said[0] < (said[1] if said[2] >= stale else height)]
        if behind:
            proof = encode_sync(SyncStatus(height=height, block=self._tip[0], certificate=self._tip[1]))
            self.transport.send_many(behind, Channel.SYNC, proof)
        bare = encode_sync(SyncStatus(height=height))
        self.transport.send_many([p for p in self.peers if p not in behind], Channel.SYNC, bare)

    def _request_missing(self) -> None:
        plan = self.planner.next_request(self.clock(), self._next_height - 1)
        if plan is not None:
            peer, request = plan
            self.transport.send(peer, Channel.SYNC, encode_sync(request))

    def _on_sync(self, peer: int, msg: SyncStatus | SyncRequest | SyncBlocks) -> None:
        if isinstance(msg, SyncStatus):
            self._peer_heights[peer] = (msg.height, self._logged_height, self.clock())
            if msg.height < self._next_height or msg.height <= self.planner.peer_heights.get(peer, -1):
                return  # not ahead of us, or already proven: nothing to act on
            if not msg.block:
                return  # a claim without proof (the peer will prove it once it sees we are behind)
            if not self._proves_height(msg.height, msg.block, msg.certificate):
                self.metrics.rejected("unproven_height")
                return
            self.planner.on_status(peer, msg.height)
            self._request_missing()
        elif isinstance(msg, SyncRequest):
            end = min(msg.end, msg.start + self.config.sync_max_blocks - 1, self._logged_height)
            blocks = self.store.range(msg.start, end, max_bytes=SYNC_RESPONSE_BYTES) if msg.start <= end else []
            response = SyncBlocks(blocks=[SyncBlock(b.height, b.block, b.certificate) for b in blocks])
            self.transport.send(peer, Channel.SYNC, encode_sync(response))
        else:
            self._apply_fetched(peer, msg.blocks)

    def _apply_fetched(self, peer: int, blocks: list[SyncBlock]) -> None:
        def decoded():  # lazily, so blocks committed meanwhile are not decoded at all
            for item in blocks:
                if item.height >= self._next_height:
                    block, cert = self._block_decoder.decode(item.block), self._cert_decoder.decode(item.certificate)
                    yield item.height, block, cert

        def verify(height: int, block: Block, cert: Certificate) -> bool:
            return block.height == height and self.core.verify_certificate(height, block, cert)

        def feed(block: Block, cert: Certificate) -> None:
            self._feed(Fetched(sender=peer, block=block, certificate=cert))

        try:
            if not apply_fetched(self.planner, peer, decoded(), lambda: self._next_height, verify, feed):
                self.metrics.rejected("bad_certificate")
                log.warning("node %s sent a block with an invalid certificate", peer)
                return
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.metrics.rejected("malformed")
            self.planner.forget(peer)
            return
        self._request_missing()

    def _proves_height(self, height: int, block: bytes, certificate: bytes) -> bool:
        try:
            decoded, cert = self._block_decoder.decode(block), self._cert_decoder.decode(certificate)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return False
        return decoded.height == height and self.core.verify_certificate(height, decoded, cert)

    # -- queries -----------------------------------------------------------------------------
    @property
    def height(self) -> int:
        return self._logged_height

    @property
    def peers_needed(self) -> int:
        return self.config.peers_needed

    def tx_status(self, tx_hex: str) -> tuple[str, int | None] | None:
        try:
            tid = bytes.fromhex(tx_hex)
        except ValueError:
            return None
        height = self.store.tx_height(tid)
        if height is not None and height <= self.store.synced_height:
            return "committed", height
        if tid in self._pending or height is not None:  # committed, not yet durable here: pending a moment
            return "pending", None
        return None

    def _durable_tx_height(self, tid: bytes) -> int | None:
        """The height of a transaction's block if that block is durable here (answers name no other)."""
        height = self.store.tx_height(tid)
        return height if height is not None and height <= self.store.synced_height else None

    def block(self, height: int) -> tuple[StoredBlock, Block, Any] | None:
        """A durable block with its decoded block and certificate (the protocol's type), or None."""
        stored = self.store.get(height) if height <= self.store.synced_height else None
        if stored is None:
            return None
        return stored, self._block_decoder.decode(stored.block), self._cert_decoder.decode(stored.certificate)

    def status(self) -> dict[str, Any]:
        core = dict(self.core.status())
        return {
            **core,
            "node": self.me,
            "protocol": self.config.protocol,
            "height": self._logged_height,
            "durable_height": self.store.synced_height,  # fsynced; answers name no block above it
            "log_writes": self.writer.batches,  # write transactions of the commit writer ...
            "log_fsyncs": self.writer.fsyncs,  # ... and fsyncs of the log (writer.py)
            "core_height": core.get("height"),
            "pending": len(self._pending),  # submitted here, not yet durable
            "mempool": core.get("pending"),  # the core's pool: every known uncommitted tx
            "peers_connected": sorted(self.transport.connected),
            "peers_inbound": sorted(self.transport.inbound),
            "catching_up": self.planner.behind(self._logged_height),
            "committee_size": self.committee.n,
            **self.status_extra,
        }
