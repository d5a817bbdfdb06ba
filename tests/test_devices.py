"""Device choice, bf16 detection and the GPU peak table, without needing a GPU."""

from __future__ import annotations

import pytest
import torch

from lmcli import devices
from lmcli.devices import gpu_entry, gpu_peak, resolve_device
from lmcli.errors import SettingError


@pytest.mark.parametrize("entry", devices._GPU_PEAKS, ids=lambda entry: entry[0])
def test_every_gpu_table_entry_can_match(entry: tuple[str, float, float]) -> None:
    """No row is shadowed by an earlier one: a device named exactly as the row finds it."""
    assert gpu_entry(f"NVIDIA {entry[0]}") == entry
    assert gpu_entry(entry[0].lower()) == entry


@pytest.mark.parametrize("name,row", [
    ("NVIDIA GH200 480GB", "GH200"),
    ("NVIDIA H200", "H200"),
    ("NVIDIA H100 80GB HBM3", "H100"),
    ("NVIDIA H100 PCIe", "H100 PCIe"),
    ("NVIDIA A100-SXM4-80GB", "A100"),
    ("NVIDIA A10G", "A10G"),
    ("NVIDIA A10", "A10"),
    ("NVIDIA L40S", "L40S"),
    ("NVIDIA L4", "L4"),
    ("NVIDIA GeForce RTX 4090", "RTX 4090"),
    ("Tesla V100-SXM2-16GB", "V100"),
    ("Tesla T4", "T4"),
    ("NVIDIA L40", None),  # not in the table, and no L4
    ("NVIDIA RTX A4000", None),
    ("Some Future GPU", None),
])
def test_device_names_find_their_row(name: str, row: str | None) -> None:
    entry = gpu_entry(name)
    assert (entry[0] if entry else None) == row


def test_gpu_peak_by_precision() -> None:
    assert gpu_peak("NVIDIA H100 PCIe", amp=True) == 756.0e12
    assert gpu_peak("NVIDIA H100 PCIe", amp=False) == 51.2e12
    assert gpu_peak("NVIDIA L40", amp=True) is None


@pytest.mark.parametrize("capability,bf16", [((7, 0), False), ((7, 5), False), ((8, 0), True), ((9, 0), True)])
def test_bf16_on_a_gpu_means_ampere_or_later(monkeypatch: pytest.MonkeyPatch,
                                             capability: tuple[int, int], bf16: bool) -> None:
    """Emulated bf16 (what torch.cuda.is_bf16_supported() also counts) is not native."""
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    gpu = torch.device("cuda", 0)
    assert devices.native_bf16(gpu) is bf16
    assert devices.amp_dtype(gpu) == (torch.bfloat16 if bf16 else torch.float16)


def test_bad_device_names_the_setting() -> None:
    with pytest.raises(SettingError) as caught:
        resolve_device("tpu")
    assert caught.value.render(lambda name: f"--{name}").startswith("--device must be auto, cpu")
    assert str(caught.value).startswith("device must be")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_missing_gpu_names_the_setting() -> None:
    with pytest.raises(SettingError, match="device cuda:1 was asked for, but no CUDA GPU"):
        resolve_device("cuda:1")
