"""The machine's bound for the Narwhal data plane, stage by stage: what 300,000 tx/s of 512 B costs here.

Each stage a worker (or its client) does per byte is measured alone on this VM, as process CPU time
(user + system, both ends of a connection), over 500 KB batches as the cluster moves them:

- loopback TCP: one process `sendall`s 500 KB blocks, another `recv_into`s a preallocated buffer
  (the client's send and the worker's ingress read, without asyncio);
- TLS 1.3 with the worker links' own contexts (runtime/peerauth: pinned Ed25519 certificates):
  the crypto floor (two `SSLObject`s over memory BIOs, encrypt + decrypt in one process), and a real
  link between two processes through asyncio's TLS transport, with the standard loop and with uvloop
  (sender writes 500 KB frames, receiver reads into a preallocated buffer, as dataplane.py does), and
  over blocking `SSLSocket`s (no transport: what a link thread would cost);
- the candidate authenticated plain link (docs/security.md, "Worker links"): plain TCP through uvloop's
  transport, each 500 KB frame carrying a 16-byte keyed BLAKE3 tag, either over (sequence number, the
  frame's digest), the digest being the one the worker computes anyway (counted under hashing), or over
  (sequence number, the whole frame) at both ends;
- the worker's `batch_digest` (BLAKE3-256), SHA-256 and BLAKE2b-256 (what it used before) over 500 KB;
- the transaction scan (`worker.scan` over a batch of 512 B transactions);
- the batch store as the worker writes it (`BatchStore.put`, page cache), and the same with an
  `fdatasync` per batch, and `dd conv=fdatasync` for the disk itself.

Then the arithmetic for N nodes (default 4) at R tx/s (default 300,000) of S bytes: every transaction
is sent by a client and read by its worker once, hashed and stored by all N workers, and crosses
N - 1 TLS links; the sum is the worker-side CPU per transaction, and R times it the cores needed,
beside the cores this machine has. `--json` writes every figure.

    .venv/bin/python benchmarks/bullshark_bound.py --json bound.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import re
import resource
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from blake3 import blake3

from dwcp.consensus.bullshark.worker import TX_LEN, batch_digest, scan
from dwcp.consensus.core.crypto import generate_private_key
from dwcp.consensus.transport.batchstore import BatchStore
from dwcp.runtime.peerauth import PeerAuth, self_signed_certificate

BATCH = 500_000
CHUNK = 256 * 1024  # receive buffer, as asyncio's read size


def _child_cpu(pid: int) -> float:
    _, status, usage = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"receiver process {pid} failed ({status})")
    return usage.ru_utime + usage.ru_stime


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # microsecond resolution (os.times ticks at 10 ms)
    return usage.ru_utime + usage.ru_stime


def _receive_all(conn, total: int) -> bool:
    """Read `total` bytes into one preallocated buffer (socket or SSLSocket): True when all arrived."""
    buf, got = memoryview(bytearray(CHUNK)), 0
    while got < total:
        n = conn.recv_into(buf)
        if not n:
            break
        got += n
    return got >= total


def _pair(total: int, receive: Callable[[socket.socket], object], send: Callable[[int], float]) -> dict:
    """A receiver process (`receive(listening socket)`, falsy or raising = failed) and this process sending
    (`send(port)` -> its CPU seconds): CPU per byte of each end, from rusage, and the wall rate."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    pid = os.fork()
    if pid == 0:
        try:
            ok = receive(server) is not False
        except BaseException:  # noqa: BLE001 - the child reports failure by its exit status
            ok = False
        os._exit(0 if ok else 1)
    server.close()
    wall = time.perf_counter()
    send_cpu = send(port)
    recv_cpu = _child_cpu(pid)
    wall = time.perf_counter() - wall
    return {"bytes": total, "send_ns_per_byte": 1e9 * send_cpu / total, "recv_ns_per_byte": 1e9 * recv_cpu / total,
            "ns_per_byte": 1e9 * (send_cpu + recv_cpu) / total, "wall_mb_per_s": total / wall / 1e6}


