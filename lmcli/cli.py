"""The command-line program: parses options, calls the library, shows the results.

Data goes to stdout (text, TSV or ``--json`` lines) so it pipes; progress, tables meant for
people, warnings and errors go to stderr. A library :class:`LmcliError` becomes one red
line on stderr and a non-zero exit.
"""

from __future__ import annotations

import functools
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import click
import typer

from lmcli import __version__
from lmcli import checkpoint as ckpt
from lmcli import rerank as rr
from lmcli import ui
from lmcli.text import TextFiles, chunk_lines, iter_chunks
from lmcli.devices import resolve_device
from lmcli.distributed import RelayedError, env_world, launched
from lmcli.errors import LmcliError, SettingError, UsageError
from lmcli.recipes import RECIPE_BUDGETS, make_request
from lmcli.sampling import SamplingConfig, generate as generate_samples
from lmcli.scoring import evaluate_file, score_sentences
from lmcli.tokenizers import UNK_ID
from lmcli.train import resume_run, start_run
from lmcli.units import format_count, parse_duration, parse_int_list

app = typer.Typer(
    name="lmcli",
    help="Train recurrent (RNN / LSTM / GRU) language models on a text file; write poems, "
         "score sentences, evaluate perplexity.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

F = TypeVar("F", bound=Callable[..., Any])


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
                ui.error(exc.render(flag_of) if isinstance(exc, SettingError) else str(exc))
            raise typer.Exit(exc.exit_code) from None
        except LmcliError as exc:
            ui.error(_ranked(str(exc)))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            ui.error("interrupted")
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort, click.exceptions.Exit, click.exceptions.ClickException,
                click.exceptions.Abort):
            raise
        except BrokenPipeError:
            # `lmcli score ... | head`: the reader left; that is not an error. Point stdout at
            # /dev/null so the interpreter's final flush does not complain either.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None
        except Exception as exc:  # a bug or a failure nobody foresaw: still one line
            if os.environ.get("LMCLI_DEBUG"):
                raise
            if launched() and _peer_lost(exc):
                ui.error(_ranked("lost contact with the other training processes: one of them "
                                 "stopped (its error is shown above)"))
                raise typer.Exit(1) from None
            first = (str(exc).strip().splitlines() or [""])[0]
            ui.error(_ranked(f"unexpected {type(exc).__name__}: {first} (this is a bug in lmcli or its "
                     "libraries; LMCLI_DEBUG=1 shows the traceback)"))
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


FLAG_NAMES = {"cell": "--model", "valid_file": "--valid"}


def flag_of(setting: str) -> str:
    """The command-line flag of a library setting: ``hidden_dim`` -> ``--hidden-dim``."""
    return FLAG_NAMES.get(setting, "--" + setting.replace("_", "-"))


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


class Level(str, Enum):
    char = "char"
    word = "word"
    bpe = "bpe"
    unigram = "unigram"


class Cell(str, Enum):
    rnn = "rnn"
    lstm = "lstm"
    gru = "gru"


class Optimizer(str, Enum):
    adam = "adam"
    adamw = "adamw"
    sgd = "sgd"
    ntasgd = "ntasgd"


class Schedule(str, Enum):
    plateau = "plateau"
    cosine = "cosine"


class Softmax(str, Enum):
    full = "full"
    adaptive = "adaptive"
    auto = "auto"


class Batching(str, Enum):
    stream = "stream"
    sentences = "sentences"


class Recipe(str, Enum):
    tiny = "tiny"
    small = "small"
    medium = "medium"
    large = "large"


CheckpointOption = Annotated[
    str | None, typer.Option("--checkpoint", "-c", show_default=False,
                             help="A run folder (its best checkpoint) or a checkpoint file. "
                                  "Default: the last `lmcli train` run.")]
DeviceOption = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
JsonOption = Annotated[bool, typer.Option("--json", help="JSON lines on stdout, nothing else.")]

_DATA, _MODEL, _TRAIN, _RUN = "Data", "Model", "Training", "Run"


def _level_value(value: Enum | None) -> str | None:
    return value.value if value is not None else None


