"""`dwcp up`: the whole system on one machine (or this host's share of an inventory), supervised.

Order: render monitoring files for the services that will run, start every service instance, the
alert sink, Alertmanager and Prometheus, wait until each instance answers /health and Prometheus sees
every target up, then start the load generator and print where everything is. Ctrl-C or SIGTERM
stops everything in reverse order and reports what failed along the way.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from dwcp.runtime.auth import TokenFileError, ensure_token_file, explicit_token_file, token_paths
from dwcp.runtime.inventory import Instance, Inventory, ServiceSpec
from dwcp.runtime.logs import setup_logging
from dwcp.runtime.procs import ProcessSpec, Supervised
from dwcp.runtime.server import RUN_DIR_ENV
from dwcp.runtime.services import SERVICE_KINDS
from dwcp.runtime.tls import TlsFileError, client_verify, server_files

console = Console(stderr=True)


@dataclass
class UpOptions:
    inventory_path: Path | None = None
    run_dir: Path | None = None
    load: bool = True
    load_rate: float | None = None  # None: sized to this host's CPUs (default_load_rate)
    host: str | None = None
    monitoring: bool = True
    only: set[str] = field(default_factory=set)
    ready_timeout: float = 180.0
    exit_when_ready: bool = False


# The default load is sized to the host: on 2 CPUs, 20 req/s per service kind kept the whole system's ~30
# processes at 1.94 of 2 cores (load average 30; HighLatency firing on the manager and the selector from the
# run queue alone), 5 req/s at 0.80 (no latency alert firing). At these rates each consensus transaction is
# its own block, so the cost grows with the rate on every node of every cluster.
LOAD_RATE_PER_CPU = 2.5
LOAD_RATE_MAX = 20.0


def host_cpus() -> int:
    """CPUs this process may run on (the affinity mask, not the machine's count: containers, taskset)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_load_rate(cpus: int | None = None) -> float:
    """Requests per second per service kind for `dwcp up`'s load when `--load-rate` is not given."""
    cpus = host_cpus() if cpus is None else cpus
    return min(LOAD_RATE_MAX, LOAD_RATE_PER_CPU * max(1, cpus))


class SupervisorMetrics:
    """What the supervisor knows that no service can say about itself: its crashes and restarts."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.restarts = Counter(
            "dwcp_service_restarts_total", "Times the supervisor restarted a crashed service process.",
            ["service", "target"], registry=registry,
        )
        self.running = Gauge(
            "dwcp_service_process_running", "1 while the supervised process of this target is alive.",
            ["service", "target"], registry=registry,
        )


def make_run_dir(requested: Path | None) -> Path:
    """The run directory, 0700: logs, stores, journals and secrets are the DWCP user's alone."""
    run_dir = requested or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    for sub in ("logs", "data", "monitoring"):
        (run_dir / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
    run_dir.chmod(0o700)
    return run_dir.resolve()


def _dwcp(*args: str) -> list[str]:
    return [sys.executable, "-m", "dwcp", *args]


def _inventory_args(opts: UpOptions) -> list[str]:
    """The child's --inventory: the same file `up` read (absolute, children may run elsewhere), or none."""
    return ["--inventory", str(opts.inventory_path.resolve())] if opts.inventory_path else []


def plan_load(opts: UpOptions, run_dir: Path, service_keys: list[str]) -> list[ProcessSpec]:
    """One load generator process per service kind.

    Why not one process for all: a request's duration on the server includes the wait for its body, and
    httpx writes headers and body separately, yielding to the event loop in between. In one shared
    generator, the compression profile's large JSON bodies and corpus generation held the loop for
    hundreds of ms, so every other service's histogram measured the generator's stalls (header-to-body gaps
    p50 212 ms, p90 1.3 s on a loaded 2-core VM; 28 / 92 ms with one process per kind) and HighLatency
    fired on five jobs. A process per kind is also a bulkhead for CPU, not only for connections.
    """
    rate = default_load_rate() if opts.load_rate is None else opts.load_rate
    return [
        ProcessSpec(name=f"loadgen-{key}", log_path=run_dir / "logs" / f"loadgen-{key}.log",
                    argv=_dwcp("load", "--rate", str(rate), *_inventory_args(opts), "--service", key),
                    env={RUN_DIR_ENV: str(run_dir)})  # where the services' token files are
        for key in service_keys
    ]


def plan_services(inv: Inventory, opts: UpOptions, run_dir: Path) -> list[ProcessSpec]:
    return [
        ProcessSpec(
            name=f"{key}-{i}", argv=_dwcp("serve", key, "--instance", str(i), *_inventory_args(opts)),
            log_path=run_dir / "logs" / f"{key}-{i}.log", env={RUN_DIR_ENV: str(run_dir)},
            job=spec.job, target=inst.address, backoff_start=inv.supervisor.restart_backoff_s,
            backoff_max=inv.supervisor.restart_backoff_max_s,
        )
        for key, i, spec, inst in local_instances(inv, opts)
    ]


def service_urls(inv: Inventory, opts: UpOptions) -> dict[str, str]:
    """Process name -> base URL (https for a service with TLS) of every service instance started here."""
    return {f"{key}-{i}": inst.url for key, i, _, inst in local_instances(inv, opts)}


def prepare_tls(inv: Inventory, opts: UpOptions) -> list[str]:
    """Each selected service's TLS files checked before anything starts (runtime.tls): the problems found."""
    problems = []
    for key in selected_kinds(inv, opts):
        try:
            if (tls := server_files(inv, key)) is not None:
                client_verify(inv, [key])
                console.print(f"{key}: HTTPS with {tls.cert}")
        except TlsFileError as exc:
            problems.append(f"services.{key}.tls: {exc}")
    return problems


def local_instances(inv: Inventory, opts: UpOptions) -> Iterator[tuple[str, int, ServiceSpec, Instance]]:
    """(key, index, service, instance) for each selected instance this host runs (all of them without --host)."""
    for key, spec in selected_kinds(inv, opts).items():
        for i, inst in enumerate(spec.instances):
            if not opts.host or inst.host == opts.host:
                yield key, i, spec, inst


def selected_kinds(inv: Inventory, opts: UpOptions) -> dict[str, ServiceSpec]:
    """The runnable services this `dwcp up` is about (--service), on every host."""
    return {k: s for k, s in inv.runnable().items() if not opts.only or k in opts.only or s.job in opts.only}


def supervisor_address(inv: Inventory, opts: UpOptions) -> tuple[str, int]:
    """Where this host's supervisor listens: the inventory's address, or this host's with --host, so the
    monitoring host can scrape every host's restart counters."""
    return (opts.host or inv.supervisor.host), inv.supervisor.port


def supervisor_targets(inv: Inventory, opts: UpOptions) -> list[str]:
    """Every host's supervisor, for Prometheus: one per distinct instance host in a multi-host inventory."""
    hosts = sorted({i.host for s in selected_kinds(inv, opts).values() for i in s.instances})
    if not opts.host and len(hosts) <= 1:
        return ["{}:{}".format(*supervisor_address(inv, opts))]
    return [f"{h}:{inv.supervisor.port}" for h in hosts]


def prepare_consensus_keys(inv: Inventory, opts: UpOptions, run_dir: Path) -> list[str]:
    """Fresh keys for each consensus service without `settings.key_dir`: one directory per node under
    `<run_dir>/keys/` (0700, only that node's key in it), found there by the node. Returns the problems:
    a service spread over several hosts needs keys made once and handed out (`keygen`), never made
    separately on each host, so it is refused without `key_dir`."""
    from dwcp.consensus.node.keys import deployment_keys

    problems = []
    for key, spec in selected_kinds(inv, opts).items():
        if "consensus" not in SERVICE_KINDS[key].extra_ports or getattr(spec.settings, "key_dir", None):
            continue
        hosts = sorted({inst.host for inst in spec.instances})
        if len(hosts) > 1:
            problems.append(
                f"services.{key}: instances on {len(hosts)} hosts ({', '.join(hosts)}) and no settings.key_dir. "
                f"Make the keys once: `dwcp consensus keygen --inventory INV --service {key} --out keys/{key}`, "
                f"copy committee.json and node-<I>.key to the host of instance I, and set "
                f"services.{key}.settings.key_dir"
            )
            continue
        deployment_keys(inv, key, run_dir)
    return problems


def planned_ports(inv: Inventory, opts: UpOptions) -> list[tuple[str, str, int]]:
    """(owner, host, port) for every port this `dwcp up` will listen on."""
    planned = [("supervisor", *supervisor_address(inv, opts))]
    for key, i, _, inst in local_instances(inv, opts):
        planned.append((f"{key}-{i}", inst.host, inst.port))
        planned += [(f"{key}-{i} {name}", inst.host, port) for name, port in inst.ports.items()]
    if opts.monitoring:
        mon = inv.monitoring
        planned += [("prometheus", mon.prometheus_host, mon.prometheus_port),
                    ("alertmanager", mon.alertmanager_host, mon.alertmanager_port),
                    ("alert-sink", mon.sink_host, mon.sink_port)]
    return planned


def busy_ports(planned: list[tuple[str, str, int]]) -> list[tuple[str, str]]:
    """(owner, "host:port — why") for each planned port we cannot bind: in use, or not an address of ours."""
    busy = []
    for owner, host, port in planned:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT from a past run is fine
            try:
                probe.bind((host, port))
            except OSError as exc:
                why = "in use" if exc.errno == errno.EADDRINUSE else f"cannot bind: {exc.strerror}"
                busy.append((owner, f"{host}:{port} — {why}"))
    return busy


def prepare_tokens(inv: Inventory, opts: UpOptions, run_dir: Path) -> list[Path]:
    """Make every selected service's token file that is missing (runtime.auth), before anything starts.

    A deployment over several hosts must name its token files in the inventory: a token made here would
    not be the one the other hosts make, and their services and clients would refuse each other."""
    kinds = selected_kinds(inv, opts)
    hosts = {inst.host for spec in kinds.values() for inst in spec.instances}
    if opts.host or len(hosts) > 1:
        unnamed = sorted(key for key in kinds if not explicit_token_file(inv, key))
        if unnamed:
            raise ValueError(
                f"{inv.source}: a multi-host inventory must name the bearer-token file every host shares "
                f"(security.token_file, or services.<key>.token_file for {', '.join(unnamed)}); make one with "
                "`dwcp token FILE` and copy it to each host")
    paths = sorted(set(token_paths(inv, kinds, run_dir / "data", run_dir).values()))
    return [ensure_token_file(path) for path in paths]


def prepare_sink_token(mon, run_dir: Path):
    """The monitoring settings with the alert sink's token file named (made if missing): Alertmanager sends
    it, the sink requires it."""
    path = Path(mon.sink_token_file) if mon.sink_token_file else run_dir / "secrets" / "alert-sink-token"
    ensure_token_file(path)
    return mon.model_copy(update={"sink_token_file": str(path.resolve())})


def plan_monitoring(inv: Inventory, run_dir: Path, files: dict[str, Path]) -> list[ProcessSpec]:
    mon = inv.monitoring
    logs = run_dir / "logs"
    prom = shutil.which("prometheus")
    am = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    missing = [n for n, p in (("prometheus", prom), ("prometheus-alertmanager", am)) if not p]
    if missing:
        names = " ".join(missing)
        raise RuntimeError(f"{names} not installed; run scripts/setup.sh (it runs apt-get install {names})")
    return [
        ProcessSpec(
            name="alert-sink", log_path=logs / "alert-sink.log", target=f"{mon.sink_host}:{mon.sink_port}",
            argv=_dwcp("alert-sink", "--host", mon.sink_host, "--port", str(mon.sink_port),
                       "--data-dir", str(run_dir / "alerts"), "--token-file", str(mon.sink_token_file)),
        ),
        ProcessSpec(
            name="alertmanager", log_path=logs / "alertmanager.log",
            target=f"{mon.alertmanager_host}:{mon.alertmanager_port}",
            argv=[am, f"--config.file={files['alertmanager.yml']}", f"--storage.path={run_dir / 'alertmanager'}",
                  f"--web.listen-address={mon.alertmanager_host}:{mon.alertmanager_port}",
                  # one Alertmanager on one machine: no gossip cluster, so no port 9094 clash
                  "--cluster.listen-address="],
        ),
        ProcessSpec(
            name="prometheus", log_path=logs / "prometheus.log",
            target=f"{mon.prometheus_host}:{mon.prometheus_port}",
            argv=[prom, f"--config.file={files['prometheus.yml']}", f"--storage.tsdb.path={run_dir / 'prometheus'}",
                  # no --web.enable-lifecycle: its POST /-/quit and /-/reload would let anyone stop Prometheus
                  f"--web.listen-address={mon.prometheus_host}:{mon.prometheus_port}"],
        ),
    ]


async def _healthy(client: httpx.AsyncClient, url: str) -> bool:
    try:
        return (await client.get(url, timeout=2.0)).status_code == 200
    except httpx.HTTPError:
        return False


async def _targets_up(client: httpx.AsyncClient, prom_url: str) -> tuple[int, int]:
    try:
        data = (await client.get(f"{prom_url}/api/v1/targets", timeout=2.0)).json()["data"]["activeTargets"]
    except (httpx.HTTPError, KeyError, ValueError):
        return 0, -1
    return sum(t["health"] == "up" for t in data), len(data)


class Up:
    def __init__(self, inv: Inventory, opts: UpOptions) -> None:
        self.inv, self.opts = inv, opts
        self.run_dir = make_run_dir(opts.run_dir)
        self.registry = CollectorRegistry()
        self.metrics = SupervisorMetrics(self.registry)
        self.services: list[Supervised] = []
        self.monitors: list[Supervised] = []
        self.loadgens: list[Supervised] = []
        self.stop_event = asyncio.Event()
        self.failures: list[str] = []

    def _restarted(self, proc: Supervised) -> None:
        if proc.spec.job:
            self.metrics.restarts.labels(proc.spec.job, proc.spec.target).inc()
        console.print(f"[yellow]restarted[/yellow] {proc.name} (restart #{proc.restarts})")

    def _render_monitoring(self, jobs: set[str]) -> dict[str, Path]:
        from dwcp.monitoring.render import render_all

        return render_all(self.inv, self.run_dir / "monitoring", jobs=jobs,
                          extra_targets={"dwcp-supervisor": supervisor_targets(self.inv, self.opts)})

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop_event.set)
        service_specs = plan_services(self.inv, self.opts, self.run_dir)
        if not service_specs and not self.opts.monitoring:
            console.print("[red]no built service has an instance to start here[/red] (check --host/--service)")
            return 2
        # Prometheus scrapes the selected services on every host, not only the ones started here.
        jobs = {s.job for s in selected_kinds(self.inv, self.opts).values()}
        if not jobs:
            console.print("[red]no built service to run or monitor[/red] (check the inventory and --service)")
            return 2
        sup_host, sup_port = supervisor_address(self.inv, self.opts)
        busy = busy_ports(planned_ports(self.inv, self.opts))
        if busy:
            console.print("[red]cannot start: these ports cannot be bound[/red] (another `dwcp up` or a system "
                          "daemon holding them? a host that is not this machine? fix the inventory or --host)")
            for owner, address in busy:
                console.print(f"  {address}  {owner}")
            return 2
        key_problems = prepare_consensus_keys(self.inv, self.opts, self.run_dir)
        if key_problems:
            console.print("[red]cannot start: consensus keys[/red]")
            for problem in key_problems:
                console.print(f"  {problem}")
            return 2
        try:
            token_files = prepare_tokens(self.inv, self.opts, self.run_dir)
        except (TokenFileError, OSError, ValueError) as exc:
            console.print(f"[red]cannot start:[/red] {exc}")
            return 2
        for path in token_files:
            console.print(f"bearer token for write endpoints: {path}")
        tls_problems = prepare_tls(self.inv, self.opts)
        if tls_problems:
            console.print("[red]cannot start: TLS files[/red]")
            for problem in tls_problems:
                console.print(f"  {problem}")
            return 2
        start_http_server(sup_port, addr=sup_host, registry=self.registry)
        monitor_specs = []
        if self.opts.monitoring:
            self.inv.monitoring = prepare_sink_token(self.inv.monitoring, self.run_dir)
            files = self._render_monitoring(jobs)
            monitor_specs = plan_monitoring(self.inv, self.run_dir, files)
        console.print(f"run directory: [bold]{self.run_dir}[/bold]")
        try:
            ready = await self._start_all(service_specs, monitor_specs)
            if ready and self.opts.load:
                await self._start_load()
            if ready:
                self._print_table()
                if not self.opts.exit_when_ready:
                    console.print("[green]all up[/green] — Ctrl-C stops everything")
                    await self.stop_event.wait()
            return 0 if ready else 1
        finally:
            await self._stop_all()
            self._report()

    async def _start_all(self, service_specs: list[ProcessSpec], monitor_specs: list[ProcessSpec]) -> bool:
        for spec in service_specs:
            proc = Supervised(spec, on_restart=self._restarted)
            await proc.start()
            self.metrics.running.labels(spec.job, spec.target).set(1)
            self.metrics.restarts.labels(spec.job, spec.target)  # exported at 0, so increase() works from the start
            self.services.append(proc)
        for spec in monitor_specs:
            proc = Supervised(spec, on_restart=self._restarted)
            await proc.start()
            self.monitors.append(proc)
        return await self._wait_ready()

    async def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.opts.ready_timeout
        mon = self.inv.monitoring
        prom_url = f"http://{mon.prometheus_host}:{mon.prometheus_port}"
        healthy: set[str] = set()
        urls = service_urls(self.inv, self.opts)
        async with httpx.AsyncClient(verify=client_verify(self.inv)) as client:
            with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                          TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(), console=console) as bar:
                t_health = bar.add_task("services healthy", total=len(self.services))
                t_targets = bar.add_task("prometheus targets up", total=None) if self.monitors else None
                while time.monotonic() < deadline and not self.stop_event.is_set():
                    pending = [p for p in self.services if p.name not in healthy]
                    oks = await asyncio.gather(*(_healthy(client, f"{urls[p.name]}/health") for p in pending))
                    healthy.update(p.name for p, ok in zip(pending, oks, strict=True) if ok)
                    bar.update(t_health, completed=len(healthy))
                    done = len(healthy) == len(self.services)
                    if t_targets is not None:
                        up, total = await _targets_up(client, prom_url)
                        bar.update(t_targets, completed=up, total=max(total, 0) or None)
                        done = done and total > 0 and up == total
                    if done:
                        return True
                    await asyncio.sleep(0.5)
        waiting = [p.name for p in self.services if p.name not in healthy]
        if self.stop_event.is_set():
            console.print("[yellow]interrupted while starting[/yellow]")
        else:
            self.failures.append(f"not ready after {self.opts.ready_timeout:.0f}s: {', '.join(waiting) or 'targets'}")
        return False

    async def _start_load(self) -> None:
        if self.opts.load_rate is None:
            console.print(f"load: {default_load_rate():g} req/s per service kind ({LOAD_RATE_PER_CPU:g} per CPU "
                          f"of this host, at most {LOAD_RATE_MAX:g}; --load-rate to change)")
        else:
            console.print(f"load: {self.opts.load_rate:g} req/s per service kind")
        for spec in plan_load(self.opts, self.run_dir, sorted({p.name.rsplit("-", 1)[0] for p in self.services})):
            proc = Supervised(spec, on_restart=self._restarted)
            await proc.start()
            self.loadgens.append(proc)

    async def _stop_all(self) -> None:
        console.print("stopping ...")
        groups = [self.loadgens, self.services, list(reversed(self.monitors))]
        for group in groups:
            codes = await asyncio.gather(*(p.stop() for p in group))
            for proc, code in zip(group, codes, strict=True):
                if proc.spec.job:
                    self.metrics.running.labels(proc.spec.job, proc.spec.target).set(0)
                # 0 and the terminating signal are clean exits; anything else is worth reporting.
                if code not in (0, None, -signal.SIGTERM, 143):
                    self.failures.append(f"{proc.name} exited with code {code} when stopped")

    def _print_table(self) -> None:
        table = Table(title="DWCP is up")
        for col in ("process", "job", "url", "pid"):
            table.add_column(col)
        urls = service_urls(self.inv, self.opts)
        for proc in self.services + self.monitors:
            url = urls.get(proc.name, f"http://{proc.spec.target}")
            table.add_row(proc.name, proc.spec.job or "-", url, str(proc.pid or "-"))
        sup_host, sup_port = supervisor_address(self.inv, self.opts)
        table.add_row("supervisor", "dwcp-supervisor", f"http://{sup_host}:{sup_port}/metrics", "-")
        console.print(table)
        console.print(f"logs: {self.run_dir / 'logs'}")

    def _report(self) -> None:
        for proc in self.services + self.monitors + self.loadgens:
            if proc.restarts:
                self.failures.append(f"{proc.name} crashed {proc.restarts} time(s), exit codes {proc.exit_codes}")
        if self.failures:
            console.print("[red]problems during this run:[/red]")
            for line in self.failures:
                console.print(f"  - {line}")
        else:
            console.print("[green]stopped cleanly[/green]")


def run_up(inv: Inventory, opts: UpOptions) -> int:
    os.umask(0o077)  # every file `up` and its children write (stores, journals, logs) is the DWCP user's alone
    up = Up(inv, opts)
    with open(up.run_dir / "logs" / "supervisor.log", "a") as log_file:
        setup_logging("info", component="supervisor", stream=log_file)
        return asyncio.run(up.run())
