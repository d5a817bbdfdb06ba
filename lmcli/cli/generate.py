"""``lmcli generate``: new text from a checkpoint, free or in a verse form."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperCommand

from lmcli import ui
from lmcli.cli.common import CheckpointOption, DeviceOption, JsonOption, SeedOption, app, friendly_errors, load_model
from lmcli.poems import PoemRequest, Written, write
from lmcli.sampling import SamplingConfig
from lmcli.tunes import all_tunes

_VERSE = "Verse"


class _GenerateCommand(TyperCommand):
    """``--rhyme`` takes an optional value: alone (last, or before another option) it means
    ``auto``. Typer cannot declare such an option, so the word is put in before parsing."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _rhyme_value(args))


def _rhyme_value(args: list[str]) -> list[str]:
    out: list[str] = []
    for i, arg in enumerate(args):
        if arg == "--":
            return out + args[i:]
        out.append(arg)
        following = args[i + 1] if i + 1 < len(args) else None
        if arg == "--rhyme" and (following is None or (following.startswith("-") and len(following) > 1)):
            out.append("auto")
    return out


@app.command(cls=_GenerateCommand)
@friendly_errors
def generate(
    checkpoint: CheckpointOption = None,
    prime: Annotated[str, typer.Option(help="Text to start from (continued, and printed first).")] = "",
    num_samples: Annotated[int, typer.Option("--num-samples", "-n", help="Samples, drawn together as one batch.")] = 1,
    max_tokens: Annotated[int, typer.Option(help="Most tokens to generate per sample (a verse form "
                                            "sets its own).")] = 500,
    lines: Annotated[int, typer.Option(help="Write this many corpus lines, going on past <EOS> with "
                                       "the state kept. A corpus with a whole poem per line (the "
                                       "bundled Tang poems) gives that many poems: use --form for "
                                       "verse lines.")] = 1,
    temperature: Annotated[float, typer.Option(help="Below 1: safer; above 1: wilder.")] = 1.0,
    top_k: Annotated[int, typer.Option(help="Sample among the k most likely tokens (0 = off).")] = 0,
    top_p: Annotated[float, typer.Option(help="Sample among the most likely tokens holding this "
                                         "much probability (1.0 = off).")] = 1.0,
    greedy: Annotated[bool, typer.Option("--greedy", help="Always take the most likely token.")] = False,
    form: Annotated[str | None, typer.Option(
        help="Verse form: 5x4, 7x4, 5x8, 7x8 (characters x lines), a list of line lengths such as "
             "4,4,7,5,7 (words at word level), a tune (词牌) such as 浣溪沙, or auto (one of the corpus's "
             "usual shapes); 'list' shows the tunes.",
        rich_help_panel=_VERSE, show_default=False)] = None,
    acrostic: Annotated[str | None, typer.Option(
        help="Line i starts with the i-th character of TEXT (the i-th word at word level).",
        metavar="TEXT", rich_help_panel=_VERSE, show_default=False)] = None,
    rhyme: Annotated[str | None, typer.Option(
        help="Rhyme the form's rhyme lines (even lines; line 1 of 7-character forms; a tune's own). "
             "Optional value: pingshui (classical, default for Chinese), pinyin (modern finals), cmu "
             "(English, default at word level), or a scheme such as AABB or ABAB, or BOOK:SCHEME.",
        metavar="[BOOK|SCHEME]", rich_help_panel=_VERSE, show_default=False)] = None,
    tones: Annotated[bool, typer.Option("--tones", help="Regulated verse's level/oblique (平仄) pattern, "
                                        "by the Pingshui table (forms 5x4, 7x4, 5x8, 7x8).",
                                        rich_help_panel=_VERSE)] = False,
    context: Annotated[str, typer.Option(help="Text read before the poem (a mood, a theme) and not "
                                         "printed.", rich_help_panel=_VERSE)] = "",
    best_of: Annotated[int, typer.Option(help="Draw N candidates per sample (one batch) and keep the one "
                                         "the model likes best per token.", metavar="N",
                                         rich_help_panel=_VERSE)] = 1,
    novel: Annotated[bool, typer.Option("--novel", help="Refuse and redraw candidates that copy a line, "
                                        "or 8 characters (6 words) running, from the training text.",
                                        rich_help_panel=_VERSE)] = False,
    script: Annotated[str, typer.Option(help="Chinese output in: auto (as you typed, else as the model "
                                        "was trained), simplified, traditional, or model.",
                                        rich_help_panel=_VERSE)] = "auto",
    seed: SeedOption = None,
    device: DeviceOption = "auto",
    json_output: JsonOption = False,
) -> None:
    """Write new text from a checkpoint; it never writes <UNK>."""
    if form is not None and form.strip().lower() == "list":
        _list_forms(json_output)
        return
    sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy,
                              max_tokens=max_tokens, lines=lines).validate()
    request = PoemRequest(prime=prime, context=context, num_samples=num_samples, form=form, acrostic=acrostic,
                          rhyme=rhyme, tones=tones, best_of=best_of, novel=novel, script=script,
                          sampling=sampling, seed=seed)
    loaded, model = load_model(checkpoint, device)
    written = write(loaded, model, request)
    for warning in written.warnings:
        ui.warn(warning)
    if json_output:
        _emit_json(written)
    else:
        _print(written, best_of)


def _emit_json(written: Written) -> None:
    for item in written.samples:
        ui.emit_json(item.to_record())


def _print(written: Written, best_of: int) -> None:
    for index, item in enumerate(written.samples):
        if index:
            print()
        print("\n".join(item.lines) if item.lines is not None else item.text, flush=True)
        if best_of > 1:
            ui.note(f"best of {best_of}: {item.per_token:.3f} nats per token")


def _list_forms(json_output: bool) -> None:
    if json_output:
        for tune in all_tunes():
            ui.emit_json({"form": tune.name, "alias": tune.alias, "pattern": tune.pattern,
                          "count": tune.count, "total": tune.total})
        return
    rows = [("5x4 7x4 5x8 7x8", "絕句 / 律詩: characters x lines"), ("4,4,7,5,7", "any list of line lengths")]
    rows += [(f"{t.name} {t.alias}".strip(), f"{t.pattern}   ({t.count} of {t.total} ci)") for t in all_tunes()]
    if ui.stdout_is_terminal():
        ui.stdout_console().print(ui.key_value_table("verse forms (* marks a rhyme)", rows))
    else:
        for key, value in rows:
            print(f"{key}\t{value}")
