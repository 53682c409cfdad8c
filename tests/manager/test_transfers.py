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
    a.site.probe("manager-1")  # a measured link: a chunk waits a share of its wire time, not the timeout
    a.site.transfers.chooser.latency = 1e-6  # its answers were quick: it is asked, then stalls
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


def test_a_transfer_learns_what_each_codec_costs_both_ends_of_its_pipeline(make_sites):
    """The receiver's ACKs report its CPU per chunk and its STATE its boot id: the sender's pipeline costs for
    the peer hold both ends' figures, and both sites here share one kernel."""
    big = 16 * CHUNK  # 1 MiB chunks: reading and compressing one takes over a ms, enough to time the CPU share
    a, b = make_sites(2, settings={"chunk_bytes": big, "chunk_min_bytes": big, "chunk_max_bytes": big})
    body = mixed(3 * big)
    a.put("k", body)
    resp = a.client.post("/v1/transfers", json={"key": "k", "to": "manager-1", "codec": "zstd-3"})
    assert a.wait(resp.json()["id"])["state"] == "done"
    costs = a.site.transfers.costs_for("manager-1")
    assert costs.comp["zstd-3"] > 0 and costs.dec["zstd-3"] > 0
    assert costs.tx_rest > 0 and costs.rx_rest > 0
    assert 0 < costs.share <= 1
    assert costs.same_host
    assert a.metric("dwcp_transfer_pipeline_cpu_seconds_per_byte",
                    {"peer": "manager-1", "side": "receiver", "part": "zstd-3"}) == costs.dec["zstd-3"]
    assert a.metric("dwcp_transfer_pipeline_cpu_share", {"peer": "manager-1"}) == costs.share
    assert b.client.get("/v1/objects/k").content == body


def test_a_plan_steps_down_to_none_when_the_shared_cpu_not_the_link_sets_the_pace(make_sites, tmp_path):
    import os

    from dwcp.manager.plan import Plan
    from dwcp.manager.transfers import Transfer

    a, _ = make_sites(2)
    transfers = a.site.transfers
    link = a.site.links.get("manager-1")
    link.bandwidth = 125e6
    costs = transfers.costs_for("manager-1")
    n = 4 << 20
    costs.same_host = True
    path = tmp_path / "obj"
    path.write_bytes(mixed(2 * n))  # the heavier codecs on the ladder are priced from a chunk's sample
    fd = os.open(path, os.O_RDONLY)
    try:
        plan = Plan(transfers, Transfer(id="t", key="k", version=1, sha256="", size=2 * n, to="manager-1",
                                        chunk_bytes=n, chunks_total=2), fd, link)
        # one lz4 chunk at 0.62 of its size, 2 ns/B compressing and 1.5 ns/B besides, on a thread given 5% of a
        # core; the receiver spent 2.9 ns/B of which 0.5 decoding
        plan.sent(0, "lz4", "lz4", n, int(0.62 * n), 2e-9 * n, 1.5e-9 * n, 0.0005, 0.01)
        plan.acked(0, {"cpu": 2.9e-9 * n, "dcpu": 0.5e-9 * n})
        assert plan._fastest("lz4", 1) == "none"
        assert a.metric("dwcp_transfer_codec_decisions_total", {"source": "cpu_guard"}) == 1
        costs.share = 1.0  # the same figures on an idle host: a smaller wire wins
        assert plan._fastest("lz4", 1) != "none"
    finally:
        os.close(fd)


