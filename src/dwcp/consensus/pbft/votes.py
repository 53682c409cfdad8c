"""Prepare and commit votes for the PBFT replica (mixed into `Replica`): casting ours, checking and
tallying everyone's, and the quorum checks that move a slot to prepared and decided.

Votes are verified lazily (`Replica.lazy_messages`): the driver hands them over unchecked, a vote's
signature is checked only when it would complete a quorum for the block we hold, votes after a
checked quorum are never checked, and certificates hold checked signatures only. A vote with a bad
signature is dropped and its sender observed as invalid; it cannot vote again at that (view, height).
"""

from __future__ import annotations

from dwcp.consensus.core.codec import signed_by
from dwcp.consensus.core.messages import Certificate, Vote
from dwcp.consensus.core.outputs import Multicast, Output, Rejected
from dwcp.consensus.pbft.messages import Prepared
from dwcp.consensus.pbft.state import Mode, Slot


class Tally(dict):
    """Votes of one kind for one digest at one (view, height): voter -> signature, plus which of them
    are not checked yet. A vote is checked only when it would complete a quorum (`VotingMixin._quorum`);
    one that arrives after a checked quorum is never checked, and none is checked twice."""

    __slots__ = ("unchecked",)

    def __init__(self) -> None:
        super().__init__()
        self.unchecked: set[int] = set()

    @property
    def checked(self) -> int:
        return len(self) - len(self.unchecked)


class VotingMixin:
    """Needs from `Replica`: committee, verifier, node_id, epoch/view/mode, slots, votes, voted,
    prepared, decided, `voters`, `vote_targets`, `observe`, `sign`, `_others`, `_in_window`,
    `_elsewhere`, `_execute_ready`."""

    def _cast(self, now: float, vote: Vote, outs: list[Output]) -> None:
        to = self.vote_targets(vote.epoch, vote.view, vote.height)
        if to is None:
            return  # T-PBFT followers hold the block but do not vote
        outs.append(Multicast(to=self._others(to), message=vote))
        self._record(now, self.node_id, vote, self.sign(vote), outs)

    def _check_vote(self, sender: int, v: Vote) -> str | None:
        if v.kind not in ("prepare", "commit"):
            return "bad_vote_kind"
        if sender not in self.voters(v.epoch, v.view):
            return "not_in_group"
        if not self._in_window(v.height):
            return "outside_window"
        prior = self.voted.get((v.kind, v.view, v.height, sender))
        if prior is not None:
            return "double_vote" if prior != v.digest else "duplicate"
        return None

    def _on_vote(self, now: float, sender: int, v: Vote, sig: bytes, outs: list[Output], verified: bool = True) -> None:
        if self._elsewhere(sender, v, sig, outs, verified):
            return
        if self.mode is not Mode.NORMAL:
            return
        reason = self._check_vote(sender, v)
        if reason is not None:
            if reason not in ("duplicate", "outside_window"):
                self.observe(sender, "invalid" if reason != "double_vote" else "conflict")
                outs.append(Rejected(peer=sender, reason=reason))
            return
        self.observe(sender, "timely")
        self._record(now, sender, v, sig, outs, verified)

    def _record(self, now: float, sender: int, v: Vote, sig: bytes, outs: list[Output], verified: bool = True) -> None:
        self.voted[(v.kind, v.view, v.height, sender)] = v.digest
        tally = self.votes.setdefault((v.kind, v.view, v.height), {}).get(v.digest)
        if tally is None:
            tally = self.votes[(v.kind, v.view, v.height)][v.digest] = Tally()
        tally[sender] = sig
        if not verified:
            tally.unchecked.add(sender)
        self._progress(now, v.height, outs)

    def _certificate(self, kind: str, h: int, slot: Slot) -> Certificate:
        tally = self.votes[(kind, slot.view, h)][slot.digest]
        signers = tuple(sorted(s for s in tally if s not in tally.unchecked))[: self.committee.quorum]
        return Certificate(kind=kind, epoch=self.epoch, view=slot.view, height=h, digest=slot.digest,
                           signers=signers, signatures=tuple(tally[s] for s in signers))

    def _count(self, kind: str, h: int, slot: Slot) -> int:
        """Votes for our block at `h`, checked or not."""
        return len(self.votes.get((kind, slot.view, h), {}).get(slot.digest, ()))

    def _quorum(self, kind: str, h: int, slot: Slot, outs: list[Output]) -> bool:
        """Does a quorum of checked votes of `kind` back our block at `h`? Unchecked votes are checked
        (lowest id first, so every run checks the same ones) only while they would complete it."""
        tally = self.votes.get((kind, slot.view, h), {}).get(slot.digest)
        q = self.committee.quorum
        if tally is None or len(tally) < q:
            return False
        while tally.checked < q and len(tally) >= q:
            voter = min(tally.unchecked)
            tally.unchecked.discard(voter)
            vote = Vote(kind=kind, epoch=self.epoch, view=slot.view, height=h, digest=slot.digest)
            if not signed_by(self.verifier, voter, vote, tally[voter]):
                del tally[voter]  # its `voted` entry stays: it cannot vote again here
                self.observe(voter, "invalid")
                outs.append(Rejected(peer=voter, reason="bad_signature"))
        return tally.checked >= q

    def _progress(self, now: float, h: int, outs: list[Output]) -> None:
        slot = self.slots.get(h)
        if slot is None or slot.view != self.view:
            return
        if not slot.prepared and self._quorum("prepare", h, slot, outs):
            slot.prepared = True
            self.prepared[h] = Prepared(block=slot.block, certificate=self._certificate("prepare", h, slot))
        if slot.prepared and not slot.sent_commit:
            slot.sent_commit = True
            self._cast(now, Vote(kind="commit", epoch=self.epoch, view=self.view, height=h, digest=slot.digest), outs)
            return  # _cast re-entered _progress for our own commit vote
        if slot.prepared and h not in self.decided and self._quorum("commit", h, slot, outs):
            self.decided[h] = (slot.block, self._certificate("commit", h, slot))
            self._execute_ready(now, outs)
