"""`dwcp compression train` end to end on a tiny corpus: label, fit, score, write a loadable artifact."""

import json
import math

from typer.testing import CliRunner

from dwcp.compression import calibrate, corpus, train
from dwcp.compression.cli import app
from dwcp.compression.model import Model
from dwcp.compression.train import Dataset

runner = CliRunner()


def test_train_relabels_a_cache_whose_calibration_predates_the_pilot(tmp_path, monkeypatch, calibration):
    cache = tmp_path / "cache"
    cache.mkdir()
    old = calibration.to_json()
    old["format"] = "dwcp-compression-calibration/1"
    del old["pilot_bps"]
    (cache / "calibration.json").write_text(json.dumps(old))
    runs = []
    monkeypatch.setattr(calibrate, "run", lambda: runs.append(1) or calibration)  # no 25 s timing run in CI
    out = tmp_path / "model.npz"
    r = runner.invoke(app, ["train", "--cache", str(cache), "--train-items", "12", "--train-large-items", "0",
                            "--heldout-items", "3", "--real-items", "3", "--real-train-items", "0", "--epochs", "5",
                            "--members", "1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "recalibrating and relabelling" in r.output and runs == [1]
    assert calibrate.load(cache / "calibration.json").pilot == calibration.pilot
    train = Dataset.load(cache / "train-s1-n12.npz")
    assert train.payloads == 12 and (train.pilot > 0).all()  # labelled now, with the pilot
    assert "held-out synthetic" in r.output and "held-out real files" in r.output and ">1 GiB" in r.output
    model = Model.load(out)
    assert model.training["train_payloads"] == 12 and model.version.startswith("mlp-")
    # The largest chunk it was trained on is recorded: the selector reads any larger one as that one.
    assert model.training["max_chunk_bytes"] == int(train.size.max()) < 128 << 10


def test_evaluate_repeat_labels_the_held_out_sets_again_once_and_prints_the_oracle_beside_the_selector(
        tmp_path, monkeypatch, calibration):
    cache = tmp_path / "cache"
    cache.mkdir()
    calibrate.save(calibration, cache / "calibration.json")
    # Small payloads only: the thirds' 1 MiB chunks would cost seconds of oracle time per pass.
    monkeypatch.setattr(train, "heldout_payloads", lambda make, seed, count: list(make(seed, count, 1024, 4096)))
    model = tmp_path / "model.npz"
    train.train(train.label(corpus.items(7, 12, 1024, 4096)), calibration, epochs=5, hidden=(8,)).save(model)
    real_label, labelled = train.label, []
    monkeypatch.setattr(train, "label", lambda payloads, **kw: labelled.append(1) or real_label(payloads, **kw))
    args = ["evaluate", "--cache", str(cache), "--heldout-items", "4", "--real-items", "2", "--model", str(model),
            "--repeat"]
    r = runner.invoke(app, args, env={"COLUMNS": "200"})  # room for every column
    assert r.exit_code == 0, r.output
    assert len(labelled) == 4  # both held-out sets, twice
    first, again = Dataset.load(cache / "heldout-s2-n4.npz"), Dataset.load(cache / "heldout-s2-n4-pass2.npz")
    assert (first.size == again.size).all() and first.payloads == 4 and (first.vc != again.vc).any()
    assert "oracle repeatability" in r.output and "oracle rep." in r.output and ">1 GiB" in r.output
    r = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert r.exit_code == 0 and len(labelled) == 4  # cached: never measured again


def test_label_large_resumes_and_shares_sets_and_train_large_scores_and_writes_the_large_chunk_part(
        tmp_path, monkeypatch, calibration):
    """The large-chunk pipeline at toy scale (chunks "above" 2 KiB): two label-large runs over the same sets label
    each payload once (the second finds every payload labelled or claimed), train-large fits the part, prints the
    held-out chunks' figures for the base and the new artifact side by side, and writes a /2 artifact whose
    smaller chunks the base answers."""
    from dwcp.compression import large

    monkeypatch.setattr(calibrate, "run", lambda: calibration)
    monkeypatch.setattr(large, "SPLIT_BYTES", 2048)
    monkeypatch.setattr(large, "SETS", {
        "train-real": (lambda: list(corpus.items(60, 8, 1024, 6000)), True),
        "train-synthetic": (lambda: list(corpus.items(61, 8, 2049, 6000)), True),
        "heldout-real": (lambda: list(corpus.items(62, 6, 1024, 6000)), False),
    })
    labels = tmp_path / "large"
    first = runner.invoke(app, ["label-large", "--labels", str(labels)])
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, ["label-large", "--labels", str(labels), "heldout-real"])
    assert again.exit_code == 0 and "labelled 0 payloads" in again.output, again.output
    held = large.load_set(labels, "heldout-real")
    sizes = [len(d) for _, d in large.SETS["heldout-real"][0]()]
    assert sorted(set(held.item.tolist())) == [i for i, n in enumerate(sizes) if n > 2048]
    assert large.load_set(labels, "train-synthetic").payloads == 8
    out = tmp_path / "composed.npz"
    r = runner.invoke(app, ["train-large", "--labels", str(labels), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "cross-validated" in r.output and "with the large-chunk part" in r.output and "heldout-real" in r.output
    model = Model.load(out)
    assert model.large is not None and model.large.above == 11.0
    assert model.training["large_chunks"]["payloads"] == 8 + sum(
        len(d) > 2048 for _, d in large.SETS["train-real"][0]())
    speeds_only = tmp_path / "speeds.npz"
    r = runner.invoke(app, ["train-large", "--labels", str(labels), "--outputs", "log_vc_rel", "--links", "3",
                            "--out", str(speeds_only)])
    assert r.exit_code == 0, r.output
    held_rows = len(large.load_set(labels, "heldout-real"))
    assert f"over {3 * held_rows} requests" in r.output  # --links: requests per held-out chunk
    w, k = Model.load(speeds_only).large.weights, len(model.options)
    assert not w[:, :k].any() and not w[:, 2 * k:].any()  # ratios and decompress speeds keep the base's answer
    assert "ship rule" in r.output
    assert runner.invoke(app, ["label-large", "--labels", str(labels), "nonsense"]).exit_code != 0


def test_train_large_chooses_where_the_correction_starts_and_prints_the_oracles_repeatability(
        tmp_path, monkeypatch, calibration):
    """Issue 16, session 6, at toy scale (chunks "above" 2 KiB): `--apply-above` with several sizes prints the
    training folds' decisions per threshold and writes the chosen one (or says none holds and writes nothing);
    `--again` with a second labelling of the held-out set prints the oracle's repeatability beside its figures."""
    from dwcp.compression import large

    monkeypatch.setattr(calibrate, "run", lambda: calibration)
    monkeypatch.setattr(large, "SPLIT_BYTES", 2048)
    monkeypatch.setattr(large, "SETS", {
        "train-real": (lambda: list(corpus.items(70, 10, 2049, 8000)), True),
        "heldout-real": (lambda: list(corpus.items(72, 4, 2049, 8000)), False),
    })
    labels, again = tmp_path / "large", tmp_path / "again"
    assert runner.invoke(app, ["label-large", "--labels", str(labels)]).exit_code == 0
    again.mkdir()
    (again / "calibration.json").write_bytes((labels / "calibration.json").read_bytes())
    assert runner.invoke(app, ["label-large", "--labels", str(again), "heldout-real"]).exit_code == 0
    out = tmp_path / "chosen.npz"
    r = runner.invoke(app, ["train-large", "--labels", str(labels), "--apply-above", "2,4", "--links", "5",
                            "--again", str(again), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "cross-validated decisions per threshold" in r.output and "chosen:" in r.output
    if "chosen: none" in r.output:
        assert "no threshold holds" in r.output and not out.exists()
    else:
        chosen = float(r.output.split("chosen: ")[1].split(" KiB")[0])
        assert Model.load(out).large.threshold == math.log2(chosen * 1024)
        assert "oracle repeatability" in r.output.replace("\n", " ")