def test_a_plan_steps_a_none_pick_up_when_the_link_not_the_cpu_sets_the_pace(make_sites, tmp_path):
    """The pricing looks up the ladder too: a chunk of compressible bytes the selector (or the local rule) gave
    `none` goes compressed when the measured pipeline has CPU to spare for the link, and the step is counted as
    `source="pricing_up"`. A payload too short on the wire for that to pay is not priced for a step up."""
    import os

    from dwcp.manager.costs import STEP_UP_MIN_WIRE_S
    from dwcp.manager.plan import Plan
    from dwcp.manager.transfers import Transfer

    a, _ = make_sites(2)
    transfers = a.site.transfers
    link = a.site.links.get("manager-1")
    costs = transfers.costs_for("manager-1")
    costs.same_host, costs.share, costs.tx_rest, costs.rx_rest = True, 1.0, 0.9e-9, 2.9e-9
    body = (b"2026-12-04T19:00:00 INFO request served in 3 ms path=/v1/objects/x status=200\n" * 8000)[:8 * CHUNK]
    path = tmp_path / "obj"
    path.write_bytes(body)
    fd = os.open(path, os.O_RDONLY)

    def plan() -> Plan:
        return Plan(transfers, Transfer(id="t", key="k", version=1, sha256="", size=len(body), to="manager-1",
                                        codec="none", chunk_bytes=CHUNK, chunks_total=8), fd, link)

    try:
        link.bandwidth = 12.5e6  # 100 Mbit/s: 512 KiB is 42 ms on the wire
        assert len(body) / link.bandwidth >= STEP_UP_MIN_WIRE_S
        p = plan()
        chosen = p._fastest("none", 1)
        assert chosen != "none" and chosen in p._sampled
        assert a.metric("dwcp_transfer_codec_decisions_total", {"source": "pricing_up"}) == 1
        costs.share = 0.005  # a host that gives a stream thread 0.5% of a core: the CPU is the pace, none stays
        assert p._fastest("none", 1) == "none"
        assert a.metric("dwcp_transfer_codec_decisions_total", {"source": "pricing_up"}) == 1
        costs.share = 1.0
        link.bandwidth = 125e6  # 4 ms on the wire: not worth compressing a sample with the heavier codecs
        p = plan()
        assert p._fastest("none", 1) == "none" and "zstd-9" not in p._sampled
    finally:
        os.close(fd)


def test_a_transfer_hashes_each_byte_once_with_sha256_and_twice_with_xxh3(make_sites, monkeypatch):
    """The checksums' CPU, counted (session 13: the 1000 Mbit/s CPU gap had been put down to three sha256 passes):
    a transfer sha256-hashes each byte once (the receiver's running whole-object hash; the sender's sha256 is the
    store's, from the PUT) and xxh3-checksums it twice (the sender for the CHUNK, the receiver to verify it)."""
    import hashlib
    import types

    from dwcp.manager import chunks, incoming, store

    hashed = {"sha256": 0, "xxh3": 0}

    class CountingSha256:
        def __init__(self) -> None:
            self._h = hashlib.sha256()

        def update(self, data: bytes) -> None:
            hashed["sha256"] += len(data)
            self._h.update(data)

        def hexdigest(self) -> str:
            return self._h.hexdigest()

    def xxh3(data: bytes) -> str:
        hashed["xxh3"] += len(data)
        return xxh3_128(data)

    xxh3_128 = chunks.xxhash.xxh3_128_hexdigest
    monkeypatch.setattr(incoming, "hashlib", types.SimpleNamespace(sha256=CountingSha256))
    monkeypatch.setattr(store, "hashlib", types.SimpleNamespace(sha256=CountingSha256))
    monkeypatch.setattr(chunks, "xxhash", types.SimpleNamespace(xxh3_128_hexdigest=xxh3))
    a, b = make_sites(2)
    body = os.urandom(16 * CHUNK)
    a.put("k", body)
    assert hashed == {"sha256": len(body), "xxh3": 0}  # the PUT's
    resp = a.client.post("/v1/transfers", json={"key": "k", "to": "manager-1", "codec": "none"})
    assert a.wait(resp.json()["id"])["state"] == "done"
    assert hashed == {"sha256": 2 * len(body), "xxh3": 2 * len(body)}
    assert b.client.get("/v1/objects/k").content == body


def test_chunks_are_compressed_and_decoded_where_they_lie_not_copied_first(make_sites, monkeypatch):
    """The sender compresses a chunk from the blob's mapping and the receiver decodes it from the connection's
    buffer: the codecs read any buffer, and a `bytes` copy before each cost ~1 ms of CPU per 16 MiB (session 13)."""
    from dwcp.manager import chunks

    given: list[str] = []
    real_codecs = chunks._codecs

    def recording(key: str):
        compress, decompress = real_codecs(key)
        return ((lambda d: given.append(f"compress {type(d).__name__}") or compress(d)),
                (lambda d: given.append(f"decode {type(d).__name__}") or decompress(d)))

    monkeypatch.setattr(chunks, "_codecs", recording)
    big = 4 * CHUNK  # chunks of at least MAP_MIN bytes are sent from the mapping
    a, b = make_sites(2, settings={"chunk_bytes": big, "chunk_min_bytes": big, "chunk_max_bytes": big})
    body = (b"2026-12-04T19:00:00 INFO request served in 3 ms path=/v1/objects/x status=200\n" * 16000)[:2 * big]
    a.put("k", body)
    resp = a.client.post("/v1/transfers", json={"key": "k", "to": "manager-1", "codec": "zstd-3"})
    assert a.wait(resp.json()["id"])["state"] == "done"
    assert b.client.get("/v1/objects/k").content == body
    assert given.count("compress memoryview") == 2 and given.count("decode memoryview") == 2, given


