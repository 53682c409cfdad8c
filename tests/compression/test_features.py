"""Feature extraction on inputs whose statistics are known."""

import time

import numpy as np
import pytest

from dwcp.compression.features import FEATURE_NAMES, N_FEATURES, PROBE_BLOCK, Extractor, make_sample, probe_region

F = {name: i for i, name in enumerate(FEATURE_NAMES)}


@pytest.fixture(scope="module")
def extract() -> Extractor:
    return Extractor(5e8)


def test_all_zeros(extract):
    x = extract(bytes(65536), 1 << 20)
    assert x.shape == (N_FEATURES,)
    assert x[F["log2_size"]] == 20.0 and x[F["log2_sample"]] == 16.0 and x[F["log2_size_over_sample"]] == 4.0
    assert x[F["entropy"]] == 0.0
    assert x[F["zero_share"]] == 1.0 and x[F["zero_word_share"]] == 1.0 and x[F["zero_block_share"]] == 1.0
    assert x[F["ascii_share"]] == 0.0 and x[F["distinct_share"]] == 1 / 256 and x[F["top_share"]] == 1.0
    assert x[F["repeat1"]] == pytest.approx(1.0, abs=1e-3)
    assert x[F["lz4_ratio"]] < 0.01 and x[F["zstd1_ratio"]] < 0.01


def test_random_bytes(extract):
    x = extract(np.random.default_rng(0).bytes(65536), 65536)
    assert x[F["entropy"]] > 7.98
    assert x[F["distinct_share"]] == 1.0
    assert x[F["ascii_share"]] == pytest.approx(98 / 256, abs=0.02)
    assert x[F["high_share"]] == pytest.approx(0.5, abs=0.02)
    assert x[F["repeat1"]] == pytest.approx(1 / 256, abs=0.003)
    assert x[F["lz4_ratio"]] > 0.99 and x[F["zstd1_ratio"]] > 0.99
    assert x[F["zero_block_share"]] == 0.0


def test_english_text(extract):
    text = b"It was the best of times, it was the worst of times, it was the age of wisdom.\n" * 400
    x = extract(text, len(text))
    assert x[F["ascii_share"]] == 1.0 and x[F["high_share"]] == 0.0 and x[F["zero_share"]] == 0.0
    assert 3.5 < x[F["entropy"]] < 5.0
    assert x[F["zstd1_ratio"]] < 0.05  # one repeated line


def test_speed_features_are_relative_to_the_host_reference():
    data = bytes(range(256)) * 64
    slow_ref, fast_ref = Extractor(1e6)(data, len(data)), Extractor(1e12)(data, len(data))
    for name in ("log_lz4_speed_rel", "log_zstd1_speed_rel"):
        assert slow_ref[F[name]] > fast_ref[F[name]]
        assert slow_ref[F[name]] - fast_ref[F[name]] == pytest.approx(np.log(1e6), abs=3.0)  # ln(1e12 / 1e6) = 13.8


def test_zstd_probe_speed_tells_zeros_from_text(extract):
    """zstd-1 runs through zeros far faster than through text (a timing: best of a few, on a shared machine)."""
    text = b"It was the best of times, it was the worst of times, it was the age of wisdom.\n" * 400
    text = bytes(np.random.default_rng(3).permutation(np.frombuffer(text, np.uint8)))  # no long repeats
    speed = F["log_zstd1_speed_rel"]

    def fastest(sample: bytes) -> float:
        return max(extract(sample, len(sample))[speed] for _ in range(7))

    assert fastest(bytes(32768)) > fastest(text[:32768]) + 1.0  # e^1: at least 2.7x faster


def test_empty_sample_gives_only_the_size(extract):
    x = extract(b"", 4096)
    assert x[F["log2_size"]] == 12.0 and (np.delete(x, F["log2_size"]) == 0).all()


def test_probe_and_client_sample_limits():
    payload = np.random.default_rng(1).bytes(1 << 20)
    sample = make_sample(payload)
    assert len(sample) == 65536 and sample[:4096] == payload[:4096] and sample[-4096:] == payload[-4096:]
    assert make_sample(payload[:1000]) == payload[:1000]
    assert len(probe_region(sample)) == 4 * PROBE_BLOCK


def test_many_matches_one_at_a_time(extract):
    samples = [bytes(5000), b"abc" * 2000]
    rows = extract.many(samples, [5000, 6000])
    for row, s, n in zip(rows, samples, [5000, 6000], strict=True):
        one = extract(s, n)
        timed = [F["log_lz4_speed_rel"], F["log_zstd1_speed_rel"]]  # timings vary between calls
        assert np.allclose(np.delete(row, timed), np.delete(one, timed))


def test_extraction_takes_microseconds(extract):
    sample = np.random.default_rng(2).bytes(65536)
    extract(sample, 65536)
    start = time.perf_counter()
    for _ in range(100):
        extract(sample, 65536)
    # Typically ~50 us; the bound is loose because the CI machine is shared.
    assert (time.perf_counter() - start) / 100 < 2e-3
