"""ProBFT's core over a lossless LocalNet: sampled normal case, the rules that drop peers' ballots,
equivocation evidence, certificates a third party checks. No sockets, no clock."""

from __future__ import annotations

import random
from typing import Any

import msgspec

from dwcp.consensus.core import Block, Multicast, Rejected, Submitted, Vote, block_digest
from dwcp.consensus.core.codec import encode, signing_bytes
from dwcp.consensus.node.assemble import core_config
from dwcp.consensus.probft.messages import Ballot, Proposal, header
from dwcp.consensus.probft.replica import Config
from dwcp.consensus.probft.sampling import alpha, derive, draw, predict
from dwcp.consensus.settings import ConsensusSettings
from tests.consensus.pbft.conftest import received, submit, tx


def rejections(outs, reason=None):
    return [o for o in outs if isinstance(o, Rejected) and (reason is None or o.reason == reason)]


def assert_same_chain(net, heights):
    ref = net.commits[0]
    assert [c.height for c in ref] == list(heights)
    for n, core in net.cores.items():
        assert [c.block for c in net.commits[n]] == [c.block for c in ref]
        for c in net.commits[n]:  # every certificate checks out at any other node (catch-up's rule)
            other = net.cores[(n + 1) % len(net.cores)]
            assert other.verify_certificate(c.height, c.block, c.certificate)
            assert len(c.certificate.signers) == core.params.quorum


def test_commit_one_at_n7_runs_dense_with_pbft_quorums_and_real_vrf(probft_net):
    net = probft_net(7, real_vrf=True, batch_size=1)
    t = tx(1)
    block = Block(height=1, epoch=0, view=0, proposer=0, txs=(t,))
    dig = block_digest(block)
    outs = net.feed(0, Submitted(tx=t))
    core = net.cores[0]
    head = core.headers[(0, 0, 1)][1]
    proof, sample = core.book.mine(0, 0, "prepare")
    assert sample == (1, 2, 3, 4, 5, 6) and core.params.dense and core.params.quorum == 5
    assert outs == [
        Multicast(to=(1, 2, 3, 4, 5, 6), message=Proposal(epoch=0, view=0, block=block, header_signature=head)),
        Multicast(to=(1, 2, 3, 4, 5, 6), message=Ballot(kind="prepare", epoch=0, view=0, height=1, digest=dig,
                                                        proof=proof, header_signature=head)),
    ]
    net.run()
    assert_same_chain(net, [1])
    assert net.commits[3][0].txs == (t,)


def test_n31_sends_each_ballot_to_its_vrf_sample_only_and_commits_everywhere(probft_net):
    net = probft_net(31, batch_size=1)
    submit(net, 0, tx(1), tx(2), tx(3))
    net.run()
    assert_same_chain(net, [1, 2, 3])
    params = net.cores[5].params
    assert (params.sample_size, params.quorum, params.dense) == (23, 12, False)
    for node, outs in net.outputs.items():
        for o in outs:
            if isinstance(o, Multicast) and isinstance(o.message, Ballot):
                b = o.message
                _, beta = net.provers[node].prove(alpha(net.keys.committee.digest(), b.epoch, b.view, b.kind))
                assert o.to == tuple(sorted(draw(beta, tuple(i for i in range(31) if i != node), 23)))
    status = net.cores[5].status()
    assert status["messages_sent"]["prepare"] == status["messages_sent"]["commit"] == 3 * 23
    assert status["quorum_achieved"] == status["quorum_attempts"] == {"prepare": 3, "commit": 3}
    # One VRF verification per sender, view and phase, however many heights: 3 blocks, not 3x.
    assert status["vrf_proofs_verified"] <= 2 * 30


def _ballot_from(net, sender, receiver_ok, *, kind="prepare", view=0, proof=None):
    """A validly signed ballot of `sender` at height 1 for the leader's real block."""
    head = net.cores[0].headers[(0, 0, 1)]
    if proof is None:
        proof, _ = net.provers[sender].prove(alpha(net.keys.committee.digest(), 0, view, kind))
    return Ballot(kind=kind, epoch=0, view=0, height=1, digest=head[0], proof=proof, header_signature=head[1])


