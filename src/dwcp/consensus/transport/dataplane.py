"""The Narwhal worker process: the loop that runs `bullshark.worker` for real (the data plane).

Started by its node (`transport/workernode.py`) as `python -m dwcp.consensus.transport.dataplane FD`,
with one end of a socketpair as FD: the node sends `WorkerSetup` first, then `FetchBatches`,
`CommittedBatches` and `ClientBatch` (transactions the node took over HTTP, batched by its primary:
stored and spread like a sealed batch); the worker answers `BatchStored` and `WorkerReport`. It dies with its node
(PR_SET_PDEATHSIG), so `kill -9` of the node takes both down, as on a real machine failure.

One listening port (the inventory's `worker` port). A connection's first byte says who it is:
- CLIENT: a load client streaming transactions (worker.py has the format; workeringress.py); read with
  `asyncio.BufferedProtocol` straight into the connection's `BatchMaker` buffer; a batch seals at
  `batch_size` bytes or after `max_batch_delay`; acknowledged counts go back once 2f + 1 workers
  hold the batch. While `max_inflight` of our batches wait for acknowledgements, clients are not
  read (TCP backpressure reaches the client).
- PEER: a worker of another node opening a link's session (workerlinks.py): right after the greeting byte
  both ends start mutual TLS 1.3 (runtime/peerauth.py: the nodes' pinned Ed25519 certificates, ALPN label
  `bullshark-worker/<committee>`), the peer is named by its verified certificate, and it sends the link's
  session id and key inside TLS.
- DATA_PEER: that peer's stream, bound to the session by its id: plain TCP, every frame tagged with the link
  key. Links are one per direction as in tcp.py: we dial each peer to send to it, read only from accepted ones.
  Frames come through `framing.FrameReader` (payload read into the reader's one reused buffer, never copied);
  a batch is hashed once (BLAKE3), its tag checked over that digest, appended to the store (not kept in
  memory), acknowledged, and announced to our primary.
A peer whose socket buffer is full (asyncio flow control) is skipped for new batches: it fetches
what it misses by digest when its primary needs it, and the quorum does not wait for it.

Storage: `batches.dat` (batchstore.py), re-indexed at start; own batches not yet known committed are
re-announced then (the node may have lost them).
`committed.log` lists each committed height's batch digests; `samples.log` the commit time of
sample transactions (benchmarks read both).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import signal
import socket
import ssl
import sys
import time
from pathlib import Path

import uvloop

from dwcp.consensus.bullshark.messages import (
    BatchRef,
    BatchStored,
    ClientBatch,
    CommittedBatches,
    FetchBatches,
    WorkerReport,
)
from dwcp.consensus.bullshark.messages import WorkerSetup as Setup
from dwcp.consensus.bullshark.worker import (
    ACK,
    BATCH,
    CLIENT,
    DATA_PEER,
    DIGEST_SIZE,
    PEER,
    REQUEST,
    Batch,
    QuorumWaiter,
    TxError,
    batch_digest,
    scan,
)
from dwcp.consensus.transport.batchstore import BatchStore
from dwcp.consensus.transport.locallink import encode_local, read_local
from dwcp.consensus.transport.workeringress import Ingress
from dwcp.consensus.transport.workerlinks import (
    KEY_SIZE,
    READY,
    SESSION,
    SESSION_ID_SIZE,
    PeerLink,
    PeerReader,
    PeerSession,
)
from dwcp.runtime.peerauth import PeerAuth, PeerAuthError

log = logging.getLogger("dwcp.bullshark.worker")
REPORT_INTERVAL = 1.0
RETRY_INTERVAL = 1.0  # seconds between re-sends of batches still short of a quorum
MAX_REQUEST = 4096  # digests in one REQUEST frame (128 KiB)
REQUEST_AGAIN_AFTER = 1.0  # seconds before a batch we asked for is asked for again


class Dataplane:
    def __init__(self, setup: Setup, link: asyncio.StreamWriter) -> None:
        self.setup, self.link = setup, link
        self.me = setup.node_id
        data_dir = Path(setup.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.store = BatchStore(data_dir / "batches.dat")
        self.committed_log = open(data_dir / "committed.log", "a+")  # noqa: SIM115 - open for the process's life
        self.samples_log = open(data_dir / "samples.log", "a")  # noqa: SIM115
        self.quorum = QuorumWaiter(setup.quorum)
        self.auth = PeerAuth(me=setup.node_id, private_key=setup.private_key,
                             certificate=setup.certificates[setup.node_id], peers=setup.certificates,
                             label=setup.label)
        self.links: dict[int, PeerLink] = {p: PeerLink(self, p) for p in setup.peers}
        self.sessions: dict[bytes, PeerSession] = {}  # accepted sessions whose stream has not come yet, by id
        self.clients: set[Ingress] = set()
        self.owner: dict[bytes, Ingress | None] = {}  # our unacknowledged batch -> the connection it came from
        self.samples: dict[bytes, list[int]] = {}  # our batch -> sample tx ids in it
        self.wanted: set[bytes] = set()
        self.requested: dict[bytes, float] = {}  # batch we asked peers for -> when (monotonic)
        self._turn = 0  # the peer asked last for a batch of no named author
        self.paused = False
        self._paused_at = 0.0  # monotonic time the clients were last paused
        self._sealed_at: dict[bytes, float] = {}  # our batch waiting for a quorum -> when it was sealed
        # "skipped": our batches a backed-up or down link did not take when sealed; "requested": batches we
        # asked peers for; "served": batches we sent in answer; "duplicates": batches received already stored.
        self.totals = {"sealed": 0, "sealed_bytes": 0, "received_txs": 0, "stored": 0, "skipped": 0,
                       "requested": 0, "served": 0, "duplicates": 0,
                       # flow control: time the clients were not read (max_inflight batches waited for a
                       # quorum), batches acknowledged by 2f + 1 and their summed seal -> quorum time
                       "paused_us": 0, "quorum_batches": 0, "quorum_wait_us": 0}

    # -- to the primary ----------------------------------------------------------------------
    def tell(self, message) -> None:
        self.link.write(encode_local(message))

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: Inbound(self), self.setup.host, self.setup.port)
        for link in self.links.values():
            link.task = asyncio.create_task(link.dial_forever())
        self.committed_log.seek(0)
        committed = {line.split()[1] for line in self.committed_log if len(line.split()) == 2}
        for digest, (_, length, own) in self.store.index.items():
            self.tell(BatchStored(ref=BatchRef(digest, 0, 0, length), own=own and digest.hex() not in committed))
        self._reporter = asyncio.create_task(self._report_loop())
        self._retrier = asyncio.create_task(self._retry_loop())

    async def _report_loop(self) -> None:
        while True:
            totals = dict(self.totals)
            if self.paused:  # the pause under way counts too
                totals["paused_us"] += round(1e6 * (time.monotonic() - self._paused_at))
            self.tell(WorkerReport(totals=totals))
            await asyncio.sleep(REPORT_INTERVAL)

    def on_local(self, message) -> None:
        if isinstance(message, FetchBatches):
            for digest in message.digests:  # stored already: the primary's note of it was collected
                if digest in self.store:
                    _, length, _ = self.store.index[digest]
                    self.tell(BatchStored(ref=BatchRef(digest, 0, 0, length), own=False))
            self.request(message.digests, prefer=message.peer)
        elif isinstance(message, CommittedBatches):
            missing = [b.digest for b in message.batches if b.digest not in self.store]
            now = time.time()
            for ref in message.batches:
                self.committed_log.write(f"{message.height} {ref.digest.hex()}\n")
                for sample in self.samples.pop(ref.digest, ()):
                    self.samples_log.write(f"{sample} {now:.6f}\n")
            self.committed_log.flush()
            self.samples_log.flush()
            if missing:
                self.request(tuple(missing), prefer=None)
        elif isinstance(message, ClientBatch):
            self.client_batch(message.data)

    def client_batch(self, data: bytes) -> None:
        """A batch of the node's HTTP submissions; one we store already is a resend (quorum retries are ours)."""
        digest = batch_digest(data)
        if digest in self.store:
            return
        try:
            end, count = scan(data, 0, len(data), self.setup.max_tx)
        except TxError as exc:
            log.warning("refused a batch from the node: %s", exc)
            return
        if end != len(data) or not count:
            log.warning("refused a batch from the node: %d of %d bytes are whole transactions", end, len(data))
            return
        self.totals["received_txs"] += count
        self.seal(Batch(digest, memoryview(data), count), None)

    # -- batches -----------------------------------------------------------------------------
    def seal(self, batch: Batch, client: Ingress | None) -> None:
        self.store.put(batch.digest, batch.data, own=True)
        self.totals["sealed"] += 1
        self.totals["sealed_bytes"] += len(batch.data)
        if batch.samples:
            self.samples[batch.digest] = batch.samples
        for link in self.links.values():
            if link.write(BATCH, batch.data, batch.digest):
                link.sent_batch(batch.digest)
            else:
                link.missed.add(batch.digest)
                self.totals["skipped"] += 1
        ref = self.quorum.sent(batch)
        self.owner[batch.digest] = client
        self._sealed_at[batch.digest] = time.monotonic()
        if ref is not None:
            self._acknowledged(ref)
        self._flow()

    def on_ack(self, peer: int, digest: bytes) -> None:
        ref = self.quorum.ack(peer, digest)
        if ref is not None:
            self._acknowledged(ref)
            self._flow()

    def _acknowledged(self, ref: BatchRef) -> None:
        sealed = self._sealed_at.pop(ref.digest, None)
        if sealed is not None:
            self.totals["quorum_batches"] += 1
            self.totals["quorum_wait_us"] += round(1e6 * (time.monotonic() - sealed))
        self.tell(BatchStored(ref=ref, own=True))
        client = self.owner.pop(ref.digest, None)
        if client is not None:
            client.acknowledged(ref.digest)

    def on_batch(self, peer: int, data: bytes | memoryview, digest: bytes) -> None:
        """A peer's batch, its tag checked over `digest` (its BLAKE3, computed by the reader); `data` may be a view
        of the reader's reused buffer (the store writes it, keeps no view)."""
        if digest not in self.store:
            self.store.put(digest, data, own=False)  # not cached: data is the reader's buffer
            self.totals["stored"] += 1
        else:
            self.totals["duplicates"] += 1
        if not self.links[peer].write(ACK, digest, force=True):
            self.links[peer].acks.add(digest)  # our link to it is down: acknowledge once it is back
        self.wanted.discard(digest)
        self.requested.pop(digest, None)
        self.tell(BatchStored(ref=BatchRef(digest, 0, 0, len(data)), own=False))

    def on_request(self, peer: int, digests: memoryview) -> None:
        link = self.links[peer]
        for i in range(0, len(digests) - DIGEST_SIZE + 1, DIGEST_SIZE):
            digest = bytes(digests[i:i + DIGEST_SIZE])
            if digest in link.sent:  # on its way, behind the backlog that made the peer ask
                continue
            data = self.store.get(digest)
            if data is not None and link.write(BATCH, data, digest, force=True):
                link.sent_batch(digest)
                link.missed.discard(digest)  # answered: the retry loop must not push it again
                self.totals["served"] += 1

    def resend(self, peer: int) -> None:
        """Send `peer` the acknowledgements and the batches it missed (link down or backed up)."""
        link = self.links[peer]
        for digest in list(link.acks):
            if not link.write(ACK, digest, force=True):
                break
            link.acks.discard(digest)
        waiting = set(self.quorum.unacknowledged(peer))
        for digest in [d for d in link.missed if d in waiting and d not in link.sent]:
            data = self.store.get(digest)
            if data is not None and link.write(BATCH, data, digest):
                link.missed.discard(digest)
                link.sent_batch(digest)
        link.missed &= waiting

    async def _retry_loop(self) -> None:
        """Batches a peer missed reach it later: the quorum may need it (at n = 4, two of three peers);
        batches we still lack are asked for again (a request made while links were down is lost)."""
        while True:
            await asyncio.sleep(RETRY_INTERVAL)
            for peer in self.links:
                self.resend(peer)
            self.wanted = {d for d in self.wanted if d not in self.store}
            self.requested = {d: t for d, t in self.requested.items() if d in self.wanted}
            if self.wanted:
                self.request(tuple(sorted(self.wanted))[:MAX_REQUEST], prefer=None)

    def request(self, digests: tuple[bytes, ...], prefer: int | None) -> None:
        """Ask one peer for the batches we lack and did not ask for in the last REQUEST_AGAIN_AFTER seconds:
        `prefer` (the header's author) if given, else the next peer in turn (a committed batch is held by 2f + 1
        workers, so asking again finds one). Each answer is a whole batch: re-asking on every sync tick (the
        primary's is 0.25 s), or asking every peer at once, made a lagging worker of a saturated cluster get
        each batch two or three times (458 duplicates of 948 batches received in 10 s at 150,000 tx/s)."""
        now = time.monotonic()
        wanted = [d for d in digests if d not in self.store and now - self.requested.get(d, -REQUEST_AGAIN_AFTER)
                  >= REQUEST_AGAIN_AFTER]
        if not wanted:
            return
        self.wanted.update(wanted)
        self.requested.update((d, now) for d in wanted)
        self.totals["requested"] += len(wanted)
        if prefer not in self.links:
            peers = sorted(self.links)
            self._turn += 1
            prefer = peers[self._turn % len(peers)]
        self.links[prefer].write(REQUEST, b"".join(wanted), force=True)

    def _flow(self) -> None:
        """Stop reading clients while `max_inflight` of our batches wait for acknowledgements."""
        busy = len(self.quorum) >= self.setup.max_inflight
        if busy != self.paused:
            self.paused = busy
            now = time.monotonic()
            if busy:
                self._paused_at = now
            else:
                self.totals["paused_us"] += round(1e6 * (now - self._paused_at))
            for client in self.clients:
                client.set_reading(not busy)


