"""``train --tensorboard``: the run's scalars for TensorBoard, beside its checkpoints.

A listener on the trainer's events (:mod:`lmcli.train.events`) writes, under
``RUN/tensorboard/``, the training loss and perplexity, the tokens per second and the
learning rate at each progress report, and the validation loss and perplexity at each
validation, all against the step; ``tensorboard --logdir RUN/tensorboard`` shows them. It
needs the optional ``tensorboard`` package (``pip install 'lmcli[tensorboard]'``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmcli.errors import LmcliError
from lmcli.train.events import Event, Finished, Progress, Started, Validated

FOLDER = "tensorboard"


class TensorBoardLog:
    """Called with every training event; opens its writer when the run starts (the run
    folder is known then) and closes it when the run finishes."""

    def __init__(self, then: Callable[[Event], None] | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise LmcliError("--tensorboard needs the tensorboard package, which is not installed: "
                             "pip install 'lmcli[tensorboard]'") from None
        self._writer_class = SummaryWriter
        self.writer: Any = None
        self.then = then

    def __call__(self, event: Event) -> None:
        if isinstance(event, Started):
            self.writer = self._writer_class(log_dir=str(Path(event.out_dir) / FOLDER))
        elif self.writer is not None and isinstance(event, Progress):
            for name, value in (("train/loss", event.loss), ("train/perplexity", event.perplexity),
                                ("train/tokens_per_second", event.tokens_per_second), ("train/lr", event.lr)):
                self.writer.add_scalar(name, value, event.step)
        elif self.writer is not None and isinstance(event, Validated):
            self.writer.add_scalar("valid/loss", event.loss, event.step)
            self.writer.add_scalar("valid/perplexity", event.perplexity, event.step)
        elif self.writer is not None and isinstance(event, Finished):
            self.close()
        if self.then is not None:
            self.then(event)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
