"""The Narwhal worker's batch store (`dataplane.py` writes it; tests and benchmarks read it back).

`batches.dat` holds append-only records `digest | u32 length | u8 own | bytes`, re-indexed at start;
a torn last record (a crash mid-write) is cut off. Writes go to the page cache, so they survive
`kill -9` of the worker.
"""

from __future__ import annotations

import os
import struct
from collections import OrderedDict
from pathlib import Path

_RECORD = struct.Struct("!32sIB")
CACHE_BATCHES = 64


class BatchStore:
    """Append-only batch file with an in-memory index (and a small cache of our own recent batches).

    A peer's batch is not cached when put: the worker hands it in as a view of its link reader's reused
    buffer (framing.FrameReader), overwritten by the next frame. It is read back (pread) if a peer asks for it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.index: dict[bytes, tuple[int, int, bool]] = {}  # digest -> (offset, length, own)
        self.cache: OrderedDict[bytes, memoryview] = OrderedDict()
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        size, pos = os.fstat(self.fd).st_size, 0
        while pos + _RECORD.size <= size:
            digest, length, own = _RECORD.unpack(os.pread(self.fd, _RECORD.size, pos))
            if pos + _RECORD.size + length > size:
                break  # a torn last record (crash mid-write): ignored, and overwritten by truncation
            self.index[digest] = (pos + _RECORD.size, length, bool(own))
            pos += _RECORD.size + length
        if pos != size:
            os.ftruncate(self.fd, pos)

    def __contains__(self, digest: bytes) -> bool:
        return digest in self.index

    def put(self, digest: bytes, data: memoryview, own: bool) -> None:
        if digest in self.index:
            return
        offset = os.lseek(self.fd, 0, os.SEEK_END) + _RECORD.size
        os.writev(self.fd, [_RECORD.pack(digest, len(data), own), data])  # page cache: survives kill -9
        self.index[digest] = (offset, len(data), own)
        if own:  # the sealed batch's own buffer (kept for re-sends); a peer's batch: see the class docstring
            self._remember(digest, data)

    def get(self, digest: bytes) -> memoryview | None:
        data = self.cache.get(digest)
        if data is None and digest in self.index:
            offset, length, _ = self.index[digest]
            data = memoryview(os.pread(self.fd, length, offset))
            self._remember(digest, data)
        return data

    def _remember(self, digest: bytes, data: memoryview) -> None:
        self.cache[digest] = data
        self.cache.move_to_end(digest)
        while len(self.cache) > CACHE_BATCHES:
            self.cache.popitem(last=False)


def committed_transactions(node_dir: Path, protocol: str = "bullshark",
                           up_to: int | None = None) -> tuple[list[bytes], list[bytes]]:
    """What a stopped node executed up to height `up_to` (default: all), from its own files: (block
    digests by height, tx payloads in order).

    Reads the node's log (`<protocol>-blocks.sqlite`) and its worker's `batches.dat`; a batch the
    worker does not hold raises KeyError (it was never fetched). For tests and benchmarks."""
    import msgspec

    from dwcp.consensus.bullshark.messages import SubDag
    from dwcp.consensus.bullshark.worker import transactions
    from dwcp.consensus.core.messages import Block
    from dwcp.consensus.storage import BlockStore

    blocks = BlockStore(node_dir / f"{protocol}-blocks.sqlite")
    batches = BatchStore(node_dir / "worker" / "batches.dat")
    block_decoder, record_decoder = msgspec.msgpack.Decoder(Block), msgspec.msgpack.Decoder(SubDag)
    digests, txs = [], []
    try:
        for stored in blocks.scan(chunk_bytes=4 * 1024 * 1024):
            if up_to is not None and stored.height > up_to:
                break
            digests.append(stored.digest)
            for ref in record_decoder.decode(block_decoder.decode(stored.block).meta).batches:
                data = batches.get(ref.digest)
                if data is None:
                    raise KeyError(f"{node_dir}: batch {ref.digest.hex()} of height {stored.height} is not stored")
                txs.extend(transactions(data))
    finally:
        blocks.close()
        os.close(batches.fd)
    return digests, txs
