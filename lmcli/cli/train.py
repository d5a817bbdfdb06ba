"""``lmcli train``: its options are derived from the settings' declarations.

Every setting (:func:`lmcli.train.config.all_settings`) becomes one option: its flag,
type, choices, help and the default that will apply, "from the recipe" where recipes set
it. The command's own options (the corpus, ``--recipe``, ``--out``, ``--resume`` ...) are
declared here. A new setting needs no change in this file.
"""

from __future__ import annotations

import enum
import inspect
import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from lmcli import checkpoint as ckpt
from lmcli import ui
from lmcli.cli.common import app, flag_of, friendly_errors
from lmcli.distributed import env_world, launched
from lmcli.errors import LmcliError, UsageError
from lmcli.recipes import RECIPE_BUDGETS, RECIPE_NAMES, RECIPES, make_request
from lmcli.poems import PoemRequest, write
from lmcli.sampling import SamplingConfig
from lmcli.tensorboard import TensorBoardLog
from lmcli.settings import Setting, default_text
from lmcli.train import resume_run, start_run
from lmcli.train.config import all_settings

_COMMAND = "Run"


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


# ----------------------------------------------------------------------------- options


def _shown(template: str) -> str:
    return LmcliError(template=template).render(flag_of)


def help_default(item: Setting) -> str:
    """The default --help states: what applies when the flag is not given."""
    recipes = [recipe for level in RECIPES.values() for recipe in level.values()]
    setting_recipes = sum(item.name in recipe for recipe in recipes)
    own = _shown(default_text(item))
    if setting_recipes == len(recipes):
        return "from the recipe"
    if setting_recipes:
        return f"from the recipe, else {own}"
    return own


def _annotation(item: Setting) -> Any:
    """The option's type and typer.Option for a setting; every one defaults to None (not given)."""
    flag, shown = item.flag, f"{_shown(item.spec.help)} (default: {help_default(item)})"
    common = {"help": shown, "rich_help_panel": item.spec.panel, "show_default": False}
    if item.kind is bool:
        return Annotated[bool | None, typer.Option(f"{flag}/--no-{flag[2:]}", **common)]
    if item.spec.choices:
        choices = enum.Enum(item.name.title(), {c: c for c in item.spec.choices}, type=str)  # type: ignore[misc]
        return Annotated[choices | None, typer.Option(flag, **common)]
    kind = str if item.spec.parse is not None or item.kind not in (int, float) else item.kind
    return Annotated[kind | None, typer.Option(flag, **common)]


def _command_options() -> list[inspect.Parameter]:
    """The options of the command itself, not settings of a run."""
    recipes = ", ".join(f"{name} ({RECIPE_BUDGETS[name]})" for name in RECIPE_NAMES)
    recipe_type = enum.Enum("Recipe", {name: name for name in RECIPE_NAMES}, type=str)  # type: ignore[misc]
    specs: list[tuple[str, Any, Any]] = [
        ("corpus", None, Annotated[list[Path] | None, typer.Argument(
            show_default=False, help="Text files, one sentence per line. None: the bundled Tang poems "
                                     "at char level, a few minutes on a CPU.")]),
        ("recipe", None, Annotated[recipe_type | None, typer.Option(
            help=f"A tested recipe for the level and a budget: {recipes}. Flags given override it. "
                 "(default: by --time-limit on a CPU, small without one; large on a GPU)",
            rich_help_panel=_COMMAND, show_default=False)]),
        ("out", None, Annotated[Path | None, typer.Option(
            "--out", "-o", help="Run folder. (default: checkpoints/CORPUS-LEVEL-MODEL-TIME)",
            rich_help_panel=_COMMAND, show_default=False)]),
        ("resume", False, Annotated[bool, typer.Option(
            "--resume", help="Continue the run in --out (default: the last run) where it stopped; "
                             "the first command's flags may be given again.", rich_help_panel=_COMMAND)]),
        ("init_from", None, Annotated[str | None, typer.Option(
            "--init-from", help="Fine-tune: start a new run from this run's (or checkpoint's) weights "
                                "and vocabulary, with a fresh optimizer and schedule; its settings "
                                "are the defaults, the learning rate 0.3 times its own.",
            rich_help_panel=_COMMAND, show_default=False)]),
        ("force", False, Annotated[bool, typer.Option(
            "--force", help="Start over in an --out folder that holds a run.", rich_help_panel=_COMMAND)]),
        ("sample", True, Annotated[bool, typer.Option(
            "--sample/--no-sample", help="Show samples from the best model at the end.",
            rich_help_panel=_COMMAND)]),
        ("tensorboard", False, Annotated[bool, typer.Option(
            "--tensorboard", help="Also write the training and validation scalars for TensorBoard into "
                                  "RUN/tensorboard (needs pip install 'lmcli[tensorboard]').",
            rich_help_panel=_COMMAND)]),
        ("json_output", False, Annotated[bool, typer.Option(
            "--json", help="Events as JSON lines on stdout instead of progress bars.",
            rich_help_panel=_COMMAND)]),
    ]
    return [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind)
            for name, default, kind in specs]


