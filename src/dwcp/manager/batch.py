"""Small transfers to one peer in one session: what makes 1,000 small objects cost one transfer, not 1,000.

Each object alone pays a TLS dial, three round trips, a selector call and, on the receiver, a journal and
four fsyncs; rsync streams a whole file list in one session. A batch (transfers.py picks it from the queue:
one-chunk objects for the same peer) shares all of that:

1. one authenticated connection;
2. one selector call for the whole batch (each object is one chunk: one sample each);
3. OFFER and CHUNK of each object sent back to back, in as few TLS records as fit (`Connection.holding`),
   up to PIPELINE_BYTES ahead of their STATE and ACK answers (no delta: a one-chunk object gains little
   from one, and the receiver's base would cost a round trip first);
4. one COMMIT_MANY: the receiver fsyncs the objects' files together and publishes them with one
   `publish_many` (renames, one fsync per directory, one index transaction), answering DONE_MANY;
5. one durable journal write for the batch's final states.

Anything that goes wrong (a NACK, a lost connection, an error for one object in DONE_MANY) sends the
transfers not yet done through the single-transfer path, which retries and resumes as usual.
"""

from __future__ import annotations

import collections
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from dwcp.manager import chunks
from dwcp.manager.costs import MIN_TIMED_BYTES, STEP_UP_MIN_WIRE_S, candidates, heavier, on_sample, same_kernel
from dwcp.manager.plan import Answer, CodecLog, note_sent, ns_per_byte
from dwcp.manager.wire import Connection, Kind, WireError

if TYPE_CHECKING:
    from dwcp.manager.costs import PipelineCosts
    from dwcp.manager.transfers import Transfer, Transfers

log = logging.getLogger("dwcp.manager.batch")
BATCH_MAX = 128  # transfers in one batch: the four workers share a large queue, a DONE_MANY stays small
# Bytes of objects sent ahead of their answers. Every object of a batch may be (its answers, ~150 bytes each,
# wait in the socket buffers): 16 objects ahead made the sender wait for the receiver's thread 8 times per
# 128 small objects, each a wake-up that waits for a CPU on a busy host.
PIPELINE_BYTES = 8 << 20
# An object shorter than this on the wire (uncompressed, at the link's measured bandwidth) that the selector is not
# asked about goes in the link rule's codec without a probe or pricing (`_Decider.codec`): the bar of the pricing's
# step up (costs.STEP_UP_MIN_WIRE_S), where deciding costs about 5% of the wire time a better codec could save.
DECIDE_MIN_WIRE_S = STEP_UP_MIN_WIRE_S


class _Chosen:
    """The batch's codec for one object, in the shape `Transfers._send_chunk` asks a plan for: decided when the
    object is about to be compressed (`_Decider.codec`), not before the batch's first byte leaves."""

    def __init__(self, decider: _Decider, t: Transfer, costs: PipelineCosts) -> None:
        self._decider, self._t, self._costs = decider, t, costs
        self.sent_as: tuple[str, int] = ("none", 0)  # (codec sent, raw length), for its ACK's CPU figures
        self.note: dict | None = None  # its settings.codec_log record (plan.CodecLog), when one is kept

    def codec(self, i: int) -> str:
        codec, self.note = self._decider.codec(self._t)
        return codec

    def sent(self, i: int, picked: str, codec: str, raw_len: int, encoded_len: int, comp_cpu: float,
             rest_cpu: float, busy_cpu: float, busy_wall: float) -> None:
        """The sender's CPU for the object counts for the peer's pipeline (one object: no ratio to keep)."""
        self.sent_as = (codec, raw_len)
        if self.note is not None:
            note_sent(self.note, codec, raw_len, encoded_len, comp_cpu)
            self.note["t_sent"] = self._decider.since()
        self._costs.sent(picked, raw_len, comp_cpu, rest_cpu, busy_cpu, busy_wall)


def send_batch(owner: Transfers, ts: list[Transfer]) -> None:
    started = time.perf_counter()
    for t in ts:
        t.state, t.chunk_bytes, t.chunks_total = "running", owner.settings.chunk_min_bytes, 1
    done: list[Transfer] = []
    try:
        _session(owner, ts, done)
    except (WireError, OSError) as exc:
        log.info("batch of %d transfers to %s: %s; sending the rest one by one", len(ts), ts[0].to, exc)
    elapsed = time.perf_counter() - started
    for t in done:
        t.state, t.error, t.seconds = "done", None, t.seconds + elapsed
        owner.metrics.transfers.labels("done").inc()
    owner.costs_for(ts[0].to).export(owner.metrics, ts[0].to)
    if done:
        owner.log.save_many(done, durable=True)
    finished = {t.id for t in done}
    for t in ts:
        if t.id not in finished:
            t.chunk_bytes = t.chunks_done = 0
            owner._run(t)


