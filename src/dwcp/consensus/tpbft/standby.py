"""Standby voting: followers step in for a height the group is slow to commit (mixed into `tpbft.Replica`).

A group with more than g - q silent or slow members cannot gather a quorum alone. Instead of a view
change (which deposes a primary that did nothing wrong), a member whose block at height h is still
undecided `standby_after` seconds after it accepted it *widens* h:

| who widens h            | what it sends to the followers                                       |
|-------------------------|----------------------------------------------------------------------|
| the primary             | its pre-prepare for h                                                |
| any group member        | the votes it already cast for h; its later votes for h go to everyone |
| a member that receives  | widens h itself (a follower's vote means someone widened it)          |
| a follower's vote for h |                                                                      |
| a follower that receives| marks h widened: it votes for h (to the whole committee) once it holds |
| a pre-prepare or vote   | the block, as a group member would                                    |
| for h                   |                                                                      |

Votes count from any committee member (`voters` is the committee) and the quorum is still q of n,
so widening changes who may help, never what a certificate proves. A height the group commits on its
own costs only the group's messages.

**A view that needed its followers keeps them.** Once a member has widened `standby_sticky_after`
heights of the current (epoch, view), it widens every later height of that view as soon as it accepts
its block, without waiting `standby_after`. A group holding fewer than q live correct members (the
ranking filled its last seats with nodes nobody could judge, or trust was earned then lost) would
otherwise pay the wait at every height; those slow heights time requests out and the view changes
that follow depose correct primaries, whose lost trust makes the next group worse (measured in the
simulator: 8-11 view changes in runs where PBFT had 3-4). Widening is a member's own choice about
whom it sends to, so members need not agree on it; the view or epoch that follows starts narrow again.
Followers that step in are judged like members (`_judge`), so a correct follower earns trust and
can replace a silent member at the next epoch. A Byzantine node can make heights widen early (more
messages), not commit anything a quorum did not vote for.

**A block that waits for votes does not blame its primary at once** (`accepted_grace`, default 1).
When the request timer would start a view change and the oldest pending tx is in a block we accepted
in the current view (the primary proposed it; the group, widened or not, has not committed it yet)
that still gains votes (one for its digest arrived in the last half request timeout), the view change
waits, up to `accepted_grace` more request timeouts: with flaky group members down, such a height is
slow because of its voters, not its primary (docs/tpbft.md, Session 13). A Byzantine primary gains at
most that delay per tx: the grace is measured on the tx's own clock, which this rule never restarts;
a tx the primary leaves out of every block gets no grace (PBFT's timer as before); and f+1 view
changes from nodes that never accepted the block still pull everyone on (liveness rule). Safety does
not depend on timers: only when a view change starts moves, never what a quorum proves.
"""

from __future__ import annotations

from dwcp.consensus.core.inputs import Timer
from dwcp.consensus.core.messages import Vote
from dwcp.consensus.core.outputs import Multicast, Output
from dwcp.consensus.pbft.messages import PrePrepare

STANDBY = Timer(kind="standby")


class StandbyMixin:
    """Needs from `tpbft.Replica`: committee, node_id, epoch, view, height, slots, decided, voted, mempool,
    config (`standby_after`, `accepted_grace`, `request_timeout`), seen, `group`, `primary`, `_arm`, `_cast`."""

    def _init_standby(self) -> None:
        self.widened: set[int] = set()  # heights of the current view that followers vote on too
        self.accepted_at: dict[int, float] = {}  # height -> when we accepted its block (group members)
        self.widenings = 0  # heights we widened ourselves, for status
        self.widened_in_view = 0  # ... in the current (epoch, view): past the sticky mark, widen at once

    def _reset_standby(self) -> None:
        self.widened.clear()
        self.accepted_at.clear()
        self.widened_in_view = 0

    def _sticky(self) -> bool:
        mark = self.config.standby_sticky_after
        return mark > 0 and self.widened_in_view >= mark

    def _followers(self) -> tuple[int, ...]:
        group = self.group(self.epoch, self.view)
        return tuple(i for i in self.committee.ids if i not in group)

    def _note_accepted(self, now: float, height: int, outs: list[Output]) -> None:
        if self.node_id in self.group(self.epoch, self.view) and self._followers():
            if self._sticky():
                self._widen(now, height, outs)
                return
            self.accepted_at.setdefault(height, now)
            self._arm(STANDBY, self.config.standby_after, outs)

    def _on_standby_timer(self, now: float, outs: list[Output]) -> None:
        wait = self.config.standby_after
        next_due = None
        for h in sorted(self.accepted_at):
            if h <= self.height or h in self.decided or h in self.widened:
                continue
            due = self.accepted_at[h] + wait
            if due <= now:
                self._widen(now, h, outs)
            else:
                next_due = due if next_due is None else min(next_due, due)
        if next_due is not None:
            self._arm(STANDBY, next_due - now, outs)

    def _widen(self, now: float, h: int, outs: list[Output]) -> None:
        """As a group member: let the followers vote at `h` (see the module docstring)."""
        if h in self.widened or h <= self.height:
            return
        self.widened.add(h)
        self.widenings += 1
        self.widened_in_view += 1
        slot = self.slots.get(h)
        followers = self._followers()
        if slot is None or slot.view != self.view or not followers:
            return  # our votes for h, once cast, go to everyone (`vote_targets`)
        if self.primary(self.epoch, self.view) == self.node_id:
            outs.append(Multicast(to=followers, message=PrePrepare(epoch=self.epoch, view=self.view, block=slot.block)))
        for kind in ("prepare", "commit"):
            if (kind, self.view, h, self.node_id) in self.voted:
                vote = Vote(kind=kind, epoch=self.epoch, view=self.view, height=h, digest=slot.digest)
                outs.append(Multicast(to=followers, message=vote))

    def _on_standby_signal(self, now: float, sender: int, epoch: int, view: int, h: int,
                           outs: list[Output]) -> None:
        """A pre-prepare or vote for `h` of the current view: to a follower it means h was widened;
        to a member, one from a follower means the same."""
        if (epoch, view) != (self.epoch, self.view) or h <= self.height or h in self.widened:
            return
        group = self.group(epoch, view)
        if self.node_id not in group:
            self.widened.add(h)  # our vote, once we hold the block, goes to everyone
        elif sender not in group:
            self._widen(now, h, outs)

    def may_suspect_primary(self, now: float) -> bool:
        """`accepted_grace` (module docstring): not while the oldest pending tx is in a block we accepted in
        this view, have not executed and that gained a vote in the last half request timeout; for at most
        `accepted_grace` request timeouts past the point where PBFT would suspect (the tx's own clock)."""
        grace = self.config.accepted_grace
        if grace <= 0 or not self.mempool.pending:
            return True
        tid, (_, oldest) = next(iter(self.mempool.pending.items()))  # `pending` is kept in time-seen order
        if now - oldest >= self._request_step + grace * self.config.request_timeout:
            return True
        for h, slot in self.slots.items():
            if h > self.height and slot.view == self.view and any(tx.id == tid for tx in slot.block.txs):
                arrivals = [t for votes in self.seen.get(h, {}).values() for (_, dig), t in votes.items()
                            if dig == slot.digest]
                return not arrivals or now - max(arrivals) >= self._request_step
        return True

    def vote_targets(self, epoch: int, view: int, height: int) -> tuple[int, ...] | None:
        if height in self.widened and (epoch, view) == (self.epoch, self.view):
            return self.committee.ids
        return super().vote_targets(epoch, view, height)
