"""A real consensus cluster on loopback, one `dwcp serve` process per node: for e2e tests and benchmarks.

It writes an inventory with free ports and fresh keys (`root/keys`, as `dwcp consensus keygen`
makes them) under `root`, starts each node as
`python -m dwcp serve <service> --instance I --inventory ... --data-dir ...`, and can `kill -9`
and restart single nodes (same data dir, so a restart exercises recovery and catch-up).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from dwcp.consensus.node.keys import generate_committee, write_key_dir
from dwcp.runtime.auth import bearer_header, client_token, ensure_token_file
from dwcp.runtime.inventory import load_inventory
from dwcp.runtime.ports import free_ports
from dwcp.runtime.services import resolve_kind


class LocalCluster:
    def __init__(
        self, root: Path, n: int, service: str = "tpbft", settings: dict[str, Any] | None = None,
        log_level: str = "warning",
    ) -> None:
        self.root, self.n, self.service, self.log_level = Path(root), n, service, log_level
        self.root.mkdir(parents=True, exist_ok=True)
        extra = [name for name in resolve_kind(service).extra_ports if name != "consensus"]  # e.g. a worker port
        ports = free_ports((2 + len(extra)) * n)
        self.http_ports, self.consensus_ports = ports[:n], ports[n:2 * n]
        self.extra_ports = {name: ports[(2 + k) * n:(3 + k) * n] for k, name in enumerate(extra)}
        self.inventory = self.root / "inventory.yaml"
        key_dir = self.root / "keys"
        self.token_file = ensure_token_file(self.root / "secrets" / "http-token")
        doc = {
            "name": f"{service}-local-{n}",
            "security": {"token_file": str(self.token_file)},
            "services": {
                service: {
                    "instances": [
                        {"host": "127.0.0.1", "port": h,
                         "ports": {"consensus": c, **{name: p[i] for name, p in self.extra_ports.items()}}}
                        for i, (h, c) in enumerate(zip(self.http_ports, self.consensus_ports, strict=True))
                    ],
                    "settings": {**(settings or {}), "key_dir": str(key_dir)},
                }
            },
        }
        self.inventory.write_text(yaml.safe_dump(doc, sort_keys=False))
        write_key_dir(key_dir, *generate_committee(load_inventory(self.inventory), service))
        self.procs: dict[int, subprocess.Popen] = {}

    @property
    def headers(self) -> dict[str, str]:
        """What a client sends with writes (the nodes' bearer token)."""
        return bearer_header(client_token(self.token_file))

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.http_ports[i]}"

    @property
    def urls(self) -> list[str]:
        return [self.url(i) for i in range(self.n)]

    def start(self, i: int) -> None:
        log = open(self.root / f"node-{i}.log", "ab")  # noqa: SIM115 - the child owns it
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.procs[i] = subprocess.Popen(
            [sys.executable, "-m", "dwcp", "serve", self.service, "--instance", str(i),
             "--inventory", str(self.inventory), "--data-dir", str(self.root / "data"), "--log-level", self.log_level],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
        log.close()

    def start_all(self) -> None:
        for i in range(self.n):
            self.start(i)

    def kill(self, i: int) -> None:
        """SIGKILL: no shutdown hooks, no flush; what survives is what was fsynced."""
        proc = self.procs.pop(i, None)
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def stop(self, i: int, timeout: float = 15.0) -> int:
        """SIGTERM, as a supervisor stops a node: its shutdown hooks run; returns its exit code."""
        proc = self.procs.pop(i)
        os.killpg(proc.pid, signal.SIGTERM)
        return proc.wait(timeout)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for i, proc in list(self.procs.items()):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
            self.procs.pop(i, None)

    def wait_ready(self, nodes: list[int] | None = None, timeout: float = 60.0, peers: int | None = None) -> None:
        """Until each node answers /v1/status with at least `peers` connected (default: all others)."""
        want = self.n - 1 if peers is None else peers
        pending = set(range(self.n) if nodes is None else nodes)
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while pending:
                for i in list(pending):
                    proc = self.procs.get(i)
                    if proc is not None and proc.poll() is not None:
                        raise RuntimeError(f"node {i} exited with {proc.returncode}; see {self.root}/node-{i}.log")
                    try:
                        status = client.get(f"{self.url(i)}/v1/status").json()
                        # a node with a worker process (bullshark) is ready once its worker listens
                        if len(status["peers_connected"]) >= want and status.get("worker_up", True):
                            pending.discard(i)
                    except (httpx.HTTPError, ValueError, KeyError):
                        pass
                if pending and time.monotonic() > deadline:
                    raise TimeoutError(f"nodes {sorted(pending)} not ready after {timeout}s; logs in {self.root}")
                if pending:
                    time.sleep(0.1)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()
