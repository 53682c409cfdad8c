"""A node's committee and signing key: from a key directory, or derived dev keys (DEV-ONLY).

Key directory layout (what `dwcp consensus keygen` writes):
    <key_dir>/committee.json     the committee file (core/committee.py): ids, addresses, public keys
    <key_dir>/node-<I>.key       node I's 32-byte Ed25519 private key, hex, mode 0600

Without a key directory every node derives every key from `settings.dev_seed` and builds the
committee from the inventory. That needs no setup for `dwcp up` and tests, and is insecure by
construction: the seed sits in the inventory, so anyone can sign as any node.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from dwcp.consensus.core.committee import Committee, Member
from dwcp.consensus.core.crypto import Ed25519Signer, Ed25519Verifier, public_key_of
from dwcp.runtime.inventory import Inventory


class KeyLoadError(Exception):
    """Keys or committee cannot be loaded; the message names the missing or bad file."""


@dataclass(frozen=True)
class NodeKeys:
    committee: Committee
    signer: Ed25519Signer
    verifier: Ed25519Verifier


class SignatureCache:
    """A signer that remembers its last few signatures over small messages.

    Ed25519 is deterministic, and each vote is signed twice over the same bytes: by the core (to
    put in its own certificates) and by the driver (sealing the envelope). Answering the second
    from memory halves a node's signing work; large messages (blocks) are not kept.
    """

    MAX_BYTES = 4096

    def __init__(self, inner: Ed25519Signer, size: int = 256) -> None:
        self.inner, self.size = inner, size
        self.node_id, self.public_key = inner.node_id, inner.public_key
        self._recent: dict[bytes, bytes] = {}  # insertion-ordered: oldest first
        self.hits = 0

    def sign(self, data: bytes) -> bytes:
        sig = self._recent.get(data)
        if sig is not None:
            self.hits += 1
            return sig
        sig = self.inner.sign(data)
        if len(data) <= self.MAX_BYTES:
            self._recent[data] = sig
            if len(self._recent) > self.size:
                del self._recent[next(iter(self._recent))]
        return sig


def dev_private_key(seed: str, service: str, node_id: int) -> bytes:
    """Deterministic 32-byte private key. DEV-ONLY: whoever knows the seed can sign as this node."""
    return hashlib.blake2b(f"dwcp-dev-key:{seed}:{service}:{node_id}".encode(), digest_size=32).digest()


def committee_from_inventory(inventory: Inventory, service: str, public_keys: dict[int, bytes]) -> Committee:
    """One member per inventory instance of `service`: id = instance index, its consensus port."""
    spec = inventory.spec(service)
    members = []
    for i, inst in enumerate(spec.instances):
        if "consensus" not in inst.ports:
            raise KeyLoadError(f"{inventory.source}: services.{service}.instances.{i} has no 'consensus' port")
        members.append(Member(
            node_id=i, public_key=public_keys[i], host=inst.host, port=inst.ports["consensus"], http_port=inst.port,
        ))
    return Committee(tuple(members), name=service)


def dev_keys(inventory: Inventory, service: str, node_id: int, seed: str) -> NodeKeys:
    n = len(inventory.spec(service).instances)
    privs = {i: dev_private_key(seed, service, i) for i in range(n)}
    committee = committee_from_inventory(inventory, service, {i: public_key_of(k) for i, k in privs.items()})
    return NodeKeys(committee, Ed25519Signer(node_id, privs[node_id]), Ed25519Verifier(committee.public_keys()))


def load_keys(key_dir: Path, node_id: int) -> NodeKeys:
    """Committee and node key from `key_dir`; KeyLoadError naming the file when one is missing or wrong."""
    committee_path, key_path = key_dir / "committee.json", key_dir / f"node-{node_id}.key"
    for path in (committee_path, key_path):
        if not path.is_file():
            raise KeyLoadError(f"{path}: not found (create keys with `dwcp consensus keygen`)")
    try:
        committee = Committee.load(committee_path)
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyLoadError(f"{committee_path}: not a committee file: {exc}") from None
    try:
        private = bytes.fromhex(key_path.read_text().strip())
        signer = Ed25519Signer(node_id, private)
    except ValueError as exc:
        raise KeyLoadError(f"{key_path}: not a hex Ed25519 private key: {exc}") from None
    if node_id not in committee:
        raise KeyLoadError(f"{committee_path}: node {node_id} is not a member")
    if committee.member(node_id).public_key != signer.public_key:
        raise KeyLoadError(f"{key_path}: key does not match node {node_id}'s public key in {committee_path}")
    return NodeKeys(committee, signer, Ed25519Verifier(committee.public_keys()))
