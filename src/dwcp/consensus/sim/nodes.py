"""What the simulator runs: nodes (one or two cores under one key), frames in flight, and the
committee and keys of a seeded run. Which core a node runs comes from the protocol registry."""

from __future__ import annotations

from typing import Any

from dwcp.consensus.core.codec import DecodeError
from dwcp.consensus.core.committee import Committee
from dwcp.consensus.core.crypto import (
    Ed25519Signer,
    Ed25519Verifier,
    MacSigner,
    MacVerifier,
    Signer,
    Verifier,
    mac_secret,
    public_key_of,
)
from dwcp.consensus.core.inputs import Received, Timer
from dwcp.consensus.core.messages import Block
from dwcp.consensus.sim.faults import Behaviour


class SimCommittee(Committee):
    """`Committee` with its derived numbers computed once. The base class recomputes `ids`, `n`,
    `f` and `quorum` on every access, which cores do per message (~15% of a run's time)."""

    __slots__ = ("_ids", "_n", "_f", "_quorum")

    def __post_init__(self) -> None:
        super().__post_init__()
        base = Committee(self.members, name=self.name)
        for attr in ("ids", "n", "f", "quorum"):
            object.__setattr__(self, f"_{attr}", getattr(base, attr))

    ids = property(lambda self: self._ids)  # type: ignore[assignment]
    n = property(lambda self: self._n)  # type: ignore[assignment]
    f = property(lambda self: self._f)  # type: ignore[assignment]
    quorum = property(lambda self: self._quorum)  # type: ignore[assignment]

    @property
    def validity(self) -> int:
        return self._f + 1


class Packet:
    """One sealed frame and, once the first receiver opened it, the codec's verdict (the bytes are
    identical for every copy, so every receiver would get the same `Opened` or `DecodeError`)."""

    __slots__ = ("src", "data", "opened")

    def __init__(self, src: int, data: bytes) -> None:
        self.src, self.data = src, data
        self.opened: Received | DecodeError | None = None


class Instance:
    """One core running under a node's key (two for twins), with its timers and committed log."""

    __slots__ = ("core", "scope", "timers", "log", "syncing_until")

    def __init__(self, core: Any, scope: frozenset[int] | None, log: list[tuple[Block, Any]]) -> None:
        self.core, self.scope, self.log = core, scope, log
        self.timers: dict[Timer, int] = {}
        self.syncing_until = 0.0


class Node:
    __slots__ = ("node_id", "signer", "behaviour", "instances", "up", "incarnation", "correct")

    def __init__(self, node_id: int, signer: Signer, behaviour: Behaviour) -> None:
        self.node_id, self.signer, self.behaviour = node_id, signer, behaviour
        self.instances: list[Instance] = []
        self.up = True
        self.incarnation = 0
        self.correct = type(behaviour) is Behaviour


def make_keys(seed: int, n: int, crypto: str) -> tuple[dict[int, Signer], Verifier, dict[int, bytes]]:
    """Signers, one verifier for everyone, and Ed25519 public keys (for the committee) from `seed`."""
    secrets = {i: mac_secret(seed, i) for i in range(n)}
    keys = {i: public_key_of(s) for i, s in secrets.items()}
    if crypto == "ed25519":
        return {i: Ed25519Signer(i, s) for i, s in secrets.items()}, Ed25519Verifier(keys), keys
    return {i: MacSigner(i, s) for i, s in secrets.items()}, MacVerifier(secrets), keys