def _send_all(sock, total: int) -> float:
    """`sendall` 500 KB blocks until `total` bytes went; the CPU seconds it took. The caller closes `sock`
    after the receiver is done: closing a TLS socket with the server's unread session tickets resets it."""
    block = memoryview(os.urandom(BATCH))
    started, sent = _cpu(), 0
    while sent < total:
        sock.sendall(block)
        sent += len(block)
    return _cpu() - started


def loopback_tcp(total: int) -> dict:
    """Plain TCP between two processes: sender and receiver CPU per byte."""
    with contextlib.ExitStack() as open_socks:
        return _pair(total, lambda server: _receive_all(server.accept()[0], total),
                     lambda port: _send_all(open_socks.enter_context(socket.create_connection(("127.0.0.1", port))),
                                            total))


def _auths() -> tuple[PeerAuth, PeerAuth]:
    keys = {i: generate_private_key() for i in range(2)}
    certs = {i: self_signed_certificate(k, f"node-{i}") for i, k in keys.items()}
    return tuple(PeerAuth(me=i, private_key=keys[i], certificate=certs[i], peers=certs, label="bound/1")
                 for i in range(2))  # type: ignore[return-value]


def tls_memory(total: int) -> dict:
    """TLS 1.3 encrypt + decrypt in one process over memory BIOs: OpenSSL's work plus the BIO copies."""
    server_auth, client_auth = _auths()
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_auth.client_context().wrap_bio(c_in, c_out, server_side=False)
    server = server_auth.server_context().wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):  # handshake
        for obj in (client, server):
            with contextlib.suppress(ssl.SSLWantReadError):
                obj.do_handshake()
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    cipher = client.cipher()
    block, buf = os.urandom(BATCH), bytearray(CHUNK)
    started, done = _cpu(), 0
    while done < total:
        client.write(block)
        s_in.write(c_out.read())
        got = 0
        while got < len(block):
            got += server.read(CHUNK, buf)
        done += len(block)
    cpu = _cpu() - started
    return {"bytes": total, "cipher": cipher[0] if cipher else None, "ns_per_byte": 1e9 * cpu / total}


class _Sink(asyncio.BufferedProtocol):
    def __init__(self, total: int, done: asyncio.Future) -> None:
        self.total, self.done, self.got = total, done, 0
        self.buf = memoryview(bytearray(CHUNK))

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buf

    def buffer_updated(self, nbytes: int) -> None:
        self.got += nbytes
        if self.got >= self.total and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def _tls_receiver(server: socket.socket, auth: PeerAuth, total: int) -> int:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    srv = await loop.create_server(lambda: _Sink(total, done), sock=server, ssl=auth.server_context(),
                                   ssl_handshake_timeout=5.0)
    await done
    srv.close()
    return 0


class _Source(asyncio.Protocol):
    def __init__(self) -> None:
        self.writable = asyncio.Event()
        self.writable.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()


async def _drained_cpu(transport: asyncio.Transport, started: float) -> float:
    """Wait until the transport has written everything, close it; the CPU spent since `started`."""
    while transport.get_write_buffer_size():
        await asyncio.sleep(0.001)
    cpu = _cpu() - started
    transport.close()
    return cpu


async def _tls_sender(port: int, auth: PeerAuth, total: int) -> float:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_connection(_Source, "127.0.0.1", port, ssl=auth.client_context(),
                                                    server_hostname=None)
    transport.set_write_buffer_limits(high=8 * 1024 * 1024)  # as workerlinks.WRITE_HIGH_WATER
    block = os.urandom(BATCH)
    started, sent = _cpu(), 0
    while sent < total:
        transport.write(block)
        sent += len(block)
        await proto.writable.wait()
    return await _drained_cpu(transport, started)


def _run(coro_fn, use_uvloop: bool):
    if use_uvloop:
        import uvloop

        return uvloop.run(coro_fn())
    return asyncio.run(coro_fn())


