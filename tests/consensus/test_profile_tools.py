"""The profiling tools of `tpbft_cluster.py`: `--cprofile` (one node's main thread under cProfile, through a
sitecustomize hook its children inherit) and `profile_functions.py` (reading py-spy stacks and pstats files)."""

from __future__ import annotations

import marshal
import os
import pstats
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.benchmark_scripts import load_benchmark

functions = load_benchmark("profile_functions")  # puts benchmarks/ on sys.path, and imports _harness from there
harness = sys.modules["_harness"]

_WORK = "def work():\n    return sum(i * i for i in range(20000))\nwork()\n"


def _node(instance: str, code: str = _WORK) -> subprocess.CompletedProcess:
    # `python -c CODE serve tpbft --instance N`: the hook sees the same argv as `python -m dwcp serve ...`.
    return subprocess.run([sys.executable, "-c", code, "serve", "tpbft", "--instance", instance],
                          env=dict(os.environ), capture_output=True, timeout=60)


def test_cprofile_env_profiles_only_the_named_node_and_writes_on_exit_and_on_sigterm(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PYTHONPATH", "DWCP_CPROFILE", "DWCP_CPROFILE_NODE"):  # restored after the test
        monkeypatch.setenv(name, os.environ.get(name, ""))
    out = tmp_path / "node.prof"
    harness.cprofile_env(2, out)
    assert _node("1").returncode == 0
    assert not out.exists()  # another node: not profiled
    assert _node("2").returncode == 0
    names = {name for (_, _, name) in pstats.Stats(str(out)).stats}  # type: ignore[attr-defined]
    assert "work" in names
    out.unlink()
    # uvicorn ends a node on SIGTERM by re-raising the signal after its shutdown: atexit never runs then.
    killed = _node("2", _WORK + "import signal\nsignal.raise_signal(signal.SIGTERM)\n")
    assert killed.returncode == -signal.SIGTERM
    assert "work" in {name for (_, _, name) in pstats.Stats(str(out)).stats}  # type: ignore[attr-defined]


def test_profile_functions_reads_collapsed_stacks_by_self_and_inclusive_share(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stacks = tmp_path / "stacks.txt"
    stacks.write_text(
        "main (x.py:1);encode (dwcp/consensus/core/codec.py:60) 3\n"
        "main (x.py:1);verify (dwcp/consensus/core/crypto.py:134) 1\n"
    )
    functions.collapsed(stacks, top=5, drop_loop=False)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("4 samples")
    assert " 75.0% " in lines[2] and "encode" in lines[2]  # self 75%, inclusive 75%
    assert lines[2].split()[:2] == ["75.0%", "75.0%"]


def test_profile_functions_takes_the_profilers_cost_per_call_off_a_functions_subtree(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stage, leaf = ("/x/src/dwcp/a.py", 1, "stage"), ("/x/src/dwcp/a.py", 9, "leaf")
    root = ("~", 0, "<root>")
    stats = {  # pstats' format: (primitive calls, calls, own s, cumulative s, {caller: (.., calls, .., ..)})
        stage: (10, 10, 0.008, 0.010, {root: (10, 10, 0.008, 0.010)}),
        leaf: (500, 500, 0.002, 0.002, {stage: (500, 500, 0.002, 0.002)}),
    }
    out = tmp_path / "node.prof"
    out.write_bytes(marshal.dumps(stats))
    functions.profiled(out, blocks=10, top=10, call_us=1.0)
    rows = {line.split()[-1]: [float(x) for x in line.split()[:4]]
            for line in capsys.readouterr().out.splitlines()[1:]}
    # stage: 1.0 ms a block, 51 calls a call (itself and 50 leaves), so 1.0 - 51 x 1 us = 0.949 ms; one call a block
    assert rows["dwcp/a.py:1(stage)"] == [1.0, 51.0, 0.949, 1.0]
    assert rows["dwcp/a.py:9(leaf)"] == [0.2, 50.0, 0.15, 50.0]


def test_io_counts_sees_a_threads_wake_ups_and_the_processs_reads_and_writes(tmp_path: Path) -> None:
    import threading

    before = harness.io_counts(os.getpid())
    for _ in range(20):  # 20 reads, 20 writes
        (tmp_path / "f").write_bytes(b"x")
        (tmp_path / "f").read_bytes()
    woken = threading.Event()
    worker = threading.Thread(target=lambda: [woken.wait(0.002) for _ in range(30)])  # ~30 timed sleeps
    worker.start()
    worker.join()
    after = harness.io_counts(os.getpid())
    # The worker has ended: its counts are gone from /proc/PID/task (a caller diffs live threads only).
    assert after["syscr"] - before["syscr"] >= 20 and after["syscw"] - before["syscw"] >= 20
    assert {"main_voluntary", "main_nonvoluntary", "main_cpu_ms"} <= set(after)
    assert harness.io_counts(2**22 + 12345) == {}  # no such process: nothing, no error


def test_parse_syscall_summary_splits_calls_by_node_and_thread() -> None:
    me, other = os.getpid(), 2**22 + 12345  # the second pid does not exist: its tables are left out
    text = f"""
 Summary of events:

 python ({me}), 300 events, 60.0%

   syscall            calls  errors  total       min       avg       max       stddev
                                     (msec)    (msec)    (msec)    (msec)        (%)
   --------------- --------  ------ -------- --------- --------- ---------     ------
   write                100      0     1.000     0.001     0.010     0.100      5.00%
   epoll_pwait           50      0    10.000     0.001     0.200     1.000      9.00%

 python ({other}), 20 events, 40.0%

   syscall            calls  errors  total       min       avg       max       stddev
   --------------- --------  ------ -------- --------- --------- ---------     ------
   read                  10      0     0.100     0.001     0.010     0.100      5.00%
"""
    calls = harness.parse_syscall_summary(text, {7: me, 8: other})
    assert calls == {7: {"main": {"write": 100, "epoll_pwait": 50}}}


def test_per_role_averages_counts_over_a_roles_nodes_and_the_blocks() -> None:
    cluster = load_benchmark("tpbft_cluster")
    values = {0: {"syscr": 30.0}, 1: {"syscr": 10.0, "syscw": 4.0}, 2: {"syscr": 20.0, "syscw": 8.0}}
    roles = {0: "primary", 1: "group", 2: "group"}
    assert cluster.per_role(values, roles, 10) == {"group": {"syscr": 1.5, "syscw": 0.6}, "primary": {"syscr": 3.0}}
