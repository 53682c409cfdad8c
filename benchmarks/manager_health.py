"""DWCP Manager /health under full load, measured as a user would: `wrk` against the receiving manager while a
large incompressible object crosses loopback to it (issue 14 target: p99 <= 1 ms under full load).

Three figures, so client and server can be told apart:
- wrk's own latency distribution (`--latency`: p50/p75/p90/p99, max), one connection, closed loop: the client's
  view, which adds wrk's scheduling and the kernel's loopback to the server's time;
- the manager's request histogram for /health (`dwcp_request_duration_seconds`, timed from the ASGI call to the
  answer's last send): the server's handler, without the wait before it runs;
- the manager's event-loop lag histogram (`dwcp_event_loop_lag_seconds`): how late its loop ran, which every
  request waits before any handler runs.
Each is taken twice: idle (no transfer, same wrk run length) and during the transfer.

    PYTHONPATH=src .venv/bin/python benchmarks/manager_health.py --mib 2048 --out /tmp/health.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml
from _harness import free_ports

sys.path.insert(0, str(Path(__file__).parent))
from manager_transfer import MIB, Managers, finished, health_buckets  # noqa: E402

from dwcp.manager import keys  # noqa: E402

UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3}
DELAY_S = 0.3  # wrk starts this long after the transfer is posted


WRK_NICE = 0  # --wrk-nice: the client's own priority (a negative one takes its scheduling out of its figures)
WRK_RT = 0  # --wrk-rt: run wrk in SCHED_RR at this priority (0: normal scheduling)


def wrk(url: str, seconds: float, connections: int = 1) -> dict:
    """`wrk -t1 -cN -dS --latency URL`: its percentiles in ms, requests and errors."""
    rt = ["chrt", "-r", str(WRK_RT)] if WRK_RT else []
    argv = [*rt, "nice", "-n", str(WRK_NICE), "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
            "--latency", url]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    res: dict = {"raw": out}
    for pct, value, unit in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M):
        res[f"p{pct}_ms"] = round(float(value) * UNIT[unit], 3)
    m = re.search(r"Latency\s+[\d.]+\w+\s+[\d.]+\w+\s+([\d.]+)(us|ms|s)", out)
    if m:
        res["max_ms"] = round(float(m.group(1)) * UNIT[m.group(2)], 3)
    m = re.search(r"(\d+) requests in", out)
    res["requests"] = int(m.group(1)) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non_2xx"] = int(m.group(1)) if m else 0
    return res


def shares(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    diff = {le: after.get(le, 0.0) - before.get(le, 0.0) for le in after}
    total = max(diff.get("+Inf", 0.0), 1.0)
    return {"count": int(diff.get("+Inf", 0.0)),
            **{f"within_{le}s": round(diff.get(le, 0.0) / total, 4) for le in ("0.0005", "0.001", "0.002", "0.005")
               if le in diff}}


def measured(m: Managers, target: int, seconds: float, transfer: Path | None, timeout: float) -> dict:
    url = m.url(target)
    served0, lag0 = health_buckets(url), health_buckets(url, "dwcp_event_loop_lag_seconds_bucket{", "")
    result: dict = {}
    ran = None
    if transfer is not None:
        key = f"health/{time.time_ns()}"
        with open(transfer, "rb") as f:
            resp = m.request(m.url(0), "PUT", f"/v1/objects/{key}", content=f)
        assert resp.status_code == 200, resp.text
        before = finished(m)
        out: dict = {}

        def load() -> None:
            time.sleep(DELAY_S)  # the transfer's streams are up and running
            out.update(wrk(f"{url}/health", seconds))

        wrk_thread = threading.Thread(target=load)
        t0 = time.perf_counter()
        client = m.request(m.url(0), "POST", "/v1/transfers", json={"key": key, "to": "manager-1", "codec": "none"})
        assert client.status_code == 202, client.text
        wrk_thread.start()
        while finished(m) < before + 1:
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError("transfer not done")
            time.sleep(0.05)
        ran = time.perf_counter() - t0
        wrk_thread.join()
        result["wrk"] = out
        result["transfer_seconds"] = round(ran, 3)
        result["transfer_goodput_bytes_per_second"] = round(transfer.stat().st_size / ran)
        # wrk must have run inside the transfer: else its figures mix in idle time
        result["wrk_inside_transfer"] = ran >= DELAY_S + seconds
    else:
        result["wrk"] = wrk(f"{url}/health", seconds)
    result["server_handler"] = shares(served0, health_buckets(url))
    result["event_loop_lag"] = shares(lag0, health_buckets(url, "dwcp_event_loop_lag_seconds_bucket{", ""))
    return result


def add_bystander(m: Managers) -> None:
    """A third site, manager-2, in the inventory (and the shared key directory), on manager-1's host."""
    inventory = yaml.safe_load(m.inventory.read_text())
    instances = inventory["services"]["manager"]["instances"]
    http, peer = free_ports(2)
    instances.append({"host": m.hosts[1], "port": http, "ports": {"peer": peer}})
    m.inventory.write_text(yaml.safe_dump(inventory))
    keys_dir = Path(inventory["services"]["manager"]["settings"]["peer_key_dir"])
    shutil.rmtree(keys_dir, ignore_errors=True)
    keys.write_dir(keys_dir, *keys.generate(3))
    m.hosts, m.ports = (*m.hosts, m.hosts[1]), (*m.ports, http)


