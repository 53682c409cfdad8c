"""The committed log of one node: an append-only SQLite block store with a transaction index.

Durability rules, the reason this file exists:
- WAL journal. `append(blocks)` (sync=True) commits with `synchronous=FULL`: it returns only after the WAL
  is fsynced, and so is every block appended before it (the WAL is one file written in order, and
  recovery keeps the frames up to the last valid commit). `append(blocks, sync=False)` commits without
  the fsync (`synchronous=OFF`): the blocks are in the log, but durable only once a later synced append
  or `sync()` (an fdatasync of the WAL) returned. `synced_height` is the top of the durable prefix; the
  driver acknowledges a transaction to clients only at or below it.
- Checkpoints (WAL -> database file) run only with `synchronous=FULL` (`checkpoint()`, and on close), never
  inside an unsynced commit: a checkpoint without fsyncs followed by the WAL's restart could lose blocks
  that were durable. So SQLite's automatic checkpoint is off; the writer checkpoints between appends.
- Heights are contiguous: `append()` accepts height `last + 1` and nothing else (no gaps, no
  reorders, no overwrites), checked against the last height read at open and advanced by each append
  (one `BlockStore` is its file's only writer), inside the SQLite transaction that writes.
- Several blocks can go in one `append()` call: one transaction, one fsync (group commit).
Blocks are stored as the codec's bytes with their digest and commit certificate, so this file
knows nothing about any protocol's types and serves ProBFT and Bullshark unchanged.
Each block row also keeps the ids its commit named (`tx_ids`, a msgpack array), read back with the block
on restart: a Bullshark block names batches, not transactions, so the ids a node took over HTTP are
known only from its `Commit`, and its core must relearn them from the log to refuse a resubmission.

The transaction index (`txs`: id -> first height) is written in sorted bulk, not a row per transaction per
commit: ids are random, so each row inserted at commit time dirtied its own B-tree page and every fsynced
commit wrote ~one 4 KiB WAL page per transaction (0.38 of 0.6 ms of the writer's CPU per 26-tx block on a
520k-row index). The ids of blocks above the index mark (`meta`'s `store.txs_indexed_to`) live in memory;
once about `INDEX_EVERY_TXS` of them have gathered (a threshold each store draws at random around it, so the
nodes of one cluster do not all flush at the same height), they go into `txs` sorted by id, in the same
transaction as the block that crossed the mark, with the mark. Nothing durable depends on it: the ids are in
every block row, so after a crash the unindexed tail is read back from the blocks above the mark.

Reads and writes use separate connections: WAL readers never wait for a writer's fsync, so the
event loop can answer `GET /v1/blocks/{h}` while the writer thread is committing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import sqlite3
import struct
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks (
    height INTEGER PRIMARY KEY,
    digest BLOB NOT NULL,
    block BLOB NOT NULL,
    certificate BLOB NOT NULL,
    committed_at REAL NOT NULL,
    tx_ids BLOB NOT NULL DEFAULT x''
);
CREATE TABLE IF NOT EXISTS txs (
    id BLOB PRIMARY KEY,
    height INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
"""


