"""ProBFT fixtures: a LocalNet of real `probft.Replica` cores over the real codec."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dwcp.consensus.core import Codec, Started
from dwcp.consensus.core.vrf import EcVrf, EcVrfVerifier, MacVrf, MacVrfVerifier, mac_vrf_secret
from dwcp.consensus.probft import MESSAGES, Config, Replica
from tests.consensus.conftest import LocalNet, make_committee


def vrf_keys(n: int, real: bool) -> tuple[dict[int, object], object]:
    secrets = {i: mac_vrf_secret(7, i) for i in range(n)}
    if real:
        provers = {i: EcVrf(i, s) for i, s in secrets.items()}
        return provers, EcVrfVerifier({i: p.public_key for i, p in provers.items()})
    return {i: MacVrf(i, s) for i, s in secrets.items()}, MacVrfVerifier(secrets)


def make_probft_net(n: int = 7, *, real_vrf: bool = False, start: bool = True, **config: object) -> LocalNet:
    keys = make_committee(n)
    provers, vrf_verifier = vrf_keys(n, real_vrf)
    cores = {
        i: Replica(committee=keys.committee, node_id=i, signer=keys.signers[i], verifier=keys.verifier,
                   vrf=provers[i], vrf_verifier=vrf_verifier, config=Config(**config))
        for i in keys.committee.ids
    }
    net = LocalNet(cores=cores, keys=keys, codec=Codec(MESSAGES))
    net.provers = provers  # type: ignore[attr-defined]
    if start:
        for i in cores:
            net.feed(i, Started())
        net.run()
    return net


@pytest.fixture
def probft_net() -> Callable[..., LocalNet]:
    """Factory: `probft_net(n=7, real_vrf=False, **config)` -> a started LocalNet of ProBFT replicas."""
    return make_probft_net
