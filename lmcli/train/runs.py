"""Runs: a new one from a request, or one resumed from its folder; the folder, its lock and
what it records. Nothing here prints: progress goes to the callbacks given.

Under torchrun every rank calls :func:`start_run` or :func:`resume_run`: rank 0 checks,
locks, reads the corpus (filling the token cache) and writes the run folder; the others
then read the cached tokens.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmcli import checkpoint as ckpt
from lmcli import distributed, novelty
from lmcli.corpus import CorpusData, DataConfig, DataEvent, load_corpus
from lmcli.devices import resolve_device
from lmcli.disk import StorageError
from lmcli.distributed import SINGLE, World, place
from lmcli.errors import InputError, LmcliError, SettingError
from lmcli.model import ModelConfig
from lmcli.runlock import RunLock
from lmcli.tokencache import cache_for_run
from lmcli.train.config import RESUMABLE, TrainConfig, check_world, split_settings
from lmcli.train.events import Event, Finished
from lmcli.train.finetune import Origin, checked_unk_share
from lmcli.train.resources import check_disk, check_memory
from lmcli.train.trainer import Trainer

StopFn = Callable[[], bool]
EventFn = Callable[[Event], None]


@dataclass
class RunRequest:
    """A new training run: the corpus, how to read it, the model and the training. Made,
    it is checked: every setting is valid before the corpus is read. ``model`` may be
    given as a dict of ModelConfig fields (its vocabulary comes from the corpus)."""

    corpus: list[str]
    data: DataConfig
    model: ModelConfig | dict[str, Any]
    train: TrainConfig
    out_dir: Path
    force: bool = False
    recipe: str | None = None  # the recipe the settings came from (shown and recorded)
    init_from: Origin | None = None  # the model whose weights it starts from (--init-from)

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            self.model = ModelConfig(**self.model)


def check_run_dir(out_dir: Path, *, force: bool) -> None:
    """Refuse to start over another run's checkpoints unless ``force``; touches nothing.
    (That the folder is not a file, the lock checked when it took the folder.)"""
    if ((out_dir / ckpt.LAST).exists() or (out_dir / ckpt.BEST).exists()) and not force:
        raise InputError(f"{out_dir} already holds a training run",
                         "continue it with {resume}, start over with {force}, or choose another {out}")


@contextlib.contextmanager
def _world_for(device_spec: str | None) -> Iterator[World]:
    """The process group torchrun describes, joined for the block (one process: SINGLE)."""
    device = distributed.place(resolve_device(device_spec or "auto"), distributed.env_world())
    world = distributed.join(device)
    ended = False
    try:
        yield world
        ended = True
    finally:
        if world.distributed:
            distributed.leave(together=ended)


@contextlib.contextmanager
def _main_lock(out_dir: Path, world: World, force: bool = False) -> Iterator[None]:
    """Rank 0 holds the run folder's lock for the block; a refusal stops every rank."""
    lock = RunLock(out_dir, force=force)

    def acquire() -> None:
        if out_dir.exists() and not out_dir.is_dir():
            raise LmcliError(f"the run folder {out_dir} is a file, not a folder")
        lock.acquire()

    world.main_first(acquire, others=lambda: None)
    failed = True
    try:
        yield
        failed = False
    finally:
        if world.main:
            lock.release(remove_dir_if_empty=failed)


def write_config_json(out_dir: Path, trainer: Trainer) -> None:
    """A readable copy of the configuration next to the checkpoints."""
    text = json.dumps({"model": trainer.model_config.to_dict(), "train": trainer.config.to_dict(),
                       "data": trainer.data_config, "corpus": trainer.data.provenance(),
                       "recipe": trainer.recipe}, indent=2, ensure_ascii=False)
    ckpt.atomic_write(out_dir / ckpt.CONFIG, lambda handle: handle.write(text.encode() + b"\n"))


def start_run(request: RunRequest, *, on_event: EventFn | None = None,
              on_data_event: DataEvent | None = None, should_stop: StopFn | None = None,
              root: Path = ckpt.DEFAULT_ROOT) -> Finished:
    """Train a new model. The run folder is only touched once the corpus has been read and
    encoded."""
    with _world_for(request.train.device) as world:
        # The default folder name holds the time: rank 0's is the run's.
        out_dir = world.from_main(Path(request.out_dir))
        with _main_lock(out_dir, world, request.force):
            # Events are the trainer's to silence; reading the corpus happens before it.
            return _start_run(request, out_dir, on_event, on_data_event if world.main else None,
                              should_stop, root, world)


