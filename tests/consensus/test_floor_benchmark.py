"""benchmarks/consensus_floor.py: its exclusive-time buckets, and its account of a block on a small cluster."""

from __future__ import annotations

import pytest

from tests.benchmark_scripts import load_benchmark


def test_an_inner_part_is_not_counted_in_the_outer_one(monkeypatch: pytest.MonkeyPatch) -> None:
    floor = load_benchmark("consensus_floor")
    now = [0]
    monkeypatch.setattr(floor, "clock", lambda: now[0])
    b = floor.Buckets()

    def inner():
        now[0] += 30

    wrapped_inner = b.wrap("verify", inner)

    def outer():
        now[0] += 5
        wrapped_inner()
        now[0] += 7

    b.wrap("core", outer)()
    assert b.ns == {"verify": 30, "core": 12} and b.calls == {"verify": 1, "core": 1}


def test_a_block_is_accounted_for_with_every_signature_counted() -> None:
    floor = load_benchmark("consensus_floor")
    out = floor.protocol_parts("tpbft", 4, rounds=6, tx_per_block=8)
    parts, calls = out["ms_per_block_per_node"], out["calls_per_block_per_node"]
    assert out["blocks"] >= 6
    assert {"core", "codec", "ed25519 sign", "ed25519 verify"} <= parts.keys()
    assert all(v > 0 for k, v in parts.items() if k != "harness")
    # A message is signed once and sent to one or more peers; each frame received is verified at most once
    # (lazily, or never when it arrives after a verified quorum).
    frames = out["frames_per_block_per_node"]
    assert 0 < calls["ed25519 sign"] <= frames
    assert 0 < calls["ed25519 verify"] <= frames
    assert floor.commit_part(20, 8) > 0
