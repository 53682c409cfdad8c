"""PBFT replica: a sans-IO core (Castro & Liskov 1999) with batching, pipelining, checkpoints and
view change. T-PBFT (`tpbft.Replica`) subclasses it and only changes who votes and who leads.

Phase rules: what each message must satisfy before it changes state (checked in `_check_*`, applied
in `_on_*`; anything else is dropped with `Rejected`, never raised):

| message      | accepted when                                                 | effect                                |
|--------------|---------------------------------------------------------------|---------------------------------------|
| PrePrepare   | from primary(e, v); NORMAL; (e, v) current; low < h <= high;  | store block, multicast prepare vote   |
|              | h above the NEW-VIEW's settled heights; first for (v, h);     |                                       |
|              | block well-formed, no committed txs, `check_meta` passes      |                                       |
| Vote prepare | voter in group(e, v); (e, v) current; h in window; first vote | quorum + block -> prepared, multicast |
|              | by this voter at (v, h)                                       | commit vote                           |
| Vote commit  | same                                                          | quorum + prepared -> decided; execute |
|              |                                                               | decided heights in order              |
| Checkpoint   | any member, h > stable                                        | quorum -> stable, GC (checkpoint.py)  |
| ViewChange   | member of group(e, v'), e current, v' > ours, proofs valid    | viewchange.py                         |
| NewView      | from primary(e, v'); v' >= our target; the view changes it    | enter v', prepare re-proposals        |
|              | names (fetched if missing) are valid and recompute its choice | (newview.py)                          |
| VC request / | request: answered for our current view; relay: matches the    | relay the named view changes / gather |
| relay        | pending NEW-VIEW's digest, signed by its sender, valid        |                                       |
| TxBatch      | any member                                                    | add to mempool                        |
| Decided      | certificate is a committee quorum of commit votes             | execute when next, else buffer        |
| Status       | any member                                                    | answer; catch up if behind            |

Votes are verified lazily (`lazy_messages`; votes.py): a vote's signature is checked only when it
would complete a quorum for the block we hold. Every other message arrives checked (or is checked
in `handle` if a driver passed it unchecked).

Messages for a later view or epoch are buffered (bounded) and replayed on entry, since the
protocol has no retransmission of votes. Quorums are always `committee.quorum` (2f+1 of n) even
when only a group votes, which is what keeps T-PBFT's group changes safe (docs/tpbft.md).

Hooks for subclasses: `group(e, v)` (who votes and gets the normal-case messages), `voters(e, v)` (whose
votes and view changes count; default the group), `vote_targets(e, v, h)` (whom our vote goes to; None:
we do not vote),
`primary(e, v)`, `epoch_end(e)`, `may_propose(h)`, `may_suspect_primary(now)` (the request timer's last check),
`observe(peer, event)` (events: timely, invalid, conflict),
`block_meta(h)`/`check_meta(block)` (checked on pre-prepares only: a view change re-proposes
blocks byte for byte, and its null blocks carry empty meta, which `after_execute` must accept),
and `after_execute(now, block, cert, outs, replay)` (call super: it switches epochs).
"""

from __future__ import annotations

from typing import Any

from dwcp.consensus.core import inputs
from dwcp.consensus.core.codec import block_digest, encode, signed_by, signing_bytes
from dwcp.consensus.core.committee import Committee
from dwcp.consensus.core.crypto import Signer, Verifier
from dwcp.consensus.core.inputs import Fetched, Input, Received, Restored, Started, Submitted, Timer, TimerFired
from dwcp.consensus.core.messages import Block, Certificate, Decided, Transaction, TxBatch, Vote
from dwcp.consensus.core.outputs import Multicast, Output, Rejected, SetTimer
from dwcp.consensus.core.protocol import LocalProtocolError, verify_certificate
from dwcp.consensus.pbft.checkpoint import CheckpointMixin
from dwcp.consensus.pbft.execution import ExecutionMixin
from dwcp.consensus.pbft.forwarding import ForwardingMixin
from dwcp.consensus.pbft.mempool import Mempool
from dwcp.consensus.pbft.messages import (
    Checkpoint,
    NewView,
    NewViewRequest,
    Prepared,
    PrePrepare,
    Status,
    ViewChange,
    ViewChangeRelay,
    ViewChangeRequest,
)
from dwcp.consensus.pbft.newview import NewViewMixin
from dwcp.consensus.pbft.state import BATCH, GOSSIP, REQUEST, VIEW_CHANGE, Config, Mode, Slot
from dwcp.consensus.pbft.viewchange import ViewChangeMixin
from dwcp.consensus.pbft.votes import Tally, VotingMixin

