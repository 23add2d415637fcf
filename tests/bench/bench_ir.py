#!/usr/bin/env python3
"""bench_ir.py: instructions (valgrind callgrind's Ir) per module of a tree's audit, as a worker runs it: a count the
machine's load does not move, for comparing two checkouts when wall and CPU times are too noisy.

Usage: python3 tests/bench/bench_ir.py [TREE] [--step N]
Runs, under `valgrind --tool=callgrind`, one process that audits every Nth module of TREE (default: the locked 6.1
image package's tree, scripts/fetch-kernel image-6.1; N = 8) as pipeline/batch.py's workers do (the text report's
digest), and one that audits a single module; prints the instructions of each and their difference per module (the
imports and the setup cancel out). Run it from each checkout's venv to compare them. Needs valgrind; takes ~1 min.
Named bench*.py so that pytest does not collect it.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The child: batch._prepare and _setup as run_batch's fork does, then _task over chunks of 16 (text digests).
CHILD = r"""
import os, sys
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
from pathlib import Path
from fbt_audit.pipeline import batch
from fbt_audit.table.emulation import load
mods = batch.module_files(Path(sys.argv[1]))[0][:: int(sys.argv[2])][: int(sys.argv[3])]
opts = {"table": load(None), "select": None, "ignore": None, "returns": False, "symbols": None, "sources": False,
        "platform": "all", "deep": None, "text": ("error", False)}
batch._prepare(opts)
batch._setup(*opts.values())
items = list(enumerate(mods))
for k in range(0, len(items), 16):
    batch._task(items[k : k + 16])
"""


def instructions(tree: str, step: int, most: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.out", sys.executable, "-c", CHILD, tree,
             str(step), str(most)],
            capture_output=True, text=True, cwd=tmp, check=True,
        )  # fmt: skip
    m = re.search(r"Collected : (\d+)", out.stderr)
    if m is None:
        raise SystemExit(f"bench_ir: no instruction count from valgrind:\n{out.stderr[-2000:]}")
    return int(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tree", nargs="?", help="a module tree, e.g. .../lib/modules/RELEASE")
    ap.add_argument("--step", type=int, default=8, help="audit every Nth module (default 8)")
    a = ap.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("bench_ir: valgrind not found")
    tree = a.tree
    if tree is None:
        image = subprocess.run([str(ROOT / "scripts" / "fetch-kernel"), "image-6.1"], capture_output=True, text=True,
                               check=True).stdout.strip().splitlines()[-1]  # fmt: skip
        tree = str(next((Path(image) / "lib" / "modules").iterdir()))
    from fbt_audit.pipeline.batch import module_files

    n = len(module_files(Path(tree))[0][:: a.step])
    many, one = instructions(tree, a.step, n), instructions(tree, a.step, 1)
    print(f"{tree}: every {a.step}th module, {n} modules")
    print(f"instructions: {many:,} ({n} modules), {one:,} (1 module); per module: {(many - one) / (n - 1):,.0f}")


if __name__ == "__main__":
    main()
