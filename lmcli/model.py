"""The recurrent language model: a config dataclass and one module for every cell (the
cells PyTorch ships, rnn, lstm and gru, and the textbook variants of :mod:`lmcli.cells`;
the output layer over the vocabulary is :mod:`lmcli.output`'s).

No I/O and no device choice here. The output layer has exactly ``vocab_size`` units, one
per token that can occur (<EOS>, <UNK> and the vocabulary), so no probability mass ever
goes to padding or start symbols; the implicit start context is an <EOS> input with a
zero state.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import warnings
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from lmcli.attention import AttentionLSTM
from lmcli.cells import CELL_CLASSES, RecurrentLayer
from lmcli.clockwork import ClockworkRNN
from lmcli.direction import DIRECTIONS
from lmcli.errors import LmcliError, SettingError
from lmcli.output import (ADAPTIVE_CUTOFFS, ALIGN_MIN_ROWS, BLOCK_FLOATS_CPU, BLOCK_FLOATS_GPU, SOFTMAXES,
                          AdaptiveSoftmax, aligned_linear, blocked_target_log_probs, default_cutoffs)
from lmcli.settings import check, setting
from lmcli.units import parse_int_list

TORCH_CELLS: dict[str, tuple[type[nn.RNNBase], int, int]] = {
    "rnn": (nn.RNN, 1, 1), "lstm": (nn.LSTM, 4, 2), "gru": (nn.GRU, 3, 1)}
"""The cells PyTorch ships (its fused kernels run them): module, gate blocks, state parts."""
CELLS = tuple(TORCH_CELLS)
LAYER_CLASSES: dict[str, type[RecurrentLayer]] = {**CELL_CLASSES, "clockwork": ClockworkRNN,
                                                   "attention": AttentionLSTM}
"""lmcli's own cells by their ``--model`` names: those of :mod:`lmcli.cells` and the two
with modules of their own."""
ALL_CELLS = (*CELLS, *LAYER_CLASSES)
"""Every ``--model`` value: PyTorch's cells, then those of :mod:`lmcli.cells`."""
State = tuple[torch.Tensor, ...]
"""The recurrent state, a tuple of parts, each (layers, batch, part size): (h,) for rnn and
gru, (h, c) for lstm; a layer of :mod:`lmcli.cells` says its own parts and sizes."""


MODEL = "Model"


