"""objdump.py: an independent oracle for the tests: instruction bytes at given addresses, per `objdump -d`."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

# With -w objdump prints every byte of an instruction on its line: "addr:\tb1 b2 ... \tmnemonic operands".
LINE = re.compile(r"^\s*([0-9a-f]+):\t((?:[0-9a-f]{2} )+)\s*\t?(.*)$")


def instructions_at(path: Path, wanted: set[int]) -> dict[int, tuple[bytes, str]]:
    """{address: (instruction bytes, objdump's text)} for each wanted address that starts an instruction."""
    out: dict[int, tuple[bytes, str]] = {}
    proc = subprocess.Popen(["objdump", "-d", "-w", str(path)], stdout=subprocess.PIPE, text=True, bufsize=1 << 20)
    assert proc.stdout is not None
    for line in proc.stdout:
        if not line.startswith(" ") and ":\t" in line[:20] or line[:1] == " ":
            m = LINE.match(line)
            if m:
                addr = int(m.group(1), 16)
                if addr in wanted:
                    out[addr] = (bytes.fromhex(m.group(2).replace(" ", "")), m.group(3).strip())
    proc.wait()
    assert proc.returncode == 0, "objdump failed"
    return out


SECTION = re.compile(r"^Disassembly of section (\S+):")


def module_instructions_at(path: Path, wanted: set[tuple[str, int]]) -> dict[tuple[str, int], tuple[bytes, str]]:
    """Like instructions_at, for an ET_REL module: keys are (section, offset in section)."""
    out: dict[tuple[str, int], tuple[bytes, str]] = {}
    sec = ""
    proc = subprocess.Popen(["objdump", "-d", "-w", str(path)], stdout=subprocess.PIPE, text=True, bufsize=1 << 20)
    assert proc.stdout is not None
    for line in proc.stdout:
        s = SECTION.match(line)
        if s:
            sec = s.group(1)
            continue
        m = LINE.match(line)
        if m and (sec, int(m.group(1), 16)) in wanted:
            out[(sec, int(m.group(1), 16))] = (bytes.fromhex(m.group(2).replace(" ", "")), m.group(3).strip())
    proc.wait()
    assert proc.returncode == 0, "objdump failed"
    return out
