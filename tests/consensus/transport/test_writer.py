"""Group commit: futures resolve only once blocks are durable, in order, many blocks per fsync."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from dwcp.consensus import storage
from dwcp.consensus.storage import BlockStore, StorageError, StoredBlock
from dwcp.consensus.transport.trace import StageTrace
from dwcp.consensus.transport.writer import CommitWriter
from tests.benchmark_scripts import load_benchmark


def _b(h: int) -> StoredBlock:
    return StoredBlock(height=h, digest=b"d%d" % h, block=b"b%d" % h, certificate=b"c", tx_ids=(b"t%d" % h,))


async def test_resolves_after_durable_and_groups_fsyncs(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "log.sqlite")
    writer = CommitWriter(store)
    writer.start()
    futures = [writer.submit(_b(h)) for h in range(1, 51)]
    await asyncio.gather(*futures)
    assert store.last_height == 50
    assert writer.fsyncs < 50  # submitted back to back: shared fsyncs
    reopened = BlockStore(tmp_path / "log.sqlite")
    assert reopened.tx_height(b"t50") == 50
    await writer.stop()


async def test_the_write_starts_while_the_event_loop_is_held(tmp_path: Path) -> None:
    """The writer thread takes a submitted block itself: its write (and fsync) needs no step of the event loop,
    only its answer does. (A writer task on the loop could not start the write until the loop came round.)"""
    store = BlockStore(tmp_path / "log.sqlite")
    writer = CommitWriter(store)
    writer.start()
    fut = writer.submit(_b(1))
    deadline = time.monotonic() + 5.0
    while store.synced_height < 1 and time.monotonic() < deadline:  # holds the loop: nothing else runs on it
        time.sleep(0.001)
    assert (store.last_height, store.synced_height) == (1, 1)
    assert not fut.done()  # the answer waits for the loop
    await fut
    await writer.stop()


def _appends_by_thread(store: BlockStore, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[int]]]:
    """Record which thread runs each of the store's appends, and of which heights."""
    seen: list[tuple[str, list[int]]] = []
    real = store._append

    def append(blocks: list[StoredBlock], sync: bool) -> None:
        seen.append((threading.current_thread().name, [b.height for b in blocks]))
        real(blocks, sync)
    monkeypatch.setattr(store, "_append", append)
    return seen


async def test_submit_appends_on_the_loop_and_leaves_only_the_fsync_to_the_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The unsynced SQLite append is done by submit() itself; the writer thread's part is the fdatasync (two
    GIL round trips per group instead of one per SQLite call); the answer still waits for the fsync."""
    store = BlockStore(tmp_path / "log.sqlite")
    seen = _appends_by_thread(store, monkeypatch)
    writer = CommitWriter(store)
    writer.start()
    fut = writer.submit(_b(1))
    assert store.last_height == 1 and not fut.done()  # in the log already; not answered before its fsync
    await fut
    assert store.synced_height == 1 and writer.fsyncs == 1
    assert seen == [(threading.current_thread().name, [1])]
    await writer.stop()


async def test_a_busy_log_hands_the_append_to_the_thread_and_later_blocks_queue_behind_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While the log is held (a checkpoint on the thread), submit() does not wait: the block goes to the thread,
    and so does every block after it until that append is done, so the order stays the queue's."""
    store = BlockStore(tmp_path / "log.sqlite")
    seen = _appends_by_thread(store, monkeypatch)
    writer = CommitWriter(store, max_unsynced=60.0)
    writer.start()
    with store._wlock:  # as a checkpoint holds it
        first, second = writer.submit(_b(1)), writer.submit(_b(2), sync=False)
        assert store.last_height == 0 and not second.done()  # queued behind block 1, not appended here
    await asyncio.gather(first, second)
    await writer.submit(_b(3))  # the thread's appends are done: back on the loop
    assert seen == [("commit-writer", [1, 2]), (threading.current_thread().name, [3])]
    assert (store.last_height, store.synced_height) == (3, 3)
    await writer.stop()


