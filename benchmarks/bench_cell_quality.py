"""The recurrent cells on one table: every ``--model`` cell trained at the same size, with
the same settings and for the same number of tokens, on the quality benchmark's word and
char corpora (the King James Bible, benchmarks/quality/prepare.py), over several seeds.

Each run is ``lmcli train`` (float32, one thread, a fixed number of steps under a cosine
schedule, no dropout, Adam at one rate for every cell: the cells' own settings are the only
difference), then ``lmcli eval --stream`` of the validation and the test file with the best
checkpoint (the lowest validation loss seen in training). Nothing is chosen here, so the
test file is read once per run and never used to choose.

    python benchmarks/quality/prepare.py
    python benchmarks/bench_cell_quality.py --jobs 2 --write benchmarks/RESULTS.md

Results go to benchmarks/quality/results/cells/LEVEL-CELL-sSEED.json; a run whose JSON is
there is not run again (``--rerun`` does), and ``--report-only`` only rewrites the table.
"""

from __future__ import annotations

import argparse
import re
import concurrent.futures
import json
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from lmcli.model import ALL_CELLS
from lmcli_calls import call_lmcli
from sections import replace_section

DATA = REPO / "benchmarks" / ".cache" / "quality"
RESULTS = REPO / "benchmarks" / "quality" / "results" / "cells"
RELATIVE = re.compile(r"[^ ]*/benchmarks/")  # a checkout's absolute path, as recorded
# The same model and optimisation for every cell and level; the word level's output layer
# is the adaptive softmax of the word recipes (a full 10k softmax would be most of a step,
# hiding the cells' differences).
COMMON = ["--layers", "2", "--embed-dim", "256", "--hidden-dim", "256", "--dropout", "0",
          "--no-tie-weights", "--optimizer", "adam", "--lr", "2e-3", "--lr-schedule", "cosine",
          "--warmup", "50", "--batch-size", "32", "--seq-len", "64", "--min-freq", "1",
          "--sentence-phase", "0", "--no-amp", "--no-sample"]
LEVELS: dict[str, list[str]] = {"word": ["--level", "word", "--softmax", "adaptive", "--cutoffs", "1000,4000"],
                                "char": ["--level", "char", "--softmax", "full"]}


