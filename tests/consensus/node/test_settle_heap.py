"""A started consensus node leaves what it holds at startup out of later cyclic collections (gc.freeze), so a
full collection walks the objects made since, not the ~70k of the web stack and the core."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from dwcp.consensus.node.service import build_app
from dwcp.runtime.ports import free_ports
from dwcp.runtime.server import build_context
from tests.consensus.conftest import keyed_inventory


@pytest.mark.network
async def test_startup_freezes_the_heap(tmp_path: Path) -> None:
    ports = free_ports(8)
    inv = keyed_inventory({"services": {"tpbft": {
        "instances": [{"port": ports[i], "ports": {"consensus": ports[4 + i]}} for i in range(4)],
    }}}, "tpbft", tmp_path / "keys")
    app = build_app(build_context(inv, "tpbft", 1, tmp_path))
    gc.unfreeze()
    try:
        assert gc.get_freeze_count() == 0
        async with app.router.lifespan_context(app):
            frozen = gc.get_freeze_count()
            assert frozen > 10_000  # the web stack, the core, the driver: all left out of collections
            assert app.state.driver.height == 0  # and the node runs
    finally:
        gc.unfreeze()
