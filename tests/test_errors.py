"""Library errors name settings in templates; the CLI shows each as its flag, and text that
is not a template (a path, another library's message) passes through unchanged."""

from __future__ import annotations

from lmcli.cli import flag_of
from lmcli.errors import InputError, LmcliError, SettingError, escape


def test_settings_are_shown_as_flags_and_named_bare_in_the_library() -> None:
    error = SettingError("{hidden_dim} must be at least 1; or choose {cell}")
    assert str(error) == "hidden_dim must be at least 1; or choose cell"
    assert error.render(flag_of) == "--hidden-dim must be at least 1; or choose --model"
    assert error.exit_code == 2
    plain = LmcliError("a path {with} braces")
    assert plain.render(flag_of) == "a path {with} braces" and plain.exit_code == 1


def test_escaped_text_keeps_its_braces() -> None:
    reason = "RuntimeError: bad {lr} }} {{ {"
    error = LmcliError(template="{compile}: failed (" + escape(reason) + "); lower {lr}")
    assert str(error) == f"compile: failed ({reason}); lower lr"
    assert error.render(flag_of) == f"--compile: failed ({reason}); lower --lr"


def test_input_errors_keep_the_fact_plain() -> None:
    error = InputError("{encoding}.txt: not valid utf-8", "give {encoding}")
    assert error.render(flag_of) == "{encoding}.txt: not valid utf-8; give --encoding"
    assert error.exit_code == 1
