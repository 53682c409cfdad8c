import json

import pytest
from typer.testing import CliRunner

from dwcp.allocator.cli import app
from dwcp.allocator.evaluate import POLICIES

runner = CliRunner()
KEYS = {"cost", "optimization_vs_round_robin_pct", "sla_compliance", "placed", "refused", "decisions_per_s"}


@pytest.fixture(scope="module")
def trace_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("trace") / "t.csv"
    r = runner.invoke(app, ["trace", str(path), "--series", "azure_v2", "--seed", "1000007", "--hours", "1"])
    assert r.exit_code == 0, r.output
    return path


@pytest.mark.parametrize("policy", POLICIES)
def test_evaluate_prints_one_json_object_with_the_required_keys(trace_file, policy):
    r = runner.invoke(app, ["evaluate", "--trace", str(trace_file), "--policy", policy, "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out.keys() >= KEYS and out["policy"] == policy
    assert 0.0 <= out["sla_compliance"] <= 1.0 and out["placed"] > 0
    if policy == "round-robin":
        assert out["optimization_vs_round_robin_pct"] == 0.0 and out["cost"] == out["round_robin_cost"]


def test_evaluate_rejects_a_bad_trace_or_policy(tmp_path, trace_file):
    bad = tmp_path / "bad.csv"
    bad.write_text("arrival,cpu,mem,net,duration,max_wait\n0,-1,1,1,10,0\n")
    r = runner.invoke(app, ["evaluate", "--trace", str(bad), "--json"])
    assert r.exit_code == 2 and "bad.csv:2" in r.output
    r = runner.invoke(app, ["evaluate", "--trace", str(trace_file), "--policy", "worst-fit"])
    assert r.exit_code == 2 and "unknown policy" in r.output


def test_train_writes_checkpoint_curve_json_and_png_within_its_time_bound(tmp_path):
    ck, png = tmp_path / "ck.pt", tmp_path / "curve.png"
    r = runner.invoke(app, ["train", "--episodes", "50", "--hours", "0.25", "--seed", "3", "--out", str(ck),
                            "--curve-png", str(png), "--validate-every", "1", "--validation-traces", "1",
                            "--max-minutes", "0.0001"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["checkpoint"] == str(ck) and ck.stat().st_size < 200_000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curve = json.loads(ck.with_suffix(".curve.json").read_text())
    assert [row["episode"] for row in curve] == [1] == [summary["episodes"]]  # stopped by --max-minutes
