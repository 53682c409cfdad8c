"""T-PBFT's group rules as scenarios: standby voting covers a group with more silent members than its
slack (no view change), followers that stepped in earn their way into the next group, epoch 0 measures
everyone, a view change keeps group voting, and a view that needed its followers keeps them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from dwcp.consensus.core import Submitted, Transaction, Vote
from dwcp.consensus.tpbft import Config
from tests.consensus.conftest import Keys, LocalNet

from .test_replica import FAST, make_net, tick

SILENT = (6, 7)  # two silent members of the group 0..7: its slack (g - q = 1) is not enough alone


def votes_for(net: LocalNet, node: int, height: int) -> list[Vote]:
    return [o.message for o in net.outputs.get(node, [])
            if isinstance(getattr(o, "message", None), Vote) and o.message.height == height]


def commit_next(net: LocalNet, payload: bytes, wait: float = 0.35) -> None:
    net.feed(0, Submitted(tx=Transaction(payload=payload)))
    net.run()
    tick(net, wait)  # past standby_after (0.3 s): the stuck height is widened


def test_followers_step_in_for_silent_members_without_a_view_change(committee: Callable[..., Keys]) -> None:
    net = make_net(committee(n=10))
    net.down.update(SILENT)
    live = [n for n in net.cores if n not in SILENT]
    net.feed(0, Submitted(tx=Transaction(payload=b"h1")))
    net.run()
    assert all(net.heights()[n] == 0 for n in live)  # 6 live members < quorum 7
    assert votes_for(net, 8, 1) == []  # followers wait: the group might still make it
    tick(net, 0.35)
    assert all(net.heights()[n] == 1 for n in live)
    assert {v.kind for v in votes_for(net, 8, 1)} == {"prepare", "commit"}  # the follower stepped in
    assert all(net.cores[n].view == 0 and net.cores[n].view_changes == 0 for n in live)


def test_a_view_that_needed_its_followers_keeps_them_without_waiting_again(committee: Callable[..., Keys]) -> None:
    net = make_net(committee(n=10))
    net.down.update(SILENT)
    live = [n for n in net.cores if n not in SILENT]
    commit_next(net, b"h1")  # stuck for standby_after, then widened
    assert all(net.heights()[n] == 1 for n in live)
    for h in (2, 3):  # the group is still short of a quorum: later heights are widened at once
        net.feed(0, Submitted(tx=Transaction(payload=b"h%d" % h)))
        net.run()  # no clock advance: nobody waits standby_after again
        assert all(net.heights()[n] == h for n in live)
        assert {v.kind for v in votes_for(net, 9, h)} == {"prepare", "commit"}
    assert all(net.cores[n].view_changes == 0 for n in live)
    assert net.cores[0].status()["widened_heights"] == 3


def test_with_sticky_widening_off_the_next_height_waits_for_the_group_again(committee: Callable[..., Keys]) -> None:
    net = make_net(committee(n=10), dataclasses.replace(FAST, standby_sticky_after=0))
    net.down.update(SILENT)
    live = [n for n in net.cores if n not in SILENT]
    commit_next(net, b"h1")
    net.feed(0, Submitted(tx=Transaction(payload=b"h2")))
    net.run()
    assert votes_for(net, 9, 2) == [] and net.heights()[0] == 1  # the group alone, until stuck again
    tick(net, 0.35)
    assert all(net.heights()[n] == 2 for n in live)
    assert net.cores[0].status()["widened_heights"] == 2


def test_a_group_with_enough_live_members_never_widens(committee: Callable[..., Keys]) -> None:
    net = make_net(committee(n=10))
    net.down.add(7)  # within the slack
    for h in range(1, 4):
        commit_next(net, b"tx%d" % h)
    assert net.heights()[8] == 3
    assert all(votes_for(net, f, h) == [] for f in (8, 9) for h in range(1, 4))
    assert net.cores[0].status()["widened_heights"] == 0


def test_followers_that_stepped_in_replace_silent_members_next_epoch(committee: Callable[..., Keys]) -> None:
    net = make_net(committee(n=10))
    net.down.update(SILENT)
    live = [n for n in net.cores if n not in SILENT]
    for h in range(1, 9):  # epoch 0 (epoch_length 8), every height widened
        commit_next(net, b"tx%d" % h)
    assert all(net.cores[n].epoch == 1 for n in live)
    group = net.cores[0].group(1, 0)
    assert set(SILENT).isdisjoint(group) and {8, 9} <= set(group)
    assert {tuple(net.cores[n].group(1, 0)) for n in live} == {group}
    # The new group commits on its own: nothing is widened any more.
    before = net.cores[0].status()["widened_heights"]
    net.feed(0, Submitted(tx=Transaction(payload=b"epoch-1")))
    net.run()
    tick(net, 0.01)
    assert all(net.heights()[n] == 9 for n in live)
    assert net.cores[0].status()["widened_heights"] == before


def test_epoch_zero_measures_everyone_and_the_silent_node_is_left_out(committee: Callable[..., Keys]) -> None:
    keys = committee(n=10)
    net = make_net(keys, Config(batch_size=1, epoch_length=8, evaluation_lag=1))  # measurement_epoch on
    net.down.add(1)
    live = [n for n in net.cores if n != 1]
    assert net.cores[0].group(0, 0) == keys.committee.ids
    for h in range(1, 9):
        commit_next(net, b"tx%d" % h, wait=0.01)
    assert all(net.heights()[n] == 8 and net.cores[n].epoch == 1 for n in live)
    assert all(votes_for(net, n, 1) for n in live)  # everyone voted in epoch 0
    group = net.cores[0].group(1, 0)
    assert len(group) == 8 and 1 not in group
    assert net.cores[0].ranking(1)[-1] == 1


def test_view_change_replaces_the_primary_and_keeps_group_voting(committee: Callable[..., Keys]) -> None:
    net = make_net(committee(n=10), FAST)
    net.down.add(0)  # primary of view 0
    net.feed(3, Submitted(tx=Transaction(payload=b"needs-a-new-primary")))
    net.run()
    for _ in range(6):
        tick(net, 1.5)
        if net.heights()[3]:
            break
    live = [n for n in net.cores if n != 0]
    assert all(net.heights()[n] == 1 and net.cores[n].view == 1 for n in live)
    assert net.cores[3].status()["group"] == [1, 2, 3, 4, 5, 6, 7, 8]
    before = {n: len(votes_for(net, 9, 2)) for n in (9,)}
    net.feed(3, Submitted(tx=Transaction(payload=b"view-1")))
    net.run()
    tick(net, 0.01)
    assert all(net.heights()[n] == 2 for n in live)
    assert len(votes_for(net, 9, 2)) == before[9] == 0  # node 9 is a follower again in view 1


def test_node_settings_set_standby_delay_and_measurement_epoch() -> None:
    from dwcp.consensus.tpbft.settings import Settings

    config = Settings.model_validate({"standby_after_ms": 50, "measurement_epoch": False,
                                      "standby_sticky_after": 0}).core_config(1000)
    assert (config.standby_after, config.measurement_epoch, config.standby_sticky_after) == (0.05, False, 0)
    default = Settings.model_validate({}).core_config(1000)
    assert (default.standby_after, default.measurement_epoch) == (Config().standby_after, True)
