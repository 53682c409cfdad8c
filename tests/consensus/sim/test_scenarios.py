"""The CI slice of the simulation campaign: 200+ seeded scenarios per run of the suite, PBFT and
T-PBFT, with f Byzantine nodes of mixed behaviour (silent, equivocating leader, twins, invalid
signatures, garbage frames), partitions and crash/restarts, over WAN regions. Every scenario must
show zero invariant violations, including liveness once the last fault has healed.

Each case lists every failing seed with the first violations, so a failure reads as a reproducer:
`dwcp simulate PROTOCOL --nodes N --seed SEED --chaos --duration 6 --rate 10 --epoch-length 8`
(with --byzantine F).
The long campaign (10^4 runs of n=10) is `benchmarks/consensus_sim.py`.
"""

from __future__ import annotations

import pytest

from dwcp.consensus import registry
from dwcp.consensus.sim import Scenario, simulate

DURATION, RATE = 6.0, 10.0
EPOCH = 8  # T-PBFT re-chooses its group every 8 blocks here, so runs cross several epochs
# (nodes, seeds): 40 + 40 + 25 = 105 scenarios per protocol, 210 in all
SIZES = ((4, range(40)), (7, range(100, 140)), (10, range(200, 225)))


def campaign_failures(protocol: str, nodes: int, seeds: range) -> list[str]:
    """Each seed's chaos scenario with f Byzantine nodes of mixed behaviour; one line per seed that violated."""
    failures = []
    for seed in seeds:
        sc = Scenario.build(protocol, nodes=nodes, byzantine=(nodes - 1) // 3, seed=seed, chaos=True,
                            duration=DURATION, rate=RATE, epoch_length=EPOCH)
        result = simulate(sc)
        if not result.ok:
            failures.append(f"seed {seed} {sc.byzantine} {result.scenario['faults']}: {result.violation_details[:2]}")
    return failures


@pytest.mark.parametrize("protocol", registry.names())
@pytest.mark.parametrize(("nodes", "seeds"), SIZES, ids=[f"n{n}" for n, _ in SIZES])
def test_no_violations_with_byzantine_nodes_partitions_and_crashes(protocol: str, nodes: int, seeds: range) -> None:
    failures = campaign_failures(protocol, nodes, seeds)
    assert not failures, f"{len(failures)} of {len(seeds)} scenarios violated invariants:\n" + "\n".join(failures)
