"""An ASGI app served by uvicorn on a loopback port in a thread of this process, for tests that need a real
socket (raw HTTP bytes, Schemathesis over the wire)."""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn


class LocalServer:
    """`with LocalServer(app, port, http=...)`: started (lifespan included) on enter, stopped on exit."""

    def __init__(self, app: Any, port: int, http: Any = None) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        extra = {"http": http} if http is not None else {}
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                                     access_log=False, lifespan="on", **extra))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> LocalServer:
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self._server.started:
            assert time.monotonic() < deadline and self._thread.is_alive(), f"{self.url} did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(30)
