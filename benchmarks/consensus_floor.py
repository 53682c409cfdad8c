"""The floor of `node_cpu_ms_per_block` with every message signed: what a block costs each node at least, by part.

Issue 12's target is <= 1.0 ms of CPU per block per node at n = 10 and ~30 tx per block. This adds up, from
measurement, the parts no node can skip in this design, each at its floor:

- protocol, in one process with no I/O (`consensus_core_cpu.py`'s cluster: the real codec and cores, each node
  its own verifier), split by exclusive time into Ed25519 signing, Ed25519 verification, the codec without its
  signatures (encode, decode, framing), and the core's own Python (`handle`), with the calls counted;
- one frame per message on the wire (`--frame-us`: CPU per frame, both ends, from `transport_frames.py`'s
  rounds; the figure is measured separately because it needs sockets), times the frames each node sends and
  receives per block in the cluster above;
- the commit: the block appended to a real `BlockStore` (SQLite, WAL, no fsync) in a temporary directory.

What it leaves out (the cluster benchmark's measured rest): HTTP ingress, client answers, the driver's
bookkeeping, metrics, timers, the commit writer's thread hand-off, fsyncs, GC.

    PYTHONPATH=src .venv/bin/python benchmarks/consensus_floor.py --frame-us 15
    PYTHONPATH=src .venv/bin/python benchmarks/consensus_floor.py --protocol pbft --blocks 300 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import consensus_core_cpu as ccc

from dwcp.consensus.core import Started, Submitted, Transaction
from dwcp.consensus.core.crypto import Ed25519Signer, Ed25519Verifier
from dwcp.consensus.pbft.state import BATCH, GOSSIP
from dwcp.consensus.storage import BlockStore, StoredBlock

clock = time.thread_time_ns


class Buckets:
    """Exclusive thread CPU time per named part: an inner part's time is not counted in the outer one."""

    def __init__(self) -> None:
        self.ns: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self._stack: list[list] = []  # [name, started, inner ns]

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            self._stack.append([name, clock(), 0])
            try:
                return fn(*args, **kwargs)
            finally:
                _, started, inner = self._stack.pop()
                spent = clock() - started
                self.ns[name] = self.ns.get(name, 0) + spent - inner
                self.calls[name] = self.calls.get(name, 0) + 1
                if self._stack:
                    self._stack[-1][2] += spent
        return timed


def protocol_parts(protocol: str, n: int, rounds: int, tx_per_block: int) -> dict:
    cluster = ccc.Cluster(protocol, n, tx_per_block)
    b = Buckets()
    sign, verify = Ed25519Signer.sign, Ed25519Verifier.verify
    Ed25519Signer.sign = b.wrap("ed25519 sign", sign)  # type: ignore[method-assign]
    Ed25519Verifier.verify = b.wrap("ed25519 verify", verify)  # type: ignore[method-assign]
    cluster.codec.seal = b.wrap("codec", cluster.codec.seal)  # type: ignore[method-assign]
    cluster.codec.open = b.wrap("codec", cluster.codec.open)  # type: ignore[method-assign]
    for core in cluster.cores.values():
        core.handle = b.wrap("core", core.handle)  # type: ignore[method-assign]
    sent = 0
    feed = cluster.feed

    def counting_feed(node, inp):
        nonlocal sent
        before = len(cluster.frames)
        feed(node, inp)
        sent += len(cluster.frames) - before
    cluster.feed = counting_feed  # type: ignore[method-assign]
    try:
        for i in cluster.cores:
            cluster.feed(i, Started())
        cluster.deliver()
        b.ns.clear()
        b.calls.clear()
        sent, h0, tx = 0, min(cluster.heights.values()), 0
        start = clock()
        for _ in range(rounds):
            for _ in range(tx_per_block):
                tx += 1
                cluster.feed(tx % n, Submitted(tx=Transaction(payload=b"tx-%d-" % tx + b"." * 40)))
            cluster.now += 0.01
            cluster.fire(GOSSIP)
            cluster.fire(BATCH)
        total = clock() - start
    finally:
        Ed25519Signer.sign, Ed25519Verifier.verify = sign, verify  # type: ignore[method-assign]
    blocks = min(cluster.heights.values()) - h0
    per = blocks * n
    parts = {k: v / 1e6 / per for k, v in b.ns.items()}
    parts["harness"] = (total - sum(b.ns.values())) / 1e6 / per
    return {"blocks": blocks, "tx_per_block": tx / max(blocks, 1), "ms_per_block_per_node": parts,
            "calls_per_block_per_node": {k: v / per for k, v in b.calls.items()},
            "frames_per_block_per_node": sent / per}


def commit_part(blocks: int, tx_per_block: int) -> float:
    """ms of CPU per block to append it to a BlockStore without fsync (what every node's writer does for a
    block no client of its own waits for)."""
    with tempfile.TemporaryDirectory(prefix="dwcp-floor-") as d:
        store = BlockStore(Path(d) / "log.db")
        items = []
        for h in range(1, blocks + 1):
            ids = tuple(os.urandom(32) for _ in range(tx_per_block))
            items.append(StoredBlock(height=h, digest=os.urandom(32), block=os.urandom(60 * tx_per_block + 200),
                                     certificate=os.urandom(7 * 80), tx_ids=ids, committed_at=time.time()))
        start = clock()
        for item in items:
            store.append([item], sync=False)
            if store.checkpoint_due:
                store.checkpoint()
        spent = clock() - start
        store.close()
    return spent / 1e6 / blocks


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", choices=["tpbft", "pbft"], default="tpbft")
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--blocks", type=int, default=150, help="submission rounds (consensus_core_cpu.py's)")
    ap.add_argument("--tx-per-block", type=int, default=30)
    ap.add_argument("--frame-us", type=float, default=15.0,
                    help="CPU per frame, both ends, from transport_frames.py --rounds (session 6: 15-19 us at 3 "
                         "frames per peer per step, 27-38 at 1)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    proto = protocol_parts(args.protocol, args.nodes, args.blocks, args.tx_per_block)
    frames = proto["frames_per_block_per_node"]
    wire = frames * args.frame_us / 1e3  # each frame sent once and received once: frame_us covers both ends
    commit = commit_part(300, round(proto["tx_per_block"]))
    parts = dict(proto["ms_per_block_per_node"])
    parts.pop("harness")
    parts["frames on the wire"] = wire
    parts["commit (SQLite, no fsync)"] = commit
    total = sum(parts.values())
    calls = proto["calls_per_block_per_node"]
    print(f"{args.protocol} n={args.nodes}: {proto['blocks']} blocks of ~{proto['tx_per_block']:.0f} tx; per block per "
          f"node: {calls.get('ed25519 sign', 0):.1f} signs, {calls.get('ed25519 verify', 0):.1f} verify calls, "
          f"{frames:.1f} frames sent (as many received)")
    for name, ms in parts.items():
        print(f"    {name:<28} {ms:6.3f} ms  {100 * ms / total:4.0f}%")
    print(f"    {'floor, all of the above':<28} {total:6.3f} ms  (target <= {ccc.TARGET_MS_PER_BLOCK} ms: "
          f"{total / ccc.TARGET_MS_PER_BLOCK:.2f}x)")
    if args.json:
        args.json.write_text(json.dumps({"protocol": args.protocol, "nodes": args.nodes, **proto,
                                         "frame_us": args.frame_us, "parts_ms": parts, "floor_ms": total}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
