"""What a service instance is told about itself when it starts."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

if TYPE_CHECKING:
    from dwcp.runtime.inventory import Inventory
    from dwcp.runtime.tls import HttpTls


@dataclass
class ServiceContext:
    """One instance of one service: identity, addresses, settings and its own metric registry."""

    service: str
    job: str
    instance: int
    host: str
    port: int
    settings: Any
    inventory: Inventory
    data_dir: Path
    ports: dict[str, int] = field(default_factory=dict)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("dwcp"))
    # Bearer tokens for write endpoints (runtime.auth). `build_context` always sets it; None (hand-built
    # contexts in tests) leaves POST/PUT/PATCH/DELETE open and logs that at startup.
    token_file: Path | None = None
    # The checked certificate and key its HTTP port serves with (runtime.tls); None: plain HTTP.
    tls: HttpTls | None = None

    @property
    def name(self) -> str:
        """Instance name as logs and the supervisor show it, e.g. `compression-1`."""
        return f"{self.service}-{self.instance}"