def test_every_chunk_counts_what_decided_its_codec(make_sites):
    """dwcp_transfer_codec_sources_total: one count per chunk, by source and codec (the benchmark's record of
    why a run went the way it did)."""
    a, _ = make_sites(2)
    body = mixed(6 * CHUNK)
    a.put("k", body)
    state = a.transfer("k", "manager-1")
    assert state["state"] == "done"
    text = a.client.get("/metrics").text
    counted = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith("dwcp_transfer_codec_sources_total{"))
    assert counted == state["chunks_total"] == 6
    a.put("fixed", body)
    resp = a.client.post("/v1/transfers", json={"key": "fixed", "to": "manager-1", "codec": "lz4"})
    assert resp.status_code == 202
    assert a.wait(resp.json()["id"])["state"] == "done"
    assert a.metric("dwcp_transfer_codec_sources_total", {"source": "fixed", "codec": "lz4"}) == 6


def test_the_codec_log_has_one_line_per_chunk_saying_what_decided_it(make_sites, tmp_path):
    """settings.codec_log: per chunk its source, pick and codec, the ratio it left at and when it was decided,
    sent and acknowledged, and per transfer when its COMMIT left and its DONE came back (the benchmark's record of
    why a cell went the way it did)."""
    import json

    log = tmp_path / "codecs.jsonl"
    a, _ = make_sites(2, settings={"codec_log": str(log)})
    a.put("k", mixed(6 * CHUNK))
    state = a.transfer("k", "manager-1")
    assert state["state"] == "done"
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    mine = sorted((r for r in lines if r["tid"] == state["id"] and r["src"] != "commit"), key=lambda r: r["i"])
    assert [r["i"] for r in mine] == list(range(6))
    # and one record of the transfer's COMMIT: it left after the last ACK, its DONE came back after it
    [commit] = [r for r in lines if r["tid"] == state["id"] and r["src"] == "commit"]
    assert max(r["t_acked"] for r in mine) <= commit["t_commit"] <= commit["t_done"]
    assert sum(1 for r in mine if r["sent_as"] != "none") == sum(n for c, n in state["codecs"].items() if c != "none")
    for r in mine:
        assert r["src"] in {"selector", "local", "not_asked", "ahead_of_selector", "cpu_guard", "pricing_up"}
        assert r["len"] == CHUNK and 0 < r["ratio"] <= 1.0
        assert r["t_decided"] <= r["t_sent"] <= r["t_acked"]


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


