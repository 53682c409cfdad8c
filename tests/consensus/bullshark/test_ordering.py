"""The Bullshark commit rule, fed certificates directly (Narwhal's bullshark_tests / Sui's randomised DAG tests)."""

from __future__ import annotations

import pytest

from dwcp.consensus.bullshark.ordering import Bullshark, CommittedSubDag
from tests.consensus.bullshark.dags import Cert, causal_orders, full_rounds, make_cert, random_dag


def run(certs: list[Cert], n: int, **kwargs) -> list[CommittedSubDag]:
    core = Bullshark(range(n), **kwargs)
    out: list[CommittedSubDag] = []
    for cert in certs:
        out += core.process(cert)
    return out


def sequence(sub_dags: list[CommittedSubDag]) -> list[tuple[int, bytes, tuple[bytes, ...]]]:
    return [(s.index, s.leader.digest, tuple(c.digest for c in s.certificates)) for s in sub_dags]


def assert_well_formed(sub_dags: list[CommittedSubDag], gc_depth: int) -> None:
    """Indices have no gaps, nothing commits twice, every parent above the horizon commits first."""
    seen: set[bytes] = set()
    for expected, s in enumerate(sub_dags, start=1):
        assert s.index == expected and s.certificates[-1] is s.leader and s.leader.round % 2 == 0
        for c in s.certificates:
            assert c.digest not in seen
            if c.round - 1 >= s.leader.round - gc_depth:
                assert all(p in seen for p in c.parents), f"parent of round {c.round} certificate not committed first"
            seen.add(c.digest)


def test_commit_one_anchor_with_full_rounds() -> None:
    # Rounds 1-3 complete: round 3 supports the anchor of round 2, which commits with all of rounds 1-2.
    out = run(full_rounds(4, 3), 4)
    assert [(s.leader.round, s.leader.author, len(s.certificates)) for s in out] == [(2, 1, 5)]


def test_anchor_waits_for_f_plus_one_support() -> None:
    certs = full_rounds(4, 2)
    anchor = next(c for c in certs if c.round == 2 and c.author == 1)
    others = [c.digest for c in certs if c.round == 2 and c.author != 1]
    core = Bullshark(range(4))
    for c in certs:
        assert core.process(c) == []
    assert core.process(make_cert(3, 0, others)) == []  # does not name the anchor
    assert core.process(make_cert(3, 1, [anchor.digest, *others[:2]])) == []  # support 1 < f + 1 = 2
    out = core.process(make_cert(3, 2, [anchor.digest, *others[:2]]))
    assert [s.leader.digest for s in out] == [anchor.digest]


def test_dead_leader_is_skipped_and_later_anchor_commits() -> None:
    # Author 1 (the anchor of round 2) is dead: round 2 has no anchor, round 4's (author 2) commits.
    out = run(full_rounds(4, 5, authors=[0, 2, 3]), 4)
    assert [(s.leader.round, s.leader.author) for s in out] == [(4, 2)]
    assert len(out[0].certificates) == 3 * 3 + 1  # rounds 1-3 of the three live authors, then the anchor


def test_earlier_linked_anchor_is_ordered_first() -> None:
    # Round 3 names the round-2 anchor only once (no direct commit); round 5 commits round 4's anchor,
    # which links to round 2's anchor through that one child, so round 2's anchor commits first.
    certs = full_rounds(4, 2)
    r2 = {c.author: c for c in certs if c.round == 2}
    r3 = [make_cert(3, 0, [r2[1].digest, r2[2].digest, r2[3].digest])] + [
        make_cert(3, a, [r2[0].digest, r2[2].digest, r2[3].digest]) for a in (1, 2, 3)]
    r4 = [make_cert(4, a, [c.digest for c in r3]) for a in range(4)]
    r5 = [make_cert(5, a, [c.digest for c in r4]) for a in range(4)]
    out = run(certs + r3 + r4 + r5, 4)
    assert [(s.leader.round, s.leader.author) for s in out] == [(2, 1), (4, 2)]
    assert_well_formed(out, 50)


@pytest.mark.parametrize(("n", "missing", "slow"), [
    (4, (), ()), (4, (3,), ()), (4, (), (0,)), (7, (6,), (2,)), (7, (1, 5), ()), (10, (0, 4), (7,)),
])
@pytest.mark.parametrize("schedule_period", [0, 1, 3])
def test_every_causal_order_commits_the_same_sequence(n, missing, slow, schedule_period) -> None:
    gc_depth = 6  # small, so garbage collection happens inside these DAGs
    for seed in range(6):
        dag = random_dag(seed, n, rounds=24, missing=missing, slow=slow)
        reference = run(dag, n, gc_depth=gc_depth, schedule_period=schedule_period)
        assert_well_formed(reference, gc_depth)
        assert len(reference) >= 3, "a DAG this long commits several anchors"
        expected = sequence(reference)
        for order in causal_orders(dag, count=40, seed=seed):
            got = run(order, n, gc_depth=gc_depth, schedule_period=schedule_period)
            assert sequence(got) == expected


def test_hundreds_of_orders_of_one_dag_with_a_missing_and_a_slow_author() -> None:
    dag = random_dag(99, 7, rounds=30, missing=(3,), slow=(5,))
    expected = sequence(run(dag, 7, schedule_period=2))
    for order in causal_orders(dag, count=300, seed=7):
        assert sequence(run(order, 7, schedule_period=2)) == expected


def test_reputation_moves_anchors_off_a_crashed_author() -> None:
    # Author 1 crashes after round 4. Round-robin keeps electing it every fourth even round; with the
    # HammerHead schedule its slot goes to an author that votes, so more anchors commit.
    live = full_rounds(4, 4)
    tail: list[Cert] = []
    previous = [c.digest for c in live if c.round == 4]
    for r in range(5, 60):
        current = [make_cert(r, a, previous) for a in (0, 2, 3)]
        tail += current
        previous = [c.digest for c in current]
    plain = run(live + tail, 4)
    reputed_core = Bullshark(range(4), schedule_period=2)
    reputed = [s for c in live + tail for s in reputed_core.process(c)]
    assert reputed_core.schedule.changes > 0 and 1 not in reputed_core.schedule.table
    assert len(reputed) > len(plain)
    covered = {c.digest for s in plain for c in s.certificates}
    assert covered <= {c.digest for s in reputed for c in s.certificates} | {c.digest for c in tail[-9:]}


def test_late_certificate_below_the_gc_horizon_is_ignored() -> None:
    core = Bullshark(range(4), gc_depth=2)
    for c in full_rounds(4, 9):
        core.process(c)
    assert core.gc_round > 1
    assert core.process(make_cert(1, 0, ())) == []
