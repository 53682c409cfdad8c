"""One site's manager, assembled from the inventory: store, peer port, transfers, links, routing.

This is the domain object the HTTP service (`service.py`) calls; it owns every thread and socket the
manager runs besides the HTTP server, and starts and stops them with the app.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from dwcp.manager.dependency import Dependency
from dwcp.manager.incoming import Receiver
from dwcp.manager.keys import site_auth
from dwcp.manager.links import LinkTable, probe
from dwcp.manager.metrics import ManagerMetrics
from dwcp.manager.peers import PeerServer, sites
from dwcp.manager.routelog import RoutingLog
from dwcp.manager.routing import ABSENT, CLUSTERS, Router
from dwcp.manager.selection import CodecChooser
from dwcp.manager.settings import ManagerSettings
from dwcp.manager.store import ObjectStore
from dwcp.manager.transfers import Tamper, Transfers
from dwcp.manager.wire import TlsAuth, WireError, site_name
from dwcp.runtime.app import HealthResult
from dwcp.runtime.auth import client_auth
from dwcp.runtime.breaker import BreakerMetrics, BreakerState, CircuitBreaker
from dwcp.runtime.context import ServiceContext
from dwcp.runtime.resilience import Guard, RetryBudget
from dwcp.runtime.services import SERVICE_KINDS
from dwcp.runtime.threads import lower_thread_priority
from dwcp.runtime.tls import client_verify

log = logging.getLogger("dwcp.manager")


def settings_of(ctx: ServiceContext) -> ManagerSettings:
    s = ctx.settings
    return s if isinstance(s, ManagerSettings) else ManagerSettings.model_validate(s or {})


def service_urls(ctx: ServiceContext, key: str) -> list[str]:
    """HTTP base URLs of a built, enabled service in this inventory (empty when it is absent)."""
    spec = ctx.inventory.runnable().get(key)
    return [inst.url for inst in spec.instances] if spec else []


class ManagerSite:
    def __init__(self, ctx: ServiceContext, tamper: Tamper | None = None) -> None:
        self.ctx = ctx
        self.settings = settings = settings_of(ctx)
        self.name = site_name(ctx.instance)
        self.metrics = ManagerMetrics(ctx.registry)
        self.breaker_metrics = BreakerMetrics(ctx.registry, ctx.job)
        self.breaker_config = ctx.inventory.spec("manager").breaker
        self.sites = {s.name: s for s in sites(ctx.inventory)}
        self.peers = {n: s for n, s in self.sites.items() if n != self.name}
        # Swept below, once the unfinished transfers have pinned their blobs: the sweep keeps what they send.
        self.store = ObjectStore(ctx.data_dir / "objects", settings.keep_versions, self.metrics, sweep=False)
        self.metrics.watch_store(self.store)
        self.receiver = Receiver(self.store)
        self.peer_auth = site_auth(ctx, settings.peer_key_dir)
        self.auth = TlsAuth(self.peer_auth)
        self.links = LinkTable(sorted(self.peers), self.metrics)
        self.selector_breaker = self.breaker("selector")
        self.chooser = CodecChooser(service_urls(ctx, "compression"), self.selector_breaker, self.metrics,
                                    settings.selector_timeout_s,
                                    client_auth(ctx.inventory, ctx.data_dir.parent, keys=["compression"]),
                                    client_verify(ctx.inventory, ["compression"]))
        self.transfers = Transfers(store=self.store, sites=self.peers, auth=self.auth, chooser=self.chooser,
                                   links=self.links, metrics=self.metrics, settings=settings,
                                   log_path=ctx.data_dir / "transfers.sqlite", tamper=tamper)
        self.store.sweep()
        self.router = self._router()
        me = self.sites[self.name]
        self.peer_server = PeerServer(me.host, me.peer_port, self.auth, self.receiver, self.metrics,
                                      settings.max_incoming)
        self._stop = threading.Event()
        self._prober: threading.Thread | None = None

    def breaker(self, name: str) -> CircuitBreaker:
        return CircuitBreaker(name, self.breaker_config, self.breaker_metrics)

    def dependency(self, name: str, urls: list[str]) -> Dependency:
        s = self.settings
        return Dependency(name, urls, self.breaker(name), Guard(name, s.dependency_rate, s.dependency_concurrency),
                          RetryBudget(s.retry_budget_ratio))

    def _router(self) -> Router:
        clusters, unbuilt = {}, {}
        for name in CLUSTERS:
            spec = self.ctx.inventory.services.get(name)
            if not SERVICE_KINDS[name].built:
                unbuilt[name] = f"{name} is not built in this version of dwcp"
            elif spec is None or not spec.enabled or not spec.instances:
                unbuilt[name] = f"{name} is not in this deployment's inventory"
            else:
                clusters[name] = self.dependency(name, [inst.url for inst in spec.instances])
        allocator = self.dependency("allocator", service_urls(self.ctx, "allocator"))
        return Router(clusters, unbuilt, allocator, RoutingLog(self.ctx.data_dir / "routing.sqlite"), self.links,
                      self.metrics, self.settings.request_timeout_s, self.settings.high_volume_tx_per_second,
                      client_auth(self.ctx.inventory, self.ctx.data_dir.parent), client_verify(self.ctx.inventory))

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        sys.setswitchinterval(self.settings.gil_switch_interval_s)
        await self.router.start()
        # Started from a thread at a lower priority, which every thread they start inherits (nice is per
        # thread on Linux): hashing, TLS and compression then never keep the event loop off a CPU.
        with ThreadPoolExecutor(1, "bulk-start", initializer=lower_thread_priority,
                                initargs=(self.settings.bulk_thread_nice,)) as starter:
            starter.submit(self._start_bulk).result()

    def _start_bulk(self) -> None:
        self.peer_server.start()
        self.transfers.start()
        self._prober = threading.Thread(target=self._probe_loop, name="link-prober", daemon=True)
        self._prober.start()

    async def stop(self) -> None:
        self._stop.set()
        self.peer_server.stop()
        self.transfers.stop()
        self.chooser.close()
        await self.router.stop()
        self.store.close()

    def _probe_loop(self) -> None:
        # First probes soon after start, then on the schedule. A peer whose probe failed (e.g. refused: it was
        # still starting) is tried again sooner, 2 s and doubling up to the schedule, so a site that came up
        # before its peers does not go a whole probe_interval_s without link figures.
        interval = self.settings.probe_interval_s
        first = min(2.0, interval)
        due = dict.fromkeys(self.peers, time.monotonic() + first)
        retry = dict.fromkeys(self.peers, first)
        owed: dict[str, float] = {}
        # A peer this site is sending to is probed later (every 2 s it is looked at again), for at most one more
        # interval: a probe then measures the share of the link its own transfers leave (on the shaped 100 Mbit/s
        # benchmark link, 2.3 MB/s) and steals link time from them, and the pricing took the figure for the link.
        while due and not self._stop.wait(max(0.0, min(due.values()) - time.monotonic())):
            for name in sorted(n for n, t in due.items() if t <= time.monotonic()):
                owed.setdefault(name, due[name])  # when it was due: deferred for at most one interval
                if self.transfers.busy(name) and time.monotonic() - owed[name] < interval:
                    due[name] = time.monotonic() + first
                    continue
                del owed[name]
                if self.probe(name):
                    due[name], retry[name] = time.monotonic() + interval, first
                else:
                    due[name], retry[name] = time.monotonic() + retry[name], min(2 * retry[name], interval)

    def probe(self, peer: str) -> bool:
        """Probe `peer` now; False (its error recorded on the link) when that failed."""
        # Through the session pool: the probe's connection stays for the next transfer, so with probes every
        # probe_interval_s (inside the pool's idle limit) a transfer finds a warm authenticated session.
        sessions, site = self.transfers.sessions, self.peers[peer]
        try:
            conn = sessions.take(site, timeout=5.0)
            try:
                rtt, bandwidth = probe(conn, self.settings.probe_bytes)
            except BaseException:
                conn.close()
                raise
            sessions.give(site, conn)
        except (WireError, OSError) as exc:
            self.links.record_error(peer, f"{type(exc).__name__}: {exc}")
            return False
        self.links.record_probe(peer, rtt, bandwidth)
        return True

    # -- health: cached facts only, so /health never waits on a dependency ---------------------------
    def health_checks(self) -> dict:
        checks = {"store": self._store_health, "selector": self._breaker_health(self.selector_breaker)}
        for peer in sorted(self.peers):
            checks[f"peer:{peer}"] = self._peer_health(peer)
        for name, dep in sorted(self.router.clusters.items()):
            checks[name] = self._breaker_health(dep.breaker)
        for name, why in sorted(self.router.unbuilt.items()):
            checks[name] = self._absent(why)
        if self.router.allocator.urls:
            checks["allocator"] = self._breaker_health(self.router.allocator.breaker)
        return checks

    @staticmethod
    def _absent(why: str):
        def check() -> HealthResult:
            return HealthResult("ok", f"{ABSENT} {why} (its requests get 503)")
        return check

    def _store_health(self) -> HealthResult:
        return HealthResult("ok", f"{self.transfers.active()} transfers active")

    @staticmethod
    def _breaker_health(breaker: CircuitBreaker):
        def check() -> HealthResult:
            if breaker.state is BreakerState.CLOSED:
                return HealthResult("ok", "breaker closed")
            return HealthResult("degraded", f"breaker {breaker.state.value}")
        return check

    def _peer_health(self, peer: str):
        def check() -> HealthResult:
            link = self.links.get(peer)
            if link.error:
                return HealthResult("degraded", link.error)
            if link.probed_at is None:
                return HealthResult("ok", "not probed yet")
            return HealthResult("ok", f"rtt {link.rtt * 1e3:.2f} ms, probed {time.time() - link.probed_at:.0f}s ago")
        return check