def test_codecs_not_sent_yet_are_priced_at_their_ratio_on_the_chunks_sample(make_sites, tmp_path):
    """Before a transfer has sent a chunk in a codec, that codec's ratio is its ratio on the chunk's sample;
    once the pick was sent, the others are scaled by how the pick's real ratio compares with its sample's."""
    import os

    from dwcp.manager import chunks
    from dwcp.manager.plan import Plan, candidates
    from dwcp.manager.transfers import Transfer

    a, _ = make_sites(2)
    transfers = a.site.transfers
    link = a.site.links.get("manager-1")
    link.bandwidth = 12.5e6
    costs = transfers.costs_for("manager-1")
    costs.same_host, costs.share, costs.tx_rest, costs.rx_rest = True, 0.05, 1.5e-9, 2.4e-9
    # zstd-9 costs this host far more than the lighter codecs: on 0.4 cores the pipeline is CPU-bound on it
    costs.comp.update({"zstd-9": 60e-9, "zstd-3": 10e-9, "zstd-1": 6e-9, "lz4": 3e-9})
    costs.dec.update({"zstd-9": 1e-9, "zstd-3": 1e-9, "zstd-1": 1e-9, "lz4": 0.5e-9})

    def soonest(ratios: dict[str, float]) -> str:
        best = None
        for k in candidates("zstd-9"):  # the pick, then lighter ones; a tie goes to the lighter
            t = costs.seconds_per_byte(k, ratios[k], link.bandwidth, True)
            if best is None or t <= best[0]:
                best = (t, k)
        return best[1]

    body = mixed(4 * CHUNK)
    path = tmp_path / "obj"
    path.write_bytes(body)
    fd = os.open(path, os.O_RDONLY)
    try:
        plan = Plan(transfers, Transfer(id="t", key="k", version=1, sha256="", size=len(body), to="manager-1",
                                        chunk_bytes=CHUNK), fd, link)
        sample = chunks.sample(fd, CHUNK, CHUNK)
        on_sample = {k: 1.0 if k == "none" else len(chunks.encode(sample, k)) / len(sample)
                     for k in candidates("zstd-9")}
        chosen = plan._fastest("zstd-9", 1)
        assert {k: f.ratio for k, f in plan._sampled.items()} == on_sample
        assert chosen == soonest(on_sample) != "zstd-9"
        assert a.metric("dwcp_transfer_codec_decisions_total", {"source": "cpu_guard"}) == 1
        # zstd-9 sent at 1.5x its sample ratio: the codecs not sent yet are taken at 1.5x theirs (at most 1)
        plan.sent(0, "zstd-9", "zstd-9", CHUNK, int(CHUNK * on_sample["zstd-9"] * 1.5), 0.0, 0.0, 0.0, 0.0)
        costs.share = 1.0
        scaled = {k: plan._ratios.get(k, min(1.0, r * plan._ratios["zstd-9"] / on_sample["zstd-9"]))
                  for k, r in on_sample.items()}
        assert scaled["none"] == 1.0 and scaled["zstd-3"] > on_sample["zstd-3"]
        assert plan._fastest("zstd-9", 1) == soonest(scaled)
    finally:
        os.close(fd)


def test_the_cpu_guard_compares_codecs_on_one_basis_not_ratios_measured_on_different_chunks(make_sites, tmp_path):
    """Each chunk goes in one codec, so two codecs' measured ratios come from different chunks. A zstd-1 chunk of
    zero runs (ratio 0.08) and zstd-3 chunks of text (0.30) must not make zstd-1 look smaller than zstd-3 where the
    link sets the pace: the others are taken at their sample ratio scaled by the pick's measured/sample ratio."""
    import json
    import random

    from dwcp.manager.plan import Plan
    from dwcp.manager.transfers import Transfer

    a, _ = make_sites(2)
    transfers = a.site.transfers
    link = a.site.links.get("manager-1")
    link.bandwidth = 12.5e6  # 100 Mbit/s: with this CPU every candidate is link-bound
    costs = transfers.costs_for("manager-1")
    costs.same_host, costs.share, costs.tx_rest, costs.rx_rest = True, 1.0, 1.5e-9, 2.4e-9
    costs.comp.update({"zstd-9": 200e-9, "zstd-3": 6e-9, "zstd-1": 4e-9, "lz4": 2e-9})
    costs.dec.update({"zstd-9": 1e-9, "zstd-3": 1e-9, "zstd-1": 1e-9, "lz4": 0.5e-9})
    rng = random.Random(14)
    users = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(2000)]
    body = b"".join(json.dumps({"ts": 1_700_000_000 + n, "level": rng.choice(["INFO", "WARN", "ERROR"]),
                                "user": rng.choice(users), "ms": rng.randint(1, 999)}).encode() + b"\n"
                    for n in range(30000))[:8 * CHUNK]  # JSON logs: zstd-1 and zstd-3 within 1% on a sample
    path = tmp_path / "obj"
    path.write_bytes(body)
    fd = os.open(path, os.O_RDONLY)
    try:
        plan = Plan(transfers, Transfer(id="t", key="k", version=1, sha256="", size=len(body), to="manager-1",
                                        chunk_bytes=CHUNK, chunks_total=8), fd, link)
        plan.sent(0, "zstd-1", "zstd-1", CHUNK, int(0.08 * CHUNK), 0.0, 0.0, 0.0, 0.0)  # a chunk of zero runs
        plan.sent(1, "zstd-3", "zstd-3", CHUNK, int(0.30 * CHUNK), 0.0, 0.0, 0.0, 0.0)  # chunks of text
        plan.sent(2, "zstd-3", "zstd-3", CHUNK, int(0.30 * CHUNK), 0.0, 0.0, 0.0, 0.0)
        note: dict = {}
        assert plan._fastest("zstd-3", 3, note) == "zstd-3"
        assert a.metric("dwcp_transfer_codec_decisions_total", {"source": "cpu_guard"}) == 0
        sampled = plan._sampled
        rebased = 0.30 * sampled["zstd-1"].ratio / sampled["zstd-3"].ratio
        assert note["ratios"]["zstd-3"] == [0.3, "measured"]
        assert note["ratios"]["zstd-1"] == [round(min(1.0, rebased), 4), "sample"]
    finally:
        os.close(fd)


