"""The worker asks one peer for a missing batch at most once per REQUEST_AGAIN_AFTER, however often its primary
asks; a peer does not send a batch again that it already wrote on the requester's link."""

from __future__ import annotations

from pathlib import Path

import pytest

from dwcp.consensus.bullshark.messages import FetchBatches, WorkerSetup
from dwcp.consensus.bullshark.worker import BATCH, REQUEST, Batch
from dwcp.consensus.core.crypto import generate_private_key
from dwcp.consensus.transport import dataplane
from dwcp.consensus.transport.workerlinks import PeerLink
from dwcp.runtime.peerauth import self_signed_certificate


class Sent(PeerLink):
    """A peer link that is up and records the REQUEST and BATCH frames written to it."""

    def __init__(self, peer: int) -> None:
        super().__init__(None, peer)  # type: ignore[arg-type]
        self.requests: list[bytes] = []
        self.batches: list[bytes] = []

    def write(self, kind: int, body, digest: bytes | None = None, force: bool = False) -> bool:
        if kind == REQUEST:
            self.requests.append(bytes(body))
        elif kind == BATCH:
            assert digest == dataplane.batch_digest(body)  # the tag covers it
            self.batches.append(bytes(body))
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
    plane.links = {i: Sent(i) for i in (1, 2, 3)}  # type: ignore[misc]
    return plane


