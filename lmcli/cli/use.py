"""``lmcli eval`` and ``lmcli score``: a checkpoint put to work on text."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from lmcli import mixture, ui
from lmcli.cli.common import (CheckpointOption, CheckpointsOption, DeviceOption, EncodingOption, ErrorsOption,
                              JsonOption, SentenceBatchOption, app, friendly_errors, language_model,
                              load_model)
from lmcli.text import TextFiles, chunk_lines, iter_chunks
from lmcli.errors import LmcliError, UsageError
from lmcli.ngram import is_ngram_file
from lmcli.scoring import SentenceScore, evaluate_file, score_sentences
from lmcli.units import parse_float_list


@app.command("eval")
@friendly_errors
def eval_command(
    file: Annotated[Path, typer.Argument(help="Text to evaluate, one sentence per line.")],
    checkpoint: CheckpointOption = None,
    stream: Annotated[bool, typer.Option("--stream", help="Carry the state across lines (as in "
                                         "training) instead of scoring each line from an empty "
                                         "context.")] = False,
    batch_size: SentenceBatchOption = 64,
    encoding: EncodingOption = "utf-8",
    errors: ErrorsOption = "strict",
    device: DeviceOption = "auto",
    json_output: JsonOption = False,
) -> None:
    """Perplexity, cross-entropy and bits per token / per character over a file."""
    files = TextFiles.of([file], encoding, errors, what="text file")
    loaded, model = load_model(checkpoint, device)
    result = evaluate_file(model, loaded.tokenizer, files, batch_size=batch_size, stream=stream,
                           convert=loaded.convert)
    if json_output:
        ui.emit_json(result.to_dict())
        return
    rows = [
        ("perplexity", f"{result.perplexity:.4f}"),
        ("perplexity excluding OOVs", f"{result.perplexity_no_oov:.4f}"),
        ("cross-entropy", f"{result.cross_entropy:.5f} nats/token"),
        ("bits per token", f"{result.bits_per_token:.5f}"),
        ("bits per character", f"{result.bits_per_char:.5f}"),
        ("tokens", f"{result.num_tokens:,} (<EOS> included), {result.oov:,} <UNK>"),
        ("sentences", f"{result.num_sentences:,}"),
        ("mode", "stream (state carried across lines)" if stream else "sentences (each from an empty context)"),
    ]
    if ui.stdout_is_terminal():
        ui.stdout_console().print(ui.key_value_table(f"{file}", rows))
    else:
        for key, value in rows:
            print(f"{key}\t{value}")


# ----------------------------------------------------------------------------- score


def _sentences(sentences: list[str] | None, file: Path | None, encoding: str, errors: str
               ) -> Iterator[str]:
    """Sentences from arguments, a file (streamed) or stdin (``-``), one a line."""
    if file is not None and sentences:
        raise UsageError("give sentences as arguments or with --file, not both")
    if file is not None and str(file) != "-":
        lines: Iterator[str] = (line for chunk in iter_chunks(file, encoding, errors) for line in chunk_lines(chunk))
        where = str(file)
    elif file is not None or sentences == ["-"] or not sentences:
        if sys.stdin.isatty() and not sentences and file is None:
            raise UsageError("no sentences: pass them as arguments, --file FILE, or - to read stdin")
        lines, where = (line.rstrip("\r\n") for line in sys.stdin), "standard input"
    else:
        yield from sentences
        return
    read = 0
    for read, line in enumerate(lines, 1):
        yield line
    if not read:  # an empty file scores nothing: most likely the wrong file
        raise LmcliError(f"no sentences to score: {where} is empty")


@app.command()
@friendly_errors
def score(
    sentences: Annotated[list[str] | None, typer.Argument(show_default=False,
                                                          help="Sentences to score; - reads stdin.")] = None,
    checkpoint: CheckpointsOption = None,
    mix: Annotated[str | None, typer.Option(
        help="Score with the linear interpolation of the -c models' token probabilities, with these "
             "weights (one per -c, scaled to sum to 1): 0.7,0.3. The models must share a vocabulary "
             "and a direction.", show_default=False)] = None,
    tune_mix: Annotated[Path | None, typer.Option(
        "--tune-mix", help="Fit the mixture weights by EM on this dev text (one sentence a line), "
                           "then score with them; the weights go to stderr.", show_default=False)] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="Score each line of this file "
                                              "(- for stdin).", show_default=False)] = None,
    per_token: Annotated[bool, typer.Option("--per-token", help="Add each token's logprob.")] = False,
    no_eos: Annotated[bool, typer.Option("--no-eos", help="Score a prefix: leave out the final "
                                         "<EOS> term.")] = False,
    batch_size: SentenceBatchOption = 64,
    encoding: EncodingOption = "utf-8",
    errors: ErrorsOption = "strict",
    device: DeviceOption = "auto",
    json_output: JsonOption = False,
) -> None:
    """Log-probability of sentences (natural log, <EOS> included), one result a line; with
    several -c, one column per model, or with --mix / --tune-mix their mixture."""
    source = _sentences(sentences, file, encoding, errors)
    if len(checkpoint or []) > 1 or mix is not None or tune_mix is not None or is_ngram_file(
            checkpoint[0] if checkpoint else None):
        _score_models(checkpoint or [], source, mix, tune_mix, per_token, not no_eos, batch_size, encoding,
                      errors, device, json_output)
        return
    loaded, model = load_model(checkpoint[0] if checkpoint else None, device)
    tokenizer = loaded.tokenizer
    # Typing sentences at a terminal: answer each line at once instead of in groups.
    interactive = sys.stdin.isatty() and (file is not None and str(file) == "-" or sentences == ["-"])
    results = score_sentences(model, tokenizer, source, batch_size=batch_size, eos=not no_eos,
                              per_token=per_token, group_size=1 if interactive else 4096,
                              convert=loaded.convert)
    terminal = ui.stdout_is_terminal() and not json_output
    table = ui.score_table(per_token, header=True) if terminal else None
    shown = 0
    for result in results:
        record = result.to_record(tokenizer, per_token)
        if json_output:
            ui.emit_json(record)
        elif table is not None:
            surfaces = tokenizer.surface(result.scored_text or result.text) if per_token else None
            ui.add_score_row(table, record, loaded.converter.segments(result.text), surfaces)
            shown += 1
            if shown % ui.TABLE_PAGE == 0:  # long inputs: show a page at a time
                ui.stdout_console().print(table)
                table = ui.score_table(per_token, header=False)
        else:
            print(f"{result.logprob:.6f}\t{result.perplexity:.4f}\t{result.text}", flush=False)
    if table is not None and table.row_count:
        ui.stdout_console().print(table)


def _score_models(specs: list[str], source: Iterator[str], mix: str | None, tune_mix: Path | None,
                  per_token: bool, eos: bool, batch_size: int, encoding: str, errors: str, device: str,
                  json_output: bool) -> None:
    """score with several models: a column each, or (--mix, --tune-mix) their mixture."""
    if len(specs) < 2 and (mix is not None or tune_mix is not None):
        raise UsageError("--mix and --tune-mix combine models: give -c once per model, two or more")
    if mix is not None and tune_mix is not None:
        raise UsageError("--tune-mix fits the --mix weights itself; give one or the other")
    models = [language_model(spec, device) for spec in specs]
    if mix is None and tune_mix is None:
        for results in mixture.each_model(models, source, eos=eos, batch_size=batch_size):
            _emit_columns(results, json_output)
        return
    mixture.check_mixable(models)
    if tune_mix is not None:
        dev = TextFiles.of([tune_mix], encoding, errors, what="dev text")
        lines = [line for block in dev.line_blocks() for line in block if models[0].tokenizer.normalize(line)]
        columns = [c for _, c in mixture.token_logprobs(models, lines, batch_size=batch_size)]
        fit = mixture.fit_weights(np.concatenate(columns) if columns else np.zeros((0, len(models))))
        weights = fit.weights
        ui.note(f"mixture fitted on {tune_mix} ({fit.dev_tokens:,} tokens, {fit.iterations} EM iterations): "
                f"--mix {','.join(f'{w:.6g}' for w in weights)}; dev perplexity {fit.dev_perplexity:.4f} "
                f"(the models alone: {', '.join(f'{p:.4f}' for p in fit.model_perplexities)})")
    else:
        weights = mixture.normalized(parse_float_list(mix or "", "{mix}"), len(models))
    for first, columns in mixture.token_logprobs(models, source, eos=eos, batch_size=batch_size):
        record = mixture.mixed_score(first, columns, weights).to_record(models[0].tokenizer, per_token)
        if json_output:
            ui.emit_json({**record, "mix_weights": weights})
        else:
            print(f"{record['logprob']:.6f}\t{record['perplexity']:.4f}\t{record['text']}", flush=False)


def _emit_columns(results: tuple[SentenceScore, ...], json_output: bool) -> None:
    if json_output:
        ui.emit_json({"text": results[0].text, "logprobs": [r.logprob for r in results],
                      "num_tokens": [r.num_tokens for r in results], "oov": [r.oov for r in results]})
    else:
        print("\t".join([*(f"{r.logprob:.6f}" for r in results), results[0].text]), flush=False)

