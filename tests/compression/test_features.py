"""Feature extraction on inputs whose statistics are known."""

import time

import numpy as np
import pytest

from dwcp.compression.features import FEATURE_NAMES, N_FEATURES, PROBE_BLOCK, Extractor, make_sample, probe_region

F = {name: i for i, name in enumerate(FEATURE_NAMES)}


@pytest.fixture(scope="module")
def extract() -> Extractor:
    return Extractor()


def test_all_zeros(extract):
    x = extract(bytes(65536), 1 << 20)
    assert x.shape == (N_FEATURES,)
    assert x[F["log2_chunk"]] == 20.0 and x[F["log2_sample"]] == 16.0 and x[F["log2_chunk_over_sample"]] == 4.0
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


def test_features_are_properties_of_the_bytes_alone(extract):
    """The same sample gives the same vector from any extractor, after any other work (no timings)."""
    import zstandard

    samples = [bytes(32768), np.random.default_rng(4).bytes(20000), b"key=value; " * 3000]
    before = [extract(s, len(s) * 3) for s in samples]
    zstandard.ZstdCompressor(level=19).compress(np.random.default_rng(5).bytes(1 << 18))  # cold caches after this
    for s, x in zip(samples, before, strict=True):
        assert np.array_equal(Extractor()(s, len(s) * 3), x)
        assert np.array_equal(extract(s, len(s) * 3), x)
    assert not any(name.startswith("log_") and "speed" in name for name in FEATURE_NAMES)


def test_probe_ratios_tell_zeros_from_text_from_random(extract):
    text = b"It was the best of times, it was the worst of times, it was the age of wisdom.\n" * 400
    text = bytes(np.random.default_rng(3).permutation(np.frombuffer(text, np.uint8)))  # no long repeats
    zeros, noise = extract(bytes(32768), 32768), extract(np.random.default_rng(6).bytes(32768), 32768)
    shuffled = extract(text[:32768], 32768)
    for name in ("lz4_ratio", "zstd1_ratio"):
        assert zeros[F[name]] < 0.02 < shuffled[F[name]] < noise[F[name]] and noise[F[name]] > 0.99
    # No repeats for lz4 to find in shuffled letters; zstd's entropy stage still packs ~4.3 bits/byte.
    assert shuffled[F["zstd1_ratio"]] < 0.7 < shuffled[F["lz4_ratio"]]


def test_empty_sample_gives_only_the_chunk(extract):
    x = extract(b"", 4096)
    assert x[F["log2_chunk"]] == 12.0 and (np.delete(x, F["log2_chunk"]) == 0).all()


def test_chunks_beyond_the_largest_trained_one_read_as_it(extract):
    sample = (b"chunked " * 8192)[:65536]
    assert np.array_equal(extract(sample, 1 << 20), extract(sample, 1 << 34))
    assert extract(sample, 1 << 34)[F["log2_chunk"]] == 20.0


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
        assert np.array_equal(row, extract(s, n))


def test_extraction_takes_microseconds(extract):
    sample = np.random.default_rng(2).bytes(65536)
    extract(sample, 65536)
    start = time.perf_counter()
    for _ in range(100):
        extract(sample, 65536)
    # Typically ~50 us; the bound is loose because the CI machine is shared.
    assert (time.perf_counter() - start) / 100 < 2e-3


def test_real_training_files_never_come_from_a_held_out_tree():
    from dwcp.compression.corpus import REAL_ROOTS, TRAIN_REAL_ROOTS

    for train_root in TRAIN_REAL_ROOTS:
        for held_out in REAL_ROOTS:
            a, b = train_root.rstrip("/") + "/", held_out.rstrip("/") + "/"
            assert not a.startswith(b) and not b.startswith(a), (train_root, held_out)


def test_a_sample_that_is_all_of_a_small_chunk_is_read_whole_when_asked():
    """Session 10: `whole_up_to` reads a sample whole where it is all of its chunk (sample <= chunk <= the limit):
    a 48 KiB sample of zeros with random bytes exactly where the four probe blocks fall looks random through the
    probe region and two-thirds zeros whole. A larger chunk, a sample larger than its chunk, or no limit (the
    default) keep the 16 KiB probe region."""
    n = 48 << 10
    buf = bytearray(n)
    rng = np.random.default_rng(9)
    for s in np.linspace(0, n - PROBE_BLOCK, 4).astype(int):
        buf[s:s + PROBE_BLOCK] = rng.bytes(PROBE_BLOCK)
    sample = bytes(buf)
    region, whole = Extractor(), Extractor(whole_up_to=64 << 10)
    by_region, read_whole = region(sample, n), whole(sample, n)
    assert np.array_equal(by_region, Extractor(whole_up_to=0)(sample, n))
    assert by_region[F["zero_share"]] < 0.01 and by_region[F["zstd1_ratio"]] > 0.99
    assert read_whole[F["zero_share"]] == pytest.approx(2 / 3, abs=0.01) and read_whole[F["zstd1_ratio"]] < 0.4
    assert np.array_equal(whole(sample, 64 << 10)[3:], read_whole[3:])  # a chunk up to the limit: all of it
    for chunk in (65537, 1 << 20, 16 << 10):  # a chunk above the limit, or smaller than the sample
        assert np.array_equal(whole(sample, chunk), region(sample, chunk))
