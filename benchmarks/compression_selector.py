"""Compression selector benchmark, against a live two-instance deployment.

Starts two `dwcp serve compression` instances (the default deployment: ports P and P+1), then:
1. load, with 4 KiB samples of varied families, payload sizes and links (JSON `POST /v1/predict`):
   - saturation: `wrk` (Debian's `wrk`, a C load generator) when it is on PATH, one wrk with one thread per
     instance (a Lua script points each thread at its instance and cycles through 256 pre-built bodies):
     sustained req/s over both instances, latency percentiles over all requests. Without wrk, the raw
     keep-alive Python client below, in a separate process.
   - light load: the same with one connection per instance (wrk; latency when nothing queues).
   - paced: the Python client in a separate process starts requests on a fixed schedule (open loop, half
     the sustained rate unless --rate), spread over both instances; latency from the scheduled start.
   For each phase, the services' own `compression_selector_prediction_duration_seconds` p99 (features and
   model, no HTTP) and their CPU time per request.
2. accuracy: a held-out corpus at every scale (synthetic payloads from seeds the training never used, plus
   real files of this machine concatenated by kind; in thirds: whole payloads of 1-64 KiB, of 64 KiB-1 MiB,
   and full 1 MiB chunks, `train.heldout_payloads`) is measured by the oracle here, each payload as one
   chunk, twice, before the services start (the second measurement's own pick gives the oracle's
   repeatability). Each chunk is then asked about as a payload of declared size up to 64 GiB with random
   links (`train.requests`: a full chunk stands for 1 MiB-64 GiB sent in default chunks, a smaller one for
   itself or for a larger payload sent with `chunk_bytes` = its length), through `/v1/predict/batch`;
   near-best accuracy, exact-best share, mean regret, and the end-to-end time of the selector's picks vs
   always-zstd-3, always-none and the best fixed option, per declared size bucket and per data family.

    nice -n 10 .venv/bin/python benchmarks/compression_selector.py [--duration 10] [--skip-accuracy] [--json-out F]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

from _harness import cpu_seconds as process_cpu_seconds

from dwcp.compression import calibrate, corpus, oracle
from dwcp.compression.codecs import OPTIONS
from dwcp.compression.costmodel import DEFAULT_CHUNK_BYTES
from dwcp.compression.features import make_sample
from dwcp.compression.train import (
    BUCKETS,
    Requests,
    bucket_of,
    by_family_and_bucket,
    grouped,
    heldout_payloads,
    random_links,
    requests,
)
from dwcp.runtime.auth import bearer_header, client_token, ensure_token_file
from dwcp.runtime.ports import free_ports

SEED = {"p99_s": 0.010, "accuracy": 0.995, "rps": 1000.0}
TARGET = {"p99_s": 0.002, "accuracy": 0.995, "rps": 3000.0}
# The figures of the previous artifact and code on this benchmark (docs/compression.md, 2026-11-26, quiet VM).
PREVIOUS = {"rps": 4604.0, "prediction_p99_s": 0.00079}
INDEX = {(o.codec, o.level): i for i, o in enumerate(OPTIONS)}


# ---------------------------------------------------------------- load client (runs in its own process)

def _bodies(count: int = 256) -> list[bytes]:
    """Ready-made JSON bodies: 4 KiB samples of varied families, payload sizes and links."""
    rng = np.random.default_rng(7)
    names, out = list(corpus.FAMILIES), []
    for i in range(count):
        sample = corpus.FAMILIES[names[i % len(names)]](rng, 4096)
        bw, rtt, loss = (float(v[0]) for v in random_links(rng, 1))
        size = int(rng.integers(4096, 1 << 30))
        out.append(json.dumps({"sample": base64.b64encode(sample).decode(), "size_bytes": size,
                               "bandwidth_mbps": bw, "rtt_ms": rtt, "loss_rate": loss}).encode())
    return out


def token_file(workdir: Path) -> Path:
    """The services' bearer-token file (named in the benchmark's inventory, made by `start_services`)."""
    return workdir / "secrets" / "http-token"


def _requests(port: int, bodies: Path) -> list[bytes]:
    """HTTP requests for the bodies the parent wrote, one JSON body a line (generating them takes seconds)."""
    token = client_token(token_file(bodies.parent)).encode()
    return [b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s" % (port, token, len(body), body)
            for body in bodies.read_bytes().splitlines()]


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return int(head[9:12])


async def _closed_loop(ports: list[int], bodies: Path, connections: int, duration: float) -> dict:
    reqs = {port: _requests(port, bodies) for port in ports}
    lat, errors = [], 0
    stop_at = time.perf_counter() + duration

    async def worker(k: int) -> None:
        nonlocal errors
        port = ports[k % len(ports)]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = k
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            status = await _exchange(reader, writer, reqs[port][i % len(reqs[port])])
            lat.append(time.perf_counter() - t0)
            errors += status != 200
            i += connections
        writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(connections)))
    return {"mode": "closed", "connections": connections, "elapsed": time.perf_counter() - t0, "ok": len(lat) - errors,
            "errors": errors, "latencies": lat}


async def _paced(ports: list[int], bodies: Path, rate: float, duration: float, connections: int = 32) -> dict:
    """Open loop: request i is due at t0 + i/rate whatever the answers do; each connection takes the next due
    request when it is free. Latency counts from the due time when the request waited for a busy connection
    (the service's delay, no coordinated omission), else from the send (the event loop's timers are ~1 ms
    coarse: a late wake-up is the client's delay, not the service's)."""
    reqs = {port: _requests(port, bodies) for port in ports}
    conns = [(ports[k % len(ports)], *await asyncio.open_connection("127.0.0.1", ports[k % len(ports)]))
             for k in range(connections)]
    lat, errors, total, due = [], 0, int(rate * duration), 0
    t0 = time.perf_counter() + 0.05

    async def worker(port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal errors, due
        while due < total:
            i, due = due, due + 1
            at = t0 + i / rate
            now = time.perf_counter()
            if now < at:
                await asyncio.sleep(at - now)
                at = time.perf_counter()
            status = await _exchange(reader, writer, reqs[port][i % len(reqs[port])])
            lat.append(time.perf_counter() - at)
            errors += status != 200
        writer.close()

    await asyncio.gather(*(worker(*conn) for conn in conns))
    return {"mode": "paced", "rate": rate, "elapsed": time.perf_counter() - t0, "ok": len(lat) - errors,
            "errors": errors, "latencies": lat}


def client_main(args: argparse.Namespace) -> None:
    ports = [int(p) for p in args.ports.split(",")]
    # uvloop (a dwcp dependency, as uvicorn's loop) roughly halves the client's own CPU per request.
    run = uvloop.run if uvloop is not None else asyncio.run
    if args.rate > 0:
        out = run(_paced(ports, Path(args.bodies), args.rate, args.duration))
    else:
        out = run(_closed_loop(ports, Path(args.bodies), args.connections, args.duration))
    lat = np.array(out.pop("latencies"))
    out.update(n=len(lat), p50=float(np.percentile(lat, 50)), p99=float(np.percentile(lat, 99)),
               rps=out["ok"] / out["elapsed"])
    print(json.dumps(out))


def run_client(ports: list[int], bodies: Path, *, duration: float, connections: int = 16, rate: float = 0.0) -> dict:
    cmd = [sys.executable, __file__, "client", "--ports", ",".join(map(str, ports)), "--bodies", str(bodies),
           "--duration", str(duration), "--connections", str(connections), "--rate", str(rate)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- wrk (the C load generator), when installed

WRK_SCRIPT = """-- Generated by benchmarks/compression_selector.py: thread k loads instance k mod #ports and cycles
-- through pre-built request bodies; done() prints one JSON line of merged results.
local ports = {%(ports)s}
local bodies = {%(bodies)s}
local threads, made = {}, 0

