"""What every command shares: the Typer app, the shared options, and errors as one line.

Data goes to stdout (text, TSV or ``--json`` lines) so it pipes; progress, tables meant for
people, warnings and errors go to stderr. A library :class:`LmcliError` becomes one red
line on stderr and a non-zero exit, its settings shown as their flags.
"""

from __future__ import annotations

import errno
import functools
import os
import sys
from pathlib import Path
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from lmcli import __version__
from lmcli import checkpoint as ckpt
from lmcli import ui
from lmcli.devices import resolve_device
from lmcli.distributed import RelayedError, launched
from lmcli.disk import write_failure
from lmcli.errors import LmcliError, UsageError
from lmcli.train.resources import out_of_memory
from lmcli.settings import Setting
from lmcli.train.config import DEVICE_HELP, all_settings

app = typer.Typer(
    name="lmcli",
    help="Train recurrent (RNN / LSTM / GRU) language models on a text file; write poems, "
         "score sentences, evaluate perplexity.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

F = TypeVar("F", bound=Callable[..., Any])


def _typer_exits() -> tuple[type[BaseException], ...]:
    """What Typer (or the click it runs on) raises to end a command: passed on untouched.
    Typer before 0.2x runs on click; later ones carry their own copy and no click at all."""
    kinds: list[type[BaseException]] = [typer.Exit, typer.Abort]
    try:
        from typer.exceptions import TyperException  # the vendored click's exceptions' base
        kinds.append(TyperException)
    except ImportError:
        pass
    try:
        from click import exceptions as click_exceptions
        kinds += [click_exceptions.Exit, click_exceptions.ClickException, click_exceptions.Abort]
    except ImportError:
        pass
    return tuple(kinds)


_TYPER_EXITS = _typer_exits()


def friendly_errors(command: F) -> F:
    """Turn library errors into one red line and an exit code (also under CliRunner)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except RelayedError as exc:  # rank 0's error, which rank 0 shows
            raise typer.Exit(exc.exit_code) from None
        except UsageError as exc:  # a bad flag is bad on every torchrun rank: rank 0 says so
            if _rank() == "0":
                ui.error(exc.render(flag_of))
            raise typer.Exit(exc.exit_code) from None
        except LmcliError as exc:
            ui.error(_ranked(exc.render(flag_of)))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            ui.error("interrupted")
            raise typer.Exit(130) from None
        except _TYPER_EXITS:
            raise
        except BrokenPipeError:
            # `lmcli score ... | head`: the reader left; that is not an error. Point stdout at
            # /dev/null so the interpreter's final flush does not complain either.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None
        except OSError as exc:  # the environment (a disk, a device, permissions), not lmcli
            if os.environ.get("LMCLI_DEBUG"):
                raise
            ui.error(_ranked(environment_failure(exc)))
            raise typer.Exit(1) from None
        except Exception as exc:  # a bug or a failure nobody foresaw: still one line
            if os.environ.get("LMCLI_DEBUG"):
                raise
            if out_of_memory(exc):
                ui.error(_ranked(f"ran out of memory ({(str(exc).strip().splitlines() or [''])[0][:160]}); "
                                 "lower --batch-size, or use a smaller model"))
                raise typer.Exit(1) from None
            if launched() and _peer_lost(exc):
                ui.error(_ranked("lost contact with the other training processes: one of them "
                                 "stopped (its error is shown above)"))
                raise typer.Exit(1) from None
            first = (str(exc).strip().splitlines() or [""])[0]
            ui.error(_ranked(f"unexpected {type(exc).__name__}: {first} (this is a bug in lmcli or its "
                     "libraries; LMCLI_DEBUG=1 shows the traceback)"))
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def flag_of(name: str) -> str:
    """The command-line flag of a setting or option name: ``hidden_dim`` -> ``--hidden-dim``,
    ``cell`` -> ``--model`` (as its declaration says)."""
    item: Setting | None = all_settings().get(name)
    return item.flag if item is not None else "--" + name.replace("_", "-")


def _peer_lost(exc: Exception) -> bool:
    """A collective failed because another torchrun process went away (gloo says so in a
    RuntimeError, NCCL in a DistError)."""
    import torch.distributed as dist

    text = str(exc)
    return (isinstance(exc, getattr(dist, "DistError", ())) or "closed by peer" in text
            or "reset by peer" in text)


def _rank() -> str:
    """This process's torchrun rank ("0" when not under torchrun)."""
    return os.environ.get("RANK", "0") if launched() else "0"


def _ranked(message: str) -> str:
    """An error as a torchrun rank other than 0 shows it: which process it came from."""
    rank = _rank()
    return message if rank == "0" else f"rank {rank}: {message}"


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"lmcli {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=version_callback, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    """lmcli: recurrent language models from the shell."""


CheckpointOption = Annotated[
    str | None, typer.Option("--checkpoint", "-c", show_default=False,
                             help="A run folder (its best checkpoint) or a checkpoint file. "
                                  "Default: the last `lmcli train` run.")]
CheckpointsOption = Annotated[list[str] | None, typer.Option(
    "--checkpoint", "-c", show_default=False,
    help="A run folder (its best checkpoint) or a checkpoint file; once per model to combine several "
         "(a forward and a backward one, say). Default: the last `lmcli train` run.")]
DeviceOption = Annotated[str, typer.Option("--device", help=DEVICE_HELP)]
JsonOption = Annotated[bool, typer.Option("--json", help="JSON lines on stdout, nothing else.")]
SeedOption = Annotated[int | None, typer.Option(help="Random seed: the same seed gives the same text.",
                                                show_default=False)]
EncodingOption = Annotated[str, typer.Option(help="Text encoding of the input files.")]
SentenceBatchOption = Annotated[int, typer.Option("--batch-size", help="Sentences scored together.")]
ErrorsOption = Annotated[str, typer.Option(help="On undecodable bytes: strict, replace or ignore.")]


def load_model(checkpoint: str | None, device: str = "cpu") -> tuple[ckpt.Checkpoint, Any]:
    """A checkpoint (a run folder, a file, or the last run) and its model on ``device``."""
    path = ckpt.resolve(checkpoint)
    loaded = ckpt.load(path)
    return loaded, loaded.build_model(resolve_device(device))


def language_model(checkpoint: str | None, device: str = "cpu") -> Any:
    """A checkpoint's model, tokenizer and script conversion (a :class:`lmcli.rerank.LanguageModel`),
    as rerank and score combine them; a KenLM file (.arpa, .bin...) is read by KenLM instead."""
    from lmcli.ngram import KenLM, is_ngram_file
    from lmcli.rerank import LanguageModel

    if is_ngram_file(checkpoint):
        return KenLM(str(checkpoint))
    return LanguageModel.of(*load_model(checkpoint, device))


def environment_failure(error: OSError) -> str:
    """One line for an operating-system error: what failed, on which file (a full disk,
    a quota or a size limit as the disk errors say them, with the free space)."""
    if error.filename and error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return str(write_failure(Path(error.filename), error, None))
    what = (error.strerror or type(error).__name__).lower()
    return f"{what}: {error.filename}" if error.filename else what

