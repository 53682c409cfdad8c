"""The committee: who the nodes are, where they listen, their public keys, and quorum arithmetic.

Quorum sizes live here and nowhere else. With n nodes of which at most f are Byzantine:
- f = floor((n - 1) / 3), the largest f with n >= 3f + 1.
- quorum q = ceil((n + f + 1) / 2). Two quorums overlap in at least 2q - n >= f + 1 nodes, so in
  at least one correct node, which never votes for two different blocks at one (view, height):
  that is agreement. And q <= n - f, so the n - f correct nodes can always form one alone: that is
  liveness. For n = 3f + 1 this is the familiar 2f + 1.
- validity v = f + 1: any f + 1 nodes include a correct one, so f + 1 matching claims are true
  (used to join a higher view, and to trust a checkpoint height enough to catch up to it).

Committee file (JSON), written by `dwcp consensus keygen`:
    {"name": "tpbft", "members": [{"id": 0, "host": "127.0.0.1", "port": 9300,
      "http_port": 8300, "public_key": "<hex>", "region": "", "certificate": "<PEM>"}, ...]}
`certificate` is the member's self-signed TLS certificate for its key (runtime/peerauth.py), pinned
by every peer for the consensus transport; the core itself uses only `public_key`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from dwcp.consensus.core.crypto import KEY_SIZE
from dwcp.consensus.core.messages import digest


@dataclass(frozen=True, slots=True, kw_only=True)
class Member:
    node_id: int
    public_key: bytes
    host: str = "127.0.0.1"
    port: int = 0  # consensus (TCP transport) port
    http_port: int = 0
    region: str = ""
    certificate: bytes = b""  # PEM, pinned by the transport (see module docstring)
    vrf_key: bytes = b""  # RFC 9381 ECVRF public key (ProBFT's samples); empty in older committee files


@dataclass(frozen=True, slots=True)
class Committee:
    """Members in a fixed order. The derived numbers (ids, n, f, quorum, validity) are computed once
    here: cores read them on every message, and recomputing them was ~20% of a replica's `handle`."""

    members: tuple[Member, ...]
    name: str = "committee"
    _by_id: dict[int, Member] = field(init=False, repr=False, compare=False)
    ids: tuple[int, ...] = field(init=False, repr=False, compare=False)
    n: int = field(init=False, repr=False, compare=False)
    f: int = field(init=False, repr=False, compare=False)  # floor((n - 1) / 3)
    quorum: int = field(init=False, repr=False, compare=False)  # ceil((n + f + 1) / 2)
    validity: int = field(init=False, repr=False, compare=False)  # f + 1
    _digest: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ids = tuple(m.node_id for m in self.members)
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate node ids in committee {self.name}: {list(ids)}")
        if not ids:
            raise ValueError("a committee needs at least one member")
        for m in self.members:
            if len(m.public_key) != KEY_SIZE:
                raise ValueError(f"node {m.node_id}: public key must be {KEY_SIZE} bytes")
        n = len(ids)
        f = (n - 1) // 3
        derived = {"_by_id": {m.node_id: m for m in self.members}, "ids": ids, "n": n, "f": f,
                   "quorum": (n + f + 2) // 2, "validity": f + 1,
                   "_digest": digest(self.name.encode() + b"".join(
                       m.node_id.to_bytes(4, "big") + m.public_key for m in self.members))}
        for attr, value in derived.items():
            object.__setattr__(self, attr, value)

    def member(self, node_id: int) -> Member:
        return self._by_id[node_id]

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._by_id

    def public_keys(self) -> dict[int, bytes]:
        return {m.node_id: m.public_key for m in self.members}

    def digest(self) -> bytes:
        """Identifies this committee (ids and keys), e.g. in the transport's TLS deployment label (ALPN)."""
        return self._digest

    def to_json(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "members": [
                    {"id": m.node_id, "host": m.host, "port": m.port, "http_port": m.http_port,
                     "public_key": m.public_key.hex(), "region": m.region,
                     **({"certificate": m.certificate.decode()} if m.certificate else {}),
                     **({"vrf_public_key": m.vrf_key.hex()} if m.vrf_key else {})}
                    for m in self.members
                ],
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> Committee:
        raw = json.loads(text)
        members = tuple(
            Member(node_id=int(m["id"]), public_key=bytes.fromhex(m["public_key"]), host=m.get("host", "127.0.0.1"),
                   port=int(m.get("port", 0)), http_port=int(m.get("http_port", 0)), region=m.get("region", ""),
                   certificate=m.get("certificate", "").encode(), vrf_key=bytes.fromhex(m.get("vrf_public_key", "")))
            for m in raw["members"]
        )
        return cls(members, name=raw.get("name", "committee"))

    def save(self, path: Path) -> None:
        path.write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: Path) -> Committee:
        return cls.from_json(path.read_text())