async def test_gap_fails_the_batch_and_later_blocks_still_commit(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "log.sqlite")
    writer = CommitWriter(store)
    writer.start()
    await writer.submit(_b(1))
    with pytest.raises(StorageError):
        await writer.submit(_b(3))
    await writer.submit(_b(2))
    assert store.last_height == 2
    await writer.stop()


async def test_stop_flushes_what_is_queued(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "log.sqlite")
    writer = CommitWriter(store)
    writer.start()
    for h in range(1, 6):
        writer.submit(_b(h))
    await writer.stop()
    assert store.last_height == 5


async def test_unsynced_blocks_resolve_at_once_and_become_durable_with_the_next_synced_one(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "log.sqlite")
    writer = CommitWriter(store, max_unsynced=60.0)
    writer.start()
    await writer.submit(_b(1), sync=False)
    await writer.submit(_b(2), sync=False)
    assert (store.last_height, store.synced_height, writer.fsyncs) == (2, 0, 0)
    await writer.submit(_b(3))  # someone waits for 3: fsynced, and 1 and 2 with it
    assert (store.synced_height, writer.fsyncs) == (3, 1)
    await writer.submit(_b(4), sync=False)
    await writer.stop()  # stopping makes everything durable
    assert store.synced_height == 4


async def test_an_unsynced_block_is_fsynced_by_its_deadline_when_nothing_follows(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "log.sqlite")
    writer = CommitWriter(store, max_unsynced=0.05)
    writer.start()
    await writer.submit(_b(1), sync=False)
    assert store.synced_height == 0
    await asyncio.sleep(0.3)
    assert (store.synced_height, writer.fsyncs) == (1, 1)
    await writer.stop()


async def test_max_unsynced_zero_fsyncs_every_write(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "log.sqlite")
    writer = CommitWriter(store)  # the default: as before, for nodes whose components need it
    writer.start()
    for h in range(1, 4):
        await writer.submit(_b(h), sync=False)
        assert store.synced_height == h
    assert writer.fsyncs == writer.batches == 3
    await writer.stop()


async def test_the_trace_records_the_writers_upkeep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Log upkeep (checkpoint, idle fsync, index flush) is traced as M spans beside the appends' W spans, so
    commit_stages.py can tell which of the slowest transactions waited behind which."""
    monkeypatch.setattr(storage, "INDEX_EVERY_TXS", 3)
    monkeypatch.setattr(storage, "INDEX_JITTER", 0.0)
    monkeypatch.setattr(storage, "CHECKPOINT_EVERY", 2)
    store = BlockStore(tmp_path / "log.sqlite")
    writer = CommitWriter(store, max_unsynced=0.05)
    writer.trace = trace = StageTrace(tmp_path / "trace", 0)
    writer.start()
    for h in range(1, 4):  # one id a block: the third append flushes the index
        await writer.submit(_b(h))
    await writer.submit(_b(4), sync=False)
    await asyncio.sleep(0.3)  # its deadline: an idle fsync
    await writer.stop()
    spans = [ev for ev in trace.events if ev[0] in "WM"]
    kinds = [ev[3] for ev in spans if ev[0] == "M"]
    assert kinds.count("index") == 1 and "checkpoint" in kinds and kinds[-1] == "sync"
    assert all(ev[1] <= ev[2] for ev in spans)
    index = next(ev for ev in spans if ev[0] == "M" and ev[3] == "index")
    assert next(ev for ev in spans if ev[0] == "W" and ev[3] == [3])[1:3] == index[1:3]  # the append holding it
    stalls = load_benchmark("commit_stages").writer_stalls({0: trace.events}, least=0.0)
    assert stalls["index"]["count"] == 1 and stalls["append"]["count"] == 4 and len(stalls["spans"]) == 4
