"""The sites' peer-port identities: an Ed25519 key each and the pinned self-signed certificates of all.

Key directory layout (`write_dir`):
    <dir>/peers.json        {"<i>": certificate PEM of manager-<i>, ...}: public, identical on every site
    <dir>/manager-<I>.key   site I's 32-byte Ed25519 private key, hex, mode 0600

With `settings.peer_key_dir` a site loads its key and the pins from there (make the directory once with
`python -m dwcp.manager.keys OUT N` and give each host its own key plus peers.json). Without it, the
sites that share a data root (one host: `dwcp up`, or tests) make fresh keys for their deployment
the first time (`<data root>/keys-manager/`, 0700) and every later start reuses them; sites on several
hosts without `peer_key_dir` are refused, naming the setting. No key is ever derived from a seed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from dwcp.consensus.core.crypto import generate_private_key
from dwcp.runtime.context import ServiceContext
from dwcp.runtime.peerauth import PeerAuth, self_signed_certificate


class PeerKeyError(ValueError):
    """Peer keys cannot be loaded or made; the message names the file or setting."""


def generate(n: int) -> tuple[dict[int, bytes], dict[int, bytes]]:
    privs = {i: generate_private_key() for i in range(n)}
    return privs, {i: self_signed_certificate(k, f"dwcp-manager-{i}") for i, k in privs.items()}


def write_dir(out: Path, privs: dict[int, bytes], certs: dict[int, bytes]) -> None:
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    out.chmod(0o700)
    for i, key in privs.items():
        fd = os.open(out / f"manager-{i}.key", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key.hex() + "\n")
    (out / "peers.json").write_text(json.dumps({str(i): c.decode() for i, c in certs.items()}, indent=1))


def load(key_dir: Path, me: int, n: int) -> tuple[bytes, dict[int, bytes]]:
    """(this site's private key, every site's certificate); PeerKeyError naming the file at fault."""
    peers_path, key_path = key_dir / "peers.json", key_dir / f"manager-{me}.key"
    try:
        certs = {int(i): c.encode() for i, c in json.loads(peers_path.read_text()).items()}
    except (OSError, ValueError, AttributeError) as exc:
        raise PeerKeyError(f"{peers_path}: {exc}") from None
    missing = [i for i in range(n) if i not in certs]
    if missing:
        raise PeerKeyError(f"{peers_path}: no certificate for manager-{missing[0]}")
    try:
        private = bytes.fromhex(key_path.read_text().strip())
    except (OSError, ValueError) as exc:
        raise PeerKeyError(f"{key_path}: {exc}") from None
    return private, certs


def deployment_dir(ctx: ServiceContext, n: int) -> Path:
    """Fresh keys for the sites sharing this data root, made once (the first site to start wins)."""
    final = ctx.data_dir.parent / "keys-manager"
    if not (final / "peers.json").is_file():
        tmp = Path(tempfile.mkdtemp(prefix=".keys-manager-", dir=ctx.data_dir.parent))
        write_dir(tmp, *generate(n))
        try:
            os.rename(tmp, final)  # atomic; fails if another site made them first
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def site_auth(ctx: ServiceContext, key_dir: Path | None) -> PeerAuth:
    instances = ctx.inventory.spec("manager").instances
    n = len(instances)
    if key_dir is None:
        hosts = sorted({inst.host for inst in instances})
        if len(hosts) > 1:
            raise PeerKeyError(
                f"services.manager.settings.peer_key_dir: sites on {len(hosts)} hosts ({', '.join(hosts)}) need "
                "one key directory made once (`python -m dwcp.manager.keys DIR N`) and handed to every host")
        key_dir = deployment_dir(ctx, n)
    private, certs = load(Path(key_dir), ctx.instance, n)
    label = "manager/" + hashlib.sha256(b"".join(certs[i] for i in sorted(certs))).hexdigest()[:16]
    return PeerAuth(me=ctx.instance, private_key=private, certificate=certs[ctx.instance], peers=certs, label=label)


if __name__ == "__main__":
    if len(sys.argv) != 3 or not sys.argv[2].isdigit():
        sys.exit("usage: python -m dwcp.manager.keys OUT_DIR NUMBER_OF_SITES")
    write_dir(Path(sys.argv[1]), *generate(int(sys.argv[2])))
    print(f"wrote {sys.argv[2]} manager keys and peers.json to {sys.argv[1]}")
