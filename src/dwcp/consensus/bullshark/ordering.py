"""Bullshark's commit rule over a Narwhal DAG, sans-IO (Narwhal's `bullshark.rs` + `utils.rs` shape).

Theory of operation. The primary feeds `process(certificate)` every certificate in causal order
(each one's parents already fed, or below the GC horizon). Even rounds have an anchor: the
certificate of the round's leader, chosen by `LeaderSchedule`. When a certificate of round r + 1
arrives, the anchor of round r commits if at least f + 1 certificates of round r + 1 (the
validity threshold) name it as a parent. Then, walking back two rounds at a time to the last
committed anchor, every earlier anchor with a path from the newest one linked so far is committed
first (`order_leaders`), and each anchor's causal history that no earlier commit took is flattened,
sorted by (round, author) (`order_dag`): one `CommittedSubDag` per anchor, in order. The history
follows weak links too (older certificates a header names so that they get ordered: a slow author's
certificates would otherwise never be); the commit rule and anchor links use strong parents only.

Why every node outputs the same sequence whatever order certificates arrive in: an anchor with f + 1
supporters at round r + 1 is reachable from every certificate of round >= r + 2 (each names 2f + 1
of round r + 1, and (2f + 1) + (f + 1) > n), so any later committed anchor links to it; and which
earlier anchors a linked anchor reaches, and what its history holds, are facts of the DAG, not of
delivery order. The GC horizon of an anchor (its round - gc_depth) depends only on that anchor.

Leader reputation (HammerHead, optional): after every `schedule_period` committed anchors the
schedule swaps the authors whose certificates voted least often for the previous anchor with the
ones that voted most often. The schedule is a function of the committed sequence, and a commit
pass stops right after the anchor that changed it and is re-run for the same certificate, so no
anchor is ever judged under a schedule another node would not use.

Certificates are trusted here (the primary verified them); this module never raises on them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol


class Vertex(Protocol):
    @property
    def round(self) -> int: ...
    @property
    def author(self) -> int: ...
    @property
    def digest(self) -> bytes: ...
    @property
    def parents(self) -> tuple[bytes, ...]: ...
    @property
    def weak(self) -> tuple:  # of (round, digest) links: followed when flattening, never by the commit rule
        ...


@dataclass(frozen=True, slots=True)
class Committed:
    """A committed vertex as the log remembers it (no parents needed once committed)."""

    round: int
    author: int
    digest: bytes
    parents: tuple[bytes, ...] = ()
    weak: tuple = ()


@dataclass(frozen=True, slots=True)
class CommittedSubDag:
    """One anchor and the certificates it commits (anchor last), numbered from 1 without gaps."""

    index: int
    leader: Vertex
    certificates: tuple[Vertex, ...]
    schedule: tuple[tuple[int, ...], tuple[int, ...], int] = ((), (), 0)  # LeaderSchedule.state() after it


class LeaderSchedule:
    """Round-robin anchors (`table[(round // 2) % n]`), optionally re-ranked by reputation."""

    def __init__(self, authors: Sequence[int], period: int = 0, swap: int = 0) -> None:
        self.base = tuple(sorted(authors))
        self.table = self.base
        self.period, self.swap = period, swap  # period 0: plain round-robin
        self.scores: dict[int, int] = dict.fromkeys(self.base, 0)
        self._commits = 0
        self.changes = 0

    def state(self) -> tuple[tuple[int, ...], tuple[int, ...], int]:
        """(table, scores in `base` order, commits so far): what a restored schedule needs."""
        return self.table, tuple(self.scores[a] for a in self.base), self._commits

    def restore(self, table: Sequence[int], scores: Sequence[int], commits: int) -> None:
        if table:
            self.table = tuple(table)
        if scores:
            self.scores = dict(zip(self.base, scores, strict=True))
        self._commits = commits

    def leader(self, round_: int) -> int:
        return self.table[(round_ // 2) % len(self.table)]

    def record(self, sub_dag: CommittedSubDag, previous: Vertex | None) -> bool:
        """Score one committed sub-DAG; True when this commit changed the schedule."""
        if not self.period:
            return False
        if previous is not None:
            for cert in sub_dag.certificates:
                if cert.round == previous.round + 1 and previous.digest in cert.parents:
                    self.scores[cert.author] += 1
        self._commits += 1
        if self._commits % self.period:
            return False
        ranked = sorted(self.base, key=lambda a: (-self.scores[a], a))
        good, bad = ranked[: self.swap], ranked[len(ranked) - self.swap:]
        swap = {b: g for b, g in zip(bad, good, strict=True) if b not in good}
        self.table = tuple(swap.get(a, a) for a in self.base)
        self.scores = dict.fromkeys(self.base, 0)
        self.changes += 1
        return True


@dataclass
class OrderingState:
    """The uncommitted DAG (by round, then author), the committed set, and what has been output."""

    dag: dict[int, dict[int, Vertex]] = field(default_factory=lambda: defaultdict(dict))
    support: dict[int, dict[bytes, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    committed: dict[int, set[bytes]] = field(default_factory=lambda: defaultdict(set))  # round -> digests
    last_committed_round: int = 0  # round of the newest committed anchor
    last_leader: Vertex | None = None
    next_index: int = 1


class Bullshark:
    """`process(certificate) -> [CommittedSubDag]`; `gc_depth` rounds of history are kept."""

    def __init__(self, authors: Sequence[int], *, gc_depth: int = 50, schedule_period: int = 0,
                 schedule_swap: int | None = None) -> None:
        self.n = len(authors)
        self.validity = (self.n - 1) // 3 + 1  # f + 1: see core.committee
        swap = (self.n - 1) // 3 if schedule_swap is None else schedule_swap
        self.schedule = LeaderSchedule(authors, schedule_period, swap)
        self.gc_depth = gc_depth
        self.state = OrderingState()

    @property
    def gc_round(self) -> int:
        """Certificates below this round are forgotten; their parents count as present."""
        return max(0, self.state.last_committed_round - self.gc_depth)

    def contains(self, digest: bytes, round_: int) -> bool:
        return any(v.digest == digest for v in self.state.dag.get(round_, {}).values()) or (
            digest in self.state.committed.get(round_, ())
        )

    def restore(self, index: int, leader: Committed, certificates: Sequence[Committed]) -> None:
        """Apply sub-DAG `index` from the log (restart or catch-up) instead of ordering it here.

        The caller restores the schedule (`schedule.restore`) from the same log entry."""
        st = self.state
        if index != st.next_index:
            raise ValueError(f"restoring sub-DAG {index}, expected {st.next_index}")
        for v in certificates:
            st.committed[v.round].add(v.digest)
            uncommitted = st.dag.get(v.round, {}).get(v.author)
            if uncommitted is not None and uncommitted.digest == v.digest:
                del st.dag[v.round][v.author]
        st.next_index += 1
        st.last_leader = leader
        st.last_committed_round = max(st.last_committed_round, leader.round)
        self._collect()

    def process(self, certificate: Vertex) -> list[CommittedSubDag]:
        st = self.state
        if certificate.round < self.gc_round or certificate.digest in st.committed.get(certificate.round, ()):
            return []
        if certificate.author in st.dag[certificate.round]:
            return []  # one certificate per author and round (2f+1 votes make it unique)
        st.dag[certificate.round][certificate.author] = certificate
        if certificate.round % 2:  # odd rounds vote for the anchor of the round below
            support = st.support[certificate.round - 1]  # anchor round -> digest -> children naming it
            for parent in certificate.parents:
                support[parent] += 1
        out: list[CommittedSubDag] = []
        while True:
            changed = self._try_commit(certificate.round - 1, out)
            if not changed:
                return out

    # -- the commit rule ---------------------------------------------------------------------
    def _try_commit(self, leader_round: int, out: list[CommittedSubDag]) -> bool:
        """Commit the anchor of `leader_round` if supported; True if the schedule changed mid-way."""
        st = self.state
        if leader_round % 2 or leader_round <= st.last_committed_round or leader_round < 2:
            return False
        leader = self._leader(leader_round)
        if leader is None or st.support[leader_round].get(leader.digest, 0) < self.validity:
            return False
        for anchor in reversed(self._order_leaders(leader)):
            sub_dag = CommittedSubDag(st.next_index, anchor, tuple(self._order_dag(anchor)))
            st.next_index += 1
            previous, st.last_leader = st.last_leader, anchor
            self._mark_committed(sub_dag)
            changed = self.schedule.record(sub_dag, previous)
            out.append(replace(sub_dag, schedule=self.schedule.state()))
            if changed:
                return True
        return False

    def _leader(self, round_: int) -> Vertex | None:
        return self.state.dag.get(round_, {}).get(self.schedule.leader(round_))

    def _order_leaders(self, leader: Vertex) -> list[Vertex]:
        """`leader`, then every earlier uncommitted anchor linked to the chain so far (newest first)."""
        chain = [leader]
        for r in range(leader.round - 2, self.state.last_committed_round, -2):
            previous = self._leader(r)
            if previous is not None and self._linked(chain[-1], previous):
                chain.append(previous)
        return chain

    def _linked(self, start: Vertex, target: Vertex) -> bool:
        frontier = {start.digest}
        dag = self.state.dag
        for r in range(start.round, target.round, -1):
            frontier = {p for v in dag.get(r, {}).values() if v.digest in frontier for p in v.parents}
            if not frontier:
                return False
        return target.digest in frontier

    def _order_dag(self, leader: Vertex) -> list[Vertex]:
        """The anchor's causal history not yet committed and not below its GC horizon, by (round, author)."""
        st = self.state
        horizon = max(0, leader.round - self.gc_depth)
        ordered: dict[bytes, Vertex] = {leader.digest: leader}
        stack = [leader]
        while stack:
            vertex = stack.pop()
            links = [(vertex.round - 1, p) for p in vertex.parents] + [(w.round, w.digest) for w in vertex.weak]
            for round_, digest in links:
                if round_ < horizon or digest in ordered or digest in st.committed.get(round_, ()):
                    continue
                parent = next((v for v in st.dag.get(round_, {}).values() if v.digest == digest), None)
                if parent is not None:
                    ordered[digest] = parent
                    stack.append(parent)
        return sorted(ordered.values(), key=lambda v: (v.round, v.author))

    def _mark_committed(self, sub_dag: CommittedSubDag) -> None:
        st = self.state
        for v in sub_dag.certificates:
            st.committed[v.round].add(v.digest)
            st.dag[v.round].pop(v.author, None)
        st.last_committed_round = max(st.last_committed_round, sub_dag.leader.round)
        self._collect()

    def _collect(self) -> None:
        st = self.state
        horizon = self.gc_round
        for table in (st.dag, st.committed, st.support):
            for r in [r for r in table if r < horizon]:
                del table[r]
