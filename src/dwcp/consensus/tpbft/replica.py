"""T-PBFT replica: PBFT run by a consensus group that EigenTrust re-chooses every epoch.

It changes only PBFT's hooks (who votes, who leads, what goes in a block, what happens after
execution); every phase rule, quorum and the view change are `pbft.Replica`'s. The rules, their
fault threshold and why group changes are safe are written out in docs/tpbft.md. In short:

| hook              | T-PBFT rule                                                                    |
|-------------------|--------------------------------------------------------------------------------|
| ranking(e)        | committee by global trust after epoch e-1's last block, ties to the lower id;  |
|                   | that block's proposer first if trust keeps it in the top k (it leads on);      |
|                   | the primaries of the views e-1's committed blocks prove changed never lead e   |
| proposing         | PBFT's, but an epoch's last height only once every earlier one is executed     |
| group(0, v)       | the whole committee (measurement epoch): everyone votes, so everyone's         |
|                   | timeliness is measured and the first real group is the most responsive one     |
| group(e, v)       | top `group_size` of ranking(e) without the primaries views 0..v-1 deposed      |
|                   | (the whole committee once fewer than `group_size` are left)                    |
| voters(e, v)      | the whole committee: votes and view changes count from anyone (quorum q of n)  |
| vote_targets      | the group; the whole committee at a widened height (standby.py)                |
| handle            | also takes `TrustReport`s, notes vote arrivals and completed view changes, and |
|                   | widens heights on standby signals (standby.py)                                 |
| primary(e, v)     | ranking(e)[v mod n]; the primary group is ranking(e)[:f+1], the primaries of   |
|                   | views 0..f, which always holds a correct node                                  |
| observe           | invalid/conflict lower the sender's local trust; timeliness is judged per      |
|                   | height: a group vote in time for our quorum +1, late or missing -1; a primary  |
|                   | replaced by a view change is "deposed"                                         |
| block_meta        | the primary's pending signed trust reports (TrustMeta)                         |
| check_meta        | stateless: decodes, reporters sorted and unique, shapes valid, signatures good |
| after_execute     | apply committed reports; push `Decided` to followers; send our report in the   |
|                   | middle of the epoch; at the epoch's last block recompute trust and ranking     |

Trust is a function of committed blocks only, so every correct node ranks the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dwcp.consensus.core.committee import Committee
from dwcp.consensus.core.crypto import Signer, Verifier
from dwcp.consensus.core.inputs import Input, Received, Timer
from dwcp.consensus.core.messages import Block, Certificate, Decided, Vote
from dwcp.consensus.core.outputs import Multicast, Output, Rejected
from dwcp.consensus.core.protocol import LocalProtocolError
from dwcp.consensus.pbft import Config as PbftConfig
from dwcp.consensus.pbft import Replica as PbftReplica
from dwcp.consensus.pbft.messages import NewView, PrePrepare, SignedViewChange
from dwcp.consensus.tpbft.messages import (
    SignedReport,
    TrustReport,
    check_report,
    decode_meta,
    encode_meta,
    report_signed,
)
from dwcp.consensus.tpbft.standby import STANDBY, StandbyMixin
from dwcp.consensus.tpbft.trust import EVENT_WEIGHTS, Opinions, TrustTable, ranking

VOTE_KINDS = ("prepare", "commit")
MAX_SEEN = 4  # (kind, digest) arrivals remembered per voter and height
KEPT_RANKINGS = 4  # epochs of rankings kept (the current one, and older ones for late evaluations)


@dataclass(frozen=True, kw_only=True)
class Config(PbftConfig):
    epoch_length: int = 32  # blocks per epoch: the group is re-chosen after each epoch's last block
    group_size: int | None = None  # None: default_group_size(committee)
    damping: float = 0.15  # EigenTrust a: share of trust always given to the pre-trusted set
    pre_trusted: tuple[int, ...] = ()  # empty: the whole committee
    prior: int = 1  # added to every reported local trust (unseen peers beat misbehaving ones)
    late_after: float = 0.5  # a vote arriving this long after we executed its block is late
    evaluation_lag: int = 0  # judge height h once h + lag executed (0: min(max_inflight, epoch_length // 8))
    standby_after: float = 0.3  # a group member widens a height still undecided this long after its block
    standby_sticky_after: int = 1  # ... and, past this many widened heights in one view, every later one at once
    measurement_epoch: bool = True  # epoch 0: the whole committee votes (group chosen from measured timeliness)
    # A primary deposed in epoch e does not lead e+1: e's last height is proposed alone (once every earlier one is
    # executed), and the primaries of views e's committed blocks prove replaced leave e+1's primary group.
    # The incumbent leads on only while in the primary group (top k; False: top g, the rules before).
    fresh_incumbent: bool = True
    accepted_grace: int = 1  # extra request timeouts for a tx whose block waits for votes (standby.py; 0: off)


def default_group_size(committee: Committee) -> int:
    """Quorum plus a margin of max(1, f // 2) members (capped at n): the group then stays live with
    that many silent members without falling back to the whole committee."""
    return min(committee.n, committee.quorum + max(1, committee.f // 2))


class Replica(StandbyMixin, PbftReplica):
    protocol = "tpbft"

    def __init__(self, *, committee: Committee, node_id: int, signer: Signer, verifier: Verifier,
                 config: Config | None = None) -> None:
        cfg = config or Config()
        g = cfg.group_size or default_group_size(committee)
        if not committee.quorum <= g <= committee.n:
            raise LocalProtocolError(f"group_size {g} must be between quorum {committee.quorum} and n={committee.n}")
        if cfg.epoch_length <= 0:
            raise LocalProtocolError("T-PBFT needs epoch_length > 0 (the group is re-chosen per epoch)")
        self.group_size = g
        self.primary_group_size = min(g, committee.f + 1)  # primaries of views 0..f: one is correct
        self.table = TrustTable(committee.ids, damping=cfg.damping, pre_trusted=cfg.pre_trusted, prior=cfg.prior)
        self.opinions = Opinions(node_id, committee.ids)
        self.trust = self.table.global_trust()  # no reports yet: the pre-trusted vector
        self.rankings: dict[int, tuple[int, ...]] = {0: ranking(self.trust)}
        self.reported: dict[int, int] = {}  # reporter -> epoch of its latest applied report
        self.pending_reports: dict[int, SignedReport] = {}  # received, not yet committed
        # height -> voter -> (kind, digest) -> first arrival (at most MAX_SEEN keys per voter and height)
        self.seen: dict[int, dict[int, dict[tuple[str, bytes], float]]] = {}
        self.to_judge: dict[int, tuple[tuple[int, ...], bytes, float]] = {}  # height -> (voters, digest, executed)
        # Judge soon enough that the mid-epoch report holds this epoch's first heights: an eighth of an epoch.
        self.lag = cfg.evaluation_lag or min(cfg.max_inflight, max(1, cfg.epoch_length // 8))
        self._groups: dict[tuple[int, int], tuple[int, ...]] = {}  # (epoch, view) -> group, see `group`
        self.top_view = 0  # highest `view` of a block executed in the current epoch (committed data)
        self._init_standby()
        super().__init__(committee=committee, node_id=node_id, signer=signer, verifier=verifier, config=cfg)

    # ---- who votes and who leads ----
    def ranking(self, epoch: int) -> tuple[int, ...]:
        """Committee ids, most trusted first, as chosen for `epoch`. An epoch we have not reached
        yet gets the newest ranking; the base only buffers such messages and re-checks on entry."""
        r = self.rankings.get(epoch)
        return r if r is not None else self.rankings[max(self.rankings)]

    def group(self, epoch: int, view: int) -> tuple[int, ...]:
        # A view change replaces the group's failed primaries, not the group: the members that stayed
        # silent are covered by standby voting now and lose trust for the next epoch, and view changes
        # count from the whole committee (`voters`), so a group with many faulty members cannot stall it.
        known = self._groups.get((epoch, view))
        if known is not None:
            return known
        r = self.ranking(epoch)
        if epoch == 0 and self.config.measurement_epoch:
            group = r
        else:
            deposed = self.deposed(epoch, view)
            rest = tuple(i for i in r if i not in deposed)
            group = rest[: self.group_size] if len(rest) >= self.group_size else r
        if len(self._groups) > 4 * KEPT_RANKINGS:
            self._groups.clear()
        self._groups[(epoch, view)] = group  # asked several times per message; cleared with each new ranking
        return group

    def voters(self, epoch: int, view: int) -> tuple[int, ...]:
        return self.committee.ids

    def primary(self, epoch: int, view: int) -> int:
        r = self.ranking(epoch)
        return r[view % len(r)]

    def primary_group(self, epoch: int) -> tuple[int, ...]:
        return self.ranking(epoch)[: self.primary_group_size]

    # ---- observations ----
    def observe(self, peer: int, event: str) -> None:
        # "timely" is not counted here: _judge credits each group member once per height and vote
        # kind, from the votes we saw, and blames the missing and late ones as well.
        if event != "timely" and event in EVENT_WEIGHTS:
            self.opinions.observe(peer, event)

    def handle(self, now: float, input: Input) -> list[Output]:
        widened: list[Output] = []  # what widening a height sends, before the message is handled
        if isinstance(input, Received) and input.sender in self.committee and input.sender != self.node_id:
            msg = input.message
            if isinstance(msg, TrustReport):
                outs: list[Output] = []
                self._on_trust_report(input.sender, msg, input.signature, outs)
                return outs
            if isinstance(msg, Vote):
                self._note_vote(now, input.sender, msg)
                self._on_standby_signal(now, input.sender, msg.epoch, msg.view, msg.height, widened)
            elif isinstance(msg, PrePrepare):
                self._on_standby_signal(now, input.sender, msg.epoch, msg.view, msg.block.height, widened)
        epoch, view = self.epoch, self.view
        outs = widened + super().handle(now, input)
        if self.epoch == epoch and self.view > view:  # a view change completed: its primaries failed
            # Weighted as missing both votes of a whole epoch: a deposed primary must not win the lead
            # back within a few epochs on timely votes alone (which earn up to 2 per height).
            for v in range(max(view, self.view - self.committee.n), self.view):
                self.opinions.observe(self.primary(epoch, v), "deposed", times=2 * self.config.epoch_length // 5)
        return outs

    def _enter_epoch(self, now: float, epoch: int, outs: list[Output], replay: bool) -> None:
        self._reset_standby()  # before the new epoch's buffered messages are replayed
        self.top_view = 0
        super()._enter_epoch(now, epoch, outs, replay)

    def _enter_view(self, now: float, nv: NewView, proof: dict[int, SignedViewChange], blocks: tuple[Block, ...],
                    outs: list[Output]) -> None:
        self._reset_standby()
        super()._enter_view(now, nv, proof, blocks, outs)

    def may_propose(self, height: int) -> bool:
        """`fresh_incumbent`: the epoch's last height waits until every earlier one is executed, so a primary
        replaced before then never proposes it: the next epoch's incumbent is the one that replaced it."""
        end = self.epoch_end(self.epoch)
        return not (self.config.fresh_incumbent and height == end and self.height < height - 1)

    def _accept_block(self, now: float, block: Block, outs: list[Output]) -> None:
        super()._accept_block(now, block, outs)
        self._note_accepted(now, block.height, outs)

    def _on_timer(self, now: float, timer: Timer, outs: list[Output]) -> None:
        if timer == STANDBY:
            self._on_standby_timer(now, outs)
        else:
            super()._on_timer(now, timer, outs)

    def _note_vote(self, now: float, sender: int, v: Vote) -> None:
        """Remember when each voter's first vote of each kind and digest arrived, for heights not yet judged."""
        if v.kind in VOTE_KINDS and self.height - self.lag < v.height <= self.height + self.config.window:
            mine = self.seen.setdefault(v.height, {}).setdefault(sender, {})
            if len(mine) < MAX_SEEN or (v.kind, v.digest) in mine:
                mine.setdefault((v.kind, v.digest), now)

    def _judge(self, now: float, block: Block, cert: Certificate) -> None:
        """Schedule this height's judgement, and judge heights `lag` blocks old."""
        group = self.committee.ids if block.height in self.widened else self.group(cert.epoch, cert.view)
        if self.node_id in group:  # a widened height judges the followers that stepped in, too
            self.to_judge[block.height] = (tuple(m for m in group if m != self.node_id), cert.digest, now)
        done = block.height - self.lag
        for h in sorted(h for h in self.to_judge if h <= done):
            voters, dig, executed = self.to_judge.pop(h)
            seen = self.seen.get(h, {})
            if len(seen) < self.committee.quorum - 1:
                continue  # we did not take part (cut off, or caught up): do not blame the others
            for m in voters:
                for kind in VOTE_KINDS:
                    t = seen.get(m, {}).get((kind, dig))  # a vote for another block earns nothing
                    if t is None:
                        self.opinions.observe(m, "missing")
                    elif t <= executed:  # in time to count towards our quorum
                        self.opinions.observe(m, "timely")
                    elif t > executed + self.config.late_after:
                        self.opinions.observe(m, "late")
                    # else: after our quorum but not late: neither credit nor blame
        for h in [h for h in self.seen if h <= done]:
            del self.seen[h]

    # ---- trust reports ----
    def _report_height(self, epoch: int) -> int:
        length = self.config.epoch_length
        return epoch * length + max(1, length // 2)

    def _send_report(self, outs: list[Output]) -> None:
        peers, sat, unsat = self.opinions.snapshot()
        report = TrustReport(epoch=self.epoch, peers=peers, sat=sat, unsat=unsat)
        group = self.group(self.epoch, self.view)
        outs.append(Multicast(to=self._others(group), message=report))
        if self.node_id in group:
            self._keep_report(SignedReport(reporter=self.node_id, signature=self.sign(report), report=report))

    def _check_trust_report(self, sender: int, report: TrustReport) -> str | None:
        if not self.epoch - 1 <= report.epoch <= self.epoch + 1:
            return "report_epoch"
        return check_report(self.committee, sender, report)

    def _on_trust_report(self, sender: int, report: TrustReport, sig: bytes, outs: list[Output]) -> None:
        reason = self._check_trust_report(sender, report)
        if reason is not None:
            if reason != "report_epoch":  # a lagging correct node may send an old one
                self.observe(sender, "invalid")
            outs.append(Rejected(peer=sender, reason=reason))
            return
        signed = SignedReport(reporter=sender, signature=sig, report=report)
        if not report_signed(self.verifier, signed):
            # The envelope was signed over bytes that do not re-encode to this report (a non-canonical
            # encoding): carried in a block it would fail everyone's check_meta, so drop it here.
            self.observe(sender, "invalid")
            outs.append(Rejected(peer=sender, reason="bad_report_signature"))
            return
        known = self.pending_reports.get(sender)
        if known is not None and known.report.epoch == report.epoch and known.report != report:
            self.observe(sender, "conflict")
            outs.append(Rejected(peer=sender, reason="conflicting_report"))
            return
        self._keep_report(signed)

    def _keep_report(self, signed: SignedReport) -> None:
        r, epoch = signed.reporter, signed.report.epoch
        known = self.pending_reports.get(r)
        if epoch > self.reported.get(r, -1) and (known is None or known.report.epoch < epoch):
            self.pending_reports[r] = signed

    def block_meta(self, height: int) -> bytes:
        """Every pending report that check_meta accepts in this epoch goes into our next proposal,
        once (the other group members keep their copies until the reports commit, so a failed
        proposal loses nothing for good). Older reports are dropped, newer ones wait."""
        usable = {r: s for r, s in self.pending_reports.items() if s.report.epoch <= self.epoch}
        self.pending_reports = {r: s for r, s in self.pending_reports.items() if s.report.epoch > self.epoch}
        reports = tuple(usable[r] for r in sorted(usable)
                        if usable[r].report.epoch >= self.epoch - 1
                        and usable[r].report.epoch > self.reported.get(r, -1))
        return encode_meta(reports)

    def check_meta(self, block: Block) -> str | None:
        """Stateless, so every correct node gives the same answer for the same block."""
        if not block.meta:
            return None
        meta = decode_meta(block.meta)
        if meta is None or not meta.reports or len(meta.reports) > self.committee.n:
            return "bad_meta"
        reporters = [s.reporter for s in meta.reports]
        if any(a >= b for a, b in zip(reporters, reporters[1:], strict=False)):
            return "bad_meta"
        for s in meta.reports:
            if not block.epoch - 1 <= s.report.epoch <= block.epoch:
                return "report_epoch"
            if check_report(self.committee, s.reporter, s.report) is not None:
                return "bad_report"
            if not report_signed(self.verifier, s):
                return "bad_report_signature"
        return None

    def _apply_reports(self, block: Block) -> None:
        """Committed reports replace their reporter's row, newest epoch wins; each is applied at
        most once. Only committed data is used, so this is the same on every correct node."""
        meta = decode_meta(block.meta) if block.meta else None
        for s in meta.reports if meta is not None else ():
            r, report = s.reporter, s.report
            if report.epoch <= self.reported.get(r, -1) or report.epoch > block.epoch:
                continue
            if check_report(self.committee, r, report) is not None:
                continue  # cannot be in a certified block (correct voters check it); skip defensively
            self.table.set_row(r, report.peers, report.sat, report.unsat)
            self.reported[r] = report.epoch
            known = self.pending_reports.get(r)
            if known is not None and known.report.epoch <= report.epoch:
                del self.pending_reports[r]

    # ---- execution ----
    def after_execute(self, now: float, block: Block, cert: Certificate, outs: list[Output], replay: bool) -> None:
        self._apply_reports(block)
        if block.epoch == self.epoch:
            self.top_view = max(self.top_view, block.view)
        if not replay:
            self._judge(now, block, cert)
            self._push_decided(block, cert, outs)
            if block.height == self._report_height(self.epoch):
                self._send_report(outs)
        self.widened.discard(block.height)
        self.accepted_at.pop(block.height, None)
        end = self.epoch_end(self.epoch)
        if end is not None and block.height >= end:
            self._choose_group(self.epoch + 1, block.proposer)
            if not replay:
                self.opinions.decay()
        super().after_execute(now, block, cert, outs, replay)  # enters the next epoch

    def _push_decided(self, block: Block, cert: Certificate, outs: list[Output]) -> None:
        """Followers (committee members outside the group) learn commits from the first
        g - q + 1 group members by rank: at least one of them is correct whenever the group is live."""
        group = self.group(cert.epoch, cert.view)
        senders = group[: len(group) - self.committee.quorum + 1]
        if self.node_id in senders:
            followers = tuple(i for i in self.committee.ids if i not in group)
            if followers:
                outs.append(Multicast(to=followers, message=Decided(block=block, certificate=cert)))

    def _choose_group(self, epoch: int, incumbent: int) -> None:
        """ranking(epoch) by trust, except that the proposer of the previous epoch's last block (the
        primary that was leading when it ended) leads on if trust keeps it in the group: a primary
        that commits is not replaced for ranking second, which would risk a view change for nothing.
        With `fresh_incumbent`, the incumbent leads on only while trust keeps it in the primary group
        (top k, not top g), and the primaries of the views 0..v-1 of the previous epoch, where v is the
        highest view of its committed blocks, are deposed: none of them leads on, and they are moved
        behind the first k others (out of the primary group; they may still vote)."""
        self.trust = self.table.global_trust()
        order = ranking(self.trust)
        fresh = self.config.fresh_incumbent
        deposed = self.deposed(epoch - 1, self.top_view) if fresh else frozenset()
        keep = self.primary_group_size if fresh else self.group_size  # fresh: leads on from the top k only
        if incumbent in order[:keep] and incumbent not in deposed:
            order = (incumbent, *(i for i in order if i != incumbent))
        if deposed and len(deposed) < len(order):
            head = [i for i in order if i not in deposed][: self.primary_group_size]
            if head != list(order[: len(head)]):
                order = (*head, *(i for i in order if i not in head))
        self.rankings[epoch] = order
        self._groups.clear()  # an epoch not ranked yet was answered with the newest ranking
        for old in [e for e in self.rankings if e <= epoch - KEPT_RANKINGS]:
            del self.rankings[old]

    def deposed(self, epoch: int, view: int) -> frozenset[int]:
        """The primaries of views 0..view-1 of `epoch`, which reaching `view` replaced (`group`: the current
        view; `_choose_group`: the highest view of the epoch's executed blocks, committed data only)."""
        r = self.ranking(epoch)
        return frozenset(r[u % len(r)] for u in range(min(view, len(r))))

    def status(self) -> dict[str, Any]:
        out = super().status()
        out.update({
            "group": list(self.group(self.epoch, self.view)),
            "primary_group": list(self.primary_group(self.epoch)),
            "group_member": self.node_id in self.group(self.epoch, self.view),
            "trust": {node: self.trust[node] for node in self.committee.ids},
            "committed_height": self.height,
            "widened_heights": self.widenings,
        })
        return out
