"""Codec and envelopes: one table of messages run both ways, then every corruption a peer can send."""

from __future__ import annotations

import msgspec
import pytest

from dwcp.consensus.core import (
    Block,
    BlockRequest,
    Certificate,
    Codec,
    Decided,
    DecodeError,
    MacSigner,
    MacVerifier,
    Transaction,
    TxBatch,
    Vote,
    block_digest,
    verify_certificate,
)
from dwcp.consensus.core.codec import HEADER_SIZE, encode, signing_bytes
from dwcp.consensus.core.crypto import mac_secret

BLOCK = Block(height=3, epoch=1, view=2, proposer=0, txs=(Transaction(payload=b"a"), Transaction(payload=b"b")))
CASES = [
    Vote(kind="prepare", epoch=0, view=1, height=5, digest=b"d" * 32),
    TxBatch(txs=(Transaction(payload=b"x" * 100),)),
    BlockRequest(from_height=1, to_height=9),
    Decided(block=BLOCK, certificate=Certificate(kind="commit", epoch=1, view=2, height=3, digest=block_digest(BLOCK),
                                                 signers=(0, 1), signatures=(b"s" * 64, b"t" * 64))),
]


@pytest.mark.parametrize("message", CASES, ids=lambda m: type(m).__name__)
def test_round_trip(committee, message):
    keys = committee(4)
    codec = Codec(())
    frame = codec.seal(keys.signers[2], message)
    opened = codec.open(keys.verifier, frame)
    assert opened.sender == 2 and opened.message == message
    assert keys.verifier.verify(2, signing_bytes(2, opened.payload), opened.signature)


def test_encoding_is_deterministic_so_certificates_can_store_only_signatures():
    vote = CASES[0]
    assert encode(vote) == encode(msgspec.msgpack.decode(encode(vote), type=Vote))


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda f: f[:10], "truncated"),
        (lambda f: b"\x09" + f[1:], "bad_version"),
        (lambda f: f[:1] + (99).to_bytes(4, "big") + f[5:], "unknown_sender"),
        (lambda f: f[:HEADER_SIZE - 1] + bytes([f[HEADER_SIZE - 1] ^ 1]) + f[HEADER_SIZE:], "bad_signature"),
        (lambda f: f[:-1] + bytes([f[-1] ^ 1]), "bad_signature"),
    ],
)
def test_corrupt_frames_are_values_not_exceptions(committee, mutate, reason):
    keys = committee(4)
    codec = Codec(())
    frame = codec.seal(keys.signers[1], CASES[0])
    result = codec.open(keys.verifier, mutate(frame))
    assert isinstance(result, DecodeError) and result.reason == reason


def test_validly_signed_garbage_is_malformed_and_oversize_is_refused():
    signer, verifier = MacSigner(0, mac_secret(1, 0)), MacVerifier({0: mac_secret(1, 0)})
    codec = Codec((), max_size=64)
    payload = b"\xc1garbage"
    frame = (1).to_bytes(1, "big") + (0).to_bytes(4, "big") + signer.sign(signing_bytes(0, payload)) + payload
    assert codec.open(verifier, frame).reason == "malformed"
    assert codec.open(verifier, frame + b"x" * 100).reason == "too_large"
    with pytest.raises(ValueError):
        codec.seal(signer, TxBatch(txs=(Transaction(payload=b"x" * 100),)))


@pytest.mark.parametrize("payload", [b"\x92\xa1\xff\x00", b"\x91\xa2\xc3\x28", b"\x92\xd9\x01\x80\x00"],
                         ids=["tag-not-utf8", "bad-continuation", "str8-not-utf8"])
def test_validly_signed_non_utf8_tag_is_malformed_not_an_exception(payload):
    signer, verifier = MacSigner(0, mac_secret(1, 0)), MacVerifier({0: mac_secret(1, 0)})
    frame = (1).to_bytes(1, "big") + (0).to_bytes(4, "big") + signer.sign(signing_bytes(0, payload)) + payload
    result = Codec(()).open(verifier, frame)
    assert isinstance(result, DecodeError) and result.reason == "malformed"


def test_commit_certificate_verifies_only_with_a_quorum_of_valid_signatures(committee):
    keys = committee(4)
    d = block_digest(BLOCK)
    vote = Vote(kind="commit", epoch=1, view=2, height=3, digest=d)
    sigs = {i: keys.signers[i].sign(signing_bytes(i, encode(vote))) for i in range(4)}

    def cert(ids, **over):
        fields = dict(kind="commit", epoch=1, view=2, height=3, digest=d, signers=tuple(ids),
                      signatures=tuple(sigs[i] for i in ids))
        return Certificate(**{**fields, **over})

    c, v = keys.committee, keys.verifier
    assert verify_certificate(c, v, 3, BLOCK, cert([0, 1, 2]))
    assert not verify_certificate(c, v, 3, BLOCK, cert([0, 1]))  # below 2f+1 = 3
    assert not verify_certificate(c, v, 3, BLOCK, cert([0, 0, 1]))  # duplicate signer
    assert not verify_certificate(c, v, 3, BLOCK, cert([0, 1, 2], view=3))  # signatures were for view 2
    other = Block(height=3, epoch=1, view=2, proposer=0)
    assert not verify_certificate(c, v, 3, other, cert([0, 1, 2]))
    assert not verify_certificate(c, v, 4, BLOCK, cert([0, 1, 2]))


def test_a_transaction_id_is_hashed_once_when_the_transaction_is_made_or_decoded():
    # issue 12: every node asks each decoded tx for its id (a pre-prepare's batch check, the mempool,
    # execution); computing it on decode costs 0.6 us per tx against 1.5 us for a cached_property's
    # locked first access. The id is in the instance dict from the start, never encoded, and right
    # however the object was made.
    import copy
    import pickle

    from dwcp.consensus.core.messages import tx_id

    made = Transaction(payload=b"abc")
    decoded = msgspec.msgpack.decode(encode(BLOCK), type=Block).txs[0]
    for tx in (made, decoded):
        assert "id" in tx.__dict__
    assert made.id == tx_id(b"abc") and decoded.id == tx_id(b"a")
    assert encode(made) == b"\x91\xc4\x03abc"  # the id is not on the wire
    for clone in (copy.copy(made), copy.deepcopy(made), pickle.loads(pickle.dumps(made))):  # noqa: S301
        assert clone.id == made.id and clone == made
    assert msgspec.structs.replace(made, payload=b"x").id == tx_id(b"x")
    with pytest.raises(AttributeError):
        made.other  # noqa: B018