# ----------------------------------------------------------------------------- train


class _StopFlag:
    """Set by the first Ctrl-C / SIGTERM while training; a second Ctrl-C aborts.

    Under torchrun the workers run in sessions of their own: Ctrl-C reaches the launcher,
    which passes the signal on once and kills the workers --shutdown-timeout seconds later
    (30 by default). The ranks agree to stop within SYNC_EVERY steps and rank 0 saves."""

    def __init__(self, display: ui.TrainDisplay, quiet: bool = False) -> None:
        self.requested = False
        self.training = False
        self.display = display
        self.quiet = quiet  # a torchrun rank other than 0: rank 0 speaks for the run

    def __call__(self) -> bool:
        self.training = True  # the trainer asks only from its loop (on every rank)
        return self.requested

    def handle(self, signum: int, frame: Any) -> None:
        if not self.training or self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if self.display.json_mode or self.quiet:
            return
        again = ("torchrun stops the workers after its --shutdown-timeout" if launched()
                 else "Ctrl-C again to abort without saving")
        self.display.console.print(f"[yellow]stopping: saving a resumable checkpoint ({again})[/]")


@app.command()
@friendly_errors
def train(
    corpus: Annotated[list[Path] | None, typer.Argument(
        show_default=False, help="Text files, one sentence per line. None: the bundled Tang "
                                 "poems at char level, a few minutes on a CPU.")] = None,
    level: Annotated[Level | None, typer.Option(help="Tokens: char, word, bpe or unigram. (default: char)",
                                                rich_help_panel=_DATA, show_default=False)] = None,
    vocab_size: Annotated[int | None, typer.Option(help="Keep at most this many token types, "
                                                   "<EOS> and <UNK> included. (default: all; 4000 for bpe/unigram)",
                                                   rich_help_panel=_DATA, show_default=False)] = None,
    min_freq: Annotated[int | None, typer.Option(help="Keep char/word tokens seen at least this "
                                                 "often; rarer ones become <UNK>. (default: 2)",
                                                 rich_help_panel=_DATA, show_default=False)] = None,
    lowercase: Annotated[bool | None, typer.Option("--lowercase/--no-lowercase", help="Lowercase the text.",
                                                   rich_help_panel=_DATA, show_default=False)] = None,
    valid: Annotated[Path | None, typer.Option(help="Validation text file. Default: hold out "
                                               "--valid-fraction of the corpus.",
                                               rich_help_panel=_DATA, show_default=False)] = None,
    valid_fraction: Annotated[float | None, typer.Option(help="Share of corpus lines held out "
                                                         "for validation (0 = none), at most 20,000 "
                                                         "lines. (default: 0.05)",
                                                         rich_help_panel=_DATA, show_default=False)] = None,
    encoding: Annotated[str | None, typer.Option(help="Text encoding of the files. (default: utf-8)",
                                                 rich_help_panel=_DATA, show_default=False)] = None,
    errors: Annotated[str | None, typer.Option(help="On undecodable bytes: strict, replace or "
                                               "ignore. (default: strict)",
                                               rich_help_panel=_DATA, show_default=False)] = None,
    model: Annotated[Cell | None, typer.Option(help="Recurrent cell: rnn (tanh Elman), lstm or "
                                               "gru. (default: lstm)", rich_help_panel=_MODEL,
                                               show_default=False)] = None,
    layers: Annotated[int | None, typer.Option(help="Stacked recurrent layers. (default: 2)",
                                               rich_help_panel=_MODEL, show_default=False)] = None,
    embed_dim: Annotated[int | None, typer.Option(help="Embedding size.", rich_help_panel=_MODEL,
                                                  show_default=False)] = None,
    hidden_dim: Annotated[int | None, typer.Option(help="Hidden state size.", rich_help_panel=_MODEL,
                                                   show_default=False)] = None,
    recipe: Annotated[Recipe | None, typer.Option(help="A tested recipe for the level and a "
                                                 "budget: tiny (minutes on a CPU), small (15 "
                                                 "minutes), medium (an hour), large (GPU hours). "
                                                 "Flags given override it. (default: small)",
                                                 rich_help_panel=_MODEL, show_default=False)] = None,
    dropout: Annotated[float | None, typer.Option(help="Locked (variational) dropout on the last "
                                                  "layer's outputs; also the default for the "
                                                  "input and between-layer rates.", rich_help_panel=_MODEL,
                                                  show_default=False)] = None,
    dropout_input: Annotated[float | None, typer.Option(help="Locked dropout on the embeddings.",
                                                        rich_help_panel=_MODEL, show_default=False)] = None,
    dropout_hidden: Annotated[float | None, typer.Option(help="Locked dropout between layers.",
                                                         rich_help_panel=_MODEL, show_default=False)] = None,
    dropout_embed: Annotated[float | None, typer.Option(help="Embedding dropout: drop whole words "
                                                        "(rows of the embedding).",
                                                        rich_help_panel=_MODEL, show_default=False)] = None,
    weight_drop: Annotated[float | None, typer.Option(help="DropConnect on the hidden-to-hidden "
                                                      "weights (AWD-LSTM).",
                                                      rich_help_panel=_MODEL, show_default=False)] = None,
    tie_weights: Annotated[bool | None, typer.Option("--tie-weights/--no-tie-weights",
                                                     help="Share the embedding with the output "
                                                          "layer. (default: from the recipe)",
                                                     rich_help_panel=_MODEL, show_default=False)] = None,
    softmax: Annotated[Softmax | None, typer.Option(help="Output layer. full: one softmax over "
                                                    "the vocabulary; adaptive: frequency "
                                                    "clusters (Grave et al. 2017), exact "
                                                    "probabilities, several times faster on "
                                                    "large vocabularies; auto: adaptive when the "
                                                    "vocabulary has 1,250+ tokens and weights "
                                                    "are untied. (default: from the recipe)",
                                                    rich_help_panel=_MODEL, show_default=False)] = None,
    cutoffs: Annotated[str | None, typer.Option(help="Adaptive softmax cluster boundaries, as "
                                                "token ranks: 1000,4000. (default: 1000, "
                                                "4000, 20000, 100000 below the vocabulary size)",
                                                rich_help_panel=_MODEL, show_default=False)] = None,
    seq_len: Annotated[int | None, typer.Option(help="BPTT length: tokens per window.",
                                                rich_help_panel=_TRAIN, show_default=False)] = None,
    batch_size: Annotated[int | None, typer.Option(help="Parallel lanes of text per step.",
                                                   rich_help_panel=_TRAIN, show_default=False)] = None,
    epochs: Annotated[int | None, typer.Option(help="Passes over the corpus. (default: 10)",
                                               rich_help_panel=_TRAIN, show_default=False)] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many steps.",
                                                  rich_help_panel=_TRAIN, show_default=False)] = None,
    time_limit: Annotated[str | None, typer.Option(help="Stop after this long (90s, 15m, 2h) and "
                                                   "keep the best model.",
                                                   rich_help_panel=_TRAIN, show_default=False)] = None,
    optimizer: Annotated[Optimizer | None, typer.Option(help="adam, adamw, sgd or ntasgd (SGD "
                                                        "with non-monotonically triggered averaging).",
                                                        rich_help_panel=_TRAIN, show_default=False)] = None,
    lr_schedule: Annotated[Schedule | None, typer.Option(help="plateau: decay when validation "
                                                         "stalls; cosine: decay to zero over the "
                                                         "budget (epochs, steps or time).",
                                                         rich_help_panel=_TRAIN, show_default=False)] = None,
    warmup: Annotated[int | None, typer.Option(help="Steps of linear learning-rate warm-up.",
                                               rich_help_panel=_TRAIN, show_default=False)] = None,
    ar: Annotated[float | None, typer.Option(help="Activation regularisation (AR) weight.",
                                             rich_help_panel=_TRAIN, show_default=False)] = None,
    tar: Annotated[float | None, typer.Option(help="Temporal activation regularisation (TAR) weight.",
                                              rich_help_panel=_TRAIN, show_default=False)] = None,
    nonmono: Annotated[int | None, typer.Option(help="NT-ASGD: start averaging when validation "
                                                "is worse than N checks ago. (default: 5)",
                                                rich_help_panel=_TRAIN, show_default=False)] = None,
    batching: Annotated[Batching | None, typer.Option(help="stream: windows of the running text, "
                                                      "state carried; sentences: whole sentences "
                                                      "from a zero state, as score sees them.",
                                                      rich_help_panel=_TRAIN, show_default=False)] = None,
    sentence_phase: Annotated[float | None, typer.Option(
        help="Share of the budget, at its end, that stream batching spends on whole sentences "
             "from an empty context, as score sees them (0 = none). (default: from the recipe)",
        rich_help_panel=_TRAIN, show_default=False)] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate. (default: from the recipe)",
                                             rich_help_panel=_TRAIN, show_default=False)] = None,
    clip: Annotated[float | None, typer.Option(help="Gradient-norm clipping (0 = off). "
                                               "(default: 1.0 adam, 0.25 sgd)",
                                               rich_help_panel=_TRAIN, show_default=False)] = None,
    weight_decay: Annotated[float | None, typer.Option(help="L2 weight decay. (default: 0)",
                                                       rich_help_panel=_TRAIN, show_default=False)] = None,
    lr_decay: Annotated[float | None, typer.Option(help="Multiply the learning rate by this when "
                                                   "validation stalls. (default: 0.5 adam, 0.25 sgd)",
                                                   rich_help_panel=_TRAIN, show_default=False)] = None,
    patience: Annotated[int | None, typer.Option(help="Stop after this many validations in a "
                                                 "row without improvement. (default: 5 with "
                                                 "plateau decay; off with cosine decay)",
                                                 rich_help_panel=_TRAIN, show_default=False)] = None,
    lr_patience: Annotated[int | None, typer.Option(help="Decay the learning rate after this "
                                                    "many validations in a row without "
                                                    "improvement. (default: 2)",
                                                    rich_help_panel=_TRAIN, show_default=False)] = None,
    eval_every: Annotated[int | None, typer.Option(help="Validate every N steps. (default: 4 times "
                                                   "an epoch)", rich_help_panel=_TRAIN,
                                                   show_default=False)] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed; the same seed and data give the "
                                             "same run on a CPU. (default: 1234)",
                                             rich_help_panel=_TRAIN, show_default=False)] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N. (default: auto)",
                                               rich_help_panel=_RUN, show_default=False)] = None,
    amp: Annotated[bool | None, typer.Option("--amp/--no-amp", help="Mixed precision: bf16 "
                                             "products (fp16 with a scaler on older GPUs). "
                                             "(default: on where bf16 is native: Ampere+ GPUs, "
                                             "AVX512-BF16/AMX CPUs)",
                                             rich_help_panel=_RUN, show_default=False)] = None,
    compile_step: Annotated[bool | None, typer.Option("--compile/--no-compile", help="Compile the "
                                                      "training step with torch.compile: slower to "
                                                      "start, maybe faster per step (measure with "
                                                      "benchmarks/bench_train.py). (default: off)",
                                                      rich_help_panel=_RUN, show_default=False)] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run folder. (default: "
                                             "checkpoints/CORPUS-LEVEL-MODEL-TIME)",
                                             rich_help_panel=_RUN, show_default=False)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out (default: "
                                         "the last run) where it stopped.",
                                         rich_help_panel=_RUN)] = False,
    force: Annotated[bool, typer.Option("--force", help="Start over in an --out folder that "
                                        "holds a run.", rich_help_panel=_RUN)] = False,
    sample: Annotated[bool, typer.Option("--sample/--no-sample", help="Show samples from the "
                                         "best model at the end.", rich_help_panel=_RUN)] = True,
    json_output: Annotated[bool, typer.Option("--json", help="Events as JSON lines on stdout "
                                              "instead of progress bars.", rich_help_panel=_RUN)] = False,
) -> None:
    """Build the vocabulary and train a language model; save the best and the last checkpoints."""
    seconds = parse_duration(time_limit) if time_limit is not None else None
    budget = {"epochs": epochs, "max_steps": max_steps, "time_limit": seconds, "patience": patience,
              "lr_patience": lr_patience, "eval_every": eval_every, "device": device, "amp": amp,
              "compile": compile_step}
    # Under torchrun every rank runs this command; rank 0 alone talks to the user.
    quiet = not env_world().main
    display = ui.TrainDisplay(json_mode=json_output)
    stop = _StopFlag(display, quiet)
    previous = {s: signal.signal(s, stop.handle) for s in (signal.SIGINT, signal.SIGTERM)}

    announce: list[str] = []  # shown once training starts (errors before it stay one line)

    def on_event(event: Any) -> None:
        stop.training = True
        while announce:
            ui.stderr_console().print(announce.pop())
        display.event(event)

    flags = {"level": _level_value(level), "vocab_size": vocab_size, "min_freq": min_freq,
             "lowercase": lowercase, "valid_file": str(valid) if valid else None,
             "valid_fraction": valid_fraction, "encoding": encoding, "errors": errors,
             "model": _level_value(model), "layers": layers, "embed_dim": embed_dim,
             "hidden_dim": hidden_dim, "dropout": dropout, "tie_weights": tie_weights,
             "dropout_input": dropout_input, "dropout_hidden": dropout_hidden,
             "dropout_embed": dropout_embed, "weight_drop": weight_drop,
             "softmax": _level_value(softmax),
             "cutoffs": parse_int_list(cutoffs, "--cutoffs") if cutoffs is not None else None,
             "seq_len": seq_len, "batch_size": batch_size, "optimizer": _level_value(optimizer),
             "lr": lr, "clip": clip, "weight_decay": weight_decay, "lr_decay": lr_decay,
             "lr_schedule": _level_value(lr_schedule), "warmup": warmup, "ar": ar, "tar": tar,
             "nonmono": nonmono, "batching": _level_value(batching),
             "sentence_phase": sentence_phase, "recipe": _level_value(recipe),
             "seed": seed}
    try:
        if resume:
            fixed = [name for name, value in flags.items() if value is not None]
            if fixed:
                raise UsageError(f"--{fixed[0].replace('_', '-')} cannot change when resuming; "
                                 "only --epochs, --max-steps, --time-limit, --patience, "
                                 "--lr-patience, --eval-every, --device, --amp and --compile can")
            run_dir = out or ckpt.latest_run()
            if run_dir is None:
                raise LmcliError("nothing to resume: no --out given and no run recorded in checkpoints/")
            finished = resume_run(run_dir, corpus=[str(p) for p in corpus] if corpus else None,
                                  overrides={k: v for k, v in budget.items() if v is not None},
                                  on_event=on_event, on_data_event=display.data_event,
                                  should_stop=stop)
        else:
            request = make_request([str(p) for p in corpus] if corpus else None,
                                   {**flags, **budget}, out_dir=out, force=force)
            if not corpus and not json_output and not quiet:
                minutes = (request.train.time_limit or 0) / 60
                ui.stderr_console().print(
                    f"[bold]no corpus given:[/] training on the bundled Tang poems "
                    f"({request.corpus[0]}) at char level for {minutes:g} minutes "
                    "(pass a file to train on your own text)")
            elif request.recipe and not json_output and not quiet:
                announce.append(f"[bold]recipe:[/] {request.recipe} for {request.data.level} level "
                                f"({RECIPE_BUDGETS[request.recipe]}; flags given override it)")
            finished = start_run(request, on_event=on_event, on_data_event=display.data_event,
                                 should_stop=stop)
    finally:
        display.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    if sample and not json_output and not quiet and finished.reason != "interrupted":
        _show_training_samples(finished.best_path, display)
    if finished.reason == "interrupted":
        raise typer.Exit(130)


