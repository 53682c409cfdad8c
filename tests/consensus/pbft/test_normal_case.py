"""PBFT normal case over a lossless LocalNet: pre-prepare, prepare, commit, batching, pipelining."""

from __future__ import annotations

from dwcp.consensus.core import (
    Block,
    Codec,
    Multicast,
    SetTimer,
    Started,
    Submitted,
    Transaction,
    TxBatch,
    TxDropped,
    Vote,
    block_digest,
)
from dwcp.consensus.core.protocol import verify_certificate
from dwcp.consensus.pbft import MESSAGES, Config, Replica
from dwcp.consensus.pbft.messages import PrePrepare
from dwcp.consensus.pbft.state import BATCH, GOSSIP
from tests.consensus.conftest import LocalNet

from .conftest import submit, tx


def assert_same_chain(net, nodes, heights):
    """Every node in `nodes` committed exactly `heights`, the same blocks, each with a valid certificate."""
    ref = net.commits[nodes[0]]
    assert [c.height for c in ref] == list(heights)
    for n in nodes:
        commits = net.commits[n]
        assert [c.block for c in commits] == [c.block for c in ref]
        for c in commits:
            assert verify_certificate(net.keys.committee, net.keys.verifier, c.height, c.block, c.certificate)


def test_commit_one(pbft_net):
    net = pbft_net(batch_size=1)
    t = tx(1)
    block = Block(height=1, epoch=0, view=0, proposer=0, txs=(t,))
    dig = block_digest(block)
    outs = net.feed(0, Submitted(tx=t))
    # The primary forwards its client's tx to nobody: it proposes at once (full batch) and votes for it.
    assert outs == [
        Multicast(to=(1, 2, 3), message=PrePrepare(epoch=0, view=0, block=block)),
        Multicast(to=(1, 2, 3), message=Vote(kind="prepare", epoch=0, view=0, height=1, digest=dig)),
    ]
    net.run()
    for n in range(4):
        [commit] = net.commits[n]
        assert (commit.height, commit.block, commit.txs) == (1, block, (t,))
        assert commit.certificate.kind == "commit" and commit.certificate.digest == dig
        assert len(commit.certificate.signers) == net.keys.committee.quorum
        assert verify_certificate(net.keys.committee, net.keys.verifier, 1, block, commit.certificate)
        assert net.cores[n].height == 1 and len(net.cores[n].mempool) == 0


def test_commits_with_one_silent_replica(pbft_net):
    net = pbft_net(batch_size=1)
    net.down.add(3)
    submit(net, 0, tx(1), tx(2))
    net.run()
    assert_same_chain(net, [0, 1, 2], [1, 2])
    assert 3 not in net.commits
    assert all(3 not in c.certificate.signers for c in net.commits[0])


def test_a_partial_batch_goes_at_once_then_waits_batch_delay_after_the_last_proposal(pbft_net):
    net = pbft_net()  # batch_size 200, batch_delay 2 ms
    outs = net.feed(0, Submitted(tx=tx(1)))
    assert [type(o.message) for o in outs] == [PrePrepare, Vote]  # nothing proposed lately: no wait
    net.now = 0.0005
    submit(net, 0, tx(2), tx(3))
    assert net.outputs[0][-1] == SetTimer(timer=BATCH, delay=0.0015)  # 2 ms after the first proposal
    net.run()
    assert_same_chain(net, [0, 1, 2, 3], [1])
    net.now = 0.002
    net.fire(0, BATCH)
    net.run()
    assert_same_chain(net, [0, 1, 2, 3], [1, 2])
    assert net.commits[1][1].txs == (tx(2), tx(3))  # the two waited and went in one block
    net.now = 0.010  # idle for longer than batch_delay: the next tx goes at once again
    outs = net.feed(0, Submitted(tx=tx(4)))
    assert [type(o.message) for o in outs] == [PrePrepare, Vote]


