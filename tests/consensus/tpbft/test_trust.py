"""EigenTrust maths on small hand-checked matrices, and the local-opinion rules."""

from __future__ import annotations

from fractions import Fraction

import pytest

from dwcp.consensus.tpbft.trust import Opinions, TrustTable, eigentrust, normalise, ranking


def approx(xs: list[float]) -> object:
    return pytest.approx(xs, abs=1e-9)


def test_cycle_gives_uniform_trust() -> None:
    c = [[0, 1, 0], [0, 0, 1], [1, 0, 0]]
    t, _ = eigentrust(c, [1 / 3] * 3, damping=0.0)
    assert t == approx([1 / 3] * 3)


def test_aperiodic_chain_without_damping_is_stationary_distribution() -> None:
    # t0 = t1 / 2 + t2, t1 = t0 / 2, t2 = t0 / 2 + t1 / 2  ->  t = (4, 2, 3) / 9.
    c = [[0, 0.5, 0.5], [0.5, 0, 0.5], [1, 0, 0]]
    t, _ = eigentrust(c, [1 / 3] * 3, damping=0.0)
    assert t == approx([4 / 9, 2 / 9, 3 / 9])


def test_periodic_star_oscillates_without_damping() -> None:
    # 0 <-> {1, 2} is bipartite: undamped iteration flips between two vectors and never converges.
    c = [[0, 0.5, 0.5], [1, 0, 0], [1, 0, 0]]
    t, iterations = eigentrust(c, [1 / 3] * 3, damping=0.0, max_iterations=51)
    assert iterations == 51
    assert t == approx([2 / 3, 1 / 6, 1 / 6])


def test_star_with_damping_matches_hand_solution() -> None:
    # t = 0.8 C^T t + 0.2 p, p uniform: t0 = 0.8 (t1 + t2) + 1/15, t1 = t2 = 0.4 t0 + 1/15 -> (13, 7, 7) / 27.
    c = [[0, 0.5, 0.5], [1, 0, 0], [1, 0, 0]]
    t, iterations = eigentrust(c, [1 / 3] * 3, damping=0.2)
    expected = [float(Fraction(13, 27)), float(Fraction(7, 27)), float(Fraction(7, 27))]
    assert t == approx(expected)
    assert 1 < iterations < 1000
    assert sum(t) == pytest.approx(1.0)


def test_full_damping_returns_pre_trusted_vector() -> None:
    c = [[0, 1, 0], [1, 0, 0], [1, 0, 0]]
    t, _ = eigentrust(c, [0.5, 0.5, 0.0], damping=1.0)
    assert t == approx([0.5, 0.5, 0.0])


def test_eigentrust_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError):
        eigentrust([[1, 0]], [0.5, 0.5], damping=0.1)
    with pytest.raises(ValueError):
        eigentrust([[0, 1], [1, 0]], [0.5, 0.5], damping=1.5)


def test_normalise_rows_and_zero_row_falls_back_to_p() -> None:
    assert normalise([[0, 2, 6], [0, 0, 0], [1, 1, 0]], [0.2, 0.3, 0.5]) == [
        [0, 0.25, 0.75], [0.2, 0.3, 0.5], [0.5, 0.5, 0]]
    with pytest.raises(ValueError):
        normalise([[0, -1]], [0.5, 0.5])


def test_local_trust_uses_prior_and_clips_negative() -> None:
    table = TrustTable([0, 1, 2], prior=1)
    table.set_row(0, [1, 2], [3, 0], [0, 5])
    table.set_row(1, [0, 1, 2], [2, 99, 0], [0, 0, 0])  # entry about itself is ignored
    s = table.local_trust()
    assert s == [[0, 4, 0], [3, 0, 1], [0, 0, 0]]
    c = table.matrix()
    assert c[0] == [0, 1, 0]
    assert c[1] == [0.75, 0, 0.25]
    assert c[2] == pytest.approx([1 / 3] * 3)  # no report: pre-trusted vector


def test_table_global_trust_matches_eigentrust_by_hand() -> None:
    # Rows: 0 -> (1: 1, 2: 1); 1 -> 0 only; 2 -> 0 only  (the star above), prior 0.
    table = TrustTable([0, 1, 2], damping=0.2, prior=0)
    table.set_row(0, [1, 2], [1, 1], [0, 0])
    table.set_row(1, [0, 2], [4, 0], [0, 0])
    table.set_row(2, [0, 1], [7, 0], [0, 3])
    t = table.global_trust()
    assert [t[0], t[1], t[2]] == approx([13 / 27, 7 / 27, 7 / 27])


def test_pre_trusted_set_receives_the_damping_mass() -> None:
    table = TrustTable([0, 1, 2, 3], damping=0.5, pre_trusted=[3], prior=0)
    t = table.global_trust()  # no reports: C = p everywhere, so t = p
    assert [t[i] for i in range(4)] == approx([0, 0, 0, 1])
    with pytest.raises(ValueError):
        TrustTable([0, 1], pre_trusted=[7])


def test_misbehaving_node_trust_falls_below_silent_follower() -> None:
    ids = range(6)
    table = TrustTable(ids)
    group, bad, follower = [0, 1, 2, 3, 4], 4, 5
    for reporter in group:
        ops = Opinions(reporter, ids)
        for peer in group:
            ops.observe(peer, "missing" if peer == bad else "timely", times=20)
        if reporter != bad:
            ops.observe(bad, "invalid")
        table.set_row(reporter, *ops.snapshot())
    t = table.global_trust()
    order = ranking(t)
    assert order[-1] == bad
    assert order[-2] == follower  # never seen is better than seen misbehaving
    assert t[bad] < t[follower] < min(t[i] for i in group if i != bad)
    assert t[bad] < t[0] / 3


def test_opinions_weights_decay_and_snapshot() -> None:
    ops = Opinions(1, [0, 1, 2])
    ops.observe(0, "timely", times=3)
    ops.observe(2, "late")
    ops.observe(2, "missing")
    ops.observe(2, "invalid")
    ops.observe(2, "conflict")
    ops.observe(0, "deposed")
    ops.observe(1, "invalid")  # about ourselves: ignored
    ops.observe(9, "invalid")  # unknown: ignored
    assert ops.snapshot() == ((0, 2), (3, 0), (5, 14))
    ops.decay()
    assert ops.snapshot() == ((0, 2), (1, 0), (2, 7))
    with pytest.raises(KeyError):
        ops.observe(0, "bogus")


def test_ranking_is_deterministic_and_breaks_ties_by_id() -> None:
    assert ranking({3: 0.2, 1: 0.2, 2: 0.5, 0: 0.1}) == (2, 1, 3, 0)
    # float noise below the rounding precision does not reorder
    assert ranking({1: 0.1 + 0.2, 0: 0.3}) == (0, 1)


def test_same_reports_in_any_order_give_identical_trust() -> None:
    reports = [(r, [p for p in range(5) if p != r], [r + p for p in range(4)], [p % 2 for p in range(4)])
               for r in range(5)]
    a, b = TrustTable(range(5)), TrustTable(range(5))
    for rep in reports:
        a.set_row(*rep)
    for rep in reversed(reports):
        b.set_row(*rep)
    assert a.global_trust() == b.global_trust()  # bit-identical, not just close
    assert ranking(a.global_trust()) == ranking(b.global_trust())
