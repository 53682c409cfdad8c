"""The commit-path stage trace (transport/trace.py) on four real nodes: every stage of every transaction is
found, in order, and the stages add up to the node-side latency (benchmarks/commit_stages.py joins them)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dwcp.consensus.node.assemble import build_node
from dwcp.consensus.transport import trace
from dwcp.consensus.transport.driver import Driver
from tests.benchmark_scripts import load_benchmark
from tests.consensus.node.test_driver_loopback import _contexts, _until


async def _batched(driver: Driver, count: int) -> list[str]:
    ids = [o.tx_id for o in driver.submit_many([os.urandom(24) for _ in range(count)])]
    assert None not in await driver.wait_committed_many(ids, 20.0)
    return ids


def test_off_unless_the_environment_names_a_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(trace.ENV, raising=False)
    assert trace.from_env(0) is None


@pytest.mark.network
async def test_each_transaction_is_traced_through_every_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(trace.ENV, str(tmp_path / "trace"))
    nodes = [build_node(ctx) for ctx in _contexts(tmp_path, "pbft")]
    for node in nodes:
        await node.start()
    try:
        await _until(lambda: all(len(n.transport.connected) == len(nodes) - 1 for n in nodes))
        primary = nodes[0].core.primary(0, 0)
        backup = next(n for n in nodes if n.me != primary)
        submitted = {bytes.fromhex(i): backup.me for i in await _batched(backup, 20)}
        submitted |= {bytes.fromhex(i): primary for i in await _batched(nodes[primary], 5)}
        await _until(lambda: all(n.height >= backup.height for n in nodes))
    finally:
        for node in nodes:
            await node.stop()  # flushes each node's trace

    stages = load_benchmark("commit_stages")
    traces = stages.load(tmp_path / "trace")
    assert sorted(traces) == [0, 1, 2, 3]
    for events in traces.values():  # every node saw each committed height through P, V, C, W, D
        kinds = {(e[0], e[2]) for e in events if e[0] in "PVCD"}
        heights = {h for k, h in kinds if k == "D"}
        assert heights and all((k, h) in kinds for h in heights for k in "PVC")
    rows = stages.join(traces)
    assert sorted((r["node"], r["primary"]) for r in rows) == sorted((x, primary) for x in submitted.values())
    for row in rows:
        parts = [row[s] for s in stages.STAGES]
        assert all(p >= 0 for p in parts), row
        assert sum(parts) == pytest.approx(row["total"])
        assert (row["forward"] == 0) == (row["node"] == primary)  # a backup forwards to the primary first
    assert stages.summarize(rows)["transactions"] == len(submitted)


def test_late_appends_are_told_apart_by_what_the_writer_thread_was_doing() -> None:
    stages = load_benchmark("commit_stages")
    events = [
        ("C", 1.000, 1), ("W", 1.001, 1.005, [1]),  # at once: not late
        ("W", 1.010, 1.050, [2]), ("C", 1.020, 3), ("W", 1.050, 1.052, [3]),  # 30 ms behind 2's append
        ("M", 1.100, 1.140, "sync"), ("C", 1.110, 4), ("W", 1.140, 1.141, [4]),  # 30 ms behind an idle sync
        ("C", 1.200, 5), ("W", 1.230, 1.231, [5]),  # 30 ms with the thread idle: the hand-off was late
        ("M", 1.230, 1.231, "index"),  # inside an append: not upkeep of its own
    ]
    assert stages.late_appends({0: events}) == {"late": 3, "behind_append": 1, "behind_upkeep": 1, "thread_idle": 1}


def test_a_transaction_entering_at_a_follower_is_counted_apart() -> None:
    """A T-PBFT follower neither receives the proposal nor votes (no P or V at it): its transactions used to
    be dropped from the join, so the per-entry totals left out the followers' extra Decided hop."""
    stages = load_benchmark("commit_stages")
    a, b = b"a" * 8, b"b" * 8  # a enters at voter 1, b at follower 2; node 0 is the primary
    traces = {
        0: [("F", 1.001, [a]), ("F", 1.002, [b]), ("P", 1.003, 1), ("V", 1.006, 1), ("C", 1.009, 1)],
        1: [("S", 1.000, [a]), ("P", 1.004, 1), ("V", 1.007, 1), ("C", 1.010, 1), ("T", 1.010, 1, [a, b]),
            ("W", 1.011, 1.013, [1]), ("D", 1.014, 1), ("A", 1.015, [a])],
        2: [("S", 1.000, [b]), ("C", 1.020, 1), ("T", 1.020, 1, [a, b]), ("W", 1.021, 1.023, [1]),
            ("D", 1.024, 1), ("A", 1.025, [b])],
    }
    rows = stages.join(traces)
    (follower,) = [r for r in rows if r["follower"]]
    assert follower["node"] == 2 and follower["transit"] == follower["prepare"] == 0
    assert follower["commit"] == pytest.approx(0.017) and follower["total"] == pytest.approx(0.025)
    summary = stages.summarize(rows)
    assert summary["transactions"] == 1  # the stage table: voters only
    assert summary["total_by_entry"]["at a follower"]["n"] == 1
    assert summary["total_by_entry"]["elsewhere"]["p50_ms"] == pytest.approx(15.0)
