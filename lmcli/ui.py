"""What people see: rich progress bars, tables and messages (part of the CLI layer).

Messages, progress and summaries go to stderr. Stdout carries only a command's results:
tables when stdout is a terminal, or the ``--json`` lines that programs read, written by
:func:`emit_json` (training events among them).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape
from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                           TimeElapsedColumn, TransferSpeedColumn)
from rich.table import Table
from rich.text import Text

from lmcli import train as training
from lmcli.train import events
from lmcli.distributed import launched
from lmcli.units import format_count, format_duration

LOG_SECONDS = 30.0  # status lines when stderr is not a terminal


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=False)


def stdout_console() -> Console:
    return Console(highlight=False)


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty() and not os.environ.get("LMCLI_PLAIN")


def error(message: str) -> None:
    stderr_console().print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)


def warn(message: str) -> None:
    stderr_console().print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True)


def note(message: str) -> None:
    """A remark for the person watching, dim, on stderr (stdout stays data)."""
    stderr_console().print(f"[dim]{escape(message)}[/]", soft_wrap=True)


def plain(value: Any) -> Any:
    """Data as JSON writes it: paths as strings, non-finite floats as null."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def print_ansi(text: str) -> None:
    """Text with ANSI colour codes (a plotext figure) on stdout: coloured on a terminal,
    plain when piped."""
    stdout_console().print(Text.from_ansi(text.rstrip("\n")), soft_wrap=True)