def start_bystander(m: Managers) -> None:
    m._spawn("manager-2", [sys.executable, "-m", "dwcp", "serve", "manager", "--instance", "2", "--inventory",
                           str(m.inventory), "--log-level", "warning"], None)
    m.wait_healthy([("manager-2", m.url(2))], 120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, default=2048, help="object size (incompressible, codec none)")
    ap.add_argument("--seconds", type=int, default=1,
                    help="wrk run length (whole seconds; the transfer must last longer than this + 0.3 s)")
    ap.add_argument("--target", type=int, default=1, choices=(0, 1, 2),
                    help="0: the sender, 1: the receiver, 2: the bystander (--bystander)")
    ap.add_argument("--bystander", action="store_true",
                    help="start a third manager on this host that takes no part in the transfer: its /health shares "
                    "the CPUs with the transfer but not a process (a GIL), telling the two causes of a late loop apart")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="a manager setting for both managers (YAML value), e.g. gil_switch_interval_s=0.0001")
    ap.add_argument("--loop-rt", type=int, default=0, metavar="PRIO",
                    help="put the target's event-loop thread (its main thread) in SCHED_RR at this priority (with "
                    "SCHED_RESET_ON_FORK, so threads it starts stay normal): tells scheduling delay apart")
    ap.add_argument("--wrk-rt", type=int, default=0, metavar="PRIO",
                    help="run wrk in SCHED_RR at this priority: the client's own wait for a CPU out of its figures")
    ap.add_argument("--wrk-nice", type=int, default=0, help="run wrk at this nice value (negative: as root)")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path("manager_health.json"))
    args = ap.parse_args()
    global WRK_NICE, WRK_RT
    WRK_NICE, WRK_RT = args.wrk_nice, args.wrk_rt
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (Debian: apt-get install wrk)")
    work = args.work or Path(tempfile.mkdtemp(prefix="dwcp-health-"))
    work.mkdir(parents=True, exist_ok=True)
    m = Managers(work, ("127.0.0.1", "127.0.0.1"), None, selector=False)
    if args.set:  # the A/B knobs: written into the inventory the managers start from
        inventory = yaml.safe_load(m.inventory.read_text())
        settings = inventory["services"]["manager"]["settings"]
        for item in args.set:
            name, _, value = item.partition("=")
            settings[name] = yaml.safe_load(value)
        m.inventory.write_text(yaml.safe_dump(inventory))
    if args.bystander:
        add_bystander(m)
    elif args.target == 2:
        sys.exit("--target 2 needs --bystander")
    path = work / "incompressible.bin"
    with open(path, "wb") as f:
        for _ in range(args.mib):
            f.write(os.urandom(MIB))
        # On disk before any round: else the kernel writes these dirty pages back (30 s after they were written,
        # /proc/sys/vm/dirty_expire_centisecs) inside a measured transfer, a disk load that is not the manager's.
        f.flush()
        os.fsync(f.fileno())
    report: dict = {"mib": args.mib, "target": f"manager-{args.target}", "settings": args.set,
                    "bystander": args.bystander, "loop_rt": args.loop_rt, "wrk_rt": args.wrk_rt,
                    "wrk_nice": args.wrk_nice, "runs": []}
    try:
        m.start()
        if args.bystander:
            start_bystander(m)
        if args.loop_rt:
            os.sched_setscheduler(m.procs[f"manager-{args.target}"].pid, os.SCHED_RR | os.SCHED_RESET_ON_FORK,
                                  os.sched_param(args.loop_rt))
        seconds = args.seconds
        report["wrk_seconds"] = seconds
        for r in range(args.rounds):
            idle = measured(m, args.target, seconds, None, 300)
            busy = measured(m, args.target, seconds, path, 300)
            report["runs"].append({"idle": idle, "during_transfer": busy})
            for name, res in (("idle", idle), ("during transfer", busy)):
                w = res["wrk"]
                print(f"round {r} {name:>15}: wrk p50 {w.get('p50_ms')} p90 {w.get('p90_ms')} p99 {w.get('p99_ms')} "
                      f"max {w.get('max_ms')} ms ({w['requests']} requests); server handler within 1 ms "
                      f"{res['server_handler'].get('within_0.001s')}; loop lag within 1 ms "
                      f"{res['event_loop_lag'].get('within_0.001s')}"
                      + (f"; transfer {res['transfer_seconds']} s, "
                         f"{res['transfer_goodput_bytes_per_second'] / 1e9:.2f} GB/s, wrk inside it: "
                         f"{res['wrk_inside_transfer']}" if "transfer_seconds" in res
                         else ""), flush=True)
    finally:
        m.stop()
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    for run in report["runs"]:
        for res in run.values():
            res["wrk"].pop("raw", None)
    args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
