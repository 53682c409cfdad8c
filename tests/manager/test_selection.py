"""What the manager asks the Compression Selector for each window of chunks."""

import json
from collections.abc import Callable

import httpx
from prometheus_client import CollectorRegistry

from dwcp.manager.selection import CodecChooser
from dwcp.runtime.breaker import BreakerConfig, BreakerMetrics, CircuitBreaker

MiB = 1024 * 1024


def chooser_with(handler) -> CodecChooser:
    breaker = CircuitBreaker("selector", BreakerConfig(), BreakerMetrics(CollectorRegistry(), "dwcp-manager"))
    chooser = CodecChooser(["http://selector"], breaker, None, timeout=1.0)
    chooser._client = httpx.Client(transport=httpx.MockTransport(handler))
    return chooser


def test_chunks_of_a_large_object_are_priced_as_steps_of_its_pipeline() -> None:
    seen: list[dict] = []

    def selector(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.extend(body["items"])
        return httpx.Response(200, json={"results": [{"codec": "zstd", "level": 3}] * len(body["items"])})

    chooser = chooser_with(selector)
    chooser.latency = 0.001  # quick answers: worth asking for a 2.5 MiB payload at 100 Mbit/s
    # The last chunk of a 2.5 MiB object is half a chunk; the empty one needs no codec at all.
    picked, source = chooser.choose([b"a" * 100, b"b" * 100, b""], [MiB, MiB // 2, 0], 12.5e6, 0.02,
                                    payload_bytes=5 * MiB // 2)
    assert (picked, source) == (["zstd-3", "zstd-3", "none"], "selector")
    assert [(item["size_bytes"], item["chunk_bytes"]) for item in seen] == [(5 * MiB // 2, MiB),
                                                                            (5 * MiB // 2, MiB // 2)]
    assert seen[0]["bandwidth_mbps"] == 100.0 and seen[0]["rtt_ms"] == 20.0


def test_a_failing_selector_falls_back_to_the_local_rule() -> None:
    chooser = chooser_with(lambda request: httpx.Response(503, json={"error": {"code": "down"}}))
    picked, source = chooser.choose([b"x" * 100], [MiB], 1.25e6, 0.02, payload_bytes=MiB)
    assert source == "local" and len(picked) == 1


def zstd9_selector(asked: list[int]) -> Callable[[httpx.Request], httpx.Response]:
    """A selector that answers zstd-9 for every item, noting in `asked` how many items each call named."""

    def answer(request: httpx.Request) -> httpx.Response:
        items = json.loads(request.content)["items"]
        asked.append(len(items))
        return httpx.Response(200, json={"results": [{"codec": "zstd", "level": 9}] * len(items)})

    return answer


def test_a_payload_whose_chunks_would_not_wait_for_the_answer_is_decided_locally_without_a_call() -> None:
    """A chunk waits at most ANSWER_WAIT_SHARE of its wire time for the answer (plan.answer_wait): a payload
    whose share is shorter than the selector's recent answer time is not asked about (the answer would come
    after the local rule had decided; asking would only spend CPU on both sides)."""
    asked: list[int] = []
    chooser = chooser_with(zstd9_selector(asked))
    chooser.choose([b"a" * 100], [MiB], 1.25e6, 0.001, payload_bytes=MiB)  # the first answer is timed
    chooser.latency = 0.005  # as if answers took 5 ms
    # 1 MiB at 10 Mbit/s: 839 ms on the wire, a chunk waits up to 25 ms (ANSWER_WAIT_SHARE) -> asked
    assert chooser.choose([b"a" * 100], [MiB], 1.25e6, 0.001, payload_bytes=MiB)[1] == "selector"
    # That call's real answer time went into the average; under load it can exceed 6.3 ms, so 5 ms again.
    chooser.latency = 0.005
    # 256 KiB at 10 Mbit/s: 210 ms on the wire, more than the answer takes, and its chunks wait up to 6.3 ms:
    # still asked (5 ms)
    assert chooser.choose([b"a" * 100], [256 << 10], 1.25e6, 0.001, payload_bytes=256 << 10)[1] == "selector"
    chooser.latency = 0.02  # answers slowed to 20 ms: the same payload would go before the answer came
    picked, source = chooser.choose([b"a" * 100], [256 << 10], 1.25e6, 0.001, payload_bytes=256 << 10)
    assert source == "not_asked" and len(picked) == 1
    # 1.25 MiB at 1000 Mbit/s: 10 ms on the wire, 1 ms of wait -> the local rule, no call
    picked, source = chooser.choose([b"log line\n" * 100] * 5, [256 << 10] * 5, 125e6, 0.001,
                                    payload_bytes=5 * (256 << 10))
    assert source == "not_asked" and picked == ["zstd-1"] * 5 and asked == [1, 1, 1]


def test_before_any_answer_is_timed_the_seeds_10_ms_is_assumed() -> None:
    asked: list[int] = []
    chooser = chooser_with(zstd9_selector(asked))
    assert chooser.latency is None
    # 80 KiB at 10 Mbit/s: its chunks wait at most 2 ms, less than the 10 ms assumed -> not asked
    assert chooser.choose([b"a" * 100], [80 << 10], 1.25e6, 0.001, payload_bytes=80 << 10)[1] == "not_asked"
    # 1 MiB at 10 Mbit/s: 25 ms of wait -> asked, and its answer time is what counts from then on
    assert chooser.choose([b"a" * 100], [MiB], 1.25e6, 0.001, payload_bytes=MiB)[1] == "selector"
    assert asked == [1] and chooser.latency is not None
    # an unmeasured link: asked (the chunks wait selector_timeout_s)
    assert chooser.choose([b"a" * 100], [80 << 10], None, None, payload_bytes=80 << 10)[1] == "selector"


def test_the_local_rule_probes_a_contiguous_piece_with_zstd_1_and_compresses_what_only_entropy_coding_finds():
    """The benchmark's binary family looked incompressible to the old probe (lz4 on the 16-slice sample: 0.98)
    while zstd-1 sends whole chunks of it at 0.54, so every chunk the local rule decided went uncompressed. Bytes
    with a skewed distribution and no repeats show the same: lz4 (no entropy stage) finds nothing, zstd-1 does."""
    import os
    import tempfile

    import lz4.frame
    import numpy as np

    from dwcp.manager import chunks

    rng = np.random.default_rng(14)
    weights = 0.97 ** np.arange(256)
    body = rng.choice(256, size=2 << 20, p=weights / weights.sum()).astype(np.uint8).tobytes()
    with tempfile.NamedTemporaryFile() as f:
        f.write(body)
        f.flush()
        fd = os.open(f.name, os.O_RDONLY)
        try:
            sample, piece = chunks.sample(fd, 0, len(body)), chunks.piece(fd, 0, len(body))
        finally:
            os.close(fd)
    start = (len(body) - chunks.PIECE_BYTES) // 2
    assert piece == body[start:start + chunks.PIECE_BYTES]
    assert len(lz4.frame.compress(piece)) / len(piece) > 0.9  # lz4's view, the old probe: incompressible
    assert chunks.local_choice(piece, 12.5e6) == "zstd-3"
    assert chunks.local_choice(os.urandom(65536), 12.5e6) == "none"
    chooser = chooser_with(lambda request: httpx.Response(503))
    chooser.urls, chooser.latency = [], 0.001  # asked, but no selector: the local rule, on the pieces when given
    assert chooser.choose([sample], [len(body)], 12.5e6, 0.001, pieces=[piece]) == (["zstd-3"], "local")
