"""Synthetic training and evaluation data: many families, many sizes, deterministic from a seed.

Each generator takes a numpy Generator and a size and returns exactly that many bytes. Families span
the compressibility range on purpose (plain text to already-compressed) and `lz` draws from a
tunable LZ77-like process, so the model sees every mix of literal entropy and match structure rather
than a few fixed points. Real files from the host are a separate, evaluation-only source
(`real_files`), which the generator never imitates directly.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import sysconfig
from collections.abc import Callable, Iterator
from pathlib import Path

import brotli
import lz4.frame
import numpy as np
import zstandard

Gen = Callable[[np.random.Generator, int], bytes]
_LETTERS = np.frombuffer(b"etaoinshrdlcumwfgypbvkjxqz", np.uint8)


def _words(rng: np.random.Generator, count: int) -> list[bytes]:
    # English-like letter frequencies, word lengths 1-12; a vocabulary, reused with Zipf weights.
    probs = 1.0 / np.arange(1, 27) ** 0.9
    probs /= probs.sum()
    lengths = rng.integers(1, 13, count)
    return [bytes(rng.choice(_LETTERS, int(n), p=probs)) for n in lengths]


def _zipf_pick(rng: np.random.Generator, n_vocab: int, count: int, a: float) -> np.ndarray:
    w = 1.0 / np.arange(1, n_vocab + 1) ** a
    return rng.choice(n_vocab, count, p=w / w.sum())


def text(rng: np.random.Generator, size: int) -> bytes:
    vocab = _words(rng, int(rng.integers(50, 20000)))
    picks = _zipf_pick(rng, len(vocab), size // 3 + 8, float(rng.uniform(0.8, 1.4)))
    out, seps = bytearray(), [b" "] * 12 + [b", ", b". ", b".\n", b"\n\n"]
    sep_idx = rng.integers(0, len(seps), len(picks))
    for i, j in zip(picks, sep_idx, strict=True):
        out += vocab[i] + seps[j]
        if len(out) >= size:
            break
    return bytes(out[:size]).ljust(size, b" ")


def code(rng: np.random.Generator, size: int) -> bytes:
    kws = [b"def ", b"return ", b"if ", b"for ", b"in ", b"self.", b"import ", b"class ", b"None", b"(", b")",
           b":", b" = ", b"[", b"]", b", ", b"+ 1", b"elif ", b"not ", b"True"]
    idents = _words(rng, int(rng.integers(30, 600)))
    out = bytearray()
    while len(out) < size:
        out += b"    " * int(rng.integers(0, 4))
        for _ in range(int(rng.integers(2, 10))):
            out += kws[int(rng.integers(len(kws)))] if rng.random() < 0.5 else idents[int(rng.integers(len(idents)))]
        out += b"\n"
    return bytes(out[:size])


def json_logs(rng: np.random.Generator, size: int) -> bytes:
    levels, svcs = ["INFO", "WARN", "DEBUG", "ERROR"], [w.decode() for w in _words(rng, 12)]
    msgs = [b" ".join(_words(rng, int(rng.integers(2, 8)))).decode() for _ in range(int(rng.integers(5, 200)))]
    t, out = 1.7e9 + float(rng.uniform(0, 1e7)), bytearray()
    while len(out) < size:
        t += float(rng.exponential(0.05))
        rec = {"ts": round(t, 6), "level": levels[int(rng.integers(4))], "svc": svcs[int(rng.integers(12))],
               "req": f"{int(rng.integers(0, 2**48)):012x}", "ms": round(float(rng.lognormal(1, 1)), 3),
               "msg": msgs[int(rng.integers(len(msgs)))]}
        out += json.dumps(rec).encode() + b"\n"
    return bytes(out[:size])


def csv_rows(rng: np.random.Generator, size: int) -> bytes:
    ncol, out = int(rng.integers(3, 12)), bytearray()
    kinds = rng.integers(0, 4, ncol)
    state = rng.normal(0, 100, ncol)
    row = 0
    while len(out) < size:
        state += rng.normal(0, 1, ncol)
        cells = []
        for k, v in zip(kinds, state, strict=True):
            cells.append(str(row) if k == 0 else f"{v:.{int(k)}f}" if k < 3 else ("ok", "fail", "retry")[row % 3])
        out += (",".join(cells) + "\n").encode()
        row += 1
    return bytes(out[:size])


def numeric(rng: np.random.Generator, size: int) -> bytes:
    n = size // 8 + 1
    kind = int(rng.integers(0, 5))
    if kind == 0:
        arr = np.cumsum(rng.normal(0, 1, n))  # float64 random walk: mantissas look random
    elif kind == 1:
        arr = np.cumsum(rng.integers(0, int(rng.integers(2, 1000)), n)).astype(np.int64)  # counters
    elif kind == 2:
        arr = np.round(rng.normal(20, 5, 2 * n), int(rng.integers(0, 3))).astype(np.float32)  # quantised sensor
    elif kind == 3:
        arr = np.where(rng.random(n) < rng.uniform(0.5, 0.99), 0.0, rng.normal(0, 1, n))  # sparse
    else:
        arr = rng.integers(0, int(rng.integers(2, 2**31)), 2 * n).astype(np.int32)
    return arr.tobytes()[:size]


def records(rng: np.random.Generator, size: int) -> bytes:
    # Fixed-layout binary records: constant tags, incrementing ids, small ints, random payload bytes.
    rec = int(rng.integers(16, 128))
    n = size // rec + 1
    out = np.zeros((n, rec), np.uint8)
    layout = rng.integers(0, 4, rec)
    out[:, layout == 0] = rng.integers(0, 256, int((layout == 0).sum()), dtype=np.uint8)
    out[:, layout == 1] = rng.integers(0, 256, (n, int((layout == 1).sum())), dtype=np.uint8)
    out[:, layout == 2] = rng.integers(0, 8, (n, int((layout == 2).sum())), dtype=np.uint8)
    out[:, :4] = np.arange(n, dtype=np.uint32).view(np.uint8).reshape(n, 4)
    return out.tobytes()[:size]


def pages(rng: np.random.Generator, size: int) -> bytes:
    # Memory pages: some all-zero, others partly filled (from one other family), zero-padded to 4 KiB.
    n_pages, fill = size // 4096 + 1, float(rng.uniform(0.05, 0.9))
    source = (records, numeric, text, random_bytes, code)[int(rng.integers(5))]
    filler = np.frombuffer(source(rng, n_pages * 4096), np.uint8).reshape(n_pages, 4096).copy()
    used = np.where(rng.random(n_pages) < fill, rng.integers(16, 4097, n_pages), 0)
    filler[np.arange(4096)[None, :] >= used[:, None]] = 0
    return filler.tobytes()[:size]


def random_bytes(rng: np.random.Generator, size: int) -> bytes:
    return rng.bytes(size)


def compressed(rng: np.random.Generator, size: int) -> bytes:
    src = [text, json_logs, csv_rows, records][int(rng.integers(4))]
    packer = [zstandard.ZstdCompressor(level=3).compress, lz4.frame.compress, brotli.compress][int(rng.integers(3))]
    out = bytearray()
    while len(out) < size:
        out += packer(src(rng, 4 * max(size, 4096)))
    return bytes(out[:size])


def encoded(rng: np.random.Generator, size: int) -> bytes:
    raw = rng.bytes(size)
    return (base64.b64encode(raw) if rng.random() < 0.5 else raw.hex().encode())[:size]


def lz(rng: np.random.Generator, size: int) -> bytes:
    """LZ77-like source: literals of tunable entropy interleaved with copies of earlier bytes."""
    alphabet = int(rng.integers(2, 257))
    p_match, mean_len = float(rng.uniform(0.0, 0.95)), float(rng.uniform(3, 200))
    window = int(rng.choice([64, 1024, 32768, 1 << 20]))
    skew = np.sort(rng.dirichlet(np.full(alphabet, float(rng.uniform(0.05, 3)))))[::-1]
    syms = rng.permutation(256)[:alphabet].astype(np.uint8)
    out = bytearray(rng.choice(syms, 16, p=skew).tobytes())
    while len(out) < size:
        if rng.random() < p_match:
            length = int(rng.geometric(1 / mean_len)) + 3
            start = len(out) - int(rng.integers(1, min(window, len(out)) + 1))
            for k in range(0, length, max(1, len(out) - start)):  # overlapping copies repeat the tail
                out += out[start:start + min(length - k, len(out) - start)]
        else:
            out += rng.choice(syms, int(rng.integers(1, 64)), p=skew).tobytes()
    return bytes(out[:size])


def mixture(rng: np.random.Generator, size: int) -> bytes:
    parts, out = [f for f in FAMILIES.values() if f is not mixture], bytearray()
    while len(out) < size:
        chunk = int(min(size - len(out), rng.integers(512, max(1024, size // 2))))
        out += parts[int(rng.integers(len(parts)))](rng, chunk)
    return bytes(out[:size])


FAMILIES: dict[str, Gen] = {
    "text": text, "code": code, "json_logs": json_logs, "csv": csv_rows, "numeric": numeric, "records": records,
    "pages": pages, "random": random_bytes, "compressed": compressed, "encoded": encoded, "lz": lz,
    "mixture": mixture,
}


def items(seed: int, count: int, min_size: int = 256, max_size: int = 512 * 1024) -> Iterator[tuple[str, bytes]]:
    """`count` (family, payload) pairs, families round-robin, sizes log-uniform in [min_size, max_size]."""
    rng = np.random.default_rng(seed)
    names = list(FAMILIES)
    for i in range(count):
        fam = names[i % len(names)]
        size = int(np.exp(rng.uniform(np.log(min_size), np.log(max_size))))
        yield fam, FAMILIES[fam](rng, size)


def reference_data() -> bytes:
    """The fixed 256 KiB array every host's codec speeds are measured on (calibration normalises to it)."""
    rng = np.random.default_rng(20261124)
    parts = [text(rng, 65536), json_logs(rng, 65536), numeric(rng, 32768), records(rng, 32768),
             pages(rng, 32768), random_bytes(rng, 32768)]
    return b"".join(parts)


