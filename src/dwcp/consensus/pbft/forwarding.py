"""Client transactions: taking them in and forwarding them to the primary (mixed into `Replica`).

Client txs go to the primary only, as PBFT clients send their requests (Castro & Liskov, 4.1):
it is the one node that needs them, and forwarding to the whole group made every node check a
signature for every other node's gossip, about as much CPU as all the votes. The node a client
used keeps the tx (`own`) until it executes: it re-forwards to each new primary, and half a request
timeout later it sends the stuck txs to the whole group (as a PBFT client retransmits to all
replicas), which starts the others' timers; a view change follows only if the group's run out too
(viewchange.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from dwcp.consensus.core.messages import Transaction, TxBatch
from dwcp.consensus.core.outputs import Multicast, Output, TxDropped
from dwcp.consensus.pbft.mempool import framed_size
from dwcp.consensus.pbft.state import GOSSIP, REQUEST, Mode


class ForwardingMixin:
    """Needs from `Replica`: config, node_id, epoch/view/mode, mempool, outbox, own, announced,
    forwarded_to, flushed_at, `group`, `primary`, `_others`, `_arm`, `_request_step`, `_maybe_propose`."""

    def _on_submitted(self, now: float, txs: Sequence[Transaction], outs: list[Output]) -> None:
        """Client txs handed to this node in one step (one `Submitted`, or a `SubmittedBatch`): pooled,
        then forwarded together, so a batch of them costs the primary one signature check."""
        taken = queued = 0
        forward = self.mode is not Mode.NORMAL or self.primary(self.epoch, self.view) != self.node_id
        for tx in txs:
            reason = self.mempool.add(tx, now)
            if reason is not None:
                outs.append(TxDropped(tx_id=tx.id, reason=reason))
                continue
            self.own.add(tx.id)
            taken += 1
            if forward:
                self.outbox.append(tx)
                queued += 1
        if not taken:
            return
        if queued:
            # As with blocks: at once unless we forwarded within gossip_delay, so forwarding costs no
            # latency under light load and sends fewer, bigger batches (one signature each) under heavy load.
            wait = self.flushed_at + self.config.gossip_delay - now
            if wait > 0:
                self._arm(GOSSIP, wait, outs)
            else:
                self._flush_gossip(now, outs)
        self._arm(REQUEST, self._request_step, outs)
        self._maybe_propose(now, outs)

    def _flush_gossip(self, now: float, outs: list[Output]) -> None:
        txs, self.outbox = self.outbox, []
        self.flushed_at = now
        if self.mode is not Mode.NORMAL:
            self._announce(txs, outs)  # no primary while the view changes: the whole group holds them
            return
        primary = self.primary(self.epoch, self.view)
        if primary == self.forwarded_to and primary != self.node_id:
            self._gossip(txs, outs, to=(primary,))
        # Otherwise the primary just changed: `_follow_primary` forwards all of `own` to the new one.

    def _announce(self, txs: list[Transaction], outs: list[Output]) -> None:
        """Send `txs` to the whole group, so that every member's request timer covers them."""
        if not txs:
            return
        self._gossip(txs, outs)
        self.announced.update(tx.id for tx in txs)

    def _follow_primary(self, outs: list[Output]) -> None:
        """Forward our pending client txs to a primary that has not had them yet (a new view or epoch), or
        to the whole group when a view change starts."""
        primary = self.primary(self.epoch, self.view) if self.mode is Mode.NORMAL else None
        if primary == self.forwarded_to:
            return
        self.forwarded_to = primary
        pending = self.mempool.pending
        self.own = {tid for tid in self.own if tid in pending}
        mine = [pending[tid][0] for tid in pending if tid in self.own]
        if primary is None:  # the view is changing: whoever leads next must find them, so all hold them
            self._announce([tx for tx in mine if tx.id not in self.announced], outs)
        elif primary != self.node_id and mine:
            self.outbox = []
            self._gossip(mine, outs, to=(primary,))

    def _gossip(self, txs: list[Transaction], outs: list[Output], to: tuple[int, ...] | None = None) -> None:
        """Multicast `txs` (to the group unless `to` is given) in batches far below the frame size limit."""
        if to is None:
            to = self._others(self.group(self.epoch, self.view))
        batch: list[Transaction] = []
        size = 0
        for tx in txs:
            if batch and (len(batch) == 1000 or size + len(tx.payload) > self.config.max_block_bytes):
                outs.append(Multicast(to=to, message=TxBatch(txs=tuple(batch))))
                batch, size = [], 0
            batch.append(tx)
            size += framed_size(tx)
        if batch:
            outs.append(Multicast(to=to, message=TxBatch(txs=tuple(batch))))