def _show_training_samples(best: Path, display: ui.TrainDisplay) -> None:
    checkpoint = ckpt.load(best)
    model = checkpoint.build_model("cpu")
    samples = generate_samples(model, checkpoint.tokenizer, num_samples=3,
                               config=SamplingConfig(temperature=0.8, max_tokens=300), seed=0)
    console = display.console
    console.print("[bold]samples[/] (temperature 0.8):")
    for s in samples:
        console.print(f"  {ui.escape(s.text)}")
    run = best.parent
    console.print(f"[dim]more:[/] lmcli generate -c {run} -n 5 --temperature 0.8")


# ----------------------------------------------------------------------------- info


def _load(checkpoint: str | None, device: str = "cpu") -> tuple[ckpt.Checkpoint, Any]:
    path = ckpt.resolve(checkpoint)
    loaded = ckpt.load(path)
    return loaded, loaded.build_model(resolve_device(device))


@app.command()
@friendly_errors
def info(checkpoint: CheckpointOption = None, json_output: JsonOption = False) -> None:
    """What a checkpoint holds: config, vocabulary, parameters, training history."""
    loaded = ckpt.load(ckpt.resolve(checkpoint))
    summary = loaded.summary()
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
                  + (f", adaptive softmax (clusters from {', '.join(f'{c:,}' for c in config.cutoffs or [])})"
                     if config.softmax == "adaptive" else "")),
        ("regularisation", f"locked dropout {config.input_rate:g} in / {config.hidden_rate:g} "
                           f"between / {config.dropout:g} out, embedding dropout "
                           f"{config.dropout_embed:g}, weight-drop {config.weight_drop:g}, "
                           f"AR {train_config.get('ar', 0):g}, TAR {train_config.get('tar', 0):g}"),
        ("parameters", f"{summary['parameters']:,}"),
        ("tokens", f"{tokenizer.level} level, vocabulary {config.vocab_size:,} "
                   f"(<EOS>, <UNK> included){', lowercased' if tokenizer.lowercase else ''}"),
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
        ("most frequent", " ".join(tokenizer.tokens[2:22])),
    ]
    if history:
        shown = history[-5:]
        rows.append(("validation history", ", ".join(
            f"{m['step']}: {math.exp(min(m['loss'], 700)):.2f}" for m in shown)))
    ui.stdout_console().print(ui.key_value_table(None, rows))


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
    """Show how a checkpoint's tokenizer splits text (tokens, ids, <UNK>s)."""
    loaded = ckpt.load(ckpt.resolve(checkpoint))
    tokenizer = loaded.tokenizer
    texts: Iterator[str] | list[str] = _stdin_lines() if not text or text == ["-"] else text
    terminal = ui.stdout_is_terminal() and not json_output
    console = ui.stdout_console()
    for item in texts:
        ids = tokenizer.encode(tokenizer.normalize(item))
        pieces = [tokenizer.tokens[i] for i in ids]
        surface = tokenizer.surface(item)
        if json_output:
            ui.emit_json({"text": item, "tokens": pieces, "ids": ids, "surface": surface,
                          "num_tokens": len(ids) + 1, "oov": sum(1 for i in ids if i == UNK_ID)})
        elif terminal:
            shown = " ".join(f"[red]{ui.escape(repr(s)[1:-1])}=<UNK>[/]" if i == UNK_ID
                             else f"[cyan]{ui.escape(p)}[/]" for p, s, i in zip(pieces, surface, ids))
            console.print(f"{shown} [dim]<EOS>[/]  [dim]({len(ids) + 1} tokens)[/]")
        else:
            print(" ".join(pieces))


