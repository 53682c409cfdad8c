"""Group commit: blocks reach the block store in height order, off the event loop, many per fsync.

The driver hands each committed block to `CommitWriter.submit()` and acknowledges its transactions
only when the returned future resolves, i.e. after SQLite's fsync. One thread does every write,
so order is the order of `submit()`; whatever queued while an fsync was running goes in the next
transaction together (the cost of a durable commit is shared, not paid per block).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

from dwcp.consensus.storage import BlockStore, StoredBlock
from dwcp.consensus.transport.trace import StageTrace


class CommitWriter:
    def __init__(self, store: BlockStore) -> None:
        self.store = store
        self._pending: list[tuple[StoredBlock, asyncio.Future]] = []
        self._wake = asyncio.Event()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="commit-writer")
        self._task: asyncio.Task | None = None
        self._busy = False
        self.batches = 0  # fsynced transactions, for tests and metrics
        self.trace: StageTrace | None = None  # set by the driver when tracing (trace.py: "W" events)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="commit-writer")

    async def stop(self) -> None:
        """Finish what is queued (it may already be acknowledged upstream as committed), then stop."""
        if self._task is not None:
            while self._pending or self._busy:
                self._wake.set()
                await asyncio.sleep(0.001)
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._pool.shutdown(wait=True)

    def submit(self, block: StoredBlock) -> asyncio.Future:
        """Queue `block`; the future resolves once it is durable, or fails with the store's error."""
        fut = asyncio.get_running_loop().create_future()
        self._pending.append((block, fut))
        self._wake.set()
        return fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            if not batch:
                continue
            self._busy = True
            try:
                span = await loop.run_in_executor(self._pool, self._append, [b for b, _ in batch])
            except Exception as exc:  # a refused batch fails every future in it; the driver decides
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            finally:
                self._busy = False
            self.batches += 1
            if self.trace is not None:
                self.trace.write_span(*span, [b.height for b, _ in batch])
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(None)

    def _append(self, blocks: list[StoredBlock]) -> tuple[float, float]:
        """In the writer thread: the store's append, and when it started and ended (for the trace)."""
        start = time.monotonic()
        self.store.append(blocks)
        return start, time.monotonic()
