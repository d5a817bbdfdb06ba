"""Simplified and traditional Chinese at the boundary: script detection, vocabulary-aware
conversion, and score / eval / tokenize / info reading either script against a model
trained on the other."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import POEM_LINES, REPO, tiny_run
from lmcli import checkpoint as ckpt
from lmcli import ui
from lmcli.cli import app
from lmcli.cli.common import flag_of
from lmcli.errors import SettingError
from lmcli.script import (ScriptConverter, choose_display_script, prepare_user_text, text_script,
                          vocabulary_script)
from lmcli.tokenizers import UNK_ID, CharTokenizer, WordTokenizer
from lmcli.vocabulary import build_tokenizer

runner = CliRunner()
# The first quatrain line of POEM_LINES as a mainland user would type it.
SIMPLIFIED = "床前明月光，疑是地上霜。举头望明月，低头思故乡。"
TRADITIONAL = POEM_LINES[0]
# 静夜思 and 登鹳雀楼, as printed in simplified characters.
SIMPLIFIED_TEXT = ("床前明月光，疑是地上霜。举头望明月，低头思故乡。\n"
                   "白日依山尽，黄河入海流。欲穷千里目，更上一层楼。\n"
                   "春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。")


def tang_tokenizer(lines: int = 3000) -> CharTokenizer:
    text = (REPO / "corpora" / "tang_poems.txt").read_text(encoding="utf-8")
    return build_tokenizer("char", ["\n".join(text.splitlines()[:lines]) + "\n"])


def char_tokenizer(text: str) -> CharTokenizer:
    return CharTokenizer(["<EOS>", "<UNK>", *dict.fromkeys(text)], False)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def poem_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny char-level model of traditional-script poems (a few steps: its scores need
    not be good, only the same for the same tokens)."""
    return tiny_run(tmp_path_factory.mktemp("poems"), POEM_LINES * 20, "char",
                    {"cell": "gru", "embed_dim": 8, "hidden_dim": 16},
                    seq_len=16, batch_size=4, epochs=None, max_steps=6, seed=1)


# ----------------------------------------------------------------------------- detection


def test_the_bundled_tang_vocabulary_is_traditional() -> None:
    tokenizer = tang_tokenizer()
    assert len(tokenizer.tokens) > 3000
    assert vocabulary_script(tokenizer.tokens) == "traditional"


def test_simplified_text_english_and_undecidable_vocabularies() -> None:
    assert vocabulary_script(char_tokenizer(SIMPLIFIED_TEXT).tokens) == "simplified"
    assert vocabulary_script(["the", "cat", "sees", "the", "moon", "."]) == "neither"
    assert vocabulary_script(["明", "月", "山", "水"]) == "neither"  # the same in both scripts
    mixed = list("風雲舉頭鄉") + list("风云举头乡")  # as much of each: undecidable
    assert vocabulary_script(mixed) == "neither"


def test_what_the_user_typed() -> None:
    assert text_script(SIMPLIFIED) == "simplified"
    assert text_script(TRADITIONAL) == "traditional"
    assert text_script("明月") is None  # the same in both scripts
    assert text_script("hello") is None


# ----------------------------------------------------------------------------- conversion


def test_simplified_input_reaches_a_traditional_vocabulary() -> None:
    converter = ScriptConverter(tang_tokenizer(), "traditional")
    assert converter.to_model("春风举头望明月") == "春風舉頭望明月"
    assert converter.unknown(converter.to_model("春风举头望明月")) == []
    assert converter.to_model("春風舉頭望明月") == "春風舉頭望明月"  # already traditional
    assert converter.to_model("the moon") == "the moon"  # no CJK: untouched


def test_phrases_choose_among_one_to_many_mappings() -> None:
    converter = ScriptConverter(char_tokenizer("頭髮發展"), "traditional")
    assert converter.to_model("头发发展") == "頭髮發展"


