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


class BatchRequests:
    """When to ask our worker again for a parked header's batches: on the header's arrival, then after
    1, 2, 4, ... `MAX_WAIT` sync ticks (the primary's sync timer is the clock).

    A withholding author's batches never arrive, and its uncertified header comes back on every sync tick
    (it re-broadcasts it, naming more batches each round): asking for all of them on each arrival and each
    tick was 2.0 M fetches at n = 100 with 33 Byzantine nodes, each one a request to peers that do not hold
    the batch. Narwhal's worker, likewise, retries a missing batch only every `sync_retry_delay`.
    """

    MAX_WAIT = 16  # sync ticks (4 s at the default 0.25 s)

    def __init__(self) -> None:
        self.tick = 0
        self._due: dict[bytes, tuple[int, int]] = {}  # digest -> (tick it may be asked again, last wait)

    def __len__(self) -> int:
        return len(self._due)

    def due(self, digests: Iterable[bytes]) -> tuple[bytes, ...]:
        """The `digests` to ask for now (each is then not due again for twice its last wait)."""
        out = []
        for digest in digests:
            entry = self._due.get(digest)
            if entry is None or self.tick >= entry[0]:
                wait = 1 if entry is None else min(2 * entry[1], self.MAX_WAIT)
                self._due[digest] = (self.tick + wait, wait)
                out.append(digest)
        return tuple(out)

    def next_tick(self, still_wanted: set[bytes]) -> None:
        """A sync tick: forget batches no parked header waits for any more (arrived, replaced, collected)."""
        self.tick += 1
        for digest in [d for d in self._due if d not in still_wanted]:
            del self._due[digest]
