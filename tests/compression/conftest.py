"""Shared fixtures: a fixed calibration (no timing run) and a TestClient on the real service."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from dwcp.compression import calibrate
from dwcp.compression.calibrate import Calibration
from dwcp.compression.service import build_app
from dwcp.compression.settings import CompressionSettings
from dwcp.runtime.context import ServiceContext
from dwcp.runtime.inventory import load_inventory

# Plausible single-core speeds (bytes/s) and ratios on the reference array, in OPTIONS order.
_VC = [np.inf, 5.8e8, 3.9e8, 2.5e8, 7.8e7, 4.3e6, 3.2e8, 5.0e5]
_VD = [np.inf, 1.6e9, 1.1e9, 1.3e9, 1.3e9, 1.3e9, 2.3e8, 1.8e8]
_RATIO = [1.0, 0.574, 0.496, 0.486, 0.466, 0.449, 0.506, 0.432]


@pytest.fixture(scope="session")
def calibration() -> Calibration:
    return Calibration("test-host", 0.0, calibrate.reference_sha256(), np.array(_VC), np.array(_VD),
                       np.array(_RATIO), 0.0, 3.0e8)


@pytest.fixture
def calibration_file(tmp_path: Path, calibration: Calibration) -> Path:
    path = tmp_path / "calibration.json"
    calibrate.save(calibration, path)
    return path


@pytest.fixture
def make_client(tmp_path: Path, calibration_file: Path):
    """Build the service with settings overrides; returns (client, registry, app). Use as a context manager."""

    def make(**overrides) -> tuple[TestClient, CollectorRegistry, object]:
        settings = CompressionSettings(**{"calibration_path": calibration_file, **overrides})
        ctx = ServiceContext(service="compression", job="compression-api", instance=0, host="127.0.0.1",
                             port=5000, settings=settings, inventory=load_inventory(), data_dir=tmp_path,
                             registry=CollectorRegistry(), logger=logging.getLogger("test.compression"))
        app = build_app(ctx)
        return TestClient(app, raise_server_exceptions=False), ctx.registry, app

    return make


@pytest.fixture
def client(make_client) -> Iterator[TestClient]:
    c, _, _ = make_client(shadow_fraction=0.0)
    with c:
        yield c
