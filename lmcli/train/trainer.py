"""The training loop: truncated BPTT with the state carried across windows, validation,
checkpoints, and the stop logic (budgets, early stopping, Ctrl-C).

Validation scores every held-out sentence from an empty context, exactly as ``lmcli
score`` and ``lmcli eval`` do, so the validation perplexity shown is the one ``lmcli
eval`` gives for the same text, and the best checkpoint is the best at the job users load
it for. (Carrying the state into validation text cut into parallel lanes would start most
lanes mid-sentence from a zero state, a situation training never shows the model; its
loss can then be wildly off and make early stopping and learning-rate decay act on noise.)

Under torchrun (``world`` of several processes) each rank trains its share of the batch
lanes through DistributedDataParallel; see :mod:`lmcli.distributed`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lmcli import checkpoint as ckpt
from lmcli.batches import PAD_TARGET, BpttBatches, SentenceBatches
from lmcli.corpus import CorpusData
from lmcli.devices import cpu_has_bf16, describe, native_bf16, peak_flops, resolve_device
from lmcli.distributed import SINGLE, SYNC_EVERY, World, place
from lmcli.disk import StorageError, write_failure
from lmcli.train.resources import out_of_memory
from lmcli.errors import LmcliError
from lmcli.model import RNNLM, ModelConfig, State, detach_state
from lmcli.scoring import sentence_loss_sums
from lmcli.train.config import TrainConfig, check_world
from lmcli.train.events import EpochEnded, Event, Finished, Note, Progress, Started, Validated
from lmcli.train.schedule import Averager, Budget, after_validation
from lmcli.train import saving
from lmcli.train.state import RunState, seed_everything
from lmcli.train.step import LossMeter, Optimisation, tail_shares, to_device

LOG_EVERY = 100  # steps between "train" lines in metrics.jsonl


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 700.0))


class _Session:
    """This process's part of a run: its clock, its loss meter, and the marks that progress
    reports, log lines and epoch summaries count from."""

    def __init__(self, run: RunState, device: torch.device) -> None:
        self.meter = LossMeter(device, lambda: run.tokens_seen)
        self.start = time.perf_counter()
        self.elapsed_before, self.tokens_before = run.elapsed, run.tokens_seen
        self.shown = self.logged = self.epoch = self.meter.mark()
        self.skipped_reported = 0

    def seconds(self) -> float:
        return time.perf_counter() - self.start


class Trainer:
    """One training run over prepared data; :mod:`lmcli.train.runs` sets it up."""

    def __init__(self, data: CorpusData, model_config: ModelConfig, config: TrainConfig,
                 out_dir: Path, data_config: dict[str, Any], *,
                 on_event: Callable[[Event], None] | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 resume_from: ckpt.Checkpoint | None = None, world: World = SINGLE,
                 recipe: str | None = None, start_from: ckpt.Checkpoint | None = None,
                 origin: dict[str, Any] | None = None) -> None:
        if model_config.direction == "backward":
            data = data.read_backward()
        self.world, self.data, self.config, self.model_config = world, data, config, model_config
        self.data_config, self.out_dir, self.recipe = data_config, Path(out_dir), recipe
        self.origin = origin  # what --init-from started from, recorded in the checkpoints
        # Events come from rank 0 alone: the others train in silence.
        self.emit = (on_event if world.main else None) or (lambda event: None)
        self.should_stop = should_stop or (lambda: False)
        self.device = place(resolve_device(config.device), world)
        check_world(config, world)
        self.amp = native_bf16(self.device) if config.amp is None else config.amp
        if config.amp and self.device.type == "cpu" and not cpu_has_bf16():
            self.emit(Note("mixed precision: this CPU has no native bf16 arithmetic; it may be "
                           "slower than fp32 here"))
        seed_everything(config.seed)
        self.model = RNNLM(model_config).to(self.device)
        if start_from is not None:  # --init-from: another model's weights, a fresh optimizer
            self.model.load_state_dict(start_from.payload["state_dict"])
        if world.rank:
            seed_everything(config.seed + world.rank)  # own dropout masks per rank
        self.opt = Optimisation(self.model, config, self.device, self.amp, world)
        self.layouts = self._layouts()
        self.lanes = world.lanes(config.batch_size)  # this rank's rows of every window
        self.budget = Budget(config, len(self.layouts[config.batching]))
        self.averager = Averager(list(self.model.parameters()))
        self.run = RunState(lr=float(config.lr), phase=config.batching)
        self.hidden: State | None = None
        self.session: _Session  # this process's part of the run, from fit()
        self._agreed = (0.0, False)  # (session seconds, stop requested) as all ranks last agreed
        self.saved: dict[str, int] = {}  # checkpoint file -> the step it holds, as saved
        if resume_from is not None:
            saving.restore(self, resume_from)
            improved = [m["step"] for m in self.run.metrics if m.get("event") == "valid" and m.get("improved")]
            self.saved = {ckpt.BEST: improved[-1] if improved else self.run.step, ckpt.LAST: self.run.step}

    def _layouts(self) -> dict[str, BpttBatches | SentenceBatches]:
        """The window layouts by phase: the run's batching, and for a sentence phase at the
        end of a stream run the sentences too (laid out now, so that a corpus too small for
        it is known before training starts)."""
        config, train = self.config, self.data.train
        layouts: dict[str, BpttBatches | SentenceBatches] = {}
        if config.batching == "stream":
            layouts["stream"] = BpttBatches(train, config.batch_size, config.seq_len)
        if config.batching == "sentences" or config.sentence_phase:
            try:
                layouts["sentences"] = SentenceBatches(train, config.batch_size, config.seq_len, config.seed)
            except LmcliError as error:
                if config.batching == "sentences":
                    raise
                self.emit(Note(f"no sentence phase: {error}"))
        return layouts

    # -- where the run is -------------------------------------------------------------

    @property
    def batches(self) -> BpttBatches | SentenceBatches:
        """The window layout of the phase the run is in."""
        return self.layouts[self.run.phase]

    @property
    def steps_per_epoch(self) -> int:
        return len(self.batches)

    @property
    def in_sentence_phase(self) -> bool:
        """Whether a stream run has moved on to its closing sentence phase."""
        return self.config.batching == "stream" and self.run.phase == "sentences"

    @property
    def eval_every(self) -> int:
        if self.config.eval_every is not None:
            return self.config.eval_every
        return max(1, min(2000, math.ceil(self.steps_per_epoch / 4)))

    def _clock(self) -> float:
        """The run's clock for decisions (time limit, time-driven learning rate): the time
        trained before this session, plus this session's (live in one process, the last
        agreed reading under torchrun). A resumed run goes on along its schedule."""
        seconds = self._agreed[0] if self.world.distributed else self.session.seconds()
        return self.session.elapsed_before + seconds

    def _stop_requested(self) -> bool:
        return self._agreed[1] if self.world.distributed else self.should_stop()

    def _agree(self) -> None:
        """Agree with the other ranks on the session clock (the slowest rank's) and on a
        stop request (anyone's): decisions taken from them then match on every rank."""
        seconds, stop = self.world.all_max([self.session.seconds(), float(self.should_stop())], self.device)
        self._agreed = (seconds, stop > 0)

    def _global_loss(self, loss: float) -> float:
        """The global batch's mean training loss from this rank's (every rank must call it).
        A rank's step loss is its sum over its targets divided by (global count / world
        size), so the ranks' mean is the global mean, padding left out. The progress display
        shows rank 0's alone, to stay free of collectives."""
        if not self.world.distributed:
            return loss
        return self.world.all_sum([loss], self.device)[0] / self.world.size

    # -- the loop ---------------------------------------------------------------------

    def fit(self) -> Finished:
        """Train until a budget or early stopping ends the run; checkpoints on the way. A
        checkpoint the disk refuses ends the run, saying which earlier ones are intact."""
        self._begin()
        reason = None
        try:
            while reason is None and self._more_epochs():
                reason = self._epoch()
                if reason == "sentence_phase":
                    self._begin_sentence_phase()
                    reason = None
            return self._finish(reason or "completed")
        except StorageError as error:
            raise StorageError(f"{error}; {saving.intact(self)}", error.path, error.needed) from None
        except (RuntimeError, MemoryError) as error:
            if not out_of_memory(error):
                raise
            raise saving.out_of_memory(self) from None

    def _begin(self) -> None:
        run, model = self.run, self.model
        flops = model.flops_per_token(tail_shares(self.data.train, self.model_config))
        where = describe(self.device) + (f", {self.world.describe()}" if self.world.distributed else "")
        self.emit(Started(where, model.num_parameters(), self.model_config.vocab_size,
                          len(self.data.train), len(self.data.valid) if self.data.valid is not None else 0,
                          self.steps_per_epoch, self.budget.total_steps, self.batches.tokens_per_window,
                          run.step, self.out_dir, flops))
        self.flops_per_token = flops
        model.train()
        self.session = _Session(run, self.device)
        self._agreed = (0.0, False)

    def _more_epochs(self) -> bool:
        """Whether another epoch begins. In a closing sentence phase the budget is the
        step count, checked at every step instead."""
        if self.in_sentence_phase or self.config.epochs is None:
            return True
        return self.run.epoch < self.config.epochs

    def _epoch(self) -> str | None:
        """The rest of the current epoch: a reason to stop (or to begin the sentence
        phase), or None at the epoch's end."""
        run = self.run
        if isinstance(self.batches, SentenceBatches):
            self.batches.set_epoch(run.epoch)
        if self.hidden is None or run.window == 0:
            self.hidden = self.model.initial_state(self.lanes.stop - self.lanes.start, self.device)
        for window in range(run.window, self.steps_per_epoch):
            if self.world.distributed and (run.step % SYNC_EVERY == 0 or window == run.window):
                self._agree()
            if self._stop_requested():
                return "interrupted"
            if run.phase == "stream" and "sentences" in self.layouts and \
                    self.budget.sentence_phase_due(run.step, self._clock()):
                return "sentence_phase"
            self._train_window(window)
            reason = self._after_step()
            if reason is not None:
                return reason
        return self._end_epoch()

    def _train_window(self, window: int) -> None:
        run, sentences = self.run, self.run.phase == "sentences"
        inputs, targets = self.batches.window(window)
        # Counted on the host before the copy: no device sync. The global batch's count,
        # so that tokens_seen and rates mean the same at any world size.
        scored = int((targets != PAD_TARGET).sum()) if sentences else targets.numel()
        shares = None
        if self.world.distributed:
            # AR counts the scored positions; TAR those after the first of a window.
            tar_count = int((targets[:, 1:] != PAD_TARGET).sum()) if sentences else 0
            size = self.world.size
            shares = (max(scored, 1) / size, scored / size, tar_count / size)
            inputs, targets = inputs[self.lanes].contiguous(), targets[self.lanes].contiguous()
        inputs, targets = to_device(inputs, self.device), to_device(targets, self.device)
        if sentences and self.batches.starts_fresh(window):
            self.hidden = self.model.initial_state(inputs.shape[0], self.device)
        self.opt.set_lr(self.budget.lr(run, self._clock()))
        loss, finite, hidden = self.opt.step(inputs, self.hidden, targets, shares)
        self.averager.update(run)
        # A skipped step's state is not finite either: the lanes start afresh.
        self.hidden = tuple(torch.where(finite, h, torch.zeros_like(h)) for h in detach_state(hidden))
        self.session.meter.add(loss, finite)
        run.step += 1
        run.window = window + 1
        run.tokens_seen += scored
        run.elapsed = self.session.elapsed_before + self.session.seconds()

    def _after_step(self) -> str | None:
        """Reports, log lines and validation points due after a step; a reason to stop."""
        run, config, session = self.run, self.config, self.session
        if self.world.main and (time.perf_counter() - session.shown.time >= 0.5 or run.step == 1):
            self._report_progress()
        if run.step % LOG_EVERY == 0:
            loss = self._global_loss(session.meter.since(session.logged)[0])
            self._record({"event": "train", "step": run.step, "epoch": run.epoch, "loss": loss,
                          "lr": self.opt.lr, "tokens": run.tokens_seen})
            session.logged = session.meter.mark()
        # Validation points are counted within the epoch, so that the last one before the
        # epoch's end is never a few steps before the end-of-epoch validation.
        if run.window % self.eval_every == 0 and run.window < self.steps_per_epoch:
            self._report_skipped()  # a diverged run stops here, before it saves
            self._checkpoint_point(scheduled=True)
            if config.patience is not None and run.stalls >= config.patience:
                return "early_stopping"
        if config.max_steps is not None and run.step >= config.max_steps:
            return "max_steps"
        if self.budget.time_is_up(self._clock()):
            return "time_limit"
        if self.in_sentence_phase and run.step >= (self.budget.total_steps or math.inf):
            return "steps_spent"  # the epochs' steps, in the sentence phase
        return None

    def _end_epoch(self) -> str | None:
        """An epoch's summary and scheduled validation; the next epoch starts afresh."""
        run, session = self.run, self.session
        train_loss, seconds, _ = session.meter.since(session.epoch)
        train_loss = self._global_loss(train_loss)
        tokens = run.tokens_seen - session.epoch.tokens
        run.epoch += 1
        run.window = 0
        self.hidden = None
        self._report_skipped()
        valid_loss = self._checkpoint_point(scheduled=True)
        self._record({"event": "epoch", "step": run.step, "epoch": run.epoch, "train_loss": train_loss,
                      "valid_loss": valid_loss, "seconds": seconds, "lr": self.opt.lr})
        self.emit(EpochEnded(run.epoch, train_loss, perplexity(train_loss), valid_loss,
                             None if valid_loss is None else perplexity(valid_loss),
                             seconds, tokens / max(seconds, 1e-9), self.opt.lr))
        session.epoch = session.meter.mark()
        if self.config.patience is not None and run.stalls >= self.config.patience:
            return "early_stopping"
        return None

    def _begin_sentence_phase(self) -> None:
        """From here on, windows of whole sentences from the empty context, each batch from
        a zero state: the model learns to start a sentence with no history, as ``score``,
        ``eval`` and ``rerank`` ask of it. The epoch count goes on; windows restart."""
        run = self.run
        run.phase, run.window = "sentences", 0
        self.hidden = None
        self.opt.forward.sentences = True
        self._record({"event": "phase", "step": run.step, "epoch": run.epoch, "phase": "sentences"})
        self.emit(Note(f"step {run.step:,}: the last {self.config.sentence_phase:.0%} of the budget "
                       "trains on whole sentences from an empty context, as score sees them"))

    def _finish(self, reason: str) -> Finished:
        run, session = self.run, self.session
        run.elapsed = session.elapsed_before + session.seconds()
        self._report_skipped()
        if reason == "interrupted":
            self.save_last()  # no validation: a resumed run follows the uninterrupted path
        elif reason in ("max_steps", "time_limit", "steps_spent"):
            self._checkpoint_point(scheduled=False)
        reason = "completed" if reason == "steps_spent" else reason
        if not (self.out_dir / ckpt.BEST).exists():
            with self.averager.weights():
                self.save_best(run.best_loss)
        self._record({"event": "end", "reason": reason, "step": run.step, "best_valid_loss": run.best_loss})
        rate = (run.tokens_seen - session.tokens_before) / max(session.seconds(), 1e-9)
        peak = peak_flops(self.device, self.amp)
        peak = peak * self.world.size if peak else None  # every rank's device
        finished = Finished(reason, run.step, run.epoch, run.best_loss, self.out_dir / ckpt.BEST,
                            self.out_dir / ckpt.LAST, run.elapsed, rate, rate * self.flops_per_token,
                            rate * self.flops_per_token / peak if peak else None)
        self.emit(finished)
        return finished

    # -- reports ----------------------------------------------------------------------

    def _report_progress(self) -> None:
        run, session = self.run, self.session
        loss, seconds, _ = session.meter.since(session.shown)
        rate = (run.tokens_seen - session.shown.tokens) / max(seconds, 1e-9)
        self._report_skipped()
        now = session.elapsed_before + session.seconds()
        self.emit(Progress(run.step, self.budget.total_steps, run.epoch, loss, perplexity(loss), rate,
                           self.opt.lr, run.elapsed,
                           self.budget.eta(run.step, now, self.batches.tokens_per_window, rate),
                           self.budget.fraction(run.step, now)))
        session.shown = session.meter.mark()

    def _report_skipped(self) -> None:
        """Steps skipped since the last report (and a diverged run's error)."""
        session, run = self.session, self.run
        session.meter.value()  # reads the count, and raises if the run has diverged
        count = session.meter.skipped - session.skipped_reported
        if count > 0:
            self._record({"event": "skipped", "step": run.step, "count": count})
            self.emit(Note(f"skipped {count} step{'s' if count > 1 else ''} whose loss or gradient "
                           f"was not finite, by step {run.step} (no update; the state restarts)"))
            session.skipped_reported = session.meter.skipped

    def _record(self, entry: dict[str, Any]) -> None:
        entry = {"time": round(self.run.elapsed, 3),
                 **{k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in entry.items()}}
        self.run.metrics.append(entry)
        if self.world.main:
            path = self.out_dir / ckpt.METRICS
            try:
                with open(path, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(entry) + "\n")
            except OSError as error:
                raise write_failure(path, error, 4096) or error from None

    # -- validation and checkpoints ---------------------------------------------------

    def save_last(self) -> None:
        """The resumable checkpoint, written by rank 0; every rank must call it."""
        saving.save_last(self)
        self.saved[ckpt.LAST] = self.run.step

    def save_best(self, valid_loss: float | None) -> None:
        if self.world.main:
            ckpt.save(saving.payload(self, valid_loss), self.out_dir / ckpt.BEST)
            self.saved[ckpt.BEST] = self.run.step

    def _checkpoint_point(self, scheduled: bool) -> float | None:
        """Validate (if there is validation data) and save the resumable checkpoint."""
        loss = self.validate(scheduled)
        self.save_last()
        return loss

    def validate(self, scheduled: bool) -> float | None:
        """Validation loss, best checkpoint and (when ``scheduled``) the plateau logic.
        Unscheduled validations (at a time limit, say) never change the schedule, so that a
        run stopped and resumed follows the same path as one left alone. The loss at a step
        is computed once, however many times it is asked for."""
        run = self.run
        if self.data.valid is None:
            return None
        if run.validated_at == run.step and run.valid_loss is not None:
            loss = run.valid_loss
        else:
            loss = self._validation_loss()
        if scheduled and run.scheduled_at != run.step:
            for note in (after_validation(run, loss, self.config), self.averager.maybe_start(run, self.config)):
                if note:
                    self.emit(Note(note))
        return loss

    def _validation_loss(self) -> float:
        run = self.run
        with self.averager.weights():
            total, count = sentence_loss_sums(self.model, self.data.valid, batch_size=max(64, self.config.batch_size),
                                              part=(self.world.rank, self.world.size))
            total, count = self.world.all_sum([total, count], self.device)
            loss = total / max(count, 1)
            if not math.isfinite(loss):
                raise LmcliError(template=f"training diverged at step {run.step} (validation loss is "
                                 f"{loss}); lower {{lr}} or {{clip}}. Checkpoints written before are kept")
            run.validated_at, run.valid_loss = run.step, loss
            improved = run.best_loss is None or loss < run.best_loss
            if improved:
                run.best_loss = loss
                self.save_best(loss)
        self._record({"event": "valid", "step": run.step, "epoch": run.epoch, "loss": loss,
                      "perplexity": perplexity(loss), "lr": self.opt.lr, "improved": improved})
        self.emit(Validated(run.step, run.epoch, loss, perplexity(loss), float(run.best_loss), improved,
                            self.opt.lr))
        return loss
