"""A core's Persist-ed values: saved beside the log, replaced whole, read back after a restart."""

from __future__ import annotations

from pathlib import Path

from dwcp.consensus.storage import CoreState


def test_values_survive_a_new_instance_and_replace_whole(tmp_path: Path) -> None:
    log = tmp_path / "bullshark-blocks.sqlite"
    state = CoreState(log)
    state.save("bullshark.safety", b"first")
    state.save("bullshark.safety", b"second, longer")
    state.save("other", b"x")
    assert CoreState(log).items() == [("bullshark.safety", b"second, longer"), ("other", b"x")]
    assert not list(tmp_path.glob("*.tmp"))


def test_another_log_in_the_same_directory_has_its_own_values(tmp_path: Path) -> None:
    CoreState(tmp_path / "a.sqlite").save("k", b"a")
    assert CoreState(tmp_path / "b.sqlite").items() == []
