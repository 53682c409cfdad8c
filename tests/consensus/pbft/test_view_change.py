"""View change: a silent primary is replaced, prepared blocks survive, bad NEW-VIEWs are refused."""

from __future__ import annotations

import msgspec

from dwcp.consensus.core import (
    Block,
    CancelTimer,
    Certificate,
    Multicast,
    Rejected,
    RequestSync,
    Send,
    SetTimer,
    Started,
    Transaction,
    TxBatch,
    Vote,
    block_digest,
    encode,
)
from dwcp.consensus.core.messages import digest
from dwcp.consensus.pbft import Mode, Replica
from dwcp.consensus.pbft.messages import (
    NewView,
    NewViewRequest,
    Prepared,
    PrePrepare,
    SignedViewChange,
    ViewChange,
    ViewChangeRef,
    ViewChangeRelay,
    ViewChangeRequest,
)
from dwcp.consensus.pbft.state import GOSSIP, REQUEST, VIEW_CHANGE
from dwcp.consensus.pbft.viewchange import reproposals

from .conftest import deliver, received, serve_sync, spread, submit, tx


def sent(net, node, kind):
    return [o.message for o in net.outputs.get(node, []) if isinstance(o, Multicast | Send)
            and isinstance(o.message, kind)]


def time_out(net, nodes, now=1.5):
    net.now = now
    for n in nodes:
        net.fire(n, REQUEST)


def test_silent_primary_is_replaced_and_the_new_primary_commits_the_pending_tx(pbft_net):
    net = pbft_net(batch_size=1)
    net.down.add(0)
    spread(net, 1, tx(1))
    net.run()
    assert net.heights() == {0: 0, 1: 0, 2: 0, 3: 0}
    net.now = 1.5
    outs = net.fire(2, REQUEST)
    vc = ViewChange(epoch=0, view=1, height=0, committed=None, prepared=())
    assert outs == [  # node 2 got the tx from node 1's retransmission to all: no need to send it again
        SetTimer(timer=VIEW_CHANGE, delay=1.0),
        Send(to=1, message=NewViewRequest(epoch=0, view=1)),
        Multicast(to=(0, 1, 3), message=vc),
    ]
    assert net.cores[2].mode is Mode.VIEW_CHANGE
    time_out(net, [1, 3])
    net.run()
    for n in (1, 2, 3):
        core = net.cores[n]
        assert (core.view, core.mode, core.view_changes) == (1, Mode.NORMAL, 1)
        assert core.primary(0, 1) == 1
    [nv] = sent(net, 1, NewView)
    assert nv.proposals == () and sorted(s.sender for s in nv.view_changes) == [1, 2, 3]
    assert CancelTimer(timer=VIEW_CHANGE) in net.outputs[2]
    for n in (1, 2, 3):
        [commit] = net.commits[n]
        assert commit.block == Block(height=1, epoch=0, view=1, proposer=1, txs=(tx(1),))
        assert commit.certificate.view == 1


def test_a_stuck_tx_is_first_sent_to_all_and_only_then_starts_a_view_change(pbft_net):
    net = pbft_net(batch_size=1)
    submit(net, 1, tx(1))
    assert Multicast(to=(0,), message=TxBatch(txs=(tx(1),))) in net.outputs[1]  # forwarded to the primary
    net.queue.clear()  # the forward is lost (say the primary restarted and forgot it)
    net.now = 0.5  # half the request timeout
    outs = net.fire(1, REQUEST)
    # Retransmit to the whole group and give the primary the other half, as a PBFT client would; no view change.
    assert outs == [Multicast(to=(0, 2, 3), message=TxBatch(txs=(tx(1),))), SetTimer(timer=REQUEST, delay=0.5)]
    assert net.cores[1].mode is Mode.NORMAL and net.cores[1].mempool.oldest() == 0.5
    net.run()
    assert net.heights() == {0: 1, 1: 1, 2: 1, 3: 1}  # the primary had it this time
    assert all(core.view_changes == 0 for core in net.cores.values())


