"""Dense mode (n = 7: sample = everyone, q = 2f + 1): ballots without VRF proofs, commit ballots without
the leader's header signature, PBFT-sized certificates; what a receiver and a third party still refuse.
docs/probft.md, "Dense mode without proofs"."""

from __future__ import annotations

import msgspec

from dwcp.consensus.core import Block, Certificate, Multicast, Received, Rejected, block_digest
from dwcp.consensus.core.codec import encode
from dwcp.consensus.core.crypto import SIGNATURE_SIZE
from dwcp.consensus.probft.messages import Ballot, header
from dwcp.consensus.probft.quorum import pack_entry
from tests.consensus.pbft.conftest import deliver, received, submit, tx


def _committed(probft_net, n_txs=1):
    net = probft_net(7, real_vrf=True, batch_size=1)
    submit(net, 0, *(tx(i) for i in range(1, n_txs + 1)))
    net.run()
    return net


def _reasons(outs):
    return [o.reason for o in outs if isinstance(o, Rejected)]


def test_dense_ballots_carry_no_proof_commit_ballots_no_header_and_no_vrf_is_run(probft_net):
    net = _committed(probft_net, 2)
    ballots = [o.message for outs in net.outputs.values() for o in outs
               if isinstance(o, Multicast) and isinstance(o.message, Ballot)]
    assert len(ballots) == 2 * 2 * 7  # 2 heights, prepare and commit, from every replica
    heads = {h: net.cores[0].headers[(0, 0, h)][1] for h in (1, 2)}
    for b in ballots:
        assert b.proof == b""
        assert b.header_signature == (heads[b.height] if b.kind == "prepare" else b"")
    for core in net.cores.values():
        assert core.book.proofs_verified == 0 and not core.book._mine  # nothing proven, nothing verified
        assert core.status()["vrf_proofs_verified"] == 0


def test_dense_certificates_are_pbft_sized(probft_net):
    net = _committed(probft_net)
    for commits in net.commits.values():
        cert = commits[0].certificate
        assert cert.kind == "commit" and len(cert.signers) == 5
        assert [len(e) for e in cert.signatures] == [SIGNATURE_SIZE] * 5  # PBFT's: one signature per signer
    net = probft_net(7, real_vrf=True, batch_size=1)
    submit(net, 0, tx(1))
    deliver(net, drop=lambda s, to, m: isinstance(m, Ballot) and m.kind == "commit")
    prepared = net.cores[3].prepared[1].certificate
    assert prepared.kind == "prepare"
    # the header signature the prepare ballots carried, once, after the first signature
    assert [len(e) for e in prepared.signatures] == [2 * SIGNATURE_SIZE] + [SIGNATURE_SIZE] * 4
    assert prepared.signatures[0][SIGNATURE_SIZE:] == net.cores[0].headers[(0, 0, 1)][1]
    assert net.cores[5].book.check_certificate(prepared, net.keys.verifier, net.cores[5].primary)


def _proposed(probft_net):
    net = probft_net(7, batch_size=1)
    submit(net, 0, tx(1))
    net.queue.clear()
    core = net.cores[4]
    block = Block(height=1, epoch=0, view=0, proposer=0, txs=(tx(1),))
    dig = block_digest(block)
    head = net.cores[0].headers[(0, 0, 1)][1]
    from dwcp.consensus.probft.messages import Proposal

    core.handle(0.0, received(net.keys, 0, Proposal(epoch=0, view=0, block=block, header_signature=head)))
    return net, core, dig, head


def test_a_dense_ballot_with_proof_bytes_or_a_commit_with_a_header_is_refused(probft_net):
    net, core, dig, head = _proposed(probft_net)
    prep = Ballot(kind="prepare", epoch=0, view=0, height=1, digest=dig, proof=b"", header_signature=head)
    assert _reasons(core.handle(0.0, received(net.keys, 2, msgspec.structs.replace(prep, proof=bytes(80))))) \
        == ["bad_vrf_proof"]
    commit = Ballot(kind="commit", epoch=0, view=0, height=1, digest=dig, proof=b"", header_signature=head)
    assert _reasons(core.handle(0.0, received(net.keys, 2, commit))) == ["unexpected_header"]
    assert not any(2 in votes for tally in core.votes.values() for votes in tally.values())
    # the well-formed ones are counted
    assert _reasons(core.handle(0.0, received(net.keys, 2, prep))) == []
    assert _reasons(core.handle(0.0, received(net.keys, 2, msgspec.structs.replace(commit, header_signature=b"")))) \
        == []
    assert core.votes[("prepare", 0, 1)][dig].keys() >= {2} and core.votes[("commit", 0, 1)][dig].keys() == {2}


