"""The quality report's first sections: the headline rows over seeds, the choices made on
validation, and the curves of the headline runs as images.

A headline row is a component run once per seed (``run.py --seeds 1 2 3``, stored as
NAME-sN.json). Figures are means over the seeds with half their range; test data is read
once per run, after training, and chooses nothing. The recipes behind the rows were chosen
by the validation perplexities listed under "Choices, on validation".
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from components import TARGET_VS_BASELINE, TARGET_VS_KN5, TARGET_VS_PLAIN

HEADLINE = {"word": ("kn5", "baseline-word", "lmcli-word"), "char": ("plain-char", "lmcli-char")}

# Each choice behind the recipes: the candidates (label, stored single-seed component) and
# the one the recipe kept. Listed so that a reader can check each choice on validation.
CHOICES: list[tuple[str, list[tuple[str, str]], str]] = [
    ("word: output layer (LSTM 2x200)",
     [("full softmax", "lmcli-word-full-softmax"), ("adaptive, clusters 2000", "lmcli-word-adaptive"),
      ("adaptive, clusters 1000, 4000", "lmcli-word-adaptive-1k4k")], "lmcli-word-adaptive-1k4k"),
    ("word: size (adaptive 1000, 4000)",
     [("2x200, dropout 0.2", "lmcli-word-adaptive-1k4k"), ("2x300, dropout 0.3", "lmcli-word-no-phase"),
      ("2x400, dropout 0.4", "lmcli-word-adaptive-400")], "lmcli-word-no-phase"),
    ("word: learning rate (2x300)",
     [("SGD 20", "lmcli-word-no-phase"), ("SGD 30", "lmcli-word-lr30")], "lmcli-word-no-phase"),
    ("word: sentence-phase share (2x300)",
     [("0", "lmcli-word-no-phase"), ("0.2", "lmcli-word-sp20"), ("0.35", "lmcli-word-sp35"),
      ("0.5", "lmcli-word"), ("0.7", "lmcli-word-sp70")], "lmcli-word"),
    ("char: lanes and rate (LSTM 1x512)",
     [("32 lanes, 8e-3", "lmcli-char-lr8"), ("32 lanes, 6e-3", "lmcli-char-lr6"),
      ("32 lanes, 1.2e-2", "lmcli-char-lr12"), ("16 lanes", "lmcli-char-b16"),
      ("12 lanes", "lmcli-char-b12"), ("8 lanes", "lmcli-char-b8")], "lmcli-char-b12"),
    ("char: size (12 lanes)",
     [("1x512", "lmcli-char-b12"), ("1x448", "lmcli-char-b12-h448")], "lmcli-char-b12"),
]
CHAR_SIZE_NOTE = (
    "Char size: 448 units were the recipe from an earlier choice read off test data (1.3113 "
    "against 1.3217 bits); validation prefers 512 (the table), so the recipe is 1x512 again "
    "and the headline char rows are 1x512.")


def word_size_note(results: dict[str, dict[str, Any]]) -> str:
    """Validation's preference for 2x200 over the recipe's 2x300, against the spread the
    recipe's own validation perplexity shows over seeds."""
    small, kept = (best_valid(results.get(name) or {}) for name in ("lmcli-word-adaptive-1k4k",
                                                                    "lmcli-word-no-phase"))
    if not small or not kept:
        return ""
    valid = [v for v in map(best_valid, seeds_of(results, "lmcli-word")) if v]
    gap = kept - small
    spread_text = "not measured yet"
    if len(valid) > 1:
        half = (max(valid) - min(valid)) / 2
        spread_text = (f"{'more' if gap > half else 'less'} than the ± {half:.2f} the recipe's "
                       f"validation perplexity shows over {len(valid)} seeds (headline)")
    return (f"Word size: validation prefers 2x200 by {gap:.2f} perplexity ({gap / kept:.1%}), one "
            f"seed each, {spread_text}. The recipe keeps 2x300, picked when choices were still "
            "read off test data; settling it takes seeds of both sizes with the sentence phase "
            "(not run yet).")


def seeds_of(results: dict[str, dict[str, Any]], base: str) -> list[dict[str, Any]]:
    return [r for name, r in sorted(results.items()) if r.get("base") == base and r.get("seed") is not None]


def spread(values: list[float], digits: int) -> str:
    if not values:
        return "-"
    mean, half = statistics.fmean(values), (max(values) - min(values)) / 2
    return f"{mean:.{digits}f} ± {half:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


