"""Supervised child processes: start, log to a file, restart with backoff when they crash, stop cleanly.

Each child is its own process group, so stopping it also stops anything it started. A child that
exits while it should be running is a crash: it is logged, counted, and restarted after a backoff
that doubles per quick crash (by default 1 s, 2 s, 4 s ... 30 s; the inventory's `supervisor` section
sets both ends) and resets once the child has stayed up a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("dwcp.supervise")

BACKOFF_START = 1.0
BACKOFF_MAX = 30.0
STABLE_AFTER = 60.0


@dataclass
class ProcessSpec:
    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    job: str = ""  # Prometheus job of the service, "" for monitoring/load processes
    target: str = ""  # host:port the process serves, for metrics labels and tables
    backoff_start: float = BACKOFF_START  # first restart delay; doubles per quick crash
    backoff_max: float = BACKOFF_MAX


class Supervised:
    """One child process kept running until `stop()`."""

    def __init__(self, spec: ProcessSpec, on_restart: Callable[[Supervised], None] | None = None) -> None:
        self.spec = spec
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.exit_codes: list[int] = []
        self.started_at = 0.0
        self._stopping = False
        self._task: asyncio.Task | None = None
        self._on_restart = on_restart
        self._backoff = spec.backoff_start

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.returncode is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    async def start(self) -> None:
        await self._spawn()
        self._task = asyncio.create_task(self._watch(), name=f"watch-{self.name}")

    async def _spawn(self) -> None:
        self.spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.spec.log_path, "ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *self.spec.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, **self.spec.env},
                cwd=self.spec.cwd,
                start_new_session=True,  # own process group: Ctrl-C in the terminal reaches only us
            )
        self.started_at = time.monotonic()
        log.info("started %s (pid %d)", self.name, self.proc.pid, extra={"event": "process_started"})

    async def _watch(self) -> None:
        while not self._stopping:
            assert self.proc is not None
            code = await self.proc.wait()
            if self._stopping:
                return
            self.exit_codes.append(code)
            uptime = time.monotonic() - self.started_at
            if uptime >= STABLE_AFTER:
                self._backoff = self.spec.backoff_start
            delay = self._backoff
            self._backoff = min(self._backoff * 2, self.spec.backoff_max)
            log.warning(
                "%s exited with code %s after %.1fs; restarting in %.0fs (restart #%d)",
                self.name, code, uptime, delay, self.restarts + 1,
                extra={"event": "process_crashed", "proc": self.name, "exit_code": code},
            )
            await asyncio.sleep(delay)
            if self._stopping:
                return
            self.restarts += 1
            if self._on_restart:
                self._on_restart(self)
            await self._spawn()

    async def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM the process group, SIGKILL it after `grace` seconds; returns the exit code."""
        self._stopping = True
        if self._task:
            self._task.cancel()
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return proc.returncode if proc else None
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            return await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            log.warning("%s did not stop in %.0fs; killing it", self.name, grace)
            _signal_group(proc.pid, signal.SIGKILL)
            return await proc.wait()


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone is what we wanted
        os.killpg(pid, sig)