def test_a_batch_the_primary_asks_for_on_every_sync_tick_is_requested_once_per_interval(plane, monkeypatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(dataplane.time, "monotonic", lambda: clock[0])
    missing = bytes(32)
    for _ in range(4):  # the primary's sync timer: every 0.25 s
        plane.on_local(FetchBatches(digests=(missing,), peer=-1))
        clock[0] += 0.25
    asked = [len(link.requests) for link in plane.links.values()]
    assert sorted(asked) == [0, 0, 1]  # once, from one peer
    plane.on_local(FetchBatches(digests=(missing,), peer=2))
    assert sum(len(link.requests) for link in plane.links.values()) == 2  # 1 s later: again, from the author
    assert plane.links[2].requests[-1] == missing


def test_a_batch_of_no_named_author_is_asked_of_the_peers_in_turn(plane, monkeypatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(dataplane.time, "monotonic", lambda: clock[0])
    for _ in range(3):
        plane.on_local(FetchBatches(digests=(b"m" * 32,), peer=-1))
        clock[0] += dataplane.REQUEST_AGAIN_AFTER
    assert [len(link.requests) for link in plane.links.values()] == [1, 1, 1]


def test_a_batch_already_written_on_the_requesters_link_is_not_sent_again_until_the_link_is_new(plane) -> None:
    data = b"\x00\x00\x00\x04abcd"
    digest = dataplane.batch_digest(data)
    plane.seal(Batch(digest, memoryview(data), 1), None)  # pushed to every peer
    link = plane.links[2]
    assert len(link.batches) == 1
    plane.on_request(2, memoryview(digest))  # still queued behind a backlog: the peer asked anyway
    assert len(link.batches) == 1
    link.sent.clear()  # what PeerLink does when its connection is new: the old buffer may be lost
    plane.on_request(2, memoryview(digest))
    plane.on_request(2, memoryview(digest))
    assert len(link.batches) == 2  # answered once
    assert plane.totals["served"] == 1


def test_a_skipped_batch_served_on_request_is_not_pushed_again_by_the_retry_loop(plane) -> None:
    backed_up = plane.links[3]
    backed_up.write = lambda kind, body, digest=None, force=False: (  # type: ignore[method-assign]
        force and Sent.write(backed_up, kind, body, digest, force))
    data = b"\x00\x00\x00\x04abcd"
    digest = dataplane.batch_digest(data)
    plane.seal(Batch(digest, memoryview(data), 1), None)  # links 1 and 2 took it; link 3 was backed up
    assert digest in backed_up.missed and not backed_up.batches
    plane.on_request(3, memoryview(digest))  # its primary needed it: served on request
    assert len(backed_up.batches) == 1
    del backed_up.write  # the link drained
    for _ in range(3):  # the retry loop, while the batch still waits for a quorum
        plane.resend(3)
    assert len(backed_up.batches) == 1  # served once, not pushed again
    assert digest not in backed_up.missed


def test_a_batch_that_arrived_is_not_requested_again(plane, monkeypatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(dataplane.time, "monotonic", lambda: clock[0])
    body = bytearray((4).to_bytes(4, "big") + b"abcd")
    digest = dataplane.batch_digest(body)
    plane.on_local(FetchBatches(digests=(digest,), peer=1))
    plane.on_batch(1, body, digest)
    clock[0] += 5.0
    plane.on_local(FetchBatches(digests=(digest,), peer=1))
    assert len(plane.links[1].requests) == 1
    assert digest not in plane.requested


def test_the_worker_counts_skipped_requested_served_and_duplicate_batches_and_the_node_exports_them(plane) -> None:
    from prometheus_client import CollectorRegistry

    from dwcp.consensus.bullshark.metrics import WorkerMetrics
    from dwcp.consensus.bullshark.worker import Batch

    plane.links[3].write = lambda kind, body, digest=None, force=False: force  # type: ignore[method-assign]  # full
    data = b"\x00\x00\x00\x04abcd"
    plane.seal(Batch(dataplane.batch_digest(data), memoryview(data), 1), None)  # link 3 skipped it
    body = bytearray(b"\x00\x00\x00\x04wxyz")
    plane.on_batch(1, body, dataplane.batch_digest(body))
    plane.on_batch(2, bytearray(body), dataplane.batch_digest(body))  # the same batch again (a request answered twice)
    plane.on_request(2, memoryview(dataplane.batch_digest(body) + bytes(32)))  # one we hold
    plane.on_local(FetchBatches(digests=(b"m" * 32, b"n" * 32), peer=-1))
    totals = {k: plane.totals[k] for k in ("skipped", "requested", "served", "duplicates")}
    assert totals == {"skipped": 1, "requested": 2, "served": 1, "duplicates": 1}

    registry = CollectorRegistry()
    WorkerMetrics(registry).report(plane.totals)
    assert registry.get_sample_value("bullshark_worker_batches_skipped_total") == 1
    assert registry.get_sample_value("bullshark_worker_batch_requests_total") == 2
    assert registry.get_sample_value("bullshark_worker_batches_served_total") == 1
    assert registry.get_sample_value("bullshark_worker_duplicate_batches_total") == 1


def test_a_peer_batch_read_into_the_links_reused_buffer_is_stored_whole_after_the_buffer_is_overwritten(plane) -> None:
    buffer = bytearray(b"\x00\x00\x00\x04wxyz")  # the reader's buffer (framing.FrameReader)
    digest = dataplane.batch_digest(buffer)
    plane.on_batch(1, memoryview(buffer), digest)
    buffer[:] = b"\x00\x00\x00\x04QQQQ"  # the next frame lands in the same buffer
    assert bytes(plane.store.get(digest)) == b"\x00\x00\x00\x04wxyz"
    plane.on_request(2, memoryview(digest))  # served from the file, not from the overwritten buffer
    assert plane.links[2].batches == [b"\x00\x00\x00\x04wxyz"]


def test_the_worker_counts_the_time_its_clients_were_paused_and_each_batchs_quorum_wait(plane, monkeypatch) -> None:
    from prometheus_client import CollectorRegistry

    from dwcp.consensus.bullshark.metrics import WorkerMetrics

    clock = [1000.0]
    monkeypatch.setattr(dataplane.time, "monotonic", lambda: clock[0])
    plane.setup = plane.setup.__class__(**{**{f: getattr(plane.setup, f) for f in plane.setup.__struct_fields__},
                                           "max_inflight": 2})
    digests = []
    for i in range(2):
        data = b"\x00\x00\x00\x04" + bytes([65 + i]) * 4
        digests.append(dataplane.batch_digest(data))
        plane.seal(Batch(digests[-1], memoryview(data), 1), None)
        clock[0] += 0.1
    assert plane.paused  # two batches wait for a quorum: the clients are not read
    clock[0] += 0.3  # first batch sealed 0.5 s ago, second 0.4 s ago
    for peer in (1, 2):
        plane.on_ack(peer, digests[0])
    assert not plane.paused
    assert plane.totals["paused_us"] == 400_000  # paused at 1000.1 (second seal), read again at 1000.5
    assert (plane.totals["quorum_batches"], plane.totals["quorum_wait_us"]) == (1, 500_000)

    registry = CollectorRegistry()
    WorkerMetrics(registry).report(plane.totals)
    assert registry.get_sample_value("bullshark_worker_clients_paused_microseconds_total") == 400_000
    assert registry.get_sample_value("bullshark_worker_batches_acknowledged_total") == 1
    assert registry.get_sample_value("bullshark_worker_quorum_wait_microseconds_total") == 500_000
