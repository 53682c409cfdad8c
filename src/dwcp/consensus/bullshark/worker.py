"""The Narwhal worker's logic, sans-IO: client transactions into batches, batches acknowledged by a quorum.

Narwhal splits its worker into `batch_maker` (txs into batches), `quorum_waiter` (2f + 1 workers
stored it), `processor` (hash and store a peer's batch) and `synchronizer` (fetch missing ones);
these are the first two, and the wire format all four share. The process that does the I/O is
`transport/dataplane.py`.

Client stream (one TCP connection, after the greeting byte `CLIENT`): transactions as
`u32 length | payload`, back to back. The worker answers with `u64 count` frames: the first `count`
transactions of this connection are in batches stored by 2f + 1 workers (acknowledged). A payload
whose first byte is 0 and which is at least 9 bytes long is a *sample*: bytes 1..8 are its id, and
its commit is logged for end-to-end latency (Narwhal's benchmark convention).

No per-transaction Python object exists on this path: a connection's `BatchMaker` buffer *is* the
receive buffer (asyncio's `BufferedProtocol` reads straight into it), `scan` walks the length
prefixes in place, and a full buffer becomes the batch without a copy (only the partial transaction
at its end moves to the next buffer). A batch's bytes are its transactions in that same framing.

Worker links (a mutual TLS session after the greeting byte `PEER`, and the plain stream bound to it after
`DATA_PEER`: transport/workerlinks.py) carry DATA frames whose first byte is the kind: BATCH (the batch bytes; the
receiver hashes them once and stores them), ACK (a 32-byte digest), REQUEST (digests of batches the sender is
missing); each ends in the link's 16-byte tag.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from blake3 import blake3

from dwcp.consensus.bullshark.messages import BatchRef

CLIENT, PEER, DATA_PEER = b"C", b"P", b"D"  # first byte of a connection to a worker port
BATCH, ACK, REQUEST = 1, 2, 3  # first byte of a DATA frame between workers
DIGEST_SIZE = 32
TX_LEN = struct.Struct("!I")
COUNT = struct.Struct("!Q")
_SAMPLE_ID = struct.Struct("!Q")


class TxError(Exception):
    """A client sent a transaction we cannot accept (empty or over the size limit): close the stream."""


def batch_digest(data: bytes | bytearray | memoryview) -> bytes:
    """BLAKE3-256 of a batch (one thread): 0.25 ns/B here against SHA-256's 0.64 with the CPU's SHA extensions
    and BLAKE2b-256's 1.27 (benchmarks/bullshark_bound.py), and every batch is hashed by all n workers:
    0.8 us of CPU per 512 B transaction less over a 4-node cluster than SHA-256."""
    return blake3(data).digest()


RUN_MIN = 8  # transactions of one length ahead before scan checks them as a run


def scan(buf: bytearray | memoryview, start: int, end: int, max_tx: int,
         samples: list[int] | None = None) -> tuple[int, int]:
    """Walk `u32 length | payload` transactions in buf[start:end]: (end of the last complete one, count).

    Sample ids are appended to `samples`; TxError on an empty or oversized transaction.

    Where a transaction of n bytes has room for `RUN_MIN` or more of its length behind it, the length prefixes
    at every (4 + n)-th byte are checked as one run, four strided slices compared in C (`_same_prefix`), instead
    of one Python step per transaction (10% of a worker's CPU at saturation, docs/bullshark.md "Session 9");
    the run ends at the first prefix that differs, and the walk goes on from there."""
    pos, count, unpack = start, 0, TX_LEN.unpack_from
    while pos + 4 <= end:
        (n,) = unpack(buf, pos)
        if n == 0 or n > max_tx:
            raise TxError(f"transaction of {n} bytes (allowed 1..{max_tx})")
        stride = 4 + n
        room = (end - pos) // stride
        if room >= RUN_MIN:
            run = _same_prefix(buf, pos, room, stride)
            if samples is not None:
                firsts = _column(buf, pos + 4, run, stride)  # each payload's first byte
                i = firsts.find(0)
                while i >= 0:
                    if n >= 9:
                        samples.append(_SAMPLE_ID.unpack_from(buf, pos + i * stride + 5)[0])
                    i = firsts.find(0, i + 1)
            pos += run * stride
            count += run
            continue
        if pos + stride > end:
            break
        if samples is not None and buf[pos + 4] == 0 and n >= 9:
            samples.append(_SAMPLE_ID.unpack_from(buf, pos + 5)[0])
        pos += stride
        count += 1
    return pos, count


def _column(buf: bytes | bytearray | memoryview, first: int, count: int, stride: int) -> bytes | bytearray:
    """buf[first], buf[first + stride], ... (`count` bytes)."""
    column = buf[first:first + (count - 1) * stride + 1:stride]
    return column.tobytes() if isinstance(column, memoryview) else column


def _same_prefix(buf: bytes | bytearray | memoryview, pos: int, room: int, stride: int) -> int:
    """How many of the `room` transactions from `pos` on (each `stride` bytes if its prefix says so) carry the same
    4-byte length prefix as the first: each prefix byte's column, stripped of its leading run of that byte."""
    run = room
    for k in range(TX_LEN.size):
        column = _column(buf, pos + k, run, stride)
        run -= len(column.lstrip(column[:1]))
    return run


def transactions(data: bytes | bytearray | memoryview) -> list[bytes]:
    """Every transaction payload of a batch (for checks and execution, not the ingress path)."""
    out, pos, view = [], 0, memoryview(data)
    while pos < len(view):
        (n,) = TX_LEN.unpack_from(view, pos)
        out.append(bytes(view[pos + 4: pos + 4 + n]))
        pos += 4 + n
    return out


@dataclass
class Batch:
    digest: bytes
    data: memoryview
    txs: int
    samples: list[int] = field(default_factory=list)


class BatchMaker:
    """One client connection's batch: a buffer the socket reads into, sealed at `batch_size` bytes."""

    def __init__(self, batch_size: int, max_tx: int) -> None:
        self.batch_size, self.max_tx = batch_size, max_tx
        self._capacity = batch_size + max_tx + TX_LEN.size  # a full batch plus one partial tx always fit
        self._buf = bytearray(self._capacity)
        self._filled = 0  # bytes received into _buf
        self._scanned = 0  # bytes of complete transactions
        self._txs = 0
        self._samples: list[int] = []
        self.received_txs = 0  # complete transactions seen on this connection

    def buffer(self) -> memoryview:
        """Where the next bytes from the socket go (never empty)."""
        return memoryview(self._buf)[self._filled:]

    def received(self, n: int) -> Batch | None:
        """`n` bytes were written into `buffer()`; a sealed batch when this filled one (TxError: bad tx)."""
        self._filled += n
        self._scanned, count = scan(self._buf, self._scanned, self._filled, self.max_tx, self._samples)
        self._txs += count
        self.received_txs += count
        return self.seal() if self._scanned >= self.batch_size else None

    @property
    def pending(self) -> int:
        """Complete transactions waiting in the open batch."""
        return self._txs

    def seal(self) -> Batch | None:
        """The open batch (complete transactions only), or None when it has none."""
        if not self._txs:
            return None
        data = memoryview(self._buf)[: self._scanned]  # the received bytes become the batch, uncopied
        tail = self._buf[self._scanned:self._filled]
        self._buf = bytearray(self._capacity)
        self._buf[: len(tail)] = tail
        batch = Batch(batch_digest(data), data, self._txs, self._samples)
        self._filled, self._scanned, self._txs, self._samples = len(tail), 0, 0, []
        return batch


class QuorumWaiter:
    """Our batches sent to the other workers, until 2f + 1 workers (us included) hold each."""

    def __init__(self, quorum: int, worker: int = 0) -> None:
        self.quorum, self.worker = quorum, worker
        self._waiting: dict[bytes, tuple[BatchRef, set[int]]] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def sent(self, batch: Batch) -> BatchRef | None:
        ref = BatchRef(digest=batch.digest, worker=self.worker, txs=batch.txs, size=len(batch.data))
        if self.quorum <= 1:
            return ref
        self._waiting[batch.digest] = (ref, set())
        return None

    def unacknowledged(self, peer: int) -> list[bytes]:
        """Our waiting batches `peer` has not acknowledged (to send again when its link comes back)."""
        return [d for d, (_, acks) in self._waiting.items() if peer not in acks]

    def ack(self, peer: int, digest: bytes) -> BatchRef | None:
        entry = self._waiting.get(digest)
        if entry is None:
            return None  # late or unknown acknowledgement
        ref, acks = entry
        acks.add(peer)
        if len(acks) + 1 < self.quorum:
            return None
        del self._waiting[digest]
        return ref
