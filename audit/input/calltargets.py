"""calltargets.py: a module's relocated call targets (site -> symbol name) as sorted columns, names read when asked."""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Mapping


class CallTargets(Mapping):
    """The mapping elf.load used to build as a dict, one entry per PC32/PLT32 relocation in text naming a
    symbol: site address -> the symbol's name, a later relocation at the same site winning and a symbol
    without a name naming nothing. Kept as numpy columns: the sites (sorted, stably: file order within one
    site) and their symbol indices; a name is decoded on the first look-up of its symbol. A module has
    hundreds of such relocations and the audit asks for the few at its entries, all at once (names_at): a
    dict of all of them cost ~0.3 ms a module, Python lists of them ~0.05."""

    __slots__ = ("_sites", "_syms", "_names_of", "_cache", "_any")

    def __init__(self, sites, syms, names_of: Callable[[list[int]], list[str]], any_named: bool) -> None:
        self._sites, self._syms, self._names_of = sites, syms, names_of  # numpy arrays (sites uint64 or object)
        self._cache: dict[int, str] = {}
        self._any = any_named  # whether some symbol among syms has a name (the dict would be non-empty)

    def _name(self, si: int) -> str:
        got = self._cache.get(si)
        if got is None:
            got = self._cache[si] = self._names_of([si])[0]
        return got

    def _last(self, addr: int) -> int:
        """The index of the last site <= addr (-1: none)."""
        import numpy as np

        sites = self._sites
        if not len(sites) or addr < 0 or (sites.dtype != object and addr >= 1 << 64):
            return -1 if not len(sites) or addr < 0 else len(sites) - 1
        return int(np.searchsorted(sites, addr if sites.dtype == object else np.uint64(addr), side="right")) - 1

    def get(self, addr, default=None):
        try:
            addr = operator.index(addr)  # an int, or a numpy integer as a dict would take it
        except TypeError:
            return default
        sites, j = self._sites, self._last(addr)
        while j >= 0 and sites[j] == addr:  # the last relocation at addr whose symbol has a name
            name = self._name(int(self._syms[j]))
            if name:
                return name
            j -= 1
        return default

    def names_at(self, addrs) -> list[str | None]:
        """get() of each address of a numpy uint64 array, found at once (np.searchsorted)."""
        import numpy as np

        out: list[str | None] = [None] * len(addrs)
        sites = self._sites
        if not len(sites) or not len(addrs):
            return out
        j = np.searchsorted(sites, addrs, side="right") - 1
        hit = (j >= 0) & (sites[np.maximum(j, 0)] == addrs)
        syms = self._syms[j[hit]].tolist()
        cache = self._cache
        new = [si for si in dict.fromkeys(syms) if si not in cache]
        if new:  # the names not read yet, decoded together (a module's calls name a few dozen symbols)
            cache.update(zip(new, self._names_of(new), strict=True))
        for k, si, a in zip(np.flatnonzero(hit).tolist(), syms, addrs[hit].tolist(), strict=True):
            name = cache[si]  # the last relocation at the address (every one of syms is in the cache now)
            out[k] = name if name else self.get(a)
        return out

    def __getitem__(self, addr: int) -> str:
        got = self.get(addr)
        if got is None:
            raise KeyError(addr)
        return got

    def __contains__(self, addr) -> bool:
        return self.get(addr) is not None

    def __iter__(self) -> Iterator[int]:
        """The sites that name something, in address order."""
        last = None
        for a in self._sites.tolist():
            if a != last and self.get(a) is not None:
                yield a
            last = a

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __bool__(self) -> bool:
        return self._any

    def __eq__(self, other) -> bool:
        return dict(self.items()) == (dict(other.items()) if isinstance(other, Mapping) else other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"CallTargets({dict(self.items())!r})"
