"""Manager sites in this process: real peer ports on loopback, HTTP through TestClient."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from dwcp.manager.service import build_app
from dwcp.manager.site import ManagerSite
from dwcp.runtime.context import ServiceContext
from dwcp.runtime.inventory import Inventory, parse_inventory
from dwcp.runtime.ports import free_port

CHUNK = 64 * 1024


def manager_inventory(sites: int = 2, settings: dict | None = None, extra: dict | None = None) -> Inventory:
    instances = [{"host": "127.0.0.1", "port": free_port(), "ports": {"peer": free_port()}} for _ in range(sites)]
    base = {"chunk_bytes": CHUNK, "chunk_min_bytes": CHUNK, "chunk_max_bytes": CHUNK, "probe_interval_s": 3600}
    services = {"manager": {"instances": instances, "settings": {**base, **(settings or {})},
                            "breaker": {"failure_threshold": 2, "open_seconds": 30}}}
    services.update(extra or {})
    return parse_inventory({"name": "test", "services": services})


@dataclass
class Site:
    client: TestClient
    site: ManagerSite
    registry: CollectorRegistry

    def metric(self, name: str, labels: dict | None = None) -> float:
        return self.registry.get_sample_value(name, labels or {}) or 0.0

    def put(self, key: str, body: bytes) -> dict:
        resp = self.client.put(f"/v1/objects/{key}", content=body)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def first_probe_done(self, peer: str = "manager-1", timeout: float = 20.0) -> None:
        """Until the prober's first round (2 s after start) probed `peer`; the next is probe_interval_s away."""
        deadline = time.monotonic() + timeout
        while self.site.links.get(peer).probed_at is None:
            assert time.monotonic() < deadline, f"{peer} not probed after {timeout}s"
            time.sleep(0.05)

    def transfer(self, key: str, to: str, timeout: float = 30.0) -> dict:
        resp = self.client.post("/v1/transfers", json={"key": key, "to": to})
        assert resp.status_code == 202, resp.text
        return self.wait(resp.json()["id"], timeout)

    def wait(self, tid: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.client.get(f"/v1/transfers/{tid}").json()
            if state["state"] in ("done", "failed"):
                return state
            time.sleep(0.02)
        raise AssertionError(f"transfer {tid} still {state['state']} after {timeout}s: {state}")


def context(inv: Inventory, index: int, data_root) -> ServiceContext:
    spec = inv.spec("manager")
    inst = spec.instances[index]
    data_dir = data_root / f"manager-{index}"
    data_dir.mkdir(parents=True, exist_ok=True)
    return ServiceContext(service="manager", job="dwcp-manager", instance=index, host=inst.host, port=inst.port,
                          ports=dict(inst.ports), settings=spec.settings, inventory=inv, data_dir=data_dir,
                          registry=CollectorRegistry(), logger=logging.getLogger(f"test.manager-{index}"))


@pytest.fixture
def make_sites(tmp_path) -> Iterator[Callable[..., list[Site]]]:
    """make_sites(n, settings=..., extra=..., tamper={index: fn}) -> started sites, stopped at teardown."""
    with ExitStack() as stack:

        def make(n: int = 2, settings: dict | None = None, extra: dict | None = None,
                 tamper: dict | None = None, token_file=None) -> list[Site]:
            inv = manager_inventory(n, settings, extra)
            out = []
            for i in range(n):
                ctx = context(inv, i, tmp_path)
                ctx.token_file = token_file
                site = ManagerSite(ctx, tamper=(tamper or {}).get(i))
                client = stack.enter_context(TestClient(build_app(ctx, site), raise_server_exceptions=False))
                out.append(Site(client, site, ctx.registry))
            return out

        yield make


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def mixed(size: int, seed: int = 1) -> bytes:
    """Half compressible text-like bytes, half random: both codecs and 'none' get used."""
    rnd = os.urandom(size // 2)
    text = (b"2026-12-04T19:00:00 INFO request served in 3 ms path=/v1/objects/x status=200\n" * (size // 70 + 1))
    return (text[: size - len(rnd)] + rnd)[:size]



def stall_selector(site: Site) -> threading.Event:
    """Point `site` at a selector that answers zstd-19 only once the returned event is set (or after 20 s)."""
    released = threading.Event()

    def stalled(request: httpx.Request) -> httpx.Response:
        released.wait(20)
        items = json.loads(request.content)["items"]
        return httpx.Response(200, json={"results": [{"codec": "zstd", "level": 19}] * len(items)})

    chooser = site.site.chooser
    chooser.urls, chooser._client = ["http://selector"], httpx.Client(transport=httpx.MockTransport(stalled))
    return released