# ----------------------------------------------------------------------------- eval


@app.command("eval")
@friendly_errors
def eval_command(
    file: Annotated[Path, typer.Argument(help="Text to evaluate, one sentence per line.")],
    checkpoint: CheckpointOption = None,
    stream: Annotated[bool, typer.Option("--stream", help="Carry the state across lines (as in "
                                         "training) instead of scoring each line from an empty "
                                         "context.")] = False,
    batch_size: Annotated[int, typer.Option(help="Sentences scored together.")] = 64,
    encoding: Annotated[str, typer.Option(help="Text encoding of the file.")] = "utf-8",
    errors: Annotated[str, typer.Option(help="On undecodable bytes: strict, replace or ignore.")] = "strict",
    device: DeviceOption = "auto",
    json_output: JsonOption = False,
) -> None:
    """Perplexity, cross-entropy and bits per token / per character over a file."""
    files = TextFiles.of([file], encoding, errors)
    loaded, model = _load(checkpoint, device)
    result = evaluate_file(model, loaded.tokenizer, files, batch_size=batch_size, stream=stream)
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


# ----------------------------------------------------------------------------- generate


@app.command()
@friendly_errors
def generate(
    checkpoint: CheckpointOption = None,
    prime: Annotated[str, typer.Option(help="Text to start from (continued, and printed first).")] = "",
    num_samples: Annotated[int, typer.Option("--num-samples", "-n", help="Samples, drawn together as one batch.")] = 1,
    max_tokens: Annotated[int, typer.Option(help="Most tokens to generate per sample.")] = 500,
    lines: Annotated[int, typer.Option(help="Go on past <EOS> until this many lines are written, "
                                       "keeping the state (a quatrain: --lines 4).")] = 1,
    temperature: Annotated[float, typer.Option(help="Below 1: safer; above 1: wilder.")] = 1.0,
    top_k: Annotated[int, typer.Option(help="Sample among the k most likely tokens (0 = off).")] = 0,
    top_p: Annotated[float, typer.Option(help="Sample among the most likely tokens holding this "
                                         "much probability (1.0 = off).")] = 1.0,
    greedy: Annotated[bool, typer.Option("--greedy", help="Always take the most likely token.")] = False,
    seed: Annotated[int | None, typer.Option(help="Random seed: the same seed gives the same text.",
                                             show_default=False)] = None,
    device: DeviceOption = "auto",
    json_output: JsonOption = False,
) -> None:
    """Write new text from a checkpoint; it never writes <UNK>."""
    config = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy,
                            max_tokens=max_tokens, lines=lines).validate()
    loaded, model = _load(checkpoint, device)
    samples = generate_samples(model, loaded.tokenizer, prime=prime, num_samples=num_samples,
                               config=config, seed=seed)
    for index, item in enumerate(samples):
        if json_output:
            ui.emit_json({"text": item.text, "tokens": item.tokens, "logprob": item.logprob})
        else:
            if index:
                print()
            print(item.text)


