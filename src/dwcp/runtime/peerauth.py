"""Mutually authenticated TLS 1.3 links between nodes that know each other's Ed25519 keys.

Who may connect: a node whose certificate is pinned in `PeerAuth.peers` and who proves it holds the
matching private key. Nothing else; there is no certificate authority, no hostname and no name in a
certificate that counts. Each node's identity *is* its Ed25519 key:

- a node's certificate is self-signed by its own consensus key (`self_signed_certificate`), made
  once by `dwcp consensus keygen` / `dwcp up` and published in the committee file beside the key;
- both sides require a certificate (`CERT_REQUIRED`), trust exactly the pinned certificates, and
  TLS 1.3's CertificateVerify proves the private key on both sides, over a transcript that binds
  both nonces, both roles and the key exchange (what our old handshake lacked: it could be relayed);
- after the handshake the peer's id is looked up *from the verified certificate's public key*
  (`PeerAuth.peer_of`), never from anything the peer says; a dialler also checks it reached the id
  it meant to (`connect(expect=...)`);
- ALPN carries a deployment label (protocol + committee digest), so a node of one cluster cannot
  open a link into another that happens to share keys.

Before authentication a listener spends almost nothing on a stranger: `serve()` caps concurrent
unauthenticated connections (`max_unauthenticated`, beyond it new ones are closed at once), gives
each `handshake_timeout` seconds, and reads only TLS handshake records, which OpenSSL bounds in
size; no application byte is read until the peer is known.

API (asyncio streams; used by the consensus transport, and meant for any node-to-node link, e.g.
manager-to-manager transfers and Narwhal worker links):

    auth = PeerAuth(me=0, private_key=raw32, certificate=pem, peers={1: pem1, 2: pem2}, label="tpbft/ab12")
    server = await serve(auth, handler, host, port)       # handler(peer_id, reader, writer); server.port
    reader, writer = await connect(auth, host, port, expect=1)
    auth.server_context(), auth.client_context()           # plain ssl.SSLContext, e.g. for httpx/uvicorn;
                                                           # then auth.peer_of(ssl_object) names the peer

Failures raise `PeerAuthError` (with a metric-label `reason`) or the ssl/OS error of the handshake.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import gc
import hashlib
import os
import socket
import ssl
import struct
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID

PeerHandler = Callable[[int, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class PeerAuthError(Exception):
    """The other end is not who it must be; `reason` is a metric label (few values)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def self_signed_certificate(private_key: bytes, name: str) -> bytes:
    """A PEM certificate for the raw 32-byte Ed25519 `private_key`, self-signed, valid until 9999.

    Validity dates are not what protects the link (the pinned key is; rotation replaces the pin), so
    the certificate never expires under a running cluster.
    """
    key = Ed25519PrivateKey.from_private_bytes(private_key)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(hashlib.sha256(key.public_key().public_bytes_raw()).digest()[:16], "big") >> 1)
        .not_valid_before(datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC))
        .not_valid_after(datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, None)
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def certificate_public_key(certificate: bytes) -> bytes:
    """The raw Ed25519 public key in a PEM or DER certificate; PeerAuthError for any other key type."""
    try:
        cert = (
            x509.load_pem_x509_certificate(certificate)
            if certificate.lstrip().startswith(b"-----")
            else x509.load_der_x509_certificate(certificate)
        )
    except ValueError as exc:
        raise PeerAuthError("bad_certificate", f"not an X.509 certificate: {exc}") from None
    key = cert.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise PeerAuthError("bad_certificate", f"certificate key is {type(key).__name__}, not Ed25519")
    return key.public_bytes_raw()


