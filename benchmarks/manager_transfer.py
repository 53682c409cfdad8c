"""DWCP Manager transfers: shaped links vs rsync, unshaped loopback goodput, health p99 under load.

Shaped runs (root, iproute2): this namespace and a new one joined by a veth pair with a `tbf` qdisc on both
ends at each rate (10, 100, 1000 Mbit/s). manager-0 and a compression-api instance run here (on this end's
address), manager-1 and Debian's rsync daemon in the other namespace, so every byte between the sites
crosses the shaped link (the veth adds no delay: RTT ~0.1 ms; this kernel has no netem). Every mode moves
the same mixed files (text, JSON logs, binary-like LZ data, VM-image-like data with zero runs, random) in
three size buckets, end to end, with fresh keys / a fresh destination each time (no delta from earlier runs):

    selector   the manager as deployed: each chunk's codec from the selector (local rule as fallback)
    zstd-3     the manager with every chunk zstd-3          none   the manager with no compression
    rsync      rsync -a to the daemon                        rsync-zstd   the same with -z zstd level 3

Loopback: two managers on 127.0.0.1, one incompressible object, goodput with checksums on (always on); `--tmpfs`
keeps both managers' data on /dev/shm, so disk and software can be told apart.
Health: /health latency measured by a closed-loop client while the loopback transfer runs.
Small files: on loopback, `--small-files` (1,000) objects of `--small-bytes` (4 KiB), one transfer each, from
the first POST to the last completion, against rsync -a of the same files to a local rsync daemon.
CPU seconds of every process involved come from /proc, beside wall-clock (the machine is shared).

    .venv/bin/python benchmarks/manager_transfer.py --out runs/manager_transfer.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np
import yaml
from _harness import cpu_seconds, free_ports, spent
from prometheus_client.parser import text_string_to_metric_families

from dwcp.compression.corpus import json_logs, lz, random_bytes, text
from dwcp.manager import keys
from dwcp.manager.load import vm_image
from dwcp.runtime.auth import bearer_header, client_token, ensure_token_file

MIB = 1 << 20
FAMILIES = {"text": text, "logs": json_logs, "binary": lz, "vm": vm_image, "random": random_bytes}
BUCKETS = {"small": 256 << 10, "medium": 4 * MIB, "large": 32 * MIB}
MANAGER_MODES = ("selector", "zstd-3", "none")
NS = (None, "dwcpbench-b")  # manager-0 in this namespace, manager-1 in its own
ADDR = ("10.232.0.1", "10.232.0.2")
SEED = {"loopback_goodput": ">= 1 GB/s (issue 14 target)", "health_p99": "< 5 ms seed baseline; <= 1 ms target"}


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def make_dataset(root: Path, scale: float, seed: int = 14) -> dict[str, list[Path]]:
    """bucket -> files; `scale` shrinks the buckets' sizes (slow links) while keeping every family."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[Path]] = {}
    for bucket, size in BUCKETS.items():
        n = max(16 << 10, int(size * scale))
        files = []
        for family, gen in FAMILIES.items():
            path = root / bucket / f"{family}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists() or path.stat().st_size != n:
                path.write_bytes(gen(rng, n))
            files.append(path)
        out[bucket] = files
    return out


