"""Reading text files: whole lines whatever the block size, compressed files, decoding
errors that say where, and one scan that fingerprints a corpus."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import pytest

from lmcli.errors import InputError, LmcliError, SettingError, UsageError
from lmcli.text import TextFiles, chunk_lines, iter_chunks, scan


def read_lines(path: Path, chunk_bytes: int) -> list[str]:
    return [line for chunk in iter_chunks(path, chunk_bytes=chunk_bytes) for line in chunk_lines(chunk)]


def as_flag(setting: str) -> str:
    return "--" + setting.replace("_", "-")


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 7, 64, 1 << 20])
def test_chunks_are_whole_lines_whatever_the_block_size(tmp_path: Path, chunk_bytes: int) -> None:
    lines = ["床前明月光", "", "héllo wörld 💜", "last line without newline"]
    path = tmp_path / "t.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    assert read_lines(path, chunk_bytes) == lines


def test_bom_is_dropped_and_gzip_is_read(tmp_path: Path) -> None:
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbfline one\nline two\n")
    assert read_lines(path, 4) == ["line one", "line two"]
    packed = tmp_path / "t.txt.gz"
    with gzip.open(packed, "wt", encoding="utf-8") as handle:
        handle.write("a b\nc d\n")
    assert read_lines(packed, 3) == ["a b", "c d"]


@pytest.mark.parametrize("chunk_bytes", [1, 5, 1 << 20])
def test_invalid_utf8_names_file_byte_and_line(tmp_path: Path, chunk_bytes: int) -> None:
    path = tmp_path / "bad.txt"
    good = "first line\nsecond é line\n".encode()
    path.write_bytes(good + b"third \xff line\n")
    with pytest.raises(InputError) as info:
        read_lines(path, chunk_bytes)
    message = info.value.render(as_flag)
    offset = len(good) + len(b"third ")
    assert f"byte {offset}" in message and "(line 3)" in message and "bad.txt" in message
    assert "--encoding" in message and "--errors replace" in message
    assert info.value.exit_code == LmcliError.exit_code  # bad input, not a bad setting


def test_a_nul_byte_says_where_and_can_be_replaced(tmp_path: Path) -> None:
    path = tmp_path / "binary.txt"
    path.write_bytes(b"text\n" * 3 + b"a \x00 b\n")
    with pytest.raises(InputError) as info:
        read_lines(path, 4)
    message = info.value.render(as_flag)
    assert "NUL byte at byte 17 (line 4)" in message and "--errors replace" in message
    assert [line for c in iter_chunks(path, errors="replace") for line in chunk_lines(c)][-1] == "a \ufffd b"
    assert [line for c in iter_chunks(path, errors="ignore") for line in chunk_lines(c)][-1] == "a  b"


def test_a_file_name_in_an_error_is_not_read_as_a_setting(tmp_path: Path) -> None:
    path = tmp_path / "{encoding}.txt"
    path.write_bytes(b"\xff\n")
    with pytest.raises(InputError) as info:
        read_lines(path, 64)
    message = info.value.render(as_flag)
    assert message.startswith(f"{path}: not valid utf-8") and message.endswith("--errors replace")


def test_invalid_bytes_can_be_replaced_or_read_in_another_encoding(tmp_path: Path) -> None:
    path = tmp_path / "latin.txt"
    path.write_bytes("café\n".encode("latin-1"))
    assert [line for c in iter_chunks(path, errors="replace") for line in chunk_lines(c)] == ["caf\ufffd"]
    assert [line for c in iter_chunks(path, encoding="latin-1") for line in chunk_lines(c)] == ["café"]
    with pytest.raises(UsageError):
        list(iter_chunks(path, encoding="no-such-codec"))


def test_missing_file_and_directory_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(LmcliError, match="not found"):
        TextFiles.of([tmp_path / "nope.txt"])
    with pytest.raises(LmcliError, match="directory"):
        TextFiles.of([tmp_path])


def test_an_unknown_errors_setting_is_named_as_a_setting(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("a\n", encoding="utf-8")
    with pytest.raises(SettingError) as info:
        TextFiles.of([path], errors="loose")
    assert info.value.template.startswith("{errors} must be strict, replace or ignore")
    assert info.value.exit_code == UsageError.exit_code


def test_scan_fingerprints_the_raw_bytes_and_counts_lines(tmp_path: Path) -> None:
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_bytes(b"one\n\n  \t\ntwo\n")
    second.write_bytes(b"three")
    seen: list[int] = []
    result = scan(TextFiles.of([first, second]), seen.append)
    raw = first.read_bytes() + second.read_bytes()
    assert result.sha256 == hashlib.sha256(raw).hexdigest()
    assert (result.num_bytes, result.num_lines, result.num_sentences) == (len(raw), 5, 3)
    assert sum(seen) == len(raw)