def emit_line(text: str) -> None:
    """One line of plain text on stdout, flushed (data a program reads)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def emit_json(obj: dict[str, Any], stream: TextIO | None = None) -> None:
    """One JSON object on one line of stdout (non-finite floats become null)."""
    stream = stream or sys.stdout
    stream.write(json.dumps(plain(obj), ensure_ascii=False) + "\n")
    stream.flush()


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    if abs(value) >= 1e5:
        return f"{value:.3e}"
    return f"{value:.{digits}f}"


class TrainDisplay:
    """Draws data loading and training events; in JSON mode writes them as lines."""

    def __init__(self, json_mode: bool = False) -> None:
        self.json_mode = json_mode
        self.console = stderr_console()
        self.progress: Progress | None = None
        self.task: Any = None
        self.phase_task: Any = None
        self.phase_progress: Progress | None = None
        self.last_log = time.monotonic()

    # -- data loading ------------------------------------------------------------------

    def data_event(self, kind: str, info: dict[str, Any]) -> None:
        if self.json_mode:
            if kind in ("phase", "warning"):
                emit_json({"event": kind, **info})
            return
        if kind == "warning":
            self._end_phase()
            stderr_console().print(Text.assemble(("warning: ", "yellow"), str(info["message"])), soft_wrap=True)
        elif kind == "phase":
            self._end_phase()
            if not self.console.is_terminal:
                return
            self.phase_progress = Progress(
                TextColumn("{task.description:<20}"), BarColumn(), DownloadColumn(),
                TransferSpeedColumn(), TimeElapsedColumn(), console=self.console, transient=True)
            self.phase_progress.start()
            self.phase_task = self.phase_progress.add_task(str(info["name"]),
                                                           total=info.get("total_bytes"))
        elif kind == "bytes" and self.phase_progress is not None:
            self.phase_progress.advance(self.phase_task, int(info["n"]))

    def _end_phase(self) -> None:
        if self.phase_progress is not None:
            self.phase_progress.stop()
            self.phase_progress = None

    # -- training ----------------------------------------------------------------------

    def event(self, event: training.Event) -> None:
        if self.json_mode:
            emit_json(events.as_record(event))
            return
        handlers = {training.Started: self._on_started, training.Progress: self._on_progress,
                    training.Validated: self._on_validated, training.EpochEnded: self._on_epoch_ended,
                    training.Note: self._on_note, training.Finished: self._on_finished}
        handlers[type(event)](event)  # type: ignore[operator]

    def _on_started(self, e: training.Started) -> None:
        self._end_phase()
        resumed = f", resumed at step {e.resumed_from_step:,}" if e.resumed_from_step else ""
        self.console.print(
            f"[bold]training[/] on {escape(e.device)}: {format_count(e.parameters)} parameters, "
            f"vocabulary {e.vocab_size:,}, {format_count(e.train_tokens)} training and "
            f"{format_count(e.valid_tokens)} validation tokens{resumed}")
        self.console.print(f"[dim]{e.steps_per_epoch:,} steps per epoch of {e.tokens_per_step:,} "
                           f"tokens; checkpoints in {escape(str(e.out_dir))}; Ctrl-C stops and "
                           "saves[/]")
        if not self.console.is_terminal:
            return  # a log file gets a status line now and then, not a redrawn bar
        self.progress = Progress(
            TextColumn("[bold blue]ep {task.fields[epoch]}"),
            BarColumn(bar_width=12),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("step {task.fields[step]}"),
            TextColumn("loss [bold]{task.fields[loss]}[/] ppl {task.fields[ppl]}"),
            TextColumn("{task.fields[rate]} tok/s"),
            TextColumn("lr {task.fields[lr]}"),
            TextColumn("{task.fields[elapsed]}<{task.fields[eta]}"),
            console=self.console, transient=False, refresh_per_second=4)
        self.progress.start()
        self.task = self.progress.add_task("train", total=1000, epoch=1, step="-", loss="-",
                                           ppl="-", rate="-", lr="-", elapsed="-", eta="-")

    def _on_progress(self, e: training.Progress) -> None:
        fields = dict(epoch=e.epoch + 1, step=format_count(e.step), loss=_fmt(e.loss, 3),
                      ppl=_fmt(e.perplexity, 1), rate=format_count(e.tokens_per_second),
                      lr=f"{e.lr:.2g}", elapsed=format_duration(e.elapsed),
                      eta=format_duration(e.eta_seconds))
        if self.progress is not None:
            done = 1000 * e.fraction if e.fraction is not None else 0
            self.progress.update(self.task, completed=done, **fields)
        elif time.monotonic() - self.last_log >= LOG_SECONDS:
            self.last_log = time.monotonic()
            percent = f" ({100 * e.fraction:.0f}%)" if e.fraction is not None else ""
            self.console.print(
                f"epoch {fields['epoch']} step {e.step:,}{percent} loss {fields['loss']} ppl "
                f"{fields['ppl']} {fields['rate']} tok/s lr {fields['lr']} elapsed "
                f"{fields['elapsed']} ETA {fields['eta']}")

    def _print(self, text: str) -> None:
        (self.progress.console if self.progress else self.console).print(text)

    def _on_validated(self, e: training.Validated) -> None:
        mark = "[green]best[/]" if e.improved else f"[dim]best {_fmt(math.exp(min(e.best_loss, 700)), 2)}[/]"
        self._print(f"  step {e.step:>8,}  valid loss {_fmt(e.loss, 4)}  ppl {_fmt(e.perplexity, 2)}  "
                    f"{mark}  lr {e.lr:.3g}")

    def _on_epoch_ended(self, e: training.EpochEnded) -> None:
        valid = (f"valid loss {_fmt(e.valid_loss, 4)} ppl {_fmt(e.valid_perplexity, 2)}"
                 if e.valid_loss is not None else "no validation")
        self._print(f"[bold]epoch {e.epoch}[/]: train loss {_fmt(e.train_loss, 4)} ppl "
                    f"{_fmt(e.train_perplexity, 2)}, {valid}, {format_duration(e.seconds)}, "
                    f"{format_count(e.tokens_per_second)} tok/s")

    def _on_note(self, e: training.Note) -> None:
        self._print(f"[yellow]{escape(e.text)}[/]")

    def _on_finished(self, e: training.Finished) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        reasons = {
            "completed": "all epochs done",
            "max_steps": "reached --max-steps",
            "time_limit": "reached --time-limit",
            "early_stopping": "validation stopped improving (--patience)",
            "interrupted": "interrupted; resume with `" + ("torchrun ... -m " if launched() else "")
                           + "lmcli train --resume`",
        }
        best = (f", best validation perplexity {_fmt(math.exp(min(e.best_valid_loss, 700)), 2)}"
                if e.best_valid_loss is not None else "")
        self.console.print(f"[bold green]done[/] after {e.step:,} steps "
                           f"({reasons.get(e.reason, e.reason)}){best}, "
                           f"{format_duration(e.elapsed)}, {format_count(e.tokens_per_second)} tok/s"
                           + (f", {format_count(e.achieved_flops)}FLOP/s = {100 * e.peak_share:.1f}% of "
                              "the GPU's peak" if e.peak_share is not None else ""))
        self.console.print(f"best model: {escape(str(e.best_path))}")

    def close(self) -> None:
        self._end_phase()
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def key_value_table(title: str | None, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, escape(value))
    return table


TABLE_PAGE = 200  # rows per printed table when scoring many sentences on a terminal


def score_table(per_token: bool, header: bool = True) -> Table:
    """Columns of fixed width, so that pages printed one after another line up."""
    caption = (f"tokens coloured by probability: [{surprise_colour(0.0)}]expected[/] to "
               f"[{surprise_colour(-99.0)}]surprising[/] (1e-{SURPRISE_DECADES} and below)"
               if per_token and header else None)
    table = Table(show_lines=per_token, show_header=header, expand=True, caption=caption)
    table.add_column("sentence", overflow="fold", ratio=1)
    for name in ("logprob", "log10prob", "tokens", "perplexity", "oov"):
        table.add_column(name, justify="right", width=10 if name != "oov" else 4, no_wrap=True)
    return table


UNKNOWN_STYLE = "bold red underline"  # underlined too, so it shows without colour


def marked_unknown(segments: list[tuple[str, bool]]) -> str:
    """Markup for text cut into runs, the runs the model reads as <UNK> marked."""
    return "".join(f"[{UNKNOWN_STYLE}]{escape(run)}[/]" if unknown else escape(run)
                   for run, unknown in segments)


SURPRISE_DECADES = 3  # red at a probability of 10**-3 and below, green at 1


def surprise_colour(logprob: float) -> str:
    """A token's colour by its probability: green where the model expected it, through
    yellow, to red where it was surprised (10**-SURPRISE_DECADES and below)."""
    share = min(1.0, max(0.0, 1.0 + logprob / (SURPRISE_DECADES * math.log(10.0))))
    red, green = (255, round(510 * share)) if share < 0.5 else (round(510 * (1 - share)), 255)
    return f"rgb({red},{green},0)"


def _token_markup(token: dict[str, Any], surface: str | None) -> str:
    number = f"[dim]:{token['logprob']:.2f}[/]"
    if token["token"] == "<UNK>":  # what the <UNK> stood for, where known
        shown = f"<UNK>={surface}" if surface else "<UNK>"
        return f"[{UNKNOWN_STYLE}]{escape(shown)}[/]{number}"
    return f"[{surprise_colour(token['logprob'])}]{escape(token['token'])}[/]{number}"


def add_score_row(table: Table, record: dict[str, Any], segments: list[tuple[str, bool]] | None = None,
                  surfaces: list[str] | None = None) -> None:
    """A sentence's row; ``segments`` mark its unknown parts, ``surfaces`` (one per token)
    say what each per-token <UNK> stood for."""
    text = marked_unknown(segments) if segments is not None else escape(record["text"])
    if "tokens" in record:
        surfaces = surfaces or []
        text += "\n" + " ".join(_token_markup(t, surfaces[i] if i < len(surfaces) else None)
                                 for i, t in enumerate(record["tokens"]))
    oov = f"[{UNKNOWN_STYLE}]{record['oov']}[/]" if record["oov"] else "0"
    table.add_row(text, f"{record['logprob']:.4f}", f"{record['log10prob']:.4f}",
                  str(record["num_tokens"]), _fmt(record["perplexity"], 2), oov)


def rerank_summary(report: Any, tuned: Any, stats: Any, seconds: float, weights: Any, metric: str) -> None:
    """Error rates before and after, oracle and weights on stderr: a table on a terminal,
    lines otherwise (stdout carries the rescored lines)."""
    console = stderr_console()
    name = metric.upper()
    rows: list[tuple[str, str]] = []
    if tuned is not None:
        rows.append(("tuned on dev", f"{name} {100 * tuned.error_start:.2f}% -> {100 * tuned.error_after:.2f}% "
                                     f"({tuned.points:,} weightings tried; from every LM weight 1, no bonus)"))
    rows.append(("weights", weights.flags() + (" (per character)" if metric == "cer" else "")))
    rows.append(("hypotheses", f"{stats.hypotheses:,} ({stats.unique_texts:,} distinct texts "
                               f"scored, {stats.hypotheses / max(seconds, 1e-9):,.0f} hyps/s)"))
    if report is not None:
        rows.append(("utterances", f"{report.utterances:,} with references ({report.ref_words:,} words, "
                                   f"{report.ref_chars:,} characters)"))
        for kind in ("wer", "cer"):
            rows += [(f"{kind.upper()} 1-best (AM)", f"{100 * report.am[kind]:.2f}%"),
                     (f"{kind.upper()} rescored", f"{100 * report.rescored[kind]:.2f}%"),
                     (f"{kind.upper()} oracle", f"{100 * report.oracle[kind]:.2f}%")]
    if console.is_terminal:
        console.print(key_value_table("rerank", rows))
    else:
        for key, value in rows:
            console.print(f"{key}: {value}", soft_wrap=True)