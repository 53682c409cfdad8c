"""Commit-path stage trace: where one transaction's finalization latency goes, measured on the nodes.

Off unless the environment names a directory (`DWCP_CONSENSUS_TRACE=<dir>`; a benchmark sets it before it
starts the nodes). Then each node's driver records, with `time.monotonic()` (one clock for every process
on a host, so events of different nodes on one machine line up), the events of the commit path:

| event | where                               | key                | meaning                                   |
|-------|-------------------------------------|--------------------|-------------------------------------------|
| S     | the node a client submitted to      | tx ids             | the HTTP request handed the txs over      |
| F     | any node                            | tx ids             | a forwarded `TxBatch` arrived (at the     |
|       |                                     |                    | primary: the txs join its pending pool)   |
| P     | every node                          | height             | proposal sent (primary) or received       |
| V     | every node                          | height             | our commit vote sent: prepare quorum here |
| C     | every node                          | height             | the core decided and executed the block   |
| D     | every node                          | height             | the block is durable in our log (fsync)   |
| A     | the node a client submitted to      | tx ids             | the waiting HTTP request resumes          |
| T     | every node                          | height, tx ids     | the txs a committed block executes        |
| W     | every node (commit writer thread)   | end, heights       | start..end of the append (SQLite, fsync)  |
| G     | every node                          | end, generation    | a cyclic garbage collection of generation |
|       |                                     |                    | 1 or 2 ran start..end (the loop stood)    |
| M     | every node (commit writer thread)   | end, kind          | log upkeep start..end: checkpoint, idle   |
|       |                                     |                    | sync, or an index flush inside an append  |

The protocol core is not involved (the driver reads inputs and outputs it already handles): a message
with a `block` is a proposal, one with `kind == "commit"` and a `height` a commit vote or ballot. Events
go to `<dir>/node-<id>.trace` (length-prefixed msgpack arrays, appended every `FLUSH_INTERVAL` seconds and on stop);
`benchmarks/commit_stages.py` joins them per transaction. Cost when on: one tuple per event, about
1-2 µs each; when off, one attribute test per hook.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import msgspec

ENV = "DWCP_CONSENSUS_TRACE"
FLUSH_INTERVAL = 0.5

_encode = msgspec.msgpack.Encoder().encode


class StageTrace:
    """One node's event buffer; `flush()` appends it to the node's trace file."""

    def __init__(self, directory: Path, node: int, clock=time.monotonic) -> None:
        self.path = directory / f"node-{node}.trace"
        self.clock = clock
        self.events: list[tuple] = []
        self._flushed_at = clock()
        self._gc_started = 0.0

    def watch_gc(self) -> None:
        """Record collections of generations 1 and 2 (gen 0 ones take microseconds) as G events."""
        gc.callbacks.append(self._on_gc)

    def unwatch_gc(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict) -> None:
        if info.get("generation", 0) < 1:
            return
        if phase == "start":
            self._gc_started = self.clock()
        else:
            self.events.append(("G", self._gc_started, self.clock(), info["generation"]))

    def height(self, event: str, height: int) -> None:
        self.events.append((event, self.clock(), height))

    def txs(self, event: str, ids: Iterable[bytes]) -> None:
        self.events.append((event, self.clock(), list(ids)))

    def block_txs(self, height: int, ids: Iterable[bytes]) -> None:
        self.events.append(("T", self.clock(), height, list(ids)))

    def write_span(self, start: float, end: float, heights: list[int]) -> None:
        """The commit writer's thread spent start..end in the store's append (SQLite + fsync) of `heights`."""
        self.events.append(("W", start, end, heights))

    def writer_span(self, kind: str, start: float, end: float) -> None:
        """The commit writer's thread spent start..end on log upkeep that no block's append waits for by
        design but the next one may queue behind: "checkpoint" (WAL into the database, two fsyncs), "sync"
        (an idle fsync of unsynced blocks), or "index" (an append that also moved the gathered transaction
        ids into the index: its W span holds the same interval)."""
        self.events.append(("M", start, end, kind))

    def maybe_flush(self) -> None:
        if self.clock() - self._flushed_at >= FLUSH_INTERVAL:
            self.flush()

    def flush(self) -> None:
        self._flushed_at = self.clock()
        if not self.events:
            return
        events, self.events = self.events, []
        with open(self.path, "ab") as f:
            f.write(b"".join(_frame(e) for e in events))


def _frame(event: tuple) -> bytes:
    body = _encode(event)
    return len(body).to_bytes(4, "big") + body


def from_env(node: int) -> StageTrace | None:
    """The node's trace when `DWCP_CONSENSUS_TRACE` names a directory, else None."""
    directory = os.environ.get(ENV)
    if not directory:
        return None
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    trace = StageTrace(path, node)
    trace.watch_gc()
    return trace


def read(path: Path) -> Iterator[tuple]:
    """The events of one trace file, in the order they were recorded."""
    decoder = msgspec.msgpack.Decoder()
    data = path.read_bytes()
    pos = 0
    while pos + 4 <= len(data):
        end = pos + 4 + int.from_bytes(data[pos:pos + 4], "big")
        yield tuple(decoder.decode(data[pos + 4:end]))
        pos = end