class CoreState:
    """A core's `Persist`-ed values (e.g. a DAG primary's last header and votes): the last value saved under each
    key, read back after a restart.

    Kept in one append-only file beside the log, `<log stem>.state.log`, opened once: each `save` appends one
    record `u32 value length | u16 key length | key | value | BLAKE2b-128 of the rest`. Reading keeps each key's
    last valid record; a record the process was killed in the middle of writing (the `save` that never returned)
    fails its check and is cut off, so that key reads as its previous value. When the file has grown past
    `COMPACT_BYTES` and four times its live records, it is rewritten with one record per key (a temporary file
    renamed over it, and the file reopened).

    Not fsynced: a value survives the process being killed (it is in the page cache when `save` returns), not a
    power cut. A core writes one per vote; an fsync each would cost more than the vote (the log's own fsyncs
    already take a writer thread), and the log's durability rules stay as they are.

    Until session 9 each key was its own file, `<log stem>.<key>.state`, replaced by writing a temporary file and
    renaming it over the old one. On this VM's ext4 every such rename waited for the disk (ext4 flushes the
    new file's data before replacing one: `auto_da_alloc`): the four primaries of a saturated Bullshark
    cluster spent ~1.5 thread-seconds per second in `rename` on their event loops, ~10 ms per vote
    (docs/bullshark.md, "Session 9"). Such files are still read (under the log's records) and removed at the
    first compaction.
    """

    COMPACT_BYTES = 1 << 20
    _HEAD = struct.Struct("!IH")
    _CHECK = 16

    def __init__(self, log_path: Path) -> None:
        self.dir, self.stem = log_path.parent, log_path.stem
        self.path = self.dir / f"{self.stem}.state.log"
        self.fd: int | None = None
        self.values: dict[str, bytes] = {}
        self.size = 0  # bytes of valid records in the file
        self._live: dict[str, int] = {}  # key -> size of its last record
        self.live_bytes = 0  # their sum: the size of the file once compacted
        self._load()

    def _legacy(self) -> list[Path]:
        return sorted(self.dir.glob(f"{self.stem}.*.state"))

    def _load(self) -> None:
        prefix, suffix = f"{self.stem}.", ".state"
        for p in self._legacy():
            self._keep(p.name[len(prefix):-len(suffix)], p.read_bytes())
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        pos = 0
        while pos + self._HEAD.size <= len(data):
            length, key_length = self._HEAD.unpack_from(data, pos)
            end = pos + self._HEAD.size + key_length + length + self._CHECK
            if end > len(data) or hashlib.blake2b(data[pos:end - self._CHECK], digest_size=self._CHECK).digest() \
                    != data[end - self._CHECK:end]:
                break  # a torn last record: that save never returned
            body = pos + self._HEAD.size
            self._keep(data[body:body + key_length].decode(), data[body + key_length:end - self._CHECK])
            pos = end
        self.size = pos

    @classmethod
    def _record(cls, key: str, value: bytes) -> bytes:
        name = key.encode()
        body = cls._HEAD.pack(len(value), len(name)) + name + value
        return body + hashlib.blake2b(body, digest_size=cls._CHECK).digest()

    def _open(self) -> int:
        if self.fd is None:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            if os.fstat(self.fd).st_size != self.size:
                os.ftruncate(self.fd, self.size)  # cut a torn record off before appending after it
        return self.fd

    def save(self, key: str, value: bytes) -> None:
        record = self._record(key, value)
        fd = self._open()
        written = os.pwrite(fd, record, self.size)
        if written != len(record):  # e.g. the disk is full: nothing may follow a partial record
            os.ftruncate(fd, self.size)
            raise OSError(f"{self.path}: wrote {written} of a {len(record)}-byte record")
        self.size += written
        self._keep(key, value)
        if self.size > self.COMPACT_BYTES and self.size > 4 * self.live_bytes:
            self._compact()

    def _keep(self, key: str, value: bytes) -> None:
        self.values[key] = value
        size = self._HEAD.size + len(key.encode()) + len(value) + self._CHECK
        self.live_bytes += size - self._live.get(key, 0)
        self._live[key] = size

    def _compact(self) -> None:
        records = b"".join(self._record(k, v) for k, v in sorted(self.values.items()))
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            if os.write(fd, records) != len(records):
                raise OSError(f"{tmp}: short write")
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        self.close()
        self.size = len(records)
        for p in self._legacy():  # their values are in the log's records now
            p.unlink()

    def items(self) -> list[tuple[str, bytes]]:
        return sorted(self.values.items())

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class StorageError(Exception):
    """An append that would break the log (gap, reorder, overwrite); the caller has a bug or a bad block."""


