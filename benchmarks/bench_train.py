"""Training throughput: `lmcli train` against a hand-written PyTorch loop of the same shape.

Both run on the same corpus, with the same model (embedding -> nn.LSTM/GRU -> linear),
batch size, BPTT length, dropout, Adam and gradient clipping, each in a fresh process,
alternating, several rounds. lmcli's figure is the one its own `--json` output reports
(tokens over the wall time of the training session, checkpoint saves included); the hand
loop's is tokens over the wall time of its steps. Printed: medians, and the median of the per-round ratios.

    python benchmarks/bench_train.py                       # bundled KJV, word-level GRU
    python benchmarks/bench_train.py --corpus kjv_full.txt --rounds 3
    python benchmarks/bench_train.py --corpus corpora/tang_poems.txt --level char --cell lstm
    python benchmarks/bench_train.py --compile              # also lmcli train --compile
    python benchmarks/bench_train.py --gpu-target           # issue 6's GPU shape, on CUDA

`--gpu-target` is the shape of the GPU target: LSTM 2x1024, embedding 1024, a 10k
vocabulary (a Zipf-distributed synthetic corpus), batch 64, BPTT 128, on `cuda`. lmcli
trains with `--amp` (and its fused optimiser, pinned non-blocking copies); the hand loop is
the same model under the same bf16 autocast, so both sides do their products in the same
precision; the share of the GPU's dense bf16 peak is printed from lmcli's own FLOP count.

Not part of the test suite: timings depend on the machine and on what else it is doing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def hand_loop(args: argparse.Namespace) -> float:
    """The reference: pytorch/examples word_language_model style, written out by hand."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    sys.path.insert(0, str(REPO))
    from lmcli.corpus import DataConfig, load_corpus

    data = load_corpus([args.corpus], DataConfig(level=args.level, min_freq=args.min_freq,
                                                 vocab_size=args.vocab_size, valid_fraction=0.0))
    vocab = data.tokenizer.vocab_size
    device = torch.device(args.device)
    torch.manual_seed(0)

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = nn.Embedding(vocab, args.embed_dim)
            rnn = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[args.cell]
            self.rnn = rnn(args.embed_dim, args.hidden_dim, args.layers, dropout=args.dropout,
                           batch_first=True)
            self.drop = nn.Dropout(args.dropout)
            self.decoder = nn.Linear(args.hidden_dim, vocab)

        def forward(self, x, hidden):
            out, hidden = self.rnn(self.drop(self.embedding(x)), hidden)
            return self.decoder(self.drop(out)), hidden

    model = Model().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    tokens = torch.from_numpy(data.train.astype("int64")).to(device)
    lanes = tokens[: len(tokens) // args.batch_size * args.batch_size].view(args.batch_size, -1)
    hidden = None
    steps = 0
    start = time.perf_counter()
    windows = range(0, lanes.shape[1] - 1 - args.seq_len, args.seq_len)
    assert len(windows) > 0, "corpus too short for one window"
    # Epoch after epoch until warm-up + timed steps are done, as `lmcli train --max-steps`
    # does (a short corpus used to end the loop early while the rate still divided by
    # all the steps asked for).
    while steps < args.warmup + args.steps:
        for i in windows:
            if steps == args.warmup:
                start = time.perf_counter()
            x = lanes[:, i:i + args.seq_len]
            y = lanes[:, i + 1:i + 1 + args.seq_len]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
                logits, hidden = model(x, hidden)
                loss = F.cross_entropy(logits.reshape(-1, vocab).float(), y.reshape(-1))
            hidden = (tuple(h.detach().float() for h in hidden) if isinstance(hidden, tuple)
                      else hidden.detach().float())
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            steps += 1
            if steps == args.warmup + args.steps:
                break
        hidden = None  # a new epoch starts from a zero state, as in lmcli
    loss.item()
    return args.steps * args.batch_size * args.seq_len / (time.perf_counter() - start)


def lmcli_run(args: argparse.Namespace, compile_step: bool = False) -> tuple[float, float, float, float | None]:
    """lmcli's steady tokens/s, its tokens/s over the whole session, the seconds to the end
    of the first step (for --compile, the compiling), and the steady rate's share of the
    GPU's dense peak (None on a CPU or a GPU lmcli has no peak for)."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "lmcli", "train", str(args.corpus.resolve()), "--json", "--no-sample",
                   "--level", args.level, "--model", args.cell, "--layers", str(args.layers),
                   "--embed-dim", str(args.embed_dim), "--hidden-dim", str(args.hidden_dim),
                   "--dropout", str(args.dropout), "--no-tie-weights",
                   "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len),
                   "--max-steps", str(args.warmup + args.steps), "--valid-fraction", "0",
                   "--lr", "2e-3", "--clip", "1.0", "--device", args.device, "-o", f"{out}/run",
                   # like for like with the hand loop: Adam, fp32, no extra regularisers
                   "--optimizer", "adam", "--lr-schedule", "plateau", "--warmup", "0",
                   "--dropout-embed", "0", "--weight-drop", "0", "--amp" if args.amp else "--no-amp",
                   # and the same output layer (the word recipes pick an adaptive softmax)
                   "--softmax", "full",
                   # and the same work: windows of the running text throughout, as the hand loop
                   # reads it (the word recipes end on padded sentence batches, fewer targets a step)
                   "--batching", "stream", "--sentence-phase", "0"]
        if compile_step:
            command.append("--compile")
        if args.min_freq is not None:
            command += ["--min-freq", str(args.min_freq)]
        if args.vocab_size is not None:
            command += ["--vocab-size", str(args.vocab_size)]
        result = subprocess.run(command, capture_output=True, text=True, cwd=out,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        if result.returncode != 0:
            raise SystemExit(f"lmcli train failed:\n{result.stderr}")
        events = [json.loads(line) for line in result.stdout.splitlines()]
        progress = [e for e in events if e["event"] == "progress"]
        finished = next(e for e in events if e["event"] == "finished")
        # Steady state, as the progress bar shows it: from the first report after the
        # warm-up steps to the last one (the hand loop also skips its warm-up steps).
        first = next((e for e in progress if e["step"] >= args.warmup), progress[-1])
        last = progress[-1]
        tokens = (last["step"] - first["step"]) * args.batch_size * args.seq_len
        if last["elapsed"] - first["elapsed"] < 1.0:
            raise SystemExit(f"lmcli trained {args.steps} steps in under a second of progress "
                             "reports (one every 0.5 s): too short to time; raise --steps")
        steady = tokens / (last["elapsed"] - first["elapsed"])
        started = next(e for e in events if e["event"] == "started")
        share = None
        if finished.get("peak_share"):
            peak = finished["achieved_flops"] / finished["peak_share"]
            share = steady * started["flops_per_token"] / peak
        return steady, float(finished["tokens_per_second"]), float(progress[0]["elapsed"]), share


def synthetic_corpus(vocab: int, tokens: int) -> Path:
    """A corpus of ``tokens`` words over ``vocab`` types with Zipf frequencies (p ~ 1/rank),
    lines of 20 words; made once per shape in the temp folder, so every process of a run
    (and the next run) reads the same file."""
    path = Path(tempfile.gettempdir()) / f"lmcli-bench-zipf-{vocab}-{tokens}.txt"
    if not path.exists():
        import numpy as np

        ranks = np.arange(1, vocab + 1)
        ids = np.random.default_rng(0).choice(vocab, size=tokens, p=(1 / ranks) / (1 / ranks).sum())
        words = np.array([f"w{i}" for i in range(vocab)])[ids].reshape(-1, 20)
        partial = path.with_suffix(f".{os.getpid()}.part")
        partial.write_text("\n".join(" ".join(line) for line in words) + "\n", encoding="utf-8")
        partial.replace(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=REPO / "corpora" / "kjv_poetry.txt")
    parser.add_argument("--level", default="word")
    parser.add_argument("--cell", default="gru")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--embed-dim", type=int, default=256)
    parser.add_argument("--hidden-dim", type=int, default=256)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=35)
    parser.add_argument("--min-freq", type=int, default=2)
    parser.add_argument("--vocab-size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (both contenders)")
    parser.add_argument("--amp", action="store_true", help="both train under bf16 autocast (lmcli --amp)")
    parser.add_argument("--synthetic-vocab", type=int, default=None,
                        help="train on a Zipf corpus of this many word types instead of --corpus")
    parser.add_argument("--synthetic-tokens", type=int, default=2_000_000)
    parser.add_argument("--gpu-target", action="store_true",
                        help="issue 6's GPU shape: LSTM 2x1024, embed 1024, vocab 10k, batch 64, BPTT 128, "
                             "cuda, lmcli with --amp (flags given after it still apply)")
    parser.add_argument("--compile", action="store_true",
                        help="also run lmcli train --compile each round, and compare it with lmcli eager")
    parser.add_argument("--only-hand", action="store_true", help=argparse.SUPPRESS)
    if "--gpu-target" in sys.argv[1:]:
        parser.set_defaults(cell="lstm", embed_dim=1024, hidden_dim=1024, batch_size=64, seq_len=128,
                            synthetic_vocab=10_000, synthetic_tokens=4_000_000, min_freq=1, device="cuda",
                            amp=True, steps=600)
    args = parser.parse_args()
    if args.synthetic_vocab:
        args.corpus, args.level = synthetic_corpus(args.synthetic_vocab, args.synthetic_tokens), "word"
    if args.only_hand:
        print(hand_loop(args))
        return
    hand, ours, whole, first, shares = [], [], [], [], []
    compiled, compiled_first = [], []
    for round_ in range(args.rounds):
        reference = subprocess.run([sys.executable, __file__, "--only-hand", *sys.argv[1:]],
                                   capture_output=True, text=True, check=True)
        hand.append(float(reference.stdout.strip().splitlines()[-1]))
        steady, session, seconds, share = lmcli_run(args)
        shares.append(share)
        ours.append(steady)
        whole.append(session)
        first.append(seconds)
        extra = ""
        if args.compile:
            steady, _, seconds, _ = lmcli_run(args, compile_step=True)
            compiled.append(steady)
            compiled_first.append(seconds)
            extra = f", lmcli train --compile {steady:,.0f} tok/s (first step at {seconds:.1f} s)"
        print(f"round {round_ + 1}: hand-written {hand[-1]:,.0f} tok/s, lmcli train {ours[-1]:,.0f} "
              f"tok/s ({session:,.0f} over the whole session){extra}", flush=True)
    h, o = statistics.median(hand), statistics.median(ours)
    # Each round runs the two back to back, so its ratio compares them under the same
    # machine conditions; the median of those ratios is the headline figure.
    paired = statistics.median(mine / theirs for mine, theirs in zip(ours, hand))
    print(f"\n{args.cell} {args.layers}x{args.hidden_dim}, embed {args.embed_dim}, "
          f"{args.level} level, batch {args.batch_size} x {args.seq_len}, {args.steps} steps, "
          f"{os.cpu_count()} CPUs, torch threads default, device {args.device}, "
          f"lmcli {'--amp' if args.amp else 'fp32'}, hand loop {'bf16 autocast' if args.amp else 'fp32'}, "
          "both on the running text (stream batches, full softmax, every target a real token)"
          + (f", synthetic Zipf corpus of {args.synthetic_vocab:,} types" if args.synthetic_vocab else ""))
    print(f"hand-written loop  {h:>10,.0f} tok/s (median of {args.rounds})")
    print(f"lmcli train        {o:>10,.0f} tok/s (median of {args.rounds}; whole session "
          f"incl. warm-up and final save: {statistics.median(whole):,.0f})")
    print(f"ratio lmcli / hand {paired:>10.3f} (median of the {args.rounds} paired rounds; "
          f"ratio of medians {o / h:.3f})")
    ratios = [mine / theirs for mine, theirs in zip(ours, hand)]
    summary = {"benchmark": "training", "reference": "hand-written PyTorch loop, same work",
               "ratio": paired, "ratio_low": min(ratios), "ratio_high": max(ratios), "rounds": len(ratios),
               "tokens_per_s": o, "reference_tokens_per_s": h}
    if all(share is not None for share in shares):
        share = statistics.median(shares)
        print(f"lmcli's share of the GPU's dense {'bf16' if args.amp else 'fp32'} peak {share:.1%} "
              "(steady rate x lmcli's model FLOPs per token)")
        summary["gpu_peak_share"] = share
    if args.compile:
        c = statistics.median(compiled)
        gain = statistics.median(mine / theirs for mine, theirs in zip(compiled, ours))
        cost = statistics.median(c_first - e_first for c_first, e_first in zip(compiled_first, first))
        print(f"lmcli --compile    {c:>10,.0f} tok/s (median of {args.rounds}); against lmcli eager "
              f"{gain:.3f}x (median of the paired rounds), the first step {cost:.1f} s later")
        summary.update(compiled_tokens_per_s=c, compiled_ratio=gain, compile_seconds=cost)
    print("summary:", json.dumps(summary))


if __name__ == "__main__":
    main()
