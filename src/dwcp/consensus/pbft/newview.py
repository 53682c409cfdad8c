"""NEW-VIEW for the PBFT replica (mixed into `Replica`): sent as digests, completed by fetching.

The primary of v' that holds a quorum (2f+1) of valid view changes for v' multicasts
`NewView(epoch, v', view_changes=((sender, digest), ...), proposals=(digest, ...))`: which view
changes it used, by the digest of each one's encoding, and the digests of the blocks `reproposals()`
picks from them. It carries no view change and no block, so its size grows with n and the number of
heights (about 40 bytes each), not with n² signatures: at n = 100 the 67 view changes it stands for
hold ~1 MB of certificates, more than a frame (`codec.MAX_MESSAGE_SIZE`), which is why the NEW-VIEW
that carried them whole was never sent and PBFT stalled at n = 100 under a faulty primary.

A replica accepts a NEW-VIEW in three steps:

| step     | rule                                                                                        |
|----------|---------------------------------------------------------------------------------------------|
| shape    | from primary(e, v'); v' above our view and not below our target; >= quorum distinct members |
| gather   | each referenced view change, if one we stored (and checked) has that digest; the rest are    |
|          | asked of the primary (`ViewChangeRequest`), which relays the signed originals; one that      |
|          | arrives directly meanwhile completes the set as well                                        |
|          | (`ViewChangeRelay`); a relay is checked like a view change (sender's signature, proofs) and  |
|          | must match its digest                                                                       |
| choice   | `reproposals()` of the gathered view changes must give exactly `proposals`                   |

Then it adopts the commits the view changes prove, enters v' and prepares the re-proposals: the
blocks themselves come from the view changes' proofs, which carry them.

Why the view changes reach everyone: each replica multicasts its own to all (and resends it while
its target view has no quorum), so a replica normally holds all 2f+1 and fetches none; only view
changes it dropped as stale (a sender that has since asked for a later view) or never received
are relayed. A primary that references view changes it cannot produce stalls nobody: its view
times out like a silent primary's. Relays are answered once per peer per half view-change timeout.
"""

from __future__ import annotations

from dwcp.consensus.core.codec import block_digest, encode, signing_bytes
from dwcp.consensus.core.messages import DIGEST_SIZE, Block, digest
from dwcp.consensus.core.outputs import CancelTimer, Output, Rejected, Send
from dwcp.consensus.pbft.messages import (
    NewView,
    NewViewRequest,
    SignedViewChange,
    ViewChange,
    ViewChangeRef,
    ViewChangeRelay,
    ViewChangeRequest,
)
from dwcp.consensus.pbft.state import REQUEST, VIEW_CHANGE, Mode
from dwcp.consensus.pbft.viewchange import low_mark, reproposals


def view_change_digest(vc: ViewChange) -> bytes:
    return vc.encoded_digest


