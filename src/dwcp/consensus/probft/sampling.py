"""ProBFT's numbers: sample size s = ceil(o*sqrt(n)), quorum q = ceil(l*sqrt(n)), who is in a sample,
and the probabilities the defaults are derived from (docs/probft.md gives the derivation and figures).

Model (receivers are drawn by a VRF, so for the analysis each sender's sample is a uniform random
s-subset of the n - 1 others, and a given receiver is in it with probability p = s / (n - 1)):

- liveness: with a correct leader and f silent Byzantine nodes, a correct receiver's matching votes
  are 1 (its own) + Binomial(n - 1 - f, p). The phase reaches quorum with probability
  P_live = P[Bin(n - 1 - f, p) >= q - 1].
- split attack (the worst case for safety): an equivocating leader splits the n - f correct nodes
  into halves A and B and every Byzantine node votes for both. A receiver in the smaller half gets
  1 + Bin(f + floor((n - f) / 2) - 1, p) matching votes; P_split is the chance that reaches q. A
  disagreement needs a quorum on both sides in both phases, so per height and view it is at most
  P_unsafe <= (n - f) * P_split(prepare) * P_split(commit), with the commit phase's senders only
  those of the smaller half that prepared (see `predict`).

- isolation: an equivocating leader and the f Byzantine nodes make one correct node decide alone when
  q - 1 Byzantine senders hold it in both phases' samples: per view at most
  (n - f) * P[Bin(f, p) >= q - 1]^2 (`isolation_risk`). It does not depend on certificates.
- forgery: the f Byzantine nodes can sign a valid certificate (for a view change or catch-up) for any
  block on their own when some Byzantine holder has q - 1 Byzantine senders whose samples hold it:
  per view at most forge = f * P[Bin(f, p) >= q - 1].

Defaults: q is the largest quorum with 1 - P_live <= `liveness_miss` (10^-2), and o the smallest (from
1, in steps of 0.25) whose q also keeps forge <= `max_forge_risk` (10^-6). When no such o gives s < n - 1
the "sample" is everyone and sampling cannot pay: the protocol runs dense, q = the committee's 2f + 1,
exactly PBFT's quorums and deterministic safety (n = 7). n = 31: o = 4, s = 23, q = 12; n = 100:
o = 6.5, s = 65, q = 35: both q - 1 > f, so no certificate can be made of Byzantine ballots alone.
The split attack is not bounded by sizes (its count has nearly the honest mean when f ~ n/3): it is
the equivocation-evidence rule (replica.py) that stops it; `predict` shows the figures.
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass

PHASES = ("prepare", "commit")
DEFAULT_LIVENESS_MISS = 1e-2
DEFAULT_FORGE_RISK = 1e-6
_DOMAIN = b"dwcp-probft-sample/1"


@dataclass(frozen=True, slots=True)
class Params:
    n: int
    f: int
    sample_size: int  # recipients of each prepare/commit (n - 1 when dense)
    quorum: int  # matching votes, our own included, that complete a phase
    dense: bool  # sample = everyone, quorum = 2f + 1 (PBFT's deterministic rule)

    @property
    def p(self) -> float:
        return self.sample_size / (self.n - 1) if self.n > 1 else 1.0


def binom_tail(trials: int, p: float, k: int) -> float:
    """P[Bin(trials, p) >= k], exactly (trials <= a few hundred)."""
    if k <= 0:
        return 1.0
    if k > trials:
        return 0.0
    return min(1.0, sum(math.comb(trials, i) * p**i * (1 - p) ** (trials - i) for i in range(k, trials + 1)))


def _live_quorum(n: int, f: int, p: float, s: int, liveness_miss: float) -> int:
    """The largest q a correct leader's phase reaches with f silent nodes, except w.p. liveness_miss."""
    q = 2
    while q + 1 <= s + 1 and 1 - binom_tail(n - 1 - f, p, q) <= liveness_miss:
        q += 1
    return q


def forge_risk(n: int, f: int, p: float, q: int) -> float:
    """Union bound on the chance that, in one view, some Byzantine holder has q - 1 Byzantine senders
    whose samples hold it: then the f Byzantine nodes alone can sign a valid certificate for any block."""
    return min(1.0, f * binom_tail(f, p, q - 1))


