"""The peer port: who the other sites are, dialling them, and serving their connections.

`PeerServer` runs in threads with blocking sockets (one thread per connection, at most `max_incoming`):
hashing, compression and socket I/O release the GIL, so several streams use several cores, and the HTTP
event loop never waits on a chunk.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass

from dwcp.manager import chunks
from dwcp.manager.incoming import ChecksumMismatch, Receiver
from dwcp.manager.metrics import ManagerMetrics
from dwcp.manager.store import boot_id
from dwcp.manager.wire import Connection, Kind, PeerAuth, WireError, site_name
from dwcp.runtime.inventory import Inventory

log = logging.getLogger("dwcp.manager.peers")
# A chunk's encoded form may exceed its raw size a little (incompressible data under a codec).
MAX_FRAME_DATA = 64 * (1 << 20) + (1 << 20)
MAX_COMMIT_MANY = 512  # transfers one COMMIT_MANY may publish (its answer stays under MAX_META)


@dataclass(frozen=True)
class Site:
    name: str
    host: str
    peer_port: int
    url: str


PEER_PORT_OFFSET = 1000  # an instance without ports.peer listens for peers on its HTTP port + 1000


def sites(inventory: Inventory) -> list[Site]:
    spec = inventory.spec("manager")
    return [Site(site_name(i), inst.host, inst.ports.get("peer", inst.port + PEER_PORT_OFFSET), inst.url)
            for i, inst in enumerate(spec.instances)]


def dial(site: Site, auth: PeerAuth, timeout: float = 10.0) -> Connection:
    """An authenticated connection to `site`'s peer port; WireError or OSError if that fails."""
    sock = socket.create_connection((site.host, site.peer_port), timeout=timeout)
    sock.settimeout(timeout * 6)
    conn = Connection(sock)
    try:
        auth.authenticate(conn, site.name)
    except BaseException:
        conn.close()
        raise
    return conn


class SessionPool:
    """Idle authenticated connections to each peer, kept after a transfer that ended cleanly and taken by the
    next one instead of a new TCP connect and TLS handshake (two round trips and an Ed25519 signature and
    verification on each side). Only a connection with no request outstanding comes back, and one is dropped
    when it sat idle `idle_s` (inside the receiver's 120 s read timeout; longer than the 30 s between link probes,
    which go through the pool too, so a deployed site keeps one warm session per peer) or the peer closed it or sent
    something unasked (readable while idle); at most `max_idle` wait per peer, so pooled connections never
    hold many of a receiver's `max_incoming` slots."""

    def __init__(self, auth: PeerAuth, max_idle: int = 8, idle_s: float = 90.0) -> None:
        self._auth, self.max_idle, self.idle_s = auth, max_idle, idle_s
        self._idle: dict[str, collections.deque[tuple[float, Connection]]] = {}
        self._lock = threading.Lock()
        # Connections this pool had to open (tests, the benchmark's accounting): counted once authenticated, so a
        # dial that was refused or failed (a probe of a peer still starting, tried again later) opens none.
        self.dials = 0
        self.reuses = 0

    def take(self, site: Site, timeout: float = 10.0) -> Connection:
        """An idle connection to `site` that is still good, else a new one (`dial`)."""
        now = time.monotonic()
        while True:
            with self._lock:
                idle = self._idle.get(site.name)
                if not idle:
                    break
                since, conn = idle.pop()  # the most recently used: the least likely to have timed out
            if now - since < self.idle_s and _quiet(conn):
                with self._lock:
                    self.reuses += 1
                return conn
            conn.close()
        conn = dial(site, self._auth, timeout)
        with self._lock:
            self.dials += 1
        return conn

    def give(self, site: Site, conn: Connection) -> None:
        """`conn` ended with every request answered: keep it for the next transfer to `site`."""
        with self._lock:
            idle = self._idle.setdefault(site.name, collections.deque())
            idle.append((time.monotonic(), conn))
            extra = [idle.popleft()[1] for _ in range(len(idle) - self.max_idle)]
        for old in extra:
            old.close()

    def close(self) -> None:
        with self._lock:
            conns = [c for idle in self._idle.values() for _, c in idle]
            self._idle.clear()
        for conn in conns:
            conn.close()


