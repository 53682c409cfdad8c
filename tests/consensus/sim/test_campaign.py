"""Campaigns: worker processes give the same runs as one process, and a time limit stops early."""

from __future__ import annotations

from dwcp.consensus.sim.campaign import CampaignSpec, run_campaign

SPEC = CampaignSpec(protocols=("pbft", "tpbft"), nodes=4, byzantine=1, first_seed=20, runs=3, chaos=True,
                    scenario_kwargs={"duration": 2.0, "rate": 10.0})


def test_workers_reproduce_the_single_process_runs() -> None:
    one = run_campaign(SPEC, workers=1, progress=False)
    two = run_campaign(SPEC, workers=2, progress=False)
    for protocol in SPEC.protocols:
        assert [r.seed for r in two.results[protocol]] == [20, 21, 22]
        assert [r.trace_hash for r in one.results[protocol]] == [r.trace_hash for r in two.results[protocol]]
    assert one.complete and one.runs == 3
    # both protocols ran the same scenario for each seed
    assert [r.scenario["byzantine"] for r in one.results["pbft"]] == [r.scenario["byzantine"] for r in
                                                                       one.results["tpbft"]]


def test_time_limit_stops_early_and_says_so() -> None:
    spec = CampaignSpec(protocols=("pbft",), nodes=4, runs=50, scenario_kwargs={"duration": 2.0, "rate": 10.0})
    campaign = run_campaign(spec, workers=1, progress=False, time_limit=0.0)
    assert campaign.runs == 1 and not campaign.complete
