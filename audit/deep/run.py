"""run.py: the --deep stage: pick the flagged patchpoints (and named functions), walk their flags paths, prove them."""

from __future__ import annotations

import bisect
from dataclasses import replace

from fbt_audit.decode.insn import decode
from fbt_audit.deep.model import FLAG_RULES, UNKNOWN, DeepOptions, FlagsEvidence, Step
from fbt_audit.deep.walker import Walk
from fbt_audit.judge.result import AuditResult
from fbt_audit.model.core import IC, Insn, Judgement
from fbt_audit.model.kernel import Kernel

_FLAGS = IC.PUSHES_FLAGS | IC.WRITES_IF | IC.IRET


def candidates(result: AuditResult, only: tuple[str, ...]) -> list[tuple[Judgement, str]]:
    """(judgement, variant) to analyse: with `only`, the entry patchpoints of those functions; else every
    patchpoint with a FBT101-103 finding, on the variant that finding names."""
    out = []
    for j in result.judgements:
        flagged = [f for f in j.findings if f.rule_id in FLAG_RULES]
        if only:
            if j.pp.name not in only and not set(j.pp.aliases) & set(only):
                continue
            pushers = [v.label for v in j.pp.variants if v.insn.classes & IC.PUSHES_FLAGS]
            variant = flagged[0].variant if flagged else (pushers[0] if pushers else "disk")
        elif flagged:
            variant = flagged[0].variant
        else:
            continue
        out.append((j, variant))
    return out


def analyse(result: AuditResult, options: DeepOptions) -> bool:
    """Attach FlagsEvidence to result.evidence (keyed by (address, site)). True when value tracking ran."""
    from fbt_audit.deep import values

    use_values = options.values and values.available()
    ver = values.version() if use_values else ""
    kernel = result.kernel
    picked = candidates(result, options.only)
    if not picked or not len(kernel.data):
        return use_values
    jumps = jump_labels(kernel)
    for j, variant in picked:
        ev = _evidence(kernel, j, variant, jumps, use_values, ver)
        result.evidence[(j.pp.addr, j.pp.site)] = ev
    _add_sources(kernel, list(result.evidence.values()))
    return use_values


def _evidence(kernel: Kernel, j: Judgement, variant: str, jumps: dict[int, int], use_values: bool, ver: str):
    pp = j.pp
    method = f"stack walk + value tracking (angr {ver})" if use_values else "stack walk"
    ev = FlagsEvidence(pp.name, pp.addr, variant, method)
    insn = next((v.insn for v in pp.variants if v.label == variant), pp.insn)
    if not insn.classes & IC.PUSHES_FLAGS:
        what = "writes IF directly" if not insn.classes & IC.STACK else "takes a flags word pushed before the entry"
        ev.note = f"{insn.text} {what}: no pushed flags word to follow inside the function"
        if not insn.classes & _FLAGS:
            ev.note = f"{insn.text} does not touch the flags word: nothing to follow"
        ev.method = "stack walk"
        return ev
    start, size = extent(kernel, pp.sym_addr, pp.name)
    code, why = function_bytes(kernel, start, size, pp.addr, variant)
    if code is None:
        ev.note = why
        return ev
    here = {a: t for a, t in jumps.items() if start <= a < start + size}
    walk = Walk(code, start, start + size, here, kernel.name_at)
    ev.paths = walk.run(pp.addr)
    for p in ev.paths:
        ends = p.consumer in ("copy", "returns", "leaves", "lost")
        p.why = f"{p.end.text}: {p.end.note}" if ends else values_hint(use_values)
    ev.note = walk.cut
    if use_values and ev.paths:
        from fbt_audit.deep import values

        insns = linear(code, start, kernel)
        traces = [p.trace for p in ev.paths]
        records, cut = values.track(code, start, start, pp.addr, insns, here, kernel.name_at, traces)
        values.judge_paths(ev.paths, records, pp.addr, cut, ver)
    return ev


