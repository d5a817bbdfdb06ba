"""Scores that are right to the last decimal: by hand, by the laws of probability, in any
batch, and in agreement with evaluation."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from conftest import sharpen_outputs
from lmcli.model import RNNLM, ModelConfig
from lmcli.scoring import evaluate_file, score_sentences
from lmcli.text import TextFiles
from lmcli.tokenizers import EOS_ID, UNK_ID
from lmcli.vocabulary import build_tokenizer

LINES = ["the moon rises over the sea", "a bird sings in the tree", "the sea is wide and deep",
         "床前明月光", "moon and sea and bird"] * 6


def model_for(tokenizer, cell: str = "lstm", seed: int = 0, softmax: str = "full") -> RNNLM:
    torch.manual_seed(seed)
    # An adaptive softmax with two clusters: a head of 5 tokens, then 5 more, then the rest.
    cutoffs = [5, 10] if softmax == "adaptive" else None
    config = ModelConfig(vocab_size=tokenizer.vocab_size, cell=cell, layers=2, embed_dim=8,
                         hidden_dim=12, dropout=0.0, softmax=softmax, cutoffs=cutoffs)
    model = RNNLM(config).eval()
    sharpen_outputs(model, 8.0)
    return model


def tokenizer_for(level: str):
    size = 60 if level in ("bpe", "unigram") else None
    return build_tokenizer(level, ["\n".join(LINES) + "\n"], vocab_size=size)


def test_zero_output_weights_give_the_uniform_score_by_hand() -> None:
    tokenizer = tokenizer_for("word")
    model = model_for(tokenizer)
    with torch.no_grad():
        model.decoder.weight.zero_()
        model.decoder.bias.zero_()
    vocab = tokenizer.vocab_size
    (result,) = score_sentences(model, tokenizer, ["the moon rises"])
    assert result.num_tokens == 4  # three words and <EOS>
    # Token log-probabilities come out of float32 arithmetic: right to about 1e-7 relative.
    assert result.logprob == pytest.approx(-4 * math.log(vocab), rel=1e-6)
    assert result.log10prob == pytest.approx(-4 * math.log10(vocab), rel=1e-6)
    assert result.perplexity == pytest.approx(vocab, rel=1e-6)
    (prefix,) = score_sentences(model, tokenizer, ["the moon rises"], eos=False)
    assert prefix.num_tokens == 3 and prefix.logprob == pytest.approx(-3 * math.log(vocab), rel=1e-6)


@pytest.mark.parametrize("level", ["char", "word", "bpe", "unigram"])
@pytest.mark.parametrize("cell,softmax", [("rnn", "full"), ("lstm", "full"), ("gru", "full"),
                                          ("lstm", "adaptive"), ("gru", "adaptive")])
def test_normalisation_law(level: str, cell: str, softmax: str) -> None:
    """For a prefix x: P(x) = P(x <EOS>) + sum over tokens t of P(x t), <UNK> counted once.
    Holds only if the softmax covers exactly the tokens that can occur."""
    tokenizer = tokenizer_for(level)
    model = model_for(tokenizer, cell, softmax=softmax)
    prefix_ids = tokenizer.encode("the moon")[:3]
    with torch.no_grad():
        logits, _ = model(torch.tensor([[EOS_ID, *prefix_ids]]))
    next_logprobs = torch.log_softmax(logits[0, -1].double(), -1)
    # P(x) from score --no-eos, P(x <EOS>) from score: both through the batched scorer.
    text = tokenizer.decode(prefix_ids)
    (prefix,) = score_sentences(model, tokenizer, [text], eos=False)
    (closed,) = score_sentences(model, tokenizer, [text])
    assert tokenizer.encode(tokenizer.normalize(text)) == prefix_ids
    continuations = math.exp(closed.logprob) + sum(
        math.exp(prefix.logprob + next_logprobs[t].item())
        for t in range(tokenizer.vocab_size) if t != EOS_ID)
    assert continuations == pytest.approx(math.exp(prefix.logprob), rel=1e-4)


def test_logprob_is_the_sum_of_token_logprobs_and_counts_oov() -> None:
    tokenizer = tokenizer_for("word")
    model = model_for(tokenizer)
    (result,) = score_sentences(model, tokenizer, ["the zebra sings"], per_token=True)
    assert result.token_ids == [tokenizer.encode("the")[0], UNK_ID, tokenizer.encode("sings")[0], EOS_ID]
    assert result.oov == 1
    assert result.logprob == pytest.approx(sum(result.token_logprobs), abs=1e-9)
    assert result.unk_logprob == pytest.approx(result.token_logprobs[1], abs=1e-9)


@pytest.mark.parametrize("softmax", ["full", "adaptive"])
def test_a_sentence_scores_the_same_alone_or_in_any_batch(softmax: str) -> None:
    tokenizer = tokenizer_for("char")
    model = model_for(tokenizer, "gru", softmax=softmax)
    sentences = LINES[:9] + ["", "x", "the sea " * 12]
    alone = [next(iter(score_sentences(model, tokenizer, [s]))).logprob for s in sentences]
    for batch_size in (1, 2, 5, 64):
        together = [r.logprob for r in score_sentences(model, tokenizer, sentences, batch_size=batch_size)]
        assert together == pytest.approx(alone, abs=1e-5)
    grouped = [r.text for r in score_sentences(model, tokenizer, sentences, group_size=4)]
    assert grouped == [tokenizer.normalize(s) for s in sentences]  # input order kept


@pytest.mark.parametrize("level", ["char", "word", "bpe"])
def test_eval_equals_aggregated_score(tmp_path: Path, level: str) -> None:
    tokenizer = tokenizer_for(level)
    model = model_for(tokenizer)
    text = ["the moon rises over the deep sea", "", "a zebra sings", "床前明月光 moon"]
    path = tmp_path / "test.txt"
    path.write_text("\n".join(text) + "\n", encoding="utf-8")
    result = evaluate_file(model, tokenizer, TextFiles.of([path]), batch_size=2)
    scores = list(score_sentences(model, tokenizer, [t for t in text if t]))
    total = sum(s.logprob for s in scores)
    tokens = sum(s.num_tokens for s in scores)
    assert result.num_sentences == 3 and result.num_tokens == tokens
    assert result.perplexity == pytest.approx(math.exp(-total / tokens), rel=1e-4)
    oov = sum(s.oov for s in scores)
    unk = sum(s.unk_logprob for s in scores)
    assert result.oov == oov
    if oov < tokens:
        assert result.perplexity_no_oov == pytest.approx(math.exp(-(total - unk) / (tokens - oov)), rel=1e-4)
    chars = sum(len(t) + 1 for t in text if t)
    assert result.bits_per_char == pytest.approx(-total / math.log(2) / chars, rel=1e-6)
    if level == "char":
        assert result.bits_per_char == pytest.approx(result.bits_per_token, rel=1e-9)


@pytest.mark.parametrize("softmax", ["full", "adaptive"])
def test_stream_eval_carries_the_state(tmp_path: Path, softmax: str) -> None:
    tokenizer = tokenizer_for("word")
    model = model_for(tokenizer, softmax=softmax)
    path = tmp_path / "test.txt"
    path.write_text("\n".join(LINES[:4]) + "\n", encoding="utf-8")
    sentences = evaluate_file(model, tokenizer, TextFiles.of([path]))
    stream = evaluate_file(model, tokenizer, TextFiles.of([path]), stream=True)
    assert stream.num_tokens == sentences.num_tokens
    # The first line sees the same context either way; the rest see earlier lines.
    ids = [EOS_ID]
    for line in LINES[:4]:
        ids += tokenizer.encode(line) + [EOS_ID]
    with torch.no_grad():
        logits, _ = model(torch.tensor([ids[:-1]]))
    expected = torch.log_softmax(logits[0].double(), -1).gather(1, torch.tensor(ids[1:])[:, None]).sum()
    assert stream.logprob == pytest.approx(expected.item(), abs=1e-4)
    assert abs(stream.logprob - sentences.logprob) > 1e-2


def test_scoring_streams_instead_of_reading_everything_first() -> None:
    tokenizer = tokenizer_for("word")
    model = model_for(tokenizer)
    consumed = {"n": 0}

    def endless():
        while True:
            consumed["n"] += 1
            yield "the moon rises over the sea"

    results = score_sentences(model, tokenizer, endless(), group_size=100)
    first = next(results)
    assert first.num_tokens == 7
    assert consumed["n"] <= 101  # one group read, not the whole (endless) input


def test_a_long_sentence_is_scored_in_slices_with_the_same_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the batch budget a sentence runs in slices of its time axis, the state carried:
    the scores are those of one pass."""
    import lmcli.scoring as scoring

    tokenizer = tokenizer_for("char")
    model = model_for(tokenizer, "lstm")
    sentence = "the moon rises over the deep sea and a bird sings " * 4
    whole = next(iter(score_sentences(model, tokenizer, [sentence], per_token=True)))
    monkeypatch.setattr(scoring, "BATCH_BUDGET", 7 * scoring.token_floats(model.config))  # slices of 7 steps
    sliced = next(iter(score_sentences(model, tokenizer, [sentence, "a sea"], per_token=True)))
    assert len(sentence) > 7 * 20
    assert sliced.token_logprobs == pytest.approx(whole.token_logprobs, abs=1e-5)
