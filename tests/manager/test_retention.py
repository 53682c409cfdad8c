"""The object store keeps the newest `keep_versions` versions of each key and only the blobs they name."""

from __future__ import annotations

import os
import sqlite3
import time

import pytest

from dwcp.manager.store import ObjectStore
from dwcp.runtime.inventory import parse_inventory
from tests.manager.conftest import CHUNK, sha


def put(store: ObjectStore, key: str, data: bytes):
    ingest = store.begin_put()
    ingest.write(data)
    return ingest.commit(key)


def until(done, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"not within {timeout} s"
        time.sleep(0.05)


def blob_files(store: ObjectStore) -> set[str]:
    return {p.name for p in store.blob_dir.glob("*/*")}


def landing_rows(store: ObjectStore) -> set[str]:
    db = sqlite3.connect(store.root / "index.sqlite")
    try:
        return {h for (h,) in db.execute("SELECT sha256 FROM landing")}
    finally:
        db.close()


@pytest.mark.parametrize("size", [100, 200 * 1024, 3 << 20], ids=["small", "landed", "file"])
def test_the_newest_versions_are_kept_and_older_rows_and_their_blobs_go(tmp_path, size):
    store = ObjectStore(tmp_path / "objects", keep_versions=2)
    bodies = [os.urandom(size) for _ in range(5)]
    for body in bodies:
        put(store, "k", body)
    store.collect()
    assert [v.version for v in store.versions("k")] == [4, 5]
    assert blob_files(store) == {sha(bodies[3]), sha(bodies[4])}
    assert landing_rows(store) <= {sha(bodies[3]), sha(bodies[4])}  # a pruned small blob's bytes go too
    assert store.stats() == (2, 2, 2 * size)
    store.close()


def test_a_blob_shared_by_two_keys_stays_while_one_still_names_it(tmp_path):
    store = ObjectStore(tmp_path / "objects", keep_versions=1)
    shared = os.urandom(4096)
    put(store, "a", shared)
    put(store, "b", shared)
    put(store, "a", b"a's next version")  # a's row naming `shared` is pruned; b's still names it
    store.collect()
    assert [v.sha256 for v in store.versions("a")] == [sha(b"a's next version")]
    assert store.has_blob(sha(shared)) and store.latest("b").sha256 == sha(shared)
    put(store, "b", b"b's next version")  # now nothing names it
    store.collect()
    assert not store.has_blob(sha(shared))
    store.close()


def test_a_pinned_blob_and_its_version_stay_until_unpinned(tmp_path):
    store = ObjectStore(tmp_path / "objects", keep_versions=1)
    old = put(store, "k", os.urandom(300 * 1024))
    store.pin([old.sha256])  # e.g. a transfer of v1 still queued or sending
    put(store, "k", b"v2")
    put(store, "k", b"v3")
    store.collect()
    assert store.has_blob(old.sha256)
    assert [v.version for v in store.versions("k")] == [1, 3]  # v1 kept past the rule while pinned
    store.unpin([old.sha256])
    until(lambda: not store.has_blob(old.sha256))  # the checkpoint thread prunes it again and collects its blob
    assert [v.version for v in store.versions("k")] == [3]
    store.close()


def test_a_blob_pinned_after_its_row_was_pruned_is_kept_until_unpinned(tmp_path):
    store = ObjectStore(tmp_path / "objects", keep_versions=1)
    old = put(store, "k", os.urandom(300 * 1024))
    put(store, "k", b"v2")  # v1's row is gone; its blob waits for collect
    store.pin([old.sha256])
    store.collect()
    assert store.has_blob(old.sha256)
    store.unpin([old.sha256])
    store.collect()
    assert not store.has_blob(old.sha256)
    store.close()


def test_content_published_again_while_its_blob_is_collected_keeps_its_file(tmp_path):
    store = ObjectStore(tmp_path / "objects", keep_versions=1)
    body = os.urandom(100 * 1024)
    put(store, "k", body)
    put(store, "k", b"v2")  # body's blob is unreferenced, not yet collected
    put(store, "other", body)  # the same content again: named by a row, so collect keeps it
    store.collect()
    assert store.has_blob(sha(body))
    assert b"".join(store.read_range(sha(body), 0, len(body))) == body
    store.close()


def test_orphan_blobs_and_landing_rows_are_swept_at_start(tmp_path):
    store = ObjectStore(tmp_path / "objects", keep_versions=3)
    kept = put(store, "k", b"kept")
    store.close()
    orphan = os.urandom(5000)  # renamed into place, then a crash before its version row
    path = store.blob_path(sha(orphan))
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(orphan)
    db = sqlite3.connect(store.root / "index.sqlite")
    db.execute("INSERT INTO landing VALUES (?, ?)", (sha(b"landed"), b"landed"))  # its row pruned, then a crash
    db.commit()
    db.close()
    reopened = ObjectStore(tmp_path / "objects", keep_versions=3)
    assert not path.exists()
    assert sha(b"landed") not in landing_rows(reopened)
    assert reopened.has_blob(kept.sha256) and reopened.latest("k") == kept
    reopened.close()


def test_a_store_opened_with_fewer_versions_to_keep_prunes_at_start(tmp_path):
    store = ObjectStore(tmp_path / "objects", keep_versions=10)
    bodies = [os.urandom(70 * 1024) for _ in range(6)]
    for body in bodies:
        put(store, "k", body)
    store.close()
    reopened = ObjectStore(tmp_path / "objects", keep_versions=2)
    assert [v.version for v in reopened.versions("k")] == [5, 6]
    assert blob_files(reopened) == {sha(bodies[4]), sha(bodies[5])}
    reopened.close()


def test_a_get_started_before_its_version_is_pruned_still_reads_it(tmp_path):
    store = ObjectStore(tmp_path / "objects", keep_versions=1)
    body = os.urandom(3 << 20)
    v1 = put(store, "k", body)
    blocks = store.read_range(v1.sha256, 0, len(body))  # a response waiting to be sent
    put(store, "k", b"v2")
    store.collect()
    assert not store.has_blob(v1.sha256)
    assert b"".join(blocks) == body
    store.close()


def manager_settings(**settings) -> object:
    services = {"manager": {"instances": [{"port": 18000}], "settings": settings}}
    return parse_inventory({"name": "test", "services": services}).spec("manager").settings


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (0, "greater than or equal to 1"),
        (-1, "greater than or equal to 1"),
        ("many", "valid integer"),
        (2.5, "fractional part"),
    ],
)
def test_bad_keep_versions_is_refused_naming_the_field(value, why):
    with pytest.raises(ValueError, match=rf"services\.manager\.settings\.keep_versions: .*{why}"):
        manager_settings(keep_versions=value)


