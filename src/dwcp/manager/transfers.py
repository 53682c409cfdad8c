"""Sending objects to peers: queued transfers, run over parallel streams, resumed after any crash.

A transfer is a row in `transfers.sqlite` from the moment it is accepted, so a sender killed mid-way
picks it up again at start (`start` requeues queued and running rows). Each attempt: dial the peer,
OFFER the object, learn from STATE which chunks the receiver already holds durably (and which earlier
version it holds, the delta base), then send the rest over `streams` authenticated connections, each
with up to `window_per_stream` chunks unacknowledged, so reading, compressing, sending and the
receiver's decoding and writing overlap. A NACKed chunk (bad checksum) goes back to the queue; a lost
connection puts its unacknowledged chunks back; a failed attempt is retried with jittered backoff
until `transfer_retry_limit`. COMMIT asks the receiver to verify the whole object's sha256 and publish.

Small objects (one chunk: at most `chunk_min_bytes`) queued for the same peer travel together: a worker that
takes one drains up to `BATCH_MAX` more from the queue and sends them in one session (batch.py): one dial,
one selector call, OFFER and CHUNK of each back to back, one COMMIT_MANY that the receiver publishes with
one round of fsyncs and one index transaction, and one journal write for all. A batch that fails falls back
to sending each of its transfers alone (the usual resume and retry path).
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import mmap
import os
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dwcp.manager import chunks
from dwcp.manager.batch import BATCH_MAX, send_batch
from dwcp.manager.costs import PipelineCosts, same_kernel
from dwcp.manager.links import LinkTable
from dwcp.manager.metrics import ManagerMetrics
from dwcp.manager.peers import SessionPool, Site
from dwcp.manager.plan import CodecLog, Plan
from dwcp.manager.selection import CodecChooser
from dwcp.manager.settings import ManagerSettings
from dwcp.manager.store import ObjectStore, ObjectVersion
from dwcp.manager.wire import Connection, Kind, PeerAuth, WireError
from dwcp.runtime.resilience import backoff

log = logging.getLogger("dwcp.manager.transfers")
MAX_CHUNK_RETRIES = 8
PERSIST_EVERY = 16  # acknowledged chunks between saves of a running transfer's progress
# tamper(index, encoded bytes) -> bytes actually sent: a fault-injection seam for tests, None in service.
Tamper = Callable[[int, bytes], bytes]
# [(path, size)] of the delta base a transfer's chunks are encoded against, [None] for none; one list shared by a
# transfer's streams, so a base found gone is dropped for all of them (`Transfers._delta_base`).
DeltaBase = list[tuple[Path, int] | None]


class TransferFailed(Exception):
    """A transfer that cannot succeed by retrying (the object is gone, a chunk keeps failing)."""


@dataclass
class Transfer:
    id: str
    key: str
    version: int
    sha256: str
    size: int
    to: str
    codec: str | None = None  # every chunk in this codec (benchmarks, operators); None: the selector decides
    state: str = "queued"
    chunk_bytes: int = 0
    bytes_raw: int = 0
    bytes_wire: int = 0
    chunks_done: int = 0
    chunks_total: int = 0
    codecs: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    resumes: int = 0
    attempts: int = 0
    created: float = 0.0
    updated: float = 0.0
    seconds: float = 0.0

    def chunk_length(self, index: int) -> int:
        """Raw bytes of chunk `index` (the last one may be short; 0 past the end)."""
        return max(0, min(self.chunk_bytes, self.size - index * self.chunk_bytes))

    def public(self) -> dict:
        out = asdict(self)
        out.pop("attempts")
        return out


_COLUMNS = [f for f in Transfer.__dataclass_fields__]
_QUOTED = ", ".join(f'"{c}"' for c in _COLUMNS)  # `to` is an SQL keyword


class TransferLog:
    """The sender's durable record of every transfer."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"CREATE TABLE IF NOT EXISTS transfers ({_QUOTED}, PRIMARY KEY (id))")

    def save(self, t: Transfer, durable: bool = False) -> None:
        """Record `t`. `durable` (accepting a transfer, its final state) fsyncs the WAL before returning; a
        progress save does not (WAL with synchronous=NORMAL survives a killed process, and a progress row
        lost to a power cut only means the receiver's STATE is asked again)."""
        self.save_many([t], durable)

    def save_many(self, ts: list[Transfer], durable: bool = False) -> None:
        """`save` for several transfers in one transaction (one fsync when durable)."""
        now = time.time()
        rows = []
        for t in ts:
            t.updated = now
            rows.append([json.dumps(v) if isinstance(v, dict) else v for v in asdict(t).values()])
        with self._lock:
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._db.execute("BEGIN")
            self._db.executemany(f"INSERT OR REPLACE INTO transfers VALUES ({', '.join('?' * len(_COLUMNS))})",
                                 rows)
            self._db.execute("COMMIT")

    def get(self, tid: str) -> Transfer | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_QUOTED} FROM transfers WHERE id = ?", (tid,)).fetchone()
        return self._row(row) if row else None

    def unfinished(self) -> list[Transfer]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_QUOTED} FROM transfers WHERE state IN ('queued', "
                                    "'running') ORDER BY created").fetchall()
        return [self._row(r) for r in rows]

    @staticmethod
    def _row(row) -> Transfer:
        values = dict(zip(_COLUMNS, row, strict=True))
        values["codecs"] = json.loads(values["codecs"])
        return Transfer(**values)

    def close(self) -> None:
        with self._lock:
            self._db.close()


