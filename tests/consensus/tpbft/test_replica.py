"""T-PBFT replicas on a LocalNet: group voting, followers, trust-driven group changes, view changes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from dwcp.consensus.core import Codec, Restored, Submitted, Transaction, Vote
from dwcp.consensus.core.codec import block_digest
from dwcp.consensus.core.messages import Block, Certificate
from dwcp.consensus.core.protocol import LocalProtocolError
from dwcp.consensus.pbft.messages import PrePrepare
from dwcp.consensus.tpbft import MESSAGES, Config, Replica, TrustReport, default_group_size
from dwcp.consensus.tpbft.messages import SignedReport, encode_meta
from dwcp.consensus.tpbft.trust import ranking
from tests.consensus.conftest import Keys, LocalNet

FAST = Config(batch_size=1, epoch_length=8, evaluation_lag=1, measurement_epoch=False)  # group from epoch 0


def make_net(keys: Keys, config: Config = FAST) -> LocalNet:
    cores = {i: Replica(committee=keys.committee, node_id=i, signer=keys.signers[i], verifier=keys.verifier,
                        config=config) for i in keys.committee.ids}
    return LocalNet(cores=cores, keys=keys, codec=Codec(MESSAGES))


def tick(net: LocalNet, dt: float, rounds: int = 20) -> None:
    """Advance the clock by `dt` and fire every due timer (and what they cause) until quiet."""
    net.now += dt
    for _ in range(rounds):
        due = [(n, t) for n, ts in net.timers.items() if n not in net.down for t, at in ts.items() if at <= net.now]
        if not due:
            return
        for node, timer in due:
            net.fire(node, timer)
        net.run()


def submit(net: LocalNet, node: int, payload: bytes) -> None:
    net.feed(node, Submitted(tx=Transaction(payload=payload)))
    net.run()
    tick(net, 0.01)  # gossip and batch timers


def votes_sent(net: LocalNet, node: int) -> list[Any]:
    return [o for o in net.outputs.get(node, []) if isinstance(getattr(o, "message", None), Vote)]


def committed(net: LocalNet, node: int) -> list[bytes]:
    return [c.certificate.digest for c in net.commits.get(node, [])]


def test_default_group_leaves_followers_outside(committee: Callable[..., Keys]) -> None:
    keys = committee(n=10)
    assert default_group_size(keys.committee) == 8  # quorum 7 + 1
    r = make_net(keys).cores[0]
    assert r.group(0, 0) == (0, 1, 2, 3, 4, 5, 6, 7)
    assert r.primary_group(0) == (0, 1, 2, 3)  # f + 1 = 4 candidate primaries
    assert [r.primary(0, v) for v in range(5)] == [0, 1, 2, 3, 4]
    # A view change deposes the primary, not the group: the next most trusted node takes its seat ...
    assert r.group(0, 1) == (1, 2, 3, 4, 5, 6, 7, 8)
    # ... until fewer than g nodes are left that have not been deposed: then everyone votes.
    assert r.group(0, 7) == keys.committee.ids
    measuring = Replica(committee=keys.committee, node_id=0, signer=keys.signers[0], verifier=keys.verifier)
    assert measuring.group(0, 0) == keys.committee.ids  # by default epoch 0 measures everyone


def test_group_commits_and_followers_commit_the_same_block(committee: Callable[..., Keys]) -> None:
    net = make_net(committee(n=10))
    submit(net, 9, b"tx-from-a-follower")  # gossiped to the group, proposed by primary 0
    assert set(net.heights().values()) == {1}
    assert len({tuple(committed(net, n)) for n in net.cores}) == 1
    assert net.commits[8][0].txs == (Transaction(payload=b"tx-from-a-follower"),)
    for follower in (8, 9):
        assert votes_sent(net, follower) == []  # followers verify certificates, they never vote
        assert not any(isinstance(o.message, PrePrepare) for o in net.outputs[follower] if hasattr(o, "message"))
    for member in range(8):
        assert votes_sent(net, member)
    assert all(net.cores[n].status()["group_member"] is (n < 8) for n in net.cores)


@pytest.mark.parametrize("fault", ["silent", "double_vote"])
def test_misbehaving_member_leaves_the_group_next_epoch(committee: Callable[..., Keys], fault: str) -> None:
    keys = committee(n=10)
    net = make_net(keys)
    bad = 3
    correct = [n for n in net.cores if n != bad]
    if fault == "silent":
        net.down.add(bad)
    for h in range(1, 9):
        net.feed(0, Submitted(tx=Transaction(payload=b"tx%d" % h)))
        if fault == "double_vote":  # a prepare for another block at the same height, to everyone
            forged = Vote(kind="prepare", epoch=0, view=0, height=h, digest=b"\x01" * 32)
            for to in correct:
                net.queue.append((bad, to, net.codec.seal(keys.signers[bad], forged)))
        net.run()
    assert all(net.heights()[n] == 8 for n in correct)
    assert all(net.cores[n].epoch == 1 for n in correct)
    # The trust reports travelled in committed blocks only.
    metas = [c.block.meta for c in net.commits[0]]
    assert any(metas) and not any(metas[:4])
    rankings = {net.cores[n].ranking(1) for n in correct}
    trusts = {tuple(net.cores[n].status()["trust"].items()) for n in correct}
    assert len(rankings) == 1 and len(trusts) == 1  # bit-identical on every correct node
    (rank,) = rankings
    assert rank[-1] == bad
    group = net.cores[0].group(1, 0)
    assert bad not in group and 8 in group and len(group) == 8
    assert all(net.cores[n].status()["group"] == list(group) for n in correct)
    # The new group keeps committing, and the evicted node no longer counts as a voter.
    net.feed(0, Submitted(tx=Transaction(payload=b"epoch-1")))
    net.run()
    tick(net, 0.01)
    assert all(net.heights()[n] == 9 for n in correct)
    assert votes_sent(net, 8)  # promoted follower votes now


PRE = Config(batch_size=1, epoch_length=8, evaluation_lag=1, pre_trusted=(2, 3, 4, 5, 6, 7, 8, 9),
             measurement_epoch=False)


def test_view_change_rotates_the_primary_within_the_group(committee: Callable[..., Keys]) -> None:
    net = make_net(committee(n=10), PRE)  # ranking 2..9, 0, 1: PBFT would pick 0 and then 1
    r = net.cores[0]
    assert r.group(0, 0) == (2, 3, 4, 5, 6, 7, 8, 9) and r.primary(0, 0) == 2
    net.down.add(2)  # primary of view 0
    submit(net, 0, b"needs-a-new-primary")  # from a follower
    assert net.heights()[3] == 0
    tick(net, 1.5)  # node 0's request timer: it retransmits the tx to the whole group (no view change yet)
    assert all(net.cores[n].view == 0 for n in net.cores)
    tick(net, 1.5)  # now the whole group has held it for a request timeout: view change to view 1
    live = [n for n in net.cores if n != 2]
    for n in live:
        st = net.cores[n].status()
        assert (st["view"], st["primary"], st["mode"]) == (1, 3, "normal")
        assert st["group"] == [3, 4, 5, 6, 7, 8, 9, 0]  # still a group of 8: the deposed primary left it
        assert st["primary_group"] == [2, 3, 4, 5]
    assert all(net.heights()[n] == 1 for n in live)
    assert net.commits[1][0].block.proposer == 3
    # "deposed" (view 0's primary): 5 x (2L // 5) ~ 2L, as if it had missed every vote of an epoch (L = 8)
    assert all(net.cores[n].opinions.unsat[2] == 5 * (2 * 8 // 5) for n in live)
    assert all(net.cores[n].ranking(0)[:4] == (2, 3, 4, 5) for n in live)


def test_stalled_group_falls_back_to_the_whole_committee(committee: Callable[..., Keys]) -> None:
    net = make_net(committee(n=10), PRE)
    net.down.update({2, 3, 4})  # 5 live group members < quorum 7: no group view can commit
    submit(net, 0, b"liveness")
    for _ in range(8):
        tick(net, 5.0)
        if net.heights()[0]:
            break
    live = [n for n in net.cores if n not in net.down]
    assert all(net.heights()[n] == 1 for n in live)
    st = net.cores[0].status()
    assert st["view"] == 3 and st["primary"] == 5  # the primaries of views 1 and 2 (3, 4) are down too
    assert len(st["group"]) == 10
    assert votes_sent(net, 1)  # a follower of view 0 voted


def test_restarted_node_recomputes_the_same_groups_from_its_log(committee: Callable[..., Keys]) -> None:
    keys = committee(n=10)
    net = make_net(keys)
    net.down.add(5)
    for h in range(1, 10):
        net.feed(0, Submitted(tx=Transaction(payload=b"r%d" % h)))
        net.run()
    fresh = Replica(committee=keys.committee, node_id=1, signer=keys.signers[1], verifier=keys.verifier, config=FAST)
    for c in net.commits[1]:
        fresh.handle(net.now, Restored(height=c.height, block=c.block, certificate=c.certificate))
    assert fresh.epoch == net.cores[1].epoch == 1
    assert fresh.ranking(1) == net.cores[1].ranking(1)
    assert fresh.trust == net.cores[1].trust
    assert 5 not in fresh.group(1, 0)


def test_check_meta_rejects_forged_and_malformed_reports(committee: Callable[..., Keys]) -> None:
    from dwcp.consensus.core import Block
    from dwcp.consensus.tpbft.messages import SignedReport, encode_meta

    keys = committee(n=4)
    r = make_net(keys).cores[0]
    report = TrustReport(epoch=0, peers=(0, 2, 3), sat=(1, 2, 3), unsat=(0, 0, 0))
    good = SignedReport(reporter=1, signature=keys.signers[1].sign(_signing(1, report)), report=report)
    forged = SignedReport(reporter=1, signature=keys.signers[2].sign(_signing(1, report)), report=report)

    def block(meta: bytes, epoch: int = 0) -> Block:
        return Block(height=1, epoch=epoch, view=0, proposer=0, meta=meta)

    assert r.check_meta(block(b"")) is None
    assert r.check_meta(block(encode_meta((good,)))) is None
    assert r.check_meta(block(encode_meta((forged,)))) == "bad_report_signature"
    assert r.check_meta(block(encode_meta((good,)), epoch=2)) == "report_epoch"
    assert r.check_meta(block(encode_meta((good, good)))) == "bad_meta"
    assert r.check_meta(block(b"\x93garbage")) == "bad_meta"
    about_self = TrustReport(epoch=0, peers=(1,), sat=(5,), unsat=(0,))
    signed = SignedReport(reporter=1, signature=keys.signers[1].sign(_signing(1, about_self)), report=about_self)
    assert r.check_meta(block(encode_meta((signed,)))) == "bad_report"


def _signing(sender: int, msg: Any) -> bytes:
    from dwcp.consensus.core import encode, signing_bytes

    return signing_bytes(sender, encode(msg))


def test_conflicting_forged_and_malformed_trust_reports_are_rejected(committee: Callable[..., Keys]) -> None:
    from dwcp.consensus.core import Received

    keys = committee(n=4)
    r = make_net(keys).cores[0]

    def received(sender: int, report: TrustReport, signed_as: TrustReport | None = None) -> Received:
        sig = keys.signers[sender].sign(_signing(sender, signed_as or report))
        return Received(sender=sender, message=report, signature=sig)

    a = TrustReport(epoch=0, peers=(0, 2), sat=(1, 1), unsat=(0, 0))
    b = TrustReport(epoch=0, peers=(0, 2), sat=(9, 1), unsat=(0, 0))
    assert r.handle(0.0, received(1, a)) == []
    (rej,) = r.handle(0.0, received(1, b))
    assert rej.reason == "conflicting_report"
    (rej,) = r.handle(0.0, received(2, TrustReport(epoch=0, peers=(2,), sat=(1,), unsat=(0,))))
    assert rej.reason == "bad_report"
    (rej,) = r.handle(0.0, received(3, a, signed_as=b))  # signature over other bytes (non-canonical encoding)
    assert rej.reason == "bad_report_signature"
    (rej,) = r.handle(0.0, received(3, TrustReport(epoch=5, peers=(0,), sat=(1,), unsat=(0,))))
    assert rej.reason == "report_epoch"  # not blamed: a lagging or leading correct node can send one
    assert (r.opinions.unsat[1], r.opinions.unsat[2], r.opinions.unsat[3]) == (10, 2, 2)


def test_block_meta_carries_only_reports_the_block_may_hold(committee: Callable[..., Keys]) -> None:
    from dwcp.consensus.core import Block
    from dwcp.consensus.tpbft.messages import SignedReport, decode_meta

    keys = committee(n=4)
    r = make_net(keys).cores[0]
    r.epoch = 2  # as if two epochs had passed

    def signed(reporter: int, epoch: int) -> SignedReport:
        rep = TrustReport(epoch=epoch, peers=(0,), sat=(1,), unsat=(0,))
        return SignedReport(reporter=reporter, signature=keys.signers[reporter].sign(_signing(reporter, rep)),
                            report=rep)

    r.pending_reports = {1: signed(1, 0), 2: signed(2, 1), 3: signed(3, 3)}
    meta = r.block_meta(17)
    decoded = decode_meta(meta)
    assert decoded is not None and [s.reporter for s in decoded.reports] == [2]  # 1 too old, 3 too new
    assert r.check_meta(Block(height=17, epoch=2, view=0, proposer=0, meta=meta)) is None
    assert list(r.pending_reports) == [3]  # kept for epoch 3


def test_constructor_takes_its_config_and_checks_group_size(committee: Callable[..., Keys]) -> None:
    keys = committee(n=10)
    kw = dict(committee=keys.committee, node_id=0, signer=keys.signers[0], verifier=keys.verifier)
    r = Replica(**kw, config=Config(batch_size=7, batch_delay=0.01, view_change_timeout=2.0, group_size=9))
    assert (r.config.batch_size, r.config.batch_delay, r.config.view_change_timeout) == (7, 0.01, 2.0)
    assert len(r.group(1, 0)) == 9 and len(r.group(0, 0)) == 10 and r.protocol == "tpbft"  # epoch 0 measures
    with pytest.raises(LocalProtocolError):
        Replica(**kw, config=Config(group_size=6))  # below the quorum of 7: the group could never commit
    with pytest.raises(LocalProtocolError):
        Replica(**kw, config=Config(epoch_length=0))


def test_votes_are_judged_timely_late_or_missing_per_height(committee: Callable[..., Keys]) -> None:
    from dwcp.consensus.core import Received

    keys = committee(n=4)  # group = committee = 4, quorum 3
    net = make_net(keys)
    net.down.add(3)
    net.feed(0, Submitted(tx=Transaction(payload=b"h1")))
    net.run()
    assert net.heights()[0] == 1
    digest = net.commits[0][0].certificate.digest
    net.down.clear()
    net.now = 1.0  # node 3's votes for height 1 turn up a second after node 0 executed it
    late = Vote(kind="prepare", epoch=0, view=0, height=1, digest=digest)
    wrong = Vote(kind="commit", epoch=0, view=0, height=1, digest=b"\x07" * 32)
    for v in (late, wrong):
        net.feed(0, Received(sender=3, message=v, signature=keys.signers[3].sign(_signing(3, v))))
    net.feed(0, Submitted(tx=Transaction(payload=b"h2")))  # executing height 2 judges height 1 (lag 1)
    net.run()
    ops = net.cores[0].opinions
    assert (ops.sat[1], ops.unsat[1]) == (ops.sat[2], ops.unsat[2]) == (2, 0)  # prepare + commit in time
    assert (ops.sat[3], ops.unsat[3]) == (0, 2)  # late prepare, commit only for another block


def test_package_exports() -> None:
    import dwcp.consensus.tpbft as tpbft
    from dwcp.consensus import pbft

    assert sorted(tpbft.__all__) == ["Config", "MESSAGES", "Opinions", "Replica", "TrustReport", "TrustTable",
                                     "default_group_size"]
    assert set(pbft.MESSAGES) < set(tpbft.MESSAGES) and TrustReport in tpbft.MESSAGES
    assert issubclass(tpbft.Replica, pbft.Replica) and issubclass(tpbft.Config, pbft.Config)


def _restore(core: Replica, blocks: list[Block]) -> None:
    for b in blocks:
        cert = Certificate(kind="commit", epoch=b.epoch, view=b.view, height=b.height, digest=block_digest(b),
                           signers=(), signatures=())
        core.handle(0.0, Restored(height=b.height, block=b, certificate=cert))


@pytest.mark.parametrize("fresh", [True, False])
def test_a_primary_the_epochs_blocks_prove_replaced_does_not_lead_the_next_epoch(
        committee: Callable[..., Keys], fresh: bool) -> None:
    """Epoch 0 (L = 8, ranking by id): node 0 proposed heights 1-6 and 8 in view 0; height 7 is a null
    block of view 1 (node 1's), so view 0 was changed and node 0 deposed, yet its prepared height 8 was
    re-proposed unchanged: it is the proposer of the epoch's last block."""
    keys = committee(n=10)
    cfg = Config(batch_size=1, epoch_length=8, evaluation_lag=1, measurement_epoch=False, fresh_incumbent=fresh)
    core = Replica(committee=keys.committee, node_id=5, signer=keys.signers[5], verifier=keys.verifier, config=cfg)
    blocks = [Block(height=h, epoch=0, view=0, proposer=0, txs=(Transaction(payload=b"t%d" % h),)) for h in range(1, 7)]
    blocks += [Block(height=7, epoch=0, view=1, proposer=1),
               Block(height=8, epoch=0, view=0, proposer=0, txs=(Transaction(payload=b"t8"),))]
    _restore(core, blocks)
    assert core.epoch == 1 and core.ranking(0)[:2] == (0, 1)
    if fresh:
        assert core.primary(1, 0) == 1  # the primary that replaced it leads
        assert 0 not in core.primary_group(1) and 0 in core.group(1, 0)  # out of the lead, still voting
    else:  # the old rule: the last block's proposer leads on
        assert core.primary(1, 0) == 0


@pytest.mark.parametrize("fresh", [True, False])
def test_the_epochs_last_height_is_proposed_once_the_others_are_executed(
        committee: Callable[..., Keys], fresh: bool) -> None:
    keys = committee(n=10)
    cfg = Config(batch_size=1, epoch_length=4, evaluation_lag=1, measurement_epoch=False, fresh_incumbent=fresh)
    net = make_net(keys, cfg)
    net.down.update({6, 7, 8, 9})  # 6 live of a quorum of 7: nothing commits
    for k in range(6):
        net.feed(0, Submitted(tx=Transaction(payload=b"p%d" % k)))
        net.run()
    tick(net, 0.01)
    sent = [getattr(o, "message", None) for o in net.outputs[0]]
    proposed = sorted({m.block.height for m in sent if isinstance(m, PrePrepare)})
    assert proposed == ([1, 2, 3] if fresh else [1, 2, 3, 4])
    net.down.clear()  # the rest of the committee back: heights 1-3 commit, then height 4 is proposed, then epoch 1
    live = range(6)  # (6 and 7 missed their group's messages while down: catch-up is the driver's)
    for _ in range(20):
        tick(net, 1.0)
        if min(net.heights()[n] for n in live) >= 6:
            break
    assert min(net.heights()[n] for n in live) >= 6
    assert all(net.cores[n].epoch == 1 for n in live)
    assert len({tuple(committed(net, n)[:6]) for n in live}) == 1


@pytest.mark.parametrize("fresh", [True, False])
def test_the_incumbent_leads_on_only_from_the_primary_group(committee: Callable[..., Keys], fresh: bool) -> None:
    """Committed reports from nodes 1-9 credit nodes 1-6, not node 0, and blame 7-9: node 0 ranks below the
    primary group (top k = 4) but inside the group (top g = 8). Node 0 proposed epoch 0's last block: the
    rules before session 12 let it lead on from anywhere in the group; now only from the primary group."""
    keys = committee(n=10)
    cfg = Config(batch_size=1, epoch_length=8, evaluation_lag=1, measurement_epoch=False, fresh_incumbent=fresh)
    core = Replica(committee=keys.committee, node_id=5, signer=keys.signers[5], verifier=keys.verifier, config=cfg)
    reports = []
    for r in range(1, 10):
        peers = tuple(i for i in range(10) if i != r)
        report = TrustReport(epoch=0, peers=peers, sat=tuple(0 if p in (0, 7, 8, 9) else 2 for p in peers),
                             unsat=tuple(2 if p in (7, 8, 9) else 0 for p in peers))
        reports.append(SignedReport(reporter=r, signature=b"", report=report))
    blocks = [Block(height=h, epoch=0, view=0, proposer=0, txs=(Transaction(payload=b"k%d" % h),),
                    meta=encode_meta(tuple(reports)) if h == 2 else b"") for h in range(1, 9)]
    _restore(core, blocks)
    trust_order = ranking(core.trust)
    assert core.epoch == 1 and 4 <= trust_order.index(0) < 8  # outside the top k, inside the top g
    assert core.primary(1, 0) == (trust_order[0] if fresh else 0)
