"""The certified DAG of one primary: certificates by round and author, delivered in causal order.

A certificate is *delivered* (handed to ordering, usable as a parent) only once every parent at or
above the GC round is delivered; until then it waits in `suspended`, and `missing()` says which
parents to fetch. Parents below the GC round count as present: they are committed or forgotten.
Everything below the GC round is dropped by `collect()`. Nothing here checks signatures: the primary
sanitizes a certificate before `add()`.
"""

from __future__ import annotations

from collections import defaultdict

from dwcp.consensus.bullshark.messages import DagCertificate, Link


def malformed_links(round_: int, parents: tuple[bytes, ...], weak: tuple[Link, ...], quorum: int, n: int) -> str:
    """Why a round-`round_` vertex's links cannot be (or ""): strong parents are none in round 1, else 2f + 1
    to n distinct; weak links at most n distinct, each to a round in 1 .. round_ - 2."""
    if round_ == 1 and parents:
        return "bad_parents"
    if round_ != 1 and (len(set(parents)) != len(parents) or not quorum <= len(parents) <= n):
        return "bad_parents"
    if len(weak) > n or len({w.digest for w in weak}) != len(weak) or any(not 1 <= w.round < round_ - 1 for w in weak):
        return "bad_parents"
    return ""


class Dag:
    def __init__(self) -> None:
        self.rounds: dict[int, dict[int, DagCertificate]] = defaultdict(dict)  # delivered
        self.by_digest: dict[bytes, DagCertificate] = {}
        self.suspended: dict[bytes, DagCertificate] = {}
        self._waiting_on: dict[bytes, set[bytes]] = defaultdict(set)  # missing parent -> suspended children
        self.gc_round = 0

    def __len__(self) -> int:
        return len(self.by_digest) + len(self.suspended)

    def has(self, digest: bytes) -> bool:
        return digest in self.by_digest

    def known(self, digest: bytes) -> bool:
        return digest in self.by_digest or digest in self.suspended

    def get(self, digest: bytes) -> DagCertificate | None:
        return self.by_digest.get(digest) or self.suspended.get(digest)

    def conflicts(self, cert: DagCertificate) -> bool:
        """A different delivered certificate of the same author and round (needs > f Byzantine voters)."""
        other = self.rounds.get(cert.round, {}).get(cert.author)
        return other is not None and other.digest != cert.digest

    def missing(self, cert: DagCertificate) -> list[bytes]:
        """Strong parents and weak links at or above the GC round that are not delivered yet."""
        strong = [] if cert.round - 1 < self.gc_round else [p for p in cert.parents if p not in self.by_digest]
        return strong + [w.digest for w in cert.weak if w.round >= self.gc_round and w.digest not in self.by_digest]

    def add(self, cert: DagCertificate) -> list[DagCertificate]:
        """Insert a sanitized certificate; return every certificate now delivered, parents first."""
        if self.known(cert.digest) or cert.round < self.gc_round:
            return []
        missing = self.missing(cert)
        if missing:
            self.suspended[cert.digest] = cert
            for p in missing:
                self._waiting_on[p].add(cert.digest)
            return []
        delivered: list[DagCertificate] = []
        ready = [cert]
        while ready:
            c = ready.pop()
            self.suspended.pop(c.digest, None)
            self.rounds[c.round][c.author] = c
            self.by_digest[c.digest] = c
            delivered.append(c)
            for child_digest in self._waiting_on.pop(c.digest, ()):
                child = self.suspended.get(child_digest)
                if child is not None and not self.missing(child):
                    ready.append(child)
        return delivered

    def wanted(self) -> set[bytes]:
        """Parents some suspended certificate waits for, that are not suspended themselves."""
        return {p for p in self._waiting_on if p not in self.suspended and p not in self.by_digest}

    def count(self, round_: int) -> int:
        return len(self.rounds.get(round_, {}))

    def collect(self, gc_round: int) -> list[DagCertificate]:
        """Forget everything below `gc_round`; returns suspended certificates that became deliverable."""
        if gc_round <= self.gc_round:
            return []
        self.gc_round = gc_round
        for r in [r for r in self.rounds if r < gc_round]:
            for c in self.rounds.pop(r).values():
                self.by_digest.pop(c.digest, None)
        released: list[DagCertificate] = []
        for digest, c in list(self.suspended.items()):
            if c.round < gc_round:
                del self.suspended[digest]
            elif not self.missing(c):
                released.append(c)
        for p in [p for p, children in self._waiting_on.items() if not children & self.suspended.keys()]:
            del self._waiting_on[p]
        out: list[DagCertificate] = []
        for c in sorted(released, key=lambda c: c.round):
            if c.digest in self.suspended:
                del self.suspended[c.digest]
                out += self.add(c)
        return out
