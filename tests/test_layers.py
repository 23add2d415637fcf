"""test_layers.py: the package reads as the pipeline: no import cycles, no import from a later stage into an earlier."""

from __future__ import annotations

import ast
from pathlib import Path

from .conftest import ROOT

# Stages in pipeline order (DESIGN.md, "Stages and rooms"). A module may import its own stage and earlier ones.
STAGES = ["model", "input", "decode", "table", "sites", "patchpoints", "judge", "deep", "gate", "report", "investigate",
          "pipeline", "verify", "cli"]  # fmt: skip
RULES_MAY_IMPORT = {"fbt_audit.model.core", "fbt_audit.model.abi", "fbt_audit.model.facts", "fbt_audit.judge.rule"}


def modules() -> dict[str, Path]:
    out = {}
    for base, prefix in ((ROOT / "audit", "fbt_audit"), (ROOT / "rules", "fbt_audit.rules")):
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join([prefix, *parts])] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every fbt_audit module NAME imports, at module level or inside a function (lazy imports count too)."""
    is_pkg = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found |= {f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in known}
    return {m for m in found if m in known}


def stage(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None  # fbt_audit itself (the version)
    if parts[1] == "rules":
        return STAGES.index("judge")
    return STAGES.index(parts[1]) if parts[1] in STAGES else None


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports(m, p, set(mods)) for m, p in mods.items()}


def test_every_module_lives_in_a_stage():
    loose = [m for m in modules() if stage(m) is None and m not in ("fbt_audit", "fbt_audit.__main__")]
    assert loose == []


def test_no_import_from_a_later_stage():
    back = sorted(f"{m} -> {d}" for m, deps in graph().items() for d in deps
                  if stage(m) is not None and stage(d) is not None and stage(d) > stage(m))  # fmt: skip
    assert back == []


def test_no_import_cycles():
    g = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(g[m]):
            if d == m or state.get(d) == 2:
                continue
            if state.get(d) == 1:
                cycles.append(" -> ".join(path[path.index(d):] + [m, d]) if d in path else f"{m} -> {d}")
            else:
                visit(d, path + [m])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [])
    assert cycles == []


def test_rules_import_only_the_model_and_the_rule_base():
    g = graph()
    wrong = {m: sorted(d - RULES_MAY_IMPORT) for m, d in g.items()
             if m.startswith("fbt_audit.rules.") and d - RULES_MAY_IMPORT}  # fmt: skip
    assert wrong == {}


def test_no_private_cross_module_imports():
    """`from fbt_audit.x import _private` from another module: a private name is its module's own."""
    mods = modules()
    found = []
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fbt_audit"):
                found += [f"{name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")
                          and a.name != "__version__"]  # fmt: skip
    assert found == []
