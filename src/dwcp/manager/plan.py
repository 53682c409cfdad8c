"""Each chunk's codec for one transfer: the selector's answers fetched ahead of need, and the CPU guard.

The selector is asked about one window of chunks (`selector_window`) per call, in the background: window 0
when the transfer starts (on a measured link: when its second chunk is decided, the first having left in the local
rule's codec, `Plan.codec`) and window w+1 as soon as window w is first used, so on a long transfer an answer
is there before its chunks are read. A chunk whose window is still unanswered waits for it at most 3%
(`selection.ANSWER_WAIT_SHARE`; a tenth before session 7) of its own wire time at the link's measured bandwidth
(the better codec can save part of that time, while the wait is spent for sure; the whole `selector_timeout_s`
while the link is unmeasured), then goes with the local rule (`chunks.local_choice` on its `chunks.piece`;
`dwcp_transfer_codec_decisions_total{source="ahead_of_selector"}`). So
the selector's answer time is no longer paid before each transfer's first byte: measured on the shaped
benchmark at load 25-40, an answer took up to ~0.3 s, more than a whole small transfer at 1000 Mbit/s.

Samples are read by the caller's thread (the transfer owns the file descriptor and closes it at its end); the
background thread only makes the HTTP call.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from dwcp.manager import chunks
from dwcp.manager.costs import STEP_UP_MIN_WIRE_S, Sampled, candidates, heavier, on_sample
from dwcp.manager.selection import ANSWER_WAIT_SHARE

if TYPE_CHECKING:
    from dwcp.manager.links import Link
    from dwcp.manager.selection import CodecChooser
    from dwcp.manager.transfers import Transfer, Transfers



def answer_wait(payload_bytes: int, bandwidth: float | None, timeout: float) -> float:
    """How long codecs for `payload_bytes` wait for the selector: a share of their wire time on a measured link."""
    return ANSWER_WAIT_SHARE * payload_bytes / bandwidth if bandwidth else timeout


class CodecLog:
    """`settings.codec_log`: one JSON line per chunk (and per object of a batch) saying what decided its codec:
    the source, the pick and the codec sent, each candidate's priced seconds per raw byte and the ratio it was
    priced with (measured on this transfer, or from the sample), beside the ratio and compress CPU measured on
    the chunk itself and when it was decided, compressed, sent and acknowledged (seconds from the transfer's
    start). For benchmarks: what made a codec that lost to another one win the pricing."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._file = open(path, "a", buffering=1)  # noqa: SIM115 - one line per write, closed with the site

    def write(self, record: dict) -> None:
        line = json.dumps(record, separators=(",", ":"))
        with self._lock:
            self._file.write(line + "\n")

    def close(self) -> None:
        with self._lock:
            self._file.close()


def ns_per_byte(seconds_per_byte: dict[str, float]) -> dict[str, float]:
    """A codec_log record's priced figures: seconds per raw byte as nanoseconds."""
    return {k: round(v * 1e9, 3) for k, v in seconds_per_byte.items()}


def note_sent(note: dict, codec: str, raw_len: int, encoded_len: int, comp_cpu: float) -> None:
    """A codec_log record's figures of the chunk as sent: the codec, its ratio and compress CPU per byte."""
    if raw_len > 0:
        note.update(sent_as=codec, ratio=round(encoded_len / raw_len, 4), len=raw_len,
                    comp_ns=round(comp_cpu / raw_len * 1e9, 3))


