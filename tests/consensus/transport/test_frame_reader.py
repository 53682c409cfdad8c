"""The zero-copy FrameReader: the same frames from one-shot and one-byte-at-a-time reads, into one reused
buffer; bad headers raise."""

from __future__ import annotations

import pytest

from dwcp.consensus.transport.framing import Channel, FrameError, FrameReader, encode_frame

CASES = [(Channel.DATA, b"\x01" + b"b" * 3000), (Channel.HANDSHAKE, b"hello"), (Channel.DATA, b""),
         (Channel.CONSENSUS, bytes(range(256)))]


def read_all(reader: FrameReader, data: bytes, step: int) -> list[tuple[Channel, bytes]]:
    frames, pos = [], 0
    while pos < len(data):
        view = reader.buffer()
        n = min(step, len(view), len(data) - pos)
        view[:n] = data[pos: pos + n]
        pos += n
        frame = reader.filled(n)
        if frame is not None:
            frames.append((frame[0], bytes(frame[1])))
    return frames


@pytest.mark.parametrize("step", [1, 7, 1 << 20])
def test_frames_survive_any_chunking(step) -> None:
    data = b"".join(encode_frame(ch, p) for ch, p in CASES)
    assert read_all(FrameReader(), data, step) == CASES


def test_payload_lands_in_the_buffer_it_is_returned_in() -> None:
    reader = FrameReader()
    head = encode_frame(Channel.DATA, b"xyz")[:5]
    reader.buffer()[:5] = head
    assert reader.filled(5) is None
    target = reader.buffer()
    target[:3] = b"xyz"
    channel, body = reader.filled(3)
    assert channel is Channel.DATA and body == b"xyz" and target.obj is body.obj  # read into, never copied


def read_one(reader: FrameReader, payload: bytes) -> memoryview:
    data = encode_frame(Channel.DATA, payload)
    reader.buffer()[:5] = data[:5]
    assert reader.filled(5) is None or not payload
    if payload:
        reader.buffer()[:] = data[5:]
        frame = reader.filled(len(payload))
    else:
        frame = (Channel.DATA, memoryview(b""))
    assert frame is not None and frame[1] == payload
    return frame[1]


def test_every_frame_is_read_into_the_same_buffer_which_grows_for_a_longer_frame() -> None:
    reader = FrameReader()
    first = read_one(reader, b"a" * 100)
    second = read_one(reader, b"b" * 40)
    assert second.obj is first.obj  # no new (zero-filled) bytearray per frame
    assert bytes(first[:40]) == b"b" * 40  # so a frame's view holds only until the next frame is read
    third = read_one(reader, b"c" * 300)
    assert len(third.obj) == 300 and third.obj is not first.obj
    assert read_one(reader, b"d" * 200).obj is third.obj


@pytest.mark.parametrize(("header", "reason"), [(b"\0\0\0\1\x09", "unknown_channel"),
                                               (b"\x7f\0\0\0\x00", "oversize")])
def test_bad_header_raises_frame_error(header, reason) -> None:
    reader = FrameReader()
    reader.buffer()[:5] = header
    with pytest.raises(FrameError) as err:
        reader.filled(5)
    assert err.value.reason == reason
