"""Randomised runs on LocalNet: reordering, loss, a crashed replica and timers firing at random.

Safety is checked throughout (no two replicas commit different blocks at one height, commits are
gap-free); liveness after the network heals (every submitted tx commits everywhere alive).
"""

from __future__ import annotations

import random

import pytest

from dwcp.consensus.core import DecodeError, Fetched, Received, RequestSync, Submitted

from .conftest import tx


def check_safety(net) -> None:
    by_height: dict[int, set] = {}
    for commits in net.commits.values():
        assert [c.height for c in commits] == list(range(1, len(commits) + 1))
        for c in commits:
            by_height.setdefault(c.height, set()).add(c.block)
    assert all(len(blocks) == 1 for blocks in by_height.values()), by_height


def serve_syncs(net, served: dict[int, int]) -> None:
    """The driver's catch-up: answer each node's new RequestSync from the longest log."""
    for node, outs in list(net.outputs.items()):
        if node in net.down:
            continue
        reqs = [o for o in outs[served.get(node, 0):] if isinstance(o, RequestSync)]
        served[node] = len(outs)
        source = max(net.commits, key=lambda n: len(net.commits[n]), default=None)
        for req in reqs:
            for c in net.commits.get(source, [])[req.from_height - 1:req.to_height]:
                net.feed(node, Fetched(sender=source, block=c.block, certificate=c.certificate))


def fire_earliest(net) -> None:
    """After the network heals it is synchronous: queued messages first, then the earliest timer."""
    due = [(t, n, timer) for n, ts in net.timers.items() if n not in net.down for timer, t in ts.items()]
    if due:
        t, node, timer = min(due, key=lambda d: (d[0], d[1], d[2].kind))
        net.now = max(net.now, t)
        net.fire(node, timer)


def step(net, rng, drop: float) -> None:
    if net.queue and rng.random() < 0.92:
        i = rng.randrange(len(net.queue))
        sender, to, frame = net.queue[i]
        del net.queue[i]
        if to in net.down or rng.random() < drop:
            return
        opened = net.codec.open(net.keys.verifier, frame)
        assert not isinstance(opened, DecodeError)
        net.feed(to, Received(sender=sender, message=opened.message, signature=opened.signature))
        return
    alive = [n for n in net.cores if n not in net.down and net.timers.get(n)]
    if alive:
        node = rng.choice(alive)
        timer, due = min(net.timers[node].items(), key=lambda kv: kv[1])
        net.now = max(net.now, due)
        net.fire(node, timer)


@pytest.mark.parametrize("seed", range(6))
def test_random_schedules_stay_safe_and_live(pbft_net, seed):
    rng = random.Random(seed)
    net = pbft_net(batch_size=3, checkpoint_interval=4, window=16, request_timeout=0.5, view_change_timeout=0.5)
    crashed = rng.choice([0, 1, None])  # the first primary, another replica, or nobody
    submitted = []
    served: dict[int, int] = {}
    for i in range(600):
        if i % 20 == 0 and len(submitted) < 40:
            t = tx(seed * 1000 + len(submitted))
            submitted.append(t)
            net.feed(rng.choice([n for n in net.cores if n != crashed]), Submitted(tx=t))
        if i == 150 and crashed is not None:
            net.down.add(crashed)
        step(net, rng, drop=0.1)
        serve_syncs(net, served)
        check_safety(net)
    # Heal: lossless delivery, timers in deadline order, until every tx is committed by the live nodes.
    live = [n for n in net.cores if n != crashed]
    for _ in range(20_000):
        if all({c_tx for c in net.commits.get(n, []) for c_tx in c.txs} >= set(submitted) for n in live):
            break
        if net.queue:
            net.run()
        else:
            fire_earliest(net)
        serve_syncs(net, served)
    check_safety(net)
    for n in live:
        assert {t for c in net.commits.get(n, []) for t in c.txs} >= set(submitted), (n, net.cores[n].status())
