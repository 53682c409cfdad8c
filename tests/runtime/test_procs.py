import asyncio
import sys

import pytest

from dwcp.runtime import supervise
from dwcp.runtime.inventory import InventoryError, parse_inventory
from dwcp.runtime.procs import ProcessSpec, Supervised
from dwcp.runtime.supervise import UpOptions, default_load_rate, plan_load, plan_services


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
    proc = Supervised(ProcessSpec(name="flaky", argv=[sys.executable, "-c", script], log_path=tmp_path / "flaky.log",
                                  backoff_start=0.05),
                      on_restart=restarted.append)
    await proc.start()
    for _ in range(100):
        started = len(marker.read_text().splitlines()) if marker.exists() else 0
        if proc.restarts == 2 and proc.running and started == 3:  # the third start has run its script
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


async def test_restart_delay_starts_at_the_spec_backoff_and_doubles(tmp_path):
    starts = tmp_path / "starts"
    script = (
        "import pathlib, sys, time\n"
        f"p = pathlib.Path({str(starts)!r})\n"
        "with p.open('a') as f: f.write(repr(time.monotonic()) + '\\n')\n"
        "sys.exit(1)\n"
    )
    spec = ProcessSpec(name="crashy", argv=[sys.executable, "-c", script], log_path=tmp_path / "c.log",
                       backoff_start=0.4, backoff_max=0.8)
    proc = Supervised(spec)
    await proc.start()
    for _ in range(200):
        if starts.exists() and len(starts.read_text().splitlines()) >= 4:
            break
        await asyncio.sleep(0.05)
    await proc.stop(grace=1)
    times = [float(t) for t in starts.read_text().splitlines()[:4]]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps[0] >= 0.4 and gaps[1] >= 0.8 and gaps[2] >= 0.8  # 0.4, then doubled, then capped
    assert gaps[2] < 0.8 + 1.0  # capped at backoff_max, not doubled again to 1.6 (plus process start time)


def test_inventory_backoff_reaches_every_service_process(tmp_path):
    inv = parse_inventory({"supervisor": {"restart_backoff_s": 5, "restart_backoff_max_s": 20},
                           "services": {"compression": {"replicas": 2, "base_port": 5000}}})
    specs = plan_services(inv, UpOptions(), tmp_path)
    assert specs and {(s.backoff_start, s.backoff_max) for s in specs} == {(5.0, 20.0)}
    with pytest.raises(InventoryError, match="restart_backoff_max_s"):
        parse_inventory({"supervisor": {"restart_backoff_s": 5, "restart_backoff_max_s": 1}})


def test_up_refuses_to_start_on_ports_in_use_and_names_them(tmp_path):
    import socket

    from dwcp.runtime.supervise import busy_ports, planned_ports

    with socket.socket() as a, socket.socket() as b:
        for holder in (a, b):
            holder.bind(("127.0.0.1", 0))
            holder.listen()
        sup_port, svc_port = a.getsockname()[1], b.getsockname()[1]
        inv = parse_inventory({"supervisor": {"port": sup_port},
                               "services": {"compression": {"replicas": 1, "base_port": svc_port}}})
        planned = planned_ports(inv, UpOptions(monitoring=False))
        assert [(o, p) for o, _, p in planned] == [("supervisor", sup_port), ("compression-0", svc_port)]
        busy = busy_ports(planned)
    assert busy == [("supervisor", f"127.0.0.1:{sup_port} — in use"),
                    ("compression-0", f"127.0.0.1:{svc_port} — in use")]
    assert busy_ports(planned) == []  # free again once the holders closed


def test_up_gives_each_service_kind_its_own_load_generator_process(tmp_path):
    # One shared generator's stalls (large compression bodies, corpus generation) showed up as
    # every other service's request latency; each kind is driven from its own process.
    specs = plan_load(UpOptions(load_rate=7.0), tmp_path, ["manager", "tpbft"])
    assert [s.name for s in specs] == ["loadgen-manager", "loadgen-tpbft"]
    for spec, key in zip(specs, ["manager", "tpbft"], strict=True):
        assert spec.argv[-4:] == ["--rate", "7.0", "--service", key]
        assert spec.log_path == tmp_path / "logs" / f"loadgen-{key}.log"
        assert spec.env == {"DWCP_RUN_DIR": str(tmp_path)}
        assert spec.job == ""  # not a scraped service


def test_the_default_load_is_sized_to_the_hosts_cpus(tmp_path, monkeypatch):
    # 20 req/s per kind saturated a 2-CPU host (load average 30, HighLatency firing from the run queue).
    assert [default_load_rate(n) for n in (1, 2, 4, 8, 64)] == [2.5, 5.0, 10.0, 20.0, 20.0]
    monkeypatch.setattr(supervise, "host_cpus", lambda: 2)
    specs = plan_load(UpOptions(), tmp_path, ["tpbft"])
    assert specs[0].argv[-4:] == ["--rate", "5.0", "--service", "tpbft"]
    assert plan_load(UpOptions(load_rate=30.0), tmp_path, ["tpbft"])[0].argv[-3] == "30.0"  # explicit wins