class _Fixed:
    """Reads exactly `size` bytes (a session's id and key, a stream's session id), then calls `done(bytes)`."""

    def __init__(self, size: int, done) -> None:
        self.data, self.n, self.done = bytearray(size), 0, done

    def buffer(self) -> memoryview:
        return memoryview(self.data)[self.n:]

    def updated(self, nbytes: int) -> None:
        self.n += nbytes
        if self.n == len(self.data):
            self.done(bytes(self.data))


class _Closed:
    """A connection that may send nothing more: any byte closes it."""

    def __init__(self, close) -> None:
        self.close = close

    def buffer(self) -> memoryview:
        return memoryview(bytearray(1))

    def updated(self, nbytes: int) -> None:
        self.close()


class Inbound(asyncio.BufferedProtocol):
    """Accepted connection: one greeting byte, then a client stream, a peer worker's TLS session or the stream
    bound to one (workerlinks.py)."""

    def __init__(self, plane: Dataplane) -> None:
        self.plane = plane
        self.greeting = bytearray(1)
        self.role: Ingress | PeerReader | _Fixed | _Closed | None = None
        self.upgrading: asyncio.Future | None = None
        self.session: PeerSession | None = None  # ours (PEER) or the one this stream is bound to (DATA_PEER)
        self.peer: int | None = None  # named by TLS (PEER)
        self.sent: bytes | None = None  # the session id and key (PEER)

    def connection_made(self, transport) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self.greeting) if self.role is None else self.role.buffer()

    def buffer_updated(self, nbytes: int) -> None:
        if self.role is None:
            kind = bytes(self.greeting)
            if kind == CLIENT:
                self.role = Ingress(self.plane, self.transport)
            elif kind == PEER:
                self.transport.pause_reading()  # the next byte belongs to TLS
                # the session id and key may arrive with the handshake's end, before start_tls returns
                self.role = _Fixed(SESSION, self._keyed)
                self.upgrading = asyncio.ensure_future(self._upgrade())
            elif kind == DATA_PEER:
                self.role = _Fixed(SESSION_ID_SIZE, self._bind)
            else:
                self.transport.close()
            return
        self.role.updated(nbytes)

    async def _upgrade(self) -> None:
        auth = self.plane.auth
        try:
            tls = await asyncio.get_running_loop().start_tls(
                self.transport, self, auth.server_context(), server_side=True, ssl_handshake_timeout=3.0)
            self.transport = tls
            self.peer = auth.peer_of(tls.get_extra_info("ssl_object"))
            if self.sent is not None:
                self._keyed(self.sent)
        except (OSError, TimeoutError, PeerAuthError, ssl.SSLError, ConnectionError) as exc:
            log.warning("refused a worker link: %s", exc)
            self.transport.close()

    def _keyed(self, sent: bytes) -> None:
        """The session id and link key, read inside TLS: once TLS named the peer, its stream may bind."""
        self.sent, self.role = sent, _Closed(self._close)
        if self.peer is None:
            return
        session_id, key = sent[:SESSION_ID_SIZE], sent[SESSION_ID_SIZE:]
        assert len(key) == KEY_SIZE
        if session_id in self.plane.sessions:  # ids are random: a repeat is a peer misbehaving
            self._close()
            return
        self.session = PeerSession(self.peer, key, self.transport)
        self.plane.sessions[session_id] = self.session
        self.transport.write(READY)

    def _bind(self, session_id: bytes) -> None:
        """A stream names its session: bound to it if that session waits for one, else refused."""
        session = self.plane.sessions.pop(session_id, None)
        if session is None or session.stream is not None or session.transport.is_closing():
            log.warning("refused a worker stream for no waiting session")
            self.transport.close()
            return
        session.stream, self.session = self.transport, session
        self.role = PeerReader(self.plane, session)

    def _close(self) -> None:
        if self.session is not None:
            self.session.close()
        self.transport.close()

    def connection_lost(self, exc) -> None:
        if isinstance(self.role, Ingress):
            self.role.closed()
        elif self.session is not None:  # a session or its stream: the link is down, both close
            self.session.close()
            for session_id, waiting in list(self.plane.sessions.items()):
                if waiting is self.session:
                    del self.plane.sessions[session_id]


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def _keep_freed_memory() -> None:
    """Let glibc keep freed memory for the next allocation instead of handing it back to the kernel.

    Each sealed batch is a fresh ~500 KB bytearray (BatchMaker.seal). With glibc's defaults its memory came
    back from the kernel page by page: ~26 page faults and ~100 us of CPU per 500 KB bytearray here, ~38 us
    (the zero-fill alone) with these settings (session 6b, docs/bullshark.md). The heap can grow to the
    worker's peak: its 64 cached batches and its links' write buffers, some 40 MB."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, 16 * 1024 * 1024)  # above the largest frame (8 MiB): from the heap
        libc.mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024)


async def run(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_connection(sock=sock)
    setup = await read_local(reader)
    if not isinstance(setup, Setup):
        raise SystemExit("the first message on the worker link must be WorkerSetup")
    plane = Dataplane(setup, writer)
    await plane.start()
    log.info("worker %s listening on %s:%s", setup.node_id, setup.host, setup.port)
    try:
        while True:
            plane.on_local(await read_local(reader))
    except (asyncio.IncompleteReadError, ConnectionError):
        log.info("worker %s: the node closed the link; exiting", setup.node_id)


def main() -> None:
    _die_with_parent()
    _keep_freed_memory()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(levelname)s %(message)s")
    uvloop.run(run(int(sys.argv[1])))  # its TLS transport: 10-35% less CPU per byte here (bullshark_bound.py)


if __name__ == "__main__":
    main()
