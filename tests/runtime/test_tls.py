"""HTTPS on a service's port from the inventory (runtime/tls.py): server, clients, Prometheus, file checks."""

import asyncio
import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from dwcp.monitoring.render import render_all
from dwcp.runtime.inventory import InventoryError, load_inventory
from dwcp.runtime.ports import free_port
from dwcp.runtime.server import build_context
from dwcp.runtime.status import _collect
from dwcp.runtime.tls import TlsFileError, client_verify, service_tls
from tests.pki import make_ca, make_server_cert

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def pki(tmp_path):
    ca, ca_key, ca_cert = make_ca(tmp_path)
    cert, key = make_server_cert(tmp_path, ca_key, ca_cert)
    return {"ca": ca, "cert": cert, "key": key, "dir": tmp_path}


def write_inventory(directory: Path, port: int, tls: dict | None, where: str = "service") -> Path:
    allocator: dict = {"instances": [{"host": "127.0.0.1", "port": port}]}
    data: dict = {"supervisor": {"port": free_port()}, "services": {"allocator": allocator}}
    if tls is not None and where == "service":
        allocator["tls"] = tls
    elif tls is not None:
        data["security"] = {"tls": tls}
    if where == "service":  # a short slow-loris bound, so a stalled handshake is dropped quickly
        data["security"] = {"http": {"header_timeout_s": 1.0}}
    path = directory / "inventory.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_service_tls_comes_from_the_service_or_the_deployment_with_the_certificate_pinned_by_default(pki):
    inv = load_inventory(write_inventory(pki["dir"], 18001, {"cert_file": "server.pem", "key_file": "server.key"},
                                         where="security"))
    tls = service_tls(inv, "allocator")
    assert (tls.cert, tls.key, tls.ca) == (pki["cert"], pki["key"], pki["cert"])  # relative to the inventory
    assert inv.services["allocator"].instances[0].url == "https://127.0.0.1:18001"
    plain = load_inventory(write_inventory(pki["dir"], 18001, None))
    assert service_tls(plain, "allocator") is None and client_verify(plain) is True
    assert plain.services["allocator"].instances[0].url == "http://127.0.0.1:18001"


def test_a_key_readable_by_others_or_a_missing_certificate_is_refused_naming_the_file(pki):
    tls = {"cert_file": str(pki["cert"]), "key_file": str(pki["key"]), "ca_file": str(pki["ca"])}
    pki["key"].chmod(0o644)
    inv = load_inventory(write_inventory(pki["dir"], free_port(), tls))
    with pytest.raises(InventoryError, match=r"server.key: TLS key file is readable by group or others.*chmod 600"):
        build_context(inv, "allocator", 0, pki["dir"] / "data")
    pki["key"].chmod(0o600)
    inv = load_inventory(write_inventory(pki["dir"], free_port(), tls | {"cert_file": "missing.pem"}))
    with pytest.raises(InventoryError, match=r"services.allocator.tls: .*missing.pem: TLS certificate file not found"):
        build_context(inv, "allocator", 0, pki["dir"] / "data")
    inv = load_inventory(write_inventory(pki["dir"], free_port(), tls | {"cert_file": str(pki["ca"])}))
    with pytest.raises(InventoryError, match="not a PEM certificate and its private key"):
        build_context(inv, "allocator", 0, pki["dir"] / "data")  # the CA's certificate does not match the key
    inv = load_inventory(write_inventory(pki["dir"], free_port(), tls | {"ca_file": str(pki["key"])}))
    with pytest.raises(TlsFileError, match="server.key: TLS CA file holds no PEM certificate"):
        client_verify(inv)


