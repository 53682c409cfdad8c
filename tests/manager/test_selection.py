"""What the manager asks the Compression Selector for each window of chunks."""

import json

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
    # The last chunk of a 2.5 MiB object is half a chunk; the empty one needs no codec at all.
    picked, source = chooser.choose([b"a" * 100, b"b" * 100, b""], [MiB, MiB // 2, 0], 12.5e6, 0.02,
                                    payload_bytes=5 * MiB // 2)
    assert (picked, source) == (["zstd-3", "zstd-3", "none"], "selector")
    assert [(item["size_bytes"], item["chunk_bytes"]) for item in seen] == [(5 * MiB // 2, MiB),
                                                                            (5 * MiB // 2, MiB // 2)]
    assert seen[0]["bandwidth_mbps"] == 100.0 and seen[0]["rtt_ms"] == 20.0


def test_a_failing_selector_falls_back_to_the_local_rule() -> None:
    chooser = chooser_with(lambda request: httpx.Response(503, json={"error": {"code": "down"}}))
    picked, source = chooser.choose([b"x" * 100], [MiB], 12.5e6, 0.02, payload_bytes=MiB)
    assert source == "local" and len(picked) == 1
