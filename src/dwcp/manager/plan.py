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
    from dwcp.manager.selection import CodecChooser
    from dwcp.manager.transfers import Transfer, Transfers

# Lighter and lighter codecs the CPU guard steps down to when the chosen one cannot keep up with the link.
LIGHTER = ("zstd-3", "zstd-1", "lz4", "none")
ANSWER_WAIT_SHARE = 0.1  # of a chunk's uncompressed wire time: the longest it waits for the selector's answer


def answer_wait(payload_bytes: int, bandwidth: float | None, timeout: float) -> float:
    """How long codecs for `payload_bytes` wait for the selector: a share of their wire time on a measured link."""
    return ANSWER_WAIT_SHARE * payload_bytes / bandwidth if bandwidth else timeout


class Answer:
    """One selector call made in the background: codecs by chunk index once it is in."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._codecs: dict[int, str] = {}

    def start(self, chooser: CodecChooser, samples: list[bytes], sizes: list[int], link: Link, payload_bytes: int,
              first: int = 0) -> None:
        """Ask about chunks `first`, `first` + 1, ... (their samples and sizes); returns at once."""
        if not samples:
            self._done.set()
            return

        def call() -> None:
            try:
                picked, _ = chooser.choose(samples, sizes, link.bandwidth, link.rtt, payload_bytes)
            except Exception:  # the chooser falls back itself; this only keeps a waiting chunk from hanging
                picked = [chunks.local_choice(s, link.bandwidth) for s in samples]
            self._codecs = dict(enumerate(picked, start=first))
            self._done.set()

        threading.Thread(target=call, name="selector-call", daemon=True).start()

    def wait(self, seconds: float) -> dict[int, str] | None:
        """The codecs by chunk index, or None when the answer is not in within `seconds`."""
        return self._codecs if self._done.wait(seconds) else None


class Plan:
    def __init__(self, owner: Transfers, t: Transfer, fd: int, link: Link) -> None:
        self._owner, self._t, self._fd, self._link = owner, t, fd, link
        self._answers: dict[int, Answer] = {}  # window -> its selector call
        self._lock = threading.Lock()
        if t.codec is None:
            self._ask(0)

    def codec(self, i: int) -> str:
        if self._t.codec is not None:
            return self._t.codec
        window = i // self._owner.settings.selector_window
        answer = self._ask(window)
        self._ask(window + 1)
        picked = answer.wait(self._answer_wait(i))
        if picked is None:
            self._owner.metrics.codec_decisions.labels("ahead_of_selector").inc()
            t = self._t
            length = max(0, min(t.chunk_bytes, t.size - i * t.chunk_bytes))
            return self._keeps_up(chunks.local_choice(chunks.sample(self._fd, i * t.chunk_bytes, length),
                                                      self._link.bandwidth))
        return self._keeps_up(picked[i])

    def _answer_wait(self, i: int) -> float:
        bandwidth = self._link.bandwidth
        length = max(0, min(self._t.chunk_bytes, self._t.size - i * self._t.chunk_bytes))
        return answer_wait(length, bandwidth, self._owner.settings.selector_timeout_s)

    def _ask(self, window: int) -> Answer:
        """The selector call for `window`, started now unless it was started before."""
        with self._lock:
            answer = self._answers.get(window)
            if answer is not None:
                return answer
            answer = self._answers[window] = Answer()
        t, w = self._t, self._owner.settings.selector_window
        indexes = list(range(window * w, min((window + 1) * w, t.chunks_total)))
        lengths = [max(0, min(t.chunk_bytes, t.size - j * t.chunk_bytes)) for j in indexes]
        samples = [chunks.sample(self._fd, j * t.chunk_bytes, n) for j, n in zip(indexes, lengths, strict=True)]
        answer.start(self._owner.chooser, samples, lengths, self._link, t.size, first=window * w)
        return answer

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