class Answer:
    """One selector call made in the background: codecs by chunk index once it is in."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._codecs: dict[int, str] = {}
        self.source = "local"  # who chose `_codecs`: the chooser's source (selector, local, not_asked)

    def start(self, chooser: CodecChooser, samples: list[bytes], sizes: list[int], link: Link, payload_bytes: int,
              first: int = 0, pieces: list[bytes] | None = None) -> None:
        """Ask about chunks `first`, `first` + 1, ... (their samples and sizes); returns at once."""
        if not samples:
            self._done.set()
            return

        def call() -> None:
            try:
                picked, source = chooser.choose(samples, sizes, link.bandwidth, link.rtt, payload_bytes, pieces)
            except Exception:  # the chooser falls back itself; this only keeps a waiting chunk from hanging
                picked = [chunks.local_choice(p, link.bandwidth) for p in (samples if pieces is None else pieces)]
                source = "local"
            self._codecs, self.source = dict(enumerate(picked, start=first)), source
            self._done.set()

        if not chooser.worth_asking(payload_bytes, link.bandwidth):
            call()  # the local rule, here: a thread (and its wake-ups on a busy host) would cost more
            return
        threading.Thread(target=call, name="selector-call", daemon=True).start()

    def wait(self, seconds: float) -> dict[int, str] | None:
        """The codecs by chunk index, or None when the answer is not in within `seconds`."""
        return self._codecs if self._done.wait(seconds) else None


class Plan:
    def __init__(self, owner: Transfers, t: Transfer, fd: int, link: Link) -> None:
        self._owner, self._t, self._fd, self._link = owner, t, fd, link
        self._costs = owner.costs_for(t.to)
        self._answers: dict[int, Answer] = {}  # window -> its selector call
        self._lock = threading.Lock()
        self._ratios: dict[str, float] = {}  # codec -> wire/raw on this transfer's chunks
        self._latest: str | None = None  # the codec of the chunk sent last (its ratio the freshest measured)
        self._in_flight: dict[int, tuple[str, int]] = {}  # chunk -> (codec sent, raw length) until acknowledged
        self._sample: bytes | None = None  # the sample the pricing compresses (one chunk's, once per transfer)
        self._samples: dict[int, bytes] = {}  # chunk -> its sample, read for the selector call, until priced
        self._sampled: dict[str, Sampled] = {}  # codec -> its figures on `_sample`
        self._log: CodecLog | None = owner.codec_log
        self._notes: dict[int, dict] = {}  # chunk -> its codec_log record until acknowledged
        self._t0 = time.perf_counter()
        # On a measured link the first chunk decided leaves at once (`codec`): no wait for the selector, no
        # step up. The selector is asked about window 0 when the next chunk needs it (`_fast` is left out of the
        # call), and a link not worth asking about probes each chunk's piece when its turn comes, not every piece
        # of window 0 before the first byte. On an unmeasured link window 0 is asked about now, as before.
        self._fast: int | None = None  # the first chunk decided, which left in the local rule's codec at once
        self._unasked = bool(link.bandwidth) and not owner.chooser.worth_asking(t.size, link.bandwidth)
        if t.codec is None and not link.bandwidth:
            self._ask(0)

    def codec(self, i: int) -> str:
        if self._t.codec is not None:
            self._owner.metrics.codec_sources.labels("fixed", self._t.codec).inc()
            if self._log is not None:
                with self._lock:
                    self._notes[i] = {"tid": self._t.id, "i": i, "size": self._t.size, "src": "fixed",
                                      "codec": self._t.codec, "t_decided": self.since()}
            return self._t.codec
        bandwidth = self._link.bandwidth
        first = False
        if bandwidth:
            with self._lock:
                first = self._fast is None
                if first:
                    self._fast = i
        waited = 0.0
        if first or self._unasked:
            # The local rule on this chunk's own piece (zstd-1 on 64 KiB, ~0.2-0.4 ms: a random chunk is not
            # compressed whole for nothing), as its turn comes. The first chunk on a measured link leaves so at once,
            # the link being idle until its first byte: no wait for the selector, priced only for a step down (the
            # CPU guard; lz4 for zstd-1 on most 16 MiB chunks at 1000 Mbit/s), never up, since a heavier codec's
            # sample (zstd-9's fresh context in a new stream thread: 1-4 ms) is not compressed before the first
            # byte. Before session 12 the plan read and probed every chunk of window 0, waited up to
            # ANSWER_WAIT_SHARE of the chunk's wire time for the selector when it was worth asking, and priced the
            # chunk both ways: ~5 ms of CPU before a 1.6 MiB object's first byte at 100 Mbit/s (the lead's idle
            # table: 0.90-0.96 of always-zstd-3's time, same codecs).
            source = "not_asked" if self._unasked else "ahead_of_selector"
            self._owner.metrics.codec_decisions.labels(source).inc()
            pick = chunks.local_choice(self._piece(i), bandwidth)
        else:
            window = i // self._owner.settings.selector_window
            answer = self._ask(window)
            self._ask(window + 1)
            waited = time.perf_counter()
            picked = answer.wait(self._answer_wait(i))
            waited = time.perf_counter() - waited
            if picked is None:
                self._owner.metrics.codec_decisions.labels("ahead_of_selector").inc()
                pick, source = chunks.local_choice(self._piece(i), bandwidth), "ahead_of_selector"
            else:
                pick, source = picked[i], answer.source
        note = {} if self._log is not None else None
        chosen = self._fastest(pick, i, note, step_up=not first)
        if chosen != pick:
            source = "pricing_up" if heavier(chosen, pick) else "cpu_guard"
        self._owner.metrics.codec_sources.labels(source, chosen).inc()
        if note is not None:
            note.update(tid=self._t.id, i=i, size=self._t.size, src=source, pick=pick, codec=chosen,
                        bw=self._link.bandwidth, wait_ms=round(waited * 1e3, 3), t_decided=self.since())
            if first:
                note["rule"] = "first"
            with self._lock:
                self._notes[i] = note
        return chosen

    def _piece(self, i: int) -> bytes:
        return chunks.piece(self._fd, i * self._t.chunk_bytes, self._t.chunk_length(i))

    def since(self) -> float:
        """Seconds since this plan started (the codec_log's clock)."""
        return round(time.perf_counter() - self._t0, 6)

    def committed(self, commit_at: float) -> None:
        """codec_log: one record per transfer (`src` "commit") with when its COMMIT left (`t_commit`) and its DONE
        came back (`t_done`), on the chunks' clock: the receiver's verify-and-publish, which a one-chunk object
        larger than 256 KiB spends writing and fsyncing its file (session 10, 1000 Mbit/s medium)."""
        if self._log is not None:
            self._log.write({"tid": self._t.id, "size": self._t.size, "src": "commit", "t_commit": commit_at,
                             "t_done": self.since()})

    def _answer_wait(self, i: int) -> float:
        return answer_wait(self._t.chunk_length(i), self._link.bandwidth, self._owner.settings.selector_timeout_s)

    def _ask(self, window: int) -> Answer:
        """The selector call for `window`, started now unless it was started before."""
        with self._lock:
            answer = self._answers.get(window)
            if answer is not None:
                return answer
            answer = self._answers[window] = Answer()
        t, w = self._t, self._owner.settings.selector_window
        start = window * w + (1 if self._fast == window * w else 0)  # the first chunk went without the selector
        indexes = list(range(start, min((window + 1) * w, t.chunks_total)))
        lengths = [t.chunk_length(j) for j in indexes]
        samples = [chunks.sample(self._fd, j * t.chunk_bytes, n) for j, n in zip(indexes, lengths, strict=True)]
        if self._sample is None and window == 0 and samples:
            with self._lock:
                self._samples[indexes[0]] = samples[0]  # the pricing's sample: read once
        pieces = [chunks.piece(self._fd, j * t.chunk_bytes, n) for j, n in zip(indexes, lengths, strict=True)]
        answer.start(self._owner.chooser, samples, lengths, self._link, t.size, first=start, pieces=pieces)
        return answer

    def _fastest(self, pick: str, i: int, note: dict | None = None, step_up: bool = True) -> str:
        """The pick, a lighter or a heavier codec, whichever the pipeline's measured costs say moves chunk `i`
        soonest (`costs.PipelineCosts.fastest`); a step down is counted as `source="cpu_guard"`, a step up as
        `source="pricing_up"`. One codec's ratio is the one measured on this transfer's chunks (the pick's, else
        the codec sent last); every other codec's is its ratio on the sample of the first chunk that asks
        (`costs.on_sample`), scaled by that codec's measured/sample ratio, so all are on one basis."""
        bandwidth = self._link.bandwidth
        if not bandwidth or not self._costs.ready():
            return pick
        with self._lock:
            measured, latest = dict(self._ratios), self._latest
        # Each chunk goes in one codec, so two codecs' measured ratios come from different chunks: on a mixed object
        # zstd-1 measured on a VM image's zero runs (0.084) beat zstd-3 measured on text (0.134) and the guard
        # stepped link-bound chunks down (session 12). Like is compared with like: one codec's measured ratio (the
        # pick's, else the latest sent) is the basis, every other codec is taken at its ratio on the same sample
        # scaled by how the basis's measured ratio compares with its sample ratio.
        basis = pick if pick in measured else latest if latest in measured else None
        measured = {basis: measured[basis]} if basis is not None else {}
        costs = self._costs
        # the heavier codecs are priced (their sample compressed, up to ~0.6 ms with zstd-9) only for a transfer
        # long enough on the wire for that to be a small share of what a step up can save, and only when
        # `costs.cannot_pay` does not rule them out first (`sample_up`)
        up = step_up and self._t.size / bandwidth >= STEP_UP_MIN_WIRE_S
        among = candidates(pick, up=False)
        ratios = {k: 1.0 if k == "none" else measured[k] for k in candidates(pick, up=up)
                  if k == "none" or k in measured}
        sampled = self._sampled
        scale = 1.0  # how this transfer's measured ratios compare with the sample's

        def on_chunk_sample(codecs: tuple[str, ...]) -> None:
            nonlocal scale
            if self._sample is None:  # the window's sample of this chunk (read for the selector), else read now
                t = self._t
                self._sample = self._samples.pop(i, None) or chunks.sample(self._fd, i * t.chunk_bytes,
                                                                           t.chunk_length(i))
            on_sample(self._sample, codecs if basis is None or basis in codecs else (*codecs, basis), sampled)
            if basis is not None and basis in sampled and sampled[basis].ratio:
                scale = measured[basis] / sampled[basis].ratio

        if any(k not in ratios or k not in costs.comp or k not in costs.dec for k in among if k != "none"):
            on_chunk_sample(among)  # some figure is not measured yet: the sample's stand in for it
            ratios.update((k, min(1.0, sampled[k].ratio * scale)) for k in among if k not in ratios)

        def sample_up(codec: str) -> float:
            on_chunk_sample((codec,))
            ratios[codec] = min(1.0, sampled[codec].ratio * scale)
            return ratios[codec]

        priced: dict[str, float] | None = {} if note is not None else None
        # a chunk a stream starts with waits for its whole compression before its first byte leaves; a later
        # one is compressed while the chunks before it are on the wire (the pipelined price)
        t = self._t
        first = i < self._owner.settings.streams
        length = t.chunk_length(i) if first else 0
        chosen = costs.fastest(pick, ratios, bandwidth, sampled, priced, length, t.size - i * t.chunk_bytes,
                               sample_up if up else None)
        if note is not None:
            note["priced_ns"] = ns_per_byte(priced)
            note["ratios"] = {k: [round(r, 4), "measured" if k in measured else "sample"] for k, r in ratios.items()}
        if chosen != pick:
            self._owner.metrics.codec_decisions.labels("pricing_up" if heavier(chosen, pick) else "cpu_guard").inc()
        return chosen

    def sent(self, i: int, picked: str, codec: str, raw_len: int, encoded_len: int, comp_cpu: float,
             rest_cpu: float, busy_cpu: float, busy_wall: float) -> None:
        """Chunk `i` left as `codec` (`picked`, or none when that did not pay, or a delta); `encoded_len` is
        its size in `picked`. Its ratio counts for this transfer, its CPU for the peer's pipeline costs."""
        with self._lock:
            self._in_flight[i] = (codec, raw_len)
            note = self._notes.get(i)
            if note is not None and raw_len > 0:
                note_sent(note, codec, raw_len, encoded_len, comp_cpu)
                note["t_sent"] = self.since()
            if picked != "none" and raw_len > 0:
                old = self._ratios.get(picked)
                ratio = encoded_len / raw_len
                self._ratios[picked] = ratio if old is None else 0.8 * old + 0.2 * ratio
                self._latest = picked
        self._costs.sent(picked, raw_len, comp_cpu, rest_cpu, busy_cpu, busy_wall)

    def acked(self, i: int, meta: dict) -> None:
        """The receiver's ACK of chunk `i`: its CPU figures go to the peer's pipeline costs."""
        with self._lock:
            codec, raw_len = self._in_flight.pop(i, ("none", 0))
            note = self._notes.pop(i, None)
        if note is not None and self._log is not None:
            note.update(t_acked=self.since(), rx_cpu_ms=meta.get("cpu") and round(meta["cpu"] * 1e3, 3),
                        rx_io_ms=meta.get("io") and round(meta["io"] * 1e3, 3))
            self._log.write(note)
        if codec != chunks.DELTA:
            self._costs.acked(codec, raw_len, meta)
