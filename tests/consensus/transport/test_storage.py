"""The block store refuses gaps, reorders and overwrites, and keeps everything across a reopen."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from pathlib import Path

import pytest

from dwcp.consensus import storage
from dwcp.consensus.storage import BlockStore, StorageError, StoredBlock


def _block(h: int, txs: int = 2) -> StoredBlock:
    body = f"block {h}".encode()
    return StoredBlock(
        height=h, digest=hashlib.sha256(body).digest(), block=body, certificate=b"cert%d" % h,
        tx_ids=tuple(b"tx-%d-%d" % (h, i) for i in range(txs)),
    )


def test_empty_store_starts_before_first_height(tmp_path: Path) -> None:
    assert BlockStore(tmp_path / "log.sqlite").last_height == 0
    assert BlockStore(tmp_path / "zero.sqlite", first_height=0).last_height == -1


def test_append_contiguous_and_read_back(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "log.sqlite")
    store.append([_block(1)])
    store.append([_block(2), _block(3)])
    assert store.last_height == 3
    got = store.get(2)
    assert got is not None and got.block == b"block 2" and got.certificate == b"cert2"
    assert [b.height for b in store.range(1, 10)] == [1, 2, 3]
    assert store.tx_height(b"tx-3-1") == 3
    assert store.tx_height(b"nope") is None
    assert store.get(4) is None


@pytest.mark.parametrize("bad", [[3], [1], [2, 4], [0]])
def test_refuses_gaps_reorders_and_overwrites(tmp_path: Path, bad: list[int]) -> None:
    store = BlockStore(tmp_path / "log.sqlite")
    store.append([_block(1)])
    with pytest.raises(StorageError):
        store.append([_block(h) for h in bad])
    assert store.last_height == 1
    assert store.get(2) is None  # a failed batch writes nothing, not even its valid prefix


def test_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    store = BlockStore(path)
    store.append([_block(h) for h in range(1, 6)])
    store.close()
    again = BlockStore(path)
    assert again.last_height == 5
    assert [b.digest for b in again.range(1, 5)] == [_block(h).digest for h in range(1, 6)]
    again.append([_block(6)])
    with pytest.raises(StorageError):
        again.append([_block(8)])


def test_a_block_reads_back_with_the_tx_ids_its_commit_named_after_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    store = BlockStore(path)
    store.append([_block(1, txs=3), _block(2, txs=0)])
    store.close()
    again = BlockStore(path)
    assert [b.tx_ids for b in again.scan(chunk_bytes=1)] == [_block(1, txs=3).tx_ids, ()]
    assert again.get(1).tx_ids == (b"tx-1-0", b"tx-1-1", b"tx-1-2")


def test_a_log_written_before_blocks_kept_their_tx_ids_opens_and_grows(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE blocks (height INTEGER PRIMARY KEY, digest BLOB NOT NULL, block BLOB NOT NULL,
                             certificate BLOB NOT NULL, committed_at REAL NOT NULL);
        CREATE TABLE txs (id BLOB PRIMARY KEY, height INTEGER NOT NULL) WITHOUT ROWID;
    """)
    old.execute("INSERT INTO blocks VALUES (1, x'aa', x'bb', x'cc', 0.0)")
    old.commit()
    old.close()
    store = BlockStore(path)
    assert store.get(1).tx_ids == () and store.get(1).block == b"\xbb"
    store.append([_block(2)])
    assert store.get(2).tx_ids == _block(2).tx_ids


def test_duplicate_tx_keeps_its_first_height(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "log.sqlite")
    store.append([_block(1)])
    store.append([StoredBlock(height=2, digest=b"d", block=b"b", certificate=b"c", tx_ids=(b"tx-1-0",))])
    assert store.tx_height(b"tx-1-0") == 1


def test_range_stops_at_byte_budget_but_returns_one(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "log.sqlite")
    store.append([_block(h) for h in range(1, 5)])
    assert [b.height for b in store.range(1, 4, max_bytes=1)] == [1]
    assert [b.height for b in store.range(2, 4, max_bytes=30)] == [2, 3]


def test_wal_and_full_sync_are_on(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "log.sqlite")
    assert store._w.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._w.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: fsync at every synced commit
    assert store._w.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0  # never inside an unsynced commit


