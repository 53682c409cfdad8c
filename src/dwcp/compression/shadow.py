"""Online accuracy: re-score a fraction of live requests with the oracle, on a worker thread.

The request path only flips a coin and puts the request on a bounded queue (dropping it when the queue is
full or the rate cap is reached), so shadow work never adds latency to a prediction. The worker runs every
option on the request's sample cut into the request's chunks (`Request.chunk`), applies the cost model with
the request's size, chunk and link, and keeps a rolling window of scores; `compression_selector_accuracy` is
the window's near-best share.

A chunk larger than the sample (a 64 KiB sample of a payload sent in 1 MiB chunks) has no truth here: the
sample is all of the payload the service sees, and a 64 KiB piece measured whole is not a 1 MiB chunk (zstd-19
ran 0.90x its reference speed on 64-256 KiB chunks of real files and 0.63x on 1 MiB ones). Such a request is
scored on the question its sample can answer, as the benchmark asks it: the same payload and link sent in
chunks of the sample's size, with the selector's choice for that (`choose`; counted as `rescoped`).

A miss is confirmed before it counts: the first pass gives each option only one or two timing turns, and its
errors are one-sided (a turn a preemption or a cold cache slowed is too slow, never too fast), so they make
false misses, not false hits. The chosen option and every option that beat it by more than 5% are timed again
with the benchmark oracle's turns, and the faster reading of each stands (counted as `confirmed` and
`overturned`). On dwcp up's own request mix, idle host, 600 requests: 11 first-pass misses, 3 of which three
careful re-measures each overturned.

The pilot reading that rescales the speeds is timed once a minute, and one reading can catch a moment's slowdown
(readings 30% under the host's mode, seconds apart, on a steady host here) or the host can change after it; either
way every evaluation until the next one is rescaled wrongly (one `--apart` pass of `compression_live.py` read 130
against 212-238 MB/s and disagreed with the oracle's other pass on 4-7% of items). So every evaluation in between
also times the canary (`oracle.CANARY` on the pilot block, ~2.5 ms) in its own turns, and one whose canary moved by
more than `pilot_drift` (log) from the canary of the pilot reading is measured again with the pilot in the same
turns, which becomes the new reading (counted as `repiloted`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dwcp.compression import oracle
from dwcp.compression.codecs import OPTIONS
from dwcp.compression.selector import Request
from dwcp.compression.settings import CompressionSettings
from dwcp.runtime.threads import lower_thread_priority

# The oracle's thread takes only CPU that serving and the host's other work leave idle. Its timings are CPU time
# (`time.thread_time_ns`), so waiting for a CPU does not skew them; at the default weight its 60 ms evaluations
# took 0.3-0.47 CPU-s inside single 1-3 s manager transfers on a 2-CPU host.
SHADOW_NICE = 19


CONFIRM_SECONDS = 0.002  # the benchmark oracle's timing budget per option, for a first-pass miss's rivals
# |log(canary / the pilot reading's canary)| beyond which the pilot reading no longer describes the host: declared
# from 681 readings on a steady host (2026-12-06): the canary crossed it on ~2.6% of evaluations, and stale-pilot errors
# above 0.2 (log) fell from 1.3% to 0.01% of evaluations.
PILOT_DRIFT = 0.15


@dataclass(frozen=True, slots=True)
class Job:
    request: Request
    chosen: int


class ShadowEvaluator:
    def __init__(
        self,
        *,
        fraction: float,
        window: int,
        max_per_second: float,
        queue_size: int = 8,
        on_evaluated: Callable[[oracle.Score], None] | None = None,
        rng: random.Random | None = None,
        min_total: float = 0.0005,
        pilot_every: float = 60.0,
        pilot: float = math.nan,
        choose: Callable[[Request], int] | None = None,
        pilot_drift: float = PILOT_DRIFT,
    ) -> None:
        self.fraction = fraction
        self.interval = 1.0 / max_per_second
        self.scores: deque[oracle.Score] = deque(maxlen=window)
        self.evaluated = 0
        self.dropped = 0
        self.rescoped = 0  # requests scored at the sample's size (their chunk was larger than their sample)
        self.confirmed = 0  # first-pass misses timed again
        self.overturned = 0  # ... that the second timing found near-best after all
        self.repiloted = 0  # evaluations measured again with the pilot: their canary said the host's speed had moved
        # The selector's choice for one request, called on the worker thread (its own Extractor: zstd contexts
        # are not thread-safe). None: score every request as offered, whatever its chunk.
        self._choose = choose
        self._on_evaluated = on_evaluated
        self._rng = rng or random.Random()
        self._min_total = min_total  # timing repetitions per option: short, the oracle runs beside live traffic
        # The calibration's pilot speed: scores use the oracle's speeds rescaled to it, the speeds the model
        # predicts for (NaN: as measured). Live traffic on the other core slows the oracle, not the data.
        self.pilot = pilot
        # The pilot block costs twice a 4 KiB evaluation (125 vs 42 ms here, brotli-11 on 16 KiB): time it
        # at most every `pilot_every` seconds and rescale the evaluations in between by that reading.
        self.pilot_every = pilot_every
        self.pilot_drift = pilot_drift  # math.inf: never check the canary (and never time it)
        self._host_pilot, self._host_canary, self._pilot_at = math.nan, math.nan, -math.inf
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=queue_size)
        self._next_allowed = 0.0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(
        cls,
        settings: CompressionSettings,
        pilot: float,
        on_evaluated: Callable[[oracle.Score], None] | None = None,
        choose: Callable[[Request], int] | None = None,
    ) -> ShadowEvaluator:
        """The service's evaluator; `pilot` is its calibration's pilot speed, `choose` its selector's choice."""
        return cls(
            fraction=settings.shadow_fraction,
            window=settings.accuracy_window,
            max_per_second=settings.shadow_max_per_second,
            queue_size=settings.shadow_queue,
            pilot_every=settings.shadow_pilot_seconds,
            pilot=pilot,
            on_evaluated=on_evaluated,
            choose=choose,
            pilot_drift=settings.shadow_pilot_drift,
        )

    def offer(self, request: Request, chosen: int) -> bool:
        """Maybe queue this request for shadow evaluation; cheap, never blocks, never raises."""
        if self.fraction <= 0 or self._rng.random() >= self.fraction:
            return False
        now = time.monotonic()
        if now < self._next_allowed:
            self.dropped += 1
            return False
        try:
            self._queue.put_nowait(Job(request, chosen))
        except queue.Full:
            self.dropped += 1
            return False
        self._next_allowed = now + self.interval
        return True

    def evaluate(self, job: Job) -> oracle.Score:
        """Run the oracle for one request and fold the score into the window."""
        r, chosen, rescoped = self.question(job)
        m, t = self.truth(r)
        s, confirmed = self.judge(r, chosen, m, t)
        with self._lock:
            self.scores.append(s)
            self.evaluated += 1
            self.rescoped += rescoped
            self.confirmed += confirmed
            self.overturned += confirmed and s.near_best
        if self._on_evaluated is not None:
            self._on_evaluated(s)
        return s

    def question(self, job: Job) -> tuple[Request, int, bool]:
        """The request the gauge scores, the selector's choice for it, and whether it was rescoped to the sample's
        size (a chunk larger than the sample has no truth here)."""
        r, chosen = job.request, job.chosen
        if self._choose is not None and r.chunk > len(r.sample) > 0:
            r = dataclasses.replace(r, chunk_bytes=len(r.sample))
            return r, self._choose(r), True
        return r, chosen, False

    def truth(self, r: Request) -> tuple[oracle.Measurement, np.ndarray]:
        """One first-pass measurement of `r` (rescaled to the calibrated host) and every option's oracle seconds."""
        # One or two timing turns per option, not the benchmark oracle's three to five: this runs beside
        # live traffic on the same CPUs, and the gauge is a rolling share over hundreds of requests.
        m = self._measure(r.sample, r.chunk)
        return m, oracle.times(m, r.size_bytes, r.link, r.chunk_bytes)

    def judge(self, r: Request, chosen: int, m: oracle.Measurement, t: np.ndarray) -> tuple[oracle.Score, bool]:
        """`chosen` scored against the first pass `m`, `t`; a miss is confirmed first (True: it was timed again)."""
        s = oracle.score(chosen, t)
        if s.near_best:
            return s, False
        return oracle.score(chosen, self._confirm(r, chosen, m, t)), True

    def _measure(self, sample: bytes, chunk: int) -> oracle.Measurement:
        now = time.monotonic()
        calibrated = math.isfinite(self.pilot)
        fresh = calibrated and now - self._pilot_at >= self.pilot_every
        check = calibrated and not fresh and math.isfinite(self.pilot_drift)
        m = oracle.measure(
            sample, min_total=self._min_total, rounds=1, max_rounds=2, pilot=fresh, chunk=chunk, canary=check
        )
        if check and abs(math.log(m.canary / self._host_canary)) > self.pilot_drift:
            # The host's speed moved since the pilot reading, or that reading caught a moment's slowdown: this
            # evaluation's speeds are rescaled by a pilot timed in its own turns, which stands from now on.
            m = oracle.measure(sample, min_total=self._min_total, rounds=1, max_rounds=2, pilot=True, chunk=chunk)
            fresh = True
            with self._lock:
                self.repiloted += 1
        if fresh:
            self._host_pilot, self._host_canary, self._pilot_at = m.pilot, m.canary, now
        return dataclasses.replace(m, pilot=self._host_pilot).at_speed(self.pilot)

    def _confirm(self, r: Request, chosen: int, m: oracle.Measurement, t: np.ndarray) -> np.ndarray:
        """Oracle times with the chosen option and those that beat it by > 5% timed again, the faster reading kept."""
        rivals = [i for i in range(len(t)) if i == chosen or t[i] * oracle.NEAR_BEST < t[chosen]]
        again = oracle.measure(
            r.sample, options=tuple(OPTIONS[i] for i in rivals), min_total=CONFIRM_SECONDS, pilot=False, chunk=r.chunk
        )
        # Rescaled by the same host pilot reading as the first pass: both answer for the same moment's host.
        again = dataclasses.replace(again, pilot=self._host_pilot).at_speed(self.pilot)
        vc, vd = m.vc.copy(), m.vd.copy()
        for j, i in enumerate(rivals):
            vc[i], vd[i] = max(vc[i], again.vc[j]), max(vd[i], again.vd[j])
        return oracle.times(oracle.Measurement(m.size, m.ratio, vc, vd, m.pilot), r.size_bytes, r.link, r.chunk_bytes)

    @property
    def host_pilot(self) -> float:
        """The latest pilot reading (bytes/s; NaN before the first): how fast the host ran while measuring."""
        return self._host_pilot

    def accuracy(self) -> float | None:
        with self._lock:
            return float(np.mean([s.near_best for s in self.scores])) if self.scores else None

    def stats(self) -> dict:
        with self._lock:
            scores = list(self.scores)
        base = {
            "evaluated": self.evaluated,
            "dropped": self.dropped,
            "rescoped": self.rescoped,
            "confirmed": self.confirmed,
            "overturned": self.overturned,
            "repiloted": self.repiloted,
            "window": len(scores),
            "fraction": self.fraction,
        }
        if not scores:
            return {**base, "accuracy": None, "exact_best": None, "mean_regret": None}
        return {
            **base,
            "accuracy": float(np.mean([s.near_best for s in scores])),
            "exact_best": float(np.mean([s.exact_best for s in scores])),
            "mean_regret": float(np.mean([s.regret for s in scores])),
        }

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="compression-shadow", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is None:
            return
        # The daemon thread dies with the process; a full queue must not hang shutdown.
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        self._thread.join(timeout)
        self._thread = None

    def drain(self, timeout: float = 10.0) -> None:
        """Wait until every queued job has been evaluated (tests and benchmarks)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)

    def _run(self) -> None:
        lower_thread_priority(SHADOW_NICE)
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                self.evaluate(job)
            except Exception:  # a codec failure on odd data must not kill the evaluator
                self.dropped += 1
            finally:
                self._queue.task_done()
