"""Client transactions handed over together (`SubmittedBatch`, one batched HTTP request): pooled in one
step and forwarded to the primary in one signed TxBatch, where one `Submitted` each would forward the
first at once and the rest a forwarding interval later."""

from __future__ import annotations

from collections.abc import Callable

from dwcp.consensus.core import Multicast, Submitted, SubmittedBatch, TxBatch, TxDropped
from dwcp.consensus.core.outputs import SetTimer
from dwcp.consensus.pbft.state import GOSSIP
from tests.consensus.conftest import LocalNet
from tests.consensus.pbft.conftest import tx


def _forwards(outs: list) -> list[Multicast]:
    return [o for o in outs if isinstance(o, Multicast) and isinstance(o.message, TxBatch)]


def test_a_backup_forwards_a_batched_request_to_the_primary_as_one_tx_batch(pbft_net: Callable[..., LocalNet]) -> None:
    net = pbft_net(4, gossip_delay=0.005)
    txs = tuple(tx(i) for i in range(10))
    outs = net.cores[1].handle(net.now, SubmittedBatch(txs=txs))
    (forward,) = _forwards(outs)
    assert forward.to == (0,) and forward.message.txs == txs
    assert not [o for o in outs if isinstance(o, SetTimer) and o.timer == GOSSIP]  # nothing left waiting
    net.execute(1, outs)
    net.run()
    assert all(net.cores[i].height >= 1 for i in net.cores)
    assert {t.id for t in txs} <= net.cores[3].mempool.committed


def test_the_same_transactions_one_by_one_leave_all_but_the_first_for_the_next_forward(
        pbft_net: Callable[..., LocalNet]) -> None:
    net = pbft_net(4, gossip_delay=0.005)
    outs: list = []
    for i in range(10):
        outs += net.cores[1].handle(net.now, Submitted(tx=tx(i)))
    (forward,) = _forwards(outs)
    assert forward.message.txs == (tx(0),)  # the rest wait for the gossip timer: a second signed TxBatch
    assert len(net.cores[1].outbox) == 9 and any(isinstance(o, SetTimer) and o.timer == GOSSIP for o in outs)


def test_a_batch_drops_its_known_and_repeated_transactions_and_forwards_the_rest(
        pbft_net: Callable[..., LocalNet]) -> None:
    net = pbft_net(4, gossip_delay=0.005)
    net.feed(1, Submitted(tx=tx(0)))  # pending here already
    outs = net.cores[1].handle(net.now + 1.0, SubmittedBatch(txs=(tx(0), tx(1), tx(1), tx(2))))
    assert [(o.tx_id, o.reason) for o in outs if isinstance(o, TxDropped)] == [
        (tx(0).id, "duplicate"), (tx(1).id, "duplicate")]
    (forward,) = _forwards(outs)
    assert forward.message.txs == (tx(1), tx(2))


def test_the_primary_proposes_a_batch_handed_to_it_without_forwarding(pbft_net: Callable[..., LocalNet]) -> None:
    net = pbft_net(4, batch_delay=0.0)
    outs = net.cores[0].handle(net.now, SubmittedBatch(txs=tuple(tx(i) for i in range(5))))
    assert not _forwards(outs)
    net.execute(0, outs)
    net.run()
    assert all(net.cores[i].height == 1 for i in net.cores)
    assert len(net.cores[2].mempool.committed) == 5
