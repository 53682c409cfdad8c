"""The cluster benchmark's load (benchmarks/bullshark_cluster.py): no two batches of its clients are equal.

Equal batches have one digest: workers store the second as a duplicate and the log commits it once, so the
benchmark would count fewer transactions than the clients sent and the cluster committed.
"""

from __future__ import annotations

from tests.benchmark_scripts import load_benchmark


def test_every_batch_a_worker_can_seal_from_the_benchmarks_clients_is_unique() -> None:
    bench = load_benchmark("bullshark_cluster")
    tx = 4 + 512
    streams = []
    for index in range(4):
        client = bench.Client(index, 0, 512)
        streams.append(b"".join(bytes(client.next_block()) for _ in range(40)))
    for txs in (bench.BLOCK_TXS, 250, 500_000 // tx):  # sealed by delay, or full at 500 KB
        batches = [s[start:start + txs * tx] for s in streams for start in range(0, len(s) - txs * tx + 1, tx * 37)]
        assert len(set(batches)) == len(batches), txs
    client = bench.Client(0, 0, 512)
    for _ in range(10 * bench.SAMPLE_EVERY_BLOCK):
        client.next_block()
    assert len(client.samples) == 10  # one sample transaction per SAMPLE_EVERY_BLOCK blocks


def test_the_benchmark_counts_a_batch_a_nodes_log_committed_at_two_heights(tmp_path) -> None:
    bench = load_benchmark("bullshark_cluster")
    lines = {0: ["1 aa", "1 bb", "2 cc", "3 aa"],  # aa at heights 1 and 3: committed twice
             1: ["1 aa", "1 bb", "2 cc"]}  # node 2 has no log yet (down): nothing counted
    for node, rows in lines.items():
        worker = tmp_path / "data" / f"bullshark-{node}" / "worker"
        worker.mkdir(parents=True)
        (worker / "committed.log").write_text("\n".join(rows) + "\n")
    assert bench.committed_twice(tmp_path, 3) == [1, 0, 0]



def test_each_block_a_client_hands_its_transport_stays_as_it_was_when_the_next_is_made() -> None:
    """uvloop's transport may queue the object it was given, uncopied: a block patched in place afterwards changed
    what was still queued (equal batches at the workers)."""
    bench = load_benchmark("bullshark_cluster")
    client = bench.Client(0, 0, 512)
    queued = [client.next_block() for _ in range(3)]  # as a transport that has not sent them yet holds them
    assert len({bytes(block) for block in queued}) == 3


def test_the_commit_aligned_rate_counts_between_a_workers_first_and_last_commit_in_the_window(tmp_path) -> None:
    """Samples committed at the window's first commit are not counted (they were sent before it), those up to the
    last commit are, over the time between the two: the edges of the window do not move the figure."""
    bench = load_benchmark("bullshark_cluster")
    commits = {0: [(10.0, 3), (10.5, 2), (11.0, 2), (12.5, 9)],  # 12.5: after the window
               1: [(9.0, 4), (10.2, 1), (10.7, 1), (11.2, 3)]}  # 9.0: before the window
    for node, rows in commits.items():
        worker = tmp_path / "data" / f"bullshark-{node}" / "worker"
        worker.mkdir(parents=True)
        lines = [f"{node * 1000 + k} {at:.6f}" for at, count in rows for k in range(count)]
        (worker / "samples.log").write_text("\n".join(lines) + "\n")
    rate = bench.commit_aligned_tps(tmp_path, 2, since=9.5, until=12.0, txs_per_sample=1000)
    assert rate == 4 * 1000 / 1.0 + 4 * 1000 / 1.0
