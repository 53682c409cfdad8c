"""A real 7-node ProBFT cluster: `dwcp serve probft` processes over TCP on loopback, driven over HTTP.

Scenario: commit on every node; `kill -9` two nodes (the primary and a backup) while transactions are
in flight and keep committing with the other five (2f+1 at n = 7); restart both on their own logs,
watch them catch up, commit through them again. Then every node's log is compared height by height:
one digest per height everywhere, and every acknowledged transaction in exactly one block, at the
height it was acknowledged with. The committee file carries each node's VRF public key.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from dwcp.consensus.node.cluster import LocalCluster
from tests.consensus.node.test_cluster_e2e import _check_logs, _status, _submit_all, _wait_height

pytestmark = [pytest.mark.e2e, pytest.mark.network, pytest.mark.slow]

N = 7


def test_probft_commits_through_kill9_of_two_nodes_and_they_catch_up(tmp_path: Path) -> None:
    settings = {"max_tx_bytes": 1024, "sync_interval_ms": 200, "batch_size": 2, "view_change_timeout_ms": 500}
    with LocalCluster(tmp_path, N, service="probft", settings=settings) as cluster, \
            httpx.Client(timeout=10, headers=cluster.headers) as client:
        committee = json.loads((tmp_path / "keys" / "committee.json").read_text())
        assert all(len(bytes.fromhex(m["vrf_public_key"])) == 32 for m in committee["members"])
        cluster.start_all()
        cluster.wait_ready(timeout=90)
        urls = cluster.urls

        acked = asyncio.run(_submit_all(urls, "all-up", 40, cluster.headers))
        for url in urls:
            _wait_height(client, url, max(acked.values()))
        primary = _status(client, urls[0])["primary"]
        victims = [primary, (primary + 3) % N]
        for v in victims:
            cluster.kill(v)
        survivors = [u for i, u in enumerate(urls) if i not in victims]
        acked |= asyncio.run(_submit_all(survivors, "two-down", 40, cluster.headers))
        top = max(acked.values())

        for v in victims:
            cluster.start(v)
        cluster.wait_ready(victims, timeout=90)
        for v in victims:
            _wait_height(client, urls[v], top, timeout=60)  # own log, then certified blocks from peers
        acked |= asyncio.run(_submit_all(urls, "rejoined", 20, cluster.headers))
        for url in urls:
            _wait_height(client, url, max(acked.values()), timeout=60)

        assert len(acked) == 100
        assert _check_logs(client, urls, acked) >= 50  # batches of at most 2
        assert max(_status(client, u)["view_changes"] for u in survivors) >= 1  # the primary was replaced
        status = _status(client, urls[victims[1]])
        assert status["dense"] and status["quorum"] == 5 and status["sample_size"] == 6
        metrics = client.get(f"{urls[0]}/metrics").text
        for name in ("probft_blocks_finalized_total", "probft_finalization_duration_seconds_bucket",
                     'probft_quorum_achieved_total{phase="commit"}', "probft_quorum_achievement_rate",
                     'probft_messages_sent_total{phase="prepare"}'):
            assert name in metrics, name
