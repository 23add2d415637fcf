"""deepfacts.py: the site facts `--deep` adds: branches into the patch window (FBT115), FBT207 from the call graph."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fbt_audit.model.core import Patchpoint
from fbt_audit.model.facts import HANDLER_PATH
from fbt_audit.model.kernel import Kernel
from fbt_audit.sites.callgraph import HandlerGraph, handler_graph, module_callees
from fbt_audit.sites.window import WindowStats, add_window_facts
from fbt_audit.table.emulation import EmulationTable


@dataclass
class DeepSiteStats:
    window: WindowStats | None
    graph: HandlerGraph | None


def add_deep_facts(kernel: Kernel, pps: list[Patchpoint], table: EmulationTable) -> DeepSiteStats:
    """With a patch window longer than the int3: window-target facts. For a vmlinux: FBT207's facts from the
    call graph replace those of audit/data/handler-path.txt (a module, or an image without exc_int3, keeps the list:
    the roots are not in it)."""
    window = add_window_facts(kernel, pps, table.patch_len) if table.patch_len > 1 else None
    graph = None
    if kernel.kind == "vmlinux":
        graph = handler_graph(kernel, handler_callees(table))
    if graph is not None and "exc_int3" not in graph.missing_roots:  # no trap entry (a test image): the list stays
        reached = graph.reached
        for pp in pps:
            old = pp.facts
            keep = [f for f in old if not f.startswith(HANDLER_PATH)]
            reason = reached.get(pp.sym_addr)
            cold = ".cold" in pp.name
            if reason is not None and not cold:
                keep.append(f"{HANDLER_PATH}{pp.name}={reason}")
            if len(keep) != len(old) or reason is not None and not cold:
                pp.facts = frozenset(keep)
    kernel.__dict__["deep_site_stats"] = DeepSiteStats(window, graph)
    return kernel.__dict__["deep_site_stats"]


def handler_callees(table: EmulationTable) -> tuple[str, ...] | None:
    """fbt.ko's handler callees: read from the table's file when it is a module (a built kmod/fbt.ko), else
    None (the shipped list, audit/data/fbt-handler-callees.txt)."""
    path = Path(table.source)
    if table.source.startswith("named:") or not path.name.endswith(".ko"):
        return None
    from fbt_audit.input.loader import load_input

    return module_callees(load_input(path))
