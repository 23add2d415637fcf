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
        out += deep_lines(r)
    return out


def deep_lines(r: AuditResult) -> list[str]:
    """--deep's figures (sites/deepfacts.py): the sweep, the patch window, the call graph and its cut points."""
    d = getattr(r.kernel, "__dict__", {}).get("deep_site_stats")
    if d is None:
        return []
    name, out = r.kernel.display, []
    b = r.kernel.__dict__.get("deep_branches")
    if b is not None:
        out.append(f"{name}: deep: {b.instructions} instructions swept, {len(b.src)} direct branches")
    w = d.window
    if w is not None:
        out.append(f"{name}: deep: {w.window}-byte window: {w.short_first} patchpoints with a shorter first "
                   f"instruction, {w.targets} distinct targets, {w.hits} patchpoints with one inside")  # fmt: skip
    g = d.graph
    if g is not None:
        out.append(f"{name}: deep: call graph: {g.nodes} pieces, {g.edges} edges, {len(g.reached)} functions "
                   f"on the trap path; cut at {', '.join(sorted(g.cuts)) or 'nothing'}")  # fmt: skip
        out += [f"{name}: deep: modelled: {m}" for m in g.models]
    return out