def _session(owner: Transfers, ts: list[Transfer], done: list[Transfer]) -> None:
    site = owner.sites[ts[0].to]
    conn = owner.sessions.take(site)
    fds: dict[str, int] = {}
    clean = False  # every request answered: the connection goes back to the pool
    try:
        for t in ts:
            blob = owner.store.blob_path(t.sha256)
            if blob.is_file():
                fds[t.id] = os.open(blob, os.O_RDONLY)
        ready = [t for t in ts if t.id in fds]  # a vanished blob fails on the single path, with its reason
        decider = _Decider(owner, ready, fds, conn.flush)
        buf = bytearray(max((t.size for t in ready), default=0))
        costs = owner.costs_for(ts[0].to)
        unanswered: collections.deque[tuple[Transfer, _Chosen]] = collections.deque()
        ahead = 0  # bytes of the unanswered objects
        with conn.holding():  # an object's OFFER and CHUNK, and the next small objects', leave together
            for t in ready:
                conn.send(Kind.OFFER, {"tid": t.id, "key": t.key, "size": t.size, "sha256": t.sha256,
                                       "chunk_bytes": t.chunk_bytes, "chunks": 1})
                chosen = _Chosen(decider, t, costs)
                wire = t.bytes_wire
                owner._send_chunk(t, conn, 0, fds[t.id], chosen, [None], buf)  # no delta base
                decider.queued(t.bytes_wire - wire)
                unanswered.append((t, chosen))
                ahead += t.size
                # answers are a few bytes (~250 per object, BATCH_MAX objects at most): the receiver never blocks
                # sending them; waiting for one sends what is held first (`Connection.receive`)
                while ahead > PIPELINE_BYTES:
                    done_t, done_chosen = unanswered.popleft()
                    _answered(conn, done_t, done_chosen, owner.codec_log)
                    ahead -= done_t.size
        while unanswered:
            _answered(conn, *unanswered.popleft(), owner.codec_log)
        if not ready:
            clean = True
            return
        commit_at = decider.since()
        conn.send(Kind.COMMIT_MANY, {"tids": [t.id for t in ready]})
        _, answer, _ = conn.expect((Kind.DONE_MANY,), 0)
        if owner.codec_log is not None:  # as a single transfer's (plan.Plan.committed), one record per object
            t_done = decider.since()
            for t in ready:
                owner.codec_log.write({"tid": t.id, "size": t.size, "src": "commit", "batch": len(ready),
                                       "t_commit": commit_at, "t_done": t_done})
        by_tid = {r.get("tid"): r for r in answer.get("results", []) if isinstance(r, dict)}
        for t in ready:
            result = by_tid.get(t.id, {})
            if "version" in result:
                done.append(t)
            else:
                log.info("transfer %s in a batch: %s", t.id, result.get("error", "no answer"))
        clean = True
    finally:
        for fd in fds.values():
            os.close(fd)
        if clean:
            owner.sessions.give(site, conn)
        else:
            conn.close()


def _answered(conn: Connection, t: Transfer, chosen: _Chosen, log_to: CodecLog | None = None) -> None:
    """The STATE and ACK for `t`'s OFFER and CHUNK (answers come in the order of the requests)."""
    _, state, _ = conn.expect((Kind.STATE,), 0)
    chosen._costs.same_host = same_kernel(state)
    kind, meta, _ = conn.expect((Kind.ACK, Kind.NACK), 0)
    if kind is Kind.NACK:
        raise WireError("nack", f"chunk of {t.id} refused ({meta.get('reason')})")
    # held in memory until COMMIT_MANY: this write's time is not the disk's
    chosen._costs.acked(*chosen.sent_as, {k: v for k, v in meta.items() if k != "io"})
    t.chunks_done = 1
    if chosen.note is not None and log_to is not None:
        chosen.note["t_acked"] = chosen._decider.since()
        log_to.write(chosen.note)