def test_prometheus_scrapes_a_tls_service_over_https_against_its_ca(pki):
    tls = {"cert_file": "server.pem", "key_file": "server.key", "ca_file": pki["ca"].name}
    inv = load_inventory(write_inventory(pki["dir"], 18002, tls))
    files = render_all(inv, pki["dir"] / "monitoring")
    config = yaml.safe_load(files["prometheus.yml"].read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["maddpg-allocator"]["scheme"] == "https"
    assert jobs["maddpg-allocator"]["tls_config"] == {"ca_file": str(pki["ca"])}
    assert "scheme" not in jobs["prometheus"]  # Prometheus itself stays plain HTTP
    check = subprocess.run(["promtool", "check", "config", "--syntax-only", str(files["prometheus.yml"])],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.fixture
def tls_allocator(pki):
    """`dwcp serve allocator` with TLS from its inventory, on a free port: (inventory, port)."""
    port = free_port()
    tls = {"cert_file": "server.pem", "key_file": "server.key", "ca_file": pki["ca"].name}
    inv_path = write_inventory(pki["dir"], port, tls)
    env = os.environ | {"PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "dwcp.cli", "serve", "allocator", "--inventory", str(inv_path),
                             "--data-dir", str(pki["dir"] / "data"), "--log-level", "warning"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    inv = load_inventory(inv_path)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        yield inv, port
    finally:
        proc.terminate()
        proc.wait(timeout=15)


@pytest.mark.e2e
def test_tls_service_answers_health_over_https_with_its_ca_and_refuses_plaintext_and_unknown_cas(pki, tls_allocator):
    inv, port = tls_allocator
    with httpx.Client(verify=client_verify(inv), timeout=10) as client:
        resp = client.get(f"{inv.services['allocator'].instances[0].url}/health")
        metrics = client.get(f"https://127.0.0.1:{port}/metrics").text
    assert resp.status_code == 200 and resp.json()["status"] == "ok"
    assert 'dwcp_http_connections{state="open"} 1.0' in metrics  # the ConnectionGuard sees TLS connections

    with pytest.raises(httpx.HTTPError), httpx.Client(timeout=5) as client:  # plaintext on the TLS port
        client.get(f"http://127.0.0.1:{port}/health")

    other_ca, _, _ = make_ca(pki["dir"], "another CA")  # a client without the deployment's CA
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"), \
            httpx.Client(verify=ssl.create_default_context(cafile=other_ca), timeout=5) as client:
        client.get(f"https://127.0.0.1:{port}/health")
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"), \
            httpx.Client(timeout=5) as client:  # the system trust store does not know it either
        client.get(f"https://127.0.0.1:{port}/health")

    rows, _ = asyncio.run(_collect(inv, 5.0))  # `dwcp status` reaches it over https with the configured CA
    assert [(url, status) for _, _, url, status, _ in rows] == [(f"https://127.0.0.1:{port}", "ok")]


def test_status_with_an_unusable_ca_file_says_which_file_instead_of_a_traceback(pki, capsys):
    from dwcp.runtime.status import print_status

    tls = {"cert_file": "server.pem", "key_file": "server.key", "ca_file": "no-such-ca.pem"}
    inv = load_inventory(write_inventory(pki["dir"], free_port(), tls))
    assert print_status(inv, timeout=1.0) == 2
    assert "no-such-ca.pem: TLS CA file not found" in " ".join(capsys.readouterr().out.split())  # rich wraps


@pytest.mark.e2e
def test_a_client_that_never_finishes_its_tls_handshake_is_dropped_at_the_header_timeout(tls_allocator):
    _, port = tls_allocator
    # Timed from before connect, so the server's 1 s timer (started at accept) cannot start before ours.
    # The upper bound separates the two timeouts (1 s configured vs asyncio's default 60 s), not CPU speed:
    # a starved server process on a loaded CI machine still closes well before 30 s.
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=45) as sock:
        sock.sendall(b"\x16\x03\x01")  # the start of a ClientHello, never finished
        assert sock.recv(1024) == b""  # closed by the server, not by our timeout (that would raise)
        waited = time.monotonic() - started
    assert 0.99 < waited < 30.0  # header_timeout_s is 1 s; asyncio's default handshake timeout is 60 s
