"""How to train: the optimisation settings, each declared once (see :mod:`lmcli.settings`)."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import asdict, dataclass, fields
from typing import Any

from lmcli.corpus import DataConfig
from lmcli.distributed import World
from lmcli.errors import LmcliError, SettingError
from lmcli.model import ModelConfig
from lmcli.settings import Setting, check, declared, setting
from lmcli.units import parse_duration

OPTIMIZERS = ("adam", "adamw", "sgd", "ntasgd")
SCHEDULES = ("plateau", "cosine")
BATCHING = ("stream", "sentences")
# Per optimizer: learning rate, clip, plateau decay, weight decay (AWD-LSTM's for NT-ASGD).
OPTIMIZER_DEFAULTS = {
    "adam": (2e-3, 1.0, 0.5, 0.0),
    "adamw": (2e-3, 1.0, 0.5, 0.01),
    "sgd": (20.0, 0.25, 0.25, 0.0),
    "ntasgd": (30.0, 0.25, 0.25, 1.2e-6),
}
TRAINING, RUN = "Training", "Run"
DEVICE_HELP = "auto, cpu, cuda or cuda:N."


@dataclass
class TrainConfig:
    """How to train. Made, it is checked and complete: ``None`` in lr, clip, lr_decay and
    weight_decay becomes the optimizer's default, and patience's ``None`` the schedule's."""

    seq_len: int = setting(64, "BPTT length: tokens per window.", panel=TRAINING, at_least=1)
    batch_size: int = setting(32, "Parallel lanes of text per step.", panel=TRAINING, at_least=1)
    epochs: int | None = setting(10, "Passes over the corpus.", panel=TRAINING, at_least=1, resumable=True,
                                 default_text="10; none when {time_limit} or {max_steps} is given "
                                              "without it")
    max_steps: int | None = setting(None, "Stop after this many steps.", panel=TRAINING, at_least=1,
                                    resumable=True)
    time_limit: float | None = setting(None, "Stop once the run has trained this long (90s, 15m, 2h; "
                                       "a resumed run counts its earlier time) and keep the best "
                                       "model.", panel=TRAINING, above=0, resumable=True,
                                       parse=parse_duration)
    optimizer: str = setting("adam", "adam, adamw, sgd or ntasgd (SGD with non-monotonically "
                             "triggered averaging).", panel=TRAINING, choices=OPTIMIZERS)
    lr: float | None = setting(None, "Learning rate.", panel=TRAINING, above=0,
                               default_text="the optimizer's: 2e-3 adam/adamw, 20 sgd, 30 ntasgd")
    clip: float | None = setting(None, "Gradient-norm clipping (0 = off).", panel=TRAINING, at_least=0,
                                 default_text="1.0 adam/adamw, 0.25 sgd/ntasgd")
    weight_decay: float | None = setting(None, "L2 weight decay.", panel=TRAINING, at_least=0,
                                         default_text="0; 0.01 adamw, 1.2e-6 ntasgd")
    lr_decay: float | None = setting(None, "Multiply the learning rate by this when validation "
                                     "stalls.", panel=TRAINING, above=0, at_most=1,
                                     default_text="0.5 adam/adamw, 0.25 sgd/ntasgd")
    lr_schedule: str = setting("plateau", "plateau: decay when validation stalls; cosine: decay to "
                               "zero over the budget (epochs, steps or time).", panel=TRAINING,
                               choices=SCHEDULES)
    warmup: int = setting(0, "Steps of linear learning-rate warm-up.", panel=TRAINING, at_least=0)
    ar: float = setting(0.0, "Activation regularisation (AR) weight: ar * mean(h_t^2) over the last "
                        "layer's dropped-out outputs.", panel=TRAINING, at_least=0)
    tar: float = setting(0.0, "Temporal activation regularisation (TAR) weight: tar * "
                         "mean((h_t - h_{t-1})^2), before dropout.", panel=TRAINING, at_least=0)
    nonmono: int = setting(5, "NT-ASGD: start averaging when validation is worse than N checks "
                           "ago.", panel=TRAINING, at_least=1)
    batching: str = setting("stream", "stream: windows of the running text, state carried; "
                            "sentences: whole sentences from a zero state, as score sees them.",
                            panel=TRAINING, choices=BATCHING)
    sentence_phase: float = setting(
        0.0, "Share of the budget, at its end, that stream batching spends on whole sentences "
             "from an empty context, as score sees them (0 = none).", panel=TRAINING, at_least=0,
        below=1)
    # The late low-rate steps of a cosine schedule are where it gains, and validation is
    # noisy at high rates: no early stopping there unless asked for.
    patience: int | None = setting(None, "Stop after this many validations in a row without "
                                   "improvement.", panel=TRAINING, at_least=1, resumable=True,
                                   default_text="5 with plateau decay; off with cosine decay")
    lr_patience: int = setting(2, "Decay the learning rate after this many validations in a row "
                               "without improvement.", panel=TRAINING, at_least=1, resumable=True)
    eval_every: int | None = setting(None, "Validate every N steps.", panel=TRAINING, at_least=1,
                                     resumable=True,
                                     default_text="four times an epoch, at most every 2,000 steps")
    seed: int = setting(1234, "Random seed; the same seed and data give the same run on a CPU.",
                        panel=TRAINING)
    device: str = setting("auto", DEVICE_HELP, panel=RUN, resumable=True)
    amp: bool | None = setting(None, "Mixed precision: bf16 products (fp16 with a scaler on older "
                               "GPUs).", panel=RUN, resumable=True,
                               default_text="on where bf16 is native: Ampere+ GPUs, AVX512-BF16/AMX CPUs")
    # Off by default: slower to start, and no faster per step where it was measured
    # (benchmarks/BENCHMARKS.md, the training row).
    compile: bool = setting(False, "Compile the training step with torch.compile: slower to start, "
                            "maybe faster per step (measure with benchmarks/bench_train.py).",
                            panel=RUN, resumable=True)

    def __post_init__(self) -> None:
        check(self)
        lr, clip, decay, weight_decay = OPTIMIZER_DEFAULTS[self.optimizer]
        self.lr = lr if self.lr is None else self.lr
        self.clip = clip if self.clip is None else self.clip
        self.lr_decay = decay if self.lr_decay is None else self.lr_decay
        self.weight_decay = weight_decay if self.weight_decay is None else self.weight_decay
        if self.patience is None and self.lr_schedule == "plateau":
            self.patience = 5
        if self.lr_schedule == "cosine" and self.epochs is None and self.max_steps is None \
                and self.time_limit is None:
            raise SettingError("{lr_schedule} cosine needs a budget to decay over: {epochs}, "
                               "{max_steps} or {time_limit}")

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes``, checked again."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def check_world(config: TrainConfig, world: World) -> None:
    """The global batch must split evenly into the ranks' lanes."""
    if config.batch_size % world.size:
        raise SettingError(f"{{batch_size}} {config.batch_size} does not split evenly among {world.size} "
                           f"processes; use a multiple of {world.size} (it is the global batch: "
                           "each process trains batch-size / processes lanes)")


RESUMABLE = tuple(item.name for item in declared(TrainConfig, "train") if item.spec.resumable)


@functools.cache
def all_settings() -> dict[str, Setting]:
    """Every setting of a training run, by name: the data, model and training configs'."""
    groups = (("data", DataConfig), ("model", ModelConfig), ("train", TrainConfig))
    return {item.name: item for group, config in groups for item in declared(config, group)}


def split_settings(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Settings by the config they belong to: {"data": {...}, "model": {...}, "train": {...}}."""
    known = all_settings()
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise LmcliError(f"unknown settings: {', '.join(unknown)}")
    groups: dict[str, dict[str, Any]] = {"data": {}, "model": {}, "train": {}}
    for name, value in values.items():
        groups[known[name].group][name] = value
    return groups


def stored_settings(payload: dict[str, Any]) -> dict[str, Any]:
    """Every setting's value in a checkpoint (None for one it predates)."""
    configs = {"data": payload.get("data_config") or {}, "model": payload.get("model_config") or {},
               "train": payload.get("train_config") or {}}
    return {name: configs[item.group].get(name) for name, item in all_settings().items()}
