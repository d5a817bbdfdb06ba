"""Settings declared once: a dataclass field says its default, help and valid values.

The settings of a training run are the fields of three dataclasses, each next to the
code that uses it: :class:`lmcli.corpus.DataConfig` (how text becomes tokens),
:class:`lmcli.model.ModelConfig` (the network) and :class:`lmcli.train.config.TrainConfig`
(the optimisation). Each field is declared with :func:`setting`; from those declarations
come the command-line options of ``lmcli train``, the recipes' overlay, validation (when
a config is made, by :func:`check`), what ``lmcli info`` shows, the checkpoint's config
and what may change when a run is resumed. This module knows none of the three classes.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lmcli.errors import SettingError


@dataclass(frozen=True)
class Spec:
    """What a setting's declaration says besides its default."""

    help: str
    panel: str  # the group its option is listed under in --help
    choices: tuple[str, ...] = ()
    at_least: float | None = None
    above: float | None = None
    below: float | None = None
    at_most: float | None = None
    resumable: bool = False  # may change when a run is resumed (budgets, how to run)
    flag: str | None = None  # when it is not ``--`` + the name with dashes
    parse: Callable[[str], Any] | None = None  # reads the typed text (a duration, a list)
    default_text: str | None = None  # what --help says of a ``None`` default


def setting(default: Any, help: str, *, panel: str, **spec: Any) -> Any:
    """A dataclass field declared as a setting."""
    return field(default=default, metadata={"setting": Spec(help=help, panel=panel, **spec)})


@dataclass(frozen=True)
class Setting:
    """One declared setting, as the code that derives from declarations sees it."""

    name: str
    group: str  # the config it belongs to: "data", "model" or "train"
    kind: type  # int, float, str, bool or list
    optional: bool  # None is a value (meaning "not set": the documented fallback applies)
    default: Any
    spec: Spec

    @property
    def flag(self) -> str:
        return self.spec.flag or "--" + self.name.replace("_", "-")


@functools.cache
def declared(config: type, group: str) -> tuple[Setting, ...]:
    """The settings a config dataclass declares, in field order."""
    hints = typing.get_type_hints(config)
    found = []
    for item in dataclasses.fields(config):
        spec = item.metadata.get("setting")
        if spec is None:
            continue
        kind, optional = _base_type(hints[item.name])
        found.append(Setting(item.name, group, kind, optional, item.default, spec))
    return tuple(found)


def _base_type(hint: Any) -> tuple[type, bool]:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
    base = args[0] if optional and len(args) == 1 else hint
    origin = typing.get_origin(base)
    return (origin if origin is not None else base), optional and len(args) == 1


def check(config: Any) -> None:
    """Every declared setting of ``config`` against its declaration: type, choices, range."""
    for item in declared(type(config), ""):
        problem = _problem(item, getattr(config, item.name))
        if problem:
            raise SettingError(f"{{{item.name}}} {problem}")


def _problem(item: Setting, value: Any) -> str | None:
    if value is None:
        return None if item.optional else f"must be given (a {item.kind.__name__})"
    if item.kind is bool:
        return None if isinstance(value, bool) else f"must be true or false, got {value!r}"
    if item.kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (item.kind is int and not float(value).is_integer()):
            return f"must be a{'n integer' if item.kind is int else ' number'}, got {value!r}"
        if not math.isfinite(value):
            return f"must be a finite number, got {value!r}"
        return _out_of_range(item.spec, value)
    if item.spec.choices and value not in item.spec.choices:
        return f"must be one of {', '.join(item.spec.choices)}; got {value!r}"
    return None


def _out_of_range(spec: Spec, value: float) -> str | None:
    low_ok = (spec.at_least is None or value >= spec.at_least) and (spec.above is None or value > spec.above)
    high_ok = (spec.below is None or value < spec.below) and (spec.at_most is None or value <= spec.at_most)
    if low_ok and high_ok:
        return None
    low = spec.at_least if spec.at_least is not None else spec.above
    high = spec.below if spec.below is not None else spec.at_most
    if low is not None and high is not None:
        left = "[" if spec.at_least is not None else "("
        right = ")" if spec.below is not None else "]"
        return f"must be in {left}{low:g}, {high:g}{right}, got {value!r}"
    if high is not None:
        return f"must be {'below' if spec.below is not None else 'at most'} {high:g}, got {value!r}"
    if spec.above == 0:
        return f"must be positive, got {value!r}"
    return (f"must be at least {spec.at_least:g}, got {value!r}" if spec.at_least is not None
            else f"must be above {spec.above:g}, got {value!r}")


def default_text(item: Setting) -> str:
    """The dataclass default as --help shows it."""
    if item.spec.default_text is not None:
        return item.spec.default_text
    if item.kind is bool and item.default is not None:
        return "on" if item.default else "off"
    return "none" if item.default is None else f"{item.default:g}" if isinstance(item.default, float) \
        else str(item.default)
