"""Checkpoints: one self-contained file of primitives, bytes and tensors.

A checkpoint loads with ``torch.load(path, weights_only=True)``: no pickled code, ever. It
holds the format version, the model config as a dict, the tokenizer state (sentencepiece
model bytes included), the weights of the unwrapped module on the CPU, the metrics
history, provenance, and, in ``last.pt``, the training state that resuming needs.
Files are written to a temporary name, flushed to disk and renamed over the old one, so a
crash mid-save leaves the previous checkpoint intact.

A training run writes a folder::

    RUN/best.pt        best validation loss so far (what other commands load)
    RUN/last.pt        the latest state, resumable
    RUN/metrics.jsonl  one JSON object per log line, validation and epoch
    RUN/config.json    the resolved configuration, for people to read
    RUN/novelty.npz    hashes of the training text's runs and lines (lmcli.novelty)

and records the folder in ``checkpoints/LATEST`` so that other commands find it.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import pickle
import platform
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

import lmcli
from lmcli.disk import tensor_bytes, write_failure
from lmcli.errors import LmcliError, SettingError
from lmcli.model import RNNLM, ModelConfig
from lmcli.script import ScriptConverter, vocabulary_script
from lmcli.tokenizers import Tokenizer, tokenizer_from_state

FORMAT = "lmcli-checkpoint"
FORMAT_VERSION = 1
BEST = "best.pt"
LAST = "last.pt"
METRICS = "metrics.jsonl"
CONFIG = "config.json"
DEFAULT_ROOT = Path("checkpoints")
LATEST = "LATEST"
ZIP_MAGIC = b"PK\x03\x04"


def to_cpu(value: Any, _seen: dict[tuple[Any, ...], torch.Tensor] | None = None) -> Any:
    """A copy of nested dicts / lists / tuples with every tensor moved to the CPU; tensors
    that are the same view of the same memory (tied weights) become one CPU tensor.
    ``state_dict()`` gives each name of a tied matrix a tensor object of its own, so they
    are matched by memory, not by identity."""
    seen = {} if _seen is None else _seen
    if isinstance(value, torch.Tensor):
        key = (value.device, value.data_ptr(), value.dtype, tuple(value.shape), value.stride())
        if key not in seen:
            seen[key] = value.detach().to("cpu")
        return seen[key]
    if isinstance(value, dict):
        return {k: to_cpu(v, seen) for k, v in value.items()}
    if isinstance(value, list):
        return [to_cpu(v, seen) for v in value]
    if isinstance(value, tuple):
        return tuple(to_cpu(v, seen) for v in value)
    return value


_PLAIN = (str, int, float, bool, bytes, type(None))


def check_plain(value: Any, where: str = "checkpoint") -> None:
    """Fail loudly (a bug, not a user error) on anything ``weights_only`` loading refuses:
    only exact primitives, bytes, containers of them, and tensors may go in."""
    if type(value) in _PLAIN or isinstance(value, torch.Tensor):
        return
    if type(value) is dict:
        for key, item in value.items():
            check_plain(key, where)
            check_plain(item, f"{where}.{key}")
        return
    if type(value) in (list, tuple):
        for index, item in enumerate(value):
            check_plain(item, f"{where}[{index}]")
        return
    raise TypeError(f"{where} holds a {type(value).__name__}, which weights_only loading refuses")


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def make_payload(*, model: torch.nn.Module, tokenizer: Tokenizer, model_config: ModelConfig,
                 data_config: dict[str, Any], train_config: dict[str, Any], step: int,
                 epoch: int, tokens_seen: int, metrics: list[dict[str, Any]],
                 valid_loss: float | None, provenance: dict[str, Any],
                 training_state: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything a checkpoint holds, as plain data and CPU tensors."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "lmcli_version": lmcli.__version__,
        "torch_version": str(torch.__version__),  # a str subclass torch.load would refuse
        "python_version": platform.python_version(),
        "created": now_iso(),
        "model_config": model_config.to_dict(),
        "tokenizer": tokenizer.to_state(),
        "data_config": dict(data_config),
        "train_config": dict(train_config),
        "state_dict": to_cpu(model.state_dict()),
        "step": int(step),
        "epoch": int(epoch),
        "tokens_seen": int(tokens_seen),
        "valid_loss": None if valid_loss is None else float(valid_loss),
        "metrics": list(metrics),
        "provenance": dict(provenance),
        "training_state": to_cpu(training_state) if training_state is not None else None,
    }


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Any, needed: int | None = None) -> None:
    """Call ``write(handle)`` on a temporary file beside ``path``, then rename it over
    ``path``. On any failure (a full disk, say) the temporary file is removed and the old
    file is untouched; a storage failure is a :class:`lmcli.disk.StorageError` saying what
    ran out where (``needed``: the bytes the file takes, about)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except (OSError, RuntimeError) as error:
        _remove(tmp)
        failure = write_failure(path, error, needed)
        if failure is None:
            raise
        raise failure from None
    except BaseException:
        _remove(tmp)
        raise