# ----------------------------------------------------------------------------- score


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
    batch_size: Annotated[int, typer.Option(help="Sentences scored together.")] = 64,
    encoding: Annotated[str, typer.Option(help="Text encoding of --file.")] = "utf-8",
    errors: Annotated[str, typer.Option(help="On undecodable bytes: strict, replace or ignore.")] = "strict",
    device: DeviceOption = "auto",
    json_output: JsonOption = False,
) -> None:
    """Log-probability of sentences (natural log, <EOS> included), one result a line."""
    source = _sentences(sentences, file, encoding, errors)
    loaded, model = _load(checkpoint, device)
    tokenizer = loaded.tokenizer
    # Typing sentences at a terminal: answer each line at once instead of in groups.
    interactive = sys.stdin.isatty() and (file is not None and str(file) == "-" or sentences == ["-"])
    results = score_sentences(model, tokenizer, source, batch_size=batch_size, eos=not no_eos,
                              per_token=per_token, group_size=1 if interactive else 4096)
    terminal = ui.stdout_is_terminal() and not json_output
    table = ui.score_table(per_token, header=True) if terminal else None
    shown = 0
    for result in results:
        record = {"text": result.text, "logprob": result.logprob, "log10prob": result.log10prob,
                  "num_tokens": result.num_tokens, "perplexity": result.perplexity,
                  "oov": result.oov}
        if per_token:
            record["tokens"] = [{"token": tokenizer.tokens[i], "logprob": lp}
                                for i, lp in zip(result.token_ids, result.token_logprobs or [])]
        if json_output:
            ui.emit_json(record)
        elif table is not None:
            ui.add_score_row(table, record)
            shown += 1
            if shown % ui.TABLE_PAGE == 0:  # long inputs: show a page at a time
                ui.stdout_console().print(table)
                table = ui.score_table(per_token, header=False)
        else:
            print(f"{result.logprob:.6f}\t{result.perplexity:.4f}\t{result.text}", flush=False)
    if table is not None and table.row_count:
        ui.stdout_console().print(table)


