"""Checkpoints, garbage collection, the window, Status and catch-up of a restarted replica."""

from __future__ import annotations

from dwcp.consensus.core import Fetched, Multicast, Received, Rejected, RequestSync, Restored, Send, Started, Vote
from dwcp.consensus.pbft import Replica
from dwcp.consensus.pbft.messages import Checkpoint, PrePrepare, Status

from .conftest import received, submit, tx


def proposals(net, node):
    return [o.message.block.height for o in net.outputs[node]
            if isinstance(o, Multicast) and isinstance(o.message, PrePrepare)]


def test_checkpoint_becomes_stable_and_garbage_is_collected(pbft_net):
    net = pbft_net(batch_size=1, checkpoint_interval=4)
    submit(net, 0, *(tx(i) for i in range(9)))
    net.run()
    assert net.heights() == {0: 9, 1: 9, 2: 9, 3: 9}
    states = set()
    for n, core in net.cores.items():
        sent = [o.message for o in net.outputs[n] if isinstance(o, Multicast) and isinstance(o.message, Checkpoint)]
        assert [c.height for c in sent] == [4, 8]
        states.add(sent[-1].state)
        assert core.stable == 8
        assert all(h > 8 for h in core.slots) and all(h > 8 for h in core.prepared)
        assert all(k[2] > 8 for k in core.votes) and all(k[2] > 8 for k in core.voted)
        assert set(core.checkpoints) == {8}  # only the stable checkpoint's proof is left
        assert core.status()["stable_checkpoint"] == 8
    assert len(states) == 1  # every replica reached the same state at height 8


def test_window_holds_proposals_until_a_checkpoint_is_stable(pbft_net):
    net = pbft_net(batch_size=1, checkpoint_interval=4, window=4, max_inflight=8)
    submit(net, 0, *(tx(i) for i in range(8)))
    assert proposals(net, 0) == [1, 2, 3, 4]  # high watermark = stable (0) + window (4)
    net.run()
    assert proposals(net, 0) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert net.heights() == {0: 8, 1: 8, 2: 8, 3: 8}


def test_checkpoint_without_quorum_is_not_stable(pbft_net):
    net = pbft_net(batch_size=1, checkpoint_interval=4)
    net.down.update({2, 3})  # no quorum: nothing commits, no checkpoint can become stable
    submit(net, 0, *(tx(i) for i in range(4)))
    net.run()
    assert net.heights() == {0: 0, 1: 0, 2: 0, 3: 0} and net.cores[0].stable == 0


def test_conflicting_and_misaligned_checkpoints_are_rejected(pbft_net):
    net = pbft_net(checkpoint_interval=4)
    keys = net.keys
    core = net.cores[1]
    a, b = b"a" * 32, b"b" * 32
    assert core.handle(0, received(keys, 2, Checkpoint(height=4, state=a))) == []
    assert core.handle(0, received(keys, 2, Checkpoint(height=4, state=b))) == [
        Rejected(peer=2, reason="conflicting_checkpoint"),
    ]
    assert core.handle(0, received(keys, 2, Checkpoint(height=5, state=a))) == [
        Rejected(peer=2, reason="bad_checkpoint_height"),
    ]
    assert core.checkpoints == {4: {a: {2: received(keys, 2, Checkpoint(height=4, state=a)).signature}}}


def test_status_is_answered(pbft_net):
    net = pbft_net(start=False)
    core = net.cores[1]
    assert core.handle(0, received(net.keys, 2, Status(epoch=0, view=0, height=0))) == [
        Send(to=2, message=Status(epoch=0, view=0, height=0, reply=True)),
    ]
    assert core.handle(0, received(net.keys, 2, Status(epoch=0, view=0, height=0, reply=True))) == []


