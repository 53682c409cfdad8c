"""`dwcp monitoring render` and `dwcp monitoring check`."""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Render and check Prometheus, Alertmanager and Grafana files from the inventory.",
                  no_args_is_help=True)
console = Console()
err = Console(stderr=True)

InventoryOpt = typer.Option(None, "--inventory", "-i", help="Inventory YAML; default: the embedded local one.")


def _load(path: Path | None):  # -> Inventory; imported lazily to keep `dwcp --help` fast
    from dwcp.runtime.inventory import InventoryError, load_inventory

    try:
        return load_inventory(path)
    except InventoryError as exc:
        err.print(f"[red]inventory error:[/red] {exc}")
        raise typer.Exit(2) from None


def _jobs(values: list[str]) -> set[str] | None:
    names = {v.strip() for value in values for v in value.split(",") if v.strip()}
    return names or None


def _summary(detail: str) -> str:
    lines = [ln.strip() for ln in detail.splitlines() if ln.strip()]
    return next((ln for ln in lines if "SUCCESS" in ln or "parse" in ln), lines[0] if lines else "")


@app.command()
def render(
    out: Path = typer.Option(..., "--out", "-o", help="Directory to write into (created if missing)."),
    inventory: Path | None = InventoryOpt,
    jobs: list[str] = typer.Option([], "--jobs", "-j",
                                   help="Only these jobs or inventory keys (repeatable or comma-separated)."),
) -> None:
    """Write prometheus.yml, rules, alertmanager.yml, Grafana provisioning and dashboards, and promtool tests."""
    from dwcp.monitoring.render import render_all

    written = render_all(_load(inventory), out, jobs=_jobs(jobs))
    for name in written:
        console.print(f"  {out / name}")
    console.print(f"[green]rendered {len(written)} files[/green] into {out}")


@app.command()
def check(
    inventory: Path | None = InventoryOpt,
    directory: Path | None = typer.Option(None, "--dir", "-d",
                                          help="Check files already rendered here instead of rendering anew."),
) -> None:
    """Run promtool check config/rules, promtool test rules, amtool check-config and routing, and parse
    every dashboard query. Exits 1 if any check fails."""
    from dwcp.monitoring.check import run_checks
    from dwcp.monitoring.render import render_all

    with tempfile.TemporaryDirectory(prefix="dwcp-monitoring-") as tmp:
        target = directory
        if target is None:
            target = Path(tmp)
            render_all(_load(inventory), target)
        results = run_checks(target)
    table = Table(title=f"monitoring checks ({directory or 'freshly rendered'})")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for r in results:
        detail = r.detail if not r.ok else _summary(r.detail)
        table.add_row(r.name, "[green]pass[/green]" if r.ok else "[red]FAIL[/red]", detail)
    console.print(table)
    failed = [r for r in results if not r.ok]
    if failed:
        err.print(f"[red]{len(failed)} of {len(results)} checks failed[/red]")
        raise typer.Exit(1)
    console.print(f"[green]all {len(results)} checks passed[/green]")
