"""Sentence and token log-probabilities, batched with masks, and corpus evaluation.

A sentence is scored from an empty context: the zero state with ``<EOS>`` as the input
before its first token; its tokens are scored in turn and then the final ``<EOS>``
(unless ``eos=False``, for prefixes). Sentences are grouped by length and padded; the
padding sits after each sentence's end, so a causal model's scores for the real tokens
do not depend on it, and a sentence scores the same alone or in any batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lmcli.batches import BpttBatches
from lmcli.corpus import encode_stream
from lmcli.direction import in_reading_order, in_text_order, reverse_lines
from lmcli.errors import LmcliError, SettingError
from lmcli.model import RNNLM, ModelConfig
from lmcli.text import TextFiles
from lmcli.tokenizers import EOS_ID, UNK_ID, Tokenizer

LN10 = math.log(10.0)
LN2 = math.log(2.0)
# Budget for one batch's activations (floats: the inputs, the gates and features of each
# layer, per token). The logits are no part of it: the output layer takes a block of rows
# at a time (RNNLM.target_log_probs), so a large vocabulary does not shrink the batch.
BATCH_BUDGET = 1 << 25
# Time steps per forward call at most: the fused RNN kernels refuse sequences of millions.
MAX_SLICE = 4096


@dataclass
class SentenceScore:
    text: str
    logprob: float  # natural log, <EOS> term included unless scored without it
    num_tokens: int  # tokens scored, <EOS> included
    oov: int  # <UNK> tokens among them
    unk_logprob: float  # the part of logprob spent on <UNK> tokens
    token_ids: list[int] = field(default_factory=list)
    token_logprobs: list[float] | None = None
    scored_text: str | None = None  # the text as the model read it, where conversion changed it

    @property
    def log10prob(self) -> float:
        return self.logprob / LN10

    @property
    def perplexity(self) -> float:
        return math.exp(-self.logprob / self.num_tokens) if self.num_tokens else float("nan")

    def to_record(self, tokenizer: Tokenizer, per_token: bool = False) -> dict[str, Any]:
        """What ``score --json`` prints for the sentence ("text" as it was given)."""
        record: dict[str, Any] = {
            "text": self.text, "logprob": self.logprob, "log10prob": self.log10prob,
            "num_tokens": self.num_tokens, "perplexity": self.perplexity, "oov": self.oov}
        if per_token:
            record["tokens"] = [{"token": tokenizer.tokens[i], "logprob": lp}
                                for i, lp in zip(self.token_ids, self.token_logprobs or [])]
        return record


Ids = Sequence[int] | np.ndarray
Convert = Callable[[str], str]
"""Turns a sentence as typed into the text the model reads (another Chinese script, say)."""


def token_floats(config: ModelConfig) -> int:
    """Floats of activations per token while scoring: the input, each layer's four gate
    pre-activations and its output."""
    return config.embed_dim + config.layers * 5 * config.hidden_dim


def _batches(items: list[tuple[int, Ids]], batch_size: int, per_token: int
             ) -> Iterator[list[tuple[int, Ids]]]:
    """Length-sorted items cut into batches of at most ``batch_size`` sentences and a
    bounded number of activations."""
    items = sorted(items, key=lambda item: len(item[1]))
    batch: list[tuple[int, Ids]] = []
    for item in items:
        longest = len(item[1]) + 1
        if batch and (len(batch) >= batch_size or (len(batch) + 1) * longest * per_token > BATCH_BUDGET):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise SettingError(f"{{batch_size}} must be at least 1, got {batch_size}")


@torch.no_grad()
def _score_batch(model: RNNLM, batch: list[Ids], eos: bool, device: torch.device
                 ) -> list[np.ndarray]:
    """Per-token log-probabilities (float64) of each id sequence in a batch."""
    lengths = [len(ids) + 1 for ids in batch]  # targets: the ids, then <EOS>
    width = max(lengths)
    inputs = np.full((len(batch), width), EOS_ID, dtype=np.int64)  # padding sits after the end
    targets = np.full((len(batch), width), -1, dtype=np.int64)  # -1: not scored (padding)
    for row, ids in enumerate(batch):
        inputs[row, 1:len(ids) + 1] = ids
        targets[row, :len(ids)] = ids
        if eos:
            targets[row, len(ids)] = EOS_ID
    inputs_t = torch.from_numpy(inputs).to(device)
    targets_t = torch.from_numpy(targets).to(device)
    # A very long sentence (a 50 MB line) is run in slices of the time axis with the state
    # carried between them: the same numbers, in memory bounded by the batch budget.
    step = max(1, min(MAX_SLICE, BATCH_BUDGET // (len(batch) * token_floats(model.config))))
    state = None
    parts = []
    for start in range(0, width, step):
        features, state, _ = model.hidden_features(inputs_t[:, start:start + step], state)
        # Token log-probabilities in float32, as precise as the float32 logits they come
        # from (about 1e-6 relative); sentence and corpus sums are then taken in float64.
        parts.append(model.target_log_probs(features, targets_t[:, start:start + step]).double().cpu())
    rows = torch.cat(parts, dim=1).numpy()
    return [rows[r, : n if eos else n - 1] for r, n in enumerate(lengths)]


def score_ids(model: RNNLM, encoded: Sequence[Ids], *, batch_size: int = 64, eos: bool = True
              ) -> list[np.ndarray]:
    """Per-token log-probabilities of many id sequences (each from an empty context), in
    input order; length-sorted batches inside. The model is left in the mode it was in."""
    _check_batch_size(batch_size)
    device = model.embedding.weight.device
    was_training = model.training
    model.eval()
    results: list[np.ndarray] = [np.zeros(0)] * len(encoded)
    for batch in _batches(list(enumerate(encoded)), batch_size, token_floats(model.config)):
        for (index, _), logprobs in zip(batch, _score_batch(model, [ids for _, ids in batch], eos, device)):
            results[index] = logprobs
    model.train(was_training)
    return results


def score_sentences(model: RNNLM, tokenizer: Tokenizer, sentences: Iterable[str], *,
                    batch_size: int = 64, eos: bool = True, per_token: bool = False,
                    group_size: int = 4096, convert: Convert | None = None) -> Iterator[SentenceScore]:
    """Scores in input order, streamed: ``group_size`` sentences are read, sorted by length,
    scored in batches and given back before more are read. ``convert`` turns each
    (normalised) sentence into what the model reads; the scores keep the sentence as given."""
    _check_batch_size(batch_size)
    model.eval()
    group: list[str] = []
    for sentence in sentences:
        group.append(sentence)
        if len(group) >= group_size:
            yield from _score_group(model, tokenizer, group, batch_size, eos, per_token, convert)
            group = []
    if group:
        yield from _score_group(model, tokenizer, group, batch_size, eos, per_token, convert)


def _score_group(model: RNNLM, tokenizer: Tokenizer, group: list[str], batch_size: int,
                 eos: bool, per_token: bool, convert: Convert | None) -> list[SentenceScore]:
    texts = [tokenizer.normalize(s) for s in group]
    scored = list(map(convert, texts)) if convert is not None else texts
    encoded = [tokenizer.encode(t) if t else [] for t in scored]
    # A backward model reads each sentence reversed; a forward one (nearly every call) as is.
    backward = model.config.direction == "backward"
    read_order = [in_reading_order(ids, "backward") for ids in encoded] if backward else encoded
    results = []
    for text, read, ids, logprobs in zip(texts, scored, encoded,
                                         score_ids(model, read_order, batch_size=batch_size, eos=eos)):
        if backward:
            logprobs = np.asarray(in_text_order(logprobs, "backward", eos))
        unk = np.array(ids[: len(logprobs)], dtype=np.int64) == UNK_ID
        results.append(SentenceScore(
            text=text, logprob=float(logprobs.sum()), num_tokens=len(logprobs),
            oov=int(unk.sum()), unk_logprob=float(logprobs[: len(unk)][unk].sum()),
            token_ids=ids + ([EOS_ID] if eos else []),
            token_logprobs=logprobs.tolist() if per_token else None,
            scored_text=read if read != text else None))
    return results


def sentence_loss(model: RNNLM, tokens: np.ndarray, *, batch_size: int = 64,
                  group_size: int = 4096) -> float:
    """Mean cross-entropy (nats per token, <EOS> included) of the sentences of a token
    stream, each scored from an empty context: the perplexity ``lmcli eval`` reports for
    the same text. Validation during training uses it, so the best checkpoint is the
    best at what ``score`` and ``eval`` compute."""
    total, count = sentence_loss_sums(model, tokens, batch_size=batch_size, group_size=group_size)
    return total / max(count, 1)


def sentence_loss_sums(model: RNNLM, tokens: np.ndarray, *, batch_size: int = 64,
                       group_size: int = 4096, part: tuple[int, int] = (0, 1)) -> tuple[float, int]:
    """(negative log-probability summed over the tokens, token count) of the sentences of
    a token stream; with ``part = (k, n)`` only every n-th sentence from the k-th (the
    share of data-parallel rank k of n: the parts' sums add up to the whole)."""
    ends = np.flatnonzero(tokens == EOS_ID)
    starts = np.concatenate([[0], ends[:-1] + 1]) if len(ends) else np.zeros(0, dtype=np.int64)
    sentences = [tokens[a:b] for a, b in zip(starts, ends) if not (a == 0 and b == 0)]
    sentences = sentences[part[0]::part[1]]
    total = 0.0
    count = 0
    for first in range(0, len(sentences), group_size):
        for logprobs in score_ids(model, sentences[first:first + group_size], batch_size=batch_size):
            total += float(logprobs.sum())
            count += len(logprobs)
    return -total, count


# ----------------------------------------------------------------------------- evaluation


@dataclass
class Evaluation:
    num_sentences: int
    num_tokens: int
    num_chars: int
    oov: int
    logprob: float  # total natural-log probability
    unk_logprob: float
    stream: bool = False

    @property
    def cross_entropy(self) -> float:
        """Nats per token."""
        return -self.logprob / self.num_tokens

    @property
    def perplexity(self) -> float:
        return math.exp(self.cross_entropy)

    @property
    def perplexity_no_oov(self) -> float:
        """KenLM's "excluding OOVs": <UNK> tokens' terms and counts left out."""
        kept = self.num_tokens - self.oov
        return math.exp(-(self.logprob - self.unk_logprob) / kept) if kept else float("nan")

    @property
    def bits_per_token(self) -> float:
        return self.cross_entropy / LN2

    @property
    def bits_per_char(self) -> float:
        """Total bits over the characters of the text (each line end counts as one), so
        char, word and subword models compare on the same text."""
        return -self.logprob / LN2 / self.num_chars

    def to_dict(self) -> dict[str, float | int | bool]:
        return {
            "perplexity": self.perplexity,
            "perplexity_no_oov": self.perplexity_no_oov,
            "cross_entropy": self.cross_entropy,
            "bits_per_token": self.bits_per_token,
            "bits_per_char": self.bits_per_char,
            "num_sentences": self.num_sentences,
            "num_tokens": self.num_tokens,
            "num_chars": self.num_chars,
            "oov": self.oov,
            "logprob": self.logprob,
            "stream": self.stream,
        }


def _lines(files: TextFiles) -> Iterator[str]:
    for lines in files.line_blocks():
        yield from lines


def _converted_blocks(files: TextFiles, convert: Convert | None) -> Iterator[list[str]]:
    for lines in files.line_blocks():
        yield list(map(convert, lines)) if convert is not None else lines


def evaluate_file(model: RNNLM, tokenizer: Tokenizer, files: TextFiles, *, batch_size: int = 64,
                  stream: bool = False, seq_len: int = 256, convert: Convert | None = None
                  ) -> Evaluation:
    """Perplexity and friends over a text file. Each non-blank line is scored from an empty
    context exactly as :func:`score_sentences` does, unless ``stream`` carries the state
    across lines (one lane, in order, as the text reads). ``convert`` turns each line into
    what the model reads; characters are counted in the file's own text."""
    num_chars = sum(len(t) + 1 for t in map(tokenizer.normalize, _lines(files)) if t)
    if num_chars == 0:
        raise LmcliError(f"nothing to evaluate: {', '.join(map(str, files.paths))} has no text")
    if stream:
        return _evaluate_stream(model, tokenizer, files, num_chars, seq_len, convert)
    sentences = num_tokens = oov = 0
    logprob = unk_logprob = 0.0
    nonblank = (line for line in _lines(files) if tokenizer.normalize(line))
    for score in score_sentences(model, tokenizer, nonblank, batch_size=batch_size, convert=convert):
        sentences += 1
        num_tokens += score.num_tokens
        oov += score.oov
        logprob += score.logprob
        unk_logprob += score.unk_logprob
    return Evaluation(sentences, num_tokens, num_chars, oov, logprob, unk_logprob)


@torch.no_grad()
def _evaluate_stream(model: RNNLM, tokenizer: Tokenizer, files: TextFiles, num_chars: int,
                     seq_len: int, convert: Convert | None) -> Evaluation:
    tokens = encode_stream(tokenizer, _converted_blocks(files, convert))
    if model.config.direction == "backward":
        tokens = reverse_lines(tokens)
    device = model.embedding.weight.device
    model.eval()
    batches = BpttBatches(tokens, 1, seq_len, keep_partial=True)
    state = model.initial_state(1, device)
    logprob = torch.zeros((), dtype=torch.float64, device=device)
    unk_logprob = torch.zeros((), dtype=torch.float64, device=device)
    for i in range(len(batches)):
        inputs, targets = (t.to(device) for t in batches.window(i))
        features, state, _ = model.hidden_features(inputs, state)
        lp = model.target_log_probs(features, targets).reshape(-1).double()
        logprob += lp.sum()
        unk_logprob += lp[targets.reshape(-1) == UNK_ID].sum()
    scored = tokens[1:]
    return Evaluation(int((scored == EOS_ID).sum()), int(len(scored)), num_chars,
                      int((scored == UNK_ID).sum()), float(logprob.item()),
                      float(unk_logprob.item()), stream=True)