@dataclass
class ModelConfig:
    """The network's shape and its regularisation (AWD-LSTM, Merity et al. 2018).

    ``dropout`` is the locked (variational) dropout on the last layer's output; the input
    and between-layer rates default to it when left ``None``. All dropouts act in training
    only: scores and samples are deterministic. ``vocab_size`` comes from the tokenizer; 0
    means not known yet (a request, before the corpus is read): settings are checked, and
    what depends on the vocabulary (``softmax="auto"``, the cutoffs) waits for
    :meth:`for_vocabulary`.
    """

    vocab_size: int = 0
    cell: str = setting("lstm", "Recurrent cell: rnn (tanh Elman), lstm or gru (PyTorch's fused "
                        "kernels), or a textbook variant: rnn-relu (identity-initialised), "
                        "lstm-peephole, lstm-coupled (f = 1 - i), gru-minimal (update gate only), "
                        "clockwork (modules updated every 1, 2, 4, ... steps), attention (an LSTM "
                        "attending over its last outputs).",
                        panel=MODEL, choices=ALL_CELLS, flag="--model")
    periods: str = setting("auto", "Clockwork module periods, fastest first, each dividing the "
                           "largest: 1,2,4,8. auto: 1, 2, 4, ... over up to 8 modules that split "
                           "the hidden size evenly.", panel=MODEL)
    attn_window: int = setting(16, "Attention: how many previous outputs each step attends over.",
                               panel=MODEL, at_least=1)
    attn_score: str = setting("additive", "Attention scores: additive (Daniluk et al. 2017) or dot.",
                              panel=MODEL, choices=("additive", "dot"))
    direction: str = setting("forward", "Reading order of each line: forward, or backward (right to "
                             "left, <EOS> still last: a second opinion for rescoring beside a "
                             "forward model).", panel=MODEL, choices=DIRECTIONS)
    layers: int = setting(2, "Stacked recurrent layers.", panel=MODEL, at_least=1)
    embed_dim: int = setting(256, "Embedding size.", panel=MODEL, at_least=1)
    hidden_dim: int = setting(512, "Hidden state size.", panel=MODEL, at_least=1)
    dropout: float = setting(0.2, "Locked (variational) dropout on the last layer's outputs; also "
                             "the default of the input and between-layer rates.", panel=MODEL,
                             at_least=0, below=1)
    tie_weights: bool = setting(False, "Share the embedding with the output layer.", panel=MODEL)
    dropout_input: float | None = setting(None, "Locked dropout on the embeddings.", panel=MODEL,
                                          at_least=0, below=1, default_text="{dropout}")
    dropout_hidden: float | None = setting(None, "Locked dropout between layers.", panel=MODEL,
                                           at_least=0, below=1, default_text="{dropout}")
    dropout_embed: float = setting(0.0, "Embedding dropout: drop whole words (rows of the "
                                   "embedding).", panel=MODEL, at_least=0, below=1)
    weight_drop: float = setting(0.0, "DropConnect on the hidden-to-hidden weights (AWD-LSTM).",
                                 panel=MODEL, at_least=0, below=1)
    softmax: str = setting("full", "Output layer. full: one softmax over the vocabulary; adaptive: "
                           "frequency clusters (Grave et al. 2017), exact probabilities, several "
                           "times faster on large vocabularies; auto: adaptive when the vocabulary "
                           "has 1,250+ tokens and weights are untied.", panel=MODEL,
                           choices=(*SOFTMAXES, "auto"))
    cutoffs: list[int] | None = setting(None, "Adaptive softmax cluster boundaries, as token ranks: "
                                        "1000,4000.", panel=MODEL,
                                        parse=functools.partial(parse_int_list, flag="{cutoffs}"),
                                        default_text="1000, 4000, 20000, 100000 below the "
                                                     "vocabulary size")
    adaptive_div: float = setting(4.0, "Adaptive softmax: cluster i projects the features to "
                                  "their size / div**(i+1).", panel=MODEL, at_least=1)

    def __post_init__(self) -> None:
        if self.cutoffs is not None:
            self.cutoffs = list(self.cutoffs)
        check(self)
        if not isinstance(self.vocab_size, int) or self.vocab_size < 0:
            raise SettingError(f"{{vocab_size}} must be a positive integer, got {self.vocab_size!r}")
        cell_options(self)  # the cell's own settings, checked against the shape
        if self.softmax == "adaptive" and self.tie_weights:
            raise SettingError("{tie_weights} needs the full softmax; choose {softmax} full or "
                               "untied weights")
        if self.vocab_size:
            self._fit_vocabulary()

    def _fit_vocabulary(self) -> None:
        """Resolve ``auto`` and the default cutoffs, and check them against the vocabulary."""
        if self.softmax == "auto":  # what recipes ask for: adaptive where it pays
            wanted = not self.tie_weights and (self.cutoffs or default_cutoffs(self.vocab_size))
            self.softmax = "adaptive" if wanted else "full"
        if self.softmax != "adaptive":
            return
        self.cutoffs = self.cutoffs or default_cutoffs(self.vocab_size)
        cutoffs = self.cutoffs
        if not cutoffs:
            raise SettingError(f"a vocabulary of {self.vocab_size} is too small for an adaptive "
                               f"softmax (the default clusters need {ADAPTIVE_CUTOFFS[0] * 5 // 4:,} "
                               "tokens); use {softmax} full, or choose {cutoffs}")
        if any(not isinstance(c, int) for c in cutoffs) or cutoffs != sorted(set(cutoffs)) \
                or cutoffs[0] < 1 or cutoffs[-1] >= self.vocab_size:
            raise SettingError(f"{{cutoffs}} must be increasing integers between 1 and the vocabulary "
                               f"size {self.vocab_size} (exclusive), got {cutoffs}")

    def for_vocabulary(self, vocab_size: int) -> ModelConfig:
        """This configuration for a vocabulary of ``vocab_size`` tokens, checked against it."""
        return dataclasses.replace(self, vocab_size=vocab_size)

    @property
    def input_rate(self) -> float:
        return self.dropout if self.dropout_input is None else self.dropout_input

    @property
    def hidden_rate(self) -> float:
        return self.dropout if self.dropout_hidden is None else self.dropout_hidden

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise LmcliError(f"checkpoint model config has unknown fields: {', '.join(sorted(unknown))}")
        return cls(**data)


def cell_options(config: ModelConfig) -> dict[str, Any]:
    """What a cell's layer class takes beyond its sizes (lmcli's own cells say it)."""
    if config.cell in LAYER_CLASSES:
        return LAYER_CLASSES[config.cell].options(config)
    return {"nonlinearity": "tanh"} if config.cell == "rnn" else {}