@functools.cache  # generated once per process, on first use (~150 ms), not at import
def pilot_data() -> bytes:
    """16 KiB of the reference array (text, then JSON logs): the oracle times it beside every payload.

    Small, so timing every option on it costs ~10% of a measurement; compressible, so every codec does
    real work on it.
    """
    ref = reference_data()
    return ref[:8192] + ref[65536:65536 + 8192]


# Held-out real files come from REAL_ROOTS; training may add real files from TRAIN_REAL_ROOTS, other trees
# (none inside a held-out root), so no file is ever both trained on and scored on.
REAL_ROOTS = ("/usr/share/doc", "/usr/share/common-licenses", "/usr/lib/python3", "/usr/bin",
              "/usr/lib/x86_64-linux-gnu", "/usr/share/locale", "/usr/share/zoneinfo", "/usr/share/perl5", "/etc",
              sysconfig.get_paths()["purelib"])
TRAIN_REAL_ROOTS = ("/usr/include", "/usr/share/man", "/usr/share/i18n", "/usr/lib/gcc", "/var/lib/dpkg",
                    "/usr/share/perl", "/usr/sbin", "/usr/libexec", "/usr/share/vim", "/usr/share/mime",
                    "/usr/lib/node_modules", "/usr/share/javascript", "/usr/share/X11", "/usr/lib/llvm-14",
                    "/usr/lib/git-core", "/usr/lib/jvm", "/usr/lib/python3.11", "/usr/lib/postgresql",
                    "/usr/lib/systemd", "/usr/lib/apt", "/usr/lib/file")


