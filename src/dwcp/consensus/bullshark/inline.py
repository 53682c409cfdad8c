"""A worker inside the primary, for the simulator: client transactions batched in the core.

The real data plane is a separate process (`transport/dataplane.py`) that the simulator cannot
run. With `inline_batches=True` (the registry's `sim_extras`), a primary takes `Submitted`
transactions itself, seals them every `batch_txs` transactions or `batch_delay` seconds into a
core `TxBatch` broadcast to every peer (its digest is the digest of its encoding), fetches batches
it lacks with `BatchRequest`, and puts the transactions of a committed sub-DAG into the block, so a
block fetched during catch-up carries them. Transactions execute at their first commit only.
"""

from __future__ import annotations

from dwcp.consensus.bullshark.messages import BatchRef, BatchRequest, BatchStored
from dwcp.consensus.core.codec import encode
from dwcp.consensus.core.inputs import Timer
from dwcp.consensus.core.messages import Transaction, TxBatch, digest
from dwcp.consensus.core.outputs import Broadcast, Output, Send, SetTimer, TxDropped

SEAL = Timer(kind="bs-inline-seal")


class InlineWorker:
    def __init__(self, batch_txs: int = 64, batch_delay: float = 0.01) -> None:
        self.batch_txs, self.batch_delay = batch_txs, batch_delay
        self.store: dict[bytes, tuple[Transaction, ...]] = {}
        self.pending: list[Transaction] = []
        self.pending_ids: set[bytes] = set()
        self.committed: set[bytes] = set()

    def submit(self, tx: Transaction, out: list[Output]) -> BatchStored | None:
        if tx.id in self.committed or tx.id in self.pending_ids:
            out.append(TxDropped(tx_id=tx.id, reason="committed" if tx.id in self.committed else "duplicate"))
            return None
        if not self.pending:
            out.append(SetTimer(timer=SEAL, delay=self.batch_delay))
        self.pending.append(tx)
        self.pending_ids.add(tx.id)
        return self.seal(out) if len(self.pending) >= self.batch_txs else None

    def seal(self, out: list[Output]) -> BatchStored | None:
        if not self.pending:
            return None
        batch = TxBatch(txs=tuple(self.pending))
        self.pending, self.pending_ids = [], set()
        out.append(Broadcast(message=batch))
        return BatchStored(ref=self._keep(batch), own=True)

    def received(self, batch: TxBatch) -> BatchStored:
        return BatchStored(ref=self._keep(batch), own=False)

    def _keep(self, batch: TxBatch) -> BatchRef:
        encoded = encode(batch)
        d = digest(encoded)
        self.store[d] = batch.txs
        return BatchRef(digest=d, worker=0, txs=len(batch.txs), size=len(encoded))

    def answer(self, sender: int, request: BatchRequest, out: list[Output]) -> None:
        for d in request.digests[:64]:
            if d in self.store:
                out.append(Send(to=sender, message=TxBatch(txs=self.store[d])))

    def fetch(self, digests: tuple[bytes, ...], peers: tuple[int, ...], out: list[Output]) -> None:
        wanted = tuple(d for d in digests if d not in self.store)
        for peer in peers:
            if wanted:
                out.append(Send(to=peer, message=BatchRequest(digests=wanted)))

    def missing(self, refs: tuple[BatchRef, ...]) -> tuple[bytes, ...]:
        return tuple(r.digest for r in refs if r.digest not in self.store)

    def block_txs(self, refs: tuple[BatchRef, ...]) -> tuple[Transaction, ...]:
        """The transactions a block of these batches executes: each at its first commit only."""
        out, seen = [], set()
        for ref in refs:
            for tx in self.store[ref.digest]:
                if tx.id not in self.committed and tx.id not in seen:
                    seen.add(tx.id)
                    out.append(tx)
        return tuple(out)

    def executed(self, txs: tuple[Transaction, ...]) -> None:
        self.committed.update(t.id for t in txs)
