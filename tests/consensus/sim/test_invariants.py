"""The invariant checkers catch planted violations (fed straight in, as the runner would) and stay
quiet on a clean history; Byzantine nodes' commits are never judged."""

from __future__ import annotations

import pytest

from dwcp.consensus.core.messages import Transaction
from dwcp.consensus.sim.invariants import InvariantChecker

TX = [Transaction(payload=f"tx-{i}".encode()) for i in range(6)]
A, B = b"\xaa" * 32, b"\xbb" * 32


def _checker(correct: tuple[int, ...] = (0, 1, 2)) -> InvariantChecker:
    checker = InvariantChecker(correct)
    for i, tx in enumerate(TX):
        checker.submitted_tx(0.1 * i, i % 3, tx)
    return checker


def test_clean_history_has_no_violations() -> None:
    c = _checker()
    for node in (0, 1, 2):
        c.committed(1.0, node, 1, A, TX[:3], TX[:3])
        c.committed(2.0, node, 2, B, TX[3:], TX[3:])
    c.finish(0.0, 5.0, (0, 1, 2))
    assert not c.violations
    assert len(c.latencies()) == 6


def test_conflicting_commit_at_one_height_is_an_agreement_violation() -> None:
    c = _checker()
    c.committed(1.0, 0, 1, A, TX[:1], TX[:1])
    c.committed(1.1, 1, 1, B, TX[1:2], TX[1:2])
    assert c.violations.counts["agreement"] == 1
    assert "height 1" in c.violations.details[0]


def test_a_node_changing_its_own_commit_is_an_agreement_violation() -> None:
    c = _checker()
    c.committed(1.0, 0, 1, A, TX[:1], TX[:1])
    c.committed(1.5, 0, 1, A, TX[:1], ())  # a harmless repeat
    assert not c.violations
    c.committed(2.0, 0, 1, B, TX[:1], ())
    assert c.violations.counts["agreement"] == 1


def test_byzantine_commits_are_not_judged() -> None:
    c = _checker(correct=(0, 1))
    c.committed(1.0, 0, 1, A, TX[:1], TX[:1])
    c.committed(1.0, 2, 1, B, TX[1:2], TX[1:2])
    assert not c.violations


def test_an_honest_faulty_node_is_judged_for_safety_but_not_liveness() -> None:
    c = InvariantChecker((0, 1), honest=(2,))
    for i, tx in enumerate(TX):
        c.submitted_tx(0.1 * i, i % 2, tx)
    c.committed(1.0, 0, 1, A, TX[:1], TX[:1])
    c.committed(1.0, 1, 1, A, TX[:1], TX[:1])
    c.finish(0.0, 0.05, live=(0, 1, 2))  # node 2 committed nothing: not a liveness violation
    assert not c.violations
    c.committed(1.2, 2, 1, B, TX[1:2], TX[1:2])  # ... but a conflicting block is an agreement violation
    assert c.violations.counts["agreement"] == 1
    assert c.latencies() == [pytest.approx(1.0)]  # latency stays the correct nodes'


def test_unsubmitted_or_foreign_transactions_are_validity_violations() -> None:
    c = _checker()
    forged = Transaction(payload=b"never submitted")
    c.committed(1.0, 0, 1, A, (forged,), (forged,))
    c.committed(1.0, 1, 1, A, (TX[0],), (TX[1],))  # executes a tx that is not in its block
    assert c.violations.counts["validity"] == 2


def test_executing_a_transaction_twice_is_a_duplicate() -> None:
    c = _checker()
    c.committed(1.0, 0, 1, A, TX[:2], TX[:2])
    c.committed(2.0, 0, 2, B, TX[1:3], TX[1:3])
    c.committed(2.0, 1, 1, A, (TX[0], TX[0]), (TX[0],))
    assert c.violations.counts["duplicate"] == 2


def test_a_gap_in_heights_is_an_order_violation() -> None:
    c = _checker()
    c.committed(1.0, 0, 2, A, TX[:1], TX[:1])
    assert c.violations.counts["order"] == 1


def test_missing_commits_after_the_heal_are_liveness_violations() -> None:
    c = _checker()
    for node in (0, 1):
        c.committed(1.0, node, 1, A, TX, TX)
    c.committed(1.0, 2, 1, A, TX[:2], TX[:2])
    c.finish(0.25, 5.0, (0, 1, 2))  # TX[3..5] were submitted after 0.25 s; node 2 lacks them
    assert c.violations.counts["liveness"] == 1
    assert "node 2: 3 of 3" in c.violations.details[0]
    c2 = _checker()
    c2.finish(0.25, 5.0, (2,))
    c2.finish(9.0, 10.0, (0, 1, 2))  # nothing was due after 9 s
    assert c2.violations.counts["liveness"] == 1


def test_core_and_codec_exceptions_are_recorded() -> None:
    c = _checker()
    c.core_error(1, "KeyError on Received")
    c.codec_error(2, 0, "UnicodeDecodeError")
    c.bad_certificate(0, 3)
    assert c.violations.counts["exception"] == 2 and c.violations.counts["certificate"] == 1
    assert c.violations.total() == 3
