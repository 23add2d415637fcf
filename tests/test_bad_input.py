"""test_bad_input.py: every kind of bad input ends in one line on stderr and exit 2, never a traceback."""

from __future__ import annotations

import shutil
import struct
import subprocess

import pytest

from fbt_audit.cli.main import run

from .conftest import SAMPLE


def one_line_error(capsys, argv: list[str], expect: str) -> None:
    code = run(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("fbt-audit: error: "), lines[0]
    assert expect.lower() in lines[0].lower()
    assert "Traceback" not in err


def patched(tmp_path, name: str, offset: int, value: bytes):
    data = bytearray(SAMPLE.read_bytes())
    data[offset : offset + len(value)] = value
    p = tmp_path / name
    p.write_bytes(bytes(data))
    return str(p)


def test_missing_path(capsys, tmp_path):
    one_line_error(capsys, [str(tmp_path / "nope")], "No such file or directory")


def test_not_elf(capsys, tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello\n")
    one_line_error(capsys, [str(p)], "not an ELF file")


def test_empty_file(capsys, tmp_path):
    p = tmp_path / "empty"
    p.write_bytes(b"")
    one_line_error(capsys, [str(p)], "empty file")


def test_32bit_elf(capsys, tmp_path):
    one_line_error(capsys, [patched(tmp_path, "vmlinux32", 4, b"\x01")], "32-bit ELF")


def test_non_x86_elf(capsys, tmp_path):
    one_line_error(capsys, [patched(tmp_path, "vmlinux-arm64", 18, struct.pack("<H", 183))], "not x86-64")


@pytest.mark.parametrize("size", [10, 63, 200, 4096])
def test_truncated_elf(capsys, tmp_path, size):
    p = tmp_path / f"trunc{size}"
    p.write_bytes(SAMPLE.read_bytes()[:size])
    code = run([str(p)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("fbt-audit: error: ")


def test_elf_without_symbols(capsys, tmp_path):
    p = tmp_path / "stripped"
    shutil.copy(SAMPLE, p)
    subprocess.run(["objcopy", "--strip-all", str(p)], check=True)
    one_line_error(capsys, [str(p)], "stripped image (no .symtab) and no symbols found in it; give --system-map FILE")


def test_directory(capsys, tmp_path):
    one_line_error(capsys, [str(tmp_path)], "is a directory")


def test_unknown_table(capsys):
    one_line_error(capsys, [str(SAMPLE), "--table", "no-such-table"], "no such table")


def test_unknown_option_is_usage_error(capsys):
    one_line_error(capsys, [str(SAMPLE), "--no-such-option"], "no such option")


def test_no_path_is_usage_error(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("FBT_AUDIT_ROOT", str(tmp_path))  # a machine with no image of the running kernel
    one_line_error(capsys, [], "give a vmlinux, vmlinuz, .ko or module directory")
