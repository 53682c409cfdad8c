"""The one table of consensus protocols: name -> everything the framework needs to run that protocol.

The node (`node/assemble.py`), the simulator (`sim/runner.py`), the CLI (`dwcp simulate <protocol>`),
the benchmarks and the service table (`runtime/services.py`) all look protocols up here and nowhere
else; none of them branches on a protocol's name. Adding a protocol is a package (core, messages,
settings model, metrics) plus one `register(ProtocolSpec(...))` row below, and nothing in shared code:
`tests/consensus/test_registry.py` registers a toy protocol and runs it through the simulator.

What a row holds, and who reads it:

| field        | what it is                                                          | read by              |
|--------------|---------------------------------------------------------------------|----------------------|
| replica      | the sans-IO core class: `replica(committee=, node_id=, signer=,      | node, simulator      |
|              | verifier=, config=, [rng=], **extras)`                              |                      |
| config       | the core's frozen Config dataclass (the simulator runs `config()`   | simulator            |
|              | with overrides checked against its fields)                          |                      |
| settings     | pydantic model of the protocol's node settings; validates every key | node, inventory      |
|              | of `services.<s>.settings` that `ConsensusSettings` does not own and |                      |
|              | turns them into a Config (`core_config(max_pending)`)               |                      |
| messages     | the protocol's wire vocabulary for `core.codec.Codec`               | node, simulator      |
| certificate  | the msgspec type of the proof stored with each block (a quorum of   | driver, /v1/blocks   |
|              | signatures for PBFT; per-signer proofs or a DAG sub-certificate for |                      |
|              | others); `summary()` is what `/v1/blocks` shows                      |                      |
| metrics      | builds the protocol's metrics from a `CollectorRegistry`            | node                 |
| live_peers   | peers a node must reach for the protocol to make progress (health)  | node service         |
| seeded       | the core takes `rng=random.Random` (seeded by the simulator, from   | node, simulator      |
|              | os.urandom on a node)                                               |                      |
| sim_extras   | simulator stand-ins: extra core kwargs for a node of a seeded run   | simulator            |
|              | (e.g. a keyed-hash VRF in place of the real one, like `MacSigner`)  |                      |
| sim_scale    | seed-scale simulation hooks (`sim/dataplane.py`): the node's worker | simulator            |
|              | messages for declared batches, signatures a receiver verifies       |                      |
| node_extras  | extra core kwargs from a node's loaded keys (e.g. its VRF key)      | node                 |
| node_        | other processes or tasks of a node, started after its driver and   | node service         |
| components   | stopped before it: `(ctx, keys, shared settings, protocol settings, |                      |
|              | driver) -> [obj with async start()/stop()]` (Bullshark's worker)     |                      |
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from typing import Protocol as _Protocol

from prometheus_client import CollectorRegistry

from dwcp.consensus import bullshark, pbft, probft, tpbft
from dwcp.consensus.bullshark.metrics import Metrics as BullsharkMetrics
from dwcp.consensus.bullshark.settings import Settings as BullsharkSettings
from dwcp.consensus.core.committee import Committee
from dwcp.consensus.core.messages import Certificate
from dwcp.consensus.pbft.metrics import Metrics as PbftMetrics
from dwcp.consensus.pbft.settings import Settings as PbftSettings
from dwcp.consensus.probft.keys import node_extras as probft_node_extras
from dwcp.consensus.probft.keys import sim_extras as probft_sim_extras
from dwcp.consensus.probft.metrics import Metrics as ProbftMetrics
from dwcp.consensus.probft.settings import Settings as ProbftSettings
from dwcp.consensus.tpbft.metrics import Metrics as TpbftMetrics
from dwcp.consensus.tpbft.settings import Settings as TpbftSettings
from dwcp.consensus.transport.workernode import worker_components


class ProtocolMetrics(_Protocol):
    """Protocol metrics fed by the driver, after each durable block and with every status snapshot."""

    def committed(self, height: int, txs: int, latencies: list[float]) -> None: ...

    def update(self, status: dict[str, Any]) -> None: ...


class NodeComponent(_Protocol):
    """A part of a node beside its driver (a Narwhal worker process): started after it, stopped before."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class ProtocolSettings(_Protocol):
    """A protocol's node settings model (pydantic, `extra="forbid"`)."""

    def core_config(self, max_pending: int) -> Any: ...


