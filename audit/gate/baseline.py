"""baseline.py: the release gate: baselineState against an earlier SARIF, allowlisting, what counts for --fail-on."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fbt_audit.gate.identity import Item, items, run_id, runs_of, shown
from fbt_audit.model.core import Level
from fbt_audit.model.errors import UsageError

if TYPE_CHECKING:
    from fbt_audit.gate.allowlist import Allowlist
    from fbt_audit.judge.result import AuditResult

STATES = ("new", "unchanged", "updated", "absent")


@dataclass(frozen=True, slots=True)
class Known:
    """One result of the baseline SARIF, by run id and fingerprint."""

    level: str
    message: str | None  # None: a result the baseline omitted past GitHub's cap (fingerprint, rule, level)
    rule_id: str
    probe: str


@dataclass
class Baseline:
    path: str
    runs: dict[str, dict[str, Known]]  # automationDetails.id -> primaryLocationLineHash -> result


def load_baseline(path: str | Path) -> Baseline:
    """Read an earlier fbt-audit SARIF; any problem is a one-line UsageError (exit 2)."""
    import json  # here: a plain audit (no --baseline) does not import it

    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except OSError as e:
        raise UsageError(f"{p}: cannot read the baseline: {e.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{p}: baseline is not JSON: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("runs"), list):
        raise UsageError(f"{p}: baseline is not a SARIF log (no 'runs' array)")
    runs: dict[str, dict[str, Known]] = {}
    for n, run in enumerate(doc["runs"]):
        if not isinstance(run, dict):
            raise UsageError(f"{p}: run {n} is not an object")
        run_id = (run.get("automationDetails") or {}).get("id", "")
        known = runs.setdefault(run_id, {})
        for entry in (run.get("properties") or {}).get("omittedResults") or []:
            if isinstance(entry, list) and len(entry) == 3 and all(isinstance(x, str) for x in entry):
                known[entry[0]] = Known(entry[2], None, entry[1], "")
        for res in run.get("results") or []:
            try:
                fp = res["partialFingerprints"]["primaryLocationLineHash"]
                known[fp] = Known(
                    res.get("level", "warning"),
                    res["message"]["text"],
                    res.get("ruleId", ""),
                    res.get("properties", {}).get("probe", ""),
                )
            except (KeyError, TypeError):
                raise UsageError(
                    f"{p}: run {n} has a result without partialFingerprints.primaryLocationLineHash or "
                    "message.text; the baseline must be SARIF that fbt-audit wrote"
                ) from None
    return Baseline(str(p), runs)


@dataclass
class Gate:
    """What the gate decides per result: its baselineState and whether it is allowlisted.
    `counts` sums, over every run applied, the states, the allowlisted results and the absent ones."""

    baseline: Baseline | None = None
    allowlist: Allowlist | None = None
    counts: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    finished: bool = False
    kept: list[Item] = field(default_factory=list)
    show: str = "warning"  # what the SARIF carries, and so what a baseline can know (identity.shown)
    _seen: set[str] = field(default_factory=set)
    _decided: dict[str, tuple[dict[str, tuple[str | None, str | None]], dict]] = field(default_factory=dict)

    def apply(self, run_id: str, items: list[Item]) -> tuple[list[Item], dict, list[str]]:
        """Mark the run's items; return those to upload (not allowlisted), run statistics, notes.
        A run decided before (the CLI evaluates the gate, then renders) is marked the same way again
        and counted once."""
        decided = self._decided.get(run_id)
        if decided is not None:
            marks, stats = decided
            keep = []
            for it in items:
                it.state, it.suppressed = marks.get(it.fingerprint + "|" + it.rule_id, (None, None))
                if it.suppressed is None:
                    keep.append(it)
            return keep, stats, []
        stats: dict = {}
        keep: list[Item] = []
        for it in items:
            if self.allowlist is not None:
                e = self.allowlist.match(it.rule_id, it.j.pp.module, it.j.pp.name)
                if e is not None:
                    it.suppressed = e.justification
                    self.counts["allowlisted"] += 1
                    stats["allowlisted"] = stats.get("allowlisted", 0) + 1
                    continue
            keep.append(it)
        if self.baseline is not None:
            known = self.baseline.runs.get(run_id, {})
            present = set()
            for it in keep:
                fp = it.fingerprint
                present.add(fp)
                old = known.get(fp)
                if old is None:
                    it.state = "new"
                elif old.level != it.level.sarif or old.message not in (None, it.message):
                    it.state = "updated"
                else:
                    it.state = "unchanged"
            allow_fps = {it.fingerprint for it in items if it.suppressed}
            absent = [fp for fp in known if fp not in present and fp not in allow_fps]
            c = Counter(it.state for it in keep)
            c["absent"] = len(absent)
            stats["baseline"] = {s: c.get(s, 0) for s in STATES}
            self.counts.update({s: c.get(s, 0) for s in STATES})
            self._seen.add(run_id)
        self._decided[run_id] = ({it.fingerprint + "|" + it.rule_id: (it.state, it.suppressed) for it in items}, stats)
        return keep, stats, []

    def finish(self, results: list[AuditResult]) -> None:
        """After every run: baseline runs this audit did not produce are absent as a whole, and stale
        allowlist entries become notes."""
        if self.baseline is not None:
            ours = {run_id(kind, flavour) for kind, flavour, _ in runs_of(results)}
            for rid, known in self.baseline.runs.items():
                if rid not in ours and rid not in self._seen:
                    self.counts["absent"] += len(known)
                    self._seen.add(rid)
        if self.allowlist is not None:
            for e in self.allowlist.stale():
                self.notes.append(f"{e.where}: stale allowlist entry {e.label}: it matched no finding")
        self.finished = True

    def counted(self, threshold: Level, items: list[Item]) -> list[Item]:
        """The items that count towards --fail-on: not allowlisted and, with a baseline, new or updated."""
        return [
            it
            for it in items
            if it.suppressed is None
            and (self.baseline is None or it.state in ("new", "updated"))
            and it.level >= threshold
        ]

    @property
    def active(self) -> bool:
        return self.baseline is not None or self.allowlist is not None

    @classmethod
    def for_cli(cls, results: list[AuditResult], baseline: str | Path | None, allowlist: str | Path | None,
                show: str | None = None) -> Gate:  # fmt: skip
        """The gate the command line asked for, evaluated over every run (an inactive gate without either), on
        the results a SARIF report carries at `show` (default warning): what a baseline can know."""
        base, allowed = load_baseline(baseline) if baseline else None, None
        if allowlist:
            from fbt_audit.gate.allowlist import load_allowlist  # here: only a run with an allowlist imports it

            allowed = load_allowlist(allowlist)
        gate = cls(base, allowed)
        gate.show = show or "warning"
        if gate.active:
            gate.kept = evaluate(results, gate)
        return gate

    def fails(self, threshold: Level) -> bool:
        return bool(self.counted(threshold, self.kept))

    def report_stderr(self) -> None:
        """Stale allowlist entries and the baseline counts, one line each, on stderr."""
        import sys

        for n in self.notes:
            print(f"fbt-audit: warning: {n}", file=sys.stderr)
        line = self.summary()
        if line:
            print(f"fbt-audit: {line}", file=sys.stderr)

    def summary(self) -> str:
        """`baseline: 1 new, 12 unchanged, 0 updated, 3 absent; 2 allowlisted`, for stderr and --statistics."""
        parts = []
        if self.baseline is not None:
            parts.append("baseline: " + ", ".join(f"{self.counts.get(s, 0)} {s}" for s in STATES))
        if self.allowlist is not None:
            parts.append(f"{self.counts.get('allowlisted', 0)} allowlisted")
        return "; ".join(parts)


def evaluate(results: list[AuditResult], gate: Gate) -> list[Item]:
    """Apply the gate to every run of the results, as the SARIF report would; return every item kept
    (allowlisted ones excluded), marked with its baselineState."""
    kept: list[Item] = []
    for kind, flavour, group in runs_of(results):
        keep, _, _ = gate.apply(run_id(kind, flavour), [it for it in items(group) if shown(it, gate.show)])
        kept.extend(keep)
    gate.finish(results)
    return kept