@dataclass(frozen=True, eq=False)
class PeerAuth:
    """One node's side of peer authentication: its key and certificate, and the peers it accepts.

    `peers` maps node id to PEM certificate (the node itself may be included; it is never accepted
    as a peer). `label` names the deployment (e.g. protocol + committee digest); both ends must agree.
    """

    me: int
    private_key: bytes
    certificate: bytes
    peers: Mapping[int, bytes]
    label: str

    def __post_init__(self) -> None:
        own = Ed25519PrivateKey.from_private_bytes(self.private_key).public_key().public_bytes_raw()
        if certificate_public_key(self.certificate) != own:
            raise PeerAuthError("bad_certificate", f"node {self.me}'s certificate is not for its private key")
        by_key: dict[bytes, int] = {}
        for node, pem in self.peers.items():
            key = certificate_public_key(pem)
            if key in by_key:
                raise PeerAuthError("bad_certificate", f"nodes {by_key[key]} and {node} share one key")
            by_key[key] = node
        object.__setattr__(self, "_by_key", by_key)
        if not 0 < len(self.alpn) < 256:
            raise ValueError("label must make an ALPN name of 1..255 bytes")

    @property
    def alpn(self) -> bytes:
        return b"dwcp/" + self.label.encode()

    @functools.cached_property
    def _contexts(self) -> tuple[ssl.SSLContext, ssl.SSLContext]:
        return self._context(server=True), self._context(server=False)

    def server_context(self) -> ssl.SSLContext:
        """Accepting side: requires and verifies the peer's certificate against the pins."""
        return self._contexts[0]

    def client_context(self) -> ssl.SSLContext:
        """Dialling side: requires and verifies the peer's certificate against the pins; no hostnames."""
        return self._contexts[1]

    def _context(self, *, server: bool) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.check_hostname = False  # identity is the pinned key, not a name
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.set_alpn_protocols([self.alpn.decode()])
        pins = [pem for node, pem in self.peers.items() if node != self.me]
        if pins:
            ctx.load_verify_locations(cadata=b"".join(pins).decode())
        # ssl loads keys only from files: write the key to a private directory and remove it at once.
        with tempfile.TemporaryDirectory(prefix="dwcp-peerauth-") as tmp:
            key_path, cert_path = os.path.join(tmp, "key.pem"), os.path.join(tmp, "cert.pem")
            pem = Ed25519PrivateKey.from_private_bytes(self.private_key).private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(pem)
            with open(cert_path, "wb") as fh:
                fh.write(self.certificate)
            ctx.load_cert_chain(cert_path, key_path)
        return ctx

    def peer_of(self, ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> int:
        """The id of the authenticated peer on this TLS connection, from its verified certificate's key."""
        if ssl_object is None:
            raise PeerAuthError("no_tls", "connection is not TLS")
        if ssl_object.selected_alpn_protocol() != self.alpn.decode():
            raise PeerAuthError("wrong_deployment", f"peer is not in deployment {self.label!r}")
        der = ssl_object.getpeercert(binary_form=True)
        if der is None:
            raise PeerAuthError("no_certificate", "peer presented no certificate")
        node = self._by_key.get(certificate_public_key(der))  # type: ignore[attr-defined]
        if node is None or node == self.me:
            raise PeerAuthError("unknown_peer", "peer's key is not one of the pinned peers")
        return node


async def connect(
    auth: PeerAuth, host: str, port: int, *, expect: int, timeout: float = 3.0, limit: int = 2**16
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Dial `host:port`, run the TLS handshake within `timeout`, and check the peer is node `expect`."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(
            host, port, ssl=auth.client_context(), server_hostname=None, ssl_handshake_timeout=timeout, limit=limit
        ),
        timeout,
    )
    try:
        peer = auth.peer_of(writer.get_extra_info("ssl_object"))
        if peer != expect:
            raise PeerAuthError("wrong_peer", f"dialled node {expect} at {host}:{port} but node {peer} answered")
    except BaseException:
        writer.close()
        raise
    return reader, writer


@dataclass
class ServeLimits:
    """What a stranger may cost a listener before it is authenticated."""

    max_unauthenticated: int = 64  # concurrent connections still in the TLS handshake
    handshake_timeout: float = 3.0
    read_limit: int = 2**16  # StreamReader buffer limit once authenticated


