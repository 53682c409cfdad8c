"""Schemathesis against every built service's OpenAPI document, in process (ASGI), with every check.

Each service is built as `dwcp serve` builds it (bearer token on writes, the runtime's limits), started
(lifespan), and fuzzed: schema-valid requests must be accepted and answered as documented, schema-invalid
ones refused with a documented 4xx, writes without the token refused (`ignored_auth`), undocumented
methods answered 405 with `Allow`, and no 5xx anywhere. Examples per operation are bounded
(`DWCP_SCHEMATHESIS_EXAMPLES`, default 25) so the whole run fits CI on two cores.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from prometheus_client import CollectorRegistry

from dwcp.runtime.auth import bearer_header, client_token, ensure_token_file
from dwcp.runtime.context import ServiceContext
from dwcp.runtime.inventory import load_inventory
from dwcp.runtime.ports import free_ports
from tests.servers import LocalServer

EXAMPLES = int(os.environ.get("DWCP_SCHEMATHESIS_EXAMPLES", "25"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


class Served:
    """An app and the header that authorises writes to it; Schemathesis runs its lifespan (startup hooks)."""

    def __init__(self, app, token_file: Path) -> None:
        self.app = app
        self.headers = bearer_header(client_token(token_file))

    def schema(self):
        return schemathesis.openapi.from_asgi("/openapi.json", self.app)


def _context(service: str, job: str, settings_obj, tmp_path: Path) -> ServiceContext:
    return ServiceContext(service=service, job=job, instance=0, host="127.0.0.1", port=5000, settings=settings_obj,
                          inventory=load_inventory(), data_dir=tmp_path, registry=CollectorRegistry(),
                          logger=logging.getLogger(f"test.{service}"),
                          token_file=ensure_token_file(tmp_path / "secrets" / "http-token"))


@pytest.fixture
def compression(tmp_path: Path) -> Served:
    from dwcp.compression import calibrate
    from dwcp.compression.calibrate import Calibration
    from dwcp.compression.service import build_app
    from dwcp.compression.settings import CompressionSettings

    cal = Calibration("test-host", 0.0, calibrate.reference_sha256(), np.full(8, 3e8), np.full(8, 1e9),
                      np.linspace(1.0, 0.4, 8), 0.0, 3.0e8)
    calibrate.save(cal, tmp_path / "calibration.json")
    ctx = _context("compression", "compression-api",
                   CompressionSettings(calibration_path=tmp_path / "calibration.json", shadow_fraction=0.0), tmp_path)
    return Served(build_app(ctx), ctx.token_file)


@pytest.fixture
def allocator(tmp_path: Path) -> Served:
    from dwcp.allocator.service import build_app
    from dwcp.allocator.settings import AllocatorSettings

    ctx = _context("allocator", "maddpg-allocator", AllocatorSettings(), tmp_path)
    return Served(build_app(ctx), ctx.token_file)


@pytest.fixture
def tpbft(tmp_path: Path) -> Served:
    from dwcp.consensus.node.service import build_app
    from dwcp.runtime.server import build_context
    from tests.consensus.conftest import keyed_inventory

    # One node, its consensus port free: it commits alone in milliseconds, so ?wait=true answers at once.
    http, consensus = free_ports(2)
    inv = keyed_inventory({"services": {"tpbft": {"instances": [
        {"host": "127.0.0.1", "port": http, "ports": {"consensus": consensus}}]}}}, "tpbft", tmp_path / "keys")
    ctx = build_context(inv, "tpbft", 0, tmp_path)
    return Served(build_app(ctx), ctx.token_file)


@pytest.fixture
def sink(tmp_path: Path) -> Served:
    from dwcp.monitoring.sink import build_sink_app

    token_file = ensure_token_file(tmp_path / "secrets" / "alert-sink-token")
    return Served(build_sink_app(tmp_path / "alerts", token_file=token_file), token_file)


@pytest.fixture
def manager(tmp_path: Path):
    """A manager site with its dependencies local: one-node T-PBFT, ProBFT and Bullshark clusters and an
    allocator, each served on loopback by this process; a second site's peer port is inventoried but unserved
    (a transfer to it is accepted, then fails in the background, as it would with that site down)."""
    from contextlib import ExitStack

    from dwcp.allocator.service import build_app as build_allocator
    from dwcp.consensus.node.service import build_app as build_node
    from dwcp.manager.service import build_app
    from dwcp.runtime.inventory import parse_inventory
    from dwcp.runtime.server import build_context
    from tests.consensus.conftest import keyed_inventory

    ports = iter(free_ports(12))
    token_file = ensure_token_file(tmp_path / "secrets" / "http-token")
    with ExitStack() as stack:
        services: dict = {}
        for cluster in ("tpbft", "probft", "bullshark"):
            http = next(ports)
            extra = {"worker": next(ports)} if cluster == "bullshark" else {}
            services[cluster] = {"instances": [{"host": "127.0.0.1", "port": http,
                                                "ports": {"consensus": next(ports), **extra}}]}
            doc = {"name": "local", "security": {"token_file": str(token_file)},
                   "services": {cluster: services[cluster]}}
            inv = keyed_inventory(doc, cluster, tmp_path / f"{cluster}-keys")
            ctx = build_context(inv, cluster, 0, tmp_path / cluster)
            stack.enter_context(LocalServer(build_node(ctx), http))
        alloc_port = next(ports)
        services["allocator"] = {"instances": [{"host": "127.0.0.1", "port": alloc_port}]}
        (tmp_path / "allocator").mkdir()
        alloc_ctx = _context("allocator", "maddpg-allocator", None, tmp_path / "allocator")
        alloc_ctx.token_file = token_file  # the manager writes to it with the deployment's token
        stack.enter_context(LocalServer(build_allocator(alloc_ctx), alloc_port))
        services["manager"] = {"instances": [{"host": "127.0.0.1", "port": next(ports), "ports": {"peer": next(ports)}}
                                             for _ in range(2)],
                               "settings": {"probe_interval_s": 3600, "max_tx_bytes": 1024}}
        inv = parse_inventory({"name": "fuzz", "security": {"token_file": str(token_file)}, "services": services})
        ctx = build_context(inv, "manager", 0, tmp_path / "manager")
        yield Served(build_app(ctx), ctx.token_file)


def _check(served: Served, case) -> None:
    case.call_and_validate(headers=served.headers)


compression_api = schemathesis.pytest.from_fixture("compression_schema")
allocator_api = schemathesis.pytest.from_fixture("allocator_schema")
tpbft_api = schemathesis.pytest.from_fixture("tpbft_schema")
sink_api = schemathesis.pytest.from_fixture("sink_schema")
manager_api = schemathesis.pytest.from_fixture("manager_schema")


@pytest.fixture
def compression_schema(compression: Served):
    return compression.schema()


@pytest.fixture
def allocator_schema(allocator: Served):
    return allocator.schema()


@pytest.fixture
def tpbft_schema(tpbft: Served):
    return tpbft.schema()


@pytest.fixture
def sink_schema(sink: Served):
    return sink.schema()


@pytest.fixture
def manager_schema(manager: Served):
    return manager.schema()


@compression_api.parametrize()
@FUZZ
def test_compression_api_conforms_to_its_openapi(case, compression: Served) -> None:
    _check(compression, case)


@allocator_api.parametrize()
@FUZZ
def test_allocator_conforms_to_its_openapi(case, allocator: Served) -> None:
    _check(allocator, case)


@tpbft_api.parametrize()
@FUZZ
def test_tpbft_node_conforms_to_its_openapi(case, tpbft: Served) -> None:
    _check(tpbft, case)


@sink_api.parametrize()
@FUZZ
def test_alert_sink_conforms_to_its_openapi(case, sink: Served) -> None:
    _check(sink, case)


@manager_api.parametrize()
@FUZZ
def test_manager_conforms_to_its_openapi(case, manager: Served) -> None:
    _check(manager, case)


def test_the_manager_routes_transactions_to_bullshark_and_follows_them_to_commit(manager: Served) -> None:
    """A Bullshark node takes HTTP submissions like any registered protocol: batched by its primary, stored
    by its worker, committed; the manager's GET follows the transaction to its height."""
    import time

    from fastapi.testclient import TestClient

    with TestClient(manager.app, headers=manager.headers) as client:
        resp = client.post("/v1/transactions", json={"payload": "eA==", "cluster": "bullshark", "idempotency_key": "b"})
        assert resp.status_code == 202, resp.text
        assert resp.json()["cluster"] == "bullshark"
        tid, deadline = resp.json()["id"], time.monotonic() + 30
        while (doc := client.get(f"/v1/transactions/{tid}").json())["status"] != "committed":
            assert time.monotonic() < deadline, doc
            time.sleep(0.1)
        assert doc["cluster"] == "bullshark" and doc["height"] >= 1, doc


def test_every_built_service_is_fuzzed_here() -> None:
    """A new service (its own app module) must get a fixture and a test above."""
    from dwcp.runtime.services import SERVICE_KINDS

    # ProBFT and Bullshark are served by the consensus node service.
    fuzzed = {"dwcp.compression.service", "dwcp.allocator.service", "dwcp.consensus.node.service",
              "dwcp.manager.service"}
    built = {kind.app_module for kind in SERVICE_KINDS.values() if kind.built}
    assert built <= fuzzed, f"built services without an OpenAPI fuzz test here: {sorted(built - fuzzed)}"
