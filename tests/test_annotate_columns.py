"""test_annotate_columns.py: sites/annotate.py's column passes answer as the per-row ones do: the name facts of every
row (_name_rows: __pfx_ rows told with the names, facts_of for the rest) equal facts_of's, over a module's walk of the
names and a vmlinux's name heads, with blacklisted and label addresses; _u64s equals numpy's own conversion."""

from __future__ import annotations

import random

import numpy as np
import pytest

from fbt_audit.model.kernel import SymbolColumns
from fbt_audit.sites import annotate as A
from fbt_audit.sites.handler_path import handler_path

HANDLER = sorted(handler_path())[0]
WORDS = ["foo", "bar", "__pfx_foo", "__pfx_bar.isra.0", "__pfx_x.cold", "__cfi_bar", "__SCT__x", "__x64_sys_read",
         "a.cold", "b.part.0", "c.isra.0.cold", "__", "_", "__pfx_", "__foo", f"__pfx_{HANDLER}", HANDLER,
         f"{HANDLER}.cold", f"{HANDLER}.part.0", "blk.cold", "__pfx_odd", "__pfx_odd.cold"]  # fmt: skip


class _Kernel:
    def __init__(self, cols: SymbolColumns) -> None:
        self.cols = cols

    def symbol_columns(self) -> SymbolColumns:
        return self.cols


class _Rows:
    """What _name_rows reads of EntryRows: one row per symbol."""

    def __init__(self, cols: SymbolColumns) -> None:
        self.kernel, self.n = _Kernel(cols), len(cols.name)
        self.first, self.first_idx = list(range(self.n)), None
        self.sym_addr = np.array(cols.addr, dtype=np.uint64)


def _case(seed: int) -> tuple[_Rows, A._NameFacts]:
    rng = random.Random(seed)
    names = [rng.choice(WORDS) + (str(rng.randrange(10)) if rng.random() < 0.3 else "") for _ in range(300)]
    addrs = list(range(0x1000, 0x1000 + 16 * len(names), 16))
    k = len(names)
    cols = SymbolColumns(addrs, names, [16] * k, ["FUNC"] * k, ["GLOBAL"] * k, [".text"] * k, [True] * k)
    facts = object.__new__(A._NameFacts)
    facts.black = set(rng.sample(addrs, 20)) if seed % 2 else set()
    facts.black_names = {"blk", "foo"} if seed % 2 else set()
    facts.containers = {a: "holder" for a in rng.sample(addrs, 15)} if seed % 3 else {}
    facts.handlers = {**handler_path(), "__pfx_odd": "a handler so named (none is: facts_of's steps allow it)"}
    return _Rows(cols), facts


@pytest.mark.parametrize("heads", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_name_rows_match_facts_of(seed, heads, monkeypatch):
    rows, facts = _case(seed)
    if heads:  # a vmlinux's path: the names' heads over arrays (a small image has none)
        monkeypatch.setattr(A._NameHeads, "MANY", 0)
    code, sets = A._name_rows(rows, facts)
    assert (A._NameHeads.of(rows.kernel) is not None) == heads
    for i, (name, addr) in enumerate(zip(rows.kernel.cols.name, rows.kernel.cols.addr, strict=True)):
        want: list[str] = []
        facts.facts_of(name, addr, want)
        assert sets[code[i]] == tuple(want), (name, hex(addr))


@pytest.mark.parametrize("n", [0, 3, 15, 16, 40])
@pytest.mark.parametrize("top", [False, True])
def test_u64s_match_numpy(n, top):
    rng = random.Random(n)
    for bad in (False, True):
        values = sorted(rng.randrange(0, 1 << 64) for _ in range(n))
        if bad and n:
            values[0], values[-1] = -5, (1 << 64) + 7  # a malformed table's: clipped to the ends
        want = [min(max(v, 0), (1 << 64) - 1) for v in values] + ([(1 << 64) - 1] if top else [])
        got = A._u64s(values, top=top)
        assert got.dtype == np.uint64 and got.tolist() == want
