"""The worker's batch maker and quorum waiter, fed bytes in every chunking (one byte at a time included)."""

from __future__ import annotations

import random

import pytest

from dwcp.consensus.bullshark.worker import (
    TX_LEN,
    BatchMaker,
    QuorumWaiter,
    TxError,
    batch_digest,
    scan,
    transactions,
)


def stream(payloads: list[bytes]) -> bytes:
    return b"".join(TX_LEN.pack(len(p)) + p for p in payloads)


def sample(i: int) -> bytes:
    return b"\0" + i.to_bytes(8, "big") + b"s" * 20


PAYLOADS = [bytes([1 + i % 250]) * (1 + (i * 37) % 300) for i in range(200)] + [sample(7), sample(9)]


def feed(maker: BatchMaker, data: bytes, chunks: list[int]) -> list:
    """Write `data` into the maker's buffer in the given chunk sizes, as a socket would."""
    batches, pos = [], 0
    for size in chunks:
        view = maker.buffer()
        assert len(view) > 0, "the buffer always has room for the next read"
        piece = data[pos: pos + min(size, len(view))]  # a socket reads at most the buffer's size
        if not piece:
            break
        view[: len(piece)] = piece
        pos += len(piece)
        if (b := maker.received(len(piece))) is not None:
            batches.append(b)
    while pos < len(data):  # chunk list exhausted: read the rest a buffer at a time
        view = maker.buffer()
        piece = data[pos: pos + len(view)]
        view[: len(piece)] = piece
        pos += len(piece)
        if (b := maker.received(len(piece))) is not None:
            batches.append(b)
    if (b := maker.seal()) is not None:
        batches.append(b)
    return batches


@pytest.mark.parametrize("chunking", ["one_byte", "random", "whole"])
def test_batches_are_the_same_whatever_the_chunking(chunking) -> None:
    data = stream(PAYLOADS)
    rng = random.Random(3)
    chunks = {"one_byte": [1] * len(data), "whole": [len(data)],
              "random": [rng.randint(1, 700) for _ in range(len(data))]}[chunking]
    batches = feed(BatchMaker(batch_size=4096, max_tx=512), data, chunks)
    assert [p for b in batches for p in transactions(b.data)] == PAYLOADS
    assert all(b.digest == batch_digest(bytes(b.data)) for b in batches)
    assert all(len(b.data) >= 4096 for b in batches[:-1]) and len(batches) > 3
    assert sum(b.txs for b in batches) == len(PAYLOADS)
    assert [s for b in batches for s in b.samples] == [7, 9]
    if chunking == "one_byte":  # sealed by the transaction that crossed the size, not later
        assert all(len(b.data) - 4 - len(transactions(b.data)[-1]) < 4096 for b in batches)


def test_the_batch_digest_is_blake3_256() -> None:
    # Every worker must compute the same digest (it names the batch on the wire, in headers and in the log):
    # the published BLAKE3 test vectors for the empty input and for 0, 1, 2, ... 250, 0, 1, ... of 1,024 bytes.
    assert batch_digest(b"").hex() == "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
    data = bytes(i % 251 for i in range(1024))
    assert batch_digest(memoryview(bytearray(data))).hex() == \
        "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7"


def test_partial_transaction_is_held_until_complete() -> None:
    maker = BatchMaker(batch_size=10, max_tx=100)
    data = stream([b"x" * 50])
    assert feed(maker, data[:30], [30]) == []  # nothing complete: seal() has nothing to give
    assert maker.pending == 0
    maker.buffer()[: len(data) - 30] = data[30:]
    batch = maker.received(len(data) - 30)
    assert batch is not None and transactions(batch.data) == [b"x" * 50]


@pytest.mark.parametrize("bad", [TX_LEN.pack(0), TX_LEN.pack(513) + b"x" * 513])
def test_empty_or_oversized_transaction_is_refused(bad) -> None:
    maker = BatchMaker(batch_size=4096, max_tx=512)
    maker.buffer()[: len(bad)] = bad
    with pytest.raises(TxError):
        maker.received(len(bad))


