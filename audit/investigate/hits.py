"""hits.py: runtime hit counts (a /proc/dtrace/fbt dump, ftrace's function profile) read and merged by probe name."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fbt_audit.model.errors import InputError
from fbt_audit.report.formats import Hits as ReportHits

if TYPE_CHECKING:
    from fbt_audit.judge.result import AuditResult

SAMPLE = 5  # unmatched rows quoted in the notification

# dtrace4linux driver/fbt_linux.c fbt_seq_show: "%d %04u%c %p %02x %d %2d %s:%s:%s %s\n" under the header
# `# count patchpoint opcode inslen modrm name`: probe ordinal, hits (`*`: fired while disabled),
# patchpoint, saved first byte, length, ModRM offset, module:function:entry|return, live bytes.
_DTRACE = re.compile(
    r"^\s*(?P<ordinal>-?\d+)\s+(?P<hits>\d+)(?P<star>\*?)\s+(?P<addr>(?:0x)?[0-9a-fA-F]+)\s+(?P<opcode>[0-9a-fA-F]{1,2})"
    r"\s+(?P<inslen>-?\d+)\s+(?P<modrm>-?\d+)\s+(?P<module>[^:\s]+):(?P<function>[^:\s]+):(?P<site>entry|return)\b"
)
# ftrace kernel/trace/ftrace.c function_stat_show: "  %-30s %10lu" then times; headers `Function  Hit  Time ...`.
_FTRACE = re.compile(r"^\s*(?P<function>\S+)\s+(?P<hits>\d+)(?:\s|$)")


@dataclass
class HitRow:
    """One row of a hits file: a probe name (or a bare function for ftrace), its hits, where it came from."""

    source: str  # 'file:line'
    text: str
    hits: int
    probe: str | None  # module:function:site (dtrace), None for ftrace
    function: str
    site: str = "entry"
    addr: int | None = None
    star: bool = False


@dataclass
class Hits:
    """Parsed rows of one or more hits files, in file order."""

    rows: list[HitRow] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)  # 'dtrace' | 'ftrace', one per file read


@dataclass
class Merged:
    """Hit counts by probe name, and what could not be matched to any patchpoint of the audited images."""

    counts: dict[str, int]
    rows: int
    matched: int
    unmatched: list[HitRow]
    starred: int
    shift: int | None  # runtime _text - link-time _text (KASLR), from the dtrace rows' addresses
    misplaced: int  # dtrace entry rows whose re-based address is not the function's

    def notification(self) -> str | None:
        """One line for stderr and the SARIF tool notifications, or None when every row matched."""
        if not self.unmatched:
            return None
        sample = "; ".join(r.text.strip()[:100] for r in self.unmatched[:SAMPLE])
        n = len(self.unmatched)
        return f"hits: {n} of {self.rows} row{'s' if self.rows != 1 else ''} matched no patchpoint, e.g. {sample}"

    def block(self) -> dict:
        """The figures of the merge, as the json and sarif reports carry them."""
        return {
            "rows": self.rows,
            "matched": self.matched,
            "unmatched": len(self.unmatched),
            "starred": self.starred,
            "probes": len(self.counts),
            "shift": f"0x{self.shift:x}" if self.shift is not None else None,
            "unmatched_sample": [r.text for r in self.unmatched[:5]],
        }

    def for_report(self) -> ReportHits:
        """What the reports need of the merge, as plain data (report.formats.Hits)."""
        return ReportHits(self.counts, self.block(), self.notification(), self.summary())

    def summary(self) -> str:
        shift = f"; KASLR shift 0x{self.shift:x}" if self.shift is not None else ""
        if self.misplaced:
            shift += f", {self.misplaced} entry rows elsewhere than their function after it (another build?)"
        return (
            f"hits: {self.matched} of {self.rows} rows merged into {len(self.counts)} probes, "
            f"{len(self.unmatched)} unmatched, {self.starred} marked *{shift}"
        )


def _read_text(p: Path) -> str:
    try:
        return p.read_text(errors="replace")
    except OSError as e:
        raise InputError(f"{p}: cannot read hits file: {e.strerror or e}") from None


def _files(path: Path) -> list[Path]:
    if path.is_dir():  # /sys/kernel/tracing/trace_stat: one function<N> file per CPU
        files = sorted(path.glob("function*"), key=lambda q: (len(q.name), q.name))
        if not files:
            raise InputError(f"{path}: directory holds no trace_stat function* files")
        return files
    if not path.exists():
        raise InputError(f"{path}: no such hits file")
    return [path]


def parse(text: str, name: str = "-") -> tuple[str, list[HitRow]]:
    """The format of one hits file ('dtrace' or 'ftrace') and its rows. Header and blank lines are skipped."""
    lines = text.splitlines()
    kind = None
    for line in lines:
        s = line.strip()
        if not s:
            continue
        if s.startswith("# count patchpoint") or _DTRACE.match(line):
            kind = "dtrace"
        elif s.split()[:2] == ["Function", "Hit"] or _FTRACE.match(line):
            kind = "ftrace"
        break
    if kind is None:
        raise InputError(f"{name}: not a /proc/dtrace/fbt dump or an ftrace function profile")
    rows = []
    for n, line in enumerate(lines, 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        where = f"{name}:{n}"
        if kind == "dtrace":
            m = _DTRACE.match(line)
            if m is None:
                raise InputError(f"{where}: not a /proc/dtrace/fbt row: {s[:80]}")
            probe = f"{m['module']}:{m['function']}:{m['site']}"
            rows.append(
                HitRow(where, s, int(m["hits"]), probe, m["function"], m["site"], int(m["addr"], 16), m["star"] == "*")
            )
        else:
            if s.split()[:1] in (["Function"], ["--------"]):
                continue
            m = _FTRACE.match(line)
            if m is None:
                raise InputError(f"{where}: not an ftrace function-profile row: {s[:80]}")
            rows.append(HitRow(where, s, int(m["hits"]), None, m["function"]))
    return kind, rows


def load(paths: list[Path] | tuple[Path, ...]) -> Hits:
    """Read hits files (a dtrace dump, ftrace trace_stat files, or a trace_stat directory)."""
    out = Hits()
    for path in paths:
        for f in _files(Path(path)):
            kind, rows = parse(_read_text(f), str(f))
            out.kinds.append(kind)
            out.rows.extend(rows)
    return out


def merge(hits: Hits, results: list[AuditResult]) -> Merged:
    """Match rows to the audited patchpoints by `module:function:entry|return` (aliases included);
    ftrace rows, which name only a function, match that function's entry in any image. Counts of rows
    naming the same probe (per-CPU profiles, several return sites) are summed."""
    by_probe: dict[str, str] = {}  # any probe name (aliases too) -> the patchpoint's probe name
    by_function: dict[str, list[str]] = {}
    link_addr: dict[str, set[int]] = {}  # probe name -> link-time symbol and patchpoint addresses
    text_base = None
    for r in results:
        if r.kernel.kind == "vmlinux" and text_base is None:
            text_base = r.kernel.names.get("_text")
        for j in r.judgements:
            pp = j.pp
            probe = pp.probe_name
            for name in (pp.name, *pp.aliases):
                alias = f"{pp.module}:{name}:{pp.site}"
                by_probe.setdefault(alias, probe)
                if pp.site == "entry":
                    by_function.setdefault(name, []).append(probe)
            if r.kernel.kind == "vmlinux":
                link_addr.setdefault(probe, set()).update((pp.sym_addr, pp.addr))
    counts: Counter[str] = Counter()
    unmatched = []
    deltas: Counter[int] = Counter()
    placed: list[tuple[HitRow, str]] = []
    matched = 0
    for row in hits.rows:
        if row.probe is not None:
            target = by_probe.get(row.probe)
            targets = [target] if target else []
        else:
            targets = list(dict.fromkeys(by_function.get(row.function, ())))
        if not targets:
            unmatched.append(row)
            continue
        matched += 1
        for t in targets:
            counts[t] += row.hits
        if row.addr is not None and row.site == "entry" and targets[0] in link_addr:
            placed.append((row, targets[0]))
            deltas.update({row.addr - a for a in link_addr[targets[0]]})
    shift = None
    misplaced = 0
    if placed and text_base is not None:
        shift = deltas.most_common(1)[0][0]  # the KASLR slide every matched entry row shares
        misplaced = sum(1 for row, t in placed if row.addr - shift not in link_addr[t])
    return Merged(
        counts=dict(sorted(counts.items())),
        rows=len(hits.rows),
        matched=matched,
        unmatched=unmatched,
        starred=sum(1 for r in hits.rows if r.star),
        shift=shift,
        misplaced=misplaced,
    )