def _senders(net, receiver, kind="prepare", inside=True):
    out = []
    for s in range(1, len(net.cores)):
        if s == receiver:
            continue
        _, sample = net.cores[s].book.mine(0, 0, kind)
        if (receiver in sample) == inside:
            out.append(s)
    return out


def _proposed(net):
    """A 31-node net where the leader proposed height 1 and nothing was delivered yet."""
    net.feed(0, Submitted(tx=tx(1)))
    net.queue.clear()
    return net


def test_a_forged_vrf_proof_is_rejected_and_not_counted(probft_net):
    net = _proposed(probft_net(31, batch_size=1))
    r = 7
    sender = _senders(net, r)[0]
    forged = _ballot_from(net, sender, r, proof=random.Random(1).randbytes(64))
    outs = net.cores[r].handle(0.0, received(net.keys, sender, forged))
    assert [o.reason for o in rejections(outs)] == ["bad_vrf_proof"]
    assert not net.cores[r].votes


def test_a_replayed_proof_from_another_phase_or_view_is_rejected(probft_net):
    net = _proposed(probft_net(31, batch_size=1))
    r = 7
    sender = _senders(net, r)[0]
    commit_proof, _ = net.provers[sender].prove(alpha(net.keys.committee.digest(), 0, 0, "commit"))
    view1_proof, _ = net.provers[sender].prove(alpha(net.keys.committee.digest(), 0, 1, "prepare"))
    for proof in (commit_proof, view1_proof):
        core = _proposed(probft_net(31, batch_size=1)).cores[r]
        outs = core.handle(0.0, received(net.keys, sender, _ballot_from(net, sender, r, proof=proof)))
        assert [o.reason for o in rejections(outs)] == ["bad_vrf_proof"]


def test_a_sender_outside_its_sample_is_dropped_and_counted(probft_net):
    net = _proposed(probft_net(31, batch_size=1))
    r = 7
    outsider = _senders(net, r, inside=False)[0]
    outs = net.cores[r].handle(0.0, received(net.keys, outsider, _ballot_from(net, outsider, r)))
    assert [o.reason for o in rejections(outs)] == ["outside_sample"]
    assert net.cores[r].status()["rejected"] == {"outside_sample": 1}
    assert not net.cores[r].votes


def test_only_the_first_proof_of_a_sender_per_view_and_phase_is_verified(probft_net):
    net = _proposed(probft_net(31, batch_size=1))
    r = 7
    sender = _senders(net, r)[0]
    core = net.cores[r]
    assert not rejections(core.handle(0.0, received(net.keys, sender, _ballot_from(net, sender, r))))
    verified = core.book.proofs_verified
    other = _ballot_from(net, sender, r, proof=random.Random(2).randbytes(64))
    outs = core.handle(0.0, received(net.keys, sender, other))
    assert [o.reason for o in rejections(outs)] == ["proof_mismatch"]
    assert core.book.proofs_verified == verified


def test_a_ballot_for_another_leader_signed_block_is_equivocation_evidence(probft_net):
    net = _proposed(probft_net(31, batch_size=1))
    r = 7
    sender = _senders(net, r)[0]
    core = net.cores[r]
    block = Block(height=1, epoch=0, view=0, proposer=0, txs=(tx(1),))
    core.handle(0.0, received(net.keys, 0, Proposal(epoch=0, view=0, block=block,
                                                    header_signature=net.cores[0].headers[(0, 0, 1)][1])))
    twin = Block(height=1, epoch=0, view=0, proposer=0, txs=(tx(2),))  # the leader signs a second header
    dig = block_digest(twin)
    head = net.keys.signers[0].sign(signing_bytes(0, encode(header(0, 0, 1, dig))))
    proof, _ = net.provers[sender].prove(alpha(net.keys.committee.digest(), 0, 0, "prepare"))
    ballot = Ballot(kind="prepare", epoch=0, view=0, height=1, digest=dig, proof=proof, header_signature=head)
    outs = core.handle(0.0, received(net.keys, sender, ballot))
    assert [(o.peer, o.reason) for o in rejections(outs)] == [(0, "equivocation_evidence")]
    assert (0, 0, 1) in core.poisoned and core.mode.value == "view_change" and core.vc_target == 1


