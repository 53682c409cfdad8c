"""The interface every protocol core implements, and certificate verification for catch-up.

A core is a deterministic state machine: `handle(now, input) -> list[Output]`. No sockets, clocks,
threads or global randomness; time arrives as `now`, randomness as an injected `random.Random`,
keys as an injected `Signer`/`Verifier`. Bad peer input never raises (it yields `Rejected`);
misuse by our own driver (e.g. feeding `Restored` out of order) raises `LocalProtocolError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from typing import Protocol as _Protocol

from dwcp.consensus.core.codec import block_digest, encode, signing_bytes
from dwcp.consensus.core.committee import Committee
from dwcp.consensus.core.crypto import Verifier
from dwcp.consensus.core.inputs import Input
from dwcp.consensus.core.messages import Block, Certificate
from dwcp.consensus.core.outputs import Output


class LocalProtocolError(Exception):
    """Our own driver misused a core (a bug in our code, never caused by a peer)."""


class Protocol(_Protocol):
    node_id: int
    committee: Committee

    def handle(self, now: float, input: Input) -> list[Output]: ...

    def status(self) -> dict[str, Any]:
        """Read-only state for metrics and `GET /v1/status`: at least height, view, epoch, pending."""
        ...

    def verify_certificate(self, height: int, block: Block, certificate: Certificate) -> bool: ...


def check_quorum_signatures(
    committee: Committee, verifier: Verifier, certificate: Certificate, quorum: int | None = None,
    members: Sequence[int] | None = None,
) -> bool:
    """True when `certificate` holds >= quorum valid signatures of distinct committee members
    (restricted to `members` when given) over its vote. Verdicts are memoised in `verifier.verdicts`."""
    need = committee.quorum if quorum is None else quorum
    if len(certificate.signers) != len(certificate.signatures) or len(set(certificate.signers)) < need:
        return False
    key = ("quorum", committee.digest(), need, None if members is None else tuple(members), certificate)
    known = verifier.verdicts.get(key)
    if known is not None:
        return known
    allowed = set(committee.ids if members is None else members)
    payload = encode(certificate.vote())
    good = 0
    for signer, sig in zip(certificate.signers, certificate.signatures, strict=True):
        if signer in allowed and verifier.verify(signer, signing_bytes(signer, payload), sig):
            good += 1
    return verifier.verdicts.put(key, good >= need and len(set(certificate.signers)) == len(certificate.signers))


def verify_certificate(
    committee: Committee, verifier: Verifier, height: int, block: Block, certificate: Certificate
) -> bool:
    """Can a node that saw none of the protocol messages accept `block` at `height`?

    For PBFT and T-PBFT every commit certificate is a committee quorum (2f+1 of n) of commit votes,
    whatever group voted, so this needs only the committee; the transport's catch-up can call it
    before storing a fetched block (cores also check `Fetched` inputs themselves).
    """
    return (
        certificate.kind == "commit"
        and certificate.height == height == block.height
        and certificate.digest == block_digest(block)
        and check_quorum_signatures(committee, verifier, certificate)
    )
