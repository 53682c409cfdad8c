"""What this site knows about its link to each peer: RTT, achievable bandwidth, tier.

Figures come from active probes (`probe`: three PINGs, the fastest wins; then `probe_bytes` of filler
timed to its acknowledgement) and passively from transfers (a transfer's wire bytes over its duration is
a lower bound on the bandwidth, so it only ever raises the figure). Tiers follow the RTT: datacenter
< 5 ms, metro < 50 ms, wan beyond.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from dwcp.manager.metrics import TIERS, ManagerMetrics
from dwcp.manager.wire import Connection, Kind

DATACENTER_RTT = 0.005
METRO_RTT = 0.050
PROBE_MIN_SECONDS = 0.05  # a shorter probe is repeated, sized to take this long
PROBE_MAX_BYTES = 16 << 20  # the repeated probe's size at most (~25 ms of TLS CPU per end on this host)
_PROBE_BLOCK = 256 << 10  # bytes per PROBE frame: one PROBE_ACK each, the steady rate's resolution


def tier_of(rtt_seconds: float | None) -> str | None:
    if rtt_seconds is None:
        return None
    if rtt_seconds < DATACENTER_RTT:
        return "datacenter"
    return "metro" if rtt_seconds < METRO_RTT else "wan"


@dataclass
class Link:
    peer: str
    rtt: float | None = None
    bandwidth: float | None = None  # bytes per second
    probed_at: float | None = None
    error: str | None = None

    @property
    def tier(self) -> str | None:
        return tier_of(self.rtt)

    def as_dict(self) -> dict:
        return {"peer": self.peer, "rtt_seconds": self.rtt, "bandwidth_bytes_per_second": self.bandwidth,
                "tier": self.tier, "probed_at": self.probed_at, "error": self.error}


class LinkTable:
    def __init__(self, peers: list[str], metrics: ManagerMetrics | None = None) -> None:
        self._links = {p: Link(p) for p in peers}
        self._metrics = metrics
        self._lock = threading.Lock()

    def get(self, peer: str) -> Link:
        with self._lock:
            return self._links[peer]

    def all(self) -> list[Link]:
        with self._lock:
            return list(self._links.values())

    def record_probe(self, peer: str, rtt: float, bandwidth: float | None) -> None:
        with self._lock:
            link = self._links[peer]
            link.rtt, link.probed_at, link.error = rtt, time.time(), None
            if bandwidth:
                link.bandwidth = bandwidth
        self._export(link)

    def record_transfer(self, peer: str, wire_bytes: int, seconds: float) -> None:
        """Passive figure: a transfer shows that at least wire_bytes / seconds is achievable, so it can only
        raise the estimate. (Its time includes compression and disk: lowering the estimate from it made the
        selector choose heavier codecs, which made transfers slower still.) Only probes lower it."""
        if wire_bytes < (1 << 20) or seconds < 0.05:
            return
        observed = wire_bytes / seconds
        with self._lock:
            link = self._links[peer]
            link.bandwidth = max(link.bandwidth or 0.0, observed)
        self._export(link)

    def record_error(self, peer: str, error: str) -> None:
        with self._lock:
            self._links[peer].error = error

    def _export(self, link: Link) -> None:
        m = self._metrics
        if m is None:
            return
        if link.rtt is not None:
            m.link_rtt.labels(link.peer).set(link.rtt)
            for tier in TIERS:
                m.link_tier.labels(link.peer, tier).set(1 if tier == link.tier else 0)
        if link.bandwidth is not None:
            m.link_bandwidth.labels(link.peer).set(link.bandwidth)


def probe(conn: Connection, probe_bytes: int) -> tuple[float, float | None]:
    """(RTT seconds, bandwidth bytes/s or None) measured on an authenticated connection.

    The bandwidth is the smaller of two figures: all the probe's bytes over the time to the PONG that follows
    them (less half an RTT), and its later half's bytes over the receiver's own time between acknowledging the
    block that ends the first half and the last block (`steady_rate`; PROBE_ACK carries the receiver's clock).
    The first figure alone counted a link's burst allowance as bandwidth: on a `tbf` 1000 Mbit/s link with a
    10 ms burst (1.25 MB) a 2 MiB probe measured 270 MB/s, so every codec's CPU looked slower than the link and
    the pricing sent a whole 160 MiB bucket uncompressed (session 7's baseline, docs/manager.md). A probe that
    took less than PROBE_MIN_SECONDS is sent once more, sized to take that long at the rate it measured (at most
    PROBE_MAX_BYTES): under load the receiver's thread may read a short probe's blocks late and all at once, and
    its clock then shows no steady rate at all (the 2 MiB probe still measured 264 MB/s on that link at load 10)."""
    rtts = []
    for _ in range(3):
        t0 = time.perf_counter()
        conn.send(Kind.PING, {"t": t0})
        conn.expect((Kind.PONG,), 0)
        rtts.append(time.perf_counter() - t0)
    rtt = min(rtts)
    if probe_bytes <= 0:
        return rtt, None
    bandwidth = _filler(conn, probe_bytes, rtt)
    if bandwidth is not None and probe_bytes / bandwidth < PROBE_MIN_SECONDS:
        # too short to tell a burst allowance or a late receiver from the link: once more, long enough
        bandwidth = _filler(conn, int(min(PROBE_MAX_BYTES, bandwidth * PROBE_MIN_SECONDS)), rtt) or bandwidth
    return rtt, bandwidth


def _filler(conn: Connection, probe_bytes: int, rtt: float) -> float | None:
    """`probe_bytes` of filler: bytes per second (see `probe`)."""
    block = bytes(min(_PROBE_BLOCK, probe_bytes))
    t0 = time.perf_counter()
    sent = 0
    while sent < probe_bytes:
        n = min(len(block), probe_bytes - sent)
        conn.send(Kind.PROBE, {"n": n}, memoryview(block)[:n])
        sent += n
    conn.send(Kind.PING, {"t": t0})
    # PROBE_ACKs first (one per block), then the PONG that closes the timing.
    acks: list[tuple[int, float]] = []  # (bytes acknowledged so far, the receiver's clock when it had them)
    got = 0
    while True:
        kind, meta, _ = conn.expect((Kind.PROBE_ACK, Kind.PONG), 0)
        if kind is Kind.PONG:
            break
        got += int(meta.get("n", 0))
        if isinstance(meta.get("t"), int | float):
            acks.append((got, float(meta["t"])))
    elapsed = time.perf_counter() - t0
    whole = sent / max(elapsed - rtt / 2, 1e-6)
    steady = steady_rate(acks)
    return whole if steady is None else min(whole, steady)


def steady_rate(acks: list[tuple[int, float]]) -> float | None:
    """Bytes per second over the later half of a probe, from the receiver's (bytes so far, its clock) per block:
    a burst allowance and TCP's slow start spend themselves in the first half. None without two acks past it."""
    if len(acks) < 2:
        return None
    half = acks[-1][0] / 2
    start = next(((b, t) for b, t in acks if b >= half), None)
    if start is None or start == acks[-1]:
        start = acks[-2]
    (b0, t0), (b1, t1) = start, acks[-1]
    return (b1 - b0) / (t1 - t0) if t1 > t0 and b1 > b0 else None
