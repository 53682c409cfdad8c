"""Peer authentication (runtime/peerauth.py): mutual TLS 1.3 on pinned Ed25519 certificates, on loopback."""

from __future__ import annotations

import asyncio
import socket
import ssl

import pytest

from dwcp.consensus.core.crypto import generate_private_key, public_key_of
from dwcp.runtime.peerauth import (
    PeerAuth,
    PeerAuthError,
    ServeLimits,
    certificate_public_key,
    connect,
    self_signed_certificate,
    serve,
)

pytestmark = [pytest.mark.network, pytest.mark.timeout(30)]


class Nodes:
    def __init__(self, n: int, label: str = "test/1") -> None:
        self.keys = {i: generate_private_key() for i in range(n)}
        self.certs = {i: self_signed_certificate(k, f"node-{i}") for i, k in self.keys.items()}
        self.label = label

    def auth(self, i: int) -> PeerAuth:
        return PeerAuth(me=i, private_key=self.keys[i], certificate=self.certs[i], peers=self.certs, label=self.label)


async def _echo_server(auth: PeerAuth, limits: ServeLimits | None = None, refused: list[str] | None = None):
    async def handler(peer: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(f"hello {peer}\n".encode())
        await writer.drain()
        writer.close()

    on_refused = refused.append if refused is not None else None
    return await serve(auth, handler, "127.0.0.1", 0, limits, on_refused=on_refused)


def test_certificate_carries_the_node_key() -> None:
    key = generate_private_key()
    cert = self_signed_certificate(key, "node-7")
    assert certificate_public_key(cert) == public_key_of(key)
    with pytest.raises(PeerAuthError, match="not for its private key"):
        PeerAuth(me=0, private_key=generate_private_key(), certificate=cert, peers={}, label="x")


async def test_each_side_learns_the_other_from_its_key() -> None:
    nodes = Nodes(3)
    server = await _echo_server(nodes.auth(0))
    try:
        reader, writer = await connect(nodes.auth(2), "127.0.0.1", server.port, expect=0)
        assert await reader.readline() == b"hello 2\n"  # the acceptor named the dialler by its certificate key
        writer.close()
        with pytest.raises(PeerAuthError, match="dialled node 1"):
            await connect(nodes.auth(2), "127.0.0.1", server.port, expect=1)
    finally:
        await server.close()


async def test_stranger_and_other_deployment_are_refused_before_the_handler_runs() -> None:
    nodes, refused = Nodes(2), []
    server = await _echo_server(nodes.auth(0), refused=refused)
    try:
        stranger_key = generate_private_key()
        stranger = PeerAuth(me=1, private_key=stranger_key, certificate=self_signed_certificate(stranger_key, "node-1"),
                            peers=nodes.certs, label=nodes.label)
        with pytest.raises((ssl.SSLError, OSError, asyncio.IncompleteReadError)):
            reader, writer = await connect(stranger, "127.0.0.1", server.port, expect=0)
            await reader.readexactly(1)  # TLS 1.3: the server's verdict on our certificate arrives after
        other = Nodes(2, label="test/2")
        other.keys, other.certs = nodes.keys, nodes.certs  # same keys, another deployment
        with pytest.raises(PeerAuthError, match="deployment"):
            await connect(other.auth(1), "127.0.0.1", server.port, expect=0)
        await asyncio.sleep(0.2)
        assert sorted(refused) == ["handshake_failed", "handshake_wrong_deployment"]
    finally:
        await server.close()


async def test_strangers_holding_handshake_slots_are_capped_and_timed_out() -> None:
    nodes, refused = Nodes(2), []
    server = await _echo_server(nodes.auth(0), ServeLimits(max_unauthenticated=8, handshake_timeout=0.5), refused)
    socks = []
    try:
        for _ in range(12):  # connect and say nothing
            s = socket.create_connection(("127.0.0.1", server.port))
            socks.append(s)
        await asyncio.sleep(0.2)
        assert server.unauthenticated == 8 and refused.count("preauth_limit") == 4
        await asyncio.sleep(0.6)
        assert server.unauthenticated == 0 and len(refused) == 12  # each silent one dropped at its deadline
        reader, writer = await connect(nodes.auth(1), "127.0.0.1", server.port, expect=0)
        assert await reader.readline() == b"hello 1\n"
        writer.close()
    finally:
        for s in socks:
            s.close()
        await server.close()


async def test_contexts_serve_blocking_sockets_too() -> None:
    """The manager's threaded peer port uses plain sockets: wrap them with the same contexts, then `peer_of`."""
    nodes = Nodes(2)
    server = await _echo_server(nodes.auth(0))

    def blocking_client() -> tuple[int, bytes]:
        auth = nodes.auth(1)
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        with auth.client_context().wrap_socket(raw) as tls:
            return auth.peer_of(tls), tls.recv(64)

    try:
        assert await asyncio.to_thread(blocking_client) == (0, b"hello 1\n")
    finally:
        await server.close()
