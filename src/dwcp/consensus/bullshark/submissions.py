"""Transactions a node takes over HTTP (`Submitted`), batched in the primary and handed to its own worker.

Load clients stream transactions to the worker port (worker.py); an HTTP client (the DWCP Manager)
submits one transaction at a time to the node's API, as it does to any registered protocol. The
primary cuts those into batches itself (every `batch_txs` transactions or `batch_delay` seconds, on
the inline worker's SEAL timer: the two never run in one primary) in the worker's framing
(`u32 length | payload`, back to back), so the digest it computes is the one the worker computes. It
sends each batch to its worker (`ToLocal(ClientBatch)`), which stores it, sends it to the other
workers and reports `BatchStored(own=True)` once 2f + 1 hold it, as for a batch its clients filled.
Because the primary knows which transactions each digest carries, a `Commit` names them (`txs`) when
a committed sub-DAG includes the batch: the driver marks them committed and `GET
/v1/transactions/{id}` follows them to their height on this node.

A batch not committed after `RESEND_TICKS` sync ticks is sent to the worker again (its link may have
been down when the batch went out, or the worker restarted before storing it); the worker ignores a
batch it already stores. Ids are refused while pending here and after their commit here, also after a
restart: a block names batches, not transactions, so the node's log keeps the ids each `Commit` named
beside its block (storage.py) and hands them back with `Restored` (commitpath.py adds them to
`committed`).

A stop never drops what was acknowledged: the driver first drains (refuses new submissions, waits for
those taken to commit, SEAL timers still firing), and every sealed batch not yet committed is kept by
`Persist(KEY)` before it goes to the worker (rewritten at the next sync tick after a commit). On restart
`recover` takes them back from `Recovered`: their ids are pending again (a resubmission is refused), the
log's restored heights drop those already committed (commitpath.py), and the rest are resent to the worker
at the first sync tick, so they commit once and their `Commit` names them. Left: a transaction taken in the
`batch_delay` before its seal is lost to a kill -9 (not to a SIGTERM), as a transaction in any node's
mempool is.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from dwcp.consensus.bullshark.inline import SEAL
from dwcp.consensus.bullshark.messages import ClientBatch
from dwcp.consensus.bullshark.worker import TX_LEN, batch_digest
from dwcp.consensus.core.messages import Transaction
from dwcp.consensus.core.outputs import Output, Persist, SetTimer, ToLocal, TxDropped

RESEND_TICKS = 4  # sync ticks (sync_retry, 0.25 s by default) a batch may wait for its commit before a resend
KEY = "bullshark.submitted"  # the Persist key of our sealed, uncommitted batches


def unframe(data: bytes) -> tuple[Transaction, ...]:
    """The transactions of a batch in the worker's client framing (`frame`'s inverse)."""
    txs, pos = [], 0
    while pos < len(data):
        (n,) = TX_LEN.unpack_from(data, pos)
        pos += TX_LEN.size
        txs.append(Transaction(payload=bytes(data[pos:pos + n])))
        pos += n
    return tuple(txs)


def frame(txs: Iterable[Transaction]) -> bytes:
    """A batch's bytes in the worker's client framing."""
    return b"".join(TX_LEN.pack(len(t.payload)) + t.payload for t in txs)


class Submissions:
    def __init__(self, batch_txs: int, batch_delay: float) -> None:
        self.batch_txs, self.batch_delay = batch_txs, batch_delay
        self.pending: list[Transaction] = []  # not yet in a batch
        self.known: set[bytes] = set()  # ids pending or batched here, not yet committed
        self.batches: dict[bytes, tuple[Transaction, ...]] = {}  # digest -> its txs, until committed
        self.waiting: dict[bytes, tuple[bytes, int]] = {}  # digest -> (batch bytes, sync ticks since sent)
        self.committed: set[bytes] = set()
        self.dirty = False  # a batch committed since `waiting` was last persisted

    def submit(self, tx: Transaction, out: list[Output]) -> None:
        if tx.id in self.committed or tx.id in self.known:
            out.append(TxDropped(tx_id=tx.id, reason="committed" if tx.id in self.committed else "duplicate"))
            return
        if not self.pending:
            out.append(SetTimer(timer=SEAL, delay=self.batch_delay))
        self.pending.append(tx)
        self.known.add(tx.id)
        if len(self.pending) >= self.batch_txs:
            self.seal(out)

    def seal(self, out: list[Output]) -> None:
        """The pending transactions as one batch for our worker (the primary hears back `BatchStored`)."""
        if not self.pending:
            return
        txs, self.pending = tuple(self.pending), []
        data = frame(txs)
        digest = batch_digest(data)
        self.batches[digest] = txs
        self.waiting[digest] = (data, 0)
        out.append(self.record())  # kept before it leaves: the driver writes a Persist before what follows
        out.append(ToLocal(message=ClientBatch(data=data)))

    def record(self) -> Persist:
        """Our sealed batches not yet committed, as they must survive a stop."""
        self.dirty = False
        return Persist(key=KEY, value=msgspec.msgpack.encode([data for data, _ in self.waiting.values()]))

    def recover(self, value: bytes) -> None:
        """Batches persisted before a stop: pending again here, resent to the worker at the next sync tick."""
        for data in msgspec.msgpack.decode(value, type=list[bytes]):
            digest, txs = batch_digest(data), unframe(data)
            self.batches[digest] = txs
            self.waiting[digest] = (data, RESEND_TICKS - 1)
            self.known.update(tx.id for tx in txs)

    def resend(self, out: list[Output]) -> None:
        """A sync tick: batches still uncommitted after RESEND_TICKS of them go to the worker again (and
        the persisted record drops those committed since the last tick)."""
        if self.dirty:
            out.append(self.record())
        for digest, (data, ticks) in self.waiting.items():
            if ticks + 1 >= RESEND_TICKS:
                out.append(ToLocal(message=ClientBatch(data=data)))
            self.waiting[digest] = (data, (ticks + 1) % RESEND_TICKS)

    def executed(self, digests: Iterable[bytes]) -> tuple[Transaction, ...]:
        """Of the batches a height commits, the transactions submitted here (a tx executes once)."""
        txs: list[Transaction] = []
        for digest in digests:
            batch = self.batches.pop(digest, None)
            self.dirty |= self.waiting.pop(digest, None) is not None
            for tx in batch or ():
                self.known.discard(tx.id)
                if tx.id not in self.committed:
                    self.committed.add(tx.id)
                    txs.append(tx)
        return tuple(txs)
