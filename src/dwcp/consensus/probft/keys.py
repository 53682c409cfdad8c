"""VRF keys for ProBFT cores: the simulator's stand-ins and a real node's keys.

In a simulated run every node's VRF secret comes from the run's seed (like its signing key in
`sim.nodes.make_keys`): `MacVrf` by default, the real RFC 9381 `EcVrf` with `--crypto ed25519`.
A real node proves with its own ECVRF secret (`node.keys.vrf_secret_of`) and checks the others'
proofs against the committee file's `vrf_public_key`s (`dwcp consensus keygen` writes them).
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


class MissingVrfKeys(ValueError):
    """The committee file predates VRF keys: ProBFT cannot check anyone's samples."""


def node_extras(keys: Any) -> Mapping[str, Any]:
    """The VRF prover and verifier of a real node, from its loaded `NodeKeys`."""
    missing = [m.node_id for m in keys.committee.members if not m.vrf_key]
    if missing:
        raise MissingVrfKeys(f"committee {keys.committee.name!r} has no VRF public key for nodes {missing}: "
                             "regenerate it with `dwcp consensus keygen`")
    me = keys.signer.node_id
    return {"vrf": EcVrf(me, keys.vrf_secret),
            "vrf_verifier": EcVrfVerifier({m.node_id: m.vrf_key for m in keys.committee.members})}
