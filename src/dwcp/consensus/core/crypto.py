"""Signatures: Ed25519 for real nodes, and a keyed-hash stand-in the simulator may use for speed.

`Signer` signs for one node; `Verifier` checks any committee member's signature. Ed25519 runs on
libsodium (PyNaCl's bindings, called directly: no key objects per call). On the 2-core dev VM it
verifies in ~83 µs against ~127 µs for `cryptography`'s OpenSSL, and signature checks are the largest
CPU cost of a loaded cluster (each block is ~15 checks per voting node). Keys are the standard raw
32-byte seed and public key, so keys made by either library work with the other. `Ed25519Verifier`
also caches results keyed by (node, signature, hash of data): a broadcast is verified once per
process, not once per receiver, and re-checking certificates is nearly free.

`MacSigner`/`MacVerifier` (BLAKE2b keyed with a per-node secret, 64-byte tags) exist because a
10^4-run simulator campaign makes ~10^8 signature checks; at 60 µs each that is days of CPU. In
the simulator every node's secret is known only to that node's signer and to the runner's
verifier, and Byzantine behaviours get only their own signer, so a forged tag is as impossible as
a forged Ed25519 signature *within the simulation*. It is never used on the network (anyone who
can verify a MAC can forge it); `dwcp simulate --crypto ed25519` runs the real thing.

Both verifiers carry `verdicts`, a bounded memo of certificate checks made with their keys (see
`Verdicts`): a certificate that arrives again (in every view change that carries it, in a NEW-VIEW's
relays) is checked once per process, and in the simulator, where one verifier serves every node of
a run, once per run instead of once per receiver (at n = 100 that was half of a run's CPU).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Protocol, TypeVar

from nacl import bindings as sodium
from nacl.exceptions import BadSignatureError

SIGNATURE_SIZE = 64
T = TypeVar("T")
KEY_SIZE = 32


class Verdicts:
    """A bounded LRU of verdicts of pure checks built on one verifier's keys (certificate checks).

    A key must hold everything the verdict depends on besides those keys: the check's name, its
    parameters (committee digest, quorum) and the checked object itself (frozen, hashable messages).
    A verdict is any value but None (a bool, or what a check needs to finish per caller).
    """

    __slots__ = ("_memo", "_size", "hits")

    def __init__(self, size: int = 1 << 14) -> None:
        self._memo: OrderedDict[object, Any] = OrderedDict()
        self._size = size
        self.hits = 0

    def get(self, key: object) -> Any:
        hit = self._memo.get(key)
        if hit is not None:
            self.hits += 1
        return hit

    def put(self, key: object, verdict: T) -> T:
        self._memo[key] = verdict
        if len(self._memo) > self._size:
            self._memo.popitem(last=False)
        return verdict


class Signer(Protocol):
    node_id: int

    def sign(self, data: bytes) -> bytes: ...


class Verifier(Protocol):
    verdicts: Verdicts

    def knows(self, node_id: int) -> bool: ...

    def verify(self, node_id: int, data: bytes, signature: bytes) -> bool: ...


def generate_private_key() -> bytes:
    """32 raw bytes of a fresh Ed25519 private key (the RFC 8032 seed)."""
    return os.urandom(KEY_SIZE)


def public_key_of(private_key: bytes) -> bytes:
    if len(private_key) != KEY_SIZE:
        raise ValueError(f"an Ed25519 private key is {KEY_SIZE} bytes, not {len(private_key)}")
    return sodium.crypto_sign_seed_keypair(private_key)[0]


def ed25519_verify(public_key: bytes, data: bytes, signature: bytes) -> bool:
    """One uncached Ed25519 check; False for a bad signature or a malformed key or signature."""
    if len(signature) != SIGNATURE_SIZE or len(public_key) != KEY_SIZE:
        return False
    try:
        sodium.crypto_sign_open(signature + data, public_key)
    except (BadSignatureError, ValueError):
        return False
    return True


class Ed25519Signer:
    def __init__(self, node_id: int, private_key: bytes) -> None:
        self.node_id = node_id
        self.public_key = public_key_of(private_key)
        self._secret = private_key + self.public_key  # libsodium's 64-byte secret key: seed || public key

    @property
    def private_key(self) -> bytes:
        """The raw 32-byte key (for a process of this node that signs as it, e.g. its worker)."""
        return self._secret[:KEY_SIZE]

    def sign(self, data: bytes) -> bytes:
        # crypto_sign returns signature || message; Ed25519 is deterministic, as with any RFC 8032 signer.
        return sodium.crypto_sign(data, self._secret)[:SIGNATURE_SIZE]


class Ed25519Verifier:
    def __init__(self, public_keys: Mapping[int, bytes], cache_size: int = 1 << 16) -> None:
        for n, k in public_keys.items():
            if len(k) != KEY_SIZE:
                raise ValueError(f"node {n}: an Ed25519 public key is {KEY_SIZE} bytes, not {len(k)}")
        self._keys = dict(public_keys)
        self.verdicts = Verdicts()
        self._cache: OrderedDict[tuple[int, bytes, bytes], bool] = OrderedDict()
        self._cache_size = cache_size

    def knows(self, node_id: int) -> bool:
        return node_id in self._keys

    def verify(self, node_id: int, data: bytes, signature: bytes) -> bool:
        key = self._keys.get(node_id)
        if key is None or len(signature) != SIGNATURE_SIZE:
            return False
        ck = (node_id, signature, hashlib.blake2b(data, digest_size=16).digest())
        hit = self._cache.get(ck)
        if hit is not None:
            return hit
        ok = ed25519_verify(key, data, signature)
        self._cache[ck] = ok
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return ok


def mac_secret(seed: int, node_id: int) -> bytes:
    return hashlib.blake2b(f"dwcp-sim-key:{seed}:{node_id}".encode(), digest_size=KEY_SIZE).digest()


class MacSigner:
    """Simulation only (see module docstring)."""

    def __init__(self, node_id: int, secret: bytes) -> None:
        self.node_id = node_id
        self._secret = secret

    def sign(self, data: bytes) -> bytes:
        return hashlib.blake2b(data, key=self._secret, digest_size=SIGNATURE_SIZE).digest()


class MacVerifier:
    """Simulation only: holds every node's secret (see module docstring)."""

    def __init__(self, secrets: Mapping[int, bytes]) -> None:
        self._secrets = dict(secrets)
        self.verdicts = Verdicts()

    def knows(self, node_id: int) -> bool:
        return node_id in self._secrets

    def verify(self, node_id: int, data: bytes, signature: bytes) -> bool:
        secret = self._secrets.get(node_id)
        if secret is None:
            return False
        expected = hashlib.blake2b(data, key=secret, digest_size=SIGNATURE_SIZE).digest()
        return hmac.compare_digest(expected, signature)
