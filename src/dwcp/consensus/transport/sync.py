"""Catch-up: the SYNC-channel messages and a sans-IO planner deciding whom to ask for which heights.

Every node tells its peers its committed height every `sync_interval` (`SyncStatus`); to a peer
that said it is behind, once per height, it adds its block at that height and the block's commit
certificate as proof. A claim to be ahead is believed only with a proof the core's
`verify_certificate` accepts (driver.py), so a peer cannot pin a node in "catching up" with a
made-up height, and the proof is protocol-agnostic. A node that sees a peer proven ahead
of it asks that peer for the next heights (`SyncRequest`, at most `max_blocks`), and the peer
answers from its block store (`SyncBlocks`: each block with its commit certificate, as the codec's
bytes). The receiver verifies every certificate against the committee before it stores a block, so
a lying peer can stall a catch-up but never corrupt a log. An answer that brings no block, or an
unanswered request, makes the planner forget that peer until its next proven status, so a peer
that claims and then withholds costs one request per status interval, never a request storm.

Protocol-agnostic: blocks and certificates are opaque bytes on the wire, as in the block store, and
`apply_fetched` takes them decoded without looking inside. The driver and the simulator both plan with
`CatchUpPlanner` and apply with `apply_fetched`, so what the simulator's campaigns test is what nodes run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import msgspec

SYNC_VERSION = 2  # v2: SyncStatus may carry its proof


class SyncStatus(msgspec.Struct, tag="status", frozen=True):
    height: int
    block: bytes = b""  # the sender's block at `height` and its certificate (codec bytes): the proof,
    certificate: bytes = b""  # sent to a peer that is behind; empty otherwise


class SyncRequest(msgspec.Struct, tag="request", frozen=True):
    start: int
    end: int  # inclusive


class SyncBlock(msgspec.Struct, frozen=True):
    height: int
    block: bytes
    certificate: bytes


class SyncBlocks(msgspec.Struct, tag="blocks", frozen=True):
    blocks: list[SyncBlock]


SyncMessage = SyncStatus | SyncRequest | SyncBlocks


class SyncEnvelope(msgspec.Struct, frozen=True, array_like=True):
    version: int
    message: SyncMessage


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(SyncEnvelope)


class SyncDecodeError(ValueError):
    pass


def encode_sync(message: SyncMessage) -> bytes:
    return _encoder.encode(SyncEnvelope(SYNC_VERSION, message))


def decode_sync(data: bytes) -> SyncMessage:
    """Strictly typed decode; anything else (wrong version, shape, types) is a SyncDecodeError."""
    try:
        env = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise SyncDecodeError(str(exc)) from None
    if env.version != SYNC_VERSION:
        raise SyncDecodeError(f"sync v{env.version}, we speak v{SYNC_VERSION}")
    return env.message


class CatchUpPlanner:
    """Tracks peers' heights and keeps at most one catch-up request in flight."""

    def __init__(self, max_blocks: int = 64, timeout: float = 2.0) -> None:
        self.max_blocks = max_blocks
        self.timeout = timeout
        self.peer_heights: dict[int, int] = {}
        self._outstanding: tuple[int, int, float] | None = None  # (peer, start, deadline)
        self._last_peer: int | None = None

    @property
    def outstanding(self) -> int | None:
        return self._outstanding[0] if self._outstanding else None

    def on_status(self, peer: int, height: int) -> None:
        self.peer_heights[peer] = max(height, self.peer_heights.get(peer, height))

    def behind(self, local_height: int) -> bool:
        return max(self.peer_heights.values(), default=local_height) > local_height

    def next_request(self, now: float, local_height: int) -> tuple[int, SyncRequest] | None:
        """Whom to ask for what now, or None (nothing missing, or a request still in time)."""
        if self._outstanding is not None:
            peer, start, deadline = self._outstanding
            if now < deadline and start > local_height:
                return None
            self._outstanding = None  # answered by now, or timed out: re-plan
        ahead = sorted(p for p, h in self.peer_heights.items() if h > local_height)
        if not ahead:
            return None
        # Rotate past the last peer asked, so one slow or lying peer cannot hold us back.
        later = [p for p in ahead if self._last_peer is None or p > self._last_peer]
        peer = (later or ahead)[0]
        end = min(self.peer_heights[peer], local_height + self.max_blocks)
        self._outstanding = (peer, local_height + 1, now + self.timeout)
        self._last_peer = peer
        return peer, SyncRequest(start=local_height + 1, end=end)

    def on_response(self, peer: int, local_height: int) -> None:
        """A response from `peer` brought blocks; the next request may go out at once."""
        if self._outstanding is not None and self._outstanding[0] == peer:
            self._outstanding = None
        self.peer_heights[peer] = max(self.peer_heights.get(peer, 0), local_height)

    def forget(self, peer: int) -> None:
        """`peer` sent a block that failed verification: stop asking it until it reports again."""
        self.peer_heights.pop(peer, None)
        if self._outstanding is not None and self._outstanding[0] == peer:
            self._outstanding = None


def apply_fetched(planner: CatchUpPlanner, peer: int, items: Iterable[tuple[int, Any, Any]],
                  next_height: Callable[[], int], verify: Callable[[int, Any, Any], bool],
                  feed: Callable[[Any, Any], None]) -> bool:
    """Apply `peer`'s answer: feed its `(height, block, certificate)` items, ascending, that continue our
    log (those below `next_height()` are skipped, a gap ends the batch), each only after
    `verify(height, block, certificate)` (`feed(block, certificate)`: the core then commits it),
    stopping at a block the core did not commit; then tell `planner`. Returns False when a
    certificate failed; `peer` is then not asked again until it reports anew, nor when it sent
    nothing usable."""
    start = next_height()
    for height, block, certificate in items:
        expected = next_height()
        if height < expected:
            continue  # committed meanwhile by the core itself
        if height > expected:
            break  # not contiguous: ask again from where we are
        if not verify(height, block, certificate):
            planner.forget(peer)
            return False
        feed(block, certificate)
        if next_height() == expected:
            break  # the core did not commit it (e.g. not yet at that height): stop here
    if next_height() == start:  # nothing usable: ask elsewhere, or this peer after its next proof
        planner.forget(peer)
    else:
        planner.on_response(peer, next_height() - 1)
    return True
