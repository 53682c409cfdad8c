"""`accepted_grace` (default 1) as scenarios: a request timeout whose tx is in a block this node accepted in the
current view, still gaining votes, waits (boundedly) for them instead of deposing the primary; a block that
stopped gaining votes, or a tx in no accepted block, gets no grace, and the grace ends even while votes keep coming.
`FAST` is the default config but for batching and the epoch (`accepted_grace` left at its default)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from dwcp.consensus.core import Received, Submitted, Transaction, Vote
from tests.consensus.conftest import Keys, LocalNet

from .test_replica import FAST, make_net, tick

DOWN = (5, 6, 7)  # three silent group members of 0..7: the 7 others are exactly a quorum
SLOW = (8, 9)  # the followers, whose traffic is held (not lost) until `release`
OFF = dataclasses.replace(FAST, accepted_grace=0)  # PBFT's request timer


class SlowLinks:
    """Holds every message to or from some nodes (not lost: `release` delivers them), as slow links would."""

    def __init__(self, net: LocalNet, nodes: tuple[int, ...]) -> None:
        self.net, self.post = net, net._post
        self.held: dict[int, list[tuple[int, int, Any]]] = {n: [] for n in nodes}
        net._post = self._post  # type: ignore[method-assign]

    def _post(self, sender: int, to: int, message: Any) -> None:
        slow = next((n for n in self.held if n in (sender, to)), None)
        if slow is not None and sender not in self.net.down and to not in self.net.down:
            self.held[slow].append((sender, to, message))
        else:
            self.post(sender, to, message)

    def release(self, node: int) -> None:
        for sender, to, message in self.held.pop(node):
            self.post(sender, to, message)
        self.net.run()


def stall(keys: Keys, config: Any) -> tuple[LocalNet, SlowLinks, list[int]]:
    """A backup's tx whose block (height 1, view 0) the primary proposed but the group cannot commit yet."""
    net = make_net(keys, config)
    net.down.update(DOWN)
    links = SlowLinks(net, SLOW)
    net.feed(3, Submitted(tx=Transaction(payload=b"waits-for-votes")))
    net.run()
    tick(net, 0.01)  # forwarded to the primary, proposed, accepted by the live members
    members = [n for n in net.cores if n not in DOWN and n not in SLOW]
    assert members == [0, 1, 2, 3, 4] and all(1 in net.cores[n].slots for n in members)
    assert net.heights()[3] == 0
    return net, links, members


def wait_until(net: LocalNet, t: float) -> None:
    while net.now < t - 1e-9:
        tick(net, 0.05)


def test_a_block_still_gaining_votes_does_not_depose_its_primary(committee: Callable[..., Keys]) -> None:
    net, links, members = stall(committee(n=10), FAST)  # the default config: fails with the grace off
    wait_until(net, 0.8)
    links.release(9)  # one follower's votes arrive (widened at 0.3 s): the block is still gaining votes
    wait_until(net, 1.2)  # past request_timeout (1 s), within the grace
    assert all(net.cores[n].view_changes == 0 for n in members)
    links.release(8)  # the last vote needed: a quorum, in view 0
    tick(net, 0.01)
    assert all(net.heights()[n] == 1 and net.cores[n].view == 0 for n in net.cores if n not in DOWN)
    assert all(net.cores[n].view_changes == 0 for n in net.cores if n not in DOWN)


def test_without_the_grace_the_same_wait_deposes_the_primary(committee: Callable[..., Keys]) -> None:
    net, links, members = stall(committee(n=10), OFF)
    wait_until(net, 0.8)
    links.release(9)
    wait_until(net, 1.2)
    assert all(net.cores[n].view_changes == 1 for n in members if n != 0)


def test_a_block_that_stopped_gaining_votes_gets_no_grace(committee: Callable[..., Keys]) -> None:
    net, _, members = stall(committee(n=10), FAST)  # no vote after the live members' own, at once
    wait_until(net, 1.2)
    assert all(net.cores[n].view_changes == 1 for n in members if n != 0)  # PBFT's time: 1.01 s


def test_the_grace_ends_even_while_votes_keep_arriving(committee: Callable[..., Keys]) -> None:
    net, _, members = stall(committee(n=10), FAST)
    digest = net.cores[0].slots[1].digest
    backups = [n for n in members if n != 0]
    forged = [(v, kind) for v in DOWN for kind in ("prepare", "commit")]  # never a quorum: bad signatures
    due = 0.6
    while not all(net.cores[n].view_changes for n in backups):
        tick(net, 0.05)
        if forged and net.now >= due:  # a Byzantine voter keeps the block "gaining votes" (once per kind)
            voter, kind = forged.pop(0)
            vote = Vote(kind=kind, epoch=0, view=0, height=1, digest=digest)
            for n in members:
                net.feed(n, Received(sender=voter, message=vote, signature=bytes(64), verified=False))
            net.run()
            due += 0.4
        assert net.now < 3.0
    assert all(net.cores[n].view_changes == 1 for n in backups)
    # PBFT suspects half a timeout after the tx's restart (at ~1.01 s); the grace adds one timeout, no more.
    assert 2.0 <= net.now <= 2.06


def test_a_tx_in_no_accepted_block_gets_no_grace(committee: Callable[..., Keys]) -> None:
    net = make_net(committee(n=10), FAST)
    net.down.add(0)  # the primary: nothing is proposed, so nothing is accepted
    net.feed(3, Submitted(tx=Transaction(payload=b"never-proposed")))
    net.run()
    for _ in range(11):
        tick(net, 0.1)
    assert net.cores[3].view_changes == 1  # PBFT's timer: 1 s


def test_the_grace_is_on_by_default_and_node_settings_can_turn_it_off() -> None:
    from dwcp.consensus.tpbft import Config
    from dwcp.consensus.tpbft.settings import Settings

    assert Config().accepted_grace == FAST.accepted_grace == 1
    assert Settings.model_validate({}).core_config(1000).accepted_grace == 1
    assert Settings.model_validate({"accepted_grace": 0}).core_config(1000).accepted_grace == 0
    assert Settings.model_validate({"accepted_grace": 2}).core_config(1000).accepted_grace == 2
