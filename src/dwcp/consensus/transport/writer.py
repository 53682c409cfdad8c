"""Group commit: blocks reach the block store in height order, many per fsync, the fsync off the event loop.

The driver hands each committed block to `CommitWriter.submit()`. The returned future resolves once the block
is in the log; it is also durable (fsynced) when it was submitted with `sync=True`, or when any block of the
same or a later write was (storage.py: the log's durable prefix, `store.synced_height`). Futures resolve in
the order of `submit()`, and so do the appends.

A block no one waits for here needs no fsync of its own (the driver submits it with sync=False): it
becomes durable with the next synced write, and at the latest `max_unsynced` seconds after it was
written (an fsync of the log then, even when nothing else comes). With `max_unsynced` 0 every write is
synced. Checkpoints (WAL into the database file) run between writes, after the futures resolved, so no
block waits for one.

Who does what (session 9). `submit()` appends the block itself, on the event loop, without an fsync
(`store.try_append`: one small SQLite transaction, ~0.2 ms), whenever that is quick: no earlier block is
still queued for the writer thread to append, no checkpoint holds the log, and the append would not move the
in-memory ids into the index. Then only the fdatasync is the writer thread's (`store.sync()`, which holds no
lock during it, so the loop appends on meanwhile): the thread takes the GIL twice per group (to start the
fdatasync, and to hand the outcome back with one `call_soon_threadsafe`), where appending there took it at
every SQLite call (~5 times per block). Otherwise the block is queued for the thread to append (unsynced)
and sync, as before. A block appended on the loop that needs no fsync resolves at once when nothing queued
is ahead of it; the thread is told (once) that the log has an unsynced tail, for its deadline.

The writer thread takes work straight from a thread-safe queue (`submit()` puts, the thread wakes): no
event-loop step lies between a decided block and its fsync. (Until session 8 a writer task on the loop took
the block and handed it to a one-thread pool.) Whatever queued while the thread was busy goes in its next
group: one append of the blocks it must append, then one fdatasync if any block of the group is waited for.
The futures are resolved on the loop, after the fsync (if any) returned: nothing is answered before it.
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
_UNSYNCED = object()  # queued as (_UNSYNCED, t) by submit(): the loop appended a block no one waits for at t

# A queued block: (block, future, sync, how far it got on the loop): None, the thread appends it; (start, end),
# the loop appended it then; an exception, the loop's append refused it (its future fails in its turn).
_Item = tuple[StoredBlock, asyncio.Future, bool, "tuple[float, float] | Exception | None"]


class CommitWriter:
    def __init__(self, store: BlockStore, max_unsynced: float = 0.0) -> None:
        self.store = store
        self.max_unsynced = max_unsynced
        self._queue: queue.SimpleQueue = queue.SimpleQueue()  # _Items, (_UNSYNCED, t) and _STOP
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Future | None = None  # resolved by the thread as it ends
        self._unsynced_since: float | None = None  # (thread) when the oldest block not yet durable was written
        self._queued = 0  # (loop) blocks queued for the thread whose futures are not resolved yet
        self._to_append = 0  # (loop) of them, those the thread appends: no block is appended on the loop meanwhile
        self._tail_told = False  # the thread knows of an unsynced block the loop appended (the loop sets it,
        # the thread clears it before it reads the height an fsync covers)
        self._loop_appends = 0  # write transactions on the loop ...
        self._thread_appends = 0  # ... and on the thread (`batches`)
        self.fsyncs = 0  # fsyncs of the log (with blocks waiting, or idle at the deadline)
        self.trace: StageTrace | None = None  # set by the driver when tracing (trace.py: "W" and "M" events)

    @property
    def batches(self) -> int:
        """Write transactions (appends, on the loop or the thread), for tests and metrics."""
        return self._loop_appends + self._thread_appends

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
        """Write `block`; the future resolves once it is in the log (and durable if `sync`, or if the writer
        syncs every write), or fails with the store's error."""
        fut = asyncio.get_running_loop().create_future()
        state: tuple[float, float] | Exception | None = None
        if self._to_append == 0:  # nothing ahead of it waits for the thread's append: append it here if quick
            start = time.monotonic()
            try:
                if self.store.try_append([block]):
                    state = (start, time.monotonic())
                    self._loop_appends += 1
            except Exception as exc:  # refused (e.g. a gap): it fails in its turn, later blocks still go in
                state = exc
            if isinstance(state, tuple) and not sync and self.max_unsynced > 0 and self._queued == 0:
                # In the log, and no one waits for its fsync: done now (nothing queued is ahead of it).
                if not self._tail_told:
                    self._tail_told = True
                    self._queue.put((_UNSYNCED, state[0]))
                if self.trace is not None:
                    self.trace.write_span(state[0], state[1], [block.height])
                fut.set_result(None)
                return fut
            if isinstance(state, Exception) and self._queued == 0:
                fut.set_exception(state)
                return fut
        self._queued += 1
        if state is None:
            self._to_append += 1
        self._queue.put((block, fut, sync, state))
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
                else:
                    batch: list[_Item] = []
                    while True:  # group commit: whatever queued meanwhile goes in the same write and fsync
                        if isinstance(item, tuple) and item[0] is _UNSYNCED:
                            if self._unsynced_since is None:
                                self._unsynced_since = item[1]
                        else:
                            batch.append(item)
                        try:
                            item = self._queue.get_nowait()
                        except queue.Empty:
                            break
                        if item is _STOP:
                            stopping = True
                            break
                    if batch:
                        self._write(batch)
                if not stopping and self._queue.empty() and self.store.checkpoint_due:  # now it delays no block
                    self._upkeep("checkpoint", self.store.checkpoint)
            with contextlib.suppress(Exception):  # a failed store stays failed; close() fsyncs what it can
                self._sync()
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

    def _write(self, batch: list[_Item]) -> None:
        """Append the blocks the loop did not, then fsync if any block is waited for (or due); the outcomes go
        back to the loop in one callback, in queue order."""
        start = time.monotonic()
        outcomes: list[Exception | None] = [st if isinstance(st, Exception) else None for _, _, _, st in batch]
        todo = [i for i, (_, _, _, st) in enumerate(batch) if st is None]
        flushes = self.store.index_flushes
        if todo:
            try:
                self.store.append([batch[i][0] for i in todo], sync=False)
                self._thread_appends += 1
            except Exception as exc:  # a refused append fails every block in it; the driver decides
                for i in todo:
                    outcomes[i] = exc
        written = [i for i, out in enumerate(outcomes) if out is None]
        if written:
            overdue = self._unsynced_since is not None and start - self._unsynced_since >= self.max_unsynced - 1e-3
            if self.max_unsynced <= 0 or overdue or any(batch[i][2] for i in written):
                try:
                    self._sync()
                except Exception as exc:  # not durable: none of them may be answered
                    for i in written:
                        outcomes[i] = exc
            elif self._unsynced_since is None:
                st = batch[written[0]][3]
                self._unsynced_since = st[0] if isinstance(st, tuple) else start
        self._to_loop(self._written, batch, outcomes, start, time.monotonic(), self.store.index_flushes != flushes)

    def _sync(self) -> None:
        """fsync the log (what the loop appends meanwhile is left for the next one; the deadline runs from now)."""
        self._tail_told = False  # before sync() reads the height it covers: a block appended after is told again
        began = time.monotonic()
        self.store.sync()
        self.fsyncs += 1
        self._unsynced_since = began if self.store.last_height > self.store.synced_height else None

    def _sync_idle(self) -> None:
        self._upkeep("sync", self._sync)  # if it failed, the next write reports the store's failure

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

    def _to_loop(self, callback: Callable[..., object], *args: object) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: no one is left to tell
            self._loop.call_soon_threadsafe(callback, *args)

    # -- back on the event loop ----------------------------------------------------------------
    def _written(self, batch: list[_Item], outcomes: list[Exception | None], start: float, end: float,
                 indexed: bool) -> None:
        appended = [b.height for b, _, _, st in batch if st is None]
        self._queued -= len(batch)
        self._to_append -= len(appended)
        if self.trace is not None:
            if appended:
                self.trace.write_span(start, end, appended)
                if indexed:
                    self.trace.writer_span("index", start, end)
            for b, _, _, st in batch:  # appended on the loop: from that append to the fsync
                if isinstance(st, tuple):
                    self.trace.write_span(st[0], end, [b.height])
        for (_, fut, _, _), out in zip(batch, outcomes, strict=True):
            if fut.done():
                continue
            if out is None:
                fut.set_result(None)
            else:
                fut.set_exception(out)

    def _ended(self) -> None:
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)
