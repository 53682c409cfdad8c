"""Ed25519 on libsodium agrees with an independent implementation (OpenSSL via `cryptography`)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from dwcp.consensus.core.crypto import (
    Ed25519Signer,
    Ed25519Verifier,
    ed25519_verify,
    generate_private_key,
    public_key_of,
)

# RFC 8032 section 7.1, TEST 2: a one-byte message.
RFC_SECRET = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
RFC_PUBLIC = bytes.fromhex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c")
RFC_SIGNATURE = bytes.fromhex(
    "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
    "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
)


def test_rfc8032_vector() -> None:
    assert public_key_of(RFC_SECRET) == RFC_PUBLIC
    assert Ed25519Signer(0, RFC_SECRET).sign(b"\x72") == RFC_SIGNATURE
    assert ed25519_verify(RFC_PUBLIC, b"\x72", RFC_SIGNATURE)
    assert not ed25519_verify(RFC_PUBLIC, b"\x73", RFC_SIGNATURE)


def test_same_keys_and_signatures_as_openssl() -> None:
    for _ in range(5):
        secret = generate_private_key()
        ossl = Ed25519PrivateKey.from_private_bytes(secret)
        public = ossl.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        assert public_key_of(secret) == public
        data = b"block digest" + secret[:4]
        assert Ed25519Signer(3, secret).sign(data) == ossl.sign(data)  # both deterministic (RFC 8032)
    other = Ed25519PrivateKey.generate()
    secret = other.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    verifier = Ed25519Verifier({7: public_key_of(secret)})
    assert verifier.verify(7, b"vote", other.sign(b"vote"))


def test_verifier_rejects_without_raising() -> None:
    secret = generate_private_key()
    signer = Ed25519Signer(1, secret)
    verifier = Ed25519Verifier({1: signer.public_key})
    sig = signer.sign(b"payload")
    assert verifier.verify(1, b"payload", sig)
    assert verifier.verify(1, b"payload", sig)  # cached
    assert not verifier.verify(1, b"payload!", sig)
    assert not verifier.verify(1, b"payload", sig[:-1] + bytes([sig[-1] ^ 1]))
    assert not verifier.verify(1, b"payload", sig[:10])
    assert not verifier.verify(2, b"payload", sig)  # unknown node
    assert not ed25519_verify(b"short", b"payload", sig)


def test_bad_key_lengths_are_refused() -> None:
    with pytest.raises(ValueError):
        public_key_of(b"\x00" * 31)
    with pytest.raises(ValueError):
        Ed25519Verifier({0: b"\x01" * 33})
