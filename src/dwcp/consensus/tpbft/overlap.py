"""When the epoch's last height and the next epoch's first ones are proposed (mixed into `tpbft.Replica`;
docs/tpbft.md, rules 5 and 7, and "Session 16"): `fresh_incumbent`'s lone last height (`may_propose`; with
`Config.last_after_prepared` it waits for the earlier heights prepared at the primary, not executed), and the
epoch switch overlapped (`Config.overlap_switch`): the next epoch's primary proposes its first heights while the
last one of this epoch is still in flight. Both default off: measured, neither gains enough (docs).

Without it the switch drains the pipeline: the epoch's last height H is proposed alone (`fresh_incumbent`), and
the next epoch's first height only once the primary has executed H and computed ranking(e+1). Transactions that
arrive meanwhile wait a whole commit round before they are even proposed.

The rule, for the primary P that proposed H in the current view:

| step                | what P does                                                                      |
|---------------------|----------------------------------------------------------------------------------|
| proposing H         | H carries no trust reports (they wait for the next epoch's blocks), so the       |
|                     | trust table ranking(e+1) is computed from is final once H-1 is executed          |
| once H-1 executed   | computes ranking(e+1) as every node will at H if H commits as P proposed it      |
|                     | (incumbent P, highest committed view = the current one: `next_ranking`)          |
| if P leads e+1 then | proposes heights H+1.. of (e+1, view 0), empty meta, within the pipeline limits, |
|                     | to that ranking's group; other nodes buffer them (a later epoch) and check them  |
|                     | on entering e+1 against the ranking they computed themselves                     |
| entering e+1        | if it is primary(e+1, 0) and the H it executed is the one it proposed, it takes  |
|                     | the early blocks up as its own proposals (slots, prepare votes, the pipeline);   |
|                     | otherwise it drops them (their transactions go back to its mempool)              |

Safety is PBFT's: which messages a primary sends, and when, never weakens a quorum, and every node checks an
early pre-prepare only after entering e+1, against its own ranking(e+1) from committed blocks, exactly as any
pre-prepare of that epoch (sender must be primary(e+1, 0), heights in e+1, no committed transaction). An early
block holds no transaction of an epoch-e block: P executed every height below H before proposing them, and H is
its own (its in-flight transactions are never taken twice). If a view change in e replaces P before H commits,
either H was prepared and is re-proposed unchanged (the highest committed view of e's blocks stays P's view, so
P still leads e+1 and its early blocks stand), or a new H of a later view is committed, which names P deposed
(`deposed`): P is not primary(e+1, 0), and every node drops its early pre-prepares as `stale_proposal`, without
blaming P, which proposed them before it could know.
"""

from __future__ import annotations

from dwcp.consensus.core.messages import Block
from dwcp.consensus.core.outputs import Multicast, Output
from dwcp.consensus.pbft.messages import PrePrepare
from dwcp.consensus.pbft.state import Mode


class OverlapMixin:
    """Needs from `tpbft.Replica`: config, epoch/view/height/mode, slots, mempool, stable, group_size,
    `epoch_end`, `primary`, `next_ranking`, `_take_batch`, `_accept_block`, `_others`, `incumbent`."""

    early: list[Block]  # our proposals for the next epoch's first heights, sent before we entered it
    early_ranking: tuple[int, int, tuple[int, ...]] | None  # (epoch, view, ranking(epoch + 1) as we expect it)
    incumbent: int  # proposer of the previous epoch's last block (-1 in epoch 0)

    def _init_overlap(self) -> None:
        self.early = []
        self.early_ranking = None
        self.incumbent = -1

    def may_propose(self, height: int) -> bool:
        """`fresh_incumbent`: the epoch's last height waits until every earlier one is executed (with
        `last_after_prepared`: prepared at us), so a primary replaced before then never proposes it: the next
        epoch's incumbent is the one that replaced it (docs/tpbft.md, rule 5)."""
        if not (self.config.fresh_incumbent and height == self.epoch_end(self.epoch)):
            return True
        if self.config.last_after_prepared:
            return all(h in self.prepared for h in range(self.height + 1, height))
        return self.height >= height - 1

    def _progress(self, now: float, h: int, outs: list[Output]) -> None:
        super()._progress(now, h, outs)  # type: ignore[misc]
        end = self.epoch_end(self.epoch)
        if self.config.last_after_prepared and end is not None and self.proposed_to == end - 1 and h in self.prepared:
            self._maybe_propose(now, outs)  # the last height may go out now (`may_propose`)

    def _maybe_propose(self, now: float, outs: list[Output], force: bool = False) -> None:
        super()._maybe_propose(now, outs, force)  # type: ignore[misc]
        if self.config.overlap_switch and self.early_ranking_ours():
            self._propose_early(now, outs, force)

    def early_ranking_ours(self) -> bool:
        """Whether we proposed this epoch's last height in this view, executed every height below it, and lead
        the next epoch if it commits as we proposed it."""
        end = self.epoch_end(self.epoch)
        if end is None or self.mode is not Mode.NORMAL or self.height != end - 1:
            return False
        slot = self.slots.get(end)
        if slot is None or slot.view != self.view or slot.block.proposer != self.node_id:
            return False
        if self.early_ranking is None or self.early_ranking[:2] != (self.epoch, self.view):
            trust = self.table.global_trust()
            order = self.next_ranking(self.epoch + 1, self.node_id, max(self.top_view, slot.block.view), trust)
            self.early_ranking = (self.epoch, self.view, order)
        return self.early_ranking[2][0] == self.node_id

    def _propose_early(self, now: float, outs: list[Output], force: bool) -> None:
        assert self.early_ranking is not None
        cfg, end, group = self.config, self.epoch_end(self.epoch), self.early_ranking[2][: self.group_size]
        while True:
            h = end + len(self.early) + 1
            if h - self.height > cfg.max_inflight or h > self.stable + cfg.window:
                return
            txs = self._take_batch(now, outs, force)
            if txs is None:
                return
            force = False
            block = Block(height=h, epoch=self.epoch + 1, view=0, proposer=self.node_id, txs=txs, meta=b"")
            self.mempool.inflight.update(tx.id for tx in txs)
            self.early.append(block)
            outs.append(Multicast(to=self._others(group), message=PrePrepare(epoch=block.epoch, view=0, block=block)))

    def before_replay(self, now: float, outs: list[Output]) -> None:
        """Take up our early proposals as this epoch's first heights, or drop them (module docstring)."""
        early, self.early, self.early_ranking = self.early, [], None
        if not early or early[0].epoch != self.epoch or self.primary(self.epoch, 0) != self.node_id:
            return
        if self.incumbent != self.node_id or any(tx.id in self.mempool.committed for b in early for tx in b.txs):
            return  # the last height committed is not the one we proposed
        for block in early:
            self._accept_block(now, block, outs)
            self.proposed_to = block.height
            self.mempool.inflight.update(tx.id for tx in block.txs)

    def _check_preprepare(self, sender: int, pp: PrePrepare) -> str | None:
        reason = super()._check_preprepare(sender, pp)  # type: ignore[misc]
        early = pp.epoch == self.epoch and pp.block.height <= self._epoch_start(self.epoch) + self.config.max_inflight
        if (
            reason == "not_primary"
            and self.config.overlap_switch
            and pp.view == 0
            and early
            and sender == self.incumbent
        ):
            return "stale_proposal"  # sent before the last block committed, for a ranking that did not come
        return reason