def _start_run(request: RunRequest, out_dir: Path, on_event: EventFn | None,
               on_data_event: DataEvent | None, should_stop: StopFn | None, root: Path,
               world: World = SINGLE) -> Finished:
    origin = request.init_from
    tokenizer = origin.checkpoint.tokenizer if origin is not None else None
    convert = origin.conversion() if origin is not None else None

    def check_and_load() -> CorpusData:
        check_run_dir(out_dir, force=request.force)
        check_world(request.train, world)
        resolve_device(request.train.device)
        return load_corpus(request.corpus, request.data, tokenizer=tokenizer, on_event=on_data_event,
                           cache=cache_for_run(out_dir), convert=convert)

    data = world.main_first(check_and_load, others=lambda: load_corpus(
        request.corpus, request.data, tokenizer=tokenizer, cache=cache_for_run(out_dir), convert=convert))
    record = origin.record(checked_unk_share(data.train), on_data_event) if origin is not None else None
    assert isinstance(request.model, ModelConfig)
    model_config = request.model.for_vocabulary(data.tokenizer.vocab_size)
    check_memory(model_config, request.train, place(resolve_device(request.train.device), world))
    if world.main:
        check_disk(out_dir, model_config, request.train)
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in (ckpt.BEST, ckpt.LAST, ckpt.METRICS, ckpt.CONFIG, novelty.INDEX):
            (out_dir / name).unlink(missing_ok=True)
        if model_config.direction == "forward":  # what generate --novel checks against
            _novelty_index(novelty.write_for_run, out_dir, data, on_data_event)
    trainer = Trainer(data, model_config, request.train, out_dir, request.data.to_dict(), on_event=on_event,
                      should_stop=should_stop, world=world, recipe=request.recipe,
                      start_from=origin.checkpoint if origin is not None else None, origin=record)
    if world.main:
        write_config_json(out_dir, trainer)
        ckpt.record_latest(out_dir, root)
    return trainer.fit()


def resume_run(out_dir: Path, *, corpus: list[str] | None = None,
               overrides: dict[str, Any] | None = None, recipe: str | None = None,
               on_event: EventFn | None = None, on_data_event: DataEvent | None = None,
               should_stop: StopFn | None = None, root: Path = ckpt.DEFAULT_ROOT) -> Finished:
    """Continue a run from its ``last.pt``: same tokenizer, same data position, same random
    state. ``overrides`` are settings given again (the first command repeated, say): one
    equal to the run's is accepted, a changed budget or device applies, and any other
    change is refused, naming both values. ``recipe``, if given, must be the run's."""
    out_dir = Path(out_dir)

    def something_to_resume() -> None:
        if not (out_dir / ckpt.LAST).is_file():
            raise LmcliError(f"nothing to resume in {out_dir} (no {ckpt.LAST})")

    with _world_for((overrides or {}).get("device")) as world:
        world.main_first(something_to_resume, others=lambda: None)
        with _main_lock(out_dir, world):
            def prepare() -> tuple[ckpt.Checkpoint, TrainConfig, CorpusData]:
                return _prepare_resume(out_dir, corpus, overrides or {}, recipe, world,
                                       on_data_event if world.main else None)

            checkpoint, train_config, data = world.main_first(prepare)
            trainer = Trainer(data, checkpoint.model_config, train_config, out_dir,
                              checkpoint.payload["data_config"], on_event=on_event, should_stop=should_stop,
                              resume_from=checkpoint, world=world,
                              recipe=(checkpoint.payload.get("provenance") or {}).get("recipe"),
                              origin=(checkpoint.payload.get("provenance") or {}).get("init_from"))
            if world.main:
                ckpt.record_latest(out_dir, root)
            return trainer.fit()


