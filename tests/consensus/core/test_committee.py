from __future__ import annotations

import pytest

from dwcp.consensus.core import Committee


@pytest.mark.parametrize(("n", "f", "q"), [(1, 0, 1), (4, 1, 3), (5, 1, 4), (7, 2, 5), (10, 3, 7), (100, 33, 67)])
def test_quorum_arithmetic(committee, n, f, q):
    c = committee(n).committee
    assert (c.f, c.quorum, c.validity) == (f, q, f + 1)
    assert 2 * c.quorum - c.n >= c.f + 1  # two quorums share a correct node
    assert c.quorum <= c.n - c.f  # correct nodes alone form a quorum


def test_committee_file_round_trip(committee, tmp_path):
    c = committee(4).committee
    c.save(tmp_path / "committee.json")
    loaded = Committee.load(tmp_path / "committee.json")
    assert loaded == c and loaded.digest() == c.digest()
