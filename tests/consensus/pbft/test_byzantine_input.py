"""Bad peer input: dropped with `Rejected(peer, reason)`, never raised, never changing safety state."""

from __future__ import annotations

import random

import pytest

from dwcp.consensus.core import (
    Block,
    BlockRequest,
    Certificate,
    Decided,
    Received,
    Rejected,
    Transaction,
    TxBatch,
    Vote,
    block_digest,
)
from dwcp.consensus.core.protocol import LocalProtocolError
from dwcp.consensus.pbft import Replica
from dwcp.consensus.pbft.messages import (
    Checkpoint,
    NewView,
    NewViewRequest,
    Prepared,
    PrePrepare,
    SignedViewChange,
    Status,
    ViewChange,
    ViewChangeRef,
    ViewChangeRelay,
    ViewChangeRequest,
)

from .conftest import received, tx


@pytest.fixture
def replica(pbft_net):
    net = pbft_net(start=False)
    return net.keys, net.cores[1]


def block(h=1, view=0, proposer=0, txs=(tx(1),)):
    return Block(height=h, epoch=0, view=view, proposer=proposer, txs=tuple(txs))


def test_equivocating_primary_is_rejected(replica):
    keys, core = replica
    a, b = block(txs=(tx(1),)), block(txs=(tx(2),))
    first = core.handle(0, received(keys, 0, PrePrepare(epoch=0, view=0, block=a)))
    assert [type(o).__name__ for o in first] == ["Multicast"]  # the prepare vote for a
    assert core.handle(0, received(keys, 0, PrePrepare(epoch=0, view=0, block=b))) == [
        Rejected(peer=0, reason="equivocation"),
    ]
    assert core.slots[1].digest == block_digest(a)
    assert core.voted[("prepare", 0, 1, 1)] == block_digest(a)  # we never vote for b
    assert core.handle(0, received(keys, 0, PrePrepare(epoch=0, view=0, block=a))) == []  # a resend is harmless


@pytest.mark.parametrize(
    ("sender", "pp", "reason"),
    [
        (2, PrePrepare(epoch=0, view=0, block=block(proposer=2)), "not_primary"),
        (0, PrePrepare(epoch=0, view=0, block=block(proposer=3)), "bad_block_header"),
        (0, PrePrepare(epoch=0, view=0, block=block(h=0)), "outside_window"),
        (0, PrePrepare(epoch=0, view=0, block=block(h=10_000)), "outside_window"),
        (0, PrePrepare(epoch=0, view=0, block=block(txs=(tx(1), tx(1)))), "bad_batch"),
        (0, PrePrepare(epoch=0, view=0, block=Block(height=1, epoch=0, view=0, proposer=0, meta=b"x")),
         "unexpected_meta"),
    ],
)
def test_bad_preprepare_is_rejected(replica, sender, pp, reason):
    keys, core = replica
    assert core.handle(0, received(keys, sender, pp)) == [Rejected(peer=sender, reason=reason)]
    assert core.slots == {}


def test_bad_votes_are_rejected(replica):
    keys, core = replica
    d1, d2 = b"\x01" * 32, b"\x02" * 32
    vote = Vote(kind="prepare", epoch=0, view=0, height=1, digest=d1)
    assert core.handle(0, Received(sender=99, message=vote, signature=b"")) == [
        Rejected(peer=99, reason="unknown_sender"),
    ]
    assert core.handle(0, Received(sender=1, message=vote, signature=b"")) == [
        Rejected(peer=1, reason="unknown_sender"),  # "from ourselves" is a misrouted or forged frame
    ]
    assert core.handle(0, received(keys, 2, vote)) == []
    assert core.handle(0, received(keys, 2, vote)) == []  # duplicate: ignored, not an offence
    double = Vote(kind="prepare", epoch=0, view=0, height=1, digest=d2)
    assert core.handle(0, received(keys, 2, double)) == [Rejected(peer=2, reason="double_vote")]
    bogus = Vote(kind="precommit", epoch=0, view=0, height=1, digest=d1)
    assert core.handle(0, received(keys, 3, bogus)) == [Rejected(peer=3, reason="bad_vote_kind")]
    assert core.votes[("prepare", 0, 1)] == {d1: {2: received(keys, 2, vote).signature}}


def test_non_member_votes_are_rejected_by_group_rules(pbft_net):
    """`group()` is the T-PBFT hook: a voter outside the group is rejected even if in the committee."""

    class Narrow(Replica):
        def group(self, epoch, view):
            return (0, 1, 2)

    net = pbft_net(start=False)
    keys = net.keys
    core = Narrow(committee=keys.committee, node_id=1, signer=keys.signers[1], verifier=keys.verifier)
    vote = Vote(kind="prepare", epoch=0, view=0, height=1, digest=b"\x01" * 32)
    assert core.handle(0, received(keys, 3, vote)) == [Rejected(peer=3, reason="not_in_group")]


