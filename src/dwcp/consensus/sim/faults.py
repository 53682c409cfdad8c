"""Faults: scheduled network and crash events, and Byzantine behaviours wrapped around real cores.

A Byzantine node runs an unmodified core; its behaviour rewrites what leaves it. `outgoing` turns
one message for a set of recipients into frames, exactly the bytes the TCP transport would carry,
so every forgery goes through the receivers' real `Codec.open` checks:

| behaviour         | what leaves the node                                                        |
|-------------------|-----------------------------------------------------------------------------|
| none              | the sealed message, one frame for all recipients (as the driver does)       |
| silent            | nothing (a crashed or mute node that never recovers)                        |
| equivocate        | proposals (a `block`, bar `Decided`, or a new view's `proposals`): the      |
|                   | second half of the recipients gets a different block (one tx fewer),        |
|                   | re-signed with our key; a Narwhal header (its batch `payload`): the second  |
|                   | half gets the same round's header with one batch fewer                      |
| twins             | two cores with our key, each talking only to one half of the committee, so  |
|                   | each half sees an honest node while the key proposes and votes twice         |
| invalid-signature | half the messages with a flipped signature, a payload changed after signing,|
|                   | or another node's id in the header (`bad_signature` at the receiver), or a  |
|                   | replay of a frame another node signed (`sender_mismatch`, as the driver)    |
| garbage           | half the messages replaced by random bytes, or by random payloads that are   |
|                   | validly signed (`malformed`), or truncated frames                            |

A data-plane attack, for protocols whose workers the simulator models (declared batches,
`sim/dataplane.py`); also named explicitly, not drawn by "mixed":

| withhold          | the node's worker tells its primary its batches are stored by a quorum but  |
|                   | sends them to nobody and answers no fetch (headers name unobtainable batches)|

Sample attacks, for protocols whose messages carry a VRF `proof` of who may receive them (ProBFT);
other messages leave such a node unchanged. They are named explicitly (`--behaviour outside-sample,...`)
and not drawn by "mixed", so the mixed draws of existing seeds stay what they were:

| outside-sample    | every proof-carrying message goes to the whole committee, not its sample     |
| forged-proof      | half the proof-carrying messages with random proof bytes (validly signed)    |
| replayed-proof    | the first proof the node ever sent, attached to all its later messages       |

A crash fault, for a fault model trust can learn from; named explicitly (`--behaviour intermittent,...`)
and not drawn by "mixed". It is counted among the f faulty nodes (liveness is not judged at it, no
client hands it transactions) but its core is honest, so its commits are still checked for safety:

| intermittent      | a flaky host or link: an honest core that is down in episodes for the whole  |
|                   | run (`intermittent_episodes`): up 1-4 s, then down 0.3-1.5 s, each episode   |
|                   | a crash and restart from its own log (a host that reboots, half of them) or  |
|                   | a link that drops both ways (it keeps running, timers and all, but sends and |
|                   | hears nothing, frames in flight included), drawn from the scenario's seed    |
"""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from dwcp.consensus.core.codec import HEADER_SIZE, VERSION, Codec, signing_bytes
from dwcp.consensus.core.crypto import Signer
from dwcp.consensus.core.messages import Block, Decided, digest

Frames = list[tuple[tuple[int, ...], bytes]]


# ---- scheduled faults ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Partition:
    at: float
    groups: tuple[tuple[int, ...], ...]


@dataclass(frozen=True, slots=True)
class Heal:
    at: float


@dataclass(frozen=True, slots=True)
class Crash:
    at: float
    node: int


@dataclass(frozen=True, slots=True)
class Restart:
    at: float
    node: int


@dataclass(frozen=True, slots=True)
class Isolate:
    """`node`'s links drop both ways (frames in flight too); the node keeps running."""

    at: float
    node: int


@dataclass(frozen=True, slots=True)
class Rejoin:
    at: float
    node: int


Fault = Partition | Heal | Crash | Restart | Isolate | Rejoin

# An intermittent node's episodes: up this long (uniform), then down this long, over the whole run.
INTERMITTENT_UP_S = (1.0, 4.0)
INTERMITTENT_DOWN_S = (0.3, 1.5)