def test_a_stuck_tx_the_whole_group_held_for_a_timeout_starts_a_view_change(pbft_net):
    net = pbft_net(batch_size=1)
    net.down.add(0)
    submit(net, 1, tx(1))
    net.fire(1, GOSSIP)
    net.now = 0.5
    net.fire(1, REQUEST)  # half the timeout: sent to all
    net.run()
    assert [net.cores[n].mode for n in (1, 2, 3)] == [Mode.NORMAL] * 3
    time_out(net, [1, 2, 3], now=1.0)  # the other half: every member held it that long; a full timeout in all
    net.run()
    assert [(net.cores[n].view, net.cores[n].mode) for n in (1, 2, 3)] == [(1, Mode.NORMAL)] * 3
    assert net.heights() == {0: 0, 1: 1, 2: 1, 3: 1}


def test_own_txs_follow_the_primary_into_a_new_view(pbft_net):
    net = pbft_net(batch_size=1)
    net.down.add(0)
    spread(net, 2, tx(1))
    net.run()
    submit(net, 3, tx(2))
    net.fire(3, GOSSIP)  # forwarded to primary 0, which is down: lost
    net.run()
    time_out(net, [1, 2, 3])  # tx(1) was sent to all: view change (node 3 retransmits tx(2) as well)
    net.run()
    assert [net.cores[n].view for n in (1, 2, 3)] == [1, 1, 1]
    assert [c.txs for c in net.commits[1]] == [(tx(1),), (tx(2),)]
    assert net.cores[3].own == set() and net.cores[3].forwarded_to == 1


def test_f_plus_one_view_changes_pull_a_replica_into_the_view_change(pbft_net):
    net = pbft_net(batch_size=1)
    net.down.add(0)
    spread(net, 1, tx(1))
    net.run()
    time_out(net, [1, 2])  # node 3's timer has not fired: it joins on seeing f + 1 = 2 view changes
    net.run()
    assert sent(net, 3, ViewChange) == [ViewChange(epoch=0, view=1, height=0, committed=None, prepared=())]
    assert [net.cores[n].view for n in (1, 2, 3)] == [1, 1, 1]
    assert net.heights() == {0: 0, 1: 1, 2: 1, 3: 1}


def test_view_change_preserves_a_prepared_but_uncommitted_block(pbft_net):
    net = pbft_net(batch_size=1)
    spread(net, 0, tx(1))
    # Every replica prepares block 1, but all commit votes are lost: nobody commits it in view 0.
    deliver(net, drop=lambda s, to, m: isinstance(m, Vote) and m.kind == "commit")
    b = Block(height=1, epoch=0, view=0, proposer=0, txs=(tx(1),))
    assert all(core.prepared[1].block == b for core in net.cores.values())
    assert net.heights() == {0: 0, 1: 0, 2: 0, 3: 0}
    net.down.add(0)  # and then the primary dies
    submit(net, 2, tx(2))
    time_out(net, [1, 2, 3])
    net.run()
    net.fire(2, GOSSIP)
    net.run()
    [nv] = sent(net, 1, NewView)
    assert nv.proposals == (block_digest(b),)  # re-proposed byte for byte: same digest as in view 0
    assert all(len(s.view_change.prepared) == 1 for s in net.cores[1].nv_proof.values())
    for n in (1, 2, 3):
        assert net.commits[n][0].block == b and net.commits[n][0].certificate.view == 1
        assert net.commits[n][0].certificate.digest == block_digest(b)
    # The new primary proposes new work after the re-proposal, not at its height.
    assert [c.block.txs for c in net.commits[1]] == [(tx(1),), (tx(2),)]
    assert net.commits[1][1].block.height == 2


