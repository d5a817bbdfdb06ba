"""The recurrent language model: a config dataclass and one module for rnn, lstm and gru.

No I/O and no device choice here. The output layer has exactly ``vocab_size`` units, one
per token that can occur (<EOS>, <UNK> and the vocabulary), so no probability mass ever
goes to padding or start symbols; the implicit start context is an <EOS> input with a
zero state.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from lmcli.errors import LmcliError, UsageError

CELLS = ("rnn", "lstm", "gru")

State = tuple[torch.Tensor, ...]
"""The recurrent state: (h,) for rnn and gru, (h, c) for lstm; each (layers, batch, hidden)."""


@dataclass
class ModelConfig:
    vocab_size: int
    cell: str = "lstm"
    layers: int = 2
    embed_dim: int = 256
    hidden_dim: int = 512
    dropout: float = 0.2
    tie_weights: bool = False

    def validate(self) -> ModelConfig:
        if self.cell not in CELLS:
            raise UsageError(f"unknown model {self.cell!r}; choose one of {', '.join(CELLS)}")
        for name in ("vocab_size", "layers", "embed_dim", "hidden_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise UsageError(f"{name.replace('_', '-')} must be a positive integer, got {value}")
        if not 0.0 <= self.dropout < 1.0:
            raise UsageError(f"--dropout must be in [0, 1), got {self.dropout}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise LmcliError(f"checkpoint model config has unknown fields: {', '.join(sorted(unknown))}")
        return cls(**data).validate()


class RNNLM(nn.Module):
    """Embedding -> stacked recurrent layers -> (projection) -> linear over the vocabulary.

    With ``tie_weights`` the output layer shares the embedding matrix; when the hidden size
    differs from the embedding size a linear projection maps hidden states down first.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config.validate()
        rnn_class = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[config.cell]
        extra = {"nonlinearity": "tanh"} if config.cell == "rnn" else {}
        self.embedding = nn.Embedding(config.vocab_size, config.embed_dim)
        self.dropout = nn.Dropout(config.dropout)
        self.rnn = rnn_class(config.embed_dim, config.hidden_dim, num_layers=config.layers,
                             dropout=config.dropout if config.layers > 1 else 0.0,
                             batch_first=True, **extra)
        output_dim = config.hidden_dim
        self.projection: nn.Linear | None = None
        if config.tie_weights and config.hidden_dim != config.embed_dim:
            self.projection = nn.Linear(config.hidden_dim, config.embed_dim, bias=False)
            output_dim = config.embed_dim
        self.decoder = nn.Linear(output_dim, config.vocab_size)
        self.reset_parameters()
        if config.tie_weights:
            self.decoder.weight = self.embedding.weight

    def reset_parameters(self) -> None:
        """Initialisation from the RNN-LM literature: small uniform embeddings, orthogonal
        recurrent matrices (one per gate block), Xavier input matrices, zero biases except
        the LSTM forget gate, whose bias is 1 so that memory is kept by default."""
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        hidden = self.config.hidden_dim
        gates = {"rnn": 1, "lstm": 4, "gru": 3}[self.config.cell]
        for name, param in self.rnn.named_parameters():
            if name.startswith("weight_hh"):
                for g in range(gates):
                    nn.init.orthogonal_(param.data[g * hidden:(g + 1) * hidden])
            elif name.startswith("weight_ih"):
                for g in range(gates):
                    nn.init.xavier_uniform_(param.data[g * hidden:(g + 1) * hidden])
            elif name.startswith("bias"):
                nn.init.zeros_(param)
                # PyTorch adds bias_ih and bias_hh; gate order i, f, g, o.
                if self.config.cell == "lstm" and name.startswith("bias_ih"):
                    nn.init.ones_(param.data[hidden:2 * hidden])
        bound = 1.0 / math.sqrt(self.decoder.in_features)
        nn.init.uniform_(self.decoder.weight, -bound, bound)
        nn.init.zeros_(self.decoder.bias)
        if self.projection is not None:
            nn.init.xavier_uniform_(self.projection.weight)

    def initial_state(self, batch_size: int, device: torch.device | None = None) -> State:
        """Zero state for ``batch_size`` sequences (the implicit sentence start)."""
        weight = self.embedding.weight
        shape = (self.config.layers, batch_size, self.config.hidden_dim)
        parts = 2 if self.config.cell == "lstm" else 1
        return tuple(torch.zeros(shape, device=device or weight.device, dtype=weight.dtype)
                     for _ in range(parts))

    def forward(self, tokens: torch.Tensor, state: State | None = None
                ) -> tuple[torch.Tensor, State]:
        """Logits (batch, time, vocab) for next tokens, and the state after the last step."""
        features = self.hidden_features(tokens, state)
        return self.decoder(features[0]), features[1]

    def hidden_features(self, tokens: torch.Tensor, state: State | None = None
                        ) -> tuple[torch.Tensor, State]:
        """The output layer's inputs (batch, time, features) and the final state."""
        if state is None:
            state = self.initial_state(tokens.shape[0], tokens.device)
        embedded = self.dropout(self.embedding(tokens))  # (batch, time, embed)
        rnn_state: Any = state if self.config.cell == "lstm" else state[0]
        output, new_state = self.rnn(embedded, rnn_state)  # (batch, time, hidden)
        output = self.dropout(output)
        if self.projection is not None:
            output = self.projection(output)
        new = tuple(new_state) if self.config.cell == "lstm" else (new_state,)
        return output, new

    def num_parameters(self) -> int:
        """Distinct trainable parameters (a tied matrix counts once)."""
        return sum(p.numel() for p in self.parameters())


def detach_state(state: State) -> State:
    """Cut the graph at a truncated-BPTT boundary, keeping the values."""
    return tuple(s.detach() for s in state)
