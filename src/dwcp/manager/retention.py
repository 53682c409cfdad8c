"""The object store's retention rule: the newest `keep_versions` versions of each key, and only the blobs they name.

A publish deletes, in its own transaction (no fsync of its own), the rows of its keys older than their newest
`keep_versions`, except rows naming a pinned blob. A blob no row names any more is unlinked by the store's
checkpoint thread (`collect`, every second, off the PUT path) unless it is pinned: an unfinished transfer pins its
object until it is done or failed (a retry, or a resume after a restart, finds its bytes), and the sender and the
receiver of a delta pin its base while chunks are encoded or decoded against it. Blobs are content-addressed and
shared by keys: one is unlinked only when no version of any key names it.

Order, for crash safety: the version rows are deleted first (committed with synchronous=FULL), then the blob's
landing row, then its file; a crash leaves at most an orphan file or landing row, never a row naming a missing
blob, and `sweep` removes orphans at start. A publisher pins its blobs before it looks for their files, and
`collect` holds the pins' lock from deciding that a blob is free to its unlink: content published again while its
old copy is collected is either kept (pinned or named) or written again by its publisher.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dwcp.manager.metrics import ManagerMetrics

log = logging.getLogger("dwcp.manager.store")
# Versions of each key kept (settings.keep_versions): the newest and the three before it, so a receiver up to
# three versions behind still finds its latest version on the sender as the delta base (docs/manager.md, session 16).
KEEP_VERSIONS = 4
_SHA256_NAME = re.compile(r"^[0-9a-f]{64}$")


class Retention:
    """ObjectStore's retention half: a mixin that uses the store's index connections and locks, its `blob_path`
    and `_transaction`."""

    root: Path
    blob_dir: Path
    _db: sqlite3.Connection
    _read_db: sqlite3.Connection
    _lock: threading.Lock
    _read_lock: threading.Lock

    def _init_retention(self, keep_versions: int, metrics: ManagerMetrics | None) -> None:
        if keep_versions < 1:
            raise ValueError(f"keep_versions must be at least 1, not {keep_versions}")
        self.keep_versions = keep_versions
        self.metrics = metrics
        # Blobs that must not be unlinked (an unfinished transfer's, a delta base in use, one being published):
        # sha256 -> holders. Rows naming a pinned blob are not pruned; `_pins_lock` is held from deciding that a
        # blob is free to its unlink (module docstring). Lock order: the store's writing lock, then `_pins_lock`
        # (a publisher takes them one after the other, never one inside the other).
        self._pins: Counter[str] = Counter()
        self._pins_lock = threading.Lock()
        self._unreferenced: set[str] = set()  # blobs whose last version row was pruned: `collect` unlinks them
        self._retained: set[str] = set()  # keys with versions past keep_versions kept for a pin: pruned again

    def pin(self, shas: Iterable[str]) -> None:
        """Keep these blobs (and the versions naming them) until `unpin`: an unfinished transfer's object, a
        delta base in use. Pins count: each `pin` needs its own `unpin`."""
        with self._pins_lock:
            self._pins.update(shas)

    def unpin(self, shas: Iterable[str]) -> None:
        with self._pins_lock:
            self._pins.subtract(shas)
            for sha256 in [h for h, n in self._pins.items() if n <= 0]:
                del self._pins[sha256]

    @contextmanager
    def pinned(self, shas: Iterable[str]) -> Iterator[None]:
        shas = list(shas)
        self.pin(shas)
        try:
            yield
        finally:
            self.unpin(shas)

    def pinned_blobs(self) -> int:
        with self._pins_lock:
            return len(self._pins)

    def _protected(self, publishing: set[str]) -> frozenset[str]:
        """Blobs whose version rows a publish must not prune: pinned ones, less those it publishes itself (its new
        rows name them, so they stay anyway). Read before the writing lock is taken."""
        with self._pins_lock:
            return frozenset(h for h in self._pins if h not in publishing)

    def _prune(self, keys: Iterable[str], protected: frozenset[str]) -> list[tuple[str, int]]:
        """Delete the rows of `keys` older than their newest keep_versions, except rows naming a protected blob
        (the caller holds the writing lock, in a transaction): (sha256, size) of each deleted row."""
        keys = list(keys)
        rows: list[tuple[str, int, str, int]] = []
        for i in range(0, len(keys), 500):  # one statement for a batch's keys (SQLite allows 32,766 parameters)
            part = keys[i : i + 500]
            rows += self._db.execute(
                f"SELECT key, version, sha256, size FROM versions AS v WHERE key IN ({', '.join('?' * len(part))})"
                " AND version <= (SELECT MAX(version) FROM versions WHERE key = v.key) - ?",
                (*part, self.keep_versions),
            ).fetchall()
        drop = [row for row in rows if row[2] not in protected]
        if len(drop) < len(rows):  # pruned again once the pins are gone (`_prune_retained`)
            self._retained.update(key for key, _, sha256, _ in rows if sha256 in protected)
        self._db.executemany("DELETE FROM versions WHERE key = ? AND version = ?", [row[:2] for row in drop])
        return [(sha256, size) for _, _, sha256, size in drop]

    def _pruned(self, pruned: list[tuple[str, int]]) -> None:
        """After the transaction that deleted these rows committed: their blobs wait for `collect`."""
        if not pruned:
            return
        with self._pins_lock:
            self._unreferenced.update(sha256 for sha256, _ in pruned)
        if self.metrics is not None:
            self.metrics.store_pruned_versions.inc(len(pruned))

    def _prune_retained(self) -> None:
        """Prune the keys whose old versions a pin kept, now that their pins may be gone."""
        if not self._retained:
            return
        protected = self._protected(set())
        with self._lock, self._transaction():
            keys, self._retained = self._retained, set()
            pruned = self._prune(keys, protected)
        self._pruned(pruned)

    def collect(self) -> int:
        """Unlink the pruned blobs that no version names and nobody pins (the checkpoint thread, every
        CHECKPOINT_SECONDS): bytes freed. Crash-safe by its order: the rows went first (committed with
        synchronous=FULL), then a blob's landing row, then its file; a crash leaves at most an orphan file or
        landing row, which `sweep` removes at the next start."""
        if not self._unreferenced:  # read without the lock: one listed meanwhile waits for the next round
            return 0
        # The writing lock first (a commit's fsync is waited for without `_pins_lock`, which pins wait for), then
        # `_pins_lock`, held through the unlinks: a publisher pins a blob before it looks for the file, so a blob
        # is either pinned here (kept) or its publisher writes the file again after this unlinked it. The writing
        # lock is let go before the unlinks: a row naming a blob can only come from a publisher that pinned it.
        self._lock.acquire()
        writing = True
        try:
            with self._pins_lock:
                free = [h for h in self._unreferenced if h not in self._pins]
                named = self._named(free)
                free = [h for h in free if h not in named]
                self._drop_landing(free)
                self._lock.release()
                writing = False
                freed = 0
                for sha256 in free:
                    path = self.blob_path(sha256)
                    try:
                        freed += path.stat().st_size
                        path.unlink()
                    except FileNotFoundError:
                        pass
                self._unreferenced.difference_update([*free, *named])  # named: a later prune lists it again
        finally:
            if writing:
                self._lock.release()
        if self.metrics is not None and free:
            self.metrics.store_pruned_bytes.inc(freed)
            self.metrics.store_pruned_blobs.inc(len(free))
        return freed

    def _named(self, shas: list[str]) -> set[str]:
        """Those of `shas` some version row names (the caller holds the writing lock)."""
        named: set[str] = set()
        for i in range(0, len(shas), 500):
            part = shas[i : i + 500]
            named.update(
                h
                for (h,) in self._db.execute(
                    f"SELECT DISTINCT sha256 FROM versions WHERE sha256 IN ({', '.join('?' * len(part))})", part
                )
            )
        return named

    def _drop_landing(self, shas: list[str]) -> None:
        """Delete these blobs' landing rows, which no version names any more (the caller holds the writing lock).
        Not fsynced: one lost to a crash is an orphan row that `sweep` deletes; the next publish's fsync of the
        WAL makes it durable anyway."""
        if not shas:
            return
        self._db.execute("PRAGMA synchronous=NORMAL")
        try:
            with self._transaction():
                self._db.executemany(
                    "DELETE FROM landing WHERE sha256 = ? AND NOT EXISTS (SELECT 1 FROM versions WHERE sha256 = ?)",
                    [(h, h) for h in shas],
                )
        finally:
            self._db.execute("PRAGMA synchronous=FULL")

    def sweep(self) -> int:
        """At start: prune every key to its newest keep_versions (rows of pinned blobs stay), then delete every
        landing row and blob file no version names and nobody pins (left by a crash between a blob's rename
        and its version row, or between a prune and its unlink). Orphan blob files removed."""
        protected = self._protected(set())
        with self._lock, self._transaction():
            keys = [
                k
                for (k,) in self._db.execute(
                    "SELECT key FROM versions GROUP BY key HAVING COUNT(*) > ?", (self.keep_versions,)
                )
            ]
            pruned = self._prune(keys, protected)
        self._pruned(pruned)
        self.collect()
        with self._lock, self._pins_lock:
            named = {h for (h,) in self._db.execute("SELECT DISTINCT sha256 FROM versions")}
            orphans = [
                h for (h,) in self._db.execute("SELECT sha256 FROM landing") if h not in named and h not in self._pins
            ]
            self._drop_landing(orphans)
            removed = 0
            for fan in self.blob_dir.iterdir():
                for entry in os.scandir(fan) if fan.is_dir() else ():
                    if _SHA256_NAME.match(entry.name) and entry.name not in named and entry.name not in self._pins:
                        os.unlink(entry.path)
                        removed += 1
        if removed:
            log.warning("removed %d orphan blob files (no version names them)", removed)
        return removed

    def stats(self) -> tuple[int, int, int]:
        """(version rows, distinct blobs they name, those blobs' bytes): what the retention rule bounds."""
        with self._read_lock:
            versions, blobs, size = self._read_db.execute(
                "SELECT (SELECT COUNT(*) FROM versions), COUNT(*), COALESCE(SUM(size), 0) FROM "
                "(SELECT sha256, MAX(size) AS size FROM versions GROUP BY sha256)"
            ).fetchone()
        return versions, blobs, size
