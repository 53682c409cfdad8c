"""`accepted_grace` as scenarios: a request timeout whose tx is in a block this node accepted in the current
view waits (boundedly) for the block's votes instead of deposing the primary; a primary whose block never
commits is still deposed once the grace is spent, and a tx in no accepted block gets no grace at all."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from dwcp.consensus.core import Submitted, Transaction
from tests.consensus.conftest import Keys, LocalNet

from .test_replica import FAST, make_net, tick

DOWN = (5, 6, 7)  # three silent group members of 0..7: the 7 others are exactly a quorum
SLOW = 8  # a follower whose traffic is held (not lost) until `release`
GRACE = dataclasses.replace(FAST, accepted_grace=1)


def hold(net: LocalNet, node: int) -> list[tuple[int, int, Any]]:
    """Hold every message to or from `node` (not lost: `release` delivers them), as a slow link would."""
    held: list[tuple[int, int, Any]] = []
    post = net._post

    def slow_post(sender: int, to: int, message: Any) -> None:
        if node in (sender, to) and sender not in net.down and to not in net.down:
            held.append((sender, to, message))
        else:
            post(sender, to, message)

    net._post = slow_post  # type: ignore[method-assign]
    net.held = held  # type: ignore[attr-defined]
    net.post = post  # type: ignore[attr-defined]
    return held


def release(net: LocalNet) -> None:
    net._post = net.post  # type: ignore[attr-defined,method-assign]
    for sender, to, message in net.held:  # type: ignore[attr-defined]
        net._post(sender, to, message)
    net.run()


def stall(keys: Keys, config: Any) -> tuple[LocalNet, list[int]]:
    """A backup's tx whose block (height 1, view 0) the primary proposed but the group cannot commit yet."""
    net = make_net(keys, config)
    net.down.update(DOWN)
    hold(net, SLOW)
    net.feed(3, Submitted(tx=Transaction(payload=b"waits-for-votes")))
    net.run()
    tick(net, 0.01)  # forwarded to the primary, proposed, accepted
    live = [n for n in net.cores if n not in DOWN and n != SLOW]
    members = [n for n in live if n in net.cores[0].group(0, 0)]  # the follower 9 gets it once widened
    assert members == [0, 1, 2, 3, 4] and all(1 in net.cores[n].slots for n in members)
    assert net.heights()[3] == 0
    return net, live


def test_a_block_waiting_for_votes_does_not_depose_its_primary(committee: Callable[..., Keys]) -> None:
    net, live = stall(committee(n=10), GRACE)
    for _ in range(12):  # 1.2 s: past request_timeout (1 s), within the grace
        tick(net, 0.1)
    assert all(net.cores[n].view_changes == 0 for n in live)
    release(net)  # the slow follower's vote arrives: a quorum, in view 0
    tick(net, 0.01)
    assert all(net.heights()[n] == 1 and net.cores[n].view == 0 for n in [*live, SLOW])
    assert all(net.cores[n].view_changes == 0 for n in [*live, SLOW])


def test_without_the_grace_the_same_wait_deposes_the_primary(committee: Callable[..., Keys]) -> None:
    net, live = stall(committee(n=10), FAST)
    for _ in range(12):
        tick(net, 0.1)
    assert all(net.cores[n].view_changes == 1 for n in live if n != 0)


def test_a_primary_whose_block_never_commits_is_deposed_once_the_grace_is_spent(
    committee: Callable[..., Keys],
) -> None:
    net, live = stall(committee(n=10), GRACE)
    for _ in range(25):  # the block never gathers a quorum (SLOW is never released)
        tick(net, 0.1)
        if all(net.cores[n].view_changes for n in live if n != 0):
            break
    backups = [n for n in live if n != 0]
    assert all(net.cores[n].view_changes == 1 for n in backups)
    # PBFT suspects half a timeout after the tx's restart (at 1.01 s); the grace adds one timeout, no more.
    assert 0.01 + 0.5 + 0.5 + 1.0 - 0.1 <= net.now <= 0.01 + 0.5 + 0.5 + 1.0 + 0.1


def test_a_tx_in_no_accepted_block_gets_no_grace(committee: Callable[..., Keys]) -> None:
    net = make_net(committee(n=10), GRACE)
    net.down.add(0)  # the primary: nothing is proposed, so nothing is accepted
    net.feed(3, Submitted(tx=Transaction(payload=b"never-proposed")))
    net.run()
    for _ in range(11):
        tick(net, 0.1)
    assert net.cores[3].view_changes == 1  # PBFT's timer: 1 s


def test_node_settings_set_the_grace_and_leave_it_off_by_default() -> None:
    from dwcp.consensus.tpbft.settings import Settings

    assert Settings.model_validate({}).core_config(1000).accepted_grace == 0
    assert Settings.model_validate({"accepted_grace": 2}).core_config(1000).accepted_grace == 2
