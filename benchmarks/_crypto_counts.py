"""Count a real node's crypto and frames from inside its process (a measurement aid for the cluster benchmarks).

`enable(env)` makes every node process the cluster starts with `env` import this module at start-up (a
`sitecustomize` in a temporary directory put first on PYTHONPATH), which wraps, in that process only:

- `crypto.ed25519_verify` (an Ed25519 check libsodium really ran: the verifier's cache misses),
  `Ed25519Verifier.verify` (every check asked for, cache hits included), `Ed25519Signer.sign`;
- `vrf.ecvrf_verify` and `vrf.ecvrf_prove` (RFC 9381 proofs checked / made);
- `Codec.open` and `Codec.seal` (frames and bytes in and out, by message type).

Each process writes its counters as JSON to `<dir>/<pid>.json` every 0.25 s; `read(dir)` sums them over
the processes. Nothing here changes what a node does; the wrappers add ~1 us per call.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from collections import Counter
from pathlib import Path

ENV = "DWCP_CRYPTO_COUNTS"


def enable(env: dict[str, str]) -> Path:
    """Turn counting on for node processes started with `env` (changed in place); returns the output dir."""
    out = Path(tempfile.mkdtemp(prefix="dwcp-counts-"))
    hook = out / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        f"import sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\nimport _crypto_counts\n"
        "_crypto_counts.install()\n")
    env[ENV] = str(out)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(hook), env.get("PYTHONPATH", "")) if p)
    return out


def read(out: Path) -> Counter:
    total: Counter = Counter()
    for f in out.glob("*.json"):
        with contextlib.suppress(OSError, ValueError):  # gone with its process: skip
            total.update(json.loads(f.read_text()))
    return total


def install() -> None:
    out = os.environ.get(ENV)
    if not out:
        return
    counts: Counter = Counter()
    from dwcp.consensus.core import codec, crypto, vrf

    def wrap(owner, name, key, size=None):
        inner = getattr(owner, name)

        def counted(*args, **kwargs):
            counts[key] += 1
            result = inner(*args, **kwargs)
            if size is not None:
                size(args, result)
            return result

        setattr(owner, name, counted)

    wrap(crypto, "ed25519_verify", "ed25519_verify")
    wrap(crypto.Ed25519Verifier, "verify", "ed25519_verify_calls")
    wrap(crypto.Ed25519Signer, "sign", "ed25519_sign")
    wrap(vrf, "ecvrf_verify", "vrf_verify")
    wrap(vrf, "ecvrf_prove", "vrf_prove")

    def opened(args, result):
        kind = type(getattr(result, "message", result)).__name__
        counts[f"in_frames:{kind}"] += 1
        counts[f"in_bytes:{kind}"] += len(args[2])

    def sealed(args, result):
        kind = type(args[2]).__name__
        counts[f"out_frames:{kind}"] += 1
        counts[f"out_bytes:{kind}"] += len(result)

    wrap(codec.Codec, "open", "codec_open", opened)
    wrap(codec.Codec, "seal", "codec_seal", sealed)
    path = Path(out) / f"{os.getpid()}.json"

    def dump() -> None:
        while True:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(dict(counts)))
            tmp.replace(path)
            threading.Event().wait(0.25)

    threading.Thread(target=dump, daemon=True, name="crypto-counts").start()
