"""Sampling: never <UNK>, repeatable with a seed, lines and filters as documented."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from lmcli import checkpoint as ckpt
from lmcli.corpus import DataConfig
from lmcli.errors import UsageError
from lmcli.sampling import SamplingConfig, filter_logits, generate
from lmcli.tokenizers import EOS_ID, UNK_ID
from lmcli.train import RunRequest, TrainConfig, start_run


@pytest.fixture(scope="module")
def unk_heavy(tmp_path_factory: pytest.TempPathFactory) -> ckpt.Checkpoint:
    """A model trained on text that is mostly words seen once (all <UNK> with min-freq 2)."""
    root = tmp_path_factory.mktemp("unk")
    rng = random.Random(0)
    lines = [" ".join(["the"] + [f"w{rng.randrange(10**9)}" for _ in range(8)]) for _ in range(300)]
    (root / "c.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    finished = start_run(RunRequest(
        corpus=[str(root / "c.txt")], data=DataConfig(level="word", min_freq=2, valid_fraction=0.0),
        model={"cell": "gru", "layers": 1, "embed_dim": 8, "hidden_dim": 16, "dropout": 0.0},
        train=TrainConfig(seq_len=20, batch_size=8, epochs=3, lr=0.02, device="cpu"),
        out_dir=root / "run"), root=root / "ck")
    return ckpt.load(finished.best_path)


def test_unk_is_never_sampled_even_where_it_dominates(unk_heavy: ckpt.Checkpoint) -> None:
    model = unk_heavy.build_model()
    tokenizer = unk_heavy.tokenizer
    with torch.no_grad():
        logits, _ = model(torch.tensor([[EOS_ID] + tokenizer.encode("the")]))
    assert logits[0, -1].argmax().item() == UNK_ID  # the premise: <UNK> is the favourite
    samples = generate(model, tokenizer, num_samples=50,
                       config=SamplingConfig(temperature=2.0, max_tokens=200, lines=1000), seed=1)
    tokens = [t for s in samples for t in s.token_ids]
    assert len(tokens) == 10_000
    assert UNK_ID not in tokens
    assert all("<UNK>" not in s.text for s in samples)


def test_filters_remove_unk_then_apply_top_k_and_top_p() -> None:
    logits = torch.tensor([[0.0, 10.0, 3.0, 2.0, 1.0, -1.0]])  # id 1 is <UNK>
    kept = filter_logits(logits, SamplingConfig(top_k=2))
    assert torch.isinf(kept[0, UNK_ID]) and torch.isfinite(kept[0, [2, 3]]).all()
    assert torch.isinf(kept[0, [0, 4, 5]]).all()
    probs = torch.softmax(filter_logits(logits, SamplingConfig()), -1)[0]
    # top-p keeps the smallest set whose mass reaches p (the token crossing p stays).
    nucleus = filter_logits(logits, SamplingConfig(top_p=float(probs[2] + 1e-6)))
    assert torch.isfinite(nucleus[0, [2, 3]]).all() and torch.isinf(nucleus[0, [0, 4, 5]]).all()
    only_best = filter_logits(logits, SamplingConfig(top_p=1e-9))
    assert torch.isfinite(only_best[0]).sum() == 1
    greedy = filter_logits(logits, SamplingConfig(greedy=True))
    assert greedy[0].argmax().item() == 2


def test_seeded_generation_repeats_and_lines_are_counted(trained_run: Path) -> None:
    checkpoint = ckpt.load(trained_run / ckpt.BEST)
    model = checkpoint.build_model()
    config = SamplingConfig(lines=4, max_tokens=400, temperature=0.9)
    first = generate(model, checkpoint.tokenizer, num_samples=3, config=config, seed=42)
    again = generate(model, checkpoint.tokenizer, num_samples=3, config=config, seed=42)
    assert [s.text for s in first] == [s.text for s in again]
    assert [s.logprob for s in first] == [s.logprob for s in again]
    for sample in first:
        assert len(sample.text.split("\n")) == 4
        assert sample.token_ids.count(EOS_ID) == 4 and sample.token_ids[-1] == EOS_ID
    other = generate(model, checkpoint.tokenizer, num_samples=3, config=config, seed=43)
    assert [s.text for s in other] != [s.text for s in first]


def test_prime_is_continued_and_logprob_is_the_models(trained_run: Path) -> None:
    checkpoint = ckpt.load(trained_run / ckpt.BEST)
    model = checkpoint.build_model()
    (sample,) = generate(model, checkpoint.tokenizer, prime="the cat",
                         config=SamplingConfig(greedy=True), seed=0)
    assert sample.text.startswith("the cat ")
    ids = checkpoint.tokenizer.encode("the cat")
    with torch.no_grad():
        logits, _ = model(torch.tensor([[EOS_ID, *ids, *sample.token_ids[:-1]]]))
    logprobs = torch.log_softmax(logits[0, len(ids):].double(), -1)
    expected = logprobs.gather(1, torch.tensor(sample.token_ids)[:, None]).sum().item()
    assert sample.logprob == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("kwargs", [{"temperature": 0.0}, {"temperature": -1.0}, {"top_p": 0.0},
                                    {"top_p": 1.5}, {"top_k": -1}, {"max_tokens": 0}, {"lines": 0}])
def test_bad_sampling_flags(kwargs: dict) -> None:
    with pytest.raises(UsageError):
        SamplingConfig(**kwargs).validate()
    SamplingConfig(temperature=0.0, greedy=True).validate()  # greedy needs no temperature: no error