class PeerServer:
    """A listener that hands `handler` only authenticated peers; `unauthenticated` counts handshakes in flight.

    It accepts sockets itself and gives each to TLS straight away (`connect_accepted_socket`), so no
    byte is ever read in the clear and the count of strangers is known before one costs anything:
    past `max_unauthenticated`, a new connection is reset at once. (asyncio's `start_server(ssl=)`
    would run handshakes we cannot count; `start_tls` after a plain accept loses a ClientHello that
    an event loop such as uvloop has already read.)
    """

    def __init__(
        self, auth: PeerAuth, handler: PeerHandler, limits: ServeLimits | None = None,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self.auth, self.handler, self.limits = auth, handler, limits or ServeLimits()
        self.on_refused = on_refused
        self.unauthenticated = 0
        self._gc_pending: asyncio.TimerHandle | None = None
        self.sock: socket.socket | None = None
        self._loop_task: asyncio.Task | None = None
        self._conns: set[asyncio.Task] = set()

    @property
    def port(self) -> int:
        assert self.sock is not None
        return self.sock.getsockname()[1]

    def _refuse(self, reason: str) -> None:
        if self.on_refused is not None:
            self.on_refused(reason)

    def _failed_handshake(self, reason: str) -> None:
        """Count a stranger turned away, and free what it left behind.

        A failed TLS handshake leaves a reference cycle inside asyncio (the exception's traceback holds
        the SSL protocol, whose 256 KiB buffer holds on): only the cyclic collector frees it, and under
        a flood those objects reach the oldest generation, which Python collects rarely. Measured: 200
        strangers per round grew a node by ~10 MB a round without this. A full collection takes
        milliseconds, so one runs a second after the first failure, then at most once a second while
        strangers keep failing.
        """
        self._refuse(reason)
        if self._gc_pending is None:
            self._gc_pending = asyncio.get_running_loop().call_later(1.0, self._collect)

    def _collect(self) -> None:
        self._gc_pending = None
        gc.collect()

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, address = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setblocking(False)
        try:
            sock.bind(address)
            sock.listen(512)
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self._loop_task = asyncio.create_task(self._accept_loop(sock), name="peerauth-accept")

    async def _accept_loop(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(sock)
            except OSError:  # e.g. EMFILE: back off briefly rather than spin
                await asyncio.sleep(0.05)
                continue
            if self.unauthenticated >= self.limits.max_unauthenticated:
                self._refuse("preauth_limit")
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, no buffers
                conn.close()
                continue
            conn.setblocking(False)
            self.unauthenticated += 1
            task = asyncio.create_task(self._authenticate(conn))
            self._conns.add(task)
            task.add_done_callback(self._conns.discard)

    async def _authenticate(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=self.limits.read_limit)
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            try:
                transport, _ = await asyncio.wait_for(
                    loop.connect_accepted_socket(
                        lambda: protocol, conn, ssl=self.auth.server_context(),
                        ssl_handshake_timeout=self.limits.handshake_timeout,
                    ),
                    self.limits.handshake_timeout,
                )
            finally:
                self.unauthenticated -= 1
        except (TimeoutError, ssl.SSLError, OSError) as exc:
            self._failed_handshake("handshake_timeout" if isinstance(exc, TimeoutError) else "handshake_failed")
            conn.close()
            return
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        try:
            peer = self.auth.peer_of(transport.get_extra_info("ssl_object"))
        except PeerAuthError as exc:
            self._failed_handshake(f"handshake_{exc.reason}")
            transport.abort()
            return
        await self.handler(peer, reader, writer)

    async def close(self) -> None:
        """Stop accepting; cancels every connection's task (handshakes and running handlers alike)."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        if self.sock is not None:
            self.sock.close()
        if self._gc_pending is not None:
            self._gc_pending.cancel()
        for task in list(self._conns):
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)


async def serve(
    auth: PeerAuth, handler: PeerHandler, host: str, port: int, limits: ServeLimits | None = None,
    on_refused: Callable[[str], None] | None = None,
) -> PeerServer:
    """Listen on `host:port` (0: any free port, see `.port`); each authenticated connection runs
    `handler(peer_id, reader, writer)` in its own task. `on_refused(reason)` counts strangers turned away."""
    server = PeerServer(auth, handler, limits, on_refused)
    await server.start(host, port)
    return server
