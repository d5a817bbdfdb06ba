"""Data-parallel training under ``torchrun``: PyTorch's DistributedDataParallel, NCCL on
GPUs and gloo on CPUs.

``torchrun --nproc_per_node N -m lmcli train ...`` starts N copies of lmcli, each told its
rank and the world size in its environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``). :func:`join` reads them and joins the process group;
without them lmcli runs as the single process it always was, with no process group.

How the work is shared (the trainer does it; this module holds the pieces):

- ``batch_size`` is the global batch: the B lanes of truncated BPTT are laid out over the
  token stream exactly as in one process, and rank r trains lanes [r*B/N, (r+1)*B/N). No
  two ranks see the same windows, an epoch is the same set of windows whatever N is, and
  the run position, the recurrent state (gathered) and the checkpoint mean the same thing
  at any world size.
- DDP averages the gradients; each rank's loss is scaled so that the average is the mean
  over the global batch's targets (padding left out), as one process computes it.
- Decisions that must not differ between ranks (stop at a time limit or on a signal, the
  learning rate of a time-driven schedule, skipping a non-finite step) are agreed on with
  a small all-reduce: the clock every :data:`SYNC_EVERY` steps, the finite flag every step
  (on the device, no host sync).
- Validation sentences are shared out and the loss sums all-reduced; rank 0 alone writes
  checkpoints, metrics and the run folder, and alone reports events.
"""

from __future__ import annotations

import datetime as _dt
import gc
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from lmcli.errors import LmcliError, SettingError, UsageError

T = TypeVar("T")

# Steps between agreements on the clock and on a stop request: a host sync on a GPU, so
# not every step; a time limit or Ctrl-C takes effect within this many steps.
SYNC_EVERY = 16
# Rank 0 reads and encodes the corpus while the others wait for it at a barrier, so the
# collectives' timeout must outlast encoding the largest corpus on a slow disk, not only
# a training step: NCCL's default is far shorter (see benchmarks/quality/FINDINGS.md).
TIMEOUT = _dt.timedelta(minutes=60)
_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