def run_one(level: str, cell: str, seed: int, steps: int, data: Path, out: Path) -> dict[str, Any]:
    """Train one cell with one seed, score validation and test, and return the record."""
    run_dir = out / "runs" / f"{level}-{cell}-s{seed}"
    train = ["train", str(data / "train.txt"), "--valid", str(data / "valid.txt"), "--model", cell,
             *COMMON, *LEVELS[level], "--max-steps", str(steps), "--eval-every", str(steps // 2),
             "--seed", str(seed), "-o", str(run_dir), "--force", "--json"]
    log = out / "logs" / f"{level}-{cell}-s{seed}.log"

    def call(args: list[str]) -> list[dict[str, Any]]:
        return call_lmcli(args, log=log, cwd=out, threads=1)

    finished = next(e for e in call(train) if e.get("event") == "finished")
    info = call(["info", "-c", str(run_dir), "--json"])[-1]
    scores = {name: call(["eval", str(data / f"{name}.txt"), "-c", str(run_dir), "--stream", "--json"])[-1]
              for name in ("valid", "test")}
    return {"level": level, "cell": cell, "seed": seed, "steps": finished["step"],
            "train_seconds": finished["elapsed"], "tokens_per_second": finished["tokens_per_second"],
            "parameters": info.get("parameters"), "valid": scores["valid"], "test": scores["test"],
            "command": shlex.join(["lmcli", *train]).replace(str(REPO) + "/", "")}


def spread(values: list[float], digits: int) -> str:
    """Mean and half the range over the seeds: ``31.20 ± 0.15``."""
    mean = statistics.fmean(values)
    half = (max(values) - min(values)) / 2
    return f"{mean:.{digits}f} ± {half:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


def table(records: list[dict[str, Any]], level: str) -> list[str]:
    """One level's rows: the cells in --model order, each over its seeds."""
    measure, digits = ("perplexity", 2) if level == "word" else ("bits_per_char", 4)
    unit = "perplexity" if level == "word" else "bits/char"
    rows = [f"| cell | parameters | seeds | tokens/s | valid {unit} | test {unit} |",
            "|---|---:|---:|---:|---:|---:|"]
    for cell in ALL_CELLS:
        runs = [r for r in records if r["level"] == level and r["cell"] == cell]
        if not runs:
            continue
        rate = statistics.fmean(r["tokens_per_second"] for r in runs)
        rows.append(f"| {cell} | {runs[0]['parameters']:,} | {len(runs)} | {rate:,.0f} | "
                    f"{spread([r['valid'][measure] for r in runs], digits)} | "
                    f"{spread([r['test'][measure] for r in runs], digits)} |")
    return rows


def report(records: list[dict[str, Any]], command: str) -> list[str]:
    """The ``## Recurrent cells`` section of RESULTS.md."""
    lines = ["## Recurrent cells", "", "`python benchmarks/bench_cell_quality.py --jobs 2 --write benchmarks/RESULTS.md` "
             f"made the runs; this section was written by `{command}` from their JSON files "
             "(benchmarks/quality/results/cells).", ""]
    for level in ("word", "char"):
        runs = [r for r in records if r["level"] == level]
        if not runs:
            continue
        tokens = runs[0]["steps"] * 32 * 64
        lines += [f"### {level.capitalize()} level", "",
                  f"Each cell {runs[0]['steps']:,} steps of 32 x 64 tokens ({tokens:,} tokens), one thread, "
                  f"float32. Example: `{RELATIVE.sub('benchmarks/', runs[0]['command'])}`.", "",
                  *table(records, level), ""]
    for level in ("word", "char"):
        if (REPO / "benchmarks" / f"cells-{level}.png").exists():
            lines += [f"![validation loss of every cell, {level} level, seed 1](cells-{level}.png)", ""]
    lines += ["Mean ± half the range over the seeds. tokens/s: training tokens over the training "
              "session's wall time, validations included, with two runs side by side on the 2 cores and "
              "other work on the machine at times: a rough guide; the cells' speed measured alone is in "
              "BENCHMARKS.md (## cells). "
              "Validation and test: `lmcli eval --stream` with the checkpoint of the lowest validation "
              "loss (the test file read once per run, never used to choose).", ""]
    return lines


def draw_curves(results: Path) -> None:
    """benchmarks/cells-LEVEL.png: each cell's curves (seed 1) through ``lmcli plot``."""
    for level in ("word", "char"):
        runs = [str(results / "runs" / f"{level}-{cell}-s1") for cell in ALL_CELLS
                if (results / "runs" / f"{level}-{cell}-s1" / "metrics.jsonl").exists()]
        if runs:
            call_lmcli(["plot", *runs, "--no-lr", "-o", str(REPO / "benchmarks" / f"cells-{level}.png")],
                       log=results / "logs" / "plot.log", cwd=results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="+", default=list(ALL_CELLS), choices=ALL_CELLS)
    parser.add_argument("--levels", nargs="+", default=list(LEVELS), choices=list(LEVELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--word-steps", type=int, default=600, help="training steps at word level")
    parser.add_argument("--char-steps", type=int, default=1000, help="training steps at char level")
    parser.add_argument("--jobs", type=int, default=2, help="runs side by side, one thread each")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--rerun", action="store_true")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--write", type=Path, help="put the table into this markdown file's section")
    args = parser.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)
    wanted = [(level, cell, seed) for seed in args.seeds for level in args.levels for cell in args.cells]
    todo = [] if args.report_only else [
        w for w in wanted if args.rerun or not (args.results / "{}-{}-s{}.json".format(*w)).exists()]
    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        futures = {pool.submit(run_one, level, cell, seed,
                               args.word_steps if level == "word" else args.char_steps,
                               args.data, args.results): (level, cell, seed) for level, cell, seed in todo}
        for future in concurrent.futures.as_completed(futures):
            name = "{}-{}-s{}".format(*futures[future])
            try:
                record = future.result()
            except RuntimeError as error:  # the others go on; the table lacks this run
                print(f"{name}: FAILED: {error}", flush=True)
                continue
            (args.results / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
            measure = "perplexity" if record["level"] == "word" else "bits_per_char"
            print(f"{name}: valid {record['valid'][measure]:.4f} test {record['test'][measure]:.4f} "
                  f"{record['tokens_per_second']:,.0f} tokens/s", flush=True)
    records = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(args.results.glob("*.json"))]
    draw_curves(args.results)
    command = "python " + shlex.join(["benchmarks/bench_cell_quality.py", *sys.argv[1:]])
    section = report(records, command)
    print("\n".join(section))
    if args.write:
        replace_section(args.write, "Recurrent cells", section)


if __name__ == "__main__":
    main()
