"""The manager-to-manager wire: length-prefixed frames on a TCP stream, and the authentication step.

    frame = kind u8 | meta_len u32 | data_len u64 | meta (msgpack map) | data (raw bytes)

Kinds and their meta (the data part is empty unless said):

    AUTH      reserved: authentication happens below the frames (TLS), never as a frame
    OFFER     {tid, key, size, sha256, chunk_bytes, chunks, base}   sender -> receiver, opens or resumes a transfer
    STATE     {have: [chunk index...], base}                        durable chunks; base: sha256 usable as delta base
    CHUNK     {tid, i, codec, raw_len, xxh3}, data = encoded chunk (xxh3: `chunks.checksum` of the raw bytes)
    ACK       {tid, i}                                              chunk i is written and fsynced
    NACK      {tid, i, reason}                                      chunk i failed its checksum: send it again
    COMMIT    {tid}                                                 every chunk acknowledged: verify and publish
    DONE      {tid, version}                                        published
    COMMIT_MANY {tids: [...]}                                       a batch of small transfers: verify, publish all
    DONE_MANY {results: [{tid, version} or {tid, error}]}          per transfer, in the order asked
    FAIL      {tid?, reason}                                        refused; the connection closes
    PING/PONG {t}                                                   RTT probe
    PROBE     {n}, data = n filler bytes; PROBE_ACK {n}             bandwidth probe

No frame is read before authentication succeeds: the step is one pluggable object (`PeerAuth`); the
one in use is `TlsAuth`, mutual TLS 1.3 with pinned Ed25519 certificates from `runtime.peerauth`, so
everything after it is also encrypted and integrity-protected.
"""

from __future__ import annotations

import contextlib
import enum
import mmap
import select
import socket
import ssl
import struct
from collections.abc import Iterator
from typing import Protocol

import msgspec

from dwcp.runtime.peerauth import PeerAuth as PeerAuth_
from dwcp.runtime.peerauth import PeerAuthError

_HEAD = struct.Struct("!BIQ")
MAX_META = 64 * 1024
HOLD_BYTES = 64 * 1024  # frames held by `Connection.holding` go out once they reach this size
MAX_AUTH_BYTES = 1024
_pack = msgspec.msgpack.Encoder().encode
_unpack = msgspec.msgpack.Decoder(dict).decode


class Kind(enum.IntEnum):
    AUTH = 1
    OFFER = 2
    STATE = 3
    CHUNK = 4
    ACK = 5
    NACK = 6
    COMMIT = 7
    DONE = 8
    FAIL = 9
    PING = 10
    PONG = 11
    PROBE = 12
    PROBE_ACK = 13
    COMMIT_MANY = 14
    DONE_MANY = 15


