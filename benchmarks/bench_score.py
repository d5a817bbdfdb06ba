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


def incremental_generate(model: RNNLM, tokens: int, seed: int = 0) -> list[int]:
    """The hand-written reference: one step per token with the state carried, the output
    layer on the new position only, `<UNK>` (id 1) masked before the draw."""
    generator = torch.Generator().manual_seed(seed)
    ids, state = [EOS_ID], None
    with torch.inference_mode():
        for _ in range(tokens):
            logits, state = model(torch.tensor([[ids[-1]]]), state)
            logits = logits[0, -1]
            logits[1] = float("-inf")
            ids.append(int(torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)))
    return ids


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
    start = time.perf_counter()
    batched = list(score_sentences(model, tokenizer, sentences, batch_size=args.batch_size))
    batched_rate = len(sentences) / (time.perf_counter() - start)

    count = min(args.single, len(sentences))
    start = time.perf_counter()
    single = [next(iter(score_sentences(model, tokenizer, [s], batch_size=1))) for s in sentences[:count]]
    single_rate = count / (time.perf_counter() - start)
    worst = max(abs(a.logprob - b.logprob) for a, b in zip(batched, single))
    # How far batching can go here: the matrix products' FLOP/s against this machine's
    # float32 matrix-multiply peak, measured now on a large square product.
    flop = model.flops_per_token(training=False) * tokens / len(sentences)  # per sentence
    peak = matmul_peak()
    print(f"\nscoring   batched (batch {args.batch_size}): {batched_rate:>9,.0f} sentences/s, "
          f"{batched_rate * flop / 1e9:.0f} GFLOP/s = {batched_rate * flop / peak:.0%} of the float32 peak")
    print(f"          one at a time:      {single_rate:>9,.0f} sentences/s, "
          f"{single_rate * flop / 1e9:.0f} GFLOP/s = {single_rate * flop / peak:.0%} (timed on {count:,})")
    print(f"          ratio batched / one at a time: {batched_rate / single_rate:.1f}x; "
          f"largest difference {worst:.2e} nats")
    print(f"          float32 matrix-multiply peak {peak / 1e9:.0f} GFLOP/s (2048 x 2048 x 2048, "
          f"{torch.get_num_threads()} threads): at that peak batched would be "
          f"{peak / (single_rate * flop):.1f}x one at a time")
    assert worst < 1e-5, "batched and single scores disagree"
    print("summary:", json.dumps({"benchmark": "scoring", "reference": "one sentence at a time",
                                  "ratio": batched_rate / single_rate,
                                  "sentences_per_s": batched_rate, "tokens_per_s": batched_rate * tokens / len(sentences),
                                  "peak_share": batched_rate * flop / peak,
                                  "ceiling": peak / (single_rate * flop)}))

    print("\ngeneration, one sample, ms per token:")
    config = SamplingConfig(max_tokens=1, lines=10**9)
    for tokens in (50, 1000):
        config.max_tokens = tokens
        generate(model, tokenizer, config=SamplingConfig(max_tokens=5, lines=10**9), seed=0)
        start = time.perf_counter()
        (sample,) = generate(model, tokenizer, config=config, seed=0)
        carried = (time.perf_counter() - start) * 1000 / len(sample.token_ids)
        # As many tokens as lmcli drew (a sample may end early at a stop).
        start = time.perf_counter()
        incremental_generate(model, len(sample.token_ids))
        by_hand = (time.perf_counter() - start) * 1000 / len(sample.token_ids)
        print(f"  {tokens:>5} tokens: lmcli {carried:6.2f} ms/token; hand-written incremental loop "
              f"{by_hand:6.2f} ms/token; ratio {by_hand / carried:.2f}x")
        print("summary:", json.dumps({"benchmark": f"generation, {tokens} tokens",
                                      "reference": "hand-written incremental loop (state carried)",
                                      "ratio": by_hand / carried, "ms_per_token": carried}))

    samples = args.samples
    print(f"\nmany samples: {samples} samples of 50 tokens")
    config = SamplingConfig(max_tokens=50, lines=10**9)
    start = time.perf_counter()
    batch = generate(model, tokenizer, num_samples=samples, config=config, seed=0)
    batched = samples / (time.perf_counter() - start)
    assert all(len(sample.token_ids) == 50 for sample in batch)
    start = time.perf_counter()
    for i in range(samples):
        generate(model, tokenizer, config=config, seed=i)
    single = samples / (time.perf_counter() - start)
    print(f"  one batch: {batched:8,.1f} samples/s; one sample at a time: {single:8,.1f} samples/s; "
          f"ratio {batched / single:.1f}x")
    print("summary:", json.dumps({"benchmark": f"sampling {samples} x 50 tokens",
                                  "reference": "one sample at a time", "ratio": batched / single,
                                  "tokens_per_s": batched * 50}))


if __name__ == "__main__":
    main()
