"""The ship rule: when a candidate model counts as worse than the base in a declared-size bucket or data family.

Stated on 2026-12-05 (issue 16, session 7) before any candidate of that session was judged by it.

Why not "near-best at least the base's in every group": a group of 4-12 labelled payloads at 100 links per
payload has its near-best share move by several points when one payload's truth is timed again (the oracle
repeats to 0.85-0.99 per family on real chunks above 512 KiB), so a raw comparison rejects any change, good
or bad, by chance. The rule below calls a group worse only when the loss is beyond what the payloads drawn
and the oracle's own repeatability allow:

- The unit is the payload (a labelled chunk): all its requests share its labels, so they are not independent
  draws; resampling requests would understate the noise by the number of links per payload.
- For each group g (every declared-size bucket and every family with requests), D_g is the paired difference
  of near-best shares, candidate minus base, on the same requests against the same truth.
- Paired bootstrap: `resamples` draws of g's payloads with replacement. Where a payload was labelled twice
  (`label-large` into a second directory), each draw also picks which labelling is its truth, so the oracle's
  disagreement with itself widens the interval.
- g is worse when the one-sided upper confidence bound of D_g, the (1 - alpha / G) quantile of the
  resampled differences, is below zero; G is the number of groups tested (Bonferroni), so a candidate no worse
  than the base anywhere is called worse somewhere with probability at most alpha (0.05).
- A candidate ships when no group is worse and its overall near-best (all requests) is above the base's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dwcp.compression.oracle import NEAR_BEST

ALPHA = 0.05
RESAMPLES = 10_000


@dataclass(frozen=True)
class GroupVerdict:
    """One group's paired comparison: `diff` the near-best share of the candidate minus the base's (averaged
    over each payload's labellings), `upper` its one-sided upper confidence bound, `worse` whether upper < 0."""

    payloads: int
    requests: int
    diff: float
    upper: float
    worse: bool


@dataclass(frozen=True)
class Verdict:
    groups: dict[str, GroupVerdict]
    overall: float  # near-best share of the candidate minus the base's, over all requests (first labelling)

    @property
    def worse(self) -> list[str]:
        return [g for g, v in self.groups.items() if v.worse]

    @property
    def ships(self) -> bool:
        return not self.worse and self.overall > 0.0

    def describe(self) -> str:
        if self.ships:
            return f"holds (near-best {self.overall:+.4f} overall, no bucket or family worse)"
        why = [f"{g} {v.diff:+.4f} (bound {v.upper:+.4f}, {v.payloads} payloads)" for g, v in self.groups.items()
               if v.worse]
        if self.overall <= 0.0:
            why.append(f"overall {self.overall:+.4f} is no gain")
        return "fails: " + ", ".join(why)


def near_best(truth: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Whether each request's pick is within the 5% tolerance of its best option (NaN rows: False)."""
    mine = truth[np.arange(len(chosen)), chosen]
    return mine <= NEAR_BEST * np.min(truth, axis=1)


def judge(base: np.ndarray, candidate: np.ndarray, truths: list[np.ndarray], payload: np.ndarray,
          groups: dict[str, np.ndarray], *, alpha: float = ALPHA, resamples: int = RESAMPLES,
          seed: int = 0) -> Verdict:
    """The rule above for picks `base` and `candidate` (option index per request).

    `truths`: oracle seconds (requests x options) per labelling; the first covers every request, later ones
    have NaN rows for payloads they did not label. `payload`: the labelled payload of each request.
    `groups`: name -> request mask (buckets and families; a name may not be both).
    """
    first = truths[0]
    if np.isnan(first).any():
        raise ValueError("the first labelling must cover every request")
    have = np.array([~np.isnan(t).any(axis=1) for t in truths])  # (labellings, requests)
    diff = np.array([near_best(np.nan_to_num(t, nan=np.inf), candidate).astype(float)
                     - near_best(np.nan_to_num(t, nan=np.inf), base) for t in truths])
    overall = float(diff[0].mean())
    rng = np.random.default_rng(seed)
    level = 1.0 - alpha / max(1, len(groups))
    out = {}
    for name, mask in groups.items():
        rows = np.flatnonzero(mask)
        if not len(rows):
            continue
        ids, inv = np.unique(payload[rows], return_inverse=True)
        p = len(ids)
        n = np.bincount(inv, minlength=p).astype(float)
        # Per payload: its summed difference under each labelling it has (unlabelled ones repeat the first).
        per = np.array([np.bincount(inv, weights=diff[lab, rows], minlength=p) for lab in range(len(truths))])
        labelled = np.array([np.bincount(inv, weights=have[lab, rows], minlength=p) == n
                             for lab in range(len(truths))])
        labelled[0] = True
        count = labelled.sum(axis=0)
        order = np.argsort(~labelled, axis=0, kind="stable")  # each payload's labellings first, then the rest
        per = np.take_along_axis(per, order, axis=0)
        mean = (per * (np.arange(len(truths))[:, None] < count)).sum(axis=0) / count
        observed = float(mean.sum() / n.sum())
        draw = rng.integers(0, p, (resamples, p))
        pick = (rng.random((resamples, p)) * count[draw]).astype(int)
        sampled = per[pick, draw].sum(axis=1) / n[draw].sum(axis=1)
        upper = float(np.quantile(sampled, level))
        out[name] = GroupVerdict(p, len(rows), observed, upper, upper < 0.0)
    return Verdict(out, overall)