class Managers:
    """Two manager processes (in namespaces or on loopback) and optionally a compression-api beside manager-0."""

    def __init__(self, work: Path, hosts: tuple[str, str], namespaces: tuple[str | None, str | None] | None,
                 selector: bool) -> None:
        self.work, self.hosts, self.ns = work, hosts, namespaces
        http0, http1, peer0, peer1, comp = free_ports(5)
        self.ports = (http0, http1)
        services = {"manager": {"instances": [
            {"host": hosts[0], "port": http0, "ports": {"peer": peer0}},
            {"host": hosts[1], "port": http1, "ports": {"peer": peer1}}],
            "settings": {"probe_interval_s": 30, "probe_bytes": 2 * MIB, "transfer_concurrency": 4,
                         "peer_key_dir": str(work / "keys"), "codec_log": str(work / "codec-log.jsonl")}}}
        for item in OVERRIDES:  # --set: an A/B knob for both managers of every run (shaped, loopback, small files)
            name, _, value = item.partition("=")
            services["manager"]["settings"][name] = yaml.safe_load(value)
        keys.write_dir(work / "keys", *keys.generate(2))  # the two "hosts" share one key directory
        if selector:
            services["compression"] = {"instances": [{"host": hosts[0], "port": comp}]}
        token_file = ensure_token_file(work / "http-token")
        self.headers = bearer_header(client_token(token_file))
        self.inventory = work / "inventory.yaml"
        self.inventory.write_text(yaml.safe_dump({"name": "bench", "security": {"token_file": str(token_file)},
                                                  "services": services}))
        self.procs: dict[str, subprocess.Popen] = {}
        self.codec_log = work / "codec-log.jsonl"  # what decided each chunk's codec (manager/plan.CodecLog)
        self.selector = selector
        self.client = httpx.Client(timeout=120, headers=self.headers)  # keep-alive: a request is not a dial

    def _spawn(self, name: str, argv: list[str], ns: str | None) -> None:
        # `ip netns exec` execs its command, so the Popen pid is the service's own (for /proc CPU time).
        log = open(self.work / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        env = {**os.environ, "DWCP_RUN_DIR": str(self.work / "run"),
               "DWCP_COMPRESSION_CALIBRATION": str(self.work / "calibration.json")}
        full = in_ns(ns, *argv)
        self.procs[name] = subprocess.Popen(full, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)
        log.close()

    def start(self) -> None:
        dwcp = [sys.executable, "-m", "dwcp", "serve"]
        inv = ["--inventory", str(self.inventory), "--log-level", "warning"]
        if self.selector:
            self._spawn("compression", [*dwcp, "compression", "--instance", "0", *inv], self.ns and self.ns[0])
        for i in (0, 1):
            self._spawn(f"manager-{i}", [*dwcp, "manager", "--instance", str(i), *inv], self.ns and self.ns[i])
        wait = [("manager-0", self.url(0)), ("manager-1", self.url(1))]
        if self.selector:
            comp = yaml.safe_load(self.inventory.read_text())["services"]["compression"]["instances"][0]
            wait.append(("compression", f"http://{comp['host']}:{comp['port']}"))
        self.wait_healthy(wait, 300)  # a first compression start calibrates codecs (~1 min)

    def wait_healthy(self, wait: list[tuple[str, str]], timeout: float) -> None:
        """Until each (process name, base URL) answers /health (and a compression service its model), within
        `timeout` seconds for all; a process that exits first raises."""
        deadline = time.monotonic() + timeout
        for name, url in wait:
            while True:
                if self.procs[name].poll() is not None:
                    raise RuntimeError(f"{name} exited; see {self.work}/{name}.log")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} not healthy; see {self.work}/{name}.log")
                try:
                    up = self.get(url, "/health").status_code in (200, 503)
                    if up and (name != "compression" or self.get(url, "/v1/model").status_code == 200):
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)

    def url(self, i: int) -> str:
        return f"http://{self.hosts[i]}:{self.ports[i]}"

    def get(self, base: str, path: str) -> httpx.Response:
        return self.request(base, "GET", path)

    def request(self, base: str, method: str, path: str, **kw) -> httpx.Response:
        return self.client.request(method, f"{base}{path}", **kw)

    def pids(self) -> dict[str, int]:
        return {n: p.pid for n, p in self.procs.items() if p.poll() is None}

    def stop(self) -> None:
        self.client.close()
        for p in self.procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def finished(m: Managers) -> float:
    """Transfers manager-0 has finished (done or failed) since it started, from its /metrics."""
    text = m.get(m.url(0), "/metrics").text
    return sum(s.value for f in text_string_to_metric_families(text) if f.name == "dwcp_transfers"
               for s in f.samples if s.name == "dwcp_transfers_total")


def pipeline_costs(m: Managers) -> dict:
    """manager-0's pipeline figures to manager-1 (its codec pricing, costs.py): CPU ns per raw byte by side and
    part, and the CPU share of its stream threads."""
    text = m.get(m.url(0), "/metrics").text
    out: dict = {}
    for f in text_string_to_metric_families(text):
        for s in f.samples:
            if s.name == "dwcp_transfer_pipeline_cpu_seconds_per_byte":
                out[f"{s.labels['side']}_{s.labels['part']}_ns_per_byte"] = round(s.value * 1e9, 3)
            elif s.name == "dwcp_transfer_pipeline_cpu_share":
                out["share"] = round(s.value, 3)
    return out


def decisions(m: Managers) -> dict[str, float]:
    """manager-0's codec decisions so far: `source:codec` -> chunks (dwcp_transfer_codec_sources_total, one per
    chunk or batched object: what decided its codec), and `calls:source` -> count
    (dwcp_transfer_codec_decisions_total: the chooser's per-sample answers and the per-chunk steps)."""
    text = m.get(m.url(0), "/metrics").text
    out: dict[str, float] = {}
    for f in text_string_to_metric_families(text):
        for s in f.samples:
            if s.name == "dwcp_transfer_codec_sources_total":
                out[f"{s.labels['source']}:{s.labels['codec']}"] = s.value
            elif s.name == "dwcp_transfer_codec_decisions_total":
                out[f"calls:{s.labels['source']}"] = s.value
    return out


