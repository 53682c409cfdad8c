"""Each chunk's codec for one transfer: the selector's answers fetched ahead of need, and the CPU guard.

The selector is asked about one window of chunks (`selector_window`) per call, in the background: window 0
when the transfer starts and window w+1 as soon as window w is first used, so on a long transfer an answer is
there before its chunks are read. A chunk whose window is still unanswered waits for it at most a tenth of its
own wire time at the link's measured bandwidth (the better codec can save part of that time, while the wait is
spent for sure; the whole `selector_timeout_s` while the link is unmeasured), then goes with the local rule
(`chunks.local_choice` on its sample; `dwcp_transfer_codec_decisions_total{source="ahead_of_selector"}`). So
the selector's answer time is no longer paid before each transfer's first byte: measured on the shaped
benchmark at load 25-40, an answer took up to ~0.3 s, more than a whole small transfer at 1000 Mbit/s.

Samples are read by the caller's thread (the transfer owns the file descriptor and closes it at its end); the
background thread only makes the HTTP call.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from dwcp.manager import chunks

if TYPE_CHECKING:
    from dwcp.manager.links import Link
    from dwcp.manager.transfers import Transfer, Transfers

# Lighter and lighter codecs the CPU guard steps down to when the chosen one cannot keep up with the link.
LIGHTER = ("zstd-3", "zstd-1", "lz4", "none")
ANSWER_WAIT_SHARE = 0.1  # of a chunk's uncompressed wire time: the longest it waits for the selector's answer


class Plan:
    def __init__(self, owner: Transfers, t: Transfer, fd: int, link: Link) -> None:
        self._owner, self._t, self._fd, self._link = owner, t, fd, link
        self._codecs: dict[int, str] = {}
        self._answered: dict[int, threading.Event] = {}  # window -> set once its codecs are in _codecs
        self._lock = threading.Lock()
        if t.codec is None:
            self._ask(0)

    def codec(self, i: int) -> str:
        if self._t.codec is not None:
            return self._t.codec
        window = i // self._owner.settings.selector_window
        answered = self._ask(window)
        self._ask(window + 1)
        if not answered.wait(self._answer_wait(i)):
            self._owner.metrics.codec_decisions.labels("ahead_of_selector").inc()
            t = self._t
            length = max(0, min(t.chunk_bytes, t.size - i * t.chunk_bytes))
            return self._keeps_up(chunks.local_choice(chunks.sample(self._fd, i * t.chunk_bytes, length),
                                                      self._link.bandwidth))
        with self._lock:
            return self._keeps_up(self._codecs[i])

    def _answer_wait(self, i: int) -> float:
        bandwidth = self._link.bandwidth
        if not bandwidth:
            return self._owner.settings.selector_timeout_s
        length = max(0, min(self._t.chunk_bytes, self._t.size - i * self._t.chunk_bytes))
        return ANSWER_WAIT_SHARE * length / bandwidth

    def _ask(self, window: int) -> threading.Event:
        """Start the selector call for `window` unless it was started; its event is set once it is answered."""
        with self._lock:
            answered = self._answered.get(window)
            if answered is not None:
                return answered
            answered = self._answered[window] = threading.Event()
        t, w = self._t, self._owner.settings.selector_window
        indexes = list(range(window * w, min((window + 1) * w, t.chunks_total)))
        if not indexes:
            answered.set()
            return answered
        lengths = [max(0, min(t.chunk_bytes, t.size - j * t.chunk_bytes)) for j in indexes]
        samples = [chunks.sample(self._fd, j * t.chunk_bytes, n) for j, n in zip(indexes, lengths, strict=True)]

        def call() -> None:
            try:
                picked, _ = self._owner.chooser.choose(samples, lengths, self._link.bandwidth, self._link.rtt,
                                                       t.size)
            except Exception:  # the chooser falls back itself; this only keeps a waiting chunk from hanging
                picked = [chunks.local_choice(s, self._link.bandwidth) for s in samples]
            with self._lock:
                self._codecs.update(zip(indexes, picked, strict=True))
            answered.set()

        threading.Thread(target=call, name=f"selector-{t.id[:8]}-{window}", daemon=True).start()
        return answered

    def _keeps_up(self, codec: str) -> str:
        """CPU guard: the selector's speeds are the host's calibrated ones; when this host now compresses
        `codec` slower than the link drains its output (raw bytes/s x parallel x ratio < bandwidth, with
        the speed and ratio measured on recent chunks), a lighter codec that does keep up (or has not been
        timed yet) is used instead, since the transfer would otherwise wait on the CPU."""
        bandwidth = self._link.bandwidth
        if not bandwidth or codec == "none" or self._keeps_pace(codec, bandwidth):
            return codec
        start = LIGHTER.index(codec) + 1 if codec in LIGHTER else 0
        for lighter in LIGHTER[start:]:
            if lighter == "none" or self._keeps_pace(lighter, bandwidth):
                self._owner.metrics.codec_decisions.labels("cpu_guard").inc()
                return lighter
        return "none"

    def _keeps_pace(self, codec: str, bandwidth: float) -> bool:
        speed = self._owner.encode_speed.get(codec)
        if speed is None:
            return True
        output_rate = speed * self._owner.parallel * self._owner.encode_ratio.get(codec, 1.0)
        return output_rate >= bandwidth
