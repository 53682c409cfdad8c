"""`dwcp monitoring render` and `dwcp monitoring check`."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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


@contextlib.contextmanager
def _rendered(directory: Path | None, inventory: Callable[[], Any]) -> Iterator[Path]:
    """`directory` as given, or the inventory's files freshly rendered into a temporary one."""
    if directory is not None:
        yield directory
        return
    from dwcp.monitoring.render import render_all

    with tempfile.TemporaryDirectory(prefix="dwcp-monitoring-") as tmp:
        render_all(inventory(), Path(tmp))
        yield Path(tmp)


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

    with _rendered(directory, lambda: _load(inventory)) as target:
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


@app.command()
def live(
    prometheus: str | None = typer.Option(None, "--prometheus", "-p",
                                          help="Prometheus base URL; default: the inventory's."),
    inventory: Path | None = InventoryOpt,
    directory: Path | None = typer.Option(None, "--dir", "-d",
                                          help="Queries rendered here (e.g. runs/<ts>/monitoring) instead of anew."),
) -> None:
    """Run every dashboard query and recording rule against a live Prometheus. A query whose metrics some
    target exports must return data; queries over services that are not running are listed as skipped.
    Exits 1 if an answerable query returns nothing."""
    import httpx

    from dwcp.monitoring.live import check_live

    inv = _load(inventory)
    url = prometheus or inv.monitoring.prometheus_url
    with _rendered(directory, lambda: inv) as target:
        try:
            results = check_live(url, target)
        except httpx.HTTPError as exc:
            err.print(f"[red]cannot query Prometheus at {url}:[/red] {exc}")
            raise typer.Exit(2) from None
    table = Table(title=f"live queries against {url}")
    for column in ("query", "result", "series / why skipped"):
        table.add_column(column, overflow="fold")
    for r in results:
        verdict = "[yellow]skip[/yellow]" if r.skipped else ("[green]data[/green]" if r.ok else "[red]EMPTY[/red]")
        table.add_row(r.where, verdict, r.skipped or str(r.series))
    console.print(table)
    empty = [r for r in results if not r.ok]
    answered = sum(1 for r in results if not r.skipped)
    if empty:
        err.print(f"[red]{len(empty)} of {answered} answerable queries returned no data[/red]")
        raise typer.Exit(1)
    console.print(f"[green]all {answered} answerable queries returned data[/green] "
                  f"({len(results) - answered} skipped: their services are not running)")