def test_transactions_submitted_to_a_backup_are_forwarded_to_the_primary_only(pbft_net):
    net = pbft_net(batch_size=1, gossip_delay=0.005)
    outs = net.feed(2, Submitted(tx=tx(7)))  # nothing forwarded lately: at once
    assert outs == [Multicast(to=(0,), message=TxBatch(txs=(tx(7),)))]
    net.now = 0.001
    # Within gossip_delay of the last forward: these wait until it has passed, then go as one batch.
    assert net.feed(2, Submitted(tx=tx(8))) == [SetTimer(timer=GOSSIP, delay=0.004)]
    assert net.feed(2, Submitted(tx=tx(9))) == []
    net.run()
    assert net.heights() == {0: 1, 1: 1, 2: 1, 3: 1}
    net.now = 0.005
    assert net.fire(2, GOSSIP) == [Multicast(to=(0,), message=TxBatch(txs=(tx(8), tx(9))))]
    net.run()
    assert_same_chain(net, [0, 1, 2], [1, 2, 3])
    assert [c.txs for c in net.commits[2]] == [(tx(7),), (tx(8),), (tx(9),)]
    assert net.cores[2].own == set()  # executed: nothing left to re-forward
    # Replicas other than the primary never held the txs in their pools before the blocks came.
    assert not any(isinstance(o, Multicast) and isinstance(o.message, TxBatch) for n in (0, 1, 3)
                   for o in net.outputs.get(n, []))


def test_pipelined_batches_commit_in_order(pbft_net):
    net = pbft_net(batch_size=2, max_inflight=3)
    submit(net, 0, *(tx(i) for i in range(10)))
    # Three proposals are in flight before any vote comes back; the rest wait for commits.
    proposals = [o.message.block.height for o in net.outputs[0] if isinstance(o, Multicast)
                 and isinstance(o.message, PrePrepare)]
    assert proposals == [1, 2, 3]
    net.run()
    assert_same_chain(net, [0, 1, 2, 3], [1, 2, 3, 4, 5])
    # The first tx went alone (nothing proposed before); later ones waited for their pair.
    assert [c.txs for c in net.commits[1]] == [(tx(0),)] + [(tx(2 * i - 1), tx(2 * i)) for i in range(1, 5)]


def test_duplicate_and_committed_transactions_are_dropped(pbft_net):
    net = pbft_net(batch_size=1)
    submit(net, 0, tx(1))
    assert net.feed(0, Submitted(tx=tx(1))) == [TxDropped(tx_id=tx(1).id, reason="duplicate")]
    net.run()
    assert net.feed(1, Submitted(tx=tx(1))) == [TxDropped(tx_id=tx(1).id, reason="committed")]



def test_replicas_outside_the_group_do_not_vote(committee):
    """The T-PBFT hook: only group(e, v) members vote, yet quorums stay committee quorums."""
    class Grouped(Replica):
        def group(self, epoch, view):
            return (0, 1, 2)

    keys = committee(4)
    cores = {i: Grouped(committee=keys.committee, node_id=i, signer=keys.signers[i], verifier=keys.verifier,
                        config=Config(batch_size=1)) for i in range(4)}
    net = LocalNet(cores=cores, keys=keys, codec=Codec(MESSAGES))
    for i in cores:
        net.feed(i, Started())
    submit(net, 0, tx(1))
    net.run()
    assert net.heights() == {0: 1, 1: 1, 2: 1, 3: 0}
    assert net.commits[0][0].certificate.signers == (0, 1, 2)
    assert not any(isinstance(o, Multicast) and isinstance(o.message, Vote) for o in net.outputs[3])


def test_blocks_respect_the_byte_budget_and_oversized_txs_are_refused(pbft_net):
    net = pbft_net(batch_size=10, max_block_bytes=100)
    big = Transaction(payload=b"x" * 101)
    assert net.feed(0, Submitted(tx=big)) == [TxDropped(tx_id=big.id, reason="too_large")]
    txs = [Transaction(payload=bytes([i]) * 40) for i in range(5)]  # 48 bytes each with framing
    submit(net, 0, *txs)
    net.fire(0, BATCH)
    net.run()
    # txs[0] goes alone at once (nothing proposed before); then two 48-byte txs fill a 100-byte block.
    assert [c.txs for c in net.commits[2]] == [(txs[0],), tuple(txs[1:3]), tuple(txs[3:5])]
