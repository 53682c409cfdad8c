"""From ordered sub-DAGs to heights of the shared log, each with a certificate anyone can check.

Ordering is local: a node decides sub-DAG h from its own DAG. For the log (catch-up, /v1/blocks,
restarts) a height needs proof a stranger can verify, so after ordering sub-DAG h every primary
broadcasts the core `Vote(kind=COMMIT_VOTE, height=h, digest=block digest)` and a height is
committed once f + 1 primaries (ourselves included) signed the same digest: any f + 1 include a
correct node, and correct nodes order the same sub-DAG at h (ordering.py). The certificate is
those signatures, checked by `verify` with the committee's keys alone. Cost: one message delay
after ordering, paid in parallel by every node.

`SubDag` (the block's `meta`) records what the height commits; `block_of` builds it.
"""

from __future__ import annotations

from dwcp.consensus.bullshark.messages import COMMIT_VOTE, BatchRef, CommittedCert, DagCertificate, SubDag
from dwcp.consensus.bullshark.ordering import CommittedSubDag
from dwcp.consensus.core.codec import block_digest, encode
from dwcp.consensus.core.committee import Committee
from dwcp.consensus.core.crypto import Verifier
from dwcp.consensus.core.messages import Block, Certificate
from dwcp.consensus.core.protocol import check_quorum_signatures

ATTESTATION_WINDOW = 256  # heights ahead of ours whose attestations we keep (a bounded buffer)


class BatchWindow:
    """Batches committed at the last `heights` heights: a batch named again (a restarted node
    re-proposing its own batches) is skipped, so a transaction executes once. A function of the
    committed sequence, so every node skips the same ones."""

    def __init__(self, heights: int = 100_000) -> None:
        self.heights = heights
        self._at: dict[bytes, int] = {}
        self._order: list[tuple[int, bytes]] = []

    def fresh(self, height: int, refs: tuple[BatchRef, ...]) -> tuple[BatchRef, ...]:
        out = []
        for ref in refs:
            if ref.digest not in self._at:
                self._at[ref.digest] = height
                self._order.append((height, ref.digest))
                out.append(ref)
        if len(self._order) > 2 * len(self._at) or (self._order and self._order[0][0] < height - self.heights):
            self._order = [(h, d) for h, d in self._order if h >= height - self.heights]
            self._at = {d: h for h, d in self._order}
        return tuple(out)


def block_of(sub_dag: CommittedSubDag, window: BatchWindow) -> Block:
    certs: tuple[DagCertificate, ...] = sub_dag.certificates  # type: ignore[assignment]
    table, scores, commits = sub_dag.schedule
    record = SubDag(
        leader_round=sub_dag.leader.round, leader_author=sub_dag.leader.author, leader_digest=sub_dag.leader.digest,
        certificates=tuple(CommittedCert(c.round, c.author, c.digest) for c in certs),
        batches=window.fresh(sub_dag.index, tuple(ref for c in certs for ref in c.header.payload)),
        schedule=table, scores=scores, schedule_commits=commits,
    )
    return Block(height=sub_dag.index, epoch=0, view=sub_dag.leader.round, proposer=sub_dag.leader.author,
                 meta=encode(record))


def transactions(record: SubDag) -> int:
    return sum(b.txs for b in record.batches)


def batches_of(record: SubDag) -> tuple[BatchRef, ...]:
    return record.batches


def verify(committee: Committee, verifier: Verifier, height: int, block: Block, cert: Certificate) -> bool:
    return (
        cert.kind == COMMIT_VOTE and cert.height == height == block.height
        and cert.digest == block_digest(block)
        and check_quorum_signatures(committee, verifier, cert, quorum=committee.validity)
    )


class CommitLog:
    """Emits `(height, block, certificate)` in height order once f + 1 attestations agree with ours."""

    def __init__(self, validity: int) -> None:
        self.validity = validity
        self.next_height = 1
        self.ours: dict[int, tuple[Block, bytes]] = {}  # ordered here, not yet committed: block, digest
        self.attestations: dict[int, dict[bytes, dict[int, bytes]]] = {}  # height -> digest -> signer -> sig

    def ordered(self, block: Block, digest: bytes) -> list[tuple[Block, Certificate]]:
        if block.height >= self.next_height:
            self.ours[block.height] = (block, digest)
        return self._ready()

    def attest(self, signer: int, height: int, digest: bytes, signature: bytes) -> list[tuple[Block, Certificate]]:
        if not self.next_height <= height < self.next_height + ATTESTATION_WINDOW:
            return []
        by_signer = self.attestations.setdefault(height, {}).setdefault(digest, {})
        by_signer.setdefault(signer, signature)
        return self._ready()

    def skip_to(self, height: int) -> None:
        """Heights up to `height - 1` are committed (restored or fetched): forget them."""
        self.next_height = max(self.next_height, height)
        for table in (self.ours, self.attestations):
            for h in [h for h in table if h < self.next_height]:
                del table[h]

    def _ready(self) -> list[tuple[Block, Certificate]]:
        out: list[tuple[Block, Certificate]] = []
        while self.next_height in self.ours:
            h = self.next_height
            block, digest = self.ours[h]
            signed = self.attestations.get(h, {}).get(digest, {})
            if len(signed) < self.validity:
                break
            signers = tuple(sorted(signed))
            cert = Certificate(kind=COMMIT_VOTE, epoch=0, view=0, height=h, digest=digest, signers=signers,
                               signatures=tuple(signed[s] for s in signers))
            out.append((block, cert))
            self.skip_to(h + 1)
        return out
