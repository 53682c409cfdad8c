"""Certificate verdicts memoised with the verifier: a certificate that arrives again (in every view
change that carries it; at every replica of a simulated run, which share one verifier) costs its
signature checks once, and a changed certificate is checked afresh."""

from __future__ import annotations

from dwcp.consensus.core import Vote, block_digest
from dwcp.consensus.core.codec import encode, signing_bytes
from dwcp.consensus.core.crypto import Ed25519Verifier
from dwcp.consensus.core.messages import Block, Certificate
from dwcp.consensus.core.protocol import check_quorum_signatures
from dwcp.consensus.pbft.checkpoint import check_checkpoint_proof
from dwcp.consensus.pbft.messages import Checkpoint
from tests.consensus.conftest import make_committee


class CountingVerifier(Ed25519Verifier):
    calls = 0

    def verify(self, node_id: int, data: bytes, signature: bytes) -> bool:
        self.calls += 1
        return super().verify(node_id, data, signature)


def _commit_certificate(keys, signers=(0, 1, 2)) -> Certificate:
    dig = block_digest(Block(height=1, epoch=0, view=0, proposer=0))
    payload = encode(Vote(kind="commit", epoch=0, view=0, height=1, digest=dig))
    return Certificate(kind="commit", epoch=0, view=0, height=1, digest=dig, signers=signers,
                       signatures=tuple(keys.signers[s].sign(signing_bytes(s, payload)) for s in signers))


def test_a_quorum_certificate_checked_again_costs_no_signature_check():
    keys = make_committee(4)
    verifier = CountingVerifier(keys.committee.public_keys())
    cert = _commit_certificate(keys)
    assert check_quorum_signatures(keys.committee, verifier, cert)
    assert verifier.calls == 3
    assert check_quorum_signatures(keys.committee, verifier, cert)
    assert verifier.calls == 3 and verifier.verdicts.hits == 1


def test_a_certificate_with_one_signature_changed_is_checked_afresh_and_refused():
    keys = make_committee(4)
    verifier = CountingVerifier(keys.committee.public_keys())
    cert = _commit_certificate(keys)
    assert check_quorum_signatures(keys.committee, verifier, cert)
    bad = Certificate(kind=cert.kind, epoch=0, view=0, height=1, digest=cert.digest, signers=cert.signers,
                      signatures=(cert.signatures[0], cert.signatures[0], cert.signatures[2]))
    assert not check_quorum_signatures(keys.committee, verifier, bad)
    assert verifier.calls == 6
    assert not check_quorum_signatures(keys.committee, verifier, bad)  # the refusal is remembered too
    assert verifier.calls == 6
    # A larger quorum is another question about the same certificate.
    assert not check_quorum_signatures(keys.committee, verifier, cert, quorum=4)


def test_a_checkpoint_proof_checked_again_costs_no_signature_check():
    keys = make_committee(4)
    verifier = CountingVerifier(keys.committee.public_keys())
    state = b"s" * 32
    payload = encode(Checkpoint(height=8, state=state))
    proof = Certificate(kind="checkpoint", epoch=0, view=0, height=8, digest=state, signers=(0, 1, 3),
                        signatures=tuple(keys.signers[s].sign(signing_bytes(s, payload)) for s in (0, 1, 3)))
    assert check_checkpoint_proof(keys.committee, verifier, proof)
    assert check_checkpoint_proof(keys.committee, verifier, proof)
    assert verifier.calls == 3
