"""The command line through Typer's CliRunner: help, the main jobs end to end, JSON output,
and one clear line for every bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from lmcli import checkpoint as ckpt
from lmcli.cli import app

runner = CliRunner()
COMMANDS = ["train", "generate", "score", "eval", "tokenize", "info"]


def run(*args: str, input: str | None = None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_every_command(command: str) -> None:
    result = run(command, "--help")
    assert result.exit_code == 0
    assert "Usage" in result.stdout and command in result.stdout


def test_version_and_no_arguments() -> None:
    assert run("--version").stdout.startswith("lmcli ")
    result = run()
    assert "Usage" in result.output


def test_train_then_use_the_checkpoint_end_to_end(english_corpus: Path) -> None:
    """train -> checkpoint -> load -> eval / info / tokenize / score / generate."""
    out = Path("run")
    result = run("train", english_corpus, "--level", "word", "--min-freq", "1", "--model", "gru",
                 "--layers", "1", "--embed-dim", "16", "--hidden-dim", "24", "--seq-len", "12",
                 "--batch-size", "8", "--epochs", "4", "--optimizer", "adam", "--lr", "0.01",
                 "--device", "cpu", "-o", out, "--no-sample")
    assert result.exit_code == 0, result.output
    assert (out / ckpt.BEST).exists() and (out / ckpt.LAST).exists()
    assert (out / ckpt.METRICS).exists() and (out / "config.json").exists()
    assert (out / "novelty.npz").exists()  # what generate --novel checks samples against
    # The run is recorded, so later commands need no -c.
    assert ckpt.latest_run() == out.resolve()
    raw = torch.load(out / ckpt.BEST, weights_only=True)
    assert raw["model_config"]["cell"] == "gru"

    info = json_lines(run("info", "--json").stdout)[0]
    assert info["level"] == "word" and info["model"] == "gru" and info["layers"] == 1
    assert info["embed_dim"] == 16 and info["hidden_dim"] == 24
    assert info["parameters"] > 0 and info["step"] > 0 and info["vocab_size"] == raw["model_config"]["vocab_size"]
    assert run("info").exit_code == 0

    test_file = Path("test.txt")
    test_file.write_text("the cat sees the moon .\na dog likes a zebra .\n", encoding="utf-8")
    evaluation = json_lines(run("eval", test_file, "--json").stdout)[0]
    assert evaluation["num_tokens"] == 14 and evaluation["oov"] == 1
    assert evaluation["perplexity"] < info["vocab_size"]  # it learned something
    assert evaluation["bits_per_token"] == pytest.approx(math.log2(evaluation["perplexity"]))
    assert evaluation["cross_entropy"] == pytest.approx(math.log(evaluation["perplexity"]))
    scores = json_lines(run("score", "-c", out, "--json", "--file", test_file).stdout)
    assert len(scores) == 2
    total = sum(s["logprob"] for s in scores)
    assert evaluation["perplexity"] == pytest.approx(math.exp(-total / 14), rel=1e-6)
    piped = run("eval", test_file).stdout  # not a terminal: key<TAB>value lines
    assert piped.splitlines()[0].startswith("perplexity\t")

    tokens = json_lines(run("tokenize", "the zebra", "--json").stdout)[0]
    assert tokens["tokens"] == ["the", "<UNK>"] and tokens["oov"] == 1

    memorised = "the cat sees the moon ."
    scrambled = "moon the . sees cat the"
    a, b = (json_lines(run("score", s, "--json").stdout)[0]["logprob"] for s in (memorised, scrambled))
    assert a > b

    samples = json_lines(run("generate", "-n", "3", "--seed", "1", "--json").stdout)
    assert len(samples) == 3
    assert all("<UNK>" not in s["tokens"] and s["logprob"] < 0 for s in samples)


def test_score_output_formats(trained_run: Path) -> None:
    piped = run("score", "-c", trained_run, "the cat sees the moon .", "a dog .")
    assert piped.exit_code == 0
    rows = [line.split("\t") for line in piped.stdout.splitlines()]
    assert [r[2] for r in rows] == ["the cat sees the moon .", "a dog ."]
    assert float(rows[0][0]) < 0 and float(rows[0][1]) > 1
    from_stdin = run("score", "-c", trained_run, "-", input="the cat sees the moon .\na dog .\n")
    assert from_stdin.stdout == piped.stdout
    per_token = json_lines(run("score", "-c", trained_run, "--json", "--per-token", "a dog .").stdout)[0]
    assert [t["token"] for t in per_token["tokens"]] == ["a", "dog", ".", "<EOS>"]
    assert per_token["logprob"] == pytest.approx(sum(t["logprob"] for t in per_token["tokens"]))
    assert per_token["log10prob"] == pytest.approx(per_token["logprob"] / math.log(10))
    no_eos = json_lines(run("score", "-c", trained_run, "--json", "--no-eos", "a dog .").stdout)[0]
    assert no_eos["num_tokens"] == 3


def test_generate_lines_and_seed(trained_run: Path) -> None:
    first = run("generate", "-c", trained_run, "--lines", "4", "--seed", "5")
    again = run("generate", "-c", trained_run, "--lines", "4", "--seed", "5")
    assert first.exit_code == 0 and first.stdout == again.stdout
    assert len(first.stdout.rstrip("\n").split("\n")) == 4


# ----------------------------------------------------------------------------- bad input


def test_score_refuses_an_empty_file_but_scores_blank_lines(trained_run: Path, tmp_path: Path) -> None:
    """An empty file or stdin is most likely the wrong one: one line, exit 1. A blank
    line is a sentence (one result per input line keeps N-best lists aligned)."""
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    result = run("score", "-c", trained_run, "--file", empty)
    assert result.exit_code == 1 and "no sentences to score" in result.output and str(empty) in result.output
    assert "Traceback" not in result.output
    assert run("score", "-c", trained_run, "-", input="").exit_code == 1
    blank = run("score", "-c", trained_run, "-", input="\n")
    assert blank.exit_code == 0 and len(blank.stdout.splitlines()) == 1


def assert_one_line_error(result, *needles: str) -> None:
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[0].startswith("error:"), result.output
    text = " ".join(lines)
    for needle in needles:
        assert needle in text, text


def test_missing_empty_blank_and_directory_corpora(tmp_path: Path) -> None:
    assert_one_line_error(run("train", tmp_path / "nope.txt"), "not found")
    assert_one_line_error(run("train", tmp_path), "directory")
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    assert_one_line_error(run("train", empty), "empty")
    blank = tmp_path / "blank.txt"
    blank.write_text("\n \n\t\n", encoding="utf-8")
    assert_one_line_error(run("train", blank), "only blank lines")
    assert not Path("checkpoints").exists() or not any(Path("checkpoints").rglob("*.pt"))


def test_non_utf8_corpus_says_where(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("first line\nna\xefve caf\xe9\n".encode("latin-1"))
    assert_one_line_error(run("train", bad), "latin1.txt", "byte 13", "line 2", "--encoding")


def test_nul_bytes_say_where_and_errors_replace_reads_on(tmp_path: Path) -> None:
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"first line of text\n" * 50 + b"second \x00\x01\x02 line\n" + b"more text\n" * 50)
    assert_one_line_error(run("train", binary), "binary.txt", "byte 957", "line 51", "NUL", "--errors replace")
    assert not (Path("checkpoints").exists() and any(Path("checkpoints").iterdir()))
    result = run("train", binary, "--errors", "replace", "--min-freq", "1", "--max-steps", "1",
                 "--batch-size", "2", "--seq-len", "8", "--no-sample", "-o", "run")
    assert result.exit_code == 0, result.stderr
    from lmcli import checkpoint as ckpt
    tokens = ckpt.load(Path("run") / "best.pt").tokenizer.tokens
    assert "\ufffd" in tokens and "\x00" not in tokens


def test_corpus_shorter_than_one_batch(tmp_path: Path) -> None:
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("a b\n", encoding="utf-8")
    assert_one_line_error(run("train", tiny, "--level", "word", "--min-freq", "1"), "too few")


@pytest.mark.parametrize("args,needle", [
    (["--batch-size", "0"], "--batch-size"),
    (["--layers", "-2"], "layers"),
    (["--hidden-dim", "0"], "hidden-dim"),
    (["--dropout", "1.5"], "--dropout"),
    (["--lr", "-1"], "--lr"),
    (["--time-limit", "soon"], "duration"),
    (["--valid-fraction", "1"], "--valid-fraction"),
    (["--vocab-size", "1"], "--vocab-size"),
    (["--device", "tpu"], "--device"),
    (["--encoding", "klingon"], "encoding"),
])
def test_absurd_train_flags(english_corpus: Path, args: list[str], needle: str) -> None:
    assert_one_line_error(run("train", english_corpus, "--level", "word", *args), needle)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_asked_for_without_a_gpu(english_corpus: Path, trained_run: Path) -> None:
    assert_one_line_error(run("train", english_corpus, "--device", "cuda"), "no CUDA GPU")
    assert_one_line_error(run("eval", english_corpus, "-c", trained_run, "--device", "cuda:1"), "no CUDA GPU")


def test_bad_checkpoints(tmp_path: Path, english_corpus: Path, trained_run: Path) -> None:
    truncated = tmp_path / "cut.pt"
    data = (trained_run / ckpt.BEST).read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    assert_one_line_error(run("info", "-c", truncated), "truncated or corrupt")
    not_one = tmp_path / "notes.txt"
    not_one.write_text("hello", encoding="utf-8")
    assert_one_line_error(run("eval", english_corpus, "-c", not_one), "not an lmcli checkpoint")
    assert_one_line_error(run("info", "-c", tmp_path / "missing.pt"), "not found")
    assert_one_line_error(run("info"), "no training run recorded")
    assert_one_line_error(run("generate", "-c", tmp_path), "holds no checkpoint")


@pytest.mark.parametrize("args,needle", [
    (["--top-p", "0"], "--top-p"), (["--top-p", "1.5"], "--top-p"),
    (["--temperature", "0"], "--temperature"), (["--top-k", "-3"], "--top-k"),
    (["-n", "0"], "--num-samples"), (["--lines", "0"], "--lines"),
])
def test_absurd_generate_flags(trained_run: Path, args: list[str], needle: str) -> None:
    assert_one_line_error(run("generate", "-c", trained_run, *args), needle)


def test_existing_run_folder_is_kept(english_corpus: Path, trained_run: Path) -> None:
    before = (trained_run / ckpt.BEST).read_bytes()
    assert_one_line_error(run("train", english_corpus, "-o", trained_run), "already holds a training run")
    assert (trained_run / ckpt.BEST).read_bytes() == before


def test_resume_refuses_model_flags(trained_run: Path) -> None:
    assert_one_line_error(run("train", "--resume", "-o", trained_run, "--hidden-dim", "64"), "cannot change")
    assert_one_line_error(run("train", "--resume"), "nothing to resume")


def test_json_train_events(english_corpus: Path) -> None:
    result = run("train", english_corpus, "--level", "word", "--layers", "1", "--hidden-dim", "8",
                 "--embed-dim", "8", "--max-steps", "3", "--batch-size", "4", "--seq-len", "8",
                 "--device", "cpu", "-o", "run", "--json")
    assert result.exit_code == 0, result.output
    events = json_lines(result.stdout)
    kinds = [e["event"] for e in events]
    assert "started" in kinds and kinds[-1] == "finished"
    assert events[-1]["reason"] == "max_steps" and events[-1]["step"] == 3


def test_an_unforeseen_failure_is_one_line_not_a_traceback(trained_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lmcli.scoring

    def broken(*args, **kwargs):
        raise RuntimeError("could not create a primitive\nmore detail")

    monkeypatch.setattr(lmcli.scoring, "score_ids", broken)
    monkeypatch.delenv("LMCLI_DEBUG", raising=False)
    result = run("score", "-c", trained_run, "the cat sees the moon")
    assert_one_line_error(result, "unexpected RuntimeError: could not create a primitive", "LMCLI_DEBUG=1")
    assert result.exit_code == 1


def test_a_single_line_of_50_mb_trains(tmp_path: Path) -> None:
    """One 50 MB line among short ones: read, encoded and trained on without trouble (the
    held-out lines validate; the long line is training text)."""
    corpus = tmp_path / "long.txt"
    unit = "the moon rises over the sea 床前明月光 "
    with corpus.open("w", encoding="utf-8") as handle:
        handle.writelines(f"a short line number {i}\n" for i in range(60))
        handle.write(unit * (50_000_000 // len(unit.encode("utf-8"))) + "\n")
        handle.writelines(f"another short line {i}\n" for i in range(60))
    assert corpus.stat().st_size > 50_000_000
    result = run("train", corpus, "--level", "char", "--max-steps", "2", "--batch-size", "4",
                 "--seq-len", "16", "--hidden-dim", "16", "--embed-dim", "8", "--layers", "1",
                 "--no-sample", "--json", "-o", "run")
    assert result.exit_code == 0, result.stderr
    finished = json_lines(result.stdout)[-1]
    assert finished["event"] == "finished" and finished["step"] == 2
    assert math.isfinite(finished["best_valid_loss"])
