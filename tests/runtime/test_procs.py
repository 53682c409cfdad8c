import asyncio
import sys

import pytest

from dwcp.runtime import procs
from dwcp.runtime.procs import ProcessSpec, Supervised


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(procs, "BACKOFF_START", 0.05)


async def test_crashed_process_is_restarted_and_counted(tmp_path):
    marker = tmp_path / "runs"
    # Each start appends a line, then the first two starts crash; the third keeps running.
    script = (
        "import pathlib, sys, time\n"
        f"p = pathlib.Path({str(marker)!r})\n"
        "n = len(p.read_text().splitlines()) if p.exists() else 0\n"
        "p.write_text('x\\n' * (n + 1))\n"
        "sys.exit(3) if n < 2 else time.sleep(60)\n"
    )
    restarted = []
    proc = Supervised(ProcessSpec(name="flaky", argv=[sys.executable, "-c", script], log_path=tmp_path / "flaky.log"),
                      on_restart=restarted.append)
    await proc.start()
    for _ in range(100):
        if proc.restarts == 2 and proc.running:
            break
        await asyncio.sleep(0.05)
    assert proc.restarts == 2 and proc.exit_codes == [3, 3] and len(restarted) == 2
    assert proc.running
    code = await proc.stop(grace=5)
    assert code == -15 and not proc.running
    assert len(marker.read_text().splitlines()) == 3


async def test_stop_kills_a_process_that_ignores_sigterm(tmp_path):
    script = (
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\ntime.sleep(60)\n"
    )
    log = tmp_path / "stubborn.log"
    proc = Supervised(ProcessSpec(name="stubborn", argv=[sys.executable, "-c", script], log_path=log))
    await proc.start()
    for _ in range(100):
        if log.exists() and "ready" in log.read_text():
            break
        await asyncio.sleep(0.05)
    assert await proc.stop(grace=0.5) == -9
    assert proc.restarts == 0
