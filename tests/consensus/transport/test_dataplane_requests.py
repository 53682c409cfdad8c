"""The worker asks for a missing batch at most once per REQUEST_AGAIN_AFTER, however often its primary asks."""

from __future__ import annotations

from pathlib import Path

import pytest

from dwcp.consensus.bullshark.messages import FetchBatches, WorkerSetup
from dwcp.consensus.bullshark.worker import REQUEST
from dwcp.consensus.core.crypto import generate_private_key
from dwcp.consensus.transport import dataplane
from dwcp.runtime.peerauth import self_signed_certificate


class Sent:
    """A peer link that records the REQUEST frames written to it."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []

    def write(self, pieces: list, force: bool = False) -> bool:
        frame = b"".join(bytes(p) for p in pieces)
        if frame[5] == REQUEST:  # after the u32 length and the channel byte
            self.requests.append(frame[6:])
        return True


class Link:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)


@pytest.fixture
def plane(tmp_path: Path) -> dataplane.Dataplane:
    keys = {i: generate_private_key() for i in range(4)}
    certificates = {i: self_signed_certificate(k, f"node-{i}") for i, k in keys.items()}
    setup = WorkerSetup(
        node_id=0, private_key=keys[0], certificates=certificates,
        label="test/1", host="127.0.0.1", port=1, peers={i: ("127.0.0.1", 1) for i in (1, 2, 3)},
        data_dir=str(tmp_path), batch_size=500_000, max_batch_delay=0.1, max_tx=4096, max_inflight=16, quorum=3)
    plane = dataplane.Dataplane(setup, Link())  # type: ignore[arg-type]
    plane.links = {i: Sent() for i in (1, 2, 3)}  # type: ignore[misc]
    return plane


def test_a_batch_the_primary_asks_for_on_every_sync_tick_is_requested_once_per_interval(plane, monkeypatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(dataplane.time, "monotonic", lambda: clock[0])
    missing = bytes(32)
    for _ in range(4):  # the primary's sync timer: every 0.25 s
        plane.on_local(FetchBatches(digests=(missing,), peer=-1))
        clock[0] += 0.25
    assert [len(link.requests) for link in plane.links.values()] == [1, 1, 1]  # once, from every peer
    plane.on_local(FetchBatches(digests=(missing,), peer=2))
    assert [len(link.requests) for link in plane.links.values()] == [1, 2, 1]  # 1 s later: again, from the author
    assert plane.links[2].requests[-1] == missing


def test_a_batch_that_arrived_is_not_requested_again(plane, monkeypatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(dataplane.time, "monotonic", lambda: clock[0])
    body = bytearray(b"\x01" + (4).to_bytes(4, "big") + b"abcd")
    digest = dataplane.batch_digest(memoryview(body)[1:])
    plane.on_local(FetchBatches(digests=(digest,), peer=1))
    plane.on_batch(1, body)
    clock[0] += 5.0
    plane.on_local(FetchBatches(digests=(digest,), peer=1))
    assert len(plane.links[1].requests) == 1
    assert digest not in plane.requested