def test_unsynced_appends_are_durable_only_from_the_next_synced_one_or_sync(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = BlockStore(tmp_path / "log.sqlite")
    store.append([_block(1)])
    assert (store.last_height, store.synced_height) == (1, 1)
    store.append([_block(2)], sync=False)
    assert store._w.execute("PRAGMA synchronous").fetchone()[0] == 0  # OFF: no fsync for this commit
    store.append([_block(3)], sync=False)
    assert (store.last_height, store.synced_height) == (3, 1)
    assert store.tx_height(b"tx-3-0") == 3  # in the log all the same
    store.append([_block(4)])  # its fsync covers the WAL frames of 2 and 3 too
    assert store.synced_height == 4
    store.append([_block(5)], sync=False)
    synced: list[int] = []
    real = storage.os.fdatasync
    monkeypatch.setattr(storage.os, "fdatasync", lambda fd: (synced.append(fd), real(fd))[1])
    store.sync()
    assert store.synced_height == 5 and len(synced) == 1
    store.sync()  # nothing new: no fsync
    assert len(synced) == 1
    store.close()
    reopened = BlockStore(tmp_path / "log.sqlite")
    assert reopened.last_height == reopened.synced_height == 5


def test_an_append_goes_on_while_sync_fsyncs_and_is_left_for_the_next_sync(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sync() holds the write lock only to read the height its fdatasync covers, so an append (the event loop's,
    in the commit writer) is not held up for the length of an fsync."""
    store = BlockStore(tmp_path / "log.sqlite")
    store.append([_block(1)], sync=False)
    in_fsync, release = threading.Event(), threading.Event()
    real = storage.os.fdatasync

    def slow_fdatasync(fd: int) -> None:
        in_fsync.set()
        release.wait(10)
        real(fd)
    monkeypatch.setattr(storage.os, "fdatasync", slow_fdatasync)
    syncing = threading.Thread(target=store.sync)
    syncing.start()
    try:
        assert in_fsync.wait(5)
        appended = threading.Event()
        appender = threading.Thread(target=lambda: (store.append([_block(2)], sync=False), appended.set()))
        appender.start()
        assert appended.wait(2)  # during the fsync
        assert store.try_append([_block(3)])
        assert (store.last_height, store.synced_height) == (3, 0)
    finally:
        release.set()
        syncing.join()
    assert store.synced_height == 1  # what was appended before the fdatasync began; 2 and 3 need the next one
    monkeypatch.setattr(storage.os, "fdatasync", real)
    store.sync()
    assert store.synced_height == 3


def test_try_append_leaves_an_index_flush_and_a_held_log_to_the_caller(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage, "INDEX_EVERY_TXS", 5)
    monkeypatch.setattr(storage, "INDEX_JITTER", 0.0)
    store = BlockStore(tmp_path / "log.sqlite")
    assert store.try_append([_block(1, txs=3)])  # 3 ids in memory
    assert not store.try_append([_block(2, txs=3)])  # would move 6 ids into `txs`: not on the event loop
    with store._wlock:
        assert not store.try_append([_block(2)])  # the log is held (a checkpoint)
    assert store.last_height == 1 and store.index_flushes == 0
    with pytest.raises(StorageError):
        store.try_append([_block(3, txs=1)])  # a gap is refused, as by append()
    store.append([_block(2, txs=3)], sync=False)
    assert store.index_flushes == 1 and store.tx_height(b"tx-2-0") == 2


def test_checkpoint_runs_synced_and_only_when_due(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "log.sqlite")
    for h in range(1, 4):
        store.append([_block(h)], sync=False)
    assert not store.checkpoint_due and not store.checkpoint()
    assert store.checkpoint(every=3)
    assert store._w.execute("PRAGMA synchronous").fetchone()[0] == 2  # a checkpoint fsyncs WAL and database
    assert not store.checkpoint(every=3)  # the count starts again
    assert [b.height for b in store.range(1, 3)] == [1, 2, 3]


def test_meta_round_trip(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "log.sqlite")
    store.put_meta("view", b"\x07")
    assert store.get_meta("view") == b"\x07"
    assert store.get_meta("other") is None


def test_scan_reads_every_block_in_order_in_small_chunks(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "log.sqlite")
    store.append([_block(h) for h in range(1, 8)])
    assert [b.height for b in store.scan(chunk_bytes=1)] == list(range(1, 8))  # one block per chunk at least
    assert list(BlockStore(tmp_path / "empty.sqlite").scan(chunk_bytes=1024)) == []


def _indexed_rows(store: BlockStore) -> int:
    return store._r.execute("SELECT COUNT(*) FROM txs").fetchone()[0]


def test_transactions_are_indexed_in_sorted_bulk_not_a_row_per_commit(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage, "INDEX_EVERY_TXS", 10)
    monkeypatch.setattr(storage, "INDEX_JITTER", 0.0)  # flush exactly at the mark
    store = BlockStore(tmp_path / "log.sqlite")
    for h in range(1, 5):  # 8 ids: below the mark, no index row written yet
        store.append([_block(h)])
    assert _indexed_rows(store) == 0
    assert [store.tx_height(b"tx-%d-1" % h) for h in range(1, 5)] == [1, 2, 3, 4]  # found all the same
    store.append([_block(5)])  # the 10th id: all ten go in at once, with the mark
    assert _indexed_rows(store) == 10 and store.get_meta("store.txs_indexed_to") == b"5"
    assert store.tx_height(b"tx-2-0") == 2 and store.tx_height(b"tx-5-1") == 5


def test_ids_not_indexed_yet_are_found_after_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage, "INDEX_EVERY_TXS", 10)
    monkeypatch.setattr(storage, "INDEX_JITTER", 0.0)  # flush exactly at the mark
    path = tmp_path / "log.sqlite"
    store = BlockStore(path)
    store.append([_block(h) for h in range(1, 6)])  # indexed up to 5
    store.append([_block(6), _block(7)])  # in memory only
    again = BlockStore(path)  # the first never closed: as after a kill
    assert again.tx_height(b"tx-7-0") == 7 and again.tx_height(b"tx-1-0") == 1
    assert _indexed_rows(again) == 10
    again.append([_block(h) for h in range(8, 11)])  # 4 + 6 ids: over the mark
    assert _indexed_rows(again) == 20 and again.tx_height(b"tx-6-1") == 6


def test_a_tx_committed_again_keeps_its_first_height_on_either_side_of_the_index_mark(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage, "INDEX_EVERY_TXS", 4)
    monkeypatch.setattr(storage, "INDEX_JITTER", 0.0)  # flush exactly at the mark
    store = BlockStore(tmp_path / "log.sqlite")
    store.append([_block(1), _block(2)])  # indexed
    again = (b"tx-1-0",)
    store.append([StoredBlock(height=3, digest=b"d", block=b"b", certificate=b"c", tx_ids=again)])  # not yet
    assert store.tx_height(b"tx-1-0") == 1
    store.append([StoredBlock(height=4, digest=b"d", block=b"b", certificate=b"c", tx_ids=(b"new",)),
                  StoredBlock(height=5, digest=b"d", block=b"b", certificate=b"c", tx_ids=(b"new",) + again)])
    assert store.tx_height(b"new") == 4
    store.append([_block(6), _block(7)])  # over the mark: the unindexed ones go in with their first heights
    assert store.tx_height(b"new") == 4 and store.tx_height(b"tx-1-0") == 1


def test_stores_flush_the_index_at_thresholds_drawn_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The nodes of one cluster append the same transactions: with one fixed threshold every node's writer
    flushed the index at the same height, and together they stalled the whole cluster."""
    monkeypatch.setattr(storage, "INDEX_EVERY_TXS", 100)
    stores = [BlockStore(tmp_path / f"n{i}.sqlite") for i in range(8)]
    for h in range(1, 76):  # 2 ids a block, 150 in all: every store flushed at least once
        for store in stores:
            store.append([_block(h)])
    marks = [store.get_meta("store.txs_indexed_to") for store in stores]
    assert len(set(marks)) > 1 and all(store.index_flushes >= 1 for store in stores)  # not all at one height
    drawn = [BlockStore._next_index_at() for _ in range(1000)]
    assert min(drawn) >= 50 and max(drawn) <= 150 and len(set(drawn)) > 50
    for store in stores:  # whatever the threshold, every id is found, indexed or not
        assert store.tx_height(b"tx-7-1") == 7 and store.tx_height(b"tx-75-0") == 75


def test_a_log_indexed_row_by_row_needs_no_rebuild(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    store = BlockStore(path)
    store.append([_block(1), _block(2)])
    store._w.execute("DELETE FROM meta")  # as written before the index mark: every commit wrote its rows
    store._w.execute("INSERT INTO txs (id, height) VALUES (?, ?), (?, ?)", (b"tx-1-0", 1, b"tx-2-1", 2))
    store.close()
    again = BlockStore(path)
    assert again.get_meta("store.txs_indexed_to") == b"2" and again._unindexed == {}
    assert again.tx_height(b"tx-2-1") == 2


def test_an_append_reads_nothing_back_from_the_log(tmp_path: Path) -> None:
    # issue 12: the writer thread's statements per group commit are BEGIN, the INSERTs, COMMIT;
    # the next height comes from the store's own count, not a `SELECT MAX(height)` round trip per append.
    store = BlockStore(tmp_path / "log.sqlite")
    store.append([_block(1)])
    statements: list[str] = []
    store._w.set_trace_callback(statements.append)
    store.append([_block(2), _block(3)])
    assert statements[0].startswith("BEGIN") and statements[-1] == "COMMIT"
    assert {s.split()[0] for s in statements[1:-1]} == {"INSERT"}  # the blocks' rows (traced one per row)
    with pytest.raises(StorageError):
        store.append([_block(5)])
    assert store.last_height == 3 and store.get(4) is None
