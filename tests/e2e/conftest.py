"""Helpers for end-to-end tests that start real processes on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx
import yaml

from dwcp.monitoring.live import check_live
from dwcp.runtime.ports import free_ports  # noqa: F401 (the e2e tests import it from here)

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, interval: float = 0.5) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = probe()
        except Exception as exc:  # the thing we wait for may not be listening yet
            result, last = None, exc
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last!r})")


class UpRun:
    """`dwcp up --inventory INV --run-dir RUN` as a context manager: started on enter; on exit SIGTERM to
    its process group (SIGKILL after 60 s), its output's tail printed, and its exit code in `code`."""

    def __init__(self, inventory: Path, run_dir: Path, log: Path, *args: str) -> None:
        self.argv = [sys.executable, "-m", "dwcp", "up", "--inventory", str(inventory), "--run-dir", str(run_dir),
                     *args]
        self.log = log
        self.code: int | None = None

    def __enter__(self) -> UpRun:
        self._out = open(self.log, "w")  # noqa: SIM115 - closed in __exit__
        self.proc = subprocess.Popen(self.argv, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def __exit__(self, *exc: object) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.code = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.code = self.proc.wait()
        self._out.close()
        print(self.log.read_text()[-4000:])


def up_inventory(tmp_path: Path, name: str, services: dict) -> tuple[Path, str]:
    """An inventory for `dwcp up` with `services`, its monitoring on free ports scraping every second;
    returns its path and the Prometheus URL."""
    names = ["prometheus", "alertmanager", "cluster", "sink", "supervisor"]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    inv = {
        "name": name,
        "supervisor": {"port": ports["supervisor"]},
        "monitoring": {
            "prometheus_port": ports["prometheus"], "alertmanager_port": ports["alertmanager"],
            "alertmanager_cluster_port": ports["cluster"], "sink_port": ports["sink"],
            "scrape_interval": "1s", "evaluation_interval": "1s",
        },
        "services": services,
    }
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(inv))
    return path, f"http://127.0.0.1:{ports['prometheus']}"


def prom_query(client: httpx.Client, prom: str, expr: str) -> list[dict]:
    """The result vector of an instant PromQL query (the query itself must be valid)."""
    body = client.get(f"{prom}/api/v1/query", params={"query": expr}).json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def job_targets_up(client: httpx.Client, prom: str, job: str, n: int) -> list | None:
    """The job's `n` Prometheus targets once all are up, else None (a `wait_for` probe)."""
    targets = client.get(f"{prom}/api/v1/targets").json()["data"]["activeTargets"]
    mine = [t for t in targets if t["labels"]["job"] == job]
    return mine if len(mine) == n and all(t["health"] == "up" for t in mine) else None


def wait_live_queries(prom: str, monitoring_dir: Path, timeout: float, about: str = "") -> list:
    """`check_live`'s results once every answerable dashboard query and recording rule returns data (and,
    with `about`, at least one answered query mentions it); on timeout, the error lists the still-empty ones."""
    empty: list[str] = []

    def answered():
        results = check_live(prom, monitoring_dir)
        empty[:] = [f"{x.where}: {x.expr}" for x in results if not x.ok]
        mine = [x for x in results if about in x.expr and not x.skipped]
        return results if not empty and mine else None

    try:
        return wait_for("every answerable query to return data", answered, timeout=timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; still empty: {empty}") from None
