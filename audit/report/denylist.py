"""denylist.py: `--format denylist`: one `module:function+0xsymoff` line per patchpoint that is not safe."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from fbt_audit import __version__
from fbt_audit.judge.order import ordered
from fbt_audit.model.core import Verdict
from fbt_audit.report.listing import identity_lines

if TYPE_CHECKING:
    from fbt_audit.judge.result import AuditResult

# The header is the probe-safety list's (docs/probe-safety-list.md), so `fbt-audit check-list` takes
# either file; the lines name probes the way kallsyms does, since the FBT module resolves them there.
FORMAT_LINE = "# format denylist: module:function+0xsymoff[@file[#N]], one per patchpoint that is not safe"


def header_lines(results: list[AuditResult]) -> list[str]:
    return [f"# fbt-audit {__version__}", FORMAT_LINE, *identity_lines(results)]


def entries(r: AuditResult, keep=None) -> list[str]:
    """The lines for one image, in address order. A name several symbols of the image share (static
    functions) gets `@file`, the STT_FILE (or DWARF) source file name; when even that repeats, `#N`
    follows, N counting those symbols in address order from 1. `keep(judgement)` picks the patchpoints
    listed (default: those not safe; `fbt-audit bisect` passes its enable and disable sets)."""
    js = sorted(r.judgements, key=lambda j: (j.pp.addr, j.pp.site, j.pp.name))
    per_name = Counter((m, n) for m, n, _ in {(j.pp.module, j.pp.name, j.pp.sym_addr) for j in js})  # symbols
    ambiguous = {name for (_, name), n in per_name.items() if n > 1}
    bad = [j for j in js if (keep(j) if keep is not None else j.verdict is not Verdict.SAFE)]
    listed = set(map(id, bad))
    files = r.unit_files({j.pp.name for j in bad if j.pp.name in ambiguous}) if ambiguous else {}

    def file_of(j) -> str:
        f = files.get((j.pp.name, j.pp.sym_addr)) or (j.pp.source[0] if j.pp.source else "")
        return f.rsplit("/", 1)[-1]

    # N numbers the symbols (not their entry and return sites) sharing a name and file, by address.
    ordinal: dict[tuple[str, str, int], int] = {}
    total: Counter = Counter()
    for j in js:
        if j.pp.name in ambiguous and (j.pp.module, j.pp.name, j.pp.sym_addr) not in ordinal:
            key = (j.pp.module, j.pp.name, file_of(j))
            total[key] += 1
            ordinal[(j.pp.module, j.pp.name, j.pp.sym_addr)] = total[key]
    out = []
    for j in js:
        pp = j.pp
        suffix = ""
        if pp.name in ambiguous:
            key = (pp.module, pp.name, file_of(j))
            n = ordinal[(pp.module, pp.name, pp.sym_addr)]
            suffix = "@" + key[2] + (f"#{n}" if total[key] > 1 else "")
        if id(j) in listed:
            out.append(f"{pp.module}:{pp.name}+0x{pp.symoff:x}{suffix}")
    return out


def render_denylist(results: list[AuditResult]) -> str:
    results = ordered(results)
    lines = header_lines(results)
    for r in results:
        lines.extend(entries(r))
    return "\n".join(lines) + "\n"