def tls_link(total: int, use_uvloop: bool) -> dict:
    """A TLS 1.3 worker link between two processes through an asyncio transport (stdlib loop or uvloop)."""
    server_auth, client_auth = _auths()
    return _pair(total, lambda server: _run(lambda: _tls_receiver(server, server_auth, total), use_uvloop),
                 lambda port: _run(lambda: _tls_sender(port, client_auth, total), use_uvloop))


TAG = 16  # bytes of keyed BLAKE3 per frame (workerlinks.TAG_SIZE)


def _tag(key: bytes, seq: int, data) -> bytes:
    mac = blake3(seq.to_bytes(8, "big"), key=key)
    mac.update(data)
    return mac.digest(TAG)


class _MacSink(asyncio.BufferedProtocol):
    """Reads frames of BATCH + TAG bytes into one reused buffer and checks each one's tag: over (seq, the
    frame's digest) given by `digest_of` (the worker hashes every batch anyway), or over (seq, the frame)."""

    def __init__(self, total: int, done: asyncio.Future, key: bytes, whole: bool, digests: list[bytes]) -> None:
        self.total, self.done, self.key, self.whole, self.digests = total, done, key, whole, digests
        self.frame = bytearray(BATCH + TAG)
        self.view = memoryview(self.frame)
        self.n = self.got = self.seq = 0

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view[self.n:]

    def buffer_updated(self, nbytes: int) -> None:
        self.n += nbytes
        if self.n < len(self.frame):
            return
        body, tag = self.view[:BATCH], bytes(self.view[BATCH:])
        signed = body if self.whole else self.digests[self.seq % len(self.digests)]
        if _tag(self.key, self.seq, signed) != tag:
            raise RuntimeError("tag mismatch")
        self.seq += 1
        self.got += BATCH
        self.n = 0
        if self.got >= self.total and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc) -> None:
        if not self.done.done():
            self.done.set_result(None)


def _mac_blocks() -> tuple[list[bytes], list[bytes]]:
    blocks = [os.urandom(BATCH) for _ in range(4)]
    return blocks, [batch_digest(b) for b in blocks]


async def _mac_receiver(server: socket.socket, total: int, key: bytes, whole: bool) -> int:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    _, digests = _MAC_BLOCKS
    srv = await loop.create_server(lambda: _MacSink(total, done, key, whole, digests), sock=server)
    await done
    srv.close()
    return 0


async def _mac_sender(port: int, total: int, key: bytes, whole: bool) -> float:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_connection(_Source, "127.0.0.1", port)
    transport.set_write_buffer_limits(high=2 * 1024 * 1024)  # as workerlinks.WRITE_HIGH_WATER
    blocks, digests = _MAC_BLOCKS
    started, sent, seq = _cpu(), 0, 0
    while sent < total:
        block = blocks[seq % len(blocks)]
        tag = _tag(key, seq, block if whole else digests[seq % len(digests)])
        transport.writelines([block, tag])
        sent += len(block)
        seq += 1
        await proto.writable.wait()
    return await _drained_cpu(transport, started)


_MAC_BLOCKS = _mac_blocks()  # made before the fork: both ends know the blocks' digests without timing them


def mac_link(total: int, whole: bool) -> dict:
    """The candidate worker link: plain TCP through uvloop, a keyed BLAKE3 tag per 500 KB frame (over the
    sequence number and the frame's digest, or the whole frame), checked by the receiver."""
    key = os.urandom(32)
    return _pair(total, lambda server: _run(lambda: _mac_receiver(server, total, key, whole), True),
                 lambda port: _run(lambda: _mac_sender(port, total, key, whole), True))


