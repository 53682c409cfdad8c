"""What a primary must never forget, even across a restart: its own header and its votes.

A primary that forgot a vote could vote for a second header of the same author and round (two
certificates for one DAG slot), and one that forgot its header would propose another at the same
round, which correct peers refuse as equivocation, so that round might never gather a quorum. Narwhal
stores both before sending; here the primary emits `Persist(KEY, record)` before the header or vote
leaves (the driver writes it to the node's SQLite meta table first), and gets it back as `Recovered`.
Votes follow Narwhal's rule: for each author, only rounds above the last one voted, or the same header.
"""

from __future__ import annotations

import msgspec

from dwcp.consensus.bullshark.messages import Header
from dwcp.consensus.core.codec import encode
from dwcp.consensus.core.outputs import Persist

KEY = "bullshark.safety"


class SafetyRecord(msgspec.Struct, frozen=True, array_like=True):
    header: Header | None  # our newest header
    votes: tuple[tuple[int, int, bytes], ...]  # (author, round, header digest) of our newest vote per author


_decode = msgspec.msgpack.Decoder(SafetyRecord).decode


class VoteGuard:
    def __init__(self) -> None:
        self.last: dict[int, tuple[int, bytes]] = {}  # author -> (round, digest) of our newest vote
        self.own: Header | None = None

    def refuse(self, h: Header) -> str:
        """"" if we may vote for `h`, else why not (a metric label)."""
        last = self.last.get(h.author)
        if last is None or h.round > last[0] or (h.round, h.digest) == last:
            return ""
        return "equivocation" if h.round == last[0] else "stale"

    def voted(self, h: Header) -> Persist:
        self.last[h.author] = (h.round, h.digest)
        return self._record()

    def proposed(self, h: Header) -> Persist:
        self.own = h
        return self._record()

    def _record(self) -> Persist:
        votes = tuple((a, r, d) for a, (r, d) in sorted(self.last.items()))
        return Persist(key=KEY, value=encode(SafetyRecord(header=self.own, votes=votes)))

    def recover(self, value: bytes) -> Header | None:
        """Restore from a record; returns our own last header. Malformed records raise (our own data)."""
        record = _decode(value)
        self.last = {a: (r, d) for a, r, d in record.votes}
        self.own = record.header
        return record.header
