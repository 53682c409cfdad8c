"""SQLite persistence of hosts, live allocations and counters, so an instance's state survives a restart.

Every change is one transaction, written before the in-memory state is changed (see `ledger`), so a
failed write leaves both as they were. WAL with synchronous=NORMAL: durable across process crashes, and a
commit costs tens of microseconds instead of an fsync.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from dwcp.allocator.cluster import HostSpec

_SCHEMA = """
CREATE TABLE IF NOT EXISTS hosts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE NOT NULL,
    cpu REAL NOT NULL, mem REAL NOT NULL, net REAL NOT NULL, grp INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS allocations (
    id TEXT PRIMARY KEY, host TEXT NOT NULL, cpu REAL NOT NULL, mem REAL NOT NULL, net REAL NOT NULL,
    start REAL NOT NULL, end_time REAL NOT NULL, max_wait REAL NOT NULL, shadow_host TEXT);
CREATE TABLE IF NOT EXISTS shadow_only (
    id TEXT PRIMARY KEY, host TEXT NOT NULL, cpu REAL NOT NULL, mem REAL NOT NULL, net REAL NOT NULL,
    end_time REAL NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value REAL NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class StoredAllocation:
    id: str
    host: str
    demand: tuple[float, float, float]
    start: float
    end: float
    max_wait: float
    shadow_host: str | None


class Store:
    def __init__(self, path: Path | str) -> None:
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def hosts(self) -> list[HostSpec]:
        rows = self.db.execute("SELECT name, cpu, mem, net, grp FROM hosts ORDER BY seq").fetchall()
        return [HostSpec(n, c, m, k, g) for n, c, m, k, g in rows]

    def allocations(self) -> list[StoredAllocation]:
        rows = self.db.execute(
            "SELECT id, host, cpu, mem, net, start, end_time, max_wait, shadow_host FROM allocations").fetchall()
        return [StoredAllocation(r[0], r[1], (r[2], r[3], r[4]), r[5], r[6], r[7], r[8]) for r in rows]

    def shadow_only(self) -> list[tuple[str, str, tuple[float, float, float], float]]:
        """Allocations the shadow placed but the live cluster refused: (id, host, demand, end)."""
        rows = self.db.execute("SELECT id, host, cpu, mem, net, end_time FROM shadow_only").fetchall()
        return [(r[0], r[1], (r[2], r[3], r[4]), r[5]) for r in rows]

    def counters(self) -> dict[str, float]:
        return dict(self.db.execute("SELECT name, value FROM counters").fetchall())

    def _counters(self, counters: dict[str, float]) -> None:
        self.db.executemany("INSERT INTO counters(name, value) VALUES(?, ?) "
                            "ON CONFLICT(name) DO UPDATE SET value = excluded.value", list(counters.items()))

    def add_host(self, h: HostSpec) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("INSERT INTO hosts(name, cpu, mem, net, grp) VALUES(?, ?, ?, ?, ?)",
                            (h.name, h.cpu, h.mem, h.net, h.group))

    def record(self, counters: dict[str, float], add: StoredAllocation | None = None,
               add_shadow_only: tuple[str, str, tuple[float, float, float], float] | None = None,
               remove: list[str] = (), remove_shadow_only: list[str] = ()) -> None:
        """One transaction: counters, at most one new allocation, and any releases."""
        with self.db:
            self.db.execute("BEGIN")
            if add is not None:
                self.db.execute("INSERT INTO allocations VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                (add.id, add.host, *add.demand, add.start, add.end, add.max_wait, add.shadow_host))
            if add_shadow_only is not None:
                i, host, d, end = add_shadow_only
                self.db.execute("INSERT INTO shadow_only VALUES(?, ?, ?, ?, ?, ?)", (i, host, *d, end))
            if remove:
                self.db.executemany("DELETE FROM allocations WHERE id = ?", [(i,) for i in remove])
            if remove_shadow_only:
                self.db.executemany("DELETE FROM shadow_only WHERE id = ?", [(i,) for i in remove_shadow_only])
            self._counters(counters)
