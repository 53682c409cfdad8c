"""Seeded DAG fixtures for the ordering core (Narwhal's `make_optimal_certificates` and friends).

A `Cert` is a bare vertex (round, author, digest, parents): the ordering core needs nothing else.
`random_dag` builds rounds where every live author names a random 2f+1-or-more subset of the
previous round; `missing` authors never produce, `slow` authors produce late (skipping rounds) and
are rarely named as parents. `causal_orders` yields random topological orders of a DAG.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Link:
    round: int
    digest: bytes


@dataclass(frozen=True, slots=True)
class Cert:
    round: int
    author: int
    digest: bytes
    parents: tuple[bytes, ...]
    weak: tuple[Link, ...] = ()


def make_cert(round_: int, author: int, parents: Sequence[bytes], weak: Sequence[Link] = ()) -> Cert:
    parents = tuple(sorted(parents))
    digest = hashlib.blake2b(f"{round_}/{author}/".encode() + b"".join(parents) + b"".join(w.digest for w in weak),
                             digest_size=16).digest()
    return Cert(round_, author, digest, parents, tuple(weak))


def full_rounds(n: int, rounds: int, authors: Sequence[int] | None = None) -> list[Cert]:
    """Every author of `authors` (default all n) in every round, naming all of the previous round."""
    authors = list(range(n)) if authors is None else list(authors)
    out: list[Cert] = []
    previous: list[bytes] = []
    for r in range(1, rounds + 1):
        current = [make_cert(r, a, previous) for a in authors]
        out += current
        previous = [c.digest for c in current]
    return out


def random_dag(seed: int, n: int, rounds: int, missing: Sequence[int] = (), slow: Sequence[int] = (),
               weak_links: bool = True) -> list[Cert]:
    """... and, with `weak_links`, each author sometimes links certificates nothing references yet."""
    rng = random.Random(seed)
    unreferenced: dict[bytes, Cert] = {}
    f = (n - 1) // 3
    quorum = 2 * f + 1
    live = [a for a in range(n) if a not in missing]
    out: list[Cert] = []
    previous: list[Cert] = []
    for r in range(1, rounds + 1):
        current: list[Cert] = []
        for author in live:
            if author in slow and r > 1 and rng.random() < 0.4:
                continue  # lagging: no certificate this round
            if r == 1:
                current.append(make_cert(r, author, ()))
                continue
            prompt = [c for c in previous if c.author not in slow]
            late = [c for c in previous if c.author in slow]
            rng.shuffle(prompt)
            k = rng.randint(min(quorum, len(prompt)), len(prompt))
            chosen = prompt[:k] + [c for c in late if rng.random() < 0.2]
            if len(chosen) < quorum:
                chosen += [c for c in late if c not in chosen][: quorum - len(chosen)]
            weak = [Link(c.round, c.digest) for c in unreferenced.values() if c.round < r - 1] \
                if weak_links and rng.random() < 0.5 else []
            current.append(make_cert(r, author, [c.digest for c in chosen], weak))
        for c in current:
            for p in c.parents:
                unreferenced.pop(p, None)
            for w in c.weak:
                unreferenced.pop(w.digest, None)
        unreferenced.update({c.digest: c for c in current})
        out += current
        previous = current
    return out


def causal_orders(dag: Sequence[Cert], count: int, seed: int) -> Iterator[list[Cert]]:
    """`count` random orders in which every certificate comes after all of its parents."""
    rng = random.Random(seed)
    children: dict[bytes, list[Cert]] = {c.digest: [] for c in dag}
    for c in dag:
        for p in (*c.parents, *(w.digest for w in c.weak)):
            children[p].append(c)
    for _ in range(count):
        missing = {c.digest: len(c.parents) + len(c.weak) for c in dag}
        ready = [c for c in dag if not c.parents and not c.weak]
        order: list[Cert] = []
        while ready:
            cert = ready.pop(rng.randrange(len(ready)))
            order.append(cert)
            for child in children[cert.digest]:
                missing[child.digest] -= 1
                if missing[child.digest] == 0:
                    ready.append(child)
        yield order
