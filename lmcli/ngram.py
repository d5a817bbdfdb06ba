"""A KenLM n-gram model (ARPA or binary) as one more column of scores beside lmcli's own
models, in ``score`` and ``rerank``: the optional ``kenlm`` module reads it (``pip install
kenlm``); lmcli never needs it otherwise.

KenLM gives log10 probabilities of each word and of ``</s>`` from ``<s>``; they are turned
into natural logs here, so its column adds and weighs like the others. Words are split on
whitespace, as lmcli's word level and KenLM both split.
"""

from __future__ import annotations

import math
from pathlib import Path

from lmcli.errors import LmcliError
from lmcli.scoring import SentenceScore

LN10 = math.log(10.0)
SUFFIXES = (".arpa", ".arpa.gz", ".arpa.bz2", ".arpa.xz", ".bin", ".binary", ".klm", ".mmap")


def is_ngram_file(spec: str | Path | None) -> bool:
    """Whether a ``-c`` value names a KenLM model rather than an lmcli run or checkpoint."""
    return spec is not None and Path(spec).is_file() and str(spec).lower().endswith(SUFFIXES)


class KenLM:
    """One KenLM model; ``scores`` has :class:`lmcli.rerank.LanguageModel`'s interface."""

    level = "word"

    def __init__(self, path: str | Path) -> None:
        try:
            import kenlm
        except ImportError:
            raise LmcliError(f"{path} is a KenLM model, and reading it needs the kenlm module, which is "
                             "not installed: pip install kenlm") from None
        try:
            self.model = kenlm.Model(str(path))
        except (OSError, RuntimeError, ValueError) as error:
            raise LmcliError(f"{path}: KenLM cannot read it ({str(error).strip().splitlines()[0]})") from None
        self.name = str(path)

    def scores(self, texts: list[str], *, eos: bool = True, per_token: bool = False,
               batch_size: int = 0) -> list[SentenceScore]:
        results = []
        for text in texts:
            words = " ".join(text.split())
            terms = list(self.model.full_scores(words, bos=True, eos=eos))
            logprobs = [log10 * LN10 for log10, _, _ in terms]
            unknown = [lp for lp, (_, _, oov) in zip(logprobs, terms) if oov]
            results.append(SentenceScore(text=text, logprob=math.fsum(logprobs), num_tokens=len(terms),
                                         oov=len(unknown), unk_logprob=math.fsum(unknown),
                                         token_logprobs=logprobs if per_token else None))
        return results
