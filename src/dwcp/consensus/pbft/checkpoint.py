"""Checkpoints, garbage collection and catch-up for the PBFT replica (mixed into `Replica`).

Every `checkpoint_interval` heights each replica multicasts `Checkpoint(height, state)`, where
`state` is its hash chain of committed block digests. A quorum (2f+1) of matching checkpoints that
we have also reached makes the height *stable*: the low watermark moves up (the window is
`stable < h <= stable + window`) and every per-height record at or below it is dropped. The quorum's
signatures are kept as the stable checkpoint's proof (`stable_proof`, a `Certificate` of kind
"checkpoint", checked by `check_checkpoint_proof`), which view changes carry: f+1 correct replicas
hold every block up to it. Checkpoint heights replayed from our own log (`Restored`) move the
low watermark too, but prove nothing to others.

Catch-up is block sync, not state transfer: a replica that learns it is behind asks the driver
for certified blocks (`RequestSync`) and executes the `Fetched` ones. "Behind" needs evidence a
Byzantine peer cannot fake alone: f+1 peers claiming a height (one of them is correct), or a
checkpoint proof we verified. A certified block we hold above a gap also triggers a fetch, but is
no proof that the gap is committed (pipelined heights commit out of order).
"""

from __future__ import annotations

import math
from typing import Any

from dwcp.consensus.core.codec import encode, signing_bytes
from dwcp.consensus.core.committee import Committee
from dwcp.consensus.core.crypto import Verifier
from dwcp.consensus.core.messages import Certificate
from dwcp.consensus.core.outputs import Output, Rejected, RequestSync, Send
from dwcp.consensus.pbft.messages import Checkpoint, PrePrepare, Status


def _height_of(msg: Any) -> int | None:
    """The height a buffered message is about (None for messages not tied to one height)."""
    if isinstance(msg, PrePrepare):
        return msg.block.height
    h = getattr(msg, "height", None)
    return h if isinstance(h, int) else None


def check_checkpoint_proof(committee: Committee, verifier: Verifier, proof: Certificate) -> bool:
    """True when `proof` holds a quorum of distinct members' valid signatures over
    `Checkpoint(proof.height, proof.digest)` (`digest` carries the state)."""
    signers = proof.signers
    if proof.kind != "checkpoint" or len(signers) != len(proof.signatures) or len(set(signers)) != len(signers):
        return False
    if len(signers) < committee.quorum:
        return False
    key = ("checkpoint", committee.digest(), proof)
    known = verifier.verdicts.get(key)
    if known is not None:
        return known
    payload = encode(Checkpoint(height=proof.height, state=proof.digest))
    return verifier.verdicts.put(key, all(
        s in committee and verifier.verify(s, signing_bytes(s, payload), sig)
        for s, sig in zip(signers, proof.signatures, strict=True)
    ))


