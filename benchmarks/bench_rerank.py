"""N-best rescoring speed: hypotheses per second for 1,000 utterances x 10 hypotheses.

The N-best lists are built from the bundled KJV verses: each utterance's hypotheses are
its verse and nine confusions of it (neighbouring words swapped, a word dropped or
repeated). The model is a word-level LSTM with random weights of the requested shape on
the KJV vocabulary (speed does not depend on what the weights learned). Printed: lmcli's
pipeline (distinct texts scored once, in large length-sorted batches) against scoring each
hypothesis on its own, measured in the same run, and the time the grid search takes.

    python benchmarks/bench_rerank.py
    python benchmarks/bench_rerank.py --utterances 1000 --hyps 10 --device cuda
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lmcli import rerank as rr  # noqa: E402
from lmcli.devices import describe, resolve_device  # noqa: E402
from lmcli.model import RNNLM, ModelConfig  # noqa: E402
from lmcli.scoring import score_sentences  # noqa: E402
from lmcli.vocabulary import build_tokenizer  # noqa: E402


def confusions(words: list[str], count: int, rng: random.Random) -> list[str]:
    out: list[str] = []
    while len(out) < count:
        w = list(words)
        i = rng.randrange(max(1, len(w) - 1))
        kind = rng.randrange(3)
        if kind == 0 and len(w) > 1:
            w[i], w[i + 1] = w[i + 1], w[i]
        elif kind == 1 and len(w) > 1:
            del w[i]
        else:
            w.insert(i, w[i])
        out.append(" ".join(w))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=1000)
    parser.add_argument("--hyps", type=int, default=10)
    parser.add_argument("--hidden-dim", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--single", type=int, default=1000, help="hypotheses timed one at a time")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=3, help="times the pair is measured (median and range)")
    args = parser.parse_args()

    lines = (REPO / "corpora" / "kjv_poetry.txt").read_text(encoding="utf-8").splitlines()
    tokenizer = build_tokenizer("word", ["\n".join(lines) + "\n"], min_freq=2)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = RNNLM(ModelConfig(vocab_size=tokenizer.vocab_size, cell="lstm", layers=args.layers,
                              embed_dim=args.hidden_dim, hidden_dim=args.hidden_dim,
                              dropout=0.0)).to(device).eval()
    rng = random.Random(0)
    utterances = []
    for index in range(args.utterances):
        ref = lines[index % len(lines)]
        texts = [ref] + confusions(ref.split(), args.hyps - 1, rng)
        utterances.append(rr.Utterance(f"u{index}", [rr.Hypothesis(t, rng.gauss(-50, 3)) for t in texts], ref))
    hyps = [h for u in utterances for h in u.hyps]
    print(f"{args.utterances:,} utterances x {args.hyps} hypotheses = {len(hyps):,}; "
          f"lstm {args.layers}x{args.hidden_dim}, vocabulary {tokenizer.vocab_size:,}, {describe(device)}")

    column = rr.LanguageModel(model, tokenizer)
    rr.attach_lm_scores(utterances[:20], [column], batch_size=args.batch_size)  # warm up
    sample = hyps[: args.single]
    # Rates in hypothesis tokens (<EOS> included): the reference is timed on the first
    # hypotheses only, whose lengths differ from the whole set's. Both give every
    # hypothesis its score; lmcli scores each distinct text once, part of what is measured.
    def tokens(some: list[rr.Hypothesis]) -> int:
        return sum(len(tokenizer.encode(h.text)) + 1 for h in some)

    all_tokens, sample_tokens = tokens(hyps), tokens(sample)
    together, apart = [], []
    for _ in range(args.rounds):  # alternating, so each round's ratio shares its conditions
        start = time.perf_counter()
        stats = rr.attach_lm_scores(utterances, [column], batch_size=args.batch_size)
        together.append(all_tokens / (time.perf_counter() - start))
        start = time.perf_counter()
        for h in sample:
            next(iter(score_sentences(model, tokenizer, [h.text], batch_size=1)))
        apart.append(sample_tokens / (time.perf_counter() - start))
    ratios = [t / a for t, a in zip(together, apart)]
    batched, single = statistics.median(together), statistics.median(apart)

    rr.attach_errors(utterances)
    start = time.perf_counter()
    tuned = rr.tune(utterances)
    tune_seconds = time.perf_counter() - start

    print(f"lmcli rerank scoring: {batched:>9,.0f} tokens/s = {batched * len(hyps) / all_tokens:,.0f} "
          f"hypotheses/s ({stats.unique_texts:,} distinct texts)")
    print(f"one at a time:        {single:>9,.0f} tokens/s (timed on the first {len(sample):,} hypotheses)")
    print(f"ratio: {statistics.median(ratios):.2f}x (median of {len(ratios)} rounds; "
          f"{min(ratios):.2f}-{max(ratios):.2f})")
    print(f"tuning: {tuned.points:,} weight points over {len(utterances):,} utterances in "
          f"{tune_seconds:.2f} s")
    print("summary:", json.dumps({"benchmark": "N-best rescoring", "reference": "one hypothesis at a time",
                                  "ratio": statistics.median(ratios), "ratio_low": min(ratios),
                                  "ratio_high": max(ratios), "rounds": len(ratios),
                                  "hypotheses_per_s": batched * len(hyps) / all_tokens}))


if __name__ == "__main__":
    main()
