"""The inventory: one YAML file that describes a whole DWCP deployment.

`dwcp up`, `dwcp serve`, the rendered Prometheus/Alertmanager/Grafana files and the consensus
committee files all read it; nothing else says where a service runs. Without a file, the embedded
`default_inventory.yaml` describes every service of the seed on 127.0.0.1 with non-clashing ports.

Instances are listed one by one, or generated from a shorthand (`replicas`, `host`, `base_port`,
`base_ports`), so a 100-node Bullshark committee stays a four-line entry.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from dwcp.runtime.breaker import BreakerConfig
from dwcp.runtime.services import SERVICE_KINDS, ServiceKind, importable

Port = int


class InventoryError(ValueError):
    """An inventory that cannot be used; the message names the file and the bad field."""


class Instance(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str = Field("127.0.0.1", min_length=1)
    port: Port = Field(ge=1, le=65535, description="HTTP port: API, /health, /metrics")
    ports: dict[str, Port] = Field(default_factory=dict, description="other named ports, e.g. consensus")
    _tls: bool = PrivateAttr(False)  # the service serves HTTPS: decided by its spec or security.tls

    @model_validator(mode="after")
    def _ports_in_range(self) -> Instance:
        for name, port in self.ports.items():
            if not 1 <= port <= 65535:
                raise ValueError(f"ports.{name}: {port} is not a TCP port (1-65535)")
        return self

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The base URL clients use: https when the service has TLS (set by `Inventory`, see runtime.tls)."""
        return f"{'https' if self._tls else 'http'}://{self.address}"


class TlsFiles(BaseModel):
    """TLS for a service's HTTP port (runtime/tls.py): PEM paths, relative to the inventory file."""

    model_config = ConfigDict(extra="forbid")
    cert_file: str = Field(min_length=1)  # the server's certificate chain; it must name the instance's host
    key_file: str = Field(min_length=1)  # its private key, mode 0600 (refused when group or others can read it)
    # What clients verify the server against: a CA bundle, or the pinned (self-signed) certificate itself.
    # Default: cert_file, i.e. the certificate is pinned.
    ca_file: str | None = Field(None, min_length=1)


class ServiceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    job: str = ""
    instances: list[Instance] = Field(default_factory=list)
    # Shorthand that expands into `instances` (only when `instances` is empty).
    replicas: int = Field(0, ge=0)
    host: str = "127.0.0.1"
    base_port: Port | None = Field(None, ge=1, le=65535)
    base_ports: dict[str, Port] = Field(default_factory=dict)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    settings: Any = Field(default_factory=dict)
    # This service's bearer-token file, when it must differ from security.token_file (see runtime.auth).
    token_file: str | None = Field(None, min_length=1)
    # HTTPS for this service's instances, when it differs from security.tls.
    tls: TlsFiles | None = None

    @model_validator(mode="after")
    def _expand(self) -> ServiceSpec:
        if self.replicas and self.instances:
            raise ValueError("give either instances or replicas/base_port, not both")
        if self.replicas:
            if self.base_port is None:
                raise ValueError("replicas needs base_port")
            self.instances = [
                Instance(host=self.host, port=self.base_port + i, ports={k: p + i for k, p in self.base_ports.items()})
                for i in range(self.replicas)
            ]
        return self


class SupervisorSettings(BaseModel):
    """Where `dwcp up` serves its own metrics (restarts of crashed services), and how it restarts them."""

    model_config = ConfigDict(extra="forbid")
    host: str = "127.0.0.1"
    port: Port = Field(9096, ge=1, le=65535)
    # First delay before restarting a crashed process; it doubles per quick crash up to the maximum.
    restart_backoff_s: float = Field(1.0, ge=0.1, le=300)
    restart_backoff_max_s: float = Field(30.0, ge=0.1, le=3600)

    @model_validator(mode="after")
    def _backoff_order(self) -> SupervisorSettings:
        if self.restart_backoff_max_s < self.restart_backoff_s:
            raise ValueError("restart_backoff_max_s must be >= restart_backoff_s")
        return self


class HttpLimits(BaseModel):
    """What one HTTP service process lets connections hold (runtime/server.py, ConnectionGuard)."""

    model_config = ConfigDict(extra="forbid")
    # Most connections at once; past it a new connection evicts the oldest one still waiting for a request head.
    # Also kept under the process's descriptor limit, which `dwcp serve` raises to its hard limit.
    max_connections: int = Field(4096, ge=16, le=1_000_000)
    # A request head (request line and headers) must arrive this long after the connection opened or went
    # idle, however slowly it trickles in: the slow-loris bound.
    header_timeout_s: float = Field(10.0, gt=0, le=300)
    max_header_bytes: int = Field(64 * 1024, ge=1024, le=1 << 20)
    keep_alive_s: float = Field(5.0, gt=0, le=300)  # idle keep-alive connections are closed after this


class SecuritySettings(BaseModel):
    """Credentials and connection limits of the HTTP services (runtime/auth.py, runtime/server.py,
    docs/security.md). Paths only, never secrets."""

    model_config = ConfigDict(extra="forbid")
    http: HttpLimits = Field(default_factory=HttpLimits)
    # Bearer tokens for every service's write endpoints; relative to the inventory file. Default (None):
    # `dwcp up` makes one per run under <run dir>/secrets/. A multi-host inventory must name one.
    token_file: str | None = Field(None, min_length=1)
    # HTTPS for every service (unless services.<key>.tls names other files); None: plain HTTP.
    tls: TlsFiles | None = None


