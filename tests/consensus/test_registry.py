"""The protocol registry: adding a protocol is a package and a row, never a branch in shared code.

The toy protocol below lives only in this file. Registered for one test, it runs through the real
simulator (codec, network model, catch-up, invariant checker) and the real `dwcp simulate` command
with its own message set, a certificate of its own shape (one leader signature, not a quorum) and
its own simulator stand-in; nothing in `dwcp.consensus` names it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel, ConfigDict, Field
from typer.testing import CliRunner

from dwcp.cli import app
from dwcp.consensus import registry
from dwcp.consensus.core.codec import block_digest, encode, signing_bytes
from dwcp.consensus.core.committee import Committee
from dwcp.consensus.core.crypto import Signer, Verifier
from dwcp.consensus.core.inputs import Fetched, Input, Received, Restored, Submitted, Timer, TimerFired
from dwcp.consensus.core.messages import Block, Message, Transaction, TxBatch
from dwcp.consensus.core.outputs import Broadcast, Commit, Output, Rejected, Send, SetTimer
from dwcp.consensus.settings import ConsensusSettings
from dwcp.consensus.sim import Crash, Restart, Scenario, Simulation
from dwcp.runtime.inventory import InventoryError, parse_inventory

BATCH = Timer(kind="toy-batch")


class Proposal(Message, tag="toy-proposal"):
    block: Block


class LeaderCertificate(Message, tag="toy-cert"):
    """A block is certified by its leader's envelope signature over the `Proposal` (crash faults only)."""

    height: int
    digest: bytes
    leader: int
    signature: bytes

    def summary(self) -> dict[str, Any]:
        return {"kind": "leader", "leader": self.leader}


@dataclass(frozen=True, kw_only=True)
class ToyConfig:
    batch_delay: float = 0.01


class ToySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    batch_delay_ms: float = Field(10.0, gt=0)

    def core_config(self, max_pending: int) -> ToyConfig:
        return ToyConfig(batch_delay=self.batch_delay_ms / 1000)


class ToyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.blocks = Counter("toy_blocks_committed_total", "Blocks this node committed.", registry=registry)

    def committed(self, height: int, txs: int, latencies: list[float]) -> None:
        self.blocks.inc()

    def update(self, status: dict[str, Any]) -> None:
        pass


class ToyReplica:
    """A fixed leader orders whatever it is sent; followers commit its proposals in height order."""

    def __init__(self, *, committee: Committee, node_id: int, signer: Signer, verifier: Verifier,
                 config: ToyConfig | None = None, rng: random.Random, leader: int) -> None:
        self.committee, self.node_id, self.signer, self.verifier = committee, node_id, signer, verifier
        self.config, self.rng, self.leader = config or ToyConfig(), rng, leader
        self.height = 0
        self.pool: dict[bytes, Transaction] = {}
        self.committed: set[bytes] = set()
        self.waiting: dict[int, tuple[Block, LeaderCertificate]] = {}
        self.batching = False

    def handle(self, now: float, input: Input) -> list[Output]:
        outs: list[Output] = []
        if isinstance(input, Submitted):
            self._add((input.tx,), outs)
            if self.node_id != self.leader:
                outs.append(Send(to=self.leader, message=TxBatch(txs=(input.tx,))))
        elif isinstance(input, TimerFired) and input.timer == BATCH:
            self.batching = False
            txs = tuple(self.pool.values())[:50]
            if txs:
                block = Block(height=self.height + len(self.waiting) + 1, epoch=0, view=0, proposer=self.node_id,
                              txs=txs)
                proposal = Proposal(block=block)
                signature = self.signer.sign(signing_bytes(self.node_id, encode(proposal)))
                outs.append(Broadcast(message=proposal))
                self._decided(block, self._cert(block, signature), outs)
        elif isinstance(input, Received):
            msg = input.message
            if isinstance(msg, TxBatch) and self.node_id == self.leader:
                self._add(msg.txs, outs)
            elif isinstance(msg, Proposal) and input.sender == self.leader:
                self._decided(msg.block, self._cert(msg.block, input.signature), outs)
            else:
                outs.append(Rejected(peer=input.sender, reason="unexpected"))
        elif isinstance(input, Fetched) and self.verify_certificate(input.block.height, input.block,
                                                                     input.certificate):
            self._decided(input.block, input.certificate, outs)
        elif isinstance(input, Restored):
            self._execute(input.block, input.certificate, [])
        return outs

    def _cert(self, block: Block, signature: bytes) -> LeaderCertificate:
        return LeaderCertificate(height=block.height, digest=block_digest(block), leader=self.leader,
                                 signature=signature)

    def _add(self, txs: tuple[Transaction, ...], outs: list[Output]) -> None:
        for tx in txs:
            if tx.id not in self.committed:
                self.pool.setdefault(tx.id, tx)
        if self.node_id == self.leader and self.pool and not self.batching:
            self.batching = True
            outs.append(SetTimer(timer=BATCH, delay=self.config.batch_delay * (1 + self.rng.random())))

    def _decided(self, block: Block, cert: LeaderCertificate, outs: list[Output]) -> None:
        if block.height > self.height:
            self.waiting[block.height] = (block, cert)
        while self.height + 1 in self.waiting:
            self._execute(*self.waiting.pop(self.height + 1), outs)

    def _execute(self, block: Block, cert: LeaderCertificate, outs: list[Output]) -> None:
        fresh = tuple(t for t in block.txs if t.id not in self.committed)
        for tx in block.txs:
            self.committed.add(tx.id)
            self.pool.pop(tx.id, None)
        self.height = block.height
        outs.append(Commit(height=block.height, block=block, certificate=cert, txs=fresh))

    def status(self) -> dict[str, Any]:
        return {"height": self.height, "view": 0, "epoch": 0, "pending": len(self.pool)}

    def verify_certificate(self, height: int, block: Block, certificate: Any) -> bool:
        return (isinstance(certificate, LeaderCertificate) and certificate.height == height == block.height
                and certificate.digest == block_digest(block) and certificate.leader == self.leader
                and self.verifier.verify(self.leader, signing_bytes(self.leader, encode(Proposal(block=block))),
                                         certificate.signature))


