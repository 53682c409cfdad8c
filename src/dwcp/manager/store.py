"""This site's object store: content-addressed blobs on disk, and versions of keys in SQLite.

Layout under the instance's data dir:

    objects/blobs/<sha[:2]>/<sha256>   each distinct content once, written only by rename
    objects/tmp/                       bodies being received (PUT or a peer transfer)
    objects/index.sqlite               versions(key, version, sha256, size, created)

A body is hashed while it streams into a temporary file, fsynced, then renamed into place, and only
then is its version row inserted: a crash at any point leaves either no version or a complete one.
A key is a name, never a path: it is checked (`check_key`) and stored as a column, so `../` in a key
cannot reach the file system.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

_KEY_CHARS = re.compile(r"^[A-Za-z0-9._~/-]+$")
READ_BLOCK = 1 << 20


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


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Ingest:
    """One body streaming into the store: `write` pieces, then `commit(key)` or `abort()`."""

    def __init__(self, store: ObjectStore) -> None:
        self._store = store
        self.path = store.tmp_dir / f"put-{uuid.uuid4().hex}"
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed by commit/abort
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._hash.update(data)
        self.size += len(data)

    def commit(self, key: str) -> ObjectVersion:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return self._store.publish(key, self.path, self._hash.hexdigest(), self.size)

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        self.path.unlink(missing_ok=True)


class ObjectStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.blob_dir = self.root / "blobs"
        self.tmp_dir = self.root / "tmp"
        for d in (self.blob_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)
        for stale in self.tmp_dir.glob("put-*"):  # a PUT cut short by a crash: its client got no answer
            stale.unlink(missing_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.root / "index.sqlite", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS versions (key TEXT NOT NULL, version INTEGER NOT NULL, sha256 TEXT NOT NULL,"
            " size INTEGER NOT NULL, created REAL NOT NULL, PRIMARY KEY (key, version))"
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()

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
        touched: set[Path] = set()
        for _, tmp_path, sha256, _ in items:
            target = self.blob_path(sha256)
            if target.is_file():  # same content already stored: keep one copy
                Path(tmp_path).unlink(missing_ok=True)
            else:
                target.parent.mkdir(exist_ok=True)
                os.replace(tmp_path, target)
                touched.add(target.parent)
        for d in sorted(touched):
            fsync_dir(d)
        versions = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for key, _, sha256, size in items:
                    row = self._db.execute("SELECT COALESCE(MAX(version), 0) FROM versions WHERE key = ?",
                                           (key,)).fetchone()
                    version = ObjectVersion(key, row[0] + 1, sha256, size, time.time())
                    self._db.execute("INSERT INTO versions VALUES (?, ?, ?, ?, ?)",
                                     (key, version.version, sha256, size, version.created))
                    versions.append(version)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return versions

    def latest(self, key: str) -> ObjectVersion:
        with self._lock:
            row = self._db.execute(
                "SELECT key, version, sha256, size, created FROM versions WHERE key = ? ORDER BY version DESC LIMIT 1",
                (key,)).fetchone()
        if row is None:
            raise NotFound(f"no object {key!r}")
        return ObjectVersion(*row)

    def versions(self, key: str) -> list[ObjectVersion]:
        with self._lock:
            rows = self._db.execute(
                "SELECT key, version, sha256, size, created FROM versions WHERE key = ? ORDER BY version", (key,)
            ).fetchall()
        return [ObjectVersion(*r) for r in rows]

    def read_range(self, sha256: str, start: int, end: int):
        """Yield the blob's bytes [start, end) in blocks of at most READ_BLOCK."""
        with open(self.blob_path(sha256), "rb") as f:
            f.seek(start)
            left = end - start
            while left > 0:
                block = f.read(min(READ_BLOCK, left))
                if not block:
                    return
                left -= len(block)
                yield block
