"""Group commit: futures resolve only once blocks are durable, in order, many blocks per fsync."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dwcp.consensus.storage import BlockStore, StorageError, StoredBlock
from dwcp.consensus.transport.writer import CommitWriter


def _b(h: int) -> StoredBlock:
    return StoredBlock(height=h, digest=b"d%d" % h, block=b"b%d" % h, certificate=b"c", tx_ids=(b"t%d" % h,))


async def test_resolves_after_durable_and_groups_fsyncs(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "log.sqlite")
    writer = CommitWriter(store)
    writer.start()
    futures = [writer.submit(_b(h)) for h in range(1, 51)]
    await asyncio.gather(*futures)
    assert store.last_height == 50
    assert writer.batches < 50  # submitted back to back: shared fsyncs
    reopened = BlockStore(tmp_path / "log.sqlite")
    assert reopened.tx_height(b"t50") == 50
    await writer.stop()


async def test_gap_fails_the_batch_and_later_blocks_still_commit(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "log.sqlite")
    writer = CommitWriter(store)
    writer.start()
    await writer.submit(_b(1))
    with pytest.raises(StorageError):
        await writer.submit(_b(3))
    await writer.submit(_b(2))
    assert store.last_height == 2
    await writer.stop()


async def test_stop_flushes_what_is_queued(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "log.sqlite")
    writer = CommitWriter(store)
    writer.start()
    for h in range(1, 6):
        writer.submit(_b(h))
    await writer.stop()
    assert store.last_height == 5