class RelayedError(LmcliError):
    """Rank 0's error, raised on the other ranks too so that every process stops with it.
    Only rank 0 shows it."""


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (a single process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None  # None: no process group (one process)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.backend is not None

    def lanes(self, batch_size: int) -> slice:
        """The batch lanes this rank trains."""
        share = batch_size // self.size
        return slice(self.rank * share, (self.rank + 1) * share)

    def describe(self) -> str:
        return f"{self.size} processes ({self.backend})" if self.distributed else "1 process"

    # -- collectives (no-ops in one process) ------------------------------------------

    def all_sum(self, values: list[float], device: torch.device) -> list[float]:
        """Element-wise sums over the ranks, in float64."""
        return self._all_reduce(values, device, dist.ReduceOp.SUM)

    def all_max(self, values: list[float], device: torch.device) -> list[float]:
        """Element-wise maxima over the ranks."""
        return self._all_reduce(values, device, dist.ReduceOp.MAX)

    def _all_reduce(self, values: list[float], device: torch.device, op: Any) -> list[float]:
        if not self.distributed:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor, op=op)
        return tensor.tolist()

    def all_true(self, flag: torch.Tensor) -> torch.Tensor:
        """Whether ``flag`` (a bool tensor) is true on every rank; stays on the device."""
        if not self.distributed:
            return flag
        as_int = flag.to(torch.int32)
        dist.all_reduce(as_int, op=dist.ReduceOp.MIN)
        return as_int.bool()

    def gather_lanes(self, tensor: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """Every rank's lanes of a state tensor, concatenated in rank order along ``dim``."""
        if not self.distributed:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=dim)

    def gather_objects(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (picklable), in rank order."""
        if not self.distributed:
            return [value]
        parts: list[Any] = [None] * self.size
        dist.all_gather_object(parts, value)
        return parts

    def from_main(self, value: T) -> T:
        """Rank 0's ``value`` on every rank."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def main_first(self, work: Callable[[], T], others: Callable[[], T] | None = None) -> T:
        """Run ``work`` on rank 0, then (after it succeeded) ``others`` (default: ``work``
        again) on the other ranks: setup that writes shared files (the run folder, the
        token cache) happens once, and the other ranks then read it. An error on rank 0
        is raised on every rank (as :class:`RelayedError` elsewhere), so no rank is left
        waiting for the rest."""
        if not self.distributed:
            return work()
        if self.main:
            try:
                result = work()
            except LmcliError as exc:
                self.from_main(("error", str(exc), exc.exit_code))
                raise
            except BaseException as exc:
                self.from_main(("error", f"rank 0 failed: {type(exc).__name__}: {exc}", 1))
                raise
            self.from_main(("ok", "", 0))
            return result
        status, message, code = self.from_main(("?", "", 0))
        if status == "error":
            error = RelayedError(message)
            error.exit_code = code
            raise error
        return (others or work)()


SINGLE = World()


def launched() -> bool:
    """Whether a launcher (torchrun) started this process as one rank of several."""
    return all(name in os.environ for name in _ENV)


def env_world() -> World:
    """Rank, world size and local rank from the environment (no process group yet)."""
    if not launched():
        return SINGLE
    try:
        rank, size, local = (int(os.environ[name]) for name in _ENV)
    except ValueError:
        raise UsageError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (set by torchrun)") from None
    if size < 1 or not 0 <= rank < size or local < 0:
        raise UsageError(f"bad torchrun environment: RANK={rank}, WORLD_SIZE={size}, LOCAL_RANK={local}")
    return World(rank, size, local)


def place(device: torch.device, world: World) -> torch.device:
    """This rank's device: GPU ``LOCAL_RANK`` when training on CUDA under torchrun."""
    if not launched() or device.type != "cuda":
        return device
    if device.index not in (None, 0) and device.index != world.local_rank:
        raise SettingError(f"{{device}} {device} under torchrun: each process trains on the GPU "
                           "of its LOCAL_RANK; use {device} cuda (or auto)")
    if world.local_rank >= torch.cuda.device_count():
        raise UsageError(f"LOCAL_RANK {world.local_rank}, but this machine has "
                         f"{torch.cuda.device_count()} CUDA device(s); lower --nproc_per_node (torchrun's)")
    return torch.device("cuda", world.local_rank)


def join(device: torch.device) -> World:
    """Join the process group torchrun describes (once per process), on ``device`` (the
    rank's, from :func:`place`): NCCL for CUDA, gloo otherwise. One process: SINGLE."""
    world = env_world()
    if not launched():
        return SINGLE
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        try:
            dist.init_process_group(backend, timeout=TIMEOUT,
                                    device_id=device if device.type == "cuda" else None)
        except (RuntimeError, ValueError) as exc:
            raise LmcliError(f"could not join the torchrun process group ({backend}): {exc}") from None
    elif dist.get_backend() != backend:
        raise LmcliError(f"the process group uses {dist.get_backend()}, but this run trains on "
                         f"{device} ({backend} needed)")
    if dist.get_world_size() != world.size or dist.get_rank() != world.rank:
        raise LmcliError("the process group does not match RANK / WORLD_SIZE")
    return World(world.rank, world.size, world.local_rank, backend)


def leave(together: bool = True) -> None:
    """Leave the process group, if this process joined one; ``together``: wait for every
    rank first (a normal end; after an error torchrun stops the others).

    The group must be gone before the interpreter shuts down: gloo's worker threads drop
    their last finished collective (which holds Python tensors) after the caller has moved
    on, and a thread that wants the GIL during finalization aborts the process
    (``terminate called without an active exception``, now and then: see
    benchmarks/quality/FINDINGS.md). So the trainer, whose DDP wrapper holds the group, is
    collected first, and the group's destructor then joins its threads while Python is
    still whole."""
    if dist.is_available() and dist.is_initialized():
        if together:
            dist.barrier()
        gc.collect()
        dist.destroy_process_group()
        gc.collect()
