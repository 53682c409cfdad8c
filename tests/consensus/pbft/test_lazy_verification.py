"""Lazy vote verification, I/O-free: votes reach the core unchecked and are checked only when they
would complete a quorum; a forged one is still refused, a late one costs no check, none is checked twice."""

from __future__ import annotations

from collections import Counter

from dwcp.consensus.core import Block, Codec, Multicast, Received, Rejected, Vote, block_digest
from dwcp.consensus.pbft import MESSAGES, Config, Replica
from dwcp.consensus.pbft.messages import PrePrepare
from tests.consensus.conftest import LocalNet, make_committee

from .conftest import received, submit, tx


class CountingVerifier:
    """The real verifier, with every signature check it is asked for counted per (node, signature)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls: Counter = Counter()

    def knows(self, node_id: int) -> bool:
        return self.inner.knows(node_id)

    def verify(self, node_id: int, data: bytes, signature: bytes) -> bool:
        self.calls[(node_id, signature)] += 1
        return self.inner.verify(node_id, data, signature)


def backup_with_block():
    """Replica 1 of n = 4 (quorum 3) holding primary 0's block at height 1, its own prepare cast."""
    keys = make_committee(4)
    verifier = CountingVerifier(keys.verifier)
    core = Replica(committee=keys.committee, node_id=1, signer=keys.signers[1], verifier=verifier,
                   config=Config(batch_size=1))
    block = Block(height=1, epoch=0, view=0, proposer=0, txs=(tx(1),))
    outs = core.handle(0.0, received(keys, 0, PrePrepare(epoch=0, view=0, block=block)))
    prepare = Vote(kind="prepare", epoch=0, view=0, height=1, digest=block_digest(block))
    assert outs[0] == Multicast(to=(0, 2, 3), message=prepare)
    return keys, verifier, core, prepare


def unchecked(keys, sender: int, vote: Vote, signature: bytes | None = None) -> Received:
    """`vote` as the driver hands it over: the envelope signature not checked (`verified=False`)."""
    real = received(keys, sender, vote)
    return Received(sender=sender, message=vote, signature=real.signature if signature is None else signature,
                    verified=False)


def commit_votes(outs) -> list:
    return [o for o in outs if isinstance(o, Multicast) and isinstance(o.message, Vote) and o.message.kind == "commit"]


def test_forged_vote_that_would_complete_a_quorum_is_rejected():
    keys, verifier, core, prepare = backup_with_block()
    # Replica 2's vote with a forged signature: with ours it is 2 of 3, so nothing is checked yet.
    assert core.handle(0.0, unchecked(keys, 2, prepare, signature=b"\x07" * 64)) == []
    assert sum(verifier.calls.values()) == 0
    # Replica 3's good vote would complete the quorum: the forged one is checked first and refused,
    # which leaves 2 votes, so replica 3's is not checked (it could not complete a quorum) and no commit.
    outs = core.handle(0.0, unchecked(keys, 3, prepare))
    assert Rejected(peer=2, reason="bad_signature") in outs and commit_votes(outs) == []
    assert sum(verifier.calls.values()) == 1
    assert 2 not in core.votes[("prepare", 0, 1)][prepare.digest]
    # The forger cannot vote again at this height, even with a good signature ...
    assert core.handle(0.0, received(keys, 2, prepare)) == []
    # ... and the primary's good vote completes a quorum of checked votes.
    outs = core.handle(0.0, unchecked(keys, 0, prepare))
    assert len(commit_votes(outs)) == 1 and core.slots[1].prepared
    assert sum(verifier.calls.values()) == 3  # the forged one, then 0 and 3: each once
    assert set(core.prepared[1].certificate.signers) == {0, 1, 3}


def test_vote_after_a_checked_quorum_costs_no_verify():
    keys, verifier, core, prepare = backup_with_block()
    core.handle(0.0, unchecked(keys, 0, prepare))
    outs = core.handle(0.0, unchecked(keys, 2, prepare))
    assert len(commit_votes(outs)) == 1
    checks = sum(verifier.calls.values())
    assert checks == 2
    # Replica 3's prepare comes after the quorum: kept unchecked, never in a certificate, no check.
    assert core.handle(0.0, unchecked(keys, 3, prepare)) == []
    assert sum(verifier.calls.values()) == checks
    assert 3 not in core.prepared[1].certificate.signers
    # A forged late vote is not checked either, and changes nothing.
    commit = Vote(kind="commit", epoch=0, view=0, height=1, digest=prepare.digest)
    core.handle(0.0, unchecked(keys, 0, commit))
    outs = core.handle(0.0, unchecked(keys, 2, commit))
    assert core.height == 1 and sum(verifier.calls.values()) == checks + 2
    assert core.handle(0.0, unchecked(keys, 3, commit, signature=b"\x07" * 64)) == []
    assert sum(verifier.calls.values()) == checks + 2


def test_unchecked_message_that_is_not_a_vote_is_checked_by_the_core():
    keys, verifier, core, prepare = backup_with_block()
    block = Block(height=2, epoch=0, view=0, proposer=0, txs=(tx(2),))
    forged = Received(sender=0, message=PrePrepare(epoch=0, view=0, block=block), signature=b"\x07" * 64,
                      verified=False)
    assert core.handle(0.0, forged) == [Rejected(peer=0, reason="bad_signature")]
    assert 2 not in core.slots


def test_cluster_checks_each_vote_at_most_once_and_only_up_to_a_quorum():
    keys = make_committee(7)  # n = 7, quorum 5: each replica receives 6 votes per phase, needs 4
    verifiers = {i: CountingVerifier(keys.verifier) for i in keys.committee.ids}
    cores = {i: Replica(committee=keys.committee, node_id=i, signer=keys.signers[i], verifier=verifiers[i],
                        config=Config(batch_size=1, max_inflight=1)) for i in keys.committee.ids}
    net = LocalNet(cores=cores, keys=keys, codec=Codec(MESSAGES))
    blocks = 5
    for i in range(blocks):
        submit(net, 0, tx(i))
        net.run()
    assert all(len(net.commits[i]) == blocks for i in cores)
    for i, v in verifiers.items():
        assert max(v.calls.values()) == 1, f"replica {i} checked a signature twice"
        # Per block: (quorum - 1) prepares and as many commits; our own vote is never checked.
        assert sum(v.calls.values()) <= blocks * 2 * (keys.committee.quorum - 1)
