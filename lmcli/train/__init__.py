"""Training: settings, the loop, and runs (started, resumed) with their folders.

- :mod:`lmcli.train.config`: the training settings, and the registry of every setting;
- :mod:`lmcli.train.step`: one optimisation step, and the running mean of its losses;
- :mod:`lmcli.train.schedule`: the budget, the learning rate, plateaus, NT-ASGD;
- :mod:`lmcli.train.state`: what a run carries from step to step, and its random state;
- :mod:`lmcli.train.trainer`: the loop, validation and checkpoints;
- :mod:`lmcli.train.runs`: starting and resuming runs, their folders and locks;
- :mod:`lmcli.train.events`: what a run reports, with the names ``--json`` writes.
"""

from lmcli.train.config import RESUMABLE, TrainConfig, all_settings, split_settings
from lmcli.train.events import EpochEnded, Event, Finished, Note, Progress, Started, Validated
from lmcli.train.runs import RunRequest, resume_run, start_run
from lmcli.train.step import MAX_BAD_STEPS, activation_penalty, compile_step, tail_shares
from lmcli.train.trainer import Trainer

__all__ = ["MAX_BAD_STEPS", "RESUMABLE", "EpochEnded", "Event", "Finished", "Note", "Progress",
           "RunRequest", "Started", "TrainConfig", "Trainer", "Validated", "activation_penalty",
           "all_settings", "compile_step", "resume_run", "split_settings", "start_run", "tail_shares"]