def test_a_dense_ballot_from_a_non_member_or_with_a_bad_signature_is_refused(probft_net):
    net, core, dig, head = _proposed(probft_net)
    prep = Ballot(kind="prepare", epoch=0, view=0, height=1, digest=dig, proof=b"", header_signature=head)
    good = received(net.keys, 2, prep)
    lazy = Received(sender=2, message=prep, signature=bytes(64), verified=False)  # as the driver hands ballots over
    assert _reasons(core.handle(0.0, lazy)) == ["bad_signature"]
    stranger = Received(sender=9, message=prep, signature=good.signature, verified=False)
    assert _reasons(core.handle(0.0, stranger)) == ["unknown_sender"]
    assert not core.votes.get(("prepare", 0, 1), {}).get(dig, {}).keys() - {4}  # only our own
    assert _reasons(core.handle(0.0, Received(sender=2, message=prep, signature=good.signature, verified=False))) == []


def test_a_third_party_refuses_a_dense_certificate_short_of_2f_plus_1_valid_member_signatures(probft_net):
    net = _committed(probft_net)
    c = net.commits[0][0]
    cert, check = c.certificate, net.cores[6].verify_certificate
    assert check(1, c.block, cert)
    flipped = bytes([cert.signatures[1][0] ^ 1]) + cert.signatures[1][1:]
    assert not check(1, c.block, msgspec.structs.replace(cert, signatures=(cert.signatures[0], flipped,
                                                                           *cert.signatures[2:])))
    short = msgspec.structs.replace(cert, signers=cert.signers[:4], signatures=cert.signatures[:4])
    assert not check(1, c.block, short)
    stranger = (*cert.signers[:4], 9)
    assert not check(1, c.block, msgspec.structs.replace(cert, signers=stranger))
    twice = (*cert.signers[:4], cert.signers[0])
    assert not check(1, c.block, msgspec.structs.replace(cert, signers=twice))
    # a header signature added to a commit certificate changes what the signers signed
    head = net.cores[0].headers[(0, 0, 1)][1]
    assert not check(1, c.block, msgspec.structs.replace(cert, signatures=(cert.signatures[0] + head,
                                                                           *cert.signatures[1:])))


def test_a_dense_certificate_in_the_sampled_layout_written_before_still_verifies(probft_net):
    """Logs written before dense mode dropped proofs hold entries signature || holder || header || proof."""
    net = _committed(probft_net)
    c = net.commits[0][0]
    head = net.cores[0].headers[(0, 0, 1)][1]
    entries = []
    for s in c.certificate.signers:
        proof, _ = net.provers[s].prove(b"any: a dense sample holds everyone")
        old = Ballot(kind="commit", epoch=0, view=0, height=1, digest=c.certificate.digest, proof=proof,
                     header_signature=head)
        entries.append(pack_entry(net.cores[s].sign(old), 0, head, proof))
    legacy = Certificate(kind="commit", epoch=0, view=0, height=1, digest=c.certificate.digest,
                         signers=c.certificate.signers, signatures=tuple(entries))
    assert net.cores[6].verify_certificate(1, c.block, legacy)
    bad_head = net.cores[0].sign(header(0, 0, 1, bytes(32)))
    forged = tuple(pack_entry(e[:SIGNATURE_SIZE], 0, bad_head, e[-80:]) for e in entries)
    assert not net.cores[6].verify_certificate(1, c.block, msgspec.structs.replace(legacy, signatures=forged))
    assert len(encode(legacy)) > len(encode(c.certificate)) + 5 * 140  # what the new layout saves per block
