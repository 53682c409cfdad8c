"""Narwhal primaries over LocalNet (real codec, real signatures, no sockets), with stand-in workers."""

from __future__ import annotations

import hashlib

import pytest

from dwcp.consensus.bullshark import BULLSHARK_MESSAGES
from dwcp.consensus.bullshark.messages import (
    BatchRef,
    BatchStored,
    CommittedBatches,
    DagCertificate,
    FetchBatches,
    Header,
)
from dwcp.consensus.bullshark.primary import PROPOSE, SYNC, Config, Primary
from dwcp.consensus.core import Codec, Fetched, Local, Received, Rejected, RequestSync, Restored, Started, ToLocal
from tests.consensus.conftest import LocalNet, make_committee


class Workers:
    """Every batch is at every node's worker at once (the worker data plane is tested on its own)."""

    def __init__(self, net: LocalNet) -> None:
        self.net = net
        self.sealed: list[BatchRef] = []
        self.executed: dict[int, list[tuple[int, tuple[BatchRef, ...]]]] = {i: [] for i in net.cores}
        self.seen = {i: 0 for i in net.cores}

    def seal(self, node: int, n: int = 1) -> None:
        for _ in range(n):
            k = len(self.sealed)
            ref = BatchRef(digest=hashlib.blake2b(f"batch{k}".encode(), digest_size=32).digest(), worker=0,
                           txs=10, size=5120)
            self.sealed.append(ref)
            for other in self.net.cores:
                if other != node and other not in self.net.down:
                    self.net.feed(other, Local(message=BatchStored(ref=ref, own=False)))
            self.net.feed(node, Local(message=BatchStored(ref=ref, own=True)))

    def pump(self) -> None:
        """Answer FetchBatches from the sealed set; record CommittedBatches."""
        by_digest = {r.digest: r for r in self.sealed}
        for node, outs in self.net.outputs.items():
            new, self.seen[node] = outs[self.seen[node]:], len(outs)
            for out in new:
                if isinstance(out, ToLocal) and isinstance(out.message, FetchBatches):
                    for d in out.message.digests:
                        if d in by_digest:
                            self.net.feed(node, Local(message=BatchStored(ref=by_digest[d], own=False)))
                elif isinstance(out, ToLocal) and isinstance(out.message, CommittedBatches):
                    self.executed[node].append((out.message.height, out.message.batches))
                elif isinstance(out, RequestSync):  # the driver's catch-up, from the longest log
                    source = max(self.net.commits.values(), key=len)
                    for c in source[out.from_height - 1:]:
                        self.net.feed(node, Fetched(sender=0, block=c.block, certificate=c.certificate))


def cluster(n: int = 4, **config) -> tuple[LocalNet, Workers]:
    keys = make_committee(n, name="bullshark")
    cores = {i: Primary(committee=keys.committee, node_id=i, signer=keys.signers[i], verifier=keys.verifier,
                        config=Config(**config)) for i in range(n)}
    net = LocalNet(cores=cores, keys=keys, codec=Codec(BULLSHARK_MESSAGES))
    return net, Workers(net)


def tick(net: LocalNet, workers: Workers, steps: int) -> None:
    """Expire every node's header delay and sync timers, deliver everything, `steps` times."""
    for _ in range(steps):
        for node in net.cores:
            if node in net.down:
                continue
            for timer in (PROPOSE, SYNC):
                if timer in net.timers.get(node, {}):
                    net.fire(node, timer)
        net.run()
        workers.pump()
        net.run()


def start(net: LocalNet) -> None:
    for node in net.cores:
        if node not in net.down:
            net.feed(node, Started())
    net.run()


def logs(net: LocalNet) -> dict[int, list[tuple[int, bytes]]]:
    from dwcp.consensus.core import block_digest
    return {n: [(c.height, block_digest(c.block)) for c in net.commits.get(n, [])] for n in net.cores}


