"""The oracle: run every option on the real data, then rank them with the cost model.

Timing method, chosen for repeatability on a shared machine (docs/compression.md, "Oracle"):

- clock: this thread's CPU clock (CLOCK_THREAD_CPUTIME_ID), so time spent descheduled by this machine's
  other processes does not count. Reading it is a system call (~0.5 us here), so one timed *sample* is a
  batch of calls at least `SAMPLE_SECONDS` long: the clock's own cost stays out of the speed;
- fastest sample: a neighbour's burst (cache thrashing, a hypervisor taking the core, which the thread
  clock still counts) only ever makes a call slower, so the fastest sample is the estimate that moves
  least between runs;
- interleaved turns: after the round-trip check (one call each, itself the first sample), every option's
  compress and decompress get turns in rotation, `rounds` at least (one for a call longer than a turn),
  each at least `min_total / rounds` seconds. A slowdown that lasts a while therefore hits samples of
  every option, not all of one option's;
- confirmation: a timing is settled when its two fastest turns agree within `agree` (3%); one that does
  not gets more turns, up to `max_rounds`. On a quiet machine a slow codec costs two calls; a disturbed
  one, where the fast call might be luck or the slow one disturbance, gets more;
- pilot: every option also times a fixed 16 KiB block (`corpus.pilot_data()`) in the same rotation. The host's speed
  drifts (this VM has modes ~30% apart that switch over seconds, and a busy neighbour slows every codec
  alike), which moved all of a payload's speeds together by 21% (s.d.) between two measurements minutes
  apart. The pilot's speed moves with them: `Measurement.at_speed` rescales a measurement to the speed the
  host had when calibrated, which cut that common drift to 6%. The oracle's truth is then a property of
  the data on this host, not of the moment it was measured.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dwcp.compression.codecs import BY_KEY, OPTIONS, Option
from dwcp.compression.corpus import pilot_data
from dwcp.compression.costmodel import DEFAULT_CHUNK_BYTES, Link, transfer_seconds

NEAR_BEST = 1.05  # chosen option within 5% of the best option's time counts as accurate
SAMPLE_SECONDS = 5e-5  # shortest timed batch: two clock reads (~1 us here) stay ~2% of it
MAX_BATCH = 1000
ROUNDS, MAX_ROUNDS, AGREE = 3, 5, 0.03
CANARY = BY_KEY["zstd-1"]  # of the pilot's cheap options, the one whose speed tracked the whole pilot best

Clock = Callable[[], int]  # nanoseconds


class Timer:
    """The timing of one function on one input: the fastest per-call time of each turn it was given."""

    __slots__ = ("fn", "arg", "clock", "turns", "batch")

    def __init__(self, fn: Callable[[bytes], bytes], arg: bytes, first: float, clock: Clock) -> None:
        self.fn, self.arg, self.clock = fn, arg, clock
        self.turns = [max(first, 1e-9)]  # the round-trip call is the first sample
        self.batch = _batch(self.turns[0])

    @property
    def best(self) -> float:
        return min(self.turns)

    def settled(self, rounds: int, agree: float, budget: float) -> bool:
        """Enough turns after the first call, and the two fastest turns within `agree` of each other.

        Enough is `rounds`, or one for a call that alone outlasts a turn's `budget` (brotli-11 on 512 KiB
        takes a second: each such call is a sample of its own, and two that agree settle it).
        """
        if len(self.turns) <= (rounds if self.turns[0] < budget else 1):
            return False
        a, b = sorted(self.turns)[:2]
        return b <= a * (1.0 + agree)

    def turn(self, budget: float) -> None:
        """Time batches of calls until `budget` seconds are spent (at least one batch); keep the fastest."""
        fn, arg, clock = self.fn, self.arg, self.clock
        spent, best = 0.0, math.inf
        while True:
            k = self.batch
            t0 = clock()
            for _ in range(k):
                fn(arg)
            dt = (clock() - t0) * 1e-9
            spent += dt
            best = min(best, dt / k)
            # The first call's time included the clock reads: size later batches on what a call really takes.
            self.batch = _batch(min(best, self.best))
            if spent >= budget:
                break
        # A zero reading (below the clock's granularity) would mean infinite speed.
        self.turns.append(max(best, 1e-9))


def _batch(seconds_per_call: float) -> int:
    return max(1, min(MAX_BATCH, math.ceil(SAMPLE_SECONDS / max(seconds_per_call, 1e-9))))


@dataclass(frozen=True, slots=True)
class Measurement:
    """Per option (in `OPTIONS` order): compressed/original ratio, compress and decompress bytes/s.

    `pilot`: the geometric mean of every timed option's compress and decompress bytes/s on the pilot block, timed in
    the same turns (NaN when the measurement had no pilot): how fast the host ran while measuring.
    `canary`: the geometric mean of `CANARY`'s compress and decompress bytes/s on the pilot block, timed in the same
    turns (NaN when it was not timed); a raw host reading, never rescaled.
    """

    size: int
    ratio: np.ndarray
    vc: np.ndarray
    vd: np.ndarray
    pilot: float = math.nan
    canary: float = math.nan

    def at_speed(self, pilot: float) -> Measurement:
        """This measurement rescaled to a host running the pilot at `pilot` (its calibration's pilot speed).

        Unchanged when either pilot speed is unknown.
        """
        if not (math.isfinite(self.pilot) and math.isfinite(pilot)):
            return self
        f = pilot / self.pilot
        return Measurement(self.size, self.ratio, self.vc * f, self.vd * f, pilot, self.canary)


def measure(
    data: bytes,
    options: tuple[Option, ...] = OPTIONS,
    min_total: float = 0.002,
    rounds: int = ROUNDS,
    max_rounds: int = MAX_ROUNDS,
    agree: float = AGREE,
    clock: Clock = time.thread_time_ns,
    pilot: bool = True,
    chunk: int | None = None,
    canary: bool = False,
) -> Measurement:
    """Compress and decompress `data` with every option (checking the round trip), then time them in turns.

    With `chunk` smaller than the data, the data is cut into chunks of that many bytes, each compressed on
    its own (as the manager sends a payload): ratio and speeds are those of the chunks together. With
    `pilot`, every option also times the pilot block (`corpus.pilot_data()`) in the same rotation, and the
    canary is read from `CANARY`'s pilot timers; with `canary` alone, only `CANARY` times the pilot block.
    """
    n = max(len(data), 1)
    parts = [data[i : i + chunk] for i in range(0, len(data), chunk)] if chunk and chunk < len(data) else None
    ratio, vc, vd = np.ones(len(options)), np.full(len(options), np.inf), np.full(len(options), np.inf)
    timers: list[tuple[int, Timer, Timer]] = []
    pilots: list[Timer] = []
    canaries: list[Timer] = []
    block = pilot_data() if pilot or canary else b""
    for i, opt in enumerate(options):
        if opt.codec == "none":
            continue
        compress, decompress = opt.make()
        if parts is None:
            tc, td, packed = _timers(compress, decompress, data, clock, opt.key)
            ratio[i] = len(packed) / n
        else:
            tc, td, packed = _timers(_each(compress), _each(decompress), parts, clock, opt.key)
            ratio[i] = sum(map(len, packed)) / n
        timers.append((i, tc, td))
        if pilot or (canary and opt == CANARY):
            pair = list(_timers(compress, decompress, block, clock, opt.key)[:2])
            pilots += pair if pilot else []
            canaries += pair if opt == CANARY else []
    if canary and not canaries:  # CANARY is not among `options`: time it on its own, still in the same turns
        canaries = list(_timers(*CANARY.make(), block, clock, CANARY.key)[:2])
    # With the pilot, the canary's timers are among the pilot's (`in`: identity, Timer has no __eq__).
    run_turns(
        [t for _, tc, td in timers for t in (tc, td)] + pilots + [t for t in canaries if t not in pilots],
        min_total / max(rounds, 1),
        rounds,
        max(rounds, max_rounds),
        agree,
    )
    for i, tc, td in timers:
        vc[i], vd[i] = n / tc.best, n / td.best
    return Measurement(len(data), ratio, vc, vd, _speed(block, pilots), _speed(block, canaries))


def _speed(block: bytes, timers: list[Timer]) -> float:
    """The geometric mean of `timers`' bytes/s on `block` (NaN without timers)."""
    return math.exp(np.mean([math.log(len(block) / t.best) for t in timers])) if timers else math.nan


def _each(fn: Callable[[bytes], bytes]) -> Callable[[list[bytes]], list[bytes]]:
    return lambda parts: [fn(p) for p in parts]


def _timers(compress, decompress, data, clock: Clock, key: str) -> tuple[Timer, Timer, bytes]:
    """One round trip (checked), whose two calls are the compress and decompress timers' first samples."""
    t0 = clock()
    packed = compress(data)
    t1 = clock()
    if decompress(packed) != data:
        raise AssertionError(f"{key} did not round-trip")
    t2 = clock()
    return Timer(compress, data, (t1 - t0) * 1e-9, clock), Timer(decompress, packed, (t2 - t1) * 1e-9, clock), packed


def run_turns(timers: list[Timer], budget: float, rounds: int, max_rounds: int, agree: float) -> None:
    """Give unsettled timers turns in rotation (each round starts one further along) until all settle."""
    for r in range(max_rounds):
        pending = [t for t in timers if not t.settled(rounds, agree, budget)]
        if not pending:
            return
        k = r % len(pending)
        for t in pending[k:] + pending[:k]:
            t.turn(budget)


def times(m: Measurement, size: int | float, link: Link, chunk: int = DEFAULT_CHUNK_BYTES) -> np.ndarray:
    """Oracle end-to-end seconds of each option for a payload of `size` bytes sent in chunks of `chunk`, whose
    chunks are like the measured data (measured at min(chunk, size) bytes: `measure(..., chunk=...)`)."""
    return transfer_seconds(size, chunk, m.ratio, m.vc, m.vd, link.bandwidth_bps, link.rtt_s, link.loss_rate)


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
