"""Pieces every cluster benchmark shares: an open-loop HTTP client, CPU time per process from /proc,
a per-phase CPU profile of one process (py-spy), and a same-machine etcd peer.

A benchmark that needs one of these imports it from here (`from _harness import ...`, the scripts run
with benchmarks/ on sys.path), so two benchmarks never carry two copies of a client or a /proc parser.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from dwcp.runtime.ports import free_ports


# ---- open-loop client ------------------------------------------------------------------------
class RawHttp:
    """Keep-alive HTTP/1.1 connections to one port; ~10x less client CPU than a general client at 1k req/s."""

    def __init__(self, port: int, headers: dict[str, str] | None = None) -> None:
        self.port = port
        # Extra header lines on every request (the services' bearer token on writes).
        self.extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, path: str, body: bytes, content_type: str = "application/octet-stream") -> tuple[int, bytes]:
        while self.idle:
            conn = self.idle.pop()
            try:
                return await self._exchange(conn, path, body, content_type)
            except (ConnectionError, asyncio.IncompleteReadError):
                # The server closes a connection idle past its keep-alive timeout; a request on such a
                # connection was never read (no answer byte came back), so it is safe to send again.
                conn[1].close()
        conn = await asyncio.open_connection("127.0.0.1", self.port)
        return await self._exchange(conn, path, body, content_type)

    async def _exchange(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], path: str,
                        body: bytes, content_type: str) -> tuple[int, bytes]:
        reader, writer = conn
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n{self.extra}"
            f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        )
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        payload = await reader.readexactly(length)
        self.idle.append(conn)
        return status, payload

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


@dataclass(frozen=True)
class Target:
    """What the open-loop client sends: request i goes to ports[i % len(ports)] as POST path with
    body(i); an answer with status `ok` counts as committed, `pending` as accepted but not committed."""

    ports: list[int]
    path: str
    body: Callable[[int], bytes]
    content_type: str = "application/octet-stream"
    headers: dict[str, str] = field(default_factory=dict)  # e.g. runtime.auth.bearer_header(token)
    ok: int = 200
    pending: int = 202


@dataclass
class OpenLoopResult:
    rate: float
    duration: float
    latencies: list[float] = field(default_factory=list)
    committed: int = 0
    pending: int = 0
    errors: int = 0
    elapsed: float = 0.0

    @property
    def achieved(self) -> float:
        return self.committed / self.elapsed if self.elapsed else 0.0

    def quantile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def open_loop(target: Target, rate: float, duration: float, poisson_seed: int | None = None) -> OpenLoopResult:
    """Send `rate * duration` requests on a fixed schedule (never slowed by slow answers); latency is
    from sending a request to its answer. With `poisson_seed` the schedule has exponential gaps (mean 1/rate,
    seeded): arrivals as independent clients make them, so some fall while an earlier request is in flight."""
    clients = [RawHttp(p, target.headers) for p in target.ports]
    run = OpenLoopResult(rate, duration)
    tasks: set[asyncio.Task] = set()

    async def one(i: int) -> None:
        start = time.perf_counter()
        try:
            status, _ = await clients[i % len(clients)].post(target.path, target.body(i), target.content_type)
        except (OSError, asyncio.IncompleteReadError):
            run.errors += 1
            return
        if status == target.ok:
            run.committed += 1
            run.latencies.append(time.perf_counter() - start)
        elif status == target.pending:
            run.pending += 1
        else:
            run.errors += 1

    if poisson_seed is None:
        due = [i / rate for i in range(int(rate * duration))]
    else:
        gaps = random.Random(poisson_seed)
        due = list(itertools.accumulate((gaps.expovariate(rate) for _ in range(int(rate * duration))), initial=0.0))
        due.pop()
    t0 = time.perf_counter()
    for i, at in enumerate(due):
        delay = t0 + at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(i))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    run.elapsed = time.perf_counter() - t0
    for c in clients:
        c.close()
    return run


@dataclass(frozen=True)
class BatchTarget:
    """What the batching open-loop client sends: every `tick` seconds, the transactions that fell due
    since the last tick go as ONE request (POST path with body(first, count)) to the next of `ports` in
    turn; `outcomes(status, answer)` says per transaction "committed", "pending" or anything else (an error)."""

    ports: list[int]
    path: str
    body: Callable[[int, int], bytes]
    outcomes: Callable[[int, bytes], list[str]]
    tick: float = 0.005
    content_type: str = "application/octet-stream"
    headers: dict[str, str] = field(default_factory=dict)


async def open_loop_batches(target: BatchTarget, rate: float, duration: float) -> OpenLoopResult:
    """`rate * duration` transactions on the same fixed schedule as `open_loop`, sent in batches per tick;
    a transaction's latency runs from its own scheduled time (not its batch's send) to its batch's answer,
    so the client's batching delay is counted in it."""
    clients = [RawHttp(p, target.headers) for p in target.ports]
    run = OpenLoopResult(rate, duration)
    tasks: set[asyncio.Task] = set()
    total = int(rate * duration)

    async def one(request: int, first: int, count: int, t0: float) -> None:
        try:
            status, answer = await clients[request % len(clients)].post(target.path, target.body(first, count),
                                                                        target.content_type)
        except (OSError, asyncio.IncompleteReadError):
            run.errors += count
            return
        done = time.perf_counter()
        outcomes = target.outcomes(status, answer)
        for j, outcome in enumerate(outcomes[:count]):
            if outcome == "committed":
                run.committed += 1
                run.latencies.append(done - (t0 + (first + j) / rate))
            elif outcome == "pending":
                run.pending += 1
            else:
                run.errors += 1
        run.errors += max(0, count - len(outcomes))

    t0 = time.perf_counter()
    sent = 0
    for request in range(int(duration / target.tick) + 2):
        delay = t0 + request * target.tick - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        due = min(total, int((time.perf_counter() - t0) * rate) + 1) - sent
        if due > 0:
            task = asyncio.create_task(one(request, sent, due, t0))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += due
        if sent >= total:
            break
    await asyncio.gather(*tasks)
    run.elapsed = time.perf_counter() - t0
    for c in clients:
        c.close()
    return run


