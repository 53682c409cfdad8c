"""Narwhal/Bullshark wire types: headers, DAG certificates, certificate sync.

A header is signed by its author (the envelope signature); a vote for it is the core `Vote` with
`kind=HEADER_VOTE`, `view=author`, `height=round`, `digest=header digest`, so the envelope signature
over that vote is the vote signature and `core.protocol.check_quorum_signatures` verifies a DAG
certificate exactly as it verifies a PBFT commit certificate. A certificate of availability is the
header plus 2f+1 such signatures: anyone holding the committee's keys can check it alone.

Transactions never appear here: headers carry `BatchRef`s (digest, worker, counts) and the batches
themselves travel between workers on their own connections (worker.py).
"""

from __future__ import annotations

from functools import cached_property

import msgspec

from dwcp.consensus.core.codec import encode
from dwcp.consensus.core.messages import Certificate, Message, Vote, digest

HEADER_VOTE = "bs-header"  # kind of the core Vote a primary signs for a header
COMMIT_VOTE = "bs-commit"  # kind of the core Vote that attests "sub-DAG `height` has digest d"


class BatchRef(msgspec.Struct, frozen=True, array_like=True):
    """A batch stored by at least 2f+1 workers of index `worker`: what a header carries instead of txs."""

    digest: bytes
    worker: int
    txs: int
    size: int


class Link(msgspec.Struct, frozen=True, array_like=True):
    """A weak link: a certificate of an older round that nothing we know references yet."""

    round: int
    digest: bytes


class Header(Message, tag="bs-hdr", dict=True):
    """Author's proposal for `round`: its batches, >= 2f+1 certificate digests of round - 1 (strong
    parents: the commit rule follows only these), and weak links to older certificates no one has
    referenced (Bullshark's weak links: a slow node's certificates still get ordered)."""

    author: int
    round: int
    payload: tuple[BatchRef, ...]
    parents: tuple[bytes, ...]
    weak: tuple[Link, ...] = ()

    @cached_property
    def digest(self) -> bytes:
        return digest(encode(self))

    def vote(self) -> Vote:
        return Vote(kind=HEADER_VOTE, epoch=0, view=self.author, height=self.round, digest=self.digest)


class DagCertificate(Message, tag="bs-cert", dict=True):
    """A header with 2f+1 votes: the batches it names are available, so it is a vertex of the DAG."""

    header: Header
    signers: tuple[int, ...]
    signatures: tuple[bytes, ...]

    @property
    def round(self) -> int:
        return self.header.round

    @property
    def author(self) -> int:
        return self.header.author

    @property
    def digest(self) -> bytes:
        return self.header.digest

    @property
    def parents(self) -> tuple[bytes, ...]:
        return self.header.parents

    @property
    def weak(self) -> tuple[Link, ...]:
        return self.header.weak

    def votes(self) -> Certificate:
        """The signatures in the framework's certificate form, for `check_quorum_signatures`."""
        return Certificate(kind=HEADER_VOTE, epoch=0, view=self.author, height=self.round, digest=self.digest,
                           signers=self.signers, signatures=self.signatures)


class CertificateRequest(Message, tag="bs-certreq"):
    """Sync: send me these certificates (digests of parents I am missing)."""

    digests: tuple[bytes, ...]


class CertificateResponse(Message, tag="bs-certresp"):
    certificates: tuple[DagCertificate, ...]


class BatchRequest(Message, tag="bs-batchreq"):
    """Simulation's in-core worker (inline.py): send me these batches (as core `TxBatch` messages)."""

    digests: tuple[bytes, ...]


class CommittedCert(msgspec.Struct, frozen=True, array_like=True):
    round: int
    author: int
    digest: bytes


class SubDag(msgspec.Struct, frozen=True, array_like=True):
    """What one height of the shared log holds (`Block.meta`): an anchor's committed sub-DAG.

    `certificates` and `batches` are in commit order; `schedule`/`scores`/`schedule_commits` are the
    leader schedule after this commit, so a node restoring or fetching the log resumes ordering
    exactly where the committee is."""

    leader_round: int
    leader_author: int
    leader_digest: bytes
    certificates: tuple[CommittedCert, ...]
    batches: tuple[BatchRef, ...]
    schedule: tuple[int, ...] = ()
    scores: tuple[int, ...] = ()
    schedule_commits: int = 0


# Between a primary and its own worker (`Local` inputs, `ToLocal` outputs); never on the wire to peers.
class BatchStored(msgspec.Struct, frozen=True, array_like=True):
    """The worker holds `ref`'s batch; `own`: sealed here and acknowledged by 2f+1 workers."""

    ref: BatchRef
    own: bool


class FetchBatches(msgspec.Struct, frozen=True, array_like=True):
    """Worker, get these batches (a header we must vote on names them) from `peer`'s worker."""

    digests: tuple[bytes, ...]
    peer: int


class CommittedBatches(msgspec.Struct, frozen=True, array_like=True):
    """Height `height` committed these batches, in order: execute them (fetching any missing)."""

    height: int
    batches: tuple[BatchRef, ...]


class WorkerSetup(msgspec.Struct, frozen=True, array_like=True):
    """The primary's first message to its worker process: who it is and where everyone listens."""

    node_id: int
    private_key: bytes
    certificates: dict[int, bytes]  # every node's pinned TLS certificate (PEM), ours included
    label: str  # the deployment's ALPN label for worker links
    host: str
    port: int
    peers: dict[int, tuple[str, int]]  # other nodes' worker addresses
    data_dir: str
    batch_size: int
    max_batch_delay: float
    max_tx: int
    max_inflight: int
    quorum: int


class ClientBatch(msgspec.Struct, frozen=True, array_like=True):
    """Transactions this node took over HTTP, batched by the primary (submissions.py) in the worker's client
    framing: store it, send it to the other workers and report `BatchStored(own=True)` as for a sealed batch."""

    data: bytes


class WorkerReport(msgspec.Struct, frozen=True, array_like=True):
    """The worker's running totals, for the node's metrics."""

    totals: dict[str, int]


LOCAL_MESSAGES: tuple[type, ...] = (WorkerSetup, BatchStored, FetchBatches, CommittedBatches, WorkerReport,
                                    ClientBatch)
"""The primary-worker link's vocabulary; a message's index here is its kind byte on the link."""


BULLSHARK_MESSAGES: tuple[type, ...] = (Header, DagCertificate, CertificateRequest, CertificateResponse, BatchRequest)