def test_block_committed_by_one_replica_is_adopted_from_its_view_change(pbft_net):
    net = pbft_net(batch_size=1)
    spread(net, 0, tx(1))
    # Only replica 3 receives the commit votes: it commits height 1, the others only prepare it.
    deliver(net, drop=lambda s, to, m: isinstance(m, Vote) and m.kind == "commit" and to != 3)
    assert net.heights() == {0: 0, 1: 0, 2: 0, 3: 1}
    committed = net.commits[3][0]
    net.down.add(0)
    time_out(net, [1, 2, 3])
    net.run()
    # Replica 3's view change carries its commit certificate as the proof for height 1: the others
    # execute the block with that certificate, and its re-proposal is a no-op for everyone.
    [vc3] = sent(net, 3, ViewChange)
    assert [(p.block, p.certificate) for p in vc3.prepared] == [(committed.block, committed.certificate)]
    [nv] = sent(net, 1, NewView)
    assert nv.proposals == (block_digest(committed.block),)
    for n in (1, 2):
        assert net.commits[n] == [committed]
    spread(net, 2, tx(2))
    net.run()
    assert net.heights() == {0: 0, 1: 2, 2: 2, 3: 2}
    assert not any(isinstance(o, Rejected) for n in (1, 2, 3) for o in net.outputs[n])


def test_replica_behind_the_stable_checkpoint_fetches_and_cannot_be_forked(pbft_net):
    net = pbft_net(batch_size=1, checkpoint_interval=2)
    net.down.add(2)  # replica 2 misses heights 1 and 2 (and their checkpoint)
    submit(net, 0, tx(1), tx(2))
    net.run()
    assert net.heights() == {0: 2, 1: 2, 2: 0, 3: 2} and net.cores[1].stable == 2
    net.down.discard(2)
    net.down.add(0)
    spread(net, 1, tx(3))
    net.run()
    time_out(net, [1, 2, 3])
    net.run()
    [nv] = sent(net, 1, NewView)
    assert nv.proposals == ()  # heights 1 and 2 are under the stable checkpoint (low = 2)
    lagger = net.cores[2]
    assert (lagger.view, lagger.view_floor, lagger.height) == (1, 2, 0)
    # The view changes of 1 and 3 (f + 1 of them) show height 2 is stable: catch up from them.
    assert [o for o in net.outputs[2] if isinstance(o, RequestSync)] == [
        RequestSync(peers=(1, 3), from_height=1, to_height=2),
    ]
    # Height 1 is settled for view 1: a (Byzantine) primary cannot fork the lagging replica there.
    fork = PrePrepare(epoch=0, view=1, block=Block(height=1, epoch=0, view=1, proposer=1, txs=(tx(66),)))
    assert lagger.handle(2.0, received(net.keys, 1, fork)) == [Rejected(peer=1, reason="below_new_view")]
    assert serve_sync(net, 2, 1) == 2
    net.run()
    assert [c.block for c in net.commits[2]] == [c.block for c in net.commits[1]]
    assert net.heights() == {0: 2, 1: 3, 2: 3, 3: 3}


def test_new_view_with_wrong_reproposals_is_rejected_and_its_primary_replaced_at_once(pbft_net):
    net = pbft_net(batch_size=1)
    spread(net, 0, tx(1))
    deliver(net, drop=lambda s, to, m: isinstance(m, Vote) and m.kind == "commit")
    net.down.add(0)
    time_out(net, [1, 2, 3])
    # The new primary (1) swaps the prepared block for one of its own choosing.
    held = []
    deliver(net, drop=lambda s, to, m: isinstance(m, NewView) and not held.append((to, m)))
    [(to, nv), *_] = held
    forged = NewView(epoch=0, view=1, view_changes=nv.view_changes,
                     proposals=(block_digest(Block(height=1, epoch=0, view=1, proposer=1, txs=(tx(9),))),))
    short = NewView(epoch=0, view=1, view_changes=nv.view_changes[:2], proposals=nv.proposals)
    assert net.cores[2].handle(2.0, received(net.keys, 1, short)) == [Rejected(peer=1, reason="bad_new_view")]
    assert net.cores[2].mode is Mode.VIEW_CHANGE
    net.feed(3, received(net.keys, 1, nv))  # the real one is accepted
    assert (net.cores[3].view, net.cores[3].mode) == (1, Mode.NORMAL)
    # A NEW-VIEW its primary signed that contradicts the view changes it names proves the primary faulty:
    # the replica asks for the next view at once instead of waiting out the NEW-VIEW timeout.
    outs = net.cores[2].handle(2.0, received(net.keys, 1, forged))
    assert outs[0] == Rejected(peer=1, reason="bad_reproposals")
    [vc] = [o.message for o in outs if isinstance(o, Multicast) and isinstance(o.message, ViewChange)]
    assert vc.view == 2 and (net.cores[2].mode, net.cores[2].vc_target) == (Mode.VIEW_CHANGE, 2)


