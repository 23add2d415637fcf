"""test_signal.py: the small things users expect: -o checked first, help that teaches, colour on a TTY only,
an action that works when copied, a LICENSE in the wheel."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import yaml
from helpers_tools import actionlint

from .conftest import ROOT, SAMPLE

FBT = [sys.executable, "-m", "fbt_audit"]


def cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*FBT, *map(str, args)], capture_output=True, text=True, **kw)


def test_unwritable_output_is_a_usage_error_before_the_audit(tmp_path):
    fastest = 9.0
    for _ in range(3):  # the best of three: a loaded machine slows any one start
        t = time.perf_counter()
        proc = cli(SAMPLE, "-o", tmp_path / "missing" / "x.sarif", "--format", "sarif")
        fastest = min(fastest, time.perf_counter() - t)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == f"fbt-audit: error: -o {tmp_path}/missing/x.sarif: the directory {tmp_path}/missing does " \
                          "not exist\n"  # fmt: skip
    assert fastest < 0.5
    assert cli(SAMPLE, "-o", "/proc/version").stderr == (
        "fbt-audit: error: -o /proc/version: on a proc file system, not a report file\n")  # fmt: skip
    assert cli(SAMPLE, "-o", tmp_path).returncode == 2
    ok = tmp_path / "out.txt"
    assert cli(SAMPLE, "-o", ok).returncode == 1 and ok.read_text().endswith("findings\n")


def test_top_level_help_shows_the_audit_options_and_the_verbs():
    out = cli("--help").stdout
    i, j = out.index("Audit options"), out.index("Commands:")
    assert i < j
    for opt in ("--table", "--format", "-o, --output", "--fail-on", "--show", "--baseline", "--select", "--returns"):
        assert opt in out[i:j], opt
    for verb in ("audit", "table", "rules", "explain", "check-list", "rank", "map", "bisect"):
        assert f"\n  {verb} " in out[j:], verb


def _on_a_tty(env: dict[str, str]) -> str:
    """fbt-audit's stdout as a terminal shows it (a pseudo-terminal)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([*FBT, str(SAMPLE), "--table", "legacy-2011"], stdout=slave, stderr=subprocess.DEVNULL,
                            env=env)  # fmt: skip
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 30)
        if not ready:
            break
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(30)
    os.close(master)
    return b"".join(chunks).decode()


def test_colour_on_a_tty_only_and_no_color_honoured():
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    assert "\033[1;31merror\033[0m" in _on_a_tty(env)
    assert "\033[" not in _on_a_tty({**env, "NO_COLOR": "1"})
    assert "\033[" not in cli(SAMPLE, "--table", "legacy-2011", env=env).stdout  # a pipe


ACTION = ROOT / "action.yml"
WORKFLOW = ROOT / "examples" / "github-actions" / "fbt-audit.yml"


def test_composite_action_is_complete():
    action = yaml.safe_load(ACTION.read_text())
    assert action["runs"]["using"] == "composite"
    inputs = action["inputs"]
    assert {"image", "kernel-package", "table", "format", "fail-on", "baseline", "show", "upload"} <= set(inputs)
    steps = action["runs"]["steps"]
    for step in steps:
        assert ("uses" in step) != ("run" in step) and ("shell" in step) == ("run" in step), step["name"]
    install = steps[0]["run"]
    assert 'pip" install -q "$GITHUB_ACTION_PATH"' in install  # from the action's own checkout, not PyPI
    upload = next(s for s in steps if s.get("uses", "").startswith("github/codeql-action/upload-sarif@"))
    assert upload["with"]["sarif_file"] == "${{ inputs.output }}" and "always()" in upload["if"]
    assert steps[-1]["run"] == 'exit "${CODE:-2}"'  # the gate comes after the upload


def test_action_and_example_pass_actionlint(tmp_path):
    """actionlint checks workflows: the example as it is, and the action's steps as a reusable workflow whose
    inputs are the action's (what the composite action's expressions and scripts see)."""
    action = yaml.safe_load(ACTION.read_text())
    as_workflow = {
        "name": "action.yml as a workflow",
        "on": {"workflow_call": {"inputs": {k: {"type": "string", "required": False, "default": v.get("default", "")}
                                            for k, v in action["inputs"].items()}}},  # fmt: skip
        "jobs": {"audit": {"runs-on": "ubuntu-latest", "steps": action["runs"]["steps"]}},
    }
    wrapped = tmp_path / "action-as-workflow.yml"
    wrapped.write_text(yaml.safe_dump(as_workflow, sort_keys=False))
    assert actionlint(WORKFLOW, wrapped) == []
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("uses: fbt-audit/fbt-audit@v0", "uses: fbt-audit/fbt-audit"))
    assert any("ref is missing" in line for line in actionlint(broken))


def test_example_workflow_uses_the_action():
    wf = yaml.safe_load(WORKFLOW.read_text())
    job = wf["jobs"]["vmlinux"]
    assert job["permissions"]["security-events"] == "write"
    fbt = next(s for s in job["steps"] if s.get("uses", "").split("@")[0] == "fbt-audit/fbt-audit")
    assert fbt["with"]["kernel-package"].startswith("linux-image-") and fbt["with"]["fail-on"] == "error"
    assert "scripts/" not in WORKFLOW.read_text()  # nothing that exists only in fbt-audit's own checkout


def test_license_is_gpl2_and_ships_in_the_wheel(tmp_path):
    text = (ROOT / "LICENSE").read_text()
    assert "GNU GENERAL PUBLIC LICENSE" in text and "Version 2, June 1991" in text
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("fbt_audit-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        lic = [n for n in names if n.endswith("/LICENSE") and ".dist-info/" in n]
        assert lic and z.read(lic[0]).decode() == text
        assert "fbt_audit/table/named/reference.fbt" in names and "fbt_audit/data/handler-path.txt" in names
    assert Path(wheel).stat().st_size > 0
