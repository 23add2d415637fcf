"""test_handler_path.py: audit/data/handler-path.txt stays sorted and explained, and lists the roots' direct callees."""

from __future__ import annotations

from pathlib import Path

import pytest

from fbt_audit.decode.insn import decode
from fbt_audit.model.core import IC
from fbt_audit.pipeline import api
from fbt_audit.sites.handler_path import handler_path

DATA = Path(__file__).resolve().parent.parent / "audit" / "data" / "handler-path.txt"
ROOTS = ("exc_int3", "exc_debug", "exc_nmi", "notify_die", "kprobe_int3_handler", "do_int3")
# Direct callees that are not kernel functions on the path: stack-protector failure (fatal anyway)
# and the retpoline thunk block's start label (an indirect call, not a callee).
NOT_LISTED = {"__stack_chk_fail", "__indirect_thunk_start"}


def test_sorted_unique_and_every_entry_has_a_reason():
    body = [line for line in DATA.read_text().splitlines() if line and not line.startswith("#")]
    names = [line.split(" ", 1)[0] for line in body]
    assert names == sorted(names, key=str.encode), "handler-path.txt must stay sorted (bytewise)"
    assert len(set(names)) == len(names)
    assert all(len(line.split(" ", 1)) == 2 and line.split(" ", 1)[1].strip() for line in body)
    assert set(handler_path()) == set(names)


def direct_callees(kernel, name: str) -> set[str]:
    cols = kernel.symbol_columns()
    i = cols.name.index(name)
    a, end = cols.addr[i], cols.addr[i] + cols.size[i]
    out = set()
    while a < end:
        insn = decode(kernel.read(a, 15), a)
        if insn.classes & IC.INVALID:
            a += 1
            continue
        if insn.classes & IC.REL_CALL or (insn.opcode == b"\xe9" and not a <= insn.target < end):
            callee = kernel.name_at(insn.target)
            if callee and callee != name and not callee.startswith("__x86_") and callee != "__fentry__":
                out.add(callee)
        a += insn.length
    return out


@pytest.mark.kernel
def test_61_roots_direct_callees_are_listed(vmlinux61):
    k = api.load_kernel(vmlinux61)
    listed = set(handler_path())
    for root in ROOTS:
        assert root in listed
        missing = direct_callees(k, root) - listed - NOT_LISTED
        assert not missing, (root, sorted(missing))
