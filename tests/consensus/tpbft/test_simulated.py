"""T-PBFT in the simulator (virtual clock, WAN latencies, Byzantine behaviours): no I/O, a few seconds."""

from __future__ import annotations

import pytest

from dwcp.consensus.sim.runner import Simulation
from dwcp.consensus.sim.scenario import Scenario
from dwcp.consensus.tpbft import Config


@pytest.mark.parametrize(("node", "behaviour"), [(3, "silent"), (0, "equivocate")])
def test_byzantine_group_member_is_voted_out_on_a_wan(node: int, behaviour: str) -> None:
    sc = Scenario(protocol="tpbft", nodes=10, seed=1, byzantine={node: behaviour}, duration=4.0, rate=300.0)
    sim = Simulation(sc, core_kwargs={"config": Config(epoch_length=16, batch_size=32)})
    result = sim.run()
    assert result.ok, result.violation_details
    cores = [sim.nodes[i].instances[0].core for i in sc.correct]
    epoch = min(c.epoch for c in cores)
    assert epoch >= 2
    assert len({c.ranking(epoch) for c in cores}) == 1  # every correct node picked the same group
    kept = sorted(cores[0].rankings)
    if behaviour == "silent":  # missing every vote: out of every group after the measurement epoch
        assert all(node not in cores[0].group(e, 0) for e in kept)
    else:  # deposed as primary of epoch 0: it may vote again once trusted, but it does not lead again
        assert all(cores[0].primary(e, 0) != node for e in kept)
