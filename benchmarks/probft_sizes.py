"""ProBFT's sample sizes against its message target: what each sample size costs and what it risks.

Issue 11 asks for messages per finalized block at n = 100 <= 25% of PBFT's. ProBFT's messages are its
sampled ballots (91% at n = 100, docs/probft.md), n + 2·n·s per block against PBFT's n + 2n(n - 1), so
the target fixes the sample size s. For every sample factor o (s = ceil(o·sqrt(n)), q the largest
quorum a correct leader's phase reaches with f silent nodes except w.p. 10^-2, `sampling.derive`) this
prints, at f = floor((n - 1)/3) colluding nodes, per view:

- forge: the f nodes can fill a valid certificate for a Byzantine holder (`sampling.forge_risk`); the
  defaults keep it <= 10^-6 because catch-up and the view change trust certificates;
- isolation: an equivocating leader and the f nodes make one correct node decide a block alone
  (`sampling.isolation_risk`). No handling of certificates changes it, so it is the floor that a
  checkpoint-anchored catch-up and a quorum-vouched view change would leave.

and, per n, the smallest o whose risk is <= 10^-6 under each rule with the ballot ratio it costs.

    .venv/bin/python benchmarks/probft_sizes.py                        # n = 31, 100, 200, 400, 1000
    .venv/bin/python benchmarks/probft_sizes.py --sizes 100 --table --json-out sizes.json

No timing: the figures are exact binomial tails (seconds of CPU).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from dwcp.consensus.probft.sampling import derive, forge_risk, isolation_risk, predict

TARGET_RATIO = 0.25  # issue 11: messages per block at n = 100 <= 25% of PBFT's
BOUND = 1e-6  # the per-view risk the defaults accept (sampling.DEFAULT_FORGE_RISK)


def ballot_ratio(n: int, s: int) -> float:
    """Ballots per block, ProBFT (n proposals + 2 sampled phases) over PBFT (n + 2 all-to-all phases)."""
    return (n + 2 * n * s) / (n + 2 * n * (n - 1))


def rows(n: int) -> list[dict[str, float]]:
    """One row per sample factor o (steps of 0.25 from 1) until the sample is everyone."""
    f = (n - 1) // 3
    out = []
    for i in range(int(4 * math.sqrt(n)) + 1):
        o = 1.0 + 0.25 * i
        params = derive(n, f, 2 * f + 1, o=o)
        if params.dense or params.sample_size >= n - 1:
            break
        p, q = params.p, params.quorum
        out.append({"o": o, "s": params.sample_size, "q": q, "ratio": ballot_ratio(n, params.sample_size),
                    "liveness_miss": predict(params)["liveness_miss"],
                    "forge": forge_risk(n, f, p, q), "isolation": isolation_risk(n, f, p, q)})
    return out


def smallest(table: list[dict[str, float]], rule: str) -> dict[str, float] | None:
    return next((r for r in table if r[rule] <= BOUND), None)


def summary(n: int) -> dict[str, object]:
    table = rows(n)
    cheap = [r for r in table if r["ratio"] <= TARGET_RATIO]
    return {"n": n, "f": (n - 1) // 3, "rows": table,
            "safe_default": smallest(table, "forge"), "isolation_floor": smallest(table, "isolation"),
            "min_isolation_at_target": min((r["isolation"] for r in cheap), default=None)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="31,100,200,400,1000", help="committee sizes, comma-separated")
    ap.add_argument("--table", action="store_true", help="print every o, not only the summary")
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args(argv)
    results = [summary(int(x)) for x in args.sizes.split(",") if x.strip()]
    print(f"per view, f = floor((n-1)/3) colluding; bound {BOUND:g}; ballot ratio = n + 2ns over n + 2n(n-1)")
    print(f"{'n':>5} {'safe default (forge)':>26} {'floor (isolation only)':>26} {'best isolation risk at <=25%':>30}")
    for r in results:
        def cell(row: dict[str, float] | None) -> str:
            return "none" if row is None else f"o={row['o']:.2f} s={row['s']} q={row['q']} {row['ratio']:.0%}"
        best = r["min_isolation_at_target"]
        print(f"{r['n']:>5} {cell(r['safe_default']):>26} {cell(r['isolation_floor']):>26} "
              f"{'no size' if best is None else f'{best:.1e}':>30}")
    if args.table:
        for r in results:
            print(f"\nn = {r['n']}, f = {r['f']}")
            print(f"{'o':>5} {'s':>4} {'q':>4} {'ratio':>6} {'live miss':>10} {'forge':>9} {'isolation':>10}")
            for row in r["rows"]:
                print(f"{row['o']:5.2f} {row['s']:4d} {row['q']:4d} {row['ratio']:6.0%} {row['liveness_miss']:10.1e} "
                      f"{row['forge']:9.1e} {row['isolation']:10.1e}")
    if args.json_out:
        args.json_out.write_text(json.dumps({"target_ratio": TARGET_RATIO, "bound": BOUND, "sizes": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