def values_hint(use_values: bool) -> str:
    return "not yet tracked" if use_values else "stack walk only: value tracking did not run"


def extent(kernel: Kernel, addr: int, name: str) -> tuple[int, int]:
    """The function's [start, start + size) from its symbol (the sized one of that name at addr)."""
    cols = kernel.symbol_columns()
    lo = bisect.bisect_left(cols.addr, addr)
    hi = bisect.bisect_right(cols.addr, addr, lo)
    sizes = [cols.size[i] for i in range(lo, hi) if cols.name[i] == name] or [cols.size[i] for i in range(lo, hi)]
    return addr, max(sizes, default=1)


def function_bytes(kernel: Kernel, start: int, size: int, at: int, variant: str) -> tuple[bytes | None, str]:
    """The function's bytes as the variant has them: a boot-time alternative's replacement copied over its site
    (padded with NOPs) for `alt(...)`; the disk bytes otherwise."""
    code = kernel.read(start, size)
    if len(code) != size:
        return None, f"the function's bytes end at its section's end (0x{start + len(code):x})"
    if not variant.startswith("alt("):
        return code, ""
    from fbt_audit.sites.tables import read_tables

    for alt in read_tables(kernel).alts:
        feat = f"{'!' if alt.negated else ''}{alt.feature >> 5}*32+{alt.feature & 31}"
        if f"alt({feat})" != variant or not alt.instr <= at < alt.instr + alt.instrlen:
            continue
        repl = kernel.read(alt.repl, alt.repllen)
        rel = [i for i in linear(repl, alt.repl, None) if i.classes & (IC.REL_BRANCH | IC.REL_CALL)]
        if rel:
            return None, f"the {variant} replacement holds a relative branch ({rel[0].text}): not followed"
        new = repl + b"\x90" * (alt.instrlen - len(repl))
        off = alt.instr - start
        if off < 0 or off + len(new) > size:
            return None, f"the {variant} site runs past the function"
        return code[:off] + new + code[off + len(new) :], ""
    return None, f"no {variant} alternative found at 0x{at:x}"


def linear(code: bytes, start: int, kernel: Kernel | None) -> list[Insn]:
    """A linear decode of code (bytes that do not decode are skipped one at a time), call targets named."""
    out, at = [], 0
    while at < len(code):
        i = decode(code[at : at + 15], start + at)
        if i.classes & IC.INVALID:
            at += 1
            continue
        out.append(kernel.resolve_target(i) if kernel is not None else i)
        at += i.length
    return out


def jump_labels(kernel: Kernel) -> dict[int, int]:
    """Jump-label sites -> their jump targets, from __jump_table (struct jump_entry: s32 code, s32 target, key)."""
    from fbt_audit.sites.tables import JUMP_ENTRY, table_bytes

    got = table_bytes(kernel, "jump_table")
    if got is None or not got[0] or len(got[0]) % JUMP_ENTRY.size:
        return {}
    blob, base = got
    out = {}
    for n, (code, target, _key) in enumerate(JUMP_ENTRY.iter_unpack(blob)):
        at = base + n * JUMP_ENTRY.size
        out[at + code] = at + 4 + target
    return out


def _add_sources(kernel: Kernel, evidence: list[FlagsEvidence]) -> None:
    """Each step's source line, when the image's DWARF has a row at its address."""
    from fbt_audit.input.dwarf import has_dwarf, source_lines

    addrs = {s.addr for ev in evidence for p in ev.paths for s in p.steps}
    if not addrs or not has_dwarf(kernel):
        return
    lines = source_lines(kernel, addrs)
    for ev in evidence:
        for p in ev.paths:
            p.steps = tuple(
                replace(s, source=(lines[s.addr].file, lines[s.addr].line)) if s.addr in lines else s for s in p.steps
            )


__all__ = ["UNKNOWN", "DeepOptions", "Step", "analyse", "candidates"]