def assert_same_prefix(net: LocalNet, nodes) -> None:
    all_logs = logs(net)
    longest = max((all_logs[n] for n in nodes), key=len)
    for n in nodes:
        assert all_logs[n] == longest[: len(all_logs[n])]


def test_four_primaries_commit_every_batch_once_in_the_same_order() -> None:
    net, workers = cluster()
    start(net)
    for node in range(4):
        workers.seal(node, 3)
    tick(net, workers, 12)
    for node in range(4):
        workers.seal(node, 2)
    tick(net, workers, 12)
    assert_same_prefix(net, range(4))
    assert min(len(v) for v in logs(net).values()) >= 3
    for node in range(4):
        executed = [ref for _, refs in workers.executed[node] for ref in refs]
        assert sorted(r.digest for r in executed) == sorted(r.digest for r in workers.sealed), node
    assert {n: net.cores[n].round for n in range(4)} == {n: net.cores[0].round for n in range(4)}


def run_with_primary_3_silent(net: LocalNet, workers: Workers, ticks: int) -> None:
    """Primary 3 down from the start; primaries 0-2 seal two batches each and run `ticks` ticks."""
    net.down.add(3)
    start(net)
    for node in range(3):
        workers.seal(node, 2)
    tick(net, workers, ticks)


def test_commits_with_one_silent_primary() -> None:
    net, workers = cluster()
    run_with_primary_3_silent(net, workers, 20)
    assert_same_prefix(net, range(3))
    executed = {r.digest for _, refs in workers.executed[0] for r in refs}
    assert executed == {r.digest for r in workers.sealed}


def test_primary_that_missed_rounds_syncs_certificates_and_converges() -> None:
    net, workers = cluster()
    start(net)
    net.down.add(2)
    for node in (0, 1, 3):
        workers.seal(node, 2)
    tick(net, workers, 10)
    behind = len(net.commits.get(2, []))
    net.down.discard(2)
    for node in range(4):
        workers.seal(node, 1)
    tick(net, workers, 12)
    assert len(net.commits[2]) > behind
    assert logs(net)[2] == logs(net)[0][: len(logs(net)[2])]
    assert len(logs(net)[2]) >= len(logs(net)[0]) - 1


def test_restarted_primary_resumes_from_its_log() -> None:
    net, workers = cluster()
    start(net)
    for node in range(4):
        workers.seal(node, 2)
    tick(net, workers, 10)
    old_log = list(net.commits[1])
    keys = net.keys
    fresh = Primary(committee=keys.committee, node_id=1, signer=keys.signers[1], verifier=keys.verifier)
    for c in old_log:
        assert fresh.handle(0.0, Restored(height=c.height, block=c.block, certificate=c.certificate)) == []
    net.cores[1] = fresh
    net.timers[1] = {}
    net.feed(1, Started())
    for node in range(4):
        workers.seal(node, 1)
    tick(net, workers, 12)
    assert_same_prefix(net, range(4))
    assert [c.height for c in net.commits[1]] == list(range(1, len(net.commits[1]) + 1))


def rejected(outs) -> list[str]:
    return [o.reason for o in outs if isinstance(o, Rejected)]


def test_bad_peer_input_is_rejected_never_raised() -> None:
    net, workers = cluster()
    start(net)
    tick(net, workers, 3)
    core = net.cores[0]
    voted_round, _ = core.guard.last[1]
    good = core.dag.rounds[voted_round][1]  # the certificate of the header of node 1 we last voted for
    # A header claiming another author, a round-2+ header with too few parents, an equivocation.
    assert rejected(core.handle(0, Received(sender=2, message=Header(author=1, round=9, payload=(), parents=())))) \
        == ["bad_author"]
    assert rejected(core.handle(0, Received(sender=1, message=Header(author=1, round=9, payload=(),
                                                                      parents=(b"x" * 32,))))) == ["bad_parents"]
    twin = Header(author=1, round=voted_round, payload=(BatchRef(b"y" * 32, 0, 1, 1),), parents=good.parents)
    assert rejected(core.handle(0, Received(sender=1, message=twin))) == ["equivocation"]
    older = Header(author=1, round=voted_round - 1, payload=(), parents=good.parents)
    assert rejected(core.handle(0, Received(sender=1, message=older))) == ["stale"]
    # A certificate whose signatures are not votes for its header.
    forged = DagCertificate(header=twin, signers=good.signers, signatures=good.signatures)
    assert rejected(core.handle(0, Received(sender=3, message=forged))) == ["bad_certificate"]
    assert rejected(core.handle(0, Received(sender=3, message=object()))) == ["unexpected"]