TOY = registry.ProtocolSpec(
    name="toy", summary="a crash-fault toy with a fixed leader (tests only)",
    replica=ToyReplica, config=ToyConfig, settings=ToySettings, messages=(Proposal,),
    certificate=LeaderCertificate, metrics=ToyMetrics, live_peers=lambda committee: 1, seeded=True,
    sim_extras=lambda seed, committee, node_id, crypto: {"leader": seed % committee.n},
)


@pytest.fixture
def toy() -> Iterator[registry.ProtocolSpec]:
    with registry.registered(TOY) as spec:
        yield spec


def test_a_protocol_defined_in_a_test_runs_through_the_simulator(toy: registry.ProtocolSpec) -> None:
    sim = Simulation(Scenario(protocol="toy", nodes=4, seed=6, duration=3.0, rate=40.0))
    result = sim.run()
    assert result.ok, result.violation_details
    assert result.committed_tx > 60 and result.committed_blocks > 5
    assert all(core.leader == 2 for node in sim.nodes for core in (node.instances[0].core,))  # seed 6 % 4
    block, cert = sim.nodes[0].instances[0].log[0]
    assert isinstance(cert, LeaderCertificate) and cert.summary() == {"kind": "leader", "leader": 2}


def test_a_registered_protocol_is_crash_tested_by_the_simulator(toy: registry.ProtocolSpec) -> None:
    # the leader (seed 1 % 4 = 1) stays up; a follower crashes and catches up from its own log and a peer's
    sc = Scenario.build("toy", nodes=4, seed=1, duration=4.0, rate=30.0,
                        faults=(Crash(0.5, 3), Restart(1.5, 3)))
    result = Simulation(sc).run()
    assert result.ok, result.violation_details


def test_dwcp_simulate_accepts_a_registered_protocol_and_lists_it(toy: registry.ProtocolSpec) -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["consensus", "protocols"])
    assert listed.exit_code == 0 and "toy" in listed.output and "pbft" in listed.output
    run = runner.invoke(app, ["simulate", "toy", "--nodes", "4", "--byzantine", "0", "--duration", "2"])
    assert run.exit_code == 0, run.output


def test_an_unregistered_protocol_is_unknown_everywhere() -> None:
    assert "toy" not in registry.PROTOCOLS
    with pytest.raises(registry.UnknownProtocol, match=f"unknown protocol 'toy'; known: {', '.join(registry.names())}"):
        registry.get("toy")
    run = CliRunner().invoke(app, ["simulate", "toy"])
    assert run.exit_code == 2 and "unknown protocol 'toy'" in run.output
    with pytest.raises(ValueError, match="unknown protocol 'toy'"):
        ConsensusSettings(protocol="toy")


def test_protocol_settings_are_validated_by_the_protocols_own_model(toy: registry.ProtocolSpec) -> None:
    settings = ConsensusSettings.model_validate({"protocol": "toy", "batch_delay_ms": 4, "max_pending": 9})
    assert settings.protocol_settings("toy").core_config(settings.max_pending) == ToyConfig(batch_delay=0.004)
    with pytest.raises(ValueError, match="batch_size: the toy protocol has no such setting"):
        ConsensusSettings.model_validate({"protocol": "toy", "batch_size": 5})
    with pytest.raises(ValueError, match="batch_delay_ms: Input should be greater than 0"):
        ConsensusSettings.model_validate({"protocol": "toy", "batch_delay_ms": 0})


def test_inventory_checks_a_services_protocol_settings_at_load() -> None:
    def load(settings: dict) -> Any:
        return parse_inventory({"services": {"tpbft": {"replicas": 4, "base_port": 18300,
                                                       "base_ports": {"consensus": 19300},
                                                       "settings": settings}}})

    assert load({"group_size": 4}).spec("tpbft").settings.protocol_settings("tpbft").group_size == 4
    with pytest.raises((ValueError, InventoryError), match="group_size: the pbft protocol has no such setting"):
        load({"protocol": "pbft", "group_size": 4})
    with pytest.raises((ValueError, InventoryError), match="batch_sise: the tpbft protocol has no such setting"):
        load({"batch_sise": 4})

