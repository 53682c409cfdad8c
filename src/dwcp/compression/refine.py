"""Close calls measured: time the options the model cannot separate on the request's own sample.

The model's small-chunk compress speeds err by ~0.3 (log s.d.) per sample, and features of the sample cannot do
much better (docs/compression.md, sessions 10-15: ~0.99 near-best at most on the live mix). Measuring can: with
measured speeds the same requests score 0.993-0.997. Measuring every option of every request costs tens of ms,
so only the close calls are measured, as Blosc's Btune tries compressions when its model is unsure: when another
option could beat the predicted pick by more than the near-best tolerance were the predicted ratios and speeds off
by a factor e^`margin` (`close_calls`), the pick and those rivals are compressed and decompressed on the sample cut
at the request's chunk (what the truth measures), and the cost model (`costmodel.transfer_seconds`, the one formula)
ranks them on the measured ratio and speeds. The others keep their predictions and are not chosen from.

Limits:
- a chunk larger than the sample: no refinement. The sample is all of the payload the service sees, and a 64 KiB
  piece measured whole is not a 1 MiB chunk (zstd-19 runs 0.90x its reference speed on 64-256 KiB chunks of
  real files, 0.63x on 1 MiB ones): timing it would answer another question than the request asked;
- a CPU budget per request (`budget_s`, this thread's CPU): an option is timed only if its predicted time on
  the sample (two compressions and two decompressions) fits in what is left; zstd-19 / brotli-11 on 64 KiB
  cost milliseconds and are skipped unless the budget allows. `none` costs nothing to know: never timed;
- speeds rescaled to the calibrated host, as the model's predictions and the truth's timings are: this VM's speed
  moves by ~30% within seconds (docs/compression.md, "Oracle"), and a raw timing taken in a slow moment read 0.4-0.5
  (log) under the truth's on dwcp up's mix. The canary (`oracle.CANARY` on the pilot block, 0.6-1 ms of CPU) is
  read at most once a second (`HOST_SECONDS`), and its relation to the full pilot (80-125 ms, too slow for a
  request) is measured once when the refiner is built.

Timing is the oracle's (`oracle.measure`: batches of calls of at least 50 us on the thread CPU clock, fastest of
the turns), with one or two turns per option, as the shadow's first pass, one option after the other so the budget
is checked against the CPU actually spent before each: a single call of a small sample read
0.5-0.8 (log) slow and scattered by s.d. 0.3-0.6 through the clock's and Python's per-call overhead.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from dwcp.compression import oracle
from dwcp.compression.codecs import OPTIONS
from dwcp.compression.corpus import pilot_data
from dwcp.compression.costmodel import transfer_seconds

# The timing turns: after the round trip, a turn of >= 0.2 ms of batches, a second when the fastest two disagree by
# > 3%. Measured against the shadow's truth on dwcp up's mix (120 samples, s.d. of log speed per option): turns of
# one 50 us batch 0.13-0.37, 0.1 ms 0.12-0.29, 0.2 ms 0.10-0.24, the shadow's own 0.5 ms 0.09-0.18; the model's
# prediction 0.13-0.38. 0.2 ms costs ~1 ms of CPU per option on a small sample, 0.5 ms ~2.3 ms.
MIN_TOTAL, ROUNDS, MAX_ROUNDS = 2e-4, 1, 2
# A measurement's fixed CPU beside the codec calls (contexts, the round-trip check, the clock): 0.10-0.15 ms here.
OPTION_OVERHEAD_S = 1.5e-4
# How long one canary reading stands for the host's speed: it costs ~0.5 ms of CPU (not counted against a request's
# budget, which is for the options), the host's modes last seconds.
HOST_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Refined:
    """What refinement did for one request: the option now chosen, its seconds (measured when it was timed), how
    many options were timed and the CPU seconds that took (0 and 0.0: a clear call, or not refinable)."""

    index: int
    seconds: float
    timed: int
    cpu_seconds: float


def timing_cost(n: int, vc: float, vd: float) -> float:
    """Predicted CPU seconds to time one option on `n` bytes: its fixed overhead, the round trip, then up to
    MAX_ROUNDS turns of at least MIN_TOTAL / ROUNDS, for compress and decompress."""
    return OPTION_OVERHEAD_S + sum(n / v + MAX_ROUNDS * max(n / v, MIN_TOTAL / ROUNDS) for v in (vc, vd))


def parse_setting(text: str) -> tuple[float, float]:
    """`MARGIN:BUDGET_MS` (the benchmarks' `--refine`, e.g. `0.3:6`) as (margin, budget in ms)."""
    margin, sep, budget = text.partition(":")
    if not sep:
        raise ValueError(f"expected MARGIN:BUDGET_MS, e.g. 0.3:6, got {text!r}")
    return float(margin), float(budget)


class Refiner:
    """Times the close calls of requests. No codec state is kept (`oracle.measure` makes its own contexts, the clock
    is the calling thread's), so threads may share one; the host reading they share is one float, replaced whole."""

    def __init__(
        self, margin: float, budget_s: float, pilot: float = math.nan, clock: oracle.Clock = time.thread_time_ns
    ) -> None:
        """`pilot`: the calibration's pilot speed, to which timings are rescaled (NaN: raw speeds, no canary)."""
        if not margin > 0.0:
            raise ValueError(f"refine margin must be > 0, got {margin!r}")
        if not budget_s > 0.0:
            raise ValueError(f"refine budget must be > 0 s, got {budget_s!r}")
        self.margin, self.budget_s, self.pilot, self.clock = margin, budget_s, pilot, clock
        self.pilot_per_canary = math.nan
        self._scale, self._host_at = 1.0, -math.inf
        if math.isfinite(pilot):
            # The full pilot and the canary in the same turns: how many pilot bytes/s one canary byte/s stands for.
            m = oracle.measure(pilot_data()[:64], pilot=True, clock=clock)
            self.pilot_per_canary = m.pilot / m.canary

    def close_calls(
        self,
        t: np.ndarray,
        size: int,
        chunk: int,
        ratio: np.ndarray,
        vc: np.ndarray,
        vd: np.ndarray,
        link_args: tuple[float, float, float],
    ) -> np.ndarray:
        """The predicted pick and every option that could beat it by more than the near-best tolerance were the
        model's ratio and speeds off by a factor e^`margin` (its log errors on small chunks: s.d. 0.1-0.35), the
        predicted pick first, the rest cheapest first.

        A margin on the predicted seconds themselves would call nearly every request close (88% of dwcp up's
        mix within 5%): a small payload's time is mostly RTT, equal for every option, and a 5% band there
        separates nothing that matters. Scaling the properties measures how far the prediction could be off.
        """
        f = np.full(len(t), math.exp(self.margin))
        f[0] = 1.0  # `none`: ratio 1, no CPU, known exactly
        best = int(t.argmin())
        pessimistic = transfer_seconds(
            size, chunk, ratio[best] * f[best], vc[best] / f[best], vd[best] / f[best], *link_args
        )
        optimistic = transfer_seconds(size, chunk, ratio / f, vc * f, vd * f, *link_args)
        rivals = np.flatnonzero(optimistic * oracle.NEAR_BEST < pessimistic)
        rivals = rivals[rivals != best]
        return np.concatenate(([best], rivals[np.argsort(t[rivals], kind="stable")]))

    def host_scale(self) -> float:
        """calibration pilot / the host's pilot now, from a canary reading at most HOST_SECONDS old (1: no pilot)."""
        if not math.isfinite(self.pilot_per_canary):
            return 1.0
        now = time.monotonic()
        if now - self._host_at >= HOST_SECONDS:
            m = oracle.measure(
                b"",
                options=(OPTIONS[0],),
                min_total=2 * MIN_TOTAL,
                rounds=1,
                max_rounds=2,
                clock=self.clock,
                pilot=False,
                canary=True,
            )
            self._scale, self._host_at = self.pilot / (m.canary * self.pilot_per_canary), now
        return self._scale

    def refine(
        self,
        sample: bytes,
        size: int,
        chunk: int,
        link_args: tuple[float, float, float],
        t: np.ndarray,
        ratio: np.ndarray,
        vc: np.ndarray,
        vd: np.ndarray,
    ) -> Refined:
        """The pick among the close calls of one request, by the cost model on measured figures.

        `t`: every option's predicted seconds; `ratio`, `vc`, `vd`: its predicted properties (speeds in bytes/s);
        `link_args`: (bandwidth bytes/s, RTT s, loss rate). A chunk larger than the sample, a clear call, or one
        whose pick and at least one rival do not fit the budget returns the prediction's pick untimed.
        """
        best = int(t.argmin())
        e, n = min(chunk, size), len(sample)
        if e > n or n == 0:
            return Refined(best, float(t[best]), 0, 0.0)
        band = self.close_calls(t, size, chunk, ratio, vc, vd, link_args).tolist()
        # The plan: the pick first, then rivals cheapest first, each while its predicted timing cost fits what is
        # left; a pick that does not fit means no refinement. Only measured options (and `none`, known exactly)
        # are chosen from: a measured pick against a rival's prediction would mix two questions' errors.
        plan, left = [], self.budget_s
        for i in band:
            if OPTIONS[i].codec == "none":
                continue
            cost = timing_cost(n, vc[i], vd[i])
            if cost <= left:
                plan.append(i)
                left -= cost
            elif i == best:
                break
        free = [i for i in band if OPTIONS[i].codec == "none"]
        if best not in plan + free or len(plan) + len(free) < 2:
            return Refined(best, float(t[best]), 0, 0.0)
        clock = self.clock
        start = clock()
        scale = self.host_scale()  # at most once a second; outside the options' budget
        spent_before = clock()
        secs = {i: float(t[i]) for i in free}
        for i in plan:
            # The budget again against the CPU actually spent (a prediction can be off); the pick always goes first.
            if i != best and timing_cost(n, vc[i], vd[i]) > self.budget_s - (clock() - spent_before) * 1e-9:
                continue
            m = oracle.measure(
                sample,
                options=(OPTIONS[i],),
                min_total=MIN_TOTAL,
                rounds=ROUNDS,
                max_rounds=MAX_ROUNDS,
                clock=clock,
                pilot=False,
                chunk=e,
            )
            secs[i] = float(transfer_seconds(size, chunk, m.ratio, m.vc * scale, m.vd * scale, *link_args)[0])
        k = min(secs, key=secs.__getitem__)
        return Refined(k, secs[k], len(secs) - len(free), (clock() - start) * 1e-9)
