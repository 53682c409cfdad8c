"""The manager-to-manager wire: length-prefixed frames on a TCP stream, and the authentication step.

    frame = kind u8 | meta_len u32 | data_len u64 | meta (msgpack map) | data (raw bytes)

Kinds and their meta (the data part is empty unless said):

    AUTH      handshake payload (consensus transport's Ed25519 HELLO / PROOF) in data
    OFFER     {tid, key, size, sha256, chunk_bytes, chunks, base}   sender -> receiver, opens or resumes a transfer
    STATE     {have: [chunk index...], base}                        durable chunks; base: sha256 usable as delta base
    CHUNK     {tid, i, codec, raw_len, sha256}, data = encoded chunk
    ACK       {tid, i}                                              chunk i is written and fsynced
    NACK      {tid, i, reason}                                      chunk i failed its checksum: send it again
    COMMIT    {tid}                                                 every chunk acknowledged: verify and publish
    DONE      {tid, version}                                        published
    FAIL      {tid?, reason}                                        refused; the connection closes
    PING/PONG {t}                                                   RTT probe
    PROBE     {n}, data = n filler bytes; PROBE_ACK {n}             bandwidth probe

Until the AUTH step succeeds only AUTH frames of at most MAX_AUTH_BYTES are read, so an unauthenticated
peer cannot make us allocate more than that. Authentication is one pluggable object (`PeerAuth`): the
Ed25519 handshake below, or any other that returns the proven peer name.
"""

from __future__ import annotations

import contextlib
import enum
import socket
import struct
from collections.abc import Mapping
from typing import Protocol

import msgspec

from dwcp.consensus.core.crypto import Ed25519Signer
from dwcp.consensus.transport.handshake import Handshake, HandshakeError

_HEAD = struct.Struct("!BIQ")
MAX_META = 64 * 1024
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

    def send(self, kind: Kind, meta: dict | None = None, data: bytes | memoryview = b"") -> int:
        encoded = _pack(meta or {})
        head = _HEAD.pack(kind, len(encoded), len(data))
        if len(data) <= 65536:
            self.sock.sendall(head + encoded + bytes(data))
        else:  # no copy of a large chunk just to prepend a header
            self.sock.sendall(head + encoded)
            self.sock.sendall(data)
        return _HEAD.size + len(encoded) + len(data)

    def _exactly(self, n: int) -> bytearray:
        buf = bytearray(n)
        view, got = memoryview(buf), 0
        while got < n:
            r = self.sock.recv_into(view[got:], n - got)
            if r == 0:
                raise WireError("closed", "peer closed the connection")
            got += r
        return buf

    def receive(self, max_data: int) -> tuple[Kind, dict, bytearray]:
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
        return kind, meta, self._exactly(data_len) if data_len else bytearray()

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


class HandshakeAuth:
    """Mutual Ed25519 proof of each side's key over AUTH frames (the consensus transport's handshake).

    Sites are `manager-<i>`; ids on the wire are the instance indexes. An id outside `public_keys`,
    or a proof that fails, ends the connection before any other frame is read.
    """

    def __init__(self, me: int, private_key: bytes, public_keys: Mapping[int, bytes], domain: bytes) -> None:
        self._signer = Ed25519Signer(me, private_key)
        self.me, self._keys, self._domain = me, dict(public_keys), domain

    def authenticate(self, conn: Connection, dialled: str | None) -> str:
        expected = site_index(dialled) if dialled is not None else None
        hs = Handshake(me=self.me, sign=self._signer.sign, public_keys=self._keys, domain=self._domain,
                       expected_peer=expected)
        conn.send(Kind.AUTH, data=hs.hello())
        try:
            while not hs.done:
                kind, _, payload = conn.receive(MAX_AUTH_BYTES)
                if kind is not Kind.AUTH:
                    raise WireError("unauthenticated", f"{kind.name} before authentication")
                for reply in hs.receive(bytes(payload)):
                    conn.send(Kind.AUTH, data=reply)
        except HandshakeError as exc:
            raise WireError(exc.reason, str(exc)) from None
        assert hs.peer_id is not None
        conn.peer = site_name(hs.peer_id)
        return conn.peer


def site_name(index: int) -> str:
    return f"manager-{index}"


def site_index(name: str) -> int:
    prefix, _, number = name.rpartition("-")
    if prefix != "manager" or not number.isdigit():
        raise ValueError(f"{name!r} is not a manager site name (manager-<n>)")
    return int(number)
