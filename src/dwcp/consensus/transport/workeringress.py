"""Client transaction streams into a Narwhal worker (for `dataplane.py`): each connection fills its
own `BatchMaker`; cumulative acknowledged counts go back once 2f + 1 workers hold a batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING

from dwcp.consensus.bullshark.worker import COUNT, Batch, BatchMaker, TxError

if TYPE_CHECKING:
    from dwcp.consensus.transport.dataplane import Dataplane

log = logging.getLogger("dwcp.bullshark.worker")


class Ingress:
    """A client's transaction stream into its own batch maker; cumulative acknowledgements back."""

    def __init__(self, plane: Dataplane, transport: asyncio.Transport) -> None:
        self.plane, self.transport = plane, transport
        self.maker = BatchMaker(plane.setup.batch_size, plane.setup.max_tx)
        self.unacked: deque[tuple[bytes, int]] = deque()  # (batch digest, txs of this stream up to it)
        self.acked: set[bytes] = set()
        self.sealed_txs = 0
        self.timer: asyncio.TimerHandle | None = None
        plane.clients.add(self)
        if plane.paused:
            transport.pause_reading()

    def buffer(self) -> memoryview:
        return self.maker.buffer()

    def updated(self, nbytes: int) -> None:
        try:
            batch = self.maker.received(nbytes)
        except TxError as exc:
            log.warning("closing a client stream: %s", exc)
            self.transport.close()
            return
        if batch is not None:
            self._sealed(batch)
        if self.maker.pending and self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(self.plane.setup.max_batch_delay, self._expire)

    def _expire(self) -> None:
        self.timer = None
        batch = self.maker.seal()
        if batch is not None:
            self._sealed(batch)

    def _sealed(self, batch: Batch) -> None:
        if self.timer is not None and not self.maker.pending:
            self.timer.cancel()
            self.timer = None
        self.sealed_txs += batch.txs
        self.plane.totals["received_txs"] += batch.txs
        self.unacked.append((batch.digest, self.sealed_txs))
        self.plane.seal(batch, self)

    def acknowledged(self, digest: bytes) -> None:
        self.acked.add(digest)
        count = None
        while self.unacked and self.unacked[0][0] in self.acked:
            d, count = self.unacked.popleft()
            self.acked.discard(d)
        if count is not None and not self.transport.is_closing():
            self.transport.write(COUNT.pack(count))

    def set_reading(self, on: bool) -> None:
        if self.transport.is_closing():
            return
        if on:
            self.transport.resume_reading()
        else:
            self.transport.pause_reading()

    def closed(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        batch = self.maker.seal()  # what arrived before the client hung up is still batched
        if batch is not None:
            self._sealed(batch)
        self.plane.clients.discard(self)
