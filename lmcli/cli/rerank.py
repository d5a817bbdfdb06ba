"""``lmcli rerank``: rescore N-best lists with the language model, tune weights, report WER."""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from lmcli import rerank as rr
from lmcli import ui
from lmcli.cli.common import (CheckpointOption, DeviceOption, EncodingOption, app,
                              friendly_errors, load_model)
from lmcli.errors import LmcliError, UsageError


NbestArg = Annotated[str, typer.Argument(
    help="N-best list: JSON lines, TSV (id, am_score, text) or Kaldi text (uttid-K words; "
         "scores in --scores). - reads stdin.")]
FmtOption = Annotated[str, typer.Option("--format", help="auto, jsonl, tsv or kaldi.")]
ScoresOption = Annotated[Path | None, typer.Option(
    help="Kaldi N-best scores: 'uttid-K score' lines.", show_default=False)]
RefsOption = Annotated[Path | None, typer.Option(
    help="References, 'uttid words...' lines (for TSV and Kaldi input; JSON lines carry \"ref\").",
    show_default=False)]
AmIsCostOption = Annotated[bool, typer.Option(
    "--am-is-cost", help="The scores are costs (lower is better, as Kaldi writes them): negate them.")]
LmWeightOption = Annotated[float | None, typer.Option(
    help="Weight of the LM log-probability. (default: 1.0)", show_default=False)]
BonusOption = Annotated[float | None, typer.Option(
    help="Added per word of the hypothesis. (default: 0.0)", show_default=False)]
TuneOption = Annotated[Path | None, typer.Option(
    help="Dev N-best list with references: choose --lm-weight and --bonus on it (lowest WER), "
         "then apply them.", show_default=False)]
DevScoresOption = Annotated[Path | None, typer.Option(
    help="--scores for a Kaldi --tune list.", show_default=False)]
DevRefsOption = Annotated[Path | None, typer.Option(
    help="--refs for a TSV or Kaldi --tune list.", show_default=False)]
SkipBadOption = Annotated[bool, typer.Option(
    "--skip-bad", help="Skip utterances with no hypotheses or a missing score, with a warning.")]
BatchSizeOption = Annotated[int, typer.Option(help="Hypotheses scored together.")]
SummaryJsonOption = Annotated[bool, typer.Option(
    "--json", help="Also the summary (word error rates, weights) as a last JSON line on stdout, "
                   "{\"summary\": {...}}, instead of a table on stderr.")]


@app.command()
@friendly_errors
def rerank(
    nbest: NbestArg,
    checkpoint: CheckpointOption = None,
    fmt: FmtOption = "auto",
    scores: ScoresOption = None,
    refs: RefsOption = None,
    am_is_cost: AmIsCostOption = False,
    lm_weight: LmWeightOption = None,
    bonus: BonusOption = None,
    tune: TuneOption = None,
    dev_scores: DevScoresOption = None,
    dev_refs: DevRefsOption = None,
    skip_bad: SkipBadOption = False,
    batch_size: BatchSizeOption = 128,
    encoding: EncodingOption = "utf-8",
    device: DeviceOption = "auto",
    json_output: SummaryJsonOption = False,
) -> None:
    """Rescore N-best lists: total = am_score + lm_weight * lm_logprob + bonus * words.

    Writes one JSON line per utterance (hypotheses best first) to stdout; with references,
    a summary of word error rates to stderr (with --json, as a last line on stdout).
    """
    if tune is not None and (lm_weight is not None or bonus is not None):
        raise UsageError("--tune chooses --lm-weight and --bonus itself; give one or the other")
    weights = rr.Weights(1.0 if lm_weight is None else lm_weight, 0.0 if bonus is None else bonus)
    if not all(math.isfinite(v) for v in (weights.lm_weight, weights.bonus)):
        raise UsageError("--lm-weight and --bonus must be finite numbers")
    test = rr.read_nbest(rr.NbestSource(nbest, fmt, scores, refs, am_is_cost, encoding),
                         stdin=sys.stdin if nbest == "-" else None, skip_bad=skip_bad, warn=ui.warn)
    dev = (_dev_list(rr.NbestSource(tune, fmt, dev_scores, dev_refs, am_is_cost, encoding), skip_bad)
           if tune is not None else [])
    loaded, model = load_model(checkpoint, device)
    started = time.perf_counter()
    stats = rr.attach_lm_scores(test + dev, model, loaded.tokenizer, batch_size=batch_size,
                                convert=loaded.converter.to_model if loaded.converter.active else None)
    seconds = time.perf_counter() - started
    tuned = None
    if dev:
        rr.attach_errors(dev)
        tuned = rr.tune(dev)
        weights = tuned.weights
    for utterance in test:
        ui.emit_json(rr.ranked(utterance, weights))
    report = None
    if any(u.ref is not None for u in test):
        rr.attach_errors(test)
        report = rr.wer_report(test, weights)
    if json_output:
        ui.emit_json({"summary": {
            "weights": dataclasses.asdict(weights), "hypotheses": stats.hypotheses,
            "unique_texts": stats.unique_texts, "seconds": seconds,
            "tuned": dataclasses.asdict(tuned) if tuned is not None else None,
            "wer": dataclasses.asdict(report) if report is not None else None}})
    else:
        ui.rerank_summary(report, tuned, stats, seconds, weights)


def _dev_list(source: rr.NbestSource, skip_bad: bool) -> list[rr.Utterance]:
    """The --tune list, which must carry references."""
    dev = rr.read_nbest(source, skip_bad=skip_bad, warn=ui.warn)
    if not any(u.ref is not None for u in dev):
        raise LmcliError(f"{source.path}: no references to tune on (JSON \"ref\" fields or --dev-refs)")
    return dev
