"""test_cli_plain.py: `fbt-audit PATH` alone runs without click (cli/start.py) as click's parse of it would run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fbt_audit.cli import main as climain
from fbt_audit.cli import run as clirun
from fbt_audit.cli import start

from .conftest import SAMPLE


def test_verbs_are_the_groups():
    assert set(start.VERBS) == set(climain.LAZY)


@pytest.mark.parametrize("arg", ["vmlinux", "some/dir", "./table", "x.ko.xz"])
def test_plain_settings_are_clicks(arg, monkeypatch, tmp_path):
    """AuditSettings.plain(ARG) equals what click's parse of `fbt-audit ARG` hands run_audit."""
    monkeypatch.chdir(tmp_path)  # no settings file here or above (tmp_path's parents hold none)
    import fbt_audit.cli.audit as cliaudit  # before the patch: it binds run_audit when imported

    got = []
    monkeypatch.setattr(cliaudit, "run_audit", got.append)
    assert climain.run([arg]) == 0
    assert got == [clirun.AuditSettings.plain(arg)]


@pytest.mark.parametrize(("args", "jobs"), [(["some/dir", "-j", "2"], 2), (["-j", "3", "x.ko.xz"], 3),
                                            (["t", "-j4"], 4), (["--jobs", "2", "v"], 2),
                                            (["v", "--jobs=1"], 1), (["v", "-j", "02"], 2)])
def test_plain_jobs_settings_are_clicks(args, jobs, monkeypatch, tmp_path):
    """`fbt-audit PATH -j N` in each spelling click takes: plain_args' settings equal click's parse of it."""
    monkeypatch.chdir(tmp_path)
    import fbt_audit.cli.audit as cliaudit

    got = []
    monkeypatch.setattr(cliaudit, "run_audit", got.append)
    assert climain.run(args) == 0
    plain = start.plain_args(args)
    assert plain is not None and plain[1] == jobs
    assert got == [clirun.AuditSettings.plain(*plain)] and got[0].jobs == jobs


@pytest.mark.parametrize("args", [[], ["-j", "2"], ["v", "-j"], ["v", "-j", "0"], ["v", "-j0"], ["v", "-j", "x"],
                                  ["v", "-j", "-2"], ["v", "--jobs="], ["v", "-j", "2", "-j", "3"], ["v", "w", "-j2"],
                                  ["v", "-j", "2", "--format", "list"], ["table", "-j", "2"], ["v", "-j", "\u0662"]])
def test_other_command_lines_go_through_click(args):
    assert start.plain_args(args) is None


def test_plain_paths_only():
    assert start.plain_path("vmlinux") and start.plain_path("/boot/vmlinuz-6.1")
    for arg in ("", "-h", "--help", "--version", "-j", "table", "rules", "verify", "audit"):
        assert not start.plain_path(arg)


def test_settings_file_goes_through_click(monkeypatch, tmp_path):
    (tmp_path / "fbt-audit.toml").write_text('format = "list"\n')
    monkeypatch.chdir(tmp_path)
    assert clirun.AuditSettings.plain("vmlinux") is None


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fbt_audit", *args], cwd=cwd, capture_output=True, text=True)


def test_plain_run_is_clicks_run(tmp_path, fixtures_built):
    """The same stdout, stderr and exit code as through click (a second argument, `--fail-on error`, its default,
    sends the run through click), for the sample image, a built module, a missing path and a directory without
    modules; and the plain run imports no click."""
    images = [SAMPLE, *sorted(fixtures_built.rglob("*.ko"))[:1]]
    for arg in [*map(str, images), str(tmp_path / "missing"), str(tmp_path)]:
        plain, clicked = _cli([arg], tmp_path), _cli([arg, "--fail-on", "error"], tmp_path)
        assert (plain.returncode, plain.stdout, plain.stderr) == (clicked.returncode, clicked.stdout, clicked.stderr)
    code = "import sys; from fbt_audit.cli import start; start.run_plain(sys.argv[1]); print('click' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code, str(SAMPLE)], capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.endswith("False\n")