def test_keep_versions_is_coerced_like_the_other_settings_and_defaults_to_four():
    assert manager_settings(keep_versions="7").keep_versions == 7
    assert manager_settings().keep_versions == 4


def test_keep_versions_reaches_the_sites_store_and_its_metrics(make_sites):
    (a,) = make_sites(1, settings={"keep_versions": 2})
    assert a.site.store.keep_versions == 2
    for n in range(5):
        a.put("k", f"version {n}".encode() * 1000)
    a.site.store.collect()
    assert a.put("j", b"j")["version"] == 1  # another key: nothing of its own to prune
    text = a.client.get("/metrics").text
    assert "dwcp_store_versions 3.0" in text
    assert a.metric("dwcp_store_versions") == 3
    assert a.metric("dwcp_store_blobs") == 3
    assert a.metric("dwcp_store_pruned_versions_total") == 3
    assert a.metric("dwcp_store_pruned_blobs_total") == 3
    assert a.metric("dwcp_store_pruned_bytes_total") == 3 * len(b"version 0" * 1000)


def test_a_transfer_of_a_version_pruned_mid_way_retries_with_its_bytes_kept(make_sites):
    calls = []

    def newer_versions_then_a_lost_connection(i: int, data: bytes) -> bytes:
        if not calls:  # the first chunk of the first attempt: two newer versions land, then the attempt fails
            calls.append(i)
            put(a.site.store, "k", b"v2")
            put(a.site.store, "k", b"v3")
            a.site.store.collect()
            raise OSError("connection lost")
        return data

    a, b = make_sites(
        2, settings={"keep_versions": 1, "transfer_retry_limit": 3}, tamper={0: newer_versions_then_a_lost_connection}
    )
    old = os.urandom(4 * CHUNK)
    a.put("k", old)
    state = a.transfer("k", "manager-1")
    assert state["state"] == "done" and len(calls) == 1  # one attempt failed, the retry sent v1
    assert b.client.get("/v1/objects/k").content == old
    # v1 was kept past the rule while its transfer needed it; once done, the checkpoint thread prunes it
    until(lambda: a.site.store.stats()[:2] == (1, 1) and not a.site.store.has_blob(sha(old)))
    assert a.metric("dwcp_store_pinned_blobs") == 0


