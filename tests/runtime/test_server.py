"""The HTTP protocol `dwcp serve` runs: uvicorn's, with a response's writes joined into one send."""

import asyncio
import json
import logging
import socket

import pytest
from fastapi.responses import StreamingResponse
from prometheus_client import CollectorRegistry

from dwcp.runtime.app import create_app
from dwcp.runtime.context import ServiceContext
from dwcp.runtime.inventory import load_inventory
from dwcp.runtime.ports import free_port
from dwcp.runtime.server import CoalescedWrites, HttpProtocol
from tests.runtime.run_app_child import start_run_app
from tests.servers import LocalServer


class FakeTransport:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.sent.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str):
        return {"peername": ("10.0.0.1", 4242)}.get(name)


class FakeLoop:
    def __init__(self) -> None:
        self.ready: list = []

    def call_soon(self, callback) -> None:
        self.ready.append(callback)

    def step(self) -> None:
        ready, self.ready = self.ready, []
        for callback in ready:
            callback()


def test_writes_in_one_step_go_out_as_one():
    transport, loop = FakeTransport(), FakeLoop()
    conn = CoalescedWrites(transport, loop)
    conn.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    conn.write(b"ok")
    assert transport.sent == [] and len(loop.ready) == 1  # one flush scheduled, nothing sent yet
    loop.step()
    assert transport.sent == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]
    conn.write(b"next")
    loop.step()
    assert transport.sent[1:] == [b"next"]
    assert conn.get_extra_info("peername") == ("10.0.0.1", 4242)  # everything else is the transport's


def test_close_sends_what_is_pending_first_and_a_closed_peer_gets_nothing():
    transport, loop = FakeTransport(), FakeLoop()
    conn = CoalescedWrites(transport, loop)
    conn.write(b"last words")
    conn.close()
    assert transport.sent == [b"last words"] and transport.closed
    loop.step()  # the flush scheduled by the write finds nothing left
    assert transport.sent == [b"last words"]

    transport, loop = FakeTransport(), FakeLoop()
    conn = CoalescedWrites(transport, loop)
    conn.write(b"too late")
    transport.closed = True  # the peer went away before the step ended
    loop.step()
    assert transport.sent == []


@pytest.fixture
def server(tmp_path):
    """A real uvicorn on a free port, with HttpProtocol, in a thread; yields the port."""
    ctx = ServiceContext(service="compression", job="compression-api", instance=0, host="127.0.0.1", port=0,
                         settings=None, inventory=load_inventory(), data_dir=tmp_path, registry=CollectorRegistry(),
                         logger=logging.getLogger("test"))
    app = create_app(ctx, title="t", health_checks={})

    async def echo(request) -> bytes:
        return b'{"got":' + str(len(await request.body(1 << 20))).encode() + b"}"

    app.fast_post("/echo", echo)

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def parts():
            for i in range(3):
                yield b"part%d;" % i
                await asyncio.sleep(0.01)

        return StreamingResponse(parts(), media_type="text/plain")

    with LocalServer(app, free_port(), http=HttpProtocol) as served:
        yield served.port


def _post(body: bytes) -> bytes:
    return b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n%s" % (
        len(body), body)


def _read_responses(sock: socket.socket, count: int) -> list[tuple[bytes, bytes]]:
    data, out = b"", []
    while len(out) < count:
        chunk = sock.recv(65536)
        assert chunk, "connection closed early"
        data += chunk
        while b"\r\n\r\n" in data:
            head, rest = data.split(b"\r\n\r\n", 1)
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            if len(rest) < length:
                break
            out.append((head, rest[:length]))
            data = rest[length:]
    return out


def test_real_connection_answers_each_request_and_pipelined_ones_in_order(server):
    with socket.create_connection(("127.0.0.1", server)) as sock:
        for size in (3, 5000):
            sock.sendall(_post(b"x" * size))
            [(head, body)] = _read_responses(sock, 1)
            assert head.startswith(b"HTTP/1.1 200 ") and b"content-type: application/json" in head
            assert body == b'{"got":%d}' % size
        sock.sendall(b"".join(_post(b"y" * n) for n in (1, 2, 3)))
        answers = _read_responses(sock, 3)
        assert [body for _, body in answers] == [b'{"got":1}', b'{"got":2}', b'{"got":3}']


def test_streaming_and_closing_responses_still_work(server):
    with socket.create_connection(("127.0.0.1", server)) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nhost: t\r\n\r\n")
        data = b""
        while not data.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            assert chunk
            data += chunk
        assert b"transfer-encoding: chunked" in data and all(b"part%d;" % i in data for i in range(3))
        sock.sendall(b"GET /health HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):  # the server closes after the answer, having sent all of it
            data += chunk
        assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"}") and b'"status":"ok"' in data


def test_guard_counts_only_the_head_of_a_read_that_also_carries_a_large_body():
    """A PUT's head and the first 256 KiB of its body often arrive in one read: only the head counts
    towards max_header_bytes; a head over the limit is still dropped."""
    import functools

    from fastapi import Request

    from dwcp.runtime.inventory import HttpLimits
    from dwcp.runtime.server import ConnectionGuard

    ctx = ServiceContext(service="compression", job="compression-api", instance=0, host="127.0.0.1", port=0,
                         settings=None, inventory=load_inventory(), data_dir=None, registry=CollectorRegistry(),
                         logger=logging.getLogger("test"))
    app = create_app(ctx, title="t")

    @app.put("/upload")
    async def upload(request: Request) -> dict:
        size = 0
        async for piece in request.stream():
            size += len(piece)
        return {"got": size}

    guard = ConnectionGuard(HttpLimits(max_header_bytes=4096))
    port = free_port()
    with LocalServer(app, port, http=functools.partial(HttpProtocol, guard=guard)):
        body = b"z" * (1 << 20)
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"PUT /upload HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            [(head, answer)] = _read_responses(sock, 1)
        assert head.startswith(b"HTTP/1.1 200 ") and answer == b'{"got":%d}' % len(body)
        assert guard.dropped["header_too_large"] == 0
        # Just over the limit, and far over it (the client still sending when the server answers: the rest is
        # read and discarded, so no reset destroys the answer).
        for n, big in enumerate((8192, 4 << 20), start=1):
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(b"GET /health HTTP/1.1\r\nhost: t\r\nx-big: " + b"a" * big + b"\r\n\r\n")
                answer = b""
                while chunk := sock.recv(4096):  # answered, then closed: the head itself is over the limit
                    answer += chunk
            head, body = answer.split(b"\r\n\r\n", 1)
            assert head.startswith(b"HTTP/1.1 431 ") and json.loads(body)["error"]["field"] == "headers"
            assert guard.dropped["header_too_large"] == n


def test_services_serve_on_uvloop(tmp_path):
    """run_app names uvloop: a service never falls back to asyncio's own loop silently (with the same load,
    asyncio's loop left the manager's /health p99 at 164-232 ms against uvloop's 77-109 ms: docs/manager.md)."""
    port = free_port()
    proc, answer = start_run_app(port, """
        import asyncio

        async def app(scope, receive, send):
            if scope["type"] == "lifespan":
                while (await receive())["type"] != "lifespan.shutdown":
                    await send({"type": "lifespan.startup.complete"})
                await send({"type": "lifespan.shutdown.complete"})
                return
            body = type(asyncio.get_running_loop()).__module__.encode()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})
    """)
    try:
        assert answer.text.startswith("uvloop"), answer.text
    finally:
        proc.terminate()
        proc.wait(30)
