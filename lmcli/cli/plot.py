"""``lmcli plot``: training and validation curves of one or more runs, in the terminal
(plotext) or into an image file (matplotlib, the optional extra ``lmcli[plot]``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from lmcli import checkpoint as ckpt
from lmcli import ui
from lmcli.cli.common import app, friendly_errors
from lmcli.curves import X_AXES, Y_AXES, RunCurves, read_curves
from lmcli.errors import LmcliError, UsageError

X_LABELS = {"step": "step", "tokens": "tokens", "time": "seconds of training"}
IMAGE_SUFFIXES = (".png", ".svg", ".pdf")


@app.command()
@friendly_errors
def plot(
    runs: Annotated[list[str] | None, typer.Argument(
        show_default=False, help="Run folders (or their metrics.jsonl). Default: the last run.")] = None,
    x: Annotated[str, typer.Option("--x", help="step, tokens or time (seconds of training).")] = "step",
    y: Annotated[str, typer.Option("--y", help="loss (nats per token) or perplexity.")] = "loss",
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write the figure to this .png, .svg or .pdf (needs matplotlib: "
                               "pip install 'lmcli[plot]') instead of drawing it here.",
        show_default=False)] = None,
    lr: Annotated[bool, typer.Option("--lr/--no-lr", help="The learning rate on a second axis.")] = True,
    width: Annotated[int, typer.Option(help="Terminal columns (0: all of them).")] = 0,
    height: Annotated[int, typer.Option(help="Terminal rows (0: about half of them).")] = 0,
) -> None:
    """Training and validation loss against steps, tokens or time; several runs overlaid."""
    if x not in X_AXES:
        raise UsageError(f"--x must be one of {', '.join(X_AXES)}; got {x!r}")
    if y not in Y_AXES:
        raise UsageError(f"--y must be one of {', '.join(Y_AXES)}; got {y!r}")
    specs = runs or [str(_last_run())]
    curves = [read_curves(spec, x, y) for spec in specs]
    if output is not None:
        if output.suffix.lower() not in IMAGE_SUFFIXES:
            raise UsageError(f"--output must end in {', '.join(IMAGE_SUFFIXES)}; got {output.name!r}")
        draw_file(curves, x, y, output, lr)
        ui.note(f"wrote {output}")
    else:
        ui.print_ansi(draw_terminal(curves, x, y, lr, width, height))


def _last_run() -> Path:
    run = ckpt.latest_run()
    if run is None:
        raise LmcliError("no run to plot: give a run folder (none is recorded in checkpoints/)")
    return run


def _limits(curves: list[RunCurves]) -> tuple[float, float] | None:
    """Limits that keep a few exploded values (a loss of 1e9 in a diverging step) from
    flattening every other curve: None where there are none."""
    values = sorted(v for c in curves for v in [*c.train.y, *c.valid.y] if math.isfinite(v))
    if len(values) < 4:
        return None
    usual = values[int(0.9 * (len(values) - 1))]
    if not values[-1] > 5 * usual > 0:
        return None
    top = usual * 1.5
    return values[0] - 0.05 * (top - values[0]), top


def _label(curve: RunCurves, part: str, many: bool) -> str:
    return f"{curve.name} {part}" if many else part


def draw_terminal(curves: list[RunCurves], x: str, y: str, lr: bool, width: int = 0, height: int = 0) -> str:
    """The figure as text with ANSI colours, through plotext."""
    import plotext as plt

    plt.clear_figure()
    columns, rows = plt.terminal_size()
    plt.plotsize(width or min(columns or 100, 120), height or max(15, (rows or 40) // 2))
    many = len(curves) > 1
    for curve in curves:
        if curve.train.x:
            plt.plot(curve.train.x, curve.train.y, label=_label(curve, "train", many))
        if curve.valid.x:
            plt.plot(curve.valid.x, curve.valid.y, label=_label(curve, "valid", many), marker="dot")
        if lr and curve.lr.x:
            plt.plot(curve.lr.x, curve.lr.y, yside="right", label=_label(curve, "lr", many), marker="braille")
    limits = _limits(curves)
    if limits is not None:
        plt.ylim(*limits, yside="left")
    plt.xlabel(X_LABELS[x])
    plt.ylabel(y if limits is None else f"{y} (cut at {limits[1]:.4g})", yside="left")
    if lr:
        plt.ylabel("learning rate", yside="right")
    return plt.build()


def draw_file(curves: list[RunCurves], x: str, y: str, path: Path, lr: bool) -> None:
    """The figure into an image file, through matplotlib (an optional extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        raise LmcliError(f"writing {path.name} needs matplotlib, which is not installed: "
                         "pip install 'lmcli[plot]' (or draw in the terminal without -o)") from None
    figure, axes = pyplot.subplots(figsize=(8, 4.5), dpi=100)
    many = len(curves) > 1
    for index, curve in enumerate(curves):
        colour = f"C{index}"
        axes.plot(curve.train.x, curve.train.y, color=colour, alpha=0.6, label=_label(curve, "train", many))
        axes.plot(curve.valid.x, curve.valid.y, color=colour, marker="o", label=_label(curve, "valid", many))
    axes.set_xlabel(X_LABELS[x])
    axes.set_ylabel(y)
    if y == "perplexity":
        axes.set_yscale("log")
    limits = _limits(curves)
    if limits is not None:  # a few exploded values would flatten the rest
        axes.set_ylim(*limits)
        axes.set_ylabel(f"{y} (cut at {limits[1]:.4g})")
    handles, labels = axes.get_legend_handles_labels()
    if lr and any(c.lr.x for c in curves):
        right = axes.twinx()
        for index, curve in enumerate(curves):
            right.plot(curve.lr.x, curve.lr.y, color=f"C{index}", linestyle=":", label=_label(curve, "lr", many))
        right.set_ylabel("learning rate")
        more, names = right.get_legend_handles_labels()
        handles, labels = handles + more, labels + names
    axes.legend(handles, labels, fontsize="small")
    figure.tight_layout()
    try:
        figure.savefig(path)
    except OSError as error:
        raise LmcliError(f"could not write {path}: {error.strerror or error}") from None
    finally:
        pyplot.close(figure)