def test_a_resumed_transfer_whose_delta_base_was_pruned_offers_no_base(tmp_path):
    from dwcp.manager.incoming import Receiver

    store = ObjectStore(tmp_path / "objects", keep_versions=1)
    base = put(store, "k", os.urandom(3 * 4096))
    body = os.urandom(3 * 4096)
    offer = {"tid": "t1", "key": "k", "size": len(body), "sha256": sha(body), "chunk_bytes": 4096, "chunks": 3}
    rx = Receiver(store)
    inc = rx.offer("manager-0", offer)
    assert inc.base_sha256 == base.sha256 and store.pinned_blobs() == 1  # pinned while chunks may need it
    inc.write(0, body[:4096])
    inc.close()
    store.close()
    store = ObjectStore(tmp_path / "objects", keep_versions=1)  # a restart: the pin went with the process
    put(store, "k", b"a newer version from elsewhere")  # prunes the base
    store.collect()
    resumed = Receiver(store).offer("manager-0", offer)
    assert resumed.have == {0} and resumed.base_sha256 is None and resumed.base_size == 0
    store.close()


def test_a_receivers_delta_base_gone_mid_transfer_is_sent_whole_not_failed(make_sites):
    removed = []

    def remove_the_receivers_base(i: int, data: bytes) -> bytes:
        if i == 3 and not removed:  # as if pruned behind the receiver's pin: deltas from here cannot decode
            base = b.site.store.latest("k")
            b.site.store.blob_path(base.sha256).unlink()
            removed.append(base.sha256)
        return data

    a, b = make_sites(2, settings={"transfer_retry_limit": 2}, tamper={0: remove_the_receivers_base})
    old = os.urandom(8 * CHUNK)
    a.put("k", old)
    a.site.transfers.tamper = None
    assert a.transfer("k", "manager-1")["state"] == "done"
    a.site.transfers.tamper = remove_the_receivers_base
    new = old[:CHUNK] + b"an edit" + old[CHUNK:]
    a.put("k", new)
    state = a.transfer("k", "manager-1")
    assert state["state"] == "done", state
    assert removed and state["codecs"].get("delta", 0) >= 1 and state["codecs"].get("none", 0) >= 1
    assert a.metric("dwcp_transfer_chunk_retries_total", {"reason": "base"}) >= 1
    assert b.client.get("/v1/objects/k").content == new


def test_a_delta_base_the_sender_pruned_means_a_whole_transfer(make_sites):
    a, b = make_sites(2, settings={"keep_versions": 1})
    old = os.urandom(6 * CHUNK)
    a.put("k", old)
    assert a.transfer("k", "manager-1")["state"] == "done"
    a.put("k", old[:100] + b"edit" + old[100:])
    newest = old[:200] + b"edit" + old[200:]
    a.put("k", newest)  # the sender keeps only this: the receiver's version (v1) is gone here
    until(lambda: not a.site.store.has_blob(sha(old)))
    state = a.transfer("k", "manager-1")
    assert state["state"] == "done" and "delta" not in state["codecs"]
    assert b.client.get("/v1/objects/k").content == newest


def test_a_restart_keeps_what_an_unfinished_transfer_sends_and_prunes_the_rest(tmp_path):
    from dwcp.manager.site import ManagerSite
    from tests.manager.conftest import context, manager_inventory

    roomy, tight = manager_inventory(2, {"keep_versions": 10}), manager_inventory(2, {"keep_versions": 1})
    site = ManagerSite(context(roomy, 0, tmp_path))  # never started: its transfer stays queued in the journal
    old = put(site.store, "k", os.urandom(100 * 1024))
    site.transfers.submit(old, "manager-1")
    for n in range(3):
        put(site.store, "k", f"v{n + 2}".encode())
    site.transfers.log.close()
    site.store.close()
    restarted = ManagerSite(context(tight, 0, tmp_path))  # keep_versions 1 now: v2 and v3 go, v1 is being sent
    assert [v.version for v in restarted.store.versions("k")] == [1, 4]
    assert restarted.store.has_blob(old.sha256) and restarted.store.pinned_blobs() == 1
    assert not restarted.store.has_blob(sha(b"v2")) and not restarted.store.has_blob(sha(b"v3"))
    restarted.transfers.log.close()
    restarted.store.close()
