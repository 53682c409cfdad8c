"""What this host can do at most for one loopback transfer: the floor under benchmarks/manager_transfer.py's 1 GiB.

A manager's loopback transfer of incompressible data does, per byte: the sender reads it from the page cache,
checksums it (xxh3-128) and encrypts it (TLS 1.3, Python's `ssl`: no kTLS, one `SSL_write` per call); the kernel
copies it through loopback; the receiver decrypts it (`SSL_read`, one per 16 KiB record), checksums it (xxh3-128),
hashes it once more for the whole object (sha256) and makes it durable (O_DIRECT writes, fdatasync). Each step
alone, measured here in one run on the same host:

    tcp        plain TCP over loopback, sender in its own process, 1 MiB sendall / recv_into: the kernel's copy
    tls        the same over mutual TLS 1.3 with the manager's own contexts (runtime.peerauth, Ed25519 pins)
    sha256     hashlib, 1 MiB updates, one thread        xxh3       xxh3-128 of 1 MiB buffers, one thread
    copy       a 1 MiB bytearray slice copy in Python    disk       16 MiB O_DIRECT writes + fdatasync in --dir

Each figure: MB/s of wall clock and CPU seconds per GiB (the TLS/TCP ones per side). The floor it prints: the CPU
per GiB the manager's steps need at the least (tls both sides + xxh3 twice + sha256), what that allows on this
host's CPUs if they were all free and perfectly overlapped, and the disk's durable-write rate, beside the
manager's own figure when given (`--manager-json`, the JSON manager_transfer.py wrote). Run it under
/work/notes/bench (it is a measured run).

    PYTHONPATH=src .venv/bin/python benchmarks/manager_floor.py --mib 1024 --dir /tmp --out floor.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import mmap
import multiprocessing
import os
import socket
import tempfile
import time
from pathlib import Path

import xxhash

from dwcp.manager import keys
from dwcp.runtime.peerauth import PeerAuth

MIB = 1 << 20
GIB = 1 << 30


def _auths() -> list[PeerAuth]:
    privs, certs = keys.generate(2)
    return [PeerAuth(me=i, private_key=privs[i], certificate=certs[i], peers=certs, label="floor") for i in (0, 1)]


def _send(addr: tuple[str, int], total: int, tls: bool, auth: PeerAuth | None, out) -> None:
    sock = socket.create_connection(addr)
    if tls:
        sock = auth.client_context().wrap_socket(sock)
    block = os.urandom(MIB)
    out.send("ready")
    out.recv()  # go
    c0 = time.process_time()
    for _ in range(total // MIB):
        sock.sendall(block)
    out.send(time.process_time() - c0)
    out.recv()  # the receiver has read it all: closing earlier would reset the connection under it
    sock.close()


def stream(total: int, tls: bool) -> dict:
    """`total` bytes from a child process to this one over loopback: MB/s and each side's CPU s/GiB."""
    auths = _auths() if tls else [None, None]
    listener = socket.create_server(("127.0.0.1", 0))
    ours, theirs = multiprocessing.Pipe()
    child = multiprocessing.get_context("fork").Process(
        target=_send, args=(listener.getsockname(), total, tls, auths[0], theirs), daemon=True)
    child.start()
    sock = listener.accept()[0]
    if tls:
        sock = auths[1].server_context().wrap_socket(sock, server_side=True)
    ours.recv()
    view = memoryview(bytearray(MIB))
    c0, w0, got = time.process_time(), time.perf_counter(), 0
    ours.send("go")
    while got < total:
        n = sock.recv_into(view, len(view))
        if not n:
            break
        got += n
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    sender_cpu = ours.recv()
    ours.send("done")
    child.join(30)
    sock.close()
    listener.close()
    gib = got / GIB
    return {"bytes": got, "mb_per_second": round(got / wall / 1e6, 1),
            "sender_cpu_seconds_per_gib": round(sender_cpu / gib, 3),
            "receiver_cpu_seconds_per_gib": round(cpu / gib, 3)}


