"""GPU paths, run where CUDA is present (skipped elsewhere; CPU tests cover the logic)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmcli import checkpoint as ckpt
from lmcli.corpus import DataConfig
from lmcli.scoring import score_sentences
from lmcli.train import RunRequest, TrainConfig, start_run

from conftest import english_lines

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("amp", [False, True])
def test_train_on_gpu_then_use_on_cpu(tmp_path: Path, amp: bool) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(english_lines(300)) + "\n", encoding="utf-8")
    finished = start_run(RunRequest(
        corpus=[str(corpus)], data=DataConfig(level="word", min_freq=1),
        model={"cell": "lstm", "layers": 2, "embed_dim": 32, "hidden_dim": 32, "dropout": 0.1},
        train=TrainConfig(seq_len=16, batch_size=8, epochs=2, device="cuda", amp=amp),
        out_dir=tmp_path / "run"), root=tmp_path / "ck")
    raw = torch.load(finished.best_path, weights_only=True)
    assert all(t.device.type == "cpu" for t in raw["state_dict"].values())
    loaded = ckpt.load(finished.best_path)
    cpu_model = loaded.build_model("cpu")
    gpu_model = loaded.build_model("cuda")
    sentence = ["the cat sees the moon ."]
    on_cpu = next(iter(score_sentences(cpu_model, loaded.tokenizer, sentence))).logprob
    on_gpu = next(iter(score_sentences(gpu_model, loaded.tokenizer, sentence))).logprob
    assert on_cpu == pytest.approx(on_gpu, abs=1e-3)