def real_files(seed: int, count: int, max_size: int = 512 * 1024, roots: tuple[str, ...] = REAL_ROOTS
               ) -> Iterator[tuple[str, bytes]]:
    """Real files on this machine (documents, sources, .so binaries, .gz, locales) under `roots`.

    Kinds are drawn round-robin so the many small Python sources do not crowd out binaries and archives.
    """
    queues = _queues(seed, roots)
    yielded = 0
    while yielded < count and any(queues.values()):
        for kind, paths in queues.items():
            data = _read(paths, max_size)
            if data is not None and yielded < count:
                yielded += 1
                yield f"real:{kind}", data


def real_payloads(seed: int, count: int, min_size: int = 1024, max_size: int = 1 << 20,
                  roots: tuple[str, ...] = REAL_ROOTS) -> Iterator[tuple[str, bytes]]:
    """Payloads of real files at every size up to a chunk: sizes log-uniform in [min_size, max_size], each the
    files of one kind (round-robin) concatenated as an archive of them would be, cut at the size.

    A large transfer of sources or binaries is many such files in a row; one file rarely fills a 1 MiB chunk.
    A payload is shorter than drawn only when its kind has run out of files.
    """
    queues = _queues(seed, roots)
    rng = np.random.default_rng(seed)
    kinds = [k for k, v in queues.items() if v]
    yielded = 0
    while yielded < count and kinds:
        for kind in list(kinds):
            if yielded >= count:
                break
            size = int(np.exp(rng.uniform(np.log(min_size), np.log(max_size))))
            out = bytearray()
            while len(out) < size:
                data = _read(queues[kind], size - len(out), min_size=1)
                if data is None:
                    kinds.remove(kind)
                    break
                out += data
            if len(out) >= min(min_size, size):
                yielded += 1
                yield f"real:{kind}", bytes(out[:size])


def _queues(seed: int, roots: tuple[str, ...]) -> dict[str, list[Path]]:
    """The regular files under `roots` by kind, each kind's list shuffled with `seed`."""
    by_kind: dict[str, list[Path]] = {}
    for root in roots:
        for dirpath, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if d != "__pycache__"]  # bytecode comes and goes: keep the set stable
            for f in files:
                path = Path(dirpath) / f
                by_kind.setdefault(_kind(path), []).append(path)
    rng = np.random.default_rng(seed)
    queues = {k: sorted(v) for k, v in sorted(by_kind.items())}
    for paths in queues.values():
        rng.shuffle(paths)
    return queues


def _read(paths: list[Path], max_size: int, min_size: int = 256) -> bytes | None:
    """The first readable regular file of at least `min_size` bytes popped from `paths` (its first max_size
    bytes)."""
    while paths:
        path = paths.pop()
        if path.is_symlink() or not path.is_file():
            continue
        try:
            with path.open("rb") as fh:
                data = fh.read(max_size)
        except OSError:
            continue
        if len(data) >= min_size:
            return data
    return None


def _kind(path: Path) -> str:
    s = str(path)
    if s.endswith((".gz", ".xz", ".bz2", ".zst", ".png", ".jpg")):
        return "compressed"
    if "/bin/" in s or ".so" in path.name:
        return "binary"
    if s.endswith((".py", ".pl", ".pm", ".sh")):
        return "source"
    if "zoneinfo" in s or s.endswith(".mo"):
        return "data"
    return "text"
