"""Scoring and generation speed, against references measured in the same run.

1. Scoring N sentences: lmcli's batched, length-sorted scorer against one sentence at a time
   (the same model and code, batch size 1). The results must agree to 1e-5; the ratio is
   printed.
2. Generation: milliseconds per token for 50- and 1,000-token samples, against the loop a
   person would write by hand: one token in, the state carried, the output layer on that
   one position, a softmax and a draw with `<UNK>` masked (the work lmcli must also do;
   lmcli adds its own rules: stops, line counting, no `<UNK>`, the seeded generator).
3. Many samples: ``generate(num_samples=N)`` samples them as one batch, against N calls
   of one sample each (the same seeds' worth of work, 50 tokens each).

    python benchmarks/bench_score.py                      # word-level model on the KJV verses
    python benchmarks/bench_score.py --level char         # the same verses at char level

The model is built with random weights of the requested shape (speed does not depend on
what the weights learned); the sentences are the bundled KJV verses.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lmcli.model import RNNLM, ModelConfig  # noqa: E402
from lmcli.sampling import SamplingConfig, generate  # noqa: E402
from lmcli.scoring import score_sentences  # noqa: E402
from lmcli.tokenizers import EOS_ID  # noqa: E402
from lmcli.vocabulary import build_tokenizer  # noqa: E402


def incremental_generate(model: RNNLM, tokens: int, seed: int = 0) -> tuple[list[int], float]:
    """The hand-written reference: one step per token with the state carried, the output
    layer on the new position only, `<UNK>` (id 1) masked before the draw, and the sample's
    log-probability kept (lmcli reports it too)."""
    generator = torch.Generator().manual_seed(seed)
    ids, state, logprob = [EOS_ID], None, torch.zeros((), dtype=torch.float64)
    with torch.inference_mode():
        for _ in range(tokens):
            logits, state = model(torch.tensor([[ids[-1]]]), state)
            logits = logits[0, -1]
            log_probs = torch.log_softmax(logits, -1)
            masked = logits.clone()
            masked[1] = float("-inf")
            ids.append(int(torch.multinomial(torch.softmax(masked, -1), 1, generator=generator)))
            logprob += log_probs[ids[-1]]
    return ids, float(logprob)


def matmul_peak(size: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of a large float32 matrix product: what this CPU's GEMM reaches at best."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=REPO / "corpora" / "kjv_poetry.txt")
    parser.add_argument("--sentences", type=int, default=10_000)
    parser.add_argument("--level", default="word", choices=["char", "word", "bpe", "unigram"])
    parser.add_argument("--cell", default="lstm")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--embed-dim", type=int, default=256)
    parser.add_argument("--hidden-dim", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--samples", type=int, default=100, help="samples drawn together and one at a time")
    parser.add_argument("--rounds", type=int, default=3, help="times each pair is measured (median and range)")
    parser.add_argument("--single", type=int, default=1000,
                        help="sentences timed one at a time (the rate is extrapolated)")
    args = parser.parse_args()

    lines = args.corpus.read_text(encoding="utf-8").splitlines()
    sentences = list(itertools.islice(itertools.cycle(lines), args.sentences))
    tokenizer = build_tokenizer(args.level, ["\n".join(lines) + "\n"], min_freq=2,
                                vocab_size=4000 if args.level in ("bpe", "unigram") else None)
    torch.manual_seed(0)
    model = RNNLM(ModelConfig(vocab_size=tokenizer.vocab_size, cell=args.cell, layers=args.layers,
                              embed_dim=args.embed_dim, hidden_dim=args.hidden_dim, dropout=0.0)).eval()
    tokens = sum(len(tokenizer.encode(s)) + 1 for s in sentences)
    print(f"{args.level} level, {args.cell} {args.layers}x{args.hidden_dim}, vocabulary "
          f"{tokenizer.vocab_size:,}, {torch.get_num_threads()} threads; {len(sentences):,} "
          f"sentences, {tokens:,} tokens")

    list(score_sentences(model, tokenizer, sentences[:200], batch_size=args.batch_size))  # warm up
    count = min(args.single, len(sentences))
    # Rates in tokens (<EOS> included) of the sentences each side scored: the one-at-a-time
    # side is timed on the first `count` sentences, whose lengths differ from the whole set's.
    single_tokens = sum(len(tokenizer.encode(s)) + 1 for s in sentences[:count])
    flop = model.flops_per_token(training=False)
    peak = matmul_peak()
    batched_rates, single_rates = [], []
    for _ in range(args.rounds):  # the two alternate, so each round's ratio shares its conditions
        batched_rates.append(tokens / timed(lambda: list(score_sentences(
            model, tokenizer, sentences, batch_size=args.batch_size))))
        single_rates.append(single_tokens / timed(lambda: [next(iter(score_sentences(model, tokenizer, [s], batch_size=1)))
                                                           for s in sentences[:count]]))
    batched = list(score_sentences(model, tokenizer, sentences[:count], batch_size=args.batch_size))
    single = [next(iter(score_sentences(model, tokenizer, [s], batch_size=1))) for s in sentences[:count]]
    worst = max(abs(a.logprob - b.logprob) for a, b in zip(batched, single))
    batched_rate, single_rate = statistics.median(batched_rates), statistics.median(single_rates)
    ratios = [b / s for b, s in zip(batched_rates, single_rates)]
    # How far batching can go here: the matrix products' FLOP/s against this machine's
    # float32 matrix-multiply peak, measured now on a large square product.
    print(f"\nscoring   batched (batch {args.batch_size}): {batched_rate:>9,.0f} tokens/s, "
          f"{batched_rate * flop / 1e9:.0f} GFLOP/s = {batched_rate * flop / peak:.0%} of the float32 peak")
    print(f"          one at a time:      {single_rate:>9,.0f} tokens/s, "
          f"{single_rate * flop / 1e9:.0f} GFLOP/s = {single_rate * flop / peak:.0%} (timed on the first "
          f"{count:,} sentences)")
    print(f"          ratio batched / one at a time: {spread_text(ratios)}; largest difference {worst:.2e} nats")
    print(f"          float32 matrix-multiply peak {peak / 1e9:.0f} GFLOP/s (2048 x 2048 x 2048, "
          f"{torch.get_num_threads()} threads): at that peak batched would be "
          f"{peak / (single_rate * flop):.1f}x one at a time")
    assert worst < 1e-5, "batched and single scores disagree"
    print("summary:", json.dumps({"benchmark": "scoring", "reference": "one sentence at a time",
                                  **ratio_fields(ratios), "tokens_per_s": batched_rate,
                                  "peak_share": batched_rate * flop / peak,
                                  "ceiling": peak / (single_rate * flop)}))

    print("\ngeneration, one sample, ms per token:")
    for length in (50, 1000):
        config = SamplingConfig(max_tokens=length, lines=10**9)
        generate(model, tokenizer, config=SamplingConfig(max_tokens=5, lines=10**9), seed=0)
        ours, hand = [], []
        for round_ in range(args.rounds):
            started = time.perf_counter()
            (sample,) = generate(model, tokenizer, config=config, seed=round_)
            ours.append((time.perf_counter() - started) * 1000 / len(sample.token_ids))
            # As many tokens as lmcli drew (a sample may end early at a stop).
            hand.append(timed(lambda: incremental_generate(model, len(sample.token_ids), round_))
                        * 1000 / len(sample.token_ids))
        ratios = [h / o for h, o in zip(hand, ours)]
        print(f"  {length:>5} tokens: lmcli {statistics.median(ours):6.2f} ms/token; hand-written incremental "
              f"loop {statistics.median(hand):6.2f} ms/token; ratio {spread_text(ratios)}")
        print("summary:", json.dumps({"benchmark": f"generation, {length} tokens",
                                      "reference": "hand-written incremental loop (state carried)",
                                      **ratio_fields(ratios), "ms_per_token": statistics.median(ours)}))

    samples = args.samples
    print(f"\nmany samples: {samples} samples of 50 tokens")
    config = SamplingConfig(max_tokens=50, lines=10**9)
    together, apart = [], []
    for _ in range(args.rounds):
        batch: list = []
        together.append(samples / timed(lambda: batch.extend(
            generate(model, tokenizer, num_samples=samples, config=config, seed=0))))
        assert all(len(sample.token_ids) == 50 for sample in batch)
        apart.append(samples / timed(lambda: [generate(model, tokenizer, config=config, seed=i)
                                              for i in range(samples)]))
    ratios = [t / a for t, a in zip(together, apart)]
    print(f"  one batch: {statistics.median(together):8,.1f} samples/s; one sample at a time: "
          f"{statistics.median(apart):8,.1f} samples/s; ratio {spread_text(ratios)}")
    print("summary:", json.dumps({"benchmark": f"sampling {samples} x 50 tokens",
                                  "reference": "one sample at a time", **ratio_fields(ratios),
                                  "tokens_per_s": statistics.median(together) * 50}))


def timed(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def ratio_fields(ratios: list[float]) -> dict[str, float | int]:
    """The median ratio over the rounds and its range, as run_all.py's table shows them."""
    return {"ratio": statistics.median(ratios), "ratio_low": min(ratios), "ratio_high": max(ratios),
            "rounds": len(ratios)}


def spread_text(ratios: list[float]) -> str:
    return f"{statistics.median(ratios):.2f}x (median of {len(ratios)}; {min(ratios):.2f}-{max(ratios):.2f})"

if __name__ == "__main__":
    main()
