"""View change for the PBFT replica (mixed into `Replica`), after Castro & Liskov (OSDI'99, TOCS'02).

1. A replica whose oldest pending tx waited `request_timeout` (or that sees f+1 peers in higher
   views: the liveness rule) stops the normal case and multicasts a signed
   `ViewChange(epoch, v', height, committed, prepared)`: `height` is its stable checkpoint and
   `committed` that checkpoint's proof; `prepared` has, for every height above it, executed or
   not, its highest-view proof: a prepare certificate, or the commit certificate once executed.
2. The primary of v' collects a quorum (2f+1) of valid view changes for v' from voters(e, v') and
   multicasts `NewView` naming them by digest, with the digests of its re-proposals, computed by
   `reproposals()`: for every height above `low` (the highest stable checkpoint reported) up to the
   highest reported proof, the block of the highest-view proof (byte-identical, so its digest is
   unchanged), or an empty "null" block (no txs, no meta) when no view change reports one.
3. Every replica gathers the named view changes (its own copies, or relayed by the primary: see
   newview.py), checks each one and recomputes the re-proposals; only an exact match is accepted.
   It executes the blocks the proofs show committed (commit certificates), then enters v' and
   prepares the re-proposals above its height as if pre-prepared.

Safety: a block committed at (v, h) was prepared by a quorum, which meets any quorum of view
changes in a correct replica that reports it (or a higher-view proof, which by induction is for
the same block), unless h <= its stable checkpoint <= `low`; heights up to `low` are committed and
held by the f+1 correct signers of that checkpoint, so they are fetched, never re-proposed.
Liveness: the NEW-VIEW timer moves on to the next view only once a quorum asked for this one or a
later one (PBFT starts it at 2f+1 view changes), so a lone replica cannot run ahead; meanwhile it
resends its view change and asks the primary for the NEW-VIEW (`NewViewRequest`), and peers answer a
resend with their Status so it can still catch up. Timeouts double on each failed view change,
capped at 4x. A new primary gets a full request timeout from the moment we enter its view (txs
announced to all in an earlier view would otherwise give it only the second half: at WAN latencies
under a 0.5 s timeout that replaced correct primaries one after another), a primary never suspects
itself (its backups do; it follows them by the f+1 rule or their NEW-VIEW), and a primary whose
NEW-VIEW contradicts its view changes (`bad_reproposals`) is left at once (newview.py). Sizes: a
view change carries one certificate (2f+1 signatures) per height above its checkpoint and that
height's block, bounded by the window; the NEW-VIEW only digests (newview.py), so neither grows with
n² (at n = 100 a NEW-VIEW holding its 67 view changes was over 1 MiB and never sent). Known limit:
with big blocks a view change can outgrow a 1 MiB frame; it is then withheld rather than sent.
"""

from __future__ import annotations

from collections.abc import Iterable

from dwcp.consensus.core.codec import MAX_MESSAGE_SIZE, block_digest, encode
from dwcp.consensus.core.messages import Block
from dwcp.consensus.core.outputs import Output, Rejected, Send, SetTimer
from dwcp.consensus.core.protocol import check_quorum_signatures
from dwcp.consensus.pbft.checkpoint import check_checkpoint_proof
from dwcp.consensus.pbft.messages import NewViewRequest, Prepared, SignedViewChange, Status, ViewChange
from dwcp.consensus.pbft.state import REQUEST, VIEW_CHANGE, Mode

MAX_BACKOFF = 4  # the NEW-VIEW timeout doubles per failed view change, up to this factor
RELAY_OVERHEAD = 256  # room a view change leaves in its frame, so it can be relayed (ViewChangeRelay)


def low_mark(changes: Iterable[ViewChange], start: int = 0) -> int:
    """Heights up to this are settled before the new view: the highest reported stable checkpoint,
    or the epoch's first height - 1 (`start`), whichever is higher."""
    return max([start, *(vc.height for vc in changes)])