class Transfers:
    def __init__(self, *, store: ObjectStore, sites: dict[str, Site], auth: PeerAuth, chooser: CodecChooser,
                 links: LinkTable, metrics: ManagerMetrics, settings: ManagerSettings, log_path: Path,
                 tamper: Tamper | None = None) -> None:
        self.store, self.sites, self.auth, self.chooser = store, sites, auth, chooser
        self.links, self.metrics, self.settings = links, metrics, settings
        self.log = TransferLog(log_path)
        self.tamper = tamper
        self.codec_log = CodecLog(settings.codec_log) if settings.codec_log else None
        self.sessions = SessionPool(auth, max_idle=2 * settings.streams)
        self._active: dict[str, Transfer] = {}
        self._costs: dict[str, PipelineCosts] = {}  # peer -> what each codec costs the pipeline to it
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        # Each unfinished transfer pins its blob in the store until it is done or failed, so the retention rule
        # never deletes bytes a transfer (or its retry, or its resume after a restart) still has to send.
        self._unfinished = self.log.unfinished()
        store.pin(t.sha256 for t in self._unfinished)

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        unfinished, self._unfinished = self._unfinished, []
        for t in unfinished:
            t.state = "queued"
            self._enqueue(t)
        for i in range(self.settings.transfer_concurrency):
            w = threading.Thread(target=self._worker, name=f"transfer-{i}", daemon=True)
            w.start()
            self._workers.append(w)

    def stop(self) -> None:
        self._stop.set()
        for _ in self._workers:
            self._queue.put(None)
        for w in self._workers:
            w.join(timeout=5)
        self.sessions.close()
        self.log.close()
        if self.codec_log is not None:
            self.codec_log.close()

    # -- API -----------------------------------------------------------------------------------
    def submit(self, obj: ObjectVersion, to: str, codec: str | None = None) -> Transfer:
        return self.submit_many([obj], to, codec)[0]

    def submit_many(self, objs: list[ObjectVersion], to: str, codec: str | None = None) -> list[Transfer]:
        """One transfer per object, journaled durably in one transaction, then queued."""
        now = time.time()
        ts = [Transfer(id=uuid.uuid4().hex, key=o.key, version=o.version, sha256=o.sha256, size=o.size, to=to,
                       codec=codec, created=now) for o in objs]
        self.store.pin(t.sha256 for t in ts)  # until each is done or failed (`_worker`)
        try:
            self.log.save_many(ts, durable=True)
        except BaseException:
            self.store.unpin(t.sha256 for t in ts)
            raise
        with self._lock:
            for t in ts:
                self._active[t.id] = t
            self.metrics.transfers_active.set(len(self._active))
        for t in ts:
            self._queue.put(t.id)
        return ts

    def get(self, tid: str) -> Transfer | None:
        with self._lock:
            t = self._active.get(tid)
        return t if t is not None else self.log.get(tid)

    def busy(self, peer: str) -> bool:
        """Some transfer to `peer` is queued or running."""
        with self._lock:
            return any(t.to == peer for t in self._active.values())

    def active(self) -> int:
        with self._lock:
            return len(self._active)

    def _enqueue(self, t: Transfer) -> None:
        self.log.save(t, durable=True)
        with self._lock:
            self._active[t.id] = t
            self.metrics.transfers_active.set(len(self._active))
        self._queue.put(t.id)

    def _worker(self) -> None:
        while not self._stop.is_set():
            tid = self._queue.get()
            if tid is None:
                return
            with self._lock:
                t = self._active.get(tid)
            if t is None:
                continue
            ts = self._small_batch(t) if self.is_small(t) else [t]
            try:
                if len(ts) > 1:
                    send_batch(self, ts)
                else:
                    self._run(t)
            finally:
                with self._lock:
                    for done in ts:
                        self._active.pop(done.id, None)
                    self.metrics.transfers_active.set(len(self._active))
                # One still running was stopped with the process: its pin goes with it, and the next start pins
                # it again from the journal.
                self.store.unpin(done.sha256 for done in ts if done.state in ("done", "failed"))

    def costs_for(self, peer: str) -> PipelineCosts:
        with self._lock:
            costs = self._costs.get(peer)
            if costs is None:
                costs = self._costs[peer] = PipelineCosts(self.settings.streams)
            return costs

    def is_small(self, t: Transfer) -> bool:
        """One chunk whatever the link: these travel in batches."""
        return t.size <= self.settings.chunk_min_bytes and not t.chunks_done

    def _small_batch(self, first: Transfer) -> list[Transfer]:
        """`first` and up to BATCH_MAX - 1 more small transfers to the same peer, taken from the queue now."""
        batch, others = [first], []
        while len(batch) < BATCH_MAX:
            try:
                tid = self._queue.get_nowait()
            except queue.Empty:
                break
            with self._lock:
                t = self._active.get(tid) if tid is not None else None
            if t is not None and t.to == first.to and self.is_small(t):
                batch.append(t)
            else:
                others.append(tid)
        for tid in others:  # the stop sentinel and other transfers go back for the next worker
            self._queue.put(tid)
        return batch

    # -- one transfer --------------------------------------------------------------------------
    def _run(self, t: Transfer) -> None:
        t.state = "running"
        self.log.save(t)
        started = time.perf_counter()
        wire_at_start = t.bytes_wire
        while not self._stop.is_set():
            try:
                self._attempt(t)
            except TransferFailed as exc:
                t.error = str(exc)
                break
            except (WireError, OSError) as exc:
                t.attempts += 1
                t.error = f"{type(exc).__name__}: {exc}"
                self.links.record_error(t.to, t.error)
                log.info("transfer %s to %s: attempt %d failed: %s", t.id, t.to, t.attempts, exc)
                if t.attempts > self.settings.transfer_retry_limit:
                    break
                self.log.save(t)
                self._stop.wait(backoff(min(t.attempts, 6), base=0.1, cap=5.0))
                continue
            t.state, t.error = "done", None
            break
        if self._stop.is_set() and t.state == "running":
            self.log.save(t)  # stays running: resumed at the next start
            return
        if t.state != "done":
            t.state = "failed"
        t.seconds += time.perf_counter() - started
        self.metrics.transfers.labels(t.state).inc()
        self.costs_for(t.to).export(self.metrics, t.to)
        if t.state == "done":
            self.links.record_transfer(t.to, t.bytes_wire - wire_at_start, time.perf_counter() - started)
        self.log.save(t, durable=True)

    def _attempt(self, t: Transfer) -> None:
        site = self.sites[t.to]
        blob = self.store.blob_path(t.sha256)
        if not blob.is_file():
            raise TransferFailed(f"object {t.key} v{t.version} ({t.sha256}) is no longer in the store")
        link = self.links.get(t.to)
        if not t.chunk_bytes:
            s = self.settings
            t.chunk_bytes = chunks.chunk_size_for(link.bandwidth, s.chunk_bytes, s.chunk_min_bytes,
                                                  s.chunk_max_bytes, s.chunk_target_seconds)
        n = chunks.chunk_count(t.size, t.chunk_bytes)
        t.chunks_total = n
        conns: list[Connection] = [self.sessions.take(site)]
        fd = os.open(blob, os.O_RDONLY)
        clean = False  # every request answered: the connections go back to the pool, else they are closed
        try:
            conns[0].send(Kind.OFFER, {"tid": t.id, "key": t.key, "size": t.size, "sha256": t.sha256,
                                       "chunk_bytes": t.chunk_bytes, "chunks": n})
            _, state, _ = conns[0].expect((Kind.STATE,), 0)
            self.costs_for(t.to).same_host = same_kernel(state)
            have = {int(i) for i in state.get("have", [])}
            if have:  # a fresh transfer id has nothing at the receiver: these came from an earlier attempt
                t.resumes += 1
                self.metrics.resumes.inc()
            t.chunks_done = len(have)
            todo = collections.deque(i for i in range(n) if i not in have)
            plan = None
            if todo:
                for _ in range(min(self.settings.streams, len(todo)) - 1):
                    conns.append(self.sessions.take(site))
                plan = Plan(self, t, fd, link)
                with self._delta_base(state, t) as base:
                    self._send_all(t, conns, todo, fd, plan, base)
            self.log.save(t)
            commit_at = plan.since() if plan is not None else 0.0
            conns[0].send(Kind.COMMIT, {"tid": t.id})
            kind, meta, _ = conns[0].receive(0)
            if kind is Kind.FAIL:
                t.chunks_done = 0
                raise WireError("commit_refused", str(meta.get("reason")))
            if kind is not Kind.DONE:
                raise WireError("unexpected", f"expected DONE, got {kind.name}")
            if plan is not None:
                plan.committed(commit_at)
            clean = True
        finally:
            os.close(fd)
            for c in conns:
                if clean:
                    self.sessions.give(site, c)
                else:
                    c.close()

    @contextlib.contextmanager
    def _delta_base(self, state: dict, t: Transfer) -> Iterator[DeltaBase]:
        """[(path, size)] of the receiver's version of the key (the STATE's `base`) while this transfer's chunks
        are sent, pinned in this site's store; [None] when there is none, it is too large, or this site no longer
        holds it (pruned by keep_versions): the chunks go whole. A list, so a base found gone on either side
        mid-way (`_send_all`) is dropped for the rest of the transfer."""
        base = state.get("base")
        size = int(state.get("base_size") or 0)
        if not base or base == t.sha256 or size > self.settings.delta_max_base_bytes:
            yield [None]
            return
        with self.store.pinned([base]):  # before looking for it: the retention rule may be collecting it
            path = self.store.blob_path(base)
            yield [(path, size) if path.is_file() else None]

    def _send_all(self, t: Transfer, conns: list[Connection], todo: collections.deque, fd: int, plan: Plan,
                  base: DeltaBase) -> None:
        lock = threading.Lock()
        errors: list[Exception] = []
        retries: collections.Counter[int] = collections.Counter()

        def next_index() -> int | None:
            with lock:
                return todo.popleft() if todo and not errors else None

        def give_back(indexes) -> None:
            with lock:
                todo.extendleft(sorted(indexes, reverse=True))

        def stream(conn: Connection) -> None:
            inflight: list[int] = []
            buf = bytearray(t.chunk_bytes)  # each chunk is read into it: no allocation per chunk
            try:
                while True:
                    while len(inflight) < self.settings.window_per_stream:
                        i = next_index()
                        if i is None:
                            break
                        inflight.append(i)
                        self._send_chunk(t, conn, i, fd, plan, base, buf)
                    if not inflight:
                        return
                    kind, meta, _ = conn.expect((Kind.ACK, Kind.NACK), 0)
                    i = int(meta["i"])
                    inflight.remove(i)
                    if kind is Kind.ACK:
                        plan.acked(i, meta)
                        with lock:
                            t.chunks_done += 1
                            persist = t.chunks_done % PERSIST_EVERY == 0
                        if persist:
                            self.log.save(t)
                        continue
                    self.metrics.chunk_retries.labels(str(meta.get("reason", "nack"))).inc()
                    if meta.get("reason") == "base":  # the receiver's base is gone: whole chunks from now on
                        base[0] = None
                    retries[i] += 1
                    if retries[i] > MAX_CHUNK_RETRIES:
                        raise TransferFailed(f"chunk {i} refused {retries[i]} times ({meta.get('reason')})")
                    give_back([i])
            except Exception as exc:
                if inflight:
                    self.metrics.chunk_retries.labels("connection").inc(len(inflight))
                give_back(inflight)
                with lock:
                    errors.append(exc)

        threads = [threading.Thread(target=stream, args=(c,), daemon=True) for c in conns]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        fatal = [e for e in errors if isinstance(e, TransferFailed)]
        if fatal:
            raise fatal[0]
        if errors:
            raise errors[0]
        if todo:
            raise WireError("incomplete", f"{len(todo)} chunks left unsent")

    def _send_chunk(self, t: Transfer, conn: Connection, i: int, fd: int, plan: Plan, base: DeltaBase,
                    buf: bytearray) -> None:
        offset, length = i * t.chunk_bytes, t.chunk_length(i)
        cpu0, wall0 = time.thread_time(), time.perf_counter()
        with _chunk_view(fd, offset, length, buf) as raw:
            if len(raw) != length:
                raise TransferFailed(f"object {t.key} v{t.version} is shorter than its recorded {t.size} bytes")
            read_cpu, read_wall = time.thread_time() - cpu0, time.perf_counter() - wall0
            self._encode_and_send(t, conn, i, raw, plan, base, read_cpu, read_wall)

    def _encode_and_send(self, t: Transfer, conn: Connection, i: int, raw: memoryview, plan: Plan,
                         base: DeltaBase, read_cpu: float, read_wall: float) -> None:
        length = len(raw)
        codec = plan.codec(i)  # its CPU and any wait for the selector are not the chunk's
        comp0, wall_c0 = time.thread_time(), time.perf_counter()
        data = chunks.encode(raw, codec)
        comp1, wall1 = time.thread_time(), time.perf_counter()
        picked, encoded_len, delta_cpu = codec, len(data), 0.0
        delta, base_file = None, base[0]  # read once: another stream may drop it meanwhile
        if base_file is not None and raw:
            try:
                window = chunks.base_window(base_file[0], base_file[1], i, t.chunk_bytes)
            except FileNotFoundError:  # not expected (pinned), but a missing base is no reason to fail
                base[0] = window = None
            if window is not None:
                delta = chunks.delta_encode(bytes(raw), window)
            delta_cpu = time.thread_time() - comp1
        if delta is not None and len(delta) < len(data):
            self.metrics.delta_saved.inc(len(data) - len(delta))
            data, codec = delta, chunks.DELTA
        if codec != "none" and len(data) >= len(raw):
            data, codec = raw, "none"  # the codec did not pay: send raw bytes, nothing to decode
        sent = self.tamper(i, bytes(data)) if self.tamper else data
        wire = conn.send(Kind.CHUNK, {"tid": t.id, "i": i, "codec": codec, "raw_len": length,
                                      "xxh3": chunks.checksum(raw)}, sent)
        comp_cpu = comp1 - comp0
        # the pipeline's figures (costs.py): compressing, the rest of this chunk's CPU, the CPU share of reading
        # and compressing
        plan.sent(i, picked, codec, length, encoded_len, comp_cpu,
                  read_cpu + time.thread_time() - comp1 - delta_cpu, read_cpu + comp_cpu,
                  read_wall + wall1 - wall_c0)
        t.bytes_raw += length
        t.bytes_wire += wire
        t.codecs[codec] = t.codecs.get(codec, 0) + 1
        self.metrics.transfer_bytes.labels(t.to, "raw").inc(length)
        self.metrics.transfer_bytes.labels(t.to, "wire").inc(wire)
        self.metrics.transfer_chunks.labels(codec).inc()


