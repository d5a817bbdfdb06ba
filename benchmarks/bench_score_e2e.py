"""`lmcli score` and `lmcli rerank` end to end, as a user runs them, against the matmul peak.

The whole command is timed as a child process (`python -m lmcli score -c CKPT --file F
--json`, stdout to a file), and the same command on a one-line file is timed too and
subtracted: what remains is reading, tokenizing, batching, the network and writing JSON,
without the interpreter's start, the imports and the checkpoint load. That rate, in FLOP/s
of the model's matrix products (`RNNLM.flops_per_token(training=False)` times the tokens
scored, `<EOS>` included), is compared with the float32 matrix-multiply peak measured in
the same run on the same threads, and with the library's scorer called in this process on
the same sentences (no reading, no writing): the share the command keeps of it.

The model is a word-level LSTM 2x200 with a full softmax over the quality corpus's 10,000
words (random weights: speed does not depend on what they learned); the sentences are the
first lines of its test and validation files, the N-best lists are each of those sentences
with nine confusions (bench_rerank.py's). Needs benchmarks/quality/prepare.py run first.

    python benchmarks/bench_score_e2e.py
    python benchmarks/bench_score_e2e.py --sentences 2000 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_rerank import confusions  # noqa: E402
from bench_score import matmul_peak  # noqa: E402

from lmcli import checkpoint as ckpt  # noqa: E402
from lmcli.model import RNNLM, ModelConfig  # noqa: E402
from lmcli.scoring import score_sentences  # noqa: E402
from lmcli.vocabulary import build_tokenizer  # noqa: E402

DATA = REPO / "benchmarks" / ".cache" / "quality"


def save_model(folder: Path, train_text: str, hidden: int, layers: int) -> tuple[Path, RNNLM, object]:
    tokenizer = build_tokenizer("word", [train_text], min_freq=1)
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=tokenizer.vocab_size, cell="lstm", layers=layers, embed_dim=hidden,
                         hidden_dim=hidden, dropout=0.0, softmax="full")
    model = RNNLM(config).eval()
    payload = ckpt.make_payload(model=model, tokenizer=tokenizer, model_config=config,
                                data_config={"level": "word"}, train_config={}, step=0, epoch=0,
                                tokens_seen=0, metrics=[], valid_loss=None, provenance={})
    path = folder / "model.pt"
    ckpt.save(payload, path)
    return path, model, tokenizer


def timed_command(args: list[str], out: Path) -> float:
    """Wall seconds of `python -m lmcli ARGS > out`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    with open(out, "wb") as handle:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "lmcli", *args], stdout=handle, env=env, check=True)
        return time.perf_counter() - start


def write_nbest(path: Path, sentences: list[str], hyps: int) -> int:
    rng = random.Random(0)
    count = 0
    with open(path, "w", encoding="utf-8") as handle:
        for index, ref in enumerate(sentences):
            texts = [ref] + confusions(ref.split(), hyps - 1, rng)
            handle.write(json.dumps({"id": f"u{index}", "ref": ref, "hyps": [
                {"text": text, "am_score": rng.gauss(-50, 3)} for text in texts]}) + "\n")
            count += len(texts)
    return count


