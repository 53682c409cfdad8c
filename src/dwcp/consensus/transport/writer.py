"""Group commit: blocks reach the block store in height order, off the event loop, many per fsync.

The driver hands each committed block to `CommitWriter.submit()`. One thread does every write, so order
is the order of `submit()`; whatever queued while a write was running goes in the next transaction
together (the cost of a durable commit is shared, not paid per block). The returned future resolves once
the block is in the log; it is also durable (fsynced) when it was submitted with `sync=True`, or when any
block of the same or a later write was (storage.py: the log's durable prefix, `store.synced_height`).

A block no one waits for here needs no fsync of its own (the driver submits it with sync=False): it
becomes durable with the next synced write, and at the latest `max_unsynced` seconds after it was
written (an fsync of the log then, even when nothing else comes). With `max_unsynced` 0 every write is
synced. Checkpoints (WAL into the database file) run between writes, after the futures resolved, so no
block waits for one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from dwcp.consensus.storage import BlockStore, StoredBlock
from dwcp.consensus.transport.trace import StageTrace


class CommitWriter:
    def __init__(self, store: BlockStore, max_unsynced: float = 0.0) -> None:
        self.store = store
        self.max_unsynced = max_unsynced
        self._pending: list[tuple[StoredBlock, asyncio.Future]] = []
        self._sync_wanted = False  # a block in `_pending` was submitted with sync=True
        self._wake = asyncio.Event()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="commit-writer")
        self._task: asyncio.Task | None = None
        self._busy = False
        self._unsynced_since: float | None = None  # when the oldest block not yet durable was written
        self._deadline: asyncio.TimerHandle | None = None  # wakes `_run` to fsync it by then
        self.batches = 0  # write transactions, for tests and metrics
        self.fsyncs = 0  # of them and of idle `sync()`s, those that fsynced the log
        self.trace: StageTrace | None = None  # set by the driver when tracing (trace.py: "W" events)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="commit-writer")

    async def stop(self) -> None:
        """Finish what is queued (it may already be acknowledged upstream as committed), make it all durable,
        then stop."""
        if self._task is not None:
            while (self._pending or self._busy) and not self._task.done():
                self._wake.set()
                await asyncio.sleep(0.001)
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            if self._deadline is not None:
                self._deadline.cancel()
            with contextlib.suppress(Exception):  # a failed store stays failed; close() fsyncs what it can
                await asyncio.get_running_loop().run_in_executor(self._pool, self.store.sync)
        self._pool.shutdown(wait=True)

    def submit(self, block: StoredBlock, sync: bool = True) -> asyncio.Future:
        """Queue `block`; the future resolves once it is in the log (and durable if `sync`, or if the writer
        syncs every write), or fails with the store's error."""
        fut = asyncio.get_running_loop().create_future()
        self._pending.append((block, fut))
        self._sync_wanted |= sync
        self._wake.set()
        return fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # Not asyncio.wait_for: on 3.11 it can swallow the cancellation stop() sends when the event is set
            # at the same moment, and stop() then waits forever. A written block's deadline is a timer.
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            now = time.monotonic()
            # (less a millisecond: the loop may run a timer a clock tick early)
            overdue = self._unsynced_since is not None and now - self._unsynced_since >= self.max_unsynced - 1e-3
            sync = self._sync_wanted or self.max_unsynced <= 0 or overdue
            self._sync_wanted = False
            if not batch:
                if overdue:
                    await self._sync_idle(loop)
                continue
            self._busy = True
            try:
                span = await loop.run_in_executor(self._pool, self._append, [b for b, _ in batch], sync)
            except Exception as exc:  # a refused batch fails every future in it; the driver decides
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            finally:
                self._busy = False
            self.batches += 1
            if sync:
                self._synced()
            elif self._unsynced_since is None:
                self._unsynced_since = span[1]
                self._deadline = loop.call_later(self.max_unsynced, self._wake.set)
            if self.trace is not None:
                self.trace.write_span(*span[:2], [b.height for b, _ in batch])
                if span[2]:
                    self.trace.writer_span("index", *span[:2])
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(None)
            if not self._pending and self.store.checkpoint_due:  # now it delays no block
                await self._checkpoint(loop)

    def _append(self, blocks: list[StoredBlock], sync: bool) -> tuple[float, float, bool]:
        """In the writer thread: the store's append, when it started and ended, and whether it also flushed
        the transaction index (for the trace)."""
        start, flushes = time.monotonic(), self.store.index_flushes
        self.store.append(blocks, sync=sync)
        return start, time.monotonic(), self.store.index_flushes != flushes

    async def _sync_idle(self, loop: asyncio.AbstractEventLoop) -> None:
        self._busy = True
        try:
            start, end = await loop.run_in_executor(self._pool, self._timed, self.store.sync)
        except Exception:  # the next write reports the store's failure to the driver
            return
        finally:
            self._busy = False
        if self.trace is not None:
            self.trace.writer_span("sync", start, end)
        self._synced()

    @staticmethod
    def _timed(work: Callable[[], object]) -> tuple[float, float]:
        start = time.monotonic()
        work()
        return start, time.monotonic()

    def _synced(self) -> None:
        self.fsyncs += 1
        self._unsynced_since = None
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    async def _checkpoint(self, loop: asyncio.AbstractEventLoop) -> None:
        self._busy = True
        try:
            start, end = await loop.run_in_executor(self._pool, self._timed, self.store.checkpoint)
        except Exception:  # the WAL only grows; the next write reports a failing store
            return
        finally:
            self._busy = False
        if self.trace is not None:
            self.trace.writer_span("checkpoint", start, end)
