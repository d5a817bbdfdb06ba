"""lmcli from Python: a trained model in the same process as the program that needs it (a
recogniser rescoring its N-best lists, a notebook).

    import lmcli

    lm = lmcli.load("checkpoints/my-run", device="cpu")
    lm.score(["the cat sat .", "cat the sat ."])          # natural-log probabilities
    lm.score("the cat sat .", records=True)               # what `lmcli score --json` prints
    lm.logprobs("the cat sat .")                          # (token, logprob) pairs, <EOS> last
    lm.generate(n=2, prime="the", temperature=0.8)        # two texts
    lm.rerank([{"id": "u1", "hyps": [{"text": "...", "am_score": -12.0}, ...]}], lm_weight=0.7)

Every call gives what the command of the same name gives for the same input (the same
library functions compute both), prints nothing, and raises :class:`lmcli.LmcliError` (a
one-line message) on bad input. A model may be shared by threads: calls take turns on
it, each using every core torch is given.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from lmcli import checkpoint as ckpt
from lmcli import rerank as rr
from lmcli.devices import resolve_device
from lmcli.errors import LmcliError
from lmcli.nbest import read_jsonl
from lmcli.poems import PoemRequest, write
from lmcli.sampling import SamplingConfig
from lmcli.tokenizers import EOS


class LanguageModel:
    """A loaded checkpoint, ready to score, generate and rerank (see the module docstring)."""

    def __init__(self, checkpoint: ckpt.Checkpoint, device: str = "cpu") -> None:
        self.checkpoint = checkpoint
        self.model = checkpoint.build_model(resolve_device(device)).eval()
        self.tokenizer = checkpoint.tokenizer
        self.column = rr.LanguageModel.of(checkpoint, self.model)  # what score and rerank read
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        config = self.model.config
        return (f"LanguageModel({self.checkpoint.path}, {config.cell} {config.layers}x{config.hidden_dim}, "
                f"{self.tokenizer.level} level, vocabulary {config.vocab_size:,})")

    def score(self, sentences: str | Iterable[str], *, records: bool = False, per_token: bool = False,
              eos: bool = True, batch_size: int = 64) -> list[Any]:
        """Each sentence's log-probability (natural log, from an empty context, ``<EOS>``
        included unless ``eos=False``): floats, or with ``records`` the dicts
        ``lmcli score --json`` prints (``per_token`` adds each token's)."""
        texts = [sentences] if isinstance(sentences, str) else list(sentences)
        with self._lock:
            results = self.column.scores(texts, eos=eos, per_token=per_token, batch_size=batch_size)
        if records:
            return [r.to_record(self.tokenizer, per_token) for r in results]
        return [r.logprob for r in results]

    def logprobs(self, sentence: str, *, eos: bool = True) -> list[tuple[str, float]]:
        """(token, log-probability) for each token of one sentence, ``<EOS>`` last."""
        (result,) = self.score(sentence, records=True, per_token=True, eos=eos)
        return [(t["token"], t["logprob"]) for t in result["tokens"]]

    def generate(self, n: int = 1, *, prime: str = "", records: bool = False, seed: int | None = None,
                 temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, max_tokens: int = 200,
                 lines: int = 1, **verse: Any) -> list[Any]:
        """``n`` samples: texts, or with ``records`` the dicts ``generate --json`` prints.
        ``verse`` takes generate's other options by name: form, acrostic, rhyme, tones,
        context, best_of, novel, script."""
        sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, max_tokens=max_tokens,
                                  lines=lines).validate()
        request = PoemRequest(prime=prime, num_samples=n, sampling=sampling, seed=seed, **verse)
        with self._lock:
            samples = write(self.checkpoint, self.model, request).samples
        return [s.to_record() if records else s.text for s in samples]

    def rerank(self, nbest: Sequence[dict[str, Any]], *, lm_weight: float = 1.0, bonus: float = 0.0,
               metric: str = "wer", batch_size: int = 128) -> list[dict[str, Any]]:
        """N-best lists as ``rerank``'s JSON lines give them (``{"id", "hyps": [{"text",
        "am_score"}], "ref"?}``) rescored: the records ``lmcli rerank`` prints."""
        utterances = read_jsonl(enumerate((json.dumps(u) for u in nbest), start=1), "nbest")
        if not utterances:
            raise LmcliError("no utterances to rerank")
        with self._lock:
            rr.attach_lm_scores(utterances, [self.column], batch_size=batch_size)
        weights = rr.Weights([lm_weight], bonus)
        return [rr.ranked(u, weights, metric) for u in utterances]


def load(path: str | Path | None = None, device: str = "cpu") -> LanguageModel:
    """A run folder (its best checkpoint), a checkpoint file, or (None) the last run."""
    return LanguageModel(ckpt.load(ckpt.resolve(path)), device)


__all__ = ["EOS", "LanguageModel", "load"]