def test_a_variant_the_vocabulary_holds_replaces_the_one_it_lacks() -> None:
    # OpenCC's s2t writes 里 as 裏; this vocabulary knows only the Taiwan form 裡.
    taiwan = ScriptConverter(char_tokenizer("裡面有人"), "traditional")
    assert taiwan.to_model("里面有人") == "裡面有人"
    # This one knows 里 as typed (the 里 of 千里), not 裏.
    as_typed = ScriptConverter(char_tokenizer("千里面"), "traditional")
    assert as_typed.to_model("里面") == "里面"
    assert as_typed.unknown(as_typed.to_model("里面")) == []


def test_unknown_characters_and_words() -> None:
    converter = ScriptConverter(char_tokenizer("春風舉頭"), "traditional")
    assert converter.unknown(converter.to_model("春风龘龘𠀀")) == ["龘", "𠀀"]
    words = ScriptConverter(WordTokenizer(["<EOS>", "<UNK>", "頭髮", "發展"], False), "traditional")
    assert words.to_model("头发 发展") == "頭髮 發展"
    assert words.unknown(words.to_model("头发 龘龘 发展")) == ["龘龘"]
    assert converter.segments("春风龘") == [("春风", False), ("龘", True)]


def test_a_model_in_neither_script_leaves_text_alone() -> None:
    converter = ScriptConverter(char_tokenizer("abc"), "neither")
    assert converter.to_model("举头") == "举头"
    assert converter.unknown("举头") == ["举", "头"]


def test_output_shown_in_the_script_asked_for() -> None:
    converter = ScriptConverter(tang_tokenizer(300), "traditional")
    assert converter.to_script("春風舉頭望明月", "simplified") == "春风举头望明月"
    assert converter.to_script("春風舉頭望明月", "traditional") == "春風舉頭望明月"
    assert converter.to_script("春風舉頭望明月", "model") == "春風舉頭望明月"


def test_display_script() -> None:
    assert choose_display_script("auto", ["举头", ""], "traditional") == "simplified"
    assert choose_display_script("auto", ["明月"], "traditional") == "traditional"
    assert choose_display_script("auto", [], "neither") == "model"
    assert choose_display_script("simplified", ["舉頭"], "traditional") == "simplified"
    with pytest.raises(SettingError, match="script"):
        choose_display_script("klingon", [], "traditional")


def test_prepare_user_text_names_what_is_missing() -> None:
    converter = ScriptConverter(char_tokenizer("春風舉頭"), "traditional")
    assert prepare_user_text("春风", converter, what="acrostic", required=True).text == "春風"
    with pytest.raises(SettingError) as caught:
        prepare_user_text("春风𠀀龘", converter, what="acrostic", required=True)
    assert caught.value.render(flag_of) == "--acrostic: 𠀀 and 龘 are not in the model's vocabulary"
    prepared = prepare_user_text("春风𠀀龘", converter, what="prime", required=False)
    assert prepared.text == "春風𠀀龘" and prepared.unknown == ["𠀀", "龘"]


# ----------------------------------------------------------------------------- commands


def test_score_reads_either_script_and_keeps_the_text_as_typed(poem_run: Path) -> None:
    tokenizer = ckpt.load(ckpt.resolve(poem_run)).tokenizer
    assert UNK_ID in tokenizer.encode(SIMPLIFIED)  # unconverted, it would score <UNK>s
    result = runner.invoke(app, ["score", "-c", str(poem_run), "--json", SIMPLIFIED, TRADITIONAL])
    assert result.exit_code == 0, result.output
    simplified, traditional = json_lines(result.stdout)
    assert simplified["text"] == SIMPLIFIED and traditional["text"] == TRADITIONAL
    assert simplified["oov"] == traditional["oov"] == 0
    assert simplified["logprob"] == pytest.approx(traditional["logprob"], abs=1e-9)