class Inventory(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "local"
    supervisor: SupervisorSettings = Field(default_factory=SupervisorSettings)
    services: dict[str, ServiceSpec] = Field(default_factory=dict)
    monitoring: Any = Field(default_factory=dict)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    source: str = Field("<embedded default>", exclude=True)

    @model_validator(mode="after")
    def _check(self) -> Inventory:
        for key, spec in self.services.items():
            kind = SERVICE_KINDS.get(key)
            if kind is None:
                known = ", ".join(sorted(SERVICE_KINDS))
                raise ValueError(f"services.{key}: unknown service {key!r}; known services: {known}")
            spec.job = spec.job or kind.job
            spec.settings = _validate_settings(key, kind, spec.settings)
            for inst in spec.instances:
                inst._tls = (spec.tls or self.security.tls) is not None
            for i, inst in enumerate(spec.instances):
                missing = [p for p in kind.extra_ports if p not in inst.ports]
                if missing:
                    raise ValueError(f"services.{key}.instances.{i}.ports: missing {', '.join(missing)}")
        self.monitoring = _validate_monitoring(self.monitoring)
        self._check_port_clashes()
        return self

    def _check_port_clashes(self) -> None:
        seen: dict[tuple[str, int], str] = {}

        def claim(host: str, port: int, where: str) -> None:
            key = (_canonical_host(host), port)
            if key in seen:
                raise ValueError(f"{where}: port {port} on {host} is already used by {seen[key]}")
            seen[key] = where

        claim(self.supervisor.host, self.supervisor.port, "supervisor.port")
        for where, host, port in _monitoring_ports(self.monitoring):
            claim(host, port, where)
        for key, spec in self.services.items():
            for i, inst in enumerate(spec.instances):
                claim(inst.host, inst.port, f"services.{key}.instances.{i}.port")
                for name, port in inst.ports.items():
                    claim(inst.host, port, f"services.{key}.instances.{i}.ports.{name}")

    def spec(self, key: str) -> ServiceSpec:
        if key not in self.services:
            raise InventoryError(f"{self.source}: service {key!r} is not in this inventory")
        return self.services[key]

    def instance(self, key: str, index: int) -> Instance:
        spec = self.spec(key)
        if not 0 <= index < len(spec.instances):
            raise InventoryError(
                f"{self.source}: services.{key} has {len(spec.instances)} instances; --instance {index} is not one"
            )
        return spec.instances[index]

    def runnable(self) -> dict[str, ServiceSpec]:
        """Services that are enabled, built, and have instances: what `dwcp up` starts."""
        return {
            k: s for k, s in self.services.items() if s.enabled and s.instances and SERVICE_KINDS[k].built
        }


def _canonical_host(host: str) -> str:
    return "127.0.0.1" if host in ("localhost", "127.0.0.1") else host


def _validate_settings(key: str, kind: ServiceKind, raw: Any) -> Any:
    model = kind.settings_model()
    if model is None:  # not built yet: keep the raw mapping so the file stays valid for later
        if not isinstance(raw, dict):
            raise ValueError(f"services.{key}.settings: expected a mapping")
        return raw
    if isinstance(raw, model):
        return raw
    try:
        return model.model_validate(raw or {}, context={"service": key})
    except ValidationError as exc:
        raise ValueError(_format_errors(exc, prefix=f"services.{key}.settings")) from None


def _validate_monitoring(raw: Any) -> Any:
    if not importable("dwcp.monitoring.settings"):
        return raw
    from dwcp.monitoring.settings import MonitoringSettings

    if isinstance(raw, MonitoringSettings):
        return raw
    try:
        return MonitoringSettings.model_validate(raw or {})
    except ValidationError as exc:
        raise ValueError(_format_errors(exc, prefix="monitoring")) from None


def _monitoring_ports(mon: Any) -> list[tuple[str, str, int]]:
    """(where, host, port) of every monitoring listener, so services cannot clash with them."""
    found = []
    for part in ("prometheus", "alertmanager", "sink"):
        host, port = getattr(mon, f"{part}_host", None), getattr(mon, f"{part}_port", None)
        if host and port:
            found.append((f"monitoring.{part}_port", host, port))
    cluster = getattr(mon, "alertmanager_cluster_port", None)
    if cluster:
        found.append(("monitoring.alertmanager_cluster_port", getattr(mon, "alertmanager_host", "127.0.0.1"), cluster))
    return found


def _format_errors(exc: ValidationError, prefix: str = "") -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        where = ".".join(p for p in (prefix, loc) if p)
        msg = err["msg"].removeprefix("Value error, ")
        # Our own validators already name the field at the start of the message.
        lines.append(msg if (msg.startswith("services.") or msg.startswith("monitoring")) else f"{where}: {msg}")
    return "; ".join(lines)


def parse_inventory(data: dict[str, Any], source: str = "<inline>") -> Inventory:
    """Validate a mapping as an inventory; errors name `source` and the bad field."""
    try:
        inv = Inventory.model_validate(data)
    except ValidationError as exc:
        raise InventoryError(f"{source}: {_format_errors(exc)}") from None
    inv.source = source
    return inv


def default_inventory_text() -> str:
    return resources.files("dwcp.runtime").joinpath("default_inventory.yaml").read_text()


def load_inventory(path: Path | str | None = None) -> Inventory:
    """Load and validate an inventory file, or the embedded default when `path` is None."""
    if path is None:
        text, source = default_inventory_text(), "<embedded default inventory>"
    else:
        p = Path(path)
        if not p.is_file():
            raise InventoryError(f"{p}: inventory file not found")
        text, source = p.read_text(), str(p)
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise InventoryError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise InventoryError(f"{source}: top level must be a mapping with a 'services' key")
    return parse_inventory(data, source)