function setup(thread)
  local port = ports[made %% #ports + 1]
  thread.addr = wrk.lookup("127.0.0.1", tostring(port))[1]
  thread:set("offset", made * 37)
  thread:set("port", port)
  made = made + 1
  table.insert(threads, thread)
end

function init(args)
  reqs, sent = {}, 0
  for i, body in ipairs(bodies) do
    reqs[i] = wrk.format("POST", "/v1/predict", {["Host"] = "127.0.0.1:" .. port,
                                                  ["Content-Type"] = "application/json",
                                                  ["Authorization"] = "Bearer %(token)s"}, body)
  end
  i = offset
end

function request()
  i = i %% #reqs + 1
  sent = sent + 1
  return reqs[i]
end

function done(summary, latency, requests)
  local per_port = {}
  for _, t in ipairs(threads) do
    local p = tostring(t:get("port"))
    per_port[#per_port + 1] = string.format('"%%s": %%d', p, t:get("sent"))
  end
  local e = summary.errors
  io.write(string.format('WRK {"requests": %%d, "duration_s": %%.6f, "errors": %%d, "p50_s": %%.6f, ' ..
    '"p99_s": %%.6f, "p999_s": %%.6f, "max_s": %%.6f, "sent_per_port": {%%s}}\\n',
    summary.requests, summary.duration / 1e6, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50) / 1e6, latency:percentile(99) / 1e6, latency:percentile(99.9) / 1e6,
    latency.max / 1e6, table.concat(per_port, ", ")))
end
"""


def write_wrk_script(path: Path, ports: list[int], bodies: Path) -> Path:
    # Level-3 long brackets: base64 and JSON numbers can never close them.
    bodies = ",\n".join(f"[===[{b.decode()}]===]" for b in bodies.read_bytes().splitlines())
    token = client_token(token_file(path.parent))  # URL-safe base64: nothing to escape in Lua
    path.write_text(WRK_SCRIPT % {"ports": ", ".join(map(str, ports)), "bodies": bodies, "token": token})
    return path


def run_wrk(script: Path, ports: list[int], *, duration: float, connections: int) -> dict:
    """One wrk, one thread per instance; `connections` in all (at least one per thread)."""
    threads = len(ports)
    cmd = ["wrk", f"-t{threads}", f"-c{max(connections, threads)}", f"-d{duration:g}s", "--timeout", "5s",
           "-s", str(script), f"http://127.0.0.1:{ports[0]}/v1/predict"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    line = next(x for x in done.stdout.splitlines() if x.startswith("WRK "))
    out = json.loads(line[4:])
    out.update(rps=(out["requests"] - out["errors"]) / out["duration_s"], p50=out["p50_s"], p99=out["p99_s"])
    return out


# ---------------------------------------------------------------- service and accuracy (parent process)

def start_services(workdir: Path, ports: list[int], model: Path | None = None) -> list[subprocess.Popen]:
    inv = workdir / "inventory.yaml"
    ensure_token_file(token_file(workdir))
    listed = "".join(f"      - {{host: 127.0.0.1, port: {p}}}\n" for p in ports)
    settings = f"    settings: {{model_path: {json.dumps(str(model.resolve()))}}}\n" if model else ""
    inv.write_text(f"name: bench\nsecurity: {{token_file: {token_file(workdir)}}}\nservices:\n  compression:\n"
                   f"{settings}    instances:\n{listed}")
    procs = [subprocess.Popen([sys.executable, "-m", "dwcp", "serve", "compression", "--instance", str(i),
                               "--inventory", str(inv), "--data-dir", str(workdir / "data"), "--log-level", "warning"])
             for i in range(len(ports))]
    deadline = time.monotonic() + 120
    for i, proc in enumerate(procs):
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ports[i]}/health", timeout=2) as r:
                    health = json.load(r)
                print(f"instance {i} up on port {ports[i]}: {health['status']}, "
                      f"model {health['checks']['model']['detail']}")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    stop_services(procs)
                    raise SystemExit(f"instance {i} did not answer /health") from None
                time.sleep(0.3)
    return procs


def stop_services(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(timeout=15)


def post(port: int, path: str, body: dict, workdir: Path) -> dict:
    headers = {"content-type": "application/json", **bearer_header(client_token(token_file(workdir)))}
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", json.dumps(body).encode(), headers)
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)


WALL, CPU = "compression_selector_prediction_duration_seconds", "compression_selector_prediction_cpu_seconds"


def prediction_buckets(ports: list[int], metric: str = WALL) -> np.ndarray:
    """Cumulative counts of a prediction histogram (wall or CPU time), summed over the instances, with their
    upper bounds: shape (2, buckets)."""
    total: dict[float, float] = {}
    for port in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        for line in text.splitlines():
            if line.startswith(f"{metric}_bucket"):
                le = float(line.split('le="', 1)[1].split('"', 1)[0])
                total[le] = total.get(le, 0.0) + float(line.rsplit(" ", 1)[1])
    les = sorted(total)
    return np.array([les, [total[le] for le in les]])


def bucket_quantile(before: np.ndarray, after: np.ndarray, q: float) -> tuple[float, float]:
    """q-quantile of the observations between two snapshots: (bucket upper bound, linear interpolation in the
    bucket, as PromQL's histogram_quantile does)."""
    les, counts = after[0], after[1] - before[1]
    rank = q * counts[-1]
    k = int(np.searchsorted(counts, rank))
    lo, below = (0.0, 0.0) if k == 0 else (les[k - 1], counts[k - 1])
    if np.isinf(les[k]):
        return les[k], lo
    inside = counts[k] - below
    return les[k], lo + (les[k] - lo) * ((rank - below) / inside if inside else 1.0)


def cpu_seconds(procs: list[subprocess.Popen]) -> float:
    """User plus system CPU time of the service processes so far (Linux /proc; 0 elsewhere)."""
    return sum(process_cpu_seconds({i: p.pid for i, p in enumerate(procs)}).values())


class Phase:
    """Snapshots of the services' prediction histograms and CPU time around one load phase."""

    def __init__(self, ports: list[int], procs: list[subprocess.Popen]) -> None:
        self.ports, self.procs = ports, procs
        self.buckets, self.cpu_buckets = prediction_buckets(ports), prediction_buckets(ports, CPU)
        self.cpu = cpu_seconds(procs)

    def end(self, requests: int) -> dict:
        """Print the phase's service-side figures; return prediction p99 (seconds, interpolated), the same span's
        CPU-time p99 (wall minus it: waiting for a CPU or the GIL) and CPU per request (seconds: the services'
        user + system time over the phase, shadow thread included)."""
        bound, p99 = bucket_quantile(self.buckets, prediction_buckets(self.ports), 0.99)
        _, cpu_p99 = bucket_quantile(self.cpu_buckets, prediction_buckets(self.ports, CPU), 0.99)
        cpu = cpu_seconds(self.procs) - self.cpu
        per_request = cpu / requests if requests else float("nan")
        print(f"   service-side prediction p99 {p99 * 1e3:.3f} ms (bucket <= {bound * 1e3:g} ms; its CPU time p99 "
              f"{cpu_p99 * 1e3:.3f} ms), service CPU {per_request * 1e6:.0f} us/request (shadow thread included), "
              f"load average {os.getloadavg()[0]:.2f}")
        return {"prediction_p99_s": p99, "prediction_cpu_p99_s": cpu_p99, "cpu_s_per_request": per_request}


def heldout(n_synthetic: int, n_real: int) -> list[tuple[str, bytes]]:
    # Seeds 1-13 are training's (train, held-out, real, large chunks); 1001+ are seen by no training run.
    return heldout_payloads(corpus.items, 1001, n_synthetic) + heldout_payloads(corpus.real_payloads, 1002, n_real)


SAMPLES = {
    "64 KiB spread (make_sample)": make_sample,
    "4 KiB prefix": lambda data: data[:4096],
}


def measure_twice(payloads: list[tuple[str, bytes]]) -> tuple[list, list]:
    """Two oracle measurements of every payload, each as one chunk, in two passes over the set (minutes apart,
    so the host's speed drift between them is the one a model trained earlier meets).

    Run before the services start: their shadow evaluator runs the oracle too, and a neighbour on the
    other core slows this thread's codecs (the truth) by tens of percent on this VM.
    """
    return [[(fam, data, oracle.measure(data)) for fam, data in payloads] for _ in range(2)]


def at_speed(measured: list, pilot: float) -> list:
    """The measurements rescaled to the host's calibrated speed (`Measurement.at_speed`)."""
    return [(fam, data, m.at_speed(pilot)) for fam, data, m in measured]


def truth_table(measured: list, req: Requests) -> np.ndarray:
    """Oracle seconds of every option for every request (the cost model on the measured chunk)."""
    return req.truth(*(np.array([getattr(m, f) for _, _, m in measured]) for f in ("ratio", "vc", "vd")))


def picks(port: int, payloads: list[tuple[str, bytes]], req: Requests, sample_of, workdir: Path) -> np.ndarray:
    """The service's choice for every request, through `/v1/predict/batch`; `chunk_bytes` is sent when the
    request's chunk is smaller than its payload (else the default applies: the payload is one chunk)."""
    samples = [base64.b64encode(sample_of(data)).decode() for _, data in payloads]
    items = []
    for row, size, chunk, bw, rtt, loss in zip(req.row, req.size, req.chunk, req.bandwidth_mbps, req.rtt_ms,
                                               req.loss, strict=True):
        item = {"sample": samples[row], "size_bytes": int(size), "bandwidth_mbps": float(bw), "rtt_ms": float(rtt),
                "loss_rate": float(loss)}
        if chunk < size:
            item["chunk_bytes"] = int(chunk)
        items.append(item)
    chosen = []
    for start in range(0, len(items), 64):
        for res in post(port, "/v1/predict/batch", {"items": items[start:start + 64]}, workdir)["results"]:
            chosen.append(INDEX[(res["codec"], res["level"])])
    return np.array(chosen)


def accuracy(chosen: np.ndarray, truth: np.ndarray, fams: np.ndarray, buckets: np.ndarray) -> dict:
    """Near-best, exact-best, regret overall, and per declared size bucket, per family and per family and
    bucket the picks' total time vs fixed options (`train.summary`)."""
    return {"overall": oracle.score_many(chosen, truth), "buckets": grouped(chosen, truth, buckets, BUCKET_NAMES),
            "families": grouped(chosen, truth, fams), "cells": by_family_and_bucket(chosen, truth, fams, buckets)}


def in_process_picks(model_path: Path, cal, payloads: list[tuple[str, bytes]], req: Requests,
                     sample_of) -> np.ndarray:
    """Another artifact's choice for every request (`--compare`): the services' `Selector` code and calibration
    run in this process on the same samples and requests, so it answers what the services would with it."""
    from dwcp.compression.costmodel import Link
    from dwcp.compression.model import Model
    from dwcp.compression.selector import Request, Selector

    sel = Selector(Model.load(model_path), cal)
    samples = [sample_of(data) for _, data in payloads]
    items = [Request(samples[row], int(size), Link(float(bw), float(rtt), float(loss)), int(chunk))
             for row, size, chunk, bw, rtt, loss in zip(req.row, req.size, req.chunk, req.bandwidth_mbps, req.rtt_ms,
                                                        req.loss, strict=True)]
    return np.array([c.index for i in range(0, len(items), 256) for c in sel.choose(items[i:i + 256])])


def repeatability(truth: np.ndarray, again: np.ndarray, buckets: np.ndarray) -> dict:
    """The oracle against itself: its best option from the second pass, scored on the first pass, overall and
    per bucket.

    On a shared machine codec timings move between runs; this is the near-best share no selector can
    be shown to beat here, whatever its model (same requests as `accuracy`).
    """
    pick = again.argmin(axis=1)
    return {"overall": oracle.score_many(pick, truth), "buckets": grouped(pick, truth, buckets, BUCKET_NAMES)}


BUCKET_NAMES = [name for _, name in BUCKETS]


def print_accuracy(title: str, acc: dict, ceiling: dict | None = None, table: bool = True) -> None:
    o = acc["overall"]
    print(f"[sample: {title}] near-best accuracy {o['accuracy']:.4f}, exact-best {o['exact_best']:.4f}, "
          f"mean regret {o['mean_regret']:.4f} over {o['n']} requests   (seed > {SEED['accuracy']}, "
          f"target >= {TARGET['accuracy']} per bucket)")
    if not table:
        return
    for what in ("buckets", "families"):
        print(f"{'size bucket' if what == 'buckets' else 'family':18} {'n':>6} {'acc':>7} {'exact':>6} {'regret':>7} "
              f"{'vs zstd-3':>9} {'vs none':>8} {'best fixed':>10} {'vs best':>8}" +
              (f" {'oracle rep.':>11}" if what == "buckets" and ceiling else ""))
        for name, s in acc[what].items():
            rep = f" {ceiling['buckets'][name]['accuracy']:11.4f}" if what == "buckets" and ceiling else ""
            print(f"{name:18} {s['n']:6d} {s['accuracy']:7.4f} {s['exact_best']:6.3f} {s['mean_regret']:7.4f} "
                  f"{s['vs_zstd-3']:9.3f} {s['vs_none']:8.3f} {s['best_fixed']:>10} {s['vs_best_fixed']:8.3f}{rep}")
        worse = [f for f, s in acc[what].items() if s["vs_best_fixed"] > 1.0]
        print(f"selector <= best fixed option in every one: {'yes' if not worse else 'no: ' + ', '.join(worse)}")
    print("selector time / best fixed option's, per family and declared size bucket (near-best in brackets):")
    print(f"{'family':18}" + "".join(f" {n:>15}" for n in BUCKET_NAMES))
    for fam, row in acc["cells"].items():
        print(f"{fam:18}" + "".join(f" {row[n]['vs_best_fixed']:7.3f} ({row[n]['accuracy']:.2f})" if n in row
                                    else f" {'-':>15}" for n in BUCKET_NAMES))
    worse = [f"{fam} {n} {s['vs_best_fixed']:.3f}" for fam, row in acc["cells"].items() for n, s in row.items()
             if s["vs_best_fixed"] > 1.0]
    print("selector <= best fixed option in every family and bucket: "
          + ("yes" if not worse else "no: " + ", ".join(worse)))


def load(ports: list[int], procs: list[subprocess.Popen], args: argparse.Namespace, tmp: Path) -> dict:
    wrk = shutil.which("wrk")
    d = args.duration
    bodies = tmp / "bodies.jsonl"
    bodies.write_bytes(b"\n".join(_bodies()))
    print(f"-- load: 4 KiB JSON samples (256 varied bodies), {d:g} s per phase, both instances "
          f"({', '.join(map(str, ports))})")
    if wrk:
        script = write_wrk_script(tmp / "predict.lua", ports, bodies)
        run_wrk(script, ports, duration=2.0, connections=args.connections)  # warm-up
        phase = Phase(ports, procs)
        sat = run_wrk(script, ports, duration=d, connections=args.connections)
        how = f"wrk (C, closed loop), {args.connections} connections over {len(ports)} instances"
    else:
        print("wrk not found: using the Python client (install Debian's wrk for the C load generator: "
              "apt-get install wrk)")
        run_client(ports, bodies, duration=2.0, connections=args.connections)  # warm-up
        phase = Phase(ports, procs)
        sat = run_client(ports, bodies, duration=d, connections=args.connections)
        how = f"Python client in a separate process (closed loop), {args.connections} connections"
    print(f"saturation, {how}: {sat['rps']:.0f} req/s sustained, p50 {sat['p50'] * 1e3:.2f} ms, "
          f"p99 {sat['p99'] * 1e3:.2f} ms, errors {sat['errors']}")
    if "sent_per_port" in sat:
        print(f"   requests sent per instance: {sat['sent_per_port']}")
    service_p99 = {"saturation": phase.end(sat.get("requests", sat.get("n", 0)))}
    end_to_end = {}
    if wrk:
        phase = Phase(ports, procs)
        light = run_wrk(script, ports, duration=d, connections=len(ports))
        print(f"light load, wrk with 1 connection per instance (closed loop): {light['rps']:.0f} req/s, "
              f"p50 {light['p50'] * 1e3:.2f} ms, p99 {light['p99'] * 1e3:.2f} ms, errors {light['errors']}")
        service_p99["light"] = phase.end(light["requests"])
        end_to_end["light"] = light["p99"]
    rate = args.rate or max(50.0, round(0.5 * sat["rps"], -1))
    phase = Phase(ports, procs)
    paced = run_client(ports, bodies, duration=d, rate=rate)
    print(f"paced at {rate:.0f} req/s, Python client in a separate process (open loop, latency from the due time "
          f"when queued): achieved {paced['rps']:.0f} req/s, p50 {paced['p50'] * 1e3:.2f} ms, "
          f"p99 {paced['p99'] * 1e3:.2f} ms, errors {paced['errors']}")
    service_p99[f"paced {rate:.0f}/s"] = phase.end(paced["n"])
    end_to_end[f"paced {rate:.0f}/s"] = paced["p99"]
    print(f"   seed: p99 < {SEED['p99_s'] * 1e3:.0f} ms, > {SEED['rps']:.0f} req/s;  "
          f"target: p99 <= {TARGET['p99_s'] * 1e3:.0f} ms, >= {TARGET['rps']:.0f} req/s")
    ms = lambda d: ", ".join(f"{v * 1e3:.2f} ms {k}" for k, v in d.items())  # noqa: E731
    p99s = {k: v["prediction_p99_s"] for k, v in service_p99.items()}
    print(f"   measured: {sat['rps']:.0f} req/s sustained ({sat['rps'] / TARGET['rps']:.0%} of target; previous "
          f"code and artifact {PREVIOUS['rps']:.0f}); prediction p99 (service-side) {ms(p99s)} (previous "
          f"{PREVIOUS['prediction_p99_s'] * 1e3:.2f} ms at saturation); end-to-end p99 {ms(end_to_end)}")
    return {"saturation": {k: sat[k] for k in ("rps", "p50", "p99", "errors")}, "service": service_p99,
            "end_to_end_p99_s": end_to_end}


def main(args: argparse.Namespace) -> int:
    print(f"host: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} (shared machine)")
    report: dict = {"seed": SEED, "target": TARGET, "previous": PREVIOUS, "default_chunk_bytes": DEFAULT_CHUNK_BYTES}
    with tempfile.TemporaryDirectory(prefix="dwcp-compression-bench-") as tmp:
        # One calibration for both instances and for the truth's rescaling (`Measurement.at_speed`).
        cal_path = Path(tmp) / "calibration.json"
        # Per-chunk speeds only when the served artifact compares them (they double the calibration's time).
        from dwcp.compression.model import Model
        from dwcp.compression.selector import DEFAULT_MODEL, needs_chunk_speeds

        compares = needs_chunk_speeds(Model.load(args.model or DEFAULT_MODEL))
        cal = calibrate.run() if compares else calibrate.run(chunk_repeats=0)
        calibrate.save(cal, cal_path)
        os.environ[calibrate.ENV_PATH] = str(cal_path)
        print(f"calibrated in {cal.seconds:.0f} s (pilot {cal.pilot / 1e6:.0f} MB/s)")
        if not args.skip_accuracy:
            payloads = heldout(args.synthetic, args.real)
            print(f"-- accuracy: {args.synthetic} synthetic + {args.real} real held-out payloads (chunks of "
                  f"1 KiB-1 MiB) x {args.links} requests each (declared sizes up to 64 GiB, random links); oracle "
                  f"measured in two passes here first, before the services start")
            started, cpu0 = time.monotonic(), time.process_time()
            first, second = measure_twice(payloads)
            print(f"   measured in {time.monotonic() - started:.0f} s ({time.process_time() - cpu0:.0f} s CPU), "
                  f"load average {os.getloadavg()[0]:.2f}")
            req = requests(np.array([len(data) for _, data in payloads]), args.links, 1003)
            fams = np.array([fam for fam, _ in payloads])[req.row]
            buckets = bucket_of(req.size)
            # Per truth, oracle seconds for every request: first pass, second pass.
            passes = {"calibrated": (at_speed(first, cal.pilot), at_speed(second, cal.pilot)),
                      "as measured": (first, second)}
            truths = {name: (truth_table(a, req), truth_table(b, req)) for name, (a, b) in passes.items()}
            ceilings = {name: repeatability(t1, t2, buckets) for name, (t1, t2) in truths.items()}
        ports = free_ports(2)
        procs = start_services(Path(tmp), ports, args.model)
        try:
            report["load"] = load(ports, procs, args, Path(tmp))
            if not args.skip_accuracy:
                chosen = {title: picks(ports[0], payloads, req, fn, Path(tmp)) for title, fn in SAMPLES.items()}
                for path in args.compare:
                    chosen |= {f"{title}; {path.name} (in process)": in_process_picks(path, cal, payloads, req, fn)
                               for title, fn in SAMPLES.items()}
        finally:
            stop_services(procs)
    if not args.skip_accuracy:
        print("truth 'calibrated': oracle speeds rescaled to the host's calibrated speed by the pilot block timed "
              "in the same turns (what the model predicts); 'as measured': the raw timings, host drift included")
        report["accuracy"] = {}
        for title, c in chosen.items():
            for name, (truth, _) in truths.items():
                acc = accuracy(c, truth, fams, buckets)
                report["accuracy"][f"{title}; truth {name}"] = acc
                print_accuracy(f"{title}; truth {name}", acc, ceilings[name], table=name == "calibrated")
        report["oracle_repeatability"] = ceilings
        for name, ceiling in ceilings.items():
            o = ceiling["overall"]
            print(f"oracle repeatability, truth {name} (second pass's pick scored on the first): near-best "
                  f"{o['accuracy']:.4f}, exact-best {o['exact_best']:.4f}, mean regret {o['mean_regret']:.4f}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=1, default=float))
        print(f"wrote {args.json_out}")
    return 0


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = p.add_subparsers(dest="cmd")
    c = sub.add_parser("client", help="(internal) the Python load client process")
    for q in (p, c):
        q.add_argument("--duration", type=float, default=10.0, help="seconds per load phase")
        q.add_argument("--connections", type=int, default=16, help="saturation phase connections, over both instances")
        q.add_argument("--rate", type=float, default=0.0, help="paced phase rate; 0: half the sustained rate")
    c.add_argument("--ports", required=True, help="comma-separated instance ports")
    c.add_argument("--bodies", required=True, help="request bodies, one JSON object a line")
    p.add_argument("--skip-accuracy", action="store_true", help="load phases only")
    p.add_argument("--synthetic", type=int, default=60, help="held-out synthetic payloads (a third full 1 MiB chunks)")
    p.add_argument("--real", type=int, default=30, help="held-out real payloads from this machine (the same thirds)")
    p.add_argument("--links", type=int, default=20, help="requests (random link and declared size) per payload")
    p.add_argument("--json-out", help="write the figures as JSON here")
    p.add_argument("--model", type=Path, help="the services' artifact (default: the one shipped with dwcp)")
    p.add_argument("--compare", type=Path, nargs="*", default=[], help="other artifacts scored on the same truth and "
                   "requests, their picks made in this process by the services' selector code and calibration")
    return p.parse_args()


if __name__ == "__main__":
    ns = parse()
    if ns.cmd == "client":
        client_main(ns)
    else:
        sys.exit(main(ns))
