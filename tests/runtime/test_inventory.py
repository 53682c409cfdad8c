from pathlib import Path

import pytest

from dwcp.runtime.inventory import InventoryError, load_inventory, parse_inventory


def test_embedded_default_has_every_seed_service_at_seed_scale():
    inv = load_inventory()
    counts = {key: len(spec.instances) for key, spec in inv.services.items()}
    assert counts == {"manager": 3, "compression": 2, "probft": 7, "bullshark": 4, "tpbft": 10, "allocator": 2}
    jobs = {spec.job for spec in inv.services.values()}
    assert jobs == {
        "dwcp-manager", "compression-api", "probft-consensus", "bullshark-consensus", "tpbft-consensus",
        "maddpg-allocator",
    }
    assert inv.services["tpbft"].instances[3].ports == {"consensus": 9303}


def test_replicas_shorthand_expands_to_consecutive_ports():
    inv = parse_inventory({"services": {"allocator": {"replicas": 3, "base_port": 7000, "host": "10.0.0.5"}}})
    addresses = [i.address for i in inv.services["allocator"].instances]
    assert addresses == ["10.0.0.5:7000", "10.0.0.5:7001", "10.0.0.5:7002"]


def test_bad_port_names_the_field():
    with pytest.raises(InventoryError, match=r"services\.allocator\.instances\.0\.port"):
        parse_inventory({"services": {"allocator": {"instances": [{"host": "127.0.0.1", "port": 70000}]}}})


def test_duplicate_port_names_both_users():
    data = {"services": {
        "allocator": {"instances": [{"port": 5000}]},
        "compression": {"instances": [{"port": 5000}]},
    }}
    with pytest.raises(InventoryError, match=r"services\.compression\.instances\.0\.port: port 5000 on 127.0.0.1 "
                                             r"is already used by services\.allocator\.instances\.0\.port"):
        parse_inventory(data)


def test_same_port_on_different_hosts_is_fine():
    inv = parse_inventory({"services": {"allocator": {"instances": [
        {"host": "10.0.0.1", "port": 8400}, {"host": "10.0.0.2", "port": 8400}]}}})
    assert len(inv.services["allocator"].instances) == 2


def test_port_clash_with_monitoring_or_supervisor():
    with pytest.raises(InventoryError, match="supervisor.port"):
        parse_inventory({"services": {"allocator": {"instances": [{"port": 9096}]}}})


def test_unknown_service_lists_known_ones():
    with pytest.raises(InventoryError, match=r"services\.frobnicator: unknown service 'frobnicator'; known services: "
                                             r"allocator, bullshark"):
        parse_inventory({"services": {"frobnicator": {"replicas": 1, "base_port": 1000}}})


def test_consensus_instance_without_consensus_port_is_refused():
    with pytest.raises(InventoryError, match=r"services\.tpbft\.instances\.0\.ports: missing consensus"):
        parse_inventory({"services": {"tpbft": {"instances": [{"port": 8300}]}}})


def test_unknown_top_level_field_is_refused():
    with pytest.raises(InventoryError, match="servics"):
        parse_inventory({"servics": {}})


def test_missing_and_malformed_files(tmp_path: Path):
    with pytest.raises(InventoryError, match="not found"):
        load_inventory(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("services: [unclosed")
    with pytest.raises(InventoryError, match=r"bad\.yaml: not valid YAML"):
        load_inventory(bad)


def test_instance_lookup_errors_are_clear():
    inv = load_inventory()
    with pytest.raises(InventoryError, match="has 2 instances; --instance 5 is not one"):
        inv.instance("compression", 5)