@pytest.mark.parametrize("size", [4 * CHUNK, 4 * CHUNK + 1, 8 * CHUNK - 1])
def test_large_chunks_are_sent_from_a_mapping_of_the_blob_not_a_copy(make_sites, monkeypatch, size):
    """Chunks of MAP_MIN bytes and more are checksummed and sent straight from the file's pages (no preadv into
    a buffer: the copy was the sender's largest kernel cost); a shorter last chunk is read as before."""
    import threading

    from dwcp.manager import transfers

    chunk = 4 * CHUNK
    monkeypatch.setattr(transfers, "MAP_MIN", chunk)
    reads: list[int] = []
    preadv = os.preadv

    def counted(fd, buffers, offset, *args):
        if threading.current_thread().name != "peer-conn":  # the receiver reads early chunks back to hash them
            reads.append(sum(len(b) for b in buffers))
        return preadv(fd, buffers, offset, *args)

    a, b = make_sites(2, settings={"chunk_bytes": chunk, "chunk_min_bytes": chunk, "chunk_max_bytes": chunk})
    body = mixed(size, seed=size)
    a.put("mapped/obj.bin", body)
    monkeypatch.setattr(transfers.os, "preadv", counted)
    state = a.transfer("mapped/obj.bin", "manager-1")
    assert state["state"] == "done" and state["sha256"] == sha(body), state
    assert b.client.get("/v1/objects/mapped/obj.bin").content == body
    assert reads == ([size % chunk] if size % chunk else []), reads  # only a last chunk shorter than MAP_MIN


def test_a_blob_shorter_than_its_record_fails_the_mapped_chunk_cleanly(tmp_path):
    from dwcp.manager.transfers import _chunk_view

    path = tmp_path / "blob"
    path.write_bytes(os.urandom(3 << 20))
    fd = os.open(path, os.O_RDONLY)
    try:
        with _chunk_view(fd, 2 << 20, 1 << 20, bytearray(1 << 20)) as whole:
            assert bytes(whole) == path.read_bytes()[2 << 20:]
        os.truncate(path, (2 << 20) + 5)  # a blob cut short: a short view, as a short read would give
        with _chunk_view(fd, 2 << 20, 1 << 20, bytearray(1 << 20)) as short:
            assert len(short) < 1 << 20
    finally:
        os.close(fd)


def test_the_pricing_compresses_the_sample_read_for_the_selector_not_a_second_read(make_sites, monkeypatch):
    """Session 9: each chunk's sample was read for the selector's call and read again by the pricing (16 preads
    each time) before the first chunk's first byte; the pricing now takes the one read for the call."""
    import dwcp.manager.plan as plan_module

    one_chunk = 4 * CHUNK
    a, b = make_sites(2, settings={"chunk_bytes": one_chunk, "chunk_min_bytes": CHUNK, "chunk_max_bytes": one_chunk})
    a.site.links.get("manager-1").bandwidth = 12.5e6
    costs = a.site.transfers.costs_for("manager-1")
    costs.share, costs.tx_rest, costs.rx_rest = 1.0, 1.5e-9, 2.4e-9
    reads: list[int] = []
    real = plan_module.chunks.sample

    def sample(fd, offset, length, *args):
        reads.append(offset)
        return real(fd, offset, length, *args)

    monkeypatch.setattr(plan_module.chunks, "sample", sample)
    body = mixed(3 * CHUNK, seed=3)  # one chunk, more than chunk_min_bytes: the single-transfer path
    a.put("one", body)
    state = a.wait(a.client.post("/v1/transfers", json={"key": "one", "to": "manager-1"}).json()["id"])
    assert state["state"] == "done", state
    assert reads == [0]
    assert b.client.get("/v1/objects/one").content == body


