"""A core's Persist-ed values: saved beside the log, the last value of each key read back after a restart."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dwcp.consensus.storage import CoreState


def test_values_survive_a_new_instance_and_replace_whole(tmp_path: Path) -> None:
    log = tmp_path / "bullshark-blocks.sqlite"
    state = CoreState(log)
    state.save("bullshark.safety", b"first")
    state.save("bullshark.safety", b"second, longer")
    state.save("other", b"x")
    state.save("bullshark.safety", b"third")
    assert CoreState(log).items() == [("bullshark.safety", b"third"), ("other", b"x")]
    state.close()
    assert not list(tmp_path.glob("*.tmp"))


def test_another_log_in_the_same_directory_has_its_own_values(tmp_path: Path) -> None:
    CoreState(tmp_path / "a.sqlite").save("k", b"a")
    assert CoreState(tmp_path / "b.sqlite").items() == []


def test_a_save_is_one_append_to_an_open_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No file is created or renamed per save (each rename waited for the disk here: docs/bullshark.md,
    Session 9)."""
    state = CoreState(tmp_path / "n.sqlite")
    state.save("k", b"0")
    calls = []
    for name in ("open", "replace", "rename"):
        real = getattr(os, name)
        monkeypatch.setattr(os, name, lambda *a, _real=real, _name=name, **k: (calls.append(_name), _real(*a, **k))[1])
    for i in range(1000):
        state.save(f"vote.{i % 7}", i.to_bytes(4, "big"))
    assert calls == []
    monkeypatch.undo()
    assert dict(CoreState(tmp_path / "n.sqlite").items())["vote.6"] == (993).to_bytes(4, "big")


def test_a_torn_last_record_reads_as_the_previous_value_and_is_cut_off(tmp_path: Path) -> None:
    log = tmp_path / "n.sqlite"
    state = CoreState(log)
    state.save("k", b"old")
    state.save("j", b"kept")
    state.close()
    record = CoreState._record("k", b"new value, never returned")
    for cut in range(1, len(record)):  # killed after any number of the record's bytes reached the file
        size = os.path.getsize(state.path)
        with open(state.path, "ab") as f:
            f.write(record[:cut])
        again = CoreState(log)
        assert again.items() == [("j", b"kept"), ("k", b"old")]
        again.save("k", b"old")  # appends after the cut, not after the torn bytes
        again.close()
        assert os.path.getsize(state.path) == size + len(CoreState._record("k", b"old"))
    assert CoreState(log).items() == [("j", b"kept"), ("k", b"old")]


def test_a_changed_byte_ends_the_valid_records(tmp_path: Path) -> None:
    log = tmp_path / "n.sqlite"
    state = CoreState(log)
    state.save("k", b"first")
    state.save("k", b"second")
    state.close()
    data = bytearray(state.path.read_bytes())
    data[-3] ^= 1  # in the second record's check
    state.path.write_bytes(bytes(data))
    assert CoreState(log).items() == [("k", b"first")]


def test_the_file_is_compacted_and_older_per_key_files_are_read(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(CoreState, "COMPACT_BYTES", 4096)
    log = tmp_path / "n.sqlite"
    (tmp_path / "n.legacy.state").write_bytes(b"from a per-key file")  # the format before session 9
    (tmp_path / "n.k.state").write_bytes(b"older than the log's records")
    state = CoreState(log)
    assert state.items() == [("k", b"older than the log's records"), ("legacy", b"from a per-key file")]
    for i in range(2000):
        state.save("k", b"%d" % i)
        assert os.path.getsize(state.path) == state.size <= 4096 + 100
    assert not list(tmp_path.glob("*.state"))  # compacted into the log's records
    state.save("last", b"after a compaction")
    assert CoreState(log).items() == [("k", b"1999"), ("last", b"after a compaction"),
                                      ("legacy", b"from a per-key file")]
    state.close()
