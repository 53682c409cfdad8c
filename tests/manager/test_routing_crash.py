"""A real `dwcp serve manager` killed with SIGKILL right after answering concurrent submissions: after the
restart every retried idempotency key is replayed from the manager's records, so the cluster receives each
transaction once. The cluster here is a stand-in that accepts every copy it is sent (a real one refuses a
second copy of a pending id), so a record lost to the crash would show as a second submission."""

from __future__ import annotations

import base64
import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import yaml

from dwcp.consensus.core.messages import tx_id
from dwcp.runtime.auth import bearer_header, client_token, ensure_token_file
from dwcp.runtime.ports import free_port

pytestmark = [pytest.mark.network, pytest.mark.slow, pytest.mark.e2e]


class CountingCluster(ThreadingHTTPServer):
    """Answers every submission as accepted and counts the copies of each transaction id it received."""

    daemon_threads = True

    def __init__(self) -> None:
        self.copies: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: CountingCluster

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["content-length"]))
        if self.path.startswith("/v1/batches"):
            payloads = [base64.b64decode(p) for p in json.loads(body)["payloads"]]
        else:
            payloads = [body]
        ids = [tx_id(p).hex() for p in payloads]
        with self.server.lock:
            self.server.copies.update(ids)
        doc = {"accepted": len(ids), "transactions": [{"id": i, "status": "pending", "height": None} for i in ids]}
        if not self.path.startswith("/v1/batches"):
            doc = doc["transactions"][0]
        answer = json.dumps(doc).encode()
        self.send_response(202)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args) -> None:
        pass


def test_retries_after_kill_9_of_the_manager_are_replayed_not_resubmitted(tmp_path):
    cluster = CountingCluster()
    threading.Thread(target=cluster.serve_forever, daemon=True).start()
    port = free_port()
    token_file = ensure_token_file(tmp_path / "http-token")
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(yaml.safe_dump({"name": "crash", "security": {"token_file": str(token_file)}, "services": {
        "manager": {"instances": [{"host": "127.0.0.1", "port": port, "ports": {"peer": free_port()}}],
                    "settings": {"probe_interval_s": 3600}},
        "tpbft": {"instances": [{"host": "127.0.0.1", "port": cluster.server_address[1],
                                 "ports": {"consensus": free_port()}}]}}}))
    http = httpx.Client(timeout=30, headers=bearer_header(client_token(token_file)))
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "manager.log", "ab")  # noqa: SIM115 - closed below

    def start() -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "dwcp", "serve", "manager", "--inventory", str(inventory),
                                 "--data-dir", str(tmp_path / "data")], stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "manager.log").read_text()[-2000:]
            try:
                if http.get(f"{url}/health").status_code in (200, 503):
                    return proc
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError("manager did not start")

    payloads = [b"crash-%d-" % i + os.urandom(8) for i in range(48)]

    def submit(i: int) -> httpx.Response:
        body = {"payload": base64.b64encode(payloads[i]).decode(), "cluster": "tpbft", "idempotency_key": f"key-{i}"}
        return http.post(f"{url}/v1/transactions", json=body)

    proc = start()
    try:
        with ThreadPoolExecutor(16) as pool:
            first = list(pool.map(submit, range(len(payloads))))
        os.killpg(proc.pid, signal.SIGKILL)  # at once, with no graceful shutdown
        proc.wait(30)
        assert all(r.status_code == 202 and r.json()["replayed"] is False for r in first), [r.text for r in first]
        proc = start()
        with ThreadPoolExecutor(16) as pool:
            again = list(pool.map(submit, range(len(payloads))))
        assert all(r.status_code == 202 and r.json()["replayed"] is True for r in again), [r.text for r in again]
        assert [r.json()["id"] for r in again] == [tx_id(p).hex() for p in payloads]
        assert cluster.copies == collections.Counter(tx_id(p).hex() for p in payloads)  # each exactly once
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
        log.close()
        http.close()
        cluster.shutdown()
