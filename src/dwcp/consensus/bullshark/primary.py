"""The Narwhal primary as a sans-IO core: headers, votes, certificates, rounds, sync, GC, commits.

Theory of operation (Danezis et al., Narwhal and Tusk, section 3; Narwhal's `primary/src/core.rs`):
- Our worker reports batches it sealed (`Local(BatchStored(own=True))`): their refs wait in `payload`.
  Transactions submitted over HTTP are batched here and handed to the worker (submissions.py).
- We propose a header for round r + 1 once 2f + 1 certificates of round r are delivered and either the
  payload fills `header_size` bytes of digests or `max_header_delay` passed; at an even r we also wait
  (up to the same delay) for the anchor of r, so that anchors collect parents and commit. With
  `min_header_delay` set, a header still light at that time (fewer than `busy_header_batches` of our
  batches) goes out then: short rounds at light load, long ones when busy.
- A peer's header gets our vote once its parents are delivered here and our worker holds its
  batches (else we fetch both and park the header); one vote per author and round, ever.
- 2f + 1 votes on our header make a certificate, which we broadcast and deliver. Certificates are
  delivered in causal order (dag.py), each handed to the Bullshark ordering (ordering.py); missing
  parents are requested from the sender and, on the sync timer, from the other peers in turn.
- Each ordered sub-DAG becomes a height once f + 1 primaries attest it (commits.py); its batches go
  to our worker for execution. GC: everything `gc_depth` rounds below the last anchor is dropped.
Pair rule (Narwhal's sanitize/process): `_check_*` decides whether peer input is acceptable and
never changes state; `_on_*` changes state. Bad peer input yields `Rejected`, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dwcp.consensus.bullshark import commits
from dwcp.consensus.bullshark.commitpath import CommitPath
from dwcp.consensus.bullshark.dag import Dag, malformed_links
from dwcp.consensus.bullshark.inline import SEAL, InlineWorker
from dwcp.consensus.bullshark.messages import (
    COMMIT_VOTE,
    HEADER_VOTE,
    BatchRequest,
    BatchStored,
    CertificateRequest,
    CertificateResponse,
    DagCertificate,
    FetchBatches,
    Header,
    Link,
)
from dwcp.consensus.bullshark.ordering import Bullshark, CommittedSubDag
from dwcp.consensus.bullshark.parking import BatchRequests, Parked
from dwcp.consensus.bullshark.progress import Progress
from dwcp.consensus.bullshark.safety import KEY as SAFETY_KEY
from dwcp.consensus.bullshark.safety import VOTE_PREFIX, VoteGuard
from dwcp.consensus.bullshark.submissions import KEY as SUBMITTED_KEY
from dwcp.consensus.bullshark.submissions import Submissions
from dwcp.consensus.core.codec import encode, signing_bytes
from dwcp.consensus.core.committee import Committee
from dwcp.consensus.core.crypto import Signer, Verifier
from dwcp.consensus.core.inputs import (
    Fetched,
    Input,
    Local,
    Received,
    Recovered,
    Restored,
    Started,
    Submitted,
    Timer,
    TimerFired,
)
from dwcp.consensus.core.messages import Block, Certificate, TxBatch, Vote
from dwcp.consensus.core.outputs import Broadcast, Output, Rejected, RequestSync, Send, SetTimer, ToLocal
from dwcp.consensus.core.protocol import check_quorum_signatures

PROPOSE = Timer(kind="bs-propose")
SYNC = Timer(kind="bs-sync")


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    header_size: int = 1000  # bytes of batch digests that fill a header (Narwhal's default)
    max_header_delay: float = 0.1  # seconds before a header goes out anyway (empty if need be)
    # Adaptive delay (0: off, every header waits max_header_delay as before): a header whose payload holds fewer
    # than `busy_header_batches` of our batches at min_header_delay goes out then (light load: short rounds, low
    # latency); a fuller one waits for max_header_delay (heavy load: fewer rounds, less primary CPU per batch).
    min_header_delay: float = 0.0
    busy_header_batches: int = 4
    gc_depth: int = 50  # rounds of DAG kept below the last committed anchor
    schedule_period: int = 0  # HammerHead: committed anchors per leader schedule; 0: round-robin
    sync_retry: float = 0.25  # seconds between requests for still-missing certificates
    max_sync_certificates: int = 256  # most certificates in one sync response
    max_header_batches: int = 4096  # a header naming more is refused
    inline_batch_txs: int = 64  # txs batched in the core (simulation: inline.py; a node's HTTP: submissions.py)
    inline_batch_delay: float = 0.01  # ... and the longest a transaction waits for its batch


class Primary(CommitPath):
    def __init__(self, *, committee: Committee, node_id: int, signer: Signer, verifier: Verifier,
                 config: Config | None = None, inline_batches: bool = False) -> None:
        self.committee, self.node_id, self.signer, self.verifier = committee, node_id, signer, verifier
        self.config = config = config or Config()
        self._sync_turn = node_id  # whom to ask next for missing certificates (round-robin over peers)
        self.peers = tuple(i for i in committee.ids if i != node_id)
        self.quorum, self.validity = committee.quorum, committee.validity
        self.dag = Dag()
        self.ordering = Bullshark(committee.ids, gc_depth=config.gc_depth, schedule_period=config.schedule_period)
        self.log = commits.CommitLog(self.validity)
        self.batch_window = commits.BatchWindow()
        self.progress = Progress()
        self.started = False
        self.round = 0  # round of our newest header
        self.quorum_round = 0  # highest round with 2f + 1 delivered certificates
        self.header: Header | None = None
        self.votes: dict[int, bytes] = {}
        self.certified = False
        self.delay_expired = False
        self.delay_stage = 1  # 0: the PROPOSE timer set runs to min_header_delay; 1: to max_header_delay
        self.payload: list[commits.BatchRef] = []  # our sealed batches not yet in a certified header
        self.available: dict[bytes, int] = {}  # batch digest held by our worker -> round first seen
        self.guard = VoteGuard()  # our votes and header, persisted before they are sent
        self.uncommitted_own: dict[int, tuple[commits.BatchRef, ...]] = {}  # our certified payloads by round
        self.unreferenced: dict[bytes, int] = {}  # delivered certificates nothing names yet -> round
        self.parked = Parked()  # peers' headers waiting for parents or batches
        self.requests = BatchRequests()  # when to ask our worker again for their batches
        self.created_at: dict[bytes, float] = {}  # our certificates' creation times, for consensus latency
        self._stuck_at: int | None = None  # height waiting for attestations at the last sync tick
        self.inline = InlineWorker(config.inline_batch_txs, config.inline_batch_delay) if inline_batches else None
        self.batcher = self.inline or Submissions(config.inline_batch_txs, config.inline_batch_delay)  # Submitted txs
        self.awaiting: list[CommittedSubDag] = []  # inline mode: ordered, waiting for batch contents

    # -- the one entry point -----------------------------------------------------------------
    def handle(self, now: float, inp: Input) -> list[Output]:
        out: list[Output] = []
        if isinstance(inp, Received):
            self._received(now, inp, out)
        elif isinstance(inp, Local):
            self._local(now, inp.message, out)
        elif isinstance(inp, TimerFired):
            if inp.timer == PROPOSE:
                if self.delay_stage == 0 and len(self.payload) >= self.config.busy_header_batches:
                    self.delay_stage = 1  # busy: the rest of max_header_delay
                    out.append(SetTimer(timer=PROPOSE,
                                        delay=self.config.max_header_delay - self.config.min_header_delay))
                    return out
                self.delay_expired = True
                self._maybe_propose(now, out)
            elif inp.timer == SEAL:
                self._local_stored(now, self.batcher.seal(out), out)
            elif inp.timer == SYNC:
                self._resync(out)
                if self.inline is None:
                    self.batcher.resend(out)
                out.append(SetTimer(timer=SYNC, delay=self.config.sync_retry))
        elif isinstance(inp, Started):
            self.started = True
            out.append(SetTimer(timer=SYNC, delay=self.config.sync_retry))
            self._maybe_propose(now, out)
            self._header_timer(out)
        elif isinstance(inp, Recovered) and inp.key == SAFETY_KEY:
            own = self.guard.recover(inp.value)
            if own is not None:  # re-collect votes for it (same digest: peers vote again)
                self.round, self.header, self.certified = own.round, own, False
                self.votes = {self.node_id: self.signer.sign(signing_bytes(self.node_id, encode(own.vote())))}
        elif isinstance(inp, Recovered) and inp.key.startswith(VOTE_PREFIX):
            self.guard.recover_vote(inp.key, inp.value)
        elif isinstance(inp, Recovered) and inp.key == SUBMITTED_KEY and self.inline is None:
            self.batcher.recover(inp.value)  # our batches sealed before a stop (submissions.py)
        elif isinstance(inp, Restored):
            self._apply_log(now, inp.height, inp.block, inp.certificate, out, restored=True, tx_ids=inp.tx_ids)
        elif isinstance(inp, Fetched):
            if inp.block.height == self.log.next_height:
                if self.verify_certificate(inp.block.height, inp.block, inp.certificate):
                    self._apply_log(now, inp.block.height, inp.block, inp.certificate, out, restored=False)
                else:
                    out.append(Rejected(peer=inp.sender, reason="bad_certificate"))
        elif isinstance(inp, Submitted):  # HTTP clients: batched here (inline, or for our worker: submissions.py)
            self._local_stored(now, self.batcher.submit(inp.tx, out), out)
        return out

    def _received(self, now: float, inp: Received, out: list[Output]) -> None:
        msg, sender = inp.message, inp.sender
        if isinstance(msg, Header):
            reason = self._check_header(sender, msg)
            if reason:
                out.append(Rejected(peer=sender, reason=reason))
            else:
                self._on_header(sender, msg, out)
        elif isinstance(msg, DagCertificate):
            self._certificate(now, sender, msg, out)
        elif isinstance(msg, Vote) and msg.kind == HEADER_VOTE:
            self._on_vote(now, sender, msg, inp.signature, out)
        elif isinstance(msg, Vote) and msg.kind == COMMIT_VOTE:
            for block, cert in self.log.attest(sender, msg.height, msg.digest, inp.signature):
                self._emit_commit(block, cert, out)
        elif isinstance(msg, CertificateRequest):
            found = [c for d in msg.digests[: self.config.max_sync_certificates] if (c := self.dag.get(d))]
            if found:
                out.append(Send(to=sender, message=CertificateResponse(certificates=tuple(found))))
        elif isinstance(msg, CertificateResponse):
            for cert in msg.certificates[: self.config.max_sync_certificates]:
                self._certificate(now, sender, cert, out)
        elif isinstance(msg, TxBatch) and self.inline is not None:
            self._local_stored(now, self.inline.received(msg), out)
            self._build_awaiting(now, out)
        elif isinstance(msg, BatchRequest) and self.inline is not None:
            self.inline.answer(sender, msg, out)
        else:
            out.append(Rejected(peer=sender, reason="unexpected"))

    # -- headers and votes -------------------------------------------------------------------
    def _check_header(self, sender: int, h: Header) -> str:
        if h.author != sender:
            return "bad_author"
        if h.round < max(1, self.dag.gc_round):
            return "stale"
        if len(h.payload) > self.config.max_header_batches:
            return "too_large"
        return self.guard.refuse(h) or malformed_links(h.round, h.parents, h.weak, self.quorum, self.committee.n)

    def _on_header(self, sender: int, h: Header, out: list[Output]) -> None:
        missing = self._missing_links(h)
        if missing:
            self.parked.park(sender, h, missing, links=True)
            out.append(Send(to=sender, message=CertificateRequest(digests=tuple(missing))))
            return
        if h.round - 1 >= self.dag.gc_round:
            parent_certs = [self.dag.get(p) for p in h.parents]
            if any(c.round != h.round - 1 for c in parent_certs) or len({c.author for c in parent_certs}) != len(
                    parent_certs):
                out.append(Rejected(peer=sender, reason="bad_parents"))
                return
        absent = tuple(b.digest for b in h.payload if b.digest not in self.available)
        if absent and self.inline is not None:  # availability forgotten by GC, batch still stored
            for d in absent:
                if d in self.inline.store:
                    self.available[d] = self.round
            absent = tuple(d for d in absent if d not in self.available)
        if absent:
            self.parked.park(sender, h, absent, links=False)
            self._fetch(self.requests.due(absent), sender, out)
            return
        self.parked.drop(h.author)
        if self.guard.last.get(h.author) != (h.round, h.digest):
            out.append(self.guard.voted(h))
        out.append(Send(to=h.author, message=h.vote()))

    def _fetch(self, digests: tuple[bytes, ...], peer: int, out: list[Output]) -> None:
        if digests and self.inline is not None:
            self.inline.fetch(digests, (peer,) if peer >= 0 else self.peers, out)
        elif digests:
            out.append(ToLocal(message=FetchBatches(digests=digests, peer=peer)))

    def _missing_links(self, h: Header) -> list[bytes]:
        strong = [] if h.round - 1 < self.dag.gc_round else [p for p in h.parents if not self.dag.has(p)]
        return strong + [w.digest for w in h.weak if w.round >= self.dag.gc_round and not self.dag.has(w.digest)]

    def _on_vote(self, now: float, sender: int, vote: Vote, signature: bytes, out: list[Output]) -> None:
        h = self.header
        if h is None or self.certified or vote.view != self.node_id or vote.height != h.round \
                or vote.digest != h.digest:
            return  # a late vote for an older header: normal, not misbehaviour
        self.votes.setdefault(sender, signature)
        if len(self.votes) < self.quorum:
            return
        signers = tuple(sorted(self.votes))
        cert = DagCertificate(header=h, signers=signers, signatures=tuple(self.votes[s] for s in signers))
        self.certified = True
        included = {r.digest for r in h.payload}
        self.payload = [r for r in self.payload if r.digest not in included]
        if h.payload:
            self.uncommitted_own[h.round] = h.payload
        self.created_at[cert.digest] = now
        self.progress.certificates_created += 1
        out.append(Broadcast(message=cert))
        self._deliver_all(now, self.dag.add(cert), out)

    def _maybe_propose(self, now: float, out: list[Output]) -> None:
        r = self.quorum_round
        if not self.started or self.round > r:
            return
        full = len(self.payload) * 32 >= self.config.header_size
        if not (full or self.delay_expired):
            return
        if r >= 2 and r % 2 == 0 and not self.delay_expired and \
                self.ordering.schedule.leader(r) not in self.dag.rounds.get(r, {}):
            return  # give the anchor of r the chance to be our parent
        parents = tuple(sorted(c.digest for c in self.dag.rounds.get(r, {}).values())) if r else ()
        batches = tuple(self.payload[: self.config.max_header_batches])
        weak = tuple(Link(round=rd, digest=d) for d, rd in sorted(self.unreferenced.items(), key=lambda i: i[1])
                     if rd < r)[: self.committee.n]
        header = Header(author=self.node_id, round=r + 1, payload=batches, parents=parents, weak=weak)
        self.progress.round_advanced(now, r + 1)
        self.round, self.header, self.certified, self.delay_expired = r + 1, header, False, False
        vote, self.votes = header.vote(), {}
        out.append(self.guard.proposed(header))
        out.append(Broadcast(message=header))  # then our own vote: alone a quorum in a committee of one
        self._on_vote(now, self.node_id, vote, self.signer.sign(signing_bytes(self.node_id, encode(vote))), out)
        self._header_timer(out)

    def _header_timer(self, out: list[Output]) -> None:
        """The next header's delay: min_header_delay first when the adaptive delay is on, else max."""
        c = self.config
        adaptive = 0 < c.min_header_delay < c.max_header_delay
        self.delay_stage = 0 if adaptive else 1
        out.append(SetTimer(timer=PROPOSE, delay=c.min_header_delay if adaptive else c.max_header_delay))

    # -- certificates ------------------------------------------------------------------------
    def _check_certificate(self, c: DagCertificate) -> str:
        if c.author not in self.committee or c.round < 1:
            return "bad_author"
        reason = malformed_links(c.round, c.parents, c.weak, self.quorum, self.committee.n)
        if reason:
            return reason
        if len(c.header.payload) > self.config.max_header_batches:
            return "too_large"
        if not check_quorum_signatures(self.committee, self.verifier, c.votes()):
            return "bad_certificate"
        return "conflict" if self.dag.conflicts(c) else ""

    def _certificate(self, now: float, sender: int, c: DagCertificate, out: list[Output]) -> None:
        if c.round < self.dag.gc_round or self.dag.known(c.digest):
            return
        reason = self._check_certificate(c)
        if reason:
            out.append(Rejected(peer=sender, reason=reason))
            return
        self._deliver_all(now, self.dag.add(c), out)
        if c.digest in self.dag.suspended:
            missing = tuple(p for p in self.dag.missing(c) if not self.dag.known(p))
            if missing:
                out.append(Send(to=sender, message=CertificateRequest(digests=missing)))

    def _deliver_all(self, now: float, delivered: list[DagCertificate], out: list[Output]) -> None:
        for c in delivered:
            self.unreferenced[c.digest] = c.round
            for p in c.parents:
                self.unreferenced.pop(p, None)
            for w in c.weak:
                self.unreferenced.pop(w.digest, None)
            if self.dag.count(c.round) >= self.quorum:
                self.quorum_round = max(self.quorum_round, c.round)
            for sub_dag in self.ordering.process(c):
                self._ordered(now, sub_dag, out)
        if delivered:
            self._collect(now, out)
            self._reexamine(self.parked.arrived(c.digest for c in delivered), out)
            self._maybe_propose(now, out)

    def _reexamine(self, headers: list[tuple[int, Header]], out: list[Output]) -> None:
        for sender, h in headers:
            if not self._check_header(sender, h):
                self._on_header(sender, h, out)

    def _resync(self, out: list[Output]) -> None:
        absent = {b.digest for _, h in self.parked.headers.values() for b in h.payload
                  if b.digest not in self.available}
        self.requests.next_tick(absent)
        self._fetch(self.requests.due(sorted(absent)), -1, out)  # batches the author did not give us: ask anyone
        wanted = tuple(self.dag.wanted())[: self.config.max_sync_certificates]
        if wanted and self.peers:
            self._sync_turn += 1
            out.append(Send(to=self.peers[self._sync_turn % len(self.peers)],
                            message=CertificateRequest(digests=wanted)))
        if self.header is not None and not self.certified:
            out.append(Broadcast(message=self.header))  # peers that restarted or lost it vote now
        elif self.certified and self.quorum_round < self.round and self.header is not None:
            # The round waits for certificates: ours may have been lost (a partition, a restart).
            ours = self.dag.get(self.header.digest)
            if ours is not None:
                out.append(Broadcast(message=ours))
        stuck = self.log.next_height if self.log.next_height in self.log.ours else None
        if stuck is not None and stuck == self._stuck_at and self.peers:
            # Ordered here but never attested by f + 1: the others attested while we were away.
            out.append(RequestSync(peers=self.peers, from_height=stuck, to_height=max(self.log.ours)))
        self._stuck_at = stuck

    def _collect(self, now: float, out: list[Output]) -> None:
        gc_round = self.ordering.gc_round
        if gc_round <= self.dag.gc_round:
            return
        released = self.dag.collect(gc_round)
        for table in (self.available, self.unreferenced):
            for d in [d for d, r in table.items() if r < gc_round]:
                del table[d]
        self._deliver_all(now, released, out)
        self._reexamine(self.parked.take_waiting_for_links(), out)  # links below the GC round: no longer awaited

    # -- local worker ------------------------------------------------------------------------
    def _local_stored(self, now: float, stored: BatchStored | None, out: list[Output]) -> None:
        if stored is not None:
            self._local(now, stored, out)

    def _local(self, now: float, msg: Any, out: list[Output]) -> None:
        if not isinstance(msg, BatchStored):
            raise TypeError(f"unexpected local message {type(msg).__name__}")
        fresh = msg.ref.digest not in self.available
        self.available[msg.ref.digest] = max(self.round, self.dag.gc_round)  # (re)stamped: GC counts from here
        if msg.own and fresh:  # a worker restart re-announces its batches; each goes in one header
            self.payload.append(msg.ref)
            self._maybe_propose(now, out)
        self._reexamine(self.parked.arrived((msg.ref.digest,)), out)

    # -- queries -----------------------------------------------------------------------------
    def verify_certificate(self, height: int, block: Block, certificate: Certificate) -> bool:
        return commits.verify(self.committee, self.verifier, height, block, certificate)

    def status(self) -> dict[str, Any]:
        return {
            "height": self.log.next_height - 1, "view": 0, "epoch": 0, "round": self.round,
            "pending": sum(b.txs for b in self.payload), "dag_size": len(self.dag), "gc_round": self.dag.gc_round,
            "leader_schedule": list(self.ordering.schedule.table), **self.progress.snapshot(),
        }
