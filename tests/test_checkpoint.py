"""Checkpoints: self-contained, weights_only, atomic, and refusing what they should."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from lmcli import checkpoint as ckpt
from lmcli.errors import LmcliError
from lmcli.model import RNNLM, ModelConfig
from lmcli.vocabulary import build_tokenizer


def small_payload() -> dict:
    tokenizer = build_tokenizer("word", ["a b c\nb c d\n"])
    config = ModelConfig(vocab_size=tokenizer.vocab_size, cell="gru", layers=1, embed_dim=4,
                         hidden_dim=4, tie_weights=True)
    model = RNNLM(config)
    return ckpt.make_payload(model=model, tokenizer=tokenizer, model_config=config, data_config={},
                             train_config={}, step=7, epoch=1, tokens_seen=70, metrics=[{"x": 1.5}],
                             valid_loss=2.0, provenance={"corpus": ["c.txt"]})


def test_round_trip_with_plain_weights_only_torch_load(tmp_path: Path) -> None:
    payload = small_payload()
    path = tmp_path / "m.pt"
    ckpt.save(payload, path)
    raw = torch.load(path, weights_only=True)  # what any user can do, no lmcli needed
    assert raw["format"] == ckpt.FORMAT and raw["step"] == 7
    loaded = ckpt.load(path)
    model = loaded.build_model()
    assert model.decoder.weight is model.embedding.weight  # tying survives the round trip
    for name, value in payload["state_dict"].items():
        torch.testing.assert_close(model.state_dict()[name], value)
    assert loaded.tokenizer.tokens == build_tokenizer("word", ["a b c\nb c d\n"]).tokens
    assert loaded.summary()["parameters"] == model.num_parameters()  # the tied matrix once


def test_tied_weights_stay_one_tensor_whatever_the_device() -> None:
    """state_dict() hands out a tensor object per name, so to_cpu must match tied weights
    by memory: copied from a GPU one by one, they would be saved (and counted) twice."""
    weight = torch.randn(3, 4)
    state = {"embedding.weight": weight.detach(), "decoder.weight": weight.detach(),
             "other": weight[1:].detach()}
    moved = ckpt.to_cpu(state)
    assert moved["embedding.weight"] is moved["decoder.weight"]
    assert moved["other"] is not moved["embedding.weight"]
    torch.testing.assert_close(moved["other"], weight[1:])


def test_non_plain_values_are_caught_before_writing(tmp_path: Path) -> None:
    payload = small_payload()
    payload["provenance"]["where"] = tmp_path  # a Path: weights_only loading would refuse it
    with pytest.raises(TypeError):
        ckpt.save(payload, tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()


class Exploit:
    """A pickle that would create a file when loaded without weights_only."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_pickled_code_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": ckpt.FORMAT, "format_version": 1, "x": Exploit(marker)}, path)
    with pytest.raises(LmcliError, match="refusing to load"):
        ckpt.load(path)
    assert not marker.exists()
    plain_pickle = tmp_path / "evil.pkl"
    plain_pickle.write_bytes(pickle.dumps(Exploit(marker)))
    with pytest.raises(LmcliError):
        ckpt.load(plain_pickle)
    assert not marker.exists()


def test_truncated_foreign_and_newer_files_are_clear_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    ckpt.save(small_payload(), good)
    data = good.read_bytes()
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(LmcliError, match="truncated or corrupt"):
        ckpt.load(truncated)
    text = tmp_path / "notes.pt"
    text.write_text("hello", encoding="utf-8")
    with pytest.raises(LmcliError):
        ckpt.load(text)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(LmcliError, match="not an lmcli checkpoint"):
        ckpt.load(foreign)
    newer = tmp_path / "newer.pt"
    torch.save({**small_payload(), "format_version": ckpt.FORMAT_VERSION + 1, "lmcli_version": "9.0"}, newer)
    with pytest.raises(LmcliError, match="newer lmcli"):
        ckpt.load(newer)
    with pytest.raises(LmcliError, match="not found"):
        ckpt.load(tmp_path / "missing.pt")


def test_failed_write_keeps_the_previous_file(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    path = folder / "m.pt"
    ckpt.save(small_payload(), path)
    before = path.read_bytes()

    def broken(handle) -> None:
        handle.write(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(LmcliError, match=r"no space left on /\S* writing m.pt \([\d,.]+ MB free\)"):
        ckpt.atomic_write(path, broken)
    assert path.read_bytes() == before
    assert [p.name for p in folder.iterdir()] == ["m.pt"]  # no temporary file left behind


def test_resolve_run_folder_file_and_latest(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    root = tmp_path / "checkpoints"
    with pytest.raises(LmcliError, match="no training run recorded"):
        ckpt.resolve(None, root)
    with pytest.raises(LmcliError, match="holds no checkpoint"):
        ckpt.resolve(run, root)
    ckpt.save(small_payload(), run / ckpt.LAST)
    assert ckpt.resolve(run, root) == run / ckpt.LAST  # no best yet: the last one
    ckpt.save(small_payload(), run / ckpt.BEST)
    assert ckpt.resolve(run, root) == run / ckpt.BEST
    assert ckpt.resolve(run / ckpt.LAST, root) == run / ckpt.LAST
    ckpt.record_latest(run, root)
    assert ckpt.resolve(None, root) == (run / ckpt.BEST).resolve()