def test_a_lone_view_change_waits_and_resends_instead_of_running_ahead(pbft_net):
    net = pbft_net(batch_size=1)
    net.down.update({0, 2, 3})  # no quorum for view 1 can form
    spread(net, 1, tx(1))
    time_out(net, [1])
    for _ in range(3):
        net.fire(1, VIEW_CHANGE)
    delays = [o.delay for o in net.outputs[1] if isinstance(o, SetTimer) and o.timer == VIEW_CHANGE]
    assert delays == [1.0, 1.0, 1.0, 1.0]
    vc = ViewChange(epoch=0, view=1, height=0, committed=None, prepared=())
    assert sent(net, 1, ViewChange) == [vc] * 4  # the same view change, resent in case it was lost
    assert (net.cores[1].vc_target, net.cores[1].view, net.cores[1].view_changes) == (1, 0, 1)


def test_failed_view_changes_double_the_timeout_up_to_4x(pbft_net):
    net = pbft_net(n=13, batch_size=1)  # f = 4: the primaries of views 0..3 can all be down
    net.down.update({0, 1, 2, 3})
    spread(net, 4, tx(1))
    net.run()
    time_out(net, range(4, 13))
    net.run()
    for view in (1, 2, 3):  # a quorum is in each view change, but its primary is down
        assert {net.cores[n].vc_target for n in range(4, 13)} == {view}
        for n in range(4, 13):
            net.fire(n, VIEW_CHANGE)
        net.run()
    delays = [o.delay for o in net.outputs[5] if isinstance(o, SetTimer) and o.timer == VIEW_CHANGE]
    assert delays == [1.0, 2.0, 4.0, 4.0]
    assert {(net.cores[n].view, net.cores[n].mode) for n in range(4, 13)} == {(4, Mode.NORMAL)}
    assert net.heights() == {n: int(n >= 4) for n in range(13)}


def test_restarted_replica_joins_the_current_view(pbft_net):
    net = pbft_net(batch_size=1)
    net.down.add(0)
    spread(net, 1, tx(1))
    net.run()
    time_out(net, [1, 2, 3])
    net.run()
    assert [net.cores[n].view for n in (1, 2, 3)] == [1, 1, 1]
    keys = net.keys
    net.cores[0] = Replica(committee=keys.committee, node_id=0, signer=keys.signers[0], verifier=keys.verifier,
                           config=net.cores[1].config)
    net.down.discard(0)
    net.feed(0, Started())
    net.run()
    # Status replies show f + 1 peers in view 1: it asks the primary of view 1 for its NEW-VIEW, and catches up.
    core = net.cores[0]
    assert (core.view, core.mode) == (1, Mode.NORMAL)
    assert sent(net, 0, NewViewRequest) == [NewViewRequest(epoch=0, view=1)]
    assert [o for o in net.outputs[0] if isinstance(o, RequestSync)] == [
        RequestSync(peers=(1, 2), from_height=1, to_height=1),
    ]
    assert serve_sync(net, 0, 1) == 1
    submit(net, 1, tx(2))
    net.run()
    assert net.commits[0][-1].block == net.commits[1][-1].block
    assert net.commits[0][-1].height == 2


def _prepared(h, view, payload):
    b = Block(height=h, epoch=0, view=view, proposer=view % 4, txs=(tx(payload),))
    return Prepared(block=b, certificate=Certificate(kind="prepare", epoch=0, view=view, height=h,
                                                     digest=block_digest(b), signers=(), signatures=()))


