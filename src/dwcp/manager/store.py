"""This site's object store: content-addressed blobs on disk, and versions of keys in SQLite.

Layout under the instance's data dir:

    objects/blobs/<sha[:2]>/<sha256>   each distinct content once, written only by rename
    objects/tmp/                       bodies being received (PUT or a peer transfer)
    objects/index.sqlite               versions(key, version, sha256, size, created);
                                       landing(sha256, data): small blobs' bytes (below)

A body is hashed while it streams into a temporary file, fsynced, then renamed into place, and only
then is its version row inserted: a crash at any point leaves either no version or a complete one.

Small objects (at most SMALL_BLOB_BYTES) are kept durable in the index instead: their bytes go into the
`landing` table in the same SQLite transaction as their version row (one WAL fsync, shared by a batch),
and their blob file is a copy written without any fsync, so readers find every blob as a file. Within
one boot a file written before a crash is still in the page cache (a killed process loses nothing); after
a reboot (a new kernel boot id) the store rewrites every small blob file that is missing or short from
its row before it serves anything. Larger objects published from memory (`publish_held`) land the same
way, but only until the checkpoint thread has fsynced their files.
Each key keeps its newest `keep_versions` versions, and the store only the blobs they (or a transfer in progress)
name: retention.py.
A key is a name, never a path: it is checked (`check_key`) and stored as a column, so `../` in a key
cannot reach the file system.

Lookups (`latest`, `versions`) read through a connection of their own: in WAL mode a reader never waits for a
writer, while the writing connection's lock is held through each commit's fsync and, every 1,000 WAL pages, through
SQLite's automatic checkpoint (the commit that crosses the mark copies the WAL into the database file and fsyncs
it). Session 11: landed batches of five 256 KiB objects write ~1,300 pages each, and a lookup on the one shared
connection (a receiver's OFFER asks for the key's latest version) waited 66-172 ms behind every third batch's.
The checkpoint thread copies the WAL into the database file itself, every CHECKPOINT_SECONDS, on a connection of
its own (`PRAGMA wal_checkpoint(PASSIVE)`: it waits for no reader or writer), so a commit no longer does: the
writing connection's automatic checkpoint is only a backstop (WAL_BACKSTOP_PAGES) for a checkpoint thread that
falls behind. Session 11, shaped 1000 Mbit/s small (two alternated bench calls of 8 rounds each, load 5.7-7.8):
COMMIT_MANY p90 28 ms against 80 ms when the commit crossing the 1,000-page mark did the checkpoint (max ~130 ms
either way), each arm's run p90 53 against 112 ms.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dwcp.manager.retention import KEEP_VERSIONS, Retention

if TYPE_CHECKING:
    from dwcp.manager.metrics import ManagerMetrics

_KEY_CHARS = re.compile(r"^[A-Za-z0-9._~/-]+$")
log = logging.getLogger("dwcp.manager.store")
READ_BLOCK = 1 << 20
CHECKPOINT_SECONDS = 1.0  # how often landed larger objects' blob files are fsynced and their landing rows dropped
SMALL_BLOB_BYTES = 64 << 10  # blobs up to this size stay in the index for good (their files are never fsynced)
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
FSYNC_THREADS = 16  # concurrent fsyncs at a checkpoint (the file system's journal commits them together)
# A held object up to this size lands in the index (its bytes written twice, in the WAL and as a file, to save
# two fsyncs); a larger one (a one-chunk object on a fast link: chunks reach 16 MiB) is written as a file and
# fsynced, since at ~100 MB/s of durable writes a second copy of it costs more than the fsyncs (~1-2 ms each).
LANDING_MAX_BYTES = 256 * 1024
# The writing connection checkpoints the WAL itself only past this many pages (~40 MB; SQLite's default is 1,000):
# the checkpoint thread does it every CHECKPOINT_SECONDS (module docstring).
WAL_BACKSTOP_PAGES = 10_000
WAL_KEEP_BYTES = 64 << 20  # the WAL file is truncated to this when it is reset (it grows to its high-water mark)


def boot_id() -> str:
    """This kernel boot's id: page-cache contents (unsynced files) survive exactly as long as it stays the same."""
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""  # unknown: every open checks the small blob files