def best_valid(r: dict[str, Any]) -> float | None:
    """The best validation perplexity a run saw (lmcli: its curve; the baselines: per epoch)."""
    points = [p.get("perplexity") for p in r.get("valid_curve") or []] or \
             [p.get("valid_ppl") for p in r.get("curve") or []]
    points = [p for p in points if p]
    return min(points) if points else None


def below(ours: list[float], theirs: list[float]) -> list[float]:
    """Per seed, how far below the reference of the same seed (a fraction; KN5 has one)."""
    if not theirs:
        return []
    pairs = zip(ours, theirs) if len(theirs) == len(ours) else ((o, theirs[0]) for o in ours)
    return [1 - o / t for o, t in pairs]


def word_rows(results: dict[str, dict[str, Any]]) -> list[str]:
    kn5 = results.get("kn5")
    base, ours = seeds_of(results, "baseline-word"), seeds_of(results, "lmcli-word")
    kn5_ppl = [kn5["test_ppl"]] if kn5 else []
    base_stream = [r["test_ppl_stream"] for r in base]
    sentence = [r["sentence"]["perplexity"] for r in ours]
    stream = [r["stream"]["perplexity"] for r in ours]
    rows = ["| model | seeds | valid ppl | test ppl, sentences | test ppl, stream | below KN5 (sentences) "
            "| below baseline (stream) |", "|---|---|---|---|---|---|---|"]
    if kn5:
        rows.append(f"| kn5 ({kn5['model']}) | - | {kn5['valid_ppl']:.2f} | {kn5['test_ppl']:.2f} | - | - | - |")
    if base:
        rows.append(f"| baseline-word ({base[0]['model']}; {base[0].get('precision', 'fp32')}) | "
                    f"{len(base)} | {spread([r['valid_ppl_10_lanes'] for r in base], 2)} | - | "
                    f"{spread(base_stream, 2)} | - | - |")
    if ours:
        rows.append(f"| lmcli-word (`{ours[0]['model'].split(' --seed')[0]}`; bf16 autocast) | {len(ours)} | "
                    f"{spread([best_valid(r) for r in ours], 2)} | {spread(sentence, 2)} | {spread(stream, 2)} | "
                    f"{pct(below(sentence, kn5_ppl), TARGET_VS_KN5)} | "
                    f"{pct(below(stream, base_stream), TARGET_VS_BASELINE)} |")
    return rows


def char_rows(results: dict[str, dict[str, Any]]) -> list[str]:
    plain, ours = seeds_of(results, "plain-char"), seeds_of(results, "lmcli-char")
    plain_bpc = [r["test_bpc_stream"] for r in plain]
    stream = [r["stream"]["bits_per_char"] for r in ours]
    rows = ["| model | seeds | valid bpc | test bpc, sentences | test bpc, stream | below plain (stream) |",
            "|---|---|---|---|---|---|"]
    if plain:
        rows.append(f"| plain-char ({plain[0]['model']}; {plain[0].get('precision', 'fp32')}) | {len(plain)} | "
                    f"{spread([r['valid_bpc'] for r in plain], 4)} | - | {spread(plain_bpc, 4)} | - |")
    if ours:
        valid = [math.log2(v) for v in map(best_valid, ours) if v]  # char tokens are characters here
        rows.append(f"| lmcli-char (`{ours[0]['model'].split(' --seed')[0]}`; bf16 autocast) | {len(ours)} | "
                    f"{spread(valid, 4)} | {spread([r['sentence']['bits_per_char'] for r in ours], 4)} | "
                    f"{spread(stream, 4)} | {pct(below(stream, plain_bpc), TARGET_VS_PLAIN)} |")
    return rows


def pct(fractions: list[float], target: float | None = None) -> str:
    """Mean reduction ± half range, and how many seeds reach ``target``."""
    if not fractions:
        return "-"
    mean, half = statistics.fmean(fractions), (max(fractions) - min(fractions)) / 2
    text = f"{mean:.1%} ± {half:.1%}" if len(fractions) > 1 else f"{mean:.1%}"
    if target is None:
        return text
    met = sum(f >= target for f in fractions)
    return f"{text} (target {target:.0%}: {met} of {len(fractions)} seeds)"


def minutes_of(results: dict[str, dict[str, Any]]) -> str:
    return "/".join(sorted({f"{r['minutes']:g}" for r in results.values()
                            if r.get("seed") is not None and r.get("minutes")}))


