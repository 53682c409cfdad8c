"""Strangers cost a consensus node almost nothing (issue 15, item 3).

On main, 200 connections each sending an 8 MiB DATA frame before any handshake took a node from
64 MB to 1.22 GB RSS, and 934 MB stayed held. Here one real `dwcp serve tpbft` process is attacked
the same way: its RSS may not grow by 50 MB during the attack, nothing stays held afterwards, and
it still answers. Bounded: 200 senders, each given 10 s.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from dwcp.consensus.node.cluster import LocalCluster

pytestmark = [pytest.mark.network, pytest.mark.e2e, pytest.mark.timeout(120)]

SENDERS = 200
FRAME = 8 * 1024 * 1024
CHUNK = memoryview(b"\x00" * (256 * 1024))
HEADER = (FRAME).to_bytes(4, "big") + bytes([3])  # a DATA-channel frame header, as the attack on main


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def _send_frame(port: int) -> int:
    """Connect and push one 8 MiB frame as fast as the node takes it; returns the bytes it took."""
    sent = 0
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        writer.write(HEADER)
        for _ in range(FRAME // len(CHUNK)):
            writer.write(CHUNK)
            await asyncio.wait_for(writer.drain(), 10)
            sent += len(CHUNK)
    except (OSError, TimeoutError, RuntimeError):  # RuntimeError: uvloop's write on a reset transport
        pass  # reset or stalled by the node: what we want
    return sent


async def _attack(port: int, pid: int) -> tuple[int, list[int]]:
    peak = 0
    stop = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _rss_bytes(pid))
            await asyncio.sleep(0.05)

    sampler = asyncio.ensure_future(sample())
    sent = await asyncio.gather(*(_send_frame(port) for _ in range(SENDERS)))
    stop.set()
    await sampler
    return peak, sent


def test_two_hundred_unauthenticated_8mib_senders_cost_under_50mb_and_nothing_after(tmp_path: Path) -> None:
    with LocalCluster(tmp_path, 4) as cluster:
        cluster.start(0)  # alone: its peers never come up, so every connection to it is a stranger's
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{cluster.url(0)}/health", timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "node 0 did not start"
                time.sleep(0.2)
        pid = cluster.procs[0].pid
        time.sleep(1.0)
        baseline = _rss_bytes(pid)
        peak, sent = asyncio.run(_attack(cluster.consensus_ports[0], pid))
        time.sleep(1.5)  # failed handshakes are collected within a second (peerauth.PeerServer)
        after = _rss_bytes(pid)
        peak2, _ = asyncio.run(_attack(cluster.consensus_ports[0], pid))
        # Collected within a second on an idle machine; on a loaded 2-core CI runner the collection can lag,
        # so give it up to 6 s to fall back (a leak never does).
        settle = time.monotonic() + 6
        while True:
            time.sleep(1.5)
            after2 = _rss_bytes(pid)
            if after2 - baseline < 25 * 1024 * 1024 or time.monotonic() > settle:
                break
        mb = 1024 * 1024
        print(f"RSS baseline {baseline / mb:.1f} MB; first attack peak +{(peak - baseline) / mb:.1f}, after "
              f"+{(after - baseline) / mb:.1f}; second peak +{(peak2 - baseline) / mb:.1f}, after "
              f"+{(after2 - baseline) / mb:.1f}")
        assert max(peak, peak2) - baseline < 50 * mb, "RSS grew 50 MB or more during the attack"
        # What stays is the allocator keeping freed handshake buffers (at most max_unauthenticated of them at
        # once), not connections: it plateaus, and a second attack does not take it past the same bound. Which
        # attack reaches the plateau depends on how many handshakes were in flight at once: idle, the first
        # (+13 MB after it, +15 after the second); in a loaded CI run once the second (+3.9, then +13.9). A
        # connection's frame kept would be 8 MiB each, 200 of them per attack.
        assert after - baseline < 25 * mb and after2 - baseline < 25 * mb
        assert sum(sent) < SENDERS * FRAME / 4  # most of the 1.6 GB offered was never even accepted
        metrics = httpx.get(f"{cluster.url(0)}/metrics", timeout=5).text
        assert 'reason="handshake_failed"' in metrics
        assert httpx.get(f"{cluster.url(0)}/v1/status", timeout=5).status_code == 200