@dataclass(frozen=True, slots=True)
class StoredBlock:
    height: int
    digest: bytes
    block: bytes  # codec-encoded block
    certificate: bytes  # codec-encoded commit certificate
    tx_ids: tuple[bytes, ...] = ()
    committed_at: float = 0.0  # wall-clock seconds, for humans; never used for ordering


_ids_decoder = msgspec.msgpack.Decoder(tuple[bytes, ...])


def _ids(tx_ids: tuple[bytes, ...]) -> bytes:
    """A block's tx ids for its row; empty (the column's default, as in rows written before it) when none."""
    return msgspec.msgpack.encode(tx_ids) if tx_ids else b""


CHECKPOINT_EVERY = 256  # appends between checkpoints (about SQLite's default of 1,000 WAL pages at 3-4 per append)
INDEX_EVERY_TXS = 1024  # unindexed ids held in memory (on average) before they go into `txs` in one sorted insert
# Each store draws every threshold anew in INDEX_EVERY_TXS * [1 - INDEX_JITTER, 1 + INDEX_JITTER): the nodes of
# one cluster commit the same transactions, so with one fixed threshold all of them flushed at the same height,
# and on a shared host their writers stalled together (7 x 4,096 rows: 60-100 ms, the whole cluster's tail).
INDEX_JITTER = 0.5
_INDEXED_TO = "store.txs_indexed_to"  # meta key: every block at or below this height is in `txs`


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