def train_parameters() -> list[inspect.Parameter]:
    """The corpus, one option per setting, then the command's own options."""
    settings = [inspect.Parameter(item.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                  annotation=_annotation(item)) for item in all_settings().values()]
    corpus, *own = _command_options()
    return [corpus, *settings, *own]


def given_settings(options: dict[str, Any]) -> dict[str, Any]:
    """The settings among parsed options, as the library takes them (None: not given)."""
    given = {}
    for name, item in all_settings().items():
        value = options.get(name)
        if isinstance(value, enum.Enum):
            value = value.value
        if value is not None and item.spec.parse is not None:
            value = item.spec.parse(value)
        given[name] = value
    return given


# ----------------------------------------------------------------------------- the command


def train(**options: Any) -> None:
    """Build the vocabulary and train a language model; save the best and the last checkpoints."""
    corpus = [str(path) for path in options["corpus"] or []] or None
    recipe = options["recipe"].value if options["recipe"] is not None else None
    given = given_settings(options)
    json_output = options["json_output"]
    quiet = not env_world().main  # under torchrun every rank runs this; rank 0 talks
    display = ui.TrainDisplay(json_mode=json_output)
    stop = _StopFlag(display, quiet)
    previous = {s: signal.signal(s, stop.handle) for s in (signal.SIGINT, signal.SIGTERM)}
    announce: list[str] = []  # shown once training starts (errors before it stay one line)

    def show(event: Any) -> None:
        stop.training = True
        while announce:
            ui.stderr_console().print(announce.pop())
        display.event(event)

    board = TensorBoardLog(show) if options["tensorboard"] else None
    on_event = board or show

    try:
        if options["resume"] and options["init_from"]:
            raise UsageError("--resume continues a run; --init-from starts a new one from a model: give one")
        if options["resume"]:
            run_dir = options["out"] or ckpt.latest_run()
            if run_dir is None:
                raise LmcliError("nothing to resume: no run folder given and no run recorded in checkpoints/")
            finished = resume_run(run_dir, corpus=corpus, recipe=recipe,
                                  overrides={k: v for k, v in given.items() if v is not None},
                                  on_event=on_event, on_data_event=display.data_event, should_stop=stop)
        else:
            request = make_request(corpus, {**given, "recipe": recipe}, out_dir=options["out"],
                                   force=options["force"], init_from=options["init_from"])
            if not json_output and not quiet:
                if corpus:
                    announce.append(_announcement(corpus, request))  # once training starts
                else:  # the bundled corpus says so at once
                    ui.stderr_console().print(_announcement(corpus, request))
            finished = start_run(request, on_event=on_event, on_data_event=display.data_event,
                                 should_stop=stop)
    finally:
        if board is not None:
            board.close()
        display.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    if options["sample"] and not json_output and not quiet and finished.reason != "interrupted":
        _show_training_samples(finished.best_path, display)
    if finished.reason == "interrupted":
        raise typer.Exit(130)


def _announcement(corpus: list[str] | None, request: Any) -> str:
    if request.init_from is not None:
        return (f"[bold]fine-tuning[/] {request.init_from.path} (its settings, learning rate "
                f"{request.train.lr:g}; flags given override them)")
    if corpus:
        return (f"[bold]recipe:[/] {request.recipe} for {request.data.level} level "
                f"({RECIPE_BUDGETS[request.recipe]}; flags given override it)")
    minutes = (request.train.time_limit or 0) / 60
    return (f"[bold]no corpus given:[/] training on the bundled Tang poems ({request.corpus[0]}) at "
            f"{request.data.level} level for {minutes:g} minutes (pass a file to train on your own text)")


def _show_training_samples(best: Path, display: ui.TrainDisplay) -> None:
    """Three samples; a Chinese verse corpus's in one of its usual shapes."""
    checkpoint = ckpt.load(best)
    model = checkpoint.build_model("cpu")
    request = PoemRequest(num_samples=3, form="auto", seed=0,
                          sampling=SamplingConfig(temperature=0.8, max_tokens=300))
    samples = write(checkpoint, model, request).samples
    console = display.console
    console.print("[bold]samples[/] (temperature 0.8):")
    for s in samples:
        console.print(f"  {ui.escape(s.text)}")
    console.print(f"[dim]more:[/] lmcli generate -c {best.parent} -n 5 --temperature 0.8")


train.__signature__ = inspect.Signature(train_parameters())  # type: ignore[attr-defined]
app.command()(friendly_errors(train))