def test_restarted_replica_catches_up_via_request_sync(pbft_net):
    net = pbft_net(batch_size=1, checkpoint_interval=4)
    net.down.add(3)
    submit(net, 0, *(tx(i) for i in range(6)))
    net.run()
    assert net.heights()[0] == 6
    # Node 3 restarts with the first two blocks in its own log.
    keys = net.keys
    fresh = Replica(committee=keys.committee, node_id=3, signer=keys.signers[3], verifier=keys.verifier,
                    config=net.cores[0].config)
    net.cores[3] = fresh
    net.down.discard(3)
    for c in net.commits[0][:2]:
        net.feed(3, Restored(height=c.height, block=c.block, certificate=c.certificate))
    net.feed(3, Started())
    net.run()
    # Two Status replies (f + 1) prove height 6 exists; the third is within sync_timeout.
    syncs = [o for o in net.outputs[3] if isinstance(o, RequestSync)]
    assert syncs == [RequestSync(peers=(0, 1), from_height=3, to_height=6)]
    assert fresh.behind()
    for c in net.commits[0][2:]:
        net.feed(3, Fetched(sender=0, block=c.block, certificate=c.certificate))
    assert [c.block for c in net.commits[3]] == [c.block for c in net.commits[0][2:]]
    assert fresh.height == 6 and not fresh.behind()
    # Caught up, it takes part again, and the next checkpoint (8) is stable with it.
    net.run()
    submit(net, 0, tx(100), tx(101))
    net.run()
    assert net.heights() == {0: 8, 1: 8, 2: 8, 3: 6}
    assert [c.block for c in net.commits[3][-2:]] == [c.block for c in net.commits[0][-2:]]
    votes = [o.message for o in net.outputs[3] if isinstance(o, Multicast) and isinstance(o.message, Vote)]
    assert {(v.kind, v.height) for v in votes} >= {("prepare", 7), ("commit", 7), ("prepare", 8), ("commit", 8)}
    assert fresh.stable == 8


def test_one_peer_claiming_a_height_is_not_enough_to_sync(pbft_net):
    net = pbft_net(start=False)
    core = net.cores[3]
    outs = core.handle(0, received(net.keys, 1, Status(epoch=0, view=0, height=50, reply=True)))
    assert outs == [] and not core.behind()  # could be a Byzantine lie
    outs = core.handle(0, received(net.keys, 2, Status(epoch=0, view=0, height=40, reply=True)))
    assert outs == [RequestSync(peers=(1, 2), from_height=1, to_height=40)]


def test_forged_fetched_block_is_rejected(pbft_net):
    net = pbft_net(batch_size=1)
    submit(net, 0, tx(1))
    net.run()
    good = net.commits[0][0]
    other = net.cores[0].committee
    fresh = Replica(committee=other, node_id=3, signer=net.keys.signers[3], verifier=net.keys.verifier)
    forged = good.block.__class__(height=1, epoch=0, view=0, proposer=0, txs=(tx(666),))
    outs = fresh.handle(0, Fetched(sender=1, block=forged, certificate=good.certificate))
    assert [(o.peer, o.reason) for o in outs] == [(1, "bad_certificate")]
    assert fresh.handle(0, Received(sender=1, message=Status(epoch=0, view=0, height=0, reply=True))) == []


def test_replica_restored_above_the_window_votes_at_once(pbft_net):
    net = pbft_net(batch_size=1, checkpoint_interval=2, window=4)
    net.down.add(3)
    submit(net, 0, *(tx(i) for i in range(8)))
    net.run()
    assert net.heights()[0] == 8
    keys = net.keys
    net.cores[3] = fresh = Replica(committee=keys.committee, node_id=3, signer=keys.signers[3],
                                   verifier=keys.verifier, config=net.cores[0].config)
    net.down.discard(3)
    for c in net.commits[0]:
        net.feed(3, Restored(height=c.height, block=c.block, certificate=c.certificate))
    # Its own log moved its low watermark to 8 (no quorum proof: none for view changes).
    assert (fresh.height, fresh.stable, fresh.stable_proof) == (8, 8, None)
    net.feed(3, Started())
    net.run()
    submit(net, 0, tx(100))
    net.run()
    votes = [o.message for o in net.outputs[3] if isinstance(o, Multicast) and isinstance(o.message, Vote)]
    assert [(v.kind, v.height) for v in votes] == [("prepare", 9), ("commit", 9)]
    assert [c.height for c in net.commits[3]] == [9]
