"""Verifiable random functions: ECVRF-EDWARDS25519-SHA512-TAI (RFC 9381) and a simulator stand-in.

A VRF maps (secret key, input `alpha`) to a pseudorandom 64-byte output `beta` and an 80-byte proof
`pi`; anyone with the public key checks `pi` and gets the same `beta`. For one key and input exactly
one `beta` verifies, so the key holder cannot choose its output. ProBFT uses it to draw, per sender,
view and phase, the sample of replicas a message goes to, and receivers verify the draw.

`EcVrf` is RFC 9381 section 5 with the section 5.5 suite 0x03, on libsodium's Ed25519 point and
scalar functions (PyNaCl's low-level bindings), reproducing Appendix B.3's vectors byte for byte
(tests/consensus/core/test_vrf.py). Keys are Ed25519 keys: the secret is the RFC 8032 32-byte seed,
the public key its usual 32-byte encoding, so `core.crypto.generate_private_key` makes VRF keys too.
One deliberate strictness beyond the RFC: `verify` also rejects a proof whose Gamma is not in the
prime-order subgroup (libsodium's scalar multiplication refuses such points). An honest Gamma = x*H is
always in it (H is cofactor-cleared), so no honest proof is rejected, and beta, computed from
8*Gamma, could not differ anyway.

Cost (shared 2-core dev VM, CPU per call, `benchmarks/probft.py --vrf`): prove 0.27 ms, verify 0.49 ms,
against 0.047 ms for an Ed25519 verify (10.5x); docs/probft.md says why a node verifies at most one
proof per sender, view and phase.

`MacVrf` is the simulator's stand-in behind the same `VrfProver`/`VrfVerifier` interface, like
`crypto.MacSigner`: beta = BLAKE2b keyed by the node's secret, the proof is beta itself, and only
the runner's verifier holds the secrets, so within a simulation a node cannot forge another's draw.
It is never used on the network (whoever can verify it can forge it).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Protocol

from nacl import bindings as sodium
from nacl.exceptions import RuntimeError as SodiumError

SUITE = b"\x03"  # ECVRF-EDWARDS25519-SHA512-TAI
PROOF_SIZE = 80  # ptLen 32 + cLen 16 + qLen 32
OUTPUT_SIZE = 64
KEY_SIZE = 32
L = 2**252 + 27742317777372353535851937790883648493  # prime order of the base point (q in the RFC)
P = 2**255 - 19  # field prime
IDENTITY = (1).to_bytes(32, "little")  # the neutral element, encoded (y = 1, x = 0)


class VrfError(ValueError):
    """A malformed secret key handed to a prover (our own misuse; peers' bad proofs just fail to verify)."""


class VrfProver(Protocol):
    node_id: int

    def prove(self, alpha: bytes) -> tuple[bytes, bytes]:
        """(proof pi, output beta) for input `alpha`."""
        ...


class VrfVerifier(Protocol):
    def verify(self, node_id: int, alpha: bytes, proof: bytes) -> bytes | None:
        """`node_id`'s output beta for `alpha` if `proof` is valid, else None."""
        ...


# ---- RFC 9381 section 5, suite 0x03 ----
def _scalar(data: bytes) -> int:
    return int.from_bytes(data, "little")


def _scalar_bytes(x: int, size: int = 32) -> bytes:
    return x.to_bytes(size, "little")


def _expand_secret(secret_key: bytes) -> tuple[int, bytes]:
    """RFC 8032 5.1.5: the clamped secret scalar x and the nonce prefix (second half of SHA-512(SK))."""
    if len(secret_key) != KEY_SIZE:
        raise VrfError(f"a VRF secret key is {KEY_SIZE} bytes, not {len(secret_key)}")
    h = hashlib.sha512(secret_key).digest()
    a = bytearray(h[:32])
    a[0] &= 248
    a[31] &= 127
    a[31] |= 64
    return _scalar(bytes(a)) % L, h[32:]


def _decodes(point: bytes) -> bool:
    """RFC 8032 5.1.3 decoding succeeds: canonical y, and on the curve (any subgroup)."""
    if len(point) != 32:
        return False
    y = _scalar(point) & ((1 << 255) - 1)
    if y >= P or (y in (1, P - 1) and point[31] >> 7):  # x = 0 with the sign bit set is invalid
        return False
    try:
        sodium.crypto_core_ed25519_add(point, point)  # libsodium checks the point is on the curve
    except SodiumError:
        return False
    return True


def _times_cofactor(point: bytes) -> bytes:
    """8 * point, by three doublings (libsodium's scalar multiplication refuses points outside the
    prime-order subgroup, which a hash-derived point usually is)."""
    for _ in range(3):
        point = sodium.crypto_core_ed25519_add(point, point)
    return point


def encode_to_curve(public_key: bytes, alpha: bytes) -> bytes:
    """ECVRF_encode_to_curve_try_and_increment (RFC 9381 5.4.1.1), salt = the public key."""
    for ctr in range(256):
        h = hashlib.sha512(SUITE + b"\x01" + public_key + alpha + bytes((ctr,)) + b"\x00").digest()[:32]
        if _decodes(h):
            point = _times_cofactor(h)
            if point != IDENTITY:
                return point
    raise VrfError("try-and-increment found no point (probability 2^-256)")  # pragma: no cover


def _challenge(*points: bytes) -> int:
    """ECVRF_challenge_generation (RFC 9381 5.4.3): the first cLen = 16 bytes of the hash, as an integer."""
    return _scalar(hashlib.sha512(SUITE + b"\x02" + b"".join(points) + b"\x00").digest()[:16])


def _mul(k: int, point: bytes) -> bytes:
    return sodium.crypto_scalarmult_ed25519_noclamp(_scalar_bytes(k), point)


def _mul_base(k: int) -> bytes:
    return sodium.crypto_scalarmult_ed25519_base_noclamp(_scalar_bytes(k))


def proof_to_hash(proof: bytes) -> bytes:
    """ECVRF_proof_to_hash (RFC 9381 5.2), for a proof already verified."""
    gamma = proof[:32]
    return hashlib.sha512(SUITE + b"\x03" + _times_cofactor(gamma) + b"\x00").digest()


def ecvrf_public_key(secret_key: bytes) -> bytes:
    x, _ = _expand_secret(secret_key)
    return _mul_base(x)


def ecvrf_prove(secret_key: bytes, alpha: bytes) -> bytes:
    """ECVRF_prove (RFC 9381 5.1): pi = Gamma || c (16 bytes) || s (32 bytes)."""
    x, prefix = _expand_secret(secret_key)
    y = _mul_base(x)
    h = encode_to_curve(y, alpha)
    gamma = _mul(x, h)
    k = _scalar(hashlib.sha512(prefix + h).digest()) % L  # ECVRF_nonce_generation_RFC8032 (5.4.2.2)
    c = _challenge(y, h, gamma, _mul_base(k), _mul(k, h))
    s = (k + c * x) % L
    return gamma + _scalar_bytes(c, 16) + _scalar_bytes(s)


def ecvrf_verify(public_key: bytes, alpha: bytes, proof: bytes) -> bytes | None:
    """ECVRF_verify (RFC 9381 5.3) with validate_key: beta, or None for an invalid proof or key."""
    if len(proof) != PROOF_SIZE or len(public_key) != KEY_SIZE:
        return None
    gamma, c, s = proof[:32], _scalar(proof[32:48]), _scalar(proof[48:])
    if s >= L or not _decodes(gamma) or not _decodes(public_key):
        return None
    try:
        if _times_cofactor(public_key) == IDENTITY:  # 5.4.5: a small-order key proves nothing
            return None
        h = encode_to_curve(public_key, alpha)
        # U = s*B - c*Y, V = s*H - c*Gamma. A zero product (s = 0, or c*Y the identity) makes libsodium
        # refuse; no valid proof has s = 0 except with probability 2^-252, so treat it as invalid.
        u = sodium.crypto_core_ed25519_sub(_mul_base(s), _mul(c, public_key))
        v = sodium.crypto_core_ed25519_sub(_mul(s, h), _mul(c, gamma))
    except SodiumError:
        return None
    if _challenge(public_key, h, gamma, u, v) != c:
        return None
    return proof_to_hash(proof)


class EcVrf:
    """RFC 9381 prover for one node (see module docstring)."""

    def __init__(self, node_id: int, secret_key: bytes) -> None:
        self.node_id = node_id
        self._secret = secret_key
        self.public_key = ecvrf_public_key(secret_key)

    def prove(self, alpha: bytes) -> tuple[bytes, bytes]:
        proof = ecvrf_prove(self._secret, alpha)
        return proof, proof_to_hash(proof)


class EcVrfVerifier:
    """Checks any committee member's RFC 9381 proofs against its public VRF key."""

    def __init__(self, public_keys: Mapping[int, bytes]) -> None:
        for node, key in public_keys.items():
            if len(key) != KEY_SIZE:
                raise VrfError(f"node {node}: a VRF public key is {KEY_SIZE} bytes, not {len(key)}")
        self._keys = dict(public_keys)

    def verify(self, node_id: int, alpha: bytes, proof: bytes) -> bytes | None:
        key = self._keys.get(node_id)
        return None if key is None else ecvrf_verify(key, alpha, proof)


# ---- simulator stand-in ----
def mac_vrf_secret(seed: int, node_id: int) -> bytes:
    return hashlib.blake2b(f"dwcp-sim-vrf:{seed}:{node_id}".encode(), digest_size=KEY_SIZE).digest()


class MacVrf:
    """Simulation only (see module docstring): the proof is the output, a keyed BLAKE2b of alpha."""

    def __init__(self, node_id: int, secret: bytes) -> None:
        self.node_id = node_id
        self._secret = secret

    def prove(self, alpha: bytes) -> tuple[bytes, bytes]:
        beta = hashlib.blake2b(alpha, key=self._secret, digest_size=OUTPUT_SIZE).digest()
        return beta, beta


class MacVrfVerifier:
    """Simulation only: holds every node's secret."""

    def __init__(self, secrets: Mapping[int, bytes]) -> None:
        self._secrets = dict(secrets)

    def verify(self, node_id: int, alpha: bytes, proof: bytes) -> bytes | None:
        secret = self._secrets.get(node_id)
        if secret is None:
            return None
        beta = hashlib.blake2b(alpha, key=secret, digest_size=OUTPUT_SIZE).digest()
        return beta if hmac.compare_digest(beta, proof) else None
