"""The simulator's loop: runs real protocol cores in one process under a virtual clock.

It is `transport/driver.py` with the sockets, timers and SQLite replaced by `Clock` events:
- `Send`/`Multicast`/`Broadcast` are sealed by the real codec (through the node's `Behaviour`, which
  is where Byzantine nodes lie) and each copy crosses the `NetworkModel`; at the receiver the bytes
  are opened by the real codec (signature checked, sender must match the link) and fed as `Received`;
- `SetTimer`/`CancelTimer` schedule and void `TimerFired` events; `Commit` appends to the node's
  log (repeats ignored, as the driver does) and goes to the invariant checker;
- catch-up is the driver's: each instance has its `CatchUpPlanner` (transport/sync.py), fed with
  peers' heights (the periodic height gossip) and `RequestSync`; the peer it picks answers from its
  committed log one round trip later if it is up, connected and honest (otherwise the request times
  out and the planner moves on, as on a real network), and the answer goes through the same
  `apply_fetched` loop as on a node (`core.verify_certificate`, then `Fetched`);
- crash drops a node's state and traffic; restart rebuilds its core from its own log (`Restored`
  per block, then `Started`);
- at the seed's scale (`Scenario.batch_bytes`), workers carry declared batches outside the cores
  (`dataplane.py`, fed to and read from the cores as `Local`/`ToLocal`); with `downlink_mbps` a copy
  then queues at the receiver's downlink, and with `cpu` each frame's encoding and signing (sender)
  and opening (receiver) queue on the node's primary CPU lane (`cpu.py`) before the core sees it.
There is no protocol logic here. Every random choice comes from the scenario's seed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import time
from collections import Counter
from typing import Any

from dwcp.consensus import registry
from dwcp.consensus.core.codec import Codec, DecodeError, block_digest, encode
from dwcp.consensus.core.committee import Committee, Member
from dwcp.consensus.core.inputs import (
    Fetched,
    Input,
    Received,
    Recovered,
    Restored,
    Started,
    Submitted,
    Timer,
    TimerFired,
)
from dwcp.consensus.core.messages import Block, Transaction
from dwcp.consensus.core.outputs import (
    Broadcast,
    CancelTimer,
    Commit,
    Multicast,
    Output,
    Persist,
    Rejected,
    RequestSync,
    Send,
    SetTimer,
    ToLocal,
    TxDropped,
)
from dwcp.consensus.sim.clock import Clock
from dwcp.consensus.sim.cpu import PRIMARY, CpuModel
from dwcp.consensus.sim.dataplane import DeclaredDataPlane
from dwcp.consensus.sim.faults import BEHAVIOURS, Crash, Fault, Heal, Isolate, Partition, Rejoin, Restart
from dwcp.consensus.sim.invariants import InvariantChecker
from dwcp.consensus.sim.network import NetworkModel
from dwcp.consensus.sim.nodes import Instance, Node, Packet, make_keys
from dwcp.consensus.sim.report import RunResult, summarize
from dwcp.consensus.sim.scenario import Scenario
from dwcp.consensus.transport.sync import CatchUpPlanner, apply_fetched

FRAME_OVERHEAD = 5  # transport frame header (channel + length) added to every codec envelope
SYNC_MAX_BLOCKS = 64  # DriverConfig.sync_max_blocks
SYNC_TIMEOUT = 2.0  # DriverConfig.sync_timeout
DRAIN_STEP = 0.25  # after the load stops, check this often whether every due tx has committed


class Simulation:
    def __init__(self, scenario: Scenario, *, core_kwargs: dict[str, Any] | None = None) -> None:
        self.scenario = sc = scenario
        self.spec = spec = registry.get(sc.protocol)
        self.codec = Codec(spec.messages)
        self.lazy: tuple[type, ...] = getattr(spec.replica, "lazy_messages", ())  # as the driver does
        self.core_kwargs = dict(core_kwargs or {})
        if sc.epoch_length and "config" not in self.core_kwargs:
            config = spec.config()
            if getattr(config, "epoch_length", 0):  # only protocols that have epochs (T-PBFT)
                self.core_kwargs["config"] = dataclasses.replace(config, epoch_length=sc.epoch_length)
        root = random.Random(f"sim:{sc.seed}")
        # The third stream once picked catch-up servers (the planner picks them now); still drawn, so
        # the other streams and the cores' seeds stay what they were for a given scenario seed.
        self.rng_net, self.rng_load, _ = (random.Random(root.getrandbits(64)) for _ in range(3))
        self.core_seed = root.getrandbits(32)
        signers, self.verifier, keys = make_keys(sc.seed, sc.nodes, sc.crypto)
        self.committee = Committee(
            tuple(Member(node_id=i, public_key=keys[i], region=sc.regions[i % len(sc.regions)])
                  for i in range(sc.nodes)),
            name=sc.protocol,
        )
        self.clock = Clock()
        self.net = NetworkModel.spread(sc.nodes, sc.regions, self.rng_net, jitter=sc.jitter,
                                       bandwidth_bps=sc.bandwidth_mbps * 1e6, loss=sc.loss,
                                       downlink_bps=sc.downlink_mbps * 1e6)
        self.cpu = CpuModel(sc.nodes, sc.cpu, sc.cpu_cores) if sc.cpu is not None else None
        self.scale = spec.sim_scale() if spec.sim_scale is not None and (sc.batch_bytes or sc.cpu) else None
        if sc.batch_bytes and self.scale is None:
            raise ValueError(f"{sc.protocol} has no declared-batch workers (registry sim_scale)")
        self.staged = self.cpu is not None or sc.downlink_mbps > 0  # a frame waits for downlink/CPU
        self.checker = InvariantChecker(sc.correct, honest=[i for i, name in sc.byzantine.items()
                                                            if BEHAVIOURS[name].honest])
        self.nodes: list[Node] = []
        for i in range(sc.nodes):
            behaviour_cls = BEHAVIOURS[sc.byzantine.get(i, "none")]
            node = Node(i, signers[i], behaviour_cls(random.Random(root.getrandbits(64)), self.committee.ids, i))
            node.instances = [Instance(self._core(node, k), node.behaviour.scope(k), [], self._planner())
                              for k in range(node.behaviour.instances)]
            self.nodes.append(node)
        self._trace: list[tuple[Any, ...]] = []
        self.messages = 0
        self.bytes = 0
        # What the messages are (counted like `messages`, one per destination), and what the node's
        # driver sends besides the cores' messages: its height gossip (`SyncStatus` to every reachable
        # peer each `sync_interval`) and catch-up fetches. Only counted: no effect on a run.
        self.sent_by_type: Counter[str] = Counter()
        self.driver_sent: Counter[str] = Counter()
        self.lost = 0
        self.rejected: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self._tx_counter = 0
        self.loading = True
        self.drained_s = 0.0
        self.dataplane = DeclaredDataPlane(
            self, self.scale, rate=sc.rate, tx_size=sc.tx_size, batch_bytes=sc.batch_bytes,
            max_batch_delay=sc.max_batch_delay, warmup=sc.warmup, end=sc.duration,
        ) if sc.batch_bytes and self.scale is not None else None

    # -- construction ------------------------------------------------------------------------
    def _core(self, node: Node, instance: int) -> Any:
        kwargs = dict(self.core_kwargs)
        spec, sc = self.spec, self.scenario
        if spec.sim_extras is not None:
            kwargs.update(spec.sim_extras(sc.seed, self.committee, node.node_id, sc.crypto))
        if sc.batch_bytes and self.scale is not None:
            kwargs.update(self.scale.core_kwargs)
        if spec.seeded:
            kwargs["rng"] = random.Random(self.core_seed * 1_000_003 + node.node_id * 7 + instance)
        return spec.replica(committee=self.committee, node_id=node.node_id, signer=node.signer,
                                verifier=self.verifier, **kwargs)

    # -- running -----------------------------------------------------------------------------
    def run(self) -> RunResult:
        sc = self.scenario
        started = time.perf_counter()
        for node in self.nodes:
            for k in range(len(node.instances)):
                self._feed(node, k, Started())
        for fault in sc.faults:
            self.clock.at(fault.at, self._apply_fault, fault)
        for fault in sc.episodes:
            self.clock.at(fault.at, self._apply_fault, fault)
        if self.dataplane is not None:
            self.dataplane.start()
        elif sc.rate > 0:
            self.clock.at(self.rng_load.expovariate(sc.rate), self._submit)
        if sc.sync_interval > 0:
            for node in self.nodes:
                self.clock.at(sc.sync_interval * (1 + node.node_id / sc.nodes), self._sync_tick, node)
        self.clock.run_until(sc.duration)
        self.loading = False
        live = [n.node_id for n in self.nodes if n.up]
        due = self.checker.due(sc.healed_at, sc.duration)
        end = sc.duration
        plane = self.dataplane
        while end < sc.duration + sc.drain and not (
                self.checker.settled(due, live) and (plane is None or not plane.unsettled(live))):
            end = min(end + DRAIN_STEP, sc.duration + sc.drain)
            self.clock.run_until(end)
        self.drained_s = end - sc.duration
        self.checker.finish(sc.healed_at, sc.duration, live)
        if plane is not None:
            plane.finish(self.checker, live)
        return summarize(self, time.perf_counter() - started)

    @property
    def trace_hash(self) -> str:
        """Hash of every delivery (time, from, to, size), commit (time, node, height, digest) and fault."""
        return hashlib.blake2b(encode(self._trace), digest_size=16).hexdigest()

    def _feed(self, node: Node, k: int, inp: Input) -> None:
        inst = node.instances[k]
        try:
            outs = inst.core.handle(self.clock.now, inp)
        except Exception as exc:  # a core must not raise on peer input: record it, keep going
            if node.checked:
                self.checker.core_error(node.node_id, f"{type(exc).__name__}: {exc} on {type(inp).__name__}"
                                                      f"({type(getattr(inp, 'message', None)).__name__})")
            return
        self._execute(node, k, outs)

    def _execute(self, node: Node, k: int, outs: list[Output]) -> None:
        inst = node.instances[k]
        for out in outs:
            if isinstance(out, Multicast):
                self._send(node, inst, out.to, out.message)
            elif isinstance(out, Send):
                self._send(node, inst, (out.to,), out.message)
            elif isinstance(out, Broadcast):
                self._send(node, inst, tuple(i for i in self.committee.ids if i != node.node_id), out.message)
            elif isinstance(out, SetTimer):
                token = inst.timers.get(out.timer, 0) + 1
                inst.timers[out.timer] = token
                self.clock.after(out.delay, self._fire, node, k, node.incarnation, out.timer, token)
            elif isinstance(out, CancelTimer):
                inst.timers[out.timer] = inst.timers.get(out.timer, 0) + 1  # voids the pending event
            elif isinstance(out, Commit):
                self._commit(node, inst, out)
            elif isinstance(out, Rejected):
                self.rejected[out.reason] += 1
            elif isinstance(out, TxDropped):
                self.dropped[out.reason] += 1
            elif isinstance(out, RequestSync):
                for peer in out.peers:
                    inst.planner.on_status(peer, out.to_height)
                self._request_missing(node, k)
            elif isinstance(out, Persist):
                inst.persisted[out.key] = out.value
            elif isinstance(out, ToLocal) and self.dataplane is not None:
                self.dataplane.command(node, out.message)

    def _send(self, node: Node, inst: Instance, to: tuple[int, ...], message: Any) -> None:
        me = node.node_id
        if inst.scope is not None:
            to = tuple(i for i in to if i in inst.scope)
        now = self.clock.now
        at, deliver, nodes = self.clock.at, self._deliver, self.nodes
        for group, data in node.behaviour.outgoing(self.codec, node.signer, to, message):
            packet = Packet(me, data)
            size = len(data) + FRAME_OVERHEAD
            dsts = [d for d in group if d != me]
            self.messages += len(dsts)
            self.sent_by_type[message_label(message)] += len(dsts)
            self.bytes += size * len(dsts)
            start = now if self.cpu is None else self.cpu.run(me, PRIMARY, now, self.cpu.costs.send(len(data)))
            for dst, arrive in zip(dsts, self.net.transmit_all(start, me, dsts, size), strict=True):
                if arrive is None:
                    self.lost += 1
                else:
                    target = nodes[dst]
                    at(arrive, deliver, packet, target, target.incarnation)

    def _deliver(self, packet: Packet, node: Node, incarnation: int) -> None:
        """A copy reached `node`: off its downlink and opened on its CPU (when modelled), to the core."""
        if not self.staged:
            self._process(packet, node, incarnation)
            return
        if not node.up or node.incarnation != incarnation:
            return
        dst, size, ready = node.node_id, len(packet.data), self.clock.now
        if self.net.downlink_bps:
            ready = self.net.downlink(ready, dst, size + FRAME_OVERHEAD)
        if self.cpu is not None:
            inp = packet.opened
            if inp is None:
                inp = packet.opened = self._open(packet, dst)
            extra = self.scale.signatures(inp.message) if self.scale is not None and type(inp) is Received else 0
            ready = self.cpu.run(dst, PRIMARY, ready, self.cpu.costs.receive(size, extra))
        self.clock.at(ready, self._process, packet, node, incarnation)

    def _process(self, packet: Packet, node: Node, incarnation: int) -> None:
        if not node.up or node.incarnation != incarnation:
            return
        src = packet.src
        dst = node.node_id
        side = self.net.side
        if side[src] != side[dst]:
            return  # cut by a partition while in flight
        self._trace.append((self.clock.now, src, dst, len(packet.data)))
        if not node.correct:
            node.behaviour.inbound(packet.data)
        inp = packet.opened
        if inp is None:
            inp = packet.opened = self._open(packet, dst)
        if type(inp) is DecodeError:
            self.rejected[inp.reason] += 1
            return
        if inp.sender != src:
            self.rejected["sender_mismatch"] += 1
            return
        if len(node.instances) == 1:
            self._feed(node, 0, inp)
            return
        for k, inst in enumerate(node.instances):
            if inst.scope is None or src in inst.scope:
                self._feed(node, k, inp)

    def _open(self, packet: Packet, dst: int) -> Received | DecodeError:
        """The codec's verdict on a frame, as the `Received` input every receiver gets (one object
        for all copies: inputs are immutable)."""
        try:
            opened = self.codec.open(self.verifier, packet.data, self.lazy)
        except Exception as exc:  # peer bytes must never raise out of the codec: a codec bug
            detail = f"{type(exc).__name__}: {exc}"
            self.checker.codec_error(dst, packet.src, detail)
            return DecodeError("codec_exception", detail)
        if isinstance(opened, DecodeError):
            return opened
        return Received(sender=opened.sender, message=opened.message, signature=opened.signature,
                        verified=opened.verified)

    def _fire(self, node: Node, k: int, incarnation: int, timer: Timer, token: int) -> None:
        if node.up and node.incarnation == incarnation and node.instances[k].timers.get(timer) == token:
            del node.instances[k].timers[timer]
            self._feed(node, k, TimerFired(timer=timer))

    def _commit(self, node: Node, inst: Instance, c: Commit) -> None:
        log = inst.log
        if c.height <= len(log):
            if node.checked:  # a repeat: the driver ignores it, the checker still compares it
                self.checker.committed(self.clock.now, node.node_id, c.height, block_digest(c.block), c.block.txs, ())
            return
        if c.height == len(log) + 1:
            log.append((c.block, c.certificate))
        if not node.checked:
            return
        dig = block_digest(c.block)
        now = self.clock.now
        if not inst.core.verify_certificate(c.height, c.block, c.certificate):
            self.checker.bad_certificate(node.node_id, c.height)
        self._trace.append((now, node.node_id, 0xFFFF, c.height, dig))
        self.checker.committed(now, node.node_id, c.height, dig, c.block.txs, c.txs)

    # -- load --------------------------------------------------------------------------------
    def _submit(self) -> None:
        sc = self.scenario
        if not self.loading:
            return
        targets = [n for n in self.nodes if n.up and n.correct] or [n for n in self.nodes if n.up]
        if targets:
            node = targets[self.rng_load.randrange(len(targets))]
            self._tx_counter += 1
            head = f"{sc.seed}:{self._tx_counter}:".encode()
            tx = Transaction(payload=head + self.rng_load.randbytes(max(sc.tx_size - len(head), 0)))
            self.checker.submitted_tx(self.clock.now, node.node_id, tx)  # liveness counts correct origins only
            self._feed(node, 0, Submitted(tx=tx))
        self.clock.after(self.rng_load.expovariate(sc.rate), self._submit)

    # -- catch-up (the driver's planner and apply loop; peers answer from their logs) --------------
    @staticmethod
    def _planner() -> CatchUpPlanner:
        return CatchUpPlanner(SYNC_MAX_BLOCKS, SYNC_TIMEOUT)

    def _sync_tick(self, node: Node) -> None:
        """The driver's height gossip: every peer we can reach tells us its committed height."""
        if node.up:
            me = node.node_id
            for k, inst in enumerate(node.instances):
                for peer in self.nodes:
                    if peer.node_id != me and peer.up and self.net.connected(me, peer.node_id) and (
                            inst.scope is None or peer.node_id in inst.scope):
                        inst.planner.on_status(peer.node_id, len(peer.instances[0].log))
                        self.driver_sent["SyncStatus"] += 1  # the peer's gossip that told us
                self._request_missing(node, k)
        self.clock.after(self.scenario.sync_interval, self._sync_tick, node)

    def _request_missing(self, node: Node, k: int) -> None:
        inst = node.instances[k]
        plan = inst.planner.next_request(self.clock.now, len(inst.log))
        if plan is None:
            return
        peer, request = plan
        server = self.nodes[peer]
        me = node.node_id
        self.driver_sent["BlockRequest"] += 1
        if not (server.up and server.checked and self.net.connected(me, peer)):
            return  # lost, or a Byzantine peer that does not answer: the planner times it out
        self.driver_sent["BlockResponse"] += 1
        # As a node's driver answers: at most sync_max_blocks, up to its own committed height.
        blocks = server.instances[0].log[request.start - 1:min(request.end, request.start + SYNC_MAX_BLOCKS - 1)]
        self.clock.after(2 * self.net.one_way(me, peer), self._fetched, node, k, node.incarnation, peer, blocks)

    def _fetched(self, node: Node, k: int, incarnation: int, sender: int, blocks: list[tuple[Block, Any]]
                 ) -> None:
        if not node.up or node.incarnation != incarnation:
            return
        inst = node.instances[k]

        def feed(block: Block, cert: Any) -> None:
            self._feed(node, k, Fetched(sender=sender, block=block, certificate=cert))

        items = ((block.height, block, cert) for block, cert in blocks)
        apply_fetched(inst.planner, sender, items, lambda: len(inst.log) + 1, inst.core.verify_certificate, feed)
        self._request_missing(node, k)

    # -- faults ------------------------------------------------------------------------------
    def _apply_fault(self, fault: Fault) -> None:
        if isinstance(fault, Partition):
            self.net.partition(fault.groups)
        elif isinstance(fault, Heal):
            self.net.heal()
        elif isinstance(fault, Isolate):
            self.net.isolate(fault.node)
        elif isinstance(fault, Rejoin):
            self.net.rejoin(fault.node)
        elif isinstance(fault, Crash):
            node = self.nodes[fault.node]
            if node.up:
                node.up = False
                node.incarnation += 1
                self.net.reset_links(node.node_id)
                if self.cpu is not None:
                    self.cpu.reset(node.node_id, self.clock.now)
        elif isinstance(fault, Restart):
            node = self.nodes[fault.node]
            if not node.up:
                node.up = True
                node.instances = [Instance(self._core(node, k), inst.scope, inst.log, self._planner(), inst.persisted)
                                  for k, inst in enumerate(node.instances)]
                for k, inst in enumerate(node.instances):
                    for key, value in sorted(inst.persisted.items()):
                        self._feed(node, k, Recovered(key=key, value=value))
                    for height, (block, cert) in enumerate(inst.log, start=1):
                        self._feed(node, k, Restored(height=height, block=block, certificate=cert))
                    self._feed(node, k, Started())
        self._trace.append((self.clock.now, repr(fault)))


def message_label(message: Any) -> str:
    """A message's type name, with the vote kind for votes and ballots (`Vote:prepare`, `Ballot:commit`)."""
    kind = getattr(message, "kind", None)
    return type(message).__name__ if not isinstance(kind, str) else f"{type(message).__name__}:{kind}"


def simulate(scenario: Scenario, **kwargs: Any) -> RunResult:
    return Simulation(scenario, **kwargs).run()
