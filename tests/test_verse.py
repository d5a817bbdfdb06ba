"""Verse forms: every sample has the form, by construction, with any model.

The models here are untrained (random weights, sharpened so their preferences are strong and
arbitrary): a constraint that only held for a model that already writes verse would pass
with a trained model and prove nothing.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest
import torch

from conftest import sharpen_outputs
from lmcli import rhyme
from lmcli.errors import SettingError
from lmcli.model import ModelConfig, RNNLM
from lmcli.sampling import SamplingConfig, filter_logits, generate
from lmcli.tokenizers import EOS_ID, UNK_ID, CharTokenizer, WordTokenizer
from lmcli.tunes import find_tune
from lmcli.forms import corpus_shapes, usual_shapes
from lmcli.verse import VerseConstraint, build_plan, verse_lines

TANG = Path(__file__).resolve().parent.parent / "corpora" / "tang_poems.txt"


def _ideographs(text: str) -> bool:
    return bool(text) and all(unicodedata.name(c, "").startswith("CJK ") and "IDEOGRAPH" in unicodedata.name(c)
                              for c in text)


def _model(vocab_size: int, seed: int = 0) -> RNNLM:
    torch.manual_seed(seed)
    model = RNNLM(ModelConfig(vocab_size=vocab_size, cell="gru", layers=1, embed_dim=16, hidden_dim=32,
                              dropout=0.0))
    sharpen_outputs(model, 4.0)
    return model.eval()


@pytest.fixture(scope="module")
def tang() -> tuple[CharTokenizer, RNNLM, list[str]]:
    lines = TANG.read_text(encoding="utf-8").splitlines()[:3000]
    chars = sorted(set("".join(lines)))
    tokenizer = CharTokenizer(["<EOS>", "<UNK>"] + chars, lowercase=False)
    return tokenizer, _model(tokenizer.vocab_size), lines


def _poems(tang, n: int = 200, seed: int = 0, **options: object) -> list:
    tokenizer, model, _ = tang
    plan = build_plan(tokenizer, **options)
    return generate(model, tokenizer, num_samples=n, plan=plan, seed=seed)


def _lines(sample) -> list[tuple[str, str]]:
    """(ideographs, mark) per verse line; fails on anything else in the text."""
    pairs = re.findall("([^，。]*)([，。])", sample.text)
    assert "".join(a + b for a, b in pairs) == sample.text
    for body, _ in pairs:
        assert _ideographs(body), sample.text
    return pairs


@pytest.mark.parametrize("form, lengths", [("5x4", [5] * 4), ("7x4", [7] * 4), ("5x8", [5] * 8),
                                           ("7x8", [7] * 8), ("4,4,7,5,7", [4, 4, 7, 5, 7])])
def test_every_sample_has_the_form(tang, form: str, lengths: list[int]) -> None:
    for sample in _poems(tang, form=form):
        pairs = _lines(sample)
        assert [len(body) for body, _ in pairs] == lengths
        marks = [mark for _, mark in pairs]
        assert marks == ["，" if i % 2 == 0 and i < len(lengths) - 1 else "。" for i in range(len(lengths))]
        assert sample.token_ids[-1] == EOS_ID and sample.token_ids.count(EOS_ID) == 1
        assert sample.lines == [a + b for a, b in pairs]


def test_unconstrained_samples_break_the_form(tang) -> None:
    """The premise of the test above: without the mask this model does not write 5x4."""
    tokenizer, model, _ = tang
    samples = generate(model, tokenizer, num_samples=50, seed=0, config=SamplingConfig(max_tokens=40))
    assert sum(bool(re.fullmatch("([^，。]{5}[，。]){4}", s.text)) for s in samples) < 5


def test_acrostic_heads_every_line(tang) -> None:
    for sample in _poems(tang, n=100, form="7x4", acrostic="春風化雨"):
        assert [body[0] for body, _ in _lines(sample)] == list("春風化雨")


def test_acrostic_without_form_takes_one_usual_length(tang) -> None:
    shapes = [(5, 4), (7, 4), (5, 8), (7, 8)]
    lengths = set()
    for sample in _poems(tang, n=100, acrostic="明月別枝驚鵲", shapes=shapes):
        pairs = _lines(sample)
        assert [body[0] for body, _ in pairs] == list("明月別枝驚鵲")
        assert len({len(body) for body, _ in pairs}) == 1
        lengths.add(len(pairs[0][0]))
    assert lengths <= {5, 7}


def test_free_shape_is_one_of_the_usual_shapes(tang) -> None:
    seen = set()
    book = rhyme.pingshui()
    for sample in _poems(tang, n=100, rhyme="auto", shapes=[(5, 4), (7, 8)]):
        pairs = _lines(sample)
        seen.add((len(pairs[0][0]), len(pairs)))
        assert len({len(body) for body, _ in pairs}) == 1
        rhymed = [body[-1] for i, (body, _) in enumerate(pairs) if i % 2 == 1 or len(body) == 7 and i == 0]
        assert _share_group(book, rhymed, level_only=True), sample.text
    assert seen and seen <= {(5, 4), (7, 8)}  # never 7x4 or 5x8, though both lengths and counts are usual


def _share_group(book: rhyme.RhymeBook, chars: list[str], level_only: bool = False) -> bool:
    common = set(range(len(book.groups)))
    for char in chars:
        common &= {g for g in book.groups_of(char) if book.level[g] or not level_only}
    return bool(common)


@pytest.mark.parametrize("form", ["5x4", "7x4", "7x8"])
def test_rhyme_lines_share_a_level_pingshui_group(tang, form: str) -> None:
    book = rhyme.pingshui()
    for sample in _poems(tang, form=form, rhyme="auto"):
        ends = [body[-1] for body, _ in _lines(sample)]
        rhymed = [c for i, c in enumerate(ends) if i % 2 == 1 or (i == 0 and form.startswith("7"))]
        assert _share_group(book, rhymed, level_only=True), sample.text
        assert len(set(rhymed)) == len(rhymed), sample.text  # no rhyme word twice


def test_pinyin_rhymes_and_schemes(tang) -> None:
    book = rhyme.pinyin_book()
    for sample in _poems(tang, n=100, form="5x4", rhyme="pinyin:AABB"):
        ends = [body[-1] for body, _ in _lines(sample)]
        assert _share_group(book, ends[:2]) and _share_group(book, ends[2:]), sample.text


def test_unknown_acrostic_character_is_an_error_naming_it(tang) -> None:
    tokenizer, _, _ = tang
    missing = next(chr(c) for c in range(0x4E00, 0x9FFF) if chr(c) not in tokenizer.tokens)
    with pytest.raises(SettingError, match=missing):
        build_plan(tokenizer, form="5x4", acrostic="春" + missing + "化雨")


def test_form_errors_are_clear(tang) -> None:
    tokenizer, _, _ = tang
    with pytest.raises(SettingError, match="neither a shape"):
        build_plan(tokenizer, form="sonnet-ish")
    with pytest.raises(SettingError, match="4 heads for a form of 8"):
        build_plan(tokenizer, form="5x8", acrostic="春風化雨")
    with pytest.raises(SettingError, match="AB has 2 letters"):
        build_plan(tokenizer, form="5x4", rhyme="AB")


def test_prime_is_the_poem_start_and_must_fit(tang) -> None:
    tokenizer, model, _ = tang
    plan = build_plan(tokenizer, form="5x4")
    for sample in generate(model, tokenizer, prime="白日依山", num_samples=20, plan=plan, seed=1):
        assert sample.text.startswith("白日依山") and len(_lines(sample)[0][0]) == 5
    with pytest.raises(SettingError, match="does not fit"):
        generate(model, tokenizer, prime="白日依山盡黃", plan=plan, seed=1)


def test_masking_keeps_the_models_ratios(tang) -> None:
    """Inside the allowed set, probabilities are the model's, renormalised: no other change."""
    tokenizer, model, _ = tang
    plan = build_plan(tokenizer, form="7x4", rhyme="auto")
    constraint = VerseConstraint(plan, 1)
    prefix = tokenizer.encode("春風桃李一枝紅，青山綠水白雲")
    assert constraint.feed(prefix) is None  # the next character must rhyme with 紅
    allowed = constraint.allowed()
    assert 10 < int(allowed.sum()) < tokenizer.vocab_size // 20
    assert not allowed[0, tokenizer.encode("紅")[0]]  # used once already
    with torch.no_grad():
        logits, _ = model(torch.tensor([[EOS_ID] + prefix]))
    logits = logits[:, -1]
    masked = torch.softmax(filter_logits(logits, SamplingConfig(), allowed), -1)[0].double()
    full = torch.softmax(logits.double(), -1)[0]
    keep = allowed[0].clone()
    keep[UNK_ID] = False
    expected = full * keep / (full * keep).sum()
    assert torch.allclose(masked, expected, atol=1e-6, rtol=1e-4)
    assert float(masked[~keep].sum()) == 0.0


