"""The router's idempotency records: concurrent submissions share one durable commit, and every record that
was acknowledged is there after the process is killed."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap

from dwcp.manager.routelog import RoutingLog


def test_records_queued_during_a_commit_share_the_next_one(tmp_path):
    path = tmp_path / "routing.sqlite"
    log = RoutingLog(path)
    blocker = sqlite3.connect(path, isolation_level=None)

    async def submit_all() -> None:
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the database: the first commit waits
        first = asyncio.create_task(log.record_tx("k0", "sha0", "tx0", "tpbft"))
        await asyncio.sleep(0.2)
        rest = [asyncio.create_task(log.record_tx(f"k{i}", f"sha{i}", f"tx{i}", "tpbft")) for i in range(1, 64)]
        await asyncio.sleep(0.2)
        assert not first.done() and not any(t.done() for t in rest)  # nobody is answered before the commit
        blocker.execute("ROLLBACK")
        await asyncio.gather(first, *rest)

    asyncio.run(submit_all())
    assert log.commits <= 2, log.commits  # one record by itself, then the 63 that queued behind it
    log.close()
    reopened = RoutingLog(path)
    assert all(reopened.idempotent(f"k{i}") == (f"sha{i}", f"tx{i}", "tpbft") for i in range(64))
    assert reopened.cluster_of("tx63") == "tpbft"
    reopened.close()


def test_a_record_is_not_answered_when_its_commit_fails(tmp_path):
    log = RoutingLog(tmp_path / "routing.sqlite")
    log._db.execute("DROP TABLE transactions")  # the commit's second insert fails: nothing may be acknowledged

    async def submit() -> BaseException | None:
        try:
            await log.record_tx("k", "sha", "tx", "tpbft")
        except sqlite3.Error as exc:
            return exc
        return None

    assert isinstance(asyncio.run(submit()), sqlite3.Error)
    assert log.idempotent("k") is None  # rolled back with the failed insert
    log.close()


def test_every_acknowledged_record_survives_kill_9_of_the_process(tmp_path):
    path = tmp_path / "routing.sqlite"
    child = textwrap.dedent(f"""
        import asyncio, sys
        from dwcp.manager.routelog import RoutingLog
        log = RoutingLog({str(path)!r})

        async def one(i):
            await log.record_tx(f"k{{i}}", f"sha{{i}}", f"tx{{i}}", "probft")
            print(i, flush=True)  # acknowledged: the caller would answer 202 now

        async def main():
            for wave in range(1000):
                await asyncio.gather(*(one(wave * 16 + j) for j in range(16)))

        asyncio.run(main())
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    acknowledged = []
    for line in proc.stdout:
        acknowledged.append(int(line))
        if len(acknowledged) == 300:
            proc.kill()  # SIGKILL, mid-stream: commits in flight are lost, acknowledged ones must not be
            break
    proc.wait(30)
    log = RoutingLog(path)
    missing = [i for i in acknowledged if log.idempotent(f"k{i}") != (f"sha{i}", f"tx{i}", "probft")]
    log.close()
    assert not missing, missing
