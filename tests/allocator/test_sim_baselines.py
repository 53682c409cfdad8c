import numpy as np
import pytest

from dwcp.allocator.baselines import BestFit, FirstFit, RandomFit, RoundRobin
from dwcp.allocator.evaluate import replay
from dwcp.allocator.traces import make_trace


def trace_of(*rows):
    """Rows of (arrival, cpu, mem, net, duration, max_wait)."""
    return make_trace(np.array(rows, dtype=float))


def placements(hosts, trace, policy):
    chosen = []

    class Spy:
        name = policy.name

        def choose(self, state, decision):
            h = policy.choose(state, decision)
            chosen.append(h)
            return h

    out, _ = replay(hosts, trace, Spy())
    return chosen, out


def test_round_robin_alternates_first_fit_fills_the_first_host(two_hosts):
    tr = trace_of(*[(i, 1, 1, 1, 100, 0) for i in range(4)])
    assert placements(two_hosts, tr, RoundRobin())[0] == [0, 1, 0, 1]
    assert placements(two_hosts, tr, FirstFit())[0] == [0, 0, 0, 0]


def test_best_fit_takes_the_tightest_host(two_hosts):
    # 4 cores fill the small host exactly; 5 fit only the big one; then 3 fit tightest in the big one (8-5).
    tr = trace_of((0, 4, 1, 1, 100, 0), (1, 5, 1, 1, 100, 0), (2, 3, 1, 1, 100, 0))
    assert placements(two_hosts, tr, BestFit())[0] == [0, 1, 1]


def test_random_only_picks_feasible_hosts_and_is_seeded(two_hosts):
    tr = trace_of(*[(i, 1, 1, 1, 1000, 0) for i in range(3)], (20, 5, 1, 1, 10, 0))
    a, out = placements(two_hosts, tr, RandomFit(3))
    assert a == placements(two_hosts, tr, RandomFit(3))[0]
    assert a[-1] == 1 and out.placed == 4  # 5 cores fit only the big host


def test_cost_is_powered_on_core_time(two_hosts):
    # small host (4 cores) busy 0..100, big host (8 cores) busy 50..250 → 4*100 + 8*200 core-seconds.
    tr = trace_of((0, 4, 1, 1, 100, 0), (50, 5, 1, 1, 200, 0))
    _, out = placements(two_hosts, tr, FirstFit())
    assert out.active_core_seconds == pytest.approx(4 * 100 + 8 * 200)


def test_workload_waits_within_max_wait_then_misses_sla(two_hosts):
    tr = trace_of((0, 8, 1, 1, 100, 0), (1, 8, 1, 1, 10, 150), (2, 8, 1, 1, 10, 30), (3, 9, 1, 1, 10, 500))
    _, out = placements(two_hosts, tr, FirstFit())
    # #1 waits until t=100 and is placed; #2 cannot wait that long; #3 fits no host at all.
    assert (out.placed, out.missed, out.refused) == (2, 1, 1)
    assert out.sla_compliance == pytest.approx(0.5)
