"""listing.py: the probe-safety list: a header keyed to release, build ID and table, then one row per patchpoint."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from .. import __version__
from . import judgements, ordered, tables

if TYPE_CHECKING:
    from ..model import Judgement
    from ..result import AuditResult

# The brief fixes the first ten columns and their order; symoff, kind and live follow.
COLUMNS = (
    "index", "count", "patchpoint", "opcode", "inslen", "modrm", "name",
    "verdict", "rules", "bytes", "symoff", "kind", "live",
)  # fmt: skip


def header_lines(results: list[AuditResult]) -> list[str]:
    """`# fbt-audit <version>`, one `# release <r> build-id <id>` per image (with ` image <name>` when
    the list covers several images), one `# table <name> sha256 <hex>` per table, the column names."""
    lines = [f"# fbt-audit {__version__}"]
    many = len(results) > 1
    for r in results:
        k = r.kernel
        line = f"# release {k.release or '-'} build-id {k.build_id or '-'}"
        lines.append(line + (f" image {k.display}" if many else ""))
    for name, sha in tables(results):
        lines.append(f"# table {name} sha256 {sha}")
    lines.append("# " + "\t".join(COLUMNS))
    return lines


def row(index: int, r: AuditResult, j: Judgement, counts: Mapping[str, int] | None = None) -> str:
    pp, insn = j.pp, j.pp.insn
    where = f"{pp.addr:016x}" if r.kernel.kind == "vmlinux" else f"{pp.sec_off:x}"
    count = counts.get(pp.probe_name) if counts is not None else None
    live = ",".join(f"{v.label}={v.insn.raw.hex()}" for v in pp.variants[1:]) or "-"
    fields = (
        str(index),
        "-" if count is None else str(count),
        where,
        f"{insn.raw[0]:02x}" if insn.raw else "-",
        str(insn.length),
        str(insn.modrm_off),
        pp.probe_name,
        j.verdict.label,
        ",".join(j.rule_ids) or "-",
        insn.raw.hex() or "-",
        f"+0x{pp.symoff:x}",
        pp.kind,
        live,
    )
    return "\t".join(fields)


def render_list(results: list[AuditResult], counts: Mapping[str, int] | None = None) -> str:
    """The probe-safety list over every patchpoint of every image; `index` runs on across images.
    `counts` maps a probe name (`module:function:entry`) to its merged hit count; absent probes show `-`."""
    results = ordered(results)
    lines = header_lines(results)
    index = 0
    for r in results:
        for j in judgements(r):
            lines.append(row(index, r, j, counts))
            index += 1
    return "\n".join(lines) + "\n"
