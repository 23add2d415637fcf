"""order.py: the one order of results every report and the gate use: images, then judgements, then findings."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fbt_audit.judge.result import AuditResult
    from fbt_audit.model.core import Finding, Judgement


def ordered(results: Iterable[AuditResult]) -> list[AuditResult]:
    """Images in report order: vmlinux before modules, then by flavour, module and display name.
    The sort is stable, so images that tie keep the order the caller gave."""
    flavours: dict[str | None, str] = {}  # by release: a tree's 4,000 modules share one (Kernel.flavour parses it)

    def key(r: AuditResult) -> tuple:
        k = r.kernel
        flavour = flavours.get(k.release)
        if flavour is None:
            flavour = flavours[k.release] = k.flavour
        return (k.kind != "vmlinux", flavour, k.module, k.display, k.release or "")

    return sorted(results, key=key)


def judgements(result: AuditResult) -> list[Judgement]:
    """The result's judgements by (address, site, name): the api already sorts them; this makes sure."""
    return sorted(result.judgements, key=lambda j: (j.pp.addr, j.pp.site, j.pp.name))


def findings(j: Judgement) -> list[Finding]:
    """A judgement's findings worst first, then by rule, variant and message, so output is stable."""
    return sorted(j.findings, key=finding_order)


def finding_order(f: Finding) -> tuple:
    """findings()' sort key (one judgement has one finding per rule: its message never decides)."""
    return (-f.level, f.rule_id, f.variant, f.message)
