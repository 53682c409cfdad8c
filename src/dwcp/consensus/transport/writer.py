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

The writer thread takes blocks straight from a thread-safe queue (`submit()` puts, the thread wakes): no
event-loop step lies between a decided block and the start of its write. (Until session 8 a writer task on
the loop took the block and handed it to a one-thread pool, so the write began only once the loop had come
round to that task: the "hand-off late" appends of docs/tpbft.md, session 7.) The thread hands each write's
outcome back with one `call_soon_threadsafe`; the futures are resolved on the loop, after the write (and its
fsync, if any) returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable

from dwcp.consensus.storage import BlockStore, StoredBlock
from dwcp.consensus.transport.trace import StageTrace

_STOP = object()  # queued by stop(): the thread writes what came before it, fsyncs the log and ends
_DEADLINE = object()  # what the thread's wait returns when the oldest unsynced block is due for its fsync


class CommitWriter:
    def __init__(self, store: BlockStore, max_unsynced: float = 0.0) -> None:
        self.store = store
        self.max_unsynced = max_unsynced
        self._queue: queue.SimpleQueue = queue.SimpleQueue()  # (block, future, sync) items and _STOP
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Future | None = None  # resolved by the thread as it ends
        self._unsynced_since: float | None = None  # (thread) when the oldest block not yet durable was written
        self.batches = 0  # write transactions, for tests and metrics
        self.fsyncs = 0  # of them and of idle syncs, those that fsynced the log
        self.trace: StageTrace | None = None  # set by the driver when tracing (trace.py: "W" and "M" events)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = self._loop.create_future()
        self._thread = threading.Thread(target=self._run, name="commit-writer", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Finish what is queued (it may already be acknowledged upstream as committed), make it all durable,
        then stop."""
        if self._thread is None or self._stopped is None:
            return
        self._queue.put(_STOP)
        await self._stopped  # the thread's last callback: every write's outcome was resolved before it
        self._thread.join()
        self._thread = None

    def submit(self, block: StoredBlock, sync: bool = True) -> asyncio.Future:
        """Queue `block`; the future resolves once it is in the log (and durable if `sync`, or if the writer
        syncs every write), or fails with the store's error."""
        fut = asyncio.get_running_loop().create_future()
        self._queue.put((block, fut, sync))
        return fut

    # -- the writer thread ---------------------------------------------------------------------
    def _run(self) -> None:
        try:
            stopping = False
            while not stopping:
                item = self._next()
                if item is _STOP:
                    break
                if item is _DEADLINE:  # nothing came before the oldest unsynced block's fsync deadline
                    self._sync_idle()
                    continue
                batch = [item]
                while True:  # group commit: whatever queued meanwhile goes in the same transaction
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is _STOP:
                        stopping = True
                        break
                    batch.append(more)
                self._write(batch)
                if not stopping and self._queue.empty() and self.store.checkpoint_due:  # now it delays no block
                    self._upkeep("checkpoint", self.store.checkpoint)
            with contextlib.suppress(Exception):  # a failed store stays failed; close() fsyncs what it can
                self.store.sync()
        finally:
            self._to_loop(self._ended)

    def _next(self) -> object:
        """The next queued item; `_DEADLINE` when the oldest unsynced block's fsync deadline came first."""
        if self._unsynced_since is None:
            return self._queue.get()
        # (less a millisecond, as the event loop's timer was: a wait may end a clock tick early)
        wait = self._unsynced_since + self.max_unsynced - 1e-3 - time.monotonic()
        try:
            return self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
        except queue.Empty:
            return _DEADLINE

    def _write(self, batch: list[tuple[StoredBlock, asyncio.Future, bool]]) -> None:
        now = time.monotonic()
        overdue = self._unsynced_since is not None and now - self._unsynced_since >= self.max_unsynced - 1e-3
        sync = self.max_unsynced <= 0 or overdue or any(s for _, _, s in batch)
        start, flushes = now, self.store.index_flushes
        try:
            self.store.append([b for b, _, _ in batch], sync=sync)
        except Exception as exc:  # a refused batch fails every future in it; the driver decides
            self._to_loop(self._failed, batch, exc)
            return
        end = time.monotonic()
        self.batches += 1
        if sync:
            self._synced()
        elif self._unsynced_since is None:
            self._unsynced_since = end
        self._to_loop(self._written, batch, start, end, self.store.index_flushes != flushes)

    def _sync_idle(self) -> None:
        if self._upkeep("sync", self.store.sync):  # else the next write reports the store's failure
            self._synced()

    def _upkeep(self, kind: str, work: Callable[[], object]) -> bool:
        """Log upkeep that no block waits for (an idle fsync, a checkpoint); False if it failed (a failed
        checkpoint leaves the WAL to grow, and the next write reports a failing store)."""
        start = time.monotonic()
        try:
            work()
        except Exception:
            return False
        if self.trace is not None:
            self._to_loop(self.trace.writer_span, kind, start, time.monotonic())
        return True

    def _synced(self) -> None:
        self.fsyncs += 1
        self._unsynced_since = None

    def _to_loop(self, callback: Callable[..., object], *args: object) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: no one is left to tell
            self._loop.call_soon_threadsafe(callback, *args)

    # -- back on the event loop ----------------------------------------------------------------
    def _written(self, batch: list[tuple[StoredBlock, asyncio.Future, bool]], start: float, end: float,
                 indexed: bool) -> None:
        if self.trace is not None:
            self.trace.write_span(start, end, [b.height for b, _, _ in batch])
            if indexed:
                self.trace.writer_span("index", start, end)
        for _, fut, _ in batch:
            if not fut.done():
                fut.set_result(None)

    @staticmethod
    def _failed(batch: list[tuple[StoredBlock, asyncio.Future, bool]], exc: Exception) -> None:
        for _, fut, _ in batch:
            if not fut.done():
                fut.set_exception(exc)

    def _ended(self) -> None:
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)