def test_best_of_keeps_the_best_per_token(tang) -> None:
    tokenizer, model, _ = tang
    plan = build_plan(tokenizer, form="5x4")
    many = generate(model, tokenizer, num_samples=8, plan=plan, seed=3)
    best = generate(model, tokenizer, num_samples=1, plan=plan, seed=3, best_of=8)[0]
    assert best.per_token == pytest.approx(max(s.per_token for s in many))


def test_corpus_shapes_and_usual_shapes(tang) -> None:
    tokenizer, _, lines = tang
    ids = tokenizer.encode_lines(lines)
    profile = corpus_shapes(ids, tokenizer)
    counted = {shape: count for shape, count in profile}
    assert counted["5,5,5,5,5,5,5,5"] == sum(1 for line in lines if re.fullmatch("([^，。]{5}[，。]){8}", line))
    assert sorted(usual_shapes(profile)) == [(5, 4), (5, 8), (7, 4), (7, 8)]


# ----------------------------------------------------------------------------- word level

WORDS = ("the night is long and the light is gone , my love will sing of the day away ; "
         "we go home to the sea and see the tree below the moon in june , a tune too soon").split()


@pytest.fixture(scope="module")
def english() -> tuple[WordTokenizer, RNNLM]:
    tokenizer = WordTokenizer(["<EOS>", "<UNK>"] + sorted(set(WORDS)), lowercase=False)
    return tokenizer, _model(tokenizer.vocab_size, seed=2)


