"""``train --init-from``: a new run that starts from another model's weights.

Unlike ``--resume`` (the same run, the same corpus, where it stopped), this is a new run on
a new corpus: a fresh optimizer, schedule and budget, the source model's weights and its
tokenizer. The vocabulary stays the source's, so text it lacks becomes ``<UNK>`` (the
share is reported; Chinese in the other script is first converted into the source's, as
``score`` converts what users type), and everything the weights fix (the cell, the sizes, the output
layer, the reading direction, the tokenization) comes from the source: a flag that would
change one is refused. The source's other training settings (optimizer, windows, lanes,
dropout, clipping...) are the defaults here, as a recipe's are; flags given override them.

The learning rate defaults to the source's times :data:`LR_SCALE`. At the rate that
trained it from scratch, the first steps on a small corpus move the weights far from what
the general text taught (the forgetting fine-tuning is meant to avoid); far below it, the
new text is barely learned in a few minutes. Among a tenth, three tenths and the full rate,
three tenths did best on validation (benchmarks/RESULTS.md, "Fine-tuning").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmcli import checkpoint as ckpt
from lmcli.corpus import DataEvent
from lmcli.errors import InputError, SettingError
from lmcli.tokenizers import EOS_ID, UNK_ID
from lmcli.train.config import TrainConfig, stored_settings

LR_SCALE = 0.3
MOST_UNKNOWN = 0.5  # a corpus at least this unknown to the vocabulary is refused
# What the weights and the vocabulary fix: a fine-tuned model keeps them.
FIXED = ("level", "vocab_size", "min_freq", "lowercase", "cell", "direction", "periods",
         "attn_window", "attn_score", "layers", "embed_dim", "hidden_dim", "tie_weights",
         "softmax", "cutoffs", "adaptive_div")
# What belongs to the new run, not to the source: its budget, its text, its machine.
OWN = ("epochs", "max_steps", "time_limit", "patience", "eval_every", "seed", "device", "amp",
       "compile", "valid_fraction", "valid_file", "encoding", "errors", "lr")


@dataclass
class Origin:
    """The checkpoint a run starts from."""

    path: Path
    checkpoint: ckpt.Checkpoint

    @classmethod
    def load(cls, spec: str | Path) -> Origin:
        path = ckpt.resolve(spec).resolve()
        return cls(path, ckpt.load(path))

    def conversion(self) -> tuple[str, Callable[[str], str]] | None:
        """Chinese text in the other script, turned into the source's as its vocabulary
        reads it (the conversion ``score`` applies to what users type); None when the
        source's vocabulary is in neither script."""
        convert = self.checkpoint.convert
        return None if convert is None else (f"to {self.checkpoint.script}", convert)

    def record(self, unk_share: float, warn: DataEvent | None = None) -> dict[str, Any]:
        """What the new run's checkpoints record of it (provenance ``init_from``); a share
        of unknown text is told to ``warn`` as a data warning."""
        if unk_share and warn is not None:
            warn("warning", {"message": f"{unk_share:.2%} of the new corpus's tokens are <UNK>: the "
                                        "vocabulary of the model it starts from lacks them"})
        return {"path": str(self.path), "step": self.checkpoint.step,
                "corpus": (self.checkpoint.payload.get("provenance") or {}).get("corpus"),
                "unk_share": unk_share}


def inherited_settings(origin: Origin, given: dict[str, Any]) -> dict[str, Any]:
    """The settings layer the source gives a fine-tuning run (below the flags given):
    everything it was trained with but the new run's own (:data:`OWN`), and the learning
    rate scaled. A given flag that changes what the weights fix is refused."""
    stored = stored_settings(origin.checkpoint.payload)
    stored["vocab_size"] = origin.checkpoint.model_config.vocab_size  # what the tokenizer holds
    for name in FIXED:
        if given.get(name) is not None and given[name] != stored.get(name):
            raise SettingError(f"{{{name}}} {given[name]} differs from the model it starts from "
                               f"({stored.get(name)}): a fine-tuned model keeps its shape and "
                               "vocabulary; leave the flag out")
    inherited = {k: v for k, v in stored.items() if k not in OWN and v is not None}
    source_lr = TrainConfig.from_dict(origin.checkpoint.payload.get("train_config") or {}).lr
    inherited["lr"] = float(source_lr) * LR_SCALE
    return inherited


def checked_unk_share(stream: np.ndarray) -> float:
    """The share of a token stream's tokens (line ends aside) that are ``<UNK>``; at
    :data:`MOST_UNKNOWN` or more the model cannot read the corpus, and that is an error."""
    tokens = len(stream) - int(np.count_nonzero(stream == EOS_ID))
    share = int(np.count_nonzero(stream == UNK_ID)) / tokens if tokens else 0.0
    if share >= MOST_UNKNOWN:
        raise InputError(f"{share:.0%} of the new corpus's tokens are <UNK> for the model it starts "
                         "from: it was trained on other text (another language, script or level)",
                         "fine-tune a model trained on text like it, or train without {init_from}")
    return share
