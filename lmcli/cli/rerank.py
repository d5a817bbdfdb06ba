"""``lmcli rerank``: rescore N-best lists with one or more language models, tune their
weights, report word and character error rates."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from lmcli import rerank as rr
from lmcli import ui
from lmcli.cli.common import (CheckpointsOption, DeviceOption, EncodingOption, app, friendly_errors,
                              language_model)
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
LmWeightOption = Annotated[list[float] | None, typer.Option(
    "--lm-weight", help="Weight of an LM's log-probability, once per -c in order. (default: 1.0 each)",
    show_default=False)]
BonusOption = Annotated[float | None, typer.Option(
    help="Added per word of the hypothesis (per character with --metric cer). (default: 0.0)",
    show_default=False)]
MetricOption = Annotated[str, typer.Option(
    help="wer, cer, or auto: cer when every model reads characters and no text has spaces (Chinese, "
         "Japanese). Tuning minimises it; the bonus is paid per its unit.")]
OutputFormatOption = Annotated[str, typer.Option(
    "--output-format", help="jsonl (every hypothesis, rescored), kaldi (Kaldi text: 'utt-id words', "
                            "the best hypothesis) or tsv ('id<TAB>text').")]
ReportOption = Annotated[Path | None, typer.Option(
    "--report",
    help="Also write the summary (error rates, weights, tuning) to this JSON file.", show_default=False)]
TuneOption = Annotated[Path | None, typer.Option(
    help="Dev N-best list with references: choose every --lm-weight and --bonus on it (lowest "
         "error rate), then apply them.", show_default=False)]
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
    checkpoint: CheckpointsOption = None,
    fmt: FmtOption = "auto",
    scores: ScoresOption = None,
    refs: RefsOption = None,
    am_is_cost: AmIsCostOption = False,
    lm_weight: LmWeightOption = None,
    bonus: BonusOption = None,
    tune: TuneOption = None,
    dev_scores: DevScoresOption = None,
    dev_refs: DevRefsOption = None,
    metric: MetricOption = "auto",
    output_format: OutputFormatOption = "jsonl",
    report_file: ReportOption = None,
    skip_bad: SkipBadOption = False,
    batch_size: BatchSizeOption = 128,
    encoding: EncodingOption = "utf-8",
    device: DeviceOption = "auto",
    json_output: SummaryJsonOption = False,
) -> None:
    """Rescore N-best lists: total = am_score + sum of lm_weight * lm_logprob over the models +
    bonus * words (or characters).

    Writes one line per utterance to stdout (JSON with the hypotheses best first, or the best
    as Kaldi text or TSV); with references, word and character error rates to stderr (with
    --json, as a last line on stdout).
    """
    specs = checkpoint or [None]
    weights = _given_weights(lm_weight, bonus, tune, len(specs))
    _check_choice("--metric", metric, ("auto", *rr.METRICS))
    _check_choice("--output-format", output_format, rr.OUTPUT_FORMATS)
    if json_output and output_format != "jsonl":
        raise UsageError("--json adds a summary line to JSON output; leave it out with --output-format "
                         f"{output_format} (--report FILE writes the summary)")
    test = rr.read_nbest(rr.NbestSource(nbest, fmt, scores, refs, am_is_cost, encoding),
                         stdin=sys.stdin if nbest == "-" else None, skip_bad=skip_bad, warn=ui.warn)
    dev = (_dev_list(rr.NbestSource(tune, fmt, dev_scores, dev_refs, am_is_cost, encoding), skip_bad)
           if tune is not None else [])
    models = [language_model(spec, device) for spec in specs]
    metric = rr.choose_metric(metric, [m.level for m in models], dev or test)
    started = time.perf_counter()
    stats = rr.attach_lm_scores(test + dev, models, batch_size=batch_size)
    seconds = time.perf_counter() - started
    tuned = rr.tune(dev, metric) if dev else None
    weights = tuned.weights if tuned is not None else weights
    for utterance in test:
        record = rr.ranked(utterance, weights, metric)
        if output_format == "jsonl":
            ui.emit_json(record)
        else:
            ui.emit_line(rr.text_line(record, output_format))
    report = rr.error_report(test, weights, metric) if any(u.ref is not None for u in test) else None
    summary = {"models": [m.name for m in models], "metric": metric, "weights": dataclasses.asdict(weights),
               "hypotheses": stats.hypotheses, "unique_texts": stats.unique_texts, "seconds": seconds,
               "tuned": dataclasses.asdict(tuned) if tuned is not None else None,
               "errors": dataclasses.asdict(report) if report is not None else None}
    if report_file is not None:
        report_file.write_text(json.dumps(ui.plain(summary), indent=1) + "\n", encoding="utf-8")
    if json_output:
        ui.emit_json({"summary": summary})
    else:
        ui.rerank_summary(report, tuned, stats, seconds, weights, metric)


def _given_weights(lm_weight: list[float] | None, bonus: float | None, tune: Path | None,
                   models: int) -> rr.Weights:
    """The weights given on the command line (1.0 each and no bonus where not given)."""
    if tune is not None and (lm_weight or bonus is not None):
        raise UsageError("--tune chooses --lm-weight and --bonus itself; give one or the other")
    if lm_weight and len(lm_weight) != models:
        raise UsageError(f"--lm-weight is given {len(lm_weight)} time(s) for {models} model(s): give it once "
                         "per -c, in the same order, or leave it out")
    weights = rr.Weights(list(lm_weight) if lm_weight else [1.0] * models, 0.0 if bonus is None else bonus)
    if not all(math.isfinite(v) for v in (*weights.lm_weights, weights.bonus)):
        raise UsageError("--lm-weight and --bonus must be finite numbers")
    return weights


def _check_choice(flag: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UsageError(f"{flag} must be one of {', '.join(choices)}; got {value!r}")


def _dev_list(source: rr.NbestSource, skip_bad: bool) -> list[rr.Utterance]:
    """The --tune list, which must carry references."""
    dev = rr.read_nbest(source, skip_bad=skip_bad, warn=ui.warn)
    if not any(u.ref is not None for u in dev):
        raise LmcliError(f"{source.path}: no references to tune on (JSON \"ref\" fields or --dev-refs)")
    return dev
