"""Verse report: plain sampling against constrained sampling, on one trained model.

For each way of sampling, over N samples and several seeds (mean and range):

- form: share of samples in a regular form (4 or 8 lines, all 5 or all 7 characters,
  ，and 。 alternating) or, where a form was asked for, in that form;
- rhyme: share of samples whose rhyme lines (even lines; line 1 in seven-character forms)
  end in one level-tone Pingshui group, among the samples in a regular form;
- copied: share of verse lines (5+ characters) found whole in the training text, by the
  run's novelty index;
- distinct-2: distinct character bigrams (inside lines) over all bigrams;
- logprob: mean log-probability per token under the model (<EOS> included);
- samples/s: wall time of ``generate`` (best-of counts one sample per kept poem).

    python benchmarks/bench_verse.py -c checkpoints/RUN [--n 200] [--seeds 3] [--temperature 0.8]
    python benchmarks/bench_verse.py -c checkpoints/RUN --write benchmarks/BENCHMARKS.md

``--write`` puts the table into that file's ``## verse`` section (run_all.py keeps it).
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from lmcli import checkpoint as ckpt  # noqa: E402
from lmcli import rhyme  # noqa: E402
from lmcli.novelty import NoveltyIndex, index_for_checkpoint  # noqa: E402
from lmcli.sampling import SamplingConfig, generate  # noqa: E402
from lmcli.forms import usual_shapes
from lmcli.verse import build_plan  # noqa: E402
from sections import replace_section  # noqa: E402

WAYS = {
    "plain": {},
    "--form 7x4": {"form": "7x4"},
    "--form 7x4 --rhyme": {"form": "7x4", "rhyme": "auto"},
    "--form 7x4 --rhyme --best-of 8": {"form": "7x4", "rhyme": "auto", "best_of": 8},
    "--form 7x4 --rhyme --novel": {"form": "7x4", "rhyme": "auto", "novel": True},
    "--rhyme (usual shapes)": {"rhyme": "auto"},
    # Copies are rare at the default temperature: where a model copies, at a low one.
    "plain, temperature 0.3": {"temperature": 0.3},
    "--novel, temperature 0.3": {"novel": True, "temperature": 0.3},
}
REGULAR = re.compile(r"^(?:[^，。]{5}[，。]){4}$|^(?:[^，。]{7}[，。]){4}$|^(?:[^，。]{5}[，。]){8}$|^(?:[^，。]{7}[，。]){8}$")


def regular(text: str) -> bool:
    if not REGULAR.match(text):
        return False
    marks = re.findall("[，。]", text)
    return marks == ["，" if i % 2 == 0 else "。" for i in range(len(marks))]


def rhymes(text: str, book: rhyme.RhymeBook) -> bool:
    bodies = re.findall("([^，。]+)[，。]", text)
    chosen = [b[-1] for i, b in enumerate(bodies) if i % 2 == 1 or (i == 0 and len(b) == 7)]
    common = set(range(len(book.groups)))
    for char in chosen:
        common &= {g for g in book.groups_of(char) if book.level[g]}
    return bool(common)


def copied_lines(texts: list[str], index: NoveltyIndex, tokenizer) -> tuple[int, int]:
    lines = [line for text in texts for line in re.findall("([^，。]{5,})[，。]", text)]
    found = sum(1 for line in lines if index.check(tokenizer.encode(line)).line is not None)
    return found, len(lines)


def distinct_2(texts: list[str]) -> float:
    bigrams = [line[i:i + 2] for text in texts for line in re.findall("[^，。]+", text) for i in range(len(line) - 1)]
    return len(set(bigrams)) / max(1, len(bigrams))


def measure(loaded, model, index, way: dict, n: int, seed: int, temperature: float) -> dict[str, float]:
    tokenizer = loaded.tokenizer
    shapes = usual_shapes(loaded.payload.get("provenance", {}).get("verse_shapes") or [])
    plan = build_plan(tokenizer, form=way.get("form"), rhyme=way.get("rhyme"), shapes=shapes)
    config = SamplingConfig(temperature=way.get("temperature", temperature), max_tokens=120)
    start = time.perf_counter()
    samples = generate(model, tokenizer, num_samples=n, config=config, seed=seed, plan=plan,
                       best_of=way.get("best_of", 1), novelty=index if way.get("novel") else None)
    seconds = time.perf_counter() - start
    texts = [s.text for s in samples]
    book = rhyme.pingshui()
    in_form = [t for t in texts if regular(t)]
    found, lines = copied_lines(texts, index, tokenizer)
    return {"form": len(in_form) / n, "rhyme": sum(rhymes(t, book) for t in in_form) / max(1, len(in_form)),
            "copied": found / max(1, lines), "distinct-2": distinct_2(texts),
            "logprob": statistics.fmean(s.per_token for s in samples), "samples/s": n / seconds}


def describe(loaded: ckpt.Checkpoint) -> str:
    """Which model: what it was trained on, how, for how long."""
    provenance = loaded.payload.get("provenance") or {}
    corpus = ", ".join(Path(p).name for p in provenance.get("corpus") or []) or "?"
    recipe = provenance.get("recipe") or "no recipe"
    ppl = math.exp(loaded.payload["valid_loss"]) if loaded.payload.get("valid_loss") is not None else float("nan")
    return (f"model: {loaded.model_config.cell} trained on {corpus} ({loaded.tokenizer.level} level, "
            f"recipe {recipe}), best step {loaded.step:,}, validation perplexity {ppl:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--checkpoint", required=True)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write", type=Path, help="put the table into this markdown file's '## verse' section")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = ckpt.resolve(args.checkpoint)
    loaded = ckpt.load(path)
    model = loaded.build_model("cpu")
    index = NoveltyIndex.load(index_for_checkpoint(path), loaded.tokenizer)
    header = (f"{describe(loaded)}; {args.n} samples x {args.seeds} seeds, temperature "
              f"{args.temperature} unless said, {torch.get_num_threads()} CPU threads")
    print(header)
    keys = ["form", "rhyme", "copied", "distinct-2", "logprob", "samples/s"]
    table = ["| sampling | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    print("\n".join(table))
    for name, way in WAYS.items():
        runs = [measure(loaded, model, index, way, args.n, seed, args.temperature) for seed in range(args.seeds)]
        cells = []
        for key in keys:
            values = [r[key] for r in runs]
            digits = 1 if key == "samples/s" else 3
            cells.append(f"{statistics.fmean(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})")
        table.append(f"| {name} | " + " | ".join(cells) + " |")
        print(table[-1], flush=True)
    if args.write:
        write_section(args.write, header, table)


def write_section(path: Path, header: str, table: list[str]) -> None:
    """Replace (or add) the ``## verse`` section of a markdown file."""
    command = "python " + " ".join(["benchmarks/bench_verse.py", *sys.argv[1:]])
    doc = __doc__.split("\n\n    python")[0].split("\n\n", 1)[1].strip()
    section = ["## verse", "", f"`{command}`", "", header + ".", "", doc, "",
               "Each cell: mean over the seeds (lowest-highest).", "", *table, ""]
    replace_section(path, "verse", section)


if __name__ == "__main__":
    main()
