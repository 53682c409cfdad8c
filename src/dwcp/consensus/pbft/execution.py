"""Executing decided blocks in height order, and epoch switches (mixed into `Replica`).

Blocks are decided by our own votes (`_progress`) or arrive certified (`Decided` pushes, `Fetched`
catch-up); either way they wait in `decided` until every lower height has executed, so `Commit`
outputs come in height order with no gaps.
"""

from __future__ import annotations

from dwcp.consensus.core.messages import Block, Certificate, digest
from dwcp.consensus.core.outputs import Commit, Output, Rejected
from dwcp.consensus.pbft.mempool import framed_size
from dwcp.consensus.pbft.messages import Prepared
from dwcp.consensus.pbft.state import Mode


class ExecutionMixin:
    """Needs from `Replica`: committee, verifier, config, height/state/last_cert, mempool, slots,
    prepared, decided, own/announced, the checkpoint and view-change mixins, `after_execute`, `_maybe_propose`."""

    def _on_certified(self, now: float, sender: int, block: Block, cert: Certificate, outs: list[Output]) -> None:
        h = block.height
        if h <= self.height or h in self.decided:
            return
        if h > self.height + 4 * self.config.window:
            outs.append(Rejected(peer=sender, reason="too_far_ahead"))
            return
        if not self.verify_certificate(h, block, cert):  # the protocol's own certificate rule
            self.observe(sender, "invalid")
            outs.append(Rejected(peer=sender, reason="bad_certificate"))
            return
        self.decided[h] = (block, cert)
        self._execute_ready(now, outs)
        if self.decided:  # a certified block above a gap: fetch the gap
            self._catch_up(now, outs)

    def _execute_ready(self, now: float, outs: list[Output]) -> None:
        while self.height + 1 in self.decided:
            block, cert = self.decided.pop(self.height + 1)
            self._execute(now, block, cert, outs)

    def _execute(self, now: float, block: Block, cert: Certificate, outs: list[Output], replay: bool = False) -> None:
        h = block.height
        executed = self.mempool.mark_committed(block.txs)
        if self.own or self.announced:
            ids = [tx.id for tx in executed]
            self.own.difference_update(ids)
            self.announced.difference_update(ids)
        self.height, self.last_cert = h, cert
        self.state = digest(self.state + cert.digest)
        self.slots.pop(h, None)
        # Keep the commit certificate as this height's proof until a checkpoint is stable: a view
        # change must report every height above its stable checkpoint, executed or not (PBFT's P set).
        self.prepared[h] = Prepared(block=block, certificate=cert)
        self.prepared.pop(h - self.config.proof_horizon, None)  # bounded: see `start_view_change`
        if not replay:
            outs.append(Commit(height=h, block=block, certificate=cert, txs=tuple(executed)))
            if self._full(block):
                self.full_block_at = now
        if h % self.config.checkpoint_interval == 0:
            if replay:
                self._restore_checkpoint(h)
            else:
                self._send_checkpoint(now, outs)
        self.after_execute(now, block, cert, outs, replay)
        if not replay:
            self._maybe_propose(now, outs)

    def _full(self, block: Block) -> bool:
        """Did this block use the whole batch (by count or by bytes, as `Mempool.take` counts them)?"""
        cfg = self.config
        size = sum(framed_size(tx) for tx in block.txs)
        return len(block.txs) >= cfg.batch_size or size > cfg.max_block_bytes * 0.9

    def _enter_epoch(self, now: float, epoch: int, outs: list[Output], replay: bool) -> None:
        self.epoch, self.view, self.mode = epoch, 0, Mode.NORMAL
        self.slots.clear()
        self.votes.clear()
        self.voted.clear()
        self.prepared.clear()
        self.proposed_to = self.height
        self.mempool.inflight.clear()
        self._reset_view_change()
        if not replay:
            self.mempool.restart_clocks(now)
            self._replay(now, outs)
