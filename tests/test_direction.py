"""Backward models: each line read right to left, <EOS> still last, through training,
scoring, evaluation and generation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lmcli import checkpoint as ckpt
from lmcli.cli import app
from lmcli.corpus import DataConfig, load_corpus
from lmcli.direction import in_text_order, reverse_lines
from lmcli.model import RNNLM, ModelConfig
from lmcli.sampling import generate
from lmcli.scoring import evaluate_file, score_sentences
from lmcli.text import TextFiles
from lmcli.tokenizers import EOS_ID
from lmcli.train import RunRequest, TrainConfig, resume_run, start_run
from lmcli.train.trainer import Trainer
from conftest import corpus_file, stop_after, weights


def test_reverse_lines_keeps_the_line_ends() -> None:
    stream = np.array([0, 5, 6, 7, 0, 8, 0, 0, 9, 10], dtype=np.uint16)
    assert reverse_lines(stream).tolist() == [0, 7, 6, 5, 0, 8, 0, 0, 10, 9]
    assert reverse_lines(stream).dtype == np.uint16


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1000])
def test_reverse_lines_in_pieces_is_the_same(chunk: int) -> None:
    """Pieces cut at line ends, longer where a line is longer than a piece: the same
    result at any piece size, and reversing twice gives the stream back."""
    rng = np.random.default_rng(0)
    stream = rng.integers(0, 4, size=500).astype(np.int32)
    expected = []
    line: list[int] = []
    for token in stream.tolist():
        if token == EOS_ID:
            expected += line[::-1] + [EOS_ID]
            line = []
        else:
            line.append(token)
    expected += line[::-1]
    assert reverse_lines(stream, chunk=chunk).tolist() == expected
    assert np.array_equal(reverse_lines(reverse_lines(stream, chunk=chunk), chunk=chunk), stream)


def test_text_order_puts_eos_last() -> None:
    assert in_text_order([3, 2, 1, 0], "backward", eos=True) == [1, 2, 3, 0]
    assert in_text_order([3, 2, 1], "backward", eos=False) == [1, 2, 3]
    assert in_text_order([1, 2, 3, 0], "forward", eos=True) == [1, 2, 3, 0]


def random_backward(vocab: int) -> RNNLM:
    torch.manual_seed(0)
    return RNNLM(ModelConfig(vocab_size=vocab, direction="backward", layers=1, embed_dim=8,
                             hidden_dim=12, dropout=0.0)).eval()


def test_a_sentence_is_scored_right_to_left(tmp_path: Path) -> None:
    """The backward score is the model's probability of the reversed tokens, then <EOS>,
    from the empty context, computed here straight from the logits; per-token values come
    back in the text's order."""
    data = load_corpus([corpus_file(tmp_path)], DataConfig(level="word", valid_fraction=0))
    tokenizer = data.tokenizer
    model = random_backward(tokenizer.vocab_size)
    sentence = "the cat sees the moon ."
    ids = tokenizer.encode(sentence)
    inputs = torch.tensor([[EOS_ID, *ids[::-1]]])
    targets = torch.tensor([*ids[::-1], EOS_ID])
    with torch.no_grad():
        logits, _ = model(inputs)
    by_hand = torch.log_softmax(logits[0].double(), -1)[torch.arange(len(targets)), targets]
    (score,) = score_sentences(model, tokenizer, [sentence], per_token=True)
    assert score.logprob == pytest.approx(float(by_hand.sum()), abs=1e-4)
    assert score.token_logprobs == pytest.approx([*by_hand[:-1].flip(0).tolist(), float(by_hand[-1])], abs=1e-5)
    assert score.token_ids == [*ids, EOS_ID]
    forward = RNNLM(ModelConfig(**{**model.config.__dict__, "direction": "forward"})).eval()
    forward.load_state_dict(model.state_dict())
    (ahead,) = score_sentences(forward, tokenizer, [sentence])
    assert ahead.logprob != pytest.approx(score.logprob, abs=1e-3)  # the direction matters


def test_eval_reads_backward_in_both_modes(tmp_path: Path) -> None:
    """eval's sentence mode sums the backward scores; its stream mode carries the state
    over lines that are each reversed, which for one line is the same number."""
    data = load_corpus([corpus_file(tmp_path)], DataConfig(level="word", valid_fraction=0))
    model = random_backward(data.tokenizer.vocab_size)
    text = tmp_path / "one.txt"
    text.write_text("a dog finds the moon .\n", encoding="utf-8")
    files = TextFiles.of([text])
    sentences = evaluate_file(model, data.tokenizer, files)
    stream = evaluate_file(model, data.tokenizer, files, stream=True)
    (score,) = score_sentences(model, data.tokenizer, ["a dog finds the moon ."])
    assert sentences.logprob == pytest.approx(score.logprob, abs=1e-6)
    assert stream.logprob == pytest.approx(score.logprob, abs=1e-4)


