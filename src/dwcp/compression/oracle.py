"""The oracle: run every option on the real data, then rank them with the cost model.

Speeds are timed on this thread's CPU clock (CLOCK_THREAD_CPUTIME_ID) and the fastest of several
repetitions is kept, so a busy machine (other processes, the service's own requests) slows the
measurement as little as possible: being descheduled does not count, only cache effects remain.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dwcp.compression.codecs import OPTIONS, Option
from dwcp.compression.costmodel import Link, transfer_seconds

NEAR_BEST = 1.05  # chosen option within 5% of the best option's time counts as accurate


def seconds_per_call(fn: Callable[[bytes], bytes], data: bytes, min_total: float = 0.002, max_reps: int = 200) -> float:
    """Fastest single call of fn(data) in CPU seconds, repeating until min_total seconds or max_reps calls."""
    best, spent, reps = float("inf"), 0.0, 0
    clock = time.thread_time_ns
    while reps < max_reps and spent < min_total:
        t0 = clock()
        fn(data)
        dt = (clock() - t0) * 1e-9
        best, spent, reps = min(best, dt), spent + dt, reps + 1
    # A zero reading (below the clock's granularity on a tiny input) would mean infinite speed.
    return max(best, 1e-8)


@dataclass(frozen=True, slots=True)
class Measurement:
    """Per option (in `OPTIONS` order): compressed/original ratio, compress and decompress bytes/s."""

    size: int
    ratio: np.ndarray
    vc: np.ndarray
    vd: np.ndarray


def measure(data: bytes, options: tuple[Option, ...] = OPTIONS, min_total: float = 0.002) -> Measurement:
    """Compress and decompress `data` with every option, checking the round trip."""
    n = max(len(data), 1)
    ratio, vc, vd = np.ones(len(options)), np.full(len(options), np.inf), np.full(len(options), np.inf)
    for i, opt in enumerate(options):
        if opt.codec == "none":
            continue
        compress, decompress = opt.make()
        t0 = time.thread_time_ns()
        packed = compress(data)
        t1 = time.thread_time_ns()
        if decompress(packed) != data:
            raise AssertionError(f"{opt.key} did not round-trip")
        t2 = time.thread_time_ns()
        ratio[i] = len(packed) / n
        vc[i] = n / _best(compress, data, (t1 - t0) * 1e-9, min_total)
        vd[i] = n / _best(decompress, packed, (t2 - t1) * 1e-9, min_total)
    return Measurement(len(data), ratio, vc, vd)


def _best(fn: Callable[[bytes], bytes], data: bytes, first: float, min_total: float) -> float:
    # The round-trip check is already one timed call: a slow codec (brotli-11, zstd-19 on large data)
    # that took min_total there is not run again, which halves labelling time.
    if first >= min_total:
        return first
    return min(max(first, 1e-8), seconds_per_call(fn, data, min_total))


def times(m: Measurement, size: int | float, link: Link) -> np.ndarray:
    """Oracle end-to-end seconds of each option for a payload of `size` bytes like the measured data."""
    return transfer_seconds(size, m.ratio, m.vc, m.vd, link.bandwidth_bps, link.rtt_ms / 1e3, link.loss_rate)


@dataclass(frozen=True, slots=True)
class Score:
    near_best: bool
    exact_best: bool
    regret: float  # chosen time / best time - 1


def score(chosen: int, oracle_times: np.ndarray) -> Score:
    best = float(oracle_times.min())
    mine = float(oracle_times[chosen])
    return Score(mine <= NEAR_BEST * best, chosen == int(oracle_times.argmin()), mine / best - 1.0)


def score_many(chosen: np.ndarray, oracle_times: np.ndarray) -> dict[str, float]:
    """Accuracy (near-best share), exact-best share and mean regret over rows of oracle times."""
    best = oracle_times.min(axis=1)
    mine = oracle_times[np.arange(len(chosen)), chosen]
    return {
        "accuracy": float(np.mean(mine <= NEAR_BEST * best)),
        "exact_best": float(np.mean(chosen == oracle_times.argmin(axis=1))),
        "mean_regret": float(np.mean(mine / best - 1.0)),
        "n": int(len(chosen)),
    }