def _quiet(conn: Connection) -> bool:
    """Nothing arrived on an idle connection: no close, no FAIL, no TLS alert (all of which mean drop it)."""
    sock = conn.sock
    pending = getattr(sock, "pending", None)
    if pending is not None and pending():
        return False
    timeout = sock.gettimeout()
    try:
        if not select.select([sock], [], [], 0)[0]:
            return True
        # Readable while idle: maybe only TLS 1.3 session tickets that a connection which carried no answer
        # never read (nothing for the application: the read wants more), else a close, a FAIL or an alert.
        sock.setblocking(False)
        sock.recv(1)
        return False
    except (ssl.SSLWantReadError, BlockingIOError):
        return True
    except (OSError, ValueError):
        return False
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(timeout)


class PeerServer:
    """Accepts peer connections, authenticates them, and serves OFFER/CHUNK/COMMIT and probes."""

    def __init__(self, host: str, port: int, auth: PeerAuth, receiver: Receiver, metrics: ManagerMetrics,
                 max_incoming: int = 64) -> None:
        self.host, self.port = host, port
        self._auth, self._receiver, self._metrics = auth, receiver, metrics
        self._slots = threading.BoundedSemaphore(max_incoming)
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._conns: set[Connection] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(128)
        sock.settimeout(0.5)
        self._sock = sock
        threading.Thread(target=self._accept_loop, name="peer-accept", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        if self._sock is not None:
            self._sock.close()
        with self._lock:
            for conn in list(self._conns):
                conn.close()

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                sock, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._slots.acquire(blocking=False):
                self._metrics.peer_refused.labels("busy").inc()
                sock.close()
                continue
            threading.Thread(target=self._serve, args=(sock,), name="peer-conn", daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(120.0)
        conn = Connection(sock)
        with self._lock:
            self._conns.add(conn)
        try:
            peer = self._auth.authenticate(conn, None)
            self._session(conn, peer)
        except WireError as exc:
            if exc.reason != "closed":
                self._metrics.peer_refused.labels(exc.reason).inc()
                log.warning("peer connection ended: %s", exc)
                with contextlib.suppress(OSError):
                    conn.send(Kind.FAIL, {"reason": f"{exc.reason}: {exc}"})
        except (OSError, ValueError) as exc:
            log.info("peer connection dropped: %s", exc)
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()
            self._slots.release()

    def _session(self, conn: Connection, peer: str) -> None:
        while not self._stop.is_set():
            cpu_at = time.thread_time()  # waiting for a frame costs no CPU: from here it is this request's
            kind, meta, data = conn.receive(MAX_FRAME_DATA, reuse=True)
            if kind is Kind.PING:
                conn.send(Kind.PONG, meta)
            elif kind is Kind.PROBE:
                conn.send(Kind.PROBE_ACK, {"n": len(data)})
            elif kind is Kind.OFFER:
                self._offer(conn, peer, meta)
            elif kind is Kind.CHUNK:
                self._chunk(conn, peer, meta, data, cpu_at)
            elif kind is Kind.COMMIT:
                self._commit(conn, peer, meta)
            elif kind is Kind.COMMIT_MANY:
                self._commit_many(conn, peer, meta)
            else:
                raise WireError("unexpected", f"{kind.name} is not a request")

    def _offer(self, conn: Connection, peer: str, meta: dict) -> None:
        try:
            offer = {"tid": str(meta["tid"]), "key": str(meta["key"]), "size": int(meta["size"]),
                     "sha256": str(meta["sha256"]), "chunk_bytes": int(meta["chunk_bytes"]),
                     "chunks": int(meta["chunks"])}
        except (KeyError, ValueError, TypeError):
            raise WireError("malformed", "OFFER needs tid, key, size, sha256, chunk_bytes, chunks") from None
        if offer["chunks"] != chunks.chunk_count(offer["size"], offer["chunk_bytes"]) or offer["size"] < 0:
            raise WireError("malformed", "OFFER's chunk count does not match its size and chunk_bytes")
        if not 4096 <= offer["chunk_bytes"] <= MAX_FRAME_DATA - (1 << 20):
            raise WireError("malformed", f"chunk_bytes {offer['chunk_bytes']} out of range")
        inc = self._receiver.offer(peer, offer)
        # boot: this kernel's boot id, so a sender on the same host knows both ends share its CPUs (costs.py).
        # A one-chunk object's answers may wait for the next ones (`soon`): a batch sends many back to back
        # (batch.py), and they leave together before this thread waits for input. Not a larger object's: its
        # sender waits for this STATE, and each ACK opens its stream's window for the next chunk.
        conn.send(Kind.STATE, {"have": sorted(inc.have), "base": inc.base_sha256, "base_size": inc.base_size,
                               "boot": boot_id()}, soon=inc.chunks == 1)

    def _chunk(self, conn: Connection, peer: str, meta: dict, data: bytearray | memoryview,
               cpu_at: float | None = None) -> None:
        """Decode, check and write one chunk, then ACK it with this thread's CPU for it (`cpu`, from
        `cpu_at`, its frame's arrival), for decoding it (`dcpu`) and the wall time making it durable took
        (`io`): the sender prices codecs with them (costs.py)."""
        tid, index = str(meta.get("tid")), meta.get("i")
        inc = self._receiver.get(peer, tid)
        if inc is None:
            raise WireError("unknown_transfer", f"no open transfer {tid} from {peer}: OFFER first")
        if not isinstance(index, int) or not 0 <= index < inc.chunks:
            raise WireError("malformed", f"chunk index {index!r} out of range")
        codec, raw_len = str(meta.get("codec")), int(meta.get("raw_len", -1))
        if raw_len != inc.chunk_length(index):
            conn.send(Kind.NACK, {"tid": tid, "i": index, "reason": "length"})
            return
        base = None
        base_sha256, base_size = inc.base_sha256, inc.base_size  # read once: another stream may drop it
        if codec == chunks.DELTA:
            if base_sha256 is None:
                raise WireError("malformed", "delta chunk but this site offered no base")
            try:
                base = chunks.base_window(self._receiver.store.blob_path(base_sha256), base_size, index,
                                          inc.chunk_bytes)
            except FileNotFoundError:  # not expected (the receiver pins it), but a gone base is not an error:
                self._receiver.drop_base(inc)  # the sender sends whole chunks from here on, and STATE says so
                conn.send(Kind.NACK, {"tid": tid, "i": index, "reason": "base"})
                return
        decode_at = time.thread_time()
        try:
            raw = chunks.decode(data, codec, raw_len, base)
        except ValueError:
            conn.send(Kind.NACK, {"tid": tid, "i": index, "reason": "decode"})
            return
        if len(raw) != raw_len or chunks.checksum(raw) != meta.get("xxh3"):
            conn.send(Kind.NACK, {"tid": tid, "i": index, "reason": "checksum"})
            return
        dcpu = time.thread_time() - decode_at
        write_at = time.perf_counter()
        inc.write(index, raw)
        io = time.perf_counter() - write_at
        self._metrics.received.inc(raw_len)
        ack = {"tid": tid, "i": index}
        if cpu_at is not None:
            ack.update(cpu=round(time.thread_time() - cpu_at, 6), dcpu=round(dcpu, 6), io=round(io, 6))
        conn.send(Kind.ACK, ack, soon=inc.chunks == 1)

    def _commit(self, conn: Connection, peer: str, meta: dict) -> None:
        tid = str(meta.get("tid"))
        inc = self._receiver.get(peer, tid)
        if inc is None:
            raise WireError("unknown_transfer", f"no open transfer {tid} from {peer}")
        if not inc.complete():
            conn.send(Kind.FAIL, {"tid": tid, "reason": f"incomplete: {len(inc.have)}/{inc.chunks} chunks"})
            return
        t0 = time.perf_counter()
        try:
            version = self._receiver.finish(peer, inc)
        except ChecksumMismatch as exc:
            conn.send(Kind.FAIL, {"tid": tid, "reason": f"checksum: {exc}"})
            return
        log.info("published %s v%d from %s (verified in %.3fs)", version.key, version.version, peer,
                 time.perf_counter() - t0)
        conn.send(Kind.DONE, {"tid": tid, "version": version.version})

    def _commit_many(self, conn: Connection, peer: str, meta: dict) -> None:
        tids = meta.get("tids")
        if not isinstance(tids, list) or not 0 < len(tids) <= MAX_COMMIT_MANY:
            raise WireError("malformed", f"COMMIT_MANY needs 1..{MAX_COMMIT_MANY} tids")
        results: dict[str, dict] = {}
        ready = []
        for tid in map(str, tids):
            inc = self._receiver.get(peer, tid)
            if inc is None:
                results[tid] = {"tid": tid, "error": "unknown transfer"}
            elif not inc.complete():
                results[tid] = {"tid": tid, "error": f"incomplete: {len(inc.have)}/{inc.chunks} chunks"}
            else:
                ready.append((tid, inc))
        if ready:
            outcome = self._receiver.finish_many(peer, [inc for _, inc in ready])
            for (tid, _), done in zip(ready, outcome, strict=True):
                results[tid] = ({"tid": tid, "error": f"checksum: {done}"} if isinstance(done, ChecksumMismatch)
                                else {"tid": tid, "version": done.version})
        log.info("published %d of %d objects from %s in one batch", len(ready), len(tids), peer)
        conn.send(Kind.DONE_MANY, {"results": [results[str(t)] for t in tids]})
