"""Randomised runs on LocalNet: reordering, loss, a crashed replica, a Byzantine one, random timers.

Safety is checked throughout (no two correct replicas commit different blocks at one height,
commits are gap-free); liveness after the network heals (every submitted tx commits at every
correct replica that is up).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from dwcp.consensus.core import (
    Block,
    DecodeError,
    Fetched,
    Multicast,
    Received,
    RequestSync,
    Send,
    Started,
    Submitted,
    Vote,
)
from dwcp.consensus.pbft import Config
from dwcp.consensus.pbft.messages import Checkpoint, PrePrepare, ViewChange
from tests.consensus.conftest import LocalNet

from .conftest import make_committee, make_net, tx


@dataclass
class ByzantineNet(LocalNet):
    """Node `byz` runs the real core, but equivocates: each proposal goes out as two different
    blocks to two halves of the group, each vote is sent for a random digest to about half of the
    group, its view changes hide every proof (valid, but a lie by omission) and its checkpoints
    claim a random state."""

    byz: int = -1
    rng: random.Random | None = None

    def execute(self, node: int, outs: list) -> None:
        if node != self.byz:
            return super().execute(node, outs)
        forged = []
        for out in outs:
            if isinstance(out, Multicast) and isinstance(out.message, PrePrepare):
                pp, half = out.message, len(out.to) // 2
                b = pp.block
                other = Block(height=b.height, epoch=b.epoch, view=b.view, proposer=b.proposer,
                              txs=(*b.txs[:-1], tx(-b.height)))
                forged += [Send(to=to, message=pp) for to in out.to[:half]]
                forged += [Send(to=to, message=PrePrepare(epoch=pp.epoch, view=pp.view, block=other))
                           for to in out.to[half:]]
            elif isinstance(out, Multicast) and isinstance(out.message, Vote):
                v = out.message
                fake = Vote(kind=v.kind, epoch=v.epoch, view=v.view, height=v.height, digest=self.rng.randbytes(32))
                forged += [Send(to=to, message=v if self.rng.random() < 0.5 else fake) for to in out.to]
            elif isinstance(out, Multicast) and isinstance(out.message, ViewChange):
                vc = out.message
                forged.append(Multicast(to=out.to, message=ViewChange(epoch=vc.epoch, view=vc.view, height=0,
                                                                      committed=None, prepared=())))
            elif isinstance(out, Multicast) and isinstance(out.message, Checkpoint):
                lie = Checkpoint(height=out.message.height, state=self.rng.randbytes(32))
                forged.append(Multicast(to=out.to, message=lie))
            else:
                forged.append(out)
        return super().execute(node, forged)


def check_safety(net, correct) -> None:
    by_height: dict[int, set] = {}
    for n in correct:
        commits = net.commits.get(n, [])
        assert [c.height for c in commits] == list(range(1, len(commits) + 1))
        for c in commits:
            by_height.setdefault(c.height, set()).add(c.block)
    assert all(len(blocks) == 1 for blocks in by_height.values()), by_height


def serve_syncs(net, served: dict[int, int], correct) -> None:
    """The driver's catch-up: answer each node's new RequestSync from the longest correct log."""
    source = max(correct, key=lambda n: len(net.commits.get(n, [])))
    for node, outs in list(net.outputs.items()):
        reqs = [o for o in outs[served.get(node, 0):] if isinstance(o, RequestSync)]
        served[node] = len(outs)
        if node in net.down:
            continue
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


def run_chaos(seed: int, n: int, crashed: int | None, byz: int | None) -> None:
    rng = random.Random(seed)
    config = Config(batch_size=3, checkpoint_interval=4, window=12, request_timeout=0.5, view_change_timeout=0.5)
    base = make_net(make_committee(n), config, start=False)
    net = ByzantineNet(cores=base.cores, keys=base.keys, codec=base.codec, byz=-1 if byz is None else byz, rng=rng)
    for i in net.cores:
        net.feed(i, Started())
    correct = [i for i in net.cores if i != byz]
    live = [i for i in correct if i != crashed]
    submitted, served = [], {}
    for i in range(700):
        if i % 15 == 0 and len(submitted) < 45:
            t = tx(seed * 1000 + len(submitted))
            submitted.append(t)
            net.feed(rng.choice(live), Submitted(tx=t))
        if i == 150 and crashed is not None:
            net.down.add(crashed)
        step(net, rng, drop=0.1)
        serve_syncs(net, served, correct)
        check_safety(net, correct)
    # Heal: lossless delivery, timers in deadline order, until every tx is committed by the live nodes.
    for _ in range(20_000):
        if all({t for c in net.commits.get(i, []) for t in c.txs} >= set(submitted) for i in live):
            break
        if net.queue:
            net.run()
        else:
            fire_earliest(net)
        serve_syncs(net, served, correct)
    check_safety(net, correct)
    for i in live:
        assert {t for c in net.commits.get(i, []) for t in c.txs} >= set(submitted), (i, net.cores[i].status())


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("n", "crashed", "byz"), [(4, 0, None), (4, 1, None), (4, None, None), (4, None, 0),
                                                   (4, None, 2), (7, 0, 1), (7, 3, 0)])
def test_random_schedules_stay_safe_and_live(seed, n, crashed, byz):
    run_chaos(seed, n, crashed, byz)
