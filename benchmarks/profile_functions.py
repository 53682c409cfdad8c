"""Where one node's Python goes, by function: a py-spy collapsed profile or a cProfile (pstats) file.

    .venv/bin/python benchmarks/profile_functions.py STACKS --drop-loop        # tpbft_cluster.py --profile-stacks
    .venv/bin/python benchmarks/profile_functions.py --pstats FILE --blocks N  # tpbft_cluster.py --cprofile

py-spy (STACKS): each function's self share (samples with it innermost) and inclusive share, with the phase
(benchmarks/_harness.py) its stacks fall in. `--drop-loop` leaves out the "loop" samples. Caution: py-spy keeps
samples of threads that are runnable, and on a 2-core machine with ten nodes a runnable thread often waits for
a CPU: a send that wakes a peer, the writer thread handed the GIL, a node preempted mid-callback are all counted
where they stand. So shares there weigh waiting, not CPU (session 10: "storage" 37% of the samples, where the
writer thread spends 0.2 of 3.3 ms of CPU per block).

cProfile (--pstats): thread CPU time of the node's main thread, by function: cumulative ms per block (divided
by `--blocks`, the blocks the node committed while profiled), the calls its subtree makes per block, that
cumulative time less the profiler's own cost (`--call-us` per call: each call event reads the thread-CPU clock
twice, a system call; 2.7 us measured here on `tpbft.Metrics.update`, 23 us a call plain and 434 us profiled),
and calls of the function per block. Without that correction code that makes many small calls looks many times
dearer than code that makes few long ones (an Ed25519 check). The subtree's calls are estimated from pstats'
caller counts (a call's share of its callees' subtrees). Work the event loop does in C (reads, TLS, epoll,
timers) runs under no Python function and is not in the file at all. Start-up (imports, pydantic schemas) is
in the file too; the table keeps to dwcp, the HTTP stack and asyncio.
"""

from __future__ import annotations

import argparse
import pstats
from collections import Counter
from pathlib import Path

from _harness import phase_of

_KEEP = ("dwcp/", "uvicorn/", "starlette/", "fastapi/", "prometheus_client/", "asyncio/", "nacl/", "ssl.py")
_SKIP = ("__init__.py:1(<module>)", "(<module>)", "cli.py", "inventory.py", "registry.py")


def collapsed(path: Path, top: int, drop_loop: bool) -> None:
    own: Counter = Counter()
    inclusive: Counter = Counter()
    phases: Counter = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        phase = phase_of(frames)
        if drop_loop and phase == "loop":
            continue
        n = int(count)
        total += n
        phases[phase] += n
        own[frames[-1]] += n
        for f in set(frames):
            inclusive[f] += n
    if not total:
        print("no samples")
        return
    print(f"{total} samples; by phase: " + ", ".join(f"{p} {c / total:.1%}" for p, c in phases.most_common()))
    print(f"{'self':>6} {'incl':>6}  function")
    for f, c in own.most_common(top):
        print(f"{c / total:6.1%} {inclusive[f] / total:6.1%}  {f}")


def profiled(path: Path, blocks: int, top: int, call_us: float) -> None:
    stats = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    callees: dict = {}
    for function, (_, _, _, _, callers) in stats.items():
        for caller, counts in callers.items():
            callees.setdefault(caller, []).append((function, counts[1] if isinstance(counts, tuple) else counts))
    memo: dict = {}

    def subtree(function: tuple, seen: frozenset = frozenset()) -> float:
        """Calls per call of `function` in its subtree, itself included (a recursive call counts once)."""
        if function in memo:
            return memo[function]
        if function in seen:
            return 1.0
        calls = stats[function][1] or 1
        total = 1.0 + sum(n / calls * subtree(g, seen | {function}) for g, n in callees.get(function, ()) if g in stats)
        memo[function] = total
        return total

    rows = []
    for function, (_, calls, _, cumulative, _) in stats.items():
        file, line, name = function
        where = f"{file.split('/src/')[-1].split('site-packages/')[-1]}:{line}({name})"
        if any(k in file for k in _KEEP) and not any(s in where for s in _SKIP):
            made = calls * subtree(function)
            rows.append((cumulative, made, max(0.0, cumulative - made * call_us * 1e-6), calls, where))
    rows.sort(reverse=True)
    print(f"{'cum':>7} {'calls':>7} {'cum-':>7} {'n':>6}  per block over {blocks} blocks: cumulative ms, calls in "
          f"its subtree, cumulative less {call_us} us per call, calls of it")
    for cumulative, made, corrected, calls, where in rows[:top]:
        print(f"{cumulative / blocks * 1e3:7.3f} {made / blocks:7.0f} {corrected / blocks * 1e3:7.3f} "
              f"{calls / blocks:6.2f}  {where}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stacks", type=Path, nargs="?")
    ap.add_argument("--pstats", type=Path, default=None)
    ap.add_argument("--blocks", type=int, default=1)
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--drop-loop", action="store_true")
    ap.add_argument("--call-us", type=float, default=2.7, help="The profiler's own CPU per call (see above).")
    args = ap.parse_args()
    if args.pstats is not None:
        profiled(args.pstats, args.blocks, args.top, args.call_us)
    elif args.stacks is not None:
        collapsed(args.stacks, args.top, args.drop_loop)
    else:
        ap.error("give STACKS or --pstats FILE")


if __name__ == "__main__":
    main()