class BlockStore:
    """Append-only committed blocks from `first_height` on; thread-safe (one writer, many readers)."""

    def __init__(self, path: Path | str, first_height: int = 1) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.first_height = first_height
        self._wlock, self._rlock = threading.Lock(), threading.Lock()
        # The WAL, opened once for `sync()`'s fdatasync (every os call there releases and retakes the GIL). It is
        # never replaced while this store is open: SQLite removes a WAL only when the last connection closes,
        # and both of ours stay open until `close()` (a checkpoint resets it in place).
        self._wal_fd: int | None = None
        self._w = _connect(self.path)
        self._w.execute("PRAGMA wal_autocheckpoint=0")  # see the durability rules: `checkpoint()` does it
        self._full = True  # the writer connection's synchronous setting: FULL (True) or OFF
        self._w.executescript(_SCHEMA)
        columns = {r[1] for r in self._w.execute("PRAGMA table_info(blocks)")}
        if "tx_ids" not in columns:  # a log written before blocks kept their ids: those rows read back as ()
            self._w.execute("ALTER TABLE blocks ADD COLUMN tx_ids BLOB NOT NULL DEFAULT x''")
        self._r = _connect(self.path)
        row = self._w.execute("SELECT MAX(height), MIN(height) FROM blocks").fetchone()
        if row[1] is not None and row[1] != first_height:
            raise StorageError(f"{self.path}: log starts at height {row[1]}, expected {first_height}")
        self._last = row[0] if row[0] is not None else first_height - 1
        self._synced = first_height - 1
        self.sync()  # what a killed process left in the page cache is in the log: make it durable first
        self._appends = 0  # since the last checkpoint
        self.index_flushes = 0  # appends that moved the in-memory ids into `txs` (for the stage trace)
        self._index_at = self._next_index_at()
        self._unindexed: dict[bytes, int] = {}  # tx id -> first height, for blocks above the index mark
        self._indexed_to = self._index_mark()
        for block in self.scan(1 << 20, start=self._indexed_to + 1):
            for tx_id in block.tx_ids:
                self._unindexed.setdefault(tx_id, block.height)

    def _index_mark(self) -> int:
        """The index mark; a log without one was indexed block by block (written before the mark existed)."""
        row = self._w.execute("SELECT value FROM meta WHERE key = ?", (_INDEXED_TO,)).fetchone()
        if row is not None:
            return int(row[0])
        self._w.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (_INDEXED_TO, str(self._last).encode()))
        return self._last

    @property
    def last_height(self) -> int:
        """Height of the newest committed block; `first_height - 1` when empty."""
        return self._last

    @property
    def synced_height(self) -> int:
        """Top of the durable prefix of the log: every block up to it is fsynced."""
        return self._synced

    def append(self, blocks: Sequence[StoredBlock], sync: bool = True) -> None:
        """Add the next blocks in order, durably (one fsync, which also makes every earlier block durable) or,
        with sync=False, without an fsync; StorageError, writing nothing, if not contiguous."""
        if not blocks:
            return
        with self._wlock:
            self._append(blocks, sync)

    def try_append(self, blocks: Sequence[StoredBlock]) -> bool:
        """`append(blocks, sync=False)` if that is quick now, for a caller that must not wait (the event loop):
        False, writing nothing, when the writer connection is busy (a checkpoint, an append, or the moment
        `sync()` reads the height it will make durable) or when this append would move the in-memory ids into
        `txs` (~1,000 rows: milliseconds). StorageError, writing nothing, if not contiguous."""
        if not blocks:
            return True
        if not self._wlock.acquire(blocking=False):
            return False
        try:
            if self._flush_due(blocks):
                return False
            self._append(blocks, sync=False)
        finally:
            self._wlock.release()
        return True

    def _flush_due(self, blocks: Sequence[StoredBlock]) -> bool:
        return len(self._unindexed) + sum(len(b.tx_ids) for b in blocks) >= self._index_at

    def _append(self, blocks: Sequence[StoredBlock], sync: bool) -> None:  # under `_wlock`
        self._synchronous(sync)
        try:
            self._w.execute("BEGIN IMMEDIATE")
            # The last height is known here (this object is the log's only writer: one node process owns
            # it, and `_last` changes only under `_wlock`), so an append is one round trip per statement
            # it writes and none to read; the PRIMARY KEY still refuses an overwrite.
            expected = self._last + 1
            for b in blocks:
                if b.height != expected:
                    raise StorageError(f"cannot append height {b.height}: the next height is {expected}")
                expected += 1
            # One statement per table for the whole group commit, not one per block.
            self._w.executemany(
                "INSERT INTO blocks (height, digest, block, certificate, committed_at, tx_ids)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(b.height, b.digest, b.block, b.certificate, b.committed_at, _ids(b.tx_ids)) for b in blocks],
            )
            flush = self._flush_due(blocks)
            if flush:
                self._index(blocks)
            self._w.execute("COMMIT")
        except BaseException:
            self._w.execute("ROLLBACK")
            raise
        self._last = expected - 1
        self._appends += 1
        if sync:
            self._synced = self._last
        if flush:  # after the commit: a reader finds every id in `_unindexed` or in `txs`, never neither
            self.index_flushes += 1
            self._index_at = self._next_index_at()
            self._indexed_to = self._last
            self._unindexed.clear()
        else:
            for b in blocks:
                for tx_id in b.tx_ids:
                    self._unindexed.setdefault(tx_id, b.height)

    def sync(self) -> None:
        """Make every block appended before the call durable: an fdatasync of the WAL (the blocks' frames are
        all in it). The write lock is held only to read the height that the fdatasync will cover, not during
        it, so appends (`try_append` on the event loop) go on meanwhile; they are durable with the next one."""
        with self._wlock:
            target = self._last  # every frame of the blocks up to here is written to the WAL (their COMMITs returned)
            if self._synced >= target:
                return
        if self._wal_fd is None:  # (no WAL: everything is in the database file, synced by its checkpoint)
            with contextlib.suppress(FileNotFoundError):
                self._wal_fd = os.open(self.path.with_name(self.path.name + "-wal"), os.O_RDONLY)
        if self._wal_fd is not None:
            os.fdatasync(self._wal_fd)
        with self._wlock:
            self._synced = max(self._synced, target)

    @property
    def checkpoint_due(self) -> bool:
        return self._appends >= CHECKPOINT_EVERY

    def checkpoint(self, every: int | None = None) -> bool:
        """Copy the WAL into the database file (PASSIVE: readers are not waited for) once `every` appends
        (default CHECKPOINT_EVERY) gathered since the last one, with fsyncs (WAL first, database after); True
        if it ran."""
        with self._wlock:
            if self._appends < (CHECKPOINT_EVERY if every is None else every):
                return False
            self._synchronous(True)
            self._w.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self._appends = 0
            return True

    def _synchronous(self, full: bool) -> None:
        if full != self._full:
            self._w.execute(f"PRAGMA synchronous={'FULL' if full else 'OFF'}")
            self._full = full

    @staticmethod
    def _next_index_at() -> int:
        return max(1, round(INDEX_EVERY_TXS * (1 + INDEX_JITTER * (2 * random.random() - 1))))

    def _index(self, blocks: Sequence[StoredBlock]) -> None:
        """The unindexed ids and those of `blocks` into `txs`, sorted (each B-tree page written once), and
        the mark moved past `blocks`; inside the caller's transaction."""
        rows = dict(self._unindexed)
        for b in blocks:
            for tx_id in b.tx_ids:
                rows.setdefault(tx_id, b.height)
        # A tx re-proposed after a view change keeps its first height (an indexed one is never replaced).
        self._w.executemany("INSERT OR IGNORE INTO txs (id, height) VALUES (?, ?)", sorted(rows.items()))
        self._w.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                        (_INDEXED_TO, str(blocks[-1].height).encode()))

    def get(self, height: int) -> StoredBlock | None:
        with self._rlock:
            row = self._r.execute(
                "SELECT height, digest, block, certificate, committed_at, tx_ids FROM blocks WHERE height = ?",
                (height,),
            ).fetchone()
        return self._row(row) if row else None

    def range(self, start: int, end: int, max_bytes: int | None = None) -> list[StoredBlock]:
        """Blocks start..end inclusive in order, stopping early (never before the first) past max_bytes."""
        out: list[StoredBlock] = []
        total = 0
        with self._rlock:
            cur = self._r.execute(
                "SELECT height, digest, block, certificate, committed_at, tx_ids FROM blocks"
                " WHERE height BETWEEN ? AND ? ORDER BY height",
                (start, end),
            )
            for row in cur:
                total += len(row[2]) + len(row[3])
                if out and max_bytes is not None and total > max_bytes:
                    break
                out.append(self._row(row))
        return out

    def scan(self, chunk_bytes: int, start: int | None = None) -> Iterator[StoredBlock]:
        """Every block from `start` (default the first) to the last, in order, read about `chunk_bytes` at a time."""
        start, last = self.first_height if start is None else start, self._last
        while start <= last:
            chunk = self.range(start, last, max_bytes=chunk_bytes)
            yield from chunk
            start = chunk[-1].height + 1

    def tx_height(self, tx_id: bytes) -> int | None:
        """The first height that committed `tx_id`, or None."""
        recent = self._unindexed.get(tx_id)  # read before `txs`: the writer clears it only once `txs` has it
        with self._rlock:
            row = self._r.execute("SELECT height FROM txs WHERE id = ?", (tx_id,)).fetchone()
        return row[0] if row else recent  # an indexed height is older than any unindexed one

    def put_meta(self, key: str, value: bytes) -> None:
        with self._wlock:
            self._synchronous(True)
            self._w.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def get_meta(self, key: str) -> bytes | None:
        with self._rlock:
            row = self._r.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def close(self) -> None:
        with self._wlock, self._rlock:
            self._r.close()
            self._synchronous(True)  # closing checkpoints the WAL into the database and removes it: fsynced
            self._w.close()
            if self._wal_fd is not None:
                os.close(self._wal_fd)
                self._wal_fd = None

    @staticmethod
    def _row(row: tuple) -> StoredBlock:
        return StoredBlock(height=row[0], digest=row[1], block=row[2], certificate=row[3], committed_at=row[4],
                           tx_ids=_ids_decoder.decode(row[5]) if row[5] else ())
