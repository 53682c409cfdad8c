"""`dwcp simulate` and `dwcp consensus keygen` through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dwcp.cli import app
from dwcp.consensus.node.keys import load_keys
from dwcp.consensus.sim import campaign
from dwcp.consensus.sim.report import RunResult

runner = CliRunner()
KEYS = ("committed_blocks", "committed_tx", "throughput_tx_per_s", "latency_p50_s", "latency_p99_s",
        "messages_per_block", "bytes_per_block", "view_changes", "violations")


def test_simulate_json_has_totals_and_one_row_per_run() -> None:
    result = runner.invoke(app, ["simulate", "pbft", "--nodes", "4", "--byzantine", "0", "--regions", "2",
                                 "--seed", "5", "--runs", "2", "--duration", "2", "--rate", "20", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert [r["seed"] for r in out["runs"]] == [5, 6]
    for key in KEYS:
        assert key in out["totals"] and key in out["runs"][0]
    assert out["totals"]["runs"] == 2 and out["complete"] is True
    assert out["totals"]["committed_tx"] == sum(r["committed_tx"] for r in out["runs"]) > 0
    assert set(out["totals"]["violations"]) >= {"agreement", "validity", "duplicate", "liveness"}


def test_simulate_human_table() -> None:
    result = runner.invoke(app, ["consensus", "simulate", "pbft", "-n", "4", "-f", "0", "-d", "2", "--rate", "10"])
    assert result.exit_code == 0, result.output
    assert "pbft: 1 run(s)" in result.stdout


def test_simulate_exits_1_when_a_violation_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    real = campaign.simulate

    def planted(scenario):  # a real run, then a planted agreement violation
        r: RunResult = real(scenario)
        r.violations["agreement"] = 1
        r.violation_details.append("agreement: planted")
        return r

    monkeypatch.setattr(campaign, "simulate", planted)
    result = runner.invoke(app, ["simulate", "pbft", "-n", "4", "-f", "0", "-d", "2", "--rate", "10", "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["totals"]["violations"]["agreement"] == 1


def test_simulate_with_scheduled_faults() -> None:
    result = runner.invoke(app, ["simulate", "pbft", "-n", "4", "-f", "0", "-d", "4", "--rate", "10", "--json",
                                 "--fault", "0.5:partition:3|0,1,2", "--fault", "1.5:heal",
                                 "--fault", "1:crash:1", "--fault", "2:restart:1"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)["runs"][0]
    assert row["scenario"]["faults"] == ["0.50s partition 3 | 0,1,2", "1.00s crash 1", "1.50s heal", "2.00s restart 1"]


@pytest.mark.parametrize("args", [["nope"], ["pbft", "--behaviour", "sneaky"], ["pbft", "--regions", "mars"],
                                  ["pbft", "-n", "4", "-f", "4"], ["pbft", "--fault", "1:explode:2"],
                                  ["pbft", "-n", "4", "--fault", "1:crash:7"]])
def test_simulate_rejects_bad_arguments_with_exit_2(args: list[str]) -> None:
    assert runner.invoke(app, ["simulate", *args]).exit_code == 2


def test_keygen_writes_keys_that_load_keys_reads(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("services:\n  tpbft:\n    replicas: 4\n    base_port: 18300\n"
                         "    base_ports: {consensus: 19300}\n")
    out = tmp_path / "keys"
    result = runner.invoke(app, ["consensus", "keygen", "--inventory", str(inventory), "--service", "tpbft",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    for i in range(4):
        keys = load_keys(out, i)
        assert keys.committee.n == 4 and keys.committee.member(i).port == 19300 + i
        assert (out / f"node-{i}.key").stat().st_mode & 0o777 == 0o600
        sig = keys.signer.sign(b"x")
        assert keys.verifier.verify(i, b"x", sig)
    again = runner.invoke(app, ["consensus", "keygen", "-i", str(inventory), "--service", "tpbft", "-o", str(out)])
    assert again.exit_code == 2 and "--force" in again.output
    assert runner.invoke(app, ["consensus", "keygen", "-i", str(inventory), "--service", "tpbft", "-o", str(out),
                               "--force"]).exit_code == 0
    unnamed = runner.invoke(app, ["consensus", "keygen", "-i", str(inventory), "-o", str(out)])
    assert unnamed.exit_code == 2 and "--service" in unnamed.output  # no default consensus service
    missing = runner.invoke(app, ["consensus", "keygen", "-i", str(inventory), "--service", "probft", "-o",
                                  str(tmp_path / "k2")])
    assert missing.exit_code == 2


def test_campaign_benchmark_runs_both_cores_on_the_same_seeds(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[3] / "benchmarks" / "consensus_sim.py"
    out = tmp_path / "campaign.json"
    proc = subprocess.run([sys.executable, str(script), "--runs", "2", "--lan-runs", "1", "--workers", "1",
                           "--nodes", "4", "--byzantine", "1", "--json-out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    wan = report["WAN 4"]
    assert wan["runs"] == 2 and report["LAN (one region)"]["runs"] == 1
    assert wan["pbft"]["totals"]["runs"] == wan["tpbft"]["totals"]["runs"] == 2
    assert set(wan["ratio_tpbft_over_pbft"]) >= {"latency_p50_s", "messages_per_block", "view_changes"}
    assert "T-PBFT < 0.060" in proc.stdout