class _Decider:
    """Each object's codec, decided as the object is about to be compressed: its own when the transfer names one,
    else the selector's answer if it is in, else the local rule.

    One selector call about every object but the first: the first is decided by the local rule at once and starts
    the link, the call starts as it leaves, and the others wait for the answer only while the link is still busy
    with the objects before them (`slack`: the wire time of the bytes handed to the connection that the link has
    not had time to carry yet, at its measured bandwidth), so the wait costs no wire time. Before session 9 the
    whole batch waited up to ANSWER_WAIT_SHARE of its wire time before its first byte (10 Mbit/s, five 162 KiB
    objects: ~21 ms, more than the selector's zstd-9 then saved, ~8 ms: 0.92-1.01 of always-zstd-3).

    On a measured link the first object is not probed or priced at all: it leaves in the link's rule codec
    (`chunks.link_rule`) as soon as it is compressed, as a fixed-codec batch's does (session 11)."""

    def __init__(self, owner: Transfers, ts: list[Transfer], fds: dict[str, int],
                 flush: Callable[[], None] = lambda: None) -> None:
        self._owner, self._flush = owner, flush  # flush: send the frames held so far (`Connection.holding`)
        self._t0 = time.perf_counter()
        self._busy_until = self._t0  # when the link will have carried what was handed to it (estimated)
        self._index: dict[str, int] = {}  # transfer id -> its place among the objects asked about
        self._answer: Answer | None = None
        self._bandwidth: float | None = None
        self._first = 0  # the objects before it are not asked about
        self._unasked = False  # no call at all: each object by the local rule on its own piece (`codec`)
        self._size = len(ts)
        self._fds = fds
        self._ask: list[Transfer] = []
        # object (its place in `_ask`) -> its sample (the selector call, then the pricing) and its local-rule
        # piece (the call's fallback, then an object decided ahead of the answer), each read once
        self._samples: dict[int, bytes] = {}
        self._pieces: dict[int, bytes] = {}
        for t in ts:
            if t.codec is not None:
                owner.metrics.codec_sources.labels("fixed", t.codec).inc()
        self._ask = ask = [t for t in ts if t.codec is None]
        if not ask:
            return
        self._link = owner.links.get(ask[0].to)
        self._costs = owner.costs_for(ask[0].to)
        self._bandwidth = self._link.bandwidth
        self._index = {t.id: n for n, t in enumerate(ask)}
        self._payload = sum(t.size for t in ask)
        # on a measured link where the selector is worth asking, the first object goes with the local rule, unasked,
        # and the call starts once it has left (session 9: started first, the call's thread and request took the
        # sending thread's CPU, and the first object left 2-12 ms after the batch started against 0.1-0.3 ms with
        # a fixed codec); on an unmeasured link every object is asked about and the first waits for the answer as
        # long as `selector_timeout_s` (as before session 9); one not worth asking is decided by the local rule
        worth = bool(self._bandwidth) and owner.chooser.worth_asking(self._payload, self._bandwidth)
        self._first = 1 if worth else 0
        # on a measured link not worth asking about, each object is decided by the local rule on its own piece as
        # its turn comes, while the link carries the objects before it (before session 11 every object's sample
        # and piece were read and probed here, before the first byte: 2-6 ms at 100 Mbit/s, see `codec`)
        self._unasked = bool(self._bandwidth) and not worth
        if self._first == 0 and not self._unasked:
            self._start_call()

    def _sample(self, n: int) -> bytes:
        return self._read(self._samples, n, chunks.sample)

    def _piece(self, n: int) -> bytes:
        return self._read(self._pieces, n, chunks.piece)

    def _read(self, cache: dict[int, bytes], n: int, read: Callable[[int, int, int], bytes]) -> bytes:
        if n not in cache:
            t = self._ask[n]
            cache[n] = read(self._fds[t.id], 0, t.size)
        return cache[n]

    def _start_call(self) -> None:
        """One selector call about the objects from `_first` on (their samples; the pieces the chooser's local
        rule probes if the call fails)."""
        first, ask = self._first, self._ask
        if len(ask) <= first:
            return
        self._answer = Answer()
        self._answer.start(self._owner.chooser, [self._sample(n) for n in range(first, len(ask))],
                           [t.size for t in ask[first:]], self._link, self._payload, first=first,
                           pieces=[self._piece(n) for n in range(first, len(ask))])

    def since(self) -> float:
        return round(time.perf_counter() - self._t0, 6)

    def queued(self, wire_bytes: int) -> None:
        """`wire_bytes` more were handed to the connection: the link is busy that much longer."""
        if self._bandwidth:
            self._busy_until = max(self._busy_until, time.perf_counter()) + wire_bytes / self._bandwidth

    def slack(self) -> float:
        """How long the link still has bytes to carry: a wait this long costs the batch no wire time."""
        return max(0.0, self._busy_until - time.perf_counter())

    def codec(self, t: Transfer) -> tuple[str, dict | None]:
        """`t`'s codec and its codec_log record (None when no log is kept)."""
        owner = self._owner
        log_on = owner.codec_log is not None
        if t.codec is not None:
            return t.codec, ({"tid": t.id, "i": 0, "size": t.size, "src": "fixed", "codec": t.codec,
                              "t_decided": self.since()} if log_on else None)
        n = self._index[t.id]
        waited = 0.0  # for the selector's answer (only an object that was asked about waits)
        link = self._link
        # The batch's first object on a measured link leaves in the local rule's codec for the link at once: no
        # probe of its piece, no pricing (`_send_chunk` sends it raw if the codec does not pay). The link is idle
        # until its first byte, so every ms spent deciding it is a ms of wire time lost, which the fixed-codec
        # runs do not pay: session 10's lead table, 100 Mbit/s small bucket (five 101 KiB objects), the first
        # object was decided 1.9-5.7 ms after the batch started against 0.1 ms with a fixed codec, and the
        # selector's run took 1.14-1.99x always-zstd-3's with the same codecs.
        # So is an object not worth asking about that is too short on the wire for any pick to win back what the
        # probe and the pricing cost (~0.5 ms of CPU, 1-2 ms of wall on a busy 2-CPU host, per object: a better
        # codec than the rule's saves a few % of the object's wire time). Same run: the selector's objects left
        # 1-2 ms apart, always-zstd-3's 0.1-0.4 ms.
        fast = bool(self._bandwidth) and (n == 0 or self._unasked and t.size / self._bandwidth < DECIDE_MIN_WIRE_S)
        if fast:
            pick, why = chunks.link_rule(link.bandwidth), "not_asked" if self._unasked else "ahead_of_selector"
            owner.metrics.codec_decisions.labels(why).inc()
        elif self._unasked:
            pick, why = chunks.local_choice(self._piece(n), link.bandwidth), "not_asked"
            owner.metrics.codec_decisions.labels(why).inc()
        else:
            started, picked = time.perf_counter(), None
            if n == self._first and self._answer is None:
                self._flush()  # the objects before it leave now (held frames would wait for this object's)
                self._start_call()  # while the link is busy with them
            if self._answer is not None and n >= self._first:
                picked = self._answer.wait(0)
                if picked is None:
                    # frames held for the connection's next write would leave the link idle while this waits
                    self._flush()
                    picked = self._answer.wait(self.slack() if self._bandwidth else owner.settings.selector_timeout_s)
            waited = time.perf_counter() - started
            if picked is None:
                owner.metrics.codec_decisions.labels("ahead_of_selector").inc()
                pick, why = chunks.local_choice(self._piece(n), link.bandwidth), "ahead_of_selector"
            else:
                pick, why = picked[n], self._answer.source
        source_pick = pick
        if fast and self._costs.ready() and self._costs.none_sooner(pick, link.bandwidth):  # arithmetic only
            owner.metrics.codec_decisions.labels("cpu_guard").inc()
            pick, why = "none", "cpu_guard"
        # in the pick, a lighter or a heavier codec, as for a chunk (plan.Plan); one too small to time costs the
        # pipeline little either way, and pricing it would cost more than it can save
        priced: dict[str, float] = {}
        costs = self._costs
        if not fast and link.bandwidth and costs.ready() and t.size >= MIN_TIMED_BYTES:
            sample, sampled = self._sample(n), {}
            ratios = {k: f.ratio for k, f in on_sample(sample, candidates(pick, up=False), sampled).items()}

            def sample_up(codec: str) -> float:  # a heavier codec, sampled only where `cannot_pay` allows
                return on_sample(sample, (codec,), sampled)[codec].ratio

            up = t.size / link.bandwidth >= STEP_UP_MIN_WIRE_S
            fastest = costs.fastest(pick, ratios, link.bandwidth, sampled, priced, t.size, t.size,
                                    sample_up if up else None)
            if fastest != pick:
                why = "pricing_up" if heavier(fastest, pick) else "cpu_guard"
                owner.metrics.codec_decisions.labels(why).inc()
                pick = fastest
        owner.metrics.codec_sources.labels(why, pick).inc()
        note = None
        if log_on:
            note = {"tid": t.id, "i": 0, "size": t.size, "batch": self._size, "src": why, "pick": source_pick,
                    "codec": pick, "bw": link.bandwidth, "priced_ns": ns_per_byte(priced),
                    "wait_ms": round(waited * 1e3, 3), "t_decided": self.since(), **({"rule": "link"} if fast else {})}
        return pick, note