def test_fetched_block_with_a_forged_certificate_is_refused() -> None:
    net, workers = cluster()
    start(net)
    workers.seal(0, 2)
    tick(net, workers, 8)
    c = net.commits[0][0]
    keys = net.keys
    fresh = Primary(committee=keys.committee, node_id=3, signer=keys.signers[3], verifier=keys.verifier)
    tampered = type(c.certificate)(**{**{f: getattr(c.certificate, f) for f in c.certificate.__struct_fields__},
                                      "signatures": tuple(b"\0" * 64 for _ in c.certificate.signatures)})
    assert rejected(fresh.handle(0, Fetched(sender=0, block=c.block, certificate=tampered))) == ["bad_certificate"]
    outs = fresh.handle(0, Fetched(sender=0, block=c.block, certificate=c.certificate))
    assert [o.height for o in outs if type(o).__name__ == "Commit"] == [1]


@pytest.mark.parametrize("schedule_period", [0, 2])
def test_seven_primaries_with_two_down_agree(schedule_period) -> None:
    net, workers = cluster(7, schedule_period=schedule_period)
    net.down |= {5, 6}
    start(net)
    for node in range(5):
        workers.seal(node, 2)
    tick(net, workers, 24)
    assert_same_prefix(net, range(5))
    assert min(len(net.commits.get(n, [])) for n in range(5)) >= 3


def test_a_node_with_default_settings_moves_anchors_off_a_crashed_primary() -> None:
    from dataclasses import asdict

    from dwcp.consensus.bullshark.settings import Settings

    config = asdict(Settings().core_config(max_pending=1000))
    net, workers = cluster(4, **config)
    run_with_primary_3_silent(net, workers, 24)
    assert_same_prefix(net, range(3))
    for node in range(3):  # round-robin would keep electing 3 every fourth even round; its anchor never exists
        assert 3 not in net.cores[node].ordering.schedule.table


def submit_over_http(net: LocalNet, node: int, payload: bytes):
    """A `Submitted` tx on `node`, its batch sealed: the `ClientBatch` the primary hands its worker."""
    from dwcp.consensus.bullshark.inline import SEAL
    from dwcp.consensus.bullshark.messages import ClientBatch
    from dwcp.consensus.core import Submitted
    from dwcp.consensus.core.messages import Transaction

    net.feed(node, Submitted(tx=Transaction(payload=payload)))
    batches = [o.message for o in net.fire(node, SEAL) if isinstance(o, ToLocal)]
    assert len(batches) == 1 and isinstance(batches[0], ClientBatch)
    return batches[0]


def worker_stored(net: LocalNet, node: int, data: bytes) -> BatchRef:
    """Every worker holds `data` (2f + 1 acknowledged it at `node`'s worker, which reports it as its own)."""
    from dwcp.consensus.bullshark.worker import batch_digest, scan

    ref = BatchRef(digest=batch_digest(data), worker=0, txs=scan(data, 0, len(data), 1 << 20)[1], size=len(data))
    for other in net.cores:
        net.feed(other, Local(message=BatchStored(ref=ref, own=other == node)))
    return ref