class NewViewMixin:
    """Needs from `Replica`: the view-change state and helpers of `ViewChangeMixin`, the normal case."""

    def _init_new_view(self) -> None:
        self.new_views: dict[int, NewView] = {}  # the NEW-VIEW of our current view (to answer requests)
        self.nv_proof: dict[int, SignedViewChange] = {}  # sender -> the view changes it stands for
        self.pending_nv: NewView | None = None  # a NEW-VIEW whose view changes we are still gathering
        self.pending_vcs: dict[int, SignedViewChange] = {}  # relayed (and checked) for `pending_nv`
        self.relayed_at: dict[int, float] = {}  # peer -> when we last relayed view changes to it

    def _reset_new_view(self) -> None:
        self.new_views.clear()
        self.nv_proof = {}
        self.pending_nv, self.pending_vcs = None, {}
        self.relayed_at.clear()

    # ---- as the new primary ----
    def _maybe_new_view(self, now: float, view: int, outs: list[Output]) -> None:
        """As the primary of `view`, send NEW-VIEW once a quorum of view changes is in."""
        if (self.primary(self.epoch, view) != self.node_id or self.mode is not Mode.VIEW_CHANGE
                or view != self.vc_target or view in self.new_views):
            return
        got = self.view_change_msgs.get(view, {})
        if len(got) < self.committee.quorum:
            return
        proof = {s: got[s] for s in sorted(got)}
        blocks = reproposals(self.epoch, view, self.node_id, (s.view_change for s in proof.values()),
                             self._epoch_start(self.epoch))
        refs = tuple(ViewChangeRef(sender=s, digest=view_change_digest(svc.view_change)) for s, svc in proof.items())
        nv = self._new_view_message(view, refs, blocks)
        outs.append(self._broadcast(nv))
        self._enter_view(now, nv, proof, blocks, outs)

    def _new_view_message(self, view: int, refs: tuple[ViewChangeRef, ...], blocks: tuple[Block, ...]) -> NewView:
        """The NEW-VIEW we send as the primary of `view` (ProBFT's adds its header signatures)."""
        return NewView(epoch=self.epoch, view=view, view_changes=refs, proposals=tuple(block_digest(b) for b in blocks))

    def _on_new_view_request(self, sender: int, msg: NewViewRequest, outs: list[Output]) -> None:
        # Only the primary answers: a NEW-VIEW is accepted from the primary alone (see _check_new_view).
        nv = self.new_views.get(msg.view)
        if msg.epoch == self.epoch and nv is not None and self.primary(msg.epoch, msg.view) == self.node_id:
            outs.append(Send(to=sender, message=nv))

    def _on_view_change_request(self, now: float, sender: int, msg: ViewChangeRequest, outs: list[Output]) -> None:
        """Relay the view changes our current view's NEW-VIEW stands for (at most once per half timeout
        per peer: each relay can be up to a frame, so a request must not multiply our output freely)."""
        if (msg.epoch, msg.view) != (self.epoch, self.view) or self.view not in self.new_views:
            return
        last = self.relayed_at.get(sender)
        if last is not None and now - last < self.config.view_change_timeout / 2:
            return
        self.relayed_at[sender] = now
        for s in sorted(set(msg.senders)):
            svc = self.nv_proof.get(s)
            if svc is not None:
                outs.append(Send(to=sender, message=ViewChangeRelay(view_change=svc)))

    # ---- as a replica ----
    def _check_new_view(self, sender: int, nv: NewView) -> str | None:
        """Is `nv` well-formed? (The view changes it names are checked as they are gathered.)"""
        if sender != self.primary(nv.epoch, nv.view):
            return "not_primary"
        senders = [r.sender for r in nv.view_changes]
        if (len(set(senders)) != len(senders) or len(senders) < self.committee.quorum
                or any(s not in self.committee or len(r.digest) != DIGEST_SIZE for s, r in zip(
                    senders, nv.view_changes, strict=True))
                or len(nv.proposals) > self.config.proof_horizon + self.config.window):
            return "bad_new_view"
        return None

    def _on_new_view(self, now: float, sender: int, msg: NewView, outs: list[Output]) -> None:
        if msg.epoch != self.epoch:
            if msg.epoch > self.epoch:
                self._buffer(sender, msg, b"")
            return
        if msg.view <= self.view or (self.mode is Mode.VIEW_CHANGE and msg.view < self.vc_target):
            return  # stale: we are already in (or past) that view
        reason = self._check_new_view(sender, msg)
        if reason is not None:
            self.observe(sender, "invalid")
            outs.append(Rejected(peer=sender, reason=reason))
            return
        if self.pending_nv != msg:
            self.pending_nv, self.pending_vcs = msg, {}
        self._complete_new_view(now, outs, ask=True)

    def _on_view_change_for_pending(self, now: float, view: int, outs: list[Output]) -> None:
        """A view change came in directly: it may be the last one the pending NEW-VIEW waits for."""
        if self.pending_nv is not None and self.pending_nv.view == view:
            self._complete_new_view(now, outs, ask=False)

    def _on_view_change_relay(self, now: float, sender: int, msg: ViewChangeRelay, outs: list[Output]) -> None:
        svc, nv = msg.view_change, self.pending_nv
        vc = svc.view_change
        if nv is None or (vc.epoch, vc.view) != (nv.epoch, nv.view) or svc.sender in self.pending_vcs:
            return  # unasked, late or repeated: harmless
        ref = next((r for r in nv.view_changes if r.sender == svc.sender), None)
        if ref is None:
            return
        payload = encode(vc)
        if digest(payload) != ref.digest:
            outs.append(Rejected(peer=sender, reason="bad_relay"))
            return
        if not self.verifier.verify(svc.sender, signing_bytes(svc.sender, payload), svc.signature):
            outs.append(Rejected(peer=sender, reason="bad_view_change_signature"))
            return
        if self._check_view_change(svc.sender, vc) is not None:
            # Signed by its sender yet invalid: the primary built its NEW-VIEW on a bad view change.
            primary = self.primary(nv.epoch, nv.view)
            self.observe(primary, "invalid")
            self.pending_nv, self.pending_vcs = None, {}
            outs.append(Rejected(peer=primary, reason="bad_new_view"))
            return
        self.pending_vcs[svc.sender] = svc
        self._complete_new_view(now, outs, ask=False)

    def _complete_new_view(self, now: float, outs: list[Output], ask: bool) -> bool:
        """Enter the pending NEW-VIEW's view once every view change it names is here (asking the
        primary for the missing ones when `ask`), and its re-proposals recompute. False while some
        are missing."""
        nv = self.pending_nv
        assert nv is not None
        if nv.epoch != self.epoch or nv.view <= self.view or (self.mode is Mode.VIEW_CHANGE
                                                              and nv.view < self.vc_target):
            # We moved on while gathering (our view changes now promise a later view): entering this
            # one would vote in a view below the one our view change speaks for.
            self.pending_nv, self.pending_vcs = None, {}
            return True
        primary = self.primary(nv.epoch, nv.view)
        stored = self.view_change_msgs.get(nv.view, {})
        proof: dict[int, SignedViewChange] = {}
        missing: list[int] = []
        for ref in nv.view_changes:
            svc = self.pending_vcs.get(ref.sender) or stored.get(ref.sender)
            if svc is not None and view_change_digest(svc.view_change) == ref.digest:
                proof[ref.sender] = svc
            else:
                missing.append(ref.sender)
        if missing:
            if ask:
                outs.append(Send(to=primary, message=ViewChangeRequest(epoch=nv.epoch, view=nv.view,
                                                                      senders=tuple(missing))))
            return False
        self.pending_nv, self.pending_vcs = None, {}
        changes = [svc.view_change for svc in proof.values()]
        blocks = reproposals(nv.epoch, nv.view, primary, changes, self._epoch_start(nv.epoch))
        if tuple(block_digest(b) for b in blocks) != nv.proposals:
            self.observe(primary, "invalid")
            outs.append(Rejected(peer=primary, reason="bad_reproposals"))
            # The primary signed a NEW-VIEW that contradicts the view changes it names: it is faulty, so
            # move on now instead of waiting out the NEW-VIEW timeout (f + 1 such replicas pull in the rest).
            self.start_view_change(now, nv.view + 1, outs)
            return True
        for vc in changes:
            if vc.committed is not None:
                self._note_certified(vc.height, vc.committed.signers)
        epoch = self.epoch
        self._adopt_commits(now, changes, outs)
        if self.epoch == epoch:  # (executing may have ended the epoch, and with it this view)
            self._enter_view(now, nv, proof, blocks, outs)
        return True

    def _enter_view(self, now: float, nv: NewView, proof: dict[int, SignedViewChange], blocks: tuple[Block, ...],
                    outs: list[Output]) -> None:
        """Install `nv`: the normal case resumes in its view, starting with its re-proposals."""
        view = nv.view
        self.view, self.vc_target, self.mode = view, view, Mode.NORMAL
        self.view_since = now
        self.vc_attempts = 0
        self.new_views, self.nv_proof, self.relayed_at = {view: nv}, proof, {}
        self.pending_nv, self.pending_vcs = None, {}
        self.view_change_msgs = {v: m for v, m in self.view_change_msgs.items() if v > view}
        self.vc_latest = {p: v for p, v in self.vc_latest.items() if v > view}
        self.higher = {p: ev for p, ev in self.higher.items() if ev > (self.epoch, view)}
        self.armed.discard(VIEW_CHANGE)
        outs.append(CancelTimer(timer=VIEW_CHANGE))
        # Old-view slots and votes can no longer complete; prepared proofs are kept for later view changes.
        self.slots.clear()
        self.votes = {k: v for k, v in self.votes.items() if k[1] >= view}
        self.voted = {k: v for k, v in self.voted.items() if k[1] >= view}
        self.mempool.inflight = {tx.id for b in blocks for tx in b.txs}  # not for the primary to reuse
        low = low_mark((s.view_change for s in proof.values()), self._epoch_start(nv.epoch))
        self.view_floor = max([low, *(b.height for b in blocks)])
        self.proposed_to = max(self.height, self.view_floor)
        for block in blocks:
            if self._in_window(block.height):
                self._accept_block(now, block, outs)
        self.mempool.restart_clocks(now)  # give the new primary a full request timeout
        self._resend_checkpoint(outs)
        self._replay(now, outs)
        if self.behind():
            self._catch_up(now, outs)
        if len(self.mempool):
            self._arm(REQUEST, self._request_step, outs)
        self._maybe_propose(now, outs)
