"""Sampling new text from a model, one network step per token with the state carried.

``<UNK>`` is never emitted: its logit is removed before temperature, top-k and top-p, so
the rest is renormalised at every step, whatever the model thinks of it. The settings mean
what they mean in Hugging Face ``generate()``: temperature first, then top-k (0 = off),
then top-p (1.0 = off); greedy takes the most likely token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from lmcli import errors
from lmcli.copyguard import NoveltyGuard
from lmcli.direction import in_reading_order
from lmcli.errors import LmcliError, SettingError
from lmcli.model import RNNLM
from lmcli.novelty import Copied, NoveltyIndex
from lmcli.tokenizers import EOS_ID, UNK_ID, Tokenizer
from lmcli.verse import VerseConstraint, VersePlan, verse_lines


@dataclass
class SamplingConfig:
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    greedy: bool = False
    max_tokens: int = 500
    lines: int = 1

    def validate(self) -> SamplingConfig:
        if not self.greedy and not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise SettingError(f"{{temperature}} must be > 0 (or use {{greedy}}), got {self.temperature}")
        if self.top_k < 0:
            raise SettingError(f"{{top_k}} must be >= 0 (0 turns it off), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise SettingError(f"{{top_p}} must be in (0, 1] (1 turns it off), got {self.top_p}")
        if self.max_tokens < 1:
            raise SettingError(f"{{max_tokens}} must be at least 1, got {self.max_tokens}")
        if self.lines < 1:
            raise SettingError(f"{{lines}} must be at least 1, got {self.lines}")
        return self


# The most samples drawn as one batch: more are drawn in turn, so that -n 1000 --best-of 64
# does not ask for 64,000 rows of logits at once.
MAX_ROWS = 1024


@dataclass
class Sample:
    text: str
    tokens: list[str]  # the generated tokens (prime excluded), <EOS> written as "<EOS>"
    token_ids: list[int]
    logprob: float  # natural log, under the model's own distribution (temperature 1)
    lines: list[str] | None = None  # verse lines, when a form was asked for
    copied: Copied | None = None  # what it shares with the training text, when checked

    @property
    def per_token(self) -> float:
        """Mean log-probability per generated token (<EOS> included): how best-of ranks."""
        return self.logprob / max(1, len(self.token_ids))

    def to_record(self) -> dict[str, object]:
        """What ``generate --json`` prints for the sample."""
        record: dict[str, object] = {"text": self.text, "tokens": self.tokens, "logprob": self.logprob,
                                     "per_token_logprob": self.per_token}
        if self.lines is not None:
            record["lines"] = self.lines
        if self.copied is not None:
            record["copied"] = self.copied.to_dict()
        return record


def filter_logits(logits: torch.Tensor, config: SamplingConfig, allowed: torch.Tensor | None = None
                  ) -> torch.Tensor:
    """Logits (batch, vocab) with <UNK> removed, then whatever ``allowed`` (batch, vocab)
    forbids, then the sampling filters applied; removed entries are -inf."""
    logits = logits.float().clone()
    logits[:, UNK_ID] = float("-inf")
    if allowed is not None:
        logits = logits.masked_fill(~allowed.to(logits.device), float("-inf"))
    if config.greedy:
        return logits
    if config.temperature != 1.0:
        logits = logits / config.temperature
    vocab = logits.shape[-1]
    if 0 < config.top_k < vocab:
        kth = torch.topk(logits, config.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if config.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        mass_before = torch.cumsum(probs, dim=-1) - probs
        drop_sorted = mass_before > config.top_p  # the token that crosses top_p stays
        drop_sorted[:, 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_rows(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One index per row of ``probs`` (rows, vocab), drawn with those probabilities, by
    inverting the cumulative distribution (in float64, so the bins are exact). Several
    times faster than ``torch.multinomial`` on a CPU for wide rows; a token of probability
    zero has an empty bin and is never drawn."""
    cdf = probs.double().cumsum(-1)
    u = torch.rand((probs.shape[0], 1), dtype=torch.float64, generator=generator, device=probs.device)
    picked = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)[:, 0]
    return picked.clamp_(max=probs.shape[1] - 1)


@dataclass
class _Start:
    """The state after the context and the prime, shared by every row drawn from it."""

    logits: torch.Tensor  # (vocab,)
    state: tuple[torch.Tensor, ...]
    prime_text: str
    prime_ids: list[int]  # in the model's reading order
    direction: str = "forward"

    def rows(self, count: int) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        logits = self.logits[None].expand(count, -1)
        return logits, tuple(s.expand(-1, count, -1).contiguous() for s in self.state)


