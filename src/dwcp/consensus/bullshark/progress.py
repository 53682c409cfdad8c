"""What a primary has done, for metrics: counters and the latest samples of two histograms.

The core only records (with the `now` it is given); the node's metrics adapter (metrics.py) reads
`snapshot()` and turns it into Prometheus series. Samples sit in bounded rings with a running
sequence number, so a reader that polls takes exactly the samples it has not seen yet.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from dwcp.consensus.bullshark.messages import SubDag

RING = 256  # a poller reading every 0.1 s sees every sample below 2,560 per second


class Samples:
    def __init__(self) -> None:
        self.seq = 0
        self.ring: deque[float] = deque(maxlen=RING)

    def add(self, value: float) -> None:
        self.seq += 1
        self.ring.append(value)



def samples_since(snapshot: list, seq: int) -> list[float]:
    """The values of a `[seq, ring]` snapshot newer than `seq`."""
    latest, ring = snapshot
    new = min(latest - seq, len(ring))
    return ring[len(ring) - new:] if new > 0 else []


class Progress:
    def __init__(self) -> None:
        self.round_durations = Samples()  # seconds between our headers of consecutive rounds
        self.commit_latencies = Samples()  # seconds from our certificate's creation to its sub-DAG's ordering
        self.certificates_created = 0
        self.subdags_committed = 0
        self.batches_committed = 0
        self.txs_committed = 0
        self._round_at: tuple[int, float] | None = None

    def round_advanced(self, now: float, round_: int) -> None:
        if self._round_at is not None and round_ > self._round_at[0]:
            self.round_durations.add((now - self._round_at[1]) / (round_ - self._round_at[0]))
        self._round_at = (round_, now)

    def latency(self, seconds: float) -> None:
        self.commit_latencies.add(seconds)

    def committed(self, record: SubDag) -> None:
        self.subdags_committed += 1
        self.batches_committed += len(record.batches)
        self.txs_committed += sum(b.txs for b in record.batches)

    def snapshot(self) -> dict[str, Any]:
        return {
            "certificates_created": self.certificates_created, "subdags_committed": self.subdags_committed,
            "batches_committed": self.batches_committed, "txs_committed": self.txs_committed,
            "samples": {"round_durations": [self.round_durations.seq, list(self.round_durations.ring)],
                        "commit_latencies": [self.commit_latencies.seq, list(self.commit_latencies.ring)]},
        }
