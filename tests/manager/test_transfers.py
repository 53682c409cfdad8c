"""Objects round-trip between two sites over the peer port, chunked, checksummed, with deltas and retries."""

from __future__ import annotations

import os

import pytest

from tests.manager.conftest import CHUNK, mixed, sha, stall_selector

pytestmark = pytest.mark.network


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 1])
def test_object_arrives_intact_at_every_size_around_chunk_boundaries(make_sites, size):
    a, b = make_sites(2)
    body = mixed(size)
    stored = a.put("data/obj.bin", body)
    assert stored == {"key": "data/obj.bin", "size": size, "sha256": sha(body), "version": 1}
    state = a.transfer("data/obj.bin", "manager-1")
    assert state["state"] == "done", state
    assert state["chunks_done"] == state["chunks_total"] == max(1, -(-size // CHUNK))
    assert state["sha256"] == sha(body)
    got = b.client.get("/v1/objects/data/obj.bin")
    assert got.status_code == 200 and got.content == body
    assert got.headers["x-object-sha256"] == sha(body)


def test_a_second_transfer_to_the_same_peer_reuses_the_first_ones_connections(make_sites):
    a, b = make_sites(2)
    first, second = os.urandom(4 * CHUNK), os.urandom(4 * CHUNK + 7)
    a.put("one", first)
    a.put("two", second)
    a.first_probe_done()  # its connection waits in the pool; no other probe comes during the test
    sessions = a.site.transfers.sessions
    assert a.transfer("one", "manager-1")["state"] == "done"
    dials, reuses = sessions.dials, sessions.reuses
    assert (dials, reuses) == (4, 1)  # the probe's, then three more streams (the OFFER took the probe's)
    state = a.transfer("two", "manager-1")
    assert state["state"] == "done" and state["error"] is None and state["resumes"] == 0
    assert sessions.dials == dials and sessions.reuses == reuses + 4  # no TCP connect, no TLS handshake
    assert b.client.get("/v1/objects/two").content == second


def test_compressible_chunks_travel_compressed_and_random_ones_raw(make_sites):
    a, b = make_sites(2)
    body = b"log line 42 ok\n" * (4 * CHUNK // 15) + os.urandom(4 * CHUNK)
    a.put("k", body)
    state = a.transfer("k", "manager-1")
    assert state["state"] == "done"
    assert state["codecs"].get("none", 0) >= 3  # the random half
    assert sum(n for c, n in state["codecs"].items() if c != "none") >= 3
    assert state["bytes_wire"] < 0.6 * state["bytes_raw"]
    assert b.client.get("/v1/objects/k").content == body


def test_corrupted_chunk_is_refused_and_sent_again(make_sites):
    damaged = []

    def flip_once(index: int, data: bytes) -> bytes:
        if index == 1 and not damaged:
            damaged.append(index)
            return bytes([data[0] ^ 0xFF]) + data[1:]
        return data

    a, b = make_sites(2, tamper={0: flip_once})
    body = os.urandom(3 * CHUNK)
    a.put("k", body)
    state = a.transfer("k", "manager-1")
    assert state["state"] == "done" and damaged == [1]
    assert a.metric("dwcp_transfer_chunk_retries_total", {"reason": "checksum"}) == 1
    assert b.client.get("/v1/objects/k").content == body


def test_modified_object_travels_as_a_small_delta_against_the_receivers_old_version(make_sites):
    a, b = make_sites(2)
    old = os.urandom(8 * CHUNK)
    a.put("vm.img", old)
    assert a.transfer("vm.img", "manager-1")["state"] == "done"
    new = bytearray(old)
    new[100:120] = b"x" * 20  # an edit in chunk 0
    new[5 * CHUNK + 7: 5 * CHUNK + 7] = b"inserted bytes shift the rest"  # an insertion in chunk 5
    new = bytes(new)
    assert a.put("vm.img", new)["version"] == 2
    state = a.transfer("vm.img", "manager-1")
    assert state["state"] == "done"
    assert state["codecs"].get("delta", 0) == state["chunks_total"]
    assert state["bytes_wire"] < len(new) // 20
    assert a.metric("dwcp_transfer_delta_saved_bytes_total") > 7 * CHUNK
    got = b.client.get("/v1/objects/vm.img")
    assert got.content == new and got.headers["x-object-version"] == "2"


def test_transfer_completes_on_the_local_rule_while_the_selector_is_down(make_sites):
    dead = {"compression": {"instances": [{"host": "127.0.0.1", "port": 9}]}}  # nothing listens on port 9
    a, b = make_sites(2, extra=dead, settings={"selector_window": 1})
    body = mixed(6 * CHUNK)
    a.put("k", body)
    state = a.transfer("k", "manager-1")
    assert state["state"] == "done"
    assert b.client.get("/v1/objects/k").content == body
    breaker = {"service": "dwcp-manager", "breaker": "selector"}
    assert a.metric("dwcp_circuit_breaker_state", {**breaker, "state": "open"}) == 1
    assert a.metric("dwcp_transfer_codec_decisions_total", {"source": "local"}) == 6
    health = a.client.get("/health").json()
    assert health["checks"]["selector"]["status"] == "degraded"


def test_chunks_go_with_the_local_rule_rather_than_wait_on_a_slow_selector(make_sites):
    a, b = make_sites(2, settings={"selector_timeout_s": 10.0})
    a.site.probe("manager-1")  # a measured link: a chunk waits a tenth of its wire time, not the timeout
    released = stall_selector(a)
    body = mixed(4 * CHUNK)
    a.put("k", body)
    try:
        state = a.transfer("k", "manager-1", timeout=15)  # done while the selector has not answered
    finally:
        released.set()
    assert state["state"] == "done" and "zstd-19" not in state["codecs"]
    assert a.metric("dwcp_transfer_codec_decisions_total", {"source": "ahead_of_selector"}) == 4
    assert b.client.get("/v1/objects/k").content == body


def test_several_versions_and_transfers_keep_each_sites_versions_apart(make_sites):
    a, b, c = make_sites(3)
    a.put("k", b"one")
    a.put("k", b"two")
    assert a.transfer("k", "manager-2")["state"] == "done"
    assert c.client.get("/v1/objects/k").content == b"two"
    assert b.client.get("/v1/objects/k").status_code == 404


def test_a_forced_codec_is_used_for_every_chunk_and_an_unknown_one_is_refused(make_sites):
    a, b = make_sites(2)
    body = mixed(3 * CHUNK)
    a.put("k", body)
    resp = a.client.post("/v1/transfers", json={"key": "k", "to": "manager-1", "codec": "zstd-3"})
    state = a.wait(resp.json()["id"])
    assert state["state"] == "done" and set(state["codecs"]) <= {"zstd-3", "none"}  # none: zstd did not pay
    assert state["codecs"]["zstd-3"] >= 2
    assert b.client.get("/v1/objects/k").content == body
    resp = a.client.post("/v1/transfers", json={"key": "k", "to": "manager-1", "codec": "gzip"})
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "codec"


def test_cpu_guard_steps_down_from_a_codec_this_host_cannot_run_at_link_speed(make_sites):
    from dwcp.manager.plan import Plan
    from dwcp.manager.transfers import Transfer

    a, _ = make_sites(2)
    transfers = a.site.transfers
    transfers.parallel = 2
    link = a.site.links.get("manager-1")
    link.bandwidth = 100e6
    # output rates: zstd-19 2e6 x 2 x 0.3, zstd-3 40e6 x 2 x 0.4 = 32e6 (both < 100e6); zstd-1 200e6 x 2 x 0.5
    transfers.encode_speed.update({"zstd-19": 2e6, "zstd-3": 40e6, "zstd-1": 200e6})
    transfers.encode_ratio.update({"zstd-19": 0.3, "zstd-3": 0.4, "zstd-1": 0.5})
    plan = Plan(transfers, Transfer(id="t", key="k", version=1, sha256="", size=0, to="manager-1"), -1, link)
    assert plan._keeps_up("zstd-19") == "zstd-1"
    assert plan._keeps_up("zstd-1") == "zstd-1"
    assert plan._keeps_up("lz4") == "lz4"  # not timed yet: trusted
    link.bandwidth = 1e6  # a slow link: even zstd-19's 1.2 MB/s of output keeps it busy
    assert plan._keeps_up("zstd-19") == "zstd-19"
    assert a.metric("dwcp_transfer_codec_decisions_total", {"source": "cpu_guard"}) == 1


def test_the_threads_that_move_bytes_give_way_to_the_http_event_loop(make_sites):
    """Transfers, the peer port and probes run at `bulk_thread_nice`: a busy host runs /health's loop first."""
    import os
    import threading

    def nice_of(thread: threading.Thread) -> int:
        with open(f"/proc/self/task/{thread.native_id}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[16])

    a, _ = make_sites(2)
    assert a.transfer(a.put("bulk", mixed(1 << 20))["key"], "manager-1")["state"] == "done"
    baseline = os.getpriority(os.PRIO_PROCESS, 0)
    bulk = [t for t in threading.enumerate() if t.name.startswith(("transfer-", "peer-", "link-prober"))]
    assert {t.name.split("-")[0] for t in bulk} >= {"transfer", "peer", "link"}
    assert {nice_of(t) for t in bulk} == {max(10, baseline)}
    assert nice_of(threading.main_thread()) == baseline
