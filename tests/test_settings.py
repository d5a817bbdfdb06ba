"""Settings are declared once: the train command's options, validation, info and resume
all derive from the declarations."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from lmcli.cli import app, flag_of
from lmcli.cli.train import help_default
from lmcli.corpus import DataConfig
from lmcli.errors import SettingError
from lmcli.model import ModelConfig
from lmcli.recipes import RECIPES
from lmcli.settings import declared, default_text
from lmcli.train import TrainConfig, all_settings

runner = CliRunner()
COMMAND_OPTIONS = {"--recipe", "--out", "--resume", "--init-from", "--force", "--sample", "--tensorboard",
                   "--json"}
TINY = ["--level", "word", "--recipe", "tiny", "--layers", "1", "--embed-dim", "8", "--hidden-dim", "8",
        "--batch-size", "4", "--seq-len", "8", "--softmax", "full", "--device", "cpu", "--no-sample"]


def train_help() -> dict[str, str]:
    """The train command's options and the help each shows."""
    command = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    return {opt: getattr(param, "help", "") or "" for param in command.params for opt in param.opts
            if opt.startswith("--") and opt != "--help"}


def train_options() -> set[str]:
    return set(train_help())


def test_every_field_has_a_flag_and_every_flag_a_field() -> None:
    for config in (DataConfig, ModelConfig, TrainConfig):
        names = {f.name for f in dataclasses.fields(config)}
        settings = {item.name for item in declared(config, "")}
        # The model's vocabulary size comes from the tokenizer; DataConfig's is the setting.
        assert names - settings == ({"vocab_size"} if config is ModelConfig else set()), config
    flags = {item.flag for item in all_settings().values()}
    assert len(flags) == len(all_settings())
    assert train_options() == flags | COMMAND_OPTIONS


def test_validation_names_the_setting_and_the_cli_its_flag() -> None:
    with pytest.raises(SettingError) as caught:
        TrainConfig(lr_decay=1.5)
    assert str(caught.value) == "lr_decay must be in (0, 1], got 1.5"
    assert caught.value.render(flag_of) == "--lr-decay must be in (0, 1], got 1.5"
    with pytest.raises(SettingError, match="cell must be one of rnn, lstm, gru"):
        ModelConfig(cell="transformer")
    assert flag_of("cell") == "--model" and flag_of("valid_file") == "--valid"
    with pytest.raises(SettingError, match="encoding"):
        DataConfig(encoding="klingon")


def test_help_defaults_are_what_info_reports_after_a_run(english_corpus: Path) -> None:
    """Each option's --help default is what the run gets when the flag is not given: the
    recipe's value where it says "from the recipe", the declared default otherwise."""
    helps = train_help()
    result = runner.invoke(app, ["train", str(english_corpus), *TINY, "--max-steps", "2", "-o", "run"])
    assert result.exit_code == 0, result.output
    info = json.loads(runner.invoke(app, ["info", "-c", "run", "--json"]).stdout)
    given = {TINY[i].lstrip("-").replace("-", "_"): TINY[i + 1] for i in range(0, len(TINY) - 1, 2)
             if not TINY[i + 1].startswith("--")}
    recipe = RECIPES["word"]["tiny"]
    checked = 0
    for name, item in all_settings().items():
        shown = help_default(item)
        assert helps[item.flag].endswith(f"(default: {shown})"), name
        value = info["settings"][name]
        if name in {"cell", "max_steps", *given}:
            continue
        if name in recipe:
            assert shown.startswith("from the recipe") and value == recipe[name], name
        elif item.spec.default_text is None:  # a declared default, stated as it is
            assert shown in (default_text(item), f"from the recipe, else {default_text(item)}"), name
            assert value == item.default, name
            checked += 1
    assert checked >= 10


def first_run(corpus: Path, *extra: str) -> list[str]:
    command = ["train", str(corpus), *TINY, "--max-steps", "2", "--lr", "0.5", "-o", "run", *extra]
    result = runner.invoke(app, command)
    assert result.exit_code == 0, result.output
    return command


def test_resume_takes_the_same_command_again(english_corpus: Path) -> None:
    command = first_run(english_corpus, "--time-limit", "10m")
    again = runner.invoke(app, [*command[:-2 - 2], "--time-limit", "600s", "--max-steps", "4", "--resume",
                                "--json"])
    assert again.exit_code == 0, again.output
    finished = json.loads(again.stdout.splitlines()[-1])
    assert finished["event"] == "finished" and finished["step"] == 4


@pytest.mark.parametrize("flag,value,old,new", [("--hidden-dim", "16", "8", "16"), ("--lr", "0.25", "0.5", "0.25"),
                                                ("--level", "char", "'word'", "'char'"),
                                                ("--recipe", "small", "'tiny'", "'small'")])
def test_resume_refuses_a_real_change_naming_both_values(english_corpus: Path, flag: str, value: str,
                                                         old: str, new: str) -> None:
    command = first_run(english_corpus)
    changed = list(command)
    changed[changed.index(flag) + 1] = value
    result = runner.invoke(app, [*changed, "--max-steps", "4", "--resume"])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {flag} cannot change when resuming"), lines
    assert f"the run has {old}" in lines[0] and f"this command gives {new}" in lines[0]
