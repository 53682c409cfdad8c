"""The epoch switch rules of session 16 (`tpbft/overlap.py`): `overlap_switch` (the next epoch's primary proposes
while the epoch's last height is in flight) and `last_after_prepared` (that last height waits for the earlier ones
to be prepared at the primary, not executed). I/O-free: the cores on a `LocalNet`, frames delivered in order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from dwcp.consensus.core import Codec, Submitted, Transaction, Vote
from dwcp.consensus.core.codec import block_digest
from dwcp.consensus.core.messages import Block
from dwcp.consensus.core.outputs import Rejected
from dwcp.consensus.pbft.messages import PrePrepare
from dwcp.consensus.tpbft import MESSAGES, Config, Replica
from tests.consensus.conftest import Keys, LocalNet
from tests.consensus.tpbft.test_replica import _restore, committed, make_net

BASE = {"batch_size": 1, "epoch_length": 4, "evaluation_lag": 1, "measurement_epoch": False}


def preprepares(net: LocalNet, node: int) -> list[PrePrepare]:
    return [o.message for o in net.outputs.get(node, []) if isinstance(getattr(o, "message", None), PrePrepare)]


def hand_to_primary(net: LocalNet, payload: bytes) -> None:
    """A client tx handed to node 0 (the primary) without delivering what it sends."""
    net.feed(0, Submitted(tx=Transaction(payload=payload)))


@pytest.mark.parametrize("overlap", [True, False])
def test_the_next_epochs_primary_proposes_while_the_last_height_is_in_flight(
    committee: Callable[..., Keys], overlap: bool
) -> None:
    """Heights 1-3 commit; node 0 proposes the epoch's last height 4, and two more txs arrive before anyone
    has its pre-prepare. With the rule, node 0 (the incumbent, which leads epoch 1 if height 4 commits as it
    proposed it) proposes heights 5 and 6 of epoch 1 at once; the others buffer them and take them up on
    entering epoch 1, so the blocks committed there are the ones sent early. Without it, nothing of epoch 1
    goes out before height 4 commits."""
    keys = committee(n=10)
    net = make_net(keys, Config(**BASE, overlap_switch=overlap))
    for k in range(3):
        hand_to_primary(net, b"e0-%d" % k)
        net.run()
    assert net.heights()[0] == 3
    for payload in (b"last", b"early-a", b"early-b"):
        hand_to_primary(net, payload)  # nothing delivered yet: height 4 is in flight
    early = [m for m in preprepares(net, 0) if m.epoch == 1]
    assert net.heights()[0] == 3
    if not overlap:
        assert early == []
    else:
        assert [(m.view, m.block.height, m.block.meta) for m in early] == [(0, 5, b""), (0, 6, b"")]
        assert [tx.payload for m in early for tx in m.block.txs] == [b"early-a", b"early-b"]
    net.run()
    live = range(10)
    assert all(net.cores[n].epoch == 1 and net.heights()[n] >= 6 for n in live)
    assert len({tuple(committed(net, n)[:6]) for n in live}) == 1
    assert net.cores[0].primary(1, 0) == 0  # it led on, as it expected
    if overlap:  # heights 5 and 6 are the blocks sent before epoch 1 began, proposed once
        assert committed(net, 1)[4:6] == [block_digest(m.block) for m in early]
        assert [m.block.height for m in preprepares(net, 0) if m.epoch == 1] == [5, 6]
    assert not any(isinstance(o, Rejected) for outs in net.outputs.values() for o in outs)


def test_the_last_height_carries_no_trust_reports_with_the_overlap(committee: Callable[..., Keys]) -> None:
    """ranking(e + 1) is computed from the trust table after the last height, so the primary can know it before
    that height commits only if the height changes nothing: its reports wait for the next epoch's blocks."""
    keys = committee(n=10)
    for overlap in (True, False):
        core = make_net(keys, Config(**BASE, overlap_switch=overlap)).cores[0]
        core.pending_reports = {}
        assert core.block_meta(4) == b""  # nothing pending either way
        core._send_report([])  # our own report, pending
        if overlap:
            assert core.block_meta(4) == b"" and core.block_meta(3) != b""  # kept for another height
        else:
            assert core.block_meta(4) != b""


@pytest.mark.parametrize("after_prepared", [True, False])
def test_the_last_height_waits_for_the_others_prepared_not_executed(
    committee: Callable[..., Keys], after_prepared: bool
) -> None:
    """Commit votes for height 3 are lost, so height 3 is prepared everywhere but executed nowhere. With
    `last_after_prepared` the primary proposes the epoch's last height 4 anyway; with the rule of session 12
    it waits for height 3 to be executed."""
    keys = committee(n=10)
    net = make_net(keys, Config(**BASE, last_after_prepared=after_prepared))
    post = net._post

    def lose_commits_for_3(sender: int, to: int, message: Any) -> None:
        if not (isinstance(message, Vote) and message.kind == "commit" and message.height == 3):
            post(sender, to, message)

    net._post = lose_commits_for_3  # type: ignore[method-assign]
    for k in range(4):
        hand_to_primary(net, b"t%d" % k)
        net.run()
    assert net.heights()[0] == 2 and 3 in net.cores[0].prepared
    proposed = sorted({m.block.height for m in preprepares(net, 0)})
    assert proposed == ([1, 2, 3, 4] if after_prepared else [1, 2, 3])


def test_a_stale_early_proposal_is_dropped_without_blame(committee: Callable[..., Keys]) -> None:
    """Epoch 0 (L = 8): node 0 proposed height 8 in view 0, but height 7 is node 1's null block of view 1, so node
    0 is deposed and node 1 leads epoch 1. A pre-prepare for (1, 0) from node 0 is what node 0 sent early,
    expecting to lead on: with the rule it is dropped as stale, not blamed; without it, it is an invalid message."""
    keys = committee(n=10)
    for overlap in (True, False):
        cfg = Config(**{**BASE, "epoch_length": 8}, overlap_switch=overlap)
        core = Replica(committee=keys.committee, node_id=5, signer=keys.signers[5], verifier=keys.verifier, config=cfg)
        blocks = [
            Block(height=h, epoch=0, view=0, proposer=0, txs=(Transaction(payload=b"s%d" % h),)) for h in range(1, 7)
        ]
        blocks += [
            Block(height=7, epoch=0, view=1, proposer=1),
            Block(height=8, epoch=0, view=0, proposer=0, txs=(Transaction(payload=b"s8"),)),
        ]
        _restore(core, blocks)
        assert core.epoch == 1 and core.primary(1, 0) == 1 and core.incumbent == 0
        net = LocalNet(cores={5: core}, keys=keys, codec=Codec(MESSAGES))
        stale = PrePrepare(epoch=1, view=0, block=Block(height=9, epoch=1, view=0, proposer=0, txs=()))
        before = core.opinions.snapshot()
        outs = net.feed(5, net.open(5, net.codec.seal(keys.signers[0], stale)))
        rejected = [o.reason for o in outs if isinstance(o, Rejected)]
        assert rejected == ([] if overlap else ["not_primary"])
        assert (core.opinions.snapshot() == before) is overlap
        assert 9 not in core.slots