def committee_quorum_peers(committee: Committee) -> int:
    """PBFT-family health: a node reaching fewer than quorum - 1 peers cannot gather a quorum."""
    return committee.quorum - 1


@dataclass(frozen=True)
class ProtocolSpec:
    name: str
    summary: str
    replica: Callable[..., Any]
    config: type
    settings: type  # a pydantic model implementing ProtocolSettings
    messages: tuple[type, ...]
    certificate: type
    metrics: Callable[[CollectorRegistry], ProtocolMetrics]
    live_peers: Callable[[Committee], int] = committee_quorum_peers
    seeded: bool = False
    # (seed, committee, node_id, crypto) -> extra core kwargs in a simulated run
    sim_extras: Callable[[int, Committee, int, str], Mapping[str, Any]] | None = None
    # () -> the simulator's seed-scale hooks (sim/dataplane.py `ScaleHooks`: declared batches, signatures
    # a receiver verifies); a factory, as the hooks import the simulator, which imports this registry
    sim_scale: Callable[[], Any] | None = None
    # NodeKeys -> extra core kwargs on a real node
    node_extras: Callable[[Any], Mapping[str, Any]] | None = None
    # (ServiceContext, NodeKeys, ConsensusSettings, protocol settings, Driver) -> [NodeComponent]
    node_components: Callable[..., list[NodeComponent]] | None = None

    def core_settings(self, raw: Mapping[str, Any]) -> Any:
        """The protocol's settings model from the keys `ConsensusSettings` does not own
        (pydantic.ValidationError for an unknown key or a bad value)."""
        return self.settings.model_validate(dict(raw))


PROTOCOLS: dict[str, ProtocolSpec] = {}


def register(protocol: ProtocolSpec) -> ProtocolSpec:
    if protocol.name in PROTOCOLS:
        raise ValueError(f"protocol {protocol.name!r} is already registered")
    PROTOCOLS[protocol.name] = protocol
    return protocol


@contextmanager
def registered(protocol: ProtocolSpec) -> Iterator[ProtocolSpec]:
    """`protocol` registered for the duration of a `with` block (tests)."""
    register(protocol)
    try:
        yield protocol
    finally:
        PROTOCOLS.pop(protocol.name, None)


class UnknownProtocol(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def get(name: str) -> ProtocolSpec:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise UnknownProtocol(f"unknown protocol {name!r}; known: {', '.join(names())}") from None


def names() -> list[str]:
    return sorted(PROTOCOLS)


def _bullshark_scale() -> Any:
    from dwcp.consensus.bullshark.simworker import DeclaredWorkers  # imports the simulator, which imports us

    return DeclaredWorkers()


register(ProtocolSpec(
    name="pbft",
    summary="classic PBFT over the whole committee (the baseline)",
    replica=pbft.Replica, config=pbft.Config, settings=PbftSettings, messages=pbft.MESSAGES,
    certificate=Certificate, metrics=PbftMetrics,
))
register(ProtocolSpec(
    name="tpbft",
    summary="PBFT in an EigenTrust-chosen consensus group",
    replica=tpbft.Replica, config=tpbft.Config, settings=TpbftSettings, messages=tpbft.MESSAGES,
    certificate=Certificate, metrics=TpbftMetrics,
))
register(ProtocolSpec(
    name="probft",
    summary="ProBFT: VRF-sampled prepare/commit with probabilistic quorums (docs/probft.md)",
    replica=probft.Replica, config=probft.Config, settings=ProbftSettings, messages=probft.MESSAGES,
    certificate=Certificate, metrics=ProbftMetrics, sim_extras=probft_sim_extras, node_extras=probft_node_extras,
))
register(ProtocolSpec(
    name="bullshark",
    summary="Narwhal DAG mempool (workers + primaries) ordered by Bullshark",
    replica=bullshark.Primary, config=bullshark.Config, settings=BullsharkSettings,
    messages=bullshark.MESSAGES, certificate=Certificate, metrics=BullsharkMetrics,
    node_components=worker_components,
    sim_extras=lambda seed, committee, node_id, crypto: {"inline_batches": True},  # the worker inside the core
    sim_scale=_bullshark_scale,
))
