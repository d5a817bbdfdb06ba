"""Choosing the device and the numeric precision to run on."""

from __future__ import annotations

import re
from contextlib import AbstractContextManager, nullcontext

import torch

from lmcli.errors import SettingError

_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+|mps)$")


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` picks the first CUDA GPU when there is one, else the CPU. A GPU that was
    asked for by name and is not there is an error, not a silent fall-back."""
    spec = (spec or "auto").strip().lower()
    if not _DEVICE.match(spec):
        raise SettingError(f"{{device}} must be auto, cpu, cuda, cuda:N or mps, got {spec!r}")
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "mps":
        if not torch.backends.mps.is_available():
            raise SettingError("{device} mps was asked for, but no Apple GPU is available")
        return torch.device("mps")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SettingError(f"{{device}} {spec} was asked for, but no CUDA GPU is available "
                               "(use {device} cpu or auto)")
        index = int(spec.split(":")[1]) if ":" in spec else 0
        count = torch.cuda.device_count()
        if index >= count:
            raise SettingError(f"{{device}} {spec}: there {'is' if count == 1 else 'are'} only "
                               f"{count} CUDA device{'s' if count != 1 else ''} (0..{count - 1})")
        return torch.device("cuda", index)
    return torch.device("cpu")


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX), as Linux reports."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = line.split()
                    return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        pass
    return False


def gpu_has_bf16(device: torch.device) -> bool:
    """Whether this CUDA GPU multiplies bf16 in hardware: Ampere (compute capability 8) or
    later, or any ROCm GPU. Not ``torch.cuda.is_bf16_supported()``, which also says yes
    where bf16 is only emulated (a V100, a T4) and asks about the current GPU, not this one."""
    if torch.version.hip:
        return True
    return torch.cuda.get_device_capability(device)[0] >= 8


def native_bf16(device: torch.device) -> bool:
    """Whether mixed precision is a free speed-up here: bf16 done in hardware (Ampere or
    later GPUs, CPUs with AVX512-BF16 or AMX). Training turns mixed precision (``amp``) on
    by default there."""
    if device.type == "cuda":
        return gpu_has_bf16(device)
    return device.type == "cpu" and cpu_has_bf16()


def amp_dtype(device: torch.device) -> torch.dtype:
    """fp16 on GPUs older than Ampere, whose tensor cores have no bf16 (training then
    scales the loss); bf16 everywhere else, on any CPU too, native or not."""
    if device.type == "cuda" and not gpu_has_bf16(device):
        return torch.float16
    return torch.bfloat16


def autocast(device: torch.device, enabled: bool) -> AbstractContextManager[object]:
    """Mixed precision when asked: matrix products in bf16 (fp16 on older GPUs) with fp32
    weights and accumulation; a no-op elsewhere. On a CPU it pays only where bf16 is
    native (see benchmarks/quality/FINDINGS.md)."""
    if enabled and device.type in ("cuda", "cpu"):
        return torch.autocast(device.type, dtype=amp_dtype(device))
    return nullcontext()


def describe(device: torch.device) -> str:
    """A short human description: ``cpu (2 threads)`` or ``cuda:0 (NVIDIA H100)``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)


# Dense peak FLOP/s of data-centre and workstation GPUs (vendor datasheets, no sparsity):
# (model name, bf16/fp16 tensor cores, fp32 without tensor cores). A model name matches
# whole words of the device name ("NVIDIA GH200 480GB" is a GH200, not an H200; an "L40"
# is no "L4"), and the first match wins, so a longer name comes before its first word.
_GPU_PEAKS: tuple[tuple[str, float, float], ...] = (
    ("H200", 989.4e12, 66.9e12),
    ("GH200", 989.4e12, 66.9e12),
    ("H100 PCIe", 756.0e12, 51.2e12),
    ("H100", 989.4e12, 66.9e12),  # SXM
    ("A100", 312.0e12, 19.5e12),
    ("A10G", 70.0e12, 31.2e12),
    ("A10", 125.0e12, 31.2e12),
    ("L40S", 362.0e12, 91.6e12),
    ("L4", 121.0e12, 30.3e12),
    ("RTX 4090", 165.2e12, 82.6e12),
    ("RTX 3090", 71.0e12, 35.6e12),
    ("V100", 125.0e12, 15.7e12),
    ("T4", 65.0e12, 8.1e12),
)


def peak_flops(device: torch.device, amp: bool) -> float | None:
    """The chip's dense peak FLOP/s at the precision training uses (bf16/fp16 tensor cores
    with mixed precision, plain fp32 without), for a GPU in the table; None elsewhere."""
    if device.type != "cuda":
        return None
    return gpu_peak(torch.cuda.get_device_name(device), amp)


def _words(name: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", name.lower())


def gpu_entry(name: str) -> tuple[str, float, float] | None:
    """The table's row for a device name such as ``NVIDIA A100-SXM4-80GB``, if any."""
    words = _words(name)
    for entry in _GPU_PEAKS:
        wanted = _words(entry[0])
        if any(words[i:i + len(wanted)] == wanted for i in range(len(words))):
            return entry
    return None


def gpu_peak(name: str, amp: bool) -> float | None:
    entry = gpu_entry(name)
    if entry is None:
        return None
    return entry[1] if amp else entry[2]
