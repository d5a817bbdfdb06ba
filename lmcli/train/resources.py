"""What a run will need of the machine, checked before anything is allocated: memory for
training, and disk for its checkpoints.

The model is built on PyTorch's ``meta`` device (shapes, no storage) to count its
parameters. Memory: the weights, their gradients and the optimizer's state (two slots
for Adam, none for plain SGD, one average for NT-ASGD), plus the activations kept for
the backward pass of one batch of ``batch_size x seq_len`` tokens (each layer's gates,
cell and output per token, the embeddings, and the logits and their gradient), plus what
the process already holds. It is an estimate, meant to be within a factor of two of the
peak; a configuration far beyond the machine is refused at once instead of failing in
the allocator.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from lmcli import checkpoint as ckpt
from lmcli.disk import MB, check_room, megabytes
from lmcli.errors import LmcliError
from lmcli.model import RNNLM, ModelConfig
from lmcli.output import BLOCK_FLOATS_GPU
from lmcli.scoring import BATCH_BUDGET, token_floats
from lmcli.train.config import TrainConfig

FLOAT = 4  # bytes: weights and optimizer state are float32
OPTIMIZER_SLOTS = {"adam": 2, "adamw": 2, "sgd": 0, "ntasgd": 1}
GB = 1 << 30


def parameter_count(config: ModelConfig) -> int:
    """The model's parameters, counted without allocating them."""
    with torch.device("meta"):
        return sum(p.numel() for p in RNNLM(config).parameters())


def checkpoint_bytes(parameters: int, train: TrainConfig) -> tuple[int, int]:
    """(best.pt, last.pt) sizes, about: the weights; and the weights with the optimizer's
    state and, under NT-ASGD, the running average."""
    best = parameters * FLOAT
    return best, best * (1 + OPTIMIZER_SLOTS.get(train.optimizer, 2)) + MB


def check_disk(out_dir: Path, model: ModelConfig, train: TrainConfig) -> None:
    """The run folder must hold best.pt, last.pt and the temporary copy of the larger
    while it is rewritten (what is there now will be replaced)."""
    best, last = checkpoint_bytes(parameter_count(model), train)
    existing = sum(path.stat().st_size for name in (ckpt.BEST, ckpt.LAST)
                   if (path := Path(out_dir) / name).is_file())
    check_room(Path(out_dir), best + 2 * last - existing, "this run's checkpoints (best.pt, last.pt and a "
               "temporary copy while one is rewritten)")


def training_bytes(model: ModelConfig, train: TrainConfig) -> int:
    """The memory training takes beyond what the process holds already, about."""
    parameters = parameter_count(model)
    state = parameters * FLOAT * (2 + OPTIMIZER_SLOTS.get(train.optimizer, 2))
    tokens = train.batch_size * train.seq_len
    per_layer = model.hidden_dim * 8  # gates, cell, output and their gradients, per token
    output = model.vocab_size if model.softmax != "adaptive" else (model.cutoffs or [model.vocab_size])[0]
    per_token = model.embed_dim * 2 + model.layers * per_layer + output * 3
    # Validation scores whole sentences in batches of at most BATCH_BUDGET floats of
    # activations, their logits a block at a time.
    lanes = max(64, train.batch_size) * 64
    validation = min(BATCH_BUDGET, lanes * token_floats(model)) + min(BLOCK_FLOATS_GPU, lanes * output) * 2
    return state + max(tokens * per_token, validation) * FLOAT


def available_memory(device: torch.device) -> int | None:
    """Bytes the device can still give: the GPU's free memory, or MemAvailable on Linux."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(model: ModelConfig, train: TrainConfig, device: torch.device) -> int:
    """Refuse a configuration whose training cannot fit in the device's memory; the
    estimate, in bytes."""
    needed = training_bytes(model, train)
    free = available_memory(device)
    if free is not None and needed > free:
        where = "the GPU has" if device.type == "cuda" else "the machine has"
        raise LmcliError(f"training this model needs about {_size(needed)} of memory (weights, gradients, "
                         f"optimizer state, activations of {train.batch_size} x {train.seq_len} tokens) and "
                         f"{where} {_size(free)} available; lower --hidden-dim, --embed-dim, --layers, "
                         "--vocab-size, --batch-size or --seq-len")
    return needed


def _size(count: int) -> str:
    return f"{count / GB:,.1f} GB" if count >= GB else megabytes(count)


# How PyTorch's allocators say that memory ran out (the CPU one raises a RuntimeError).
ALLOCATION_FAILURES = ("can't allocate memory", "out of memory", "DefaultCPUAllocator", "Cannot allocate memory")


def out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocation that failed (not a bug)."""
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return True
    return isinstance(error, RuntimeError) and any(s in str(error) for s in ALLOCATION_FAILURES)