def isolation_risk(n: int, f: int, p: float, q: int) -> float:
    """Union bound on the chance that, in one view with a Byzantine leader, some correct node can be made
    to decide a block no other correct node decides. The leader sends block B' to one correct node and B
    to the rest; the f Byzantine nodes send that node prepare and commit ballots for B' whenever their
    samples (fixed per view and phase, and known to their owners) hold it. With q - 1 of them in both
    phases it decides B' at once, before any correct node's ballot for B (the equivocation evidence) can
    reach it. No handling of third-party certificates changes this, so it is the floor on (s, q) that a
    checkpoint-anchored catch-up and a quorum-vouched view change would leave (docs/probft.md)."""
    one = binom_tail(f, p, q - 1)
    return min(1.0, (n - f) * one * one)


@functools.lru_cache(maxsize=256)  # every replica of a committee derives the same (n = 100: 2 CPU-s a run)
def derive(n: int, f: int, quorum: int, *, o: float = 0.0, quorum_factor: float = 0.0,
           liveness_miss: float = DEFAULT_LIVENESS_MISS, max_forge_risk: float = DEFAULT_FORGE_RISK) -> Params:
    """Sample and quorum sizes for a committee of n with f tolerated faults and PBFT quorum `quorum`.

    Default (o = 0): the smallest o (in steps of 0.25 from 1) whose liveness quorum (`_live_quorum`) is
    also safe against forgery (`forge_risk` <= max_forge_risk); dense when none is below n - 1. An
    explicit o keeps the liveness quorum whatever its forge risk (`predict` reports it); an explicit
    quorum_factor (the paper's l) sets q = ceil(l * sqrt(n)). q is bounded to [2, 2f + 1].
    """
    if n <= 1:
        return Params(n=n, f=f, sample_size=0, quorum=1, dense=True)
    root = math.sqrt(n)
    factors = [o] if o else [1.0 + 0.25 * i for i in range(int(4 * root) + 1)]
    for factor in factors:
        s = math.ceil(factor * root)
        if s >= n - 1:
            break
        p = s / (n - 1)
        q = math.ceil(quorum_factor * root) if quorum_factor else _live_quorum(n, f, p, s, liveness_miss)
        q = max(2, min(q, quorum))
        if o or forge_risk(n, f, p, q) <= max_forge_risk:
            return Params(n=n, f=f, sample_size=s, quorum=q, dense=False)
    return Params(n=n, f=f, sample_size=n - 1, quorum=quorum, dense=True)


def predict(params: Params) -> dict[str, float]:
    """The model's figures for `params` (module docstring): per receiver and phase, the chance a
    correct leader's phase misses quorum with f silent, the split attack's chances, and the per-view
    chance that the f Byzantine nodes can forge a certificate."""
    n, f, q, p = params.n, params.f, params.quorum, params.p
    if params.dense:
        return {"liveness_miss": 0.0, "split_prepare": 0.0, "unsafe_bound": 0.0, "forge_risk": 0.0}
    live = binom_tail(n - 1 - f, p, q - 1)
    half = (n - f) // 2
    prep = binom_tail(f + half - 1, p, q - 1)
    prepared = round(half * prep)  # expected smaller-half nodes that prepared
    commit = binom_tail(f + prepared - 1, p, q - 1)
    return {"liveness_miss": 1 - live, "split_prepare": prep,
            "unsafe_bound": min(1.0, (n - f) * prep * commit), "forge_risk": forge_risk(n, f, p, q)}


def alpha(committee_digest: bytes, epoch: int, view: int, phase: str) -> bytes:
    """The VRF input of a sample: one per committee, epoch, view and phase (never per height, so a
    node proves once per view and phase and receivers verify once per sender, view and phase)."""
    return b"|".join((_DOMAIN, committee_digest, str(epoch).encode(), str(view).encode(), phase.encode()))


@functools.lru_cache(maxsize=1 << 12)
def draw(beta: bytes, others: tuple[int, ...], size: int) -> frozenset[int]:
    """`size` members of `others` chosen by the VRF output `beta`: a Fisher-Yates shuffle driven by
    BLAKE2b(beta, counter), stopped after `size` steps (deterministic: every verifier draws the same).
    Memoised: every receiver of a sender's ballots redraws the same sample (in the simulator, all n
    replicas of a run share one process; at n = 100 the draws were 12% of a run's CPU)."""
    pool = list(others)
    size = min(size, len(pool))
    for i in range(size):
        r = int.from_bytes(hashlib.blake2b(beta + i.to_bytes(4, "big"), digest_size=8).digest(), "big")
        j = i + r % (len(pool) - i)  # bias < len/2^64: immaterial
        pool[i], pool[j] = pool[j], pool[i]
    return frozenset(pool[:size])
