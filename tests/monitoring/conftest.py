"""Shared fixtures: the embedded default inventory and one rendered directory per test session."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from dwcp.monitoring.render import render_all
from dwcp.runtime.inventory import Inventory, load_inventory, parse_inventory


@pytest.fixture(scope="session")
def inventory() -> Inventory:
    return load_inventory(None)


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory, inventory: Inventory) -> Path:
    out = tmp_path_factory.mktemp("monitoring")
    render_all(inventory, out)
    return out


@pytest.fixture(scope="session")
def load() -> Callable[[Path], Any]:
    return lambda path: yaml.safe_load(Path(path).read_text())


@pytest.fixture(scope="session")
def small_inventory() -> Callable[..., Inventory]:
    """Builds a manager + T-PBFT inventory with the given monitoring settings."""

    def build(**monitoring: object) -> Inventory:
        return parse_inventory({
            "monitoring": monitoring,
            "services": {
                "manager": {"replicas": 2, "base_port": 8080},
                "tpbft": {"replicas": 4, "base_port": 8300, "base_ports": {"consensus": 9300}},
            },
        })

    return build