def priced(pipeline: dict, codec: str, ratio: float, bandwidth: float, streams: int = 4) -> float | None:
    """ns per raw byte that manager-0's pricing (costs.PipelineCosts, both ends on this host) gives `codec` at
    `ratio` from its exported figures (`pipeline_costs`), to set beside the measured ns per byte of a run."""
    from dwcp.manager.costs import PipelineCosts

    costs = PipelineCosts(streams)
    costs.same_host, costs.share = True, pipeline.get("share")
    for key, value in pipeline.items():
        if not key.endswith("_ns_per_byte"):
            continue
        side, part = key[:-len("_ns_per_byte")].split("_", 1)
        value *= 1e-9
        if part == "rest":
            setattr(costs, "tx_rest" if side == "sender" else "rx_rest", value)
        elif part == "durable_write_wall":
            costs.rx_io = value
        else:
            (costs.comp if side == "sender" else costs.dec)[part] = value
    t = costs.seconds_per_byte(codec, ratio, bandwidth, True)
    return None if t is None else round(t * 1e9, 3)


def runqueue_wait(pids: dict[str, int]) -> dict[str, float]:
    """Seconds each process's threads have spent runnable but waiting for a CPU (`/proc/<pid>/task/*/schedstat`,
    its second field). Beside CPU time it splits a run's wall clock: computing, waiting for a CPU, and the rest
    (waiting for the disk, the peer, a lock). A thread that ends within a run takes its wait with it, so the
    difference of two readings is a lower bound."""
    out = {}
    for name, pid in pids.items():
        total = 0
        for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            try:
                total += int(stat.read_text().split()[1])
            except (OSError, IndexError, ValueError):
                continue
        out[name] = total / 1e9
    return out


OVERRIDES: tuple[str, ...] = ()  # --set NAME=VALUE: manager settings written into every run's inventory
SAME_CONTENT = False  # --same-content: every run sends the files' own bytes (the benchmark before session 8)


def manager_run(m: Managers, files: list[Path], mode: str, tag: str, timeout: float, batch: bool = False) -> dict:
    """PUT the files at manager-0 (not timed), then transfer them all to manager-1 and wait (timed); `batch`:
    one POST /v1/transfer-batches for all of them, as a client moving a file set would."""
    keys = []
    nonce = b"" if SAME_CONTENT else os.urandom(16)
    for f in files:
        key = f"{tag}/{mode}/{f.parent.name}/{f.name}"
        resp = m.request(m.url(0), "PUT", f"/v1/objects/{key}", content=unique_body(f, nonce))
        assert resp.status_code == 200, resp.text
        keys.append(key)
    codec = None if mode == "selector" else mode
    # what the sender knows of the link as this run starts (its pricing and chunking use it): a probe that ran
    # while other traffic shared the link (rsync's runs, an earlier mode's tail) can leave a low figure
    link_before = m.get(m.url(0), "/v1/links").json()["links"][0].get("bandwidth_bytes_per_second")
    finished_before, decided_before = finished(m), decisions(m)
    log_from = m.codec_log.stat().st_size if m.codec_log.exists() else 0
    os.sync()  # the previous run's unsynced writes (rsync's files) are flushed now, not during this run's fsyncs
    before, waited_before = cpu_seconds(m.pids()), runqueue_wait(m.pids())
    t0 = time.perf_counter()
    wall0 = time.time()
    ids = []
    if batch:
        resp = m.request(m.url(0), "POST", "/v1/transfer-batches",
                         json={"keys": keys, "to": "manager-1", **({"codec": codec} if codec else {})})
        assert resp.status_code == 202, resp.text
        ids = resp.json()["ids"]
    for key in keys if not batch else ():
        body = {"key": key, "to": "manager-1", **({"codec": codec} if codec else {})}
        resp = m.request(m.url(0), "POST", "/v1/transfers", json=body)
        assert resp.status_code == 202, resp.text
        ids.append(resp.json()["id"])
    # One /metrics read per poll until the sender counts them all finished, and only then the CPU time: a GET
    # per transfer while they run cost about 0.7 ms of the sender's CPU each, which read as per-object cost.
    # The polls back off from 20 to 250 ms: one /metrics GET costs the sender ~1.9 ms of CPU, so polling every
    # 20 ms through a 5 s loopback transfer added ~1.8 CPU s/GiB to its figure. The end time is the manager's
    # own stamp, so a later poll only adds idle time to the CPU window.
    poll = 0.02
    while finished(m) < finished_before + len(ids):
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"{mode}: transfers not done after {timeout}s")
        time.sleep(poll)
        poll = min(0.25, poll * 1.5)
    cpu, waited = spent(before, cpu_seconds(m.pids())), spent(waited_before, runqueue_wait(m.pids()))
    pipeline = pipeline_costs(m)
    decided = {k: round(v - decided_before.get(k, 0.0)) for k, v in decisions(m).items()}
    states = {tid: m.get(m.url(0), f"/v1/transfers/{tid}").json() for tid in ids}
    # End to end from the first request to the last transfer's completion as the manager recorded it (its
    # `updated` stamp, same host clock), so the benchmark's polling interval does not count.
    seconds = max(s["updated"] for s in states.values()) - wall0
    failed = [s for s in states.values() if s["state"] != "done"]
    raw = sum(s["bytes_raw"] for s in states.values())
    wire = sum(s["bytes_wire"] for s in states.values())
    chunk_log = []
    if m.codec_log.exists():
        with open(m.codec_log, "rb") as f:
            f.seek(log_from)
            mine = set(ids)
            chunk_log = [r for r in map(json.loads, f.read().splitlines()) if r.get("tid") in mine]
    codecs: dict[str, int] = {}
    for s in states.values():
        for c, n in s["codecs"].items():
            codecs[c] = codecs.get(c, 0) + n
    return {"seconds": seconds, "bytes": sum(f.stat().st_size for f in files), "bytes_wire": wire,
            "ratio": wire / raw if raw else 1.0, "failed": len(failed), "codecs": codecs,
            "cpu_seconds": round(sum(cpu.values()), 3),
            "cpu_seconds_by_process": {name: round(v, 3) for name, v in cpu.items()},
            "runqueue_wait_seconds_by_process": {name: round(v, 3) for name, v in waited.items()}, "pipeline": pipeline,
            "decided": {k: v for k, v in sorted(decided.items()) if v}, "link_bandwidth_at_start": link_before,
            "chunks": chunk_log}


