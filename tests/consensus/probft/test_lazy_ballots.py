"""Ballots reach the ProBFT core unchecked (`Replica.lazy_messages`): a ballot's signature is checked
before it can change anything, and not at all when it could change nothing (after its quorum, a
duplicate, outside the window). I/O-free, over the real codec and Ed25519 keys."""

from __future__ import annotations

from collections import Counter

import msgspec

from dwcp.consensus.core import Codec, Received, Rejected, Started, Submitted
from dwcp.consensus.core.codec import encode, signing_bytes
from dwcp.consensus.probft import MESSAGES, Config, Replica
from dwcp.consensus.probft.messages import Ballot, Proposal
from tests.consensus.conftest import LocalNet, make_committee
from tests.consensus.pbft.conftest import tx

from .conftest import vrf_keys


class CountingVerifier:
    """The real verifier, with every check of a ballot's envelope signature counted per (checker, signer,
    signature). Shared by the codec and every core, so a check counts wherever it happens."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.ballot_checks: Counter = Counter()

    @property
    def verdicts(self):
        return self.inner.verdicts

    def knows(self, node_id: int) -> bool:
        return self.inner.knows(node_id)

    def verify(self, node_id: int, data: bytes, signature: bytes) -> bool:
        if b"\xa6ballot" in data:  # signing_bytes(sender, encode(Ballot)) holds its tag
            self.ballot_checks[(node_id, signature)] += 1
        return self.inner.verify(node_id, data, signature)


def counted_net(n: int = 7) -> tuple[LocalNet, CountingVerifier]:
    keys = make_committee(n)
    verifier = CountingVerifier(keys.verifier)
    keys.verifier = verifier  # the net's codec opens frames with it too
    provers, vrf_verifier = vrf_keys(n, False)
    cores = {i: Replica(committee=keys.committee, node_id=i, signer=keys.signers[i], verifier=verifier,
                        vrf=provers[i], vrf_verifier=vrf_verifier, config=Config(batch_size=1, max_inflight=1))
             for i in keys.committee.ids}
    net = LocalNet(cores=cores, keys=keys, codec=Codec(MESSAGES))
    for i in cores:
        net.feed(i, Started())
    net.run()
    return net, verifier


def test_n7_checks_only_the_ballots_a_quorum_needs_and_drops_the_rest_unchecked():
    net, verifier = counted_net(7)  # dense: each node gets 6 ballots per phase and needs 4 (q = 5, its own)
    net.feed(0, Submitted(tx=tx(1)))
    net.run()  # height 1 fills every node's proof cache for view 0 (a first proof is always checked)
    checks0 = sum(verifier.ballot_checks.values())
    blocks = 3
    for i in range(2, blocks + 2):
        net.feed(0, Submitted(tx=tx(i)))
        net.run()
    assert [c.height for c in net.commits[3]] == list(range(1, blocks + 2))
    assert all([c.block for c in net.commits[n]] == [c.block for c in net.commits[0]] for n in net.cores)
    received = 2 * 6 * blocks * 7  # ballots delivered: 2 phases x 6 senders x blocks x 7 receivers
    checks = sum(verifier.ballot_checks.values()) - checks0
    # When the codec checked every ballot this was all of them (252); now 4 of 6 per phase and node.
    assert checks == 2 * 4 * blocks * 7
    dropped = sum(core.status()["ballots_dropped_unchecked"] for core in net.cores.values())
    assert dropped >= received - checks  # the rest were dropped unchecked (height 1's count in it too)
    assert max(verifier.ballot_checks.values()) <= 6  # none checked twice by a receiver (6 receivers share it)
    for core in net.cores.values():
        for c in net.commits[core.node_id]:  # certificates hold checked signatures only, and verify anywhere
            assert net.cores[(core.node_id + 1) % 7].verify_certificate(c.height, c.block, c.certificate)


def _prepared_replica():
    """Replica 1 of n = 7 after height 1 (every sender's proofs for view 0 cached), holding leader 0's
    proposal for height 2 and nothing else of it; and the prepare ballots of 2..6 for it."""
    net, verifier = counted_net(7)
    net.feed(0, Submitted(tx=tx(1)))
    net.run()
    net.feed(0, Submitted(tx=tx(2)))
    frames = list(net.queue)
    net.queue.clear()
    core = net.cores[1]
    ballots: dict[int, tuple[Ballot, bytes]] = {}
    for _, to, frame in frames:
        inp = net.open(1, frame) if to == 1 else None
        if inp is not None and isinstance(inp.message, Proposal):
            core.handle(0.0, inp)  # the proposal only (not the leader's own prepare)
    for s in range(2, 7):
        proof, _ = net.cores[s].book.mine(0, 0, "prepare")
        dig, head = core.headers[(0, 0, 2)]
        b = Ballot(kind="prepare", epoch=0, view=0, height=2, digest=dig, proof=proof, header_signature=head)
        ballots[s] = (b, net.keys.signers[s].sign(signing_bytes(s, encode(b))))
    return net, verifier, core, ballots


def unchecked(sender: int, ballot: Ballot, signature: bytes) -> Received:
    return Received(sender=sender, message=ballot, signature=signature, verified=False)


def test_a_forged_ballot_is_refused_before_it_changes_anything_and_a_late_one_costs_no_check():
    net, verifier, core, ballots = _prepared_replica()
    b2, _ = ballots[2]
    # A forged signature on a ballot that counts: refused, nothing recorded.
    outs = core.handle(0.0, unchecked(2, b2, b"\x07" * 64))
    assert [o.reason for o in outs if isinstance(o, Rejected)] == ["bad_signature"]
    assert ("prepare", 0, 2, 2) not in core.voted
    for s in (2, 3, 4, 5):  # our own + 4 checked: quorum 5, the slot prepares
        core.handle(0.0, unchecked(s, *ballots[s]))
    assert core.slots[2].prepared and set(core.prepared[2].certificate.signers) == {1, 2, 3, 4, 5}
    checks = sum(verifier.ballot_checks.values())
    # 6's ballot after the quorum: dropped unchecked, even forged, and changes nothing.
    b6, _ = ballots[6]
    assert core.handle(0.0, unchecked(6, b6, b"\x07" * 64)) == []
    assert sum(verifier.ballot_checks.values()) == checks
    assert ("prepare", 0, 2, 6) not in core.voted
    # A duplicate of a counted one: dropped unchecked too.
    dropped = core.status()["ballots_dropped_unchecked"]
    assert core.handle(0.0, unchecked(3, *ballots[3])) == []
    assert sum(verifier.ballot_checks.values()) == checks
    assert core.status()["ballots_dropped_unchecked"] == dropped + 1
    # The same late ballot for a height whose proof we never saw (another view) is checked, as it would
    # fill the proof cache.
    other = msgspec.structs.replace(b6, view=1)
    assert core.handle(0.0, unchecked(6, other, b"\x07" * 64)) == [Rejected(peer=6, reason="bad_signature")]
