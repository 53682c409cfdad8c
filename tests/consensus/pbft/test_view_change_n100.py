"""PBFT at n = 100 (the baseline ProBFT is measured against): the primary fails after blocks were
prepared, and the 99 others change view. 67 view changes with their 2f+1-signature certificates are
over a frame (1 MiB); a NEW-VIEW that carried them was never sent and the committee stalled for
good (`dwcp simulate pbft --nodes 100` exited 1). The NEW-VIEW names them by digest instead.

One simulated run, about 10 CPU-seconds: the primary crashes at 0.6 s with blocks in flight,
restarts at 1.5 s, and every transaction submitted after that must commit at every live node.
"""

from __future__ import annotations

import pytest

from dwcp.consensus.core.codec import MAX_MESSAGE_SIZE, encode
from dwcp.consensus.sim import Crash, Restart, Scenario, Simulation


@pytest.mark.slow
def test_pbft_at_100_nodes_replaces_a_crashed_primary_with_bounded_messages() -> None:
    sim = Simulation(Scenario(protocol="pbft", nodes=100, seed=1, duration=2.5, rate=10.0,
                              faults=(Crash(0.6, 0), Restart(1.5, 0))))
    sizes: dict[str, int] = {}
    seal = sim.codec.seal

    def measured(signer, message):  # noqa: ANN001, ANN202 - the codec's own signature
        frame = seal(signer, message)
        kind = type(message).__name__
        sizes[kind] = max(sizes.get(kind, 0), len(frame))
        return frame

    sim.codec.seal = measured  # type: ignore[method-assign]
    result = sim.run()
    assert result.ok, result.violation_details
    assert result.view_changes == 1 and result.committed_tx >= 15
    new_primary = sim.nodes[1].instances[0].core
    assert (new_primary.view, new_primary.mode.value) == (1, "normal")
    # What the NEW-VIEW stands for would not fit in a frame; the NEW-VIEW itself is a few KB.
    stood_for = sum(len(encode(svc)) for svc in new_primary.nv_proof.values())
    assert len(new_primary.nv_proof) == 67 and stood_for > MAX_MESSAGE_SIZE
    assert sizes["NewView"] < 8 * 1024
    assert max(sizes.values()) < MAX_MESSAGE_SIZE // 8
