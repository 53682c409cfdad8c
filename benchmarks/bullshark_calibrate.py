"""Measure, with the real code on this machine, what the simulator's CPU model charges (sim/cpu.py).

Each figure is the median of `--repeats` timed loops (process CPU time, so other sessions' load on the
shared VM does not count as ours):
- sign / verify: the repo's `Ed25519Signer.sign` and the uncached `ed25519_verify` (PyNaCl) over the
  signing bytes of a real header vote, as a primary signs and checks each frame and certificate vote;
- hash_per_byte: the worker's batch digest (`bullshark.worker.batch_digest`, SHA-256 since session 3; it was
  BLAKE2b-256, 0.97 ns/B) over a 500 KB batch, per byte (plain hashlib SHA-256 beside it for the record);
- encode/decode: the codec (`core.codec.encode`, `Codec.decode`) on real Bullshark messages, a vote
  (~100 B) and a certificate of n = 100 (67 signatures, ~5 KB): fixed cost and cost per byte from the two.

    .venv/bin/python benchmarks/bullshark_calibrate.py --json benchmarks/bullshark_cpu.json

The JSON's `costs` object is what `CpuCosts.load` (and `benchmarks/bullshark_sim.py --cpu`) reads.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from dwcp.consensus.bullshark.messages import BULLSHARK_MESSAGES, BatchRef, DagCertificate, Header
from dwcp.consensus.bullshark.worker import batch_digest
from dwcp.consensus.core.codec import Codec, encode, signing_bytes
from dwcp.consensus.core.crypto import Ed25519Signer, ed25519_verify, generate_private_key, public_key_of
from dwcp.consensus.sim.cpu import CpuCosts

BATCH = 500_000


def per_call(fn: Callable[[], object], calls: int, repeats: int) -> float:
    """Median over `repeats` of process CPU seconds per call of `fn`."""
    samples = []
    for _ in range(repeats):
        started = time.process_time()
        for _ in range(calls):
            fn()
        samples.append((time.process_time() - started) / calls)
    return statistics.median(samples)


def certificate(n: int, signer: Ed25519Signer) -> DagCertificate:
    quorum = 2 * ((n - 1) // 3) + 1
    refs = tuple(BatchRef(digest=os.urandom(32), worker=0, txs=976, size=BATCH) for _ in range(4))
    header = Header(author=0, round=7, payload=refs, parents=tuple(os.urandom(32) for _ in range(quorum)))
    sig = signer.sign(signing_bytes(0, encode(header.vote())))
    return DagCertificate(header=header, signers=tuple(range(quorum)), signatures=(sig,) * quorum)


def calibrate(repeats: int) -> dict:
    key = generate_private_key()
    signer = Ed25519Signer(0, key)
    public = public_key_of(key)
    cert = certificate(100, signer)
    vote_bytes = signing_bytes(0, encode(cert.header.vote()))
    sig = signer.sign(vote_bytes)
    batch = os.urandom(BATCH)
    codec = Codec(BULLSHARK_MESSAGES)
    small, big = cert.header.vote(), cert
    small_b, big_b = encode(small), encode(big)
    enc = {m: per_call(lambda m=m: encode(m), 2000, repeats) for m in (small, big)}
    dec = {b: per_call(lambda b=b: codec.decode(b), 2000, repeats) for b in (small_b, big_b)}
    span = len(big_b) - len(small_b)
    encode_per_byte = max(0.0, (enc[big] - enc[small]) / span)
    decode_per_byte = max(0.0, (dec[big_b] - dec[small_b]) / span)
    costs = CpuCosts(
        sign=per_call(lambda: signer.sign(vote_bytes), 500, repeats),
        verify=per_call(lambda: ed25519_verify(public, vote_bytes, sig), 500, repeats),
        hash_per_byte=per_call(lambda: batch_digest(batch), 20, repeats) / BATCH,
        encode_per_byte=encode_per_byte, decode_per_byte=decode_per_byte,
        encode_fixed=max(0.0, enc[small] - encode_per_byte * len(small_b)),
        decode_fixed=max(0.0, dec[small_b] - decode_per_byte * len(small_b)),
    )
    sha256 = per_call(lambda: hashlib.sha256(batch).digest(), 20, repeats) / BATCH
    return {
        "costs": costs.as_dict(),
        "measured": {
            "sha256_per_byte": sha256, "vote_bytes": len(small_b), "certificate_bytes": len(big_b),
            "encode_vote_s": enc[small], "encode_certificate_s": enc[big],
            "decode_vote_s": dec[small_b], "decode_certificate_s": dec[big_b],
            "batch_hash_500kb_s": costs.hash_per_byte * BATCH,
            "certificate_n100_verify_s": costs.receive(len(big_b), len(cert.signers)),
        },
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
                    "loadavg_1m": os.getloadavg()[0], "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        "method": "process CPU time, median of repeats; benchmarks/bullshark_calibrate.py",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    result = calibrate(args.repeats)
    for name, value in result["costs"].items():
        unit = "ns/B" if name.endswith("per_byte") else "us"
        print(f"{name:16s} {value * (1e9 if unit == 'ns/B' else 1e6):9.3f} {unit}")
    for name, value in result["measured"].items():
        print(f"{name:26s} {value}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