def test_scan_stops_at_an_incomplete_length_prefix() -> None:
    data = stream([b"ab", b"cde"]) + b"\0\0"
    assert scan(bytearray(data), 0, len(data), 10) == (len(data) - 2, 2)


def test_quorum_waiter_reports_once_2f_plus_1_workers_hold_the_batch() -> None:
    maker = BatchMaker(batch_size=1, max_tx=10)
    maker.buffer()[:5] = stream([b"a"])
    batch = maker.received(5)
    waiter = QuorumWaiter(quorum=3)
    assert waiter.sent(batch) is None
    assert waiter.ack(1, batch.digest) is None
    assert waiter.ack(1, batch.digest) is None  # the same worker twice counts once
    ref = waiter.ack(2, batch.digest)
    assert ref is not None and (ref.digest, ref.txs, ref.size) == (batch.digest, 1, 5)
    assert waiter.ack(3, batch.digest) is None and len(waiter) == 0


def _walk(data: bytes, max_tx: int) -> tuple[int, int, list[int]]:
    """One transaction at a time: what scan must find."""
    pos, count, samples = 0, 0, []
    while pos + 4 <= len(data):
        (n,) = TX_LEN.unpack_from(data, pos)
        if n == 0 or n > max_tx:
            raise TxError(n)
        if pos + 4 + n > len(data):
            break
        if data[pos + 4] == 0 and n >= 9:
            samples.append(int.from_bytes(data[pos + 5:pos + 13], "big"))
        pos, count = pos + 4 + n, count + 1
    return pos, count, samples


def test_scan_of_runs_of_one_length_finds_what_a_walk_finds() -> None:
    """Runs of equal-length transactions (checked as a run), lengths that change inside a run, samples inside
    runs, a bad length after a run, and every cut, in bytes, bytearrays and memoryviews."""
    rng = random.Random(5)
    for trial in range(400):
        payloads = []
        for _ in range(rng.randrange(1, 8)):
            n = rng.choice([1, 9, 256, 257, 511, 512])
            payloads += [sample(rng.randrange(1 << 40))[:n] if n >= 9 and rng.random() < 0.1
                         else bytes([1 + rng.randrange(255)]) * n for _ in range(rng.randrange(1, 40))]
        data = stream(payloads)
        if trial % 5 == 0:  # a length no transaction may have, somewhere
            i = rng.randrange(len(payloads))
            at = len(stream(payloads[:i]))
            data = data[:at] + TX_LEN.pack(600) + data[at + 4:]
        cut = rng.randrange(len(data) + 1)
        try:
            expected: object = _walk(data[:cut], max_tx=512)
        except TxError:
            expected = TxError
        for buf in (bytearray(data[:cut]), data[:cut], memoryview(bytearray(data[:cut]))):
            samples: list[int] = []
            try:
                got: object = (*scan(buf, 0, cut, 512, samples), samples)
            except TxError:
                got = TxError
            assert got == expected, (trial, type(buf))


def test_scan_checks_a_run_of_one_length_without_a_step_per_transaction(monkeypatch: pytest.MonkeyPatch) -> None:
    from dwcp.consensus.bullshark import worker

    calls = []

    class Counting:
        size = TX_LEN.size

        def unpack_from(self, buf, pos=0):
            calls.append(pos)
            return TX_LEN.unpack_from(buf, pos)

    monkeypatch.setattr(worker, "TX_LEN", Counting())
    data = stream([bytes([7]) * 508] * 976 + [sample(3)] + [bytes([8]) * 100] * 50)
    samples: list[int] = []
    assert worker.scan(bytearray(data), 0, len(data), 1024, samples) == (len(data), 1027)
    assert samples == [3]
    assert len(calls) <= 6  # one per run (and per short stretch), not one per transaction
