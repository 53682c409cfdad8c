"""A streaming transaction client for Narwhal workers (the format is in `bullshark/worker.py`).

`TxStream` opens one connection to a worker, sends `CLIENT`, then writes transactions at a fixed
rate in chunks (one `write` per tick, not per transaction), and reads the worker's cumulative
acknowledgements. Every `sample_every`-th transaction is a sample (first byte 0, then a u64 id):
its send time is kept so a benchmark can join it with the worker's `samples.log` commit time.
Every other payload starts with 8 random bytes and a counter, so no two runs send equal payloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import time
from dataclasses import dataclass, field

from dwcp.consensus.bullshark.worker import CLIENT, COUNT, TX_LEN
from dwcp.runtime.waits import sleep_unless_stopped

TICK = 0.01  # seconds between writes at a steady rate


@dataclass
class StreamStats:
    sent: int = 0
    acknowledged: int = 0
    sample_sent_at: dict[int, float] = field(default_factory=dict)  # sample id -> wall-clock send time


def payloads(start: int, count: int, size: int, tag: bytes, sample_every: int, sample_base: int,
             stats: StreamStats) -> bytes:
    """`count` framed transactions numbered from `start` (samples marked), as one buffer."""
    out = bytearray()
    filler = b"." * max(0, size - 17)
    now = time.time()
    for seq in range(start, start + count):
        if sample_every and seq % sample_every == 0:
            sample = sample_base + seq
            body = b"\0" + struct.pack("!Q", sample) + tag[:8] + filler
            stats.sample_sent_at[sample] = now
        else:
            body = b"\1" + tag[:8] + struct.pack("!Q", seq) + filler
        out += TX_LEN.pack(len(body)) + body
    return bytes(out)


class TxStream:
    def __init__(self, host: str, port: int, *, size: int = 512, sample_every: int = 0, sample_base: int = 0) -> None:
        self.host, self.port, self.size = host, port, size
        self.sample_every, self.sample_base = sample_every, sample_base
        self.tag = os.urandom(8)
        self.stats = StreamStats()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._acks: asyncio.Task | None = None

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        self._writer.write(CLIENT)
        self._acks = asyncio.create_task(self._read_acks())

    async def _read_acks(self) -> None:
        assert self._reader is not None
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                (self.stats.acknowledged,) = COUNT.unpack(await self._reader.readexactly(COUNT.size))

    async def send(self, count: int) -> None:
        """Write `count` more transactions (waits while the worker applies backpressure)."""
        assert self._writer is not None
        self._writer.write(payloads(self.stats.sent, count, self.size, self.tag, self.sample_every,
                                    self.sample_base, self.stats))
        self.stats.sent += count
        await self._writer.drain()

    async def run(self, rate: float, duration: float) -> StreamStats:
        """Send at `rate` tx/s for `duration` seconds (behind schedule: catch up in later ticks)."""
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < duration:
            due = int(rate * min(elapsed + TICK, duration)) - self.stats.sent
            if due > 0:
                await self.send(due)
            await asyncio.sleep(TICK)
        return self.stats

    async def wait_acknowledged(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.stats.acknowledged < self.stats.sent and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return self.stats.acknowledged >= self.stats.sent

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self._writer.wait_closed()
        if self._acks is not None:
            self._acks.cancel()
            await asyncio.gather(self._acks, return_exceptions=True)


async def drive(base_urls: list[str], client, stop: asyncio.Event, rate: float) -> None:
    """`dwcp up`'s load for a Bullshark cluster: ~`rate` tx/s streamed to the nodes' workers.

    Each node's `/v1/status` names its worker; one stream per worker carries rate / n. A stream
    whose worker is down (restarting) is reopened every second; nothing here raises."""

    async def one(url: str) -> None:
        while not stop.is_set():
            try:
                status = (await client.get(f"{url}/v1/status")).json()
                host, _, port = status["worker"].rpartition(":")
                stream = TxStream(host, int(port), size=256)
                await stream.connect()
                try:
                    while not stop.is_set():
                        await stream.send(max(1, int(rate / len(base_urls) * TICK * 10)))
                        await sleep_unless_stopped(stop, TICK * 10)
                finally:
                    await stream.close()
            except Exception:  # a node or worker not up yet, or restarting: try again in a second
                await sleep_unless_stopped(stop, 1.0)

    if not base_urls or rate <= 0:
        await stop.wait()
        return
    await asyncio.gather(*(one(url) for url in base_urls))