def reproposals(epoch: int, view: int, proposer: int, changes: Iterable[ViewChange],
                start: int = 0) -> tuple[Block, ...]:
    """The blocks the primary of (epoch, view) must re-propose, given a quorum of view changes.

    Deterministic in its inputs: ties between equal-view proofs (impossible with at most f faults)
    break on the smaller digest, so every correct replica computes the same tuple.
    """
    changes = list(changes)
    low = low_mark(changes, start)
    best: dict[int, tuple[int, bytes, Block]] = {}
    for vc in changes:
        for p in vc.prepared:
            h = p.block.height
            if h <= low:
                continue
            key = (p.certificate.view, p.certificate.digest)
            cur = best.get(h)
            if cur is None or key[0] > cur[0] or (key[0] == cur[0] and key[1] < cur[1]):
                best[h] = (key[0], key[1], p.block)
    top = max(best, default=low)
    return tuple(
        best[h][2] if h in best else Block(height=h, epoch=epoch, view=view, proposer=proposer)
        for h in range(low + 1, top + 1)
    )


class ViewChangeMixin:
    """Needs from `Replica`: the normal-case state and helpers, `group`, `primary`, `mode`."""

    def _init_view_change(self) -> None:
        self.vc_target = 0  # the view we are changing to (== view when NORMAL)
        self.full_block_at = float("-inf")  # when we last executed a full block (the primary is saturated)
        self.vc_attempts = 0  # consecutive view changes without a NEW-VIEW (timeout backoff)
        self.view_change_msgs: dict[int, dict[int, SignedViewChange]] = {}  # view -> sender -> vc
        self.vc_latest: dict[int, int] = {}  # sender -> view of its latest view change (one kept each)
        self.higher: dict[int, tuple[int, int]] = {}  # peer -> highest (epoch, view) it was seen in
        self.clock = 0.0  # `now` of the input being handled (for hooks that are not passed it)
        # Heights at or below this were settled by the NEW-VIEW of our view (committed or re-proposed):
        # the primary may not pre-prepare them again, or a Byzantine one could fork a lagging replica.
        self.view_floor = 0
        self.view_since = 0.0  # when we entered our view (its primary gets a full request timeout)

    def _reset_view_change(self) -> None:
        """On entering a new epoch: forget view-change state of the old one."""
        self.vc_target = self.view
        self.vc_attempts = 0
        self.view_floor = self.height
        self.view_change_msgs.clear()
        self.vc_latest.clear()
        self._reset_new_view()
        self.higher = {p: ev for p, ev in self.higher.items() if ev[0] >= self.epoch}
        self.armed.discard(VIEW_CHANGE)

    # ---- starting a view change ----
    @property
    def _request_step(self) -> float:
        """The request timer's period: it checks in halves of request_timeout (see `_on_request_timer`)."""
        return self.config.request_timeout / 2

    def _on_request_timer(self, now: float, outs: list[Output]) -> None:
        # The request timeout is spent in two halves. After the first, a node retransmits its own stuck
        # txs to the whole group, as a PBFT client retransmits to all replicas: they went to the primary
        # alone, which may have crashed, restarted or been cut off since (then it gets them again and no
        # view change is needed). Txs the whole group has held for the second half without a commit make
        # the primary faulty; every member's timer then runs out at about the same time, so they change
        # view together, a full timeout after the tx was submitted, as when every node held every tx.
        timeout = self.config.request_timeout
        step = self._request_step
        oldest = self.mempool.oldest()
        if oldest is None:
            return
        waited = now - oldest
        if waited < step or self.mode is not Mode.NORMAL:
            self._arm(REQUEST, max(step - waited, 0.01), outs)
            return
        if self.behind():  # not the primary's fault: we are the slow one
            self._catch_up(now, outs)
            self._arm(REQUEST, step, outs)
            return
        if now - self.full_block_at < timeout and waited < (1 + self.config.saturation_grace) * timeout:
            # A backlog behind full blocks is load, not a faulty primary; a view change would only add a
            # stall to it. Past the grace the tx is treated as censored all the same.
            self._arm(REQUEST, step, outs)
            return
        limit = self.config.batch_size * self.config.max_inflight  # what the next primary can propose soon
        stale = [tx for tx, seen in self.mempool.pending.values() if now - seen >= step]
        fresh = [tx for tx in stale if tx.id not in self.announced][:limit]
        if fresh:
            self._announce(fresh, outs)
            if len(fresh) == len(stale):
                self.mempool.restart_clocks(now, fresh)
                self._arm(REQUEST, step, outs)
                return
        if now - self.view_since < timeout:
            # Txs announced in an earlier view would otherwise give a new primary only the second half:
            # at WAN latencies under a 0.5 s timeout that replaced correct primaries one after another.
            self._arm(REQUEST, max(timeout - (now - self.view_since), 0.01), outs)
            return
        if self.primary(self.epoch, self.view) == self.node_id:
            # A primary never suspects itself (PBFT's backups run this timer). Txs forwarded to it count as
            # held by all, so its timer ran out half a timeout after they arrived, under a WAN commit with f
            # silent nodes; it then stopped proposing and voting and its backups replaced a correct primary
            # (n = 7, 0.5 s: the tail of runs with a correct first primary went from 1.68 s to 0.39 s).
            self._arm(REQUEST, step, outs)
            return
        if not self.may_suspect_primary(now):
            self._arm(REQUEST, step, outs)
            return
        self.start_view_change(now, self.view + 1, outs)

    def start_view_change(self, now: float, view: int, outs: list[Output]) -> None:
        """Stop the normal case and vote to move to `view` (no-op unless it is above our target)."""
        if view <= self.view or (self.mode is Mode.VIEW_CHANGE and view <= self.vc_target):
            return
        self.mode, self.vc_target = Mode.VIEW_CHANGE, view
        self.view_changes += 1
        self._arm_view_change(outs)
        proof = self.stable_proof
        low = proof.height if proof is not None else 0
        base = max(low, self._epoch_start(self.epoch))  # nothing below the epoch is re-proposed
        vc = ViewChange(epoch=self.epoch, view=view, height=low, committed=proof,
                        prepared=tuple(self.prepared[h] for h in sorted(self.prepared) if h > base))
        complete = all(h in self.prepared for h in range(base + 1, self.height + 1))
        # Without a proof for every executed height above our proven checkpoint (a restart or a long
        # catch-up outran `proof_horizon`) our view change could hide a commit: stay silent instead.
        # Proofs carry whole blocks (see messages.py): with big blocks a view change can outgrow a
        # frame, and the driver must never be handed one it cannot send.
        if (complete and self.node_id in self.voters(self.epoch, view)
                and len(encode(vc)) <= MAX_MESSAGE_SIZE - RELAY_OVERHEAD):
            outs.append(self._broadcast(vc))
            self._store_view_change(now, SignedViewChange(sender=self.node_id, signature=self.sign(vc),
                                                          view_change=vc), outs)

    def _arm_view_change(self, outs: list[Output]) -> None:
        delay = self.config.view_change_timeout * min(2**self.vc_attempts, MAX_BACKOFF)
        self.armed.add(VIEW_CHANGE)
        outs.append(SetTimer(timer=VIEW_CHANGE, delay=delay))  # replaces the pending one
        primary = self.primary(self.epoch, self.vc_target)
        if primary != self.node_id:
            # In case we are late and the primary already sent its NEW-VIEW (or it was lost).
            outs.append(Send(to=primary, message=NewViewRequest(epoch=self.epoch, view=self.vc_target)))

    def _on_view_change_timer(self, now: float, outs: list[Output]) -> None:
        if self.mode is not Mode.VIEW_CHANGE:
            return
        if sum(v >= self.vc_target for v in self.vc_latest.values()) >= self.committee.quorum:
            # A quorum wanted this view (or a later one) and no NEW-VIEW came: next primary, longer
            # wait. Counting later views too matters when our quorum was complete only at others.
            self.vc_attempts += 1
            self.start_view_change(now, self.vc_target + 1, outs)
            return
        # Without a quorum for our target, moving further would only run ahead of the others (PBFT
        # starts this timer at 2f+1 view changes); resend ours in case it was lost, and keep waiting.
        mine = self.view_change_msgs.get(self.vc_target, {}).get(self.node_id)
        if mine is not None:
            outs.append(self._broadcast(mine.view_change))
        self._arm_view_change(outs)

    def _note_higher_view(self, sender: int, epoch: int, view: int, outs: list[Output]) -> None:
        """f+1 distinct peers in views above ours include a correct one that timed out: join the
        smallest such view, so a minority of slow timers cannot stall the rest (PBFT liveness)."""
        if (epoch, view) > self.higher.get(sender, (-1, -1)):
            self.higher[sender] = (epoch, view)
        floor = self.vc_target if self.mode is Mode.VIEW_CHANGE else self.view
        views = [v for p, (e, v) in self.higher.items() if e == self.epoch and v > floor and p != self.node_id]
        if len(views) >= self.committee.validity:  # one pass and a min, no sort: O(n) per call
            self.start_view_change(self.clock, min(views), outs)

    # ---- view-change messages ----
    def _check_view_change(self, sender: int, vc: ViewChange) -> str | None:
        """Is `vc` well-formed with valid proofs? (Signature checked by the caller.)"""
        if sender not in self.voters(vc.epoch, vc.view):
            return "not_in_group"
        if vc.height < 0 or (vc.committed is None) != (vc.height == 0):
            return "bad_committed"
        c = vc.committed
        if c is not None and (c.height != vc.height
                              or not check_checkpoint_proof(self.committee, self.verifier, c)):
            return "bad_committed"
        if len(vc.prepared) > self.config.proof_horizon + self.config.window:
            return "bad_prepared"
        end = self.epoch_end(vc.epoch)
        seen: set[int] = set()
        for p in vc.prepared:
            if not self._valid_prepared(vc, p, end) or p.block.height in seen:
                return "bad_prepared"
            seen.add(p.block.height)
        return None

    def _valid_prepared(self, vc: ViewChange, p: Prepared, end: int | None) -> bool:
        b, c = p.block, p.certificate
        return (
            c.kind in ("prepare", "commit") and c.epoch == vc.epoch == b.epoch and c.view < vc.view
            and c.height == b.height > vc.height and (end is None or b.height <= end)
            and c.digest == block_digest(b)
            and check_quorum_signatures(self.committee, self.verifier, c)
        )

    def _on_view_change(self, now: float, sender: int, msg: ViewChange, sig: bytes, outs: list[Output]) -> None:
        if msg.epoch != self.epoch or msg.view <= self.view:
            if msg.epoch > self.epoch:
                self._buffer(sender, msg, sig)  # replayed once we reach that epoch
            else:
                self._tell_status(sender, outs)  # it missed our view or epoch change
            return
        known = self.view_change_msgs.get(msg.view, {}).get(sender)
        if known is not None:
            if known.view_change != msg:
                self.observe(sender, "conflict")
                outs.append(Rejected(peer=sender, reason="conflicting_view_change"))
            else:
                # A resend: the sender is stuck in a view change the rest of us have not joined. It
                # can still learn what we committed (f+1 such answers let it sync) meanwhile.
                self._tell_status(sender, outs)
            return
        reason = self._check_view_change(sender, msg)
        if reason is not None:
            self.observe(sender, "invalid")
            outs.append(Rejected(peer=sender, reason=reason))
            return
        if msg.committed is not None:
            self._note_certified(msg.height, msg.committed.signers)
        self._claim_height(sender, msg.height)
        self._adopt_commits(now, (msg,), outs)  # first, so that a NEW-VIEW we send starts from there
        if msg.epoch != self.epoch:
            return  # executing them ended the epoch, and with it this view change
        self._store_view_change(now, SignedViewChange(sender=sender, signature=sig, view_change=msg), outs)
        self._note_higher_view(sender, msg.epoch, msg.view, outs)
        self._on_view_change_for_pending(now, msg.view, outs)

    def _adopt_commits(self, now: float, changes: Iterable[ViewChange], outs: list[Output]) -> None:
        """Execute blocks that (verified) view changes prove committed: the commit votes that would
        have let us decide them may have been lost, and nobody re-proposes an executed height."""
        for vc in changes:
            for p in vc.prepared:
                h = p.block.height
                if p.certificate.kind == "commit" and h > self.height and h not in self.decided:
                    self.decided[h] = (p.block, p.certificate)
        self._execute_ready(now, outs)

    def _tell_status(self, peer: int, outs: list[Output]) -> None:
        outs.append(Send(to=peer, message=Status(epoch=self.epoch, view=self.view, height=self.height, reply=True)))

    def _store_view_change(self, now: float, svc: SignedViewChange, outs: list[Output]) -> None:
        view, sender = svc.view_change.view, svc.sender
        prev = self.vc_latest.get(sender)
        if prev is not None and prev >= view:
            return  # correct replicas only move up; an older one arriving late is useless
        if prev is not None:  # bound memory: keep one view change per sender
            self.view_change_msgs.get(prev, {}).pop(sender, None)
        self.vc_latest[sender] = view
        self.view_change_msgs.setdefault(view, {})[sender] = svc
        self._maybe_new_view(now, view, outs)

    def _epoch_start(self, epoch: int) -> int:
        """Last height of the previous epoch: no block of `epoch` is at or below it."""
        return (self.epoch_end(epoch - 1) or 0) if epoch > 0 else 0