def unique_body(path: Path, nonce: bytes, block: int = 1 << 20):
    """The file's bytes with its first 16 replaced by `nonce` (a file shorter than that: as is), so every run
    stores new content: the store is content-addressed, and a receiver that already holds a blob skips its
    rename and directory fsync (`ObjectStore.publish_many`) or its write (`publish_held`). Before session 8
    every mode sent the same bytes, so the first mode of each cell (always the selector's) paid for storing
    blobs that the zstd-3 and none runs after it found in place."""
    with open(path, "rb") as f:
        first = f.read(block)
        yield nonce + first[len(nonce):] if len(first) >= len(nonce) else first
        while chunk := f.read(block):
            yield chunk


class Rsyncd:
    def __init__(self, work: Path, ns: str | None, addr: str) -> None:
        self.root = work / "rsync-dest"
        self.root.mkdir(parents=True, exist_ok=True)
        (self.port,) = free_ports(1)
        conf = work / "rsyncd.conf"
        conf.write_text(f"pid file = {work}/rsyncd.pid\nuse chroot = no\n[bench]\n  path = {self.root}\n"
                        "  read only = no\n  uid = root\n  gid = root\n")
        self.proc = subprocess.Popen(in_ns(ns, "rsync", "--daemon", "--no-detach", f"--config={conf}",
                                           f"--port={self.port}", f"--address={addr}"),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.addr = addr
        time.sleep(0.5)

    def run(self, files: list[Path], tag: str, compress: bool) -> dict:
        dest = f"rsync://{self.addr}:{self.port}/bench/{tag}/"
        args = ["rsync", "-a", "--mkpath"]
        if compress:
            args += ["-z", "--compress-choice=zstd", "--compress-level=3"]
        os.sync()  # as before a manager run: no earlier run's writeback lands in this one
        t0 = time.perf_counter()
        usage0 = os.times()
        subprocess.run([*args, *map(str, files), dest], check=True, capture_output=True)
        seconds = time.perf_counter() - t0
        usage1 = os.times()
        client_cpu = (usage1.children_user - usage0.children_user) + (usage1.children_system - usage0.children_system)
        return {"seconds": seconds, "bytes": sum(f.stat().st_size for f in files),
                "client_cpu_seconds": round(client_cpu, 3)}

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(10)


def in_ns(ns: str | None, *argv: str) -> list[str]:
    return (["ip", "netns", "exec", ns] if ns else []) + list(argv)


def make_namespace() -> None:
    ns = NS[1]
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    subprocess.run(["ip", "link", "del", "dwb-a"], capture_output=True)
    sh("ip", "netns", "add", ns)
    sh("ip", "link", "add", "dwb-a", "type", "veth", "peer", "name", "dwb-b", "netns", ns)
    sh("ip", "addr", "add", f"{ADDR[0]}/24", "dev", "dwb-a")
    sh("ip", "link", "set", "dwb-a", "up")
    sh("ip", "-n", ns, "addr", "add", f"{ADDR[1]}/24", "dev", "dwb-b")
    sh("ip", "-n", ns, "link", "set", "dwb-b", "up")
    sh("ip", "-n", ns, "link", "set", "lo", "up")


def drop_namespace() -> None:
    subprocess.run(["ip", "netns", "del", NS[1]], capture_output=True)  # also removes the veth pair


def shape(mbit: int, burst_ms: float = 10.0) -> None:
    # tbf's bucket: `burst_ms` of the rate (default 10 ms: 1.25 MB at 1000 Mbit/s), at least 32 KiB; tbf needs
    # burst >= rate / HZ. A payload that fits the bucket after an idle moment crosses at the veth's speed, not the rate
    burst = max(32 * 1024, int(mbit * 125 * burst_ms))
    for ns, dev in ((NS[0], "dwb-a"), (NS[1], "dwb-b")):
        subprocess.run(in_ns(ns, "tc", "qdisc", "del", "dev", dev, "root"), capture_output=True)
        sh(*in_ns(ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", f"{mbit}mbit", "burst", str(burst),
                  "latency", "50ms"))


def wait_for_probe(m: Managers, since: float, timeout: float) -> None:
    """Until manager-0 has probed the link after `since` (its schedule: every probe_interval_s): a deployed
    manager knows its link, and a bandwidth figure from before the re-shaping would steer every mode's chunk
    size and the local rule as if the link had not changed (transfers can only raise the figure)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        links = m.get(m.url(0), "/v1/links").json()["links"]
        if all((link.get("probed_at") or 0) > since and link.get("bandwidth_bytes_per_second") for link in links):
            return
        time.sleep(0.5)
    raise TimeoutError(f"manager-0 did not probe the link within {timeout}s")


def shaped(work: Path, rates: list[int], seconds_per_mode: float, timeout: float, rounds: int = 1,
           buckets: tuple[str, ...] = tuple(BUCKETS), burst_ms: float = 10.0) -> dict:
    make_namespace()
    results: dict = {}
    with ExitStack() as stack:
        stack.callback(drop_namespace)
        m = Managers(work, ADDR, NS, selector=True)
        stack.callback(m.stop)
        m.start()
        rsyncd = Rsyncd(work, NS[1], ADDR[1])
        stack.callback(rsyncd.stop)
        for mbit in rates:
            shape(mbit, burst_ms)
            wait_for_probe(m, time.time(), timeout)
            # Size the data so an uncompressed run takes about `seconds_per_mode` on this link.
            total_full = sum(BUCKETS.values()) * len(FAMILIES)
            scale = min(1.0, seconds_per_mode * mbit * 125_000 / total_full)
            data = make_dataset(work / f"data-{mbit}", scale)
            # One untimed transfer first: the rate's first cell came after seconds of idle (the probe wait), and
            # its first mode (always the selector's) paid the wake-up of idle threads and connections alone. The
            # 100 Mbit/s small bucket, modes interleaved 8 times each (session 7): selector median 21.3 ms,
            # zstd-3 26.2 ms; in the table, where the selector's run came first after the wait, 26 vs 17 ms.
            manager_run(m, data["small"][:1], "zstd-3", f"r{mbit}-warm", timeout, batch=True)
            row: dict = {}
            for bucket, files in data.items():
                if bucket not in buckets:  # --buckets: the dataset's sizes stay those of the whole table
                    continue
                # One untimed transfer before each cell too: the cell's first run came right after the previous
                # cell's rsync runs, and lost most in that round (session 8: 1000 Mbit/s medium, the selector's run
                # first, 0.50-0.82 of always-zstd-3 in round 1 of 4 calls, 0.87-1.12 in the rounds after it).
                manager_run(m, data["small"][:1], "zstd-3", f"r{mbit}-warm-{bucket}", timeout, batch=True)
                cell: dict = {}
                runs: list[dict] = []
                for r in range(rounds):  # every other round in the reverse order: no mode always goes first
                    order = MANAGER_MODES if r % 2 == 0 else MANAGER_MODES[::-1]
                    # one batch POST for the bucket's files, as rsync gets one session
                    runs.append({mode: manager_run(m, files, mode, f"r{mbit}-{r}", timeout, batch=True)
                                 for mode in order})
                for mode in MANAGER_MODES:
                    cell[mode] = runs[0][mode]
                if rounds > 1:  # same-run ratios per round, and the mode's seconds over all rounds
                    cell["rounds"] = [{mode: round(run[mode]["seconds"], 4) for mode in MANAGER_MODES}
                                      for run in runs]
                    cell["codecs_by_round"] = [run["selector"]["codecs"] for run in runs]
                    cell["later_rounds"] = [{mode: run[mode] for mode in MANAGER_MODES} for run in runs[1:]]
                    for mode in MANAGER_MODES:
                        cell[mode] = {**cell[mode], "seconds": sum(run[mode]["seconds"] for run in runs) / rounds}
                cell["rsync"] = rsyncd.run(files, f"r{mbit}-plain-{bucket}", compress=False)
                cell["rsync-zstd"] = rsyncd.run(files, f"r{mbit}-zstd-{bucket}", compress=True)
                bandwidth = m.get(m.url(0), "/v1/links").json()["links"][0].get("bandwidth_bytes_per_second")
                cell["link_bandwidth_bytes_per_second"] = bandwidth
                if bandwidth:  # the pricing's ns per raw byte for each fixed-codec run, beside what it took
                    cell["calibration"] = {mode: {
                        "measured_ns_per_byte": round(cell[mode]["seconds"] / cell[mode]["bytes"] * 1e9, 3),
                        "priced_ns_per_byte": priced(cell["selector"]["pipeline"], mode, cell[mode]["ratio"],
                                                     bandwidth)} for mode in MANAGER_MODES if mode != "selector"}
                base = cell["selector"]["seconds"]
                cell["selector_speedup"] = {k: round(v["seconds"] / base, 3) for k, v in cell.items()
                                            if isinstance(v, dict) and "seconds" in v and k != "selector"}
                if rounds > 1:
                    cell["selector_speedup_by_round"] = [{mode: round(r[mode] / r["selector"], 3)
                                                          for mode in MANAGER_MODES if mode != "selector"}
                                                         for r in cell["rounds"]]
                row[bucket] = cell
                print(f"{mbit:>5} Mbit/s {bucket:>6} ({cell['selector']['bytes'] / MIB:7.2f} MiB): " + "  ".join(
                    f"{k} {v['seconds']:.2f}s" for k, v in cell.items() if isinstance(v, dict) and "seconds" in v)
                    + "  | selector faster by x" + ", ".join(f"{k} {r}" for k, r in cell["selector_speedup"].items())
                    + (f"  | by round {cell['selector_speedup_by_round']}" if rounds > 1 else "")
                    + f"  | selector run decided by {cell['selector']['decided']}", flush=True)
            results[f"{mbit}mbit"] = row
    return results


def health_buckets(url: str, series: str = 'dwcp_request_duration_seconds_bucket{', match: str = 'handler="/health"') \
        -> dict[str, float]:
    """Cumulative /health duration histogram buckets (le -> count) as the service measured them (or, with
    `series`/`match`, another histogram's: the event loop's lag)."""
    out = {}
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith(series) and match in line:
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[le] = float(line.rsplit(" ", 1)[1])
    return out


def loopback(work: Path, size: int, timeout: float) -> dict:
    m = Managers(work, ("127.0.0.1", "127.0.0.1"), None, selector=False)
    try:
        m.start()
        path = work / "incompressible.bin"
        with open(path, "wb") as f:
            for _ in range(size // MIB):
                f.write(os.urandom(MIB))
        buckets0 = health_buckets(m.url(1))
        lag0 = health_buckets(m.url(1), "dwcp_event_loop_lag_seconds_bucket{", "")
        # Its own process at a raised priority (health_probe.py): the server's latency, not the client's.
        prober = subprocess.Popen([sys.executable, str(Path(__file__).with_name("health_probe.py")),
                                   "--port", m.url(1).rsplit(":", 1)[1], "--seconds", str(timeout)],
                                  stdout=subprocess.PIPE, text=True)
        result = manager_run(m, [path], "none", "loop", timeout)
        prober.send_signal(signal.SIGTERM)
        health = json.loads(prober.communicate(timeout=30)[0])
        buckets1 = health_buckets(m.url(1))
        lag1 = health_buckets(m.url(1), "dwcp_event_loop_lag_seconds_bucket{", "")
        lagged = {le: lag1.get(le, 0.0) - lag0.get(le, 0.0) for le in lag1}
        served = {le: buckets1.get(le, 0.0) - buckets0.get(le, 0.0) for le in buckets1}
        result["goodput_bytes_per_second"] = result["bytes"] / result["seconds"]
        result["cpu_seconds_per_gib"] = round(result["cpu_seconds"] / (result["bytes"] / (1 << 30)), 2)
        result["cpu_seconds_per_gib_by_side"] = {  # manager-0 sends, manager-1 receives
            name: round(v / (result["bytes"] / (1 << 30)), 2) for name, v in result["cpu_seconds_by_process"].items()}
        result["health_during_transfer"] = {
            **health,
            # Server side (the runtime's request histogram): the share answered within 1 ms; p99 <= 1 ms
            # needs >= 0.99. Client-side figures add the client's own scheduling on a shared machine.
            "server_share_within_1ms": round(served.get("0.001", 0.0) / max(served.get("+Inf", 0.0), 1.0), 4),
            "server_share_within_2ms": round(served.get("0.002", 0.0) / max(served.get("+Inf", 0.0), 1.0), 4),
            # The receiver's event loop, sampled every 50 ms: how late it ran, whatever request was waiting.
            "loop_lag_share_within_1ms": round(lagged.get("0.001", 0.0) / max(lagged.get("+Inf", 0.0), 1.0), 4),
            "loop_lag_share_within_10ms": round(lagged.get("0.01", 0.0) / max(lagged.get("+Inf", 0.0), 1.0), 4)}
        return result
    finally:
        m.stop()


def small_files(work: Path, count: int, size: int, timeout: float, one_post_each: bool = True) -> dict:
    """`count` objects of `size` random bytes, one transfer each, vs rsync -a of the same files (loopback)."""
    src = work / "small"
    src.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(count):
        f = src / f"f{i:05d}.bin"
        f.write_bytes(os.urandom(size))
        files.append(f)
    m = Managers(work, ("127.0.0.1", "127.0.0.1"), None, selector=False)
    with ExitStack() as stack:
        stack.callback(m.stop)
        m.start()
        single = manager_run(m, files, "selector", "small-single", timeout) if one_post_each else None
        manager = manager_run(m, files, "selector", "small", timeout, batch=True)
        rsyncd = Rsyncd(work, None, "127.0.0.1")
        stack.callback(rsyncd.stop)
        rsync = rsyncd.run(files, "small", compress=False)
    out = {"files": count, "file_bytes": size, "manager": manager, "rsync": rsync,
           "manager_over_rsync": round(manager["seconds"] / rsync["seconds"], 2),
           "manager_cpu_seconds_per_file": round(manager["cpu_seconds"] / count, 5),
           "manager_cpu_seconds_per_file_by_side": {
               name: round(v / count, 6) for name, v in manager["cpu_seconds_by_process"].items()}}
    if single is not None:
        out["manager_one_post_each"] = single
        out["one_post_each_over_rsync"] = round(single["seconds"] / rsync["seconds"], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="10,100,1000", help="Mbit/s of the shaped runs (comma separated)")
    ap.add_argument("--seconds-per-mode", type=float, default=6.0,
                    help="size each shaped dataset so an uncompressed run takes about this long")
    ap.add_argument("--loopback-mib", type=int, default=512)
    ap.add_argument("--tmpfs", action="store_true",
                    help="loopback run with both managers' data on /dev/shm (the disk's durable-write ceiling out)")
    ap.add_argument("--skip-shaped", action="store_true")
    ap.add_argument("--skip-loopback", action="store_true")
    ap.add_argument("--small-files", type=int, default=1000, help="objects in the small-files run (0: skip it)")
    ap.add_argument("--small-bytes", type=int, default=4096)
    ap.add_argument("--small-batch-only", action="store_true",
                    help="small files: only the one-batch-POST run and rsync (not one POST per file)")
    ap.add_argument("--buckets", default=",".join(BUCKETS),
                    help="shaped: the size buckets to run (comma separated; each keeps its size in the full table)")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="a manager setting for both managers of every run (YAML value), e.g. transfer_concurrency=8")
    ap.add_argument("--burst-ms", type=float, default=10.0,
                    help="shaped: the tbf bucket in ms of the rate (default 10; in the JSON as shaped_burst_ms)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="shaped: run the manager modes of each cell this many times, every other round in the "
                         "reverse order (seconds are the mean; same-run ratios per round in the JSON)")
    ap.add_argument("--same-content", action="store_true",
                    help="shaped: every run sends the same bytes (before session 8; the receiver's content-addressed "
                         "store then already holds what the second and later modes of a cell send)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds any one run may take")
    ap.add_argument("--work", type=Path, default=None,
                    help="working directory, kept afterwards; default a temp dir, removed at the end (GiBs)")
    ap.add_argument("--out", type=Path, default=Path("manager_transfer.json"))
    args = ap.parse_args()
    global SAME_CONTENT, OVERRIDES
    SAME_CONTENT, OVERRIDES = args.same_content, tuple(args.set)
    work = args.work or Path(tempfile.mkdtemp(prefix="dwcp-manager-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        run(args, work)
    finally:
        if args.work is None:  # payloads and both managers' stores: tens of GiB left in /tmp otherwise
            shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> None:
    report: dict = {"seed_baselines": SEED, "host_cpus": os.cpu_count(), "settings": args.set}
    if not args.skip_loopback:
        # --tmpfs: both managers' data (and the object) in memory, so the figures are the software's, not the disk's
        shm = Path(tempfile.mkdtemp(prefix="dwcp-manager-loopback-", dir="/dev/shm")) if args.tmpfs else None
        lo = shm or work / "loopback"
        lo.mkdir(exist_ok=True)
        try:
            report["loopback"] = loopback(lo, args.loopback_mib * MIB, args.timeout)
        finally:
            if shm is not None:
                shutil.rmtree(shm, ignore_errors=True)
        r = report["loopback"]
        r["data_on"] = "tmpfs" if args.tmpfs else "disk"
        print(f"loopback ({r['data_on']}), incompressible {r['bytes'] / MIB:.0f} MiB: "
              f"{r['goodput_bytes_per_second'] / 1e6:.1f} MB/s "
              f"goodput (target >= 1000 MB/s), {r['cpu_seconds_per_gib']} CPU s/GiB (both managers: "
              f"{r['cpu_seconds_per_gib_by_side']}); in {r['seconds']:.2f} s of wall clock CPU "
              f"{r['cpu_seconds_by_process']} s, waiting for a CPU {r['runqueue_wait_seconds_by_process']} s; "
              f"/health during it p50 {r['health_during_transfer']['p50_ms']} ms, "
              f"p99 {r['health_during_transfer']['p99_ms']} ms, max {r['health_during_transfer']['max_ms']} ms "
              f"(target <= 1 ms; seed < 5 ms); receiver's loop lag within 1 ms "
              f"{r['health_during_transfer']['loop_lag_share_within_1ms']:.1%}, within 10 ms "
              f"{r['health_during_transfer']['loop_lag_share_within_10ms']:.1%}; server-side "
              f"{r['health_during_transfer']['server_share_within_1ms']:.1%} within 1 ms, "
              f"{r['health_during_transfer']['server_share_within_2ms']:.1%} within 2 ms; load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    if args.small_files and shutil.which("rsync") is not None:
        sm = work / "small-files"
        sm.mkdir(exist_ok=True)
        report["small_files"] = r = small_files(sm, args.small_files, args.small_bytes, args.timeout,
                                                  not args.small_batch_only)
        print(f"small files, {r['files']} x {r['file_bytes']} B on loopback: manager (one batch POST) "
              f"{r['manager']['seconds']:.2f} s ({r['manager_cpu_seconds_per_file'] * 1e3:.2f} CPU ms per file, both "
              f"managers: {r['manager_cpu_seconds_per_file_by_side']} s; waiting for a CPU "
              f"{r['manager']['runqueue_wait_seconds_by_process']} s), rsync {r['rsync']['seconds']:.2f} s: "
              f"manager/rsync = {r['manager_over_rsync']} (target <= 2)"
              + (f", one POST per file {r['manager_one_post_each']['seconds']:.2f} s = "
                 f"{r['one_post_each_over_rsync']} x rsync" if "manager_one_post_each" in r else "")
              + f"; load average {os.getloadavg()[0]:.1f}", flush=True)
    if not args.skip_shaped:
        if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("rsync") is None:
            print("shaped runs need root, iproute2 and rsync (scripts/setup.sh installs rsync); skipped")
        else:
            sw = work / "shaped"
            sw.mkdir(exist_ok=True)
            report["shaped"] = shaped(sw, [int(r) for r in args.rates.split(",")], args.seconds_per_mode,
                                      args.timeout, args.rounds, tuple(args.buckets.split(",")), args.burst_ms)
            report["shaped_burst_ms"] = args.burst_ms
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
