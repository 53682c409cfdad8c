"""Real `dwcp serve manager` processes: a big object streamed with bounded memory, and resume after kill -9
of the receiver or the sender mid-transfer.

The resumed object is large enough (48 MiB in 1 MiB chunks; the receiver fsyncs every chunk) that a transfer is
still running when the test kills a process; the restarted side resumes from the receiver's durable chunks.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from dwcp.runtime.auth import bearer_header, client_token, ensure_token_file
from dwcp.runtime.ports import free_port

pytestmark = [pytest.mark.network, pytest.mark.slow]
MIB = 1 << 20
SIZE = 48 * MIB


class Sites:
    def __init__(self, tmp_path: Path) -> None:
        self.instances = [{"host": "127.0.0.1", "port": free_port(), "ports": {"peer": free_port()}} for _ in range(2)]
        self.inventory = tmp_path / "inventory.yaml"
        settings = {"chunk_bytes": MIB, "chunk_min_bytes": MIB, "chunk_max_bytes": MIB, "streams": 2,
                    "probe_interval_s": 3600}
        token_file = ensure_token_file(tmp_path / "http-token")
        self.inventory.write_text(yaml.safe_dump({"name": "resume", "security": {"token_file": str(token_file)},
                                                  "services": {"manager": {"instances": self.instances,
                                                                           "settings": settings}}}))
        self.run_dir = tmp_path / "run"
        self.procs: dict[int, subprocess.Popen] = {}
        self.http = httpx.Client(timeout=30, headers=bearer_header(client_token(token_file)))

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.instances[i]['port']}"

    def start(self, i: int) -> None:
        env = {**os.environ, "DWCP_RUN_DIR": str(self.run_dir)}
        log = open(self.run_dir.parent / f"manager-{i}.log", "ab")  # noqa: SIM115 - lives with the process
        self.procs[i] = subprocess.Popen(
            [sys.executable, "-m", "dwcp", "serve", "manager", "--instance", str(i), "--inventory",
             str(self.inventory)], env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if self.http.get(f"{self.url(i)}/health").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"manager-{i} did not come up")

    def kill(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait(10)

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        self.http.close()

    def transfer_state(self, tid: str) -> dict:
        return self.http.get(f"{self.url(0)}/v1/transfers/{tid}").json()

    def wait_for(self, tid: str, predicate, timeout: float = 120.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                state = self.transfer_state(tid)
            except httpx.HTTPError:
                state = {}
            if state and predicate(state):
                return state
            time.sleep(0.02)
        raise AssertionError(f"transfer {tid} never reached the expected state: {state}")

    def received_bytes(self, i: int) -> float:
        text = self.http.get(f"{self.url(i)}/metrics").text
        for line in text.splitlines():
            if line.startswith("dwcp_transfer_received_bytes_total "):
                return float(line.split()[1])
        return 0.0


@pytest.fixture
def sites(tmp_path):
    s = Sites(tmp_path)
    yield s
    s.stop_all()


def start_big_transfer(sites: Sites) -> tuple[str, bytes]:
    body = os.urandom(SIZE)
    assert sites.http.put(f"{sites.url(0)}/v1/objects/big", content=body).status_code == 200
    resp = sites.http.post(f"{sites.url(0)}/v1/transfers", json={"key": "big", "to": "manager-1"})
    assert resp.status_code == 202
    return resp.json()["id"], body


def mid_transfer(state: dict) -> bool:
    return state.get("state") == "running" and 4 <= state.get("chunks_done", 0) <= state.get("chunks_total", 0) - 8


def test_transfer_resumes_after_the_receiver_is_killed(sites):
    sites.start(0)
    sites.start(1)
    tid, body = start_big_transfer(sites)
    before = sites.wait_for(tid, mid_transfer)
    sites.kill(1)
    time.sleep(0.5)
    sites.start(1)
    done = sites.wait_for(tid, lambda s: s["state"] in ("done", "failed"))
    assert done["state"] == "done", done
    assert done["resumes"] >= 1
    # The restarted receiver was sent only what it did not hold durably before the kill.
    assert sites.received_bytes(1) <= SIZE - before["chunks_done"] * MIB + 4 * MIB
    got = sites.http.get(f"{sites.url(1)}/v1/objects/big")
    assert hashlib.sha256(got.content).hexdigest() == hashlib.sha256(body).hexdigest()


def test_transfer_resumes_after_the_sender_is_killed(sites):
    sites.start(0)
    sites.start(1)
    tid, body = start_big_transfer(sites)
    sites.wait_for(tid, mid_transfer)
    sites.kill(0)
    sites.start(0)  # its transfer journal requeues the transfer
    done = sites.wait_for(tid, lambda s: s["state"] in ("done", "failed"))
    assert done["state"] == "done", done
    assert done["resumes"] >= 1
    # Chunks sent before the kill were not sent again (a few in flight at the kill may be).
    assert sites.received_bytes(1) <= SIZE + 4 * MIB
    got = sites.http.get(f"{sites.url(1)}/v1/objects/big")
    assert hashlib.sha256(got.content).hexdigest() == hashlib.sha256(body).hexdigest()


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


# 1 GiB takes ~60 s on the shared 2-core CI machine; DWCP_TEST_BIG_OBJECT_BYTES=1073741824 runs the full size.
BIG = int(os.environ.get("DWCP_TEST_BIG_OBJECT_BYTES", 256 * MIB))


def test_big_object_streams_in_transfers_and_out_with_bounded_memory(sites):
    sites.start(0)
    sites.start(1)
    block = os.urandom(MIB)
    digest = hashlib.sha256()

    def body():
        for n in range(BIG // MIB):
            piece = block[:8] + n.to_bytes(8, "big") + block[16:]  # every MiB distinct
            digest.update(piece)
            yield piece

    resp = sites.http.put(f"{sites.url(0)}/v1/objects/huge", content=body(), timeout=300)
    assert resp.status_code == 200 and resp.json()["sha256"] == digest.hexdigest()
    tid = sites.http.post(f"{sites.url(0)}/v1/transfers", json={"key": "huge", "to": "manager-1"}).json()["id"]
    assert sites.wait_for(tid, lambda s: s["state"] in ("done", "failed"), timeout=600)["state"] == "done"
    back = hashlib.sha256()
    with sites.http.stream("GET", f"{sites.url(1)}/v1/objects/huge", timeout=300) as got:
        for piece in got.iter_bytes():
            back.update(piece)
    assert back.hexdigest() == digest.hexdigest()
    # Neither process ever held the object: peak RSS stays far below its size.
    for i in (0, 1):
        assert peak_rss_mib(sites.procs[i].pid) < 400, f"manager-{i} peaked at {peak_rss_mib(sites.procs[i].pid)} MiB"
