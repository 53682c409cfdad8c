"""The cost model on cases worked out by hand."""

import math

import numpy as np
import pytest

from dwcp.compression.costmodel import Link, effective_bandwidth, transfer_seconds


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
    # 1 MB over 100 Mbit/s (12.5 MB/s) = 0.08 s, plus RTT/2 = 0.01 s.
    t = transfer_seconds(1e6, 1.0, math.inf, math.inf, 12.5e6, 0.020)
    assert float(t) == pytest.approx(0.09)


def test_slowest_pipeline_stage_sets_the_pace():
    # ratio 0.25: wire 0.25 * 0.08 = 0.02 s; compress 1e6 / 50e6 = 0.02 s; decompress 0.002 s -> 0.01 + 0.02.
    assert float(transfer_seconds(1e6, 0.25, 50e6, 500e6, 12.5e6, 0.020)) == pytest.approx(0.03)
    # A slow compressor (1 MB/s) dominates: 1 s.
    assert float(transfer_seconds(1e6, 0.1, 1e6, 500e6, 12.5e6, 0.020)) == pytest.approx(1.01)
    # A slow decompressor too.
    assert float(transfer_seconds(1e6, 0.1, 500e6, 2e6, 12.5e6, 0.020)) == pytest.approx(0.51)


def test_broadcasts_requests_over_options():
    ratio = np.array([[1.0, 0.5], [1.0, 0.5]])
    vc = np.array([[np.inf, 1e8], [np.inf, 1e8]])
    t = transfer_seconds(np.array([1e6, 2e6]), ratio, vc, vc, np.array([1e6, 1e9]), np.array([0.0, 0.002]))
    assert t.shape == (2, 2)
    assert t[0] == pytest.approx([1.0, 0.5])  # 1 MB/s link: halving the bytes halves the time
    assert t[1] == pytest.approx([0.001 + 0.002, 0.001 + 0.02])  # 1 GB/s link: the 100 MB/s codec is slower
