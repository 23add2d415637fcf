"""test_verify_errors.py: fbt-audit verify's bad input and missing parts end in one line and exit 2."""

from __future__ import annotations

from fbt_audit.cli.main import run


def one_line_error(capsys, *argv: str) -> str:
    code = run(["verify", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    return err[0]


def test_unknown_kernel(capsys):
    assert one_line_error(capsys, "no-such-release").startswith(
        "fbt-audit: error: verify: 'no-such-release' is neither a directory nor a locked release (")


def test_table_kmod_cannot_build(capsys):
    assert one_line_error(capsys, "6.1.0-56-amd64", "--table", "kprobes-6.1") == (
        "fbt-audit: error: verify --table kprobes-6.1: kmod/ compiles in only reference, legacy-2011")


def test_image_without_modules(capsys, tmp_path):
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot" / "vmlinuz-6.1.0-99-amd64").write_bytes(b"MZ")
    assert one_line_error(capsys, str(tmp_path)) == (
        f"fbt-audit: error: {tmp_path}: no lib/modules/6.1.0-99-amd64/kernel: a kernel package without modules")


def test_qemu_missing(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    err = one_line_error(capsys, "6.1.0-56-amd64")
    assert err.startswith("fbt-audit: error: verify: not installed: qemu-system-x86")


def test_bad_sample(capsys):
    assert one_line_error(capsys, "6.1.0-56-amd64", "--sample", "0") == (
        "fbt-audit: error: verify --sample: must be at least 1")