def _prepare_resume(out_dir: Path, corpus: list[str] | None, given: dict[str, Any], recipe: str | None,
                    world: World, on_data_event: DataEvent | None
                    ) -> tuple[ckpt.Checkpoint, TrainConfig, CorpusData]:
    if not (out_dir / ckpt.LAST).is_file():  # another machine's disk (multi-node)
        raise LmcliError(f"rank {world.rank}: {out_dir / ckpt.LAST} is not readable here; "
                         "multi-node runs need the run folder on a shared filesystem")
    checkpoint = ckpt.load(out_dir / ckpt.LAST)
    payload, state = checkpoint.payload, checkpoint.training_state
    if state is None:
        raise LmcliError(f"{checkpoint.path} holds no training state to resume from")
    _check_recipe(out_dir, payload, recipe)
    train_config = TrainConfig.from_dict(payload["train_config"])
    data_config = DataConfig.from_dict(payload["data_config"])
    stored = {"data": data_config, "model": checkpoint.model_config, "train": train_config}
    train_config = train_config.replace(**resumed_changes(stored, given))
    resolve_device(train_config.device)
    check_world(train_config, world)
    _check_budget_left(out_dir, train_config, state["run"])
    check_memory(checkpoint.model_config, train_config, place(resolve_device(train_config.device), world))
    if world.main:
        check_disk(out_dir, checkpoint.model_config, train_config)
    provenance = payload.get("provenance", {})
    data = load_corpus(corpus or provenance.get("corpus") or [], data_config, tokenizer=checkpoint.tokenizer,
                       on_event=on_data_event, cache=cache_for_run(out_dir))
    if provenance.get("corpus_sha256") and data.scan.sha256 != provenance["corpus_sha256"]:
        raise LmcliError("the corpus has changed since this run started (its sha256 differs); "
                         "resume with the same text, or start a new run")
    # A run from before lmcli wrote the index, or an index damaged or foreign.
    if world.main and checkpoint.model_config.direction == "forward":
        _novelty_index(novelty.ensure_for_run, out_dir, data, on_data_event)
    return checkpoint, train_config, data


def _novelty_index(write: Callable[..., Any], out_dir: Path, data: CorpusData,
                   on_data_event: DataEvent | None) -> None:
    """The run's copy index: a disk that refuses it is a warning, not the end of the run
    (only `generate --novel` needs it)."""
    try:
        write(out_dir, data, on_data_event)
    except StorageError as error:
        if on_data_event is not None:
            on_data_event("warning", {"message": f"{error}: the copy index is left out, and generate --novel "
                                                 "will refuse this run"})


def resumed_changes(stored: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """The training settings that ``given`` changes (budgets, device...). A given setting
    equal to the run's, once made into a config as it would be (``auto`` resolved, types
    read), is no change; a change to anything else is refused with both values."""
    groups = split_settings(given)  # unknown names are refused
    changes: dict[str, Any] = {}
    for group, config in stored.items():
        mine = groups[group]
        candidate = dataclasses.replace(config, **mine) if mine else config
        for name in mine:
            old, new = getattr(config, name), getattr(candidate, name)
            if old == new:
                continue
            if name not in RESUMABLE:
                allowed = ", ".join("{" + item + "}" for item in RESUMABLE)
                raise SettingError(f"{{{name}}} cannot change when resuming: the run has {old!r}, "
                                   f"this command gives {new!r}; only {allowed} can")
            changes[name] = new
    return changes


def _check_recipe(out_dir: Path, payload: dict[str, Any], recipe: str | None) -> None:
    if recipe is None:
        return
    used = (payload.get("provenance") or {}).get("recipe")
    if used is None:  # runs from before checkpoints recorded it
        with contextlib.suppress(OSError, ValueError):
            used = json.loads((out_dir / ckpt.CONFIG).read_text()).get("recipe")
    if used != recipe:
        raise SettingError(f"{{recipe}} cannot change when resuming: the run has {used!r}, "
                           f"this command gives {recipe!r}")


def _check_budget_left(out_dir: Path, config: TrainConfig, run: dict[str, Any]) -> None:
    epoch, step = int(run.get("epoch", 0)), int(run.get("step", 0))
    if config.epochs is not None and epoch >= config.epochs:
        raise InputError(f"the run in {out_dir} already finished its {config.epochs} epochs",
                         "give a larger {epochs} (or {max_steps} / {time_limit}) to go on")
    if config.max_steps is not None and step >= config.max_steps:
        raise InputError(f"the run in {out_dir} already reached step {step}", "give a larger {max_steps} to go on")
    elapsed = float(run.get("elapsed", 0.0))
    if config.time_limit is not None and elapsed >= config.time_limit:
        raise InputError(f"the run in {out_dir} already trained for {elapsed:.0f} s",
                         "give a larger {time_limit} (it counts the whole run) to go on")
