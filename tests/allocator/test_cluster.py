import numpy as np
import pytest

from dwcp.allocator.cluster import CapacityError, ClusterState, HostSpec, default_cluster, load_cluster, save_cluster


def test_placement_that_would_overcommit_is_refused(two_hosts):
    st = ClusterState(two_hosts)
    st.place("a", 0, np.array([3.0, 8, 100]), end=10)
    with pytest.raises(CapacityError):
        st.place("b", 0, np.array([2.0, 1, 1]), end=10)
    assert st.fits(np.array([2.0, 1, 1])).tolist() == [False, True]
    st.check()


def test_random_place_release_never_overcommits_and_conserves_resources():
    rng = np.random.default_rng(3)
    st = ClusterState(default_cluster())
    live = []
    for k in range(3000):
        if live and rng.random() < 0.45:
            before = st.used.copy()
            aid = live.pop(int(rng.integers(len(live))))
            host, demand, _ = st.allocs[aid]
            assert st.release(aid) == host
            expected = before[host] - demand if st.count[host] else np.zeros(3)
            assert np.allclose(st.used[host], expected)
        else:
            demand = np.array([rng.choice([1, 2, 4, 8, 16]), rng.uniform(1, 64), rng.uniform(1, 3000)])
            feasible = st.fits(demand)
            if feasible.any():
                st.place(str(k), int(rng.choice(np.flatnonzero(feasible))), demand, end=float(k))
                live.append(str(k))
        st.check()
    for aid in live:
        st.release(aid)
    assert np.all(st.used == 0) and np.all(st.count == 0)


def test_extension_is_the_added_busy_time(two_hosts):
    st = ClusterState(two_hosts)
    assert st.extension(0, now=0, end=100) == 100  # empty host: the whole run
    st.place("a", 0, np.array([1.0, 1, 1]), end=100)
    assert st.extension(0, now=10, end=60) == 0  # ends before the host drains
    assert st.extension(0, now=10, end=150) == 50


def test_release_of_unknown_allocation_raises(two_hosts):
    with pytest.raises(CapacityError):
        ClusterState(two_hosts).release("nope")


def test_cluster_file_round_trip(tmp_path):
    hosts = [HostSpec("x", 2, 4, 10, 0), HostSpec("y", 8, 16, 100, 3)]
    save_cluster(hosts, tmp_path / "c.json")
    assert load_cluster(tmp_path / "c.json") == hosts
