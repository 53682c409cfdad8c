"""What the simulator runs: nodes (one or two cores under one key), frames in flight, and the
committee and keys of a seeded run. Which core a node runs comes from the protocol registry."""

from __future__ import annotations

from typing import Any

from dwcp.consensus.core.codec import DecodeError
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
from dwcp.consensus.transport.sync import CatchUpPlanner


class Packet:
    """One sealed frame and, once the first receiver opened it, the codec's verdict (the bytes are
    identical for every copy, so every receiver would get the same `Opened` or `DecodeError`)."""

    __slots__ = ("src", "data", "opened")

    def __init__(self, src: int, data: bytes) -> None:
        self.src, self.data = src, data
        self.opened: Received | DecodeError | None = None


class Instance:
    """One core running under a node's key (two for twins), with its timers, committed log and the
    driver's catch-up planner (`transport.sync.CatchUpPlanner`, as a node runs it)."""

    __slots__ = ("core", "scope", "timers", "log", "planner", "persisted")

    def __init__(self, core: Any, scope: frozenset[int] | None, log: list[tuple[Block, Any]],
                 planner: CatchUpPlanner, persisted: dict[str, bytes] | None = None) -> None:
        self.core, self.scope, self.log, self.planner = core, scope, log, planner
        self.persisted = {} if persisted is None else persisted  # the core's Persist-ed values: survive a crash
        self.timers: dict[Timer, int] = {}


class Node:
    __slots__ = ("node_id", "signer", "behaviour", "instances", "up", "incarnation", "correct", "checked")

    def __init__(self, node_id: int, signer: Signer, behaviour: Behaviour) -> None:
        self.node_id, self.signer, self.behaviour = node_id, signer, behaviour
        self.instances: list[Instance] = []
        self.up = True
        self.incarnation = 0
        self.correct = type(behaviour) is Behaviour
        self.checked = self.correct or behaviour.honest  # its commits go to the safety checks


def make_keys(seed: int, n: int, crypto: str) -> tuple[dict[int, Signer], Verifier, dict[int, bytes]]:
    """Signers, one verifier for everyone, and Ed25519 public keys (for the committee) from `seed`."""
    secrets = {i: mac_secret(seed, i) for i in range(n)}
    keys = {i: public_key_of(s) for i, s in secrets.items()}
    if crypto == "ed25519":
        return {i: Ed25519Signer(i, s) for i, s in secrets.items()}, Ed25519Verifier(keys), keys
    return {i: MacSigner(i, s) for i, s in secrets.items()}, MacVerifier(secrets), keys