def test_reproposals_pick_the_highest_view_and_fill_gaps_with_null_blocks():
    low = ViewChange(epoch=0, view=3, height=1, committed=None, prepared=(_prepared(2, 0, 1), _prepared(4, 0, 4)))
    high = ViewChange(epoch=0, view=3, height=0, committed=None, prepared=(_prepared(1, 1, 9), _prepared(2, 1, 2)))
    got = reproposals(0, 3, 3, [low, high])
    # Height 1 is at or below the highest committed height (1): not re-proposed.
    assert got == (_prepared(2, 1, 2).block, Block(height=3, epoch=0, view=3, proposer=3), _prepared(4, 0, 4).block)
    assert reproposals(0, 3, 3, [high, low]) == got  # order of the view changes does not matter
    assert reproposals(0, 3, 3, []) == ()


def test_view_change_in_a_later_epoch(pbft_net):
    net = pbft_net(batch_size=1, epoch_length=4, checkpoint_interval=8)
    submit(net, 0, *(tx(i) for i in range(6)))
    net.run()
    assert {(c.epoch, c.view, c.height) for c in net.cores.values()} == {(1, 0, 6)}
    assert [c.block.epoch for c in net.commits[1]] == [0, 0, 0, 0, 1, 1]
    net.down.add(0)
    spread(net, 1, tx(100))
    net.run()
    time_out(net, [1, 2, 3])
    net.run()
    # Epoch 1 starts after height 4 and no checkpoint is stable yet: the view changes report proofs
    # for heights 5 and 6 only, and nothing at or below the epoch start is re-proposed.
    [nv] = sent(net, 1, NewView)
    proof = net.cores[2].nv_proof  # what node 2 accepted the NEW-VIEW on
    assert [[p.block.height for p in s.view_change.prepared] for s in proof.values()] == [[5, 6]] * 3
    assert nv.proposals == tuple(block_digest(c.block) for c in net.commits[1][4:6])
    assert {(c.epoch, c.view) for n, c in net.cores.items() if n != 0} == {(1, 1)}
    for n in (1, 2, 3):
        assert net.commits[n][-1].height == 7 and net.commits[n][-1].block.txs == (tx(100),)


def test_replica_alone_in_a_view_change_still_catches_up(pbft_net):
    net = pbft_net(batch_size=1)
    outs: list = []
    net.cores[3].start_view_change(0.0, 1, outs)  # say its timer ran fast: nobody else joins
    net.execute(3, outs)
    submit(net, 0, tx(1))
    net.run()
    assert net.heights() == {0: 1, 1: 1, 2: 1, 3: 0}  # it ignores view 0 now: the others go on
    assert [net.cores[n].mode for n in range(4)] == [Mode.NORMAL] * 3 + [Mode.VIEW_CHANGE]
    net.fire(3, VIEW_CHANGE)  # no quorum for view 1: it resends its view change
    net.run()
    # Each peer answers the resend with its Status; f + 1 of them show height 1 is committed.
    assert [o for o in net.outputs[3] if isinstance(o, RequestSync)] == [
        RequestSync(peers=(0, 1), from_height=1, to_height=1),
    ]
    assert serve_sync(net, 3, 0) == 1
    assert [c.block for c in net.commits[3]] == [net.commits[0][0].block]
    assert (net.cores[3].view, net.cores[3].vc_target) == (0, 1)


def test_view_change_too_big_for_a_frame_is_not_sent(pbft_net):
    net = pbft_net(batch_size=1)
    big = [Transaction(payload=bytes([i]) * 400_000) for i in range(3)]
    spread(net, 0, *big)
    # Three ~400 kB blocks prepare everywhere, but no commit vote arrives: a view change would have
    # to carry all three, more than one 1 MiB frame holds.
    deliver(net, drop=lambda s, to, m: isinstance(m, Vote) and m.kind == "commit")
    assert all(len(c.prepared) == 3 for c in net.cores.values())
    net.down.add(0)
    time_out(net, [1, 2, 3])  # LocalNet seals every frame: an oversized one would raise here
    net.run()
    assert sent(net, 1, ViewChange) == [] and net.cores[1].mode is Mode.VIEW_CHANGE


def _prepared_and_primary_down(net):
    """Every replica prepares block 1 but none commits it; then primary 0 fails and 1, 2, 3 time out
    (their view changes are queued, not yet delivered)."""
    spread(net, 0, tx(1))
    deliver(net, drop=lambda s, to, m: isinstance(m, Vote) and m.kind == "commit")
    net.down.add(0)
    time_out(net, [1, 2, 3])