class BadKey(ValueError):
    """An object key this store refuses; the message says why."""


class NotFound(LookupError):
    """No such key (or version) in this store."""


@dataclass(frozen=True, slots=True)
class ObjectVersion:
    key: str
    version: int
    sha256: str
    size: int
    created: float

    def as_dict(self) -> dict:
        return {"key": self.key, "size": self.size, "sha256": self.sha256, "version": self.version}


def check_key(key: str, max_bytes: int = 1024) -> str:
    """The key itself when it is a usable name: 1..max_bytes of [A-Za-z0-9._~/-], no empty, `.` or `..` segment."""
    if not key:
        raise BadKey("must not be empty")
    if len(key.encode()) > max_bytes:
        raise BadKey(f"longer than {max_bytes} bytes")
    if not _KEY_CHARS.match(key):
        raise BadKey("may contain only letters, digits and . _ ~ / -")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise BadKey("must not have empty, '.' or '..' path segments (nor a leading or trailing '/')")
    return key


def fsync_path(path: Path) -> None:
    """fsync a file or a directory by its path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Ingest:
    """One body streaming into the store: `write` pieces, then `commit(key)` or `abort()`.

    The body stays in memory while it is at most SMALL_BLOB_BYTES (committed with `publish_held`: one WAL
    fsync); past that it streams into a temporary file (fsynced, renamed: `publish`)."""

    def __init__(self, store: ObjectStore) -> None:
        self._store = store
        self.path = store.tmp_dir / f"put-{uuid.uuid4().hex}"
        self._file = None
        self._held = bytearray()
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self._hash.update(data)
        self.size += len(data)
        if self._file is None and self.size <= SMALL_BLOB_BYTES:
            self._held += data
            return
        if self._file is None:
            self._file = open(self.path, "wb")  # noqa: SIM115 - closed by commit/abort
            self._file.write(self._held)
            self._held = bytearray()
        self._file.write(data)

    def commit(self, key: str) -> ObjectVersion:
        if self._file is None:
            return self._store.publish_held([(key, bytes(self._held), self._hash.hexdigest())])[0]
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return self._store.publish(key, self.path, self._hash.hexdigest(), self.size)

    def abort(self) -> None:
        if self._file is not None:
            if not self._file.closed:
                self._file.close()
            self.path.unlink(missing_ok=True)


def _move_into_place(tmp: Path | str, target: Path) -> None:
    """Rename `tmp` to `target`, making target's fan-out directory (blobs/<sha[:2]>) only when it is missing:
    a `mkdir` of a directory that exists was a failed syscall and a caught exception per small object."""
    try:
        os.replace(tmp, target)
    except FileNotFoundError:
        if target.parent.is_dir():
            raise  # the directory is there: `tmp` is what is missing
        target.parent.mkdir(exist_ok=True)
        os.replace(tmp, target)


def _has_size(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except FileNotFoundError:
        return False


class ObjectStore(Retention):
    def __init__(self, root: Path, keep_versions: int = KEEP_VERSIONS, metrics: ManagerMetrics | None = None,
                 sweep: bool = True) -> None:
        """Open (or create) the store under `root`, keeping the newest `keep_versions` versions of each key.

        `sweep`: prune and collect what a crash or an earlier, larger `keep_versions` left (`sweep`) before
        returning; a caller that must pin blobs first (the site: its unfinished transfers') passes False and
        calls `sweep` itself before it serves."""
        self.root = Path(root)
        self._init_retention(keep_versions, metrics)
        self.blob_dir = self.root / "blobs"
        self.tmp_dir = self.root / "tmp"
        for d in (self.blob_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)
        for stale in [*self.tmp_dir.glob("put-*"), *self.tmp_dir.glob("held-*")]:  # cut short by a crash: a
            stale.unlink(missing_ok=True)  # PUT whose client got no answer, a landed blob rewritten below
        self._lock = threading.Lock()
        # Temporary names for blobs written from memory: this store's tag and a counter, not a uuid4 per blob.
        # (itertools.count: `next` on it is atomic, and blobs are written from several threads at once.)
        self._held_tag, self._held_count = uuid.uuid4().hex[:12], itertools.count()
        self._db = sqlite3.connect(self.root / "index.sqlite", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(f"PRAGMA wal_autocheckpoint={WAL_BACKSTOP_PAGES}")
        self._db.execute(f"PRAGMA journal_size_limit={WAL_KEEP_BYTES}")  # a reset WAL is cut back to this
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS versions (key TEXT NOT NULL, version INTEGER NOT NULL, sha256 TEXT NOT NULL,"
            " size INTEGER NOT NULL, created REAL NOT NULL, PRIMARY KEY (key, version))"
        )
        # Small objects published from memory (`publish_held`): their bytes, durable here until a checkpoint
        # has fsynced their blob files.
        self._db.execute("CREATE TABLE IF NOT EXISTS landing (sha256 TEXT PRIMARY KEY, data BLOB NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        # "does any version still name this blob?" (collecting pruned blobs) without a scan of every row
        self._db.execute("CREATE INDEX IF NOT EXISTS versions_sha256 ON versions (sha256)")
        # lookups: never behind a commit's fsync or a WAL checkpoint on `_db` (module docstring)
        self._read_lock = threading.Lock()
        self._read_db = sqlite3.connect(self.root / "index.sqlite", check_same_thread=False, isolation_level=None)
        # the checkpoint thread's WAL checkpoints (and `close`'s, after that thread stopped)
        self._wal_db = sqlite3.connect(self.root / "index.sqlite", check_same_thread=False, isolation_level=None)
        self._wal_db.execute("PRAGMA synchronous=FULL")
        if sweep:
            self.sweep()
        self._restore_small()  # after a reboot, small blob files may be short or missing: write them again
        self._checkpoint(rewrite=True)  # the same for larger landed blobs, after any crash
        self._closed = threading.Event()
        self._checkpointer = threading.Thread(target=self._checkpoint_loop, name="store-checkpoint", daemon=True)
        self._checkpointer.start()

    def close(self) -> None:
        self._closed.set()
        self._checkpointer.join()
        self._checkpoint(rewrite=False)
        self.collect()
        self.wal_checkpoint()
        self._wal_db.close()
        with self._read_lock:
            self._read_db.close()
        with self._lock:
            self._db.close()

    def publish_held(self, items: list[tuple[str, bytes, str]]) -> list[ObjectVersion]:
        """Publish verified objects whose bytes are in memory, (key, data, sha256) each, with one fsync.

        `publish_many` costs two fsyncs per object (its file, its directory), about 1-2 ms each on this kind of
        disk even when issued together. Here the bytes go into the index's `landing` table in the same SQLite
        transaction as the versions (one WAL fsync for the batch), and the blob files are written without an
        fsync: readable at once from the page cache. A small blob's row stays (module docstring); a larger
        one's file is fsynced within CHECKPOINT_SECONDS by the checkpoint thread, which then drops its row.
        After a crash the store rewrites every larger blob still landing before it serves anything, and after
        a reboot every small one, so an acknowledged object survives a power cut too.
        """
        with self.pinned({sha256 for _, _, sha256 in items}):  # before looking for their files: `collect`
            landing = [(sha256, data) for _, data, sha256 in items if len(data) <= LANDING_MAX_BYTES]
            for sha256, data in landing:
                if not self.blob_path(sha256).is_file():
                    self._write_blob(sha256, data)
            large = {sha256: data for _, data, sha256 in items if len(data) > LANDING_MAX_BYTES}
            if large:
                with ThreadPoolExecutor(max_workers=min(FSYNC_THREADS, len(large))) as pool:
                    list(pool.map(lambda item: self._write_blob(*item, durable=True), large.items()))
                    list(pool.map(fsync_path, sorted({self.blob_path(h).parent for h in large})))
            # Every small item lands, also one whose blob file was there: that file may be unsynced itself.
            return self._record([(key, sha256, len(data)) for key, data, sha256 in items], landing)

    def _write_blob(self, sha256: str, data: bytes, durable: bool = False) -> None:
        """Write a blob file from memory, renamed into place whole; fsynced before the rename when `durable`
        (else not: see `publish_held`). The caller fsyncs the directory."""
        tmp = self.tmp_dir / f"held-{self._held_tag}-{next(self._held_count)}"
        with open(tmp, "wb") as f:
            f.write(data)
            if durable:
                os.fsync(f.fileno())
        _move_into_place(tmp, self.blob_path(sha256))

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One SQLite transaction (the caller holds `_lock`): committed on success, rolled back on any error."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _record(self, rows: list[tuple[str, str, int]], landing: list[tuple[str, bytes]] | None = None
                ) -> list[ObjectVersion]:
        """One transaction for a publish: the (key, sha256, size) rows as their keys' next versions, the blobs'
        `landing` rows if any, and the retention rule's prune of those keys (the caller pinned the blobs)."""
        protected = self._protected({sha256 for _, sha256, _ in rows})
        with self._lock, self._transaction():
            if landing:
                self._db.executemany("INSERT OR REPLACE INTO landing VALUES (?, ?)", landing)
            versions = [self._next_version(key, sha256, size) for key, sha256, size in rows]
            pruned = self._prune({key for key, _, _ in rows}, protected)
        self._pruned(pruned)
        return versions

    def _next_version(self, key: str, sha256: str, size: int) -> ObjectVersion:
        row = self._db.execute("SELECT COALESCE(MAX(version), 0) FROM versions WHERE key = ?", (key,)).fetchone()
        version = ObjectVersion(key, row[0] + 1, sha256, size, time.time())
        self._db.execute("INSERT INTO versions VALUES (?, ?, ?, ?, ?)",
                         (key, version.version, sha256, size, version.created))
        return version

    def _checkpoint_loop(self) -> None:
        while not self._closed.wait(CHECKPOINT_SECONDS):
            try:
                self._checkpoint(rewrite=False)
            except OSError as exc:  # e.g. disk full: the rows stay, the next round (or a restart) tries again
                log.warning("store checkpoint failed: %s", exc)
            try:
                self._prune_retained()
                self.collect()
            except (OSError, sqlite3.Error) as exc:  # the blobs stay listed: the next round tries again
                log.warning("store collection failed: %s", exc)
            try:
                self.wal_checkpoint()
            except sqlite3.Error as exc:  # the pages stay in the WAL for the next round (or the backstop)
                log.warning("store WAL checkpoint failed: %s", exc)

    def wal_checkpoint(self) -> tuple[int, int]:
        """Copy the WAL's committed pages into the database file, on the checkpoint connection and without the store's
        locks: PASSIVE, so no reader or writer waits for it. (pages in the WAL, pages copied)."""
        _, pages, copied = self._wal_db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return pages, copied

    def _restore_small(self) -> None:
        """On open after a reboot (or with no boot id to compare): small blob files missing or short are
        written again from their rows; then this boot is recorded."""
        now = boot_id()
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE name = 'boot_id'").fetchone()
        if now and row is not None and row[0] == now:
            return
        with self._lock:
            small = self._db.execute("SELECT sha256, length(data) FROM landing WHERE length(data) <= ?",
                                     (SMALL_BLOB_BYTES,)).fetchall()
        rewritten = 0
        for sha256, size in small:
            if _has_size(self.blob_path(sha256), size):
                continue
            with self._lock:
                (data,) = self._db.execute("SELECT data FROM landing WHERE sha256 = ?", (sha256,)).fetchone()
            self._write_blob(sha256, data)
            rewritten += 1
        # Recorded without syncing the files: any later boot has another id, so it checks them again.
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('boot_id', ?)", (now,))
        if rewritten:
            log.warning("rewrote %d of %d small blob files from the index after a reboot", rewritten, len(small))

    def _checkpoint(self, rewrite: bool) -> None:
        """Make the larger landed blobs durable as files (`rewrite`: from their landing bytes first), then drop
        their rows. Small blobs' rows stay: they are the durable copy."""
        with self._lock:
            rows = self._db.execute("SELECT sha256, length(data) FROM landing WHERE length(data) > ?",
                                    (SMALL_BLOB_BYTES,)).fetchall()
        if not rows:
            return
        landed = [sha256 for sha256, _ in rows]
        # A file lost before its fsync (removed or truncated under us) is written again from its row, so the
        # checkpoint neither raises out of close() nor drops the only copy of an acknowledged object.
        damaged = landed if rewrite else [h for h, size in rows if not _has_size(self.blob_path(h), size)]
        for sha256 in damaged:
            with self._lock:
                (data,) = self._db.execute("SELECT data FROM landing WHERE sha256 = ?", (sha256,)).fetchone()
            self._write_blob(sha256, data)
        paths = [self.blob_path(h) for h in landed]
        with ThreadPoolExecutor(max_workers=min(FSYNC_THREADS, len(paths))) as pool:
            list(pool.map(fsync_path, paths))
            list(pool.map(fsync_path, sorted({p.parent for p in paths})))
        with self._lock:
            # A row replaced meanwhile (the same content landed again) is dropped too: its file was just fsynced.
            self._db.executemany("DELETE FROM landing WHERE sha256 = ?", [(h,) for h in landed])

    def blob_path(self, sha256: str) -> Path:
        return self.blob_dir / sha256[:2] / sha256

    def has_blob(self, sha256: str) -> bool:
        return self.blob_path(sha256).is_file()

    def begin_put(self) -> Ingest:
        return Ingest(self)

    def publish(self, key: str, tmp_path: Path, sha256: str, size: int) -> ObjectVersion:
        """Move a complete, fsynced temporary file into the store as the key's next version."""
        return self.publish_many([(key, tmp_path, sha256, size)])[0]

    def publish_many(self, items: list[tuple[str, Path, str, int]]) -> list[ObjectVersion]:
        """`publish` for several (key, fsynced file, sha256, size) at once: every rename first, one fsync per
        directory touched, then one SQLite transaction for all the versions (a batch of small objects pays
        for durability once, not per object)."""
        with self.pinned({sha256 for _, _, sha256, _ in items}):  # before looking for their files: `collect`
            touched: set[Path] = set()
            for _, tmp_path, sha256, _ in items:
                target = self.blob_path(sha256)
                if target.is_file():  # same content already stored: keep one copy
                    Path(tmp_path).unlink(missing_ok=True)
                else:
                    _move_into_place(tmp_path, target)
                    touched.add(target.parent)
            for d in sorted(touched):
                fsync_path(d)
            return self._record([(key, sha256, size) for key, _, sha256, size in items])

    def latest(self, key: str) -> ObjectVersion:
        with self._read_lock:
            row = self._read_db.execute(
                "SELECT key, version, sha256, size, created FROM versions WHERE key = ? ORDER BY version DESC LIMIT 1",
                (key,)).fetchone()
        if row is None:
            raise NotFound(f"no object {key!r}")
        return ObjectVersion(*row)

    def versions(self, key: str) -> list[ObjectVersion]:
        with self._read_lock:
            rows = self._read_db.execute(
                "SELECT key, version, sha256, size, created FROM versions WHERE key = ? ORDER BY version", (key,)
            ).fetchall()
        return [ObjectVersion(*r) for r in rows]

    def read_range(self, sha256: str, start: int, end: int) -> Iterator[bytes]:
        """The blob's bytes [start, end) in blocks of at most READ_BLOCK. The file is opened now, not at the first
        block: a version pruned while the response waits to be sent keeps its bytes (an open file outlives its
        unlink)."""
        f = open(self.blob_path(sha256), "rb")  # noqa: SIM115 - closed by the generator
        return _blocks(f, start, end)


def _blocks(f, start: int, end: int) -> Iterator[bytes]:
    with f:
        f.seek(start)
        left = end - start
        while left > 0:
            block = f.read(min(READ_BLOCK, left))
            if not block:
                return
            left -= len(block)
            yield block