class CheckpointMixin:
    """Needs from `Replica`: committee, node_id, config, height, state, slots, votes, voted,
    prepared, decided, buffered, `sign`, `_broadcast`, `_future`, `_note_higher_view`."""

    def _init_checkpoints(self) -> None:
        self.stable = 0
        self.stable_proof: Certificate | None = None  # proof of `stable` (None while it is 0)
        # height -> state digest -> sender -> envelope signature (a stable checkpoint's proof)
        self.checkpoints: dict[int, dict[bytes, dict[int, bytes]]] = {}
        self.peer_heights: dict[int, int] = {}  # highest height each peer claimed (checkpoint/status)
        self.certified_height = 0  # highest stable checkpoint a view change proved to us
        self.certified_by: tuple[int, ...] = ()  # who signed that proof (they hold the blocks)
        self.last_sync = -math.inf

    # ---- checkpoints ----
    def _send_checkpoint(self, now: float, outs: list[Output]) -> None:
        ckpt = Checkpoint(height=self.height, state=self.state)
        outs.append(self._broadcast(ckpt))
        self._record_checkpoint(now, self.node_id, ckpt, self.sign(ckpt), outs)

    def _resend_checkpoint(self, outs: list[Output]) -> None:
        """Multicast our newest checkpoint again if it is not stable yet. Checkpoints are never
        retransmitted otherwise, and lost ones would hold the window shut (called on a new view)."""
        for h in sorted(self.checkpoints, reverse=True):
            if h <= self.stable:
                return
            for state, tally in self.checkpoints[h].items():
                if self.node_id in tally:
                    outs.append(self._broadcast(Checkpoint(height=h, state=state)))
                    return

    def _restore_checkpoint(self, height: int) -> None:
        """A checkpoint height replayed from our own log (trusted: we committed it) becomes our low
        watermark at once, or a restarted node above `window` could vote on nothing. It has no
        quorum proof, so view changes still report proofs from the last proven one."""
        self.stable = height
        self._collect_garbage(height)

    def _check_checkpoint(self, sender: int, msg: Checkpoint) -> str | None:
        if msg.height <= 0 or msg.height % self.config.checkpoint_interval:
            return "bad_checkpoint_height"
        for state, tally in self.checkpoints.get(msg.height, {}).items():
            if sender in tally:
                return "duplicate" if state == msg.state else "conflicting_checkpoint"
        return None

    def _on_checkpoint(self, now: float, sender: int, msg: Checkpoint, sig: bytes, outs: list[Output]) -> None:
        if msg.height <= self.stable:
            return
        reason = self._check_checkpoint(sender, msg)
        if reason is not None:
            if reason != "duplicate":
                self.observe(sender, "invalid" if reason != "conflicting_checkpoint" else "conflict")
                outs.append(Rejected(peer=sender, reason=reason))
            return
        self._claim_height(sender, msg.height)
        # Tallies are kept only where they can become stable soon; further ahead the claim is enough.
        if msg.height <= self.height + 4 * self.config.window:
            self._record_checkpoint(now, sender, msg, sig, outs)
        if self.behind():
            self._catch_up(now, outs)

    def _record_checkpoint(self, now: float, sender: int, msg: Checkpoint, sig: bytes, outs: list[Output]) -> None:
        tally = self.checkpoints.setdefault(msg.height, {}).setdefault(msg.state, {})
        tally[sender] = sig
        # Stable only once we executed it and our own state is among the quorum's.
        if len(tally) >= self.committee.quorum and self.node_id in tally and msg.height > self.stable:
            signers = tuple(sorted(tally))[: self.committee.quorum]
            self.stable, self.stable_proof = msg.height, Certificate(
                kind="checkpoint", epoch=0, view=0, height=msg.height, digest=msg.state, signers=signers,
                signatures=tuple(tally[s] for s in signers))
            self._collect_garbage(msg.height)
            self._maybe_propose(now, outs)  # the high watermark moved: a waiting primary may go on

    def _collect_garbage(self, s: int) -> None:
        """Drop everything about heights at or below the stable checkpoint `s` (keep its own proof)."""
        self.checkpoints = {h: t for h, t in self.checkpoints.items() if h >= s}
        for h in [h for h in self.slots if h <= s]:
            del self.slots[h]
        proven = self.stable_proof.height if self.stable_proof is not None else 0
        for h in [h for h in self.prepared if h <= proven]:  # view changes need the rest (viewchange.py)
            del self.prepared[h]
        for h in [h for h in self.decided if h <= s]:
            del self.decided[h]
        self.votes = {k: v for k, v in self.votes.items() if k[2] > s}  # (kind, view, height)
        self.voted = {k: v for k, v in self.voted.items() if k[2] > s}  # (kind, view, height, sender)
        self.buffered = [b for b in self.buffered if (h := _height_of(b[1])) is None or h > s]
        self.buffered_by = {}
        for sender, _, _ in self.buffered:
            self.buffered_by[sender] = self.buffered_by.get(sender, 0) + 1

    # ---- are we behind, and catching up ----
    def _claim_height(self, peer: int, height: int) -> None:
        if height > self.peer_heights.get(peer, 0):
            self.peer_heights[peer] = height

    def _note_certified(self, height: int, signers: tuple[int, ...]) -> None:
        """A verified checkpoint proof: `height` and all below are committed, and the proof's
        signers (f+1 of them correct) can serve those blocks."""
        if height > self.certified_height:
            self.certified_height, self.certified_by = height, signers

    def _sync_target(self, gaps: bool = True) -> tuple[int, tuple[int, ...]]:
        """(height we can prove others reached, peers to fetch from); height <= ours when not behind.
        With `gaps`, also the heights below a certified block we hold: committed blocks may exist
        there, but need not (pipelined heights commit out of order), so they prove nothing alone."""
        claims = sorted(self.peer_heights.values(), reverse=True)
        v = self.committee.validity
        target = claims[v - 1] if len(claims) >= v else 0  # f+1 peers claim at least this
        peers = tuple(p for p, h in sorted(self.peer_heights.items()) if h >= target)
        if self.certified_height > target:
            target, peers = self.certified_height, self.certified_by
        if gaps and self.decided:
            top = max(self.decided) - 1  # a certified block above a gap: fetch the gap from anyone
            if top > target:
                target, peers = top, self.committee.ids
        return target, tuple(p for p in peers if p != self.node_id)

    def behind(self) -> bool:
        """True when we have evidence that others executed heights we have not (so a stalled request
        is our lag, not the primary's fault)."""
        target, peers = self._sync_target(gaps=False)
        return target > self.height and bool(peers)

    def _catch_up(self, now: float, outs: list[Output]) -> None:
        if now - self.last_sync < self.config.sync_timeout:
            return  # the driver is already fetching; do not flood it
        target, peers = self._sync_target()
        if target <= self.height or not peers:
            return
        self.last_sync = now
        outs.append(RequestSync(peers=peers, from_height=self.height + 1, to_height=target))

    # ---- status ----
    def _on_status(self, now: float, sender: int, msg: Status, outs: list[Output]) -> None:
        if not msg.reply:
            outs.append(Send(to=sender, message=Status(epoch=self.epoch, view=self.view, height=self.height,
                                                       reply=True)))
        self._claim_height(sender, msg.height)
        if self._future(msg.epoch, msg.view):
            self._note_higher_view(sender, msg.epoch, msg.view, outs)
        if msg.height > self.height and self.behind():
            self._catch_up(now, outs)
