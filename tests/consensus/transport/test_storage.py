"""The block store refuses gaps, reorders and overwrites, and keeps everything across a reopen."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

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
    assert store._w.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: fsync at every commit


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
