"""registry.py: the ordered list of every rule id, its lifecycle status and its class; rule selection."""

from __future__ import annotations

import enum
import re

from fbt_audit.judge.rule import Rule
from fbt_audit.model.errors import UsageError
from fbt_audit.rules.fbt101_if_modifier_stepped import IfModifierStepped
from fbt_audit.rules.fbt102_pushed_flags_leak import PushedFlagsLeak
from fbt_audit.rules.fbt103_live_if_not_restored import LiveIfNotRestored
from fbt_audit.rules.fbt104_pc_relative_unfixed import PcRelativeUnfixed
from fbt_audit.rules.fbt105_trap_instruction import TrapInstruction
from fbt_audit.rules.fbt106_trap_shadow import TrapShadow
from fbt_audit.rules.fbt107_privileged_instruction import PrivilegedInstruction
from fbt_audit.rules.fbt108_far_transfer import FarTransfer
from fbt_audit.rules.fbt109_rep_string_stepped import RepStringStepped
from fbt_audit.rules.fbt110_not_in_table import NotInTable
from fbt_audit.rules.fbt111_undecodable import Undecodable
from fbt_audit.rules.fbt112_exception_table_site import ExceptionTableSite
from fbt_audit.rules.fbt113_control_transfer_unfixed import ControlTransferUnfixed
from fbt_audit.rules.fbt114_table_refusal import TableRefusal
from fbt_audit.rules.fbt115_branch_into_window import BranchIntoWindow
from fbt_audit.rules.fbt201_runtime_patched_site import RuntimePatchedSite
from fbt_audit.rules.fbt202_ftrace_site import FtraceSite
from fbt_audit.rules.fbt203_ibt_landing_pad import IbtLandingPad
from fbt_audit.rules.fbt204_deny_region import DenyRegion
from fbt_audit.rules.fbt205_init_text import InitText
from fbt_audit.rules.fbt206_not_a_function_entry import NotAFunctionEntry
from fbt_audit.rules.fbt207_handler_recursion import HandlerRecursion


class Status(enum.Enum):
    """A rule's lifecycle, as in ruff's RuleGroup. Only STABLE and PREVIEW rules run by default."""

    STABLE = "stable"
    PREVIEW = "preview"  # runs by default; its message or conditions may still change
    DEPRECATED = "deprecated"  # runs only when selected by its full id
    REMOVED = "removed"  # kept so the id is never reused; selecting it is an error


# Id ranges. Never reuse an id: a retired rule stays here as REMOVED, or as a comment.
#   FBT1xx  the instruction at the patchpoint against the emulation table: how the trap
#           handler would take the displaced instruction (judged per run-time variant;
#           none fires on a variant the table sends through ftrace).
#   FBT2xx  site facts from the kernel: deny regions, run-time writers, lifetimes,
#           symbol shapes; independent of the instruction's handling.
#   FBT3xx  reserved for deep analysis (issue "Deep analysis"): hazard paths. Branches into the patch window
#           are FBT115 and recursion by call graph is FBT207's --deep source, both from `--deep` site facts.
REGISTRY: dict[str, tuple[Status, type[Rule]]] = {
    "FBT101": (Status.STABLE, IfModifierStepped),
    "FBT102": (Status.STABLE, PushedFlagsLeak),
    "FBT103": (Status.STABLE, LiveIfNotRestored),
    "FBT104": (Status.STABLE, PcRelativeUnfixed),
    "FBT105": (Status.STABLE, TrapInstruction),
    "FBT106": (Status.STABLE, TrapShadow),
    "FBT107": (Status.STABLE, PrivilegedInstruction),
    "FBT108": (Status.STABLE, FarTransfer),
    "FBT109": (Status.STABLE, RepStringStepped),
    "FBT110": (Status.STABLE, NotInTable),
    "FBT111": (Status.STABLE, Undecodable),
    "FBT112": (Status.STABLE, ExceptionTableSite),
    "FBT113": (Status.STABLE, ControlTransferUnfixed),
    "FBT114": (Status.STABLE, TableRefusal),
    "FBT115": (Status.PREVIEW, BranchIntoWindow),  # --deep, tables with a patch window (patch_len > 1)
    "FBT201": (Status.STABLE, RuntimePatchedSite),
    "FBT202": (Status.STABLE, FtraceSite),
    "FBT203": (Status.STABLE, IbtLandingPad),
    "FBT204": (Status.STABLE, DenyRegion),
    "FBT205": (Status.STABLE, InitText),
    "FBT206": (Status.STABLE, NotAFunctionEntry),
    "FBT207": (Status.STABLE, HandlerRecursion),
    # "FBT301"+: reserved: deep (angr) analysis
}

