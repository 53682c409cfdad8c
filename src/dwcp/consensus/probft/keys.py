"""VRF keys for ProBFT cores: the simulator's stand-ins and a real node's keys.

In a simulated run every node's VRF secret comes from the run's seed (like its signing key in
`sim.nodes.make_keys`): `MacVrf` by default, the real RFC 9381 `EcVrf` with `--crypto ed25519`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dwcp.consensus.core.committee import Committee
from dwcp.consensus.core.vrf import EcVrf, EcVrfVerifier, MacVrf, MacVrfVerifier, ecvrf_public_key, mac_vrf_secret

_verifiers: dict[tuple[int, int, str], Any] = {}  # one verifier per simulated run, shared by its nodes


def sim_extras(seed: int, committee: Committee, node_id: int, crypto: str) -> Mapping[str, Any]:
    key = (seed, committee.n, crypto)
    secrets = {i: mac_vrf_secret(seed, i) for i in committee.ids}
    verifier = _verifiers.get(key)
    if verifier is None:
        if crypto == "ed25519":
            verifier = EcVrfVerifier({i: ecvrf_public_key(s) for i, s in secrets.items()})
        else:
            verifier = MacVrfVerifier(secrets)
        _verifiers.clear()  # runs come one after another in a process: keep only the current one
        _verifiers[key] = verifier
    prover = EcVrf(node_id, secrets[node_id]) if crypto == "ed25519" else MacVrf(node_id, secrets[node_id])
    return {"vrf": prover, "vrf_verifier": verifier}
