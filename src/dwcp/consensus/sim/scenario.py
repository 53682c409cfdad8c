"""What one simulated run is: protocol, committee size, Byzantine behaviours, regions, load, faults.

A `Scenario` is plain data and, with its seed, determines the run completely. `Scenario.build`
turns CLI-level choices (a behaviour name or "mixed", a region spec, "random faults on/off") into
one, drawing every choice from the seed, so run k of a campaign is reproducible from its seed alone.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from dwcp.consensus.sim.cpu import CpuCosts
from dwcp.consensus.sim.faults import (
    BEHAVIOURS,
    BYZANTINE,
    Crash,
    Fault,
    Heal,
    Intermittent,
    Partition,
    Restart,
    describe,
    intermittent_episodes,
)
from dwcp.consensus.sim.network import DEFAULT_REGIONS, REGIONS, pick_regions

MIXED = "mixed"


@dataclass(frozen=True)
class Scenario:
    protocol: str = "pbft"
    nodes: int = 10
    seed: int = 0
    byzantine: dict[int, str] = field(default_factory=dict)  # node id -> behaviour name
    regions: tuple[str, ...] = REGIONS[:DEFAULT_REGIONS]
    duration: float = 10.0  # simulated seconds
    rate: float = 50.0  # offered client load, tx/s (Poisson), handed to correct nodes
    tx_size: int = 64
    faults: tuple[Fault, ...] = ()
    # Intermittent nodes' down episodes (crash/restart, isolate/rejoin): apart from `faults`, since they
    # go on for the whole run and liveness (judged after `healed_at`) is about the correct nodes.
    episodes: tuple[Fault, ...] = ()
    loss: float = 0.0
    jitter: float = 0.05
    bandwidth_mbps: float = 1000.0
    drain: float = 20.0  # after the load stops, at most this long for every tx due (see invariants) to commit
    sync_interval: float = 0.5  # the driver's height gossip / catch-up period (0: off)
    crypto: str = "mac"  # "mac" (simulation-only, fast) or "ed25519"
    epoch_length: int = 0  # blocks per epoch for protocols with epochs (T-PBFT re-chooses its group); 0: core default
    # The seed's scale (sim/dataplane.py, sim/cpu.py): off by default, so existing runs stay what they were.
    batch_bytes: int = 0  # > 0: workers outside the cores carry declared batches of this size; `rate` feeds them
    max_batch_delay: float = 0.1  # a declared batch seals when full or this old
    downlink_mbps: float = 0.0  # per-node downlink (incast queue); 0: unlimited
    cpu: CpuCosts | None = None  # charge signing, verifying, hashing and codec time per node
    cpu_cores: tuple[int, int] = (1, 1)  # cores of a node's primary and of its worker (with `cpu`)
    warmup: float = 0.0  # declared load: figures count from here

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise ValueError("a committee needs at least one node")
        for node, name in self.byzantine.items():
            if not 0 <= node < self.nodes:
                raise ValueError(f"Byzantine node {node} is not in 0..{self.nodes - 1}")
            if name not in BEHAVIOURS:
                raise ValueError(f"unknown behaviour {name!r}; known: {', '.join(BEHAVIOURS)}")
        for episode in self.episodes:
            if getattr(episode, "node", None) is None or self.byzantine.get(episode.node) != Intermittent.name:
                raise ValueError(f"episode {describe(episode)}: only intermittent nodes have episodes")
        if self.crypto not in ("mac", "ed25519"):
            raise ValueError("crypto is 'mac' or 'ed25519'")
        if self.batch_bytes < 0 or self.downlink_mbps < 0 or not 0 <= self.warmup < self.duration:
            raise ValueError("batch_bytes and downlink_mbps must be >= 0, warmup in [0, duration)")
        if self.batch_bytes and self.max_batch_delay <= 0:
            raise ValueError("max_batch_delay must be > 0")

    @property
    def correct(self) -> tuple[int, ...]:
        return tuple(i for i in range(self.nodes) if self.byzantine.get(i, "none") == "none")

    @property
    def healed_at(self) -> float:
        """When the last scheduled fault is over (0 when there are none)."""
        ends = [f.at for f in self.faults if isinstance(f, Heal | Restart)]
        return max(ends, default=0.0)

    def describe(self) -> dict[str, object]:
        return {
            "protocol": self.protocol, "seed": self.seed, "nodes": self.nodes,
            "byzantine": {str(k): v for k, v in sorted(self.byzantine.items())},
            "regions": list(self.regions), "faults": [describe(f) for f in self.faults],
            **({"episodes": [describe(f) for f in self.episodes]} if self.episodes else {}),
            **({"batch_bytes": self.batch_bytes, "tx_size": self.tx_size, "rate": self.rate,
                "bandwidth_mbps": self.bandwidth_mbps, "downlink_mbps": self.downlink_mbps,
                "cpu": self.cpu.as_dict() if self.cpu else None, "cpu_cores": list(self.cpu_cores)}
               if self.batch_bytes else {}),
        }

    @classmethod
    def build(cls, protocol: str, *, nodes: int = 10, byzantine: int = 0, behaviour: str = MIXED,
              regions: str | int = DEFAULT_REGIONS, seed: int = 0, chaos: bool = False,
              **kwargs: float | str) -> Scenario:
        """Byzantine node ids, their behaviours ("mixed": one drawn per node) and, with `chaos`,
        partitions and crashes: all drawn from `seed`. `faults=` (a tuple) replaces the drawn ones.
        Intermittent nodes get their down episodes over the whole run, drain included, each from a
        stream of its own (`faults.intermittent_episodes`), so no other draw moves."""
        rng = random.Random(f"scenario:{seed}")
        if byzantine < 0 or byzantine >= nodes:
            raise ValueError(f"--byzantine must be in 0..{nodes - 1}")
        names = [b.strip() for b in behaviour.split(",") if b.strip()]
        for name in names:
            if name != MIXED and name not in BEHAVIOURS:
                raise ValueError(f"unknown behaviour {name!r}; known: {', '.join(BEHAVIOURS)}, {MIXED}")
        bad = sorted(rng.sample(range(nodes), byzantine))
        chosen = {}
        for k, node in enumerate(bad):
            name = names[k % len(names)] if names else MIXED
            chosen[node] = rng.choice(BYZANTINE) if name == MIXED else name
        chosen = {node: name for node, name in chosen.items() if name != "none"}
        duration = float(kwargs.pop("duration", 10.0))
        explicit = tuple(kwargs.pop("faults", ()))  # type: ignore[arg-type]
        for fault in explicit:
            if isinstance(fault, Crash | Restart) and not 0 <= fault.node < nodes:
                raise ValueError(f"fault {describe(fault)}: no node {fault.node}")
        faults = explicit or (random_faults(rng, nodes, duration) if chaos else ())
        until = duration + float(kwargs.get("drain", cls.drain))
        episodes = tuple(sorted((e for node, name in chosen.items() if name == Intermittent.name
                                 for e in intermittent_episodes(seed, node, until)), key=lambda f: f.at))
        return cls(protocol=protocol, nodes=nodes, seed=seed, byzantine=chosen, regions=pick_regions(regions),
                   duration=duration, faults=faults, episodes=episodes, **kwargs)  # type: ignore[arg-type]


def parse_fault(text: str) -> Fault:
    """`"1.5:crash:3"`, `"4:restart:3"`, `"0.5:partition:0,1|2,3,4"`, `"2:heal"` -> a scheduled fault."""
    parts = text.strip().split(":")
    try:
        at, kind = float(parts[0]), parts[1]
        if kind == "heal" and len(parts) == 2:
            return Heal(at)
        if kind in ("crash", "restart") and len(parts) == 3:
            return (Crash if kind == "crash" else Restart)(at, int(parts[2]))
        if kind == "partition" and len(parts) == 3:
            return Partition(at, tuple(tuple(int(i) for i in g.split(",")) for g in parts[2].split("|")))
    except (IndexError, ValueError):
        pass
    raise ValueError(f"--fault {text!r}: expected TIME:crash:NODE, TIME:restart:NODE, TIME:heal or "
                     "TIME:partition:IDS|IDS (ids comma-separated)")


def random_faults(rng: random.Random, nodes: int, duration: float) -> tuple[Fault, ...]:
    """One to three fault episodes in the first 40% of the run, each healed before the next:
    a partition (a random minority or an even split), a crash and restart, or both at once."""
    faults: list[Fault] = []
    t = 0.5
    end = 0.4 * duration
    for _ in range(rng.randint(1, 3)):
        if t >= end - 0.3:
            break
        start = t + rng.uniform(0.0, 0.2 * duration / 3)
        if start > end - 0.3:
            break
        stop = min(end, start + rng.uniform(0.3, max(0.3, 0.15 * duration)))
        kind = rng.choice(("partition", "crash", "both"))
        if kind in ("partition", "both"):
            ids = list(range(nodes))
            rng.shuffle(ids)
            cut = rng.randint(1, nodes // 2)
            faults += [Partition(start, (tuple(sorted(ids[:cut])), tuple(sorted(ids[cut:])))), Heal(stop)]
        if kind in ("crash", "both"):
            node = rng.randrange(nodes)
            faults += [Crash(start, node), Restart(stop, node)]
        t = stop + 0.1
    return tuple(sorted(faults, key=lambda f: f.at))
