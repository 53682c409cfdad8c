"""`QuietServer`: uvicorn's server without its 10 Hz tick, with the date header, signals and shutdown kept."""

import email.utils
import threading
import time

import httpx
import uvicorn

from dwcp.runtime.ports import free_port
from dwcp.runtime.server import DatedState, QuietServer
from tests.runtime.run_app_child import start_run_app


async def hello(scope, receive, send):
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hi"})


class CountingServer(QuietServer):
    ticks_run = 0

    async def on_tick(self, counter: int) -> bool:
        self.ticks_run += 1
        return await super().on_tick(counter)


def start_in_thread(server: uvicorn.Server) -> threading.Thread:
    """Run `server` on a daemon thread; return once it is serving."""
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.02)
    return thread


def test_an_idle_server_never_ticks_and_stops_when_told():
    port = free_port()
    server = CountingServer(uvicorn.Config(hello, host="127.0.0.1", port=port, log_config=None, lifespan="on",
                                           loop="uvloop"))
    thread = start_in_thread(server)
    answer = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
    time.sleep(0.6)  # uvicorn's own main loop would have ticked ~6 times by now
    assert answer.text == "hi" and server.ticks_run == 0
    # The date header is there, and is now (uvicorn's tick refreshed it once a second).
    sent = email.utils.parsedate_to_datetime(answer.headers["date"]).timestamp()
    assert abs(sent - time.time()) < 3
    assert answer.headers["server"] == "uvicorn"
    stopped = time.monotonic()
    server.should_exit = True  # from another thread, as tests/servers.py does
    thread.join(10)
    assert not thread.is_alive() and time.monotonic() - stopped < 2  # woken at once, not by a poll


def test_the_date_header_follows_the_clock_second_by_second():
    config = uvicorn.Config(hello)
    config.load()
    now = [1_000_000_000.2]
    state = DatedState(config, clock=lambda: now[0])
    first = state.default_headers
    assert first[0] == (b"date", b"Sun, 09 Sep 2001 01:46:40 GMT") and first[1:] == [(b"server", b"uvicorn")]
    now[0] += 0.5
    assert state.default_headers is first  # same second: not remade
    now[0] += 0.5
    assert state.default_headers[0] == (b"date", b"Sun, 09 Sep 2001 01:46:41 GMT")
    state.default_headers = []  # uvicorn's tick assigns them: ignored
    assert state.default_headers[0][0] == b"date"
    config = uvicorn.Config(hello, date_header=False)
    config.load()
    assert DatedState(config).default_headers == [(b"server", b"uvicorn")]


def test_max_requests_still_ends_the_server():
    """`limit_max_requests` is checked by uvicorn's tick: with it configured, the server ticks as uvicorn does."""
    port = free_port()
    server = QuietServer(uvicorn.Config(hello, host="127.0.0.1", port=port, log_config=None, lifespan="on",
                                        limit_max_requests=1, limit_max_requests_jitter=0))
    thread = start_in_thread(server)
    httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
    thread.join(10)
    assert not thread.is_alive()


def test_sigterm_stops_an_idle_service_gracefully(tmp_path):
    """run_app's process has no timer of its own: SIGTERM must still wake it, and the lifespan shutdown runs."""
    port = free_port()
    marker = tmp_path / "shut-down"
    proc, answer = start_run_app(port, f"""
        from pathlib import Path

        async def app(scope, receive, send):
            if scope["type"] == "lifespan":
                while (await receive())["type"] != "lifespan.shutdown":
                    await send({{"type": "lifespan.startup.complete"}})
                Path({str(marker)!r}).write_text("done")
                await send({{"type": "lifespan.shutdown.complete"}})
                return
            await send({{"type": "http.response.start", "status": 200, "headers": []}})
            await send({{"type": "http.response.body", "body": b"up"}})
    """)
    try:
        assert answer.text == "up"
        time.sleep(1.0)  # idle: nothing but the signal can wake it now
        sent = time.monotonic()
        proc.terminate()
        # uvicorn re-raises the signal once it has shut down (its handler restored): the process ends by SIGTERM.
        assert proc.wait(10) in (0, -15)
        assert time.monotonic() - sent < 3 and marker.read_text() == "done"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
