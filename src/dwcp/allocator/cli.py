"""`dwcp allocator train|evaluate|trace`: heavy imports (torch, matplotlib) happen inside the commands."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@app.command()
def train(
    episodes: int = typer.Option(150, help="Training episodes (one generated trace each)."),
    seed: int = typer.Option(0, help="Seed for networks, exploration and training traces."),
    hours: float = typer.Option(2.0, help="Length of each training trace in hours."),
    out: Path | None = typer.Option(None, help="Checkpoint to write; default: the packaged one."),
    curve_png: Path = typer.Option(Path("docs/allocator_learning_curve.png"), help="Learning-curve PNG."),
    validate_every: int = typer.Option(5, help="Episodes between validation replays."),
    validation_traces: int = typer.Option(4, help="Validation traces (training series, unseen seeds)."),
    max_minutes: float | None = typer.Option(None, help="Wall-clock bound: stop after the episode that passes it."),
) -> None:
    """Train MADDPG on generated traces (Alibaba 2018 + synthetic series) and keep the best actors."""
    import torch
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from dwcp.allocator.policy import default_checkpoint
    from dwcp.allocator.train import TrainConfig, plot_curve
    from dwcp.allocator.train import train as run_train

    torch.set_num_threads(1)
    target = out or default_checkpoint()
    cfg = TrainConfig(episodes=episodes, seed=seed, hours=hours, validate_every=validate_every,
                      validation_traces=validation_traces,
                      max_seconds=None if max_minutes is None else 60.0 * max_minutes)
    with Progress(TextColumn("[bold]train"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TextColumn("{task.fields[info]}"), TimeRemainingColumn()) as bar:
        task = bar.add_task("train", total=episodes, info="")

        def progress(ep: int, info: dict) -> None:
            text = f"return {info['return']:.1f}"
            if "val_cost" in info:
                text += f"  val cost {info['val_cost']:.1f}"
            bar.update(task, completed=ep + 1, info=text)

        result = run_train(cfg, target, progress=progress)
    curve_png.parent.mkdir(parents=True, exist_ok=True)
    plot_curve(result.curve, curve_png)
    last = result.curve[-1]
    typer.echo(json.dumps({"checkpoint": str(target), "best_validation_cost": round(result.best_cost, 3),
                           "best_fit_validation_cost": round(last["best-fit"], 3),
                           "round_robin_validation_cost": round(last["round-robin"], 3),
                           "episodes": last["episode"], "seconds": round(result.seconds, 1),
                           "learning_curve": str(curve_png)}))


@app.command()
def evaluate(
    trace: Path = typer.Option(..., help="Trace CSV: arrival,cpu,mem,net,duration,max_wait."),
    policy: str = typer.Option("maddpg", help="maddpg | round-robin | first-fit | best-fit | random."),
    cluster: Path | None = typer.Option(None, help="Cluster JSON; default: the 16-host default cluster."),
    checkpoint: Path | None = typer.Option(None, help="MADDPG checkpoint; default: the packaged one."),
    seed: int = typer.Option(0, help="Seed for the random policy."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Replay a trace through one policy and report cost, optimization vs round-robin and SLA compliance."""
    from dwcp.allocator.cluster import load_cluster
    from dwcp.allocator.evaluate import POLICIES, make_policy
    from dwcp.allocator.evaluate import evaluate as run_eval
    from dwcp.allocator.traces import TraceError, read_csv

    if policy not in POLICIES:
        typer.echo(f"unknown policy {policy!r}; one of: {', '.join(POLICIES)}", err=True)
        raise typer.Exit(2)
    try:
        tr = read_csv(trace)
        hosts = load_cluster(cluster)
    except (OSError, TraceError, ValueError, KeyError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    result = run_eval(hosts, tr, make_policy(policy, checkpoint, seed))
    if as_json:
        typer.echo(json.dumps(result))
    else:
        for k, v in result.items():
            typer.echo(f"{k:34s} {v}")


@app.command("trace")
def make_trace_file(
    out: Path = typer.Argument(..., help="CSV file to write."),
    series: str = typer.Option("google2019", help="alibaba2018 | google2019 | azure_v2 | synthetic."),
    seed: int = typer.Option(1_000_000, help="Seed (training uses seeds < 1,000,000)."),
    hours: float = typer.Option(6.0, help="Trace length in hours."),
    base_rate: float = typer.Option(0.04, help="Mean arrivals per second before the series' modulation."),
) -> None:
    """Generate a trace CSV from a datacenter utilisation series (or the synthetic generator)."""
    from dwcp.allocator.traces import generate, write_csv

    tr = generate(series, seed, hours, base_rate)
    write_csv(tr, out)
    typer.echo(f"{out}: {len(tr)} workloads from {series} (seed {seed}, {hours} h)")
