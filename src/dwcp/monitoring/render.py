"""Render every monitoring file from the inventory into one directory (build output, never edited).

Layout of `out_dir`:
    prometheus.yml  alert_rules.yml  recording_rules.yml  alertmanager.yml
    grafana/provisioning/datasources/dwcp.yaml  grafana/provisioning/dashboards/dwcp.yaml
    grafana/dashboards/dwcp-<name>.json
    tests/  promtool unit tests (<family>_test.yml) and the rule files they load, rendered with default
            settings and every job, so expected annotations and `for:` timings do not depend on the inventory

Rendering is deterministic: the same inventory and arguments give byte-identical files.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import yaml

from dwcp.monitoring import alertmanager, grafana, prometheus
from dwcp.monitoring.alerts import families, rule_groups
from dwcp.monitoring.config import JOBS, Scope
from dwcp.monitoring.dashboards import render_dashboards
from dwcp.monitoring.rules import recording
from dwcp.monitoring.seed import seed_rule_groups
from dwcp.monitoring.settings import MonitoringSettings

HEADER = "# Rendered by `dwcp monitoring render` from the inventory; do not edit.\n"


class InstanceLike(Protocol):
    host: str
    port: int


class ServiceLike(Protocol):
    enabled: bool
    job: str
    instances: Sequence[InstanceLike]


class InventoryLike(Protocol):
    services: Mapping[str, ServiceLike]
    monitoring: Any


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (PromQL) as literal blocks, so rendered rules read like hand-written ones."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1000,
                     allow_unicode=True)


def settings_of(inventory: InventoryLike) -> MonitoringSettings:
    mon = inventory.monitoring
    return mon if isinstance(mon, MonitoringSettings) else MonitoringSettings.model_validate(mon or {})


def scrape_targets(inventory: InventoryLike, jobs: Iterable[str] | None = None,
                   extra_targets: Mapping[str, Sequence[str]] | None = None) -> dict[str, list[str]]:
    """job -> ["host:port", ...] for enabled services with instances; `jobs` (job names or inventory
    keys) keeps only those. Extra jobs (e.g. the `dwcp up` supervisor) come last, sorted."""
    wanted = set(jobs) if jobs is not None else None
    order = {job: i for i, job in enumerate(JOBS.values())}
    found: dict[str, list[str]] = {}
    for key, spec in inventory.services.items():
        if not spec.enabled or not spec.instances:
            continue
        if wanted is not None and key not in wanted and spec.job not in wanted:
            continue
        found[spec.job] = [f"{i.host}:{i.port}" for i in spec.instances]
    targets = dict(sorted(found.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))
    extra = dict(extra_targets or {})
    for job in sorted(extra):
        if extra[job]:
            targets[job] = list(extra[job])
    return targets


def scrape_tls(inventory: InventoryLike, targets: Mapping[str, Sequence[str]]) -> dict[str, Path]:
    """job -> CA file for the scraped services that serve HTTPS (runtime.tls); inventories without a
    `security` section (test doubles) have none."""
    if getattr(inventory, "security", None) is None:
        return {}
    from dwcp.runtime.tls import service_tls

    found = {}
    for key, spec in inventory.services.items():
        if spec.job in targets and (tls := service_tls(inventory, key)) is not None:  # type: ignore[arg-type]
            found[spec.job] = tls.ca
    return found


def render_files(inventory: InventoryLike, *, jobs: Iterable[str] | None = None,
                 extra_targets: Mapping[str, Sequence[str]] | None = None,
                 dashboards_path: str = "grafana/dashboards") -> dict[str, str]:
    """Relative path -> file text: everything `render_all` writes, without touching the disk."""
    settings = settings_of(inventory)
    targets = scrape_targets(inventory, jobs, extra_targets)
    scope = Scope(tuple(targets))
    files = {
        "prometheus.yml": prometheus.prometheus_config(settings, targets, scrape_tls(inventory, targets)),
        prometheus.ALERT_RULES: {"groups": rule_groups(scope, settings)},
        prometheus.RECORDING_RULES: {"groups": recording.rule_groups()},
        "alertmanager.yml": alertmanager.alertmanager_config(settings),
        "grafana/provisioning/datasources/dwcp.yaml": grafana.datasources(settings),
        "grafana/provisioning/dashboards/dwcp.yaml": grafana.dashboard_provider(
            settings.grafana_dashboards_path or dashboards_path),
    }
    text = {name: HEADER + dump_yaml(data) for name, data in files.items()}
    text |= {f"grafana/dashboards/{name}": body for name, body in render_dashboards().items()}
    text |= _test_files()
    return text


def _test_files() -> dict[str, str]:
    canonical = MonitoringSettings()
    text = {
        "tests/alert_rules.yml": {"groups": rule_groups(Scope.all(), canonical)},
        "tests/recording_rules.yml": {"groups": recording.rule_groups()},
        "tests/seed_rules.yml": {"groups": seed_rule_groups()},
    }
    out = {name: HEADER + dump_yaml(data) for name, data in text.items()}
    alerts_pkg = resources.files("dwcp.monitoring.alerts")
    for family in [*families(), "seed"]:
        out[f"tests/{family}_test.yml"] = alerts_pkg.joinpath(f"{family}_test.yml").read_text()
    out["tests/recording_test.yml"] = resources.files(recording.__package__).joinpath("recording_test.yml").read_text()
    return out


def render_all(inventory: InventoryLike, out_dir: Path, *, jobs: set[str] | None = None,
               extra_targets: Mapping[str, Sequence[str]] | None = None) -> dict[str, Path]:
    """Write every monitoring file under `out_dir`; returns relative name (e.g. "prometheus.yml") -> path.

    `jobs` (job names or inventory keys) limits scrape jobs and job-specific alerts to the services that
    actually run, so a service with no targets cannot make an absence alert fire. `extra_targets` adds
    scrape jobs that are not inventory services (job -> ["host:port"]).
    """
    out_dir = Path(out_dir).resolve()
    written: dict[str, Path] = {}
    texts = render_files(inventory, jobs=jobs, extra_targets=extra_targets,
                         dashboards_path=str(out_dir / "grafana" / "dashboards"))
    for name, body in texts.items():
        path = out_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != body:  # keep mtimes of unchanged files
            path.write_text(body)
        written[name] = path
    return written