__all__ = ["BATCH", "GOSSIP", "REQUEST", "VIEW_CHANGE", "Config", "Mode", "Replica", "Slot"]


class Replica(ExecutionMixin, CheckpointMixin, ViewChangeMixin, NewViewMixin, VotingMixin, ForwardingMixin):
    protocol = "pbft"
    lazy_messages: tuple[type, ...] = (Vote,)  # drivers may hand these over unverified (see above)
    batch_submissions = True  # takes SubmittedBatch: a batched client request is forwarded as one TxBatch

    def __init__(self, *, committee: Committee, node_id: int, signer: Signer, verifier: Verifier,
                 config: Config | None = None) -> None:
        if node_id not in committee or signer.node_id != node_id:
            raise LocalProtocolError(f"node {node_id} is not in the committee or the signer is someone else's")
        self.committee, self.node_id, self.signer, self.verifier = committee, node_id, signer, verifier
        self.config = config or Config()
        self.epoch = self.view = 0
        self.mode = Mode.NORMAL
        self.height = 0  # last executed (committed) height
        self.state = b"\x00" * 32  # hash chain of committed block digests
        self.last_cert: Certificate | None = None
        self.mempool = Mempool(self.config.max_pending, self.config.max_block_bytes)
        self.slots: dict[int, Slot] = {}
        self.votes: dict[tuple[str, int, int], dict[bytes, Tally]] = {}  # (kind, view, height) -> digest -> tally
        self.voted: dict[tuple[str, int, int, int], bytes] = {}
        self.prepared: dict[int, Prepared] = {}  # highest-view proof per height above the stable checkpoint
        self.decided: dict[int, tuple[Block, Certificate]] = {}  # waiting to execute in order
        self.proposed_to = 0
        self.proposed_at = float("-inf")  # when we last proposed a block (as primary)
        self.outbox: list[Transaction] = []  # client txs submitted here, not yet forwarded to the primary
        self.own: set[bytes] = set()  # ids of client txs submitted here and not yet executed
        self.announced: set[bytes] = set()  # pending txs the whole group has been sent (not just the primary)
        self.forwarded_to: int | None = None  # the primary our own txs were last forwarded to
        self.flushed_at = float("-inf")  # when our outbox was last sent
        self.armed: set[Timer] = set()
        self.buffered: list[tuple[int, Any, bytes]] = []  # (sender, message, checked signature)
        self.buffered_by: dict[int, int] = {}  # sender -> messages of it in `buffered`
        self.view_changes = 0
        self._init_checkpoints()
        self._init_view_change()
        self._init_new_view()

    # ---- who votes and who leads (T-PBFT overrides these) ----
    def group(self, epoch: int, view: int) -> tuple[int, ...]:
        return self.committee.ids

    def primary(self, epoch: int, view: int) -> int:
        ids = self.committee.ids
        return ids[view % len(ids)]

    def voters(self, epoch: int, view: int) -> tuple[int, ...]:
        """Whose votes and view changes count in (epoch, view): the group, unless a subclass lets more
        members step in (T-PBFT: anyone; the quorum is the committee's either way)."""
        return self.group(epoch, view)

    def vote_targets(self, epoch: int, view: int, height: int) -> tuple[int, ...] | None:
        """Whom our vote at (epoch, view, height) goes to, or None when we do not vote there."""
        group = self.group(epoch, view)
        return group if self.node_id in group else None

    def epoch_end(self, epoch: int) -> int | None:
        e = self.config.epoch_length
        return (epoch + 1) * e if e else None

    # ---- entry point ----
    def handle(self, now: float, input: Input) -> list[Output]:
        outs: list[Output] = []
        self.clock = now
        if isinstance(input, Received):
            if input.sender not in self.committee or input.sender == self.node_id:
                return [Rejected(peer=input.sender, reason="unknown_sender")]
            if not input.verified and not isinstance(input.message, self.lazy_messages) and not signed_by(
                    self.verifier, input.sender, input.message, input.signature):
                return [Rejected(peer=input.sender, reason="bad_signature")]
            if input.verified:
                self._dispatch(now, input.sender, input.message, input.signature, outs)
            else:  # a lazy message: only cores that list it in lazy_messages get this call
                self._dispatch(now, input.sender, input.message, input.signature, outs, False)
        elif isinstance(input, TimerFired):
            self.armed.discard(input.timer)
            self._on_timer(now, input.timer, outs)
        elif isinstance(input, Submitted):
            self._on_submitted(now, (input.tx,), outs)
        elif isinstance(input, inputs.SubmittedBatch):
            self._on_submitted(now, input.txs, outs)
        elif isinstance(input, Fetched):
            self._on_certified(now, input.sender, input.block, input.certificate, outs)
        elif isinstance(input, Restored):
            if input.height != self.height + 1 or input.block.height != input.height:
                raise LocalProtocolError(f"Restored height {input.height} after {self.height}")
            self._execute(now, input.block, input.certificate, outs, replay=True)
        elif isinstance(input, Started):
            self.forwarded_to = self.primary(self.epoch, self.view)  # nothing of ours is pending yet
            outs.append(self._broadcast(Status(epoch=self.epoch, view=self.view, height=self.height)))
            self._arm(REQUEST, self._request_step, outs)
        else:
            raise LocalProtocolError(f"unknown input {input!r}")
        if self.own:
            self._follow_primary(outs)
        return outs

    def _dispatch(self, now: float, sender: int, msg: Any, sig: bytes, outs: list[Output],
                  verified: bool = True) -> None:
        if isinstance(msg, Vote):
            self._on_vote(now, sender, msg, sig, outs, verified)
        elif isinstance(msg, PrePrepare):
            self._on_preprepare(now, sender, msg, sig, outs)
        elif isinstance(msg, TxBatch):
            for tx in msg.txs:
                if self.mempool.add(tx, now) is None:
                    self.announced.add(tx.id)  # a backup's retransmission to all, or forwarded to us, the primary
            self._arm(REQUEST, self._request_step, outs)
            self._maybe_propose(now, outs)
        elif isinstance(msg, Checkpoint):
            self._on_checkpoint(now, sender, msg, sig, outs)
        elif isinstance(msg, ViewChange):
            self._on_view_change(now, sender, msg, sig, outs)
        elif isinstance(msg, NewView):
            self._on_new_view(now, sender, msg, outs)
        elif isinstance(msg, NewViewRequest):
            self._on_new_view_request(sender, msg, outs)
        elif isinstance(msg, ViewChangeRequest):
            self._on_view_change_request(now, sender, msg, outs)
        elif isinstance(msg, ViewChangeRelay):
            self._on_view_change_relay(now, sender, msg, outs)
        elif isinstance(msg, Decided):
            self._on_certified(now, sender, msg.block, msg.certificate, outs)
        elif isinstance(msg, Status):
            self._on_status(now, sender, msg, outs)
        else:
            outs.append(Rejected(peer=sender, reason="unexpected_message", detail=type(msg).__name__))

    def _on_timer(self, now: float, timer: Timer, outs: list[Output]) -> None:
        if timer == BATCH:
            self._maybe_propose(now, outs, force=True)
        elif timer == GOSSIP:
            self._flush_gossip(now, outs)
        elif timer == REQUEST:
            self._on_request_timer(now, outs)
        elif timer == VIEW_CHANGE:
            self._on_view_change_timer(now, outs)

    # ---- helpers ----
    def _arm(self, timer: Timer, delay: float, outs: list[Output]) -> None:
        if timer not in self.armed:
            self.armed.add(timer)
            outs.append(SetTimer(timer=timer, delay=delay))

    def _others(self, ids: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(i for i in ids if i != self.node_id)

    def _broadcast(self, msg: Any) -> Multicast:
        return Multicast(to=self._others(self.committee.ids), message=msg)

    def sign(self, msg: Any) -> bytes:
        """Our envelope signature over `msg`, the same bytes the driver signs when sending it."""
        return self.signer.sign(signing_bytes(self.node_id, encode(msg)))

    def _in_window(self, h: int) -> bool:
        return self.height < h <= self.stable + self.config.window

    def _buffer(self, sender: int, msg: Any, sig: bytes) -> None:
        """Keep a message of a later view or epoch for replay. Bounded so that a Byzantine peer
        cannot crowd out the others: only near views, and an equal share of the space per sender."""
        if msg.epoch == self.epoch:
            near = msg.view <= max(self.view, self.vc_target) + self.committee.n
        else:
            near = msg.epoch == self.epoch + 1 and msg.view <= self.committee.n
        count = self.buffered_by.get(sender, 0)
        if near and count < self.config.max_buffered // self.committee.n:
            self.buffered_by[sender] = count + 1
            self.buffered.append((sender, msg, sig))

    def _replay(self, now: float, outs: list[Output]) -> None:
        pending, self.buffered, self.buffered_by = self.buffered, [], {}
        for sender, msg, sig in pending:
            self._dispatch(now, sender, msg, sig, outs)

    def _future(self, epoch: int, view: int) -> bool:
        return (epoch, view) > (self.epoch, self.view)

    def _elsewhere(self, sender: int, msg: Any, sig: bytes, outs: list[Output], verified: bool = True) -> bool:
        """True when `msg` belongs to another (epoch, view): one of a later view is buffered for replay
        and counted towards joining that view; one of an earlier view is dropped."""
        if (msg.epoch, msg.view) == (self.epoch, self.view):
            return False
        if self._future(msg.epoch, msg.view):
            # Kept for later, checked now (rare: around view and epoch changes), so replay needs no flag.
            if not verified and not signed_by(self.verifier, sender, msg, sig):
                outs.append(Rejected(peer=sender, reason="bad_signature"))
                return True
            self._buffer(sender, msg, sig)
            self._note_higher_view(sender, msg.epoch, msg.view, outs)
        return True

    def observe(self, peer: int, event: str) -> None:
        """Hook for T-PBFT's trust observations; PBFT keeps none."""

    # ---- normal case: propose ----
    def _maybe_propose(self, now: float, outs: list[Output], force: bool = False) -> None:
        cfg = self.config
        if self.mode is not Mode.NORMAL or self.primary(self.epoch, self.view) != self.node_id:
            return
        if self.height < self.view_floor:
            return  # until we executed what the NEW-VIEW settled we cannot tell which txs are committed
        end = self.epoch_end(self.epoch)
        while True:
            h = max(self.height, self.proposed_to) + 1
            if h - self.height > cfg.max_inflight or h > self.stable + cfg.window or (end is not None and h > end) \
                    or not self.may_propose(h):
                return
            avail = self.mempool.available()
            if avail == 0:
                return
            txs = tuple(self.mempool.take(cfg.batch_size, cfg.max_block_bytes))
            # A block that neither count nor bytes fill waits until batch_delay has passed since our last
            # proposal: under light load a tx is proposed at once, under heavy load blocks grow instead
            # of multiplying (each block costs every voter ~15 signature checks, whatever its size).
            wait = self.proposed_at + cfg.batch_delay - now
            if len(txs) == avail < cfg.batch_size and not force and wait > 0:
                self._arm(BATCH, wait, outs)
                return
            force = False
            self.proposed_at = now
            block = Block(height=h, epoch=self.epoch, view=self.view, proposer=self.node_id, txs=txs,
                          meta=self.block_meta(h))
            self.mempool.inflight.update(tx.id for tx in txs)
            self.proposed_to = h
            pp = PrePrepare(epoch=self.epoch, view=self.view, block=block)
            outs.append(Multicast(to=self._others(self.group(self.epoch, self.view)), message=pp))
            self._accept_block(now, block, outs)

    def may_propose(self, height: int) -> bool:
        """Whether the primary may put `height` in flight now, within the pipeline's limits (T-PBFT: an
        epoch's last height waits for the others)."""
        return True

    def may_suspect_primary(self, now: float) -> bool:
        """Whether a request timeout that would start a view change may start it now (T-PBFT: not while
        the stuck tx's block, accepted in this view, waits for votes; for a bounded time)."""
        return True

    def block_meta(self, height: int) -> bytes:
        """Protocol data the primary puts in a block (T-PBFT: trust reports)."""
        return b""

    def check_meta(self, block: Block) -> str | None:
        return None if not block.meta else "unexpected_meta"

    # ---- normal case: pre-prepare, prepare, commit ----
    def _check_preprepare(self, sender: int, pp: PrePrepare) -> str | None:
        b = pp.block
        if sender != self.primary(pp.epoch, pp.view):
            return "not_primary"
        if self.mode is not Mode.NORMAL:
            return "view_changing"
        if not self._in_window(b.height):
            return "outside_window"
        if b.height <= self.view_floor:
            return "below_new_view"
        if (b.epoch, b.view, b.proposer) != (pp.epoch, pp.view, sender):
            return "bad_block_header"
        end = self.epoch_end(pp.epoch)
        if end is not None and not (end - self.config.epoch_length < b.height <= end):
            return "wrong_epoch_height"
        slot = self.slots.get(b.height)
        if slot is not None and slot.view == pp.view:
            return "equivocation" if slot.digest != block_digest(b) else "duplicate"
        ids = [tx.id for tx in b.txs]
        if len(ids) > self.config.batch_size or len(set(ids)) != len(ids):
            return "bad_batch"
        if any(i in self.mempool.committed for i in ids):
            return "committed_tx"
        return self.check_meta(b)

    def _on_preprepare(self, now: float, sender: int, pp: PrePrepare, sig: bytes, outs: list[Output]) -> None:
        if self._elsewhere(sender, pp, sig, outs):
            return
        reason = self._check_preprepare(sender, pp)
        if reason is not None:
            if reason not in ("duplicate", "view_changing"):  # neither is the primary's fault
                self.observe(sender, "invalid")
                outs.append(Rejected(peer=sender, reason=reason))
            return
        self.observe(sender, "timely")
        self._accept_block(now, pp.block, outs)

    def _accept_block(self, now: float, block: Block, outs: list[Output]) -> None:
        dig = block_digest(block)
        self.slots[block.height] = Slot(block, dig, self.view)
        vote = Vote(kind="prepare", epoch=self.epoch, view=self.view, height=block.height, digest=dig)
        self._cast(now, vote, outs)

    # ---- execution (execution.py) ----
    def after_execute(self, now: float, block: Block, cert: Certificate, outs: list[Output], replay: bool) -> None:
        """Hook run after each executed block: epoch switch here; T-PBFT adds trust and followers."""
        end = self.epoch_end(self.epoch)
        if end is not None and block.height >= end:
            self._enter_epoch(now, self.epoch + 1, outs, replay)

    def status(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol, "node": self.node_id, "height": self.height, "epoch": self.epoch,
            "view": self.view, "mode": self.mode.value, "primary": self.primary(self.epoch, self.view),
            "group": list(self.group(self.epoch, self.view)), "pending": len(self.mempool),
            "view_changes": self.view_changes, "stable_checkpoint": self.stable,
        }

    def verify_certificate(self, height: int, block: Block, certificate: Certificate) -> bool:
        return verify_certificate(self.committee, self.verifier, height, block, certificate)
