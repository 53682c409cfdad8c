"""What a primary must never forget, even across a restart: its own header and its votes.

A primary that forgot a vote could vote for a second header of the same author and round (two
certificates for one DAG slot), and one that forgot its header would propose another at the same
round, which correct peers refuse as equivocation, so that round might never gather a quorum. Narwhal
stores both before sending; here the primary emits `Persist` before the header or vote leaves (the
driver writes it to the node's core state first), and gets it back as `Recovered`.
Votes follow Narwhal's rule: for each author, only rounds above the last one voted, or the same header.

One record per author's vote (`VOTE_PREFIX` + author) and one for our header (`KEY`): a vote writes
only what it changed. A single record of every author's last vote cost O(n) to encode and write on
each vote, at n = 100 about 100 votes a round.
"""

from __future__ import annotations

import msgspec

from dwcp.consensus.bullshark.messages import Header
from dwcp.consensus.core.codec import encode
from dwcp.consensus.core.outputs import Persist

KEY = "bullshark.safety"
VOTE_PREFIX = "bullshark.vote."


class SafetyRecord(msgspec.Struct, frozen=True, array_like=True):
    header: Header | None  # our newest header
    votes: tuple[tuple[int, int, bytes], ...] = ()  # (author, round, digest); written by older nodes only


class VoteRecord(msgspec.Struct, frozen=True, array_like=True):
    round: int
    digest: bytes  # of the header we voted for


_decode = msgspec.msgpack.Decoder(SafetyRecord).decode
_decode_vote = msgspec.msgpack.Decoder(VoteRecord).decode


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
        return Persist(key=f"{VOTE_PREFIX}{h.author}", value=encode(VoteRecord(round=h.round, digest=h.digest)))

    def proposed(self, h: Header) -> Persist:
        self.own = h
        return Persist(key=KEY, value=encode(SafetyRecord(header=h)))

    def _remember(self, author: int, round_: int, digest: bytes) -> None:
        if author not in self.last or round_ > self.last[author][0]:
            self.last[author] = (round_, digest)

    def recover(self, value: bytes) -> Header | None:
        """Restore from our header's record; returns that header. Malformed records raise (our own data)."""
        record = _decode(value)
        for author, round_, digest in record.votes:
            self._remember(author, round_, digest)
        self.own = record.header
        return record.header

    def recover_vote(self, key: str, value: bytes) -> None:
        """Restore one author's vote record (`key` starts with VOTE_PREFIX)."""
        record = _decode_vote(value)
        self._remember(int(key[len(VOTE_PREFIX):]), record.round, record.digest)
