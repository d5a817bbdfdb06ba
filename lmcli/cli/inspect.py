"""``lmcli info`` and ``lmcli tokenize``: what a checkpoint holds, and how it splits text."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from typing import Annotated

import typer

from lmcli import checkpoint as ckpt
from lmcli import novelty, ui
from lmcli.cli.common import CheckpointOption, JsonOption, app, flag_of, friendly_errors
from lmcli.train.config import stored_settings
from lmcli.tokenizers import UNK_ID
from lmcli.units import format_count


@app.command()
@friendly_errors
def info(checkpoint: CheckpointOption = None, json_output: JsonOption = False) -> None:
    """What a checkpoint holds: config, vocabulary, parameters, training history."""
    loaded = ckpt.load(ckpt.resolve(checkpoint))
    summary = {**loaded.summary(), "settings": stored_settings(loaded.payload),
               "novelty_index": novelty.describe(novelty.index_for_checkpoint(loaded.path))}
    if json_output:
        ui.emit_json(summary)
        return
    payload, config, tokenizer = loaded.payload, loaded.model_config, loaded.tokenizer
    provenance = summary["provenance"] or {}
    train_config = summary["train_config"] or {}
    valid_loss = summary["valid_loss"]
    history = summary["validation_history"]
    rows = [
        ("checkpoint", str(loaded.path)),
        ("model", f"{config.cell}, {config.layers} layer{'s' if config.layers > 1 else ''} x "
                  f"{config.hidden_dim}, embedding {config.embed_dim}"
                  + (", tied weights" if config.tie_weights else "")
                  + (", reading each line backward (right to left)" if config.direction == "backward" else "")
                  + (f", adaptive softmax (clusters from {', '.join(f'{c:,}' for c in config.cutoffs or [])})"
                     if config.softmax == "adaptive" else "")),
        ("regularisation", f"locked dropout {config.input_rate:g} in / {config.hidden_rate:g} "
                           f"between / {config.dropout:g} out, embedding dropout "
                           f"{config.dropout_embed:g}, weight-drop {config.weight_drop:g}, "
                           f"AR {train_config.get('ar', 0):g}, TAR {train_config.get('tar', 0):g}"),
        ("parameters", f"{summary['parameters']:,}"),
        ("tokens", f"{tokenizer.level} level, vocabulary {config.vocab_size:,} "
                   f"(<EOS>, <UNK> included){', lowercased' if tokenizer.lowercase else ''}"),
        ("script", _SCRIPT_NOTES.get(summary["script"], summary["script"])),
        ("trained", f"step {loaded.step:,}, epoch {payload.get('epoch')}, "
                    f"{format_count(payload.get('tokens_seen') or 0)} tokens"),
        ("validation", f"loss {valid_loss:.4f}, perplexity {math.exp(valid_loss):.2f}"
         if valid_loss is not None else "none"),
        ("optimizer", f"{train_config.get('optimizer')} lr {train_config.get('lr')} "
                      f"({train_config.get('lr_schedule', 'plateau')}), batch "
                      f"{train_config.get('batch_size')} x {train_config.get('seq_len')}, "
                      f"{train_config.get('batching', 'stream')} batching"
                      + (f", last {train_config['sentence_phase']:.0%} on sentences"
                         if train_config.get("sentence_phase") and train_config.get("batching") == "stream"
                         else "")),
        ("corpus", ", ".join(provenance.get("corpus") or []) or "-"),
        ("corpus sha256", str(provenance.get("corpus_sha256", "-"))[:16] + "..."),
        ("device", str(provenance.get("device", "-"))),
        ("created", f"{payload.get('created')} by lmcli {payload.get('lmcli_version')} "
                    f"(format {payload.get('format_version')})"),
        ("resumable", "yes (last.pt)" if summary["resumable"] else "no"),
        ("novelty index", summary["novelty_index"]),
        ("most frequent", " ".join(tokenizer.tokens[2:22])),
    ]
    # A flag and its value never split across lines (a no-break space between them).
    rows.append(("settings", "  ".join(f"{flag_of(name)}\u00a0{_value(value)}"
                                       for name, value in summary["settings"].items())))
    if history:
        shown = history[-5:]
        rows.append(("validation history", ", ".join(
            f"{m['step']}: {math.exp(min(m['loss'], 700)):.2f}" for m in shown)))
    ui.stdout_console().print(ui.key_value_table(None, rows))


_SCRIPT_NOTES = {
    "traditional": "traditional Chinese (simplified input is converted to it)",
    "simplified": "simplified Chinese (traditional input is converted to it)",
    "neither": "neither Chinese script (input is not converted)",
}


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


# ----------------------------------------------------------------------------- tokenize


def _stdin_lines() -> Iterator[str]:
    for line in sys.stdin:
        yield line.rstrip("\n")


@app.command()
@friendly_errors
def tokenize(
    text: Annotated[list[str] | None, typer.Argument(show_default=False,
                                                     help="Texts to split; none or - reads lines from stdin.")] = None,
    checkpoint: CheckpointOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show how a checkpoint's tokenizer splits text (tokens, ids, <UNK>s); text in the
    other Chinese script is converted to the model's first, as score and generate do."""
    loaded = ckpt.load(ckpt.resolve(checkpoint))
    tokenizer, converter = loaded.tokenizer, loaded.converter
    texts: Iterator[str] | list[str] = _stdin_lines() if not text or text == ["-"] else text
    terminal = ui.stdout_is_terminal() and not json_output
    console = ui.stdout_console()
    for item in texts:
        typed = tokenizer.normalize(item)
        converted = converter.to_model(typed)
        ids = tokenizer.encode(converted)
        pieces = [tokenizer.tokens[i] for i in ids]
        surface = tokenizer.surface(converted)
        if json_output:
            ui.emit_json({"text": item, "converted": converted, "tokens": pieces, "ids": ids,
                          "surface": surface, "num_tokens": len(ids) + 1,
                          "oov": sum(1 for i in ids if i == UNK_ID)})
        elif terminal:
            if converted != typed:
                console.print(f"[dim]converted to {loaded.script}: {ui.escape(converted)}[/]")
            shown = " ".join(f"[{ui.UNKNOWN_STYLE}]{ui.escape(repr(s)[1:-1])}=<UNK>[/]" if i == UNK_ID
                             else f"[cyan]{ui.escape(p)}[/]" for p, s, i in zip(pieces, surface, ids))
            console.print(f"{shown} [dim]<EOS>[/]  [dim]({len(ids) + 1} tokens)[/]")
        else:
            print(" ".join(pieces))
