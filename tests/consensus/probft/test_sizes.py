"""The sample-size analysis behind issue 11's message target (docs/probft.md, "Session 6"): at n = 100
every sample small enough for <= 25% of PBFT's messages lets f colluding nodes make a correct node
decide alone, whatever catch-up and the view change do with certificates."""

import random

from dwcp.consensus.probft.sampling import binom_tail, derive, draw, isolation_risk


def _ratio(n: int, s: int) -> float:
    return (n + 2 * n * s) / (n + 2 * n * (n - 1))


def test_every_sample_that_meets_a_quarter_of_pbft_at_100_is_isolatable():
    n, f = 100, 33
    cheap = [derive(n, f, 67, o=1 + 0.25 * i) for i in range(12)]
    cheap = [p for p in cheap if _ratio(n, p.sample_size) <= 0.25]
    assert [p.sample_size for p in cheap] == [10, 13, 15, 18, 20, 23]
    assert all(isolation_risk(n, f, p.p, p.quorum) > 0.99 for p in cheap)
    # Raising q alone does not help: at s = 23, isolation <= 1e-6 needs q = 19, and then a correct
    # leader's phase reaches its quorum with f silent only about a quarter of the time.
    p = 23 / 99
    q = next(q for q in range(2, 25) if isolation_risk(n, f, p, q) <= 1e-6)
    assert q == 19 and binom_tail(n - 1 - f, p, q - 1) < 0.3


def test_the_isolation_floor_at_100_is_far_above_a_quarter():
    n, f = 100, 33
    safe = next(p for p in (derive(n, f, 67, o=1 + 0.25 * i) for i in range(36))
                if isolation_risk(n, f, p.p, p.quorum) <= 1e-6)
    assert (safe.sample_size, safe.quorum) == (60, 32) and round(_ratio(n, safe.sample_size), 2) == 0.61
    defaults = derive(n, f, 67)
    assert isolation_risk(n, f, defaults.p, defaults.quorum) == 0.0  # q - 1 > f


def test_isolation_risk_bounds_what_real_vrf_samples_allow():
    """Monte Carlo with the node's own sample draw: the chance that some correct node is held by q - 1
    Byzantine samples in both phases is the union bound's figure (the
    correct nodes' events barely overlap where the bound is not tiny)."""
    n, f = 100, 33
    params = derive(n, f, 67, o=4.0)  # s = 40, q = 19: the bound is ~0.34, measurable in 400 trials
    byzantine, correct = range(f), range(f, n)
    rng = random.Random(11)
    hits, trials = 0, 400
    for _ in range(trials):
        held = []
        for _phase in range(2):
            count = [0] * n
            for b in byzantine:
                for r in draw(rng.randbytes(32), tuple(i for i in range(n) if i != b), params.sample_size):
                    count[r] += 1
            held.append(count)
        hits += any(held[0][c] >= params.quorum - 1 and held[1][c] >= params.quorum - 1 for c in correct)
    bound = isolation_risk(n, f, params.p, params.quorum)
    assert 0.3 < bound < 0.4
    assert abs(hits / trials - bound) < 0.06  # measured 0.3325 against 0.336