def test_word_level_line_lengths_and_rhyme_scheme(english) -> None:
    tokenizer, model = english
    book = rhyme.cmu_book()
    plan = build_plan(tokenizer, form="3,4,3,4", rhyme="ABAB")
    for sample in generate(model, tokenizer, num_samples=100, plan=plan, seed=0):
        lines = sample.text.split("\n")
        assert [len(line.split()) for line in lines] == [3, 4, 3, 4]
        ends = [line.split()[-1] for line in lines]
        assert _share_group(book, [ends[0], ends[2]]) and _share_group(book, [ends[1], ends[3]]), lines
        assert not _share_group(book, [ends[0], ends[1]]), lines  # B is another rhyme than A
        assert ends[0] != ends[2] and ends[1] != ends[3], lines  # a word does not rhyme with itself
        assert sample.lines == lines


def test_word_level_acrostic_with_free_lengths(english) -> None:
    tokenizer, model = english
    plan = build_plan(tokenizer, acrostic="we my the")
    for sample in generate(model, tokenizer, num_samples=50, plan=plan, seed=0):
        lines = sample.text.split("\n")
        assert [line.split()[0] for line in lines] == ["we", "my", "the"]


def test_verse_lines_split_after_marks() -> None:
    assert verse_lines("春風，化雨。", "cjk") == ["春風，", "化雨。"]
    assert verse_lines("a b\nc d", "lines") == ["a b", "c d"]


