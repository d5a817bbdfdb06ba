"""Run every speed benchmark and write benchmarks/BENCHMARKS.md.

Each benchmark runs in its own process, alone on the machine, and measures lmcli against a
reference in the same run (a hand-written PyTorch loop, one-at-a-time scoring, a
hand-written incremental generation loop, the full softmax, the matmul peak); its last lines are JSON summaries
that this script gathers into one table, under the date, the machine and the commands.
The benchmarks' own output follows the table, as they printed it.

    python benchmarks/run_all.py                 # everything, about 20 minutes on 2 cores
    python benchmarks/run_all.py --quick         # smaller sizes, a few minutes
    python benchmarks/run_all.py --only score softmax

Not part of CI: timings depend on the machine and on what else it is doing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HERE = REPO / "benchmarks"
sys.path.insert(0, str(HERE))

from sections import kept_sections
QUALITY_TRAIN = HERE / ".cache" / "quality" / "train.txt"

# name -> (script, arguments, arguments with --quick)
BENCHMARKS: dict[str, tuple[str, list[str], list[str]]] = {
    "train": ("bench_train.py", ["--rounds", "3", "--compile"], ["--rounds", "1", "--steps", "60", "--compile"]),
    "score": ("bench_score.py", [], ["--sentences", "3000", "--single", "300", "--samples", "30"]),
    "rerank": ("bench_rerank.py", [], ["--utterances", "300", "--single", "300"]),
    "e2e": ("bench_score_e2e.py", [], ["--sentences", "1000", "--utterances", "100", "--repeats", "1"]),
    "encode": ("bench_encode.py", ["--size-mb", "200", "--word-types", "300000"],
               ["--size-mb", "30", "--word-types", "300000"]),
    "softmax": ("bench_softmax.py", [], ["--steps", "8", "--train-steps", "300"]),
}


def machine() -> str:
    """The machine line, from the same facts the quality benchmark records, plus the GPU."""
    spec = importlib.util.spec_from_file_location("quality_components", HERE / "quality" / "components.py")
    assert spec is not None and spec.loader is not None
    quality = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quality)
    facts = quality.machine()
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{facts['cpu']}, {facts['cores']} cores, {gpu}; torch {facts['torch']}, "
            f"Python {facts['python']}, {platform.system()} {platform.release()}")


def run(name: str, quick: bool) -> tuple[list[str], str, list[dict]]:
    script, full, small = BENCHMARKS[name]
    args = small if quick else full
    if name == "softmax" and not QUALITY_TRAIN.exists():
        args = [*args, "--skip-quality"]
    command = [sys.executable, str(HERE / script), *args]
    print(f"[run_all] {name}: {shlex.join(['python', f'benchmarks/{script}', *args])}", file=sys.stderr, flush=True)
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    output = result.stdout
    if result.returncode != 0:
        output += f"\n(exit {result.returncode})\n{result.stderr[-2000:]}"
    summaries = [json.loads(line.split(":", 1)[1]) for line in output.splitlines()
                 if line.startswith("summary:")]
    shown = "\n".join(line for line in output.splitlines() if not line.startswith("summary:"))
    return ["python", f"benchmarks/{script}", *args], shown, summaries


def ratio_cell(summary: dict) -> str:
    ratio = summary.get("ratio")
    if ratio is None:
        return "-"
    if "ratio_low" in summary:  # the median over rounds, and their range
        return f"{ratio:.2f}x ({summary['ratio_low']:.2f}-{summary['ratio_high']:.2f}, {summary['rounds']} rounds)"
    return f"{ratio:.2f}x"


def absolute_cell(summary: dict) -> str:
    for key, unit in (("tokens_per_s", "tokens/s"), ("sentences_per_s", "sentences/s"),
                      ("hypotheses_per_s", "hypotheses/s"), ("ms_per_token", "ms/token"),
                      ("mb_per_s", "MB/s"), ("perplexity", "perplexity")):
        if key in summary:
            value = summary[key]
            text = f"{value:,.0f} {unit}" if value >= 100 else f"{value:.2f} {unit}"
            if "peak_over_array" in summary:
                text += (f"; peak memory {summary['peak_over_baseline_mb']:,.0f} MB over baseline = "
                         f"{summary['peak_over_array']:.2f}x the {summary['array_mb']:,.0f} MB token array")
            if "peak_share" in summary:
                text += f"; {summary['peak_share']:.0%} of the float32 matmul peak"
                if "peak_share_low" in summary:
                    text += f" (rounds {summary['peak_share_low']:.0%}-{summary['peak_share_high']:.0%})"
                if "ceiling" in summary:
                    text += f", which would allow at most {summary['ceiling']:.1f}x"
                if "library_peak_share" in summary:
                    text += f" (the library's scorer in-process: {summary['library_peak_share']:.0%})"
            if "gpu_peak_share" in summary:
                text += f"; {summary['gpu_peak_share']:.0%} of the GPU's dense peak"
            if "compiled_ratio" in summary:
                text += (f"; with --compile {summary['compiled_ratio']:.2f}x that "
                         f"({summary['compile_seconds']:.0f} s more to the first step)")
            if summary.get("workers", 1) > 1 and "workers_peak_mb" in summary:
                text += (f"; {summary['workers']} worker processes, "
                         f"{summary['workers_peak_mb']:,.0f} MB of their own")
            if "reference_perplexity" in summary:
                text += f" (full softmax {summary['reference_perplexity']:.2f})"
            return text
    return "-"


# Sections other scripts write into BENCHMARKS.md themselves (bench_verse.py needs a
# trained model, which this script does not make; bench_cells.py is long and separate):
# kept as they are when the rest is rewritten.
KEPT = ("verse", "cells", "memory")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes: minutes, not tens of minutes")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    parser.add_argument("--out", type=Path, default=HERE / "BENCHMARKS.md")
    args = parser.parse_args()
    started = dt.datetime.now(dt.timezone.utc)
    sections = []
    rows = []
    for name in args.only:
        command, output, summaries = run(name, args.quick)
        sections.append((name, command, output))
        for summary in summaries:
            rows.append((summary["benchmark"], summary.get("reference") or "-", ratio_cell(summary),
                         absolute_cell(summary)))
    threads = os.environ.get("OMP_NUM_THREADS")
    invoked = shlex.join([*([f"OMP_NUM_THREADS={threads}"] if threads else []),
                          "python", "benchmarks/run_all.py", *sys.argv[1:]])
    lines = [
        "# Speed benchmarks",
        "",
        f"Written {started:%Y-%m-%d %H:%M} UTC by `{invoked}`.",
        f"Machine: {machine()}.",
        "",
        "Ratios are lmcli against the reference, measured in the same run (above 1 is lmcli "
        "faster; for perplexity, above 1 is worse); where a benchmark measures the pair over "
        "rounds, the median ratio, then the range. The sections "
        + ", ".join(KEPT) + " are written by their own scripts (the command heads each) and "
        "kept when this script rewrites the rest: they may come from an earlier day or machine.",
        "",
        "| benchmark | reference | ratio | lmcli |",
        "|---|---|---|---|",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows],
        "",
    ]
    for name, command, output in sections:
        lines += [f"## {name}", "", f"`{shlex.join(command)}`", "", "```", output.strip(), "```", ""]
    lines += kept_sections(args.out, KEPT)
    args.out.write_text("\n".join(lines))
    print(f"[run_all] wrote {args.out}", file=sys.stderr)
    if args.out.resolve() == (HERE / "BENCHMARKS.md").resolve():
        from readme_figures import update
        update()


if __name__ == "__main__":
    main()
