"""Mutual authentication of a fresh connection, sans-IO: who is on the other end, proven by their key.

NOT used by the consensus transport any more: it runs mutual TLS 1.3 (`dwcp.runtime.peerauth`),
because this handshake binds neither role nor both nonces into one transcript and can be relayed
(issue 15, item 1). It remains only for the manager's peer port (`manager/wire.py`), which should
move to `runtime.peerauth` (blocking sockets: `auth.server_context().wrap_socket(...)`, then
`auth.peer_of(sock)`), after which this module goes.

Theory of operation. Both ends send HELLO at once, each with its node id and a fresh random nonce.
On the peer's HELLO, an end checks the id is a committee member (not itself; the one it dialled,
if it dialled) and answers PROOF: an Ed25519 signature over

    b"dwcp-handshake-v1" | domain | signer id | verifier id | verifier's nonce | signer's nonce

The verifier's nonce makes a recorded PROOF worthless on any later connection (replay), the two
ids stop a proof made for one peer being relayed to another, and `domain` (protocol + committee
digest) stops a proof for one cluster opening a connection in another. The connection is
authenticated once we have verified their PROOF and sent ours. Any deviation raises
`HandshakeError` with a metric-label `reason`; the caller closes the connection.

Payloads travel as HANDSHAKE-channel frames (see framing.py):
    HELLO = b"H" | version u8 | node id u32 | nonce (32 bytes)
    PROOF = b"P" | signature (64 bytes)
"""

from __future__ import annotations

import enum
import os
import struct
from collections.abc import Callable, Mapping

from dwcp.consensus.core.crypto import ed25519_verify

VERSION = 1
NONCE_SIZE = 32
SIGNATURE_SIZE = 64
_HELLO = struct.Struct("!cBI32s")
_PROOF = struct.Struct("!c64s")
_CONTEXT = b"dwcp-handshake-v1"


class HandshakeError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class _State(enum.Enum):
    AWAIT_HELLO = "await_hello"
    AWAIT_PROOF = "await_proof"
    DONE = "done"


def transcript(domain: bytes, signer: int, verifier: int, verifier_nonce: bytes, signer_nonce: bytes) -> bytes:
    """The bytes a PROOF signs; public so tests can forge near-misses."""
    return b"|".join(
        (_CONTEXT, domain, str(signer).encode(), str(verifier).encode(), verifier_nonce, signer_nonce)
    )


def encode_hello(node_id: int, nonce: bytes, version: int = VERSION) -> bytes:
    return _HELLO.pack(b"H", version, node_id, nonce)


def encode_proof(signature: bytes) -> bytes:
    return _PROOF.pack(b"P", signature)


class Handshake:
    """One connection's handshake. `expected_peer` is set by the dialer, None by the acceptor."""

    def __init__(
        self,
        *,
        me: int,
        sign: Callable[[bytes], bytes],
        public_keys: Mapping[int, bytes],
        domain: bytes,
        expected_peer: int | None = None,
        nonce: bytes | None = None,
    ) -> None:
        self.me = me
        self._sign = sign
        self._keys = public_keys
        self._domain = domain
        self._expected = expected_peer
        self._nonce = nonce if nonce is not None else os.urandom(NONCE_SIZE)
        if len(self._nonce) != NONCE_SIZE:
            raise ValueError(f"nonce must be {NONCE_SIZE} bytes")
        self._peer_nonce = b""
        self._state = _State.AWAIT_HELLO
        self.peer_id: int | None = None

    @property
    def done(self) -> bool:
        return self._state is _State.DONE

    def hello(self) -> bytes:
        """Our opening payload; send it as soon as the connection is up."""
        return encode_hello(self.me, self._nonce)

    def receive(self, payload: bytes) -> list[bytes]:
        """Feed one HANDSHAKE payload from the peer; returns the payloads to send back."""
        if self._state is _State.AWAIT_HELLO:
            return self._on_hello(payload)
        if self._state is _State.AWAIT_PROOF:
            self._on_proof(payload)
            return []
        raise HandshakeError("unexpected", "handshake message after the handshake completed")

    def _on_hello(self, payload: bytes) -> list[bytes]:
        if len(payload) != _HELLO.size or payload[:1] != b"H":
            raise HandshakeError("malformed", f"expected HELLO ({_HELLO.size} bytes), got {len(payload)} bytes")
        _, version, peer, nonce = _HELLO.unpack(payload)
        if version != VERSION:
            raise HandshakeError("version", f"peer speaks handshake v{version}, we speak v{VERSION}")
        if peer == self.me:
            raise HandshakeError("self", f"peer claims our own id {peer}")
        if peer not in self._keys:
            raise HandshakeError("unknown_peer", f"node {peer} is not in the committee")
        if self._expected is not None and peer != self._expected:
            raise HandshakeError("wrong_peer", f"dialled node {self._expected} but node {peer} answered")
        if nonce == self._nonce:
            raise HandshakeError("replay", "peer echoed our own nonce")  # a reflection attempt
        self.peer_id, self._peer_nonce = peer, nonce
        self._state = _State.AWAIT_PROOF
        signature = self._sign(transcript(self._domain, self.me, peer, nonce, self._nonce))
        return [encode_proof(signature)]

    def _on_proof(self, payload: bytes) -> None:
        if len(payload) != _PROOF.size or payload[:1] != b"P":
            raise HandshakeError("malformed", f"expected PROOF ({_PROOF.size} bytes), got {len(payload)} bytes")
        assert self.peer_id is not None
        _, signature = _PROOF.unpack(payload)
        expected = transcript(self._domain, self.peer_id, self.me, self._nonce, self._peer_nonce)
        if not ed25519_verify(self._keys[self.peer_id], expected, signature):
            raise HandshakeError("bad_signature", f"node {self.peer_id} failed to prove its key")
        self._state = _State.DONE
