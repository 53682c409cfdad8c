"""The router's durable records (SQLite): idempotency keys, transactions, allocations.

An idempotency key must be on disk before the submission it names is answered, so that a retry after a
manager crash replays the recorded transaction instead of submitting again. That is a WAL fsync per
record; on a disk shared with a site's object transfers one fsync can take tens of milliseconds, and
concurrent submissions queued behind each other's fsyncs (the manager's POST /v1/transactions p50 was
108 ms in a quiet `dwcp up`). So records are written by group commit: `record_tx` queues its rows and
waits; one writer thread takes every queued row, commits them in one transaction (one fsync), and only
then wakes their waiters. Rows that arrive during a commit go in the next one, so under load commits
grow instead of multiplying, and a lone submission still pays just its own commit.

Reads use their own connection: in WAL mode a reader never waits for the writer's fsync, and an indexed
lookup is cheap enough (tens of microseconds) to run on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from pathlib import Path

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS idempotency (key TEXT PRIMARY KEY, payload_sha256 TEXT, tx TEXT, cluster TEXT);"
    "CREATE TABLE IF NOT EXISTS transactions (tx TEXT PRIMARY KEY, cluster TEXT, created REAL);"
    "CREATE TABLE IF NOT EXISTS allocations (id TEXT PRIMARY KEY, url TEXT, created REAL);"
)

_TxRecord = tuple[str, str, str, str, float]  # key, payload sha256, tx id, cluster, created


class RoutingLog:
    """Idempotency keys, transactions and allocations routed by this site (SQLite, thread-safe)."""

    def __init__(self, path: Path) -> None:
        self._db = _connect(path)  # the writer's; used by the group-commit thread and the rare allocation
        self._db.executescript(_SCHEMA)
        self._reader = _connect(path)
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._queued: list[tuple[_TxRecord, asyncio.AbstractEventLoop, asyncio.Future]] = []
        self._wake = threading.Condition()
        self._closing = False
        self.commits = 0  # group commits of transaction records made so far
        self._writer = threading.Thread(target=self._commit_loop, name="routing-log-writer", daemon=True)
        self._writer.start()

    # -- reads (on the caller's thread, the reader connection) ---------------------------------------
    def _one(self, sql: str, args: tuple):
        with self._read_lock:
            return self._reader.execute(sql, args).fetchone()

    def idempotent(self, key: str) -> tuple[str, str, str] | None:
        return self._one("SELECT payload_sha256, tx, cluster FROM idempotency WHERE key = ?", (key,))

    def cluster_of(self, tx: str) -> str | None:
        row = self._one("SELECT cluster FROM transactions WHERE tx = ?", (tx,))
        return row[0] if row else None

    def allocation_url(self, alloc_id: str) -> str | None:
        row = self._one("SELECT url FROM allocations WHERE id = ?", (alloc_id,))
        return row[0] if row else None

    # -- transaction records: group commit -----------------------------------------------------------
    async def record_tx(self, key: str, payload_sha: str, tx: str, cluster: str) -> None:
        """Returns once the record is durable; concurrent calls share one commit."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        with self._wake:
            if self._closing:
                raise RuntimeError("routing log closed")
            self._queued.append(((key, payload_sha, tx, cluster, time.time()), loop, done))
            self._wake.notify()
        # Shielded: a caller that goes away (client disconnect) must not leave a commit half-awaited; the
        # record is written either way.
        await asyncio.shield(done)

    def _commit_loop(self) -> None:
        while True:
            with self._wake:
                while not self._queued and not self._closing:
                    self._wake.wait()
                if not self._queued:
                    return
                batch, self._queued = self._queued, []
            error: BaseException | None = None
            try:
                rows = [record for record, _, _ in batch]
                with self._write_lock:
                    self._db.execute("BEGIN IMMEDIATE")
                    try:
                        self._db.executemany("INSERT OR IGNORE INTO idempotency VALUES (?, ?, ?, ?)",
                                             [r[:4] for r in rows])
                        self._db.executemany("INSERT OR IGNORE INTO transactions VALUES (?, ?, ?)",
                                             [(r[2], r[3], r[4]) for r in rows])
                        self._db.execute("COMMIT")
                    except BaseException:
                        self._db.execute("ROLLBACK")
                        raise
                self.commits += 1
            except sqlite3.Error as exc:
                error = exc
            for _, loop, done in batch:
                with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
                    loop.call_soon_threadsafe(_settle, done, error)

    # -- allocations (rare: one commit each) ----------------------------------------------------------
    def _write(self, sql: str, args: tuple) -> None:
        with self._write_lock:
            self._db.execute(sql, args)

    def record_allocation(self, alloc_id: str, url: str) -> None:
        self._write("INSERT OR REPLACE INTO allocations VALUES (?, ?, ?)", (alloc_id, url, time.time()))

    def forget_allocation(self, alloc_id: str) -> None:
        self._write("DELETE FROM allocations WHERE id = ?", (alloc_id,))

    def close(self) -> None:
        """Commits what is queued, then closes."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._writer.join()
        with self._write_lock, self._read_lock:
            self._db.close()
            self._reader.close()


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")  # WAL: every commit is fsynced before it returns (durable acks)
    return db


def _settle(done: asyncio.Future, error: BaseException | None) -> None:
    if done.done():
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)