# ---- CPU time from /proc ---------------------------------------------------------------------
def cpu_seconds(pids: dict[int, int]) -> dict[int, float]:
    """User + system CPU so far of each process, keyed as `pids` is (e.g. node id -> pid), with its
    threads and its reaped children; a process that is gone is left out. CPU time is what a shared
    machine's other load disturbs least, so costs per block and per tx are stated in it."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for key, pid in pids.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the ")" field 0 is the state, so utime, stime, cutime, cstime are fields 11..14.
        out[key] = sum(int(x) for x in fields[11:15]) / tick
    return out


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """User + system CPU so far of `pid`'s main thread (the event loop, "main") and of its other threads
    together ("other threads": the commit writer, executor threads), from /proc/PID/task/*/stat: real
    CPU, where a sampling profile also counts a thread that is merely waiting in the kernel (an fsync).
    (Python does not name OS threads, so they are told apart by thread id only.)"""
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            fields = (task / "stat").read_text().rpartition(") ")[2]
        except OSError:
            continue
        values = fields.split()
        key = "main" if task.name == str(pid) else "other threads"
        out[key] = out.get(key, 0.0) + (int(values[11]) + int(values[12])) / tick
    return out


def io_counts(pid: int) -> dict[str, int]:
    """What a process did so far that costs the loop native time, from /proc: `syscr` / `syscw` (read- and
    write-like system calls, sockets included: libuv reads and writes with read(2) / write(2)), and each
    thread's voluntary and involuntary context switches (a voluntary one is a wake-up: the thread slept in
    epoll_wait, a lock or a queue and was woken) and CPU (ms, user + system), the main thread (the event
    loop) apart from the others (the commit writer, executor threads)."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("syscr", "syscw"):
                out[key] = int(value)
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in tasks:
        try:
            status = (task / "status").read_text()
            stat = (task / "stat").read_text().rpartition(") ")[2].split()
        except OSError:
            continue
        who = "main" if task.name == str(pid) else "other"
        out[f"{who}_cpu_ms"] = out.get(f"{who}_cpu_ms", 0) + (int(stat[11]) + int(stat[12])) * 1000 // tick
        for line in status.splitlines():
            key, _, value = line.partition(":")
            if key in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
                name = f"{who}_{key.split('_')[0]}"
                out[name] = out.get(name, 0) + int(value)
    return out


def spent(before: dict, after: dict) -> dict:
    return {k: t - before[k] for k, t in after.items() if k in before}


# ---- per-phase profile -----------------------------------------------------------------------
# A sample's phase is decided by its innermost frame that matches a rule, so time in a library called
# from our code (hashlib under verify, msgspec under decode) counts for the phase that called it.
# Rules: (path fragment, function names or None for any) -> phase. Earlier rules win for one frame.
PHASE_RULES: tuple[tuple[str, frozenset[str] | None, str], ...] = (
    ("consensus/core/crypto.py", frozenset({"sign"}), "sign"),
    ("consensus/core/crypto.py", frozenset({"verify", "ed25519_verify"}), "verify"),
    ("consensus/core/codec.py", frozenset({"open", "decode"}), "decode"),
    ("consensus/transport/sync.py", frozenset({"decode_sync"}), "decode"),
    ("consensus/core/codec.py", None, "encode"),
    ("consensus/bullshark/worker.py", frozenset({"scan", "received"}), "ingress"),  # Narwhal worker: tx framing
    ("consensus/bullshark/worker.py", frozenset({"batch_digest"}), "hash"),
    ("consensus/transport/batchstore.py", frozenset({"put", "get", "pread"}), "storage"),
    ("asyncio/sslproto.py", None, "tls"),
    ("/ssl.py", None, "tls"),
    ("consensus/storage.py", None, "storage"),
    ("consensus/transport/writer.py", None, "storage"),
    ("sqlite3", None, "storage"),
    ("consensus/pbft/metrics.py", None, "metrics"),  # protocol metrics (the registry's metrics class)
    ("consensus/tpbft/metrics.py", None, "metrics"),
    ("consensus/probft/metrics.py", None, "metrics"),
    ("consensus/bullshark/metrics.py", None, "metrics"),
    ("consensus/transport/", None, "transport"),
    ("consensus/core/", None, "core"),
    ("consensus/pbft/", None, "core"),
    ("consensus/tpbft/", None, "core"),
    ("consensus/probft/", None, "core"),
    ("consensus/bullshark/", None, "core"),
    ("prometheus_client", None, "metrics"),
    ("consensus/node/", None, "http"),
    ("dwcp/runtime/", None, "http"),
    ("starlette", None, "http"),
    ("fastapi", None, "http"),
    ("uvicorn", None, "http"),
    ("pydantic", None, "http"),
    ("httptools", None, "http"),
    # Below any Python callback: the loop itself (epoll, socket reads and writes, uvloop's native TLS
    # plumbing and handles). It serves HTTP and consensus alike, so it is not "transport".
    ("asyncio/runners.py", frozenset({"Runner.run"}), "loop"),
    ("asyncio/base_events.py", frozenset({"BaseEventLoop.run_forever", "BaseEventLoop._run_once"}), "loop"),
    ("selectors.py", None, "loop"),
    ("asyncio", None, "transport"),  # the event loop's Python wake-ups, callbacks and stream handling
    ("uvloop", None, "transport"),
)
PHASES = ("sign", "verify", "decode", "encode", "transport", "core", "storage", "http", "metrics", "ingress", "hash",
          "tls", "loop", "other")


def phase_of(frames: list[str]) -> str:
    """`frames` root first, each "function (path:line)" as py-spy writes them."""
    for frame in reversed(frames):
        func, _, where = frame.partition(" (")
        for fragment, funcs, phase in PHASE_RULES:
            if fragment in where and (funcs is None or func in funcs):
                return phase
    return "other"


def parse_collapsed(text: str) -> Counter:
    """Samples per phase from py-spy's collapsed ("raw") output: `frame;frame;... count` per line."""
    phases: Counter = Counter()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        phases[phase_of(stack.split(";"))] += int(count)
    return phases


class _Sampler:
    """A profiler run as a subprocess over a window (the profiled processes run unmodified)."""

    def __init__(self, tool: str, exe: str | None, missing: str, duration: float, out_name: str) -> None:
        self.tool, self.exe, self.duration = tool, exe or "", duration
        self.out = Path(tempfile.mkdtemp(prefix=f"dwcp-{tool}-")) / out_name
        self.proc: subprocess.Popen | None = None
        self.error = "" if exe and Path(exe).exists() else missing

    def _start(self, args: list[str]) -> None:
        if not self.error:
            self.proc = subprocess.Popen([self.exe, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def _finish(self) -> str | None:
        """Wait for the window to end; the tool's stderr, or None with `error` set when it failed."""
        if self.proc is None:
            return None
        try:
            _, err = self.proc.communicate(timeout=self.duration + 30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.error = f"{self.tool} did not finish"
            return None
        if not self.out.exists():
            self.error = f"{self.tool} wrote nothing: {err.decode(errors='replace').strip()[-300:]}"
            return None
        return err.decode(errors="replace")


class PhaseProfile(_Sampler):
    """Samples one process with py-spy for a window; `result()` is each phase's share of the samples of its
    runnable threads, over every thread of the process (see LibraryProfile for what that overstates)."""

    def __init__(self, pid: int, duration: float, rate: int = 97, keep: Path | None = None) -> None:
        self.keep = keep  # also copy py-spy's collapsed stacks here (for a per-function read: profile_functions.py)
        exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        super().__init__("py-spy", exe, "py-spy is not installed (pip install py-spy; see pyproject's bench extra)",
                         duration, "stacks.txt")
        self._start(["record", "--pid", str(pid), "--duration", str(max(1, round(duration))), "--rate", str(rate),
                     "--format", "raw", "--output", str(self.out), "--nonblocking"])

    def result(self) -> dict[str, float]:
        """Share of samples per phase (sums to 1), or {} with `error` set when sampling failed."""
        if self._finish() is None:
            return {}
        counts = parse_collapsed(self.out.read_text())
        if self.keep is not None:
            shutil.copyfile(self.out, self.keep)
        shutil.rmtree(self.out.parent, ignore_errors=True)
        total = sum(counts.values())
        return {p: counts[p] / total for p in PHASES if counts[p]} if total else {}



# ---- exact Python CPU of one node: cProfile with thread CPU time ------------------------------
_CPROFILE_HOOK = """\
# Written by benchmarks/_harness.py (cprofile_env): cProfile, timed by thread CPU, on the main thread of the
# `dwcp serve ... --instance $DWCP_CPROFILE_NODE` process, written to $DWCP_CPROFILE as it ends.
import os, sys
_out = os.environ.get("DWCP_CPROFILE")
if _out and "serve" in sys.argv and "--instance" in sys.argv:
    _i = sys.argv.index("--instance")
    if _i + 1 < len(sys.argv) and sys.argv[_i + 1] == os.environ.get("DWCP_CPROFILE_NODE"):
        import atexit, cProfile, signal, time
        _p = cProfile.Profile(time.thread_time)
        _p.enable()
        def _dump():
            _p.disable()
            _p.dump_stats(_out)
        atexit.register(_dump)
        _raise = signal.raise_signal
        def _raise_after_dump(sig):  # uvicorn re-raises the SIGTERM it caught once it has shut down
            _dump()
            _raise(sig)
        signal.raise_signal = _raise_after_dump
"""


def cprofile_env(node: int, out: Path) -> None:
    """Make the nodes started from now on (they inherit this process's environment) profile node `node`'s main
    thread with cProfile, timed by thread CPU, from its start to its SIGTERM, into `out` (a pstats file). It
    slows that node ~2x and counts its start-up too: read it for where the steady state's Python goes (by
    function, per call), not for the node's CPU per block. `profile_functions.py --pstats` prints it."""
    hook = Path(tempfile.mkdtemp(prefix="dwcp-cprofile-"))
    (hook / "sitecustomize.py").write_text(_CPROFILE_HOOK)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(hook), os.environ.get("PYTHONPATH", "")) if p)
    os.environ["DWCP_CPROFILE"], os.environ["DWCP_CPROFILE_NODE"] = str(out.resolve()), str(node)

# ---- CPU by library, from the kernel's own samples ------------------------------------------
# py-spy samples wall-clock time and keeps a sample when the thread is not blocked: a node that a packet
# woke but that waits in the run queue for one of the 2 CPUs (10 nodes share them) is sampled where it
# stands, mostly in the event loop. So its shares weigh waiting, not only work. `perf` samples CPU cycles
# actually spent: it cannot name Python functions (3.11 has no perf map) but it splits the work by
# library, which answers "how much is signatures, kernel, TLS, SQLite, the interpreter".
LIBRARY_GROUPS: tuple[tuple[str, str], ...] = (
    ("_sodium", "ed25519"),  # PyNaCl's libsodium: signing and verifying
    ("[kernel", "kernel"),  # syscalls, loopback TCP, fsync, scheduling
    ("libssl", "tls"),
    ("libcrypto", "tls"),
    ("_ssl.", "tls"),
    ("sqlite3", "sqlite"),
    ("loop.cpython", "uvloop"),
    ("libpython", "python"),  # the interpreter running our code, the HTTP stack's and asyncio's
    ("libc.so", "libc"),  # malloc, memcpy
)


def library_of(dso: str) -> str:
    for fragment, group in LIBRARY_GROUPS:
        if fragment in dso:
            return group
    return "other native"  # msgspec, httptools, cffi, blake2, ...


class LibraryProfile(_Sampler):
    """`perf record` of some processes for a window; `result()` is each library group's share of CPU samples.

    Needs perf and the right to trace the processes (root, or kernel.perf_event_paranoid <= 1); else
    `error` says why and the result is empty."""

    def __init__(self, pids: list[int], duration: float, rate: int = 499) -> None:
        super().__init__("perf", shutil.which("perf"), "perf is not installed (Debian: linux-perf)", duration,
                         "perf.data")
        self._start(["record", "-q", "-F", str(rate), "-p", ",".join(map(str, pids)), "-o", str(self.out), "--",
                     "sleep", str(duration)])

    def result(self) -> dict[str, float]:
        try:
            if self._finish() is None:
                return {}
            report = subprocess.run(
                [self.exe, "report", "-i", str(self.out), "--sort", "dso", "--stdio", "-q", "-g", "none"],
                capture_output=True, text=True, timeout=120,
            )
        finally:
            shutil.rmtree(self.out.parent, ignore_errors=True)
        shares: Counter = Counter()
        for line in report.stdout.splitlines():
            share, _, dso = line.strip().partition("%")
            try:
                shares[library_of(dso.strip())] += float(share) / 100
            except ValueError:
                continue
        if not shares:
            self.error = f"perf report found no samples: {report.stderr.strip()[-300:]}"
        return dict(shares)


class SyscallTrace(_Sampler):
    """`perf trace -s` (the kernel's syscall tracepoints, no ptrace stop) of some processes for a window;
    `result()` is, per process and thread kind ("main": the event loop; "other": the writer and executor
    threads), the calls of each system call. Needs what LibraryProfile needs."""

    def __init__(self, pids: dict[int, int], duration: float) -> None:
        super().__init__("perf", shutil.which("perf"), "perf is not installed (Debian: linux-perf)", duration,
                         "trace.txt")
        self.pids = pids  # key (node id) -> pid
        self._start(["trace", "-s", "-p", ",".join(map(str, pids.values())), "-o", str(self.out)])
        if self.proc is not None:
            threading.Timer(duration, self.proc.send_signal, (signal.SIGINT,)).start()

    def result(self) -> dict[int, dict[str, dict[str, int]]]:
        try:
            if self._finish() is None:
                return {}
            text = self.out.read_text()
        finally:
            shutil.rmtree(self.out.parent, ignore_errors=True)
        return parse_syscall_summary(text, self.pids)


def parse_syscall_summary(text: str, pids: dict[int, int]) -> dict[int, dict[str, dict[str, int]]]:
    """perf trace -s's per-thread tables -> {key: {"main" | "other": {syscall: calls}}}; a thread whose
    process is not in `pids` (or that ended before the read) counts as "other" of no key and is left out."""
    owner = {}
    for key, pid in pids.items():
        try:
            owner.update({int(t.name): (key, "main" if int(t.name) == pid else "other")
                          for t in Path(f"/proc/{pid}/task").iterdir()})
        except OSError:
            continue
    out: dict[int, dict[str, dict[str, int]]] = {}
    here: dict[str, int] | None = None
    for line in text.splitlines():
        head = re.match(r"\s*\S.* \((\d+)\), \d+ events", line)
        if head:
            who = owner.get(int(head.group(1)))
            here = None if who is None else out.setdefault(who[0], {}).setdefault(who[1], {})
            continue
        row = re.match(r"\s+([a-z_0-9]+)\s+(\d+)\s+\d+\s", line)
        if row and here is not None and row.group(1) != "syscall":
            here[row.group(1)] = here.get(row.group(1), 0) + int(row.group(2))
    return out


def format_phases(shares: dict[str, float], cpu_ms_per_block: float | None = None) -> str:
    parts = []
    for phase, share in sorted(shares.items(), key=lambda kv: -kv[1]):
        per_block = f" {share * cpu_ms_per_block:.2f} ms" if cpu_ms_per_block else ""
        parts.append(f"{phase} {100 * share:.0f}%{per_block}")
    return ", ".join(parts)


# ---- a same-machine peer: etcd ---------------------------------------------------------------
class EtcdCluster:
    """Debian's etcd-server with `n` members on loopback (each its own data dir, fsync on as shipped).
    A client PUT to any member returns once the entry is committed by the Raft majority and applied,
    so it is the same submit -> durable commit latency the consensus nodes report."""

    def __init__(self, root: Path, n: int, binary: str = "etcd") -> None:
        self.root, self.n = Path(root), n
        self.binary = shutil.which(binary)
        if self.binary is None:
            raise FileNotFoundError("etcd is not installed (apt-get install etcd-server; scripts/setup.sh does)")
        ports = free_ports(2 * n)
        self.client_ports, self.peer_ports = ports[:n], ports[n:]
        self.procs: dict[int, subprocess.Popen] = {}

    def start(self) -> None:
        initial = ",".join(f"m{i}=http://127.0.0.1:{p}" for i, p in enumerate(self.peer_ports))
        for i in range(self.n):
            client, peer = f"http://127.0.0.1:{self.client_ports[i]}", f"http://127.0.0.1:{self.peer_ports[i]}"
            log = open(self.root / f"etcd-{i}.log", "ab")  # noqa: SIM115 - the child owns it
            self.procs[i] = subprocess.Popen(
                [self.binary, "--name", f"m{i}", "--data-dir", str(self.root / f"etcd-{i}"),
                 "--listen-client-urls", client, "--advertise-client-urls", client,
                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                 "--initial-cluster", initial, "--initial-cluster-token", f"bench-{os.getpid()}",
                 "--initial-cluster-state", "new", "--log-level", "error"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
            log.close()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            for i, port in enumerate(self.client_ports):
                while True:
                    if self.procs[i].poll() is not None:
                        raise RuntimeError(f"etcd member {i} exited; see {self.root}/etcd-{i}.log")
                    try:
                        if client.get(f"http://127.0.0.1:{port}/health").json().get("health") == "true":
                            break
                    except (httpx.HTTPError, ValueError):
                        pass
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"etcd member {i} not healthy after {timeout}s")
                    time.sleep(0.2)

    def target(self, prefix: bytes) -> Target:
        def body(i: int) -> bytes:
            key = base64.b64encode(prefix + b"-%d" % i).decode()
            return json.dumps({"key": key, "value": base64.b64encode(b"." * 40).decode()}).encode()

        return Target(ports=self.client_ports, path="/v3/kv/put", body=body, content_type="application/json")

    @property
    def pids(self) -> dict[int, int]:
        return {i: p.pid for i, p in self.procs.items()}

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def __enter__(self) -> EtcdCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