def test_a_ballot_with_a_bad_header_signature_or_none_is_rejected(probft_net):
    net = _proposed(probft_net(31, batch_size=1))
    r = 7
    sender = _senders(net, r)[0]
    good = _ballot_from(net, sender, r)
    core = net.cores[r]
    bad = msgspec.structs.replace(good, header_signature=bytes(64))
    assert [o.reason for o in rejections(core.handle(0.0, received(net.keys, sender, bad)))] == ["bad_header_signature"]
    core = _proposed(probft_net(31, batch_size=1)).cores[r]
    none = msgspec.structs.replace(good, header_signature=b"")
    assert [o.reason for o in rejections(core.handle(0.0, received(net.keys, sender, none)))] == ["missing_header"]


def test_plain_pbft_votes_are_not_accepted_from_peers(probft_net):
    net = _proposed(probft_net(7, batch_size=1))
    dig = net.cores[0].headers[(0, 0, 1)][0]
    outs = net.cores[3].handle(0.0, received(net.keys, 1, Vote(kind="prepare", epoch=0, view=0, height=1, digest=dig)))
    assert [o.reason for o in rejections(outs)] == ["unexpected_message"]


def test_random_ballots_and_proposals_never_raise(probft_net):
    net = _proposed(probft_net(31, batch_size=1))
    rng = random.Random(5)
    core = net.cores[9]
    for _ in range(300):
        msg = Ballot(kind=rng.choice(["prepare", "commit", "x", ""]), epoch=rng.choice([0, 1, -1]),
                     view=rng.choice([0, 1, 2**40]), height=rng.choice([0, 1, 2, 10**9]),
                     digest=rng.randbytes(rng.choice([0, 32])), proof=rng.randbytes(rng.choice([0, 64, 80])),
                     header_signature=rng.randbytes(rng.choice([0, 64])))
        core.handle(0.0, received(net.keys, rng.randrange(1, 31), msg))
        block = Block(height=rng.randrange(3), epoch=0, view=0, proposer=rng.randrange(31), txs=())
        prop = Proposal(epoch=0, view=rng.randrange(2), block=block, header_signature=rng.randbytes(64))
        core.handle(0.0, received(net.keys, rng.randrange(1, 31), prop))
    assert core.height == 0


def test_default_parameters_at_7_31_100():
    assert derive(7, 2, 5).dense and derive(7, 2, 5).quorum == 5
    p31, p100 = derive(31, 10, 21), derive(100, 33, 67)
    assert (p31.sample_size, p31.quorum) == (23, 12)
    assert (p100.sample_size, p100.quorum) == (65, 35)
    # q - 1 > f: the f Byzantine nodes cannot fill a certificate on their own.
    assert predict(p31)["forge_risk"] == predict(p100)["forge_risk"] == 0.0
    # The paper-like o = 2.5 is cheaper (q = 10 at n = 100) but forgeable by 33 colluding nodes.
    cheap = derive(100, 33, 67, o=2.5)
    assert (cheap.sample_size, cheap.quorum) == (25, 10) and predict(cheap)["forge_risk"] > 0.5


