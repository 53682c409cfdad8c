"""Put one consensus node together from its ServiceContext: keys, committee, core, store, driver.

Which core runs, with which settings model, messages, certificate type and metrics, comes from the
protocol registry (`consensus/registry.py`); nothing here knows a protocol by name.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

from dwcp.consensus import registry
from dwcp.consensus.core.codec import Codec
from dwcp.consensus.core.crypto import Signer
from dwcp.consensus.node.keys import KeyLoadError, NodeKeys, SignatureCache, deployment_key_dir, load_keys
from dwcp.consensus.registry import ProtocolSpec
from dwcp.consensus.settings import ConsensusSettings
from dwcp.consensus.storage import BlockStore
from dwcp.consensus.transport.driver import Driver, DriverConfig
from dwcp.consensus.transport.framing import Channel
from dwcp.consensus.transport.metrics import TransportMetrics
from dwcp.consensus.transport.peers import QueueLimits
from dwcp.consensus.transport.tcp import TransportConfig
from dwcp.runtime.context import ServiceContext
from dwcp.runtime.server import RUN_DIR_ENV


def node_keys(ctx: ServiceContext, settings: ConsensusSettings) -> NodeKeys:
    """From `settings.key_dir`, else from the per-node directory `dwcp up` made in its run directory."""
    if settings.key_dir:
        return load_keys(Path(settings.key_dir), ctx.instance)
    run_dir = os.environ.get(RUN_DIR_ENV)
    if run_dir and deployment_key_dir(Path(run_dir), ctx.service, ctx.instance).is_dir():
        return load_keys(deployment_key_dir(Path(run_dir), ctx.service, ctx.instance), ctx.instance)
    raise KeyLoadError(
        f"services.{ctx.service}.settings.key_dir is not set: make keys with `dwcp consensus keygen` and set it, "
        "or start the node with `dwcp up`, which makes fresh keys for each deployment"
    )


def core_config(protocol: str, settings: ConsensusSettings) -> Any:
    """The core's Config from the node settings, through the protocol's own settings model: a
    setting the protocol has no field for is a ValueError naming it (e.g. `group_size` for pbft)."""
    return settings.protocol_settings(protocol).core_config(settings.max_pending)


def make_core(spec: ProtocolSpec, keys: NodeKeys, settings: ConsensusSettings, signer: Signer | None = None) -> Any:
    extras: dict[str, Any] = dict(spec.node_extras(keys)) if spec.node_extras else {}
    if spec.seeded:
        extras["rng"] = random.Random(os.urandom(16))
    return spec.replica(
        committee=keys.committee, node_id=keys.signer.node_id, signer=signer or keys.signer, verifier=keys.verifier,
        config=core_config(spec.name, settings), **extras,
    )


def node_settings(ctx: ServiceContext) -> ConsensusSettings:
    """The validated settings (the inventory loader validates them; a hand-built context may hold a dict)."""
    if isinstance(ctx.settings, ConsensusSettings):
        return ctx.settings
    return ConsensusSettings.model_validate(ctx.settings or {}, context={"service": ctx.service})


def node_protocol(ctx: ServiceContext) -> ProtocolSpec:
    """The registry row of the protocol this instance runs (ValueError when none is registered)."""
    name = node_settings(ctx).protocol_name(ctx.service)
    try:
        return registry.get(name)
    except registry.UnknownProtocol as exc:
        raise ValueError(f"no consensus core for service {ctx.service!r}: {exc}") from None


def build_node(ctx: ServiceContext) -> Driver:
    """The driver for this instance, not yet started (the app's startup hook starts it)."""
    settings = node_settings(ctx)
    spec = node_protocol(ctx)
    protocol = spec.name
    keys = node_keys(ctx, settings)
    me = keys.signer.node_id
    committee = keys.committee
    codec = Codec(spec.messages)
    peers = {m.node_id: (m.host, m.port) for m in committee.members if m.node_id != me}
    transport = TransportConfig(
        me=me, host=committee.member(me).host, port=ctx.ports.get("consensus", committee.member(me).port),
        peers=peers, auth=keys.peer_auth(protocol),
        queue_limits={ch: QueueLimits(max_bytes=settings.peer_queue_max_bytes) for ch in Channel},
    )
    signer = SignatureCache(keys.signer)  # shared by core and driver: each vote is signed once
    return Driver(
        core=make_core(spec, keys, settings, signer), certificate=spec.certificate,
        codec=codec, signer=signer, verifier=keys.verifier, committee=committee,
        store=BlockStore(ctx.data_dir / f"{protocol}-blocks.sqlite"),
        transport=transport,
        config=DriverConfig(
            protocol=protocol, sync_interval=settings.sync_interval_ms / 1000,
            sync_max_blocks=settings.sync_max_blocks, max_pending=settings.max_pending,
            peers_needed=spec.live_peers(committee),
            # A node component (Bullshark's worker) learns of commits before the log is durable and keeps its
            # own records: those nodes fsync every block, as before.
            max_unsynced=settings.max_unsynced_ms / 1000 if spec.node_components is None else 0.0,
        ),
        metrics=TransportMetrics(ctx.registry, protocol),
        observer=spec.metrics(ctx.registry),
    )


def build_components(ctx: ServiceContext, driver: Driver) -> list[Any]:
    """The protocol's other parts of this node (registry `node_components`), e.g. Bullshark's worker."""
    spec = node_protocol(ctx)
    if spec.node_components is None:
        return []
    settings = node_settings(ctx)
    return spec.node_components(ctx, node_keys(ctx, settings), settings, settings.protocol_settings(spec.name),
                                driver)
