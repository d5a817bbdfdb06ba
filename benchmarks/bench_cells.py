"""The recurrent cells' speed: tokens/s of one training step of the recurrent layers
(forward and backward through every layer, the gradient of a sum of the outputs) for
each ``--model`` cell, against ``lstm`` (PyTorch's fused kernel) at the same shape, in one
run. The custom cells of lmcli.cells run their own step loop; the target is at most 2x
the time of the fused lstm.

    python benchmarks/bench_cells.py
    python benchmarks/bench_cells.py --layers 2 --hidden 256 --batch 32 --steps 64 --repeats 20

Timings use the threads torch is given (set OMP_NUM_THREADS to pin them), float32 unless
--amp (bf16 autocast on the CPU). The cells take turns step by step (a busy machine slows all
alike); the median of --repeats timed steps after two warm-up rounds is reported.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from lmcli.model import ALL_CELLS, RNNLM, ModelConfig
from sections import replace_section

# Rows beyond the cells' defaults: a label, the cell, and its other settings.
VARIANTS: dict[str, tuple[str, dict[str, object]]] = {"attention-dot": ("attention", {"attn_score": "dot"})}


def training_step(row: str, args: argparse.Namespace) -> Callable[[], float]:
    """A function that runs one forward + backward pass through the recurrent layers of a
    fresh model of the row's cell and returns its seconds."""
    torch.manual_seed(0)
    cell, settings = VARIANTS.get(row, (row, {}))
    model = RNNLM(ModelConfig(vocab_size=16, cell=cell, layers=args.layers, embed_dim=args.hidden,
                              hidden_dim=args.hidden, dropout=0.0, **settings)).train()
    x = torch.randn(args.batch, args.steps, args.hidden, requires_grad=True)
    state = model.initial_state(args.batch)

    def run() -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.amp):
            output, _ = model._run_layers(x, state)
        output.float().sum().backward()
        seconds = time.perf_counter() - start
        model.zero_grad(set_to_none=True)
        x.grad = None
        return seconds

    return run


def median_seconds(cells: list[str], args: argparse.Namespace) -> dict[str, float]:
    """Each cell's median step time; the cells take turns, one step each per round, so that
    a machine busy for a while slows every cell alike."""
    steps = {cell: training_step(cell, args) for cell in cells}
    times: dict[str, list[float]] = {cell: [] for cell in cells}
    for round_ in range(args.repeats + 2):  # two warm-up rounds
        for cell, run in steps.items():
            seconds = run()
            if round_ >= 2:
                times[cell].append(seconds)
    return {cell: statistics.median(values) for cell, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="+", default=[*ALL_CELLS, *VARIANTS],
                        choices=[*ALL_CELLS, *VARIANTS])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--amp", action="store_true", help="bf16 autocast")
    parser.add_argument("--write", type=Path, help="put the table into this markdown file's '## cells' section")
    args = parser.parse_args()
    cells = ["lstm", *[c for c in args.cells if c != "lstm"]]
    tokens = args.batch * args.steps
    header = (f"{args.layers} layers x {args.hidden}, batch {args.batch} x {args.steps} steps, "
              f"{'bf16 autocast' if args.amp else 'float32'}, {torch.get_num_threads()} threads, "
              f"torch {torch.__version__}, {args.repeats} repeats")
    print(header)
    print(f"{'cell':<14} {'tokens/s':>10} {'time / lstm':>12}")
    seconds = median_seconds(cells, args)
    for cell in cells:
        print(f"{cell:<14} {tokens / seconds[cell]:>10,.0f} {seconds[cell] / seconds['lstm']:>11.2f}x")
    if args.write:
        write_section(args.write, header, [(cell, tokens / seconds[cell], seconds[cell] / seconds["lstm"])
                                           for cell in cells])


def write_section(path: Path, header: str, rows: list[tuple[str, float, float]]) -> None:
    """Replace (or add) the ``## cells`` section of a markdown file (run_all.py keeps it)."""
    command = "python " + " ".join(["benchmarks/bench_cells.py", *sys.argv[1:]])
    section = ["## cells", "", f"`{command}`", "", header + ".", "",
               ("Training step (forward and backward through the recurrent layers) of each cell against "
                "PyTorch's fused `lstm` at the same shape, median of the repeats, the cells taking turns. "
                "`attention` is its default additive score over a window of 16, `attention-dot` the "
                "dot-product score."),
               "", "| cell | tokens/s | time / lstm |", "|---|---:|---:|",
               *[f"| {cell} | {rate:,.0f} | {ratio:.2f}x |" for cell, rate, ratio in rows], ""]
    replace_section(path, "cells", section)

if __name__ == "__main__":
    main()
