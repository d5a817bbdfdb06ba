"""--compile: the training step through torch.compile trains the same model as the eager
step, resumes either way, and a compiler that cannot run is one clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch._dynamo.utils
from torch._dynamo.exc import BackendCompilerFailed

from lmcli.corpus import DataConfig
from lmcli.errors import LmcliError
from lmcli.cli import flag_of
from lmcli.train import RunRequest, TrainConfig, resume_run, start_run

from conftest import english_lines


def request(tmp_path: Path, out: str, **train: object) -> RunRequest:
    corpus = tmp_path / "corpus.txt"
    if not corpus.exists():
        corpus.write_text("\n".join(english_lines(120, seed=3)) + "\n", encoding="utf-8")
    # No dropout, so neither run draws random numbers and their steps are the same
    # arithmetic; AR and TAR on, so the penalty goes through the compiler too. SGD, whose
    # update is proportional to the gradient: Adam's first steps move every weight by the
    # rate times the sign of its gradient, and for a gradient near 0 float rounding picks it.
    # float32: under bf16 autocast the fused kernels skip some of eager's roundings to bf16.
    settings = {"amp": False, "seq_len": 12, "batch_size": 4, "epochs": None, "max_steps": 6,
                "optimizer": "sgd", "lr": 1.0, "seed": 3, "device": "cpu", "eval_every": 3, "ar": 1.0, "tar": 1.0, **train}
    return RunRequest(corpus=[str(corpus)], data=DataConfig(level="word", min_freq=1, valid_fraction=0.1),
                      model={"cell": "lstm", "layers": 2, "embed_dim": 12, "hidden_dim": 16,
                             "dropout": 0.0},
                      train=TrainConfig(**settings), out_dir=tmp_path / out)


def state(path: Path) -> tuple[dict[str, torch.Tensor], list[float]]:
    saved = torch.load(path, weights_only=True)
    return saved["state_dict"], [m["loss"] for m in saved["metrics"] if m["event"] == "valid"]


def test_compiled_training_is_the_eager_training_and_resumes_either_way(tmp_path: Path) -> None:
    eager = start_run(request(tmp_path, "eager"), root=tmp_path / "ck")
    torch._dynamo.utils.counters.clear()
    compiled = start_run(request(tmp_path, "compiled", max_steps=4, compile=True), root=tmp_path / "ck")
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # it did compile
    # and broke its graphs only at the recurrent layers' opaque call: an RNN module met in a
    # loop made Dynamo run the whole forward pass eagerly
    breaks = torch._dynamo.utils.counters["graph_break"]
    assert breaks and all("_run_layers" in reason for reason in breaks), list(breaks)
    assert json.loads((tmp_path / "compiled" / "config.json").read_text())["train"]["compile"] is True
    # The last two steps eager: --compile is a way to run, like --device, not part of the model.
    compiled = resume_run(tmp_path / "compiled", overrides={"max_steps": 6, "compile": False},
                          root=tmp_path / "ck")
    assert compiled.step == eager.step == 6
    eager_weights, eager_losses = state(eager.last_path)
    compiled_weights, compiled_losses = state(compiled.last_path)
    # Validations at steps 3 and 6 (the compiled run also validated where it stopped, at 4).
    assert len(eager_losses) == 2 and len(compiled_losses) == 3
    # Fused kernels sum in another order: the same numbers to float32 rounding.
    assert compiled_losses[0] == pytest.approx(eager_losses[0], rel=1e-6)
    assert compiled_losses[-1] == pytest.approx(eager_losses[-1], rel=1e-6)
    for name, value in eager_weights.items():
        torch.testing.assert_close(compiled_weights[name], value, rtol=1e-4, atol=1e-6, msg=name)
    # The update did happen: the weights moved from their start by far more than that.
    start = start_run(request(tmp_path, "start", max_steps=1, lr=1e-9), root=tmp_path / "ck")
    moved = state(start.last_path)[0]["decoder.weight"] - eager_weights["decoder.weight"]
    assert moved.abs().max() > 1e-3


def test_a_compiler_that_cannot_run_is_one_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_compile(module: object, **options: object):
        def call(*args: object) -> object:
            raise BackendCompilerFailed(lambda: None, RuntimeError("Compiler: cl is not found.\nmore"), None)
        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    with pytest.raises(LmcliError) as caught:
        start_run(request(tmp_path, "run", compile=True), root=tmp_path / "ck")
    message = caught.value.render(flag_of)  # as the CLI shows it
    assert message == ("--compile: torch.compile failed here (RuntimeError: Compiler: cl is not found.); "
                       "train without --compile")
    assert not (tmp_path / "run" / "last.pt").exists()
