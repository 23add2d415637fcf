"""allowlist.py: accepted findings, from a TOML file: rule + module:function + a required justification."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fbt_audit.model.errors import UsageError

# An allowlist file:
#
#   [[allow]]
#   rule = "FBT102"                        # a rule id, or a prefix such as "FBT1"
#   function = "kernel:native_save_fl"     # module:function; clone suffixes (.isra.N ...) match too
#   justification = "probed only through ftrace on this fleet"   # required, non-empty
#
# Binaries carry no comments to put a suppression marker in, so accepted findings are listed outside them, as
# objtool's exceptions and ruff's per-file-ignores are. Allowlisted results leave the SARIF upload
# (GitHub would open suppressed results as alerts) and never count towards --fail-on; an entry that
# matches nothing is stale and is reported.


@dataclass
class Entry:
    rule: str
    module: str
    function: str
    justification: str
    where: str  # 'FILE: entry N', for messages
    hits: int = field(default=0)

    def matches(self, rule_id: str, module: str, function: str) -> bool:
        from fbt_audit.gate.identity import normalise_function

        if not rule_id.startswith(self.rule):
            return False
        if self.module not in ("*", module):
            return False
        return self.function == function or self.function == normalise_function(function)

    @property
    def label(self) -> str:
        return f"{self.rule} {self.module}:{self.function}"


@dataclass
class Allowlist:
    path: str
    entries: list[Entry]

    def match(self, rule_id: str, module: str, function: str) -> Entry | None:
        for e in self.entries:
            if e.matches(rule_id, module, function):
                e.hits += 1
                return e
        return None

    def stale(self) -> list[Entry]:
        return [e for e in self.entries if not e.hits]


def load_allowlist(path: str | Path) -> Allowlist:
    """Parse and check an allowlist; any problem is a one-line UsageError (exit 2)."""
    import tomllib  # here: only a run with an allowlist pays its import

    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text())
    except OSError as e:
        raise UsageError(f"{p}: cannot read the allowlist: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{p}: not valid TOML: {e}") from None
    unknown = set(doc) - {"allow"}
    if unknown:
        raise UsageError(f"{p}: unknown key {sorted(unknown)[0]!r}; an allowlist holds [[allow]] tables")
    raw = doc.get("allow", [])
    if not isinstance(raw, list):
        raise UsageError(f"{p}: 'allow' must be an array of tables ([[allow]])")
    entries = []
    for n, item in enumerate(raw, 1):
        where = f"{p}: entry {n}"
        if not isinstance(item, dict):
            raise UsageError(f"{where}: must be a table")
        extra = set(item) - {"rule", "function", "justification"}
        if extra:
            raise UsageError(f"{where}: unknown key {sorted(extra)[0]!r} (rule, function, justification)")
        rule = item.get("rule")
        func = item.get("function")
        why = item.get("justification")
        if not isinstance(rule, str) or not rule.strip():
            raise UsageError(f"{where}: needs a rule id or prefix, e.g. rule = \"FBT102\"")
        rule = rule.strip().upper()
        if not rule.startswith("FBT") or not rule[3:].isdigit() and rule[3:] != "":
            raise UsageError(f"{where}: bad rule {item['rule']!r}: expected an id (FBT102) or a prefix (FBT1)")
        if not isinstance(func, str) or ":" not in func or not func.split(":", 1)[1]:
            raise UsageError(f"{where}: needs function = \"module:function\" (module 'kernel' for vmlinux, or '*')")
        if not isinstance(why, str) or not why.strip():
            raise UsageError(f"{where}: needs a justification: say why {rule} at {func} is accepted")
        module, function = func.split(":", 1)
        entries.append(Entry(rule, module, function, " ".join(why.split()), where))
    return Allowlist(str(p), entries)
