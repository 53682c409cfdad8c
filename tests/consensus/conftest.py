"""Shared consensus fixtures: committees with keys, and `LocalNet` (h11's ConnectionPair for n nodes).

`LocalNet` routes every Send/Multicast/Broadcast through the real codec (seal, then open with
signature checks, votes left to the core as the driver does) straight into the receivers' `handle`,
in FIFO order with no clock: a zero-latency, lossless network for unit tests. Timers are recorded,
not run; fire them with `net.fire(node, timer)`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dwcp.consensus.core import (
    Broadcast,
    CancelTimer,
    Codec,
    Commit,
    Committee,
    DecodeError,
    Ed25519Signer,
    Ed25519Verifier,
    Member,
    Multicast,
    Received,
    Send,
    SetTimer,
    public_key_of,
)
from dwcp.consensus.core.crypto import mac_secret
from dwcp.consensus.node.keys import generate_committee, write_key_dir
from dwcp.runtime.inventory import Inventory, parse_inventory


@dataclass
class Keys:
    committee: Committee
    signers: dict[int, Ed25519Signer]
    verifier: Ed25519Verifier


def make_committee(n: int = 4, name: str = "test") -> Keys:
    """Deterministic keys (private key = blake2b of the node id) so failures reproduce."""
    privs = {i: mac_secret(0, i) for i in range(n)}
    committee = Committee(tuple(Member(node_id=i, public_key=public_key_of(k)) for i, k in privs.items()), name=name)
    return Keys(committee, {i: Ed25519Signer(i, k) for i, k in privs.items()}, Ed25519Verifier(committee.public_keys()))


@pytest.fixture
def committee() -> Callable[..., Keys]:
    """Factory: `committee(n=4)` -> Keys(committee, signers, verifier)."""
    return make_committee


@dataclass
class LocalNet:
    cores: dict[int, Any]
    keys: Keys
    codec: Codec
    now: float = 0.0
    down: set[int] = field(default_factory=set)  # nodes whose traffic is dropped both ways
    queue: deque[tuple[int, int, bytes]] = field(default_factory=deque)
    timers: dict[int, dict[Any, float]] = field(default_factory=dict)
    commits: dict[int, list[Commit]] = field(default_factory=dict)
    outputs: dict[int, list[Any]] = field(default_factory=dict)

    def _post(self, sender: int, to: int, message: Any) -> None:
        if sender in self.down or to in self.down or to not in self.cores:
            return
        self.queue.append((sender, to, self.codec.seal(self.keys.signers[sender], message)))

    def execute(self, node: int, outs: list[Any]) -> None:
        self.outputs.setdefault(node, []).extend(outs)
        for out in outs:
            if isinstance(out, Send):
                self._post(node, out.to, out.message)
            elif isinstance(out, Multicast):
                for to in out.to:
                    self._post(node, to, out.message)
            elif isinstance(out, Broadcast):
                for to in self.cores:
                    if to != node:
                        self._post(node, to, out.message)
            elif isinstance(out, SetTimer):
                self.timers.setdefault(node, {})[out.timer] = self.now + out.delay
            elif isinstance(out, CancelTimer):
                self.timers.setdefault(node, {}).pop(out.timer, None)
            elif isinstance(out, Commit):
                self.commits.setdefault(node, []).append(out)

    def feed(self, node: int, inp: Any) -> list[Any]:
        outs = self.cores[node].handle(self.now, inp)
        self.execute(node, outs)
        return outs

    def fire(self, node: int, timer: Any) -> list[Any]:
        from dwcp.consensus.core import TimerFired

        self.timers.get(node, {}).pop(timer, None)
        return self.feed(node, TimerFired(timer=timer))

    def run(self, max_steps: int = 100_000) -> int:
        """Deliver queued frames until quiet; returns the number delivered."""
        steps = 0
        while self.queue and steps < max_steps:
            sender, to, frame = self.queue.popleft()
            if to in self.down:
                continue
            self.feed(to, self.open(to, frame))
            steps += 1
        return steps

    def open(self, to: int, frame: bytes) -> Received:
        """`frame` as the driver hands it to `to`'s core: the types the core checks itself (its
        `lazy_messages`, PBFT's votes) unchecked, everything else checked by the codec."""
        opened = self.codec.open(self.keys.verifier, frame, getattr(self.cores[to], "lazy_messages", ()))
        assert not isinstance(opened, DecodeError), opened
        return Received(sender=opened.sender, message=opened.message, signature=opened.signature,
                        verified=opened.verified)

    def heights(self) -> dict[int, int]:
        return {n: len(self.commits.get(n, [])) for n in self.cores}


def keyed_inventory(doc: dict[str, Any], service: str, key_dir: Path) -> Inventory:
    """Parse an inventory document with fresh keys for `service` written to `key_dir` (its settings.key_dir).

    Nodes have no default keys (issue 15): every test that runs a node makes its own, as keygen would.
    """
    committee, privs = generate_committee(parse_inventory(doc), service)
    write_key_dir(key_dir, committee, privs)
    spec = doc["services"][service]
    keyed = {**doc, "services": {**doc["services"], service: {
        **spec, "settings": {**spec.get("settings", {}), "key_dir": str(key_dir)}}}}
    return parse_inventory(keyed)
