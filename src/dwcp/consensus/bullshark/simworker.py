"""Bullshark's hooks for the simulator's declared-batch data plane (`sim/dataplane.py`).

At the seed's scale the simulator plays the workers itself: batches are (digest, declared size, tx
count) and the primaries are the real cores, run as on a node (no in-core worker), fed the node's
`Local(BatchStored)` and read through the node's `ToLocal` (`FetchBatches`, `CommittedBatches`).
`signatures` tells the CPU model what a receiver verifies besides the envelope: a certificate's votes.
"""

from __future__ import annotations

from typing import Any

from dwcp.consensus.bullshark.messages import (
    BatchRef,
    BatchStored,
    CertificateResponse,
    CommittedBatches,
    DagCertificate,
    FetchBatches,
)
from dwcp.consensus.sim.dataplane import Executed, Fetch


class DeclaredWorkers:
    core_kwargs: dict[str, Any] = {"inline_batches": False}

    def stored(self, digest: bytes, txs: int, size: int, own: bool) -> BatchStored:
        return BatchStored(ref=BatchRef(digest=digest, worker=0, txs=txs, size=size), own=own)

    def command(self, message: Any) -> Fetch | Executed | None:
        if isinstance(message, FetchBatches):
            return Fetch(digests=message.digests, peer=message.peer)
        if isinstance(message, CommittedBatches):
            return Executed(height=message.height,
                            batches=tuple((r.digest, r.txs, r.size) for r in message.batches))
        return None

    def signatures(self, message: Any) -> int:
        if isinstance(message, DagCertificate):
            return len(message.signers)
        if isinstance(message, CertificateResponse):
            return sum(len(c.signers) for c in message.certificates)
        return 0
