"""Rescoring speech-recognition N-best lists (read by :mod:`lmcli.nbest`) with one or
more language models.

Each hypothesis gets ``total = am_score + sum_k lm_weight_k * lm_logprob_k + bonus * units``:
``am_score`` is the recogniser's log score, ``lm_logprob_k`` the natural-log sentence
probability with ``<EOS>`` that ``lmcli score`` gives with model k (a forward and a
backward model, say), and ``units`` the hypothesis's words, or its characters when the
metric is the character error rate. Error rates and the tuning of the weights:
:mod:`lmcli.tuning`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmcli.checkpoint import Checkpoint
from lmcli.model import RNNLM
from lmcli.nbest import Hypothesis, NbestSource, Utterance, read_nbest  # noqa: F401  (rescoring's inputs)
from lmcli.scoring import Convert, SentenceScore, score_sentences
from lmcli.tokenizers import Tokenizer
from lmcli.tuning import (METRICS, ErrorReport, TuneResult, Weights, attach_errors,  # noqa: F401
                          error_report, tune)

OUTPUT_FORMATS = ("jsonl", "kaldi", "tsv")


@dataclass
class LanguageModel:
    """One column of LM scores: a model, its tokenizer, and what turns a hypothesis into
    the text it reads (another Chinese script, say). A column is anything with ``name``,
    ``level`` and :meth:`scores` (a KenLM model, :class:`lmcli.ngram.KenLM`, is another)."""

    model: RNNLM
    tokenizer: Tokenizer
    convert: Convert | None = None
    name: str = "lm"

    @classmethod
    def of(cls, loaded: Checkpoint, model: RNNLM) -> LanguageModel:
        """A checkpoint's column: its model (built on a device), tokenizer and conversion."""
        return cls(model, loaded.tokenizer, loaded.convert, str(loaded.path))

    @property
    def level(self) -> str:
        return self.tokenizer.level

    def scores(self, texts: list[str], *, eos: bool = True, per_token: bool = False,
               batch_size: int = 64) -> list[SentenceScore]:
        """The sentences' scores, as ``lmcli score`` computes them."""
        return list(score_sentences(self.model, self.tokenizer, texts, batch_size=batch_size, eos=eos,
                                    per_token=per_token, convert=self.convert))


# ----------------------------------------------------------------------------- reading


@dataclass
class ScoringStats:
    hypotheses: int
    unique_texts: int


def attach_lm_scores(utterances: list[Utterance], models: list[LanguageModel], *,
                     batch_size: int = 128) -> ScoringStats:
    """Each model scores every distinct hypothesis text once, in large length-sorted
    batches, with its own tokenization: the numbers ``lmcli score`` gives. Every
    hypothesis gets one log-probability per model, in the models' order."""
    texts = list(dict.fromkeys(h.text for u in utterances for h in u.hyps))
    columns = []
    for lm in models:
        columns.append({text: result.logprob for text, result in zip(texts, lm.scores(texts, batch_size=batch_size))})
    count = 0
    for utterance in utterances:
        for hyp in utterance.hyps:
            hyp.lm_logprobs = [column[hyp.text] for column in columns]
            count += 1
    return ScoringStats(count, len(texts))


def choose_metric(metric: str, levels: list[str], utterances: list[Utterance]) -> str:
    """``auto``: the character error rate where every model reads characters and no
    hypothesis or reference has a space (Chinese, Japanese); else the word error rate."""
    if metric != "auto":
        return metric
    texts = (t for u in utterances for t in [u.ref or "", *(h.text for h in u.hyps)])
    spaced = any(len(t.split()) > 1 for t in texts)
    return "cer" if levels and all(level == "char" for level in levels) and not spaced else "wer"


# ----------------------------------------------------------------------------- output


def ranked(utterance: Utterance, weights: Weights, metric: str = "wer") -> dict[str, Any]:
    """The output record: hypotheses sorted best first (ties keep the input order). One
    model's score is ``lm_logprob``; several models' are ``lm_logprobs``, in order."""
    scored = [(weights.total(h, metric), i, h) for i, h in enumerate(utterance.hyps)]
    scored.sort(key=lambda item: (-item[0], item[1]))
    return {
        "id": utterance.id,
        "best": scored[0][2].text,
        "hyps": [{"text": h.text, "am_score": h.am_score, **_lm_fields(h), "total": total}
                 for total, _, h in scored],
    }


def _lm_fields(hyp: Hypothesis) -> dict[str, Any]:
    if len(hyp.lm_logprobs) == 1:
        return {"lm_logprob": hyp.lm_logprobs[0]}
    return {"lm_logprobs": list(hyp.lm_logprobs)}


def text_line(record: dict[str, Any], fmt: str) -> str:
    """One utterance's best hypothesis as Kaldi ``text`` (``utt-id word word ...``, what
    Kaldi's scoring scripts read) or as ``id<TAB>text``."""
    if fmt == "kaldi":
        return " ".join([record["id"], *record["best"].split()])
    return f"{record['id']}\t{record['best']}"