def locked_dropout(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Variational dropout: one mask per sequence, the same at every time step.
    x: (batch, time, features)."""
    if not training or rate == 0.0:
        return x
    mask = x.new_empty((x.shape[0], 1, x.shape[2])).bernoulli_(1.0 - rate) / (1.0 - rate)
    return x * mask


def embedding_dropout(weight: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Drops whole words: a row of the embedding matrix is zeroed for the whole batch, so a
    dropped word vanishes wherever it occurs (Gal & Ghahramani 2016). weight: (vocab, embed)."""
    if not training or rate == 0.0:
        return weight
    mask = weight.new_empty((weight.shape[0], 1)).bernoulli_(1.0 - rate) / (1.0 - rate)
    return weight * mask


@dataclass
class Activations:
    """The last layer's outputs for activation regularisation, (batch, time, hidden):
    ``raw`` before the output dropout (TAR penalises its changes over time) and
    ``dropped`` after it (AR penalises its size)."""

    raw: torch.Tensor
    dropped: torch.Tensor


class RNNLM(nn.Module):
    """Embedding -> stacked recurrent layers -> (projection) -> output layer over the
    vocabulary (a linear layer, or an adaptive softmax).

    Each layer is its own single-layer PyTorch RNN module, so that locked dropout can act
    between layers and weight-drop can replace a layer's hidden-to-hidden matrix for one
    forward pass; the fused (cuDNN / oneDNN) kernel still runs each layer.

    With ``tie_weights`` the output layer shares the embedding matrix; when the hidden size
    differs from the embedding size a linear projection maps hidden states to the
    embedding size first.
    """

    def __init__(self, config: ModelConfig, initialise: bool = True) -> None:
        """``initialise=False``: the weights are loaded next, so skip their (slow) init."""
        super().__init__()
        if not config.vocab_size:
            raise LmcliError("a model needs its vocabulary size (ModelConfig.for_vocabulary)")
        self.config = config
        rnn_class = LAYER_CLASSES.get(config.cell) or TORCH_CELLS[config.cell][0]
        extra = cell_options(config)
        self.embedding = nn.Embedding(config.vocab_size, config.embed_dim)
        self.rnns: nn.ModuleList = nn.ModuleList(
            rnn_class(config.embed_dim if layer == 0 else config.hidden_dim, config.hidden_dim,
                      batch_first=True, **extra)
            for layer in range(config.layers))
        output_dim = config.hidden_dim
        self.projection: nn.Linear | None = None
        if config.tie_weights and config.hidden_dim != config.embed_dim:
            self.projection = nn.Linear(config.hidden_dim, config.embed_dim, bias=False)
            output_dim = config.embed_dim
        self.decoder: nn.Linear | AdaptiveSoftmax
        if config.softmax == "adaptive":
            assert config.cutoffs
            self.decoder = AdaptiveSoftmax(output_dim, config.vocab_size, config.cutoffs, config.adaptive_div)
        else:
            self.decoder = nn.Linear(output_dim, config.vocab_size)
        if initialise:
            self.reset_parameters()
        if config.tie_weights:
            self.decoder.weight = self.embedding.weight

    def reset_parameters(self) -> None:
        """Initialisation from the RNN-LM literature: small uniform embeddings, orthogonal
        recurrent matrices (one per gate block), Xavier input matrices, zero biases except
        the LSTM forget gate, whose bias is 1 so that memory is kept by default. A layer of
        :mod:`lmcli.cells` initialises itself (its docstring says how)."""
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        hidden = self.config.hidden_dim
        for rnn in self.rnns:
            if isinstance(rnn, RecurrentLayer):
                rnn.reset_parameters()
                continue
            gates = TORCH_CELLS[self.config.cell][1]
            for name, param in rnn.named_parameters():
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
        if isinstance(self.decoder, AdaptiveSoftmax):
            self.decoder.reset_parameters()
        else:
            bound = 1.0 / math.sqrt(self.decoder.in_features)
            nn.init.uniform_(self.decoder.weight, -bound, bound)
            nn.init.zeros_(self.decoder.bias)
        if self.projection is not None:
            nn.init.xavier_uniform_(self.projection.weight)

    def initial_state(self, batch_size: int, device: torch.device | None = None) -> State:
        """The state before the first token for ``batch_size`` sequences (the implicit
        sentence start), as each layer's class defines it: zeros for the PyTorch cells."""
        weight = self.embedding.weight
        device, dtype = device or weight.device, weight.dtype
        layers = [rnn.initial_state(batch_size, device, dtype) if isinstance(rnn, RecurrentLayer)
                  else tuple(torch.zeros((1, batch_size, self.config.hidden_dim), device=device, dtype=dtype)
                             for _ in range(TORCH_CELLS[self.config.cell][2]))
                  for rnn in self.rnns]
        return tuple(torch.cat(parts) for parts in zip(*layers))

    def forward(self, tokens: torch.Tensor, state: State | None = None
                ) -> tuple[torch.Tensor, State]:
        """Logits (batch, time, vocab) for next tokens, and the state after the last step.
        With an adaptive softmax the logits are the log-probabilities themselves (already
        normalised, so a softmax over them gives the same distribution back)."""
        features, new_state, _ = self.hidden_features(tokens, state)
        return self.logits(features), new_state

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """The output layer: features (..., features) -> (..., vocab)."""
        if isinstance(self.decoder, AdaptiveSoftmax):
            return self.decoder.log_probs(features)
        return self.decoder(features)

    def mean_loss(self, features: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100,
                  normalizer: float | None = None) -> torch.Tensor:
        """Mean negative log-probability of the targets, padding (``ignore_index``) left
        out: the training loss. With ``normalizer`` the sum is divided by it instead of by
        the number of targets here (data-parallel ranks divide by their share of the
        global batch's count, so that DDP's gradient average is the global mean). The full
        softmax takes PyTorch's fused cross-entropy, which is faster than the per-token
        path (see benchmarks/quality/FINDINGS.md)."""
        if isinstance(self.decoder, AdaptiveSoftmax):
            logprobs = self.target_log_probs(features, targets)
            count = (targets != ignore_index).sum().clamp(min=1) if normalizer is None else normalizer
            return -logprobs.sum() / count
        logits = aligned_linear(self.decoder, features)
        flat_logits, flat_targets = logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1)
        if normalizer is None:
            return F.cross_entropy(flat_logits, flat_targets, ignore_index=ignore_index)
        return F.cross_entropy(flat_logits, flat_targets, ignore_index=ignore_index,
                               reduction="sum") / normalizer

    def target_log_probs(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Log-probabilities (float32) of ``targets`` (any shape, matching ``features``
        without its last axis); a negative target (padding) gets 0. The same numbers as
        ``log_softmax(logits)`` at the targets, computed without the whole distribution
        where the output layer allows it."""
        flat, ids = features.reshape(-1, features.shape[-1]), targets.reshape(-1)
        real = ids >= 0
        if torch.is_grad_enabled():  # the adaptive training loss: one product, no host sync
            safe = ids.clamp(min=0)
            picked = (self.decoder.target_log_probs(flat, safe) if isinstance(self.decoder, AdaptiveSoftmax)
                      else -F.cross_entropy(aligned_linear(self.decoder, flat).float(), safe, reduction="none"))
            return torch.where(real, picked, torch.zeros_like(picked)).reshape(targets.shape)
        # Scoring: padding costs no output layer, and the rows go a block at a time.
        everything = bool(real.all())
        if not everything:
            where = real.nonzero().squeeze(1)
            flat, ids = flat.index_select(0, where), ids.index_select(0, where)
        block = BLOCK_FLOATS_GPU if flat.is_cuda else BLOCK_FLOATS_CPU
        if not isinstance(self.decoder, AdaptiveSoftmax):
            picked = blocked_target_log_probs(self.decoder, flat, ids, block)
        else:
            rows = max(ALIGN_MIN_ROWS, block // self.decoder.head.out_features)
            picked = torch.cat([self.decoder.target_log_probs(flat[first:first + rows], ids[first:first + rows])
                                for first in range(0, len(flat), rows)]) if len(flat) else flat.new_zeros(0)
        if everything:
            return picked.reshape(targets.shape)
        return picked.new_zeros(targets.numel()).index_copy(0, where, picked).reshape(targets.shape)

    def hidden_features(self, tokens: torch.Tensor, state: State | None = None
                        ) -> tuple[torch.Tensor, State, Activations]:
        """The output layer's inputs (batch, time, features), the final state, and the last
        layer's activations (for AR/TAR)."""
        config, training = self.config, self.training
        if state is None:
            state = self.initial_state(tokens.shape[0], tokens.device)
        weight = embedding_dropout(self.embedding.weight, config.dropout_embed, training)
        x = locked_dropout(F.embedding(tokens, weight), config.input_rate, training)  # (batch, time, embed)
        raw, new_state = self._run_layers(x, state)
        x = locked_dropout(raw, config.dropout, training)
        activations = Activations(raw, x)
        if self.projection is not None:
            x = self.projection(x)
        return x, new_state, activations

    def _run_layers(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """The recurrent layers (batch, time, embed) -> (batch, time, hidden), with locked
        dropout between them, and their final states. Opaque to torch.compile
        (:func:`lmcli.train.step.compile_step` makes it so): Dynamo does not trace RNN
        modules, and a graph break inside this loop would make it give up on the whole
        forward pass; outside it, what comes before and after compiles."""
        config = self.config
        finals: list[tuple[torch.Tensor, ...]] = []
        for layer, rnn in enumerate(self.rnns):
            layer_state = tuple(s[layer:layer + 1] for s in state)
            x, final = self._run_layer(rnn, x, layer_state)  # (batch, time, hidden)
            finals.append(final)
            if layer < config.layers - 1:
                x = locked_dropout(x, config.hidden_rate, self.training)
        return x, tuple(torch.cat([final[part] for final in finals]) for part in range(len(state)))

    def _run_layer(self, rnn: nn.Module, x: torch.Tensor, state: State
                   ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        # nn.LSTM takes (h, c), nn.RNN and nn.GRU take h alone, the cells their tuple.
        rnn_state: Any = state[0] if self.config.cell in ("rnn", "gru") else state
        if self.training and self.config.weight_drop > 0.0:
            # DropConnect on W_hh (Wan et al. 2013): one mask per forward pass, shared by
            # every time step; the module runs with the dropped matrix swapped in, so its
            # fused kernel is used and gradients reach the raw weight.
            dropped = F.dropout(rnn.weight_hh_l0, self.config.weight_drop, training=True)
            with warnings.catch_warnings():
                # cuDNN copies the weights into one block for this call and says so; expected.
                warnings.filterwarnings("ignore", message="RNN module weights are not part of single")
                output, final = functional_call(rnn, {"weight_hh_l0": dropped}, (x, rnn_state))
        else:
            output, final = rnn(x, rnn_state)
        return output, ((final,) if self.config.cell in ("rnn", "gru") else tuple(final))

    def flops_per_token(self, tail_shares: list[float] | None = None, training: bool = True) -> float:
        """Matrix-multiply FLOPs per token (2 per multiply-add), the model-FLOPs measure of
        utilisation: the recurrent layers' input and recurrent products, the projection and
        the output layer; a training step costs three forward passes (the backward pass
        two). For an adaptive softmax, ``tail_shares[i]`` is the share of targets in
        cluster i (training computes a tail only for those rows); without it, every tail
        counts for every token, as when scoring the whole distribution."""
        config = self.config
        cell_class = LAYER_CLASSES.get(config.cell)
        gates = cell_class.gates if cell_class is not None else TORCH_CELLS[config.cell][1]
        macs = 0.0
        for layer in range(config.layers):
            inputs = config.embed_dim if layer == 0 else config.hidden_dim
            macs += gates * config.hidden_dim * (inputs + config.hidden_dim)
        if self.projection is not None:
            macs += self.projection.in_features * self.projection.out_features
        if isinstance(self.decoder, AdaptiveSoftmax):
            macs += self.decoder.head.in_features * self.decoder.head.out_features
            for i, tail in enumerate(self.decoder.tails):
                share = 1.0 if tail_shares is None else tail_shares[i]
                macs += share * sum(layer.in_features * layer.out_features for layer in tail)
        else:
            macs += self.decoder.in_features * self.decoder.out_features
        return 2.0 * macs * (3.0 if training else 1.0)

    def num_parameters(self) -> int:
        """Distinct trainable parameters (a tied matrix counts once)."""
        return sum(p.numel() for p in self.parameters())

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        return super().load_state_dict(upgrade_state_dict(state_dict), strict=strict, assign=assign)


_OLD_RNN_KEY = re.compile(r"^rnn\.(weight|bias)_(ih|hh)_l(\d+)$")


def upgrade_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights saved in the older layout (one multi-layer RNN module, keys
    ``rnn.weight_ih_l1``) renamed for the per-layer modules (``rnns.1.weight_ih_l0``); the
    numbers are the same. Both layouts carry format version 1 and lmcli 0.1.0, so the keys
    are what tells them apart."""
    upgraded = {}
    for key, value in state_dict.items():
        match = _OLD_RNN_KEY.match(key)
        if match:
            kind, which, layer = match.groups()
            key = f"rnns.{layer}.{kind}_{which}_l0"
        upgraded[key] = value
    return upgraded


def detach_state(state: State) -> State:
    """Cut the graph at a truncated-BPTT boundary, keeping the values."""
    return tuple(s.detach() for s in state)
