"""benchmarks/tpbft_vc_causes.py and tpbft_p50_parts.py: the classes a view change falls in, the pairing of the two
cores' view changes by (deposed node, episode), and the base-delay model of a block's agreement."""

from __future__ import annotations

from typing import Any

import pytest

from tests.benchmark_scripts import load_benchmark


def _row(proto: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    """Node 3 flaky (episodes at 1.0-1.5 s and 2.5-2.8 s), node 5 correct; T-PBFT epochs at 0, 2.0, 3.0 s."""
    return {
        "seed": 0,
        "proto": proto,
        "vc": len(events),
        "ok": True,
        "faulty": {"3": "intermittent"},
        "episodes": {"3": [[1.0, 1.5], [2.5, 2.8]]},
        "epochs": {"0": 0.0} if proto == "pbft" else {"0": 0.0, "1": 2.0, "2": 3.0},
        "choices": {} if proto == "pbft" else {"1": {"incumbent": 5, "rank": [3, 5]}, "2": {"incumbent": 3}},
        "events": events,
    }


def _event(t: float, epoch: int, primary: int, from_view: int = 0) -> dict[str, Any]:
    return {"t": t, "epoch": epoch, "from_view": from_view, "view": from_view + 1, "primary": primary}


def test_a_view_change_is_classed_by_the_episode_that_caused_it() -> None:
    causes = load_benchmark("tpbft_vc_causes")
    pbft = _row("pbft", [_event(1.2, 0, 3), _event(6.0, 0, 5)])
    assert causes.cause(pbft["events"][0], pbft) == "first_episode"
    assert causes.cause(pbft["events"][1], pbft) == "correct"
    # T-PBFT: node 3 ranked first in epoch 1 fails in its second episode (2.5 s). Its first (1.0 s) began after the
    # middle of epoch 0 less the judging lag (0.8 s): the reports ranking(1) was made from could not hold it.
    lag = _row("tpbft", [_event(2.6, 1, 3)])
    assert causes.cause(lag["events"][0], lag) == "repeat_after_report"
    assert causes.how_primary(lag["events"][0], lag) == "ranked_first"
    # In epoch 2 (reports from the middle of epoch 1, 2.5 - 0.2 s) the 1.0 s episode is visible.
    seen = _row("tpbft", [_event(3.2, 2, 3)])
    assert causes.cause(seen["events"][0], seen) == "repeat_visible"
    assert causes.how_primary(seen["events"][0], seen) == "incumbent"
    # Suspected before by the same core: memory, whatever the reports held.
    again = _row("tpbft", [_event(1.2, 0, 3), _event(2.6, 1, 3)])
    assert causes.cause(again["events"][1], again) == "repeat_deposed_before"
    # An episode that began more than RECENT_S before did not cause it.
    assert causes.cause(_event(8.0, 2, 3), seen) == "flaky_up"


def test_the_same_failure_in_both_cores_is_common_and_the_rest_is_each_cores_own() -> None:
    causes = load_benchmark("tpbft_vc_causes")
    pbft = _row("pbft", [_event(1.2, 0, 3), _event(6.0, 0, 5)])
    tpbft = _row("tpbft", [_event(1.3, 0, 3), _event(2.6, 1, 3)])  # episode 0 in both; episode 1 only here
    summary = causes.summarise([pbft, tpbft])
    assert summary["common"] == 1
    assert summary["only"] == {"pbft": {"correct/by_id": 1}, "tpbft": {"repeat_deposed_before/ranked_first": 1}}
    assert summary["starts"] == {"pbft": 2, "tpbft": 2}


class _Line:
    """Nodes on a line, one-way delay = distance in ms."""

    def __init__(self, position: list[float]) -> None:
        self.position = position

    def one_way(self, a: int, b: int) -> float:
        return abs(self.position[a] - self.position[b]) / 1000.0


def test_the_agreement_model_takes_the_qth_arrival_per_phase() -> None:
    parts = load_benchmark("tpbft_p50_parts")
    net = _Line([0.0, 10.0, 20.0, 30.0, 100.0])  # node 4 is far away
    everyone = (0, 1, 2, 3, 4)
    # Primary 0, q = 4 of 5: node 0's prepare votes arrive at 0, 20, 40, 60 and 200 ms (pre-prepare there and back),
    # so it prepares at the 4th, 60 ms; every node likewise; it commits at the 4th arrival of the commit votes.
    prepared = {i: sorted(net.one_way(0, j) + net.one_way(j, i) for j in everyone)[3] for i in everyone}
    assert prepared[0] == pytest.approx(0.06)
    committed_at_0 = parts.modelled_agreement(net, 0, everyone, 0, 4)
    assert committed_at_0 == sorted(prepared[j] + net.one_way(j, 0) for j in everyone)[3]
    # Leaving the far node out of a group of 4 with q = 4 makes every phase wait for node 3 instead: never faster.
    group = (0, 1, 2, 3)
    assert parts.modelled_agreement(net, 0, group, 0, 4) >= committed_at_0 - 1e-12
    # A follower (node 4) hears from the first g - q + 1 = 1 member: node 0's commit plus 100 ms.
    assert parts.modelled_agreement(net, 0, group, 4, 4) == pytest.approx(
        parts.modelled_agreement(net, 0, group, 0, 4) + 0.1
    )


def test_a_heights_place_in_its_epoch() -> None:
    sim = load_benchmark("_tpbft_sim")
    places = [sim.place_of(h, 16) for h in (1, 2, 15, 16, 17, 32, 33)]
    assert places == ["first", "inner", "inner", "last", "first", "last", "first"]


def test_the_static_bound_never_ends_epoch_one_and_the_patches_are_undone() -> None:
    """`static` (session 16): epoch 0 ends as on main, epoch 1 never; `pipelast` proposes the last height at once.
    Each row carries the p50 per place in the epoch; the replica's methods are main's again after the run."""
    rules = load_benchmark("tpbft_rules")
    from dwcp.consensus.tpbft.replica import Replica

    before = (Replica.epoch_end, Replica.may_propose)
    scenario = {"behaviour": "mixed", "nodes": 4, "byzantine": 0, "seed": 0, "duration": 3.0, "epoch_length": 4}
    main_row, static_row = rules.run_one("new", **scenario), rules.run_one("static", **scenario)
    assert main_row["epochs"] > 2 and static_row["epochs"] == 2
    for row in (main_row, static_row):
        assert row["ok"] and abs(sum(row[f"share_{p}"] for p in ("first", "inner", "last")) - 1) < 1e-3
        assert all(row[f"p50_{p}"] > 0 for p in ("first", "inner", "last"))
    rules.run_one("pipelast", **scenario)
    assert (Replica.epoch_end, Replica.may_propose) == before