def test_a_transaction_submitted_over_http_commits_in_its_batch_and_is_named_by_that_node() -> None:
    from dwcp.consensus.core import Submitted, TxDropped
    from dwcp.consensus.core.messages import Transaction

    net, workers = cluster()
    start(net)
    batch = submit_over_http(net, 0, b"pay me")
    assert batch.data == len(b"pay me").to_bytes(4, "big") + b"pay me"  # the worker's client framing
    dup = net.feed(0, Submitted(tx=Transaction(payload=b"pay me")))
    assert [o.reason for o in dup if isinstance(o, TxDropped)] == ["duplicate"]
    ref = worker_stored(net, 0, batch.data)
    tick(net, workers, 12)
    named = [(c.height, [t.payload for t in c.txs]) for c in net.commits[0] if c.txs]
    assert [p for _, p in named] == [[b"pay me"]], named
    executed = [r.digest for _, refs in workers.executed[0] for r in refs]
    assert executed.count(ref.digest) == 1
    for other in (1, 2, 3):  # the same block there; only the node that took the tx over HTTP can name it
        assert not any(c.txs for c in net.commits[other])
        assert ref.digest in [r.digest for _, refs in workers.executed[other] for r in refs]
    again = net.feed(0, Submitted(tx=Transaction(payload=b"pay me")))
    assert [o.reason for o in again if isinstance(o, TxDropped)] == ["committed"]


def test_a_primary_restored_from_its_log_still_refuses_a_transaction_it_committed_over_http() -> None:
    from dwcp.consensus.core import Submitted, TxDropped
    from dwcp.consensus.core.messages import Transaction

    net, workers = cluster()
    start(net)
    worker_stored(net, 0, submit_over_http(net, 0, b"pay me once").data)
    tick(net, workers, 12)
    assert [t.payload for c in net.commits[0] for t in c.txs] == [b"pay me once"]
    fresh = Primary(committee=net.keys.committee, node_id=0, signer=net.keys.signers[0], verifier=net.keys.verifier)
    for c in net.commits[0]:  # what the driver reads back from the log: each block with the ids its Commit named
        fresh.handle(0.0, Restored(height=c.height, block=c.block, certificate=c.certificate,
                                   tx_ids=tuple(t.id for t in c.txs)))
    again = fresh.handle(0.0, Submitted(tx=Transaction(payload=b"pay me once")))
    assert [o.reason for o in again if isinstance(o, TxDropped)] == ["committed"]
    other = fresh.handle(0.0, Submitted(tx=Transaction(payload=b"a new one")))
    assert not [o for o in other if isinstance(o, TxDropped)]


def test_a_batch_the_worker_never_confirmed_is_handed_to_it_again_until_it_commits() -> None:
    from dwcp.consensus.bullshark.messages import ClientBatch
    from dwcp.consensus.bullshark.submissions import RESEND_TICKS

    net, workers = cluster()
    start(net)
    batch = submit_over_http(net, 0, b"lost on the way")  # the worker link was down: it never arrives
    resent = []
    for _ in range(2 * RESEND_TICKS):
        resent.append([o.message for o in net.fire(0, SYNC) if isinstance(o, ToLocal)
                       and isinstance(o.message, ClientBatch)])
    assert [len(r) for r in resent] == [0] * (RESEND_TICKS - 1) + [1] + [0] * (RESEND_TICKS - 1) + [1]
    assert resent[RESEND_TICKS - 1] == [batch]
    worker_stored(net, 0, batch.data)
    tick(net, workers, 12)
    assert [t.payload for c in net.commits[0] for t in c.txs] == [b"lost on the way"]
    assert not [o for o in net.fire(0, SYNC) if isinstance(o, ToLocal) and isinstance(o.message, ClientBatch)]


def test_a_committee_of_one_certifies_its_own_headers_and_commits() -> None:
    net, workers = cluster(1)
    start(net)
    workers.seal(0, 2)
    tick(net, workers, 8)
    assert len(net.commits[0]) >= 2
    assert sorted(r.digest for _, refs in workers.executed[0] for r in refs) == sorted(r.digest for r in workers.sealed)