# ----------------------------------------------------------------------------- rerank


@app.command()
@friendly_errors
def rerank(
    nbest: Annotated[str, typer.Argument(help="N-best list: JSON lines, TSV (id, am_score, "
                                         "text) or Kaldi text (uttid-K words; scores in "
                                         "--scores). - reads stdin.")],
    checkpoint: CheckpointOption = None,
    fmt: Annotated[str, typer.Option("--format", help="auto, jsonl, tsv or kaldi.")] = "auto",
    scores: Annotated[Path | None, typer.Option(help="Kaldi N-best scores: 'uttid-K score' lines.",
                                                show_default=False)] = None,
    refs: Annotated[Path | None, typer.Option(help="References, 'uttid words...' lines (for "
                                              "TSV and Kaldi input; JSON lines carry \"ref\").",
                                              show_default=False)] = None,
    am_is_cost: Annotated[bool, typer.Option("--am-is-cost", help="The scores are costs (lower "
                                             "is better, as Kaldi writes them): negate them.")] = False,
    lm_weight: Annotated[float | None, typer.Option(help="Weight of the LM log-probability. "
                                                    "(default: 1.0)", show_default=False)] = None,
    bonus: Annotated[float | None, typer.Option(help="Added per word of the hypothesis. "
                                                "(default: 0.0)", show_default=False)] = None,
    tune: Annotated[Path | None, typer.Option(help="Dev N-best list with references: choose "
                                              "--lm-weight and --bonus on it (lowest WER), then "
                                              "apply them.", show_default=False)] = None,
    dev_scores: Annotated[Path | None, typer.Option(help="--scores for a Kaldi --tune list.",
                                                    show_default=False)] = None,
    dev_refs: Annotated[Path | None, typer.Option(help="--refs for a TSV or Kaldi --tune list.",
                                                  show_default=False)] = None,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Skip utterances with no "
                                           "hypotheses or a missing score, with a warning.")] = False,
    batch_size: Annotated[int, typer.Option(help="Hypotheses scored together.")] = 128,
    encoding: Annotated[str, typer.Option(help="Text encoding of the input files.")] = "utf-8",
    device: DeviceOption = "auto",
) -> None:
    """Rescore N-best lists: total = am_score + lm_weight * lm_logprob + bonus * words.

    Writes one JSON line per utterance (hypotheses best first) to stdout; with references,
    a summary of word error rates to stderr.
    """
    if tune is not None and (lm_weight is not None or bonus is not None):
        raise UsageError("--tune chooses --lm-weight and --bonus itself; give one or the other")
    weights = rr.Weights(1.0 if lm_weight is None else lm_weight, 0.0 if bonus is None else bonus)
    if not all(math.isfinite(v) for v in (weights.lm_weight, weights.bonus)):
        raise UsageError("--lm-weight and --bonus must be finite numbers")
    stdin = sys.stdin if nbest == "-" else None
    source = rr.NbestSource(nbest, fmt, scores, refs, am_is_cost, encoding)
    test = rr.read_nbest(source, stdin=stdin, skip_bad=skip_bad, warn=ui.warn)
    dev: list[rr.Utterance] = []
    if tune is not None:
        dev = rr.read_nbest(rr.NbestSource(tune, fmt, dev_scores, dev_refs, am_is_cost, encoding),
                            skip_bad=skip_bad, warn=ui.warn)
        if not any(u.ref is not None for u in dev):
            raise LmcliError(f"{tune}: no references to tune on (JSON \"ref\" fields or --dev-refs)")
    loaded, model = _load(checkpoint, device)
    started = time.perf_counter()
    stats = rr.attach_lm_scores(test + dev, model, loaded.tokenizer, batch_size=batch_size)
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
    ui.rerank_summary(report, tuned, stats, seconds, weights)


def main() -> None:
    """Entry point of the ``lmcli`` command."""
    app()
