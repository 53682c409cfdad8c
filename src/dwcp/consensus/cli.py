"""`dwcp consensus ...`: key generation and the deterministic simulator (also `dwcp simulate`).

Heavy imports (the simulator, cryptography, the cores) happen inside the commands, so `dwcp --help`
stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
err = Console(stderr=True)


def simulate(
    protocol: str = typer.Argument(
        ..., help="Registered protocol to simulate (`dwcp consensus protocols` lists them)."
    ),
    nodes: int = typer.Option(10, "--nodes", "-n", help="Committee size."),
    byzantine: int | None = typer.Option(
        None, "--byzantine", "-f", help="Byzantine nodes; default: the most the committee tolerates, (n-1)//3."
    ),
    behaviour: str = typer.Option(
        "mixed", "--behaviour", "-b",
        help="silent, equivocate, twins, garbage, invalid-signature, none, or mixed (one drawn per node); "
        "also intermittent (an honest node down in episodes all run, never drawn by mixed); "
        "a comma list is dealt out to the Byzantine nodes in turn.",
    ),
    regions: str = typer.Option(
        "4", "--regions", "-r",
        help="WAN regions the nodes are spread over (round-robin): a count (first K of us-east-1, eu-west-1, "
        "us-west-2, ap-northeast-1, eu-central-1, ap-southeast-1, ap-southeast-2, sa-east-1), names "
        "separated by commas, or 'lan'.",
    ),
    seed: int = typer.Option(0, "--seed", "-s", help="Seed of the first run; run k uses seed + k."),
    runs: int = typer.Option(1, "--runs", "-k", min=1, help="Seeded runs (a progress bar on stderr)."),
    duration: float = typer.Option(10.0, "--duration", "-d", min=1.0, help="Simulated seconds per run."),
    rate: float = typer.Option(50.0, help="Client load per run, transactions per simulated second (Poisson)."),
    chaos: bool = typer.Option(
        False, "--chaos/--no-chaos", help="Add seeded partitions and crash/restarts (all healed by 40% of the run)."
    ),
    fault: list[str] = typer.Option(
        [], "--fault", help="A scheduled fault (repeatable): TIME:crash:NODE, TIME:restart:NODE, "
        "TIME:partition:0,1|2,3 or TIME:heal; replaces --chaos faults.",
    ),
    loss: float = typer.Option(0.0, min=0.0, max=1.0, help="Probability a message copy is lost."),
    bandwidth_mbps: float = typer.Option(1000.0, help="Per-node uplink in Mbit/s (serialisation delay)."),
    epoch_length: int = typer.Option(
        0, min=0, help="Blocks per epoch for protocols whose core has epochs; 0: the core's default."
    ),
    crypto: str = typer.Option("mac", help="mac (simulation-only keyed hash, fast) or ed25519 (the real thing)."),
    workers: int = typer.Option(1, min=1, help="Worker processes for --runs."),
    time_limit: float | None = typer.Option(None, help="Stop starting runs after this many wall seconds."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object: totals and one row per run."),
) -> None:
    """Run a consensus core in the deterministic simulator; exit 1 when an invariant is violated."""
    from dwcp.consensus import registry
    from dwcp.consensus.sim.campaign import CampaignSpec, run_campaign
    from dwcp.consensus.sim.report import totals
    from dwcp.consensus.sim.scenario import parse_fault

    if protocol not in registry.PROTOCOLS:
        err.print(f"[red]error:[/red] unknown protocol {protocol!r}; known: {', '.join(registry.names())}")
        raise typer.Exit(2)
    try:
        faults = tuple(sorted((parse_fault(f) for f in fault), key=lambda f: f.at))
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    spec = CampaignSpec(
        protocols=(protocol,), nodes=nodes, byzantine=(nodes - 1) // 3 if byzantine is None else byzantine,
        behaviour=behaviour, regions=regions, first_seed=seed, runs=runs, chaos=chaos,
        scenario_kwargs={"duration": duration, "rate": rate, "loss": loss, "bandwidth_mbps": bandwidth_mbps,
                         "crypto": crypto, "epoch_length": epoch_length, **({"faults": faults} if faults else {})},
    )
    try:
        spec.scenario(protocol, seed)  # validate the arguments before starting workers
    except (ValueError, ImportError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    campaign = run_campaign(spec, workers=workers, progress=runs > 1,
                            time_limit=time_limit)
    results = campaign.results[protocol]
    summary = totals(results)
    if as_json:
        typer.echo(json.dumps({
            "protocol": protocol, "nodes": nodes, "byzantine": spec.byzantine, "behaviour": behaviour,
            "regions": regions, "first_seed": seed, "runs_requested": runs, "complete": campaign.complete,
            "duration_s": duration, "rate_tx_per_s": rate, "totals": summary, "runs": [r.row() for r in results],
        }))
    else:
        _print_human(protocol, summary, results)
    raise typer.Exit(0 if campaign.ok else 1)


def _print_human(protocol: str, summary: dict[str, Any], results: list) -> None:
    from rich.table import Table

    out = Console(width=max(Console().width, 130))
    table = Table(title=f"{protocol}: {summary['runs']} run(s), simulated time")
    for col in ("seed", "blocks", "tx", "tx/s", "p50 s", "p99 s", "msgs/block", "bytes/block", "view changes",
                "violations", "wall s"):
        table.add_column(col, justify="right")

    def row(label: str, d: dict[str, Any], wall: float) -> list[str]:
        return [label, str(d["committed_blocks"]), str(d["committed_tx"]), f"{d['throughput_tx_per_s']:.1f}",
                f"{d['latency_p50_s']:.3f}", f"{d['latency_p99_s']:.3f}", f"{d['messages_per_block']:.0f}",
                f"{d['bytes_per_block']:.0f}", str(d["view_changes"]), str(sum(d["violations"].values())),
                f"{wall:.2f}"]

    for r in results[:20]:
        table.add_row(*row(str(r.seed), r.row(), r.wall_s))
    if len(results) > 1:
        table.add_row(*row("total", summary, summary["wall_s"]), style="bold")
    out.print(table)
    for r in results:
        for detail in r.violation_details:
            out.print(f"[red]seed {r.seed}:[/red] {detail}")


app.command("simulate")(simulate)


@app.command()
def protocols() -> None:
    """List the registered consensus protocols (what `simulate` and `protocol:` settings accept)."""
    from dwcp.consensus import registry

    for name in registry.names():
        typer.echo(f"{name:10} {registry.get(name).summary}")


@app.command()
def keygen(
    inventory: Path = typer.Option(..., "--inventory", "-i", help="Inventory YAML naming the service's instances."),
    service: str = typer.Option(..., "--service", help="Inventory service key of a consensus service."),
    out: Path = typer.Option(..., "--out", "-o", help="Key directory to create (node-<I>.key, committee.json)."),
    force: bool = typer.Option(False, "--force", help="Overwrite keys already in --out."),
) -> None:
    """Make one Ed25519 key per instance of SERVICE and the committee file, in the layout `load_keys` reads.

    The committee file (public: ids, addresses, keys, pinned TLS certificates) goes to every host;
    node-<I>.key (0600) only to the host that runs instance I.
    """
    from dwcp.consensus.node.keys import KeyLoadError, generate_committee, write_key_dir
    from dwcp.runtime.inventory import InventoryError, load_inventory

    try:
        inv = load_inventory(inventory)
        n = len(inv.spec(service).instances)
    except (InventoryError, KeyError) as exc:
        err.print(f"[red]error:[/red] {exc.args[0] if exc.args else exc}")
        raise typer.Exit(2) from None
    committee_path = out / "committee.json"
    if committee_path.exists() and not force:
        err.print(f"[red]error:[/red] {committee_path} exists; pass --force to replace the keys")
        raise typer.Exit(2)
    try:
        committee, privs = generate_committee(inv, service)
    except KeyLoadError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    write_key_dir(out, committee, privs)
    typer.echo(f"wrote {n} node keys and {committee_path} for {service}")
