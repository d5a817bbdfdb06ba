"""RESULTS.md from the stored result JSONs alone, so that it can be rewritten at any time
(`run.py --report-only`): the headline over seeds, the choices, the single-seed history,
the validation curves and how each result was made."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from components import (BECAME, CHAR_NOTE, DATA, HERE, LONGER_REFERENCES, REFERENCES, REPO,
                        TARGET_VS_BASELINE, TARGET_VS_KN5, TARGET_VS_PLAIN, components, machine, now_utc)
from headline import choices_section, curve_images, headline_section

sys.path.insert(0, str(REPO / "benchmarks"))
from sections import kept_sections

# Sections other scripts (bench_cell_quality.py, bench_finetune.py, bench_bidirectional.py)
# or people (the reading of the cells table) write into RESULTS.md: kept on a rewrite.
KEPT = ("Recurrent cells", "Recurrent cells against the literature", "Fine-tuning",
        "Rescoring with two directions")


def load_results(results: Path) -> dict[str, dict[str, Any]]:
    """The stored results, the known components first in their order, then any others."""
    loaded = {path.stem: json.loads(path.read_text(encoding="utf-8"))
              for path in results.glob("*.json") if not path.name.endswith(".part.json")}
    order = components() + sorted(set(loaded) - set(components()))
    return {name: loaded[name] for name in order if name in loaded}


def below(value: float | None, reference: float | None) -> float | None:
    """How far `value` lies below `reference`, as a fraction of it (negative: above)."""
    if value is None or reference is None or not reference:
        return None
    return (reference - value) / reference


def versus(value: float | None, reference: float | None, target: float) -> str:
    fraction = below(value, reference)
    if fraction is None:
        return "-"
    words = f"{100 * fraction:.1f}% below" if fraction >= 0 else f"{-100 * fraction:.1f}% above"
    return f"{words} ({'met' if fraction >= target else 'not met'})"


def number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def minutes(result: dict[str, Any]) -> str:
    return "-" if result.get("minutes") is None else f"{result['minutes']:g}"


def clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def thin(points: list[Any], most: int = 12) -> list[Any]:
    """At most `most` points, evenly spread, the first and the last kept."""
    if len(points) <= most:
        return points
    picks = sorted({round(i * (len(points) - 1) / (most - 1)) for i in range(most)})
    return [points[i] for i in picks]


def curve_table(points: list[tuple[float, float | None]], label: str) -> list[str]:
    points = thin(points)
    return ["| time (m:ss) | " + " | ".join(clock(t) for t, _ in points) + " |",
            "|---|" + "---|" * len(points),
            f"| {label} | " + " | ".join(number(p) for _, p in points) + " |"]


def corpus_line(data: Path) -> str:
    try:
        stats = json.loads((data / "stats.json").read_text(encoding="utf-8"))
    except OSError:
        return f"Corpus: {data} (not built here)."
    parts = [f"{name} {stats[name]['words']:,} words in {stats[name]['lines']:,} lines"
             for name in ("train", "valid", "test")]
    return (f"Corpus: the King James Bible, PTB style (benchmarks/quality/prepare.py): "
            f"{'; '.join(parts)}; vocabulary {stats['vocabulary']:,} with `<unk>`"
            + ("." if data.resolve() == DATA.resolve() else f" (from {data})."))


def unknown_word_notes(ours: dict[str, dict[str, Any]], data: Path) -> list[str]:
    """A warning for each word-level lmcli model whose vocabulary lacks words the corpus
    vocabulary holds: it then predicts its <UNK> for them, an easier task than KN5's."""
    try:
        stats = json.loads((data / "stats.json").read_text(encoding="utf-8"))
        corpus_unk, vocabulary = stats["test"]["unk"], stats["vocabulary"]
    except (OSError, KeyError, ValueError):
        return []
    notes = []
    for name, r in ours.items():
        oov = r["sentence"].get("oov") if r.get("level") == "word" else None
        if oov is not None and oov != corpus_unk:
            notes.append(f"\nNote: {name} reads {oov:,} test tokens as <UNK> where the corpus has "
                         f"{corpus_unk:,} `<unk>`: its vocabulary differs from the corpus's {vocabulary:,} "
                         "words, so its perplexities are not strictly comparable.")
    return notes


