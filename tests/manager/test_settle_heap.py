"""A started manager leaves what it holds at startup out of later cyclic collections (gc.freeze): a full
collection walked its ~76k objects (the web stack, httpx, zstandard, numpy) in 33-39 ms, inside whichever /health
request triggered it; wrk against /health during a 2 GiB loopback transfer saw p99 17-33 ms and max 25-41 ms
(session 9, benchmarks/manager_health.py)."""

from __future__ import annotations

import gc

import pytest

pytestmark = pytest.mark.network


def test_a_started_manager_leaves_its_startup_heap_out_of_later_collections(make_sites) -> None:
    gc.unfreeze()
    try:
        assert gc.get_freeze_count() == 0
        a, _ = make_sites(2)
        assert gc.get_freeze_count() > 10_000
        assert a.client.get("/health").status_code == 200
    finally:
        gc.unfreeze()