def per_buffer(total: int, fn) -> dict:
    """`fn(buffer)` over `total` bytes of 1 MiB random buffers (16 of them, reused): MB/s and CPU s/GiB."""
    buffers = [os.urandom(MIB) for _ in range(16)]
    c0, w0 = time.thread_time(), time.perf_counter()
    for i in range(total // MIB):
        fn(buffers[i % 16])
    wall, cpu = time.perf_counter() - w0, time.thread_time() - c0
    return {"mb_per_second": round(total / wall / 1e6, 1), "cpu_seconds_per_gib": round(cpu / (total / GIB), 3)}


def disk(directory: Path, total: int, chunk: int = 16 * MIB) -> dict:
    """O_DIRECT writes of `chunk` bytes, each followed by fdatasync (the receiver's durable write): MB/s."""
    buf = mmap.mmap(-1, chunk)  # page-aligned, as O_DIRECT needs
    buf.write(os.urandom(chunk))
    fd, path = tempfile.mkstemp(dir=directory, prefix="floor-")
    os.close(fd)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_DIRECT)
        c0, w0 = time.process_time(), time.perf_counter()
        for i in range(total // chunk):
            os.pwrite(fd, buf, i * chunk)
            os.fdatasync(fd)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        os.close(fd)
    finally:
        os.unlink(path)
    return {"bytes": total, "mb_per_second": round(total / wall / 1e6, 1),
            "cpu_seconds_per_gib": round(cpu / (total / GIB), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, default=1024, help="MiB per stream and hash measurement")
    ap.add_argument("--disk-mib", type=int, default=256, help="MiB written durably (O_DIRECT + fdatasync)")
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="where the disk test writes")
    ap.add_argument("--manager-json", type=Path, default=None,
                    help="manager_transfer.py's JSON from the same bench call: its loopback figure is set beside")
    ap.add_argument("--out", type=Path, default=Path("manager_floor.json"))
    args = ap.parse_args()
    total = args.mib * MIB
    load0 = os.getloadavg()[0]
    r: dict = {"host_cpus": os.cpu_count(), "mib": args.mib}
    r["tcp"] = stream(total, tls=False)
    r["tls"] = stream(total, tls=True)
    r["sha256"] = per_buffer(total, lambda b: hashlib.sha256(b).digest())
    r["xxh3"] = per_buffer(total, xxhash.xxh3_128_digest)
    target = bytearray(MIB)

    def copy(b: bytes) -> None:
        target[:] = b

    r["copy"] = per_buffer(total, copy)
    r["disk"] = disk(args.dir, args.disk_mib * MIB)
    cpu_floor = (r["tls"]["sender_cpu_seconds_per_gib"] + r["tls"]["receiver_cpu_seconds_per_gib"]
                 + 2 * r["xxh3"]["cpu_seconds_per_gib"] + r["sha256"]["cpu_seconds_per_gib"])
    cpus = os.cpu_count() or 1
    r["floor"] = {
        "cpu_seconds_per_gib": round(cpu_floor, 3),
        "mb_per_second_if_all_cpus_free": round(GIB / (cpu_floor / cpus) / 1e6, 1),
        # one TLS stream's receiver is one thread: its decrypt + xxh3 + sha256 bound a single stream
        "one_stream_receiver_mb_per_second": round(GIB / (r["tls"]["receiver_cpu_seconds_per_gib"]
                                                          + r["xxh3"]["cpu_seconds_per_gib"]
                                                          + r["sha256"]["cpu_seconds_per_gib"]) / 1e6, 1),
        "disk_durable_mb_per_second": r["disk"]["mb_per_second"]}
    if args.manager_json and args.manager_json.exists():
        lo = json.loads(args.manager_json.read_text()).get("loopback")
        if lo:
            r["manager"] = {"mb_per_second": round(lo["goodput_bytes_per_second"] / 1e6, 1),
                            "cpu_seconds_per_gib": lo["cpu_seconds_per_gib"],
                            "cpu_seconds_per_gib_by_side": lo["cpu_seconds_per_gib_by_side"],
                            "data_on": lo.get("data_on"), "bytes": lo["bytes"]}
    r["load_average"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    for name in ("tcp", "tls"):
        x = r[name]
        print(f"{name:>6} loopback: {x['mb_per_second']:8.1f} MB/s, CPU s/GiB sender {x['sender_cpu_seconds_per_gib']}"
              f", receiver {x['receiver_cpu_seconds_per_gib']}")
    for name in ("sha256", "xxh3", "copy", "disk"):
        x = r[name]
        print(f"{name:>6}: {x['mb_per_second']:8.1f} MB/s, {x['cpu_seconds_per_gib']} CPU s/GiB")
    f = r["floor"]
    print(f"floor: {f['cpu_seconds_per_gib']} CPU s/GiB (TLS both sides + xxh3 x2 + sha256) -> at most "
          f"{f['mb_per_second_if_all_cpus_free']} MB/s on {cpus} free CPUs; one stream's receiving thread at most "
          f"{f['one_stream_receiver_mb_per_second']} MB/s; durable writes {f['disk_durable_mb_per_second']} MB/s")
    if "manager" in r:
        m = r["manager"]
        print(f"manager loopback ({m['data_on']}): {m['mb_per_second']} MB/s at {m['cpu_seconds_per_gib']} CPU s/GiB "
              f"({m['cpu_seconds_per_gib_by_side']})")
    print(f"load average {r['load_average'][0]} -> {r['load_average'][1]}")
    args.out.write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
