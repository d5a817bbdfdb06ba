"""How close ``lmcli train``'s memory estimate (lmcli/train/resources.py) comes to the
peak it measures: three model sizes at word level on the quality corpus, a few steps
each, the peak resident memory of the whole process (ru_maxrss) against the estimate
plus what the process holds besides (the peak of a run with a tiny model, one lane of
one token, on the same corpus, measured in the same run of this script).

    python benchmarks/quality/prepare.py
    python benchmarks/bench_memory.py --write benchmarks/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lmcli.corpus import DataConfig, load_corpus
from lmcli.model import ModelConfig
from lmcli.train import TrainConfig
from lmcli.train.resources import training_bytes

sys.path.insert(0, str(REPO / "benchmarks"))
from sections import replace_section

DATA = REPO / "benchmarks" / ".cache" / "quality"
SIZES = {"tiny": (1, 8, 8), "small": (2, 256, 256), "medium": (2, 1024, 512), "large": (3, 2048, 1024)}
COMMON = ["--level", "word", "--min-freq", "1", "--softmax", "full", "--optimizer", "adam", "--lr", "1e-3",
          "--sentence-phase", "0", "--max-steps", "4", "--eval-every", "4", "--no-amp", "--device", "cpu",
          "--no-sample", "--valid-fraction", "0.001"]
LANES = ["--batch-size", "32", "--seq-len", "64"]


def peak_rss(flags: list[str], corpus: Path) -> int:
    """The peak resident bytes of one `lmcli train` process."""
    with tempfile.TemporaryDirectory() as folder:
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        done = subprocess.run([sys.executable, "-m", "lmcli", "train", str(corpus), *COMMON, *flags, "-o",
                               str(Path(folder) / "run")], cwd=folder, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
        if done.returncode:
            raise SystemExit(done.stderr)
        after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if after <= before:
        raise SystemExit("this run's peak is below an earlier one's; run the sizes in increasing order")
    return after * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DATA / "train.txt")
    parser.add_argument("--write", type=Path, help="put the table into this markdown file's '## memory' section")
    args = parser.parse_args()
    vocab = load_corpus([args.corpus], DataConfig(level="word", valid_fraction=0.001)).tokenizer.vocab_size
    header = f"corpus {args.corpus.name}, vocabulary {vocab:,}, batch 32 x 64, Adam, float32, full softmax"
    print(header)
    print(f"{'size':<8} {'model':<18} {'estimate':>10} {'measured':>10} {'ratio':>7}")
    baseline = 0
    rows = []
    for name, (layers, hidden, embed) in SIZES.items():
        flags = ["--layers", str(layers), "--hidden-dim", str(hidden), "--embed-dim", str(embed),
                 *(["--batch-size", "1", "--seq-len", "1"] if name == "tiny" else LANES)]
        peak = peak_rss(flags, args.corpus)
        if name == "tiny":
            baseline = peak
            print(f"{name:<8} {'(the baseline)':<18} {'':>10} {peak / 2**20:>8,.0f}MB")
            continue
        model = ModelConfig(vocab_size=vocab, layers=layers, hidden_dim=hidden, embed_dim=embed, softmax="full")
        estimate = training_bytes(model, TrainConfig(batch_size=32, seq_len=64, optimizer="adam"))
        measured = peak - baseline
        print(f"{name:<8} {f'{layers}x{hidden}, emb {embed}':<18} {estimate / 2**20:>8,.0f}MB "
              f"{measured / 2**20:>8,.0f}MB {estimate / measured:>6.2f}x", flush=True)
        rows.append(f"| {layers}x{hidden}, embedding {embed} | {estimate / 2**20:,.0f} MB | {measured / 2**20:,.0f} MB | "
                    f"{estimate / measured:.2f}x |")
    if args.write:
        command = "python " + " ".join(["benchmarks/bench_memory.py", *sys.argv[1:]])
        replace_section(args.write, "memory", [
            "## memory", "", f"`{command}`", "", header + ".", "",
            "`lmcli train`'s memory estimate (what it refuses a configuration on) against the peak resident "
            f"memory of four training steps, less the {baseline / 2**20:,.0f} MB peak of a tiny model (one lane of "
            "one token) on the same corpus. The aim: within 2x.", "",
            "| model | estimate | measured | estimate / measured |", "|---|---:|---:|---:|", *rows, ""])


if __name__ == "__main__":
    main()