class WireError(Exception):
    """The peer broke the protocol (or went away); `reason` is a metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Connection:
    """A blocking socket that speaks frames. One reader and one writer thread may use it at once."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.peer: str | None = None
        # `receive(reuse=True)` reads frame data here, one frame at a time: page-aligned (an anonymous mmap), so a
        # chunk can be written to disk with O_DIRECT straight from it (incoming.py).
        self._data: mmap.mmap | None = None
        self._held = bytearray()  # frames waiting to go out together (`holding`, `send(soon=True)`)
        self._holding = False

    def send(self, kind: Kind, meta: dict | None = None, data: bytes | memoryview = b"", soon: bool = False) -> int:
        """Send a frame. With `soon` (or inside `holding`), a small frame may wait to leave with the next ones:
        at the latest before this connection blocks in `receive`, sends a large frame, or holds HOLD_BYTES."""
        encoded = _pack(meta or {})
        head = _HEAD.pack(kind, len(encoded), len(data))
        if (soon or self._holding) and len(data) <= HOLD_BYTES:
            self._held += head
            self._held += encoded
            self._held += data
            if len(self._held) >= HOLD_BYTES:
                self.flush()
        elif len(data) <= 65536:
            self.flush()
            self.sock.sendall(head + encoded + bytes(data))
        else:  # no copy of a large chunk just to prepend a header
            self.flush()
            self.sock.sendall(head + encoded)
            self.sock.sendall(data)
        return _HEAD.size + len(encoded) + len(data)

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """Frames sent inside go out together, one `sendall` per HOLD_BYTES instead of one per frame (a batch
        of small objects sends two frames per object, each otherwise a TLS record and a syscall of its own).

        For a connection one thread sends and receives on. Held frames leave when they reach HOLD_BYTES, before
        a frame too large to hold, before this connection's `receive` waits for input (an answer is never
        awaited with its request still held) and when the block ends. A block that raises drops what is held
        (the caller closes the connection): nothing held leaves after a failure."""
        self._holding = True
        try:
            yield
        except BaseException:
            self._held = bytearray()
            raise
        finally:
            self._holding = False
        self.flush()

    def flush(self) -> None:
        """Send the frames held so far (see `holding`)."""
        if self._held:
            held, self._held = self._held, bytearray()
            self.sock.sendall(held)

    def _input_ready(self) -> bool:
        """Whether a `receive` can start without waiting: bytes decrypted and buffered, or in the socket."""
        pending = getattr(self.sock, "pending", None)
        if pending is not None and pending():
            return True
        return bool(select.select([self.sock], [], [], 0)[0])

    def _exactly(self, n: int) -> bytearray:
        buf = bytearray(n)
        self._fill(memoryview(buf))
        return buf

    def _fill(self, view: memoryview) -> None:
        got, n = 0, len(view)
        while got < n:
            r = self.sock.recv_into(view[got:], n - got)
            if r == 0:
                raise WireError("closed", "peer closed the connection")
            got += r

    def receive(self, max_data: int, reuse: bool = False) -> tuple[Kind, dict, bytearray | memoryview]:
        """The next frame. With `reuse`, its data is a view of this connection's buffer, valid only until the
        next `receive` (a chunk is checked and written before that): no allocation per chunk. Frames held by
        `holding` or `send(soon=True)` leave first unless input is already there: a peer sends whole frames and
        sends what it holds before it waits, so what is there now completes without our held frames, and
        answers to a run of small requests leave together."""
        if self._held and not self._input_ready():
            self.flush()
        kind, meta_len, data_len = _HEAD.unpack(self._exactly(_HEAD.size))
        try:
            kind = Kind(kind)
        except ValueError:
            raise WireError("unknown_kind", f"unknown frame kind {kind}") from None
        if meta_len > MAX_META:
            raise WireError("oversize", f"frame meta of {meta_len} bytes exceeds {MAX_META}")
        if data_len > max_data:
            raise WireError("oversize", f"{kind.name} data of {data_len} bytes exceeds {max_data}")
        try:
            meta = _unpack(self._exactly(meta_len)) if meta_len else {}
        except msgspec.DecodeError as exc:
            raise WireError("malformed", f"bad frame meta: {exc}") from None
        if not data_len:
            return kind, meta, bytearray()
        if not reuse:
            return kind, meta, self._exactly(data_len)
        if self._data is None or len(self._data) < data_len:
            self._data = mmap.mmap(-1, data_len)
        view = memoryview(self._data)[:data_len]
        self._fill(view)
        return kind, meta, view

    def expect(self, kinds: tuple[Kind, ...], max_data: int) -> tuple[Kind, dict, bytearray]:
        kind, meta, data = self.receive(max_data)
        if kind is Kind.FAIL:
            raise WireError("refused", f"peer refused: {meta.get('reason', '?')}")
        if kind not in kinds:
            raise WireError("unexpected", f"expected {'/'.join(k.name for k in kinds)}, got {kind.name}")
        return kind, meta, data

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


class PeerAuth(Protocol):
    def authenticate(self, conn: Connection, dialled: str | None) -> str:
        """Prove our identity, check the peer's; return its site name or raise WireError."""


class TlsAuth:
    """Mutual TLS 1.3 on pinned Ed25519 certificates (`runtime.peerauth`): the connection's socket is
    replaced by the TLS one, and the peer is named from its verified certificate's key, never from what
    it says. A certificate that is not pinned fails the handshake; nothing else is read before it."""

    def __init__(self, auth: PeerAuth_, handshake_timeout: float = 5.0) -> None:
        self._auth, self._timeout = auth, handshake_timeout

    def authenticate(self, conn: Connection, dialled: str | None) -> str:
        server = dialled is None
        ctx = self._auth.server_context() if server else self._auth.client_context()
        previous = conn.sock.gettimeout()
        conn.sock.settimeout(self._timeout)
        try:
            tls = ctx.wrap_socket(conn.sock, server_side=server)
        except ssl.SSLCertVerificationError as exc:
            raise WireError("unknown_peer", f"peer certificate not pinned: {exc.verify_message}") from None
        except ssl.SSLError as exc:
            raise WireError("tls_handshake", f"TLS handshake failed: {exc.reason or exc}") from None
        except OSError as exc:
            raise WireError("tls_handshake", f"TLS handshake failed: {exc}") from None
        conn.sock = tls
        try:
            node = self._auth.peer_of(tls)
        except PeerAuthError as exc:
            raise WireError(exc.reason, str(exc)) from None
        if dialled is not None and node != site_index(dialled):
            raise WireError("wrong_peer", f"dialled {dialled} but {site_name(node)} answered")
        tls.settimeout(previous)
        conn.peer = site_name(node)
        return conn.peer


def site_name(index: int) -> str:
    return f"manager-{index}"


def site_index(name: str) -> int:
    prefix, _, number = name.rpartition("-")
    if prefix != "manager" or not number.isdigit():
        raise ValueError(f"{name!r} is not a manager site name (manager-<n>)")
    return int(number)