def share_line(name: str, rounds: list[dict[str, float]], tokens: int, flop: float, items: str,
               count: int) -> dict[str, float] | None:
    """Print one command's figures over the rounds (median, and the range of its share of
    the peak); its summary for run_all.py, or None when the work is too small to tell."""
    whole = statistics.median(r["whole"] for r in rounds)
    startup = statistics.median(r["one"] for r in rounds)
    if whole - startup < 0.25 * startup:
        print(f"{name:<8} {count:,} {items}: whole command {whole:.2f} s, one-line command "
              f"{startup:.2f} s: too little work to tell from the start-up; give more")
        return None
    shares = [tokens * flop / (r["whole"] - r["one"]) / r["peak"] for r in rounds]
    work = whole - startup
    print(f"{name:<8} {count:,} {items}, {tokens:,} tokens: whole command {whole:.2f} s, one-line "
          f"command {startup:.2f} s, difference {work:.2f} s = {tokens / work:,.0f} tokens/s; "
          f"{statistics.median(shares):.0%} of the peak (rounds {min(shares):.0%}-{max(shares):.0%})")
    summary = {"benchmark": f"`lmcli {name}` end to end, process start subtracted",
               "reference": "float32 matmul peak, same run", "tokens_per_s": tokens / work,
               "peak_share": statistics.median(shares), "peak_share_low": min(shares),
               "peak_share_high": max(shares)}
    if "library" in rounds[0]:
        library = [tokens * flop / r["library"] / r["peak"] for r in rounds]
        print(f"{'':<8} the library's scorer in-process, same sentences: {statistics.median(library):.0%} "
              f"of the peak (rounds {min(library):.0%}-{max(library):.0%})")
        summary["library_peak_share"] = statistics.median(library)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="the quality corpus (prepare.py)")
    parser.add_argument("--sentences", type=int, default=2000)
    parser.add_argument("--utterances", type=int, default=200, help="N-best lists for rerank")
    parser.add_argument("--hyps", type=int, default=10)
    parser.add_argument("--hidden-dim", type=int, default=200)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="rounds (each: peak, library, commands)")
    args = parser.parse_args()
    if not (args.data / "train.txt").exists():
        raise SystemExit(f"no corpus in {args.data}: run python benchmarks/quality/prepare.py first")
    lines = [line for name in ("test.txt", "valid.txt")
             for line in (args.data / name).read_text(encoding="utf-8").splitlines() if line.strip()]
    sentences = lines[: args.sentences]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path, model, tokenizer = save_model(folder, (args.data / "train.txt").read_text(encoding="utf-8"),
                                            args.hidden_dim, args.layers)
        flop = model.flops_per_token(training=False)
        (folder / "all.txt").write_text("\n".join(sentences) + "\n", encoding="utf-8")
        (folder / "one.txt").write_text(sentences[0] + "\n", encoding="utf-8")
        hyps = write_nbest(folder / "nbest.jsonl", lines[: args.utterances], args.hyps)
        write_nbest(folder / "one.jsonl", lines[:1], 1)
        nbest_texts = [json.loads(line) for line in (folder / "nbest.jsonl").read_text().splitlines()]
        distinct = sorted({h["text"] for u in nbest_texts for h in u["hyps"]})
        print(f"word lstm {args.layers}x{args.hidden_dim}, full softmax, vocabulary {tokenizer.vocab_size:,}, "
              f"{torch.get_num_threads()} threads; {args.repeats} rounds, medians")

        list(score_sentences(model, tokenizer, sentences[:200]))  # warm up
        tokens = sum(len(tokenizer.encode(s)) + 1 for s in sentences)
        # rerank scores each distinct text once: its tokens are those of the distinct texts.
        rerank_tokens = sum(len(tokenizer.encode(t)) + 1 for t in distinct)
        score = ["score", "-c", str(path), "--json", "--file"]
        rerank = ["rerank", "-c", str(path), "--json"]
        scores, reranks = [], []
        # Each round measures the peak too: the CPU's clock moves between rounds, and each
        # share is taken against the peak of its own round.
        for _ in range(args.repeats):
            peak = matmul_peak()
            start = time.perf_counter()
            list(score_sentences(model, tokenizer, sentences))
            library = time.perf_counter() - start
            scores.append({"peak": peak, "library": library,
                           "whole": timed_command(score + [str(folder / "all.txt")], folder / "out.jsonl"),
                           "one": timed_command(score + [str(folder / "one.txt")], folder / "one.out")})
            reranks.append({"peak": peak,
                            "whole": timed_command(rerank + [str(folder / "nbest.jsonl")], folder / "rr.jsonl"),
                            "one": timed_command(rerank + [str(folder / "one.jsonl")], folder / "rr1.jsonl")})
        assert len((folder / "out.jsonl").read_text().splitlines()) == len(sentences)
        peaks = [r["peak"] for r in scores]
        print(f"float32 matrix-multiply peak {statistics.median(peaks) / 1e9:.0f} GFLOP/s (2048 x 2048 x 2048; "
              f"rounds {min(peaks) / 1e9:.0f}-{max(peaks) / 1e9:.0f})")
        for summary in (share_line("score", scores, tokens, flop, "sentences", len(sentences)),
                        share_line("rerank", reranks, rerank_tokens, flop, "hypotheses", hyps)):
            if summary is not None:
                print("summary:", json.dumps(summary))

if __name__ == "__main__":
    main()
