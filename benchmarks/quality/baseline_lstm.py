"""The classic baseline, written out plainly: PyTorch's word_language_model example.

Its defaults: a 2-layer LSTM of 200 units, embedding 200, dropout 0.2, untied weights; SGD
with learning rate 20 applied by hand, divided by 4 whenever the validation loss does
not improve after an epoch; gradient-norm clipping 0.25; BPTT 35; batch 20; the hidden
state carried across batches; `<eos>` after every line. The only change: training stops
when --minutes of wall time have passed (checked after every batch), and the model with
the best validation loss so far is the one evaluated.

--level char (default word) trains the same model on characters instead: each line is the
sequence of its characters, spaces included, then `<eos>`; a "plain 2-layer LSTM" reference
for character-level models.

Evaluation streams the test text in order with the state carried across lines: one lane
(the whole file as one sequence, as `lmcli eval --stream` does), and, for reference, the
example's own 10 parallel lanes. Perplexity counts every `<eos>`. (test_ppl_stream keeps
the example's convention: the file's first token is context, not scored.)

Bits per character, at both levels, score every token of the file from a leading `<eos>`
(as `lmcli eval --stream` does): total nats / ln 2 / characters, where the characters are
sum(len(line) + 1) over the lines, each line end counting as one (at char level, the token
count). test_bpc_stream is over the test file; valid_bpc the same over the validation file.

    python benchmarks/quality/baseline_lstm.py --data benchmarks/.cache/quality --minutes 15
    python benchmarks/quality/baseline_lstm.py --data benchmarks/.cache/quality --level char
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F


def read(path: Path, vocab: dict[str, int], grow: bool, level: str = "word") -> torch.Tensor:
    ids = []
    for line in path.read_text(encoding="utf-8").splitlines():
        for word in (line.split() if level == "word" else list(line)) + ["<eos>"]:
            if word not in vocab:
                if not grow:
                    raise SystemExit(f"{path}: {word!r} is not in the training vocabulary")
                vocab[word] = len(vocab)
            ids.append(vocab[word])
    return torch.tensor(ids, dtype=torch.long)


def batchify(data: torch.Tensor, lanes: int) -> torch.Tensor:
    steps = data.size(0) // lanes
    return data[: steps * lanes].view(lanes, -1).t().contiguous()  # (time, lanes)


class RNNModel(nn.Module):
    def __init__(self, vocab: int, embed: int = 200, hidden: int = 200, layers: int = 2,
                 dropout: float = 0.2) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(vocab, embed)
        self.rnn = nn.LSTM(embed, hidden, layers, dropout=dropout)
        self.decoder = nn.Linear(hidden, vocab)
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
        self.layers, self.hidden = layers, hidden

    def forward(self, x, hidden):
        output, hidden = self.rnn(self.drop(self.encoder(x)), hidden)
        return self.decoder(self.drop(output)), hidden

    def init_hidden(self, lanes: int):
        return (torch.zeros(self.layers, lanes, self.hidden), torch.zeros(self.layers, lanes, self.hidden))


def count_chars(path: Path) -> int:
    """Characters of a text file, each line end counting as one."""
    return sum(len(line) + 1 for line in path.read_text(encoding="utf-8").splitlines())


def evaluate(model: RNNModel, data: torch.Tensor, bptt: int = 35) -> float:
    total, count = total_loss(model, data, bptt)
    return total / count


def total_loss(model: RNNModel, data: torch.Tensor, bptt: int = 35) -> tuple[float, int]:
    """Summed nats over every prediction in `data` (time, lanes), and how many there were."""
    model.eval()
    total, count = 0.0, 0
    hidden = model.init_hidden(data.size(1))
    with torch.no_grad():
        for i in range(0, data.size(0) - 1, bptt):
            seq = min(bptt, data.size(0) - 1 - i)
            x, y = data[i:i + seq], data[i + 1:i + 1 + seq]
            output, hidden = model(x, hidden)
            total += F.cross_entropy(output.view(-1, output.size(-1)), y.reshape(-1), reduction="sum").item()
            count += y.numel()
    return total, count


def stream_bits_per_char(model: RNNModel, ids: torch.Tensor, eos: int, chars: int) -> float:
    """One lane from a leading <eos>, so that every token of the file is scored."""
    stream = torch.cat([torch.tensor([eos]), ids])
    total, count = total_loss(model, batchify(stream, 1), bptt=256)
    assert count == len(ids)
    return total / math.log(2) / chars


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--level", choices=["word", "char"], default="word",
                        help="tokens: words (split on spaces) or characters")
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--seed", type=int, default=1111)
    parser.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    parser.add_argument("--amp", action="store_true",
                        help="training's forward pass under bf16 autocast, as `lmcli train` runs "
                             "where the CPU multiplies bf16 natively (evaluation stays fp32, as "
                             "`lmcli eval`)")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    vocab: dict[str, int] = {}
    train = batchify(read(args.data / "train.txt", vocab, grow=True, level=args.level), 20)
    valid_ids = read(args.data / "valid.txt", vocab, grow=False, level=args.level)
    test_ids = read(args.data / "test.txt", vocab, grow=False, level=args.level)
    model = RNNModel(len(vocab))
    lr, clip, bptt = 20.0, 0.25, 35
    best_loss, best_model = math.inf, copy.deepcopy(model)
    start = time.perf_counter()
    budget = args.minutes * 60
    epoch = 0
    curve = []
    out_of_time = False
    tokens_seen, train_seconds = 0, 0.0
    while not out_of_time:
        epoch += 1
        epoch_start = time.perf_counter()
        model.train()
        hidden = model.init_hidden(20)
        for i in range(0, train.size(0) - 1, bptt):
            seq = min(bptt, train.size(0) - 1 - i)
            x, y = train[i:i + seq], train[i + 1:i + 1 + seq]
            hidden = tuple(h.detach() for h in hidden)
            model.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.amp):
                output, hidden = model(x, hidden)
                loss = F.cross_entropy(output.view(-1, len(vocab)), y.reshape(-1))
            hidden = tuple(h.float() for h in hidden)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            for p in model.parameters():
                p.data.add_(p.grad, alpha=-lr)
            tokens_seen += y.numel()
            if time.perf_counter() - start >= budget:
                out_of_time = True
                break
        train_seconds += time.perf_counter() - epoch_start
        valid_loss = evaluate(model, batchify(valid_ids, 10))
        elapsed = time.perf_counter() - start
        curve.append({"epoch": epoch, "seconds": round(elapsed, 1), "valid_ppl": math.exp(valid_loss)})
        print(f"epoch {epoch} ({elapsed:.0f} s): valid ppl {math.exp(valid_loss):.2f}, lr {lr:g}", flush=True)
        if valid_loss < best_loss:
            best_loss, best_model = valid_loss, copy.deepcopy(model)
        else:
            lr /= 4.0
    names = {"word": "baseline: PyTorch word_language_model defaults (LSTM 2x200, SGD lr 20)",
             "char": "plain char LSTM: word_language_model defaults on characters (LSTM 2x200, SGD lr 20)"}
    eos = vocab["<eos>"]
    test_file, valid_file = args.data / "test.txt", args.data / "valid.txt"
    result = {
        "model": names[args.level],
        "level": args.level,
        "minutes": args.minutes,
        "seed": args.seed,
        "precision": "bf16 autocast (training)" if args.amp else "fp32",
        "epochs": epoch,
        "valid_ppl_10_lanes": math.exp(best_loss),
        "test_ppl_stream": math.exp(evaluate(best_model, batchify(test_ids, 1), bptt=256)),
        "test_ppl_10_lanes": math.exp(evaluate(best_model, batchify(test_ids, 10))),
        "test_bpc_stream": stream_bits_per_char(best_model, test_ids, eos, count_chars(test_file)),
        "valid_bpc": stream_bits_per_char(best_model, valid_ids, eos, count_chars(valid_file)),
        "test_tokens": len(test_ids),
        "train_tokens_seen": tokens_seen,
        "tokens_per_second": tokens_seen / max(train_seconds, 1e-9),
        "curve": curve,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