@pytest.mark.parametrize("tune", ["浣溪沙", "鹧鸪天", "水調歌頭", "满江红"])
def test_every_sample_fits_the_tune(tang, tune: str) -> None:
    """Tunes by either script's name; lines of unequal lengths; a mark the vocabulary lacks
    (满江红's 、) becomes ，."""
    pattern = find_tune(tune)
    assert pattern is not None
    lengths = [line.length for line in pattern.lines]
    marks = [line.mark.replace("、", "，") for line in pattern.lines]
    rhymed = [i for i, line in enumerate(pattern.lines) if line.rhyme]
    book = rhyme.pingshui()
    for sample in _poems(tang, form=tune, rhyme="auto"):
        pairs = _lines(sample)
        assert [len(body) for body, _ in pairs] == lengths
        assert [mark for _, mark in pairs] == marks
        assert _share_group(book, [pairs[i][0][-1] for i in rhymed]), sample.text
    assert len(set(lengths)) > 1 or tune == "浣溪沙"


def _tone(char: str, book: rhyme.RhymeBook) -> set[str]:
    return {"level" if book.level[g] else "oblique" for g in book.groups_of(char)}


@pytest.mark.parametrize("form, rhyme_option", [("5x8", None), ("7x4", "auto"), ("5x4", "auto")])
def test_tones_follow_the_regulated_pattern(tang, form: str, rhyme_option: str | None) -> None:
    """Written from the rules, apart from the code: 2nd/4th/6th characters alternate within
    a line, couplets oppose, couplets stick; rhyme lines end level, the others oblique."""
    book = rhyme.pingshui()
    length = int(form[0])
    rhymed = [i % 2 == 1 or (i == 0 and length == 7) for i in range(int(form[2]))]
    starts = set()
    for sample in _poems(tang, form=form, rhyme=rhyme_option, tones=True):
        bodies = [body for body, _ in _lines(sample)]
        first = _tone(bodies[0][1], book)
        assert len(first) == 1
        level = first == {"level"}
        starts.add(level)
        for i, body in enumerate(bodies):
            line_level = level if i % 4 in (0, 3) else not level
            wants = {1: line_level, 3: not line_level, 5: line_level}
            for pos, want_level in wants.items():
                if pos < length - 1:
                    assert ("level" if want_level else "oblique") in _tone(body[pos], book), (sample.text, i, pos)
            assert ("level" if rhymed[i] else "oblique") in _tone(body[-1], book), (sample.text, i)
    assert starts == {True, False}  # both 平起 and 仄起 occur: the model chooses


def test_tones_need_a_regulated_form(tang) -> None:
    tokenizer, _, _ = tang
    with pytest.raises(SettingError, match="regulated form"):
        build_plan(tokenizer, form="4,4,7,5,7", tones=True)


def test_many_samples_are_drawn_in_batches_of_bounded_size(tang, monkeypatch: pytest.MonkeyPatch) -> None:
    from lmcli import sampling
    tokenizer, model, _ = tang
    sizes = []
    real_draw = sampling._draw

    def counting_draw(model, start, rows, *args):
        sizes.append(rows)
        return real_draw(model, start, rows, *args)

    monkeypatch.setattr(sampling, "MAX_ROWS", 8)
    monkeypatch.setattr(sampling, "_draw", counting_draw)
    plan = build_plan(tokenizer, form="5x4")
    samples = generate(model, tokenizer, num_samples=10, best_of=3, plan=plan, seed=0)
    assert len(samples) == 10 and sizes == [6, 6, 6, 6, 6]
    with pytest.raises(SettingError, match="best_of"):
        generate(model, tokenizer, best_of=9, plan=plan)