def tls_blocking(total: int) -> dict:
    """A TLS 1.3 link between two processes over blocking `SSLSocket`s (`sendall` of 500 KB, `recv_into` a
    preallocated buffer): no event-loop transport, so no memory-BIO copies (what a link thread would cost)."""
    server_auth, client_auth = _auths()

    def receive(server: socket.socket) -> bool:
        return _receive_all(server_auth.server_context().wrap_socket(server.accept()[0], server_side=True), total)

    with contextlib.ExitStack() as open_socks:
        def send(port: int) -> float:
            conn = socket.create_connection(("127.0.0.1", port))
            return _send_all(open_socks.enter_context(client_auth.client_context().wrap_socket(conn)), total)

        return _pair(total, receive, send)


def hashing(rounds: int) -> dict:
    data = memoryview(os.urandom(BATCH))
    out = {}
    for name, fn in (("batch_digest", batch_digest), ("blake3", lambda d: blake3(d).digest()),
                     ("sha256", lambda d: hashlib.sha256(d).digest()),
                     ("blake2b_256", lambda d: hashlib.blake2b(d, digest_size=32).digest())):
        started = _cpu()
        for _ in range(rounds):
            fn(data)
        out[name] = 1e9 * (_cpu() - started) / (rounds * BATCH)
    return out


