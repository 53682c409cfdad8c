"""The cost model on cases worked out by hand."""

import math

import numpy as np
import pytest

from dwcp.compression.costmodel import (
    DEFAULT_CHUNK_BYTES,
    Link,
    bytes_per_second,
    chunk_of,
    effective_bandwidth,
    transfer_seconds,
)


def test_lossless_link_uses_its_bandwidth():
    assert Link(100.0, 20.0).effective_bps == pytest.approx(12.5e6)


def test_mathis_caps_a_lossy_long_link_with_four_streams():
    # 4 * 1.22 * 1460 B / (0.1 s * sqrt(0.01)) = 712,480 B/s, far below 100 Mbit/s = 12.5 MB/s.
    assert Link(100.0, 100.0, 0.01).effective_bps == pytest.approx(712_480.0)


def test_mathis_bound_above_bandwidth_leaves_bandwidth():
    # 4 * 1.22 * 1460 / (0.01 * 0.001) = 712.48 MB/s > 1 Gbit/s = 125 MB/s.
    assert Link(1000.0, 10.0, 1e-6).effective_bps == pytest.approx(125e6)


def test_zero_rtt_or_zero_loss_means_no_cap():
    assert float(effective_bandwidth(1e6, 0.0, 0.01)) == 1e6
    assert float(effective_bandwidth(1e6, 0.05, 0.0)) == 1e6


def test_none_costs_half_rtt_plus_wire_time():
    # 1 MB over 100 Mbit/s (12.5 MB/s) = 0.08 s, plus RTT/2 = 0.01 s, in one chunk or in many.
    for chunk in (1e6, DEFAULT_CHUNK_BYTES, 1e3):
        assert float(transfer_seconds(1e6, chunk, 1.0, math.inf, math.inf, 12.5e6, 0.020)) == pytest.approx(0.09)


def test_one_chunk_goes_through_the_stages_one_after_the_other():
    # ratio 0.25: compress 1e6 / 50e6 = 0.02 s, wire 0.25 * 0.08 = 0.02 s, decompress 0.002 s: their sum.
    assert float(transfer_seconds(1e6, 1e6, 0.25, 50e6, 500e6, 12.5e6, 0.020)) == pytest.approx(0.01 + 0.042)
    # The default chunk (1 MiB) holds the whole 1 MB payload: the same.
    assert float(transfer_seconds(1e6, DEFAULT_CHUNK_BYTES, 0.25, 50e6, 500e6, 12.5e6, 0.020)) == pytest.approx(0.052)


def test_slowest_stage_sets_the_pace_after_the_first_chunk():
    # 1000 chunks of 1 kB: the first takes every stage in turn (42 us), the other 999 kB go at the slowest
    # stage's 20 ns per byte (compress and wire tie).
    t = transfer_seconds(1e6, 1e3, 0.25, 50e6, 500e6, 12.5e6, 0.020)
    assert float(t) == pytest.approx(0.01 + 1e3 * 42e-9 + 999e3 * 20e-9)
    # A slow compressor (1 MB/s) dominates: ~1 s.
    assert float(transfer_seconds(1e6, 1e3, 0.1, 1e6, 500e6, 12.5e6, 0.020)) == pytest.approx(1.01, rel=1e-3)
    # A slow decompressor too.
    assert float(transfer_seconds(1e6, 1e3, 0.1, 500e6, 2e6, 12.5e6, 0.020)) == pytest.approx(0.51, rel=1e-3)


def test_payload_size_beyond_a_chunk_scales_time_linearly():
    """Only the cost model sees the payload size: a payload 1000x larger takes ~1000x the per-chunk pace."""
    one = float(transfer_seconds(1 << 30, 1 << 20, 0.3, 80e6, 400e6, 12.5e6, 0.0))
    many = float(transfer_seconds(1 << 40, 1 << 20, 0.3, 80e6, 400e6, 12.5e6, 0.0))
    assert many / one == pytest.approx(1024, rel=1e-3)


def test_broadcasts_requests_over_options():
    ratio = np.array([[1.0, 0.5], [1.0, 0.5]])
    vc = np.array([[np.inf, 1e8], [np.inf, 1e8]])
    t = transfer_seconds(np.array([1e6, 2e6]), 1.0, ratio, vc, vc, np.array([1e6, 1e9]), np.array([0.0, 0.002]))
    assert t.shape == (2, 2)
    assert t[0] == pytest.approx([1.0, 0.5], rel=1e-6)  # 1 MB/s link: halving the bytes halves the time
    # 1 GB/s link: the 100 MB/s codec is slower
    assert t[1] == pytest.approx([0.001 + 0.002, 0.001 + 0.02], rel=1e-6)


def test_unit_conversions():
    assert bytes_per_second(8.0) == 1e6 and Link(8.0, 250.0).rtt_s == 0.25
    assert chunk_of(100, DEFAULT_CHUNK_BYTES) == 100 and chunk_of(1 << 40) == DEFAULT_CHUNK_BYTES
