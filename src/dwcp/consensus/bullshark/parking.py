"""Peers' headers a primary cannot vote on yet, indexed by what each waits for (for primary.py).

A header waits until its parent certificates are delivered here or until our worker holds its batches;
one header per author (a newer one replaces the older). Each is indexed by the digests it waits on,
so a delivered certificate or a stored batch re-examines only the headers that named it, once all they
waited on is here. Re-examining every parked header after each delivered certificate (and asking the
worker again for the batches of each) made a 100-node committee with Byzantine authors crawl: the
headers of authors that withhold their batches stay parked for good, and a round delivers ~100
certificates.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from dwcp.consensus.bullshark.messages import Header


class Parked:
    def __init__(self) -> None:
        self.headers: dict[int, tuple[int, Header]] = {}  # author -> (sender, header)
        self._remaining: dict[int, set[bytes]] = {}  # author -> digests its header still waits for
        self._waiters: dict[bytes, set[int]] = defaultdict(set)  # certificate or batch digest -> authors
        self._on_links: set[int] = set()  # authors whose header waits for certificates (not batches)

    def __len__(self) -> int:
        return len(self.headers)

    def park(self, sender: int, header: Header, waiting_on: Iterable[bytes], *, links: bool) -> None:
        """`header` waits for the certificates (`links`) or the batches `waiting_on`."""
        remaining = set(waiting_on)
        if not remaining:
            raise ValueError("a parked header must wait for something")
        self.drop(header.author)
        self.headers[header.author] = (sender, header)
        if links:
            self._on_links.add(header.author)
        self._remaining[header.author] = remaining
        for digest in remaining:
            self._waiters[digest].add(header.author)

    def drop(self, author: int) -> None:
        self.headers.pop(author, None)
        self._remaining.pop(author, None)
        self._on_links.discard(author)

    def arrived(self, digests: Iterable[bytes]) -> list[tuple[int, Header]]:
        """`digests` are delivered or stored now: the headers that waited on nothing else (taken out)."""
        ready = []
        for digest in digests:
            for author in self._waiters.pop(digest, ()):
                remaining = self._remaining.get(author)
                if remaining is not None and digest in remaining:
                    remaining.discard(digest)
                    if not remaining:
                        ready.append(author)
        return [self._take(author) for author in sorted(ready)]

    def take_waiting_for_links(self) -> list[tuple[int, Header]]:
        """Headers that wait for certificates (after GC, some wait for ones nobody needs any more)."""
        out = [self._take(author) for author in sorted(self._on_links)]
        for digest in [d for d, authors in self._waiters.items() if not authors & self.headers.keys()]:
            del self._waiters[digest]  # only headers taken out or replaced waited for it
        return out

    def _take(self, author: int) -> tuple[int, Header]:
        del self._remaining[author]
        self._on_links.discard(author)
        return self.headers.pop(author)
