"""The novelty index (`generate --novel`): build time, file size and peak memory on the
bundled corpora, and how long checking a batch of samples takes.

Each level runs in a fresh process: the corpus is read as `lmcli train` reads it (default
settings, 5% held out), its training stream optionally repeated ``--repeat`` times (a
larger corpus of the same text: the hashes repeat, so the file stays the size of one copy,
but building sorts them all), then indexed, saved, loaded and used to check 64 samples of
100 tokens, half of them windows of the training stream, half those windows shuffled.

    python benchmarks/bench_novelty.py
    python benchmarks/bench_novelty.py --levels char --repeat 30
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCES = {"char": "tang_poems.txt", "word": "kjv_poetry.txt", "bpe": "kjv_poetry.txt",
           "unigram": "kjv_poetry.txt"}


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def measure(level: str, repeat: int) -> dict[str, object]:
    import numpy as np

    from lmcli.corpus import DataConfig, load_corpus
    from lmcli.novelty import NoveltyIndex

    data = load_corpus([REPO / "corpora" / SOURCES[level]], DataConfig(level=level))
    train = np.tile(np.asarray(data.train), repeat)
    before = rss_mb()
    start = time.perf_counter()
    index = NoveltyIndex.build(train, data.tokenizer, corpus_sha256=data.scan.sha256)
    build = time.perf_counter() - start
    peak = rss_mb() - before
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "novelty.npz"
        index.save(path)
        size = path.stat().st_size
        start = time.perf_counter()
        index = NoveltyIndex.load(path, data.tokenizer)
        load = time.perf_counter() - start
    rng = np.random.default_rng(0)
    windows = [train[s:s + 100] for s in rng.integers(0, len(train) - 100, 64)]
    samples = [(w if k % 2 else rng.permutation(w)).tolist() for k, w in enumerate(windows)]
    index.check(samples[0])  # numpy's first calls
    start = time.perf_counter()
    copied = [index.check(sample) for sample in samples]
    check = time.perf_counter() - start
    return {"level": level, "tokens": len(train), "build_s": round(build, 2),
            "build_peak_mb": round(peak), "file_mb": round(size / 1e6, 2), "load_s": round(load, 3),
            "runs": len(index.runs), "lines": len(index.lines),
            "check_64x100_ms": round(1000 * check, 1),
            "found_copied": sum(c.found for c in copied[1::2]),
            "found_shuffled": sum(c.found for c in copied[::2])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", nargs="+", default=["char", "word", "bpe"], choices=list(SOURCES))
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child process's level
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.repeat)))
        return
    for level in args.levels:
        result = subprocess.run([sys.executable, __file__, "--one", level, "--repeat", str(args.repeat)],
                                capture_output=True, text=True, check=True, cwd=REPO)
        print(result.stdout.strip())


if __name__ == "__main__":
    main()
