"""Big vocabularies: the adaptive softmax against the full softmax, speed and perplexity.

1. Speed. One training step (forward, backward, SGD update) of the same LSTM language model
   with a full softmax and with lmcli's adaptive softmax (default clusters), on token streams
   drawn from a Zipf law (exponent 1.0, the shape of word frequencies in text) over
   vocabularies of 10k, 100k and 250k words; then scoring (exact log-probabilities of the
   targets, what `score` and `eval` compute). Printed: tokens/s and the ratio.
2. Perplexity cost. `lmcli train` on a real corpus for the same number of steps with each
   output layer (same seed, same data, same everything else), then the validation
   perplexity each reaches, scored sentence by sentence as `lmcli eval` does.

    python benchmarks/bench_softmax.py
    python benchmarks/bench_softmax.py --vocabs 10000 100000 --steps 1500 --corpus kjv.txt

Timings use the threads torch is given (set OMP_NUM_THREADS to pin them) and the precision
lmcli would use (bf16 autocast where the CPU has it natively).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lmcli.corpus import DataConfig  # noqa: E402
from lmcli.devices import autocast, native_bf16  # noqa: E402
from lmcli.model import RNNLM, ModelConfig  # noqa: E402
from lmcli.train import RunRequest, TrainConfig, start_run  # noqa: E402


def zipf_stream(vocab: int, count: int, seed: int = 0) -> torch.Tensor:
    ranks = np.arange(1, vocab + 1, dtype=np.float64)
    p = 1.0 / ranks
    p /= p.sum()
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.choice(vocab, size=count, p=p).astype(np.int64))


def step_rate(model: RNNLM, stream: torch.Tensor, batch: int, seq: int, steps: int, amp: bool
              ) -> tuple[float, float]:
    """(training tokens/s, scoring tokens/s) over ``steps`` windows after 3 warm-up ones."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    windows = stream[: (steps + 3) * batch * (seq + 1)].view(steps + 3, batch, seq + 1)
    device = torch.device("cpu")
    model.train()
    for i, window in enumerate(windows):
        if i == 3:
            start = time.perf_counter()
        with autocast(device, amp):
            features, _, _ = model.hidden_features(window[:, :-1])
            loss = -model.target_log_probs(features, window[:, 1:]).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    train = steps * batch * seq / (time.perf_counter() - start)
    model.eval()
    with torch.no_grad():
        for i, window in enumerate(windows):
            if i == 3:
                start = time.perf_counter()
            with autocast(device, amp):
                features, _, _ = model.hidden_features(window[:, :-1])
                model.target_log_probs(features, window[:, 1:]).sum().item()
    score = steps * batch * seq / (time.perf_counter() - start)
    return train, score


def speed(args: argparse.Namespace, amp: bool) -> None:
    print(f"speed: LSTM {args.layers}x{args.hidden}, embedding {args.hidden}, batch {args.batch} x "
          f"{args.seq} tokens, {torch.get_num_threads()} thread(s), {'bf16' if amp else 'fp32'}")
    print(f"{'vocabulary':>10}  {'clusters':<20} {'train full':>11} {'adaptive':>10} {'ratio':>6}   "
          f"{'score full':>11} {'adaptive':>10} {'ratio':>6}")
    for vocab in args.vocabs:
        stream = zipf_stream(vocab, (args.steps + 3) * args.batch * (args.seq + 1))
        rates = {}
        for softmax in ("full", "adaptive"):
            torch.manual_seed(0)
            config = ModelConfig(vocab_size=vocab, layers=args.layers, embed_dim=args.hidden,
                                 hidden_dim=args.hidden, dropout=0.0, softmax=softmax)
            rates[softmax] = (step_rate(RNNLM(config), stream, args.batch, args.seq, args.steps, amp),
                              config.cutoffs)
        (full_train, full_score), _ = rates["full"]
        (ada_train, ada_score), cutoffs = rates["adaptive"]
        print(f"{vocab:>10,}  {','.join(map(str, cutoffs or [])):<20} {full_train:>9,.0f}/s "
              f"{ada_train:>8,.0f}/s {ada_train / full_train:>5.2f}x   {full_score:>9,.0f}/s "
              f"{ada_score:>8,.0f}/s {ada_score / full_score:>5.2f}x", flush=True)
        print("summary:", json.dumps({"benchmark": f"adaptive softmax training, {vocab:,} words",
                                      "reference": "full softmax", "ratio": ada_train / full_train,
                                      "tokens_per_s": ada_train}), flush=True)


def quality(args: argparse.Namespace) -> None:
    corpus = args.corpus
    print(f"\nperplexity cost: `lmcli train {corpus.name} --level word` for {args.train_steps} steps "
          f"each, LSTM 2x200, SGD lr 20, batch 20 x 35, seed 1; validation perplexity, sentence level")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for softmax in ("full", "adaptive"):
            request = RunRequest(
                corpus=[str(corpus)],
                data=DataConfig(level="word", min_freq=1, vocab_size=args.train_vocab, valid_fraction=0.05,
                                valid_file=str(args.valid) if args.valid else None),
                model={"cell": "lstm", "layers": 2, "embed_dim": 200, "hidden_dim": 200, "dropout": 0.2,
                       "softmax": softmax, "cutoffs": args.cutoffs},
                train=TrainConfig(seq_len=35, batch_size=20, epochs=None, max_steps=args.train_steps,
                                  optimizer="sgd", lr=20.0, clip=0.25, lr_schedule="cosine", seed=1,
                                  device="cpu", eval_every=args.train_steps),
                out_dir=Path(tmp) / softmax)
            start = time.perf_counter()
            finished = start_run(request, root=Path(tmp) / "ck")
            seconds = time.perf_counter() - start
            results[softmax] = (math.exp(finished.best_valid_loss), seconds)
            print(f"{softmax:>9}: validation perplexity {results[softmax][0]:.2f} "
                  f"in {seconds:.0f} s of training", flush=True)
    (full, full_s), (adaptive, adaptive_s) = results["full"], results["adaptive"]
    print(f"adaptive against full at equal steps: perplexity {100 * (adaptive / full - 1):+.1f}%, "
          f"time {full_s / adaptive_s:.2f}x less")
    print("summary:", json.dumps({"benchmark": "adaptive softmax, perplexity at equal steps",
                                  "reference": "full softmax", "ratio": adaptive / full,
                                  "perplexity": adaptive, "reference_perplexity": full}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocabs", type=int, nargs="+", default=[10_000, 100_000, 250_000])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=35)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--no-amp", action="store_true", help="fp32 even where bf16 is native")
    parser.add_argument("--corpus", type=Path,
                        default=REPO / "benchmarks" / ".cache" / "quality" / "train.txt",
                        help="word-level training text for the perplexity cost (default: the "
                             "quality benchmark's, from benchmarks/quality/prepare.py)")
    parser.add_argument("--valid", type=Path, default=None)
    parser.add_argument("--train-vocab", type=int, default=None)
    parser.add_argument("--cutoffs", type=int, nargs="+", default=None)
    parser.add_argument("--train-steps", type=int, default=1500)
    parser.add_argument("--skip-quality", action="store_true")
    args = parser.parse_args()
    if args.valid is None and args.corpus.name == "train.txt" and (args.corpus.parent / "valid.txt").exists():
        args.valid = args.corpus.parent / "valid.txt"
    speed(args, native_bf16(torch.device("cpu")) and not args.no_amp)
    if not args.skip_quality:
        if not args.corpus.exists():
            sys.exit(f"{args.corpus} is missing: run python benchmarks/quality/prepare.py, or give --corpus")
        quality(args)


if __name__ == "__main__":
    main()
