"""EigenTrust for T-PBFT: local opinions from observed behaviour, global trust by power iteration.

Two tables, two owners:

- `Opinions` is what *this* node saw: per peer, a count of satisfactory (`sat`) and
  unsatisfactory (`unsat`) interactions. It is private and differs between nodes; a node publishes
  it in a signed trust report, and only reports that were *committed* in a block ever reach the
  trust computation.
- `TrustTable` holds the latest committed report of every reporter (one row each) and turns them
  into global trust. Every correct node applies the same committed reports in the same order, so
  every correct node computes the same trust and picks the same consensus group.

Rules (docs/tpbft.md has the rationale):

| event      | recorded by the observer as    | when                                                |
|------------|--------------------------------|-----------------------------------------------------|
| timely     | sat   += 1                     | a group member's vote arrived before we executed    |
| late       | unsat += 1                     | ... arrived more than `late_after` after execution  |
| missing    | unsat += 1                     | ... never arrived before the height was evaluated   |
| invalid    | unsat += 2                     | a message failed its phase checks                   |
| conflict   | unsat += 10                    | a double vote or an equivocating pre-prepare        |
| deposed    | unsat += 5                     | a view change replaced the peer as primary          |

Local trust of reporter i in peer j (j != i): s_ij = max(prior + sat_ij - unsat_ij, 0), where the
small `prior` makes a peer nobody has seen misbehave (a follower) rank above one that did.
Normalised: c_ij = s_ij / sum_j s_ij; a reporter with no report or an all-zero row gets c_i = p.
Global trust: t_0 = p, t_{k+1} = (1 - a) C^T t_k + a p until sum |t_{k+1} - t_k| < tolerance
(or `max_iterations`), with p uniform over the pre-trusted set (the whole committee if empty).

Determinism: the iteration is plain Python floats in a fixed loop order (no BLAS, whose summation
order may differ between machines), and `ranking` breaks ties by node id after rounding trust to
`RANK_DIGITS` decimals, so equal inputs give an identical order on every machine.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

EVENT_WEIGHTS: dict[str, tuple[int, int]] = {
    "timely": (1, 0),
    "late": (0, 1),
    "missing": (0, 1),
    "invalid": (0, 2),
    "conflict": (0, 10),
    "deposed": (0, 5),
}
"""event -> (sat, unsat) increments."""

RANK_DIGITS = 12
MAX_COUNT = 1 << 40  # reports with larger counters are malformed (bounded arithmetic, small encodings)


class Opinions:
    """This node's own interaction counters, per peer (never about itself)."""

    def __init__(self, me: int, peers: Iterable[int]) -> None:
        self.me = me
        self.peers = tuple(sorted(p for p in peers if p != me))
        self.sat: dict[int, int] = dict.fromkeys(self.peers, 0)
        self.unsat: dict[int, int] = dict.fromkeys(self.peers, 0)

    def observe(self, peer: int, event: str, times: int = 1) -> None:
        """Count `times` events of kind `event` about `peer`; unknown peers and ourselves are ignored."""
        if peer not in self.sat:
            return
        sat, unsat = EVENT_WEIGHTS[event]
        self.sat[peer] = min(self.sat[peer] + sat * times, MAX_COUNT)
        self.unsat[peer] = min(self.unsat[peer] + unsat * times, MAX_COUNT)

    def decay(self) -> None:
        """Halve every counter (integer division): old behaviour fades with a half-life of one epoch."""
        for p in self.peers:
            self.sat[p] //= 2
            self.unsat[p] //= 2

    def snapshot(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(peers, sat, unsat) in peer order, the shape of a trust report."""
        return self.peers, tuple(self.sat[p] for p in self.peers), tuple(self.unsat[p] for p in self.peers)


def normalise(rows: Sequence[Sequence[float]], p: Sequence[float]) -> list[list[float]]:
    """Row-normalise non-negative local trust; an all-zero row becomes the pre-trusted vector `p`."""
    out: list[list[float]] = []
    for row in rows:
        total = 0.0
        for x in row:
            if x < 0:
                raise ValueError("local trust must be non-negative")
            total += x
        out.append([x / total for x in row] if total > 0 else list(p))
    return out


def eigentrust(c: Sequence[Sequence[float]], p: Sequence[float], *, damping: float,
               tolerance: float = 1e-12, max_iterations: int = 1000) -> tuple[list[float], int]:
    """Power iteration t <- (1 - a) C^T t + a p from t = p. Returns (t, iterations used).

    `c` must be row-stochastic (see `normalise`) and `p` a distribution, so every iterate is one.
    """
    n = len(p)
    if len(c) != n or any(len(row) != n for row in c):
        raise ValueError("C must be n x n for n = len(p)")
    if not 0.0 <= damping <= 1.0:
        raise ValueError("damping must be in [0, 1]")
    t = list(p)
    for k in range(1, max_iterations + 1):
        nxt = [damping * p[j] for j in range(n)]
        for i in range(n):
            ti = (1.0 - damping) * t[i]
            if ti == 0.0:
                continue
            row = c[i]
            for j in range(n):
                nxt[j] += ti * row[j]
        delta = 0.0
        for j in range(n):
            delta += abs(nxt[j] - t[j])
        t = nxt
        if delta < tolerance:
            return t, k
    return t, max_iterations


def ranking(trust: Mapping[int, float]) -> tuple[int, ...]:
    """Node ids, most trusted first; equal trust (after rounding) goes to the lower id."""
    return tuple(sorted(trust, key=lambda i: (-round(trust[i], RANK_DIGITS), i)))


class TrustTable:
    """Committed trust reports (one row per reporter) and the global trust they imply."""

    def __init__(self, ids: Iterable[int], *, damping: float = 0.15, pre_trusted: Iterable[int] = (),
                 prior: int = 1, tolerance: float = 1e-12, max_iterations: int = 1000) -> None:
        self.ids = tuple(sorted(ids))
        self.index = {node: k for k, node in enumerate(self.ids)}
        pre = sorted(set(pre_trusted))
        if any(i not in self.index for i in pre):
            raise ValueError(f"pre-trusted nodes {pre} are not all in the committee")
        trusted = pre or list(self.ids)
        self.p = [1.0 / len(trusted) if i in trusted else 0.0 for i in self.ids]
        self.damping, self.prior = damping, prior
        self.tolerance, self.max_iterations = tolerance, max_iterations
        self.rows: dict[int, dict[int, tuple[int, int]]] = {}  # reporter -> peer -> (sat, unsat)
        self.iterations = 0

    def set_row(self, reporter: int, peers: Sequence[int], sat: Sequence[int], unsat: Sequence[int]) -> None:
        """Replace `reporter`'s row with its latest report (reports are cumulative, not deltas).

        Entries about unknown nodes or the reporter itself are ignored."""
        if reporter not in self.index:
            return
        self.rows[reporter] = {
            peer: (s, u) for peer, s, u in zip(peers, sat, unsat, strict=True)
            if peer in self.index and peer != reporter
        }

    def local_trust(self) -> list[list[float]]:
        """s_ij = max(prior + sat - unsat, 0) for reporters with a row; zeros otherwise."""
        n = len(self.ids)
        s = [[0.0] * n for _ in range(n)]
        for reporter, row in self.rows.items():
            i = self.index[reporter]
            for j, peer in enumerate(self.ids):
                if peer == reporter:
                    continue
                sat, unsat = row.get(peer, (0, 0))
                s[i][j] = float(max(self.prior + sat - unsat, 0))
        return s

    def matrix(self) -> list[list[float]]:
        """The normalised local trust matrix C (rows in `ids` order)."""
        return normalise(self.local_trust(), self.p)

    def global_trust(self) -> dict[int, float]:
        t, self.iterations = eigentrust(self.matrix(), self.p, damping=self.damping, tolerance=self.tolerance,
                                        max_iterations=self.max_iterations)
        return dict(zip(self.ids, t, strict=True))