def _start(model: RNNLM, tokenizer: Tokenizer, prime: str, context: str) -> _Start:
    device = model.embedding.weight.device
    prime_text = tokenizer.normalize(prime) if prime else ""
    direction = model.config.direction  # a backward model's prime is the end of its line
    prime_ids = in_reading_order(tokenizer.encode(prime_text), direction) if prime_text else []
    # The context is a line of its own before the sample: read, never printed.
    context_text = tokenizer.normalize(context) if context else ""
    context_ids = in_reading_order(tokenizer.encode(context_text), direction) if context_text else []
    before = [EOS_ID] + (context_ids + [EOS_ID] if context_text else [])
    inputs = torch.tensor([before + prime_ids], dtype=torch.long, device=device)
    logits, state = model(inputs)
    return _Start(logits[0, -1], state, prime_text, prime_ids, direction)


@torch.no_grad()
def _draw(model: RNNLM, start: _Start, rows: int, config: SamplingConfig, generator: torch.Generator,
          constraint: VerseConstraint | None, guard: NoveltyGuard | None = None
          ) -> list[tuple[list[int], float]]:
    """``rows`` samples as one batch: (token ids, model logprob) each. ``constraint`` and
    ``guard`` say which tokens each row may take next."""
    device = start.logits.device
    logits, state = start.rows(rows)
    generated = torch.zeros((rows, config.max_tokens), dtype=torch.long, device=device)
    logprob = torch.zeros(rows, dtype=torch.float64, device=device)
    lines_done = torch.zeros(rows, dtype=torch.long, device=device)
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    length = torch.zeros(rows, dtype=torch.long, device=device)
    for t in range(config.max_tokens):
        filtered = filter_logits(logits, config, constraint.allowed() if constraint is not None else None)
        next_ids = _choose(filtered, config, generator)
        if guard is not None:
            next_ids = _avoid_copies(filtered, next_ids, config, generator, guard)
        if constraint is not None or guard is not None:
            chosen = next_ids.tolist()
            for follower in (constraint, guard):
                if follower is not None:
                    follower.advance(chosen)
        raw = logits.float()  # the model's own log-probability of the token, unfiltered
        step_logprob = (raw.gather(1, next_ids[:, None])[:, 0] - torch.logsumexp(raw, dim=-1)).double()
        active = ~finished
        generated[:, t] = next_ids
        logprob += torch.where(active, step_logprob, torch.zeros_like(step_logprob))
        length += active.long()
        lines_done += (active & (next_ids == EOS_ID)).long()
        finished |= lines_done >= config.lines
        if t % 16 == 15 and bool(finished.all()):  # an occasional sync, not one per token
            break
        logits, state = model(next_ids[:, None], state)
        logits = logits[:, -1]
    return [(row[:n], float(lp)) for row, n, lp in zip(generated.tolist(), length.tolist(), logprob.tolist())]


def _choose(filtered: torch.Tensor, config: SamplingConfig, generator: torch.Generator) -> torch.Tensor:
    if config.greedy:
        return filtered.argmax(dim=-1)
    return sample_rows(torch.softmax(filtered, dim=-1), generator)


def _avoid_copies(filtered: torch.Tensor, chosen: torch.Tensor, config: SamplingConfig,
                  generator: torch.Generator, guard: NoveltyGuard, tries: int = 64) -> torch.Tensor:
    """``chosen`` with every token that would copy the training text drawn again from the
    rest (rejection: the same as drawing with those tokens masked). A row with nothing
    else left keeps its token, and the check after sampling refuses the sample."""
    for _ in range(tries):
        refused = torch.from_numpy(guard.refuses(chosen.tolist())).to(chosen.device)
        if not bool(refused.any()):
            break
        rows = refused.nonzero()[:, 0]
        filtered[rows, chosen[rows]] = float("-inf")
        rows = rows[torch.isfinite(filtered[rows]).any(1)]
        if not len(rows):
            break
        chosen[rows] = _choose(filtered[rows], config, generator)
    return chosen


def _sample(tokenizer: Tokenizer, start: _Start, ids: list[int], logprob: float) -> Sample:
    body = ids[:-1] if ids and ids[-1] == EOS_ID else ids
    if start.direction == "backward":  # each line written from its end: read back in text order
        lines = _split_lines(start.prime_ids + body)
        text = tokenizer.decode([i for n, line in enumerate(lines)
                                 for i in ([EOS_ID] if n else []) + line[::-1]])
    else:
        text = start.prime_text + tokenizer.continuation(start.prime_text, body)
    return Sample(text=text, tokens=[tokenizer.tokens[i] for i in ids], token_ids=ids, logprob=logprob)


