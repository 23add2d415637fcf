#!/usr/bin/env python3
"""bench_entry.py: the entry-only row of tests/bench/bench.py (kept for the README's older command)."""

import subprocess
import sys
from pathlib import Path

if __name__ == "__main__":
    bench = Path(__file__).with_name("bench.py")
    sys.exit(subprocess.call([sys.executable, str(bench), "--cases", "entry", *sys.argv[1:]]))
