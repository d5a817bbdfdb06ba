"""Choosing the device and the numeric precision to run on."""

from __future__ import annotations

import re
from contextlib import AbstractContextManager, nullcontext

import torch

from lmcli.errors import UsageError

_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+|mps)$")


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` picks the first CUDA GPU when there is one, else the CPU. A GPU that was
    asked for by name and is not there is an error, not a silent fall-back."""
    spec = (spec or "auto").strip().lower()
    if not _DEVICE.match(spec):
        raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, got {spec!r}")
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "mps":
        if not torch.backends.mps.is_available():
            raise UsageError("--device mps was asked for, but no Apple GPU is available")
        return torch.device("mps")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {spec} was asked for, but no CUDA GPU is available "
                             "(use --device cpu or auto)")
        index = int(spec.split(":")[1]) if ":" in spec else 0
        count = torch.cuda.device_count()
        if index >= count:
            raise UsageError(f"--device {spec}: there {'is' if count == 1 else 'are'} only "
                             f"{count} CUDA device{'s' if count != 1 else ''} (0..{count - 1})")
        return torch.device("cuda", index)
    return torch.device("cpu")


def amp_dtype(device: torch.device) -> torch.dtype:
    """bf16 where the GPU does it natively (Ampere and later), fp16 otherwise."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def autocast(device: torch.device, enabled: bool) -> AbstractContextManager[object]:
    """Mixed precision on CUDA when asked; a no-op elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=amp_dtype(device))
    return nullcontext()


def describe(device: torch.device) -> str:
    """A short human description: ``cpu (2 threads)`` or ``cuda:0 (NVIDIA H100)``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)
