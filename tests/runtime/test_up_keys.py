"""`dwcp up` and consensus keys (issue 15, item 2): fresh per deployment on one host, refused across hosts."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from dwcp.consensus.node.assemble import node_keys, node_settings
from dwcp.consensus.node.keys import KeyLoadError
from dwcp.runtime.inventory import parse_inventory
from dwcp.runtime.server import RUN_DIR_ENV, build_context
from dwcp.runtime.supervise import UpOptions, prepare_consensus_keys


def _inventory(hosts: list[str], settings: dict | None = None):
    return parse_inventory({"services": {"tpbft": {
        "instances": [{"host": h, "port": 18400 + i, "ports": {"consensus": 19400 + i}} for i, h in enumerate(hosts)],
        "settings": settings or {},
    }}})


def test_up_makes_fresh_private_keys_per_deployment_that_each_node_finds(tmp_path: Path, monkeypatch) -> None:
    inv = _inventory(["127.0.0.1"] * 4)
    first, second = tmp_path / "run1", tmp_path / "run2"
    for run_dir in (first, second):
        run_dir.mkdir()
        assert prepare_consensus_keys(inv, UpOptions(), run_dir) == []
    node_dir = first / "keys" / "tpbft" / "node-2"
    assert sorted(p.name for p in node_dir.iterdir()) == ["committee.json", "node-2.key"]
    assert stat.S_IMODE(node_dir.stat().st_mode) == 0o700
    monkeypatch.setenv(RUN_DIR_ENV, str(first))
    ctx = build_context(inv, "tpbft", 2, tmp_path / "data")
    keys = node_keys(ctx, node_settings(ctx))
    assert keys.signer.node_id == 2 and keys.committee.n == 4
    monkeypatch.setenv(RUN_DIR_ENV, str(second))
    assert node_keys(ctx, node_settings(ctx)).committee.public_keys() != keys.committee.public_keys()


def test_node_without_key_dir_outside_up_refuses_to_start(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(RUN_DIR_ENV, raising=False)
    inv = _inventory(["127.0.0.1"] * 4)
    ctx = build_context(inv, "tpbft", 0, tmp_path)
    with pytest.raises(KeyLoadError, match="key_dir is not set.*keygen"):
        node_keys(ctx, node_settings(ctx))


def test_multi_host_inventory_without_keys_is_refused_with_keygen_instructions(tmp_path: Path) -> None:
    inv = _inventory(["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"])
    problems = prepare_consensus_keys(inv, UpOptions(host="10.0.0.1"), tmp_path)
    assert len(problems) == 1
    assert "services.tpbft: instances on 4 hosts" in problems[0] and "dwcp consensus keygen" in problems[0]
    assert not (tmp_path / "keys").exists()
    keyed = _inventory(["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"], {"key_dir": str(tmp_path / "k")})
    assert prepare_consensus_keys(keyed, UpOptions(host="10.0.0.1"), tmp_path) == []