def test_eval_reads_either_script(poem_run: Path, tmp_path: Path) -> None:
    results = []
    for name, text in (("simplified.txt", SIMPLIFIED), ("traditional.txt", TRADITIONAL)):
        path = tmp_path / name
        path.write_text(text + "\n", encoding="utf-8")
        for stream in ([], ["--stream"]):
            output = runner.invoke(app, ["eval", str(path), "-c", str(poem_run), "--json", *stream])
            results.append(json_lines(output.stdout)[0])
    assert [r["oov"] for r in results] == [0, 0, 0, 0]
    assert results[0]["perplexity"] == pytest.approx(results[2]["perplexity"])
    assert results[1]["perplexity"] == pytest.approx(results[3]["perplexity"])


def test_score_on_a_terminal_marks_unknown_tokens(poem_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ui, "stdout_is_terminal", lambda: True)
    result = runner.invoke(app, ["score", "-c", str(poem_run), "--per-token", "举头龘"])
    assert result.exit_code == 0, result.output
    assert "<UNK>=龘" in result.stdout and "舉:" in result.stdout


def test_tokenize_converts_and_says_so(poem_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    piped = runner.invoke(app, ["tokenize", "-c", str(poem_run), "春风举头"])
    assert piped.stdout.split() == ["春", "風", "舉", "頭"]
    (record,) = json_lines(runner.invoke(app, ["tokenize", "-c", str(poem_run), "--json", "春风举头"]).stdout)
    assert record["text"] == "春风举头" and record["converted"] == "春風舉頭" and record["oov"] == 0
    monkeypatch.setattr(ui, "stdout_is_terminal", lambda: True)
    shown = runner.invoke(app, ["tokenize", "-c", str(poem_run), "春风举头"]).stdout
    assert "converted to traditional: 春風舉頭" in shown and "<UNK>" not in shown


def test_the_checkpoint_records_its_script_and_old_ones_infer_it(poem_run: Path, tmp_path: Path,
                                                                 trained_run: Path) -> None:
    best = ckpt.resolve(poem_run)
    payload = torch.load(best, weights_only=True)
    assert payload["provenance"]["script"] == "traditional"
    del payload["provenance"]["script"]  # as lmcli wrote checkpoints before it was recorded
    old = tmp_path / "old.pt"
    ckpt.save(payload, old)
    assert ckpt.load(old).script == "traditional"
    info = json_lines(runner.invoke(app, ["info", "-c", str(old), "--json"]).stdout)[0]
    assert info["script"] == "traditional"
    assert ckpt.load(ckpt.resolve(trained_run)).script == "neither"  # English words


# ----------------------------------------------------------------------------- fine-tuning


def test_fine_tuning_reads_the_other_script_as_the_models(poem_run: Path, tmp_path: Path) -> None:
    """`train --init-from` a traditional-script model on simplified text: the corpus is
    converted into the model's script before encoding, so its characters are the model's
    own, not <UNK> (read as typed, most of them would be)."""
    from lmcli.recipes import make_request
    from lmcli.train import start_run

    corpus = tmp_path / "simplified.txt"
    corpus.write_text((SIMPLIFIED_TEXT + "\n") * 30, encoding="utf-8")
    tokenizer = ckpt.load(poem_run / ckpt.BEST).tokenizer
    as_typed = tokenizer.encode(SIMPLIFIED_TEXT.replace("\n", ""))
    assert as_typed.count(UNK_ID) >= 5  # 举 头 乡 尽 黄 ... are not in a traditional vocabulary
    request = make_request([str(corpus)], {"max_steps": 2, "device": "cpu", "amp": False},
                           out_dir=tmp_path / "ft", init_from=poem_run)
    start_run(request, root=tmp_path / "ck")
    record = ckpt.load(tmp_path / "ft" / ckpt.LAST).payload["provenance"]["init_from"]
    # What is left unknown is what the traditional poems never had (春, 眠, 鸟, ...), not
    # the simplified forms of their characters.
    converted = ScriptConverter(tokenizer, "traditional").to_model(SIMPLIFIED_TEXT.replace("\n", ""))
    unknown = tokenizer.encode(converted).count(UNK_ID)
    assert unknown < as_typed.count(UNK_ID)
    assert record["unk_share"] == pytest.approx(unknown / len(converted), abs=0.02)
