"""Closed-loop GET /health on one keep-alive connection, from its own process: client-side latency.

A probe thread inside a benchmark shares that process's GIL and CPU with the benchmark's own work, so
its figures mix the client's scheduling into the server's. This probe is a process of its own, with a
raw socket (no HTTP library on the timed path), and when run as root it raises its own priority
(`--nice -10`), so what it measures is the server: the kernel's loopback, the service's event loop and
its /health answer.

    .venv/bin/python benchmarks/health_probe.py --port 8080 --seconds 30      # e.g. during `dwcp up`
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import time


def get_health(sock: socket.socket, request: bytes) -> int:
    """Send one GET /health and read its whole answer; returns the status code."""
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection mid-answer")
        body += chunk
    return int(head.split(b" ", 2)[1])


def summary(latencies: list[float], errors: int) -> dict:
    ordered = sorted(latencies)
    at = (lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3, 3)) if ordered else None
    return {"samples": len(ordered), "errors": errors, "p50_ms": at(0.5) if at else None,
            "p99_ms": at(0.99) if at else None, "max_ms": round(ordered[-1] * 1e3, 3) if ordered else None,
            "share_within_1ms": round(sum(1 for x in ordered if x <= 0.001) / max(len(ordered), 1), 4)}


def probe(host: str, port: int, seconds: float, interval: float) -> dict:
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    request = f"GET /health HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    latencies: list[float] = []
    errors = 0
    sock = None
    deadline = time.monotonic() + seconds
    while not stop[0] and time.monotonic() < deadline:
        try:
            if sock is None:
                sock = socket.create_connection((host, port), timeout=5)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            t0 = time.perf_counter()
            get_health(sock, request)
            latencies.append(time.perf_counter() - t0)
        except OSError:
            errors += 1
            if sock is not None:
                sock.close()
            sock = None
        time.sleep(interval)
    return summary(latencies, errors)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--seconds", type=float, default=30.0, help="at most this long (SIGTERM ends it sooner)")
    ap.add_argument("--interval", type=float, default=0.005, help="pause between requests")
    ap.add_argument("--nice", type=int, default=-10, help="priority change for this process (negative: root)")
    args = ap.parse_args()
    try:
        os.nice(args.nice)
        niced = args.nice
    except OSError:
        niced = 0
    result = probe(args.host, args.port, args.seconds, args.interval)
    print(json.dumps({**result, "nice": niced}), flush=True)


if __name__ == "__main__":
    main()
