"""listing.py: the probe-safety list: a header keyed to release, build ID and table, then one row per patchpoint."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from fbt_audit import __version__
from fbt_audit.judge.order import ordered
from fbt_audit.judge.result import in_order
from fbt_audit.model.core import IC
from fbt_audit.report.common import tables

if TYPE_CHECKING:
    from fbt_audit.judge.result import AuditResult
    from fbt_audit.model.core import Judgement

# The brief fixes the first ten columns and their order; symoff, kind and live follow.
COLUMNS = (
    "index", "count", "patchpoint", "opcode", "inslen", "modrm", "name",
    "verdict", "rules", "bytes", "symoff", "kind", "live",
)  # fmt: skip


def header_lines(results: list[AuditResult]) -> list[str]:
    """`# fbt-audit <version>`, one `# release <r> build-id <id>` per image (with ` image <name>` when
    the list covers several images), one `# table <name> sha256 <hex>` per table, the column names."""
    return [f"# fbt-audit {__version__}", *identity_lines(results), "# " + "\t".join(COLUMNS)]


def identity_lines(results: list[AuditResult]) -> list[str]:
    """What the list is valid for, shared with the denylist: each image's release and build id, each table."""
    lines = []
    many = len(results) > 1
    for r in results:
        k = r.kernel
        line = f"# release {k.release or '-'} build-id {k.build_id or '-'}"
        lines.append(line + (f" image {k.display}" if many else ""))
        if getattr(k, "symbol_source", ".symtab") != ".symtab":  # a stripped image: say whose names these are
            lines.append(f"# symbols {k.symbol_source}")
    for name, sha in tables(results):
        lines.append(f"# table {name} sha256 {sha}")
    return lines


def row(index: int, r: AuditResult, j: Judgement, counts: Mapping[str, int] | None = None) -> str:
    pp, insn = j.pp, j.pp.insn
    where = f"{pp.addr:016x}" if r.kernel.kind == "vmlinux" else f"{pp.sec_off:x}"
    count = counts.get(pp.probe_name) if counts is not None else None
    live = live_text(getattr(r, "platform", "all"), tuple((v.label, v.insn.raw) for v in _forms(pp.variants)))
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


def _forms(variants):
    """The forms the live column shows: every variant but the disk form (a platform may have dropped it)."""
    return variants[1:] if variants and variants[0].label == "disk" else variants


def live_text(platform: str, pairs: tuple) -> str:
    """The live column: `label=hex` per form; under a named --platform, `platform=<name>` first."""
    text = ",".join(f"{label}={b.hex()}" for label, b in pairs)
    if platform != "all":
        return f"platform={platform}" + ("," + text if text else "")
    return text or "-"


def render_list(results: list[AuditResult], counts: Mapping[str, int] | None = None) -> str:
    """The probe-safety list over every patchpoint of every image; `index` runs on across images.
    `counts` maps a probe name (`module:function:entry`) to its merged hit count; absent probes show `-`."""
    results = ordered(results)
    lines = header_lines(results)
    index = 0
    # row() inlined, with the strings that repeat across rows made once: the verdict and rules of a
    # set of findings, and the columns that depend only on the instruction's shape (opcode, length,
    # ModRM offset) or on the site (offset, kind, live variants). This loop runs once per patchpoint.
    verdicts: dict[tuple, str] = {}
    shapes: dict[tuple, str] = {}
    tails: dict[tuple, str] = {}
    invalid = IC.INVALID
    for r in results:
        vmlinux = r.kernel.kind == "vmlinux"
        platform = getattr(r, "platform", "all")
        for j in in_order(r):
            pp = j.pp
            insn = pp.insn
            raw = insn.raw
            found = j.findings
            if found:
                key = tuple(found)
                vr = verdicts.get(key)
                if vr is None:
                    vr = verdicts[key] = f"{j.verdict.label}\t{','.join(j.rule_ids) or '-'}"
            else:
                vr = "safe\t-"
            key = (raw[:1], insn.classes & invalid, len(raw), insn.modrm_off)
            shape = shapes.get(key)
            if shape is None:
                op = f"{raw[0]:02x}" if raw else "-"
                shape = shapes[key] = f"{op}\t{0 if key[1] else len(raw)}\t{insn.modrm_off}"
            variants = pp.variants
            if len(variants) == 1 and variants[0].label == "disk":
                live = ()
            elif len(variants) == 2 and variants[0].label == "disk":  # the usual: one run-time form (ftrace-nop)
                live = (variants[1].label, variants[1].insn.raw)
            else:
                live = tuple((v.label, v.insn.raw) for v in _forms(variants))
            key = (pp.addr - pp.sym_addr, pp.kind, live, platform)
            tail = tails.get(key)
            if tail is None:
                pairs = (live,) if live and isinstance(live[0], str) else live
                tail = tails[key] = f"+0x{key[0]:x}\t{pp.kind}\t{live_text(platform, pairs)}"
            probe = f"{pp.module}:{pp.name}:{pp.site}"
            count = counts.get(probe) if counts is not None else None
            lines.append(
                f"{index}\t{'-' if count is None else count}\t"
                f"{f'{pp.addr:016x}' if vmlinux else f'{pp.sec_off:x}'}\t{shape}\t{probe}\t{vr}\t"
                f"{raw.hex() or '-'}\t{tail}"
            )
            index += 1
    return "\n".join(lines) + "\n"
