"""The handshake, sans-IO: two `Handshake`s joined back to back (h11's ConnectionPair idea)."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from dwcp.consensus.transport.handshake import (
    Handshake,
    HandshakeError,
    encode_hello,
    encode_proof,
    transcript,
)

DOMAIN = b"tpbft/test-committee"


def _keys(n: int) -> tuple[dict[int, Ed25519PrivateKey], dict[int, bytes]]:
    private = {i: Ed25519PrivateKey.generate() for i in range(n)}
    public = {i: k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw) for i, k in private.items()}
    return private, public


PRIVATE, PUBLIC = _keys(4)


def _hs(me: int, expected: int | None = None, keys=None, public=None, domain=DOMAIN) -> Handshake:
    key = (keys or PRIVATE)[me]
    return Handshake(me=me, sign=key.sign, public_keys=public or PUBLIC, domain=domain, expected_peer=expected)


def _run(dialer: Handshake, acceptor: Handshake) -> None:
    """Exchange payloads until both sides are done (or one raises)."""
    to_acc, to_dial = [dialer.hello()], [acceptor.hello()]
    while to_acc or to_dial:
        if to_acc:
            to_dial += acceptor.receive(to_acc.pop(0))
        if to_dial:
            to_acc += dialer.receive(to_dial.pop(0))


def test_known_peers_authenticate_each_other() -> None:
    dialer, acceptor = _hs(0, expected=2), _hs(2)
    _run(dialer, acceptor)
    assert dialer.done and acceptor.done
    assert dialer.peer_id == 2 and acceptor.peer_id == 0


def test_unknown_node_id_is_rejected() -> None:
    acceptor = _hs(1)
    with pytest.raises(HandshakeError) as err:
        acceptor.receive(encode_hello(77, os.urandom(32)))
    assert err.value.reason == "unknown_peer"


def test_key_not_in_committee_cannot_prove_a_member_id() -> None:
    # An outsider claims to be node 3 but holds a different key.
    outsider = {3: Ed25519PrivateKey.generate()}
    impostor = Handshake(me=3, sign=outsider[3].sign, public_keys=PUBLIC, domain=DOMAIN)
    acceptor = _hs(1)
    with pytest.raises(HandshakeError) as err:
        _run(impostor, acceptor)
    assert err.value.reason == "bad_signature"
    assert not acceptor.done


def test_recorded_proof_replayed_on_a_new_connection_is_rejected() -> None:
    # Record node 0's HELLO and PROOF from a real session with node 1...
    dialer, acceptor = _hs(0, expected=1), _hs(1)
    hello = dialer.hello()
    proof = dialer.receive(acceptor.hello())[0]
    acceptor.receive(hello)
    acceptor.receive(proof)
    assert acceptor.done
    # ...and replay them to node 1 on a fresh connection: node 1's new nonce makes the proof stale.
    fresh = _hs(1)
    fresh.receive(hello)
    with pytest.raises(HandshakeError) as err:
        fresh.receive(proof)
    assert err.value.reason == "bad_signature"


def test_proof_for_another_verifier_is_rejected() -> None:
    # Node 0 proves itself to node 2; the proof is relayed to node 1 with the same nonces.
    nonce0, nonce_v = os.urandom(32), os.urandom(32)
    signature = PRIVATE[0].sign(transcript(DOMAIN, 0, 2, nonce_v, nonce0))
    verifier = Handshake(me=1, sign=PRIVATE[1].sign, public_keys=PUBLIC, domain=DOMAIN, nonce=nonce_v)
    verifier.receive(encode_hello(0, nonce0))
    with pytest.raises(HandshakeError) as err:
        verifier.receive(encode_proof(signature))
    assert err.value.reason == "bad_signature"


def test_other_domain_is_rejected() -> None:
    with pytest.raises(HandshakeError) as err:
        _run(_hs(0, expected=1, domain=b"probft/other"), _hs(1))
    assert err.value.reason == "bad_signature"


def test_dialler_refuses_a_different_node_answering() -> None:
    with pytest.raises(HandshakeError) as err:
        _run(_hs(0, expected=1), _hs(2))
    assert err.value.reason == "wrong_peer"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "malformed"),
        (b"H" + b"\x00" * 10, "malformed"),
        (encode_hello(1, os.urandom(32), version=9), "version"),
        (encode_hello(1, os.urandom(32)), "self"),
    ],
)
def test_bad_hello_rejected(payload: bytes, reason: str) -> None:
    with pytest.raises(HandshakeError) as err:
        _hs(1).receive(payload)
    assert err.value.reason == reason


def test_reflected_nonce_rejected() -> None:
    acceptor = _hs(1)
    own_nonce = acceptor.hello()[-32:]
    with pytest.raises(HandshakeError) as err:
        acceptor.receive(encode_hello(0, own_nonce))
    assert err.value.reason == "replay"


def test_message_after_completion_is_an_error() -> None:
    dialer, acceptor = _hs(0, expected=1), _hs(1)
    _run(dialer, acceptor)
    with pytest.raises(HandshakeError) as err:
        acceptor.receive(dialer.hello())
    assert err.value.reason == "unexpected"
