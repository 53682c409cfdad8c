"""Simulated CPU time: what signing, verifying, hashing and encoding cost a node, as busy queues.

A node has one queue per role (`PRIMARY`: consensus messages; `WORKER`: batches), as the real node
runs its primary and its worker as two processes. A job of `cost` seconds asked for at time t on a
lane starts when the lane is free and ends at

    done = max(t, lane free-at) + cost            then the lane is free at `done`

so a node that must verify 67 signatures per certificate from 99 peers falls behind its peers in
virtual time exactly as it would on one real core. A lane may have several cores (`cores`): a job
takes the core free first, and jobs still finish in the order they were queued (a verification pool
that hands frames on in order, as the transport's per-link FIFO needs). The per-operation costs
(`CpuCosts`) are measured on this machine with the real code by `benchmarks/bullshark_calibrate.py`,
which writes the JSON this module reads (`CpuCosts.load`); docs/bullshark.md says how.

What is not charged: the cores' own Python logic (ordering, DAG walks), TLS record processing and the
kernel's socket work. The model is the cryptography and serialisation the issue names, nothing else.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

PRIMARY = 0
WORKER = 1


@dataclass(frozen=True, slots=True)
class CpuCosts:
    """Seconds per operation, or per byte (`*_per_byte`), on one core."""

    sign: float = 0.0  # Ed25519 signature over one message
    verify: float = 0.0  # one Ed25519 verification
    hash_per_byte: float = 0.0  # BLAKE2b-256 over a batch
    encode_per_byte: float = 0.0  # codec: struct -> bytes
    decode_per_byte: float = 0.0  # codec: bytes -> struct
    encode_fixed: float = 0.0  # per message, whatever its size
    decode_fixed: float = 0.0

    @classmethod
    def load(cls, path: str | Path) -> CpuCosts:
        """The calibration file's `costs` object (unknown keys refused, so a typo is not a zero)."""
        raw = json.loads(Path(path).read_text())
        costs = raw.get("costs", raw)
        unknown = set(costs) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{path}: unknown cost(s) {sorted(unknown)}")
        return cls(**{k: float(v) for k, v in costs.items()})

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def send(self, size: int) -> float:
        """Encode and sign one consensus frame of `size` bytes (signed once, whatever the fan-out)."""
        return self.encode_fixed + self.encode_per_byte * size + self.sign

    def receive(self, size: int, signatures: int) -> float:
        """Open one frame: check its envelope signature, decode it, and verify the `signatures` it
        carries (a certificate's quorum)."""
        return self.verify * (1 + signatures) + self.decode_fixed + self.decode_per_byte * size

    def batch(self, size: int) -> float:
        """Hash a batch of `size` bytes once (as its sealing worker and every receiving worker do)."""
        return self.hash_per_byte * size


class CpuModel:
    """Per node and lane, when each core is next free (see module docstring)."""

    __slots__ = ("costs", "cores", "_free", "_last", "busy")

    def __init__(self, nodes: int, costs: CpuCosts, cores: tuple[int, int] = (1, 1)) -> None:
        if min(cores) < 1:
            raise ValueError("a CPU lane needs at least one core")
        self.costs, self.cores = costs, cores
        self._free = [[[0.0] * cores[PRIMARY], [0.0] * cores[WORKER]] for _ in range(nodes)]
        self._last = [[0.0, 0.0] for _ in range(nodes)]  # when the lane's latest job finishes
        self.busy = [[0.0, 0.0] for _ in range(nodes)]  # seconds of CPU charged, for the report

    def run(self, node: int, lane: int, now: float, cost: float) -> float:
        """Queue a job of `cost` seconds on `node`'s `lane` at `now`; returns when it is done."""
        free = self._free[node][lane]
        core = 0 if len(free) == 1 else free.index(min(free))
        start = free[core] if free[core] > now else now
        done = start + cost
        free[core] = done
        last = self._last[node]
        if done < last[lane]:
            done = last[lane]  # finished early on another core: handed on after the job before it
        last[lane] = done
        self.busy[node][lane] += cost
        return done

    def reset(self, node: int, now: float) -> None:
        """A crashed node's queued work is gone."""
        self._free[node] = [[now] * self.cores[PRIMARY], [now] * self.cores[WORKER]]
        self._last[node] = [now, now]

    def utilisation(self, node: int, lane: int, elapsed: float) -> float:
        return self.busy[node][lane] / elapsed if elapsed > 0 else 0.0
