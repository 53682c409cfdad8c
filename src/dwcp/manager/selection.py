"""Each chunk's codec: one batch call to the Compression Selector per window of chunks, or the local rule.

The selector gets each chunk's sample (`chunks.sample`: evenly spread slices, the shape of
`compression.features.make_sample` that its model was trained on), the chunk's size (`chunk_bytes`),
the whole object's size (`size_bytes`) and the link's measured bandwidth and RTT. When its breaker is
open, its answer is slower than `timeout`, or it fails, the local rule (`chunks.local_choice`) decides
instead, so a transfer never waits on the selector. Nor is it asked when the whole payload would cross the link
uncompressed in less time than its recent answers took (a few small files on a fast link): a better codec
can save at most that wire time, and asking costs the answer's latency before the first byte leaves. Since
session 7 the bar is the wait itself: a chunk waits at most ANSWER_WAIT_SHARE of its wire time for the answer
(`plan.answer_wait`), so a payload whose share is shorter than the recent answer time is not asked about
(`source="not_asked"`): the answer would only come after the local rule had decided.
"""

from __future__ import annotations

import base64
import logging
import ssl
import time

import httpx

from dwcp.compression.codecs import BY_KEY
from dwcp.manager.chunks import local_choice
from dwcp.manager.metrics import ManagerMetrics
from dwcp.runtime.breaker import CircuitBreaker

log = logging.getLogger("dwcp.manager.selection")
# Of a payload's uncompressed wire time: the longest its chunks wait for the answer. What the selector's pick gains
# over the local rule's on the shaped benchmark is a few % of the wire time (zstd-9 vs zstd-3: 2% fewer bytes at
# 10 Mbit/s), so a wait of 10% (before session 7) could cost more than the answer brings: 1.6 MiB objects at
# 100 Mbit/s (one chunk each) lost 14-17% to always-zstd-3 in 6 of 6 runs with the same codecs.
ANSWER_WAIT_SHARE = 0.03
# The answer time assumed until one is timed: the seed's prediction latency baseline (< 10 ms p99). Without it the
# first payload was always asked about, and on the shaped benchmark its answer came after its 1-7 ms wait anyway.
PRIOR_LATENCY_S = 0.010


class CodecChooser:
    def __init__(self, urls: list[str], breaker: CircuitBreaker, metrics: ManagerMetrics | None,
                 timeout: float, auth: httpx.Auth | None = None, verify: ssl.SSLContext | bool = True) -> None:
        self.urls = urls
        self.breaker = breaker
        self._metrics = metrics
        # auth: the selector's bearer token; verify: its TLS CA (runtime.tls), when it serves HTTPS
        self._client = httpx.Client(timeout=timeout, auth=auth, verify=verify)
        self._next = 0
        self.latency: float | None = None  # recent selector answer time (EWMA), seconds; None until one is timed

    def close(self) -> None:
        self._client.close()

    def choose(self, samples: list[bytes], sizes: list[int], bandwidth_bps: float | None,
               rtt_seconds: float | None, payload_bytes: int | None = None,
               pieces: list[bytes] | None = None) -> tuple[list[str], str]:
        """(codec key per chunk, "selector", "local" or "not_asked"). `sizes` are the chunks' own sizes;
        `payload_bytes` is the whole object's, so the selector prices each chunk's codec as one step of a
        pipelined transfer (many chunks go at the slowest stage's pace) rather than as a lone single-chunk
        payload. `pieces`: each chunk's `chunks.piece`, what the local rule probes (else its sample)."""
        picked, source = None, "not_asked"
        if self.worth_asking(sum(sizes) if payload_bytes is None else payload_bytes, bandwidth_bps):
            picked = self._ask_selector(samples, sizes, bandwidth_bps, rtt_seconds, payload_bytes)
            source = "local" if picked is None else "selector"  # asked: its answer, or the local rule after all
        if picked is None:
            picked = [local_choice(p, bandwidth_bps) for p in (samples if pieces is None else pieces)]
        if self._metrics is not None:
            self._metrics.codec_decisions.labels(source).inc(len(samples))
        return picked, source

    def worth_asking(self, payload_bytes: int, bandwidth_bps: float | None) -> bool:
        """False when the selector's recent answer time is longer than a waiting chunk would wait for it
        (ANSWER_WAIT_SHARE of the payload's uncompressed wire time): its answer would come after the local rule
        had decided, and the call's CPU (the manager's request, the selector's features, on the same cores on
        a small site) would be spent for nothing."""
        if not bandwidth_bps:
            return True
        latency = PRIOR_LATENCY_S if self.latency is None else self.latency
        return ANSWER_WAIT_SHARE * payload_bytes / bandwidth_bps >= latency

    def _ask_selector(self, samples: list[bytes], sizes: list[int], bandwidth_bps: float | None,
                      rtt_seconds: float | None, payload_bytes: int | None) -> list[str] | None:
        if not self.urls:
            return None
        items = [i for i, s in enumerate(samples) if s]  # an empty chunk needs no codec
        if not items or not self.breaker.allow():
            return None if items else ["none"] * len(samples)
        bw_mbps = (bandwidth_bps or 125e6) * 8 / 1e6
        rtt_ms = (rtt_seconds or 0.001) * 1e3
        body = {"items": [{"sample": base64.b64encode(samples[i]).decode(),
                           "size_bytes": max(payload_bytes or 0, sizes[i]), "chunk_bytes": sizes[i],
                           "bandwidth_mbps": bw_mbps, "rtt_ms": rtt_ms} for i in items]}
        url = self.urls[self._next % len(self.urls)]
        self._next += 1
        started = time.perf_counter()
        try:
            resp = self._client.post(f"{url}/v1/predict/batch", json=body)
            resp.raise_for_status()
            results = resp.json()["results"]
            keys = [r["codec"] if r["level"] is None else f"{r['codec']}-{r['level']}" for r in results]
            if len(keys) != len(items) or any(k not in BY_KEY for k in keys):
                raise ValueError(f"selector answered {len(keys)} codecs for {len(items)} chunks")
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            self._timed(started)
            self.breaker.record_failure()
            log.info("selector %s failed (%s); using the local rule", url, exc)
            return None
        self._timed(started)
        self.breaker.record_success()
        out = ["none"] * len(samples)
        for i, key in zip(items, keys, strict=True):
            out[i] = key
        return out

    def _timed(self, started: float) -> None:
        took = time.perf_counter() - started
        self.latency = took if self.latency is None else 0.8 * self.latency + 0.2 * took