def headline_section(results: dict[str, dict[str, Any]], images: list[str]) -> list[str]:
    seeds = sorted({r["seed"] for r in results.values() if r.get("seed") is not None})
    if not seeds:
        return []
    lines = [
        "## Headline: seeds " + ", ".join(map(str, seeds)) + ", recipes chosen on validation", "",
        f"Each row is one component run once per seed (`run.py --seeds {' '.join(map(str, seeds))} "
        "--jobs 2 --threads 1`: each lmcli run side by side with its reference of the same seed, "
        f"one thread each, {minutes_of(results)} minutes of training). Figures: mean ± half the range over the seeds; the "
        "reductions are per seed against the reference of the same seed (KN5 has no seed). "
        "Test data was read once per run, after training, and chose nothing: the recipes "
        "come from the validation perplexities under \"Choices, on validation\".", "",
        "Precision: lmcli trains under bf16 autocast, its default on this CPU (which multiplies "
        "bf16 natively); the baselines train under the same autocast (`baseline_lstm.py --amp`), "
        "so that neither side has the faster arithmetic alone. Every evaluation is float32.", "",
        "Validation: lmcli's column is the best validation perplexity its run saw (the checkpoint "
        "kept), the baselines' the best after an epoch (10 lanes, state carried); the columns are "
        "each side's own yardstick, not one to compare across rows.", "",
        *word_rows(results), "", *char_rows(results), "",
    ]
    lines += [f"![{Path(image).stem}]({image})" for image in images]
    return lines + ([""] if images else [])


def choices_section(results: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["## Choices, on validation", "",
             "Every choice behind the recipes, with each candidate's best validation perplexity "
             "(one seed each, from the single-seed runs under History). \"validation picks\" is the "
             "lowest; \"kept\" is what the recipe uses.", "",
             "| choice | candidates: best valid ppl | validation picks | kept |", "|---|---|---|---|"]
    for title, candidates, kept in CHOICES:
        scored = [(label, best_valid(results[name])) for label, name in candidates if name in results]
        scored = [(label, value) for label, value in scored if value]
        if not scored:
            continue
        char = title.startswith("char")
        shown = "; ".join(f"{label} {math.log2(v):.4f} bits" if char else f"{label} {v:.2f}"
                          for label, v in scored)
        pick = min(scored, key=lambda item: item[1])[0]
        kept_label = next(label for label, name in candidates if name == kept)
        lines.append(f"| {title} | {shown} | {pick} | {kept_label} |")
    notes = [note for note in (word_size_note(results), CHAR_SIZE_NOTE) if note]
    return lines + [""] + [f"- {note}" for note in notes] + [""]


def curve_images(results: dict[str, dict[str, Any]], folder: Path, prefix: str = "quality") -> list[Path]:
    """One PNG per level: validation perplexity against training minutes for every seed of
    the headline runs. Needs matplotlib (`pip install -e '.[plot]'`); none without it."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    for level, names in HEADLINE.items():
        runs = [(name, r) for name in names for r in seeds_of(results, name)]
        if not runs:
            continue
        figure, axis = plt.subplots(figsize=(7, 4), dpi=100)
        lowest = []
        for index, (name, r) in enumerate(runs):
            points = ([(p["time"] / 60, p["perplexity"]) for p in r.get("valid_curve") or []] or
                      [(p["seconds"] / 60, p["valid_ppl"]) for p in r.get("curve") or []])
            points = [(x, y if level == "word" else math.log2(y)) for x, y in points if y]
            if points:
                axis.plot(*zip(*points), marker=".", color=f"C{names.index(name)}",
                          label=f"{name} seed {r['seed']}", alpha=0.5 + 0.5 * (index % 3 == 0))
                lowest.append(min(y for _, y in points))
        if lowest:  # the early, steep part would flatten the end, where the runs differ
            axis.set_ylim(min(lowest) * 0.97, min(lowest) * 1.6)
        axis.set_xlabel("training minutes")
        axis.set_ylabel(("valid perplexity" if level == "word" else "valid bits per character")
                        + "\n(each model's own measure)", fontsize=9)
        axis.set_title(f"{level} level: validation during training, each seed")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
        figure.tight_layout()
        path = folder / f"{prefix}-{level}.png"
        figure.savefig(path)
        plt.close(figure)
        written.append(path)
    return written
