"""`dwcp compression calibrate | train | evaluate`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Calibrate, train and evaluate the compression selector.", no_args_is_help=True)
console = Console()

CacheOpt = typer.Option(Path("runs/compression"), help="Where labelled datasets and their calibration are kept.")


@app.command()
def calibrate(
    out: Path | None = typer.Option(
        None, help="Calibration file; default: per-host file in ~/.cache or $DWCP_COMPRESSION_CALIBRATION."
    ),
) -> None:
    """Time every option on the reference array on this host and store the speeds."""
    from dwcp.compression import calibrate as cal_mod

    path = out or cal_mod.default_path()
    cal = cal_mod.run()
    cal_mod.save(cal, path)
    table = Table("option", "ratio", "compress MB/s", "decompress MB/s", title=f"calibration of {cal.host}")
    for key, r, c, d in zip(cal_mod.KEYS, cal.ratio, cal.vc, cal.vd, strict=True):
        table.add_row(key, f"{r:.3f}", f"{c / 1e6:.1f}", f"{d / 1e6:.1f}")
    console.print(table)
    console.print(f"wrote {path} ({cal.seconds:.1f} s)")


def _datasets(
    cache: Path,
    seed: int,
    n_train: int,
    n_heldout: int,
    n_real: int,
    relabel: bool,
    refeature: bool = False,
    n_real_train: int = 0,
    n_train_large: int = 0,
):
    """(calibration, held-out synthetic, held-out real, train, large-chunk train, real training files), labelled
    now or read from the cache, in that order (held-out sets first: they score any artifact).

    Every payload is labelled as one chunk of its length. Synthetic training chunks are 512 B-128 KiB, plus
    128 KiB-1 MiB ones (`n_train_large`: ~5x the oracle time each); held-out sets are in thirds up to 64 KiB,
    up to 1 MiB and full 1 MiB chunks (`train.heldout_payloads`). Real payloads are files of one kind
    concatenated (`corpus.real_payloads`); training ones come from other directory trees than the held-out
    ones (`corpus.TRAIN_REAL_ROOTS`), so no file is both trained on and scored on."""
    from dwcp.compression import calibrate as cal_mod

    cal_path = cache / "calibration.json"
    cal = None
    if not relabel and cal_path.exists():
        try:
            cal = cal_mod.load(cal_path)
        except (ValueError, KeyError) as exc:  # an older format: its labels predate the pilot too
            console.print(f"[yellow]{cal_path}: {exc}; recalibrating and relabelling[/yellow]")
    if cal is None:
        cal = cal_mod.run()
        cal_mod.save(cal, cal_path)
        relabel = True  # labels are relative to the calibration: new calibration, new labels
    out = []
    with _progress() as progress:
        for name, s, n, make in _specs(seed, n_train, n_heldout, n_real, n_real_train, n_train_large):
            out.append(_labelled(cache / f"{name}-s{s}-n{n}.npz", name, n, make, relabel, refeature, progress))
    return cal, *out


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def _specs(seed: int, n_train: int, n_heldout: int, n_real: int, n_real_train: int = 0, n_train_large: int = 0):
    """(name, seed, count, payload maker) of every dataset, held-out sets first (see `_datasets`)."""
    from dwcp.compression import corpus
    from dwcp.compression.costmodel import DEFAULT_CHUNK_BYTES
    from dwcp.compression.train import heldout_payloads

    small = 128 << 10
    return [
        ("heldout", seed + 1, n_heldout, lambda: heldout_payloads(corpus.items, seed + 1, n_heldout)),
        ("real", seed + 2, n_real, lambda: heldout_payloads(corpus.real_payloads, seed + 2, n_real)),
        ("train", seed, n_train, lambda: corpus.items(seed, n_train, 512, small)),
        (
            "trainlarge",
            seed + 10,
            n_train_large,
            lambda: corpus.items(seed + 10, n_train_large, small, DEFAULT_CHUNK_BYTES),
        ),
        (
            "realtrain",
            seed + 3,
            n_real_train,
            lambda: corpus.real_payloads(seed + 3, n_real_train, 512, DEFAULT_CHUNK_BYTES, corpus.TRAIN_REAL_ROOTS),
        ),
    ]


def _labelled(path: Path, name: str, n: int, make, relabel: bool, refeature: bool, progress):
    """The dataset cached at `path`, else labelled now and saved there (None for `n` = 0)."""
    from dwcp.compression.features import N_FEATURES
    from dwcp.compression.train import Dataset, label
    from dwcp.compression.train import refeature as recompute

    augment = "train" in name  # training also sees smaller client samples
    if n == 0:
        return None
    if path.exists() and not relabel:
        ds = Dataset.load(path)
        # Labels stay valid; only the features are recomputed from the same payloads (also when the
        # cache predates a change in the feature vector).
        if refeature or ds.x.shape[1] != N_FEATURES:
            ds = recompute(ds, make(), augment=augment)
            ds.save(path)
        return ds
    task = progress.add_task(f"labelling {path.stem} (oracle: every option)", total=n)
    ds = label(make(), progress=_advance(progress, task, f"labelling {path.stem}", n), augment=augment)
    ds.save(path)
    return ds


def _advance(progress, task, what: str, total: int, lines: int = 20):
    """Progress callback: the bar on a terminal, else (a log file) a line every 1/`lines` of the way."""
    import time

    start, done = time.monotonic(), [0]

    def step(_n: int) -> None:
        progress.advance(task)
        done[0] += 1
        if not console.is_terminal and (done[0] % max(total // lines, 1) == 0 or done[0] == total):
            console.print(f"{what}: {done[0]}/{total} ({time.monotonic() - start:.0f} s)")

    return step


def _print_eval(title: str, ev) -> None:
    o, d = ev.overall, ev.decisive
    console.print(
        f"[bold]{title}[/bold]: accuracy {o['accuracy']:.4f}, exact-best {o['exact_best']:.4f}, "
        f"mean regret {o['mean_regret']:.4f} over {o['n']} requests "
        f"(decisive only: {d['accuracy']:.4f} / {d['exact_best']:.4f} / {d['mean_regret']:.4f}, n={d['n']})"
    )
    if ev.repeat:
        r = ev.repeat["overall"]
        console.print(
            f"oracle repeatability (a second labelling's best option scored on the first): near-best "
            f"{r['accuracy']:.4f}, exact-best {r['exact_best']:.4f}, mean regret {r['mean_regret']:.4f}"
        )
    for what, key in (("declared size", "buckets"), ("family", "families")):
        groups = getattr(ev, key)
        rep = ev.repeat[key] if ev.repeat else None
        table = Table(
            what,
            "n",
            "accuracy",
            "exact",
            "regret",
            "vs zstd-3",
            "vs none",
            "best fixed",
            "vs best fixed",
            *(["oracle rep.", "oracle regret"] if rep else []),
        )
        for name, s in groups.items():
            table.add_row(
                name,
                str(s["n"]),
                f"{s['accuracy']:.4f}",
                f"{s['exact_best']:.3f}",
                f"{s['mean_regret']:.4f}",
                f"{s['vs_zstd-3']:.3f}",
                f"{s['vs_none']:.3f}",
                s["best_fixed"],
                f"{s['vs_best_fixed']:.3f}",
                *(
                    [f"{rep[name]['accuracy']:.4f}", f"{rep[name]['mean_regret']:.4f}"]
                    if rep and name in rep
                    else ["-", "-"]
                    if rep
                    else []
                ),
            )
        console.print(table)


def _print_cells(title: str, cells: dict[str, dict[str, dict]]) -> None:
    """Per family and bucket: the selector's total time over the best fixed option's (> 1.000: slower), near-best."""
    from dwcp.compression.train import BUCKETS

    names = [n for _, n in BUCKETS if any(n in c for c in cells.values())]
    table = Table(
        "family",
        *names,
        title=f"{title}: selector time / best fixed option's per family and bucket "
        "(near-best in brackets; > 1: slower than a fixed codec)",
    )
    for fam, row in cells.items():
        table.add_row(
            fam, *(f"{row[n]['vs_best_fixed']:.3f} ({row[n]['accuracy']:.2f})" if n in row else "-" for n in names)
        )
    console.print(table)
    worse = [
        f"{fam} {n} {row[n]['vs_best_fixed']:.3f}"
        for fam, row in cells.items()
        for n in names
        if n in row and row[n]["vs_best_fixed"] > 1.0
    ]
    console.print(
        f"{title}: selector <= best fixed option in every family and bucket: "
        + ("yes" if not worse else "no: " + ", ".join(worse))
    )


def _print_verdict(name: str, verdict, part: str = "large-chunk") -> None:
    table = Table(
        "bucket or family",
        "payloads",
        "requests",
        "near-best diff",
        "upper bound",
        "worse",
        title=f"{name}: ship rule, the {part} part against the base (paired bootstrap over payloads)",
    )
    for g, v in verdict.groups.items():
        table.add_row(
            g, str(v.payloads), str(v.requests), f"{v.diff:+.4f}", f"{v.upper:+.4f}", "WORSE" if v.worse else "-"
        )
    console.print(table)
    console.print(
        f"{name}: ship rule (no bucket or family worse beyond the payloads' and the oracle's noise, "
        f"overall a gain): {verdict.describe()}"
    )


def _print_threshold_cv(cv) -> None:
    import math

    table = Table(
        "correct above",
        "near-best",
        "exact",
        "regret",
        *cv.buckets[math.inf],
        "below base",
        "worse by the ship rule",
        title="training chunks, cross-validated decisions per threshold (inf: the base alone)",
    )
    for t, o in cv.overall.items():
        below = [f for f, s in cv.families[t].items() if s["accuracy"] < cv.families[math.inf][f]["accuracy"]]
        table.add_row(
            "inf" if math.isinf(t) else f"{t / 1024:g} KiB",
            f"{o['accuracy']:.4f}",
            f"{o['exact_best']:.3f}",
            f"{o['mean_regret']:.4f}",
            *(f"{s['accuracy']:.4f}" for s in cv.buckets[t].values()),
            " ".join(below) or "-",
            " ".join(cv.verdicts[t].worse) or "-",
        )
    console.print(table)
    console.print(f"chosen: {'none' if math.isinf(cv.chosen) else f'{cv.chosen / 1024:g} KiB'}")


@app.command()
def train(
    cache: Path = CacheOpt,
    seed: int = typer.Option(1, help="Corpus seed; held-out sets use seed+1 (synthetic) and seed+2 (real files)."),
    train_items: int = typer.Option(1500, help="Synthetic chunks of 512 B-128 KiB to train on."),
    train_large_items: int = typer.Option(200, help="Synthetic chunks of 128 KiB-1 MiB to train on."),
    heldout_items: int = typer.Option(180, help="Synthetic payloads held out (a third of them full 1 MiB chunks)."),
    real_items: int = typer.Option(90, help="Real payloads from this machine held out."),
    real_train_items: int = typer.Option(
        500,
        help="Real payloads (512 B-1 MiB) from other directories of this machine to train on (0: synthetic data only).",
    ),
    epochs: int = typer.Option(600, help="Epochs per ensemble member."),
    members: int = typer.Option(4, help="MLPs fitted from different seeds and merged into one (their mean)."),
    hidden: str = typer.Option("128,128", help="Hidden layer widths of each MLP, comma-separated."),
    weighted: bool = typer.Option(False, help="Weigh training rows by how much their labels decide a choice."),
    relabel: bool = typer.Option(False, help="Recalibrate and relabel even if cached datasets exist."),
    refeature: bool = typer.Option(False, help="Recompute cached datasets' features (after a feature change)."),
    out: Path | None = typer.Option(None, help="Artifact path; default: the one shipped in the package."),
) -> None:
    """Label a corpus with the oracle, fit the model, print held-out accuracy and write the artifact."""
    import time

    from rich.progress import Progress

    from dwcp.compression.selector import DEFAULT_MODEL
    from dwcp.compression.train import Dataset, evaluate
    from dwcp.compression.train import train as fit_model

    widths = tuple(int(w) for w in hidden.split(","))
    cal, ho, real, synthetic, large, real_train = _datasets(
        cache, seed, train_items, heldout_items, real_items, relabel, refeature, real_train_items, train_large_items
    )
    tr = Dataset.concat(*(d for d in (synthetic, large, real_train) if d is not None))
    start = time.time()
    with Progress(console=console) as progress:
        task = progress.add_task(f"training {members} x MLP on {len(tr)} rows", total=epochs * members)
        model = fit_model(
            tr,
            cal,
            epochs=epochs,
            members=members,
            hidden=widths,
            weighted=weighted,
            on_epoch=_advance(progress, task, "training (epochs)", epochs * members),
        )
    console.print(f"trained in {time.time() - start:.0f} s")
    ev_syn, ev_real = evaluate(model, cal, ho), evaluate(model, cal, real)
    _print_eval("held-out synthetic", ev_syn)
    _print_eval("held-out real files", ev_real)
    model.training = {
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": cal.host,
        "seed": seed,
        "train_payloads": synthetic.payloads + (0 if large is None else large.payloads),
        "train_real_files": 0 if real_train is None else real_train.payloads,
        "train_rows": len(tr),
        "epochs": epochs,
        "max_chunk_bytes": int(tr.size.max()),
        "members": members,
        "hidden": list(widths),
        "weighted": weighted,
        "heldout_synthetic": ev_syn.overall,
        "heldout_real": ev_real.overall,
        "heldout_buckets": {
            "synthetic": {k: v["accuracy"] for k, v in ev_syn.buckets.items()},
            "real": {k: v["accuracy"] for k, v in ev_real.buckets.items()},
        },
    }
    path = out or DEFAULT_MODEL
    model.version = ""
    model.save(path)
    console.print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")


@app.command()
def evaluate(
    model_path: Path | None = typer.Option(None, "--model", help="Artifact; default: the shipped one."),
    cache: Path = CacheOpt,
    seed: int = typer.Option(1),
    heldout_items: int = typer.Option(180),
    real_items: int = typer.Option(90),
    repeat: bool = typer.Option(
        False,
        help="Also label the held-out sets a second time (cached as *-pass2.npz) "
        "and print the oracle's repeatability beside each figure.",
    ),
) -> None:
    """Held-out accuracy, exact-best, regret and per-family end-to-end ratios vs fixed options."""
    from dwcp.compression.model import Model
    from dwcp.compression.selector import DEFAULT_MODEL
    from dwcp.compression.train import evaluate as run_eval

    model = Model.load(model_path or DEFAULT_MODEL)
    cal, ho, real, *_ = _datasets(cache, seed, 0, heldout_items, real_items, False)
    again = [None, None]
    if repeat:  # after the first labelling of both sets (minutes apart: another run, as the issue asks)
        with _progress() as progress:
            again = [
                _labelled(cache / f"{name}-s{s}-n{n}-pass2.npz", name, n, make, False, False, progress)
                for name, s, n, make in _specs(seed, 0, heldout_items, real_items)[:2]
            ]
    console.print(f"model {model.version}")
    for title, ds, ds2 in (("held-out synthetic", ho, again[0]), ("held-out real files", real, again[1])):
        if ds is not None:  # --heldout-items 0 / --real-items 0 skip a set
            _print_eval(title, run_eval(model, cal, ds, again=ds2))


LabelsOpt = typer.Option(Path("runs/compression/large"), help="Directory of per-payload labelled large chunks.")


@app.command("label-large")
def label_large(
    labels: Path = LabelsOpt,
    sets: list[str] = typer.Argument(None, help="Sets to label, in turns (default: all four)."),
    minutes: float = typer.Option(0.0, help="Stop taking new payloads after this long (0: run until done)."),
) -> None:
    """Label chunks above 512 KiB one payload per file (resumable; run several at once to share the work)."""
    import time

    from dwcp.compression import large

    names = sets or list(large.SETS)
    unknown = sorted(set(names) - set(large.SETS))
    if unknown:
        raise typer.BadParameter(f"unknown sets {unknown}; known: {list(large.SETS)}")
    deadline = time.time() + minutes * 60 if minutes > 0 else float("inf")
    n = large.label_sets(labels, names, on_done=console.print, deadline=deadline)
    console.print(f"labelled {n} payloads into {labels}")


@app.command("train-large")
def train_large(
    labels: Path = LabelsOpt,
    base: Path | None = typer.Option(None, help="The small-chunk artifact; default: the shipped one."),
    ridge: str = typer.Option("0.01,0.1,1,10,1000", help="Ridge penalties to choose from by cross-validation."),
    outputs: str = typer.Option(
        "log_ratio,log_vc_rel,log_vd_rel",
        help="Which kinds of output the part may correct (others keep the base's answer).",
    ),
    links: int = typer.Option(
        20,
        min=1,
        help="Requests (random link and declared size) per held-out chunk. The "
        "verdict per family can hinge on one request in 20-60 at 20; more redraws less.",
    ),
    apply_above: str = typer.Option(
        "512",
        help="Chunk sizes in KiB above which the correction may apply "
        "(comma-separated: chosen by cross-validated decisions on the training chunks, "
        "the smallest that no bucket or family loses by; 512: every large chunk).",
    ),
    again: Path | None = typer.Option(
        None,
        help="A second labelling of the held-out sets (another label-large "
        "directory, same calibration): print the oracle's repeatability beside them.",
    ),
    shape: str = typer.Option(
        "",
        help="Features whose products with every feature are columns of the correction "
        "too (comma-separated, e.g. zero_block_share,repeat8: a per-family-shaped correction).",
    ),
    out: Path | None = typer.Option(None, help="Where to write the artifact (default: only evaluate)."),
) -> None:
    """Fit a large-chunk part on the labelled training chunks, score it beside the base on the held-out ones."""
    import math

    import numpy as np

    from dwcp.compression import large
    from dwcp.compression.model import Model
    from dwcp.compression.selector import DEFAULT_MODEL
    from dwcp.compression.train import (
        Dataset,
        choose_ridge,
        choose_threshold,
        heldout_verdict,
        ridge_for_kinds,
        train_large_chunks,
    )
    from dwcp.compression.train import evaluate as run_eval

    cal = large.calibration(labels)
    small = Model.load(base or DEFAULT_MODEL)
    parts = [d for d in (large.load_set(labels, "train-real"), large.load_set(labels, "train-synthetic")) if d]
    if not parts:
        raise typer.BadParameter(f"no labelled training chunks in {labels}; run `dwcp compression label-large`")
    tr = Dataset.concat(*parts)
    penalties = [float(r) for r in ridge.split(",")]
    unknown = [f for f in shape.split(",") if f and f not in small.features]
    if unknown:
        raise typer.BadParameter(f"--shape: unknown features {unknown}; known: {list(small.features)}")
    shaped = tuple(small.features.index(f) for f in shape.split(",") if f)
    try:
        best, cv = choose_ridge(small, tr, cal, penalties, above_bytes=large.SPLIT_BYTES, shape=shaped)
    except ValueError as exc:
        raise typer.BadParameter(f"{exc}; label more with `dwcp compression label-large`") from None
    kinds = tuple(outputs.split(","))
    best = ridge_for_kinds(small, kinds, best)
    table = Table("ridge", *small.outputs, title="cross-validated mean squared log residual per output (inf: none)")
    for r, err in cv.items():
        table.add_row(f"{r:g}", *(f"{e:.3f}" for e in err))
    table.add_row("chosen", *(f"{r:g}" for r in best))
    console.print(table)
    thresholds = [float(k) * 1024 for k in apply_above.split(",")]
    threshold = thresholds[0]
    if len(thresholds) > 1:
        cv = choose_threshold(
            small, tr, cal, thresholds, above_bytes=large.SPLIT_BYTES, ridge=best, links_per_item=links, shape=shaped
        )
        _print_threshold_cv(cv)
        threshold = cv.chosen
        if math.isinf(threshold):
            console.print("[yellow]no threshold holds the ship rule on the training folds[/yellow]")
            return
    model = train_large_chunks(
        small, tr, cal, above_bytes=large.SPLIT_BYTES, ridge=best, apply_above_bytes=threshold, shape=shaped
    )
    console.print(
        f"{model.training['large_chunks']['payloads']} training payloads above 512 KiB; correction "
        f"applied above {threshold / 1024:g} KiB"
    )
    for name in ("heldout-synthetic", "heldout-real"):
        ds = large.load_set(labels, name)
        if ds is None:
            continue
        ds2 = None if again is None else large.load_set(again, name)
        repeat = None
        if ds2 is not None:  # the oracle's repeatability on the payloads both labellings reached
            both = np.intersect1d(ds.item, ds2.item)
            repeat = run_eval(
                small,
                cal,
                ds.take(np.isin(ds.item, both)),
                links_per_item=links,
                again=ds2.take(np.isin(ds2.item, both)),
            ).repeat
            console.print(f"{name}: {len(both)} of {ds.payloads} payloads labelled twice")
        for title, m in (
            (f"{name} above 512 KiB, {small.version}", small),
            (f"{name} above 512 KiB, with the large-chunk part", model),
        ):
            ev = run_eval(m, cal, ds, links_per_item=links)
            ev.repeat = repeat
            _print_eval(f"{title} ({ds.payloads} payloads)", ev)
            _print_cells(title, ev.cells)
        verdict = heldout_verdict(small, model, cal, ds, links_per_item=links, again=ds2)
        _print_verdict(name, verdict)
    if out is not None:
        model.save(out)
        console.print(f"wrote {out} ({Model.load(out).version})")


SmallLabelsOpt = typer.Option(Path("runs/compression/small"), help="Directory of the labelled small-payload sets.")


@app.command("label-small")
def label_small(
    labels: Path = SmallLabelsOpt,
    sets: list[str] = typer.Argument(None, help="Sets to label (default: all four)."),
) -> None:
    """Label payloads up to 64 KiB, each measured whole, on this host (a few CPU-minutes in all)."""
    from dwcp.compression import small

    names = sets or list(small.SETS)
    unknown = sorted(set(names) - set(small.SETS))
    if unknown:
        raise typer.BadParameter(f"unknown sets {unknown}; known: {list(small.SETS)}")
    small.label_sets(labels, names, on_done=console.print)


@app.command("train-small")
def train_small(
    labels: Path = SmallLabelsOpt,
    base: Path | None = typer.Option(None, help="The artifact to correct; default: the shipped one."),
    ridge: str = typer.Option(
        "1e9,100,10,1,0.1", help="Ridge penalties to choose from by cross-validated decisions on the training payloads."
    ),
    outputs: str = typer.Option(
        "log_vc_rel", help="Which kinds of output the part may correct (others keep the base's answer)."
    ),
    links: int = typer.Option(100, min=1, help="Requests (random link and declared size) per payload."),
    shape: str = typer.Option(
        "",
        help="Features (comma-separated names) whose products with every feature are "
        "columns of the correction too, as the large part's (default: none).",
    ),
    whole_sample: bool = typer.Option(
        False,
        help="Fit (and serve) the part on features of the whole sample where "
        "the sample is all of its chunk, not of the 16 KiB probe region "
        "(artifact format /4; the sets' features are recomputed from their payloads).",
    ),
    ratio_anchor: str = typer.Option(
        "",
        help="A feature (`zstd1_ratio`) whose log the part's ratio outputs are "
        "residuals of, fitted with the speeds' corrections (format /5; needs "
        "--whole-sample and log_ratio among --outputs). Default: none.",
    ),
    anchor_option: str = typer.Option(
        "",
        help="With --ratio-anchor: the option (`zstd-1`) whose predicted ratio the "
        "anchor replaces, the MLP's ratios relative to it kept (default: none, the "
        "part answers the ratios from the anchor alone).",
    ),
    out: Path | None = typer.Option(None, help="Where to write the artifact (default: only evaluate)."),
    reference_calibration: list[Path] | None = typer.Option(
        None,
        help="Calibrations with per-chunk speeds measured in the speed mode the labels were (default: the "
        "labels' own, when it has them): the mean of their per-chunk shapes is stored with the part, so a host in "
        "another mode is answered for its own (selector.ChunkShift). Repeat the option for several runs.",
    ),
) -> None:
    """Fit a small-chunk part on the labelled small training payloads, judge it on the held-out ones."""
    import math

    import numpy as np

    from dwcp.compression import calibrate as cal_mod
    from dwcp.compression import large, small
    from dwcp.compression.features import FEATURE_NAMES
    from dwcp.compression.model import Model
    from dwcp.compression.selector import DEFAULT_MODEL
    from dwcp.compression.train import Dataset, heldout_verdict, ridge_for_kinds, small_ridge_cv, train_small_chunks
    from dwcp.compression.train import evaluate as run_eval

    cal = large.calibration(labels)
    base_model = Model.load(base or DEFAULT_MODEL)
    load_set = small.whole_sample_set if whole_sample else small.load_set
    parts = [
        d for d in (load_set(labels, "train-small-synthetic"), load_set(labels, "train-small-real")) if d is not None
    ]
    if not parts:
        raise typer.BadParameter(f"no labelled training payloads in {labels}; run `dwcp compression label-small`")
    tr = Dataset.concat(*parts)
    kinds = tuple(outputs.split(","))
    # Named as the extractor names them (a pre-chunk artifact calls the first inputs log2_size...: same columns).
    unknown = [f for f in shape.split(",") if f and f not in FEATURE_NAMES]
    if unknown:
        raise typer.BadParameter(f"unknown features {unknown}; known: {list(FEATURE_NAMES)}")
    shaped = tuple(FEATURE_NAMES.index(f) for f in shape.split(",") if f)
    anchor = None
    if ratio_anchor:
        if ratio_anchor not in FEATURE_NAMES or not whole_sample or "log_ratio" not in kinds:
            raise typer.BadParameter(
                "--ratio-anchor names a feature and needs --whole-sample and log_ratio in "
                "--outputs (an uncorrected anchored ratio would be the anchor itself)"
            )
        anchor = FEATURE_NAMES.index(ratio_anchor)
    if anchor_option and (anchor is None or anchor_option not in base_model.options):
        raise typer.BadParameter(f"--anchor-option needs --ratio-anchor and one of {list(base_model.options)}")
    option = base_model.options.index(anchor_option) if anchor_option else None
    # The part's form, the same for the cross-validation and the final fit.
    form = dict(shape=shaped, whole_sample=whole_sample, anchor=anchor, anchor_option=option)
    cv = small_ridge_cv(
        base_model,
        tr,
        cal,
        [float(r) for r in ridge.split(",")],
        kinds,
        below_bytes=small.SMALL_BYTES,
        links_per_item=links,
        **form,
    )
    table = Table(
        "ridge",
        "near-best",
        "exact-best",
        "mean regret",
        title=f"cross-validated decisions on {tr.payloads} training payloads (inf: the base)",
    )
    for r, s in cv.items():
        table.add_row(f"{r:g}", f"{s['accuracy']:.4f}", f"{s['exact_best']:.4f}", f"{s['mean_regret']:.4f}")
    console.print(table)
    chosen = max(cv, key=lambda r: cv[r]["accuracy"])
    if math.isinf(chosen):
        console.print("[yellow]no penalty beats the base on the training folds[/yellow]")
        return
    penalty = ridge_for_kinds(base_model, kinds, chosen)
    model = train_small_chunks(base_model, tr, cal, below_bytes=small.SMALL_BYTES, ridge=penalty, **form)
    console.print(f"chosen ridge {chosen:g}; correction applied to chunks up to {small.SMALL_BYTES >> 10} KiB")
    for name in ("heldout-small-synthetic", "heldout-small-real"):
        ds = small.load_set(labels, name)
        if ds is None:
            continue
        own = small.whole_sample_set(labels, name).x if whole_sample else None  # the base reads the probe region
        for title, m, x in ((base_model.version, base_model, None), ("with the small-chunk part", model, own)):
            _print_eval(f"{name}, {title} ({ds.payloads} payloads)", run_eval(m, cal, ds, links_per_item=links, x=x))
        _print_verdict(
            name, heldout_verdict(base_model, model, cal, ds, links_per_item=links, candidate_x=own), "small-chunk"
        )
    if out is not None:
        shapes = [
            c.chunk_shape()
            for c in ([cal_mod.load(p) for p in reference_calibration] if reference_calibration else [cal])
        ]
        missing = any(s is None for s in shapes)
        if missing and reference_calibration:
            raise typer.BadParameter("a --reference-calibration has no per-chunk speeds (format /2)")
        if not missing:  # (`shape`, the option, names the correction's shaping features: not this)
            reference = np.mean(shapes, axis=0)
            model.small = model.small.with_reference(cal_mod.CHUNK_LOG2, reference[:, 1:])
            console.print(
                "per-chunk compress shape recorded: "
                + ", ".join(
                    f"{k} {' '.join(f'{v:+.2f}' for v in reference[:, j + 1])}" for j, k in enumerate(model.options)
                )
            )
        model.save(out)
        console.print(f"wrote {out} ({Model.load(out).version})")
