"""One inventory, two hosts: `dwcp up --host` on each, monitoring on one, Prometheus scraping both.

The two hosts are network namespaces made here (a veth pair, 10.231.0.1 and 10.231.0.2), so nothing
leaves this machine. Host 1 runs one compression-api instance plus Prometheus, Alertmanager and the alert
sink; host 2 runs the other instance with `--no-monitoring`. Every probe runs inside host 1's namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dwcp.runtime.auth import ensure_token_file

from .conftest import wait_for

pytestmark = [
    pytest.mark.e2e, pytest.mark.network, pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2 (ip netns)"),
]

HOST1, HOST2 = "10.231.0.1", "10.231.0.2"
PROBE = """
import json, sys, httpx
prom = sys.argv[1]
targets = httpx.get(prom + "/api/v1/targets", timeout=3).json()["data"]["activeTargets"]
query = 'compression_selector_prediction_duration_seconds_count{job="compression-api"}'
series = httpx.get(prom + "/api/v1/query", params={"query": query}, timeout=3).json()["data"]["result"]
print(json.dumps({"targets": [(t["labels"]["job"], t["labels"]["instance"], t["health"]) for t in targets],
                  "predictions": {r["metric"]["instance"]: float(r["value"][1]) for r in series}}))
"""


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


@pytest.fixture
def two_hosts():
    tag = f"{os.getpid() % 100000}"
    ns1, ns2 = f"dwcp1-{tag}", f"dwcp2-{tag}"
    try:
        _sh("ip", "netns", "add", ns1)
        _sh("ip", "netns", "add", ns2)
        _sh("ip", "link", "add", f"dv1-{tag}", "netns", ns1, "type", "veth", "peer", "name", f"dv2-{tag}",
            "netns", ns2)
        for ns, dev, addr in ((ns1, f"dv1-{tag}", HOST1), (ns2, f"dv2-{tag}", HOST2)):
            _sh("ip", "-n", ns, "addr", "add", f"{addr}/30", "dev", dev)
            _sh("ip", "-n", ns, "link", "set", dev, "up")
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
    except (subprocess.CalledProcessError, OSError) as exc:
        for ns in (ns1, ns2):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        pytest.skip(f"cannot make network namespaces here: {exc}")
    yield ns1, ns2
    for ns in (ns1, ns2):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)  # also removes the veth pair


def _inventory(tmp_path: Path) -> Path:
    inv = {
        "name": "two-hosts",
        "supervisor": {"port": 19196},
        "monitoring": {
            "prometheus_host": HOST1, "prometheus_port": 19190, "alertmanager_host": HOST1,
            "alertmanager_port": 19193, "sink_host": HOST1, "sink_port": 19195,
            "scrape_interval": "1s", "evaluation_interval": "1s",
        },
        "services": {"compression": {"instances": [{"host": HOST1, "port": 15000}, {"host": HOST2, "port": 15000}]}},
        "security": {"token_file": "http-token"},  # one token for both hosts, beside the inventory
    }
    ensure_token_file(tmp_path / "http-token")
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(inv))
    return path


def test_one_inventory_two_hosts_one_prometheus(two_hosts, tmp_path: Path):
    ns1, ns2 = two_hosts
    inv = _inventory(tmp_path)
    procs = []
    for ns, host, extra in ((ns1, HOST1, ["--load-rate", "5"]), (ns2, HOST2, ["--no-monitoring", "--no-load"])):
        out = open(tmp_path / f"up-{host}.out", "w")  # noqa: SIM115 - closed with the process below
        argv = ["ip", "netns", "exec", ns, sys.executable, "-m", "dwcp", "up", "--inventory", str(inv),
                "--host", host, "--run-dir", str(tmp_path / f"run-{host}"), "--ready-timeout", "150", *extra]
        procs.append((subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True), out))

    def probe() -> dict | None:
        run = subprocess.run(["ip", "netns", "exec", ns1, sys.executable, "-c", PROBE, f"http://{HOST1}:19190"],
                             capture_output=True, text=True, timeout=30)
        if run.returncode != 0:
            return None
        state = json.loads(run.stdout)
        ups = {(job, inst) for job, inst, health in state["targets"] if health == "up"}
        want = {("compression-api", f"{HOST1}:15000"), ("compression-api", f"{HOST2}:15000"),
                ("dwcp-supervisor", f"{HOST1}:19196"), ("dwcp-supervisor", f"{HOST2}:19196")}
        every_target_up = all(health == "up" for _, _, health in state["targets"])  # Prometheus, Alertmanager too
        both_predict = set(state["predictions"]) == {f"{HOST1}:15000", f"{HOST2}:15000"}
        return state if want <= ups and every_target_up and both_predict else None

    try:
        state = wait_for("Prometheus on host 1 to scrape both hosts, with predictions from both", probe, timeout=180)
        assert {job for job, _, _ in state["targets"]} == {"prometheus", "alertmanager", "compression-api",
                                                           "dwcp-supervisor"}
        # Both supervisors reached their own "all up" (stopping one mid-start would rightly exit 1).
        for host in (HOST1, HOST2):
            wait_for(f"dwcp up on {host} to report all up", lambda h=host: "all up" in (
                tmp_path / f"up-{h}.out").read_text(), timeout=60)
    finally:
        for proc, _out in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        codes = []
        for proc, out in procs:
            try:
                codes.append(proc.wait(timeout=60))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                codes.append(proc.wait())
            out.close()
        for host in (HOST1, HOST2):
            print(host, (tmp_path / f"up-{host}.out").read_text()[-2000:])
    assert codes == [0, 0]
