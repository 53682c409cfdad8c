"""An inventory at the seed's scale: 100 Bullshark nodes across hosts, all scraped as bullshark-consensus."""

from __future__ import annotations

from pathlib import Path

import yaml

from dwcp.monitoring.render import render_all
from dwcp.runtime.inventory import parse_inventory


def test_a_hundred_bullshark_nodes_over_four_hosts_are_all_scraped(tmp_path: Path) -> None:
    hosts = [f"10.0.0.{i}" for i in range(11, 15)]
    inv = parse_inventory({"services": {"bullshark": {"instances": [
        {"host": hosts[i % 4], "port": 8500 + i // 4, "ports": {"consensus": 10500 + i // 4, "worker": 11500 + i // 4}}
        for i in range(100)
    ]}}})
    render_all(inv, tmp_path)
    prom = yaml.safe_load((tmp_path / "prometheus.yml").read_text())
    targets = next(j for j in prom["scrape_configs"] if j["job_name"] == "bullshark-consensus")["static_configs"][0]
    assert len(targets["targets"]) == 100 and len(set(targets["targets"])) == 100
    assert {t.split(":")[0] for t in targets["targets"]} == set(hosts)