def _remove(tmp: Path) -> None:
    try:
        tmp.unlink(missing_ok=True)
    except OSError:  # a folder gone read-only keeps it; the name says what it is
        pass


def save(payload: dict[str, Any], path: Path) -> None:
    """Write a checkpoint atomically."""
    check_plain(payload)
    atomic_write(path, lambda handle: torch.save(payload, handle), needed=tensor_bytes(payload))


@dataclass
class Checkpoint:
    """A loaded checkpoint: its raw payload plus the parts rebuilt."""

    path: Path
    payload: dict[str, Any]
    model_config: ModelConfig
    tokenizer: Tokenizer

    @property
    def step(self) -> int:
        return int(self.payload.get("step", 0))

    @cached_property
    def script(self) -> str:
        """The Chinese script of the training corpus: traditional, simplified or neither.
        Checkpoints written before it was recorded have it worked out from the vocabulary."""
        recorded = (self.payload.get("provenance") or {}).get("script")
        return recorded if isinstance(recorded, str) else vocabulary_script(self.tokenizer.tokens)

    @cached_property
    def converter(self) -> ScriptConverter:
        """Turns text typed in either Chinese script into the model's, and its output back."""
        return ScriptConverter(self.tokenizer, self.script)

    @property
    def convert(self) -> Callable[[str], str] | None:
        """Text in the other Chinese script into the model's, as scoring takes it (None:
        the model's vocabulary is in neither script, nothing to convert)."""
        converter = self.converter
        return converter.to_model if converter.active else None

    @property
    def training_state(self) -> dict[str, Any] | None:
        return self.payload.get("training_state")

    def build_model(self, device: torch.device | str = "cpu") -> RNNLM:
        """The model with the checkpoint's weights, in eval mode, on ``device``."""
        model = RNNLM(self.model_config, initialise=False)
        try:
            model.load_state_dict(self.payload["state_dict"])
        except (RuntimeError, KeyError) as error:
            first = str(error).strip().splitlines()[0]
            raise LmcliError(f"{self.path}: weights do not match the model config ({first})") from None
        return model.to(device).eval()

    def summary(self) -> dict[str, Any]:
        """What ``lmcli info`` reports, as plain data."""
        payload, config, tokenizer = self.payload, self.model_config, self.tokenizer
        valid_loss = payload.get("valid_loss")
        history = [m for m in payload.get("metrics", []) if m.get("event") == "valid"]
        return {
            "path": str(self.path),
            "level": tokenizer.level,
            "model": config.cell,
            "direction": config.direction,
            "layers": config.layers,
            "embed_dim": config.embed_dim,
            "hidden_dim": config.hidden_dim,
            "dropout": config.dropout,
            "tie_weights": config.tie_weights,
            "vocab_size": config.vocab_size,
            "lowercase": tokenizer.lowercase,
            "script": self.script,
            "parameters": count_parameters(payload["state_dict"]),
            "step": self.step,
            "epoch": payload.get("epoch"),
            "tokens_seen": payload.get("tokens_seen"),
            "valid_loss": valid_loss,
            "valid_perplexity": math.exp(valid_loss) if valid_loss is not None else None,
            "resumable": payload.get("training_state") is not None,
            "model_config": config.to_dict(),
            "train_config": payload.get("train_config"),
            "data_config": payload.get("data_config"),
            "provenance": payload.get("provenance"),
            "created": payload.get("created"),
            "lmcli_version": payload.get("lmcli_version"),
            "format_version": payload.get("format_version"),
            "validation_history": [{"step": m["step"], "loss": m["loss"]} for m in history],
        }


def count_parameters(state_dict: dict[str, torch.Tensor]) -> int:
    """Distinct parameters: a tied matrix stored under two names counts once."""
    distinct = {(t.data_ptr(), tuple(t.shape)): t.numel() for t in state_dict.values()}
    return sum(distinct.values())