def intermittent_episodes(seed: int, node: int, until: float) -> tuple[Fault, ...]:
    """The down episodes of intermittent node `node` in [0, until): from a stream of its own
    (`intermittent:SEED:NODE`), so they do not move any other draw of the scenario. Each episode is a
    crash and restart or an isolate and rejoin (one coin per episode)."""
    rng = random.Random(f"intermittent:{seed}:{node}")
    out: list[Fault] = []
    t = rng.uniform(*INTERMITTENT_UP_S)
    while t < until:
        down = rng.uniform(*INTERMITTENT_DOWN_S)
        if rng.random() < 0.5:
            out += [Crash(t, node), Restart(t + down, node)]
        else:
            out += [Isolate(t, node), Rejoin(t + down, node)]
        t += down + rng.uniform(*INTERMITTENT_UP_S)
    return tuple(out)


def describe(fault: Fault) -> str:
    if isinstance(fault, Partition):
        return f"{fault.at:.2f}s partition {' | '.join(','.join(map(str, g)) for g in fault.groups)}"
    if isinstance(fault, Heal):
        return f"{fault.at:.2f}s heal"
    return f"{fault.at:.2f}s {type(fault).__name__.lower()} {fault.node}"


# ---- Byzantine behaviours --------------------------------------------------------------------
class Behaviour:
    """Honest: what the real driver sends. Subclasses rewrite outgoing messages."""

    name = "none"
    instances = 1  # cores run under this node's key
    batches = "send"  # its worker (sim/dataplane.py): "send", "withhold" or "none" (sends nothing)
    honest = False  # a faulty node whose core and messages are honest: its commits are checked for safety

    def __init__(self, rng: random.Random, committee_ids: Sequence[int], node_id: int) -> None:
        self.rng = rng
        self.node_id = node_id
        others = [i for i in committee_ids if i != node_id]
        half = len(others) // 2
        self.halves: tuple[frozenset[int], frozenset[int]] = (frozenset(others[:half]), frozenset(others[half:]))

    def scope(self, instance: int) -> frozenset[int] | None:
        """Peers core `instance` exchanges messages with; None: everyone."""
        return None

    def outgoing(self, codec: Codec, signer: Signer, to: tuple[int, ...], message: Any) -> Frames:
        return [(to, codec.seal(signer, message))]

    def inbound(self, data: bytes) -> None:
        """A frame this node received (Byzantine nodes may replay what they hear)."""


class Intermittent(Behaviour):
    """An honest core whose host or link fails in episodes (scheduled by the runner from
    `Scenario.episodes`); what it sends when up is what the driver sends."""

    name = "intermittent"
    honest = True


class Silent(Behaviour):
    name = "silent"
    batches = "none"

    def outgoing(self, codec: Codec, signer: Signer, to: tuple[int, ...], message: Any) -> Frames:
        return []


def _proposal_block(message: Any) -> Block | None:
    if isinstance(message, Decided):
        return None
    block = getattr(message, "block", None)
    return block if isinstance(block, Block) else None


def _equivocal(message: Any) -> Any | None:
    """`message` with a different block (one tx fewer), or None when it proposes nothing."""
    block = _proposal_block(message)
    if block is not None and block.txs:
        return msgspec.structs.replace(message, block=msgspec.structs.replace(block, txs=block.txs[:-1]))
    proposals = getattr(message, "proposals", None)  # a new view's re-proposals (blocks, or their digests)
    if isinstance(proposals, tuple):
        for i, b in enumerate(proposals):
            if isinstance(b, Block) and b.txs:
                other: Block | bytes = msgspec.structs.replace(b, txs=b.txs[:-1])
            elif isinstance(b, bytes):
                other = digest(b)  # names a block nobody can reproduce
            else:
                continue
            return msgspec.structs.replace(message, proposals=(*proposals[:i], other, *proposals[i + 1:]))
    payload = getattr(message, "payload", None)  # a Narwhal header's batch references
    if isinstance(payload, tuple) and payload and hasattr(message, "round"):
        return msgspec.structs.replace(message, payload=payload[:-1])
    return None


class Equivocate(Behaviour):
    name = "equivocate"

    def outgoing(self, codec: Codec, signer: Signer, to: tuple[int, ...], message: Any) -> Frames:
        other = _equivocal(message) if len(to) >= 2 else None
        if other is None:
            return super().outgoing(codec, signer, to, message)
        half = len(to) // 2
        return [(to[:half], codec.seal(signer, message)), (to[half:], codec.seal(signer, other))]


class Twins(Behaviour):
    name = "twins"
    instances = 2

    def scope(self, instance: int) -> frozenset[int] | None:
        return self.halves[instance]


