"""The table of DWCP service kinds: inventory key, Prometheus job, where each piece of code lives.

A kind is *built* when its service module is importable and, for a consensus service, when its
protocol is in the consensus protocol registry (`dwcp.consensus.registry`); `dwcp up` starts only
built kinds, so a service that does not exist yet is absent rather than faked.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from functools import cache
from typing import Any


@dataclass(frozen=True, slots=True)
class ServiceKind:
    key: str
    job: str
    summary: str
    app_module: str  # provides build_app(ctx) -> FastAPI
    settings: str  # "module:Class" of the pydantic settings model
    load_module: str  # provides async drive(base_urls, client, stop, rate)
    extra_ports: tuple[str, ...] = field(default=())
    protocol: str | None = None  # consensus services: the registry protocol the service runs by default

    @property
    def built(self) -> bool:
        return importable(self.app_module) and (self.protocol is None or registered_protocol(self.protocol))

    def settings_model(self) -> Any | None:
        """The settings class, or None while the service is not built."""
        module, _, name = self.settings.partition(":")
        if not importable(module):
            return None
        return getattr(importlib.import_module(module), name)

    def build_app_function(self) -> Any:
        return importlib.import_module(self.app_module).build_app


@cache
def importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def registered_protocol(name: str) -> bool:
    from dwcp.consensus import registry

    return name in registry.PROTOCOLS


CONSENSUS_NODE = "dwcp.consensus.node.service"  # every registered protocol is served by the shared node

SERVICE_KINDS: dict[str, ServiceKind] = {
    kind.key: kind
    for kind in (
        ServiceKind(
            "manager", "dwcp-manager", "front door: transfers, transaction routing, allocation requests",
            "dwcp.manager.service", "dwcp.manager.settings:ManagerSettings", "dwcp.manager.load",
        ),
        ServiceKind(
            "compression", "compression-api", "ML codec/level selector for WAN transfers",
            "dwcp.compression.service", "dwcp.compression.settings:CompressionSettings", "dwcp.compression.load",
        ),
        ServiceKind(
            "probft", "probft-consensus", "probabilistic BFT with VRF-sampled quorums",
            CONSENSUS_NODE, "dwcp.consensus.settings:ConsensusSettings",
            "dwcp.consensus.node.load", ("consensus",), protocol="probft",
        ),
        ServiceKind(
            "bullshark", "bullshark-consensus", "Narwhal DAG mempool with Bullshark ordering",
            CONSENSUS_NODE, "dwcp.consensus.settings:ConsensusSettings",
            "dwcp.consensus.node.txstream", ("consensus", "worker"), protocol="bullshark",
        ),
        ServiceKind(
            "tpbft", "tpbft-consensus", "PBFT in an EigenTrust-chosen group",
            CONSENSUS_NODE, "dwcp.consensus.settings:ConsensusSettings",
            "dwcp.consensus.node.load", ("consensus",), protocol="tpbft",
        ),
        ServiceKind(
            "allocator", "maddpg-allocator", "multi-agent RL (MADDPG) cluster resource allocator",
            "dwcp.allocator.service", "dwcp.allocator.settings:AllocatorSettings", "dwcp.allocator.load",
        ),
    )
}

JOB_TO_KEY = {kind.job: key for key, kind in SERVICE_KINDS.items()}


def resolve_kind(name: str) -> ServiceKind:
    """Accept an inventory key (`compression`) or a job name (`compression-api`)."""
    key = JOB_TO_KEY.get(name, name)
    if key not in SERVICE_KINDS:
        known = ", ".join(sorted(SERVICE_KINDS))
        raise KeyError(f"unknown service {name!r}; known services: {known}")
    return SERVICE_KINDS[key]
