"""Put one consensus node together from its ServiceContext: keys, committee, core, store, driver.

The protocol table below is the only place that knows which core a service runs; ProBFT and
Bullshark add a row (and their metrics adapter) and reuse everything else.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from dwcp.consensus.core.codec import Codec
from dwcp.consensus.core.crypto import Signer
from dwcp.consensus.node.keys import NodeKeys, SignatureCache, dev_keys, load_keys
from dwcp.consensus.node.observers import TpbftObserver
from dwcp.consensus.settings import ConsensusSettings
from dwcp.consensus.storage import BlockStore
from dwcp.consensus.transport.driver import CommitObserver, Driver, DriverConfig
from dwcp.consensus.transport.framing import Channel
from dwcp.consensus.transport.metrics import TransportMetrics
from dwcp.consensus.transport.peers import QueueLimits
from dwcp.consensus.transport.tcp import TransportConfig
from dwcp.runtime.context import ServiceContext


@dataclass(frozen=True)
class ProtocolEntry:
    replica: str  # "module:Class" of the core: Replica(committee=, node_id=, signer=, verifier=, config=)
    config: str  # "module:Class" of the core's frozen Config dataclass
    messages: str  # "module:NAME" of the protocol's message types for the codec
    metrics: Callable[[CollectorRegistry], CommitObserver] | None = None  # the protocol's metrics


PROTOCOLS: dict[str, ProtocolEntry] = {
    "pbft": ProtocolEntry(
        "dwcp.consensus.pbft:Replica", "dwcp.consensus.pbft:Config", "dwcp.consensus.pbft:MESSAGES", TpbftObserver,
    ),
    "tpbft": ProtocolEntry(
        "dwcp.consensus.tpbft:Replica", "dwcp.consensus.tpbft:Config", "dwcp.consensus.tpbft:MESSAGES",
        TpbftObserver,
    ),
}


def _load(ref: str) -> Any:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def node_keys(ctx: ServiceContext, settings: ConsensusSettings) -> NodeKeys:
    if settings.key_dir:
        return load_keys(Path(settings.key_dir), ctx.instance)
    return dev_keys(ctx.inventory, ctx.service, ctx.instance, settings.dev_seed)


def core_config(protocol: str, settings: ConsensusSettings) -> Any:
    """The core's Config from the node settings. A setting the core has no field for is an error,
    never silently dropped (e.g. `group_size` with `protocol: pbft`)."""
    config_cls = _load(PROTOCOLS[protocol].config)
    progress_timeout = settings.view_change_timeout_ms / 1000
    values: dict[str, Any] = {
        "batch_size": settings.batch_size,
        "batch_delay": settings.batch_timeout_ms / 1000,
        "gossip_delay": settings.forward_interval_ms / 1000,
        "request_timeout": progress_timeout,  # a pending tx this old suspects the primary
        "view_change_timeout": progress_timeout,  # then wait this long for NEW-VIEW
        "max_pending": settings.max_pending,
    }
    for name in ("group_size", "max_inflight", "epoch_length"):  # None: keep the core's default
        if getattr(settings, name) is not None:
            values[name] = getattr(settings, name)
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"the {protocol} core has no setting {', '.join(unknown)}")
    return config_cls(**values)


def make_core(protocol: str, keys: NodeKeys, settings: ConsensusSettings, signer: Signer | None = None) -> Any:
    replica = _load(PROTOCOLS[protocol].replica)
    return replica(
        committee=keys.committee, node_id=keys.signer.node_id, signer=signer or keys.signer, verifier=keys.verifier,
        config=core_config(protocol, settings),
    )


def node_settings(ctx: ServiceContext) -> ConsensusSettings:
    """The validated settings (the inventory loader validates them; a hand-built context may hold a dict)."""
    if isinstance(ctx.settings, ConsensusSettings):
        return ctx.settings
    return ConsensusSettings.model_validate(ctx.settings or {})


def build_node(ctx: ServiceContext) -> Driver:
    """The driver for this instance, not yet started (the app's startup hook starts it)."""
    settings = node_settings(ctx)
    protocol = settings.protocol or ctx.service
    if protocol not in PROTOCOLS:
        raise ValueError(f"no consensus core for protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    entry = PROTOCOLS[protocol]
    keys = node_keys(ctx, settings)
    me = keys.signer.node_id
    committee = keys.committee
    codec = Codec(_load(entry.messages))
    peers = {m.node_id: (m.host, m.port) for m in committee.members if m.node_id != me}
    transport = TransportConfig(
        me=me, host=committee.member(me).host, port=ctx.ports.get("consensus", committee.member(me).port),
        peers=peers, public_keys=committee.public_keys(), sign=keys.signer.sign,
        domain=protocol.encode() + b"/" + committee.digest(),
        queue_limits={ch: QueueLimits(max_bytes=settings.peer_queue_max_bytes) for ch in Channel},
    )
    signer = SignatureCache(keys.signer)  # shared by core and driver: each vote is signed once
    return Driver(
        core=make_core(protocol, keys, settings, signer),
        codec=codec, signer=signer, verifier=keys.verifier, committee=committee,
        store=BlockStore(ctx.data_dir / f"{protocol}-blocks.sqlite"),
        transport=transport,
        config=DriverConfig(
            protocol=protocol, sync_interval=settings.sync_interval_ms / 1000,
            sync_max_blocks=settings.sync_max_blocks, max_pending=settings.max_pending,
        ),
        metrics=TransportMetrics(ctx.registry, protocol),
        observer=entry.metrics(ctx.registry) if entry.metrics else None,
    )
