"""TLS receive cost on one loopback connection: OpenSSL's default reads vs read-ahead.

OpenSSL reads each TLS record with two `read` calls (its 5-byte header, then its body): two syscalls per 16 KiB
on a manager's receiving streams. Python's `ssl` cannot turn on OpenSSL's read-ahead (one `read` fills a larger
buffer with many records); this benchmark does, through ctypes on the context's `SSL_CTX` (the first field of
CPython's PySSLContext, checked against the options Python reads through its own pointer), to measure what it
would save. Session 6 measured it and did not ship it: the reads per record fell from 2.0 to ~0.2, the receiving
thread's CPU per GiB did not change (docs/manager.md).

A thread sends `--mib` MiB over mutual TLS 1.3 (the manager's peer authentication, `runtime.peerauth`) in 1 MiB
`sendall`s; the receiving thread reads it with `recv_into` into one 1 MiB buffer. Printed per round, default and
read-ahead alternating: the receiving thread's CPU seconds per GiB (`time.thread_time`), its `read` syscalls per
16 KiB TLS record (`/proc/self/task/<tid>/io` syscr) and MB/s. Run it under /work/notes/bench on a shared host.

    PYTHONPATH=src .venv/bin/python benchmarks/manager_tls_read.py --mib 1024 --rounds 3 --out tls_read.json
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import socket
import ssl
import statistics
import threading
import time
from pathlib import Path

from dwcp.manager import keys
from dwcp.runtime.peerauth import PeerAuth

READ_AHEAD_BYTES = 256 * 1024
SSL_CTRL_SET_READ_AHEAD = 41


def enable_read_ahead(ctx: ssl.SSLContext, nbytes: int) -> bool:
    """OpenSSL read-ahead with an `nbytes` buffer for connections `ctx` makes; False where the `SSL_CTX` cannot be
    found for sure (ssl not a shared OpenSSL 3 here, or the pointer's options disagree with Python's)."""
    with open("/proc/self/maps") as maps:
        path = next((line.split()[-1] for line in maps if "/libssl.so" in line), None)
    if path is None:
        return False
    lib = ctypes.CDLL(path)  # the mapped library itself, not a second copy
    if not hasattr(lib, "SSL_CTX_get_options"):
        return False
    lib.SSL_CTX_get_options.argtypes, lib.SSL_CTX_get_options.restype = [ctypes.c_void_p], ctypes.c_uint64
    lib.SSL_CTX_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    lib.SSL_CTX_set_default_read_buffer_len.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    ptr = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    if not ptr or lib.SSL_CTX_get_options(ptr) != int(ctx.options):
        return False
    lib.SSL_CTX_set_default_read_buffer_len(ptr, nbytes)
    lib.SSL_CTX_ctrl(ptr, SSL_CTRL_SET_READ_AHEAD, 1, None)
    return True


def read_syscalls() -> int:
    with open(f"/proc/self/task/{threading.get_native_id()}/io") as f:
        return int(next(line for line in f if line.startswith("syscr:")).split()[1])


def one_run(total: int, read_ahead: int) -> dict:
    privs, certs = keys.generate(2)
    auths = [PeerAuth(me=i, private_key=privs[i], certificate=certs[i], peers=certs, label="bench") for i in (0, 1)]
    server_ctx = auths[1].server_context()
    if read_ahead and not enable_read_ahead(server_ctx, read_ahead):
        raise SystemExit("read-ahead could not be turned on here (see enable_read_ahead)")
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def send() -> None:
        tls = auths[0].client_context().wrap_socket(socket.create_connection(listener.getsockname()))
        block = os.urandom(1 << 20)
        for _ in range(total >> 20):
            tls.sendall(block)
        done.wait(60)  # closing with the peer's tickets unread would reset the connection under the receiver
        tls.close()

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    tls = server_ctx.wrap_socket(listener.accept()[0], server_side=True)
    view = memoryview(bytearray(1 << 20))
    reads0, cpu0, wall0, got = read_syscalls(), time.thread_time(), time.perf_counter(), 0
    while got < total:
        n = tls.recv_into(view, len(view))
        if not n:
            break
        got += n
    cpu, wall, reads = time.thread_time() - cpu0, time.perf_counter() - wall0, read_syscalls() - reads0
    done.set()
    sender.join(60)
    tls.close()
    listener.close()
    gib = got / (1 << 30)
    return {"read_ahead_bytes": read_ahead, "bytes": got, "cpu_seconds_per_gib": round(cpu / gib, 4),
            "reads_per_record": round(reads / (got / 16384), 3), "mb_per_second": round(got / wall / 1e6, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--read-ahead", type=int, default=READ_AHEAD_BYTES, help="OpenSSL read buffer with read-ahead")
    ap.add_argument("--out", type=Path, default=Path("manager_tls_read.json"))
    args = ap.parse_args()
    runs = []
    for _ in range(args.rounds):
        for read_ahead in (0, args.read_ahead):
            r = one_run(args.mib << 20, read_ahead)
            runs.append(r)
            print(f"{'read-ahead' if read_ahead else 'default':>10}: {r['cpu_seconds_per_gib']:.3f} CPU s/GiB "
                  f"(receiving thread), {r['reads_per_record']:.2f} reads per TLS record, {r['mb_per_second']} MB/s",
                  flush=True)
    summary = {name: statistics.median(r["cpu_seconds_per_gib"] for r in runs if bool(r["read_ahead_bytes"]) == on)
               for name, on in (("default", False), ("read_ahead", True))}
    print(f"median CPU s/GiB: default {summary['default']:.3f}, read-ahead {summary['read_ahead']:.3f}; "
          f"load average {os.getloadavg()[0]:.1f}")
    args.out.write_text(json.dumps({"runs": runs, "median_cpu_seconds_per_gib": summary}, indent=2))


if __name__ == "__main__":
    main()