def test_a_certificate_still_verifies_after_its_signer_sent_us_a_forged_proof_first(probft_net):
    """A Byzantine signer that sent a forged proof first must not make valid certificates it signed
    unverifiable (a node catching up would stall on them): the certificate's proof is judged on its own."""
    from dwcp.consensus.probft import Config, Replica

    net = probft_net(31, batch_size=1)
    submit(net, 0, tx(1))
    net.run()
    commit = net.commits[0][0]
    holder_entry = commit.certificate
    signer = next(s for s in holder_entry.signers if s != 0)
    keys = net.keys
    fresh = Replica(committee=keys.committee, node_id=7, signer=keys.signers[7], verifier=keys.verifier,
                    vrf=net.provers[7], vrf_verifier=net.cores[7].book.verifier, config=Config(batch_size=1))
    forged = Ballot(kind="commit", epoch=0, view=0, height=1, digest=commit.certificate.digest,
                    proof=random.Random(3).randbytes(64), header_signature=net.cores[0].headers[(0, 0, 1)][1])
    fresh.handle(0.0, received(keys, signer, forged))  # cached as this signer's (bad) proof for the view
    assert fresh.verify_certificate(1, commit.block, commit.certificate)


def test_a_certificate_checked_at_two_replicas_costs_its_signatures_once_and_feeds_both_proof_caches(probft_net):
    """The signature part of a certificate check is memoised with the (shared) verifier; the sample part is
    each replica's own, so each one's proof cache holds the signers' proofs as it always did."""
    from dwcp.consensus.probft import Config, Replica
    from tests.consensus.core.test_verdicts import CountingVerifier

    net = probft_net(31, batch_size=1)
    submit(net, 0, tx(1))
    net.run()
    commit = net.commits[0][0]
    keys = net.keys
    verifier = CountingVerifier(keys.committee.public_keys())
    fresh = [Replica(committee=keys.committee, node_id=i, signer=keys.signers[i], verifier=verifier,
                     vrf=net.provers[i], vrf_verifier=net.cores[i].book.verifier, config=Config(batch_size=1))
             for i in (7, 8)]
    assert fresh[0].verify_certificate(1, commit.block, commit.certificate)
    first = verifier.calls
    assert first == 1 + len(commit.certificate.signers)  # the header, then each ballot
    assert fresh[1].verify_certificate(1, commit.block, commit.certificate)
    assert verifier.calls == first
    others = len([s for s in commit.certificate.signers if s != 0])
    assert fresh[0].book.proofs_verified == fresh[1].book.proofs_verified == others


def test_a_proposal_its_primary_sent_with_a_header_it_did_not_sign_starts_a_view_change(probft_net):
    """The envelope proves who sent it, so an unsigned header (an equivocator that changed the block)
    convicts the primary: leave the view at once. From a non-primary it is only rejected."""
    from dwcp.consensus.pbft import Mode
    from dwcp.consensus.pbft.messages import ViewChange

    net = probft_net(7, batch_size=1)
    core = net.cores[3]
    block = Block(height=1, epoch=0, view=0, proposer=0, txs=(tx(1),))
    other = Block(height=1, epoch=0, view=0, proposer=0, txs=(tx(2),))
    wrong = net.cores[0].sign(header(0, 0, 1, block_digest(other)))
    outs = core.handle(0.1, received(net.keys, 2, Proposal(epoch=0, view=0, block=block, header_signature=wrong)))
    assert rejections(outs, "bad_header_signature") and core.mode is Mode.NORMAL
    outs = core.handle(0.2, received(net.keys, 0, Proposal(epoch=0, view=0, block=block, header_signature=wrong)))
    assert rejections(outs, "bad_header_signature")
    [vc] = [o.message for o in outs if isinstance(o, Multicast) and isinstance(o.message, ViewChange)]
    assert vc.view == 1 and core.mode is Mode.VIEW_CHANGE


def _reproposal_view_change(net):
    """n = 7: every replica prepares block 1, none commits; primary 0 fails; the others time out. The NEW-VIEW
    from 1 (held back, returned) re-proposes block 1."""
    from dwcp.consensus.pbft.state import REQUEST
    from tests.consensus.pbft.conftest import deliver, spread

    spread(net, 0, tx(1))
    deliver(net, drop=lambda s, to, m: isinstance(m, Ballot) and m.kind == "commit")
    net.down.add(0)
    net.now = 1.5
    for n in range(1, 7):
        net.fire(n, REQUEST)
    held = []
    deliver(net, drop=lambda s, to, m: type(m).__name__ == "SignedNewView" and to == 2 and not held.append(m))
    return held[0]