def request(tmp_path: Path, out: str, **model: object) -> RunRequest:
    tmp_path.mkdir(parents=True, exist_ok=True)
    return RunRequest(
        corpus=[str(corpus_file(tmp_path))], data=DataConfig(level="word", min_freq=1, valid_fraction=0.1),
        model={"cell": "lstm", "layers": 1, "embed_dim": 12, "hidden_dim": 16, "dropout": 0.0, **model},
        train=TrainConfig(seq_len=10, batch_size=4, epochs=None, max_steps=12, lr=0.01, seed=7,
                          device="cpu", eval_every=6), out_dir=tmp_path / out)


def test_training_reads_every_line_reversed(tmp_path: Path) -> None:
    data = load_corpus([corpus_file(tmp_path)], DataConfig(level="word", valid_fraction=0.1))
    config = ModelConfig(vocab_size=data.tokenizer.vocab_size, direction="backward", layers=1,
                         embed_dim=8, hidden_dim=8)
    trainer = Trainer(data, config, TrainConfig(device="cpu", max_steps=1, batch_size=4, seq_len=8), tmp_path / "run", {})
    assert np.array_equal(trainer.data.train, reverse_lines(data.train))
    assert data.valid is not None and trainer.data.valid is not None
    assert np.array_equal(trainer.data.valid, reverse_lines(data.valid))
    assert trainer.data.verse_shapes == []


def test_backward_run_resumes_and_is_used(tmp_path: Path) -> None:
    """A backward run stopped and resumed is bit-exact with a straight one; the checkpoint
    says backward, it has no copy index, and score, eval, generate and rerank use it."""
    straight = start_run(request(tmp_path / "a", "run", direction="backward"), root=tmp_path / "ck")
    start_run(request(tmp_path, "run", direction="backward"), root=tmp_path / "ck", should_stop=stop_after(5))
    finished = resume_run(tmp_path / "run", root=tmp_path / "ck")
    for name, value in weights(straight.last_path).items():
        assert torch.equal(weights(finished.last_path)[name], value), name
    run = tmp_path / "run"
    assert torch.load(run / ckpt.BEST, weights_only=True)["model_config"]["direction"] == "backward"
    assert not (run / "novelty.npz").exists()
    runner = CliRunner()

    def cli(*args: str) -> list[dict]:
        result = runner.invoke(app, [*args, "-c", str(run), "--json"])
        assert result.exit_code == 0, result.output
        return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]

    assert cli("info")[0]["direction"] == "backward"
    sentence = "the cat sees the moon ."
    text = tmp_path / "test.txt"
    text.write_text(sentence + "\n", encoding="utf-8")
    assert cli("eval", str(text))[0]["logprob"] == pytest.approx(cli("score", sentence)[0]["logprob"], abs=1e-6)
    nbest = tmp_path / "nbest.jsonl"
    nbest.write_text(json.dumps({"id": "u1", "hyps": [{"text": sentence, "am_score": -1.0}]}) + "\n")
    assert cli("rerank", str(nbest))[0]["hyps"][0]["lm_logprob"] == pytest.approx(
        cli("score", sentence)[0]["logprob"], abs=1e-9)
    for sample in cli("generate", "-n", "3", "--prime", "the moon .", "--seed", "1"):
        assert sample["text"].endswith("the moon ."), sample
    refused = runner.invoke(app, ["generate", "-c", str(run), "--form", "5x4"])
    assert refused.exit_code == 2 and "forward model" in refused.output


def test_backward_generation_reads_in_text_order(tmp_path: Path) -> None:
    """Lines drawn from their end come out in the text's order: the prime closes the
    first line, and every line of a backward sample is a line the model wrote reversed."""
    data = load_corpus([corpus_file(tmp_path)], DataConfig(level="word", valid_fraction=0))
    tokenizer = data.tokenizer
    model = random_backward(tokenizer.vocab_size)
    for sample in generate(model, tokenizer, prime="the moon .", num_samples=4, seed=3):
        lines = sample.text.split("\n")
        assert lines[0].endswith("the moon .")
        drawn = [t for t in sample.token_ids]
        first = [tokenizer.tokens[i] for i in drawn[:drawn.index(EOS_ID)]] if EOS_ID in drawn else \
            [tokenizer.tokens[i] for i in drawn]
        assert lines[0].split() == [*first[::-1], "the", "moon", "."]
