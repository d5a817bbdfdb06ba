"""README's figures are generated from the benchmark reports and must match them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("readme_figures", REPO / "benchmarks" / "readme_figures.py")
assert spec is not None and spec.loader is not None
figures = importlib.util.module_from_spec(spec)
spec.loader.exec_module(figures)

RESULTS = """# Model quality

## Headline: seeds 1, 2, 3, recipes chosen on validation

| model | seeds | valid ppl | test ppl, sentences | test ppl, stream | below KN5 (sentences) | below baseline (stream) |
|---|---|---|---|---|---|---|
| kn5 (KenLM) | - | 44.00 | 43.16 | - | - | - |
| baseline-word (LSTM; bf16) | 3 | 41.00 ± 0.50 | - | 40.00 ± 0.40 | - | - |
| lmcli-word (`lmcli --level word`; bf16) | 3 | 32.00 ± 0.20 | 31.50 ± 0.30 | 30.90 ± 0.20 | 27.0% ± 0.7% (target 25%: 3 of 3 seeds) | 22.7% ± 0.5% (target 10%: 3 of 3 seeds) |

| model | seeds | valid bpc | test bpc, sentences | test bpc, stream | below plain (stream) |
|---|---|---|---|---|---|
| plain-char (plain; bf16) | 3 | 1.4000 ± 0.0100 | - | 1.4500 ± 0.0100 | - |
| lmcli-char (`lmcli --level char`; bf16) | 3 | 1.3500 ± 0.0050 | 1.3700 ± 0.0040 | 1.3100 ± 0.0030 | 9.7% ± 0.4% (target 10%: 0 of 3 seeds) |

## History: single-seed runs, word level

| lmcli-word-old | 15 | 32.03 | 31.39 | 25.8% below | 21.6% below |
"""
BENCHMARKS = """# Speed benchmarks

Machine: Some CPU, 2 cores, no GPU.

| benchmark | reference | ratio | lmcli |
|---|---|---|---|
| training | hand-written PyTorch loop | 1.01x | 8,000 tokens/s |
| encoding char (first run) | - | - | 61 MB/s |

## train

| training | not the summary | 9.99x | - |
"""


def test_the_block_takes_its_figures_from_the_reports() -> None:
    text = figures.block(RESULTS, BENCHMARKS)
    assert "31.50 ± 0.30 against 43.16" in text
    assert "27.0% ± 0.7% below (target 25%: 3 of 3 seeds)" in text
    assert "30.90 ± 0.20 against 40.00 ± 0.40" in text and "seeds 1, 2, 3" in text
    assert "1.3100 ± 0.0030 bits per character (stream) against 1.4500 ± 0.0100" in text
    assert "9.7% ± 0.4% below (target 10%: 0 of 3 seeds)" in text
    assert "| training | hand-written PyTorch loop | 1.01x | 8,000 tokens/s |" in text
    assert "Some CPU, 2 cores, no GPU" in text
    # Rows the README leaves to BENCHMARKS.md, history, and tables below the summary stay out.
    assert "encoding" not in text and "32.03" not in text and "9.99x" not in text


def test_readme_matches_the_committed_reports() -> None:
    """Fails when a report changed and README's block was not regenerated (or was edited
    by hand): python benchmarks/readme_figures.py rewrites it."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    expected = figures.rewritten(readme, (REPO / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8"),
                                 (REPO / "benchmarks" / "BENCHMARKS.md").read_text(encoding="utf-8"))
    assert readme == expected