def write_report(results_dir: Path, report: Path, command: str, data: Path = DATA) -> str:
    """RESULTS.md from the stored JSONs alone (so it can be rewritten at any time)."""
    results = load_results(results_dir)
    kn5, baseline = results.get("kn5"), results.get("baseline-word")
    history = {name: r for name, r in results.items() if r.get("seed") is None}
    ours = {name: r for name, r in history.items() if name not in REFERENCES + LONGER_REFERENCES}
    # The plain char LSTM by training minutes: each char run is measured against the one
    # trained as long as it was.
    plains = {r.get("minutes"): r for name, r in results.items()
              if name in ["plain-char", *LONGER_REFERENCES]}
    def hardware(m: dict[str, Any]) -> str:  # what makes two machines different
        return json.dumps({k: m.get(k) for k in ("cpu", "cores", "torch", "python")}, sort_keys=True)

    machines = {hardware(r["machine"]) for r in results.values() if r.get("machine")}
    runners = sorted({r["runner_command"] for r in results.values() if r.get("runner_command")})
    here = machine()
    shown_dir = results_dir.relative_to(REPO) if results_dir.is_relative_to(REPO) else results_dir
    lines = [
        "# Model quality: lmcli against KenLM and a plain LSTM",
        "",
        f"Report written {now_utc()} by `{command}` from {shown_dir}.",
        "Results made by: " + (", ".join(f"`{c}`" for c in runners) or "-") + ".",
        f"Machine: {here['cpu']}, {here['cores']} cores, torch {here['torch']}, Python {here['python']}"
        + (" (some results come from other machines: see their JSON)"
           if machines - {hardware(here)} else "") + ".",
        corpus_line(data),
        "",
        "Targets: at word level, lmcli's sentence-level test perplexity at least 25% below "
        "KN5's, and its stream test perplexity at least 10% below the baseline LSTM's; at "
        "character level, lmcli's test bits per character (stream) at least 10% below the "
        "plain char LSTM's.",
        "",
        "Sentence level: each test line scored from an empty context (KN5: from `<s>`). Stream:"
        " the test file read in order with the state carried across lines. Perplexities count "
        "one end-of-line token per line; bits per character count each line end as a character.",
        "",
        *headline_section(results, [path.name for path in curve_images(results, report.parent)]),
        *choices_section(results),
        "## History: single-seed runs, word level",
        "",
        "The runs made while the recipes were being built: one seed each, lmcli under bf16 "
        "autocast against fp32 baselines, and some of them chosen among by test perplexity "
        "(the headline above replaces them). Kept as the record of what was tried.",
        "",
        "| model | minutes | test ppl, sentences | test ppl, stream | vs KN5 | vs baseline |",
        "|---|---|---|---|---|---|",
    ]
    kn5_ppl = kn5.get("test_ppl") if kn5 else None
    base_ppl = baseline.get("test_ppl_stream") if baseline else None
    if kn5:
        lines.append(f"| kn5 ({kn5['model']}) | - | {number(kn5_ppl)} | - | - | - |")
    if baseline:
        lines.append(f"| baseline-word ({baseline['model']}) | {minutes(baseline)} | - | "
                     f"{number(base_ppl)} | - | - |")
    notes: list[str] = []
    for name, r in ours.items():
        if r.get("level") == "word":
            sentence, stream = r["sentence"]["perplexity"], r["stream"]["perplexity"]
            lines.append(f"| {name} (`{r['model']}`) | {minutes(r)} | {number(sentence)} | "
                         f"{number(stream)} | "
                         f"{versus(sentence, kn5_ppl, TARGET_VS_KN5)} | "
                         + (f"{versus(stream, base_ppl, TARGET_VS_BASELINE)} |"
                            if baseline and r.get("minutes") == baseline.get("minutes") else "- |"))
            if r.get("note"):
                notes.append(f"\n{name}: {r['note']}.")
    lines += [
        "",
        "vs KN5: sentence-level perplexity against KN5's (target: 25% below). vs baseline: "
        "stream perplexity against the baseline's stream perplexity, for runs as long as the "
        "baseline's (target: 10% below).",
        *notes,
        *unknown_word_notes(ours, data),
        "",
        "## History: single-seed runs, character level",
        "",
        "| model | minutes | test bpc, sentences | test bpc, stream | vs plain |",
        "|---|---|---|---|---|",
    ]
    char_notes: list[str] = []
    for name in ["plain-char", *LONGER_REFERENCES]:
        if name in results:
            r = results[name]
            lines.append(f"| {name} ({r['model']}) | {minutes(r)} | - | {number(r.get('test_bpc_stream'), 4)} | - |")
            if r.get("note"):
                char_notes.append(f"\n{name}: {r['note']}.")
    for name, r in ours.items():
        if r.get("level") != "word":
            if r.get("note"):
                char_notes.append(f"\n{name}: {r['note']}.")
            sentence, stream = r["sentence"]["bits_per_char"], r["stream"]["bits_per_char"]
            level = "" if r.get("level") == "char" else f" ({r.get('level')} level)"
            same = plains.get(r.get("minutes"))
            lines.append(f"| {name} (`{r['model']}`{level}) | {minutes(r)} | {number(sentence, 4)} | "
                         f"{number(stream, 4)} | "
                         + (f"{versus(stream, same.get('test_bpc_stream'), TARGET_VS_PLAIN)} |"
                            if same else "- |"))
    lines += ["", "vs plain: stream bits per character against the plain char LSTM's trained as "
              f"long (target: 10% below). {CHAR_NOTE}", *char_notes, "", "## Validation curves", ""]
    for name, r in ours.items():
        if r.get("valid_curve"):
            unit = "valid ppl" if r.get("level") == "word" else f"valid ppl ({r.get('level')} tokens)"
            lines += [f"{name} (`{r['model']}`; {r.get('parameters') or 0:,} parameters, "
                      f"{number(r.get('tokens_per_second'), 0)} tokens/s over the run, validations "
                      "included):", ""]
            lines += curve_table([(p["time"], p["perplexity"]) for p in r["valid_curve"]], unit) + [""]
    for name, r in ((n, results.get(n)) for n in ("baseline-word", "plain-char", *LONGER_REFERENCES)):
        if r and r.get("curve"):
            lines += [f"{name} (after each epoch, 10 lanes; {number(r.get('tokens_per_second'), 0)} "
                      "tokens/s while training):", ""]
            lines += curve_table([(p["seconds"], p["valid_ppl"]) for p in r["curve"]], "valid ppl") + [""]
    findings = HERE / "FINDINGS.md"
    if findings.exists():  # the hand-written reading of these numbers
        lines += [findings.read_text(encoding="utf-8").rstrip(), ""]
    lines += ["## How each result was made", ""]
    for name in [n for n in components() if n in results] + [n for n in results if n not in components()]:
        r = results[name]
        wall = "?" if r.get("wall_seconds") is None else clock(r["wall_seconds"])
        load = (f", {r['threads']} thread(s), {r.get('side_by_side', 1)} run(s) at a time"
                if r.get("threads") else "")
        lines.append(f"- {name} (finished {r.get('finished', '?')}, {wall} wall{load}):")
        lines += [f"  `{c}`" for c in r.get("commands", [])]
    missing = [n for n in components() if n not in results and BECAME.get(n) not in results]
    if missing:
        lines += ["", f"Not run yet: {', '.join(missing)}."]
    text = "\n".join(lines + [""] + kept_sections(report, KEPT)).rstrip("\n") + "\n"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(text, encoding="utf-8")
    return text

