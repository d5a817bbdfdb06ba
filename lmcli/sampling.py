"""Sampling new text from a model, one network step per token with the state carried.

``<UNK>`` is never emitted: its logit is removed before temperature, top-k and top-p, so
the rest is renormalised at every step, whatever the model thinks of it. The settings mean
what they mean in Hugging Face ``generate()``: temperature first, then top-k (0 = off),
then top-p (1.0 = off); greedy takes the most likely token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lmcli.errors import SettingError
from lmcli.model import RNNLM
from lmcli.tokenizers import EOS_ID, UNK_ID, Tokenizer


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


@dataclass
class Sample:
    text: str
    tokens: list[str]  # the generated tokens (prime excluded), <EOS> written as "<EOS>"
    token_ids: list[int]
    logprob: float  # natural log, under the model's own distribution (temperature 1)


def filter_logits(logits: torch.Tensor, config: SamplingConfig) -> torch.Tensor:
    """Logits (batch, vocab) with <UNK> removed and the sampling filters applied;
    removed entries are -inf."""
    logits = logits.float().clone()
    logits[:, UNK_ID] = float("-inf")
    if config.greedy:
        return logits
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


@torch.no_grad()
def generate(model: RNNLM, tokenizer: Tokenizer, *, prime: str = "", num_samples: int = 1,
             config: SamplingConfig | None = None, seed: int | None = None) -> list[Sample]:
    """Sample ``num_samples`` texts together as one batch."""
    config = (config or SamplingConfig()).validate()
    if num_samples < 1:
        raise SettingError(f"{{num_samples}} must be at least 1, got {num_samples}")
    device = model.embedding.weight.device
    generator = torch.Generator(device=device)
    generator.manual_seed(seed if seed is not None else torch.seed())
    model.eval()

    prime_text = tokenizer.normalize(prime) if prime else ""
    context = [EOS_ID] + (tokenizer.encode(prime_text) if prime_text else [])
    inputs = torch.tensor([context], dtype=torch.long, device=device)
    logits, state = model(inputs)  # prime once, then share the state across the batch
    logits = logits[:, -1].expand(num_samples, -1)
    state = tuple(s.expand(-1, num_samples, -1).contiguous() for s in state)

    generated = torch.zeros((num_samples, config.max_tokens), dtype=torch.long, device=device)
    logprob = torch.zeros(num_samples, dtype=torch.float64, device=device)
    lines_done = torch.zeros(num_samples, dtype=torch.long, device=device)
    finished = torch.zeros(num_samples, dtype=torch.bool, device=device)
    length = torch.zeros(num_samples, dtype=torch.long, device=device)
    for t in range(config.max_tokens):
        filtered = filter_logits(logits, config)
        if config.greedy:
            next_ids = filtered.argmax(dim=-1)
        else:
            next_ids = torch.multinomial(torch.softmax(filtered, dim=-1), 1, generator=generator)[:, 0]
        model_logprobs = torch.log_softmax(logits.float(), dim=-1)
        step_logprob = model_logprobs.gather(1, next_ids[:, None])[:, 0].double()
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

    samples = []
    for row, n, lp in zip(generated.tolist(), length.tolist(), logprob.tolist()):
        ids = row[:n]
        body = ids[:-1] if ids and ids[-1] == EOS_ID else ids
        text = prime_text + tokenizer.continuation(prime_text, body)
        samples.append(Sample(text=text, tokens=[tokenizer.tokens[i] for i in ids], token_ids=ids,
                              logprob=float(lp)))
    return samples