_ID = re.compile(r"FBT\d{3}")
_SELECTOR = re.compile(r"FBT\d{0,3}|ALL")
_DEFAULT = (Status.STABLE, Status.PREVIEW)

# One instance per rule: rules are stateless, so every caller shares these.
_INSTANCES: dict[str, Rule] = {rid: cls() for rid, (status, cls) in sorted(REGISTRY.items())}


def all_rules() -> list[Rule]:
    """Every rule that can run (not REMOVED), ordered by id."""
    return [r for rid, r in _INSTANCES.items() if REGISTRY[rid][0] is not Status.REMOVED]


def status(rule_id: str) -> Status:
    """The lifecycle status of a registered id."""
    return REGISTRY[_known(rule_id)][0]


def get(rule_id: str) -> Rule:
    """The rule with this id (case-insensitive); UsageError when no such rule is registered."""
    return _INSTANCES[_known(rule_id)]


def _known(rule_id: str) -> str:
    rid = rule_id.strip().upper()
    if rid not in REGISTRY:
        raise UsageError(f"unknown rule {rule_id!r}; `fbt-audit rules` lists them")
    return rid


def _matches(selector: str) -> list[str]:
    """The registered ids a selector names: a full id, a prefix ('FBT1', 'FBT10') or ALL."""
    sel = selector.strip().upper()
    if not _SELECTOR.fullmatch(sel):
        raise UsageError(f"bad rule selector {selector!r}: expected an id (FBT102), a prefix (FBT1) or ALL")
    if _ID.fullmatch(sel):
        st = status(sel)  # unknown full ids are an error, like ruff
        if st is Status.REMOVED:
            raise UsageError(f"rule {sel} has been removed")
        return [sel]
    # A prefix (or ALL) names the default-status rules in its range. A prefix that matches no
    # registered rule is allowed: the range may be reserved for rules not written yet.
    prefix = "" if sel == "ALL" else sel
    return [rid for rid, (st, _) in REGISTRY.items() if rid.startswith(prefix) and st in _DEFAULT]


def _specificity(selector: str) -> int:
    sel = selector.strip().upper()
    return 0 if sel == "ALL" else len(sel)


_SELECTED: dict[tuple, tuple[Rule, ...]] = {}  # select()'s answers: a module tree's audits ask the same once each
_SELECTED_FOR: list[dict | None] = [None]  # the registry they were resolved against


def select(select: list[str] | None = None, ignore: list[str] | None = None) -> list[Rule]:
    """_select(), resolved once per (select, ignore) in a process while the registry stays (a new list each call)."""
    if _SELECTED_FOR[0] != REGISTRY:  # the registry changed (a test's statuses): what was resolved is stale
        _SELECTED.clear()
        _SELECTED_FOR[0] = dict(REGISTRY)
    key = (None if select is None else tuple(select), tuple(ignore or ()))
    got = _SELECTED.get(key)
    if got is None:
        got = _SELECTED[key] = tuple(_select(select, ignore))
    return list(got)


def _select(select: list[str] | None = None, ignore: list[str] | None = None) -> list[Rule]:
    """The rules to run, ordered by id, resolved the way ruff resolves --select/--ignore.

    `select` None means every STABLE and PREVIEW rule. Selectors are full ids ('FBT102'),
    prefixes ('FBT1', 'FBT10') or 'ALL'. A more specific selector overrides a less specific
    one whichever list it is in (`--select FBT102 --ignore FBT1` keeps FBT102); at equal
    specificity, ignore wins. DEPRECATED rules run only when selected by their full id.
    """
    chosen: dict[str, bool] = {rid: True for rid in _matches("ALL")} if select is None else {}
    entries = [(s, True) for s in (select or ())] + [(s, False) for s in (ignore or ())]
    for sel, on in sorted(entries, key=lambda e: (_specificity(e[0]), not e[1])):
        for rid in _matches(sel):
            chosen[rid] = on
    return [r for rid, r in _INSTANCES.items() if chosen.get(rid)]
