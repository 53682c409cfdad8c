"""A node's committee, signing key and transport identity, from a key directory. No key is ever derived.

Key directory layout (`write_key_dir`; what `dwcp consensus keygen` and `dwcp up` write):
    <key_dir>/committee.json     the committee file (core/committee.py): ids, addresses, public keys and
                                 each member's pinned TLS certificate (runtime/peerauth.py); public
    <key_dir>/node-<I>.key       node I's 32-byte Ed25519 private key, hex, mode 0600

`keygen` puts every node's key in one directory, for the operator to hand each host its own.
`dwcp up` makes fresh keys for each deployment, one directory per node, 0700, holding only that
node's key: `<run_dir>/keys/<service>/node-<I>/` (`deployment_keys`). There are no default or seed-
derived keys: anyone who could compute a node's key could sign commit certificates for it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dwcp.consensus.core.committee import Committee, Member
from dwcp.consensus.core.crypto import Ed25519Signer, Ed25519Verifier, generate_private_key, public_key_of
from dwcp.consensus.core.vrf import ecvrf_public_key
from dwcp.runtime.inventory import Inventory
from dwcp.runtime.peerauth import PeerAuth, PeerAuthError, certificate_public_key, self_signed_certificate


class KeyLoadError(Exception):
    """Keys or committee cannot be loaded; the message names the missing or bad file."""


@dataclass(frozen=True)
class NodeKeys:
    committee: Committee
    signer: Ed25519Signer
    verifier: Ed25519Verifier
    private_key: bytes  # the signer's, also this node's TLS key

    @property
    def vrf_secret(self) -> bytes:
        """This node's ECVRF secret key (ProBFT), derived from its signing key (`vrf_secret_of`)."""
        return vrf_secret_of(self.private_key)

    def peer_auth(self, protocol: str) -> PeerAuth:
        """The transport identity: this node's key and certificate, every member's certificate pinned.

        The label binds links to this protocol and committee (ids and keys), so two deployments that
        share a key cannot talk to each other by accident.
        """
        me = self.signer.node_id
        return PeerAuth(
            me=me, private_key=self.private_key, certificate=self.committee.member(me).certificate,
            peers={m.node_id: m.certificate for m in self.committee.members},
            label=f"{protocol}/{self.committee.digest().hex()[:32]}",
        )


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


def vrf_secret_of(private_key: bytes) -> bytes:
    """A node's ECVRF secret, a keyed hash of its Ed25519 signing key: one key to store, yet the VRF
    and the signatures never share a secret (RFC 9381's nonce would otherwise reuse RFC 8032's)."""
    return hashlib.blake2b(private_key, key=b"dwcp-vrf-key/1", digest_size=32).digest()


def committee_from_inventory(
    inventory: Inventory, service: str, public_keys: Mapping[int, bytes], certificates: Mapping[int, bytes],
    vrf_keys: Mapping[int, bytes] | None = None,
) -> Committee:
    """One member per inventory instance of `service`: id = instance index, its consensus port."""
    spec = inventory.spec(service)
    members = []
    for i, inst in enumerate(spec.instances):
        if "consensus" not in inst.ports:
            raise KeyLoadError(f"{inventory.source}: services.{service}.instances.{i} has no 'consensus' port")
        members.append(Member(
            node_id=i, public_key=public_keys[i], host=inst.host, port=inst.ports["consensus"], http_port=inst.port,
            certificate=certificates[i], vrf_key=(vrf_keys or {}).get(i, b""),
        ))
    return Committee(tuple(members), name=service)


def generate_committee(inventory: Inventory, service: str) -> tuple[Committee, dict[int, bytes]]:
    """Fresh random keys for every instance of `service`: the committee and each node's private key."""
    privs = {i: generate_private_key() for i in range(len(inventory.spec(service).instances))}
    certs = {i: self_signed_certificate(k, f"dwcp-{service}-{i}") for i, k in privs.items()}
    vrf_keys = {i: ecvrf_public_key(vrf_secret_of(k)) for i, k in privs.items()}
    public_keys = {i: public_key_of(k) for i, k in privs.items()}
    return committee_from_inventory(inventory, service, public_keys, certs, vrf_keys), privs


def write_key_dir(out: Path, committee: Committee, private_keys: Mapping[int, bytes]) -> None:
    """Write `committee.json` and `node-<I>.key` (0600) for the given nodes into `out` (created 0700)."""
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    out.chmod(0o700)
    for i, key in private_keys.items():
        path = out / f"node-{i}.key"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key.hex() + "\n")
        path.chmod(0o600)  # O_CREAT's mode does not apply to a file that already existed
    committee.save(out / "committee.json")


def deployment_key_dir(run_dir: Path, service: str, node_id: int) -> Path:
    return run_dir / "keys" / service / f"node-{node_id}"


def deployment_keys(inventory: Inventory, service: str, run_dir: Path) -> list[Path]:
    """Per-node key directories for a `dwcp up` run: made fresh the first time, kept on a restart."""
    n = len(inventory.spec(service).instances)
    dirs = [deployment_key_dir(run_dir, service, i) for i in range(n)]
    if all((d / "committee.json").is_file() and (d / f"node-{i}.key").is_file() for i, d in enumerate(dirs)):
        return dirs
    committee, privs = generate_committee(inventory, service)
    (run_dir / "keys").mkdir(mode=0o700, exist_ok=True)
    (run_dir / "keys" / service).mkdir(mode=0o700, exist_ok=True)
    for i, d in enumerate(dirs):
        write_key_dir(d, committee, {i: privs[i]})
    return dirs


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
    for m in committee.members:
        try:
            pinned = certificate_public_key(m.certificate) if m.certificate else None
        except PeerAuthError:
            pinned = None
        if pinned != m.public_key:
            raise KeyLoadError(
                f"{committee_path}: node {m.node_id} has no certificate for its public key "
                "(regenerate keys with `dwcp consensus keygen`)"
            )
    vrf_key = committee.member(node_id).vrf_key
    if vrf_key and vrf_key != ecvrf_public_key(vrf_secret_of(private)):
        raise KeyLoadError(f"{key_path}: key does not match node {node_id}'s VRF public key in {committee_path}")
    return NodeKeys(committee, signer, Ed25519Verifier(committee.public_keys()), private)

