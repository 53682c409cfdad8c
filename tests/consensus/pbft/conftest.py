"""PBFT fixtures: a LocalNet of real `pbft.Replica` cores over the real codec, and small helpers."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dwcp.consensus.core import (
    Codec,
    Fetched,
    Received,
    RequestSync,
    Started,
    Submitted,
    Transaction,
    encode,
    signing_bytes,
)
from dwcp.consensus.pbft import MESSAGES, Config, Replica
from tests.consensus.conftest import Keys, LocalNet, make_committee


def make_net(keys: Keys, config: Config | None = None, start: bool = True) -> LocalNet:
    cores = {
        i: Replica(committee=keys.committee, node_id=i, signer=keys.signers[i], verifier=keys.verifier, config=config)
        for i in keys.committee.ids
    }
    net = LocalNet(cores=cores, keys=keys, codec=Codec(MESSAGES))
    if start:
        for i in cores:
            net.feed(i, Started())
        net.run()
    return net


def tx(i: int) -> Transaction:
    return Transaction(payload=f"tx-{i}".encode())


def submit(net: LocalNet, node: int, *txs: Transaction) -> None:
    for t in txs:
        net.feed(node, Submitted(tx=t))


def spread(net: LocalNet, node: int, *txs: Transaction) -> None:
    """Submit `txs` at `node` and have it send them to the whole group at once, as it does when its
    request timer runs out or a view change starts: then every replica's request timer covers them."""
    submit(net, node, *txs)
    outs: list = []
    net.cores[node]._announce(list(txs), outs)
    net.execute(node, outs)


@pytest.fixture
def pbft_net() -> Callable[..., LocalNet]:
    """Factory: `pbft_net(n=4, **config)` -> a started LocalNet of PBFT replicas."""

    def build(n: int = 4, start: bool = True, **config: object) -> LocalNet:
        return make_net(make_committee(n), Config(**config), start=start)

    return build


def received(keys: Keys, sender: int, msg: object) -> Received:
    """`msg` as the driver would hand it over: with `sender`'s real envelope signature."""
    return Received(sender=sender, message=msg, signature=keys.signers[sender].sign(signing_bytes(sender, encode(msg))))


def deliver(net: LocalNet, drop: Callable[[int, int, object], bool]) -> int:
    """Like `net.run()`, but drops each frame for which `drop(sender, to, message)` is true."""
    steps = 0
    while net.queue:
        sender, to, frame = net.queue.popleft()
        if to in net.down:
            continue
        inp = net.open(to, frame)
        if drop(sender, to, inp.message):
            continue
        net.feed(to, inp)
        steps += 1
    return steps


def serve_sync(net: LocalNet, node: int, source: int) -> int:
    """Play the driver's catch-up for `node`: answer its latest `RequestSync` with `source`'s commits."""
    syncs = [o for o in net.outputs.get(node, []) if isinstance(o, RequestSync)]
    if not syncs:
        return 0
    req = syncs[-1]
    fed = 0
    for c in net.commits.get(source, []):
        if req.from_height <= c.height <= req.to_height:
            net.feed(node, Fetched(sender=source, block=c.block, certificate=c.certificate))
            fed += 1
    return fed
