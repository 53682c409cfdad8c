"""`dwcp status`: each instance's /health and each Prometheus target's state, as two tables."""

from __future__ import annotations

import asyncio

import httpx
from rich.console import Console
from rich.table import Table

from dwcp.runtime.inventory import Inventory
from dwcp.runtime.tls import TlsFileError, client_verify

console = Console()
_STYLE = {"ok": "green", "up": "green", "degraded": "yellow", "unknown": "yellow"}


async def _health(client: httpx.AsyncClient, url: str) -> tuple[str, str]:
    try:
        resp = await client.get(f"{url}/health")
        body = resp.json()
        failing = [f"{n}: {c['detail']}" for n, c in body.get("checks", {}).items() if c.get("status") != "ok"]
        return body.get("status", f"http {resp.status_code}"), "; ".join(failing)
    except (httpx.HTTPError, ValueError) as exc:
        return "down", type(exc).__name__


async def _collect(inv: Inventory, timeout: float) -> tuple[list[tuple], list[dict] | str]:
    rows = []
    async with httpx.AsyncClient(timeout=timeout, verify=client_verify(inv)) as client:
        probes = [
            (spec.job, i, inst.url) for spec in inv.runnable().values() for i, inst in enumerate(spec.instances)
        ]
        results = await asyncio.gather(*(_health(client, url) for _, _, url in probes))
        rows = [(job, i, url, st, detail) for (job, i, url), (st, detail) in zip(probes, results, strict=True)]
        mon = inv.monitoring
        prom = f"http://{mon.prometheus_host}:{mon.prometheus_port}"
        try:
            targets = (await client.get(f"{prom}/api/v1/targets")).json()["data"]["activeTargets"]
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            targets = f"Prometheus at {prom} not reachable ({type(exc).__name__})"
    return rows, targets


def print_status(inv: Inventory, timeout: float = 2.0) -> int:
    try:
        rows, targets = asyncio.run(_collect(inv, timeout))
    except TlsFileError as exc:
        console.print(f"[red]cannot verify the services' TLS certificates:[/red] {exc}")
        return 2
    health = Table(title="service health")
    for col in ("job", "instance", "url", "health", "detail"):
        health.add_column(col)
    for job, i, url, st, detail in rows:
        health.add_row(job, str(i), url, f"[{_STYLE.get(st, 'red')}]{st}[/]", detail)
    console.print(health)
    bad = sum(st not in ("ok", "degraded") for *_, st, _ in rows)
    if isinstance(targets, str):
        console.print(f"[red]{targets}[/red]")
        return 1
    table = Table(title="prometheus targets")
    for col in ("job", "instance", "state", "last scrape", "error"):
        table.add_column(col)
    for t in sorted(targets, key=lambda t: (t["labels"].get("job", ""), t["labels"].get("instance", ""))):
        st = t["health"]
        table.add_row(t["labels"].get("job", ""), t["labels"].get("instance", ""), f"[{_STYLE.get(st, 'red')}]{st}[/]",
                      t.get("lastScrape", "")[:19], t.get("lastError", ""))
    console.print(table)
    bad += sum(t["health"] != "up" for t in targets)
    return 1 if bad else 0
