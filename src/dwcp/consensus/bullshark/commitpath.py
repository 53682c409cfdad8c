"""The primary's commit half: an ordered sub-DAG becomes an attested height, then a `Commit`.

Mixed into `primary.Primary` (it uses the primary's state: ordering, log, batch window, progress, the
simulator's inline worker); kept apart so each file reads in one sitting. Restored and fetched
heights enter here too (`_apply_log`), replaying the ordering state from the log's `SubDag`.
"""

from __future__ import annotations

from typing import Any

import msgspec

from dwcp.consensus.bullshark import commits
from dwcp.consensus.bullshark.messages import COMMIT_VOTE, CommittedBatches, SubDag
from dwcp.consensus.bullshark.ordering import Committed, CommittedSubDag
from dwcp.consensus.core.codec import block_digest, encode, signing_bytes
from dwcp.consensus.core.messages import Block, Certificate, Vote
from dwcp.consensus.core.outputs import Broadcast, Commit, Output, ToLocal

ORPHAN_ROUNDS = 3  # an uncommitted certificate of ours this far below a committed anchor is orphaned
_subdag = msgspec.msgpack.Decoder(SubDag)


class CommitPath:
    # Provided by Primary.
    node_id: int
    signer: Any
    peers: tuple[int, ...]
    ordering: Any
    log: commits.CommitLog
    batch_window: commits.BatchWindow
    progress: Any
    inline: Any
    batcher: Any  # the inline worker, or submissions.Submissions
    awaiting: list[CommittedSubDag]
    uncommitted_own: dict[int, tuple[commits.BatchRef, ...]]
    payload: list[commits.BatchRef]
    created_at: dict[bytes, float]

    def _collect(self, now: float, out: list[Output]) -> None: ...  # Primary's GC

    def _ordered(self, now: float, sub_dag: CommittedSubDag, out: list[Output]) -> None:
        for c in sub_dag.certificates:
            if c.author == self.node_id:
                self.uncommitted_own.pop(c.round, None)
        for r in [r for r in self.uncommitted_own if r + ORPHAN_ROUNDS <= sub_dag.leader.round]:
            # No certificate of a later round named ours, so no anchor will ever commit it: propose its
            # batches again (if it commits after all, BatchWindow keeps the second copy out).
            self.payload[:0] = self.uncommitted_own.pop(r)
        for c in sub_dag.certificates:
            created = self.created_at.pop(c.digest, None)
            if created is not None:
                self.progress.latency(now - created)
        if self.inline is not None:
            self.awaiting.append(sub_dag)
            self._build_awaiting(now, out)
        else:
            self._attest(commits.block_of(sub_dag, self.batch_window), out)

    def _build_awaiting(self, now: float, out: list[Output]) -> None:
        """Inline mode: blocks hold their transactions, so a sub-DAG waits (in order) for its batches."""
        assert self.inline is not None
        while self.awaiting:
            refs = tuple(ref for c in self.awaiting[0].certificates for ref in c.header.payload)
            missing = self.inline.missing(refs)
            if missing:
                self.inline.fetch(missing, self.peers, out)
                return
            block = commits.block_of(self.awaiting.pop(0), self.batch_window)
            txs = self.inline.block_txs(_subdag.decode(block.meta).batches)
            self.inline.executed(txs)  # in build order, the same on every node: blocks stay identical
            self._attest(msgspec.structs.replace(block, txs=txs), out)

    def _attest(self, block: Block, out: list[Output]) -> None:
        digest = block_digest(block)
        vote = Vote(kind=COMMIT_VOTE, epoch=0, view=0, height=block.height, digest=digest)
        own = self.signer.sign(signing_bytes(self.node_id, encode(vote)))
        out.append(Broadcast(message=vote))
        ready = self.log.ordered(block, digest)
        ready += self.log.attest(self.node_id, block.height, digest, own)
        for blk, cert in ready:
            self._emit_commit(blk, cert, out)

    def _emit_commit(self, block: Block, cert: Certificate, out: list[Output]) -> None:
        record = _subdag.decode(block.meta)
        self.progress.committed(record)
        # With a worker process a block names batches: the transactions it can name are those submitted here.
        txs = block.txs if self.inline is not None else self.batcher.executed(b.digest for b in record.batches)
        out.append(Commit(height=block.height, block=block, certificate=cert, txs=txs))
        out.append(ToLocal(message=CommittedBatches(height=block.height, batches=record.batches)))

    def _apply_log(self, now: float, height: int, block: Block, cert: Certificate, out: list[Output], *,
                   restored: bool, tx_ids: tuple[bytes, ...] = ()) -> None:
        record = _subdag.decode(block.meta)
        self.batcher.committed.update(tx_ids)  # ours, taken over HTTP: refused again after a restart
        if restored and self.inline is None:  # batches recovered from before the stop that this height committed
            self.batcher.executed(b.digest for b in record.batches)
        if self.inline is not None:
            self.inline.executed(block.txs)
            self.awaiting = [s for s in self.awaiting if s.index > height]
        if self.ordering.state.next_index == height:
            self.batch_window.fresh(height, record.batches)
            leader = Committed(record.leader_round, record.leader_author, record.leader_digest)
            self.ordering.restore(height, leader, [Committed(c.round, c.author, c.digest) for c in record.certificates])
            self.ordering.schedule.restore(record.schedule, record.scores, record.schedule_commits)
        if not restored:  # fetched: commit it now (a restored height is already in our log)
            self._emit_commit(block, cert, out)
        self.log.skip_to(height + 1)
        self._collect(now, out)

