"""sitestats.py: --statistics lines for the kernel tables: entries per table and layout, per image."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fbt_audit.judge.result import AuditResult


def table_lines(results: list[AuditResult]) -> list[str]:
    """`vmlinux: kernel tables: altinstructions 4667 (alt_instr/12), ...`, one line per image that
    has any, in the results' order; then any table no known layout fits."""
    from fbt_audit.sites.tables import read_tables

    out = []
    for r in results:
        t = read_tables(r.kernel)
        if t.counts:
            parts = [f"{k} {n}" + (f" ({t.layouts[k]})" if k in t.layouts else "") for k, n in t.counts.items()]
            out.append(f"{r.kernel.display}: kernel tables: " + ", ".join(parts))
        for p in t.problems:
            out.append(f"{r.kernel.display}: kernel table not read: {p}")
        st = r.kernel.return_stats
        if st is not None:
            found = st.return_sites - len(st.return_sites_missed)
            out.append(
                f"{r.kernel.display}: returns: {st.returns} ret, {st.thunk_jumps} jmp __x86_return_thunk; "
                f"{st.tail_calls} tail calls (not returns); {st.undecodable} undecodable bytes skipped; "
                f".return_sites found by the decode: {found} of {st.return_sites}"
            )
            for a in st.return_sites_missed[:10]:
                s = r.kernel.section_at(a)
                where = f"{s.name}+0x{a - s.addr:x}" if s is not None else f"0x{a:x}"
                out.append(f"{r.kernel.display}: .return_sites entry not found by the decode: {where}")
    return out
