"""The ship rule (`shiprule.judge`): a group is worse only beyond the payloads' and the oracle's own noise."""

import numpy as np
import pytest

from dwcp.compression.shiprule import judge

REQUESTS = 20  # per payload


def _set(families: dict[str, int]):
    """Requests of payloads per family; two options, option 0 the best (1 s) and option 1 not near (2 s)."""
    fam = np.concatenate([[f] * n * REQUESTS for f, n in families.items()])
    payload = np.repeat(np.arange(sum(families.values())), REQUESTS)
    truth = np.tile([1.0, 2.0], (len(fam), 1))
    return fam, payload, truth


def _groups(fam):
    return {f: fam == f for f in np.unique(fam).tolist()}


def test_a_loss_in_every_payload_of_a_family_is_worse_one_payloads_loss_is_noise():
    """Family a: the candidate misses 4 of 20 requests on each of its 10 payloads (a systematic loss, 0.20);
    family b: 4 of 20 on one payload only (0.02, what one payload's labels can do): a is worse, b is not,
    though both are below the base by the old rule's reading (any loss)."""
    fam, payload, truth = _set({"a": 10, "b": 10})
    base = np.zeros(len(fam), int)
    cand = base.copy()
    lose = (np.arange(len(fam)) % REQUESTS) < 4
    cand[lose & (fam == "a")] = 1
    cand[lose & (payload == 10)] = 1
    v = judge(base, cand, [truth], payload, _groups(fam))
    assert v.groups["a"].worse and v.groups["a"].diff == pytest.approx(-0.2)
    assert not v.groups["b"].worse and v.groups["b"].diff == pytest.approx(-0.02)
    assert v.groups["b"].upper == 0.0 and v.groups["b"].payloads == 10
    assert v.worse == ["a"] and not v.ships


def test_a_loss_the_second_labelling_reverses_is_within_the_oracles_noise():
    """Family c: on the first labelling the candidate misses 6 of 20 requests on every payload; on a second
    labelling of the same payloads those requests' best option is the candidate's, and the base's pick is not
    near. With only the first labelling c is worse; with both, each draw may take either truth per payload and
    the upper bound is above zero: not worse. A payload the second run did not reach keeps the first's truth."""
    fam, payload, truth = _set({"c": 8})
    base = np.zeros(len(fam), int)
    cand = base.copy()
    flip = (np.arange(len(fam)) % REQUESTS) < 6
    cand[flip] = 1
    again = truth.copy()
    again[flip] = [2.0, 1.0]
    again[payload == 7] = np.nan  # not labelled twice
    alone = judge(base, cand, [truth], payload, _groups(fam))
    both = judge(base, cand, [truth, again], payload, _groups(fam))
    assert alone.groups["c"].worse
    assert not both.groups["c"].worse and both.groups["c"].upper > 0
    # Observed: payloads 0-6 average -0.3 and +0.3 (0), payload 7 has only the first labelling (-0.3).
    assert both.groups["c"].diff == pytest.approx(-0.3 / 8)
    with pytest.raises(ValueError, match="first labelling"):
        judge(base, cand, [again, truth], payload, _groups(fam))


def test_more_groups_tested_widen_each_bound_and_a_candidate_ships_only_with_an_overall_gain():
    """Bonferroni: the same family judged beside 9 others gets a higher upper bound (alpha / 10 per group);
    a candidate no different from the base is no gain and does not ship; one that gains in one family and
    is unchanged elsewhere ships."""
    fam, payload, truth = _set({"d": 6})
    base = np.zeros(len(fam), int)
    cand = base.copy()
    cand[(payload < 2) & ((np.arange(len(fam)) % REQUESTS) < 5)] = 1
    alone = judge(base, cand, [truth], payload, {"d": fam == "d"})
    many = judge(base, cand, [truth], payload, {"d": fam == "d", **{f"x{i}": fam == "d" for i in range(9)}})
    assert many.groups["d"].upper >= alone.groups["d"].upper
    assert many.groups["d"].diff == alone.groups["d"].diff
    same = judge(base, base, [truth], payload, _groups(fam))
    assert not same.worse and not same.ships and "no gain" in same.describe()
    fam2, payload2, truth2 = _set({"e": 6, "f": 6})
    base2 = np.zeros(len(fam2), int)
    base2[fam2 == "e"] = 1  # the base misses all of e
    better = judge(base2, np.zeros(len(fam2), int), [truth2], payload2, _groups(fam2))
    assert better.ships and better.overall == pytest.approx(0.5) and "holds" in better.describe()
