"""``lmcli eval`` and ``lmcli score``: a checkpoint put to work on text."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from lmcli import checkpoint as ckpt
from lmcli import ui
from lmcli.cli.common import (CheckpointOption, DeviceOption, EncodingOption, ErrorsOption, JsonOption,
                              SentenceBatchOption, app, friendly_errors, load_model)
from lmcli.text import TextFiles, chunk_lines, iter_chunks
from lmcli.errors import UsageError
from lmcli.scoring import Convert, evaluate_file, score_sentences


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
                           convert=_conversion(loaded))
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


def _conversion(loaded: ckpt.Checkpoint) -> Convert | None:
    """Text typed in the other Chinese script, converted into the model's (None: no need)."""
    converter = loaded.converter
    return converter.to_model if converter.active else None


def _sentences(sentences: list[str] | None, file: Path | None, encoding: str, errors: str
               ) -> Iterator[str]:
    """Sentences from arguments, a file (streamed) or stdin (``-``), one a line."""
    if file is not None and sentences:
        raise UsageError("give sentences as arguments or with --file, not both")
    if file is not None and str(file) != "-":
        for chunk in iter_chunks(file, encoding, errors):
            yield from chunk_lines(chunk)
        return
    if file is not None or sentences == ["-"] or not sentences:
        if sys.stdin.isatty() and not sentences and file is None:
            raise UsageError("no sentences: pass them as arguments, --file FILE, or - to read stdin")
        for line in sys.stdin:
            yield line.rstrip("\r\n")
        return
    yield from sentences


@app.command()
@friendly_errors
def score(
    sentences: Annotated[list[str] | None, typer.Argument(show_default=False,
                                                          help="Sentences to score; - reads stdin.")] = None,
    checkpoint: CheckpointOption = None,
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
    """Log-probability of sentences (natural log, <EOS> included), one result a line."""
    source = _sentences(sentences, file, encoding, errors)
    loaded, model = load_model(checkpoint, device)
    tokenizer = loaded.tokenizer
    # Typing sentences at a terminal: answer each line at once instead of in groups.
    interactive = sys.stdin.isatty() and (file is not None and str(file) == "-" or sentences == ["-"])
    results = score_sentences(model, tokenizer, source, batch_size=batch_size, eos=not no_eos,
                              per_token=per_token, group_size=1 if interactive else 4096,
                              convert=_conversion(loaded))
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