MAP_MIN = 1 << 20  # chunks from this size on are sent from a mapping of the file, not a copy of it


@contextlib.contextmanager
def _chunk_view(fd: int, offset: int, length: int, buf: bytearray) -> Iterator[memoryview]:
    """Chunk bytes [offset, offset + length) of a blob: a read-only mapping of the file's pages for a large
    chunk (checksummed, compressed or encrypted by TLS straight from the page cache: no copy into `buf`,
    which was the sender's largest kernel cost, ~15% of its CPU on loopback), else read into `buf`. Blobs
    are never changed in place (written whole, renamed into place), so a mapping cannot shrink under us; a
    file shorter than its recorded size yields fewer bytes, as a short read would."""
    if length >= MAP_MIN and offset % mmap.ALLOCATIONGRANULARITY == 0:
        size = os.fstat(fd).st_size
        if size < offset + length:
            yield memoryview(b"")
            return
        mapped = mmap.mmap(fd, length, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE, prot=mmap.PROT_READ,
                           offset=offset)
        view = memoryview(mapped)
        try:
            yield view
        finally:
            view.release()
            with contextlib.suppress(BufferError):  # a slice still alive (a traceback's frame): unmapped when freed
                mapped.close()
        return
    view = memoryview(buf)[:length]
    got = os.preadv(fd, [view], offset)
    yield view[:got]