def test_a_view_change_signs_each_reproposal_header_so_its_ballots_carry_evidence(probft_net):
    from dwcp.consensus.pbft import Mode
    from dwcp.consensus.pbft.messages import NewView, ViewChange
    from dwcp.consensus.probft.messages import SignedNewView

    net = probft_net(7, batch_size=1)
    nv = _reproposal_view_change(net)
    block = Block(height=1, epoch=0, view=0, proposer=0, txs=(tx(1),))
    dig = block_digest(block)
    assert isinstance(nv, SignedNewView) and nv.view == 1 and nv.proposals == (dig,)
    [sig] = nv.header_signatures
    assert net.cores[1].verifier.verify(1, signing_bytes(1, encode(header(0, 1, 1, dig))), sig)
    # Prepare ballots for the re-proposal carry the new leader's header signature, like any proposal's
    # (dense commit ballots carry none).
    prepares = [o.message for o in net.outputs[3] if isinstance(o, Multicast) and isinstance(o.message, Ballot)
                and o.message.view == 1 and o.message.kind == "prepare"]
    assert prepares and all(b.header_signature == sig for b in prepares)
    assert all(len(c) == 1 and c[0].certificate.view == 1 for n, c in net.commits.items() if n not in (0, 2))
    # Node 2 has not seen the NEW-VIEW: a plain one is refused, a signed one with a bad header moves on at once.
    core = net.cores[2]
    plain = NewView(epoch=0, view=1, view_changes=nv.view_changes, proposals=nv.proposals)
    assert rejections(core.handle(2.0, received(net.keys, 1, plain)), "unexpected_message")
    forged = SignedNewView(epoch=0, view=1, view_changes=nv.view_changes, proposals=nv.proposals,
                           header_signatures=(net.cores[1].sign(header(0, 1, 1, b"x" * 32)),))
    outs = core.handle(2.0, received(net.keys, 1, forged))
    assert rejections(outs, "bad_header_signature")
    [vc] = [o.message for o in outs if isinstance(o, Multicast) and isinstance(o.message, ViewChange)]
    assert vc.view == 2 and core.mode is Mode.VIEW_CHANGE


def test_a_second_signed_header_for_a_reproposed_height_is_equivocation_evidence(probft_net):
    net = probft_net(7, batch_size=1)
    nv = _reproposal_view_change(net)
    core = net.cores[3]
    assert core.headers[(0, 1, 1)] == (nv.proposals[0], nv.header_signatures[0])
    other = Block(height=1, epoch=0, view=1, proposer=1, txs=(tx(9),))
    sig = net.cores[1].sign(header(0, 1, 1, block_digest(other)))
    proof, _ = net.cores[4].book.mine(0, 1, "prepare")
    ballot = Ballot(kind="prepare", epoch=0, view=1, height=1, digest=block_digest(other), proof=proof,
                    header_signature=sig)
    outs = core.handle(2.0, received(net.keys, 4, ballot))
    assert rejections(outs, "equivocation_evidence")
    assert (0, 1, 1) in core.poisoned


def test_probft_nodes_default_to_half_second_request_and_035_second_new_view_timeouts() -> None:
    """ProBFT's own defaults (node settings and the core's, which the simulator uses); PBFT keeps 1 s / 1 s,
    and `new_view_timeout_ms: null` falls back to the progress timeout."""
    def timeouts(cfg: Any) -> tuple[float, float]:
        return cfg.request_timeout, cfg.view_change_timeout

    assert timeouts(core_config("probft", ConsensusSettings())) == timeouts(Config()) == (0.5, 0.35)
    assert timeouts(core_config("pbft", ConsensusSettings())) == (1.0, 1.0)
    assert timeouts(core_config("probft", ConsensusSettings(view_change_timeout_ms=800,
                                                            new_view_timeout_ms=None))) == (0.8, 0.8)
    assert timeouts(core_config("pbft", ConsensusSettings(new_view_timeout_ms=300))) == (1.0, 0.3)
