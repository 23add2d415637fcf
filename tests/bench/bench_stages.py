#!/usr/bin/env python3
"""bench_stages.py: CPU milliseconds per stage of `fbt-audit V` (imports, load, enumerate, annotate, judge, render).

Usage: python3 tests/bench/bench_stages.py [V] [--repeat N] [--returns]
Each round runs in a fresh interpreter (imports counted cold, as a user's run pays them); the table shows each
stage's minimum over N rounds of CPU time (time.process_time: less disturbed by a shared machine than wall time).
Without V: the locked 6.1 -dbg vmlinux (scripts/fetch-kernel dbg-6.1). Issue 16's note prints this table before and
after. Named bench*.py so that pytest does not collect it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("imports", "load", "enumerate", "annotate", "judge", "render")

# One round, in the child: pipeline/api.py's audit() as the command line runs it, each stage function wrapped with
# a CPU timer (they are imported inside audit(), so wrapping the module attributes reaches them), then the text render.
ROUND = r"""
import json, os, sys, time
t0 = time.process_time()
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import fbt_audit.cli.run  # noqa: F401  what `fbt-audit PATH` imports before it audits (cli/start.py: no click)
from fbt_audit.judge import rows as jrows
from fbt_audit.patchpoints import entry, returns as rmod
from fbt_audit.pipeline import api
from fbt_audit.report.formats import render
from fbt_audit.sites import annotate
T = {"imports": time.process_time() - t0}


def timed(stage, f):
    def run(*a, **k):
        t = time.process_time()
        try:
            return f(*a, **k)
        finally:
            T[stage] = T.get(stage, 0) + time.process_time() - t
    return run


api.load_kernel = timed("load", api.load_kernel)
entry.entry_rows = timed("enumerate", entry.entry_rows)
if hasattr(rmod, "return_rows"):
    rmod.return_rows = timed("enumerate", rmod.return_rows)
rmod.return_patchpoints = timed("enumerate", rmod.return_patchpoints)
annotate.add_site_facts = timed("annotate", annotate.add_site_facts)
for name in ("judge_rows", "judge_return_rows"):
    if hasattr(jrows, name):
        setattr(jrows, name, timed("judge", getattr(jrows, name)))
path, returns = sys.argv[1], sys.argv[2] == "1"
result = api.audit(path, returns=returns)
t = time.process_time()
render("text", [result])
T["render"] = time.process_time() - t
print(json.dumps(T))
"""


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    repeat = int(argv[argv.index("--repeat") + 1]) if "--repeat" in argv else 5
    if "--repeat" in argv:
        args.remove(str(repeat))
    returns = "--returns" in argv
    if args:
        path = args[0]
    else:
        out = subprocess.run([str(ROOT / "scripts" / "fetch-kernel"), "dbg-6.1"], check=True, capture_output=True,
                             text=True)  # fmt: skip
        path = out.stdout.split()[-1]
    best: dict[str, float] = {}
    for _ in range(repeat):
        got = subprocess.run([sys.executable, "-c", ROUND, path, "1" if returns else "0"], check=True,
                             capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})  # fmt: skip
        for name, sec in json.loads(got.stdout.splitlines()[-1]).items():
            best[name] = min(best.get(name, sec), sec)
    print(f"{Path(path).name}{' --returns' if returns else ''}: CPU ms per stage, minimum of {repeat} rounds; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(" | ".join(f"{s} {1000 * best.get(s, 0):.0f}" for s in STAGES) + f" | total {1000 * sum(best.values()):.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
