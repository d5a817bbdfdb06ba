"""N-best rescoring with a forward model, and with a forward and a backward model together.

The lists are simulated, since no recogniser's output for this corpus is public: for each
verse of the quality corpus's validation (dev) and test files (5 to 40 words), ten
hypotheses made by a few edits each, the reference itself among them in 70% of the lists
(so the oracle is not perfect). An edit is a substitution by a word that sounds alike (its
CMU pronunciation within one phoneme of the word's: what a recogniser confuses) in 60% of
edits, a word dropped in 20%, a frequent word inserted in 20%. The acoustic score is minus
the edits' cost (0.5 for a sound-alike, 1 for a drop or an insertion, 1.5 for a word that
does not sound alike, where a word has no sound-alike) plus Gaussian noise (sd 1): the
recogniser prefers the truth on the whole and is often wrong. The generator and its costs
were fixed before any model scored a list.

Models: ``lmcli train --recipe tiny`` at word level on the corpus's training text, one
forward and one ``--direction backward``, the same number of steps. Weights: tuned on dev
(``rerank --tune``'s search); word error rates on test, once per combination.

    python benchmarks/quality/prepare.py
    python benchmarks/bench_bidirectional.py --write benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from lmcli import checkpoint as ckpt
from lmcli import rerank as rr
from sections import replace_section

DATA = REPO / "benchmarks" / ".cache" / "quality"
WORK = REPO / "benchmarks" / ".cache" / "bidirectional"
HYPS, KEEP_REF, NOISE = 10, 0.7, 1.0
COST = {"alike": 0.5, "drop": 1.0, "insert": 1.0, "other": 1.5}


class Confusions:
    """Sound-alike words of the corpus vocabulary: CMU pronunciations within one phoneme
    (a substitution, a deletion or an insertion), found through one-deletion keys."""

    def __init__(self, vocabulary: list[str]) -> None:
        import pronouncing

        pronouncing.init_cmu()
        phones = {w: tuple(p[0].split()) for w in vocabulary if (p := pronouncing.phones_for_word(w))}
        keys: dict[tuple[str, ...], set[str]] = defaultdict(set)
        for word, seq in phones.items():
            keys[seq].add(word)
            for i in range(len(seq)):
                keys[seq[:i] + seq[i + 1:]].add(word)
        self.alike: dict[str, list[str]] = {}
        for word, seq in phones.items():
            near = set(keys[seq]) | {w for i in range(len(seq)) for w in keys[seq[:i] + seq[i + 1:]]}
            near.discard(word)
            if near:
                self.alike[word] = sorted(near)


def hypotheses(ref: list[str], confusions: Confusions, frequent: list[str], rng: random.Random
               ) -> list[tuple[str, float]]:
    """Up to HYPS distinct (text, acoustic score) for one reference."""
    out: dict[str, float] = {}
    if rng.random() < KEEP_REF:
        out[" ".join(ref)] = -0.0 + rng.gauss(0, NOISE)
    for _ in range(200):
        if len(out) >= HYPS:
            break
        words, cost = list(ref), 0.0
        for _ in range(1 + min(3, int(rng.expovariate(1.0)))):
            i = rng.randrange(len(words))
            kind = rng.choices(["sub", "drop", "insert"], [0.6, 0.2, 0.2])[0]
            if kind == "sub":
                alike = confusions.alike.get(words[i])
                words[i] = rng.choice(alike) if alike else rng.choice(frequent)
                cost += COST["alike" if alike else "other"]
            elif kind == "drop" and len(words) > 1:
                del words[i]
                cost += COST["drop"]
            else:
                words.insert(i, rng.choice(frequent[:100]))
                cost += COST["insert"]
        text = " ".join(words)
        if text != " ".join(ref) and text not in out:
            out[text] = -cost + rng.gauss(0, NOISE)
    return list(out.items())


def nbest(path: Path, confusions: Confusions, frequent: list[str], seed: int, limit: int) -> list[rr.Utterance]:
    rng = random.Random(seed)
    refs = [line.split() for line in path.read_text(encoding="utf-8").splitlines()]
    refs = [r for r in refs if 5 <= len(r) <= 40][:limit]
    return [rr.Utterance(f"{path.stem}-{i}", [rr.Hypothesis(t, s) for t, s in hypotheses(r, confusions, frequent, rng)],
                         " ".join(r)) for i, r in enumerate(refs)]


def train(direction: str, steps: int) -> Path:
    run = WORK / direction
    argv = [sys.executable, "-m", "lmcli", "train", str(DATA / "train.txt"), "--valid", str(DATA / "valid.txt"),
            "--level", "word", "--min-freq", "1", "--recipe", "tiny", "--direction", direction,
            "--max-steps", str(steps), "--device", "cpu", "-o", str(run), "--force", "--json", "--no-sample"]
    marker = run / "steps"  # a model trained before with these steps is used again
    if not (marker.exists() and marker.read_text() == str(steps) and (run / ckpt.BEST).exists()):
        WORK.mkdir(parents=True, exist_ok=True)
        subprocess.run(argv, check=True, cwd=WORK, stdout=subprocess.DEVNULL,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
        marker.write_text(str(steps))
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="training steps of each model")
    parser.add_argument("--dev", type=int, default=500, help="dev utterances")
    parser.add_argument("--test", type=int, default=1000, help="test utterances")
    parser.add_argument("--list-seeds", type=int, nargs="+", default=[1, 2, 3],
                        help="simulations of the dev and test lists (the models stay the same)")
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    train_words = Counter((DATA / "train.txt").read_text(encoding="utf-8").split())
    frequent = [w for w, _ in train_words.most_common(2000) if w.isalpha()]
    confusions = Confusions(sorted(w for w in train_words if w.isalpha()))
    runs = {d: train(d, args.steps) for d in ("forward", "backward")}
    models = []
    for direction, run in runs.items():
        loaded = ckpt.load(run / ckpt.BEST)
        models.append(rr.LanguageModel(loaded.build_model(), loaded.tokenizer, name=direction))
    results: dict[str, list[tuple[Any, rr.ErrorReport]]] = {}
    for seed in args.list_seeds:
        dev = nbest(DATA / "valid.txt", confusions, frequent, 2 * seed - 1, args.dev)
        test = nbest(DATA / "test.txt", confusions, frequent, 2 * seed, args.test)
        for label, tuned, result in combinations(dev, test, models):
            results.setdefault(label, []).append((tuned, result))
    section = report(results, dev, test, confusions, args)
    print("\n".join(section))
    if args.write:
        replace_section(args.write, "Rescoring with two directions", section)


def combinations(dev: list[rr.Utterance], test: list[rr.Utterance], models: list[rr.LanguageModel]
                 ) -> list[tuple[str, Any, rr.ErrorReport]]:
    """Each model alone and both, their weights tuned on dev, the WER on test."""
    rr.attach_lm_scores(dev + test, models)
    both = {id(h): list(h.lm_logprobs) for u in dev + test for h in u.hyps}
    rows = []
    for label, keep in (("forward", [0]), ("backward", [1]), ("forward + backward", [0, 1])):
        for utterance in dev + test:
            for hyp in utterance.hyps:
                hyp.lm_logprobs = [both[id(hyp)][k] for k in keep]
        tuned = rr.tune(dev)
        rows.append((label, tuned, rr.error_report(test, tuned.weights)))
    return rows


def report(results: dict[str, list[tuple[Any, rr.ErrorReport]]], dev: list[rr.Utterance],
           test: list[rr.Utterance], confusions: Confusions, args: argparse.Namespace) -> list[str]:
    def spread(values: list[float]) -> str:
        values = [100 * v for v in values]
        return f"{sum(values) / len(values):.2f}% ± {(max(values) - min(values)) / 2:.2f}"

    reports = [r for _, r in results["forward"]]
    command = "python " + shlex.join(["benchmarks/bench_bidirectional.py", *sys.argv[1:]])
    lines = ["## Rescoring with two directions", "", f"`{command}`", "",
             f"Simulated N-best lists (benchmarks/bench_bidirectional.py says how), simulated "
             f"{len(args.list_seeds)} times (list seeds {', '.join(map(str, args.list_seeds))}): each time "
             f"{len(dev):,} dev and {len(test):,} test utterances of the quality corpus, up to {HYPS} hypotheses "
             f"each, about {reports[-1].ref_words:,} test reference words; {len(confusions.alike):,} vocabulary "
             f"words have sound-alikes. Models: word level, `--recipe tiny`, {args.steps:,} steps each, the "
             "same for every simulation. Mean ± half the range over the simulations; weights: the last one's.",
             "", "| language models | weights tuned on dev | dev WER | test WER |", "|---|---|---:|---:|",
             f"| none (the acoustic 1-best) | - | - | {spread([r.am['wer'] for r in reports])} |"]
    for label, rows in results.items():
        lines.append(f"| {label} | `{rows[-1][0].weights.flags()}` | {spread([t.error_after for t, _ in rows])} | "
                     f"{spread([r.rescored['wer'] for _, r in rows])} |")
    lines += [f"| oracle (the best hypothesis of each list) | - | - | "
              f"{spread([r.oracle['wer'] for r in reports])} |", ""]
    gains = [100 * (f.rescored["wer"] - b.rescored["wer"])
             for (_, f), (_, b) in zip(results["forward"], results["forward + backward"])]
    lines += [f"Forward + backward against forward alone, test WER, simulation by simulation: "
              f"{', '.join(f'{-g:+.2f}' for g in gains)} points ({sum(g > 0 for g in gains)} of {len(gains)} "
              "lower).", ""]
    return lines


if __name__ == "__main__":
    main()
