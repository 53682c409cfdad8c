"""Node keys: fresh per deployment, never derived; a key directory with clear errors and private files."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from dwcp.consensus.core.crypto import generate_private_key, public_key_of
from dwcp.consensus.node.keys import (
    KeyLoadError,
    SignatureCache,
    deployment_keys,
    generate_committee,
    load_keys,
    write_key_dir,
)
from dwcp.runtime.inventory import parse_inventory


def _inventory(n: int = 4):
    return parse_inventory({"services": {"tpbft": {"replicas": n, "base_port": 18300,
                                                   "base_ports": {"consensus": 19300}}}})


def _write_key_dir(tmp_path: Path, n: int = 4) -> dict[int, bytes]:
    committee, privs = generate_committee(_inventory(n), "tpbft")
    write_key_dir(tmp_path, committee, privs)
    return privs


def test_key_dir_loads_with_pinned_certificates(tmp_path: Path) -> None:
    privs = _write_key_dir(tmp_path)
    keys = load_keys(tmp_path, 2)
    assert keys.signer.public_key == public_key_of(privs[2])
    assert [m.port for m in keys.committee.members] == [19300, 19301, 19302, 19303]
    auth = keys.peer_auth("tpbft")
    assert auth.me == 2 and set(auth.peers) == {0, 1, 2, 3}
    assert keys.peer_auth("pbft").label != auth.label  # links of one protocol never open into another's


def test_generated_keys_are_fresh_every_time() -> None:
    a, _ = generate_committee(_inventory(), "tpbft")
    b, _ = generate_committee(_inventory(), "tpbft")
    assert not set(a.public_keys().values()) & set(b.public_keys().values())


def test_the_old_public_dev_seed_keys_are_not_the_keys_of_any_deployment(tmp_path: Path) -> None:
    """With the seed in the inventory anyone could compute every key and sign commit certificates
    (issue 15, item 2); the keys a deployment runs with now come from os.urandom."""

    def old_dev_key(i: int) -> bytes:  # what main derived from `dev_seed: dwcp-dev-insecure`
        return hashlib.blake2b(f"dwcp-dev-key:dwcp-dev-insecure:tpbft:{i}".encode(), digest_size=32).digest()

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    deployment_keys(_inventory(), "tpbft", run_dir)
    keys = load_keys(run_dir / "keys" / "tpbft" / "node-0", 0)
    forged_signers = {public_key_of(old_dev_key(i)) for i in range(4)}
    assert not forged_signers & set(keys.committee.public_keys().values())


def test_deployment_keys_give_each_node_only_its_own_key_in_a_private_directory(tmp_path: Path) -> None:
    dirs = deployment_keys(_inventory(), "tpbft", tmp_path)
    for i, d in enumerate(dirs):
        assert sorted(p.name for p in d.iterdir()) == ["committee.json", f"node-{i}.key"]
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
        assert stat.S_IMODE((d / f"node-{i}.key").stat().st_mode) == 0o600
        assert load_keys(d, i).signer.node_id == i
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    before = (dirs[0] / "node-0.key").read_text()
    assert deployment_keys(_inventory(), "tpbft", tmp_path) == dirs  # a restarted `dwcp up` keeps its keys
    assert (dirs[0] / "node-0.key").read_text() == before


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


def test_committee_without_certificates_is_refused(tmp_path: Path) -> None:
    _write_key_dir(tmp_path)
    path = tmp_path / "committee.json"
    path.write_text(path.read_text().replace('"certificate"', '"no_certificate"', 1))
    with pytest.raises(KeyLoadError, match="node 0 has no certificate"):
        load_keys(tmp_path, 1)


def test_garbage_key_is_refused(tmp_path: Path) -> None:
    _write_key_dir(tmp_path)
    (tmp_path / "node-0.key").write_text("not hex")
    with pytest.raises(KeyLoadError, match="not a hex"):
        load_keys(tmp_path, 0)


def test_signature_cache_answers_repeats_and_keeps_only_small_recent_messages(tmp_path: Path) -> None:
    _write_key_dir(tmp_path)
    keys = load_keys(tmp_path, 1)
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
