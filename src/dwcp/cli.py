"""The `dwcp` command: bring the system up, serve one instance, drive load, render and check monitoring.

Subsystem command groups (`dwcp compression ...`, `dwcp consensus ...`, `dwcp allocator ...`,
`dwcp monitoring ...`) live in each subsystem's `cli.py` and are mounted here when that subsystem is
built; they import their heavy dependencies inside commands so `dwcp --help` stays fast.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import typer
from rich.console import Console

from dwcp import __version__
from dwcp.runtime.inventory import InventoryError, load_inventory
from dwcp.runtime.services import SERVICE_KINDS, importable

app = typer.Typer(
    help="DWCP: WAN transfers, compression selection, BFT consensus, MADDPG allocation, and their monitoring.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True)

InventoryOpt = typer.Option(None, "--inventory", "-i", help="Inventory YAML; default: the embedded local one.")


def _inventory(path: Path | None):
    try:
        return load_inventory(path)
    except InventoryError as exc:
        err.print(f"[red]inventory error:[/red] {exc}")
        raise typer.Exit(2) from None


@app.command()
def up(
    inventory: Path | None = InventoryOpt,
    run_dir: Path | None = typer.Option(None, help="Where logs and data go; default: ./runs/<timestamp>."),
    load: bool = typer.Option(True, "--load/--no-load", help="Drive a steady request mix at every service."),
    load_rate: float | None = typer.Option(
        None, help="Requests per second per service kind from the load generator; default: 2.5 per CPU of this "
                   "host, at most 20."),
    host: str | None = typer.Option(None, help="Start only the instances placed on this host (multi-host)."),
    monitoring: bool = typer.Option(True, "--monitoring/--no-monitoring", help="Start Prometheus and Alertmanager."),
    services: list[str] = typer.Option([], "--service", "-s", help="Start only these services (repeatable)."),
    ready_timeout: float = typer.Option(180.0, help="Seconds to wait for every target to be up."),
    exit_when_ready: bool = typer.Option(False, help="Stop everything once all targets are up (smoke test)."),
) -> None:
    """Start every built service, Prometheus, Alertmanager and the load generator; Ctrl-C stops all."""
    from dwcp.runtime.supervise import UpOptions, run_up

    inv = _inventory(inventory)
    opts = UpOptions(
        inventory_path=inventory, run_dir=run_dir, load=load, load_rate=load_rate, host=host,
        monitoring=monitoring, only=set(services), ready_timeout=ready_timeout, exit_when_ready=exit_when_ready,
    )
    raise typer.Exit(run_up(inv, opts))


@app.command()
def status(
    inventory: Path | None = InventoryOpt,
    timeout: float = typer.Option(2.0, help="Per-request timeout in seconds."),
) -> None:
    """Print each service instance's health and each Prometheus target's state."""
    from dwcp.runtime.status import print_status

    raise typer.Exit(print_status(_inventory(inventory), timeout))


@app.command()
def serve(
    service: str = typer.Argument(..., help=f"One of: {', '.join(SERVICE_KINDS)} (or its job name)."),
    instance: int = typer.Option(0, "--instance", "-n", help="Instance index in the inventory (from 0)."),
    inventory: Path | None = InventoryOpt,
    bind: str | None = typer.Option(None, help="Address to bind; default: the instance's host."),
    data_dir: Path | None = typer.Option(None, help="Data root; default: $DWCP_RUN_DIR/data or ./dwcp-data."),
    log_level: str = typer.Option("info", help="debug, info, warning, error."),
) -> None:
    """Run one instance of one service in the foreground."""
    from dwcp.runtime.server import build_context
    from dwcp.runtime.server import serve as run_server

    inv = _inventory(inventory)
    try:
        ctx = build_context(inv, service, instance, data_dir)
    except (InventoryError, KeyError) as exc:
        err.print(f"[red]error:[/red] {exc.args[0] if exc.args else exc}")
        raise typer.Exit(2) from None
    run_server(ctx, bind_host=bind, log_level=log_level)


@app.command("token")
def token_command(
    path: Path = typer.Argument(..., help="Token file to create (kept if it exists)."),
) -> None:
    """Create a bearer-token file for the HTTP services' write endpoints (mode 0600; the token is not printed).

    Name it in the inventory (`security.token_file`) and copy it to every host of a multi-host deployment.
    Rotate by putting a new token on the first line; services accept every line (docs/security.md)."""
    from dwcp.runtime.auth import TokenFileError, ensure_token_file

    try:
        ensure_token_file(path)
    except (TokenFileError, OSError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    err.print(f"token file: {path.resolve()}")


@app.command("load")
def load_command(
    inventory: Path | None = InventoryOpt,
    rate: float = typer.Option(20.0, help="Requests per second per service kind."),
    duration: float = typer.Option(0.0, help="Seconds to run; 0 runs until interrupted."),
    services: list[str] = typer.Option([], "--service", "-s", help="Only these services (repeatable)."),
) -> None:
    """Drive each built service's realistic request mix at its instances."""
    from dwcp.runtime.loadgen import run_load

    raise typer.Exit(run_load(_inventory(inventory), rate=rate, duration=duration, only=set(services)))


@app.command("alert-sink", hidden=True)
def alert_sink(
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(9095),
    data_dir: Path = typer.Option(Path("alerts"), help="Where received alerts are appended (JSONL)."),
    token_file: Path = typer.Option(..., help="Bearer token Alertmanager must send (made by `dwcp up`)."),
) -> None:
    """Receive Alertmanager webhooks, log them and keep them queryable at GET /alerts (used by `dwcp up`)."""
    import os

    from dwcp.monitoring.sink import build_sink_app
    from dwcp.runtime.auth import TokenFileError, read_tokens
    from dwcp.runtime.inventory import HttpLimits
    from dwcp.runtime.logs import setup_logging
    from dwcp.runtime.server import run_app

    os.umask(0o077)  # the journal names hosts and alerts: for the DWCP user only
    setup_logging("info", component="alert-sink")
    try:
        read_tokens(token_file)
    except TokenFileError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    run_app(build_sink_app(data_dir, token_file=token_file), host, port, HttpLimits())


@app.command()
def version() -> None:
    """Print the dwcp version."""
    typer.echo(__version__)


def _mount_subcommands() -> None:
    groups = {
        "monitoring": "Render and check Prometheus, Alertmanager and Grafana files from the inventory.",
        "compression": "Calibrate, train and evaluate the compression selector.",
        "consensus": "Consensus keys and committees.",
        "allocator": "Train and evaluate the MADDPG allocator.",
    }
    for group, help_text in groups.items():
        module = "dwcp.consensus.cli" if group == "consensus" else f"dwcp.{group}.cli"
        if importable(module):
            try:
                sub = importlib.import_module(module)
            except Exception as exc:  # one broken subsystem must not take the whole CLI down
                err.print(f"[yellow]warning:[/yellow] `dwcp {group}` unavailable: {type(exc).__name__}: {exc}")
                continue
            app.add_typer(sub.app, name=group, help=help_text)
            if group == "consensus" and hasattr(sub, "simulate"):
                app.command("simulate", help=sub.simulate.__doc__)(sub.simulate)


_mount_subcommands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
