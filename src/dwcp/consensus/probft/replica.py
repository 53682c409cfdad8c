"""ProBFT replica (Avelãs, Heydari, Alchieri, Distler, Bessani, PODC 2024): PBFT's three steps with
VRF-sampled prepare and commit and probabilistic quorums, as a sans-IO core.

It changes only PBFT's normal case; checkpoints, catch-up, the mempool and the view change are
`pbft.Replica`'s (the view change's prepared proofs are ProBFT certificates, checked by `quorum.py`).
Rules (docs/probft.md maps each to the paper):

| message    | accepted when                                                   | effect                            |
|------------|-----------------------------------------------------------------|-----------------------------------|
| Proposal   | PBFT's pre-prepare rules, and the leader's header signature over| store block, header; send prepare |
|            | (epoch, view, height, digest) is valid                          | ballot to our prepare sample      |
| Ballot     | kind prepare|commit; (e, v) current (later: buffered); the       | count it; q matching prepares ->  |
|            | sender's VRF proof for (e, v, kind) verifies (once per sender,  | prepared, commit ballot to our    |
|            | view and phase) and its sample holds us; first ballot of the    | commit sample; q matching commits |
|            | sender at (kind, v, h); header signature valid (empty only for  | -> decided, execute in order      |
|            | a view change's re-proposals)                                   |                                   |
| Ballot for | a valid header signature for another digest at (e, v, h): proof | that height never commits in this |
| other block| that the leader equivocated                                     | view; start a view change         |
| Vote, PrePrepare | never from peers (no sample proof / no header signature)  | Rejected                          |

q and the sample size s come from `sampling.derive` (dense below the size where sampling pays:
sample = everyone, q = 2f + 1, i.e. PBFT). Dense ballots carry no VRF proof (any proof bytes are
bad_vrf_proof) and dense commit ballots no header signature (unexpected_header): PBFT's quorums make
both unnecessary (docs/probft.md, "Dense mode without proofs"); prepare ballots keep the header, so
equivocation evidence works as above. Rejections are `Rejected` outputs with reasons
bad_vrf_proof, proof_mismatch, outside_sample, bad_header_signature, header_mismatch,
missing_header, unexpected_header, equivocation_evidence; bad peer input never raises.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from dwcp.consensus.core.codec import block_digest, encode, signed_by, signing_bytes
from dwcp.consensus.core.committee import Committee
from dwcp.consensus.core.crypto import Signer, Verifier
from dwcp.consensus.core.inputs import Input
from dwcp.consensus.core.messages import Block, Certificate, Vote
from dwcp.consensus.core.outputs import Multicast, Output, Rejected
from dwcp.consensus.core.vrf import VrfProver, VrfVerifier
from dwcp.consensus.pbft import Config as PbftConfig
from dwcp.consensus.pbft import Replica as PbftReplica
from dwcp.consensus.pbft.messages import (
    Checkpoint,
    NewView,
    Prepared,
    PrePrepare,
    SignedViewChange,
    ViewChange,
    ViewChangeRef,
)
from dwcp.consensus.pbft.state import Mode, Slot
from dwcp.consensus.probft.messages import Ballot, Proposal, SignedNewView, header
from dwcp.consensus.probft.quorum import SampleBook, dense_entries, pack_entry
from dwcp.consensus.probft.sampling import PHASES, derive, predict


@dataclass(frozen=True, kw_only=True)
class Config(PbftConfig):
    # Checkpoints are all-to-all (n^2 messages): every 32 heights they add n^2 / 32 per block, which
    # at n = 100 is ~300 against ProBFT's ~5000 per block (PBFT's 8 would add 1250).
    checkpoint_interval: int = 32
    # A faulty primary is replaced within about half a second over a WAN (PBFT's 1 s gave a p99 of 1.5 s at
    # n = 7 with 2 Byzantine). The NEW-VIEW wait starts at our own view change; the NEW-VIEW comes after the
    # slowest correct timer (~0.15 s later) plus a round trip, ~0.35 s over the WAN model: 0.25 s skipped
    # correct new primaries (seeds 1300-1499: 96 txs over 1 s against ~40-46 at 0.35 / 0.5 s).
    request_timeout: float = 0.5
    view_change_timeout: float = 0.35
    sample_factor: float = 0.0  # the paper's o: sample size s = ceil(o * sqrt(n)); 0: sampling.DEFAULT_O
    quorum_factor: float = 0.0  # the paper's l: quorum q = ceil(l * sqrt(n)); 0: derived from liveness_miss
    liveness_miss: float = 1e-2  # target chance a correct leader's phase misses quorum with f silent


def _label(message: Any) -> str:
    """Metric label of a sent message: the ProBFT phase it belongs to."""
    if isinstance(message, Ballot):
        return message.kind
    if isinstance(message, Proposal):
        return "propose"
    if isinstance(message, (ViewChange, NewView)):
        return "view_change"
    if isinstance(message, Checkpoint):
        return "checkpoint"
    return "other"


class Replica(PbftReplica):
    protocol = "probft"
    # Ballots reach the core unchecked (drivers skip the envelope check for these types); `_dispatch` checks
    # each one's signature before it can change anything, except a ballot that would change nothing
    # (`_redundant`): one after its quorum, or a duplicate. Plain votes are refused.
    lazy_messages: tuple[type, ...] = (Ballot,)

    def __init__(self, *, committee: Committee, node_id: int, signer: Signer, verifier: Verifier,
                 vrf: VrfProver, vrf_verifier: VrfVerifier, config: Config | None = None) -> None:
        cfg = config or Config()
        self.params = derive(committee.n, committee.f, committee.quorum, o=cfg.sample_factor,
                             quorum_factor=cfg.quorum_factor, liveness_miss=cfg.liveness_miss)
        super().__init__(committee=committee, node_id=node_id, signer=signer, verifier=verifier, config=cfg)
        self.book = SampleBook(committee, node_id, self.params, vrf, vrf_verifier)
        # (epoch, view, height) -> (digest, leader's header signature) first seen validly signed
        self.headers: dict[tuple[int, int, int], tuple[bytes, bytes]] = {}
        self.poisoned: set[tuple[int, int, int]] = set()  # heights with equivocation evidence, per view
        self.sent = dict.fromkeys(("propose", "prepare", "commit", "view_change", "checkpoint", "other"), 0)
        self.attempts = dict.fromkeys(PHASES, 0)  # phases we voted in (each waits for a quorum)
        self.achieved = dict.fromkeys(PHASES, 0)  # ... that gathered one
        self.failed = dict.fromkeys(PHASES, 0)  # ... that a view change ended before their quorum
        self.rejected: dict[str, int] = {}
        self.unchecked_dropped = 0  # ballots dropped as redundant before their signature was checked
        self.accepted_at: dict[int, float] = {}  # height -> when its block was accepted here (this view)
        self.finalized: deque[tuple[int, float]] = deque(maxlen=256)  # (height, accepted -> executed s)

    # ---- entry point: proposals go out as `Proposal`s; count what we send and reject ----
    def handle(self, now: float, input: Input) -> list[Output]:
        outs = super().handle(now, input)
        for i, out in enumerate(outs):
            if isinstance(out, Multicast):
                msg = out.message
                if isinstance(msg, PrePrepare):
                    got = self.headers.get((msg.epoch, msg.view, msg.block.height))
                    msg = Proposal(epoch=msg.epoch, view=msg.view, block=msg.block,
                                   header_signature=got[1] if got is not None else b"")
                    outs[i] = Multicast(to=out.to, message=msg)
                self.sent[_label(msg)] += len(out.to)
            elif isinstance(out, Rejected):
                self.rejected[out.reason] = self.rejected.get(out.reason, 0) + 1
        if len(self.headers) > 4 * self.config.window:
            floor = self.stable
            self.headers = {k: v for k, v in self.headers.items() if k[2] > floor}
            self.poisoned = {k for k in self.poisoned if k[2] > floor}
        return outs

    def _dispatch(self, now: float, sender: int, msg: Any, sig: bytes, outs: list[Output],
                  verified: bool = True) -> None:
        if isinstance(msg, Ballot):
            if not verified:
                if self._redundant(sender, msg):
                    self.unchecked_dropped += 1
                    return
                if not signed_by(self.verifier, sender, msg, sig):
                    outs.append(Rejected(peer=sender, reason="bad_signature"))
                    return
            self._on_ballot(now, sender, msg, sig, outs)
        elif isinstance(msg, Proposal):
            self._on_proposal(now, sender, msg, sig, outs)
        elif isinstance(msg, (Vote, PrePrepare)) or type(msg) is NewView:
            outs.append(Rejected(peer=sender, reason="unexpected_message", detail=type(msg).__name__))
        elif isinstance(msg, SignedNewView) and len(msg.header_signatures) != len(msg.proposals):
            outs.append(Rejected(peer=sender, reason="bad_new_view", detail="header signatures"))
        else:
            super()._dispatch(now, sender, msg, sig, outs)

    # ---- headers and equivocation evidence ----
    def _header_ok(self, epoch: int, view: int, height: int, dig: bytes, signature: bytes) -> bool:
        leader = self.primary(epoch, view)
        head = encode(header(epoch, view, height, dig))
        return self.verifier.verify(leader, signing_bytes(leader, head), signature)

    def _note_header(self, now: float, key: tuple[int, int, int], dig: bytes, signature: bytes,
                     sender: int, outs: list[Output]) -> str | None:
        """Record a validly signed header; a second digest for the same key proves equivocation."""
        known = self.headers.get(key)
        if known is None:
            self.headers[key] = (dig, signature)
            return None
        if known[0] == dig:
            return None if known[1] == signature else "header_mismatch"
        if key not in self.poisoned:
            self.poisoned.add(key)
            outs.append(Rejected(peer=self.primary(key[0], key[1]), reason="equivocation_evidence",
                                 detail=f"height {key[2]} from ballot of {sender}"))
            if key[:2] == (self.epoch, self.view) and self.mode is Mode.NORMAL:
                self.start_view_change(now, self.view + 1, outs)
        return "equivocation"

    # ---- proposals ----
    def _on_proposal(self, now: float, sender: int, msg: Proposal, sig: bytes, outs: list[Output]) -> None:
        if self._elsewhere(sender, msg, sig, outs):
            return
        key = (msg.epoch, msg.view, msg.block.height)
        dig = block_digest(msg.block)
        primary = self.primary(msg.epoch, msg.view)
        if sender != primary or not self._header_ok(*key, dig, msg.header_signature):
            outs.append(Rejected(peer=sender, reason="bad_header_signature"))
            if sender == primary and (msg.epoch, msg.view) == (self.epoch, self.view) and self.mode is Mode.NORMAL:
                # The envelope proves our primary sent a proposal whose header it did not sign (e.g. an
                # equivocator that changed the block): no correct leader does, so leave the view now
                # rather than a request timeout later (f + 1 such replicas pull in the rest).
                self.start_view_change(now, self.view + 1, outs)
            return
        if self._note_header(now, key, dig, msg.header_signature, sender, outs) is not None:
            return
        self._on_preprepare(now, sender, PrePrepare(epoch=msg.epoch, view=msg.view, block=msg.block), sig, outs)

    def _accept_block(self, now: float, block: Block, outs: list[Output]) -> None:
        key = (self.epoch, self.view, block.height)
        if (self.primary(self.epoch, self.view) == self.node_id and block.height > self.view_floor
                and key not in self.headers):  # our own new proposal (re-proposals': _new_view_message)
            dig = block_digest(block)
            self.headers[key] = (dig, self.sign(header(*key, dig)))
        self.accepted_at.setdefault(block.height, now)
        super()._accept_block(now, block, outs)

    # ---- view change: re-proposals carry the new leader's header signatures ----
    def _new_view_message(self, view: int, refs: tuple[ViewChangeRef, ...], blocks: tuple[Block, ...]) -> NewView:
        sigs = []
        for block in blocks:
            key, dig = (self.epoch, view, block.height), block_digest(block)
            self.headers[key] = (dig, self.sign(header(*key, dig)))
            sigs.append(self.headers[key][1])
        return SignedNewView(epoch=self.epoch, view=view, view_changes=refs,
                             proposals=tuple(block_digest(b) for b in blocks), header_signatures=tuple(sigs))

    def _enter_view(self, now: float, nv: NewView, proof: dict[int, SignedViewChange], blocks: tuple[Block, ...],
                    outs: list[Output]) -> None:
        primary = self.primary(nv.epoch, nv.view)
        forged = False
        if primary != self.node_id:  # (our own headers were recorded as we built the NEW-VIEW)
            sigs = nv.header_signatures if isinstance(nv, SignedNewView) else ()
            for block, sig in zip(blocks, sigs, strict=False):
                key, dig = (nv.epoch, nv.view, block.height), block_digest(block)
                if self._header_ok(*key, dig, sig):
                    self._note_header(now, key, dig, sig, primary, outs)
                else:
                    forged = True
        super()._enter_view(now, nv, proof, blocks, outs)
        if forged and self.mode is Mode.NORMAL and self.view == nv.view:
            # The primary signed a NEW-VIEW whose headers it did not sign: it is faulty, move on.
            outs.append(Rejected(peer=primary, reason="bad_header_signature", detail="new view"))
            self.start_view_change(now, nv.view + 1, outs)

    def after_execute(self, now: float, block: Block, cert: Certificate, outs: list[Output], replay: bool) -> None:
        accepted = self.accepted_at.pop(block.height, None)
        if accepted is not None and not replay:
            self.finalized.append((block.height, now - accepted))
        for h in [h for h in self.accepted_at if h <= block.height]:
            del self.accepted_at[h]
        super().after_execute(now, block, cert, outs, replay)

    def start_view_change(self, now: float, view: int, outs: list[Output]) -> None:
        if self.mode is Mode.NORMAL and view > self.view:  # this view's open phases end without quorum
            for h, slot in self.slots.items():
                if slot.view == self.view and h > self.height and h not in self.decided:
                    self.failed["commit" if slot.prepared else "prepare"] += 1
        super().start_view_change(now, view, outs)

    # ---- ballots ----
    def _cast(self, now: float, vote: Vote, outs: list[Output]) -> None:
        proof, sample = self.book.mine(vote.epoch, vote.view, vote.kind)
        head = b""
        if not (self.params.dense and vote.kind == "commit"):
            known = self.headers.get((vote.epoch, vote.view, vote.height))
            head = known[1] if known is not None and known[0] == vote.digest else b""
        ballot = Ballot(kind=vote.kind, epoch=vote.epoch, view=vote.view, height=vote.height, digest=vote.digest,
                        proof=proof, header_signature=head)
        if sample:
            outs.append(Multicast(to=sample, message=ballot))
        self.attempts[vote.kind] += 1
        self._record(now, self.node_id, vote, self._entry(self.sign(ballot), ballot), outs)

    def _entry(self, signature: bytes, b: Ballot) -> bytes:
        """What the tally keeps of a ballot for certificates (`quorum.py`): dense, the signature and the
        header signature (kept once per certificate by `_certificate`); sampled, the full entry."""
        if self.params.dense:
            return signature + b.header_signature
        return pack_entry(signature, self.node_id, b.header_signature, b.proof)

    def _check_ballot(self, now: float, sender: int, b: Ballot, outs: list[Output]) -> str | None:
        if b.kind not in PHASES:
            return "bad_vote_kind"
        sample = self.book.sample_of(sender, b.epoch, b.view, b.kind, b.proof)
        if isinstance(sample, str):
            return sample
        if self.node_id not in sample:
            return "outside_sample"
        if self.params.dense and b.kind == "commit":
            # Dense commit ballots carry no header: a correct node commits only after 2f + 1 prepares,
            # whose ballots carried the leader's header (docs/probft.md, "Dense mode without proofs").
            return "unexpected_header" if b.header_signature else None
        key = (b.epoch, b.view, b.height)
        if not b.header_signature:  # every proposal's header is signed, re-proposals' too (in the NEW-VIEW)
            return "missing_header"
        known = self.headers.get(key)
        if known is not None and known == (b.digest, b.header_signature):
            return None
        if not self._header_ok(*key, b.digest, b.header_signature):
            return "bad_header_signature"
        return self._note_header(now, key, b.digest, b.header_signature, sender, outs)

    def _redundant(self, sender: int, b: Ballot) -> bool:
        """True when `b`, validly signed, would change nothing that decides anything and output nothing, so
        its signature need not be checked: a ballot of the current view whose proof is the one we cached
        for its sender (its sample holding us) and whose header is the one we hold, that is a duplicate or
        outside our window (dropped silently), or comes after its quorum (the slot already prepared, resp.
        decided, for this digest: a later ballot is only tallied, and the certificate was taken at the
        quorum). With a bad signature the codec would have dropped it: nothing changes either.
        Reads only; at n = 7 it spares ~4 of the 12 ballot checks per block and node."""
        if (b.epoch, b.view) != (self.epoch, self.view) or self.mode is not Mode.NORMAL or b.kind not in PHASES:
            return False
        if not self.book.holds(sender, b.epoch, b.view, b.kind, b.proof):
            return False
        if self.params.dense and b.kind == "commit":
            if b.header_signature:
                return False
        elif self.headers.get((b.epoch, b.view, b.height)) != (b.digest, b.header_signature):
            return False
        vote = Vote(kind=b.kind, epoch=b.epoch, view=b.view, height=b.height, digest=b.digest)
        reason = self._check_vote(sender, vote)
        if reason is not None:
            return reason in ("duplicate", "outside_window")
        slot = self.slots.get(b.height)
        if slot is None or slot.view != b.view or slot.digest != b.digest:
            return False
        return slot.prepared if b.kind == "prepare" else b.height in self.decided

    def _on_ballot(self, now: float, sender: int, b: Ballot, sig: bytes, outs: list[Output]) -> None:
        if self._elsewhere(sender, b, sig, outs) or self.mode is not Mode.NORMAL:
            return
        reason = self._check_ballot(now, sender, b, outs)
        if reason == "equivocation":
            return  # reported by _note_header
        vote = Vote(kind=b.kind, epoch=b.epoch, view=b.view, height=b.height, digest=b.digest)
        if reason is None:
            reason = self._check_vote(sender, vote)
        if reason is not None:
            if reason not in ("duplicate", "outside_window"):
                outs.append(Rejected(peer=sender, reason=reason))
            return
        self._record(now, sender, vote, self._entry(sig, b), outs)

    # ---- quorums ----
    def _progress(self, now: float, h: int, outs: list[Output]) -> None:
        slot = self.slots.get(h)
        if slot is None or slot.view != self.view or (self.epoch, self.view, h) in self.poisoned:
            return
        q = self.params.quorum
        if not slot.prepared and self._count("prepare", h, slot) >= q:
            slot.prepared = True
            self.achieved["prepare"] += 1
            self.prepared[h] = Prepared(block=slot.block, certificate=self._certificate("prepare", h, slot))
        if slot.prepared and not slot.sent_commit:
            slot.sent_commit = True
            self._cast(now, Vote(kind="commit", epoch=self.epoch, view=self.view, height=h, digest=slot.digest), outs)
            return  # _cast re-entered _progress for our own commit ballot
        if slot.prepared and h not in self.decided and self._count("commit", h, slot) >= q:
            self.achieved["commit"] += 1
            self.decided[h] = (slot.block, self._certificate("commit", h, slot))
            self._execute_ready(now, outs)

    def _certificate(self, kind: str, h: int, slot: Slot) -> Certificate:
        tally = self.votes[(kind, slot.view, h)][slot.digest]
        signers = tuple(sorted(tally))[: self.params.quorum]
        entries = [tally[s] for s in signers]
        return Certificate(kind=kind, epoch=self.epoch, view=slot.view, height=h, digest=slot.digest,
                           signers=signers, signatures=dense_entries(entries) if self.params.dense else tuple(entries))

    def _valid_prepared(self, vc: ViewChange, p: Prepared, end: int | None) -> bool:
        b, c = p.block, p.certificate
        return (
            c.epoch == vc.epoch == b.epoch and c.view < vc.view
            and c.height == b.height > vc.height and (end is None or b.height <= end)
            and c.digest == block_digest(b)
            and self.book.check_certificate(c, self.verifier, self.primary)
        )

    def verify_certificate(self, height: int, block: Block, certificate: Certificate) -> bool:
        return (
            certificate.kind == "commit" and certificate.height == height == block.height
            and certificate.digest == block_digest(block)
            and self.book.check_certificate(certificate, self.verifier, self.primary)
        )

    def status(self) -> dict[str, Any]:
        out = super().status()
        out.update({
            "sample_size": self.params.sample_size, "quorum": self.params.quorum, "dense": self.params.dense,
            "messages_sent": dict(self.sent), "quorum_attempts": dict(self.attempts),
            "quorum_achieved": dict(self.achieved), "quorum_failed": dict(self.failed),
            "finalized": list(self.finalized), "vrf_proofs_verified": self.book.proofs_verified,
            "ballots_dropped_unchecked": self.unchecked_dropped,
            "rejected": dict(self.rejected), "predicted": predict(self.params),
        })
        return out
