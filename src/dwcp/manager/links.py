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
_PROBE_BLOCK = 1 << 20


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

    The bandwidth is the probe's bytes over the time to the PONG that follows them (less half an RTT). A probe
    that took less than PROBE_MIN_SECONDS is sent once more, sized to take that long at the rate it measured (at
    most PROBE_MAX_BYTES), and that figure counts: a short probe counted a link's burst allowance as bandwidth
    (on a `tbf` 1000 Mbit/s link with a 10 ms burst of 1.25 MB, a 2 MiB probe measured 264-270 MB/s, so every
    codec's CPU looked slower than the link and the pricing sent a 160 MiB bucket uncompressed: session 7,
    docs/manager.md); 13 MB leave the burst a tenth of it. (Timing the probe's later half on the receiver's clock
    was tried: under load the receiving thread read the blocks late and together, 264 MB/s on that link again,
    and the smaller of the two figures was as likely to come out low: 8.1 MB/s on the 100 Mbit/s link.)"""
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
    if probe_bytes / bandwidth < PROBE_MIN_SECONDS:
        bandwidth = _filler(conn, int(min(PROBE_MAX_BYTES, bandwidth * PROBE_MIN_SECONDS)), rtt)
    return rtt, bandwidth


def _filler(conn: Connection, probe_bytes: int, rtt: float) -> float:
    """`probe_bytes` of filler timed to the PONG after them: bytes per second."""
    block = bytes(min(_PROBE_BLOCK, probe_bytes))
    t0 = time.perf_counter()
    sent = 0
    while sent < probe_bytes:
        n = min(len(block), probe_bytes - sent)
        conn.send(Kind.PROBE, {"n": n}, memoryview(block)[:n])
        sent += n
    conn.send(Kind.PING, {"t": t0})
    # PROBE_ACKs first (one per block), then the PONG that closes the timing.
    while conn.expect((Kind.PROBE_ACK, Kind.PONG), 0)[0] is not Kind.PONG:
        pass
    elapsed = time.perf_counter() - t0
    return sent / max(elapsed - rtt / 2, 1e-6)
