"""ProBFT's and PBFT's core + codec CPU per block on 7 in-process nodes (no sockets, storage or HTTP).

Seven real cores of each protocol (Ed25519 keys, ProBFT's RFC 9381 VRF) exchange real sealed frames in
FIFO order (tests' LocalNet), each receiver opening them with its own verifier (and signature cache), as
one node process does, and with its core's lazy types unchecked, as the driver does. Blocks of `--txs`
transactions, one in flight; prints process CPU per block per node. What the cluster benchmark's
`node_cpu_ms_per_block` holds besides this is the transport, storage, HTTP and event loop
(docs/probft.md, "Real 7-node cluster"). A/B: run it with PYTHONPATH pointing at each tree.

    PYTHONPATH=src .venv/bin/python benchmarks/probft_core_cpu.py --blocks 100 --txs 20

Measured 2026-12-05 05:55 UTC (load ~8): ProBFT 1.74 ms per block per node (2.02-2.08 before its ballots
were checked lazily), PBFT 1.49 ms.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root: tests' LocalNet

from tests.consensus.conftest import LocalNet, make_committee  # noqa: E402
from tests.consensus.pbft.conftest import tx  # noqa: E402
from tests.consensus.probft.conftest import vrf_keys  # noqa: E402

from dwcp.consensus.core import Codec, Received, Started, Submitted  # noqa: E402
from dwcp.consensus.core.crypto import Ed25519Verifier  # noqa: E402

N = 7


class PerNodeNet(LocalNet):
    def open(self, to: int, frame: bytes) -> Received:
        core = self.cores[to]
        opened = self.codec.open(core.verifier, frame, getattr(core, "lazy_messages", ()))
        return Received(sender=opened.sender, message=opened.message, signature=opened.signature,
                        verified=opened.verified)


def run(protocol: str, blocks: int, txs: int) -> dict:
    keys = make_committee(N)
    if protocol == "probft":
        from dwcp.consensus.probft import MESSAGES, Config, Replica
        provers, vrf_verifier = vrf_keys(N, True)
        extra = lambda i: {"vrf": provers[i], "vrf_verifier": vrf_verifier}  # noqa: E731
    else:
        from dwcp.consensus.pbft import MESSAGES, Config, Replica
        extra = lambda i: {}  # noqa: E731
    cores = {i: Replica(committee=keys.committee, node_id=i, signer=keys.signers[i],
                        verifier=Ed25519Verifier(keys.committee.public_keys()),
                        config=Config(batch_size=txs, max_inflight=1), **extra(i)) for i in keys.committee.ids}
    net = PerNodeNet(cores=cores, keys=keys, codec=Codec(MESSAGES))
    for i in cores:
        net.feed(i, Started())
    net.run()
    k = 0

    def one_block() -> None:
        nonlocal k
        for _ in range(txs):
            k += 1
            net.feed(0, Submitted(tx=tx(k)))
        net.run()

    one_block()  # the first height also verifies every sender's VRF proofs for the view
    start = time.process_time()
    for _ in range(blocks):
        one_block()
    cpu = time.process_time() - start
    assert len(net.commits[N - 1]) == blocks + 1
    return {"protocol": protocol, "blocks": blocks, "txs_per_block": txs,
            "cpu_ms_per_block_per_node": cpu / blocks / N * 1e3}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", type=int, default=100)
    ap.add_argument("--txs", type=int, default=20)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    results = [run(p, args.blocks, args.txs) for p in ("probft", "pbft")]
    for r in results:
        print(f"{r['protocol']}: core + codec CPU per block per node {r['cpu_ms_per_block_per_node']:.3f} ms "
              f"({r['blocks']} blocks of {r['txs_per_block']} txs, 7 nodes in one process)")
    print(f"ProBFT / PBFT: {results[0]['cpu_ms_per_block_per_node'] / results[1]['cpu_ms_per_block_per_node']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