class InvalidSignature(Behaviour):
    name = "invalid-signature"

    def __init__(self, rng: random.Random, committee_ids: Sequence[int], node_id: int) -> None:
        super().__init__(rng, committee_ids, node_id)
        self.heard = b""

    def inbound(self, data: bytes) -> None:
        self.heard = data

    def outgoing(self, codec: Codec, signer: Signer, to: tuple[int, ...], message: Any) -> Frames:
        frame = codec.seal(signer, message)
        roll = self.rng.random()
        if roll < 0.5:
            return [(to, frame)]
        if roll > 0.95 and self.heard:  # replay a peer's validly signed frame as ours (sender_mismatch)
            return [(to, self.heard)]
        data = bytearray(frame)
        if roll < 0.7:  # flip one signature byte
            data[5 + self.rng.randrange(64)] ^= 0xFF
        elif roll < 0.85 and len(data) > HEADER_SIZE:  # change the payload after signing
            data[HEADER_SIZE + self.rng.randrange(len(data) - HEADER_SIZE)] ^= 0x01
        else:  # claim to be another member (our signature, their id)
            victim = self.rng.choice(sorted(self.halves[0] | self.halves[1]))
            data[1:5] = victim.to_bytes(4, "big")
        return [(to, bytes(data))]


class Garbage(Behaviour):
    name = "garbage"

    def outgoing(self, codec: Codec, signer: Signer, to: tuple[int, ...], message: Any) -> Frames:
        roll = self.rng.random()
        if roll < 0.5:
            return [(to, codec.seal(signer, message))]
        rng = self.rng
        if roll < 0.7:  # noise
            junk = rng.randbytes(rng.randrange(0, 400))
        elif roll < 0.9:  # validly signed noise: passes the signature check, fails decoding
            payload = rng.randbytes(rng.randrange(1, 300))
            signature = signer.sign(signing_bytes(signer.node_id, payload))
            junk = struct.pack("!BI", VERSION, signer.node_id) + signature + payload
        else:  # a real frame cut short
            frame = codec.seal(signer, message)
            junk = frame[: rng.randrange(0, len(frame))]
        return [(to, junk)]


class Withhold(Behaviour):
    name = "withhold"
    batches = "withhold"


class OutsideSample(Behaviour):
    name = "outside-sample"

    def outgoing(self, codec: Codec, signer: Signer, to: tuple[int, ...], message: Any) -> Frames:
        if hasattr(message, "proof"):
            to = tuple(sorted(self.halves[0] | self.halves[1]))
        return [(to, codec.seal(signer, message))]


class ForgedProof(Behaviour):
    name = "forged-proof"

    def outgoing(self, codec: Codec, signer: Signer, to: tuple[int, ...], message: Any) -> Frames:
        proof = getattr(message, "proof", None)
        if isinstance(proof, bytes) and self.rng.random() < 0.5:
            message = msgspec.structs.replace(message, proof=self.rng.randbytes(len(proof) or 80))
        return [(to, codec.seal(signer, message))]


class ReplayedProof(Behaviour):
    name = "replayed-proof"

    def __init__(self, rng: random.Random, committee_ids: Sequence[int], node_id: int) -> None:
        super().__init__(rng, committee_ids, node_id)
        self.first: bytes | None = None

    def outgoing(self, codec: Codec, signer: Signer, to: tuple[int, ...], message: Any) -> Frames:
        proof = getattr(message, "proof", None)
        if isinstance(proof, bytes):
            if self.first is None:
                self.first = proof
            elif proof != self.first:  # a valid proof, for another view or phase
                message = msgspec.structs.replace(message, proof=self.first)
        return [(to, codec.seal(signer, message))]


BEHAVIOURS: dict[str, type[Behaviour]] = {
    b.name: b for b in (Behaviour, Silent, Equivocate, Twins, InvalidSignature, Garbage,
                        OutsideSample, ForgedProof, ReplayedProof, Withhold, Intermittent)
}
SAMPLE_ATTACKS = (OutsideSample.name, ForgedProof.name, ReplayedProof.name)
DATA_PLANE_ATTACKS = (Withhold.name,)
CRASH_FAULTS = (Intermittent.name,)
BYZANTINE = tuple(name for name in BEHAVIOURS if name != "none" and name not in SAMPLE_ATTACKS
                  and name not in DATA_PLANE_ATTACKS and name not in CRASH_FAULTS)
