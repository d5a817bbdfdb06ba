"""A run's checkpoints: what ``best.pt`` and ``last.pt`` hold, and resuming from ``last.pt``
exactly where the run stopped (model, optimizer, schedule, data position, recurrent state
of every lane, random state of every rank)."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import torch

from lmcli import checkpoint as ckpt
from lmcli.devices import describe
from lmcli.errors import LmcliError
from lmcli.train.state import RunState, capture_rng, restore_rng, seed_everything

if TYPE_CHECKING:
    from lmcli.train.trainer import Trainer


def payload(trainer: Trainer, valid_loss: float | None, training_state: dict[str, Any] | None = None
            ) -> dict[str, Any]:
    run = trainer.run
    provenance = {**trainer.data.provenance(), "device": describe(trainer.device), "recipe": trainer.recipe,
                  "init_from": trainer.origin}
    return ckpt.make_payload(
        model=trainer.model, tokenizer=trainer.data.tokenizer, model_config=trainer.model_config,
        data_config=trainer.data_config, train_config=trainer.config.to_dict(), step=run.step,
        epoch=run.epoch, tokens_seen=run.tokens_seen, metrics=run.metrics, valid_loss=valid_loss,
        provenance=provenance, training_state=training_state)


def save_last(trainer: Trainer) -> None:
    """The resumable checkpoint, written by rank 0; every rank must call it (the state of
    all batch lanes and every rank's random state are gathered)."""
    world = trainer.world
    hidden = [world.gather_lanes(h) for h in trainer.hidden] if trainer.hidden is not None else None
    rngs = world.gather_objects(capture_rng()) if world.distributed else None
    if not world.main:
        return
    run = asdict(trainer.run)
    run.pop("metrics")
    scaler = trainer.opt.scaler
    training_state = {
        "run": run,
        "optimizer": trainer.opt.optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler.is_enabled() else None,
        "hidden": hidden,
        "average": trainer.averager.average,
        "rng": capture_rng(),
        "rng_ranks": rngs,  # one per rank under torchrun (None: one process)
    }
    ckpt.save(payload(trainer, trainer.run.best_loss, training_state), trainer.out_dir / ckpt.LAST)


def restore(trainer: Trainer, checkpoint: ckpt.Checkpoint) -> None:
    """Put ``trainer`` where the run of ``checkpoint`` (a ``last.pt``) stopped."""
    state = checkpoint.training_state
    if state is None:
        raise LmcliError(f"{checkpoint.path} holds no training state to resume from")
    trainer.model.load_state_dict(checkpoint.payload["state_dict"])
    trainer.opt.optimizer.load_state_dict(state["optimizer"])
    if state.get("scaler") and trainer.opt.scaler.is_enabled():
        trainer.opt.scaler.load_state_dict(state["scaler"])
    run = trainer.run = RunState.saved(state["run"], trainer.config.batching, checkpoint.payload.get("metrics", []))
    if run.phase not in trainer.layouts:
        raise LmcliError(f"{checkpoint.path} stopped in its sentence phase, but the corpus "
                         "has too few sentences for one batch")
    trainer.opt.forward.sentences = run.phase == "sentences"
    trainer.opt.set_lr(run.lr)
    # metrics.jsonl may hold lines written after this checkpoint (a crash): rewrite it from
    # the checkpoint's own history so it never shows a step twice.
    lines = "".join(json.dumps(entry) + "\n" for entry in run.metrics)
    if trainer.world.main:
        ckpt.atomic_write(trainer.out_dir / ckpt.METRICS, lambda handle: handle.write(lines.encode()))
    if state.get("average") is not None:
        trainer.averager.average = [a.to(trainer.device) for a in state["average"]]
    hidden = state.get("hidden")  # every lane's, whatever the world size that saved it
    trainer.hidden = (tuple(h[:, trainer.lanes].contiguous().to(trainer.device) for h in hidden)
                      if hidden is not None else None)
    _restore_rng(trainer, state)


def _restore_rng(trainer: Trainer, state: dict[str, Any]) -> None:
    """Each rank's own random state when the world size is the one that saved; a different
    world size keeps rank 0's and seeds the others afresh (dropout masks then differ from
    an unchanged run; nothing else does)."""
    world = trainer.world
    ranks = state.get("rng_ranks")
    if ranks and len(ranks) == world.size:
        restore_rng(ranks[world.rank])
    elif world.main:
        restore_rng(state["rng"])
    else:
        seed_everything(trainer.config.seed + world.rank + 7919 * trainer.run.step)


def intact(trainer: Trainer) -> str:
    """What a failed save left: the checkpoints written before, and how to go on."""
    saved = {name: step for name, step in trainer.saved.items() if (trainer.out_dir / name).exists()}
    if not saved:
        return "no checkpoint had been saved yet"
    if len(set(saved.values())) == 1:
        kept = f"the checkpoints from step {next(iter(saved.values())):,} are intact"
    else:
        kept = " and ".join(f"{name} (step {step:,})" for name, step in saved.items()) + " are intact"
    more = f"; free some space and continue with: lmcli train --resume -o {trainer.out_dir}" if ckpt.LAST in saved else ""
    return kept + more


def out_of_memory(trainer: Trainer) -> LmcliError:
    """The error for an allocation that failed mid-run, after saving last.pt if that
    still can be done (the batch's tensors are gone by now)."""
    where = "GPU memory" if trainer.device.type == "cuda" else "memory"
    try:
        if trainer.device.type == "cuda":
            torch.cuda.empty_cache()
        trainer.save_last()
        kept = f"last.pt (step {trainer.run.step:,}) is saved: lmcli train --resume -o {trainer.out_dir} goes on"
    except (RuntimeError, MemoryError, LmcliError):
        kept = intact(trainer)
    return LmcliError(f"ran out of {where} at step {trainer.run.step:,}; {kept} (lower --batch-size or "
                      "--seq-len to go on with less; --hidden-dim for a new run)")
