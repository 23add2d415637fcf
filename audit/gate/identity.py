"""identity.py: who a finding is across runs and rebuilds: fingerprint keys, ordinals, run ids, function names.

The gate (baseline, allowlist) and every renderer that names a finding (sarif, github) import this one module,
so an alert keeps its identity whichever of them computes it. Never an address or a DWARF line."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fbt_audit.judge.order import findings, judgements, ordered
from fbt_audit.model.core import Level
from fbt_audit.model.facts import NON_ENTRY

if TYPE_CHECKING:
    from fbt_audit.judge.result import AuditResult
    from fbt_audit.model.core import Finding, Judgement

FINGERPRINT_KEY = "fbtPatchpoint/v1"  # the versioned fingerprint scheme; hashed into primaryLocationLineHash
PATCHPOINT_KEY = FINGERPRINT_KEY  # partialFingerprints name of the readable key (SARIF 3.27.17: versioned)
TOOL = "fbt-audit"

# GCC/clang clone and outlining suffixes. .isra/.constprop/.part clones are callable copies of the
# same source function; .cold is the outlined unlikely part of it (not an entry, FBT206), so it
# keeps a marker: foo.isra.0.cold.12 -> foo.cold, foo.constprop.0 -> foo.
_CLONE = re.compile(r"\.(?:isra|constprop|part|llvm|lto_priv)\.\d+")
_COLD = re.compile(r"\.cold(?:\.\d+)?")

def normalise_function(name: str) -> str:
    """The source function a symbol stands for: clone suffixes stripped, `.cold` kept as a marker."""
    cold = bool(_COLD.search(name))
    base = _COLD.sub("", _CLONE.sub("", name))
    return base + ".cold" if cold else base


def pseudo_path(result: AuditResult) -> str:
    k = result.kernel
    return "kernel/vmlinux" if k.kind == "vmlinux" else f"modules/{k.module}.ko"



def run_id(kind: str, flavour: str) -> str:
    """automationDetails.id of a SARIF run: the same across ABI bumps, so alerts carry over and close."""
    return f"{TOOL}/{flavour}/{kind}/"


def runs_of(results: list[AuditResult]) -> list[tuple[str, str, list[AuditResult]]]:
    """(kind, flavour, images) per SARIF run: vmlinux runs first."""
    groups: dict[tuple[str, str], list[AuditResult]] = {}
    for r in ordered(results):
        kind = "vmlinux" if r.kernel.kind == "vmlinux" else "modules"
        groups.setdefault((kind, r.kernel.flavour), []).append(r)
    return [
        (kind, flavour, group)
        for (kind, flavour), group in sorted(groups.items(), key=lambda kv: (kv[0][0] != "vmlinux", kv[0]))
    ]


@dataclass(slots=True)
class Item:
    """One SARIF result before rendering: a (patchpoint, rule) and its stable identity."""

    result: AuditResult
    j: Judgement
    findings: list[Finding]  # one rule's findings at this patchpoint, worst first
    key: str  # the fbtPatchpoint/v1 key without the ordinal
    ordinal: int  # 1-based among items with the same key, in address order
    level: Level  # the worst of the findings' levels
    state: str | None = None  # baselineState, when a baseline is given
    suppressed: str | None = None  # the allowlist justification, when allowlisted

    @property
    def rule_id(self) -> str:
        return self.findings[0].rule_id

    @property
    def fingerprint(self) -> str:
        """partialFingerprints.primaryLocationLineHash: sha256 of the key, and the ordinal."""
        return f"{_hash(self.key)}:{self.ordinal}"

    @property
    def probe_key(self) -> str:
        """The versioned, readable fbtPatchpoint/v1 key: rule|module|function|site|file#ordinal."""
        return f"{self.key.split('|', 1)[1]}#{self.ordinal}"

    @property
    def message(self) -> str:
        pp, worst = self.j.pp, self.findings[0]
        message = worst.message or worst.rule_id
        if worst.variant != "disk":
            message += f" (variant {worst.variant})"
        return f"{pp.name}+0x{pp.symoff:x}: {message} [{self.j.verdict.label}]"


def disambiguators(result: AuditResult) -> dict[int, str]:
    """Patchpoint address -> the source file that tells apart functions sharing a normalised name
    in one image (static functions, clones): the STT_FILE name before the symbol in .symtab (the
    compilation unit's, for every LOCAL symbol; global names are unique). Names that occur once get
    none. Never the DWARF line's file: a fingerprint must not depend on whether the image has DWARF
    (a -dbg vmlinux and the stripped one must give the same alerts)."""
    counts: dict[str, int] = defaultdict(int)
    for name, _ in {(j.pp.name, j.pp.sym_addr) for j in result.judgements}:  # symbols, not sites (entry, returns)
        counts[normalise_function(name)] += 1
    ambiguous = {j.pp.name for j in result.judgements if counts[normalise_function(j.pp.name)] > 1 and j.findings}
    if not ambiguous:
        return {}
    files = result.unit_files(ambiguous)
    out = {}
    for j in result.judgements:
        pp = j.pp
        if pp.name in ambiguous:
            out[pp.addr] = files.get((pp.name, pp.sym_addr), "").rsplit("/", 1)[-1]
    return out


def items(results: list[AuditResult]) -> list[Item]:
    """Every (patchpoint, rule) of the results in report order, with its fingerprint key and ordinal."""
    out: list[Item] = []
    for r in ordered(results):
        files = disambiguators(r)
        seen: dict[str, int] = defaultdict(int)
        for j in judgements(r):
            if not j.findings:
                continue
            by_rule: dict[str, list[Finding]] = defaultdict(list)
            for f in findings(j):
                by_rule[f.rule_id].append(f)
            pp = j.pp
            for rid in sorted(by_rule):
                key = "|".join(
                    (FINGERPRINT_KEY, rid, pp.module, normalise_function(pp.name), pp.site, files.get(pp.addr, ""))
                )
                # Ordinals tell apart results whose key is the same (static functions sharing a name
                # and a file name, several clones of one function); they follow address order,
                # never the address itself.
                seen[key] += 1
                fs = by_rule[rid]
                out.append(Item(r, j, fs, key, seen[key], fs[0].level))  # findings() puts the worst first
    return out


def _hash(key: str) -> str:
    import hashlib  # here: only the reports that print fingerprints pay its import

    return hashlib.sha256(key.encode()).hexdigest()[:16]


_PADDING = (NON_ENTRY + "pfx", NON_ENTRY + "cfi")


def shown(it: Item, show: str) -> bool:
    """Code scanning stays useful: errors and warnings by default (--show warning), notes with --show note;
    findings on __pfx_/__cfi_ padding, which are not entries, only with --show all."""
    if show == "all":
        return True
    if it.level < Level[show.upper()]:
        return False
    return not any(f in it.j.pp.facts for f in _PADDING)