def read_payload(path: Path) -> dict[str, Any]:
    """The raw payload, with every way a file can be wrong turned into one clear line."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError as error:
        raise LmcliError(f"cannot read {path}: {error.strerror or error}") from None
    if head != ZIP_MAGIC:  # torch.save's format, which lmcli always writes, is a zip archive
        raise LmcliError(f"{path} is not an lmcli checkpoint"
                         + (" (the file is empty)" if not head else ""))
    if not zipfile.is_zipfile(path):
        raise LmcliError(f"{path} is truncated or corrupt (its archive has no end record)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's protocol warnings mean nothing to users
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights_only" in str(error) or "Unsupported" in str(error):
            raise LmcliError(
                f"refusing to load {path}: it holds pickled Python objects that could run "
                "code; lmcli checkpoints never do") from None
        raise LmcliError(f"{path} is not a valid checkpoint (unreadable pickle data)") from None
    except (zipfile.BadZipFile, EOFError) as error:
        raise LmcliError(f"{path} is truncated or corrupt ({error})") from None
    except RuntimeError as error:
        text = str(error)
        if "zip archive" in text or "central directory" in text or "PytorchStreamReader" in text:
            raise LmcliError(f"{path} is truncated or corrupt (not a complete checkpoint file)") from None
        raise LmcliError(f"cannot load {path}: {text.splitlines()[0]}") from None
    except Exception as error:  # anything else torch.load chokes on is damage
        raise LmcliError(f"{path} is truncated or corrupt ({type(error).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise LmcliError(f"{path} is not an lmcli checkpoint")
    version = payload.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise LmcliError(f"{path}: unsupported checkpoint format version {version!r}")
    if version > FORMAT_VERSION:
        raise LmcliError(
            f"{path} was written by a newer lmcli ({payload.get('lmcli_version', '?')}, "
            f"format {version}; this lmcli {lmcli.__version__} reads format {FORMAT_VERSION}): "
            "upgrade lmcli to use it")
    return payload


def load(path: str | Path) -> Checkpoint:
    """Load and check a checkpoint file (not a run folder: see :func:`resolve`)."""
    path = Path(path)
    if not path.exists():
        raise LmcliError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise LmcliError(f"{path} is a directory; pass the run folder through resolve()")
    payload = read_payload(path)
    try:
        model_config = ModelConfig.from_dict(payload["model_config"])
        tokenizer = tokenizer_from_state(payload["tokenizer"])
    except KeyError as error:
        raise LmcliError(f"{path}: checkpoint is missing {error}") from None
    if tokenizer.vocab_size != model_config.vocab_size:
        raise LmcliError(f"{path}: tokenizer has {tokenizer.vocab_size} tokens but the model "
                         f"{model_config.vocab_size}")
    return Checkpoint(path, payload, model_config, tokenizer)


# ----------------------------------------------------------------------------- run folders


def record_latest(run_dir: Path, root: Path = DEFAULT_ROOT) -> None:
    """Remember ``run_dir`` as the last training run (``root/LATEST``)."""
    root.mkdir(parents=True, exist_ok=True)
    atomic_write(root / LATEST, lambda h: h.write(str(run_dir.resolve()).encode() + b"\n"))


def latest_run(root: Path = DEFAULT_ROOT) -> Path | None:
    """The run folder recorded by the last ``lmcli train`` started here, if any."""
    try:
        text = (root / LATEST).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return Path(text) if text else None


def resolve(spec: str | Path | None, root: Path = DEFAULT_ROOT, prefer: str = BEST) -> Path:
    """The checkpoint file a ``checkpoint`` setting means: a file as given; a run folder
    means its best checkpoint (its last one when no best was written); nothing means the
    last run."""
    if spec is None or str(spec) == "":
        run = latest_run(root)
        if run is None:
            raise SettingError(f"no checkpoint given and no training run recorded in {root}/; "
                               "train one with `lmcli train` or give {checkpoint}")
        if not run.exists():
            raise SettingError(f"the last training run ({run}) no longer exists; give {{checkpoint}}")
        spec = run
    path = Path(spec)
    if path.is_dir():
        for name in (prefer, BEST, LAST):
            if (path / name).is_file():
                return path / name
        raise LmcliError(f"{path} holds no checkpoint ({BEST} or {LAST})")
    if not path.exists():
        raise LmcliError(f"checkpoint not found: {path}")
    return path