def test_a_header_whose_batches_are_withheld_is_not_fetched_again_for_every_certificate() -> None:
    """A withholding author's header stays parked for good; delivering the other authors' certificates must
    not re-examine it and ask the worker for its batches each time (at n = 100 that storm stalled the sim)."""
    net, workers = cluster()
    start(net)
    withheld = BatchRef(digest=hashlib.blake2b(b"withheld", digest_size=32).digest(), worker=0, txs=10, size=5120)
    net.feed(3, Local(message=BatchStored(ref=withheld, own=True)))  # node 3's worker sends it to nobody
    refetched = []
    feed = net.feed

    def recording_feed(node, inp):
        outs = feed(node, inp)
        if node == 0 and isinstance(inp, Received) and isinstance(inp.message, DagCertificate):
            refetched.extend(o for o in outs if isinstance(o, ToLocal) and isinstance(o.message, FetchBatches)
                             and withheld.digest in o.message.digests)
        return outs

    net.feed = recording_feed
    for node in range(3):
        workers.seal(node, 2)
    tick(net, workers, 10)
    assert refetched == []
    assert net.cores[0].parked.headers[3][1].payload == (withheld,)
    assert min(len(logs(net)[n]) for n in range(3)) >= 2  # the other three keep committing


def test_a_withheld_batch_is_asked_for_less_and_less_often_while_its_author_keeps_rebroadcasting_the_header() -> None:
    """The withholder's uncertified header comes back on every sync tick; each arrival and each tick used to
    ask the worker for its batches again (2.0 M fetches in the n = 100 Byzantine sim)."""
    net, workers = cluster()
    start(net)
    withheld = BatchRef(digest=hashlib.blake2b(b"withheld", digest_size=32).digest(), worker=0, txs=10, size=5120)
    net.feed(3, Local(message=BatchStored(ref=withheld, own=True)))  # node 3's worker sends it to nobody
    seen = len(net.outputs[0])
    asks = []
    for step in range(40):
        for node in range(3):
            workers.seal(node)
        tick(net, workers, 1)
        new, seen = net.outputs[0][seen:], len(net.outputs[0])
        if any(isinstance(o, ToLocal) and isinstance(o.message, FetchBatches) and withheld.digest in
               o.message.digests for o in new):
            asks.append(step)
    assert net.cores[0].parked.headers[3][1].payload[0] == withheld  # still parked, still wanted
    assert len(asks) <= 7, asks  # on arrival, then after 1, 2, 4, 8, 16, 16 ticks
    assert asks[0] == 0 and asks[-1] >= 20  # never given up
    assert min(len(logs(net)[n]) for n in range(3)) >= 10  # the other three keep committing


