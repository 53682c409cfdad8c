"""A node's worker process, seen from the node: spawned at start, restarted if it dies, stopped last.

The node (primary) and its worker talk over a socketpair (`locallink.py`): the driver's `ToLocal`
outputs go down it, and what the worker reports comes back as `Local` inputs (`deliver_local`);
`WorkerReport` totals go to the node's metrics. The child is `transport/dataplane.py`; its output
goes to `<data_dir>/worker.log`. A crashed worker is restarted with backoff (1 s doubling to 30 s,
as the supervisor restarts services); meanwhile the primary keeps ordering what it already has.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dwcp.consensus.bullshark.messages import WorkerReport, WorkerSetup
from dwcp.consensus.bullshark.metrics import WorkerMetrics
from dwcp.consensus.transport.locallink import encode_local, read_local
from dwcp.consensus.transport.peers import Backoff

if TYPE_CHECKING:
    from dwcp.consensus.transport.driver import Driver

log = logging.getLogger("dwcp.bullshark.node")


class WorkerProcess:
    def __init__(self, setup: WorkerSetup, driver: Driver, metrics: WorkerMetrics, log_path: Path) -> None:
        self.setup, self.driver, self.metrics, self.log_path = setup, driver, metrics, log_path
        self.process: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task | None = None
        self._stopping = False
        self.restarts = 0

    async def start(self) -> None:
        self.driver.local_sink = self.send
        self.driver.status_extra["worker"] = f"{self.setup.host}:{self.setup.port}"  # where clients stream txs
        self.driver.status_extra["worker_up"] = False
        self._task = asyncio.create_task(self._supervise(), name="bullshark-worker")

    def send(self, message: Any) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(encode_local(message))

    async def _supervise(self) -> None:
        backoff = Backoff(1.0, 30.0)
        while not self._stopping:
            ours, theirs = socket.socketpair()
            with open(self.log_path, "ab") as out:
                self.process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "dwcp.consensus.transport.dataplane", str(theirs.fileno()),
                    pass_fds=(theirs.fileno(),), stdout=out, stderr=out, stdin=asyncio.subprocess.DEVNULL,
                    # Out of the node's process group: a SIGTERM to the group (a supervisor's stop) reaches
                    # the node alone, which drains with its worker still up, then stops it (`stop`). It dies
                    # with the node all the same (PR_SET_PDEATHSIG, and its link closing).
                    start_new_session=True)
            theirs.close()
            reader, self._writer = await asyncio.open_connection(sock=ours)
            self._writer.write(encode_local(self.setup))
            try:
                while True:
                    message = await read_local(reader)
                    if isinstance(message, WorkerReport):
                        self.metrics.report(message.totals)
                        self.driver.status_extra["worker_up"] = True  # it reports once it listens
                    else:
                        self.driver.deliver_local(message)
            except (asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
                if not self._stopping:
                    log.warning("worker of node %s exited (%s); restarting", self.setup.node_id, exc)
            finally:
                self.driver.status_extra["worker_up"] = False
                self._writer.close()
                self._writer = None
            await self.process.wait()
            if not self._stopping:
                self.restarts += 1
                await asyncio.sleep(backoff.next_delay())

    async def stop(self) -> None:
        self._stopping = True
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.process.wait(), 5.0)
            if self.process.returncode is None:
                self.process.kill()
                await self.process.wait()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def worker_components(ctx: Any, keys: Any, shared: Any, protocol: Any, driver: Driver) -> list[WorkerProcess]:
    """The registry's `node_components` for Bullshark: this instance's worker process.

    Worker addresses come from the inventory (each instance's `worker` port); keys are the node's;
    `shared` is the node's ConsensusSettings, `protocol` Bullshark's own settings model."""
    instances = ctx.inventory.spec(ctx.service).instances
    me = keys.signer.node_id
    addresses = {i: (inst.host, inst.ports["worker"]) for i, inst in enumerate(instances)}
    setup = WorkerSetup(
        node_id=me, private_key=keys.private_key,
        certificates={m.node_id: m.certificate for m in keys.committee.members},
        label=f"bullshark-worker/{keys.committee.digest().hex()[:32]}", host=addresses[me][0], port=addresses[me][1],
        peers={i: a for i, a in addresses.items() if i != me}, data_dir=str(ctx.data_dir / "worker"),
        batch_size=protocol.batch_size, max_batch_delay=protocol.max_batch_delay_ms / 1000,
        max_tx=shared.max_tx_bytes, max_inflight=protocol.max_inflight_batches, quorum=keys.committee.quorum,
    )
    return [WorkerProcess(setup, driver, WorkerMetrics(ctx.registry), ctx.data_dir / "worker.log")]
