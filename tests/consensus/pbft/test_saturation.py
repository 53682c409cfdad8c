"""A primary that keeps committing full blocks is busy, not faulty: a backlog alone starts no view change,
but a transaction left out past the grace is treated as censored."""

from __future__ import annotations

from dwcp.consensus.core import SetTimer, TxBatch
from dwcp.consensus.pbft import Mode
from dwcp.consensus.pbft.messages import ViewChange
from dwcp.consensus.pbft.state import REQUEST

from .conftest import deliver, spread, submit, tx


def _view_changes(outs: list) -> list:
    return [o for o in outs if isinstance(getattr(o, "message", None), ViewChange)]


def _backlog_behind_full_blocks(pbft_net, full_block_at: float):
    """Node 2 holds tx(1) since t=0 and has sent it to the whole group, but the primary never got it (so
    it cannot propose it); the primary commits a full block (batch_size=1) of tx(2) at `full_block_at`."""
    net = pbft_net(batch_size=1, max_inflight=1)
    spread(net, 2, tx(1))
    deliver(net, drop=lambda sender, to, msg: isinstance(msg, TxBatch) and to == 0)
    net.now = full_block_at
    submit(net, 0, tx(2))
    net.run()
    assert net.heights() == {0: 1, 1: 1, 2: 1, 3: 1}
    return net


def test_backlog_behind_full_blocks_starts_no_view_change(pbft_net):
    net = _backlog_behind_full_blocks(pbft_net, full_block_at=1.2)
    net.now = 1.5  # tx(1) waited past request_timeout (1 s), but a full block committed 0.3 s ago
    outs = net.fire(2, REQUEST)
    assert _view_changes(outs) == [] and SetTimer(timer=REQUEST, delay=0.5) in outs
    assert net.cores[2].mode is Mode.NORMAL
    net.now = 2.6  # no full block for 1.4 s: the primary is no longer visibly busy
    assert _view_changes(net.fire(2, REQUEST))
    assert net.cores[2].mode is Mode.VIEW_CHANGE


def test_a_tx_left_out_past_the_grace_is_treated_as_censored(pbft_net):
    net = _backlog_behind_full_blocks(pbft_net, full_block_at=3.9)
    net.now = 4.0  # waited 4 s = (1 + saturation_grace) x request_timeout, full blocks notwithstanding
    assert _view_changes(net.fire(2, REQUEST))
    assert net.cores[2].mode is Mode.VIEW_CHANGE
