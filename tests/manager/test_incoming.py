"""The receiving side without sockets: durable chunks survive a reopen, and a bad whole object is refused."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time

import pytest

from dwcp.manager.incoming import ChecksumMismatch, Receiver
from dwcp.manager.store import NotFound, ObjectStore

CHUNK = 4096


def offer(body: bytes, tid: str = "t1", sha: str | None = None) -> dict:
    return {"tid": tid, "key": "k", "size": len(body), "sha256": sha or hashlib.sha256(body).hexdigest(),
            "chunk_bytes": CHUNK, "chunks": max(1, -(-len(body) // CHUNK))}


def test_chunks_written_out_of_order_publish_the_object_with_its_running_hash(tmp_path):
    store = ObjectStore(tmp_path / "objects")
    rx = Receiver(store)
    body = os.urandom(5 * CHUNK + 7)
    inc = rx.offer("manager-0", offer(body))
    for i in (3, 0, 5, 1, 4, 2):
        inc.write(i, body[i * CHUNK:(i + 1) * CHUNK])
    assert inc.complete() and inc.hashed == 6  # hashed in index order as the gaps filled
    version = rx.finish("manager-0", inc)
    assert version.sha256 == hashlib.sha256(body).hexdigest()
    assert store.blob_path(version.sha256).read_bytes() == body


def test_durable_chunks_are_known_after_a_restart_and_the_file_is_hashed_then(tmp_path):
    body = os.urandom(3 * CHUNK)
    rx = Receiver(ObjectStore(tmp_path / "objects"))
    inc = rx.offer("manager-0", offer(body))
    inc.write(0, body[:CHUNK])
    inc.write(2, body[2 * CHUNK:])
    inc.close()
    restarted = Receiver(ObjectStore(tmp_path / "objects"))  # a new process: only the disk is left
    again = restarted.offer("manager-0", offer(body))
    assert again.have == {0, 2} and again.digest is None
    again.write(1, body[CHUNK:2 * CHUNK])
    assert restarted.finish("manager-0", again).sha256 == hashlib.sha256(body).hexdigest()


def test_an_object_whose_sha256_does_not_match_the_offer_is_not_published_and_starts_over(tmp_path):
    store = ObjectStore(tmp_path / "objects")
    rx = Receiver(store)
    body = os.urandom(2 * CHUNK)
    inc = rx.offer("manager-0", offer(body, sha="0" * 64))  # chunks are fine, the whole is not what was offered
    inc.write(0, body[:CHUNK])
    inc.write(1, body[CHUNK:])
    with pytest.raises(ChecksumMismatch):
        rx.finish("manager-0", inc)
    with pytest.raises(NotFound):
        store.latest("k")
    assert rx.offer("manager-0", offer(body, sha="0" * 64)).have == set()  # nothing kept: resent in full


def test_a_changed_offer_for_the_same_transfer_discards_what_was_received(tmp_path):
    rx = Receiver(ObjectStore(tmp_path / "objects"))
    body = os.urandom(2 * CHUNK)
    inc = rx.offer("manager-0", offer(body))
    inc.write(0, body[:CHUNK])
    other = os.urandom(2 * CHUNK)
    assert rx.offer("manager-0", offer(other)).have == set()


def test_aligned_chunks_bypass_the_page_cache_and_early_ones_are_hashed_from_disk(tmp_path, monkeypatch):
    from dwcp.manager import incoming
    from dwcp.manager.incoming import aligned_buffer

    monkeypatch.setattr(incoming, "DIRECT_MIN", CHUNK)  # the test's chunks are small

    rx = Receiver(ObjectStore(tmp_path / "objects"))
    body = os.urandom(4 * CHUNK + 100)  # four whole chunks and a partial one
    inc = rx.offer("manager-0", offer(body))
    if inc.direct_fd < 0:
        pytest.skip("this file system refuses O_DIRECT")
    writes: list[int] = []
    real_pwrite = os.pwrite
    monkeypatch.setattr(os, "pwrite", lambda fd, data, off: writes.append(fd) or real_pwrite(fd, data, off))
    for i in (2, 4, 1, 3, 0):  # 0 last: chunks 1-3 are read back for the running hash
        piece = body[i * CHUNK:(i + 1) * CHUNK]
        buf = aligned_buffer(CHUNK)  # what a peer connection receives into
        buf[:len(piece)] = piece
        inc.write(i, memoryview(buf)[:len(piece)])
    assert writes.count(inc.direct_fd) == 4 and writes.count(inc.fd) == 1  # the partial chunk is buffered
    assert inc.hashed == 5
    assert rx.finish("manager-0", inc).sha256 == hashlib.sha256(body).hexdigest()


def test_decoded_chunks_in_unaligned_memory_are_copied_and_still_bypass_the_page_cache(tmp_path, monkeypatch):
    """A decoded chunk (bytes from lz4/zstd: not page-aligned) is copied into a spare aligned buffer and written
    O_DIRECT, not through the page cache (before session 12 its O_DIRECT write failed with EINVAL and it went
    buffered: 5-16 ms of the kernel's CPU per 16 MiB chunk with its fdatasync, against 3-4 ms copied)."""
    from dwcp.manager import incoming

    monkeypatch.setattr(incoming, "DIRECT_MIN", CHUNK)  # the test's chunks are small
    rx = Receiver(ObjectStore(tmp_path / "objects"))
    body = os.urandom(4 * CHUNK + 100)
    inc = rx.offer("manager-0", offer(body))
    if inc.direct_fd < 0:
        pytest.skip("this file system refuses O_DIRECT")
    written: list[int] = []  # the fd of each write that succeeded
    real_pwrite = os.pwrite

    def pwrite(fd, data, off):
        n = real_pwrite(fd, data, off)
        written.append(fd)
        return n

    monkeypatch.setattr(os, "pwrite", pwrite)
    for i in (1, 0, 4, 3, 2):
        inc.write(i, bytes(body[i * CHUNK:(i + 1) * CHUNK]))  # a fresh bytes object, as a decoder returns
    assert written.count(inc.direct_fd) == 4 and written.count(inc.fd) == 1, written  # the partial one buffered
    assert len(incoming._spare) <= incoming.SPARE_ALIGNED
    assert rx.finish("manager-0", inc).sha256 == hashlib.sha256(body).hexdigest()


def test_a_batch_of_held_objects_is_published_with_one_fsync_and_survives_losing_its_unsynced_blobs(
        tmp_path, monkeypatch):
    import dwcp.manager.store as store_module

    monkeypatch.setattr(store_module, "CHECKPOINT_SECONDS", 3600.0)  # the "power cut" comes before a checkpoint
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(store_module.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    store = ObjectStore(tmp_path / "objects")
    rx = Receiver(store)
    bodies = [os.urandom(100 + i) for i in range(20)]
    incs = []
    for i, body in enumerate(bodies):
        inc = rx.offer("manager-0", {**offer(body, tid=f"t{i}"), "key": f"small/{i}"})
        inc.write(0, body)
        incs.append(inc)
    versions = rx.finish_many("manager-0", incs)
    assert [v.sha256 for v in versions] == [hashlib.sha256(b).hexdigest() for b in bodies]
    assert synced == []  # the index's WAL fsync is SQLite's own; no file or directory fsync per object
    assert store.blob_path(versions[3].sha256).read_bytes() == bodies[3]  # readable at once
    # A power cut loses what was never fsynced: a blob cut short, another gone; the machine boots again.
    store.blob_path(versions[0].sha256).write_bytes(b"")
    store.blob_path(versions[1].sha256).unlink()
    monkeypatch.setattr(store_module, "boot_id", lambda: "the boot after the power cut")
    restarted = ObjectStore(tmp_path / "objects")  # rewrites every small blob file from the index first
    for version, body in zip(versions, bodies, strict=True):
        assert restarted.latest(version.key).sha256 == version.sha256
        assert restarted.blob_path(version.sha256).read_bytes() == body
    restarted.close()
    assert synced == []  # small blobs stay in the index (their durable copy): their files are never fsynced
    assert sqlite3.connect(tmp_path / "objects" / "index.sqlite").execute("SELECT COUNT(*) FROM landing").fetchone() \
        == (20,)


def test_the_checkpoint_fsyncs_landed_blobs_and_drops_their_landing_rows(tmp_path, monkeypatch):
    import dwcp.manager.store as store_module

    monkeypatch.setattr(store_module, "CHECKPOINT_SECONDS", 0.05)
    store = ObjectStore(tmp_path / "objects")
    alpha = os.urandom(store_module.SMALL_BLOB_BYTES + 1)  # past the small size: landed only until its fsync
    store.publish_held([("a", alpha, hashlib.sha256(alpha).hexdigest()),
                        ("b", b"beta", hashlib.sha256(b"beta").hexdigest())])
    db = sqlite3.connect(tmp_path / "objects" / "index.sqlite")
    for _ in range(200):
        if db.execute("SELECT COUNT(*) FROM landing").fetchone() == (1,):
            break
        time.sleep(0.02)
    assert db.execute("SELECT sha256 FROM landing").fetchall() == [(hashlib.sha256(b"beta").hexdigest(),)]
    assert store.blob_path(hashlib.sha256(alpha).hexdigest()).read_bytes() == alpha
    store.close()


def test_a_small_put_costs_no_file_fsync_and_its_object_survives_a_reboot_that_lost_the_file(tmp_path, monkeypatch):
    import dwcp.manager.store as store_module

    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(store_module.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    store = ObjectStore(tmp_path / "objects")
    small, large = os.urandom(4096), os.urandom(store_module.SMALL_BLOB_BYTES + 4096)
    for key, body in (("small", small), ("large", large)):
        ingest = store.begin_put()
        for at in range(0, len(body), 1000):
            ingest.write(body[at:at + 1000])
        fsyncs = len(synced)
        assert ingest.commit(key).sha256 == hashlib.sha256(body).hexdigest()
        assert len(synced) - fsyncs == (0 if key == "small" else 2)  # a large one: its file and its directory
    assert list((tmp_path / "objects" / "tmp").iterdir()) == []
    store.close()
    store.blob_path(hashlib.sha256(small).hexdigest()).write_bytes(small[:100])  # the page cache was lost
    monkeypatch.setattr(store_module, "boot_id", lambda: "next boot")
    reopened = ObjectStore(tmp_path / "objects")
    for key, body in (("small", small), ("large", large)):
        obj = reopened.latest(key)
        assert b"".join(reopened.read_range(obj.sha256, 0, obj.size)) == body
    reopened.close()


def test_small_puts_acknowledged_before_a_kill_9_are_all_there_after_reopening(tmp_path):
    """A killed process loses no acknowledged small object: its unsynced files are in the page cache, and the
    index (one WAL fsync each) says what was acknowledged."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", f"""
import hashlib, sys, time
from dwcp.manager.store import ObjectStore
store = ObjectStore({str(tmp_path / "objects")!r})
for i in range(200):
    ingest = store.begin_put()
    ingest.write(hashlib.sha256(str(i).encode()).digest() * 128)
    ingest.commit(f"obj/{{i}}")
    print(i, flush=True)
time.sleep(60)
"""], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    acknowledged = [child.stdout.readline() for _ in range(200)]
    child.kill()
    child.wait(10)
    assert acknowledged[-1].strip() == "199"
    store = ObjectStore(tmp_path / "objects")
    for i in range(200):
        obj = store.latest(f"obj/{i}")
        assert b"".join(store.read_range(obj.sha256, 0, obj.size)) == hashlib.sha256(str(i).encode()).digest() * 128
    store.close()


def test_a_held_object_too_large_to_land_in_the_index_is_published_as_an_fsynced_file(tmp_path, monkeypatch):
    import dwcp.manager.store as store_module

    monkeypatch.setattr(store_module, "CHECKPOINT_SECONDS", 3600.0)
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(store_module.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    store = ObjectStore(tmp_path / "objects")
    large, small = os.urandom(store_module.LANDING_MAX_BYTES + 1), b"tiny"
    sha_large, sha_small = hashlib.sha256(large).hexdigest(), hashlib.sha256(small).hexdigest()
    versions = store.publish_held([("large", large, sha_large), ("small", small, sha_small)])
    assert [v.key for v in versions] == ["large", "small"]
    db = sqlite3.connect(tmp_path / "objects" / "index.sqlite")
    # Only the small one's bytes went into the index (a 4 MiB one-chunk object would be written twice more).
    assert [r[0] for r in db.execute("SELECT sha256 FROM landing")] == [sha_small]
    assert len(synced) == 2  # the large blob and its directory, before its version row was committed
    store.blob_path(sha_small).unlink()  # a power cut: only the unsynced small blob can be lost
    monkeypatch.setattr(store_module, "boot_id", lambda: "the boot after the power cut")
    restarted = ObjectStore(tmp_path / "objects")
    assert restarted.blob_path(sha_large).read_bytes() == large
    assert restarted.blob_path(sha_small).read_bytes() == small
    restarted.close()


def test_a_landed_blob_file_lost_before_its_checkpoint_is_written_again_and_close_does_not_raise(
        tmp_path, monkeypatch):
    import dwcp.manager.store as store_module

    monkeypatch.setattr(store_module, "CHECKPOINT_SECONDS", 3600)  # only close() checkpoints here
    store = ObjectStore(tmp_path / "objects")
    lost, cut = (os.urandom(store_module.SMALL_BLOB_BYTES + 1) for _ in range(2))  # landed until the checkpoint
    store.publish_held([("lost", lost, hashlib.sha256(lost).hexdigest()),
                        ("cut", cut, hashlib.sha256(cut).hexdigest())])
    store.blob_path(hashlib.sha256(lost).hexdigest()).unlink()
    store.blob_path(hashlib.sha256(cut).hexdigest()).write_bytes(cut[:100])
    store.close()  # raised FileNotFoundError from the fsync of the lost file
    assert store.blob_path(hashlib.sha256(lost).hexdigest()).read_bytes() == lost
    assert store.blob_path(hashlib.sha256(cut).hexdigest()).read_bytes() == cut
    db = sqlite3.connect(tmp_path / "objects" / "index.sqlite")
    assert db.execute("SELECT COUNT(*) FROM landing").fetchone() == (0,)


def test_held_blobs_make_their_fan_out_directory_only_when_it_is_missing(tmp_path, monkeypatch):
    """Publishing small objects held in memory costs no `mkdir` of a blobs/<sha[:2]> directory that exists and no
    uuid4 per object; a missing directory is made, and a missing temporary file still fails."""
    import uuid

    import dwcp.manager.store as store_module

    store = ObjectStore(tmp_path / "objects")
    calls = {"mkdir": 0, "uuid4": 0}
    real_mkdir, real_uuid4 = os.mkdir, uuid.uuid4

    def counted(name, real):
        def call(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)
        return call

    monkeypatch.setattr(os, "mkdir", counted("mkdir", real_mkdir))
    monkeypatch.setattr(uuid, "uuid4", counted("uuid4", real_uuid4))
    first = [os.urandom(4096) for _ in range(600)]  # most of the 256 prefixes, several objects each
    store.publish_held([(f"a{i}", body, hashlib.sha256(body).hexdigest()) for i, body in enumerate(first)])
    prefixes = {hashlib.sha256(body).hexdigest()[:2] for body in first}
    assert calls["mkdir"] == len(prefixes) and calls["uuid4"] == 0  # one per directory made
    calls["mkdir"] = 0
    second = [os.urandom(4096) for _ in range(200)]
    shas = [hashlib.sha256(body).hexdigest() for body in second]
    known = [i for i, h in enumerate(shas) if h[:2] in prefixes]
    store.publish_held([(f"b{i}", second[i], shas[i]) for i in known])
    assert calls == {"mkdir": 0, "uuid4": 0}  # every directory was there
    for i, body in enumerate(first):
        assert store.latest(f"a{i}").sha256 == hashlib.sha256(body).hexdigest()
        assert store.blob_path(hashlib.sha256(body).hexdigest()).read_bytes() == body
    for i in known:
        assert store.blob_path(shas[i]).read_bytes() == second[i]
    lone = b"made again"
    sha_lone = hashlib.sha256(lone).hexdigest()
    fan_out = store.blob_path(sha_lone).parent
    if fan_out.exists():  # 600 random objects miss a given prefix ~10% of the time
        for blob in fan_out.glob("*"):
            blob.unlink()
        fan_out.rmdir()
    store.publish_held([("lone", lone, sha_lone)])
    assert calls["mkdir"] == 1 and store.blob_path(sha_lone).read_bytes() == lone
    with pytest.raises(FileNotFoundError):
        store_module._move_into_place(tmp_path / "no-such-file", store.blob_path(sha_lone))
    store.close()


def test_a_receivers_offer_looks_up_the_key_without_waiting_for_a_commit_in_progress(tmp_path):
    """An OFFER asks the store for the key's latest version (its delta base). While the writing connection is held
    by a commit's fsync or by SQLite's automatic WAL checkpoint (every 1,000 pages), the lookup still answers:
    it reads through a connection of its own. Session 11: on the one shared connection, lookups waited 66-172 ms
    behind every third landed batch of five 256 KiB objects (the shaped benchmark's 1000 Mbit/s small bucket)."""
    import threading

    store = ObjectStore(tmp_path / "objects")
    body = os.urandom(1000)
    (version,) = store.publish_held([("k", body, hashlib.sha256(body).hexdigest())])
    rx = Receiver(store)
    found: list = []
    with store._lock:  # a commit (or a WAL checkpoint inside one) in progress on the writing connection
        lookup = threading.Thread(target=lambda: found.append((store.latest("k"), store.versions("k"),
                                                               rx.offer("manager-0", offer(body, tid="t2")))))
        lookup.start()
        lookup.join(5)
        answered = list(found)
    lookup.join(5)
    assert answered, "the lookup waited for the writer's lock"
    latest, versions, inc = answered[0]
    assert latest == version and versions == [version] and inc.base_sha256 == version.sha256
    store.close()


def test_a_commit_leaves_the_wal_checkpoint_to_the_checkpoint_thread(tmp_path, monkeypatch):
    """Landing held objects (`publish_held`) past SQLite's default 1,000-page mark does not copy the WAL into the
    database file inside the commit (session 11: the commit that did took 91-174 ms, a batch's COMMIT_MANY); the
    checkpoint thread's `wal_checkpoint` does, and copies every page."""
    import dwcp.manager.store as store_module

    monkeypatch.setattr(store_module, "CHECKPOINT_SECONDS", 3600.0)  # the thread's rounds out of the way
    store = ObjectStore(tmp_path / "objects")
    index = tmp_path / "objects" / "index.sqlite"
    before = index.stat().st_size
    for n in range(3):  # ~6 MB in three commits: ~1,500 pages, past the default mark in the second
        bodies = [os.urandom(200_000) for _ in range(10)]
        store.publish_held([(f"b{n}/{i}", b, hashlib.sha256(b).hexdigest()) for i, b in enumerate(bodies)])
    assert index.stat().st_size - before < 1 << 20  # nothing copied into the database file by the commits
    pages, copied = store.wal_checkpoint()
    assert pages > 1000 and copied == pages
    assert index.stat().st_size - before > 5 << 20
    assert store.latest("b2/9").size == 200_000
    store.close()