def tx_scan(tx_size: int, rounds: int) -> dict:
    one = TX_LEN.pack(tx_size) + b"\1" * tx_size
    batch = bytearray(one * (BATCH // len(one)))
    started = _cpu()
    for _ in range(rounds):
        _, count = scan(batch, 0, len(batch), 128 * 1024)
    cpu = _cpu() - started
    return {"tx_size": tx_size, "txs_per_batch": count, "us_per_tx": 1e6 * cpu / (rounds * count)}


def store(total: int, directory: Path) -> dict:
    out = {}
    data = memoryview(os.urandom(BATCH))
    for mode in ("page_cache", "fdatasync"):
        path = directory / f"bound-{mode}.dat"
        st = BatchStore(path)
        started, wall, written = _cpu(), time.perf_counter(), 0
        i = 0
        while written < total:
            st.put(i.to_bytes(32, "big"), data, own=False)  # distinct keys: the digest is not what is timed
            if mode == "fdatasync":
                os.fdatasync(st.fd)
            written += BATCH
            i += 1
        cpu, wall = _cpu() - started, time.perf_counter() - wall
        os.close(st.fd)
        path.unlink()
        out[mode] = {"bytes": total, "ns_per_byte": 1e9 * cpu / total, "wall_mb_per_s": total / wall / 1e6}
    path = directory / "bound-dd.dat"
    proc = subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=500k", f"count={max(1, total // BATCH)}",
                           "conv=fdatasync"], capture_output=True, text=True, timeout=300)
    path.unlink(missing_ok=True)
    m = re.search(r"([\d.,]+) ([kMG]?B)/s", proc.stderr)
    scale = {"B": 1e-6, "kB": 1e-3, "MB": 1.0, "GB": 1e3}
    out["dd_fdatasync_mb_per_s"] = float(m.group(1).replace(",", ".")) * scale[m.group(2)] if m else None
    return out


def _median(runs: list) -> object:
    """Field by field median of repeated measurements (the VM is shared: one run can catch a neighbour's burst)."""
    first = runs[0]
    if isinstance(first, dict):
        return {k: _median([r[k] for r in runs]) for k in first}
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        return statistics.median(runs)
    return first


def bound(m: dict, nodes: int, rate: float, tx_size: int, cores: int, tls_key: str) -> dict:
    """Worker-side CPU per transaction, summed over the cluster, and what `rate` needs."""
    links = nodes - 1
    per_tx_ns = {
        "client_send": m["tcp"]["send_ns_per_byte"] * tx_size,
        "worker_ingress_read": m["tcp"]["recv_ns_per_byte"] * tx_size,
        "scan": m["scan"]["us_per_tx"] * 1000,
        "tls_links": m[tls_key]["ns_per_byte"] * tx_size * links,
        "hash": m["hash"]["batch_digest"] * tx_size * nodes,
        "store": m["store"]["page_cache"]["ns_per_byte"] * tx_size * nodes,
    }
    total_ns = sum(per_tx_ns.values())
    disk = m["store"]["dd_fdatasync_mb_per_s"]
    return {
        "nodes": nodes, "rate": rate, "tx_size": tx_size, "tls": tls_key,
        "client_mb_per_s": rate * tx_size / 1e6, "tls_mb_per_s": rate * tx_size * links / 1e6,
        "stored_mb_per_s": rate * tx_size * nodes / 1e6,
        "per_tx_ns": {k: round(v) for k, v in per_tx_ns.items()}, "per_tx_us": round(total_ns / 1000, 2),
        "cores_needed": round(rate * total_ns / 1e9, 2), "cores_here": cores,
        "max_tx_per_s_on_all_cores": round(cores * 1e9 / total_ns),
        "durable_max_tx_per_s": round(disk * 1e6 / (tx_size * nodes)) if disk else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--megabytes", type=int, default=200, help="bytes moved per stage (MB)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per stage; the median is kept")
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--rate", type=float, default=300_000)
    ap.add_argument("--tx-size", type=int, default=512)
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="where the store stages write")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--stages", help="comma-separated stage names to run (default: all; the bound needs all)")
    args = ap.parse_args()
    total = args.megabytes * 1_000_000 // BATCH * BATCH
    m: dict = {"load_average": os.getloadavg()}
    stages = [
        ("tcp", lambda: loopback_tcp(total)),
        ("tls_memory", lambda: tls_memory(total // 2)),
        ("tls_asyncio", lambda: tls_link(total // 2, use_uvloop=False)),
        ("tls_uvloop", lambda: tls_link(total // 2, use_uvloop=True)),
        ("tls_blocking", lambda: tls_blocking(total // 2)),
        ("mac_digest_uvloop", lambda: mac_link(total // 2, whole=False)),
        ("mac_frame_uvloop", lambda: mac_link(total // 2, whole=True)),
        ("hash", lambda: hashing(200)),
        ("scan", lambda: tx_scan(args.tx_size, 20)),
        ("store", lambda: store(total, args.dir)),
    ]
    if args.stages:
        wanted = set(args.stages.split(","))
        stages = [(name, fn) for name, fn in stages if name in wanted]
    for name, fn in stages:
        runs = [fn() for _ in range(args.repeat)]
        m[name] = _median(runs)
        print(f"{name:12s} " + json.dumps(m[name], default=lambda x: round(x, 3)), flush=True)
    if args.stages:
        if args.json:
            args.json.write_text(json.dumps(m, indent=2, default=lambda x: round(x, 4)) + "\n")
        return
    m["bound"] = {key: bound(m, args.nodes, args.rate, args.tx_size, os.cpu_count() or 1, key)
                  for key in ("tls_asyncio", "tls_uvloop", "tls_blocking", "tls_memory", "mac_digest_uvloop",
                               "mac_frame_uvloop")}
    for key, b in m["bound"].items():
        print(f"bound with {key}: {b['per_tx_us']} us of CPU per tx ({b['per_tx_ns']} ns); {args.rate:,.0f} tx/s "
              f"needs {b['cores_needed']} cores, this machine has {b['cores_here']}: at most "
              f"{b['max_tx_per_s_on_all_cores']:,} tx/s with every core on the data plane; "
              f"durable (fdatasync) storage of all {args.nodes} copies at most {b['durable_max_tx_per_s']:,} tx/s",
              flush=True)
    saved = {key: round((m["bound"]["tls_uvloop"]["per_tx_us"] - m["bound"][key]["per_tx_us"]), 2)
             for key in ("mac_digest_uvloop", "mac_frame_uvloop")}
    m["saved_us_per_tx_against_tls_uvloop"] = saved
    print(f"candidate links against the TLS link (uvloop), us of CPU per tx saved at n = {args.nodes}: {saved}")
    if args.json:
        args.json.write_text(json.dumps(m, indent=2, default=lambda x: round(x, 4)) + "\n")


if __name__ == "__main__":
    sys.exit(main())
