"""Node keys: DEV-ONLY derivation from the inventory, and a key directory with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from dwcp.consensus.core.crypto import generate_private_key, public_key_of
from dwcp.consensus.node.keys import KeyLoadError, SignatureCache, committee_from_inventory, dev_keys, load_keys
from dwcp.runtime.inventory import parse_inventory


def _inventory(n: int = 4):
    return parse_inventory({"services": {"tpbft": {"replicas": n, "base_port": 18300,
                                                   "base_ports": {"consensus": 19300}}}})


def test_dev_keys_are_deterministic_and_agree_across_nodes() -> None:
    inv = _inventory()
    a, b = dev_keys(inv, "tpbft", 0, "seed"), dev_keys(inv, "tpbft", 3, "seed")
    assert a.committee == b.committee  # every node derives the same committee
    assert [m.port for m in a.committee.members] == [19300, 19301, 19302, 19303]
    assert a.committee.member(3).public_key == b.signer.public_key
    sig = b.signer.sign(b"x")
    assert a.verifier.verify(3, b"x", sig)
    assert dev_keys(inv, "tpbft", 0, "other").committee != a.committee


def _write_key_dir(tmp_path: Path, n: int = 4) -> dict[int, bytes]:
    privs = {i: generate_private_key() for i in range(n)}
    committee = committee_from_inventory(_inventory(n), "tpbft", {i: public_key_of(k) for i, k in privs.items()})
    committee.save(tmp_path / "committee.json")
    for i, k in privs.items():
        (tmp_path / f"node-{i}.key").write_text(k.hex())
    return privs


def test_key_dir_loads(tmp_path: Path) -> None:
    privs = _write_key_dir(tmp_path)
    keys = load_keys(tmp_path, 2)
    assert keys.signer.public_key == public_key_of(privs[2])
    assert keys.committee.n == 4


def test_missing_key_file_is_named(tmp_path: Path) -> None:
    _write_key_dir(tmp_path)
    (tmp_path / "node-1.key").unlink()
    with pytest.raises(KeyLoadError, match=r"node-1\.key: not found"):
        load_keys(tmp_path, 1)


def test_key_not_matching_committee_is_refused(tmp_path: Path) -> None:
    _write_key_dir(tmp_path)
    (tmp_path / "node-1.key").write_text(generate_private_key().hex())
    with pytest.raises(KeyLoadError, match="does not match"):
        load_keys(tmp_path, 1)


def test_garbage_key_is_refused(tmp_path: Path) -> None:
    _write_key_dir(tmp_path)
    (tmp_path / "node-0.key").write_text("not hex")
    with pytest.raises(KeyLoadError, match="not a hex"):
        load_keys(tmp_path, 0)


def test_signature_cache_answers_repeats_and_keeps_only_small_recent_messages() -> None:
    inv = _inventory()
    keys = dev_keys(inv, "tpbft", 1, "seed")
    cache = SignatureCache(keys.signer, size=2)
    assert cache.node_id == 1 and cache.public_key == keys.signer.public_key
    first = cache.sign(b"vote")
    assert cache.sign(b"vote") == first == keys.signer.sign(b"vote") and cache.hits == 1
    big = b"b" * (SignatureCache.MAX_BYTES + 1)
    cache.sign(big)
    cache.sign(big)
    assert cache.hits == 1  # large messages are signed each time, never kept
    cache.sign(b"two")
    cache.sign(b"three")  # evicts "vote"
    cache.sign(b"vote")
    assert cache.hits == 1