def test_unexpected_and_forged_messages_are_rejected(replica):
    keys, core = replica
    outs = core.handle(0, received(keys, 2, BlockRequest(from_height=1, to_height=2)))
    assert outs == [Rejected(peer=2, reason="unexpected_message", detail="BlockRequest")]
    b = block()
    fake = Certificate(kind="commit", epoch=0, view=0, height=1, digest=block_digest(b), signers=(0, 2, 3),
                       signatures=(b"\x00" * 64,) * 3)
    assert core.handle(0, received(keys, 2, Decided(block=b, certificate=fake))) == [
        Rejected(peer=2, reason="bad_certificate"),
    ]
    vc = ViewChange(epoch=0, view=1, height=1, committed=fake, prepared=())
    assert core.handle(0, received(keys, 2, vc)) == [Rejected(peer=2, reason="bad_committed")]
    prep = Prepared(block=b, certificate=Certificate(kind="prepare", epoch=0, view=0, height=1,
                                                     digest=block_digest(b), signers=(0, 2, 3),
                                                     signatures=(b"\x00" * 64,) * 3))
    vc = ViewChange(epoch=0, view=1, height=0, committed=None, prepared=(prep,))
    assert core.handle(0, received(keys, 2, vc)) == [Rejected(peer=2, reason="bad_prepared")]
    nv = NewView(epoch=0, view=1, view_changes=(), proposals=())
    assert core.handle(0, received(keys, 2, nv)) == [Rejected(peer=2, reason="not_primary")]
    assert core.handle(0, received(keys, 3, nv)) == [Rejected(peer=3, reason="not_primary")]
    assert core.height == 0 and core.view == 0


def test_driver_misuse_raises(replica):
    keys, core = replica
    with pytest.raises(LocalProtocolError):
        core.handle(0, object())  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        Replica(committee=keys.committee, node_id=1, signer=keys.signers[2], verifier=keys.verifier)


def test_random_garbage_never_raises(replica):
    """Messages with arbitrary field values: whatever happens, `handle` returns outputs."""
    keys, core = replica
    rng = random.Random(7)
    ints = [-1, 0, 1, 2, 3, 5, 64, 2**31, -(2**40)]

    def i():
        return rng.choice(ints)

    def d():
        return rng.choice([b"", b"\x00" * 32, rng.randbytes(32), rng.randbytes(5)])

    def cert():
        return Certificate(kind=rng.choice(["commit", "prepare", "x"]), epoch=i(), view=i(), height=i(), digest=d(),
                           signers=(i(), i()), signatures=(d(),))

    def blk():
        return Block(height=i(), epoch=i(), view=i(), proposer=i(), txs=(Transaction(payload=d()),), meta=d())

    def vc():
        return ViewChange(epoch=i(), view=i(), height=i(), committed=rng.choice([None, cert()]),
                          prepared=(Prepared(block=blk(), certificate=cert()),))

    makers = [
        lambda: Vote(kind=rng.choice(["prepare", "commit", ""]), epoch=i(), view=i(), height=i(), digest=d()),
        lambda: PrePrepare(epoch=i(), view=i(), block=blk()),
        lambda: Checkpoint(height=i(), state=d()),
        vc,
        lambda: NewView(epoch=i(), view=i(), view_changes=(ViewChangeRef(sender=i(), digest=d()),),
                        proposals=(d(),)),
        lambda: NewViewRequest(epoch=i(), view=i()),
        lambda: ViewChangeRequest(epoch=i(), view=i(), senders=(i(), i())),
        lambda: ViewChangeRelay(view_change=SignedViewChange(sender=i(), signature=d(), view_change=vc())),
        lambda: Status(epoch=i(), view=i(), height=i(), reply=rng.random() < 0.5),
        lambda: Decided(block=blk(), certificate=cert()),
        lambda: TxBatch(txs=(Transaction(payload=d()),)),
    ]
    for _ in range(2000):
        sender = rng.choice([0, 2, 3])
        core.handle(float(_), received(keys, sender, rng.choice(makers)()))
    assert core.height == 0


def test_future_view_messages_are_buffered_within_bounds(pbft_net):
    net = pbft_net(start=False, max_buffered=8)  # a share of 8 // 4 = 2 messages per sender
    keys, core = net.keys, net.cores[1]
    far = Vote(kind="prepare", epoch=0, view=1000, height=1, digest=b"\x01" * 32)
    assert core.handle(0, received(keys, 2, far)) == [] and core.buffered == []
    near = [Vote(kind="prepare", epoch=0, view=1, height=h, digest=b"\x01" * 32) for h in range(1, 6)]
    for v in near:
        assert core.handle(0, received(keys, 2, v)) == []
    assert [m for _, m, _ in core.buffered] == near[:2]
    core.handle(0, received(keys, 3, near[0]))
    assert [s for s, _, _ in core.buffered] == [2, 2, 3]  # another sender still has its share
