import numpy as np
import pytest

from dwcp.allocator.traces import HEADER, TraceError, generate, read_csv, write_csv


def test_csv_round_trip(tmp_path):
    tr = generate("alibaba2018", seed=5, hours=0.5)
    write_csv(tr, tmp_path / "t.csv")
    back = read_csv(tmp_path / "t.csv")
    assert len(back) == len(tr) > 0
    assert np.allclose(back.arrival, tr.arrival, atol=1e-3) and np.allclose(back.duration, tr.duration)
    assert np.allclose(back.demand, tr.demand, atol=0.05)


@pytest.mark.parametrize("body, why", [
    ("arrival,cpu,mem\n", "header"),
    (",".join(HEADER) + "\n1,2,3,4,5\n", "6 columns"),
    (",".join(HEADER) + "\n1,-2,3,4,5,0\n", "demand"),
    (",".join(HEADER) + "\n1,2,3,4,0,0\n", "duration"),
    (",".join(HEADER) + "\n1,x,3,4,5,0\n", "not numbers"),
])
def test_bad_trace_files_are_rejected_with_the_reason(tmp_path, body, why):
    (tmp_path / "bad.csv").write_text(body)
    with pytest.raises(TraceError, match=why):
        read_csv(tmp_path / "bad.csv")


@pytest.mark.parametrize("series", ["alibaba2018", "google2019", "azure_v2", "synthetic"])
def test_generated_traces_follow_the_series_and_are_reproducible(series):
    a, b = generate(series, seed=11, hours=3), generate(series, seed=11, hours=3)
    assert np.array_equal(a.arrival, b.arrival) and np.array_equal(a.demand, b.demand)
    assert np.all(np.diff(a.arrival) >= 0) and np.all(a.demand > 0) and np.all(a.duration >= 60)
    # ~0.04/s over 3 h is ~430 arrivals; the series modulates but keeps the scale.
    assert 200 < len(a) < 900
    assert not np.array_equal(generate(series, seed=12, hours=3).arrival[:20], a.arrival[:20])
