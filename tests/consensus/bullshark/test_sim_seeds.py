"""Issue 13 asks for >= 200 seeded simulator scenarios with Byzantine authors in CI for Bullshark. The shared slice
(tests/consensus/sim/test_scenarios.py) gives every protocol 105; these 120 more seeds (other seeds, same chaos:
f Byzantine authors of mixed behaviour, partitions, crash/restart, WAN regions) bring Bullshark to 225, plus the 12
seed-scale runs of tests/consensus/sim/test_seed_scale.py. ~14 CPU-s on this 2-core VM.
Reproduce one: `dwcp simulate bullshark --nodes N --seed SEED --chaos --duration 6 --rate 10 --epoch-length 8`."""

from __future__ import annotations

import pytest

from tests.consensus.sim.test_scenarios import campaign_failures

SEEDS = ((4, range(1000, 1100)), (7, range(1100, 1120)))


@pytest.mark.parametrize(("nodes", "seeds"), SEEDS, ids=[f"n{n}" for n, _ in SEEDS])
def test_more_seeds_with_byzantine_authors_partitions_and_crashes(nodes: int, seeds: range) -> None:
    failures = campaign_failures("bullshark", nodes, seeds)
    assert not failures, f"{len(failures)} of {len(seeds)} scenarios violated invariants:\n" + "\n".join(failures)
