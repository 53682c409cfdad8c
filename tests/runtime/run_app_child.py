"""A service process for tests that need `run_app` as it really runs: its own process, signals, event loop."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import httpx


def start_run_app(port: int, app_source: str, timeout: float = 60.0) -> tuple[subprocess.Popen, httpx.Response]:
    """Start a child process serving the ASGI `app` that `app_source` defines (with its own imports) through
    `run_app` on 127.0.0.1:`port`; return the process and its first answer to `GET /`. The caller stops the
    process; one that dies or does not answer within `timeout` fails the test with its stderr, and is killed."""
    child = textwrap.dedent(app_source) + textwrap.dedent(f"""
        from dwcp.runtime.inventory import HttpLimits
        from dwcp.runtime.server import run_app

        run_app(app, "127.0.0.1", {port}, HttpLimits())
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()[-2000:]
            try:
                return proc, httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
            except httpx.HTTPError:
                time.sleep(0.1)
    except BaseException:
        proc.kill()
        proc.wait(10)
        raise