def test_a_batch_sealed_before_a_stop_is_taken_back_resent_and_named_by_its_commit_after_the_restart() -> None:
    from dwcp.consensus.bullshark.messages import ClientBatch
    from dwcp.consensus.bullshark.submissions import KEY
    from dwcp.consensus.core import Submitted, TxDropped
    from dwcp.consensus.core.inputs import Recovered, TimerFired
    from dwcp.consensus.core.messages import Transaction
    from dwcp.consensus.core.outputs import Persist

    def persisted(outs) -> list[Persist]:
        return [o for o in outs if isinstance(o, Persist) and o.key == KEY]

    def restarted(node: int) -> Primary:
        keys = net.keys
        return Primary(committee=keys.committee, node_id=node, signer=keys.signers[node], verifier=keys.verifier)

    net, workers = cluster()
    start(net)
    batch = submit_over_http(net, 0, b"acknowledged, then the node stopped")
    kept = persisted(net.outputs[0])[-1]  # written before the batch went to the worker, which never stored it
    net.cores[0], net.timers[0] = restarted(0), {}
    net.feed(0, Recovered(key=KEY, value=kept.value))
    net.feed(0, Started())
    again = net.feed(0, Submitted(tx=Transaction(payload=b"acknowledged, then the node stopped")))
    assert [o.reason for o in again if isinstance(o, TxDropped)] == ["duplicate"]
    resent = [o.message for o in net.fire(0, SYNC) if isinstance(o, ToLocal) and isinstance(o.message, ClientBatch)]
    assert resent == [batch]
    worker_stored(net, 0, batch.data)
    tick(net, workers, 12)
    assert [t.payload for c in net.commits[0] for t in c.txs] == [b"acknowledged, then the node stopped"]
    assert persisted(net.outputs[0])[-1].value == b"\x90"  # msgpack []: a sync tick dropped the committed batch

    # Stopped again with the stale record (its batch committed since): the log drops it, nothing is resent.
    fresh = restarted(0)
    fresh.handle(0.0, Recovered(key=KEY, value=kept.value))
    for c in net.commits[0]:
        fresh.handle(0.0, Restored(height=c.height, block=c.block, certificate=c.certificate,
                                   tx_ids=tuple(t.id for t in c.txs)))
    fresh.handle(0.0, Started())
    for _ in range(2):
        outs = fresh.handle(0.0, TimerFired(timer=SYNC))
        assert not [o for o in outs if isinstance(o, ToLocal) and isinstance(o.message, ClientBatch)]
    repeat = fresh.handle(0.0, Submitted(tx=Transaction(payload=b"acknowledged, then the node stopped")))
    assert [o.reason for o in repeat if isinstance(o, TxDropped)] == ["committed"]


def header_rounds(outs) -> list[int]:
    from dwcp.consensus.core import Broadcast
    return [o.message.round for o in outs if isinstance(o, Broadcast) and isinstance(o.message, Header)]


def propose_delays(outs) -> list[float]:
    from dwcp.consensus.core import SetTimer
    return [o.delay for o in outs if isinstance(o, SetTimer) and o.timer == PROPOSE]


def test_a_light_header_goes_out_at_the_min_delay_and_a_busy_one_waits_for_the_max() -> None:
    """Adaptive header delay: short rounds while few batches wait (light load: latency), long ones once a header
    would carry busy_header_batches (heavy load: fewer rounds, less primary CPU per batch)."""
    net, workers = cluster(1, min_header_delay=0.1, max_header_delay=0.2, busy_header_batches=4)
    assert propose_delays(net.feed(0, Started())) == [0.1]
    net.run()
    workers.seal(0, 1)
    outs = net.fire(0, PROPOSE)  # one batch waits: light, the header goes out at 0.1 s
    assert header_rounds(outs) and propose_delays(outs) == [0.1]
    net.run()
    workers.seal(0, 4)
    outs = net.fire(0, PROPOSE)  # four batches wait: busy, the rest of the 0.2 s first
    assert header_rounds(outs) == [] and propose_delays(outs) == [pytest.approx(0.1)]
    outs = net.fire(0, PROPOSE)
    assert len(header_rounds(outs)) == 1 and propose_delays(outs) == [0.1]
    net.run()
    tick(net, workers, 6)
    assert sorted(r.digest for _, refs in workers.executed[0] for r in refs) == sorted(r.digest for r in workers.sealed)


def test_without_a_min_delay_every_header_waits_for_the_max_delay_as_before() -> None:
    net, workers = cluster(1, max_header_delay=0.2)
    assert propose_delays(net.feed(0, Started())) == [0.2]
    net.run()
    workers.seal(0, 8)
    outs = net.fire(0, PROPOSE)
    assert len(header_rounds(outs)) == 1 and propose_delays(outs) == [0.2]


def test_node_settings_turn_the_adaptive_header_delay_on() -> None:
    from dwcp.consensus.bullshark.settings import Settings
    config = Settings().core_config(max_pending=1)
    assert (config.min_header_delay, config.max_header_delay, config.busy_header_batches) == (0.1, 0.2, 4)
    assert Config().min_header_delay == 0  # the core's (and the simulator's) default: off