@pytest.mark.parametrize("asked", [False, True])
def test_a_single_transfers_first_chunk_on_a_measured_link_leaves_before_the_others_are_read(make_sites, monkeypatch,
                                                                                             tmp_path, asked):
    """On a measured link a transfer's first chunk leaves in the local rule's codec on its own piece: the other
    chunks of window 0 are not sampled or probed before its first byte, the selector (when worth asking) is asked
    only about the chunks after it, and it is never priced for a step up. Before session 12 the plan read and probed
    every chunk of window 0 and priced the first chunk both ways (zstd-9's sample in a fresh thread) before it left:
    ~5 ms of a 1.6 MiB object's 130 ms at 100 Mbit/s (the lead's idle table: 0.90-0.96 of always-zstd-3's time)."""
    import json

    import httpx

    from dwcp.manager import chunks

    log = tmp_path / "codecs.jsonl"
    a, b = make_sites(2, settings={"codec_log": str(log), "streams": 1})  # one stream: a deterministic order
    a.first_probe_done()  # not overwritten by the scheduled first probe mid-test
    a.site.links.get("manager-1").bandwidth = 12.5e6  # 100 Mbit/s: 6 x 64 KiB is 31 ms on the wire
    costs = a.site.transfers.costs_for("manager-1")  # a pipeline measured before: the pricing runs
    costs.same_host, costs.share, costs.tx_rest, costs.rx_rest = True, 1.0, 1.5e-9, 2.4e-9
    chooser = a.site.chooser
    asked_items: list[int] = []
    if asked:
        def answer(request: httpx.Request) -> httpx.Response:
            items = json.loads(request.content)["items"]
            asked_items.append(len(items))
            return httpx.Response(200, json={"results": [{"codec": "zstd", "level": 3}] * len(items)})

        chooser.urls, chooser._client = ["http://selector"], httpx.Client(transport=httpx.MockTransport(answer))
        chooser.latency = 1e-9  # quick answers: worth asking
    else:
        chooser.latency = 1.0  # a slow selector: not asked about these chunks
    events: list[tuple[str, int]] = []
    real_piece, real_sample = chunks.piece, chunks.sample
    monkeypatch.setattr(chunks, "piece", lambda fd, off, *r, **kw: events.append(("read", off)) or
                        real_piece(fd, off, *r, **kw))
    monkeypatch.setattr(chunks, "sample", lambda fd, off, *r, **kw: events.append(("read", off)) or
                        real_sample(fd, off, *r, **kw))
    transfers = a.site.transfers
    real_send = transfers._encode_and_send

    def send(t, conn, i, *args, **kw):
        events.append(("send", i))
        return real_send(t, conn, i, *args, **kw)

    monkeypatch.setattr(transfers, "_encode_and_send", send)
    body = mixed(6 * CHUNK, seed=7)
    a.put("k", body)
    state = a.transfer("k", "manager-1")
    assert state["state"] == "done" and b.client.get("/v1/objects/k").content == body
    # chunk 0 is decided inside its send: until chunk 1's, only chunk 0's piece (and its sample, to price it) is read
    before = [off for what, off in events[:events.index(("send", 1))] if what == "read"]
    assert before and set(before) == {0}, events
    assert asked_items == ([5] if asked else []), asked_items  # chunks 1-5, never the one that went first
    records = [json.loads(line) for line in log.read_text().splitlines()]
    first = next(r for r in records if r.get("i") == 0 and r["src"] != "commit")
    assert first["rule"] == "first" and first["wait_ms"] == 0.0
    assert first["src"] in ("ahead_of_selector" if asked else "not_asked", "cpu_guard")
    assert not any(k in first["priced_ns"] for k in ("zstd-9",)), first  # no step up before the first byte
    assert len([r for r in records if r["src"] != "commit"]) == 6
