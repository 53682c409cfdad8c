"""The simulated network: per-region latency with jitter, per-node bandwidth, loss, partitions.

A message of `size` bytes from node a to node b sent at time t arrives at

    start   = max(t, a's uplink free-at)            one uplink per node: copies queue behind each other
    on_wire = start + size * 8 / bandwidth          serialisation delay
    arrive  = max(on_wire + one_way(a, b) * (1 + jitter), last arrival on (a, b))

The last term keeps each link FIFO, as the TCP transport is. With a downlink bandwidth set
(`downlink_bps > 0`), a copy that reached the receiver's edge at `arrive` is then read off the
receiver's one downlink, in the order copies reach it (the runner calls `downlink` at that time):

    received = max(arrive, b's downlink free-at) + size * 8 / downlink_bps

so 99 peers sending a node their batches at once queue at its NIC (incast), as a sender's 99 copies
queue on its uplink (fan-out). Each direction has two queues, `CONTROL` (the primary's frames) and
`DATA` (the worker's batches), each served at the full rate: the two processes use separate TCP
flows, and a fair-queuing NIC (Linux's default fq_codel) serves a small control flow beside a bulk
one with about a packet's wait, not behind the bulk flow's backlog. It overstates capacity by the
control traffic's share of the link (a few per cent at n = 100). `one_way` is half the round-trip time
between the two nodes' regions. With probability `loss` the copy is dropped (a reset connection or
a full peer queue in the real transport; TCP itself never loses a byte it acknowledged).

Default RTTs (`WAN_RTT_MS`) are rounded medians of public AWS inter-region ping tables
(cloudping.co, 2023-2024); within one region we use 1 ms (between availability zones).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

REGIONS: tuple[str, ...] = (
    "us-east-1", "eu-west-1", "us-west-2", "ap-northeast-1",
    "eu-central-1", "ap-southeast-1", "ap-southeast-2", "sa-east-1",
)
_PAIRS_MS: dict[tuple[str, str], float] = {
    ("us-east-1", "us-west-2"): 67, ("us-east-1", "eu-west-1"): 68, ("us-east-1", "eu-central-1"): 90,
    ("us-east-1", "ap-northeast-1"): 145, ("us-east-1", "ap-southeast-1"): 215,
    ("us-east-1", "ap-southeast-2"): 198, ("us-east-1", "sa-east-1"): 115,
    ("us-west-2", "eu-west-1"): 125, ("us-west-2", "eu-central-1"): 140, ("us-west-2", "ap-northeast-1"): 97,
    ("us-west-2", "ap-southeast-1"): 165, ("us-west-2", "ap-southeast-2"): 138, ("us-west-2", "sa-east-1"): 175,
    ("eu-west-1", "eu-central-1"): 25, ("eu-west-1", "ap-northeast-1"): 200, ("eu-west-1", "ap-southeast-1"): 165,
    ("eu-west-1", "ap-southeast-2"): 255, ("eu-west-1", "sa-east-1"): 178,
    ("eu-central-1", "ap-northeast-1"): 225, ("eu-central-1", "ap-southeast-1"): 155,
    ("eu-central-1", "ap-southeast-2"): 250, ("eu-central-1", "sa-east-1"): 205,
    ("ap-northeast-1", "ap-southeast-1"): 68, ("ap-northeast-1", "ap-southeast-2"): 105,
    ("ap-northeast-1", "sa-east-1"): 255, ("ap-southeast-1", "ap-southeast-2"): 92,
    ("ap-southeast-1", "sa-east-1"): 320, ("ap-southeast-2", "sa-east-1"): 310,
}
INTRA_REGION_RTT_MS = 1.0
WAN_RTT_MS: dict[tuple[str, str], float] = {
    **_PAIRS_MS, **{(b, a): ms for (a, b), ms in _PAIRS_MS.items()}, **{(r, r): INTRA_REGION_RTT_MS for r in REGIONS},
}
DEFAULT_REGIONS = 4  # us-east-1, eu-west-1, us-west-2, ap-northeast-1: three continents
CONTROL, DATA = 0, 1  # a link's queues: consensus frames, batches


def pick_regions(spec: str | int) -> tuple[str, ...]:
    """`4` -> the first four of REGIONS; `"us-east-1,eu-west-1"` -> those; `"lan"` -> one region."""
    text = str(spec).strip()
    if text == "lan":
        return (REGIONS[0],)
    if text.isdigit():
        k = int(text)
        if not 1 <= k <= len(REGIONS):
            raise ValueError(f"--regions: between 1 and {len(REGIONS)} regions, got {k}")
        return REGIONS[:k]
    names = tuple(r.strip() for r in text.split(",") if r.strip())
    unknown = [r for r in names if r not in REGIONS]
    if unknown or not names:
        raise ValueError(f"--regions: unknown region(s) {unknown}; known: {', '.join(REGIONS)}")
    return names


@dataclass
class NetworkModel:
    """Latency, bandwidth and loss, plus the current partition (see module docstring)."""

    placement: Sequence[str]  # node id -> region
    rng: random.Random
    rtt_ms: dict[tuple[str, str], float] = field(default_factory=lambda: dict(WAN_RTT_MS))
    jitter: float = 0.05  # mean extra one-way delay, as a fraction of the base (exponential)
    bandwidth_bps: float = 1e9  # per-node uplink
    loss: float = 0.0
    downlink_bps: float = 0.0  # per-node downlink; 0: unlimited (no receive queue)
    _one_way: list[list[float]] = field(init=False, repr=False)
    _uplink_free: list[list[float]] = field(init=False, repr=False)
    _last_arrival: list[float] = field(init=False, repr=False)  # per link and queue: (a * n + b) * 2 + queue
    side: list[int] = field(init=False, repr=False)  # node -> partition group (0: the rest)

    def __post_init__(self) -> None:
        n = len(self.placement)
        self._one_way = [[self.rtt_ms[(a, b)] / 2000.0 for b in self.placement] for a in self.placement]
        self._uplink_free = [[0.0, 0.0] for _ in range(n)]  # per node and queue (CONTROL, DATA)
        self._downlink_free = [[0.0, 0.0] for _ in range(n)]
        self._last_arrival = [0.0] * (n * n * 2)  # FIFO per link and queue
        self.side = [0] * n
        self._isolated: set[int] = set()
        self._sides_before: dict[int, int] = {}  # isolated node -> the side it rejoins

    @classmethod
    def spread(cls, n: int, regions: Sequence[str], rng: random.Random, **kwargs: float) -> NetworkModel:
        """Nodes placed round-robin over `regions` (node i in regions[i % len])."""
        return cls([regions[i % len(regions)] for i in range(n)], rng, **kwargs)

    # -- partitions ---------------------------------------------------------------------------
    def partition(self, groups: Iterable[Iterable[int]]) -> None:
        """Only nodes in the same group can talk; nodes in no group form one more group."""
        self.side = [0] * len(self.side)
        for index, group in enumerate(groups, start=1):
            for node in group:
                self.side[node] = index
        self._cut_isolated()

    def heal(self) -> None:
        self.side = [0] * len(self.side)
        self._cut_isolated()

    def isolate(self, node: int) -> None:
        """`node`'s links drop both ways until `rejoin` (a side of its own, kept across partitions)."""
        self._isolated.add(node)
        self._cut_isolated()

    def rejoin(self, node: int) -> None:
        """`node` is back on the side it would be on without its isolation (the current partition's)."""
        if node in self._isolated:
            self._isolated.discard(node)
            self.side[node] = self._sides_before.pop(node, 0)

    def _cut_isolated(self) -> None:
        for node in self._isolated:
            if self.side[node] >= 0:
                self._sides_before[node] = self.side[node]
                self.side[node] = -1 - node

    def connected(self, a: int, b: int) -> bool:
        return self.side[a] == self.side[b]

    @property
    def partitioned(self) -> bool:
        return any(self.side)

    # -- delivery -----------------------------------------------------------------------------
    def one_way(self, a: int, b: int) -> float:
        return self._one_way[a][b]

    def transmit(self, now: float, a: int, b: int, size: int, queue: int = CONTROL) -> float | None:
        """Arrival time of one copy from a to b, or None when it is lost or cut by a partition.

        Charges a's uplink even for a lost copy (it was sent), but not for a partitioned one (the
        real transport has no connection to send on)."""
        return self.transmit_all(now, a, (b,), size, queue)[0]

    def transmit_all(self, now: float, a: int, dsts: Sequence[int], size: int,
                     queue: int = CONTROL) -> list[float | None]:
        """`transmit` for copies of one frame to each of `dsts`, in order (one uplink queue)."""
        side, last_arrival, rng = self.side, self._last_arrival, self.rng
        one_way, loss, jitter = self._one_way[a], self.loss, self.jitter
        wire = size * 8.0 / self.bandwidth_bps
        uplink = self._uplink_free[a]
        free = uplink[queue]
        if now > free:
            free = now
        row = (a * len(side)) * 2 + queue
        my_side = side[a]
        out: list[float | None] = []
        for b in dsts:
            if side[b] != my_side:
                out.append(None)
                continue
            free += wire
            if loss and rng.random() < loss:
                out.append(None)
                continue
            base = one_way[b]
            arrive = free + base
            if jitter:
                arrive -= base * jitter * math.log(1.0 - rng.random())  # exponential, mean jitter * base
            link = row + 2 * b
            if arrive < last_arrival[link]:
                arrive = last_arrival[link]
            last_arrival[link] = arrive
            out.append(arrive)
        uplink[queue] = free
        return out

    def downlink(self, now: float, b: int, size: int, queue: int = CONTROL) -> float:
        """When a copy of `size` bytes that reached b's edge `now` has been read off b's downlink."""
        lanes = self._downlink_free[b]
        free = lanes[queue]
        done = (free if free > now else now) + size * 8.0 / self.downlink_bps
        lanes[queue] = done
        return done

    def reset_links(self, node: int) -> None:
        """A crashed node's connections are gone: forget FIFO state on its links."""
        n = len(self.side)
        self._downlink_free[node] = [0.0, 0.0]
        for other in range(n):
            for queue in (CONTROL, DATA):
                self._last_arrival[(node * n + other) * 2 + queue] = 0.0
                self._last_arrival[(other * n + node) * 2 + queue] = 0.0
