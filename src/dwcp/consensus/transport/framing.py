"""Length-prefixed frames on a byte stream, sans-IO (the shape of h11's readers/writers).

A frame is a 5-byte header, then the payload:

    +----------------+---------+------------------+
    | length: u32 BE | channel | payload (length) |
    +----------------+---------+------------------+

`channel` separates traffic that must not queue behind each other on one connection: the
handshake, consensus messages, catch-up, and (for Narwhal workers) multi-megabyte batch data.
Each channel has its own size limit, checked on the header before a byte of payload is buffered,
so a peer cannot make us allocate more than the limit. A bad header cannot be skipped (the stream
has no resync point): the decoder still returns the good frames before it, then keeps the
`FrameError` in `failed` (and raises it on any later feed); the caller closes the connection.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

HEADER = struct.Struct("!IB")
HEADER_SIZE = HEADER.size


class Channel(enum.IntEnum):
    """What a frame carries; each has its own outbound queue and size limit."""

    HANDSHAKE = 0  # unused since links are TLS (runtime/peerauth.py); a frame on it is refused
    CONSENSUS = 1
    SYNC = 2
    DATA = 3


# Consensus messages (votes, pre-prepares with a batch of txs) stay well under 1 MiB; catch-up
# responses carry several blocks; the data plane moves Narwhal worker batches of a few MB.
DEFAULT_LIMITS: dict[Channel, int] = {
    Channel.HANDSHAKE: 4 * 1024,
    Channel.CONSENSUS: 1 * 1024 * 1024,
    Channel.SYNC: 8 * 1024 * 1024,
    Channel.DATA: 8 * 1024 * 1024,
}


class FrameError(Exception):
    """The peer sent a header we cannot accept; `reason` is a metric label (few values)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Frame:
    channel: Channel
    payload: bytes


def _by_wire_value(limits: dict[Channel, int]) -> dict[int, tuple[Channel, int]]:
    """Header byte -> (channel, its limit), looked up per frame: `Channel(raw)` costs ~2 us in 3.11's enum,
    a dict lookup ~0.1 (issue 12: ~15 frames in per block per node)."""
    return {int(channel): (channel, limits[channel]) for channel in Channel}


def encode_frame(channel: Channel, payload: bytes, limits: dict[Channel, int] | None = None) -> bytes:
    """Header plus payload; refuses (ValueError: our own misuse) a payload over the channel's limit."""
    limit = (limits or DEFAULT_LIMITS)[channel]
    if len(payload) > limit:
        raise ValueError(f"{channel.name} frame of {len(payload)} bytes exceeds the {limit}-byte limit")
    return HEADER.pack(len(payload), channel) + payload


def _checked_channel(channels: dict[int, tuple[Channel, int]], length: int, raw_channel: int) -> Channel:
    """The channel a frame header names, once its length is within that channel's limit."""
    known = channels.get(raw_channel)
    if known is None:
        raise FrameError("unknown_channel", f"frame on unknown channel {raw_channel}")
    channel, limit = known
    if length > limit:
        raise FrameError("oversize", f"{channel.name} frame of {length} bytes exceeds the {limit}-byte limit")
    return channel


class FrameDecoder:
    """Turns stream bytes, fed in any chunking (one byte at a time included), into frames."""

    def __init__(self, limits: dict[Channel, int] | None = None) -> None:
        self._limits = dict(limits or DEFAULT_LIMITS)
        self._channels = _by_wire_value(self._limits)
        self._buf = bytearray()  # bytes of an incomplete frame (its header already parsed once `_need` is set)
        self._need: tuple[int, Channel] | None = None  # parsed header awaiting its payload
        self.failed: FrameError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames (bounded by header + largest limit)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        """Add bytes; return every frame now complete, up to the first bad header (see `failed`).

        Each payload is copied once, into its own `bytes`: straight from `data` when nothing was
        buffered before (the usual case: a read holds whole frames), else from the buffer.
        """
        if self.failed is not None:
            raise self.failed
        if self._buf:
            self._buf += data
            source: bytes | bytearray = self._buf
        else:
            source = data if isinstance(data, bytes) else bytes(data)
        end, pos = len(source), 0
        frames: list[Frame] = []
        while True:
            if self._need is None:
                if end - pos < HEADER_SIZE:
                    break
                length, raw_channel = HEADER.unpack_from(source, pos)
                try:
                    self._need = (length, self._check_header(length, raw_channel))
                except FrameError as exc:
                    self.failed = exc
                    self._buf.clear()
                    return frames
                pos += HEADER_SIZE
            length, channel = self._need
            if end - pos < length:
                break
            if source is self._buf:
                with memoryview(self._buf) as view:
                    payload = bytes(view[pos : pos + length])
            else:
                payload = source[pos : pos + length]
            frames.append(Frame(channel, payload))
            pos += length
            self._need = None
        if source is self._buf:
            del self._buf[:pos]
        elif pos < end:
            self._buf += source[pos:]  # a partial frame waits for the rest
        return frames

    def _check_header(self, length: int, raw_channel: int) -> Channel:
        return _checked_channel(self._channels, length, raw_channel)


class FrameReader:
    """Frames for `asyncio.BufferedProtocol`, zero-copy: the socket reads into `buffer()`.

    A header is read into a 5-byte buffer; its length is checked against the channel's limit; then the
    socket reads the payload straight into one buffer the reader keeps for its life (grown to the longest
    frame yet, so never past the largest channel limit). `filled(n)` returns the frame once complete, as
    `(channel, memoryview)`, else None; a bad header raises FrameError. The view is valid only until the
    next `buffer()` call: whatever must outlive it copies it.

    Not a fresh bytearray per frame: for a 500 KB worker batch that cost ~100 us of CPU here (its
    zero-fill, plus ~26 page faults as glibc hands the memory back and takes it again), against ~130 us
    to hash the batch; the reused buffer costs ~3 (session 6b, docs/bullshark.md).
    """

    def __init__(self, limits: dict[Channel, int] | None = None) -> None:
        self._limits = dict(limits or DEFAULT_LIMITS)
        self._channels = _by_wire_value(self._limits)
        self._head = bytearray(HEADER_SIZE)
        self._n = 0
        self._channel: Channel | None = None
        self._length: int | None = None  # the payload length of the frame being read, once its header is in
        self._body = bytearray()

    def buffer(self) -> memoryview:
        if self._length is None:
            return memoryview(self._head)[self._n:]
        return memoryview(self._body)[self._n:self._length]

    def filled(self, n: int) -> tuple[Channel, memoryview] | None:
        self._n += n
        if self._length is None:
            if self._n < HEADER_SIZE:
                return None
            length, raw = HEADER.unpack_from(self._head)
            self._channel = _checked_channel(self._channels, length, raw)
            if length > len(self._body):
                self._body = bytearray(length)  # a new one: views of the old one may still be alive
            self._length, self._n = length, 0
        if self._n < self._length:
            return None
        frame = (self._channel, memoryview(self._body)[: self._length])
        self._length, self._channel, self._n = None, None, 0
        return frame  # type: ignore[return-value]