def test_new_view_names_view_changes_by_digest_and_proposals_by_block_digest(pbft_net):
    net = pbft_net(batch_size=1)
    _prepared_and_primary_down(net)
    net.run()
    [nv] = sent(net, 1, NewView)
    proof = net.cores[1].nv_proof
    assert nv.view_changes == tuple(ViewChangeRef(sender=s, digest=digest(encode(svc.view_change)))
                                    for s, svc in sorted(proof.items()))
    assert sent(net, 1, ViewChangeRelay) == []  # everyone held every view change: nothing fetched
    assert len(encode(nv)) < 400


def test_a_replica_missing_a_view_change_fetches_it_from_the_primary_and_enters_the_view(pbft_net):
    net = pbft_net(batch_size=1)
    _prepared_and_primary_down(net)
    # Node 3's view change never reaches node 2; the NEW-VIEW (from 1) names it.
    deliver(net, drop=lambda s, to, m: isinstance(m, ViewChange) and s == 3 and to == 2)
    assert sent(net, 2, ViewChangeRequest) == [ViewChangeRequest(epoch=0, view=1, senders=(3,))]
    [relay] = sent(net, 1, ViewChangeRelay)
    assert relay.view_change == net.cores[1].nv_proof[3]
    assert {(net.cores[n].view, net.cores[n].mode) for n in (1, 2, 3)} == {(1, Mode.NORMAL)}
    assert net.heights() == {0: 0, 1: 1, 2: 1, 3: 1}  # the prepared block, re-proposed and committed


def _gathering(net):
    """Block 1 prepared everywhere, primary 0 down, view change to 1; node 3's view change never
    reaches node 2 and the primary's relay of it is held back: node 2 waits with the NEW-VIEW pending.
    Returns node 2's core and the held relay."""
    _prepared_and_primary_down(net)
    held: list = []
    deliver(net, drop=lambda s, to, m: (isinstance(m, ViewChange) and s == 3 and to == 2)
            or (isinstance(m, ViewChangeRelay) and not held.append(m)))
    core = net.cores[2]
    assert core.pending_nv is not None and core.pending_nv.view == 1 and core.mode is Mode.VIEW_CHANGE
    [relay] = held
    return core, relay


def test_forged_or_unasked_relays_are_refused_and_a_new_view_on_a_bad_view_change_is_dropped(pbft_net):
    net = pbft_net(batch_size=1)
    core, relay = _gathering(net)
    good = relay.view_change
    # The relay's bytes must hash to the digest the NEW-VIEW names, and carry node 3's signature.
    other = SignedViewChange(sender=3, signature=good.signature,
                             view_change=msgspec.structs.replace(good.view_change, height=0, prepared=()))
    assert core.handle(2.0, received(net.keys, 1, ViewChangeRelay(view_change=other))) == [
        Rejected(peer=1, reason="bad_relay")]
    unsigned = msgspec.structs.replace(good, signature=b"\x00" * 64)
    assert core.handle(2.0, received(net.keys, 1, ViewChangeRelay(view_change=unsigned))) == [
        Rejected(peer=1, reason="bad_view_change_signature")]
    assert core.mode is Mode.VIEW_CHANGE
    core.handle(2.0, received(net.keys, 1, ViewChangeRelay(view_change=good)))  # the real one completes it
    assert (core.view, core.mode, core.pending_nv) == (1, Mode.NORMAL, None)
    assert core.handle(2.1, received(net.keys, 1, ViewChangeRelay(view_change=good))) == []  # late: ignored


def test_view_change_requests_are_answered_for_the_current_view_and_rate_limited(pbft_net):
    net = pbft_net(batch_size=1)
    _prepared_and_primary_down(net)
    net.run()
    primary = net.cores[1]
    ask = ViewChangeRequest(epoch=0, view=1, senders=(3, 2, 3, 0))
    relays = primary.handle(3.0, received(net.keys, 2, ask))
    assert relays == [Send(to=2, message=ViewChangeRelay(view_change=primary.nv_proof[s])) for s in (2, 3)]
    assert primary.handle(3.1, received(net.keys, 2, ask)) == []  # within half a view-change timeout
    assert len(primary.handle(3.6, received(net.keys, 2, ask))) == 2
    assert primary.handle(9.0, received(net.keys, 3, ViewChangeRequest(epoch=0, view=0, senders=(2,)))) == []