def _split_lines(ids: list[int]) -> list[list[int]]:
    lines: list[list[int]] = [[]]
    for i in ids:
        if i == EOS_ID:
            lines.append([])
        else:
            lines[-1].append(i)
    return lines


@torch.no_grad()
def generate(model: RNNLM, tokenizer: Tokenizer, *, prime: str = "", num_samples: int = 1,
             config: SamplingConfig | None = None, seed: int | None = None, context: str = "",
             plan: VersePlan | None = None, best_of: int = 1, novelty: NoveltyIndex | None = None,
             max_rounds: int = 8) -> list[Sample]:
    """Sample ``num_samples`` texts. Each is the best (per token, by the model's own
    log-probability) of ``best_of`` candidates drawn together as one batch; with a verse
    ``plan`` every candidate has its form; with a ``novelty`` index a candidate that copies
    the training text is refused and more are drawn (``max_rounds`` batches at most)."""
    config = (config or SamplingConfig()).validate()
    if num_samples < 1:
        raise SettingError(f"{{num_samples}} must be at least 1, got {num_samples}")
    if not 1 <= best_of <= MAX_ROWS:
        raise SettingError(f"{{best_of}} must be from 1 to {MAX_ROWS}, got {best_of}")
    device = model.embedding.weight.device
    generator = torch.Generator(device=device)
    generator.manual_seed(seed if seed is not None else torch.seed())
    if model.config.direction == "backward" and (plan is not None or novelty is not None):
        raise SettingError("a backward model writes each line from its end: forms, rhymes, "
                           "acrostics and --novel need a forward model")
    model.eval()
    start = _start(model, tokenizer, prime, context)
    if plan is not None:
        config = replace(config, max_tokens=plan.max_tokens(), lines=plan.eos_lines)
        _check_prime(plan, start.prime_ids, tokenizer)
    chosen: list[Sample | None] = [None] * num_samples
    tries = [0] * num_samples
    while True:
        pending = [i for i, s in enumerate(chosen) if s is None and tries[i] < max_rounds]
        if not pending:
            break
        pending = pending[:max(1, MAX_ROWS // best_of)]  # a batch of at most MAX_ROWS rows
        rows = len(pending) * best_of
        drawn = _draw(model, start, rows, config, generator, *_followers(plan, novelty, start, rows))
        for slot, index in enumerate(pending):
            tries[index] += 1
            candidates = [_finish(tokenizer, start, ids, lp, plan, novelty)
                          for ids, lp in drawn[slot * best_of:(slot + 1) * best_of]]
            good = [c for c in candidates if novelty is None or not c.copied.found]
            if good:
                chosen[index] = max(good, key=lambda c: c.per_token)
    if any(s is None for s in chosen):
        raise LmcliError(f"no candidate of the {max_rounds * best_of} drawn for a sample avoided copying "
                         "the training text; raise --temperature or --best-of, or leave out --novel")
    return [s for s in chosen if s is not None]


def _followers(plan: VersePlan | None, novelty: NoveltyIndex | None, start: _Start, rows: int
               ) -> tuple[VerseConstraint | None, NoveltyGuard | None]:
    """What follows ``rows`` samples through their tokens (the form; copies), the prime
    already fed to them."""
    constraint = VerseConstraint(plan, rows) if plan is not None else None
    guard = NoveltyGuard(novelty, rows) if novelty is not None else None
    for follower in (constraint, guard):
        if follower is not None:
            follower.feed(start.prime_ids)
    return constraint, guard


def _check_prime(plan: VersePlan, prime_ids: list[int], tokenizer: Tokenizer) -> None:
    position = VerseConstraint(plan, 1).feed(prime_ids)
    if position is not None:
        token = tokenizer.tokens[prime_ids[position]]
        raise SettingError(f"{{prime}} does not fit the form: {errors.escape(token)!r} (token "
                           f"{position + 1}) cannot stand there")


def _finish(tokenizer: Tokenizer, start: _Start, ids: list[int], logprob: float, plan: VersePlan | None,
            novelty: NoveltyIndex | None) -> Sample:
    sample = _sample(tokenizer, start, ids, logprob)
    if plan is not None:
        sample.lines = verse_lines(sample.text, plan.layout)
    if novelty is not None:
        sample.copied = novelty.check(start.prime_ids + ids)
    return sample