def test_a_new_view_still_gathering_is_dropped_once_the_replica_asks_for_a_later_view(pbft_net):
    net = pbft_net(batch_size=1)
    core, relay = _gathering(net)
    outs: list = []
    core.start_view_change(2.0, 2, outs)  # its view change now speaks for view 2
    assert core.handle(2.1, received(net.keys, 1, relay)) == []  # view 1's last view change, too late
    assert (core.view, core.vc_target, core.mode, core.pending_nv) == (0, 2, Mode.VIEW_CHANGE, None)


def test_a_new_primary_gets_a_full_request_timeout_for_txs_announced_in_the_old_view(pbft_net):
    """Txs already sent to all in view 0 must not cost the view-1 primary its first half-timeout: at WAN
    latencies a 0.5 s timeout then replaced correct primaries one after another."""
    net = pbft_net(batch_size=1)
    net.down.add(0)
    submit(net, 1, tx(1))
    net.fire(1, GOSSIP)
    net.now = 0.5
    net.fire(1, REQUEST)  # sent to all
    net.run()
    time_out(net, [1, 2, 3], now=1.0)
    net.queue.clear()  # the view changes are lost: nobody enters view 1 yet
    for n in (1, 2, 3):
        core = net.cores[n]
        core.mode, core.view, core.vc_target, core.view_since = Mode.NORMAL, 1, 1, 1.0  # as _enter_view leaves it
    net.cores[2].mempool.restart_clocks(1.0)
    net.now = 1.6  # past half a timeout in view 1, and the tx was announced long ago
    outs = net.fire(2, REQUEST)
    assert net.cores[2].mode is Mode.NORMAL and [vc.view for vc in sent(net, 2, ViewChange)] == [1]
    assert outs[-1] == SetTimer(timer=REQUEST, delay=outs[-1].delay) and abs(outs[-1].delay - 0.4) < 1e-9
    net.now = 2.0  # a full timeout in view 1
    net.fire(2, REQUEST)
    assert (net.cores[2].mode, net.cores[2].vc_target) == (Mode.VIEW_CHANGE, 2)


def test_a_primary_whose_block_is_slow_to_commit_does_not_vote_itself_out(pbft_net):
    """A tx forwarded to the primary counts as held by the group there, so the primary's request timer runs out
    half a timeout after it arrived. Over a WAN a commit can take longer than that (with f silent nodes every
    quorum waits for the farthest correct one), and a primary that started a view change then stopped
    proposing and voting: its backups timed out behind it and a correct primary was replaced. A primary never
    suspects itself (PBFT's backups run the request timer); it leaves its view when the others do."""
    net = pbft_net(batch_size=1)
    slow_primary = lambda sender, to, msg: sender == 0  # noqa: E731 - its pre-prepare is slow to reach anyone
    submit(net, 1, tx(1))
    deliver(net, drop=slow_primary)
    net.now = 0.5
    net.fire(1, REQUEST)  # half the timeout at the origin: sent to all
    deliver(net, drop=slow_primary)
    assert net.cores[0].mempool.oldest() == 0.0 and tx(1).id in net.cores[0].announced
    net.now = 1.1  # a full timeout after the primary got it, its own block still in flight
    outs = net.fire(0, REQUEST)
    assert outs == [SetTimer(timer=REQUEST, delay=0.5)]
    assert net.cores[0].mode is Mode.NORMAL and sent(net, 0, ViewChange) == []
    time_out(net, [1, 2, 3], now=1.1)  # the backups held it for the other half: they suspect the primary
    net.run()
    assert [(net.cores[n].view, net.cores[n].mode) for n in (0, 1, 2, 3)] == [(1, Mode.NORMAL)] * 4
    assert net.heights() == {0: 1, 1: 1, 2: 1, 3: 1}
